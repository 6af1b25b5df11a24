//! Control messages: the client's hello, the server's welcome, the final counters.
//!
//! Encoded with postcard 1.x inside an RFC 4571 frame, after a one-byte tag. The same bytes
//! travel on a QUIC stream or, when UDP is blocked, straight on the TCP port; the tag (0x50, in
//! the QUIC range that never occurs on TCP) tells a control frame from STUN (0–3) and echo
//! (128–191) frames sharing that TCP connection.
//!
//! Evolution rule (postcard ignores trailing bytes): append enum variants and struct fields at
//! the end only; a newer reader gates new fields on the negotiated version.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Versions this build speaks.
pub const PROTO_MIN: u16 = 1;
pub const PROTO_MAX: u16 = 1;
/// First payload byte of a control frame.
pub const CONTROL_TAG: u8 = 0x50;
/// Upper bound of an encoded control message; larger frames are refused before decoding.
pub const MAX_CONTROL: usize = crate::frame::MAX_FRAME - 1;

/// Media-shaped traffic patterns the client can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Profile {
    /// 50 packets/s of ~160 bytes, like an Opus voice stream.
    Audio,
    /// Bursts of up to 1200-byte packets at ~1.5 Mbit/s, like screen sharing.
    Video,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub proto_min: u16,
    pub proto_max: u16,
    pub client_version: String,
    pub site: String,
    pub profile: Profile,
    /// Planned cadence and size, so the server can refuse what its limits do not allow.
    pub interval_us: u32,
    pub size: u16,
    pub duration_ms: u32,
    /// Zeros that make the hello at least as long as the welcome it asks for, so the server
    /// never answers an unauthenticated sender with more bytes than it sent.
    pub pad: Vec<u8>,
    /// Client wall clock (ms since the Unix epoch) and a random nonce: with a token, a signed
    /// hello is accepted once and only near its time, so a captured one cannot be replayed.
    pub time_ms: u64,
    pub nonce: [u8; 16],
}

/// Where an advertised candidate address came from, as RTCD would compute it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateSource {
    Local,
    Override,
    Mapping,
    Stun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

/// One host candidate the server advertises on RTCD's behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCandidate {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Transport,
    pub source: CandidateSource,
}

/// What the client needs to run ICE against the server as a browser would against RTCD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceOffer {
    pub ufrag: String,
    pub pwd: String,
    pub candidates: Vec<WireCandidate>,
    /// `ice_host_override` as configured (None when empty).
    pub override_value: Option<String>,
    /// "none", "ip", "hostname" or "pairs".
    pub override_form: String,
    /// A hostname override as the server resolved it.
    pub override_resolved: Vec<IpAddr>,
    /// The ports RTCD itself would advertise (they differ when the probe runs on another port).
    pub rtcd_port_udp: u16,
    pub rtcd_port_tcp: u16,
    /// The ports the probe itself listens on (the candidates carry these, or a port override).
    pub probe_port_udp: u16,
    pub probe_port_tcp: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub proto: u16,
    pub session_id: u64,
    /// Per-session key for echo MACs; never reused across sessions.
    pub key: [u8; 32],
    pub server_version: String,
    /// Server wall clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// The client's address as the server saw it on the control channel.
    pub observed: String,
    pub ice: Option<IceOffer>,
}

/// Why the server will not run a session; `limit` names the setting when one was hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub reason: String,
    pub limit: Option<String>,
}

