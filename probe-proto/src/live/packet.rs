//! Live packet layout. Every live packet starts with [`MAGIC`] (first byte 0xB7: the echo range
//! 128–191, but never the 0x80 of normal echo, so neither server mistakes the other's packets),
//! then a kind byte. Bytes 4..8 are therefore never STUN's magic cookie 0x2112A442, which is
//! all pion/stun's `IsMessage` looks at (pion/stun message.go `IsMessage`: length ≥ 20 and the
//! cookie at 4..8); RTCD's UDP mux thus never takes a live packet for STUN.
//!
//! ```text
//!  0..4   4     5      6..8      8..16   16..  (kind-specific body)        last 16 (with a token)
//!  magic  kind  flags  reserved  nonce   ...                               HMAC-SHA256/128
//! ```
//!
//! Echo body: `16..20 seq, 20..28 client tx µs, 28..36 server rx µs, 36..44 server tx µs,
//! 44..48 server rx count, 48..52 server tx count, 52..69 arrived-at address (family + 16)`.
//! A request must be at least [`ECHO_MIN_LEN`] bytes so that the reply, which has the
//! request's length, carries all of it: the server never answers with more than it received.

use crate::auth;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First word of every live packet; the tap's BPF filter matches it.
pub const MAGIC: [u8; 4] = [0xB7, b'L', b'V', b'1'];
pub const MAGIC_U32: u32 = u32::from_be_bytes(MAGIC);
const BASE_LEN: usize = 16;
pub const ECHO_MIN_LEN: usize = 96;
/// Flags byte (5) of an echo request: ask for the nonce's counters without being counted, so
/// the client learns the final counts after its echo without a control channel.
pub const FLAG_QUERY: u8 = 1;
/// Largest live packet, as normal echo.
pub const MAX_LEN: usize = 1200;
/// A hello request is padded to this size so that the reply (RTCD's candidates) fits in it.
pub const HELLO_LEN: usize = 1000;
/// The TCP probe frame's payload: base + 16 bytes of MAC room; well under pion's 512-byte
/// first-frame buffer (tcp_mux.go:197), so pion reads it whole and fails on the STUN decode.
pub const TCP_PROBE_LEN: usize = 48;
pub const TCP_QUERY_LEN: usize = 96;
pub const MAC_LEN: usize = auth::CONTROL_MAC_LEN;
const ADDR_LEN: usize = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    EchoRequest = 1,
    EchoReply = 2,
    HelloRequest = 3,
    HelloReply = 4,
    TcpQuery = 5,
    TcpAnswer = 6,
    /// Carried in the RFC 4571 frame on TCP; never answered.
    TcpProbe = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::EchoRequest,
            2 => Kind::EchoReply,
            3 => Kind::HelloRequest,
            4 => Kind::HelloReply,
            5 => Kind::TcpQuery,
            6 => Kind::TcpAnswer,
            7 => Kind::TcpProbe,
            _ => return None,
        })
    }

    fn min_len(self) -> usize {
        match self {
            Kind::EchoRequest | Kind::EchoReply => ECHO_MIN_LEN,
            Kind::HelloRequest => HELLO_LEN,
            Kind::HelloReply => BASE_LEN + 8,
            Kind::TcpQuery | Kind::TcpAnswer => TCP_QUERY_LEN,
            Kind::TcpProbe => TCP_PROBE_LEN,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveError {
    Length(usize),
    NotLive,
    Kind(u8),
    BadMac,
    Body,
}

impl std::fmt::Display for LiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveError::Length(n) => write!(f, "live packet of {n} bytes is too short or too long"),
            LiveError::NotLive => write!(f, "not a live probe packet"),
            LiveError::Kind(k) => write!(f, "unknown live packet kind {k}"),
            LiveError::BadMac => write!(f, "live packet MAC does not verify (token)"),
            LiveError::Body => write!(f, "malformed live packet body"),
        }
    }
}

impl std::error::Error for LiveError {}

