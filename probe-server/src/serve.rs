//! `probe-server` (no subcommand): bind the port, print the ready line, serve until a signal.

use crate::cli::ServeArgs;
use crate::shared::{ConnLimits, Shared};
use crate::{cert, fail, ice, quic, tcp, udp};
use probe_proto::msg::IceOffer;
use probe_proto::rtcd::RtcdConfig;
use probe_proto::session::{Core, Limits};
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn run(args: ServeArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(serve(args))
}

/// The next port above `addr`'s that UDP and TCP can both bind right now, to suggest: a port
/// suggested blindly may be the next one the same program holds.
fn free_port_near(addr: std::net::SocketAddr) -> Option<u16> {
    (1..=50u16)
        .filter_map(|d| addr.port().checked_add(d))
        .find(|&p| {
            let a = std::net::SocketAddr::new(addr.ip(), p);
            std::net::UdpSocket::bind(a).is_ok() && std::net::TcpListener::bind(a).is_ok()
        })
}

fn bind_error(proto: &str, args: &ServeArgs, e: std::io::Error) -> i32 {
    let addr = args.listen;
    let port = addr.port();
    let elsewhere = match free_port_near(addr) {
        Some(p) => format!(
            "or run the probe on another port with --listen {}:{p} (free for UDP and TCP now)",
            addr.ip()
        ),
        None => "or run the probe on another free port with --listen".to_string(),
    };
    // Only a taken port has a holder to look up (a bounded /proc scan).
    let holder = (e.kind() == ErrorKind::AddrInUse)
        .then(|| port_holder(proto, addr))
        .flatten();
    match (e.kind(), holder) {
        (ErrorKind::AddrInUse, Some(o)) if o.is(&crate::rtcd_env::RTCD) => fail(format!(
            "{proto} port {port} on {} is already in use by RTCD ({}, pid {}); stop RTCD while you test \
             (the probe needs its port), {elsewhere}.",
            addr.ip(),
            o.process,
            o.pid
        )),
        (ErrorKind::AddrInUse, Some(o)) => fail(format!(
            "{proto} port {port} on {} is already in use by {} (pid {}), not RTCD; stop it (kill {}), {elsewhere}.",
            addr.ip(),
            o.process,
            o.pid,
            o.pid
        )),
        (ErrorKind::AddrInUse, None) => fail(format!(
            "{proto} port {port} on {} is already in use — RTCD is probably running there; stop RTCD while you \
             test (the probe needs its port), {elsewhere}.",
            addr.ip()
        )),
        (ErrorKind::PermissionDenied, _) => fail(format!(
            "not allowed to bind {proto} {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a \
             higher port with --listen."
        )),
        (ErrorKind::AddrNotAvailable, _) => fail(format!(
            "cannot bind {proto} {addr}: that address is not on this host; use 0.0.0.0:{port} or one of this \
             host's addresses with --listen."
        )),
        _ => fail(format!("cannot bind {proto} {addr}: {e}.")),
    }
}

/// Who holds `addr`'s port for `proto`, as the doctor finds it (`/proc/net` + `/proc/*/fd`;
/// root sees every process): None when no process it can see holds it. Bounded: 500 ms.
fn port_holder(proto: &str, addr: SocketAddr) -> Option<crate::doctor::procnet::Owner> {
    use crate::doctor::procnet::{self, Proto};
    let p = if proto == "UDP" {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    let socks = procnet::read_tables(p).ok()?;
    // A wildcard bind collides with every address; a bound address with itself and wildcards.
    let addrs: Vec<std::net::IpAddr> = Some(addr.ip())
        .filter(|ip| !ip.is_unspecified())
        .into_iter()
        .collect();
    let on = procnet::on_port(&socks, addr.port(), &addrs, proto == "TCP");
    let inodes = on.iter().map(|s| s.inode).collect();
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    let (by_inode, _) = procnet::owners(&inodes, deadline);
    procnet::main_owner(&on, &by_inode).0
}

/// The UDP port, and TCP on the same address (the port UDP got, when `--listen` asks for any),
/// and the `--web` address if any.
/// Plain binds: never SO_REUSEPORT, so a running RTCD makes this fail instead of losing traffic.
fn bind(
    args: &ServeArgs,
) -> Result<
    (
        std::net::UdpSocket,
        std::net::TcpListener,
        Option<std::net::TcpListener>,
    ),
    i32,
> {
    let udp = std::net::UdpSocket::bind(args.listen).map_err(|e| bind_error("UDP", args, e))?;
    let tcp = std::net::TcpListener::bind(udp.local_addr().unwrap_or(args.listen))
        .map_err(|e| bind_error("TCP", args, e))?;
    Ok((udp, tcp, bind_web(args)?))
}

/// The line scripts and tests wait for: the bound addresses and the certificate's pin.
fn print_ready(udp_addr: SocketAddr, tcp_addr: SocketAddr, pin: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "probe-server ready udp={udp_addr} tcp={tcp_addr} pin={pin}"
    );
    let _ = out.flush();
}