/// What the server counted for one session, per transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub udp_rx: u64,
    pub udp_tx: u64,
    pub tcp_rx: u64,
    pub tcp_tx: u64,
    /// Echo requests that arrived but went unanswered because of the server's rate limits.
    pub rate_limited: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Control {
    Hello(Hello),
    Welcome(Welcome),
    Refused(Refused),
    /// The client is done sending; the server answers with [`Control::Counters`]. Padded like
    /// the hello, so the answer is never the larger.
    Finish {
        session_id: u64,
        pad: Vec<u8>,
    },
    Counters(Counters),
    /// The client's finished report (schema-1 JSON), kept by the server for `probe-server
    /// results` and its metrics.
    Upload {
        session_id: u64,
        report: String,
    },
    /// The server took the upload (`accepted`) or says why not.
    Stored {
        accepted: bool,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    NotControl(u8),
    TooLong(usize),
    Postcard(String),
    /// A token is configured and the message's MAC is missing or wrong.
    BadMac,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty control frame"),
            DecodeError::NotControl(b) => write!(f, "first byte {b:#04x} is not a control frame"),
            DecodeError::TooLong(n) => write!(f, "control message of {n} bytes is too long"),
            DecodeError::Postcard(e) => write!(f, "undecodable control message: {e}"),
            DecodeError::BadMac => write!(f, "control message without a valid token MAC"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Control {
    /// Encodes as a frame payload: tag byte, postcard, and with a token key the MAC trailer.
    pub fn to_payload(&self, token: Option<&[u8; 32]>) -> Vec<u8> {
        let mut out = vec![CONTROL_TAG];
        // Serialising our own plain data types into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).expect("control messages serialise"));
        if let Some(key) = token {
            let mac = crate::auth::control_mac(key, &out);
            out.extend_from_slice(&mac);
        }
        out
    }

    /// Encodes as a complete RFC 4571 frame.
    pub fn to_frame(&self, token: Option<&[u8; 32]>) -> Vec<u8> {
        crate::frame::encode(&self.to_payload(token))
    }

    /// Decodes a frame payload, checking the MAC trailer when a token key is given; never
    /// panics on arbitrary input.
    pub fn from_payload(payload: &[u8], token: Option<&[u8; 32]>) -> Result<Self, DecodeError> {
        let (&tag, body) = payload.split_first().ok_or(DecodeError::Empty)?;
        if tag != CONTROL_TAG {
            return Err(DecodeError::NotControl(tag));
        }
        if body.len() > MAX_CONTROL {
            return Err(DecodeError::TooLong(body.len()));
        }
        let (msg, rest) =
            postcard::take_from_bytes(body).map_err(|e| DecodeError::Postcard(e.to_string()))?;
        if let Some(key) = token {
            let signed = &payload[..payload.len() - rest.len()];
            if !crate::auth::control_mac_ok(key, signed, rest) {
                return Err(DecodeError::BadMac);
            }
        }
        Ok(msg)
    }
}

/// Picks the highest version both sides speak.
pub fn negotiate(client_min: u16, client_max: u16) -> Option<u16> {
    let hi = client_max.min(PROTO_MAX);
    (hi >= client_min.max(PROTO_MIN)).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            proto_min: 1,
            proto_max: 1,
            client_version: "0.1.0".into(),
            site: "berlin-office".into(),
            profile: Profile::Audio,
            interval_us: 20_000,
            size: 160,
            duration_ms: 5000,
            pad: vec![0; 32],
            time_ms: 1_795_651_200_000,
            nonce: [3; 16],
        }
    }

    #[test]
    fn round_trips() {
        let msgs = vec![
            Control::Hello(hello()),
            Control::Welcome(Welcome {
                proto: 1,
                session_id: 42,
                key: [9; 32],
                server_version: "0.1.0".into(),
                server_time_ms: 1_700_000_000_000,
                observed: "198.51.100.2:50000".into(),
                ice: Some(IceOffer {
                    ufrag: "abcd".into(),
                    pwd: "p".repeat(22),
                    candidates: vec![WireCandidate {
                        address: "203.0.113.10".parse().unwrap(),
                        port: 8443,
                        protocol: Transport::Udp,
                        source: CandidateSource::Override,
                    }],
                    override_value: Some("203.0.113.10".into()),
                    override_form: "ip".into(),
                    override_resolved: vec![],
                    rtcd_port_udp: 8443,
                    rtcd_port_tcp: 8443,
                    probe_port_udp: 8443,
                    probe_port_tcp: 8443,
                }),
            }),
            Control::Refused(Refused {
                reason: "too many sessions".into(),
                limit: Some("max_sessions=64".into()),
            }),
            Control::Finish {
                session_id: 42,
                pad: vec![0; 40],
            },
            Control::Counters(Counters {
                udp_rx: 1,
                udp_tx: 2,
                tcp_rx: 3,
                tcp_tx: 4,
                rate_limited: 5,
            }),
            Control::Upload {
                session_id: 42,
                report: "{\"schema\":1}".repeat(500),
            },
            Control::Stored {
                accepted: false,
                reason: Some("the result store is read-only".into()),
            },
        ];
        for m in msgs {
            let frame = m.to_frame(None);
            let mut d = crate::frame::Decoder::new();
            d.push(&frame);
            let payload = d.next_frame().unwrap().unwrap().to_vec();
            assert_eq!(Control::from_payload(&payload, None).unwrap(), m);
        }
    }

    #[test]
    fn token_mac_is_required_and_checked() {
        let key = crate::auth::token_key("secret");
        let other = crate::auth::token_key("other");
        let m = Control::Hello(hello());
        let signed = m.to_payload(Some(&key));
        assert_eq!(Control::from_payload(&signed, Some(&key)).unwrap(), m);
        assert_eq!(
            Control::from_payload(&signed, Some(&other)),
            Err(DecodeError::BadMac)
        );
        assert_eq!(
            Control::from_payload(&m.to_payload(None), Some(&key)),
            Err(DecodeError::BadMac)
        );
        // A server without a token ignores the trailer (older/newer clients interoperate).
        assert_eq!(Control::from_payload(&signed, None).unwrap(), m);
        let mut tampered = signed.clone();
        tampered[3] ^= 1;
        assert!(Control::from_payload(&tampered, Some(&key)).is_err());
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate(1, 1), Some(1));
        assert_eq!(negotiate(1, 9), Some(PROTO_MAX));
        assert_eq!(negotiate(PROTO_MAX + 1, PROTO_MAX + 3), None);
    }

    #[test]
    fn wrong_tag_and_garbage_are_errors() {
        assert_eq!(Control::from_payload(&[], None), Err(DecodeError::Empty));
        assert_eq!(
            Control::from_payload(&[0x80, 1], None),
            Err(DecodeError::NotControl(0x80))
        );
        assert!(Control::from_payload(&[CONTROL_TAG, 0xff, 0xff, 0xff], None).is_err());
    }

    proptest! {
        #[test]
        fn random_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let key = [7u8; 32];
            let _ = Control::from_payload(&bytes, None);
            let mut tagged = vec![CONTROL_TAG];
            tagged.extend(&bytes);
            let _ = Control::from_payload(&tagged, None);
            let _ = Control::from_payload(&tagged, Some(&key));
        }
    }
}
