//! The server's per-datagram logic, sans IO: session table, STUN and echo answers, counters.
//!
//! The async shell owns the sockets and the clock; it hands every STUN or echo datagram (UDP, or
//! an RFC 4571 frame payload from TCP) to [`Core`] and sends back whatever reply it writes.

use crate::auth;
use crate::echo::{self, SessionKey};
use crate::msg::{Counters, Hello, Refused, Transport};
use crate::ratelimit::{source_key, Bucket, PerSource};
use crate::stun;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Operator limits. Defaults are safe to leave on the public internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub max_duration_ms: u32,
    pub min_interval_us: u32,
    pub max_packet: usize,
    pub idle_timeout_us: u64,
    /// Reply packets per second for the whole server: a fifth for anyone's STUN Bindings, the
    /// rest kept for the echo and ICE checks of live sessions, of which the Bindings of sources
    /// that proved their address may take at most another fifth: a Binding flood, spoofed or
    /// from proven sources, cannot starve the sessions.
    pub max_reply_pps: u32,
    /// Per-source-address rate of unauthenticated UDP packets (STUN, QUIC before Retry).
    pub unauth_per_source_pps: u32,
    /// Source addresses tracked by the per-source limiter at once.
    pub tracked_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 256,
            max_sessions_per_ip: 8,
            max_duration_ms: 120_000,
            min_interval_us: 1_000,
            max_packet: echo::MAX_LEN,
            idle_timeout_us: 15_000_000,
            max_reply_pps: 50_000,
            unauth_per_source_pps: 50,
            tracked_sources: 65_536,
        }
    }
}

/// Whole-server counters, exported in logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub stun_requests: u64,
    pub stun_replies: u64,
    /// Binding requests shorter than their answer would be (anti-amplification).
    pub stun_too_small: u64,
    pub ice_checks: u64,
    pub ice_bad_credentials: u64,
    pub echo_requests: u64,
    pub echo_replies: u64,
    pub drop_unknown_session: u64,
    pub drop_bad_mac: u64,
    pub drop_malformed: u64,
    pub sessions_opened: u64,
    pub sessions_expired: u64,
    pub sessions_refused: u64,
    /// Packets over a per-source, per-session or server-wide rate.
    pub drop_rate_limited: u64,
    /// STUN without the token's MESSAGE-INTEGRITY while a token is configured.
    pub drop_unauthenticated: u64,
    /// Control answers not sent because the request was shorter (anti-amplification).
    pub control_too_small: u64,
    /// Datagrams outside every demux range (first byte 4–63, or empty).
    pub drop_not_ours: u64,
    /// QUIC datagrams dropped because the control endpoint's queue was full.
    pub drop_quic_queue: u64,
    /// Echo for a live session from an address other than the session's peer.
    pub drop_wrong_peer: u64,
    /// QUIC long headers of another version, or Initials that do not decrypt: dropped before
    /// quinn could answer them statelessly.
    pub drop_quic_invalid: u64,
    /// Live-mode hellos (first bytes [`crate::live::packet::MAGIC`]) a probe-client sends
    /// before its normal probe: not for this server, dropped silently.
    pub ignored_live_hello: u64,
    /// TCP or QUIC connections closed for serving no session within 10 s of their start.
    pub conn_no_progress: u64,
    /// Connections without a session closed to make room for a newcomer at the cap.
    pub conn_displaced: u64,
}

impl ServerStats {
    /// Everything that was received and not answered, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.stun_too_small
            + self.ice_bad_credentials
            + self.drop_unknown_session
            + self.drop_bad_mac
            + self.drop_malformed
            + self.drop_rate_limited
            + self.drop_unauthenticated
            + self.control_too_small
            + self.drop_not_ours
            + self.drop_quic_queue
            + self.drop_wrong_peer
            + self.drop_quic_invalid
            + self.ignored_live_hello
    }
}

#[derive(Debug)]
struct Session {
    key: SessionKey,
    peer: IpAddr,
    last_us: u64,
    deadline_us: u64,
    counters: Counters,
    ice: Option<(String, String)>,
    /// The session's own echo rate, from the operator's minimum interval.
    bucket: Bucket,
    /// TURN relayed addresses the client announced on the control channel (proto 3).
    relays: Vec<RelayPeer>,
    /// Bytes of downstream path-MTU answers this session may still get (see [`MTU_DOWN_BUDGET`]).
    mtu_budget: usize,
    /// The exact address of the session's first verified UDP echo from its peer: its MTU
    /// answers over UDP go there only, not to other ports of the peer's IP (CGNAT neighbours).
    echo_from: Option<SocketAddr>,
    /// MTU answers sent over UDP per (path: 0 direct, 1 + relay index; sequence number).
    mtu_seqs: HashMap<(u8, u32), u8>,
}

/// When an echo request is handled: `now_us`, and when it reached the server's socket
/// (`received_us`, at most `now_us`). The reply carries both (its `server rx` and `server tx`),
/// so the client subtracts what the request spent queued in the server from its RTT
/// (`stats`'s RTT definition). A shell that knows only the time it read the datagram passes
/// that one `u64` for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoAt {
    now_us: u64,
    received_us: u64,
}

impl EchoAt {
    /// `received_us` later than `now_us` (clocks that disagree) is taken as `now_us`.
    pub fn new(now_us: u64, received_us: u64) -> Self {
        Self {
            now_us,
            received_us: received_us.min(now_us),
        }
    }

    pub fn now_us(self) -> u64 {
        self.now_us
    }
}

impl From<u64> for EchoAt {
    fn from(now_us: u64) -> Self {
        Self::new(now_us, now_us)
    }
}

/// Where an echo or MTU datagram came from: the whole address over UDP, or only the IP where
/// the port tells nothing (TCP: the connection proved the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoFrom {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl From<IpAddr> for EchoFrom {
    fn from(ip: IpAddr) -> Self {
        Self { ip, port: None }
    }
}

impl From<SocketAddr> for EchoFrom {
    fn from(a: SocketAddr) -> Self {
        Self {
            ip: a.ip(),
            port: Some(a.port()),
        }
    }
}

impl EchoFrom {
    fn addr(self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.ip.to_canonical(), self.port?))
    }

    /// Whether an MTU answer may go to this address, `pinned` being where the path proved
    /// it receives our packets. Without a port (TCP, or a shell that passes only the IP) the
    /// IP check already made is all there is.
    fn matches(self, pinned: Option<SocketAddr>) -> bool {
        match self.addr() {
            Some(a) => pinned == Some(a),
            None => true,
        }
    }
}

/// A TURN relay the session's client announced. Echo from it is answered only after a
/// return-routability check: until a request carries the cookie the server put in an earlier
/// reply toward that address, at most [`RELAY_UNCONFIRMED_REPLIES`] replies go there. Whoever
/// announced a victim's address and spoofed its source gets that many same-size replies sent
/// to it, fewer than an unauthenticated STUN Binding already gets, and then nothing.
#[derive(Debug)]
struct RelayPeer {
    ip: IpAddr,
    /// A relay on the client's own IP (a TURN server behind the same NAT, or both on one
    /// host): told apart from the direct path only by its exact relayed address.
    exact: Option<SocketAddr>,
    cookie: [u8; RELAY_COOKIE_LEN],
    confirmed: bool,
    /// The exact address the confirming request came from (when the shell gave the port).
    from: Option<SocketAddr>,
    unconfirmed_replies: u32,
    counters: Counters,
}

/// Replies sent toward an announced relay before it proved it receives them.
pub const RELAY_UNCONFIRMED_REPLIES: u32 = 4;
/// Relays one session may announce.
pub const MAX_RELAYS_PER_SESSION: usize = 4;
/// Length of the relay cookie, carried in the echo fill at [`RELAY_COOKIE_AT`].
pub const RELAY_COOKIE_LEN: usize = 8;
/// Where the cookie sits in replies and requests: the first fill bytes after the MAC, which the
/// MAC does not cover (so an echo packet needs at least 64 bytes to carry it).
pub const RELAY_COOKIE_AT: usize = echo::HEADER_LEN;
/// Bytes of path-MTU answers larger than their probe that one session may elicit in its life:
/// the client's plan (15 probes, 3 tries each, up to 1472 bytes: at most 66 KB over UDP, plus
/// a few 1400-byte TCP frames) fits; nothing past it is answered, whatever the key.
pub const MTU_DOWN_BUDGET: usize = 96 * 1024;
/// Answers one MTU probe (path, sequence number) gets over UDP: the plan's tries
/// ([`crate::path::mtu::MAX_PROBES`]); a replayed probe gets nothing more.
pub const MTU_SEQ_ANSWERS: u8 = crate::path::mtu::MAX_PROBES;
/// (path, sequence number) pairs remembered per session: the plan has a few dozen per path.
const MAX_MTU_SEQS: usize = 512;

fn l_min_interval(l: &Limits) -> u32 {
    l.min_interval_us.max(1)
}

/// ICE credentials the server hands out with a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

