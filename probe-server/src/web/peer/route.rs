//! Which page session a datagram or ICE-TCP frame belongs to: STUN by the local ufrag of its
//! USERNAME, everything else (DTLS) by the source address a session learnt from an accepted
//! STUN request. Looked up for every STUN and DTLS datagram on the probe's port, so the miss
//! path allocates nothing.

use probe_proto::demux::Kind;
use probe_proto::msg::Transport;
use std::collections::HashMap;
use std::net::SocketAddr;

/// STUN attribute USERNAME (RFC 8489 §14.3).
const ATTR_USERNAME: u16 = 0x0006;
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
/// Source addresses one session may learn per transport: a browser checks from a few (host,
/// mDNS-hidden, srflx) addresses, not more; a bound keeps the maps small whatever it sends.
pub const MAX_ADDRS_PER_SESSION: usize = 8;

/// The local ufrag of a STUN Binding request: the part of USERNAME before ':'. For a request
/// to us USERNAME is "ourUfrag:theirUfrag" (RFC 8445 §7.2.2; str0m checks the same order in
/// is-0.11.1 src/agent.rs:1096 `split_username` → `(local, remote)`). None for anything else.
pub fn stun_local_ufrag(pkt: &[u8]) -> Option<&str> {
    if pkt.len() < 20
        || pkt[0..2] != BINDING_REQUEST
        || pkt[4..8] != probe_proto::stun::MAGIC_COOKIE.to_be_bytes()
    {
        return None;
    }
    let body = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    let end = (20 + body).min(pkt.len());
    let mut at = 20;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
        let len = usize::from(u16::from_be_bytes([pkt[at + 2], pkt[at + 3]]));
        let value = pkt.get(at + 4..at + 4 + len)?;
        if kind == ATTR_USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next().filter(|u| !u.is_empty());
        }
        // Attribute values are padded to a multiple of 4.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// DTLS records in one datagram or frame (13-byte record headers, RFC 6347 §4.1); at least 1
/// for anything handed over as DTLS, so a malformed record is still seen.
pub fn dtls_records(pkt: &[u8]) -> u64 {
    let mut at = 0;
    let mut n = 0u64;
    while at + 13 <= pkt.len() && (20..=63).contains(&pkt[at]) {
        n += 1;
        at += 13 + usize::from(u16::from_be_bytes([pkt[at + 11], pkt[at + 12]]));
    }
    n.max(1)
}

/// The routing maps, written by the owning task, read by the socket loops.
#[derive(Debug, Default)]
pub struct Routes {
    ufrags: HashMap<String, u64>,
    udp: HashMap<SocketAddr, u64>,
    tcp: HashMap<SocketAddr, u64>,
}

impl Routes {
    pub fn add_session(&mut self, ufrag: &str, key: u64) {
        self.ufrags.insert(ufrag.to_owned(), key);
    }

    /// Forgets the session's ufrag and every address it learnt.
    pub fn remove_session(&mut self, key: u64) {
        self.ufrags.retain(|_, k| *k != key);
        self.udp.retain(|_, k| *k != key);
        self.tcp.retain(|_, k| *k != key);
    }

    /// Remembers that `addr` belongs to `key` (after the session accepted a STUN request from
    /// it). False when the session already holds its share of addresses.
    pub fn learn(&mut self, proto: Transport, addr: SocketAddr, key: u64) -> bool {
        let map = self.map_mut(proto);
        if map.get(&addr) == Some(&key) {
            return true;
        }
        if map.values().filter(|k| **k == key).count() >= MAX_ADDRS_PER_SESSION {
            return false;
        }
        map.insert(addr, key);
        true
    }

    pub fn by_ufrag(&self, ufrag: &str) -> Option<u64> {
        self.ufrags.get(ufrag).copied()
    }

    pub fn by_addr(&self, proto: Transport, addr: &SocketAddr) -> Option<u64> {
        match proto {
            Transport::Udp => self.udp.get(addr).copied(),
            Transport::Tcp => self.tcp.get(addr).copied(),
        }
    }

    /// The session a datagram belongs to: STUN by ufrag, DTLS by learnt source.
    pub fn udp_session(&self, kind: Kind, src: &SocketAddr, pkt: &[u8]) -> Option<u64> {
        match kind {
            Kind::Stun => self.by_ufrag(stun_local_ufrag(pkt)?),
            Kind::Dtls => self.by_addr(Transport::Udp, src),
            _ => None,
        }
    }