async fn serve(args: ServeArgs) -> i32 {
    let (udp_std, tcp_std, web_std) = match bind(&args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(cert::default_state_dir);
    let identity = match cert::load_or_create(&state_dir) {
        Ok(id) => id,
        Err(e) => return fail(format!("{e:#}.")),
    };
    let (results, metrics, store_path) = match keep_results(&args, &state_dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let token = match read_token(&args) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let probe_port = udp_std
        .local_addr()
        .map_or(args.listen.port(), |a| a.port());
    let rules = args.rtcd_version.unwrap_or_default();
    let (offer, rehearse) = match rtcd_offer(&args, probe_port, rules).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let core = Core::with_token(
        session_limits(&args),
        token.as_deref().map(probe_proto::auth::token_key),
    );
    let shared = Arc::new(Shared::new(core, Some(offer)).with_results(results));

    let listeners = match listeners(udp_std, tcp_std, &shared, &identity) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot set up the listeners: {e:#}.")),
    };
    let udp_addr = listeners.udp.local_addr().unwrap_or(args.listen);
    let tcp_addr = listeners.tcp.local_addr().unwrap_or(args.listen);
    let (web_task, web_addr) = match start_web(&args, &listeners, web_std, &shared) {
        Ok(t) => t,
        Err(code) => return code,
    };
    // Signals are hooked before the ready line, so a SIGTERM right after it stops cleanly.
    let stop = match Shutdown::hook() {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot install the signal handlers: {e}.")),
    };

    let endpoint = listeners.quic.clone();
    let tasks = spawn_loops(listeners, &shared, &args, rehearse, probe_port, rules)
        .into_iter()
        .chain(web_task);
    let metrics_addr = metrics.as_ref().and_then(|(l, _)| l.local_addr().ok());
    let metrics_task = match metrics.map(|(l, m)| start_metrics(l, m, shared.clone())) {
        Some(Err(e)) => return fail(format!("cannot serve metrics: {e}.")),
        Some(Ok(t)) => Some(t),
        None => None,
    };

    print_ready(udp_addr, tcp_addr, &identity.pin);
    // Logged once the start has succeeded: a failed start says one sentence and nothing else.
    tracing::info!(path = %store_path.display(), "keeping uploaded reports (probe-server results shows them)");
    if let Some(addr) = metrics_addr {
        tracing::info!("Prometheus metrics on http://{addr}/metrics");
    }
    log_for_users(
        &args,
        &shared,
        &identity.pin,
        (udp_addr, tcp_addr, web_addr),
    );

    stop.wait().await;
    shut_down(endpoint, tasks.chain(metrics_task), &shared).await;
    0
}

/// `--web ADDR`, bound before the ready line like the probe port: a bad address stops the start.
fn bind_web(args: &ServeArgs) -> Result<Option<std::net::TcpListener>, i32> {
    let Some(addr) = args.web.filter(|_| !args.no_web) else {
        return Ok(None);
    };
    std::net::TcpListener::bind(addr).map(Some).map_err(|e| {
        fail(format!(
            "cannot serve the test page on {addr}: {e}; choose another address with --web."
        ))
    })
}

/// A spawned task and the address it serves on.
type WebTask = (
    Option<tokio::task::JoinHandle<()>>,
    Option<std::net::SocketAddr>,
);

/// Starts the browser test page's WebRTC peer on the probe's sockets (unless `--no-web`), and
/// the `--web` listener if there is one.
fn start_web(
    args: &ServeArgs,
    l: &Listeners,
    web_std: Option<std::net::TcpListener>,
    shared: &Arc<Shared>,
) -> Result<WebTask, i32> {
    if args.no_web {
        return Ok((None, None));
    }
    let limits = crate::web::peer::PeerLimits {
        max_sessions: args.web_max_sessions.max(1),
        max_sessions_per_ip: args.web_max_sessions_per_ip.max(1),
        session_lifetime: WEB_SESSION_LIFETIME,
    };
    let peer = crate::web::peer::Peer::start(l.udp.clone(), limits)
        .map_err(|e| fail(format!("cannot start the test page's WebRTC peer: {e:#}.")))?;
    shared.set_web(peer);
    let Some(listener) = web_std else {
        return Ok((None, None));
    };
    let addr = listener.local_addr().ok();
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| fail(format!("cannot serve the test page: {e}.")))?;
    let task = tokio::spawn(crate::web::http::serve_listener(
        listener,
        shared.clone(),
        ConnLimits::new(args.max_tcp_connections, args.max_tcp_connections_per_ip),
    ));
    Ok((Some(task), addr))
}

/// A page session's longest life: the page's three legs take well under a minute.
const WEB_SESSION_LIFETIME: Duration = Duration::from_secs(120);

/// What to tell users, once at start: the client command and the test page's link, each with
/// the token only where it is safe to show (see [`crate::cert::token_hint`]).
fn log_for_users(
    args: &ServeArgs,
    shared: &Shared,
    pin: &str,
    (udp_addr, tcp_addr, web_addr): (SocketAddr, SocketAddr, Option<SocketAddr>),
) {
    let token_arg = crate::cert::token_hint(
        args.token.as_deref(),
        args.token_file.as_deref(),
        std::env::var("PROBE_SERVER_TOKEN").ok().as_deref(),
    );
    // With --sites a report without one of them is not kept: the command names the choice.
    let site_arg = args
        .sites
        .as_deref()
        .map(|list| format!(" --site SITE (one of: {})", list.replace(',', ", ")))
        .unwrap_or_default();
    tracing::info!(
        "listening on UDP and TCP {udp_addr}; users run: probe-client {} --pin {pin}{token_arg}{site_arg}",
        client_target(udp_addr, shared.ice().as_ref()),
    );
    if shared.web().is_none() {
        return;
    }
    let (query, note) = crate::web::link_query(
        args.token.as_deref(),
        args.token_file.as_deref(),
        std::env::var("PROBE_SERVER_TOKEN").ok().as_deref(),
    );
    let ice = shared.ice();
    let mut line = page_link(tcp_addr, ice.as_ref(), &query);
    if let Some(a) = web_addr {
        line.push_str(&format!(" (also {})", page_link(a, ice.as_ref(), &query)));
    }
    if let Some(note) = note {
        line.push_str(&format!("; {note}"));
    }
    tracing::info!("test page for users: {line}");
}

/// `http://HOST:PORT/`: the host users dial (as in the client command), the page's own port.
fn page_link(addr: SocketAddr, ice: Option<&IceOffer>, path: &str) -> String {
    page_link_for(addr, ice.map_or(&[][..], |o| &o.candidates), path)
}

/// [`page_link`] from the advertised candidates (live mode has no offer of its own).
pub fn page_link_for(
    addr: SocketAddr,
    candidates: &[probe_proto::msg::WireCandidate],
    path: &str,
) -> String {
    let target = client_target_for(addr, candidates);
    let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
    format!("http://{host}:{}/{path}", addr.port())
}

/// Stops serving: QUIC peers told, the loops aborted, the uploads written out, the counters
/// logged one last time.
async fn shut_down(
    endpoint: quinn::Endpoint,
    tasks: impl Iterator<Item = tokio::task::JoinHandle<()>>,
    shared: &Shared,
) {
    tracing::info!("shutting down");
    // Replies are sent inline, so nothing is in flight once the loops stop; tell QUIC peers.
    endpoint.close(0u32.into(), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
    for t in tasks {
        t.abort();
    }
    shared.results.finish(Duration::from_secs(3));
    log_stats(shared, "stopped");
}

/// `--site-token` entries and the lines of `--site-token-file`; an unreadable file or a bad
/// line stops the start with one sentence.
fn site_tokens(args: &ServeArgs) -> Result<Vec<(String, String)>, i32> {
    let mut tokens = args.site_token.clone();
    let Some(path) = &args.site_token_file else {
        return Ok(tokens);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "cannot read the site token file {}: {e}; check the path and its permissions.",
            path.display()
        ))
    })?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = crate::results::parse_site_token(line)
            .map_err(|e| fail(format!("{}:{}: {e}.", path.display(), i + 1)))?;
        tokens.push(entry);
    }
    Ok(tokens)
}

