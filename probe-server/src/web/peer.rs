//! The browser test page's WebRTC peer (issue 17): str0m `Rtc`s answering the page's offers as
//! ICE-lite with exactly the candidates RTCD advertises, on the probe's own UDP port (STUN for
//! a session's ufrag, DTLS from a source a session learnt) and as ICE-TCP passive on its TCP
//! port. Each session echoes its data channel and counts what it saw ([`ServerCounts`]).
//!
//! One tokio task owns every `Rtc` ([`task`]); the socket loops and the HTTP side reach it
//! through a cheap [`Peer`] handle: routing lookups under a short std mutex, inputs over
//! bounded channels. Safe on the public internet: capped sessions (total, per address), a
//! lifetime per session, bounded queues and maps, and str0m errors (even panics) end only
//! the session concerned.

mod book;
mod conn;
mod route;
mod session;
mod task;
#[cfg(test)]
mod tests;

use crate::shared::canonical;
use probe_proto::demux::Kind;
use probe_proto::msg::Transport;
use probe_proto::web::{Leg, ServerCounts};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Datagrams waiting for the task: a burst of 30 back-to-back messages per session, for the
/// few sessions that run at once, with room to spare.
const UDP_QUEUE: usize = 1024;
/// Largest STUN or DTLS datagram taken: browsers keep theirs under the path MTU (about
/// 1,200 bytes of payload), so this bounds the queue's memory without losing any.
const MAX_DATAGRAM: usize = 2048;
/// ICE-TCP frames and connection events waiting for the task.
const TCP_QUEUE: usize = 512;
/// Offers waiting for the task.
const OPEN_QUEUE: usize = 16;
/// A session not DTLS-connected this long after it opened is ended: the page gives up on a
/// leg after its phase deadline (30 s at most), and a leg whose UDP or TCP is blocked must not
/// hold a slot of the per-address cap for the whole lifetime (a few runs would fill it and
/// the next run's legs would be refused instead of measured).
pub const CONNECT_WITHIN: Duration = Duration::from_secs(35);

/// Caps that keep the peer safe on the public internet.
#[derive(Debug, Clone, Copy)]
pub struct PeerLimits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub session_lifetime: Duration,
}

/// A session `open` created: its id and the SDP answer.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session: String,
    pub answer_sdp: String,
}

/// Why `open` refused: a bad offer (400), a cap (429: the page waits and asks again) or a
/// peer whose task has stopped (503: asking again cannot help). The string is one sentence.
#[derive(Debug, Clone)]
pub enum OpenError {
    BadOffer(String),
    Busy(String),
    Stopped(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::BadOffer(s) | OpenError::Busy(s) | OpenError::Stopped(s) => f.write_str(s),
        }
    }
}

/// Totals for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Sessions opened, refused by a cap, that reached DTLS connected, open now.
    pub opened: u64,
    pub refused: u64,
    pub connected: u64,
    pub live: u64,
}

/// What the peer dropped, for metrics and logs (apart from [`PeerStats`], whose fields the
/// metrics name one by one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerDrops {
    /// Offers str0m could not answer.
    pub bad_offers: u64,
    /// Sessions ended by a str0m error.
    pub errors: u64,
    /// Datagrams or frames str0m could not parse, or datagrams too large to be a browser's.
    pub malformed: u64,
    /// Data-channel messages of no known stream (or too large), dropped.
    pub messages_dropped: u64,
    /// Datagrams dropped because the task's queue was full, connections refused at the cap.
    pub queue_full: u64,
}

/// How the peer sends a datagram: to `to`, from local address `from` (the address the
/// browser's packets arrived on).
pub trait UdpOut: Send + Sync + 'static {
    fn send(&self, to: SocketAddr, from: Option<IpAddr>, bytes: &[u8]);
}

impl UdpOut for crate::udp::Udp {
    fn send(&self, to: SocketAddr, from: Option<IpAddr>, bytes: &[u8]) {
        // A full socket buffer drops the datagram, as the network would.
        if let Err(e) = self.send_from(to, from, bytes) {
            tracing::debug!("web session: UDP send to {to} failed: {e}");
        }
    }
}

