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
//! MAC. `server rx` is when the request reached the server's socket (the kernel's stamp where
//! the server has one, else when it read the request), `server tx` when the server read it
//! (with its batch: answering and sending stay in the RTT, which errs long), both in
//! microseconds on the server's own clock: only their difference, the time the request spent
//! in the server, means anything to the client (`stats` takes it out of the RTT). The fill is
//! regenerated, never copied, so the server returns no client payload bytes.
//! The MAC covers the fields before it and the packet length; a request MAC can never pass as a
//! reply MAC because the payload type differs and is covered.
//!
//! # The path-MTU variant (issue 13)
//!
//! Acknowledged probes in the manner of RFC 8899 (DPLPMTUD) use two payload types of their own,
//! in the same demux range (first byte 0x80) and with the same header, and may be up to
//! [`MTU_MAX_LEN`] bytes (1472: a full 1500-byte IPv4 packet) where plain echo stops at
//! [`MAX_LEN`]:
//!
//! ```text
//!  0..32                          32..34     34     35..48  48..56  56..
//!  as a request, PT 113           reply len  flags  zero    MAC     fill     (client → server)
//!  as the request's, PT 114       req len    flags  zero    MAC     fill     (server → client)
//! ```
//!
//! `reply len` 0 asks for a small acknowledgement ([`MIN_LEN`] bytes): an upstream probe, where
//! the request itself has the size under test. A non-zero `reply len` asks the server to answer
//! with that many bytes: a downstream probe, whose request stays small. The server sends such a
//! reply, larger than its request, only for a session whose key the MAC proves, toward the
//! session's own peer and within a per-session byte budget (`session::MTU_DOWN_BUDGET`), so it
//! amplifies nothing for anyone without the key. `flags` bit 0 asks the server to send the reply
//! with DF set (else fragmentable); the reply carries the flags back, and the length of the
//! request as it arrived. The MAC covers bytes 0..48 and the packet length, as for plain echo.

pub const HEADER_LEN: usize = 56;
/// Smallest echo packet: the header alone.
pub const MIN_LEN: usize = HEADER_LEN;
/// Largest echo packet: a typical media MTU budget.
pub const MAX_LEN: usize = 1200;
pub const PT_REQUEST: u8 = 111;
pub const PT_REPLY: u8 = 112;
/// Path-MTU probe (client → server) and its answer (see the module docs).
pub const PT_MTU_PROBE: u8 = 113;
pub const PT_MTU_ACK: u8 = 114;
/// Largest path-MTU probe or answer: a 1500-byte IPv4 packet less its IP and UDP headers.
pub const MTU_MAX_LEN: usize = 1472;
/// Flags bit: send the answer with DF set.
const MTU_FLAG_DF: u8 = 1;
const MAC_AT: usize = 48;
const MAC_LEN: usize = 8;

/// A session key prepared for MACs: the HMAC-SHA256 (RFC 2104) inner and outer states after
/// the key's padded block, computed once, so each MAC is exactly two SHA-256 compressions.
///
/// Why not `ring::hmac`, which gives the same bytes (a test checks it): the echo path runs once
/// per packet on a server that sleeps between packets, so it runs with cold caches, and ring's
/// general streaming context (key copy, buffering, finish) cost the server 1.5–2 µs more per
/// packet there than this (BENCHMARKS.md, 2026-11-30). Every MAC here covers at most 48 header
/// bytes and a 2-byte length, which always fit one block.
#[derive(Clone)]
pub struct SessionKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const SHA256_H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    sha2::compress256(state, &[(*block).into()]);
}