/// The access token from `--token` (trimmed) or the first line of `--token-file`; an
/// unreadable file or an empty token stops the start with one sentence.
fn read_token(args: &ServeArgs) -> Result<Option<String>, i32> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => Some(s.lines().next().unwrap_or_default().trim().to_string()),
            Err(e) => {
                return Err(fail(format!(
                    "cannot read the token file {}: {e}; check the path and its permissions.",
                    path.display()
                )))
            }
        },
        (None, None) => None,
    };
    if token.as_deref() == Some("") {
        return Err(fail(
            "the access token is empty; give a non-empty --token or token file.",
        ));
    }
    Ok(token)
}

/// The session core's limits from the flags, clamped to what the protocol allows.
fn session_limits(args: &ServeArgs) -> Limits {
    Limits {
        max_sessions: args.max_sessions,
        max_sessions_per_ip: args.max_sessions_per_ip,
        max_duration_ms: args.max_duration.saturating_mul(1000),
        min_interval_us: (args.min_interval * 1000.0) as u32,
        max_packet: args.max_packet.min(probe_proto::echo::MAX_LEN),
        idle_timeout_us: args.idle_timeout.saturating_mul(1_000_000),
        max_reply_pps: args.max_reply_pps.max(1),
        unauth_per_source_pps: args.unauth_pps.max(1),
        tracked_sources: args.tracked_sources.max(1),
    }
}

