//! RTP-shaped echo packets.
//!
//! A request starts like an RTP packet (version 2, payload type 111 as Opus usually gets, a
//! sequence number, a 48 kHz timestamp and an SSRC) so middleboxes treat it as media. After the
//! 12-byte RTP header come the probe fields and a truncated HMAC-SHA256 with the session key:
//!
//! ```text
//!  0      1      2..4     4..8      8..12   12..20   20..24  24..32     32..40     40..48     48..56  56..
//!  0x80   PT     rtp seq  rtp ts    ssrc    session  seq     client tx  server rx  server tx  MAC     fill
//! ```
//!
//! The reply has the request's length, payload type 112, the server's timestamps and its own
//! MAC; the fill is regenerated, never copied, so the server returns no client payload bytes.
//! The MAC covers the fields before it and the packet length; a request MAC can never pass as a
//! reply MAC because the payload type differs and is covered.

use ring::hmac;

pub const HEADER_LEN: usize = 56;
/// Smallest echo packet: the header alone.
pub const MIN_LEN: usize = HEADER_LEN;
/// Largest echo packet: a typical media MTU budget.
pub const MAX_LEN: usize = 1200;
pub const PT_REQUEST: u8 = 111;
pub const PT_REPLY: u8 = 112;
const MAC_AT: usize = 48;
const MAC_LEN: usize = 8;

/// A session key prepared for MACs (ring precomputes the HMAC pads once).
#[derive(Clone)]
pub struct SessionKey(hmac::Key);

impl SessionKey {
    pub fn new(bytes: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn mac(&self, covered: &[u8], len: usize) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(covered);
        ctx.update(&(len as u16).to_be_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        out
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoError {
    Length(usize),
    NotEcho,
    PayloadType(u8),
    BadMac,
}

impl std::fmt::Display for EchoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EchoError::Length(n) => {
                write!(f, "echo packet of {n} bytes outside {MIN_LEN}..={MAX_LEN}")
            }
            EchoError::NotEcho => write!(f, "not an RTP-shaped echo packet"),
            EchoError::PayloadType(pt) => write!(f, "unexpected payload type {pt}"),
            EchoError::BadMac => write!(f, "echo MAC does not verify"),
        }
    }
}

impl std::error::Error for EchoError {}

/// The fields of a request the server needs before it knows the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub session: u64,
    pub seq: u32,
    pub client_send_us: u64,
}

/// A verified reply as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub session: u64,
    pub seq: u32,
    pub client_send_us: u64,
    pub server_recv_us: u64,
    pub server_send_us: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn check_shape(b: &[u8], pt: u8) -> Result<(), EchoError> {
    if !(MIN_LEN..=MAX_LEN).contains(&b.len()) {
        return Err(EchoError::Length(b.len()));
    }
    if b[0] != 0x80 {
        return Err(EchoError::NotEcho);
    }
    if b[1] != pt {
        return Err(EchoError::PayloadType(b[1]));
    }
    Ok(())
}

/// Compares without an early exit, so timing does not reveal how many MAC bytes matched.
fn mac_eq(a: &[u8; MAC_LEN], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Cheap non-cryptographic fill so that packets do not compress to nothing on WAN optimisers.
fn fill(buf: &mut [u8], mut seed: u64) {
    seed |= 1;
    for chunk in buf.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_be_bytes()[..chunk.len()]);
    }
}