/// The last block of a message whose first 64-byte block is already hashed: `tail` (the rest
/// of the message, at most 55 bytes), 0x80, zeros, then the bit length of the whole message
/// (FIPS 180-4 §5.1.1).
fn last_block(tail: &[&[u8]]) -> [u8; 64] {
    let mut block = [0u8; 64];
    let mut at = 0;
    for part in tail {
        block[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    block[at] = 0x80;
    block[56..].copy_from_slice(&(((64 + at) * 8) as u64).to_be_bytes());
    block
}

/// The digest of a message whose first block left `state` and whose rest is `tail`.
fn finish(mut state: [u32; 8], tail: &[&[u8]]) -> [u8; 32] {
    compress(&mut state, &last_block(tail));
    let mut digest = [0u8; 32];
    for (d, w) in digest.chunks_exact_mut(4).zip(state) {
        d.copy_from_slice(&w.to_be_bytes());
    }
    digest
}

impl SessionKey {
    pub fn new(bytes: &[u8; 32]) -> Self {
        let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
        for (i, k) in bytes.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let (mut inner, mut outer) = (SHA256_H0, SHA256_H0);
        compress(&mut inner, &ipad);
        compress(&mut outer, &opad);
        Self { inner, outer }
    }

    /// HMAC-SHA256 over `covered` and the 16-bit `len`, truncated to [`MAC_LEN`].
    fn mac<const N: usize>(&self, covered: &[u8; N], len: usize) -> [u8; MAC_LEN] {
        // One block holds the message, the 0x80 byte and the 8-byte length.
        const { assert!(N + 2 + 1 + 8 <= 64) };
        let inner = finish(self.inner, &[covered, &(len as u16).to_be_bytes()]);
        let outer = finish(self.outer, &[&inner]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&outer[..MAC_LEN]);
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

/// The first `N` bytes of a packet whose shape (at least [`MIN_LEN`] bytes) was checked.
fn head<const N: usize>(b: &[u8]) -> &[u8; N] {
    b.first_chunk().expect("an echo packet holds its header")
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
    let mac = key.mac(head::<32>(b), len);
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
    let mac = key.mac(head::<32>(b), b.len());
    if !mac_eq(&mac, &b[MAC_AT..MAC_AT + MAC_LEN]) {
        return Err(EchoError::BadMac);
    }
    Ok(h)
}

/// Writes the MAC over the fields before it and the packet's length (the whole of `b`).
fn seal(key: &SessionKey, b: &mut [u8]) {
    let mac = key.mac(head::<MAC_AT>(b), b.len());
    b[MAC_AT..MAC_AT + MAC_LEN].copy_from_slice(&mac);
}

/// Checks the MAC that [`seal`] wrote.
fn check_mac(key: &SessionKey, b: &[u8]) -> Result<(), EchoError> {
    let mac = key.mac(head::<MAC_AT>(b), b.len());
    if mac_eq(&mac, &b[MAC_AT..MAC_AT + MAC_LEN]) {
        Ok(())
    } else {
        Err(EchoError::BadMac)
    }
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
    seal(key, b);
    fill(&mut b[HEADER_LEN..], server_recv_us ^ 0x9e37_79b9_7f4a_7c15);
    len
}

/// Verifies and decodes a reply on the client.
pub fn decode_reply(key: &SessionKey, b: &[u8]) -> Result<Reply, EchoError> {
    check_shape(b, PT_REPLY)?;
    check_mac(key, b)?;
    Ok(Reply {
        session: u64_at(b, 12),
        seq: u32_at(b, 20),
        client_send_us: u64_at(b, 24),
        server_recv_us: u64_at(b, 32),
        server_send_us: u64_at(b, 40),
    })
}

/// A verified path-MTU probe as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuProbe {
    pub session: u64,
    pub seq: u32,
    /// Length of the answer asked for; [`MIN_LEN`] for an upstream probe's acknowledgement.
    pub reply_len: usize,
    /// The answer goes out with DF set.
    pub df: bool,
}

/// A verified answer to a path-MTU probe as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuAck {
    pub session: u64,
    pub seq: u32,
    /// The probe's length as it reached the server.
    pub request_len: usize,
    /// This answer's own length.
    pub len: usize,
    pub df: bool,
}

fn check_mtu_shape(b: &[u8], pt: u8) -> Result<(), EchoError> {
    if !(MIN_LEN..=MTU_MAX_LEN).contains(&b.len()) {
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

/// Writes a path-MTU probe of `len` bytes (clamped to MIN_LEN..=MTU_MAX_LEN); `reply_len` 0
/// asks for a small acknowledgement, else for an answer of that length (clamped the same way).
#[allow(clippy::too_many_arguments)]
pub fn encode_mtu_probe(
    key: &SessionKey,
    session: u64,
    seq: u32,
    client_send_us: u64,
    len: usize,
    reply_len: usize,
    df: bool,
    out: &mut [u8],
) -> usize {
    let len = len.clamp(MIN_LEN, MTU_MAX_LEN);
    let reply_len = if reply_len == 0 {
        0
    } else {
        reply_len.clamp(MIN_LEN, MTU_MAX_LEN)
    };
    let b = &mut out[..len];
    b[0] = 0x80;
    b[1] = PT_MTU_PROBE;
    b[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    b[4..8].copy_from_slice(&((client_send_us.wrapping_mul(48) / 1000) as u32).to_be_bytes());
    b[8..12].copy_from_slice(&(session as u32).to_be_bytes());
    b[12..20].copy_from_slice(&session.to_be_bytes());
    b[20..24].copy_from_slice(&seq.to_be_bytes());
    b[24..32].copy_from_slice(&client_send_us.to_be_bytes());
    b[32..34].copy_from_slice(&(reply_len as u16).to_be_bytes());
    b[34..MAC_AT].fill(0);
    b[34] = if df { MTU_FLAG_DF } else { 0 };
    seal(key, b);
    fill(&mut b[HEADER_LEN..], session ^ u64::from(seq) ^ 0x4d54_5521);
    len
}

/// The session a path-MTU probe names, before its key is known.
pub fn peek_mtu_probe(b: &[u8]) -> Result<u64, EchoError> {
    check_mtu_shape(b, PT_MTU_PROBE)?;
    Ok(u64_at(b, 12))
}

/// Verifies a path-MTU probe with the session key.
pub fn verify_mtu_probe(key: &SessionKey, b: &[u8]) -> Result<MtuProbe, EchoError> {
    let session = peek_mtu_probe(b)?;
    check_mac(key, b)?;
    let asked = usize::from(u16::from_be_bytes([b[32], b[33]]));
    if asked != 0 && !(MIN_LEN..=MTU_MAX_LEN).contains(&asked) {
        return Err(EchoError::Length(asked));
    }
    Ok(MtuProbe {
        session,
        seq: u32_at(b, 20),
        reply_len: asked.max(MIN_LEN),
        df: b[34] & MTU_FLAG_DF != 0,
    })
}

/// Writes the answer to a verified probe into `out` (`p.reply_len` bytes); returns its length.
pub fn encode_mtu_ack(key: &SessionKey, req: &[u8], p: &MtuProbe, out: &mut [u8]) -> usize {
    let len = p.reply_len;
    let b = &mut out[..len];
    b[..32].copy_from_slice(&req[..32]);
    b[1] = PT_MTU_ACK;
    b[32..34].copy_from_slice(&(req.len() as u16).to_be_bytes());
    b[34..MAC_AT].fill(0);
    b[34] = if p.df { MTU_FLAG_DF } else { 0 };
    seal(key, b);
    fill(
        &mut b[HEADER_LEN..],
        p.session.rotate_left(17) ^ u64::from(p.seq),
    );
    len
}

/// Verifies and decodes a path-MTU answer on the client.
pub fn decode_mtu_ack(key: &SessionKey, b: &[u8]) -> Result<MtuAck, EchoError> {
    check_mtu_shape(b, PT_MTU_ACK)?;
    check_mac(key, b)?;
    Ok(MtuAck {
        session: u64_at(b, 12),
        seq: u32_at(b, 20),
        request_len: usize::from(u16::from_be_bytes([b[32], b[33]])),
        len: b.len(),
        df: b[34] & MTU_FLAG_DF != 0,
    })
}

/// For the server's send path: `Some(df)` when `reply` is a downstream probe's answer (larger
/// than an acknowledgement), to be sent with DF set or not as its flags say; `None` otherwise.
pub fn mtu_reply_df(reply: &[u8]) -> Option<bool> {
    (reply.len() > MIN_LEN && reply.get(1) == Some(&PT_MTU_ACK) && reply[0] == 0x80)
        .then(|| reply[34] & MTU_FLAG_DF != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::new(&[b; 32])
    }

    /// The MAC is HMAC-SHA256 truncated, byte for byte: the same as ring's general HMAC (which
    /// computed it before), so clients and servers of either build agree.
    fn ring_mac(key: &[u8; 32], covered: &[u8], len: usize) -> [u8; MAC_LEN] {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let mut ctx = ring::hmac::Context::with_key(&k);
        ctx.update(covered);
        ctx.update(&(len as u16).to_be_bytes());
        ctx.sign().as_ref()[..MAC_LEN].try_into().unwrap()
    }

    #[test]
    fn mac_is_truncated_hmac_sha256() {
        // RFC 4231 test case 2's key and data, padded to our shapes, then arbitrary ones.
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        let c32: [u8; 32] = *b"what do ya want for nothing?....";
        assert_eq!(SessionKey::new(&k).mac(&c32, 160), ring_mac(&k, &c32, 160));
        let c48 = [0xa5u8; 48];
        assert_eq!(
            SessionKey::new(&k).mac(&c48, 1472),
            ring_mac(&k, &c48, 1472)
        );
    }

    proptest! {
        #[test]
        fn mac_matches_ring(k in any::<[u8; 32]>(), c in any::<[u8; 48]>(), len in 0usize..=65_535) {
            let key = SessionKey::new(&k);
            prop_assert_eq!(key.mac(&c, len), ring_mac(&k, &c, len));
            let c32: &[u8; 32] = c.first_chunk().unwrap();
            prop_assert_eq!(key.mac(c32, len), ring_mac(&k, c32, len));
        }
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

    #[test]
    fn mtu_probe_round_trips_and_keeps_the_demux_range() {
        let k = key(1);
        let mut req = [0u8; MTU_MAX_LEN];
        let n = encode_mtu_probe(&k, 9, 3, 77, 1472, 0, true, &mut req);
        assert_eq!(n, 1472, "larger than plain echo's MAX_LEN");
        assert!((128..=191).contains(&req[0]));
        assert_eq!(
            peek_request(&req[..n]),
            Err(EchoError::Length(n)),
            "never taken for plain echo"
        );
        let p = verify_mtu_probe(&k, &req[..n]).unwrap();
        assert_eq!((p.session, p.seq, p.reply_len, p.df), (9, 3, MIN_LEN, true));
        let mut rep = [0u8; MTU_MAX_LEN];
        let m = encode_mtu_ack(&k, &req[..n], &p, &mut rep);
        assert_eq!(m, MIN_LEN, "an upstream probe gets a small acknowledgement");
        assert_eq!(mtu_reply_df(&rep[..m]), None);
        let a = decode_mtu_ack(&k, &rep[..m]).unwrap();
        assert_eq!((a.seq, a.request_len, a.len), (3, 1472, MIN_LEN));
        // Downstream: a small request asking for 1400 bytes without DF.
        let n = encode_mtu_probe(&k, 9, 4, 78, 0, 1400, false, &mut req);
        assert_eq!(n, MIN_LEN);
        let p = verify_mtu_probe(&k, &req[..n]).unwrap();
        let m = encode_mtu_ack(&k, &req[..n], &p, &mut rep);
        assert_eq!(m, 1400);
        assert_eq!(mtu_reply_df(&rep[..m]), Some(false));
        let a = decode_mtu_ack(&k, &rep[..m]).unwrap();
        assert_eq!((a.request_len, a.len, a.df), (MIN_LEN, 1400, false));
    }

    #[test]
    fn mtu_probe_mac_covers_the_size_asked_for_and_the_flags() {
        let k = key(1);
        let mut req = [0u8; 200];
        let n = encode_mtu_probe(&k, 9, 3, 77, 64, 1400, true, &mut req);
        assert_eq!(verify_mtu_probe(&key(2), &req[..n]), Err(EchoError::BadMac));
        req[33] ^= 0x10;
        assert_eq!(verify_mtu_probe(&k, &req[..n]), Err(EchoError::BadMac));
        let n = encode_mtu_probe(&k, 9, 3, 77, 64, 1400, true, &mut req);
        req[34] ^= 1;
        assert_eq!(verify_mtu_probe(&k, &req[..n]), Err(EchoError::BadMac));
        // A probe cannot pass as an answer, nor plain echo as a probe.
        let n = encode_mtu_probe(&k, 9, 3, 77, 64, 0, true, &mut req);
        req[1] = PT_MTU_ACK;
        assert_eq!(decode_mtu_ack(&k, &req[..n]), Err(EchoError::BadMac));
        let n = encode_request(&k, 9, 3, 77, 64, &mut req);
        assert_eq!(
            verify_mtu_probe(&k, &req[..n]),
            Err(EchoError::PayloadType(PT_REQUEST))
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = peek_request(&bytes);
            let _ = verify_request(&key(3), &bytes);
            let _ = decode_reply(&key(3), &bytes);
            let _ = verify_mtu_probe(&key(3), &bytes);
            let _ = decode_mtu_ack(&key(3), &bytes);
            let _ = mtu_reply_df(&bytes);
        }
    }
}
