//! TURN messages on the byte level: STUN framing (RFC 8489 5–6), the TURN methods and
//! attributes (RFC 8656, formerly RFC 5766), the long-term credential's MESSAGE-INTEGRITY
//! (RFC 8489 9.2), ChannelData (RFC 8656 12.4) and the framing TURN uses on a byte stream
//! (TCP and TLS: STUN messages and ChannelData back to back, ChannelData padded to 4 bytes).
//!
//! The decoder never panics on arbitrary input and keeps attributes placed after
//! MESSAGE-INTEGRITY out of the result (they are not authenticated).

use ring::hmac;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;

// Methods (RFC 8656 17).
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Attributes (RFC 8489 18.3, RFC 8656 18).
pub const ATTR_USERNAME: u16 = 0x0006;
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ATTR_ERROR_CODE: u16 = 0x0009;
pub const ATTR_CHANNEL_NUMBER: u16 = 0x000C;
pub const ATTR_LIFETIME: u16 = 0x000D;
pub const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
pub const ATTR_DATA: u16 = 0x0013;
pub const ATTR_REALM: u16 = 0x0014;
pub const ATTR_NONCE: u16 = 0x0015;
pub const ATTR_XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const ATTR_REQUESTED_TRANSPORT: u16 = 0x0019;
pub const ATTR_REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const ATTR_SOFTWARE: u16 = 0x8022;
pub const ATTR_FINGERPRINT: u16 = 0x8028;

/// REQUESTED-TRANSPORT value for UDP (the only one RFC 8656 allocations carry for media).
pub const TRANSPORT_UDP: u8 = 17;

/// Channel numbers a client may bind (RFC 8656 12).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;

const MI_LEN: usize = 4 + 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// The 14-bit message type from method and class (RFC 8489 5: class bits C0 at 4, C1 at 8).
pub fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// A message under construction: header fields and raw attributes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub method: u16,
    pub class: Class,
    pub tid: [u8; 12],
    attrs: Vec<(u16, Vec<u8>)>,
}

impl Builder {
    pub fn new(method: u16, class: Class, tid: [u8; 12]) -> Self {
        Self {
            method,
            class,
            tid,
            attrs: Vec::new(),
        }
    }

    pub fn attr(mut self, kind: u16, value: Vec<u8>) -> Self {
        self.attrs.push((kind, value));
        self
    }

    pub fn xor_addr(self, kind: u16, addr: SocketAddr) -> Self {
        let v = encode_xor_addr(addr, &self.tid);
        self.attr(kind, v)
    }

    /// The encoded message; with `key`, MESSAGE-INTEGRITY (HMAC-SHA1 with the long-term key)
    /// is appended last.
    pub fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&message_type(self.method, self.class).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.tid);
        for (kind, value) in &self.attrs {
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        if let Some(key) = key {
            let body = out.len() + MI_LEN - HEADER_LEN;
            out[2..4].copy_from_slice(&(body as u16).to_be_bytes());
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key),
                &out,
            );
            out.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(tag.as_ref());
        }
        let body = out.len() - HEADER_LEN;
        out[2..4].copy_from_slice(&(body as u16).to_be_bytes());
        out
    }
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 9.2.2). The
/// password is used as given (no SASLprep: TURN REST passwords are base64, plain ASCII).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    md5::compute(format!("{username}:{realm}:{password}")).0
}

/// ERROR-CODE as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: u16,
    pub reason: String,
}

/// A decoded STUN/TURN message: the attributes the TURN client uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub method: u16,
    pub class: Option<Class>,
    pub tid: [u8; 12],
    pub error: Option<ErrorCode>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub software: Option<String>,
    pub lifetime: Option<u32>,
    pub xor_mapped: Option<SocketAddr>,
    pub xor_relayed: Vec<SocketAddr>,
    pub xor_peer: Option<SocketAddr>,
    pub data: Option<Vec<u8>>,
    pub channel: Option<u16>,
    /// Byte offset of MESSAGE-INTEGRITY, when present (for [`check_integrity`]).
    pub integrity_at: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short,
    NotStun,
    Length,
    Attribute(u16),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short => f.write_str("shorter than a STUN header"),
            DecodeError::NotStun => f.write_str("not a STUN message (first bits or magic cookie)"),
            DecodeError::Length => f.write_str("STUN length field does not match"),
            DecodeError::Attribute(t) => write!(f, "malformed attribute {t:#06x}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Total length of the STUN message starting `buf`, once its header is there.
pub fn stun_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]])))
}

pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
    if b.len() < HEADER_LEN {
        return Err(DecodeError::Short);
    }
    if b[0] & 0xC0 != 0 || u32::from_be_bytes([b[4], b[5], b[6], b[7]]) != MAGIC_COOKIE {
        return Err(DecodeError::NotStun);
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if len % 4 != 0 || HEADER_LEN + len != b.len() {
        return Err(DecodeError::Length);
    }
    let (method, class) = split_type(u16::from_be_bytes([b[0], b[1]]));
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&b[8..20]);
    let mut m = Message {
        method,
        class: Some(class),
        tid,
        ..Message::default()
    };
    let mut at = HEADER_LEN;
    while at + 4 <= b.len() {
        let kind = u16::from_be_bytes([b[at], b[at + 1]]);
        let vlen = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        let v = b
            .get(at + 4..at + 4 + vlen)
            .ok_or(DecodeError::Attribute(kind))?;
        if m.integrity_at.is_some() {
            // Only FINGERPRINT may follow MESSAGE-INTEGRITY; nothing after it is authenticated.
            break;
        }
        let bad = || DecodeError::Attribute(kind);
        let text = || String::from_utf8_lossy(v).into_owned();
        match kind {
            ATTR_ERROR_CODE => {
                if v.len() < 4 {
                    return Err(bad());
                }
                let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
                m.error = Some(ErrorCode {
                    code,
                    reason: String::from_utf8_lossy(&v[4..]).into_owned(),
                });
            }
            ATTR_REALM => m.realm = Some(text()),
            ATTR_NONCE => m.nonce = Some(text()),
            ATTR_SOFTWARE => m.software = Some(text()),
            ATTR_LIFETIME => {
                let a: [u8; 4] = v.try_into().map_err(|_| bad())?;
                m.lifetime = Some(u32::from_be_bytes(a));
            }
            ATTR_XOR_MAPPED_ADDRESS => {
                m.xor_mapped = Some(decode_xor_addr(v, &tid).ok_or_else(bad)?)
            }
            ATTR_XOR_RELAYED_ADDRESS => m
                .xor_relayed
                .push(decode_xor_addr(v, &tid).ok_or_else(bad)?),
            ATTR_XOR_PEER_ADDRESS => m.xor_peer = Some(decode_xor_addr(v, &tid).ok_or_else(bad)?),
            ATTR_DATA => m.data = Some(v.to_vec()),
            ATTR_CHANNEL_NUMBER => {
                if v.len() != 4 {
                    return Err(bad());
                }
                m.channel = Some(u16::from_be_bytes([v[0], v[1]]));
            }
            ATTR_MESSAGE_INTEGRITY => {
                if v.len() != 20 {
                    return Err(bad());
                }
                m.integrity_at = Some(at);
            }
            _ => {}
        }
        at += 4 + vlen.next_multiple_of(4);
    }
    Ok(m)
}

/// Checks MESSAGE-INTEGRITY of a message decoded by [`decode`] with `key`.
pub fn check_integrity(b: &[u8], m: &Message, key: &[u8]) -> bool {
    let Some(at) = m.integrity_at else {
        return false;
    };
    let Some(tag) = b.get(at + 4..at + MI_LEN) else {
        return false;
    };
    let mut covered = b[..at].to_vec();
    let body = (at + MI_LEN - HEADER_LEN) as u16;
    covered[2..4].copy_from_slice(&body.to_be_bytes());
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key),
        &covered,
        tag,
    )
    .is_ok()
}

/// XOR-*-ADDRESS value (RFC 8489 14.2).
pub fn encode_xor_addr(addr: SocketAddr, tid: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&port.to_be_bytes());
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    v
}