/// State the task and the handles share.
struct Shared {
    routes: Mutex<route::Routes>,
    book: Mutex<book::Book>,
    /// Live sessions (a lock-free miss for every STUN of probe-client while none runs); 0
    /// once the task has ended, so packets then go to the normal handlers.
    sessions: AtomicUsize,
    /// The task ended (it should not; a bug could): nothing is routed to it any more.
    dead: AtomicBool,
    /// Wakes the task when a report took live sessions, so their `Rtc`s end at once.
    wake: tokio::sync::Notify,
    conns: Arc<Mutex<conn::Slots>>,
    next_conn: AtomicU64,
}

impl Shared {
    fn routes(&self) -> MutexGuard<'_, route::Routes> {
        // A panic while holding it cannot leave the maps half-written in a harmful way.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn book(&self) -> MutexGuard<'_, book::Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the task runs and holds a session: the routing lookups' lock-free early out.
    fn any_live(&self) -> bool {
        self.sessions.load(Ordering::Acquire) > 0 && !self.dead.load(Ordering::Acquire)
    }
}

/// Cheap to clone (Arc inside). One tokio task owns every str0m `Rtc`.
#[derive(Clone)]
pub struct Peer {
    shared: Arc<Shared>,
    udp_tx: mpsc::Sender<task::Datagram>,
    tcp_tx: mpsc::Sender<conn::TcpEvent>,
    open_tx: mpsc::Sender<task::OpenReq>,
    lifetime: Duration,
    limits: PeerLimits,
}

impl Peer {
    /// Starts the owning task (on the current tokio runtime). `udp` is the shared socket:
    /// datagrams leave through its send path, from the local address the browser used.
    pub fn start(udp: Arc<crate::udp::Udp>, limits: PeerLimits) -> anyhow::Result<Peer> {
        Self::start_with(udp, limits)
    }

    /// [`Peer::start`] over any datagram sender (tests use a plain socket).
    pub fn start_with(out: Arc<dyn UdpOut>, limits: PeerLimits) -> anyhow::Result<Peer> {
        Self::start_inner(out, limits, CONNECT_WITHIN)
    }