/// What RTCD would advertise, logged and made into the offer for clients; a configuration
/// RTCD would refuse stops the probe too. With a hostname override, also RTCD's configuration,
/// to re-resolve it while serving.
async fn rtcd_offer(
    args: &ServeArgs,
    probe_port: u16,
    rules: probe_proto::rtcd::PionRules,
) -> Result<(IceOffer, Option<RtcdConfig>), i32> {
    // The Calls plugin's settings (--calls-config, --mattermost) or RTCD's.
    let (rtcd_cfg, env_line, calls_lines, deployment) = if crate::calls::wanted(args) {
        let l = crate::calls::load(args).map_err(|e| fail(format!("{e}.")))?;
        (l.cfg, None, l.lines, l.deployment)
    } else {
        let (c, env_line) = ice::load_config(args).map_err(|e| fail(format!("{e}.")))?;
        (
            c,
            Some(env_line),
            vec![],
            probe_proto::calls::Deployment::Rtcd,
        )
    };
    // STUN and name lookups block for up to seconds.
    let (cfg, adv) = match tokio::task::spawn_blocking(move || {
        let mut rtcd_cfg = rtcd_cfg;
        // Server-side TURN counts only where it allocates from this host (relay.rs).
        crate::relay::check_into(&mut rtcd_cfg);
        ice::advertise(&rtcd_cfg, probe_port, rules).map(|a| (rtcd_cfg, a))
    })
    .await
    {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(fail(format!("{e}."))),
        Err(e) => return Err(fail(format!("computing RTCD's candidates failed: {e}."))),
    };
    if let Some(l) = env_line {
        l.log();
    }
    ice::log_lines(&calls_lines);
    ice::log_advertised_for(&cfg, &adv, probe_port, &deployment);
    let offer = ice::offer_for(&cfg, &adv, probe_port, &deployment);
    let rehearse = matches!(
        adv.override_form,
        probe_proto::rtcd::OverrideForm::Hostname { .. }
    )
    .then_some(cfg);
    Ok((offer, rehearse))
}

/// The bound sockets as the serving loops take them: QUIC shares the UDP port, fed by the UDP
/// loop's demultiplexer through `quic_tx`.
struct Listeners {
    udp: Arc<udp::Udp>,
    tcp: tokio::net::TcpListener,
    tcp_tls: Arc<rustls::ServerConfig>,
    quic: quinn::Endpoint,
    quic_tx: tokio::sync::mpsc::Sender<udp::QuicDatagram>,
}

