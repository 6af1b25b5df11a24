//! The one task that owns every str0m `Rtc`: offers, datagrams and ICE-TCP frames come in over
//! bounded channels; each input goes to its session, whose output is sent at once.

use super::book::session_id;
use super::conn::{Conn, TcpEvent};
use super::session::{receive_input, Crypto, Io, Session};
use super::{OpenError, Opened, PeerLimits, Shared, UdpOut};
use crate::shared::canonical;
use probe_proto::demux::{classify, Kind};
use probe_proto::msg::Transport;
use probe_proto::web::Leg;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::Input;
use tokio::sync::{mpsc, oneshot};

/// The longest the task sleeps: closed sessions' counts expire on this beat.
const IDLE_WAKE: Duration = Duration::from_secs(1);

pub struct Datagram {
    pub src: SocketAddr,
    pub dst: Option<IpAddr>,
    pub data: Vec<u8>,
    pub at: Instant,
}

pub struct OpenReq {
    pub client: IpAddr,
    pub leg: Leg,
    pub offer: String,
    pub candidates: Vec<(SocketAddr, Transport)>,
    pub reply: oneshot::Sender<Result<Opened, OpenError>>,
}

pub struct Rx {
    pub udp: mpsc::Receiver<Datagram>,
    pub tcp: mpsc::Receiver<TcpEvent>,
    pub open: mpsc::Receiver<OpenReq>,
}

pub struct Task {
    pub shared: Arc<Shared>,
    pub out: Arc<dyn UdpOut>,
    pub crypto: Crypto,
    pub limits: PeerLimits,
    /// A session not DTLS-connected this long after it opened is ended ([`super::CONNECT_WITHIN`]).
    pub connect_within: Duration,
    pub sessions: HashMap<u64, Session>,
    pub conns: HashMap<SocketAddr, Conn>,
    pub rng: ring::rand::SystemRandom,
}

/// Marks the task dead when it ends, by returning or by a panic (tokio then drops the future),
/// so the socket loops stop feeding a queue nobody reads and `open` says it stopped (503).
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Release;
        self.0.dead.store(true, Release);
        self.0.sessions.store(0, Release);
    }
}

