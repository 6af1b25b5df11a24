//! The live server's state, sans-IO: what to answer to each tapped datagram, the bounded
//! per-nonce counters, the TCP probe records, and the rate limits that keep RTCD's host from
//! ever being loaded by the probe.

use super::hello::{hello_reply, HelloInfo};
use super::packet::{self, Echo, Kind, TcpSeen};
use crate::ratelimit::{source_key, Bucket, PerSource};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// How long a source's live UDP counts as "seen" for its TCP probe: a client's hello and its
/// TCP probe are at most a run (seconds to a minute) apart.
pub const UDP_MEMORY_US: u64 = 120_000_000;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Replies per second for the whole tap (default 2,000).
    pub total_pps: u32,
    /// Replies per second to one source address (IPv6: one /64).
    pub per_source_pps: u32,
    /// Nonces one source may hold in the table at once.
    pub nonces_per_source: usize,
    /// Size of the nonce table and of the TCP record table.
    pub max_nonces: usize,
    /// A nonce with no packet for this long is reported and freed.
    pub idle_us: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            total_pps: 2000,
            per_source_pps: 500,
            nonces_per_source: 16,
            max_nonces: 4096,
            idle_us: 5_000_000,
        }
    }
}

/// Counters of one nonce (one client's echo toward one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceStats {
    pub nonce: u64,
    pub from: SocketAddr,
    pub arrived_at: IpAddr,
    pub rx: u32,
    pub tx: u32,
    pub first_us: u64,
    pub last_us: u64,
}

/// What the operator's output shows, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Hello {
        from: SocketAddr,
        arrived_at: IpAddr,
    },
    TcpProbe {
        nonce: u64,
        from: SocketAddr,
        arrived_at: IpAddr,
        /// Whether a live UDP packet from the same address arrived in the last
        /// [`UDP_MEMORY_US`]: the client sends its hello before the TCP probe, so `Some(false)`
        /// means UDP from this client does not reach RTCD's host. `None`: the table was full.
        udp_seen: Option<bool>,
    },
    /// A nonce went idle: the client's UDP echo toward one address is over.
    EchoDone(NonceStats),
}

/// Packets dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    pub malformed: u64,
    pub bad_mac: u64,
    pub rate_limited: u64,
    pub table_full: u64,
    /// Live UDP while nothing held RTCD's port (RTCD not running): left unanswered.
    pub not_running: u64,
}

#[derive(Debug)]
pub struct Responder {
    key: Option<[u8; 32]>,
    limits: Limits,
    hello: HelloInfo,
    /// Something holds RTCD's UDP port. When nothing does, RTCD is not running: answering
    /// would tell the client that media reaches RTCD, so the port is left as the kernel
    /// leaves it, closed ("port unreachable").
    held: bool,
    total: Bucket,
    per_source: PerSource,
    nonces: HashMap<u64, NonceStats>,
    per_source_nonces: HashMap<IpAddr, usize>,
    tcp: HashMap<u64, (TcpSeen, u64)>,
    /// Last valid live UDP packet per source address, for the TCP probe's `udp_seen`.
    udp_sources: HashMap<IpAddr, u64>,
    events: Vec<Event>,
    pub drops: Drops,
}

impl Responder {
    pub fn new(key: Option<[u8; 32]>, limits: Limits, hello: HelloInfo, now_us: u64) -> Self {
        let total = f64::from(limits.total_pps.max(1));
        let per = f64::from(limits.per_source_pps.max(1));
        Self {
            key,
            limits,
            hello,
            held: true,
            total: Bucket::new(total, total / 10.0 + 1.0, now_us),
            per_source: PerSource::new(per, per / 5.0 + 1.0, limits.max_nonces),
            nonces: HashMap::new(),
            per_source_nonces: HashMap::new(),
            tcp: HashMap::new(),
            udp_sources: HashMap::new(),
            events: Vec::new(),
            drops: Drops::default(),
        }
    }

    /// What later hellos announce: RTCD restarted with another configuration, or its hostname
    /// override resolves differently now. Sessions under way keep their figures.
    pub fn set_hello(&mut self, hello: HelloInfo) {
        self.hello = hello;
    }

    /// What hellos announce now.
    pub fn hello(&self) -> &HelloInfo {
        &self.hello
    }