fn listeners(
    udp_std: std::net::UdpSocket,
    tcp_std: std::net::TcpListener,
    shared: &Arc<Shared>,
    identity: &cert::Identity,
) -> anyhow::Result<Listeners> {
    tcp_std.set_nonblocking(true)?;
    // Udp::new sets the socket's mode: blocking on Linux, where its thread sleeps in receives.
    let udp_sock = Arc::new(udp::Udp::new(udp_std)?);
    let listener = tokio::net::TcpListener::from_std(tcp_std)?;
    let (quic_sock, quic_tx) = udp::QuicSocket::new(udp_sock.clone(), shared.clone());
    // RFC 9443: peers that share a port with STUN/RTP must keep QUIC's fixed bit set, or
    // short-header packets land in the STUN and echo ranges.
    let mut endpoint_cfg = quinn::EndpointConfig::default();
    endpoint_cfg.grease_quic_bit(false);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_cfg,
        Some(quic::server_config(identity)?),
        Arc::new(quic_sock),
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(Listeners {
        udp: udp_sock,
        tcp: listener,
        // The TCP fallback's control channel: the same certificate, so the same pin.
        tcp_tls: cert::tls_server_config(identity, tcp::ALPN)?,
        quic: endpoint,
        quic_tx,
    })
}

/// Spawns the serving loops; they run until aborted at shutdown. `rehearse` is RTCD's
/// configuration when its override is a hostname, which [`ice::follow_hostname`] re-resolves.
fn spawn_loops(
    l: Listeners,
    shared: &Arc<Shared>,
    args: &ServeArgs,
    rehearse: Option<RtcdConfig>,
    probe_port: u16,
    rules: probe_proto::rtcd::PionRules,
) -> [tokio::task::JoinHandle<()>; 5] {
    [
        tokio::spawn(udp::serve(l.udp, shared.clone(), l.quic_tx)),
        tokio::spawn(tcp::serve(
            l.tcp,
            shared.clone(),
            ConnLimits::new(args.max_tcp_connections, args.max_tcp_connections_per_ip),
            Duration::from_secs(args.tcp_idle_timeout.max(1)),
            l.tcp_tls,
        )),
        // One QUIC control connection carries one session: the session limits apply.
        tokio::spawn(quic::serve(
            l.quic,
            shared.clone(),
            ConnLimits::new(args.max_sessions, args.max_sessions_per_ip),
        )),
        tokio::spawn(expire(shared.clone())),
        tokio::spawn(ice::follow_hostname(
            rehearse,
            probe_port,
            rules,
            Duration::from_secs(args.resolve_interval.max(1)),
            shared.clone(),
        )),
    ]
}

type MetricsSetup = (std::net::TcpListener, Arc<crate::metrics::Metrics>);

/// Opens the result store and binds the metrics port, before the ready line: a store or an
/// address that cannot be used stops the start with one sentence (exit 2).
fn keep_results(
    args: &ServeArgs,
    state_dir: &std::path::Path,
) -> Result<
    (
        crate::results::Sink,
        Option<MetricsSetup>,
        std::path::PathBuf,
    ),
    i32,
> {
    use crate::results::{store::Store, Sink};
    let path = args
        .store
        .clone()
        .unwrap_or_else(|| state_dir.join("results.sqlite"));
    let store = Store::open_for_writing(&path).map_err(|e| fail(format!("{e}.")))?;
    let sites = crate::results::SitePolicy::from_list(args.sites.as_deref())
        .with_tokens(&site_tokens(args)?);
    let metrics = match args.metrics {
        None => None,
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                fail(format!(
                    "cannot serve metrics on {addr}: {e}; choose another address with --metrics."
                ))
            })?;
            // Sites already in the store keep their labels (up to the cap) across restarts.
            let known = store
                .recent_sites(args.metrics_max_sites)
                .unwrap_or_default();
            let m = crate::metrics::Metrics::new(args.metrics_max_sites, &known)
                .with_site_policy(args.metrics_label_after, &sites.vouched());
            Some((listener, Arc::new(m)))
        }
    };
    let keep = crate::results::Keep {
        retention: args.retention,
        max_bytes: args.max_store_mb.saturating_mul(1 << 20),
    };
    let sink = Sink::start_with(store, metrics.as_ref().map(|(_, m)| m.clone()), sites, keep)
        .map_err(|e| fail(format!("cannot start the result store's writer: {e}.")))?;
    Ok((sink, metrics, path))
}

fn start_metrics(
    listener: std::net::TcpListener,
    metrics: Arc<crate::metrics::Metrics>,
    shared: Arc<Shared>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(crate::metrics::serve(
        listener, metrics, shared,
    )))
}