#[derive(Debug)]
pub struct Core {
    limits: Limits,
    sessions: HashMap<u64, Session>,
    by_ufrag: HashMap<String, u64>,
    token: Option<[u8; 32]>,
    /// Nonces of signed hellos seen lately, with when they may be forgotten (wall ms).
    hello_nonces: HashMap<[u8; 16], u64>,
    /// Unauthenticated UDP (STUN, QUIC before Retry): sources here may be spoofed.
    unauth: PerSource,
    /// TCP accepts and QUIC connections after Retry: sources proved they receive our packets,
    /// so each has a table of its own that no spoofed datagram can touch.
    tcp_accepts: PerSource,
    quic_validated: PerSource,
    uploads: PerSource,
    /// Echo and ICE replies of live sessions, and Bindings from proven sources.
    replies: Bucket,
    /// What proven sources' Bindings may take from `replies`, all of them together.
    proven_cap: Bucket,
    /// Replies to STUN Bindings from anyone, a budget of their own.
    stun_replies: Bucket,
    /// Bindings per source (IPv4 address, IPv6 /48) drawn from `replies` by sources that
    /// proved their address.
    proven_stun: PerSource,
    /// The shell's wall clock (ms since the epoch), for the freshness of signed Bindings.
    wall_ms: u64,
    /// Signed Binding transactions answered lately: (forget after, wall ms; answers so far).
    signed_tids: HashMap<[u8; 12], (u64, u8)>,
    pub stats: ServerStats,
}

/// How far a signed hello's clock may be from the server's.
const HELLO_SKEW_MS: u64 = 10 * 60 * 1000;
/// Signed hellos remembered at once (only token holders can add to this).
const MAX_HELLO_NONCES: usize = 100_000;

/// Answers one signed Binding transaction gets (the client retransmits a few times).
const SIGNED_TID_ANSWERS: u8 = 8;
/// Signed Binding transactions remembered at once (only token holders can add to this).
const MAX_SIGNED_TIDS: usize = 100_000;
/// TCP connections per second one source may open (the handshake proved it). One source is
/// often a whole office behind a NAT: a browser test page run opens up to eight connections
/// (the page asks with no keep-alive), so the burst lets ten people open the link at once.
/// A TCP accept costs the server little; the concurrent caps (`--max-tcp-connections*`)
/// bound what a source may hold.
const TCP_CONN_PER_S: f64 = 10.0;
const TCP_CONN_BURST: f64 = 100.0;
/// QUIC connections per second one source may open after Retry validated it: each is a TLS
/// handshake, costly, and only probe-client uses QUIC (one connection a run).
const QUIC_CONN_PER_S: f64 = 5.0;
const QUIC_CONN_BURST: f64 = 20.0;
/// A source that completed a TCP handshake or a QUIC Retry this recently has its Bindings
/// answered from the sessions' budget, at most [`PROVEN_STUN_PER_S`] a second.
const PROVEN_FOR_US: u64 = 5 * 60 * 1_000_000;
const PROVEN_STUN_PER_S: f64 = 20.0;
/// Proven sources share [`PROVEN_STUN_PER_S`] per IPv6 /48, the largest end-site assignment
/// (RFC 6177, RIPE-690; homes usually get a /56): one customer's 65,536 /64s, each able to
/// complete handshakes, get one share, not thousands.
const PROVEN_V6_PREFIX: u8 = 48;

/// Echo packets a session may send back to back (a video frame is 6 packets).
const SESSION_BURST: f64 = 64.0;

impl Core {
    pub fn new(limits: Limits) -> Self {
        Self::with_token(limits, None)
    }

    /// `token`: the key from [`auth::token_key`] when the operator set an access token.
    pub fn with_token(limits: Limits, token: Option<[u8; 32]>) -> Self {
        let pps = f64::from(limits.max_reply_pps);
        let stun_pps = (pps / 5.0).max(1.0);
        let echo_pps = (pps - stun_pps).max(1.0);
        // Proven Bindings may take a fifth of `max_reply_pps` out of the echo's share, so echo
        // keeps at least three fifths; the burst holds two clients arriving at once, and is
        // at most half the echo's own burst on any server with 1000 pps or more.
        let proven_pps = stun_pps;
        let proven_burst = (proven_pps / 10.0).max(2.0 * PROVEN_STUN_PER_S) + 1.0;
        let verified = |per_s, burst| PerSource::new(per_s, burst, limits.tracked_sources);
        Self {
            unauth: PerSource::new(
                f64::from(limits.unauth_per_source_pps),
                f64::from(limits.unauth_per_source_pps) * 2.0,
                limits.tracked_sources,
            ),
            tcp_accepts: verified(TCP_CONN_PER_S, TCP_CONN_BURST),
            quic_validated: verified(QUIC_CONN_PER_S, QUIC_CONN_BURST),
            // A report every 5 s per source on average, 12 at once: plenty for sites behind one
            // NAT, too little to fill a disk.
            uploads: PerSource::new(0.2, 12.0, 4096),
            replies: Bucket::new(echo_pps, echo_pps / 10.0 + 1.0, 0),
            stun_replies: Bucket::new(stun_pps, stun_pps / 10.0 + 1.0, 0),
            proven_cap: Bucket::new(proven_pps, proven_burst, 0),
            proven_stun: PerSource::new(
                PROVEN_STUN_PER_S,
                PROVEN_STUN_PER_S,
                limits.tracked_sources,
            )
            .v6_prefix(PROVEN_V6_PREFIX),
            wall_ms: 0,
            signed_tids: HashMap::new(),
            limits,
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            token,
            hello_nonces: HashMap::new(),
            stats: ServerStats::default(),
        }
    }

    pub fn token(&self) -> Option<&[u8; 32]> {
        self.token.as_ref()
    }

    /// Admits one unauthenticated datagram from `ip` (STUN, a QUIC Initial before Retry).
    pub fn admit_unauthenticated(&mut self, ip: IpAddr, now_us: u64) -> bool {
        let ok = self.unauth.allow(ip, now_us);
        if !ok {
            self.stats.drop_rate_limited += 1;
        }
        ok
    }

    /// Admits one accepted TCP connection from `ip` (a completed handshake: not spoofed).
    pub fn admit_tcp(&mut self, ip: IpAddr, now_us: u64) -> bool {
        let ok = self.tcp_accepts.allow(ip, now_us);
        if !ok {
            self.stats.drop_rate_limited += 1;
        }
        ok
    }

    /// Admits one QUIC connection from `ip` whose address a Retry validated.
    pub fn admit_validated_quic(&mut self, ip: IpAddr, now_us: u64) -> bool {
        let ok = self.quic_validated.allow(ip, now_us);
        if !ok {
            self.stats.drop_rate_limited += 1;
        }
        ok
    }

    /// The shell's wall clock in ms since the epoch; signed Bindings are judged against it.
    pub fn set_wall_ms(&mut self, wall_ms: u64) {
        self.wall_ms = wall_ms;
    }

    /// With a token, a signed hello must be recent and never seen before: a hello captured
    /// anywhere (older clients sent it in clear over TCP) cannot be replayed to get sessions
    /// without the token.
    /// `Ok(false)` means a replay, to be dropped without an answer.
    pub fn fresh_hello(&mut self, wall_ms: u64, hello: &Hello) -> Result<bool, Refused> {
        if self.token.is_none() {
            return Ok(true);
        }
        let skew_ms = wall_ms.abs_diff(hello.time_ms);
        if skew_ms > HELLO_SKEW_MS {
            self.stats.sessions_refused += 1;
            return Err(Refused {
                reason: format!(
                    "this computer's clock is {} s off the server's; set the clock right (NTP) and run again",
                    skew_ms / 1000
                ),
                limit: Some(format!("hello-clock-skew={}s", HELLO_SKEW_MS / 1000)),
            });
        }
        if self.hello_nonces.len() >= MAX_HELLO_NONCES {
            self.hello_nonces.retain(|_, until| *until > wall_ms);
        }
        if self.hello_nonces.contains_key(&hello.nonce)
            || self.hello_nonces.len() >= MAX_HELLO_NONCES
        {
            self.stats.drop_unauthenticated += 1;
            return Ok(false);
        }
        self.hello_nonces
            .insert(hello.nonce, wall_ms + 2 * HELLO_SKEW_MS);
        Ok(true)
    }

    /// Admits one report upload from `ip` (the store is on the admin's disk).
    pub fn admit_upload(&mut self, ip: IpAddr, now_us: u64) -> bool {
        self.uploads.allow(ip, now_us)
    }