    /// Whether something holds RTCD's UDP port (see `held`); live UDP is answered only then.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    pub fn held(&self) -> bool {
        self.held
    }

    /// A tapped UDP datagram to RTCD's port, `to` being the local address it arrived at.
    /// Returns the reply payload to send from `to` back to `from`, if any.
    pub fn on_udp(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        p: &[u8],
        now_us: u64,
    ) -> Option<Vec<u8>> {
        if !self.held {
            self.drops.not_running += 1;
            return None;
        }
        let (kind, nonce) = match packet::check(p, self.key.as_ref()) {
            Ok(k) => k,
            Err(packet::LiveError::BadMac) => {
                self.drops.bad_mac += 1;
                return None;
            }
            Err(_) => {
                self.drops.malformed += 1;
                return None;
            }
        };
        self.saw_udp(from.ip(), now_us);
        // Counted before the limits: the reply's rx count is what crossed the path.
        let query = p[5] & packet::FLAG_QUERY != 0;
        if kind == Kind::EchoRequest && !query && !self.count_rx(nonce, from, to.ip(), now_us) {
            return None;
        }
        if !self.per_source.allow(from.ip(), now_us) || !self.total.take(now_us) {
            self.drops.rate_limited += 1;
            return None;
        }
        let key = self.key;
        match kind {
            Kind::EchoRequest => self.echo(p, nonce, now_us),
            Kind::HelloRequest => {
                self.events.push(Event::Hello {
                    from,
                    arrived_at: to.ip(),
                });
                let mut info = self.hello.clone();
                info.seen_from = Some(from.ip());
                info.arrived_at = Some(to.ip());
                Some(hello_reply(nonce, &info, key.as_ref()))
            }
            Kind::TcpQuery => {
                let seen = self.tcp.get(&nonce).map(|(s, at)| TcpSeen {
                    age_ms: (now_us.saturating_sub(*at) / 1000) as u32,
                    ..*s
                });
                Some(packet::tcp_answer(nonce, seen, key.as_ref()))
            }
            _ => {
                self.drops.malformed += 1;
                None
            }
        }
    }

    fn count_rx(&mut self, nonce: u64, from: SocketAddr, to: IpAddr, now_us: u64) -> bool {
        if let Some(s) = self.nonces.get_mut(&nonce) {
            s.rx = s.rx.saturating_add(1);
            s.last_us = now_us;
            return true;
        }
        let src = source_key(from.ip());
        let held = self.per_source_nonces.get(&src).copied().unwrap_or(0);
        if self.nonces.len() >= self.limits.max_nonces || held >= self.limits.nonces_per_source {
            self.drops.table_full += 1;
            return false;
        }
        *self.per_source_nonces.entry(src).or_default() += 1;
        self.nonces.insert(
            nonce,
            NonceStats {
                nonce,
                from,
                arrived_at: to,
                rx: 1,
                tx: 0,
                first_us: now_us,
                last_us: now_us,
            },
        );
        true
    }

    fn echo(&mut self, p: &[u8], nonce: u64, now_us: u64) -> Option<Vec<u8>> {
        let req = packet::parse_echo(p).ok()?;
        let s = self.nonces.get_mut(&nonce)?;
        if !req.query {
            s.tx = s.tx.saturating_add(1);
        }
        let e = Echo {
            server_rx_us: now_us,
            server_tx_us: now_us,
            server_rx_count: s.rx,
            server_tx_count: s.tx,
            arrived_at: Some(s.arrived_at),
            ..req
        };
        Some(packet::echo_reply(&e, p.len(), self.key.as_ref()))
    }

    /// The payload of a tapped TCP segment to RTCD's port (after the TCP header).
    pub fn on_tcp(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8], now_us: u64) {
        // RFC 4571: a 2-byte length, then the live packet.
        let Some(frame) = payload.get(2..2 + packet::TCP_PROBE_LEN) else {
            self.drops.malformed += 1;
            return;
        };
        match packet::check(frame, self.key.as_ref()) {
            Ok((Kind::TcpProbe, nonce)) => {
                if self.tcp.len() >= self.limits.max_nonces && !self.tcp.contains_key(&nonce) {
                    self.drops.table_full += 1;
                    return;
                }
                let seen = TcpSeen {
                    from: from.ip(),
                    from_port: from.port(),
                    arrived_at: to.ip(),
                    age_ms: 0,
                };
                // Retransmissions repeat the segment: keep the first sighting.
                if let std::collections::hash_map::Entry::Vacant(v) = self.tcp.entry(nonce) {
                    v.insert((seen, now_us));
                    let udp_seen = self.udp_seen(from.ip(), now_us);
                    self.events.push(Event::TcpProbe {
                        nonce,
                        from,
                        arrived_at: to.ip(),
                        udp_seen,
                    });
                }
            }
            Err(packet::LiveError::BadMac) => self.drops.bad_mac += 1,
            _ => self.drops.malformed += 1,
        }
    }

    fn saw_udp(&mut self, ip: IpAddr, now_us: u64) {
        // Bounded like the nonce table; a full table makes later answers "unknown", never false.
        if self.udp_sources.len() < self.limits.max_nonces || self.udp_sources.contains_key(&ip) {
            self.udp_sources.insert(ip, now_us);
        }
    }

    fn udp_seen(&self, ip: IpAddr, now_us: u64) -> Option<bool> {
        match self.udp_sources.get(&ip) {
            Some(at) => Some(now_us.saturating_sub(*at) < UDP_MEMORY_US),
            None if self.udp_sources.len() >= self.limits.max_nonces => None,
            None => Some(false),
        }
    }

    /// Frees idle nonces (reporting them) and old TCP records; call every second or so.
    pub fn poll(&mut self, now_us: u64) {
        let idle = self.limits.idle_us;
        let done: Vec<u64> = self
            .nonces
            .values()
            .filter(|s| now_us.saturating_sub(s.last_us) >= idle)
            .map(|s| s.nonce)
            .collect();
        for n in done {
            if let Some(s) = self.nonces.remove(&n) {
                let src = source_key(s.from.ip());
                if let Some(c) = self.per_source_nonces.get_mut(&src) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        self.per_source_nonces.remove(&src);
                    }
                }
                self.events.push(Event::EchoDone(s));
            }
        }
        self.udp_sources
            .retain(|_, at| now_us.saturating_sub(*at) < UDP_MEMORY_US);
        // A TCP record lives long enough for the client's query after a blocked-UDP retry.
        self.tcp
            .retain(|_, (_, at)| now_us.saturating_sub(*at) < 12 * idle);
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn nonces(&self) -> usize {
        self.nonces.len()
    }
}
