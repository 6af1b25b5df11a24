//! First-byte demultiplexing of the shared UDP port (RFC 7983, extended by RFC 9443).
//!
//! RTCD's port carries STUN, DTLS and SRTP side by side; the probe adds QUIC for its control
//! channel and RTP-shaped echo packets, each in its own first-byte range so that one socket
//! serves all of them and every probe byte crosses the port under test.

/// What a datagram is, judged by its first byte alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0–3: STUN (Binding requests, ICE connectivity checks).
    Stun,
    /// 64–127 and 192–255: QUIC (long and short header forms).
    Quic,
    /// 128–191: RTP/RTCP range; our echo packets live here.
    Echo,
    /// 20–63: DTLS records (the browser test page's WebRTC sessions).
    Dtls,
    /// Anything else (empty, ZRTP, TURN channels): counted and dropped.
    Other,
}

/// Classifies a datagram by its first byte.
pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) => Kind::Stun,
        Some(64..=127) | Some(192..=255) => Kind::Quic,
        Some(128..=191) => Kind::Echo,
        Some(20..=63) => Kind::Dtls,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9443() {
        assert_eq!(classify(&[]), Kind::Other);
        for b in 0u8..=255 {
            let want = match b {
                0..=3 => Kind::Stun,
                4..=19 => Kind::Other,
                20..=63 => Kind::Dtls,
                64..=127 | 192..=255 => Kind::Quic,
                128..=191 => Kind::Echo,
            };
            assert_eq!(classify(&[b]), want, "byte {b}");
        }
    }
}
