//! The browser test page in live mode (issue 17): `probe-server live --web ADDR` serves the page
//! over HTTP on ADDR, and its WebRTC sessions run over RTCD's own UDP port through the tap.
//!
//! RTCD ignores them: its UDP mux hands a STUN packet to a connection only by the USERNAME's
//! ufrag, and any other packet only by a source address one of its connections learnt; a miss
//! is dropped with a Trace line (pion/ice v4.2.0 udp_mux.go `connWorker`: the `addressMap`
//! lookup at :322, `getConn(ufrag, …)` for STUN at :326–348, "Dropping packet from" at :353;
//! the README's "What RTCD does and logs for each live packet" has the live probe's case). The page's ufrags are ours and its browser's addresses are
//! new to RTCD, so every page packet is one RTCD drops, while our copy from the tap reaches the
//! page's peer, whose answers leave from RTCD's port through the raw socket.
//!
//! ICE-TCP cannot run here: RTCD accepts every connection to its TCP port itself. The server
//! refuses the page's TCP leg with a sentence, and the report judges UDP alone (`live: true`).

use super::tap::Sender;
use crate::shared::{ConnLimits, Shared};
use crate::web::peer::{Peer, PeerLimits, UdpOut};
use probe_proto::demux::classify;
use probe_proto::msg::IceOffer;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// A page session's longest life, as `probe-server` (serve) gives it.
const SESSION_LIFETIME: Duration = Duration::from_secs(120);
/// Page sessions at once beside RTCD (a run holds one or two): fewer than serve's 32, so the
/// page's sends stay well within its budget.
const MAX_SESSIONS: usize = 8;
const MAX_SESSIONS_PER_IP: usize = 3;
/// The page's send budget is `--max-pps` on top of the live probe's own (a run sends about 50
/// audio and 300 burst messages a second at most, so 8 sessions fit in the default 2,000);
/// it may save up this many seconds of it.
const BURST_S: f64 = 0.25;

/// The datagram path of the page's peer: the raw socket, from RTCD's UDP port, within a
/// packet budget (`--max-pps`), so RTCD's host is never loaded by the page either.
struct RawOut {
    sender: Arc<Sender>,
    port: u16,
    budget: std::sync::Mutex<probe_proto::ratelimit::Bucket>,
    started: std::time::Instant,
}

impl UdpOut for RawOut {
    fn send(&self, to: SocketAddr, from: Option<IpAddr>, bytes: &[u8]) {
        // The tap always knows the local address a datagram arrived at; without one there is
        // no source to answer from (the kernel would not pick RTCD's port for us).
        let Some(ip) = from else {
            tracing::debug!("test page: no local address to answer {to} from");
            return;
        };
        let now = self.started.elapsed().as_micros() as u64;
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if !budget.take(now) {
            // Over budget: dropped, as a congested network would (the page counts it as loss).
            return;
        }
        drop(budget);
        if let Err(e) = self.sender.send(SocketAddr::new(ip, self.port), to, bytes) {
            tracing::debug!("test page: datagram to {to} not sent: {e}");
        }
    }
}

/// What the page needs besides the tap: its listener, bound before anything else starts.
pub struct PageSetup {
    listener: std::net::TcpListener,
    store: crate::results::store::Store,
}

/// The running page: the tokio runtime its HTTP side and peer run on, and the peer handle the
/// tap loop feeds.
pub struct LivePage {
    _runtime: tokio::runtime::Runtime,
    peer: Peer,
    shared: Arc<Shared>,
    pub addr: Option<SocketAddr>,
}

/// `--web ADDR` and `--store`, checked before anything else (a bad address or store stops the
/// start with one sentence). Called before `--rtcd-pid` enters RTCD's network namespace, so
/// the page is served from the host's (a socket keeps the namespace it was made in).
pub fn prepare(args: &super::LiveArgs) -> Result<Option<PageSetup>, String> {
    let Some(addr) = args.web else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrNotAvailable => format!(
            "cannot serve the test page on {addr}: that address is not on this host; use \
             0.0.0.0:{} or one of this host's addresses with --web",
            addr.port()
        ),
        _ => {
            format!("cannot serve the test page on {addr}: {e}; choose another address with --web")
        }
    })?;
    let path = args
        .store
        .clone()
        .unwrap_or_else(|| crate::results::default_store(args.state_dir.clone()));
    let store = crate::results::store::Store::open_for_writing(&path)
        .map_err(|e| format!("{e}; give --store a writable file"))?;
    Ok(Some(PageSetup { listener, store }))
}

