//! `probe-server` (no subcommand): bind the port, print the ready line, serve until a signal.

use crate::cli::ServeArgs;
use crate::shared::{ConnLimits, Shared};
use crate::{cert, fail, ice, quic, tcp, udp};
use probe_proto::session::{Core, Limits};
use std::io::{ErrorKind, Write};
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

fn bind_error(proto: &str, args: &ServeArgs, e: std::io::Error) -> i32 {
    let addr = args.listen;
    let port = addr.port();
    match e.kind() {
        ErrorKind::AddrInUse => fail(format!(
            "{proto} port {port} on {} is already in use — RTCD is probably running there; stop RTCD while you \
             test (the probe needs its port), or run the probe on another port with --listen {}:{}.",
            addr.ip(),
            addr.ip(),
            port.wrapping_add(1)
        )),
        ErrorKind::PermissionDenied => fail(format!(
            "not allowed to bind {proto} {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a \
             higher port with --listen."
        )),
        ErrorKind::AddrNotAvailable => fail(format!(
            "cannot bind {proto} {addr}: that address is not on this host; use 0.0.0.0:{port} or one of this \
             host's addresses with --listen."
        )),
        _ => fail(format!("cannot bind {proto} {addr}: {e}.")),
    }
}

async fn serve(args: ServeArgs) -> i32 {
    // Plain binds: never SO_REUSEPORT, so a running RTCD makes this fail instead of losing traffic.
    let udp_std = match std::net::UdpSocket::bind(args.listen) {
        Ok(s) => s,
        Err(e) => return bind_error("UDP", &args, e),
    };
    let tcp_std = match std::net::TcpListener::bind(udp_std.local_addr().unwrap_or(args.listen)) {
        Ok(s) => s,
        Err(e) => return bind_error("TCP", &args, e),
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
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => Some(s.lines().next().unwrap_or_default().trim().to_string()),
            Err(e) => {
                return fail(format!(
                    "cannot read the token file {}: {e}; check the path and its permissions.",
                    path.display()
                ))
            }
        },
        (None, None) => None,
    };
    if token.as_deref() == Some("") {
        return fail("the access token is empty; give a non-empty --token or token file.");
    }
    let limits = Limits {
        max_sessions: args.max_sessions,
        max_sessions_per_ip: args.max_sessions_per_ip,
        max_duration_ms: args.max_duration.saturating_mul(1000),
        min_interval_us: (args.min_interval * 1000.0) as u32,
        max_packet: args.max_packet.min(probe_proto::echo::MAX_LEN),
        idle_timeout_us: args.idle_timeout.saturating_mul(1_000_000),
        max_reply_pps: args.max_reply_pps.max(1),
        unauth_per_source_pps: args.unauth_pps.max(1),
        ..Limits::default()
    };
    // What RTCD would advertise; a configuration RTCD would refuse stops the probe too.
    let rtcd_cfg = match ice::load_config(&args) {
        Ok(c) => c,
        Err(e) => return fail(format!("{e}.")),
    };
    let probe_port = udp_std
        .local_addr()
        .map_or(args.listen.port(), |a| a.port());
    let rules = args.rtcd_version.unwrap_or_default();
    let advertised = match tokio::task::spawn_blocking(move || {
        ice::advertise(&rtcd_cfg, probe_port, rules).map(|a| (rtcd_cfg, a))
    })
    .await
    {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return fail(format!("{e}.")),
        Err(e) => return fail(format!("computing RTCD's candidates failed: {e}.")),
    };
    ice::log_advertised(&advertised.0, &advertised.1, probe_port);
    let offer = ice::offer(&advertised.0, &advertised.1, probe_port);
    let rehearse = matches!(
        advertised.1.override_form,
        probe_proto::rtcd::OverrideForm::Hostname { .. }
    )
    .then(|| advertised.0.clone());
    let core = Core::with_token(limits, token.as_deref().map(probe_proto::auth::token_key));
    let shared = Arc::new(Shared::new(core, Some(offer)).with_results(results));

    let setup = (|| -> anyhow::Result<_> {
        udp_std.set_nonblocking(true)?;
        tcp_std.set_nonblocking(true)?;
        let udp_sock = Arc::new(udp::Udp::new(tokio::net::UdpSocket::from_std(udp_std)?)?);
        let listener = tokio::net::TcpListener::from_std(tcp_std)?;
        let (quic_sock, quic_tx) = udp::QuicSocket::new(udp_sock.clone(), shared.clone());
        // RFC 9443: peers that share a port with STUN/RTP must keep QUIC's fixed bit set, or
        // short-header packets land in the STUN and echo ranges.
        let mut endpoint_cfg = quinn::EndpointConfig::default();
        endpoint_cfg.grease_quic_bit(false);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_cfg,
            Some(quic::server_config(&identity)?),
            Arc::new(quic_sock),
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok((udp_sock, listener, endpoint, quic_tx))
    })();
    let (udp_sock, listener, endpoint, quic_tx) = match setup {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot set up the listeners: {e:#}.")),
    };
    let udp_addr = udp_sock.local_addr().unwrap_or(args.listen);
    let tcp_addr = listener.local_addr().unwrap_or(args.listen);
    // Signals are hooked before the ready line, so a SIGTERM right after it stops cleanly.
    let stop = match Shutdown::hook() {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot install the signal handlers: {e}.")),
    };

    let tasks = [
        tokio::spawn(udp::serve(udp_sock, shared.clone(), quic_tx)),
        tokio::spawn(tcp::serve(
            listener,
            shared.clone(),
            ConnLimits::new(args.max_tcp_connections, args.max_tcp_connections_per_ip),
            Duration::from_secs(args.tcp_idle_timeout.max(1)),
        )),
        // One QUIC control connection carries one session: the session limits apply.
        tokio::spawn(quic::serve(
            endpoint.clone(),
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
    ];
    let metrics_addr = metrics.as_ref().and_then(|(l, _)| l.local_addr().ok());
    let metrics_task = match metrics.map(|(l, m)| start_metrics(l, m, shared.clone())) {
        Some(Err(e)) => return fail(format!("cannot serve metrics: {e}.")),
        Some(Ok(t)) => Some(t),
        None => None,
    };

    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "probe-server ready udp={udp_addr} tcp={tcp_addr} pin={}",
            identity.pin
        );
        let _ = out.flush();
    }
    // The admin already typed the token on this command line; from a file, point at the file.
    let token_arg = match (&args.token, &args.token_file) {
        (Some(t), _) => format!(" --token '{t}'"),
        (None, Some(f)) => format!(" --token \"$(cat {})\"", f.display()),
        (None, None) => String::new(),
    };
    // Logged once the start has succeeded: a failed start says one sentence and nothing else.
    tracing::info!(path = %store_path.display(), "keeping uploaded reports (probe-server results shows them)");
    if let Some(addr) = metrics_addr {
        tracing::info!("Prometheus metrics on http://{addr}/metrics");
    }
    tracing::info!(
        "listening on UDP and TCP {udp_addr}; users run: probe-client {} --pin {}{token_arg}",
        client_target(udp_addr, shared.ice().as_ref()),
        identity.pin
    );

    stop.wait().await;
    tracing::info!("shutting down");
    // Replies are sent inline, so nothing is in flight once the loops stop; tell QUIC peers.
    endpoint.close(0u32.into(), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
    for t in tasks {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    shared.results.finish(Duration::from_secs(3));
    log_stats(&shared, "stopped");
    0
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
            let m = Arc::new(crate::metrics::Metrics::new(args.metrics_max_sites, &known));
            Some((listener, m))
        }
    };
    let sink = Sink::start(store, metrics.as_ref().map(|(_, m)| m.clone()))
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
    let s = shared.core().stats;
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
        "{what}"
    );
}

/// What to put in the copy-paste client command: the bound address unless it is a wildcard.
fn client_target(addr: std::net::SocketAddr, ice: Option<&probe_proto::msg::IceOffer>) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    // On a wildcard bind, the address RTCD advertises publicly is what users should dial.
    let public = ice.and_then(|o| {
        o.candidates
            .iter()
            .find(|c| !probe_proto::rtcd::is_private(c.address))
            .map(|c| std::net::SocketAddr::new(c.address, c.port))
    });
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