    /// Anyone's Bindings share one budget, which a flood from spoofed sources can exhaust:
    /// spoofed addresses are free, so no per-source or per-prefix share inside it could tell
    /// the flood from a client. A source that proved it receives our packets (a TCP handshake
    /// or a Retry-validated QUIC connection within [`PROVEN_FOR_US`], or a Binding over TCP) is
    /// answered first from the sessions' budget instead, [`PROVEN_STUN_PER_S`] a second each
    /// (per IPv6 /48), which spoofed datagrams cannot reach: a spoofer would have to know a
    /// proven address, and then only that address gets the answers. All proven sources
    /// together take at most `proven_cap` (a fifth of `max_reply_pps`) from the sessions, so
    /// handshakes from many addresses cannot take the echo's budget; past it they fall back to
    /// the anonymous budget.
    fn stun_budget(&mut self, now_us: u64, src: IpAddr, udp: bool) -> bool {
        let proven = !udp
            || self.tcp_accepts.seen_within(src, now_us, PROVEN_FOR_US)
            || self.quic_validated.seen_within(src, now_us, PROVEN_FOR_US);
        if proven
            && self.proven_stun.allow(src, now_us)
            && self.proven_cap.take(now_us)
            && self.replies.take(now_us)
        {
            return true;
        }
        let ok = self.stun_replies.take(now_us);
        if !ok {
            self.stats.drop_rate_limited += 1;
        }
        ok
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Checks a hello against the limits; `id`, `key` and `ice` come from the shell's RNG.
    pub fn open(
        &mut self,
        now_us: u64,
        peer: IpAddr,
        hello: &Hello,
        id: u64,
        key: [u8; 32],
        ice: Option<IceCredentials>,
    ) -> Result<(), Refused> {
        let r = self.admission(peer, hello);
        if let Err(refusal) = r {
            self.stats.sessions_refused += 1;
            return Err(refusal);
        }
        // Two transports run one after the other, plus ICE and slack for slow handshakes.
        let lifetime_us = u64::from(hello.duration_ms) * 2_000 + 30_000_000;
        if let Some(c) = &ice {
            self.by_ufrag.insert(c.ufrag.clone(), id);
        }
        self.sessions.insert(
            id,
            Session {
                key: SessionKey::new(&key),
                peer,
                last_us: now_us,
                deadline_us: now_us + lifetime_us,
                counters: Counters::default(),
                ice: ice.map(|c| (c.ufrag, c.pwd)),
                bucket: Bucket::new(
                    1e6 / f64::from(l_min_interval(&self.limits)),
                    SESSION_BURST,
                    now_us,
                ),
                relays: Vec::new(),
                mtu_budget: MTU_DOWN_BUDGET,
                echo_from: None,
                mtu_seqs: HashMap::new(),
            },
        );
        self.stats.sessions_opened += 1;
        Ok(())
    }

    /// The caps a new session must fit: sessions in total and per address, duration, packet
    /// interval and size.
    fn admission(&self, peer: IpAddr, hello: &Hello) -> Result<(), Refused> {
        let refuse = |reason: String, limit: String| Refused {
            reason,
            limit: Some(limit),
        };
        let l = &self.limits;
        if self.sessions.len() >= l.max_sessions {
            Err(refuse(
                format!("the server already runs {} sessions", self.sessions.len()),
                format!("max-sessions={}", l.max_sessions),
            ))
        } else if self
            .sessions
            .values()
            .filter(|s| source_key(s.peer) == source_key(peer))
            .count()
            >= l.max_sessions_per_ip
        {
            Err(refuse(
                format!("too many sessions from {peer}"),
                format!("max-sessions-per-ip={}", l.max_sessions_per_ip),
            ))
        } else if hello.duration_ms > l.max_duration_ms {
            Err(refuse(
                format!(
                    "a {} s test is longer than allowed",
                    seconds(hello.duration_ms.into())
                ),
                format!("max-duration={}s", l.max_duration_ms / 1000),
            ))
        } else if hello.interval_us < l.min_interval_us {
            Err(refuse(
                format!(
                    "a {} µs packet interval is faster than allowed",
                    hello.interval_us
                ),
                format!("min-interval={}ms", f64::from(l.min_interval_us) / 1000.0),
            ))
        } else if usize::from(hello.size) > l.max_packet {
            Err(refuse(
                format!("{}-byte packets are larger than allowed", hello.size),
                format!("max-packet={}", l.max_packet),
            ))
        } else {
            Ok(())
        }
    }

    /// Counters of a session so far.
    pub fn counters(&self, id: u64) -> Option<Counters> {
        self.sessions.get(&id).map(|s| s.counters)
    }

    /// Adds a TURN relayed address the session's client announced on its control channel;
    /// `cookie` comes from the shell's RNG. Echo from `relayed`'s IP is then answered after the
    /// return-routability check (see [`RelayPeer`]) and counted apart ([`Core::relay_counters`]).
    pub fn add_relay_peer(
        &mut self,
        id: u64,
        relayed: SocketAddr,
        cookie: [u8; RELAY_COOKIE_LEN],
    ) -> Result<(), String> {
        let s = self.sessions.get_mut(&id).ok_or("no such session")?;
        let ip = relayed.ip().to_canonical();
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!("{ip} cannot be a relay"));
        }
        let same_ip = source_key(ip) == source_key(s.peer);
        let relayed = SocketAddr::new(ip, relayed.port());
        let known = s.relays.iter().any(|r| {
            if same_ip {
                r.exact == Some(relayed)
            } else {
                r.ip == ip && r.exact.is_none()
            }
        });
        if known {
            return Ok(());
        }
        if s.relays.len() >= MAX_RELAYS_PER_SESSION {
            return Err(format!(
                "at most {MAX_RELAYS_PER_SESSION} relays per session"
            ));
        }
        s.relays.push(RelayPeer {
            ip,
            exact: same_ip.then_some(relayed),
            cookie,
            confirmed: false,
            from: None,
            unconfirmed_replies: 0,
            counters: Counters::default(),
        });
        Ok(())
    }

    /// Counters of the echo that came through the session's relays (in `udp_rx`/`udp_tx`;
    /// counted from each relay's confirmation on).
    pub fn relay_counters(&self, id: u64) -> Option<Counters> {
        let s = self.sessions.get(&id)?;
        Some(s.relays.iter().fold(Counters::default(), |mut a, r| {
            a.udp_rx += r.counters.udp_rx;
            a.udp_tx += r.counters.udp_tx;
            a.rate_limited += r.counters.rate_limited;
            a
        }))
    }

    /// Marks activity on the control channel so an idle data path does not expire the session.
    pub fn touch(&mut self, id: u64, now_us: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.last_us = now_us;
        }
    }

    /// Ends a session, returning its final counters.
    pub fn close(&mut self, id: u64) -> Option<Counters> {
        let s = self.sessions.remove(&id)?;
        if let Some((ufrag, _)) = &s.ice {
            self.by_ufrag.remove(ufrag);
        }
        Some(s.counters)
    }

    /// Drops sessions idle past the timeout or past their lifetime; returns their ids.
    pub fn expire(&mut self, now_us: u64) -> Vec<u64> {
        let idle = self.limits.idle_timeout_us;
        let dead: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| now_us.saturating_sub(s.last_us) > idle || now_us > s.deadline_us)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.close(*id);
            self.stats.sessions_expired += 1;
        }
        dead
    }

    /// Answers a STUN message from `src` over UDP; returns the reply length written into `out`.
    pub fn on_stun(
        &mut self,
        now_us: u64,
        src: SocketAddr,
        pkt: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        self.stun(now_us, src, pkt, out, true)
    }

    /// A STUN message in a TCP frame: the connection was admitted already (its own table), so
    /// the spoofable per-source table of UDP is not consulted.
    pub fn on_stun_tcp(
        &mut self,
        now_us: u64,
        src: SocketAddr,
        pkt: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        self.stun(now_us, src, pkt, out, false)
    }

    fn stun(
        &mut self,
        now_us: u64,
        src: SocketAddr,
        pkt: &[u8],
        out: &mut [u8],
        udp: bool,
    ) -> Option<usize> {
        // Decoded before the per-source table is touched: junk cannot fill it.
        let msg = match stun::decode(pkt) {
            Ok(m) if m.class == stun::Class::Request && m.method == 0x001 => m,
            _ => {
                self.stats.drop_malformed += 1;
                return None;
            }
        };
        if udp && !self.admit_unauthenticated(src.ip(), now_us) {
            return None;
        }
        self.stats.stun_requests += 1;
        let signed_time = msg.username.as_deref().and_then(auth::stun_username_time);
        let reply = match (&msg.username, msg.has_integrity, self.token) {
            (Some(user), true, _) if signed_time.is_none() && user != auth::STUN_USERNAME => {
                return self.ice_reply(now_us, src, pkt, &msg, user, out);
            }
            (Some(_), true, Some(key)) => {
                if !stun::check_integrity(pkt, &key) || !self.signed_fresh(signed_time, msg.tid) {
                    self.stats.drop_unauthenticated += 1;
                    return None;
                }
                stun::binding_response(msg.tid, src, Some(&key))
            }
            (_, _, Some(_)) => {
                // With a token, a Binding that does not prove it gets no answer at all.
                self.stats.drop_unauthenticated += 1;
                return None;
            }
            _ => {
                // Anyone can send a plain Binding: answer only if it is no larger than the request.
                if stun::binding_response_len(&src, false) > pkt.len() {
                    self.stats.stun_too_small += 1;
                    return None;
                }
                stun::binding_response(msg.tid, src, None)
            }
        };
        if !self.stun_budget(now_us, src.ip(), udp) {
            return None;
        }
        let n = reply.len();
        out.get_mut(..n)?.copy_from_slice(&reply);
        self.stats.stun_replies += 1;
        Some(n)
    }

    /// A signed Binding is answered only while its time is within the hello's clock window,
    /// and each transaction at most [`SIGNED_TID_ANSWERS`] times: a captured one cannot be
    /// replayed later, nor used as a reflector now.
    fn signed_fresh(&mut self, signed_s: Option<u64>, tid: [u8; 12]) -> bool {
        let Some(t_ms) = signed_s.map(|s| s.saturating_mul(1000)) else {
            return false;
        };
        let wall = self.wall_ms;
        if wall.abs_diff(t_ms) > HELLO_SKEW_MS {
            return false;
        }
        if self.signed_tids.len() >= MAX_SIGNED_TIDS {
            self.signed_tids.retain(|_, (until, _)| *until > wall);
        }
        if self.signed_tids.len() >= MAX_SIGNED_TIDS && !self.signed_tids.contains_key(&tid) {
            return false;
        }
        let e = self
            .signed_tids
            .entry(tid)
            .or_insert((t_ms + 2 * HELLO_SKEW_MS, 0));
        e.1 = e.1.saturating_add(1);
        e.1 <= SIGNED_TID_ANSWERS
    }

    /// An ICE connectivity check: USERNAME "ourUfrag:theirUfrag", integrity with our password.
    /// Answered only from the session's own peer, or when the request is at least as long as
    /// the answer: a check from anywhere else (someone who learnt the password, or a replay
    /// from a spoofed source) cannot be turned into a larger packet toward a third party.
    fn ice_reply(
        &mut self,
        now_us: u64,
        src: SocketAddr,
        pkt: &[u8],
        msg: &stun::Message,
        user: &str,
        out: &mut [u8],
    ) -> Option<usize> {
        self.stats.ice_checks += 1;
        let ours = user.split(':').next().unwrap_or_default();
        let session = self.by_ufrag.get(ours).and_then(|id| self.sessions.get(id));
        let Some((from_peer, pwd)) = session.and_then(|s| {
            let key = source_key(src.ip());
            let ours = key == source_key(s.peer) || s.relays.iter().any(|r| r.ip == key);
            Some((ours, s.ice.as_ref()?.1.clone()))
        }) else {
            self.stats.ice_bad_credentials += 1;
            return None;
        };
        if !stun::check_integrity(pkt, pwd.as_bytes()) {
            self.stats.ice_bad_credentials += 1;
            return None;
        }
        let reply = stun::binding_response(msg.tid, src, Some(pwd.as_bytes()));
        if reply.len() > pkt.len() && !from_peer {
            self.stats.stun_too_small += 1;
            return None;
        }
        // A live session's check: drawn from the budget kept for sessions, not the Bindings'.
        if !self.replies.take(now_us) {
            self.stats.drop_rate_limited += 1;
            return None;
        }
        let n = reply.len();
        out.get_mut(..n)?.copy_from_slice(&reply);
        self.stats.stun_replies += 1;
        Some(n)
    }

    /// Answers an echo request; unknown sessions and bad MACs get nothing.
    /// `src`: the sender's address; echo is answered only toward the session's own peer (its
    /// IPv6 /64), so a captured or leaked session cannot bounce packets at a third party.
    /// Over UDP the shell passes the whole `SocketAddr`, so MTU answers go to the exact address
    /// of the session's echo (see [`EchoFrom`]).
    pub fn on_echo(
        &mut self,
        at: impl Into<EchoAt>,
        src: impl Into<EchoFrom>,
        transport: Transport,
        pkt: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let at: EchoAt = at.into();
        let now_us = at.now_us;
        let from: EchoFrom = src.into();
        if pkt.starts_with(&crate::live::packet::MAGIC) {
            // A probe-client's live hello: expected here, not malformed; no answer.
            self.stats.ignored_live_hello += 1;
            return None;
        }
        if pkt.get(1) == Some(&echo::PT_MTU_PROBE) {
            return self.on_mtu(now_us, from, transport, pkt, out);
        }
        let head = match echo::peek_request(pkt) {
            Ok(h) => h,
            Err(_) => {
                self.stats.drop_malformed += 1;
                return None;
            }
        };
        let Some(s) = self.sessions.get_mut(&head.session) else {
            self.stats.drop_unknown_session += 1;
            return None;
        };
        let relay = match relay_path(s, from) {
            Ok(r) => r,
            Err(()) => {
                self.stats.drop_wrong_peer += 1;
                return None;
            }
        };
        if echo::verify_request(&s.key, pkt).is_err() {
            self.stats.drop_bad_mac += 1;
            return None;
        }
        if pkt.len() > self.limits.max_packet || out.len() < pkt.len() {
            self.stats.drop_malformed += 1;
            return None;
        }
        if relay.is_none() && transport == Transport::Udp && s.echo_from.is_none() {
            // The first verified echo pins the address: a replay from another port later
            // cannot move where MTU answers go.
            s.echo_from = from.addr();
        }
        if let Some(i) = relay {
            if !s.relays[i].confirm(pkt, from.addr()) {
                return prime_relay(s, i, &mut self.replies, &mut self.stats, at, pkt, out);
            }
        }
        answer_echo(
            s,
            relay,
            &mut self.replies,
            &mut self.stats,
            (at, transport),
            pkt,
            out,
        )
    }
}