impl PageSetup {
    /// Live mode never takes RTCD's TCP port, even while RTCD is down (its next start would
    /// fail): `--web` on that port is refused once RTCD's configuration names it.
    pub fn check_port(&self, rtcd_tcp: u16) -> Result<(), String> {
        let port = self.listener.local_addr().map_or(0, |a| a.port());
        if port == rtcd_tcp {
            return Err(format!(
                "--web cannot use port {port}: it is RTCD's TCP port, which live mode never \
                 takes; choose another port (e.g. --web 0.0.0.0:8080)"
            ));
        }
        Ok(())
    }
}

/// Starts the page: the results store's writer, a small tokio runtime, the peer on `sender`.
pub fn start(
    setup: PageSetup,
    mut offer: IceOffer,
    token: Option<&str>,
    (sender, max_pps): (Arc<Sender>, u32),
) -> Result<LivePage, String> {
    let serve = super::config::serve_defaults();
    let results = start_results(setup.store, &serve)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("live-page")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the test page's runtime: {e}"))?;
    let _in = runtime.enter();
    // The page tests RTCD's own ports (the offer names them in its fixes).
    offer.probe_port_tcp = offer.rtcd_port_tcp;
    let port = offer.rtcd_port_udp;
    let core = probe_proto::session::Core::with_token(
        probe_proto::session::Limits::default(),
        token.map(probe_proto::auth::token_key),
    );
    let shared = Arc::new(Shared::new(core, Some(offer)).with_results(results));
    shared.web_state.set_live();
    let limits = PeerLimits {
        max_sessions: MAX_SESSIONS,
        max_sessions_per_ip: MAX_SESSIONS_PER_IP,
        session_lifetime: SESSION_LIFETIME,
    };
    let pps = f64::from(max_pps.max(1));
    let out = RawOut {
        sender,
        port,
        budget: std::sync::Mutex::new(probe_proto::ratelimit::Bucket::new(
            pps,
            (pps * BURST_S).max(1.0),
            0,
        )),
        started: std::time::Instant::now(),
    };
    let peer = Peer::start_with(Arc::new(out), limits)
        .map_err(|e| format!("cannot start the test page's WebRTC peer: {e:#}"))?;
    shared.set_web(peer.clone());
    let addr = setup.listener.local_addr().ok();
    let listener = setup
        .listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(setup.listener))
        .map_err(|e| format!("cannot serve the test page: {e}"))?;
    let conns = ConnLimits::new(serve.max_tcp_connections, serve.max_tcp_connections_per_ip);
    runtime.spawn(crate::web::http::serve_listener(
        listener,
        shared.clone(),
        conns,
    ));
    drop(_in);
    Ok(LivePage {
        _runtime: runtime,
        peer,
        shared,
        addr,
    })
}

fn start_results(
    store: crate::results::store::Store,
    serve: &crate::cli::ServeArgs,
) -> Result<crate::results::Sink, String> {
    use crate::results::{Keep, Sink, SitePolicy};
    let keep = Keep {
        retention: serve.retention,
        max_bytes: serve.max_store_mb.saturating_mul(1 << 20),
    };
    Sink::start_with(store, None, SitePolicy::from_list(None), keep)
        .map_err(|e| format!("cannot start the results store's writer: {e}"))
}

impl LivePage {
    /// Whether RTCD holds its UDP port: while it does not, page sessions are refused with a
    /// sentence (the peer would answer for a port nothing listens on).
    pub fn set_held(&self, held: bool) {
        self.shared.web_state.set_media_down(!held);
    }

    /// What new page sessions are answered with (RTCD restarted, or its override resolves
    /// differently now); RTCD's ports, as at [`start`].
    pub fn set_ice(&self, mut offer: IceOffer) {
        offer.probe_port_tcp = offer.rtcd_port_tcp;
        self.shared.set_ice(offer);
    }

    /// From the page's tap, per STUN or DTLS datagram to RTCD's port: a page session's (STUN
    /// for its ufrag, DTLS from an address it learnt) goes to the peer, anything else (RTCD's
    /// own STUN and DTLS pass here too) is left to RTCD. Cheap on a miss: no lock while no
    /// session lives.
    pub fn take_udp(&self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        // The page tap passes only STUN and DTLS; `wants_udp` looks only at those kinds.
        let kind = classify(payload);
        if self.peer.wants_udp(kind, from, payload) {
            // A full queue drops it, as the network would (the peer counts it).
            let _ = self.peer.udp_in(from, Some(to.ip()), payload);
        }
    }
}