pub fn decode_xor_addr(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v[1], v.len()) {
        (1, 8) => {
            let raw = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(Ipv4Addr::from(raw).into(), port))
        }
        (2, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = v[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

/// A ChannelData message (RFC 8656 12.4). `pad`: pad to a multiple of 4, as required on TCP
/// and TLS (and allowed on UDP).
pub fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len() + 3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// What arrived from the TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stun(&'a [u8]),
    ChannelData { channel: u16, data: &'a [u8] },
    Other,
}

/// Classifies one datagram (or one frame split off a stream by [`StreamDecoder`]).
pub fn classify(b: &[u8]) -> Incoming<'_> {
    match b.first() {
        Some(0x00..=0x3F) => Incoming::Stun(b),
        Some(0x40..=0x4F) if b.len() >= 4 => {
            let channel = u16::from_be_bytes([b[0], b[1]]);
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            match b.get(4..4 + len) {
                Some(data) => Incoming::ChannelData { channel, data },
                None => Incoming::Other,
            }
        }
        _ => Incoming::Other,
    }
}

/// Splits a TCP/TLS byte stream from a TURN server into STUN messages and ChannelData
/// messages (RFC 8656 12.5: ChannelData on a stream is padded to a multiple of 4).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
}

/// Largest message accepted on a stream (STUN lengths are 16-bit anyway).
const MAX_STREAM_MSG: usize = HEADER_LEN + 65_535;

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if buffered; `Err` when the stream is not TURN framing.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let total = match self.buf[0] {
            0x00..=0x3F => {
                if self.buf.len() >= 8
                    && u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
                        != MAGIC_COOKIE
                {
                    return Err("the server's bytes are not STUN (no magic cookie): is this port TLS, or not TURN at all?".into());
                }
                stun_len(&self.buf).unwrap_or(MAX_STREAM_MSG)
            }
            0x40..=0x4F => (4 + usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])))
                .next_multiple_of(4),
            b => return Err(format!("byte {b:#04x} starts neither STUN nor ChannelData")),
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let msg: Vec<u8> = self.buf.drain(..total).collect();
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 2.4: sample request with long-term authentication. The username is
    /// "マトリックス", the password "The\u{AD}M\u{AA}tr\u{2168}" which SASLprep turns into
    /// "TheMatrIX"; realm "example.org".
    #[rustfmt::skip]
    const RFC5769_LONG_TERM: [u8; 116] = [
        0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42,
        0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
        0x00, 0x06, 0x00, 0x12,
        0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88, 0xe3, 0x83, 0xaa, 0xe3, 0x83, 0x83,
        0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00,
        0x00, 0x15, 0x00, 0x1c,
        0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36,
        0x4f, 0x4c, 0x33, 0x34, 0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79,
        0x36, 0x34, 0x73, 0x41,
        0x00, 0x14, 0x00, 0x0b,
        0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72, 0x67, 0x00,
        0x00, 0x08, 0x00, 0x14,
        0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02, 0xb8,
        0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66,
    ];

    #[test]
    fn rfc5769_long_term_request_verifies() {
        let m = decode(&RFC5769_LONG_TERM).unwrap();
        assert_eq!(m.method, 0x001);
        assert_eq!(m.class, Some(Class::Request));
        assert_eq!(m.realm.as_deref(), Some("example.org"));
        assert_eq!(m.nonce.as_deref(), Some("f//499k954d6OL34oL9FSTvy64sA"));
        let key = long_term_key("マトリックス", "example.org", "TheMatrIX");
        assert!(check_integrity(&RFC5769_LONG_TERM, &m, &key));
        let wrong = long_term_key("マトリックス", "example.org", "TheMatrix");
        assert!(!check_integrity(&RFC5769_LONG_TERM, &m, &wrong));
        // The same message rebuilt by our encoder carries the very same MESSAGE-INTEGRITY.
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&RFC5769_LONG_TERM[8..20]);
        let rebuilt = Builder::new(0x001, Class::Request, tid)
            .attr(ATTR_USERNAME, "マトリックス".as_bytes().to_vec())
            .attr(ATTR_NONCE, b"f//499k954d6OL34oL9FSTvy64sA".to_vec())
            .attr(ATTR_REALM, b"example.org".to_vec())
            .encode(Some(&key));
        assert_eq!(rebuilt, RFC5769_LONG_TERM);
    }

    /// RFC 5769 2.2: XOR-MAPPED-ADDRESS 192.0.2.1:32853 in the IPv4 sample response.
    #[test]
    fn rfc5769_xor_mapped_v4() {
        let tid = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let v = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        let a = decode_xor_addr(&v, &tid).unwrap();
        assert_eq!(a, "192.0.2.1:32853".parse().unwrap());
        assert_eq!(encode_xor_addr(a, &tid), v);
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        assert_eq!(decode_xor_addr(&encode_xor_addr(v6, &tid), &tid), Some(v6));
    }

    #[test]
    fn message_types_of_turn_methods() {
        // RFC 8656 17 and 5766 13: Allocate request 0x0003, success 0x0103, error 0x0113;
        // Data indication 0x0017; ChannelBind success 0x0109.
        assert_eq!(message_type(ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(ALLOCATE, Class::Success), 0x0103);
        assert_eq!(message_type(ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(DATA, Class::Indication), 0x0017);
        assert_eq!(message_type(SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(CHANNEL_BIND, Class::Success), 0x0109);
        for t in [0x0003, 0x0113, 0x0017, 0x0109, 0x0118] {
            let (m, c) = split_type(t);
            assert_eq!(message_type(m, c), t);
        }
    }

    #[test]
    fn error_code_and_channel_data() {
        let tid = [7u8; 12];
        let b = Builder::new(ALLOCATE, Class::Error, tid)
            .attr(
                ATTR_ERROR_CODE,
                vec![0, 0, 4, 38, b'S', b't', b'a', b'l', b'e'],
            )
            .attr(ATTR_NONCE, b"n2".to_vec())
            .encode(None);
        assert_eq!(&b[..2], &[0x01, 0x13]);
        let m = decode(&b).unwrap();
        assert_eq!(
            m.error,
            Some(ErrorCode {
                code: 438,
                reason: "Stale".into()
            })
        );
        assert_eq!(m.nonce.as_deref(), Some("n2"));

        let cd = channel_data(0x4001, &[1, 2, 3, 4, 5], true);
        assert_eq!(cd, [0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(
            classify(&cd),
            Incoming::ChannelData {
                channel: 0x4001,
                data: &[1, 2, 3, 4, 5]
            }
        );
        assert_eq!(classify(&[0x40, 0x01, 0x00, 0x09, 1]), Incoming::Other);
        assert_eq!(classify(&[0x80, 0]), Incoming::Other);
    }

    #[test]
    fn stream_decoder_splits_stun_and_padded_channel_data() {
        let stun = Builder::new(REFRESH, Class::Success, [1; 12])
            .attr(ATTR_LIFETIME, 600u32.to_be_bytes().to_vec())
            .encode(None);
        let cd = channel_data(0x4000, &[9; 161], true);
        let mut all = stun.clone();
        all.extend(&cd);
        all.extend(&stun);
        let mut d = StreamDecoder::new();
        // Byte by byte: framing must not depend on read boundaries.
        let mut got = vec![];
        for b in &all {
            d.push(&[*b]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![stun.clone(), cd, stun]);
        // A TLS record (a turns: port spoken to in plain TCP) and non-TURN bytes are refused.
        for junk in [
            &[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76][..],
            &[0xff; 8],
        ] {
            let mut bad = StreamDecoder::new();
            bad.push(junk);
            assert!(bad.next_message().is_err(), "{junk:?}");
        }
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let key = long_term_key("u", "r", "p");
        let mut b = Builder::new(ALLOCATE, Class::Success, [2; 12])
            .xor_addr(
                ATTR_XOR_RELAYED_ADDRESS,
                "203.0.113.1:50000".parse().unwrap(),
            )
            .encode(Some(&key));
        let m = decode(&b).unwrap();
        assert!(check_integrity(&b, &m, &key));
        // Append a LIFETIME after MESSAGE-INTEGRITY (length fixed up): not taken.
        b.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0, 0, 0, 9]);
        let body = (b.len() - HEADER_LEN) as u16;
        b[2..4].copy_from_slice(&body.to_be_bytes());
        let m = decode(&b).unwrap();
        assert_eq!(m.lifetime, None);
        assert_eq!(m.xor_relayed, vec!["203.0.113.1:50000".parse().unwrap()]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..400 {
            let mut v = vec![0u8; len];
            for b in v.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if len >= 8 {
                v[0] &= 0x3F;
                v[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            if len >= 4 {
                let body = len.saturating_sub(HEADER_LEN) as u16;
                v[2..4].copy_from_slice(&body.to_be_bytes());
            }
            let _ = decode(&v);
            let _ = classify(&v);
            let mut d = StreamDecoder::new();
            d.push(&v);
            let _ = d.next_message();
        }
    }
}