impl Core {
    /// A path-MTU probe (see [`echo`]'s module docs): answered only from the session's own peer
    /// or a TURN relay the session announced and that proved return routability (the cookie,
    /// as for relay echo), with its key, within the session's rates; an answer larger than the
    /// probe also draws on the session's [`MTU_DOWN_BUDGET`], shared by all paths. Over UDP
    /// the answer goes only to the exact address the path's echo came from, and each probe is
    /// answered at most [`MTU_SEQ_ANSWERS`] times, so a replayed probe cannot aim answers at
    /// other ports of the peer's IP. Counted as echo in the server's stats, never in the
    /// session's counters, so it leaves the loss figures alone.
    fn on_mtu(
        &mut self,
        now_us: u64,
        from: EchoFrom,
        transport: Transport,
        pkt: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let Ok(id) = echo::peek_mtu_probe(pkt) else {
            self.stats.drop_malformed += 1;
            return None;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            self.stats.drop_unknown_session += 1;
            return None;
        };
        let udp = transport == Transport::Udp;
        let Some(path) = mtu_path(s, from, udp) else {
            self.stats.drop_wrong_peer += 1;
            return None;
        };
        let Ok(probe) = echo::verify_mtu_probe(&s.key, pkt) else {
            self.stats.drop_bad_mac += 1;
            return None;
        };
        if out.len() < probe.reply_len {
            self.stats.drop_malformed += 1;
            return None;
        }
        self.stats.echo_requests += 1;
        s.last_us = now_us;
        let extra = probe.reply_len.saturating_sub(pkt.len());
        let fresh = !udp || mtu_seq_fresh(&s.mtu_seqs, (path, probe.seq));
        if !fresh || extra > s.mtu_budget || !s.bucket.take(now_us) || !self.replies.take(now_us) {
            self.stats.drop_rate_limited += 1;
            return None;
        }
        if udp {
            *s.mtu_seqs.entry((path, probe.seq)).or_insert(0) += 1;
        }
        s.mtu_budget -= extra;
        self.stats.echo_replies += 1;
        Some(echo::encode_mtu_ack(&s.key, pkt, &probe, out))
    }
}

/// Which of the session's paths an MTU probe came on (0: its peer, 1 + i: relay i), if its
/// answer may go back there: the peer's IP (its /64), or a confirmed relay; over UDP also the
/// exact address that path's echo came from.
fn mtu_path(s: &Session, from: EchoFrom, udp: bool) -> Option<u8> {
    let exact = |pinned: Option<SocketAddr>| !udp || from.matches(pinned);
    match relay_path(s, from).ok()? {
        None => exact(s.echo_from).then_some(0),
        Some(i) if s.relays[i].confirmed => exact(s.relays[i].from).then_some(i as u8 + 1),
        Some(_) => None,
    }
}

/// Which path a request from `from` came on: `Ok(None)` the session's peer, `Ok(Some(i))`
/// relay i, `Err` neither. A relay on the peer's own IP is known by its exact address only.
fn relay_path(s: &Session, from: EchoFrom) -> Result<Option<usize>, ()> {
    let ip = from.ip.to_canonical();
    if let Some(a) = from.addr() {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        if let Some(i) = s.relays.iter().position(|r| r.exact == Some(a)) {
            return Ok(Some(i));
        }
    }
    if source_key(from.ip) == source_key(s.peer) {
        return Ok(None);
    }
    match s
        .relays
        .iter()
        .position(|r| r.exact.is_none() && r.ip == ip)
    {
        Some(i) => Ok(Some(i)),
        None => Err(()),
    }
}

/// Whether probe `key` may be answered once more over UDP (see [`MTU_SEQ_ANSWERS`]).
fn mtu_seq_fresh(seen: &HashMap<(u8, u32), u8>, key: (u8, u32)) -> bool {
    match seen.get(&key) {
        Some(n) => *n < MTU_SEQ_ANSWERS,
        None => seen.len() < MAX_MTU_SEQS,
    }
}

impl RelayPeer {
    /// Whether echo via this relay is answered normally: a request carrying the cookie proves
    /// the sender receives what goes to the relay.
    /// `from`: where the request came from, kept from the confirming one on.
    fn confirm(&mut self, pkt: &[u8], from: Option<SocketAddr>) -> bool {
        let cookie_ok = pkt
            .get(RELAY_COOKIE_AT..RELAY_COOKIE_AT + RELAY_COOKIE_LEN)
            .is_some_and(|c| c == self.cookie);
        if cookie_ok && !self.confirmed {
            self.from = from;
        }
        self.confirmed |= cookie_ok;
        self.confirmed
    }
}