    /// `connect_within`: [`CONNECT_WITHIN`], shorter in tests.
    fn start_inner(
        out: Arc<dyn UdpOut>,
        limits: PeerLimits,
        connect_within: Duration,
    ) -> anyhow::Result<Peer> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("the WebRTC peer needs a tokio runtime"))?;
        let crypto = session::Crypto::new()?;
        let shared = Arc::new(Shared {
            routes: Mutex::default(),
            book: Mutex::default(),
            sessions: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            conns: Arc::default(),
            next_conn: AtomicU64::new(1),
        });
        let (udp_tx, udp) = mpsc::channel(UDP_QUEUE);
        let (tcp_tx, tcp) = mpsc::channel(TCP_QUEUE);
        let (open_tx, open) = mpsc::channel(OPEN_QUEUE);
        let t = task::Task {
            shared: shared.clone(),
            out,
            crypto,
            limits,
            connect_within,
            sessions: Default::default(),
            conns: Default::default(),
            rng: ring::rand::SystemRandom::new(),
        };
        runtime.spawn(t.run(task::Rx { udp, tcp, open }));
        Ok(Peer {
            shared,
            udp_tx,
            tcp_tx,
            open_tx,
            lifetime: limits.session_lifetime,
            limits,
        })
    }

    /// A session answering `offer_sdp` as ICE-lite with exactly `candidates` (UDP host / TCP
    /// passive host). Err(sentence) on a bad offer or a cap.
    pub async fn open(
        &self,
        client: IpAddr,
        leg: Leg,
        offer_sdp: &str,
        candidates: &[(SocketAddr, Transport)],
    ) -> Result<Opened, OpenError> {
        let (reply, rx) = oneshot::channel();
        let req = task::OpenReq {
            client: client.to_canonical(),
            leg,
            offer: offer_sdp.to_owned(),
            candidates: candidates.to_vec(),
            reply,
        };
        let busy =
            || OpenError::Busy("The server's WebRTC peer is busy; try again in a minute.".into());
        let stopped = || {
            OpenError::Stopped(
                "The server's WebRTC peer has stopped; ask the administrator to restart probe-server and check its log.".into(),
            )
        };
        if self.shared.dead.load(Ordering::Acquire) {
            return Err(stopped());
        }
        // The caps are judged before queueing too, so one address's burst cannot fill the
        // queue every address shares (queued offers count against its cap).
        self.shared.book().reserve(client, &self.limits)?;
        if let Err(e) = self.open_tx.try_send(req) {
            let mut book = self.shared.book();
            book.unreserve(client);
            if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                return Err(stopped());
            }
            book.refused_busy();
            return Err(busy());
        }
        rx.await.map_err(|_| stopped())?
    }

    /// From udp.rs, per STUN or DTLS datagram, cheap (no allocation on a miss): STUN whose
    /// USERNAME local ufrag is a live session's, or DTLS from a source a session learnt.
    pub fn wants_udp(&self, kind: Kind, src: SocketAddr, pkt: &[u8]) -> bool {
        if !self.shared.any_live() {
            return false;
        }
        let src = canonical(src);
        self.shared.routes().udp_session(kind, &src, pkt).is_some()
    }

    /// Queues the datagram (bounded; false when full — the caller counts a drop). `dst`: the
    /// local address it arrived on.
    pub fn udp_in(&self, src: SocketAddr, dst: Option<IpAddr>, pkt: &[u8]) -> bool {
        if pkt.len() > MAX_DATAGRAM {
            // Taken and dropped here: not a full queue.
            self.shared.book().drops_mut().malformed += 1;
            return true;
        }
        let d = task::Datagram {
            src,
            dst,
            data: pkt.to_vec(),
            at: Instant::now(),
        };
        let ok = self.udp_tx.try_send(d).is_ok();
        if !ok {
            self.shared.book().drops_mut().queue_full += 1;
        }
        ok
    }

    /// From tcp.rs: the first RFC 4571 frame's payload is a STUN request for a live session.
    pub fn wants_tcp(&self, first_frame: &[u8]) -> bool {
        self.shared.any_live() && self.shared.routes().tcp_session(first_frame).is_some()
    }

    /// Takes the whole connection (its first frame still unread). Beyond the cap on
    /// connections it is closed at once.
    pub fn tcp_in(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        // Beyond a cap, dropping the stream closes the connection.
        let Some(slot) = conn::take_slot(&self.shared.conns, peer.ip()) else {
            self.shared.book().drops_mut().queue_full += 1;
            return;
        };
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let events = self.tcp_tx.clone();
        // A connection never outlives the longest session it could carry.
        let lifetime = self.lifetime + Duration::from_secs(5);
        tokio::spawn(conn::run(
            stream,
            canonical(peer),
            id,
            events,
            lifetime,
            slot,
        ));
    }

    /// What the server counted for these sessions (unknown ids skipped).
    // Read-only (nothing taken), for tests; `POST /report` uses `take_for_report`.
    #[cfg(test)]
    pub fn counts(&self, sessions: &[String]) -> Vec<ServerCounts> {
        self.shared.book().counts(sessions)
    }

    /// For `POST /report`: the counts of the named sessions that `client` opened (IPv6: the
    /// same /64, as the per-address cap counts) and no report took yet, in the order named.
    /// Marks them taken (a second call returns nothing for them) and closes the live ones, so
    /// their cap slots come free at once. Unknown or foreign ids are skipped.
    pub fn take_for_report(&self, client: IpAddr, sessions: &[String]) -> Vec<ServerCounts> {
        let taken = self.shared.book().take(client, sessions, Instant::now());
        if !taken.is_empty() {
            // The task ends the `Rtc`s of sessions the book no longer holds live.
            self.shared.wake.notify_one();
        }
        taken
    }

    /// Totals for metrics/logs: sessions opened, refused, connected, live.
    pub fn stats(&self) -> PeerStats {
        self.shared.book().stats()
    }

    /// What the peer dropped, for metrics/logs.
    pub fn drops(&self) -> PeerDrops {
        self.shared.book().drops()
    }
}