/// Writes a request of `len` bytes (clamped to the legal range) into `out`; returns its length.
pub fn encode_request(
    key: &SessionKey,
    session: u64,
    seq: u32,
    client_send_us: u64,
    len: usize,
    out: &mut [u8],
) -> usize {
    let len = len.clamp(MIN_LEN, MAX_LEN);
    let b = &mut out[..len];
    b[0] = 0x80;
    b[1] = PT_REQUEST;
    b[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    b[4..8].copy_from_slice(&((client_send_us.wrapping_mul(48) / 1000) as u32).to_be_bytes());
    b[8..12].copy_from_slice(&(session as u32).to_be_bytes());
    b[12..20].copy_from_slice(&session.to_be_bytes());
    b[20..24].copy_from_slice(&seq.to_be_bytes());
    b[24..32].copy_from_slice(&client_send_us.to_be_bytes());
    b[32..48].fill(0);
    let mac = key.mac(&b[..32], len);
    b[MAC_AT..MAC_AT + MAC_LEN].copy_from_slice(&mac);
    fill(&mut b[HEADER_LEN..], session ^ u64::from(seq));
    len
}

/// Reads a request's header without verifying it (the session id selects the key).
pub fn peek_request(b: &[u8]) -> Result<RequestHeader, EchoError> {
    check_shape(b, PT_REQUEST)?;
    Ok(RequestHeader {
        session: u64_at(b, 12),
        seq: u32_at(b, 20),
        client_send_us: u64_at(b, 24),
    })
}

/// Verifies a request's MAC with the session key.
pub fn verify_request(key: &SessionKey, b: &[u8]) -> Result<RequestHeader, EchoError> {
    let h = peek_request(b)?;
    let mac = key.mac(&b[..32], b.len());
    if !mac_eq(&mac, &b[MAC_AT..MAC_AT + MAC_LEN]) {
        return Err(EchoError::BadMac);
    }
    Ok(h)
}

/// Writes the reply to a verified request into `out` (same length); returns that length.
pub fn encode_reply(
    key: &SessionKey,
    req: &[u8],
    server_recv_us: u64,
    server_send_us: u64,
    out: &mut [u8],
) -> usize {
    let len = req.len();
    let b = &mut out[..len];
    b[..32].copy_from_slice(&req[..32]);
    b[1] = PT_REPLY;
    b[32..40].copy_from_slice(&server_recv_us.to_be_bytes());
    b[40..48].copy_from_slice(&server_send_us.to_be_bytes());
    let mac = key.mac(&b[..MAC_AT], len);
    b[MAC_AT..MAC_AT + MAC_LEN].copy_from_slice(&mac);
    fill(&mut b[HEADER_LEN..], server_recv_us ^ 0x9e37_79b9_7f4a_7c15);
    len
}

/// Verifies and decodes a reply on the client.
pub fn decode_reply(key: &SessionKey, b: &[u8]) -> Result<Reply, EchoError> {
    check_shape(b, PT_REPLY)?;
    let mac = key.mac(&b[..MAC_AT], b.len());
    if !mac_eq(&mac, &b[MAC_AT..MAC_AT + MAC_LEN]) {
        return Err(EchoError::BadMac);
    }
    Ok(Reply {
        session: u64_at(b, 12),
        seq: u32_at(b, 20),
        client_send_us: u64_at(b, 24),
        server_recv_us: u64_at(b, 32),
        server_send_us: u64_at(b, 40),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::new(&[b; 32])
    }

    #[test]
    fn request_reply_round_trip() {
        let k = key(1);
        let mut req = [0u8; MAX_LEN];
        let n = encode_request(&k, 0xdead_beef_0102_0304, 7, 123_456, 160, &mut req);
        assert_eq!(n, 160);
        assert!(
            (128..=191).contains(&req[0]),
            "echo stays in the RTP demux range"
        );
        let h = verify_request(&k, &req[..n]).unwrap();
        assert_eq!(
            (h.session, h.seq, h.client_send_us),
            (0xdead_beef_0102_0304, 7, 123_456)
        );
        let mut rep = [0u8; MAX_LEN];
        let m = encode_reply(&k, &req[..n], 1000, 1010, &mut rep);
        assert_eq!(m, n, "reply never larger than request");
        let r = decode_reply(&k, &rep[..m]).unwrap();
        assert_eq!(r.seq, 7);
        assert_eq!((r.server_recv_us, r.server_send_us), (1000, 1010));
        assert_ne!(
            &rep[HEADER_LEN..m],
            &req[HEADER_LEN..n],
            "client fill is not echoed"
        );
    }

    #[test]
    fn wrong_key_or_tampering_fails() {
        let mut req = [0u8; 200];
        let n = encode_request(&key(1), 5, 1, 2, 200, &mut req);
        assert_eq!(verify_request(&key(2), &req[..n]), Err(EchoError::BadMac));
        req[21] ^= 1;
        assert_eq!(verify_request(&key(1), &req[..n]), Err(EchoError::BadMac));
        // A request cannot be replayed as a reply.
        let n = encode_request(&key(1), 5, 1, 2, 200, &mut req);
        req[1] = PT_REPLY;
        assert_eq!(decode_reply(&key(1), &req[..n]), Err(EchoError::BadMac));
        // Truncation changes the covered length.
        let n = encode_request(&key(1), 5, 1, 2, 200, &mut req);
        assert_eq!(
            verify_request(&key(1), &req[..n - 4]),
            Err(EchoError::BadMac)
        );
    }

    #[test]
    fn sizes_are_clamped() {
        let mut buf = [0u8; MAX_LEN];
        assert_eq!(encode_request(&key(1), 1, 1, 1, 3, &mut buf), MIN_LEN);
        assert_eq!(encode_request(&key(1), 1, 1, 1, 99_999, &mut buf), MAX_LEN);
        assert_eq!(peek_request(&buf[..10]), Err(EchoError::Length(10)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = peek_request(&bytes);
            let _ = verify_request(&key(3), &bytes);
            let _ = decode_reply(&key(3), &bytes);
        }
    }
}