/// A reply toward a relay that has not proved return routability yet: at most
/// [`RELAY_UNCONFIRMED_REPLIES`], each carrying the cookie, counted nowhere (the relay's
/// counters start with its confirmation, so priming never shows as loss).
fn prime_relay(
    s: &mut Session,
    i: usize,
    replies: &mut Bucket,
    stats: &mut ServerStats,
    at: EchoAt,
    pkt: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let r = &mut s.relays[i];
    if r.unconfirmed_replies >= RELAY_UNCONFIRMED_REPLIES
        || pkt.len() < RELAY_COOKIE_AT + RELAY_COOKIE_LEN
        || !replies.take(at.now_us)
    {
        stats.drop_wrong_peer += 1;
        return None;
    }
    r.unconfirmed_replies += 1;
    let cookie = r.cookie;
    stats.echo_requests += 1;
    let n = echo::encode_reply(&s.key, pkt, at.received_us, at.now_us, out);
    out[RELAY_COOKIE_AT..RELAY_COOKIE_AT + RELAY_COOKIE_LEN].copy_from_slice(&cookie);
    stats.echo_replies += 1;
    Some(n)
}

/// A verified request of the session (from its peer, or a confirmed relay): counted on
/// arrival, then answered within the session's and the server's rates.
fn answer_echo(
    s: &mut Session,
    relay: Option<usize>,
    replies: &mut Bucket,
    stats: &mut ServerStats,
    (at, transport): (EchoAt, Transport),
    pkt: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let now_us = at.now_us;
    stats.echo_requests += 1;
    s.last_us = now_us;
    // It arrived: count it before any limit, so a rate-limited packet is never taken for
    // upstream loss; the client is told how many the limits dropped.
    let counters = match relay {
        Some(i) => &mut s.relays[i].counters,
        None => &mut s.counters,
    };
    let (rx, tx) = match transport {
        Transport::Udp => (&mut counters.udp_rx, &mut counters.udp_tx),
        Transport::Tcp => (&mut counters.tcp_rx, &mut counters.tcp_tx),
    };
    *rx += 1;
    if !s.bucket.take(now_us) || !replies.take(now_us) {
        counters.rate_limited += 1;
        stats.drop_rate_limited += 1;
        return None;
    }
    *tx += 1;
    let n = echo::encode_reply(&s.key, pkt, at.received_us, now_us, out);
    if let (Some(i), true) = (relay, n >= RELAY_COOKIE_AT + RELAY_COOKIE_LEN) {
        // The cookie rides in the fill (not covered by the reply MAC): only a receiver at
        // the relay learns it.
        let cookie = s.relays[i].cookie;
        out[RELAY_COOKIE_AT..RELAY_COOKIE_AT + RELAY_COOKIE_LEN].copy_from_slice(&cookie);
    }
    stats.echo_replies += 1;
    Some(n)
}

