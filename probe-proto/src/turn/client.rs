//! The TURN client as a state machine: one transaction at a time, every step reported.
//!
//! The driver owns the socket (UDP datagrams, or a TCP/TLS stream split by
//! [`super::codec::StreamDecoder`]) and the clock:
//!
//! ```text
//! send(client.allocate(now))
//! loop {
//!     wait for bytes (until client.poll_timeout()) →
//!         match client.handle(now, &bytes) { Output::Transmit(b) => send(b), Output::Event(e) => …, Output::Data{..} => …, Output::Nothing => {} }
//!     or the timeout → client.handle_timeout(now) (a retransmission, or Event::Failed)
//! }
//! ```
//!
//! Long-term credentials (RFC 8489 9.2, RFC 8656 7.2): the first Allocate goes without them;
//! the 401 brings REALM and NONCE, and the request is sent again with USERNAME, REALM, NONCE
//! and MESSAGE-INTEGRITY keyed with MD5(username:realm:password). Every later request carries
//! them too. A 438 (Stale Nonce) brings a fresh NONCE and the request is repeated with it (at
//! most twice in a row); a 401 to a request that did carry credentials is a refusal.

use super::codec::{
    self, Builder, Class, ErrorCode, Incoming, ALLOCATE, ATTR_CHANNEL_NUMBER, ATTR_DATA,
    ATTR_LIFETIME, ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_TRANSPORT, ATTR_SOFTWARE, ATTR_USERNAME,
    ATTR_XOR_PEER_ADDRESS, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND, TRANSPORT_UDP,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// One TURN step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Allocate,
    Refresh,
    Permission,
    ChannelBind,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Allocate => "Allocate",
            Op::Refresh => "Refresh",
            Op::Permission => "CreatePermission",
            Op::ChannelBind => "ChannelBind",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub username: String,
    pub password: String,
    /// The transport to the TURN server is a byte stream (TCP, TLS): no retransmissions, and
    /// ChannelData is padded to 4 bytes (RFC 8656 12.5).
    pub stream: bool,
    /// Bound for one transaction, retransmissions included.
    pub timeout: Duration,
    /// SOFTWARE attribute sent with requests.
    pub software: Option<String>,
    /// Ask for an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY, RFC 8656 18.8): needed to
    /// relay to an IPv6 peer.
    pub ipv6_relay: bool,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnError {
    /// No response within the transaction's bound (`sent` requests, retransmissions included).
    Timeout { sent: u32 },
    /// An error response to the request as finally sent (with credentials when it needed them).
    Response(ErrorCode),
    /// A 401 without REALM or NONCE: no long-term credential mechanism to follow.
    NoChallenge,
    /// A 438 again after two fresh nonces.
    StaleNonceLoop,
    /// A success response whose MESSAGE-INTEGRITY does not verify with our key.
    Integrity,
    /// A success response without the attribute the step needs.
    Malformed(String),
}

impl std::fmt::Display for TurnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnError::Timeout { sent } => write!(f, "no response ({sent} request(s) sent)"),
            TurnError::Response(e) => write!(f, "{} {}", e.code, e.reason),
            TurnError::NoChallenge => f.write_str("401 without REALM/NONCE"),
            TurnError::StaleNonceLoop => f.write_str("438 Stale Nonce again after fresh nonces"),
            TurnError::Integrity => f.write_str("response MESSAGE-INTEGRITY does not verify"),
            TurnError::Malformed(w) => write!(f, "malformed response: {w}"),
        }
    }
}

/// What a failure means, in the words of the fix (RFC 8656 and RFC 8489 error codes; coturn's
/// reason phrases in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Nothing answered.
    Unreachable,
    /// 401 with credentials, 441 Wrong Credentials: user/password or the shared secret.
    Auth,
    /// 403 Forbidden (coturn "Forbidden IP"): the server will not relay to that peer.
    Forbidden,
    /// 486 Allocation Quota Reached: too many allocations for this user.
    Quota,
    /// 508 Insufficient Capacity: the server has no relay port left.
    Capacity,
    /// 437 Allocation Mismatch: the 5-tuple has (or has no) allocation already.
    Mismatch,
    /// 442 Unsupported Transport Protocol.
    Transport,
    /// 438 repeating, integrity failures, malformed answers, other codes.
    Protocol,
    /// The TLS handshake of a `turns:` connection failed (certificate chain, name/SNI, version);
    /// set by the driver.
    Tls,
}