    /// The first frame of an ICE-TCP connection: a STUN request for a live session's ufrag.
    pub fn tcp_session(&self, first_frame: &[u8]) -> Option<u64> {
        self.by_ufrag(stun_local_ufrag(first_frame)?)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ufrags.is_empty()
    }

    fn map_mut(&mut self, proto: Transport) -> &mut HashMap<SocketAddr, u64> {
        match proto {
            Transport::Udp => &mut self.udp,
            Transport::Tcp => &mut self.tcp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::stun::{self, IceCheck};

    fn check(username: &str) -> Vec<u8> {
        stun::ice_check_request(&IceCheck {
            tid: [7; 12],
            username,
            password: "pw",
            priority: 1,
            controlling: true,
            tiebreaker: 9,
            use_candidate: false,
        })
    }

    #[test]
    fn the_local_ufrag_is_the_part_before_the_colon() {
        assert_eq!(stun_local_ufrag(&check("srvU:brwU")), Some("srvU"));
        assert_eq!(stun_local_ufrag(&check("solo")), Some("solo"));
        assert_eq!(stun_local_ufrag(&check(":brwU")), None);
        // A Binding request without USERNAME (a plain reachability check) names nobody.
        let plain = stun::binding_request([1; 12], None, None, 0);
        assert_eq!(stun_local_ufrag(&plain), None);
    }

    #[test]
    fn responses_and_garbage_name_no_ufrag() {
        let mut resp = check("srvU:brwU");
        resp[1] = 0x01; // 0x0101: Binding success response
        resp[0] = 0x01;
        assert_eq!(stun_local_ufrag(&resp), None);
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0u8; 19]), None);
        let mut cut = check("srvU:brwU");
        cut.truncate(26);
        assert_eq!(stun_local_ufrag(&cut), None);
        let mut bad_cookie = check("srvU:brwU");
        bad_cookie[4] ^= 1;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
    }

    #[test]
    fn any_bytes_are_safe() {
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            let mut pkt = check("abcd:efgh");
            for _ in 0..len % 7 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = x as usize % pkt.len();
                pkt[i] = (x >> 24) as u8;
            }
            pkt.truncate(len % (pkt.len() + 1));
            let _ = stun_local_ufrag(&pkt);
            let _ = dtls_records(&pkt);
        }
    }

    #[test]
    fn dtls_records_walks_the_record_headers() {
        let mut two = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2];
        two.extend_from_slice(&[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9]);
        assert_eq!(dtls_records(&two), 2);
        assert_eq!(dtls_records(&[22, 1, 2]), 1);
    }

    #[test]
    fn routes_by_ufrag_then_by_learnt_address() {
        let mut r = Routes::default();
        let a: SocketAddr = "192.0.2.7:5000".parse().expect("literal");
        r.add_session("srvU", 1);
        assert_eq!(r.udp_session(Kind::Stun, &a, &check("srvU:b")), Some(1));
        assert_eq!(r.udp_session(Kind::Stun, &a, &check("other:b")), None);
        assert_eq!(r.tcp_session(&check("srvU:b")), Some(1));
        // DTLS only once the session learnt the source, and only on that transport.
        let dtls = [22u8; 20];
        assert_eq!(r.udp_session(Kind::Dtls, &a, &dtls), None);
        assert!(r.learn(Transport::Udp, a, 1));
        assert_eq!(r.udp_session(Kind::Dtls, &a, &dtls), Some(1));
        assert_eq!(r.by_addr(Transport::Tcp, &a), None);
        assert_eq!(r.udp_session(Kind::Echo, &a, &dtls), None);
        r.remove_session(1);
        assert_eq!(r.udp_session(Kind::Dtls, &a, &dtls), None);
        assert_eq!(r.udp_session(Kind::Stun, &a, &check("srvU:b")), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_session_learns_a_bounded_number_of_addresses() {
        let mut r = Routes::default();
        r.add_session("u", 5);
        for port in 0..MAX_ADDRS_PER_SESSION as u16 {
            assert!(r.learn(Transport::Udp, SocketAddr::from(([192, 0, 2, 1], port)), 5));
        }
        let extra = SocketAddr::from(([192, 0, 2, 1], 999));
        assert!(!r.learn(Transport::Udp, extra, 5));
        // Relearning a known address is fine; other sessions and transports have their own share.
        assert!(r.learn(Transport::Udp, SocketAddr::from(([192, 0, 2, 1], 0)), 5));
        assert!(r.learn(Transport::Tcp, extra, 5));
        assert!(r.learn(Transport::Udp, extra, 6));
    }
}