/// Checks magic, kind, length and (with a token key) the MAC; returns kind and nonce.
pub fn check(p: &[u8], key: Option<&[u8; 32]>) -> Result<(Kind, u64), LiveError> {
    if p.len() < BASE_LEN || p.len() > MAX_LEN {
        return Err(LiveError::Length(p.len()));
    }
    if p[..4] != MAGIC {
        return Err(LiveError::NotLive);
    }
    let kind = Kind::from_u8(p[4]).ok_or(LiveError::Kind(p[4]))?;
    if p.len() < kind.min_len() {
        return Err(LiveError::Length(p.len()));
    }
    if let Some(k) = key {
        let (body, mac) = p.split_at(p.len() - MAC_LEN);
        if !auth::control_mac_ok(k, body, mac) {
            return Err(LiveError::BadMac);
        }
    }
    Ok((kind, u64_at(p, 8)))
}

/// Writes magic, kind and nonce into `p` (which has its final length).
fn head(p: &mut [u8], kind: Kind, nonce: u64) {
    p[..4].copy_from_slice(&MAGIC);
    p[4] = kind as u8;
    p[5..8].fill(0);
    p[8..16].copy_from_slice(&nonce.to_be_bytes());
}

/// Seals a packet: with a token key, the last [`MAC_LEN`] bytes become the MAC of the rest.
pub fn seal(p: &mut [u8], key: Option<&[u8; 32]>) {
    if let Some(k) = key {
        let n = p.len() - MAC_LEN;
        let mac = auth::control_mac(k, &p[..n]);
        p[n..].copy_from_slice(&mac);
    }
}

pub fn u64_at(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_be_bytes(b)
}

pub fn u32_at(p: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_be_bytes(b)
}

pub fn put_addr(p: &mut [u8], at: usize, ip: Option<IpAddr>) {
    let (fam, octets) = match ip.map(|i| i.to_canonical()) {
        Some(IpAddr::V4(v4)) => (4u8, v4.to_ipv6_mapped().octets()),
        Some(IpAddr::V6(v6)) => (6u8, v6.octets()),
        None => (0u8, [0u8; 16]),
    };
    p[at] = fam;
    p[at + 1..at + ADDR_LEN].copy_from_slice(&octets);
}

pub fn get_addr(p: &[u8], at: usize) -> Result<Option<IpAddr>, LiveError> {
    let mut o = [0u8; 16];
    o.copy_from_slice(&p[at + 1..at + ADDR_LEN]);
    let v6 = Ipv6Addr::from(o);
    match p[at] {
        0 => Ok(None),
        4 => v6
            .to_ipv4_mapped()
            .map(|v4: Ipv4Addr| Some(IpAddr::V4(v4)))
            .ok_or(LiveError::Body),
        6 => Ok(Some(IpAddr::V6(v6))),
        _ => Err(LiveError::Body),
    }
}

/// One echo packet's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Echo {
    pub nonce: u64,
    pub seq: u32,
    pub client_tx_us: u64,
    pub server_rx_us: u64,
    pub server_tx_us: u64,
    /// Datagrams the server received for this nonce (this one included).
    pub server_rx_count: u32,
    /// Replies the server sent for this nonce (this one included).
    pub server_tx_count: u32,
    /// The local address of the RTCD host the request arrived at.
    pub arrived_at: Option<IpAddr>,
    /// A counters query (see [`FLAG_QUERY`]).
    pub query: bool,
}

/// Builds an echo request of `len` bytes (clamped to ECHO_MIN_LEN..=MAX_LEN); fill is zeros.
pub fn echo_request(e: &Echo, len: usize, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut p = vec![0u8; len.clamp(ECHO_MIN_LEN, MAX_LEN)];
    head(&mut p, Kind::EchoRequest, e.nonce);
    p[5] = if e.query { FLAG_QUERY } else { 0 };
    p[16..20].copy_from_slice(&e.seq.to_be_bytes());
    p[20..28].copy_from_slice(&e.client_tx_us.to_be_bytes());
    seal(&mut p, key);
    p
}