/// Seconds as people write them: `150`, `2.5`.
fn seconds(ms: u64) -> String {
    // Not `is_multiple_of`: stable only since Rust 1.87, and the workspace says 1.85.
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Profile;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            proto_min: 1,
            proto_max: 1,
            client_version: "t".into(),
            site: "s".into(),
            profile: Profile::Audio,
            interval_us: 20_000,
            size: 160,
            duration_ms: 5_000,
            pad: Vec::new(),
            time_ms: 0,
            nonce: [0; 16],
        }
    }

    fn src() -> SocketAddr {
        "198.51.100.2:40000".parse().unwrap()
    }

    /// The reply says when the request reached the server and when it was answered, so the
    /// client can take the time it spent queued out of the RTT; a receive time after the
    /// answer's (clocks that disagree) is taken as no queueing at all.
    #[test]
    fn echo_reply_carries_the_receive_and_the_answer_time() {
        let mut core = Core::new(Limits::default());
        let key = [4u8; 32];
        let mut req = [0u8; 200];
        let n = echo::encode_request(&SessionKey::new(&key), 77, 0, 10, 160, &mut req);
        core.open(0, src().ip(), &hello(), 77, key, None).unwrap();
        let mut out = [0u8; 1500];
        for (at, rx_tx) in [
            (EchoAt::new(5_000, 4_620), (4_620, 5_000)),
            (EchoAt::new(6_000, 6_400), (6_000, 6_000)),
            (EchoAt::from(7_000), (7_000, 7_000)),
        ] {
            let len = core.on_echo(at, src(), Transport::Udp, &req[..n], &mut out);
            let r = echo::decode_reply(&SessionKey::new(&key), &out[..len.unwrap()]).unwrap();
            assert_eq!((r.server_recv_us, r.server_send_us), rx_tx);
        }
    }

    #[test]
    fn echo_needs_a_session_and_its_key() {
        let mut core = Core::new(Limits::default());
        let key = [4u8; 32];
        let mut req = [0u8; 200];
        let n = echo::encode_request(&SessionKey::new(&key), 77, 0, 10, 160, &mut req);
        let mut out = [0u8; 1500];
        assert_eq!(
            core.on_echo(1, src().ip(), Transport::Udp, &req[..n], &mut out),
            None
        );
        assert_eq!(core.stats.drop_unknown_session, 1);
        core.open(0, src().ip(), &hello(), 77, [5u8; 32], None)
            .unwrap();
        assert_eq!(
            core.on_echo(1, src().ip(), Transport::Udp, &req[..n], &mut out),
            None,
            "wrong key"
        );
        assert_eq!(core.stats.drop_bad_mac, 1);
        core.close(77);
        core.open(0, src().ip(), &hello(), 77, key, None).unwrap();
        assert_eq!(
            core.on_echo(1, src().ip(), Transport::Tcp, &req[..n], &mut out),
            Some(n)
        );
        assert_eq!(core.counters(77).unwrap().tcp_rx, 1);
        let stranger: IpAddr = "192.0.2.66".parse().unwrap();
        assert_eq!(
            core.on_echo(2, stranger, Transport::Udp, &req[..n], &mut out),
            None,
            "not the session's peer"
        );
        assert_eq!(core.stats.drop_wrong_peer, 1);
    }

    #[test]
    fn mtu_answers_larger_than_the_probe_need_the_key_and_stop_at_the_budget() {
        let mut core = Core::new(Limits::default());
        let key = [4u8; 32];
        let sk = SessionKey::new(&key);
        let mut req = [0u8; echo::MTU_MAX_LEN];
        let mut out = [0u8; 2048];
        let n = echo::encode_mtu_probe(&sk, 77, 0, 10, 0, 1472, true, &mut req);
        assert_eq!(
            core.on_echo(1, src().ip(), Transport::Udp, &req[..n], &mut out),
            None,
            "no session"
        );
        core.open(0, src().ip(), &hello(), 77, [5u8; 32], None)
            .unwrap();
        assert_eq!(
            core.on_echo(1, src().ip(), Transport::Udp, &req[..n], &mut out),
            None,
            "wrong key"
        );
        assert_eq!(core.stats.drop_bad_mac, 1);
        core.close(77);
        core.open(0, src().ip(), &hello(), 77, key, None).unwrap();
        let stranger: IpAddr = "192.0.2.66".parse().unwrap();
        assert_eq!(
            core.on_echo(1, stranger, Transport::Udp, &req[..n], &mut out),
            None,
            "never toward another address"
        );
        core.add_relay_peer(77, "203.0.113.1:4000".parse().unwrap(), [1; 8])
            .unwrap();
        assert_eq!(
            core.on_echo(
                1,
                "203.0.113.1".parse::<IpAddr>().unwrap(),
                Transport::Udp,
                &req[..n],
                &mut out
            ),
            None,
            "nor via a relay"
        );
        // With the key, from the peer: large answers until the budget is spent, then nothing.
        let mut sent = 0usize;
        let mut t = 1u64;
        for seq in 0..200u32 {
            t += 20_000;
            let n = echo::encode_mtu_probe(&sk, 77, seq, t, 0, 1472, seq % 2 == 0, &mut req);
            if let Some(m) = core.on_echo(t, src().ip(), Transport::Udp, &req[..n], &mut out) {
                assert_eq!(m, 1472);
                assert_eq!(echo::mtu_reply_df(&out[..m]), Some(seq % 2 == 0));
                assert!(echo::decode_mtu_ack(&sk, &out[..m]).is_ok());
                sent += m - n;
            }
        }
        assert!(sent <= MTU_DOWN_BUDGET, "{sent}");
        assert!(sent + 1472 > MTU_DOWN_BUDGET, "the budget was used: {sent}");
        assert!(core.stats.drop_rate_limited > 0);
        // Upstream probes (small answers) are still acknowledged after the budget is spent.
        let n = echo::encode_mtu_probe(&sk, 77, 999, t + 20_000, 1472, 0, true, &mut req);
        let m = core
            .on_echo(t + 20_000, src().ip(), Transport::Tcp, &req[..n], &mut out)
            .expect("ack");
        assert_eq!(m, echo::MIN_LEN);
        assert_eq!(
            core.counters(77).unwrap(),
            Counters::default(),
            "loss figures untouched"
        );
    }

    #[test]
    fn mtu_answers_go_only_to_the_echo_address_and_each_probe_a_few_times() {
        let mut core = Core::new(Limits::default());
        let key = [4u8; 32];
        let sk = SessionKey::new(&key);
        core.open(0, src().ip(), &hello(), 77, key, None).unwrap();
        let client = src();
        let neighbour = SocketAddr::new(client.ip(), client.port() + 1);
        let (mut req, mut out) = ([0u8; echo::MTU_MAX_LEN], [0u8; 2048]);
        let mtu = |core: &mut Core, from: SocketAddr, seq: u32, req: &mut [u8], out: &mut [u8]| {
            let n = echo::encode_mtu_probe(&sk, 77, seq, 1, 0, 1472, true, req);
            core.on_echo(1_000 * u64::from(seq), from, Transport::Udp, &req[..n], out)
        };
        assert_eq!(
            mtu(&mut core, client, 1, &mut req, &mut out),
            None,
            "no echo yet"
        );
        // The first verified echo pins the address; a replay of it from elsewhere does not move it.
        let mut e = [0u8; 200];
        let n = echo::encode_request(&sk, 77, 1, 0, 160, &mut e);
        assert!(core
            .on_echo(1, client, Transport::Udp, &e[..n], &mut out)
            .is_some());
        assert!(core
            .on_echo(2, neighbour, Transport::Udp, &e[..n], &mut out)
            .is_some());
        let wrong = core.stats.drop_wrong_peer;
        assert_eq!(
            mtu(&mut core, neighbour, 2, &mut req, &mut out),
            None,
            "another port"
        );
        assert_eq!(core.stats.drop_wrong_peer, wrong + 1);
        assert_eq!(mtu(&mut core, client, 3, &mut req, &mut out), Some(1472));
        // A repeated probe: answered as often as the plan tries it, then no more.
        let answered = (0..10)
            .filter(|_| mtu(&mut core, client, 4, &mut req, &mut out).is_some())
            .count();
        assert_eq!(answered, usize::from(MTU_SEQ_ANSWERS));
        // Over TCP (the connection proved the address) neither rule applies.
        let n = echo::encode_mtu_probe(&sk, 77, 4, 1, 0, 1400, true, &mut req);
        let tcp = core.on_echo(9_000, client.ip(), Transport::Tcp, &req[..n], &mut out);
        assert_eq!(tcp, Some(1400));
        // A confirmed relay: its answers go to the address that confirmed it, no other port.
        let relay: SocketAddr = "203.0.113.1:49152".parse().unwrap();
        core.add_relay_peer(77, relay, [0xC0; 8]).unwrap();
        let n = echo::encode_request(&sk, 77, 5, 10, 160, &mut e);
        e[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8].copy_from_slice(&[0xC0; 8]);
        assert!(core
            .on_echo(20_000, relay, Transport::Udp, &e[..n], &mut out)
            .is_some());
        let other_port = SocketAddr::new(relay.ip(), 49153);
        assert_eq!(mtu(&mut core, other_port, 30, &mut req, &mut out), None);
        assert_eq!(mtu(&mut core, relay, 31, &mut req, &mut out), Some(1472));
        // The relay is a path of its own: the same sequence number has its own tries there.
        assert_eq!(mtu(&mut core, relay, 4, &mut req, &mut out), Some(1472));
    }

    #[test]
    fn relay_echo_needs_announcement_and_return_routability() {
        let mut core = Core::new(Limits::default());
        let key = [4u8; 32];
        let sk = SessionKey::new(&key);
        core.open(0, src().ip(), &hello(), 77, key, None).unwrap();
        let relay: SocketAddr = "203.0.113.1:49152".parse().unwrap();
        let stranger: IpAddr = "192.0.2.66".parse().unwrap();
        let mut out = [0u8; 1500];
        let mut req = [0u8; 200];
        let mut send = |core: &mut Core, from: IpAddr, seq: u32, cookie: Option<[u8; 8]>| {
            let n = echo::encode_request(&sk, 77, seq, 10, 160, &mut req);
            if let Some(c) = cookie {
                req[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8].copy_from_slice(&c);
            }
            core.on_echo(1, from, Transport::Udp, &req[..n], &mut out)
                .map(|m| out[..m].to_vec())
        };
        // Not announced: nothing, as before.
        assert_eq!(send(&mut core, relay.ip(), 0, None), None);
        assert_eq!(core.stats.drop_wrong_peer, 1);
        core.add_relay_peer(77, relay, [0xC0; 8]).unwrap();
        // An announced relay is not a licence for anybody else.
        assert_eq!(send(&mut core, stranger, 1, None), None);
        assert_eq!(core.stats.drop_wrong_peer, 2);
        // Unconfirmed: a few replies, each carrying the cookie, then silence.
        for seq in 0..RELAY_UNCONFIRMED_REPLIES {
            let r = send(&mut core, relay.ip(), seq, None).expect("priming reply");
            assert_eq!(&r[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8], &[0xC0; 8]);
            assert!(
                echo::decode_reply(&sk, &r).is_ok(),
                "the cookie leaves the MAC intact"
            );
        }
        assert_eq!(send(&mut core, relay.ip(), 9, None), None);
        assert_eq!(
            send(&mut core, relay.ip(), 9, Some([0xC1; 8])),
            None,
            "wrong cookie"
        );
        // The cookie proves it: answered from now on, counted apart from the direct path.
        for seq in 100..110 {
            assert!(send(&mut core, relay.ip(), seq, Some([0xC0; 8])).is_some());
        }
        let rc = core.relay_counters(77).unwrap();
        assert_eq!((rc.udp_rx, rc.udp_tx), (10, 10), "priming is not counted");
        assert_eq!(
            core.counters(77).unwrap().udp_rx,
            0,
            "direct counters untouched"
        );
        assert!(
            send(&mut core, relay.ip(), 200, None).is_some(),
            "confirmed stays so"
        );
        assert!(
            core.add_relay_peer(12345, relay, [0; 8]).is_err(),
            "unknown session"
        );
        for i in 0..MAX_RELAYS_PER_SESSION {
            let r = core.add_relay_peer(
                77,
                SocketAddr::new(IpAddr::from([192, 0, 2, i as u8 + 1]), 1),
                [1; 8],
            );
            assert_eq!(r.is_ok(), i + 1 < MAX_RELAYS_PER_SESSION, "{i}");
        }
    }

    /// A TURN server on the client's own IP (behind the same NAT, or on one host): its relayed
    /// address is told apart from the direct path by its port, so the relay's echo is counted
    /// as the relay's, not as direct echo with the relay showing 100 % loss.
    #[test]
    fn a_relay_on_the_clients_own_ip_is_known_by_its_port() {
        let mut core = Core::new(Limits::default());
        let key = [4u8; 32];
        let sk = SessionKey::new(&key);
        core.open(0, src().ip(), &hello(), 77, key, None).unwrap();
        let relay = SocketAddr::new(src().ip(), 49152);
        core.add_relay_peer(77, relay, [0xC0; 8]).unwrap();
        core.add_relay_peer(77, relay, [0xC0; 8]).unwrap();
        let mut out = [0u8; 1500];
        let mut req = [0u8; 200];
        let mut send = |core: &mut Core, from: SocketAddr, seq: u32, cookie: bool| {
            let n = echo::encode_request(&sk, 77, seq, 10, 160, &mut req);
            if cookie {
                req[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8].copy_from_slice(&[0xC0; 8]);
            }
            core.on_echo(1, from, Transport::Udp, &req[..n], &mut out)
                .map(|m| out[..m].to_vec())
        };
        // Direct echo from the client's own socket.
        for seq in 0..3 {
            assert!(send(&mut core, src(), seq, false).is_some());
        }
        // Through the relay: primed with the cookie, then confirmed and counted apart.
        let primed = send(&mut core, relay, 10, false).expect("priming reply");
        assert_eq!(&primed[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8], &[0xC0; 8]);
        for seq in 11..16 {
            assert!(send(&mut core, relay, seq, true).is_some());
        }
        let rc = core.relay_counters(77).unwrap();
        assert_eq!((rc.udp_rx, rc.udp_tx), (5, 5));
        assert_eq!(core.counters(77).unwrap().udp_rx, 3, "direct stays direct");
    }

    /// Path-MTU probes through a TURN relay: answered toward the relay only once the session
    /// announced it and it proved return routability, within the session's budget.
    #[test]
    fn mtu_answers_go_to_a_relay_only_when_announced_and_proven() {
        let mut core = Core::new(Limits::default());
        let key = [4u8; 32];
        let sk = SessionKey::new(&key);
        core.open(0, src().ip(), &hello(), 77, key, None).unwrap();
        let relay: SocketAddr = "203.0.113.1:49152".parse().unwrap();
        let other: IpAddr = "203.0.113.9".parse().unwrap();
        let mut out = [0u8; 2048];
        let mut t = 1u64;
        let mut probe = |core: &mut Core, from: IpAddr, reply: usize| {
            t += 20_000;
            let mut req = [0u8; echo::MTU_MAX_LEN];
            // A fresh sequence number each time: a repeated one is answered only a few times.
            let seq = (t / 20_000) as u32;
            let n = echo::encode_mtu_probe(&sk, 77, seq, t, 0, reply, true, &mut req);
            core.on_echo(t, from, Transport::Udp, &req[..n], &mut out)
        };
        assert_eq!(probe(&mut core, relay.ip(), 1400), None, "not announced");
        core.add_relay_peer(77, relay, [0xC0; 8]).unwrap();
        assert_eq!(
            probe(&mut core, relay.ip(), 1400),
            None,
            "announced, unproven"
        );
        // The cookie comes back in an echo request: the relay is proven.
        let mut req = [0u8; 200];
        let n = echo::encode_request(&sk, 77, 5, 10, 160, &mut req);
        req[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8].copy_from_slice(&[0xC0; 8]);
        let mut o = [0u8; 1500];
        assert!(core
            .on_echo(1, relay.ip(), Transport::Udp, &req[..n], &mut o)
            .is_some());
        assert_eq!(
            probe(&mut core, relay.ip(), 1400),
            Some(1400),
            "proven relay"
        );
        assert_eq!(probe(&mut core, other, 1400), None, "nobody else");
        let wrong = core.stats.drop_wrong_peer;
        assert!(wrong >= 3, "{wrong}");
        // The relay draws on the same budget: it runs out, then only small answers go.
        let mut sent = 1400;
        for _ in 0..200 {
            if let Some(m) = probe(&mut core, relay.ip(), 1400) {
                sent += m;
            }
        }
        assert!(sent <= MTU_DOWN_BUDGET + 200 * echo::MIN_LEN, "{sent}");
        assert_eq!(probe(&mut core, relay.ip(), 1400), None, "budget spent");
        assert_eq!(probe(&mut core, relay.ip(), 0), Some(echo::MIN_LEN));
    }

    #[test]
    fn limits_refuse_with_the_setting_named() {
        let mut core = Core::new(Limits {
            max_sessions_per_ip: 1,
            ..Limits::default()
        });
        core.open(0, src().ip(), &hello(), 1, [0; 32], None)
            .unwrap();
        let r = core
            .open(0, src().ip(), &hello(), 2, [0; 32], None)
            .unwrap_err();
        assert_eq!(r.limit.as_deref(), Some("max-sessions-per-ip=1"));
        let long = Hello {
            duration_ms: 10_000_000,
            ..hello()
        };
        let r = core
            .open(0, "198.51.100.3".parse().unwrap(), &long, 3, [0; 32], None)
            .unwrap_err();
        assert!(r.limit.unwrap().starts_with("max-duration="));
        assert_eq!(r.reason, "a 10000 s test is longer than allowed");
        assert_eq!(seconds(2_500), "2.5");
        assert_eq!(core.stats.sessions_refused, 2);
    }

    #[test]
    fn signed_hellos_are_fresh_and_single_use() {
        let mut open = Core::new(Limits::default());
        assert_eq!(
            open.fresh_hello(0, &hello()),
            Ok(true),
            "no token: nothing to check"
        );
        let mut core = Core::with_token(Limits::default(), Some(auth::token_key("t")));
        let now = 1_795_651_200_000;
        let h = Hello {
            time_ms: now - 5_000,
            nonce: [7; 16],
            ..hello()
        };
        assert_eq!(core.fresh_hello(now, &h), Ok(true));
        assert_eq!(core.fresh_hello(now + 1_000, &h), Ok(false), "a replay");
        let stale = Hello {
            time_ms: now - 3_600_000,
            nonce: [8; 16],
            ..hello()
        };
        let refused = core.fresh_hello(now, &stale).unwrap_err();
        assert!(refused.reason.contains("3600 s off"), "{}", refused.reason);
    }

    #[test]
    fn uploads_are_rate_limited_per_source() {
        let mut core = Core::new(Limits::default());
        let ip = src().ip();
        let admitted = (0..50).filter(|_| core.admit_upload(ip, 0)).count();
        assert_eq!(admitted, 12);
        assert!(core.admit_upload(ip, 5_000_001), "one more after 5 s");
        assert!(
            core.admit_upload("198.51.100.9".parse().unwrap(), 0),
            "other sources unaffected"
        );
    }

    #[test]
    fn idle_sessions_expire() {
        let mut core = Core::new(Limits::default());
        core.open(0, src().ip(), &hello(), 9, [0; 32], None)
            .unwrap();
        assert!(core.expire(1_000_000).is_empty());
        assert_eq!(core.expire(16_000_001), vec![9]);
        assert_eq!(core.session_count(), 0);
    }

    #[test]
    fn plain_binding_answered_only_when_padded() {
        let mut core = Core::new(Limits::default());
        let mut out = [0u8; 1500];
        let bare = stun::binding_request([1; 12], None, None, 0);
        assert_eq!(core.on_stun(0, src(), &bare, &mut out), None);
        assert_eq!(core.stats.stun_too_small, 1);
        let padded = stun::binding_request([1; 12], None, None, 64);
        let n = core.on_stun(0, src(), &padded, &mut out).unwrap();
        assert!(n <= padded.len());
        assert_eq!(stun::decode(&out[..n]).unwrap().xor_mapped, Some(src()));
    }

    #[test]
    fn ice_checks_need_the_session_password() {
        let mut core = Core::new(Limits::default());
        let creds = IceCredentials {
            ufrag: "srvU".into(),
            pwd: "serverpasswordserverpw".into(),
        };
        core.open(0, src().ip(), &hello(), 5, [0; 32], Some(creds.clone()))
            .unwrap();
        let mut out = [0u8; 1500];
        let check = |pwd: &str| {
            stun::ice_check_request(&stun::IceCheck {
                tid: [3; 12],
                username: "srvU:cliU",
                password: pwd,
                priority: 1,
                controlling: true,
                tiebreaker: 9,
                use_candidate: false,
            })
        };
        assert_eq!(core.on_stun(0, src(), &check("wrong"), &mut out), None);
        let n = core
            .on_stun(0, src(), &check(&creds.pwd), &mut out)
            .unwrap();
        assert!(stun::check_integrity(&out[..n], creds.pwd.as_bytes()));
        core.close(5);
        assert_eq!(
            core.on_stun(0, src(), &check(&creds.pwd), &mut out),
            None,
            "closed session"
        );
    }

    #[test]
    fn token_makes_plain_stun_silent() {
        let key = auth::token_key("t0ken");
        let mut core = Core::with_token(Limits::default(), Some(key));
        let mut out = [0u8; 1500];
        let plain = stun::binding_request([1; 12], None, None, 128);
        assert_eq!(core.on_stun(0, src(), &plain, &mut out), None);
        let wrong = stun::binding_request(
            [1; 12],
            Some(auth::STUN_USERNAME),
            Some(&auth::token_key("nope")),
            128,
        );
        assert_eq!(core.on_stun(0, src(), &wrong, &mut out), None);
        assert_eq!(core.stats.drop_unauthenticated, 2);
        let now_s = 1_800_000_000u64;
        core.set_wall_ms(now_s * 1000);
        let signed = |tid: [u8; 12], at_s: u64| {
            stun::binding_request(tid, Some(&auth::stun_username(at_s)), Some(&key), 128)
        };
        let good = signed([1; 12], now_s);
        let n = core.on_stun(0, src(), &good, &mut out).unwrap();
        assert!(stun::check_integrity(&out[..n], &key));
        // The old unsigned-time form, a stale Binding and a retransmitted one past its
        // allowance are all unanswered.
        let untimed = stun::binding_request([2; 12], Some(auth::STUN_USERNAME), Some(&key), 128);
        assert_eq!(core.on_stun(0, src(), &untimed, &mut out), None);
        let stale = signed([3; 12], now_s - 11 * 60);
        assert_eq!(core.on_stun(0, src(), &stale, &mut out), None);
        let answered = (0..20)
            .filter(|_| core.on_stun(0, src(), &good, &mut out).is_some())
            .count();
        assert_eq!(answered, usize::from(SIGNED_TID_ANSWERS) - 1);
    }

    #[test]
    fn ice_checks_never_amplify_toward_a_foreign_source() {
        let mut core = Core::new(Limits::default());
        let creds = IceCredentials {
            ufrag: "srvU".into(),
            pwd: "serverpasswordserverpw".into(),
        };
        core.open(0, src().ip(), &hello(), 5, [0; 32], Some(creds.clone()))
            .unwrap();
        let mut out = [0u8; 1500];
        // The smallest check that carries the credentials (no PRIORITY or role attributes).
        let small = stun::binding_request([4; 12], Some("srvU:c"), Some(creds.pwd.as_bytes()), 0);
        // Over IPv6 the answer (76 B) outgrows this 64-byte check.
        let foreign: SocketAddr = "[2001:db8::50]:4000".parse().unwrap();
        assert_eq!(core.on_stun(0, foreign, &small, &mut out), None);
        assert_eq!(core.stats.stun_too_small, 1);
        assert!(
            core.on_stun(0, src(), &small, &mut out).is_some(),
            "the peer is answered"
        );
        let padded =
            stun::binding_request([5; 12], Some("srvU:c"), Some(creds.pwd.as_bytes()), 128);
        let n = core.on_stun(0, foreign, &padded, &mut out).expect("padded");
        assert!(n <= padded.len());
    }

    #[test]
    fn live_hellos_are_counted_apart_and_unanswered() {
        let mut core = Core::new(Limits::default());
        let mut out = [0u8; 1500];
        let mut pkt = vec![0u8; 64];
        pkt[..4].copy_from_slice(&crate::live::packet::MAGIC);
        assert_eq!(
            core.on_echo(0, src().ip(), Transport::Udp, &pkt, &mut out),
            None
        );
        assert_eq!(
            (core.stats.ignored_live_hello, core.stats.drop_malformed),
            (1, 0)
        );
    }

    #[test]
    fn a_binding_flood_cannot_take_the_echo_budget() {
        let mut core = Core::new(Limits {
            max_reply_pps: 1000,
            ..Limits::default()
        });
        let mut out = [0u8; 1500];
        let req = stun::binding_request([1; 12], None, None, 64);
        let stun_answered = (0..5000u32)
            .filter(|i| {
                let from = SocketAddr::from((std::net::Ipv4Addr::from(*i | 0xC633_0000), 1000));
                core.on_stun(0, from, &req, &mut out).is_some()
            })
            .count();
        assert!(
            stun_answered <= 21,
            "a fifth of the budget: {stun_answered}"
        );
        let key = [1u8; 32];
        core.open(0, src().ip(), &hello(), 3, key, None).unwrap();
        let mut pkt = [0u8; 200];
        let echoed = (0..50u32)
            .filter(|seq| {
                let n = echo::encode_request(&SessionKey::new(&key), 3, *seq, 0, 160, &mut pkt);
                core.on_echo(0, src().ip(), Transport::Udp, &pkt[..n], &mut out)
                    .is_some()
            })
            .count();
        assert_eq!(echoed, 50, "echo keeps its own budget");
    }

    #[test]
    fn a_binding_flood_cannot_shed_the_bindings_of_a_proven_source() {
        let mut core = Core::new(Limits {
            max_reply_pps: 1000,
            ..Limits::default()
        });
        let mut out = [0u8; 1500];
        let req = stun::binding_request([1; 12], None, None, 64);
        let flood = |core: &mut Core, at: u64| {
            (0..5000u32)
                .filter(|i| {
                    let from = SocketAddr::from((std::net::Ipv4Addr::from(*i | 0xC000_0200), 9));
                    core.on_stun(at, from, &req, &mut [0u8; 1500]).is_some()
                })
                .count()
        };
        assert!(flood(&mut core, 0) <= 21, "the anonymous budget is spent");
        let client = SocketAddr::from(([203, 0, 113, 9], 4000));
        let unproven = core.on_stun(0, client, &req, &mut out);
        assert_eq!(unproven, None, "not proven yet");
        // A completed TCP handshake proves the address: its Bindings no longer compete.
        assert!(core.admit_tcp(client.ip(), 0));
        let answered = (0..30)
            .filter(|_| core.on_stun(0, client, &req, &mut out).is_some())
            .count();
        assert_eq!(answered, PROVEN_STUN_PER_S as usize, "its own share");
        // Over TCP the connection itself is the proof.
        let other = SocketAddr::from(([203, 0, 113, 10], 4000));
        assert!(core.on_stun_tcp(0, other, &req, &mut out).is_some());
        // A Retry-validated QUIC source too; and the proof wears off.
        let quic = SocketAddr::from(([203, 0, 113, 11], 4000));
        assert!(core.admit_validated_quic(quic.ip(), 0));
        assert!(core.on_stun(1, quic, &req, &mut out).is_some());
        let later = PROVEN_FOR_US + 2_000_000;
        flood(&mut core, later);
        let expired = core.on_stun(later, quic, &req, &mut out);
        assert_eq!(expired, None, "the proof wears off");
    }

    #[test]
    fn proven_sources_flooding_bindings_stay_under_their_cap_and_echo_keeps_its_budget() {
        let pps = 1000u32;
        let mut core = Core::new(Limits {
            max_reply_pps: pps,
            min_interval_us: 500,
            ..Limits::default()
        });
        let mut out = [0u8; 1500];
        let req = stun::binding_request([1; 12], None, None, 64);
        // 2,000 addresses that each completed a TCP handshake.
        let proven = |i: u32| SocketAddr::from((std::net::Ipv4Addr::from(0xCB00_7100 + i), 9));
        for i in 0..2000 {
            assert!(core.admit_tcp(proven(i).ip(), 0));
        }
        let key = [1u8; 32];
        core.open(0, src().ip(), &hello(), 3, key, None).unwrap();
        let sk = SessionKey::new(&key);
        let mut pkt = [0u8; 200];
        let (mut bindings, mut sent, mut echoed) = (0usize, 0usize, 0usize);
        let secs = 2u64;
        // Every ms: 40 Bindings from the proven sources (40,000/s), and one echo every 2 ms.
        for ms in 0..secs * 1000 {
            let t = ms * 1000;
            for j in 0..40u64 {
                let from = proven(((ms * 40 + j) % 2000) as u32);
                bindings += usize::from(core.on_stun(t, from, &req, &mut out).is_some());
            }
            if ms % 2 == 1 {
                let n = echo::encode_request(&sk, 3, sent as u32, t, 160, &mut pkt);
                sent += 1;
                let r = core.on_echo(t, src().ip(), Transport::Udp, &pkt[..n], &mut out);
                echoed += usize::from(r.is_some());
            }
        }
        // The cap (a fifth) plus its burst, plus the anonymous fifth plus its burst.
        let fifth = f64::from(pps) / 5.0;
        let most =
            2.0 * (fifth * secs as f64) + (2.0 * PROVEN_STUN_PER_S + 1.0) + fifth / 10.0 + 1.0;
        assert!(bindings as f64 <= most, "{bindings} Bindings > {most}");
        assert!(
            bindings as f64 >= fifth * secs as f64,
            "proven sources still answered"
        );
        assert_eq!(echoed, sent, "the session's echo keeps its budget");
    }

    #[test]
    fn one_source_may_open_an_offices_connections_at_once_then_its_rate() {
        let mut core = Core::new(Limits::default());
        let office = IpAddr::from([203, 0, 113, 20]);
        let burst = TCP_CONN_BURST as usize;
        let at_once = (0..burst + 5).filter(|_| core.admit_tcp(office, 0)).count();
        assert_eq!(at_once, burst);
        // Another address has its own allowance; the office gets its rate back over time.
        assert!(core.admit_tcp(IpAddr::from([203, 0, 113, 21]), 0));
        let a_second_later = (0..burst)
            .filter(|_| core.admit_tcp(office, 1_000_000))
            .count();
        assert_eq!(a_second_later, TCP_CONN_PER_S as usize);
        // QUIC handshakes keep their own, smaller allowance.
        let quic = (0..burst)
            .filter(|_| core.admit_validated_quic(office, 0))
            .count();
        assert_eq!(quic, QUIC_CONN_BURST as usize);
    }

    #[test]
    fn one_ipv6_48_is_one_proven_source() {
        let mut core = Core::new(Limits {
            max_reply_pps: 1000,
            ..Limits::default()
        });
        let req = stun::binding_request([1; 12], None, None, 120);
        let spoofed = |i: u32| SocketAddr::from((std::net::Ipv4Addr::from(i | 0xC000_0200), 9));
        for i in 0..5000 {
            core.on_stun(0, spoofed(i), &req, &mut [0u8; 1500]);
        }
        // 1,000 /64s of one /48, each proven by a handshake, share one allowance.
        let in_48 = |i: u16| {
            SocketAddr::from((std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, i, 0, 0, 0, 1), 9))
        };
        for i in 0..1000 {
            assert!(core.admit_tcp(in_48(i).ip(), 0));
        }
        let answered = (0..1000)
            .filter(|&i| core.on_stun(0, in_48(i), &req, &mut [0u8; 1500]).is_some())
            .count();
        assert_eq!(answered, PROVEN_STUN_PER_S as usize, "one share per /48");
        let other = SocketAddr::from((std::net::Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 1), 9));
        assert!(core.admit_tcp(other.ip(), 0));
        assert!(
            core.on_stun(0, other, &req, &mut [0u8; 1500]).is_some(),
            "another /48"
        );
    }

    #[test]
    fn rates_are_capped_per_source_and_per_session() {
        let mut core = Core::new(Limits {
            unauth_per_source_pps: 10,
            min_interval_us: 10_000,
            ..Limits::default()
        });
        let mut out = [0u8; 1500];
        let req = stun::binding_request([1; 12], None, None, 64);
        let answered = (0..100)
            .filter(|_| core.on_stun(0, src(), &req, &mut out).is_some())
            .count();
        assert_eq!(answered, 20, "burst of twice the per-second rate");
        let other: SocketAddr = "198.51.100.9:1".parse().unwrap();
        assert!(
            core.on_stun(0, other, &req, &mut out).is_some(),
            "other sources unaffected"
        );

        let key = [1u8; 32];
        core.open(0, src().ip(), &hello(), 3, key, None).unwrap();
        let mut pkt = [0u8; 200];
        let echoed = (0..200u32)
            .filter(|seq| {
                let n = echo::encode_request(&SessionKey::new(&key), 3, *seq, 0, 160, &mut pkt);
                core.on_echo(0, src().ip(), Transport::Udp, &pkt[..n], &mut out)
                    .is_some()
            })
            .count();
        assert_eq!(
            echoed as f64, SESSION_BURST,
            "a session cannot exceed its burst at one instant"
        );
        assert!(core.stats.drop_rate_limited > 0);
    }

    proptest! {
        #[test]
        fn random_datagrams_never_panic_or_reply(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let mut core = Core::new(Limits::default());
            core.open(0, src().ip(), &hello(), 1, [0; 32], None).unwrap();
            let mut out = [0u8; 1500];
            prop_assert_eq!(core.on_echo(1, src().ip(), Transport::Udp, &bytes, &mut out), None);
            if let Some(n) = core.on_stun(0, src(), &bytes, &mut out) {
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