impl Task {
    /// Runs until every `Peer` handle is gone.
    pub async fn run(mut self, mut rx: Rx) {
        let shared = self.shared.clone();
        let _alive = Alive(shared.clone());
        loop {
            let wake = self.next_wake(Instant::now());
            tokio::select! {
                d = rx.udp.recv() => match d {
                    Some(d) => self.on_udp(d),
                    None => return,
                },
                e = rx.tcp.recv() => match e {
                    Some(e) => self.on_tcp(e),
                    None => return,
                },
                r = rx.open.recv() => match r {
                    Some(r) => {
                        let res = self.open(r.client, r.leg, &r.offer, r.candidates, Instant::now());
                        // The HTTP side may have given up meanwhile; the session then expires.
                        let _ = r.reply.send(res);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shared.wake.notified() => {}
            }
            self.tick(Instant::now());
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        self.sessions
            .values()
            .map(|s| s.next.min(s.end_by()))
            .fold(now + IDLE_WAKE, Instant::min)
    }

    /// A new session for an offer, within the caps.
    pub fn open(
        &mut self,
        client: IpAddr,
        leg: Leg,
        offer: &str,
        candidates: Vec<(SocketAddr, Transport)>,
        now: Instant,
    ) -> Result<Opened, OpenError> {
        {
            let mut book = self.shared.book();
            book.unreserve(client);
            book.admit(client, &self.limits)?;
        }
        let key = self.new_key();
        let lifetime = self.limits.session_lifetime;
        let made = catch_unwind(AssertUnwindSafe(|| {
            let times = (now, lifetime, self.connect_within);
            Session::new(key, &self.crypto, offer, &candidates, times)
        }))
        .unwrap_or_else(|_| Err(OpenError::BadOffer("The offer could not be read.".into())));
        let (session, answer_sdp, ufrag) = match made {
            Ok(m) => m,
            Err(e) => {
                self.shared.book().drops_mut().bad_offers += 1;
                return Err(e);
            }
        };
        self.shared.routes().add_session(&ufrag, key);
        self.shared.book().open(key, client, leg, candidates);
        self.sessions.insert(key, session);
        self.publish_count();
        self.step(key, None, false);
        tracing::debug!(session = %session_id(key), ?leg, %client, "web session opened");
        Ok(Opened {
            session: session_id(key),
            answer_sdp,
        })
    }

    /// A random key not in use (also unguessable: the id is what `POST /report` names).
    fn new_key(&self) -> u64 {
        loop {
            let mut b = [0u8; 8];
            // SystemRandom fails only without an OS random source; the clock then still gives
            // distinct keys.
            let k = match ring::rand::SecureRandom::fill(&self.rng, &mut b) {
                Ok(()) => u64::from_be_bytes(b),
                Err(_) => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            };
            if k != 0 && !self.shared.book().contains(k) {
                return k;
            }
        }
    }

    /// One datagram from the shared socket: STUN for a session's ufrag, DTLS from a source a
    /// session learnt.
    fn on_udp(&mut self, d: Datagram) {
        let src = canonical(d.src);
        let kind = classify(&d.data);
        let Some(key) = self.shared.routes().udp_session(kind, &src, &d.data) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(dest) = s.local_for(Transport::Udp, src, d.dst) else {
            return;
        };
        let Some(input) = receive_input(d.at, Transport::Udp, src, dest, &d.data) else {
            self.shared.book().drops_mut().malformed += 1;
            return;
        };
        if !self.admit_input(key, kind, &input, &d.data, Transport::Udp, src) {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.note_path(src, d.src, d.dst);
        }
        self.step(key, Some(input), false);
    }

    /// Counts an input routed to `key` and, for STUN, lets it through only when str0m takes
    /// it (right ufrags and MESSAGE-INTEGRITY); then the session learns the source.
    fn admit_input(
        &mut self,
        key: u64,
        kind: Kind,
        input: &Input,
        pkt: &[u8],
        proto: Transport,
        src: SocketAddr,
    ) -> bool {
        let mut book = self.shared.book();
        let Some(c) = book.counts_mut(key) else {
            return false;
        };
        match kind {
            Kind::Dtls => {
                c.dtls_records += super::route::dtls_records(pkt);
                return true;
            }
            Kind::Stun => c.stun_requests += 1,
            // A data-channel session carries nothing else (no RTP): not ours.
            _ => return false,
        }
        drop(book);
        let ok = self.sessions.get(&key).is_some_and(|s| s.accepts(input));
        ok && self.shared.routes().learn(proto, src, key)
    }

    fn on_tcp(&mut self, e: TcpEvent) {
        match e {
            TcpEvent::Open { peer, conn } => {
                self.conns.insert(peer, conn);
            }
            TcpEvent::Closed { peer, id } => {
                if self.conns.get(&peer).is_some_and(|c| c.id == id) {
                    self.conns.remove(&peer);
                }
            }
            TcpEvent::Frame { peer, data, at } => self.on_frame(peer, &data, at),
        }
    }

    /// One RFC 4571 frame. A connection belongs to the session its first STUN request named;
    /// a connection no session takes is dropped.
    fn on_frame(&mut self, peer: SocketAddr, data: &[u8], at: Instant) {
        let Some(conn) = self.conns.get(&peer) else {
            return;
        };
        let (bound, local) = (conn.session, conn.local);
        let kind = classify(data);
        let key = match bound {
            Some(k) => Some(k),
            None => self.shared.routes().tcp_session(data),
        };
        let input = key.and_then(|k| {
            let dest = self
                .sessions
                .get(&k)?
                .local_for(Transport::Tcp, peer, Some(local.ip()))?;
            receive_input(at, Transport::Tcp, peer, dest, data)
        });
        let (Some(key), Some(input)) = (key, input) else {
            if bound.is_none() {
                self.conns.remove(&peer);
            } else {
                self.shared.book().drops_mut().malformed += 1;
            }
            return;
        };
        if !self.admit_input(key, kind, &input, data, Transport::Tcp, peer) {
            if bound.is_none() {
                self.conns.remove(&peer);
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&peer) {
            c.session = Some(key);
        }
        self.step(key, Some(input), false);
    }

    /// Feeds one input (or a timeout) to a session, first starting its close when `close`, and
    /// sends what it produces. An error or a panic inside str0m ends that session only.
    fn step(&mut self, key: u64, input: Option<Input>, close: bool) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut book = self.shared.book();
        let mut io = Io {
            udp: &*self.out,
            conns: &self.conns,
            book: &mut book,
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            if close {
                // Say goodbye (DTLS close_notify) before it is forgotten.
                s.close();
            }
            let input = input.unwrap_or_else(|| Input::Timeout(Instant::now()));
            s.handle(input)?;
            s.drive(&mut io)
        }));
        let failure = match &r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("str0m panicked".to_string()),
        };
        if let Some(why) = failure {
            tracing::info!(session = %session_id(key), "web session ended by an error: {why}");
            book.drops_mut().errors += 1;
            drop(book);
            self.remove(key, Instant::now());
        }
    }

    /// Timeouts that are due; sessions past their lifetime, not connected in time, taken for a
    /// report, or closed; and old counts.
    fn tick(&mut self, now: Instant) {
        let due: Vec<(u64, bool)> = {
            let book = self.shared.book();
            let ending = |s: &Session| s.end_by() <= now || !book.is_live(s.key);
            self.sessions
                .values()
                .filter_map(|s| {
                    let end = ending(s);
                    (end || s.next <= now || !s.is_alive()).then_some((s.key, end))
                })
                .collect()
        };
        for (key, end) in due {
            if end {
                tracing::debug!(session = %session_id(key), "web session ending (lifetime, never connected, or reported)");
            }
            self.step(key, Some(Input::Timeout(now)), end);
            let gone = end || self.sessions.get(&key).is_some_and(|s| !s.is_alive());
            if gone {
                self.remove(key, now);
            }
        }
        self.shared.book().expire(now);
    }

    /// Forgets a session: its routes, its connections (their tasks then end), its `Rtc`. Its
    /// counts stay in the book for a while.
    pub fn remove(&mut self, key: u64, now: Instant) {
        if self.sessions.remove(&key).is_some() {
            tracing::debug!(session = %session_id(key), "web session closed");
        }
        self.shared.routes().remove_session(key);
        self.shared.book().close(key, now);
        self.conns.retain(|_, c| c.session != Some(key));
        self.publish_count();
    }

    /// Tells the socket loops whether any session lives (their lock-free miss).
    fn publish_count(&self) {
        let n = self.sessions.len();
        self.shared
            .sessions
            .store(n, std::sync::atomic::Ordering::Release);
    }
}