pub fn cause(e: &TurnError) -> Cause {
    match e {
        TurnError::Timeout { .. } => Cause::Unreachable,
        TurnError::Response(c) => match c.code {
            401 | 441 => Cause::Auth,
            403 => Cause::Forbidden,
            486 => Cause::Quota,
            508 => Cause::Capacity,
            437 => Cause::Mismatch,
            442 => Cause::Transport,
            _ => Cause::Protocol,
        },
        TurnError::NoChallenge
        | TurnError::StaleNonceLoop
        | TurnError::Integrity
        | TurnError::Malformed(_) => Cause::Protocol,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
        lifetime_s: u32,
        software: Option<String>,
        elapsed: Duration,
    },
    Refreshed {
        lifetime_s: u32,
        elapsed: Duration,
    },
    PermissionCreated {
        peer: IpAddr,
        elapsed: Duration,
    },
    ChannelBound {
        channel: u16,
        peer: SocketAddr,
        elapsed: Duration,
    },
    Failed {
        op: Op,
        error: TurnError,
        elapsed: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to send to the TURN server.
    Transmit(Vec<u8>),
    Event(Event),
    /// Application data relayed from `peer`.
    Data {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    Nothing,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    None,
    Lifetime(u32),
    Peer(IpAddr),
    Channel(u16, SocketAddr),
}

#[derive(Debug)]
struct Pending {
    op: Op,
    target: Target,
    tid: [u8; 12],
    bytes: Vec<u8>,
    started: Instant,
    next_at: Instant,
    rto: Duration,
    sent: u32,
    /// Whether this request carried credentials.
    authed: bool,
    stale: u32,
}

/// The pending transaction a response answers, as the response handlers need it.
struct Answered {
    op: Op,
    target: Target,
    /// Whether the answered request carried credentials.
    authed: bool,
    stale: u32,
    elapsed: Duration,
}

/// First retransmission timeout on UDP; doubled each time (RFC 8489 6.2.1), bounded by the
/// transaction's own bound so that a blocked server gives a verdict in seconds.
const RTO: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct Client {
    cfg: Config,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    pending: Option<Pending>,
    channels: HashMap<u16, SocketAddr>,
    tid_seed: ring::hmac::Key,
    tid_counter: u64,
    /// 438 answers handled over the client's life.
    pub stale_nonces: u32,
    /// The server's SOFTWARE, when it named itself.
    pub server_software: Option<String>,
}

impl Client {
    /// `seed`: random bytes from the driver, for transaction ids.
    pub fn new(cfg: Config, seed: [u8; 32]) -> Self {
        Self {
            cfg,
            realm: None,
            nonce: None,
            key: None,
            pending: None,
            channels: HashMap::new(),
            tid_seed: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seed),
            tid_counter: 0,
            stale_nonces: 0,
            server_software: None,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// The REALM the server named in its challenge.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    fn next_tid(&mut self) -> [u8; 12] {
        self.tid_counter += 1;
        let tag = ring::hmac::sign(&self.tid_seed, &self.tid_counter.to_be_bytes());
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&tag.as_ref()[..12]);
        tid
    }

    fn build(&mut self, op: Op, target: Target, with_auth: bool) -> ([u8; 12], Vec<u8>, bool) {
        let tid = self.next_tid();
        let method = match op {
            Op::Allocate => ALLOCATE,
            Op::Refresh => REFRESH,
            Op::Permission => CREATE_PERMISSION,
            Op::ChannelBind => CHANNEL_BIND,
        };
        let mut b = Builder::new(method, Class::Request, tid);
        match target {
            Target::None => {}
            Target::Lifetime(s) => b = b.attr(ATTR_LIFETIME, s.to_be_bytes().to_vec()),
            // CreatePermission looks at the IP only; the port is ignored (RFC 8656 9).
            Target::Peer(ip) => b = b.xor_addr(ATTR_XOR_PEER_ADDRESS, SocketAddr::new(ip, 0)),
            Target::Channel(ch, peer) => {
                b = b
                    .attr(ATTR_CHANNEL_NUMBER, vec![(ch >> 8) as u8, ch as u8, 0, 0])
                    .xor_addr(ATTR_XOR_PEER_ADDRESS, peer)
            }
        }
        if op == Op::Allocate {
            b = b.attr(ATTR_REQUESTED_TRANSPORT, vec![TRANSPORT_UDP, 0, 0, 0]);
            if self.cfg.ipv6_relay {
                b = b.attr(codec::ATTR_REQUESTED_ADDRESS_FAMILY, vec![0x02, 0, 0, 0]);
            }
        }
        if let Some(s) = &self.cfg.software {
            b = b.attr(ATTR_SOFTWARE, s.as_bytes().to_vec());
        }
        let authed = with_auth && self.key.is_some();
        if authed {
            b = b
                .attr(ATTR_USERNAME, self.cfg.username.as_bytes().to_vec())
                .attr(
                    ATTR_REALM,
                    self.realm.clone().unwrap_or_default().into_bytes(),
                )
                .attr(
                    ATTR_NONCE,
                    self.nonce.clone().unwrap_or_default().into_bytes(),
                );
        }
        let key = if authed { self.key } else { None };
        (tid, b.encode(key.as_ref().map(|k| &k[..])), authed)
    }

    fn start(&mut self, now: Instant, op: Op, target: Target) -> Vec<u8> {
        let (tid, bytes, authed) = self.build(op, target, true);
        self.pending = Some(Pending {
            op,
            target,
            tid,
            bytes: bytes.clone(),
            started: now,
            next_at: now + RTO,
            rto: RTO,
            sent: 1,
            authed,
            stale: 0,
        });
        bytes
    }

    /// Starts an allocation for a UDP relay.
    pub fn allocate(&mut self, now: Instant) -> Vec<u8> {
        self.start(now, Op::Allocate, Target::None)
    }

    /// Refreshes the allocation for `lifetime_s` seconds (0 releases it).
    pub fn refresh(&mut self, now: Instant, lifetime_s: u32) -> Vec<u8> {
        self.start(now, Op::Refresh, Target::Lifetime(lifetime_s))
    }

    /// Installs (or refreshes) a permission for `peer`'s IP.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Vec<u8> {
        self.start(now, Op::Permission, Target::Peer(peer))
    }

    /// Binds (or refreshes) `channel` to `peer`.
    pub fn channel_bind(&mut self, now: Instant, channel: u16, peer: SocketAddr) -> Vec<u8> {
        self.start(now, Op::ChannelBind, Target::Channel(channel, peer))
    }

    /// A Send indication carrying `data` to `peer` (needs a permission, no channel).
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let tid = self.next_tid();
        Builder::new(SEND, Class::Indication, tid)
            .xor_addr(ATTR_XOR_PEER_ADDRESS, peer)
            .attr(ATTR_DATA, data.to_vec())
            .encode(None)
    }

    /// ChannelData carrying `data` on a bound channel.
    pub fn channel_data(&self, channel: u16, data: &[u8]) -> Vec<u8> {
        codec::channel_data(channel, data, self.cfg.stream)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending.as_ref()?;
        let end = p.started + self.cfg.timeout;
        Some(if self.cfg.stream {
            end
        } else {
            p.next_at.min(end)
        })
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Output {
        let Some(p) = self.pending.as_mut() else {
            return Output::Nothing;
        };
        if now >= p.started + self.cfg.timeout {
            let p = self.pending.take().expect("pending");
            return Output::Event(Event::Failed {
                op: p.op,
                error: TurnError::Timeout { sent: p.sent },
                elapsed: now - p.started,
            });
        }
        if !self.cfg.stream && now >= p.next_at {
            p.sent += 1;
            p.rto *= 2;
            p.next_at = now + p.rto;
            return Output::Transmit(p.bytes.clone());
        }
        Output::Nothing
    }

    /// Handles one datagram or stream message from the TURN server.
    pub fn handle(&mut self, now: Instant, bytes: &[u8]) -> Output {
        match codec::classify(bytes) {
            Incoming::ChannelData { channel, data } => match self.channels.get(&channel) {
                Some(peer) => Output::Data {
                    peer: *peer,
                    data: data.to_vec(),
                },
                None => Output::Nothing,
            },
            Incoming::Stun(b) => self.handle_stun(now, b),
            Incoming::Other => Output::Nothing,
        }
    }

    fn handle_stun(&mut self, now: Instant, b: &[u8]) -> Output {
        let Ok(m) = codec::decode(b) else {
            return Output::Nothing;
        };
        if m.class == Some(Class::Indication) && m.method == DATA {
            return match (m.xor_peer, m.data) {
                (Some(peer), Some(data)) => Output::Data { peer, data },
                _ => Output::Nothing,
            };
        }
        let Some(p) = self.pending.as_ref() else {
            return Output::Nothing;
        };
        if m.tid != p.tid || !matches!(m.class, Some(Class::Success | Class::Error)) {
            return Output::Nothing;
        }
        if m.software.is_some() {
            self.server_software = m.software.clone();
        }
        let a = Answered {
            op: p.op,
            target: p.target,
            authed: p.authed,
            stale: p.stale,
            elapsed: now - p.started,
        };
        if m.class == Some(Class::Error) {
            return self.on_error(now, &m, &a);
        }
        // Success: when we authenticated, the answer must prove the server knows the key too.
        if a.authed {
            if let Some(key) = self.key {
                if m.integrity_at.is_some() && !codec::check_integrity(b, &m, &key) {
                    return self.fail(&a, TurnError::Integrity);
                }
            }
        }
        self.on_success(&m, &a)
    }

    fn fail(&mut self, a: &Answered, error: TurnError) -> Output {
        self.pending = None;
        Output::Event(Event::Failed {
            op: a.op,
            error,
            elapsed: a.elapsed,
        })
    }

    /// An error response: a challenge or a stale nonce sends the request again with
    /// credentials; anything else fails the step.
    fn on_error(&mut self, now: Instant, m: &codec::Message, a: &Answered) -> Output {
        let err = m.error.clone().unwrap_or(ErrorCode {
            code: 0,
            reason: "error response without ERROR-CODE".into(),
        });
        match err.code {
            401 if !a.authed => {
                if m.realm.is_none() || m.nonce.is_none() {
                    return self.fail(a, TurnError::NoChallenge);
                }
                self.realm = m.realm.clone();
                self.nonce = m.nonce.clone();
                self.key = Some(codec::long_term_key(
                    &self.cfg.username,
                    self.realm.as_deref().unwrap_or_default(),
                    &self.cfg.password,
                ));
                self.resend(now, a.op, a.target, a.stale)
            }
            438 if m.nonce.is_some() => {
                if a.stale >= 2 {
                    return self.fail(a, TurnError::StaleNonceLoop);
                }
                self.stale_nonces += 1;
                self.nonce = m.nonce.clone();
                if m.realm.is_some() {
                    self.realm = m.realm.clone();
                }
                if let Some(realm) = &self.realm {
                    self.key = Some(codec::long_term_key(
                        &self.cfg.username,
                        realm,
                        &self.cfg.password,
                    ));
                }
                self.resend(now, a.op, a.target, a.stale + 1)
            }
            _ => self.fail(a, TurnError::Response(err)),
        }
    }

    /// A success response (integrity already checked): the step's event.
    fn on_success(&mut self, m: &codec::Message, a: &Answered) -> Output {
        self.pending = None;
        let elapsed = a.elapsed;
        let ev = match (a.op, a.target) {
            (Op::Allocate, _) => match m.xor_relayed.first() {
                Some(relayed) => Event::Allocated {
                    relayed: *relayed,
                    mapped: m.xor_mapped,
                    lifetime_s: m.lifetime.unwrap_or(600),
                    software: m.software.clone(),
                    elapsed,
                },
                None => {
                    return self.fail(
                        a,
                        TurnError::Malformed("Allocate success without XOR-RELAYED-ADDRESS".into()),
                    )
                }
            },
            (Op::Refresh, Target::Lifetime(asked)) => Event::Refreshed {
                lifetime_s: m.lifetime.unwrap_or(asked),
                elapsed,
            },
            (Op::Permission, Target::Peer(peer)) => Event::PermissionCreated { peer, elapsed },
            (Op::ChannelBind, Target::Channel(channel, peer)) => {
                self.channels.insert(channel, peer);
                Event::ChannelBound {
                    channel,
                    peer,
                    elapsed,
                }
            }
            _ => return self.fail(a, TurnError::Malformed("unexpected step".into())),
        };
        Output::Event(ev)
    }

    /// The same step again with (fresh) credentials, as a new transaction within the old
    /// one's time bound.
    fn resend(&mut self, now: Instant, op: Op, target: Target, stale: u32) -> Output {
        let started = self.pending.as_ref().map_or(now, |p| p.started);
        let (tid, bytes, authed) = self.build(op, target, true);
        self.pending = Some(Pending {
            op,
            target,
            tid,
            bytes: bytes.clone(),
            started,
            next_at: now + RTO,
            rto: RTO,
            sent: 1,
            authed,
            stale,
        });
        Output::Transmit(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::codec::{
        decode, long_term_key, Builder, ATTR_ERROR_CODE, ATTR_MESSAGE_INTEGRITY,
        ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_RELAYED_ADDRESS,
    };

    fn cfg(stream: bool) -> Config {
        Config {
            username: "1795651200:alice".into(),
            password: "i3/F+lFh23G8auqgkwbOF2f+8/U=".into(),
            stream,
            timeout: Duration::from_secs(3),
            software: None,
            ipv6_relay: false,
        }
    }

    fn tid_of(b: &[u8]) -> [u8; 12] {
        b[8..20].try_into().unwrap()
    }

    fn error(method: u16, tid: [u8; 12], code: u16, realm_nonce: Option<(&str, &str)>) -> Vec<u8> {
        let reason = b"x".to_vec();
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend(reason);
        let mut b = Builder::new(method, Class::Error, tid).attr(ATTR_ERROR_CODE, v);
        if let Some((r, n)) = realm_nonce {
            b = b
                .attr(ATTR_REALM, r.as_bytes().to_vec())
                .attr(ATTR_NONCE, n.as_bytes().to_vec());
        }
        b.encode(None)
    }

    /// The server side of the exchange, as coturn answers: the second request must carry
    /// USERNAME/REALM/NONCE and a MESSAGE-INTEGRITY that verifies with the long-term key.
    #[test]
    fn allocate_401_challenge_then_success_with_integrity() {
        let t0 = Instant::now();
        let mut c = Client::new(cfg(false), [1; 32]);
        let first = c.allocate(t0);
        let m = decode(&first).unwrap();
        assert_eq!((m.method, m.class), (ALLOCATE, Some(Class::Request)));
        assert!(
            m.integrity_at.is_none(),
            "first Allocate goes without credentials"
        );
        assert_eq!(&first[20..28], &[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
        assert_eq!(
            first.len(),
            28,
            "no REQUESTED-ADDRESS-FAMILY for an IPv4 relay"
        );
        let mut v6 = Client::new(
            Config {
                ipv6_relay: true,
                ..cfg(false)
            },
            [1; 32],
        );
        let a6 = v6.allocate(t0);
        assert_eq!(&a6[28..36], &[0x00, 0x17, 0x00, 0x04, 0x02, 0, 0, 0]);

        let challenge = error(ALLOCATE, tid_of(&first), 401, Some(("calls.test", "n1")));
        let Output::Transmit(second) = c.handle(t0, &challenge) else {
            panic!("401 must make the client retry with credentials")
        };
        let m2 = decode(&second).unwrap();
        assert_ne!(m2.tid, m.tid, "a new transaction");
        assert_eq!(m2.realm.as_deref(), Some("calls.test"));
        assert_eq!(m2.nonce.as_deref(), Some("n1"));
        let key = long_term_key(
            "1795651200:alice",
            "calls.test",
            "i3/F+lFh23G8auqgkwbOF2f+8/U=",
        );
        assert!(codec::check_integrity(&second, &m2, &key));
        // MESSAGE-INTEGRITY is the last attribute.
        assert_eq!(
            u16::from_be_bytes([second[second.len() - 24], second[second.len() - 23]]),
            ATTR_MESSAGE_INTEGRITY
        );

        let ok = Builder::new(ALLOCATE, Class::Success, m2.tid)
            .xor_addr(
                ATTR_XOR_RELAYED_ADDRESS,
                "203.0.113.1:49152".parse().unwrap(),
            )
            .xor_addr(
                ATTR_XOR_MAPPED_ADDRESS,
                "198.51.100.2:40000".parse().unwrap(),
            )
            .attr(ATTR_LIFETIME, 600u32.to_be_bytes().to_vec())
            .encode(Some(&key));
        let t1 = t0 + Duration::from_millis(12);
        match c.handle(t1, &ok) {
            Output::Event(Event::Allocated {
                relayed,
                mapped,
                lifetime_s,
                elapsed,
                ..
            }) => {
                assert_eq!(relayed, "203.0.113.1:49152".parse().unwrap());
                assert_eq!(mapped, Some("198.51.100.2:40000".parse().unwrap()));
                assert_eq!(lifetime_s, 600);
                assert_eq!(elapsed, Duration::from_millis(12));
            }
            o => panic!("{o:?}"),
        }
        assert!(!c.is_busy());
    }

    #[test]
    fn wrong_credentials_are_an_auth_failure_not_a_loop() {
        let t0 = Instant::now();
        let mut c = Client::new(cfg(false), [2; 32]);
        let first = c.allocate(t0);
        let Output::Transmit(second) =
            c.handle(t0, &error(ALLOCATE, tid_of(&first), 401, Some(("r", "n"))))
        else {
            panic!()
        };
        match c.handle(t0, &error(ALLOCATE, tid_of(&second), 401, Some(("r", "n")))) {
            Output::Event(Event::Failed { op, error, .. }) => {
                assert_eq!(op, Op::Allocate);
                assert_eq!(cause(&error), Cause::Auth);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn stale_nonce_is_retried_with_the_new_nonce_then_gives_up() {
        let t0 = Instant::now();
        let mut c = Client::new(cfg(false), [3; 32]);
        let first = c.allocate(t0);
        let Output::Transmit(mut req) =
            c.handle(t0, &error(ALLOCATE, tid_of(&first), 401, Some(("r", "n0"))))
        else {
            panic!()
        };
        for i in 1..=2 {
            let nonce = format!("n{i}");
            let Output::Transmit(next) =
                c.handle(t0, &error(ALLOCATE, tid_of(&req), 438, Some(("r", &nonce))))
            else {
                panic!("438 must be retried")
            };
            assert_eq!(
                decode(&next).unwrap().nonce.as_deref(),
                Some(nonce.as_str())
            );
            req = next;
        }
        assert_eq!(c.stale_nonces, 2);
        match c.handle(t0, &error(ALLOCATE, tid_of(&req), 438, Some(("r", "n9")))) {
            Output::Event(Event::Failed { error, .. }) => {
                assert_eq!(error, TurnError::StaleNonceLoop)
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn error_codes_map_to_causes() {
        let t0 = Instant::now();
        for (code, want) in [
            (403, Cause::Forbidden),
            (441, Cause::Auth),
            (486, Cause::Quota),
            (508, Cause::Capacity),
            (437, Cause::Mismatch),
            (442, Cause::Transport),
            (500, Cause::Protocol),
        ] {
            let mut c = Client::new(cfg(false), [4; 32]);
            let req = c.create_permission(t0, "172.31.1.2".parse().unwrap());
            let m = decode(&req).unwrap();
            assert_eq!(m.method, CREATE_PERMISSION);
            assert_eq!(m.xor_peer, Some("172.31.1.2:0".parse().unwrap()));
            match c.handle(t0, &error(CREATE_PERMISSION, m.tid, code, None)) {
                Output::Event(Event::Failed { op, error, .. }) => {
                    assert_eq!(op, Op::Permission);
                    assert_eq!(cause(&error), want, "{code}");
                }
                o => panic!("{o:?}"),
            }
        }
    }

    #[test]
    fn udp_retransmits_then_times_out_within_the_bound() {
        let t0 = Instant::now();
        let mut c = Client::new(cfg(false), [5; 32]);
        let first = c.allocate(t0);
        let mut now;
        let mut resent = 0;
        loop {
            now = c.poll_timeout().unwrap();
            match c.handle_timeout(now) {
                Output::Transmit(b) => {
                    assert_eq!(b, first, "a retransmission is the same bytes");
                    resent += 1;
                }
                Output::Event(Event::Failed { error, elapsed, .. }) => {
                    assert_eq!(error, TurnError::Timeout { sent: resent + 1 });
                    assert_eq!(elapsed, Duration::from_secs(3));
                    break;
                }
                o => panic!("{o:?}"),
            }
        }
        assert_eq!(
            resent, 3,
            "250, 500, 1000 ms: the next (2000) passes the 3 s bound"
        );
        assert!(now <= t0 + Duration::from_secs(3));
        // On a stream: no retransmission at all.
        let mut s = Client::new(cfg(true), [5; 32]);
        s.allocate(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn channel_bind_then_channel_data_and_data_indications() {
        let t0 = Instant::now();
        let mut c = Client::new(cfg(true), [6; 32]);
        let peer: SocketAddr = "203.0.113.2:8443".parse().unwrap();
        let req = c.channel_bind(t0, 0x4000, peer);
        let m = decode(&req).unwrap();
        assert_eq!(m.channel, Some(0x4000));
        assert_eq!(m.xor_peer, Some(peer));
        let ok = Builder::new(CHANNEL_BIND, Class::Success, m.tid).encode(None);
        assert!(matches!(
            c.handle(t0, &ok),
            Output::Event(Event::ChannelBound {
                channel: 0x4000,
                ..
            })
        ));
        // On a stream ChannelData is padded.
        assert_eq!(c.channel_data(0x4000, &[1, 2, 3]).len(), 8);
        assert_eq!(
            c.handle(t0, &codec::channel_data(0x4000, &[7, 7], true)),
            Output::Data {
                peer,
                data: vec![7, 7]
            }
        );
        assert_eq!(
            c.handle(t0, &codec::channel_data(0x4001, &[7], false)),
            Output::Nothing,
            "unbound channel"
        );
        let ind = Builder::new(DATA, Class::Indication, [9; 12])
            .xor_addr(ATTR_XOR_PEER_ADDRESS, peer)
            .attr(ATTR_DATA, vec![5; 10])
            .encode(None);
        assert_eq!(
            c.handle(t0, &ind),
            Output::Data {
                peer,
                data: vec![5; 10]
            }
        );
    }

    #[test]
    fn a_forged_success_is_rejected() {
        let t0 = Instant::now();
        let mut c = Client::new(cfg(false), [7; 32]);
        let first = c.allocate(t0);
        let Output::Transmit(second) =
            c.handle(t0, &error(ALLOCATE, tid_of(&first), 401, Some(("r", "n"))))
        else {
            panic!()
        };
        let forged = Builder::new(ALLOCATE, Class::Success, tid_of(&second))
            .xor_addr(ATTR_XOR_RELAYED_ADDRESS, "192.0.2.9:1".parse().unwrap())
            .encode(Some(&long_term_key("x", "r", "y")));
        match c.handle(t0, &forged) {
            Output::Event(Event::Failed { error, .. }) => assert_eq!(error, TurnError::Integrity),
            o => panic!("{o:?}"),
        }
        // Answers to other transactions are ignored.
        let mut c = Client::new(cfg(false), [7; 32]);
        c.allocate(t0);
        let other = Builder::new(ALLOCATE, Class::Success, [0; 12]).encode(None);
        assert_eq!(c.handle(t0, &other), Output::Nothing);
        assert!(c.is_busy());
    }
}