/// One line with every counter, at shutdown and every minute, for operators and tests.
fn log_stats(shared: &Shared, what: &str) {
    // The probe's own line first: scripts (and the tests) read the first "stopped" line.
    log_core_stats(shared.core().stats, what);
    if let Some(web) = shared.web() {
        let w = &shared.web_state;
        let load = crate::web::WebState::load;
        let p = web.stats();
        let quiet = p.opened + p.refused + load(&w.token_refused) == 0;
        // Nothing to say until someone used the page (but always at shutdown).
        if quiet && what != "stopped" {
            return;
        }
        tracing::info!(
            web_sessions_opened = p.opened,
            web_sessions_refused = p.refused,
            web_sessions_connected = p.connected,
            web_sessions_live = p.live,
            web_reports_built = load(&w.reports_built),
            web_reports_stored = load(&w.reports_stored),
            web_reports_failed = load(&w.reports_failed),
            web_token_refused = load(&w.token_refused),
            "{what} (test page)"
        );
    }
}

fn log_core_stats(s: probe_proto::session::ServerStats, what: &str) {
    tracing::info!(
        echo_replies = s.echo_replies,
        stun_replies = s.stun_replies,
        sessions_opened = s.sessions_opened,
        sessions_expired = s.sessions_expired,
        sessions_refused = s.sessions_refused,
        dropped = s.dropped(),
        drop_malformed = s.drop_malformed,
        drop_unknown_session = s.drop_unknown_session,
        drop_bad_mac = s.drop_bad_mac,
        drop_rate_limited = s.drop_rate_limited,
        drop_unauthenticated = s.drop_unauthenticated,
        drop_not_ours = s.drop_not_ours,
        drop_quic_invalid = s.drop_quic_invalid,
        drop_wrong_peer = s.drop_wrong_peer,
        stun_too_small = s.stun_too_small,
        ignored_live_hello = s.ignored_live_hello,
        conn_no_progress = s.conn_no_progress,
        conn_displaced = s.conn_displaced,
        "{what}"
    );
}

/// What to put in the copy-paste client command: the bound address unless it is a wildcard.
fn client_target(addr: std::net::SocketAddr, ice: Option<&probe_proto::msg::IceOffer>) -> String {
    client_target_for(addr, ice.map_or(&[][..], |o| &o.candidates))
}

fn client_target_for(
    addr: std::net::SocketAddr,
    candidates: &[probe_proto::msg::WireCandidate],
) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    // On a wildcard bind, the address RTCD advertises publicly is what users should dial.
    let public = candidates
        .iter()
        .find(|c| !probe_proto::rtcd::is_private(c.address))
        .map(|c| std::net::SocketAddr::new(c.address, c.port));
    public.map_or_else(|| format!("THIS_HOST:{}", addr.port()), |a| a.to_string())
}

async fn expire(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for n in 1u64.. {
        tick.tick().await;
        if n % 60 == 0 {
            log_stats(&shared, "counters");
        }
        let now = shared.now_us();
        for id in shared.core().expire(now) {
            tracing::info!(
                session = format_args!("{id:016x}"),
                "session expired (idle or over its lifetime)"
            );
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered up front.
struct Shutdown {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn hook() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["probe-server"];
        argv.extend_from_slice(flags);
        crate::cli::Cli::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn session_limits_follow_the_flags_in_the_core_units() {
        let l = session_limits(&args(&[
            "--max-duration",
            "30",
            "--min-interval",
            "0.5",
            "--idle-timeout",
            "7",
        ]));
        assert_eq!(l.max_duration_ms, 30_000);
        assert_eq!(l.min_interval_us, 500);
        assert_eq!(l.idle_timeout_us, 7_000_000);
        assert_eq!(l.max_packet, 1200);
        assert_eq!(l.tracked_sources, Limits::default().tracked_sources);
    }

    #[test]
    fn session_limits_clamp_what_the_protocol_cannot_do() {
        let l = session_limits(&args(&[
            "--max-packet",
            "100000",
            "--max-reply-pps",
            "0",
            "--unauth-pps",
            "0",
        ]));
        assert_eq!(l.max_packet, probe_proto::echo::MAX_LEN);
        assert_eq!(l.max_reply_pps, 1);
        assert_eq!(l.unauth_per_source_pps, 1);
    }
}