/// Builds the reply to a request of `len` bytes: same length, never more.
pub fn echo_reply(e: &Echo, len: usize, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut p = vec![0u8; len.clamp(ECHO_MIN_LEN, MAX_LEN)];
    head(&mut p, Kind::EchoReply, e.nonce);
    p[5] = if e.query { FLAG_QUERY } else { 0 };
    p[16..20].copy_from_slice(&e.seq.to_be_bytes());
    p[20..28].copy_from_slice(&e.client_tx_us.to_be_bytes());
    p[28..36].copy_from_slice(&e.server_rx_us.to_be_bytes());
    p[36..44].copy_from_slice(&e.server_tx_us.to_be_bytes());
    p[44..48].copy_from_slice(&e.server_rx_count.to_be_bytes());
    p[48..52].copy_from_slice(&e.server_tx_count.to_be_bytes());
    put_addr(&mut p, 52, e.arrived_at);
    seal(&mut p, key);
    p
}

/// Reads the echo fields of a checked request or reply.
pub fn parse_echo(p: &[u8]) -> Result<Echo, LiveError> {
    if p.len() < ECHO_MIN_LEN {
        return Err(LiveError::Length(p.len()));
    }
    Ok(Echo {
        nonce: u64_at(p, 8),
        seq: u32_at(p, 16),
        client_tx_us: u64_at(p, 20),
        server_rx_us: u64_at(p, 28),
        server_tx_us: u64_at(p, 36),
        server_rx_count: u32_at(p, 44),
        server_tx_count: u32_at(p, 48),
        arrived_at: get_addr(p, 52)?,
        query: p[5] & FLAG_QUERY != 0,
    })
}

/// A hello request: padded to [`HELLO_LEN`] so the reply never outgrows it.
pub fn hello_request(nonce: u64, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut p = vec![0u8; HELLO_LEN];
    head(&mut p, Kind::HelloRequest, nonce);
    seal(&mut p, key);
    p
}

/// The TCP probe: a live packet in one RFC 4571 frame (2-byte length first).
pub fn tcp_probe_frame(nonce: u64, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut p = vec![0u8; TCP_PROBE_LEN];
    head(&mut p, Kind::TcpProbe, nonce);
    seal(&mut p, key);
    let mut f = (TCP_PROBE_LEN as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&p);
    f
}

/// What the tap saw of a TCP probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSeen {
    pub from: IpAddr,
    pub from_port: u16,
    pub arrived_at: IpAddr,
    /// How long before the answer the segment was seen.
    pub age_ms: u32,
}

pub fn tcp_query(nonce: u64, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut p = vec![0u8; TCP_QUERY_LEN];
    head(&mut p, Kind::TcpQuery, nonce);
    seal(&mut p, key);
    p
}

pub fn tcp_answer(nonce: u64, seen: Option<TcpSeen>, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut p = vec![0u8; TCP_QUERY_LEN];
    head(&mut p, Kind::TcpAnswer, nonce);
    if let Some(s) = seen {
        p[16] = 1;
        put_addr(&mut p, 17, Some(s.from));
        p[34..36].copy_from_slice(&s.from_port.to_be_bytes());
        put_addr(&mut p, 36, Some(s.arrived_at));
        p[53..57].copy_from_slice(&s.age_ms.to_be_bytes());
    }
    seal(&mut p, key);
    p
}

pub fn parse_tcp_answer(p: &[u8]) -> Result<Option<TcpSeen>, LiveError> {
    if p.len() < TCP_QUERY_LEN {
        return Err(LiveError::Length(p.len()));
    }
    if p[16] == 0 {
        return Ok(None);
    }
    Ok(Some(TcpSeen {
        from: get_addr(p, 17)?.ok_or(LiveError::Body)?,
        from_port: u16::from_be_bytes([p[34], p[35]]),
        arrived_at: get_addr(p, 36)?.ok_or(LiveError::Body)?,
        age_ms: u32_at(p, 53),
    }))
}
