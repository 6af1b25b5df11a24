//! `probe-server live`: tests RTCD's own port while RTCD runs (issue 12). Linux only: raw
//! sockets (CAP_NET_RAW) tap copies of what reaches RTCD's port and answer from that port,
//! which is never bound. What RTCD itself does with each live packet (nothing but a Trace line
//! for UDP, one Warn per TCP probe) is documented in `probe_proto::live`.
//!
//! `--web ADDR` adds the browser test page ([`page`]): HTTP on ADDR, its WebRTC sessions over
//! RTCD's UDP port through a second tap (STUN and DTLS only), answered through the raw socket.
//!
//! # Containers
//! RTCD in Docker or Kubernetes receives its packets in its own network namespace, where a tap
//! on the host sees nothing. `--rtcd-pid PID` enters that namespace (setns, as root) before any
//! socket is opened and reads RTCD's `RTCD_*` variables from `/proc/PID/environ`:
//! - Docker: `sudo probe-server live --rtcd-pid "$(docker inspect -f '{{.State.Pid}}' rtcd)"`
//!   (with `--network host` RTCD shares the host's namespace and no pid is needed).
//! - Kubernetes: run it in RTCD's pod, which shares one network namespace: an ephemeral debug
//!   container with NET_RAW (`kubectl debug -it POD --image=… --profile=netadmin`), or on the
//!   node with the pid of RTCD's container (`crictl inspect --output go-template
//!   --template '{{.info.pid}}' CONTAINER`).

mod config;
mod follow;
mod page;
mod tap;

use probe_proto::live::bpf::Proto;
use probe_proto::live::{Event, HelloInfo, Limits, Responder};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tap::{Sender, Tap};

#[derive(clap::Args, Debug, Clone)]
pub struct LiveArgs {
    /// RTCD's TOML configuration (its ICE ports and what it advertises); RTCD's RTCD_* environment applies too.
    #[arg(long, env = "PROBE_SERVER_RTCD_CONFIG")]
    pub rtcd_config: Option<PathBuf>,
    /// The Calls plugin's settings instead of RTCD's, when the plugin runs the media server
    /// itself (no RTCD).
    #[command(flatten)]
    pub calls: crate::calls::CallsSource,
    /// RTCD's process id: enter its network namespace (Docker, Kubernetes) and read its environment.
    #[arg(long, value_name = "PID")]
    pub rtcd_pid: Option<u32>,
    /// Same as RTCD's rtc.ice_host_override (wins over the file and the environment).
    #[arg(long, env = "PROBE_SERVER_ICE_HOST_OVERRIDE")]
    pub ice_host_override: Option<String>,
    /// Access token: clients must prove they hold it (--token on probe-client).
    #[arg(
        long,
        env = "PROBE_SERVER_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the access token from this file (first line).
    #[arg(long, env = "PROBE_SERVER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Live replies per second in total, so RTCD's host is never loaded by the probe.
    #[arg(long, env = "PROBE_SERVER_LIVE_MAX_PPS", default_value_t = 2000)]
    pub max_pps: u32,
    /// Live replies per second to one source address (IPv6: one /64).
    #[arg(long, env = "PROBE_SERVER_LIVE_SOURCE_PPS", default_value_t = 500)]
    pub source_pps: u32,
    /// The RTCD version whose ICE rules to follow (default: pion/ice 4.2, RTCD 1.2.5 and newer).
    #[arg(long = "rtcd-version", env = "PROBE_RTCD_VERSION", value_name = "VERSION",
          value_parser = probe_proto::rtcd::PionRules::for_rtcd_version)]
    pub rtcd_version: Option<probe_proto::rtcd::PionRules>,
    /// One JSON object per line for each event instead of text.
    #[arg(long)]
    pub json: bool,
    /// Serve the browser test page on this TCP address (HTTP), e.g. 0.0.0.0:8080. Its WebRTC
    /// sessions run over RTCD's UDP port through the tap; ICE-TCP is not tested (RTCD holds TCP).
    #[arg(long, env = "PROBE_SERVER_WEB", value_name = "ADDR")]
    pub web: Option<std::net::SocketAddr>,
    /// SQLite file that keeps the test page's reports (default: results.sqlite in the state
    /// directory, the store `probe-server results` reads).
    #[arg(long, env = "PROBE_SERVER_STORE")]
    pub store: Option<PathBuf>,
    /// The state directory (default as `probe-server`'s), for the default --store.
    #[arg(long, env = "PROBE_SERVER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The page's socket and store, RTCD's namespace entered, the token read.
fn prepare(args: &LiveArgs) -> Result<(Option<page::PageSetup>, Option<String>), String> {
    // Bound and opened before anything is logged (a bad address or store is one sentence),
    // and before entering RTCD's namespace: the page is served from the host's.
    let page_setup = page::prepare(args)?;
    // Before any thread exists (a namespace is per thread); only the page's sockets precede it.
    if let Some(pid) = args.rtcd_pid {
        tap::enter_netns(pid).map_err(|e| {
            format!(
                "cannot enter the network namespace of pid {pid} (/proc/{pid}/ns/net): {e}; \
                 give RTCD's pid and run as root"
            )
        })?;
    }
    Ok((page_setup, read_token(args)?))
}

pub fn run(args: LiveArgs) -> i32 {
    let (page_setup, token) = match prepare(&args) {
        Ok(p) => p,
        Err(msg) => return crate::fail(msg),
    };
    let (cfg, deployment) = match config::load(&args) {
        Ok(c) => c,
        Err(msg) => return crate::fail(msg),
    };
    let rules = args.rtcd_version.unwrap_or_default();
    let (hello, adv) = match config::hello(&cfg, rules, &deployment) {
        Ok(h) => h,
        Err(msg) => return crate::fail(msg),
    };
    let (udp_port, tcp_port) = (hello.rtcd_port_udp, hello.rtcd_port_tcp);
    // The RTCD whose configuration was just read: a restart after this is followed.
    let first = follow::holder((udp_port, tcp_port));
    let held = follow::port_held(udp_port);
    if let Some(Err(msg)) = page_setup.as_ref().map(|p| p.check_port(tcp_port)) {
        return crate::fail(msg);
    }
    let (taps, sender) = match open_io(udp_port, tcp_port, page_setup.is_some()) {
        Ok(io) => io,
        Err(msg) => return crate::fail(msg),
    };
    crate::ice::log_advertised_for(&cfg, &adv, udp_port, &deployment);
    let page = page_setup.map(|setup| {
        let offer = crate::ice::offer_for(&cfg, &adv, udp_port, &deployment);
        page::start(
            setup,
            offer,
            token.as_deref(),
            (sender.clone(), args.max_pps),
        )
    });
    let page = match page.transpose() {
        Ok(p) => p,
        Err(msg) => return crate::fail(msg),
    };
    let started = Instant::now();
    let mut r = responder(&args, token.as_deref(), &hello);
    announce(
        &args,
        (udp_port, tcp_port),
        &hello.candidates,
        (args.max_pps.max(1), held),
    );
    if let Some(note) = follow::stale_config_note(args.rtcd_config.as_deref(), first) {
        announce_stale(args.json, &note);
    }
    if held == Some(false) {
        hold(&mut r, page.as_ref(), false);
        announce_not_held(&args, &hello, true);
    }
    if let Some((url, note)) = page
        .as_ref()
        .map(|p| page_link(&args, p, &hello.candidates))
    {
        announce_page(args.json, &url, note.as_deref());
    }
    let changes = follow::start(&args, (&cfg, rules, &deployment), &hello, (first, held));
    if changes.is_none() {
        // Nothing would ever say the port is held again: never mute without a watcher.
        hold(&mut r, page.as_ref(), true);
    }
    let out = Out {
        sender: &sender,
        page: page.as_ref(),
        changes: changes.as_ref(),
        follower_gone: std::cell::Cell::new(false),
    };
    serve(&args, &taps, &out, &mut r, started)
}

/// The live responder within `--max-pps` and `--source-pps`, with the token's key.
fn responder(args: &LiveArgs, token: Option<&str>, hello: &HelloInfo) -> Responder {
    let limits = Limits {
        total_pps: args.max_pps.max(1),
        per_source_pps: args.source_pps.max(1),
        ..Limits::default()
    };
    let key = token.map(probe_proto::auth::token_key);
    Responder::new(key, limits, hello.clone(), 0)
}

/// Whether RTCD holds its UDP port, for the responder and the page alike.
fn hold(r: &mut Responder, page: Option<&page::LivePage>, held: bool) {
    r.set_held(held);
    if let Some(p) = page {
        p.set_held(held);
    }
}

/// Where the loop's answers and news go.
struct Out<'a> {
    sender: &'a Sender,
    page: Option<&'a page::LivePage>,
    /// RTCD's restarts (and a hostname override's new address), from [`follow`].
    changes: Option<&'a std::sync::mpsc::Receiver<follow::Change>>,
    /// The follower's thread has ended (said once).
    follower_gone: std::cell::Cell<bool>,
}

/// Applies what the follower found; Err(exit code) when live mode cannot go on.
fn apply_changes(args: &LiveArgs, out: &Out, r: &mut Responder) -> Result<(), i32> {
    use std::sync::mpsc::TryRecvError;
    let Some(rx) = out.changes else {
        return Ok(());
    };
    loop {
        let c = match rx.try_recv() {
            Ok(c) => c,
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                // Never left mute by a watcher that is gone.
                if !out.follower_gone.replace(true) {
                    tracing::warn!(
                        "the thread watching RTCD ended: live probes are answered from now on, and RTCD's \
                         restarts are no longer followed"
                    );
                    hold(r, out.page, true);
                }
                return Ok(());
            }
        };
        match c {
            follow::Change::Advertise { hello, offer, pid } => {
                announce_advertised(args.json, pid, &hello.candidates);
                if let Some(p) = out.page {
                    p.set_ice(*offer);
                    // The link names the address RTCD advertises: the one to share changed too.
                    let (url, note) = page_link(args, p, &hello.candidates);
                    announce_page(args.json, &url, note.as_deref());
                }
                r.set_hello(*hello);
            }
            follow::Change::Held(held) => {
                hold(r, out.page, held);
                if held {
                    announce_held(args.json, r.hello());
                } else {
                    announce_not_held(args, r.hello(), false);
                }
            }
            follow::Change::Unreadable(e) => tracing::warn!(
                "RTCD restarted, but its configuration does not load here: {e}; new clients still get what it advertised before"
            ),
            follow::Change::PortsMoved { udp, tcp } => {
                return Err(crate::fail(format!(
                    "RTCD restarted on UDP {udp} and TCP {tcp}, not the ports this live probe taps; start probe-server live again (its systemd unit restarts it)"
                )))
            }
        }
    }
}

/// One JSON event line, stamped with the wall clock (`ts`, RFC 3339): `--json` output is
/// often kept in a file, where journald's timestamps are not.
fn emit(mut event: serde_json::Value) {
    if let Some(o) = event.as_object_mut() {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        o.insert("ts".into(), probe_proto::report::rfc3339(ms).into());
    }
    probe_shell::outln!("{event}");
}

fn candidate_list(candidates: &[probe_proto::msg::WireCandidate]) -> Vec<String> {
    candidates
        .iter()
        .map(|c| {
            format!(
                "{}/{:?}",
                std::net::SocketAddr::new(c.address, c.port),
                c.protocol
            )
            .to_lowercase()
        })
        .collect()
}

fn announce_advertised(
    json: bool,
    pid: Option<u32>,
    candidates: &[probe_proto::msg::WireCandidate],
) {
    let adv = candidate_list(candidates);
    if json {
        emit(serde_json::json!({"event": "advertise", "rtcd_pid": pid, "advertised": adv}));
        return;
    }
    let why = match pid {
        Some(pid) => format!("RTCD (re)started (pid {pid})"),
        None => "ice_host_override resolves differently now".into(),
    };
    let adv = if adv.is_empty() {
        "nothing".to_string()
    } else {
        adv.join(", ")
    };
    probe_shell::outln!("live: {why}; RTCD advertises {adv}; new clients are told so");
}

/// Nothing holds RTCD's UDP port (at start, or since now): RTCD is not running, and live mode
/// leaves the port closed until it is held again.
fn announce_not_held(args: &LiveArgs, hello: &probe_proto::live::HelloInfo, at_start: bool) {
    let udp = hello.rtcd_port_udp;
    if args.json {
        emit(serde_json::json!({"event": "rtcd_stopped", "udp_port": udp, "at_start": at_start}));
        return;
    }
    let name = if hello.deployment.is_rtcd() {
        "RTCD"
    } else {
        "the Calls plugin's RTC server"
    };
    let when = if at_start { "" } else { " any more" };
    // The port tables are per network namespace: a container's RTCD behind a DNAT rule (no
    // proxy process on the host) holds its port in its own.
    let why = match args.rtcd_pid {
        Some(pid) => format!(
            "{name} is not running in the network namespace of pid {pid}; if its container restarted, \
             start live mode again with --rtcd-pid of the new process"
        ),
        None => format!(
            "{name} is not running here, or runs in a container's own network namespace (then run \
             live mode with --rtcd-pid PID)"
        ),
    };
    probe_shell::outln!(
        "live: nothing holds UDP {udp} in this network namespace{when}: {why}. Until the port is \
         held, live mode leaves it closed, so clients see it refused; to test the port while \
         {name} is stopped, stop live mode and run probe-server --listen 0.0.0.0:{udp} instead"
    );
}

/// RTCD's configuration file changed after RTCD started: it still runs the old one. A warning
/// in the log, and with `--json` an event on stdout too, where scripts read.
fn announce_stale(json: bool, note: &str) {
    tracing::warn!("{note}");
    if json {
        emit(serde_json::json!({"event": "config_changed_since_start", "note": note}));
    }
}

fn announce_held(json: bool, hello: &probe_proto::live::HelloInfo) {
    let udp = hello.rtcd_port_udp;
    if json {
        emit(serde_json::json!({"event": "rtcd_started", "udp_port": udp}));
    } else {
        probe_shell::outln!("live: UDP {udp} is held again: answering live probes");
    }
}

/// The start line; `held` is whether something holds RTCD's UDP port (null: not known).
fn announce(
    args: &LiveArgs,
    (udp, tcp): (u16, u16),
    candidates: &[probe_proto::msg::WireCandidate],
    (pps, held): (u32, Option<bool>),
) {
    let adv = candidate_list(candidates);
    if args.json {
        emit(
            serde_json::json!({"event": "start", "udp_port": udp, "tcp_port": tcp, "advertised": adv, "max_pps": pps, "rtcd_holds_port": held}),
        );
    } else {
        probe_shell::outln!(
            "live: tapping UDP {udp} and TCP {tcp} (RTCD's ports, never bound); RTCD advertises {}; at most {pps} replies/s",
            if adv.is_empty() { "nothing".to_string() } else { adv.join(", ") }
        );
    }
}

/// The link to share, with the token only where the client command would show it.
fn page_link(
    args: &LiveArgs,
    page: &page::LivePage,
    candidates: &[probe_proto::msg::WireCandidate],
) -> (String, Option<String>) {
    let (query, note) = crate::web::link_query(
        args.token.as_deref(),
        args.token_file.as_deref(),
        std::env::var("PROBE_SERVER_TOKEN").ok().as_deref(),
    );
    let addr = page.addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    (crate::serve::page_link_for(addr, candidates, &query), note)
}

fn announce_page(json: bool, url: &str, note: Option<&str>) {
    if json {
        emit(serde_json::json!({"event": "page", "url": url, "note": note, "tcp_tested": false}));
    } else {
        let note = note.map(|n| format!("; {n}")).unwrap_or_default();
        probe_shell::outln!(
            "live: test page for users: {url}{note} (its WebRTC sessions use RTCD's UDP port; \
             ICE-TCP is not tested while RTCD holds the TCP port)"
        );
    }
}

fn read_token(args: &LiveArgs) -> Result<Option<String>, String> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "cannot read the token file {}: {e}; check the path and its permissions",
                        path.display()
                    )
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if token.as_deref() == Some("") {
        return Err("the access token is empty; give a non-empty --token or token file".into());
    }
    Ok(token)
}

/// The taps and the raw sender.
fn open_io(udp: u16, tcp: u16, page: bool) -> Result<(Vec<Tap>, std::sync::Arc<Sender>), String> {
    let taps = open_taps(udp, tcp, page)?;
    let sender = Sender::open().map_err(|e| {
        format!("cannot open a raw socket to answer: {e}; run as root or with CAP_NET_RAW")
    })?;
    Ok((taps, std::sync::Arc::new(sender)))
}

/// The taps: IPv4 TCP and UDP are required; IPv6 ones are opened when the host has IPv6. With
/// the test page, a UDP tap for its sessions' STUN and DTLS too.
fn open_taps(udp: u16, tcp: u16, page: bool) -> Result<Vec<Tap>, String> {
    let mut taps = Vec::new();
    // TCP first: the loop drains taps in this order, so a TCP probe and the UDP query about it
    // that wake the loop together are recorded before they are answered.
    for (proto, port) in [(Proto::Tcp, tcp), (Proto::Udp, udp)] {
        let t = Tap::open(proto, false, &[port]).map_err(|e| {
            format!("cannot open a raw {proto:?} socket: {e}; run as root or with CAP_NET_RAW (the live systemd unit grants it)")
        })?;
        taps.push(t);
        match Tap::open(proto, true, &[port]) {
            Ok(t) => taps.push(t),
            Err(e) => tracing::info!("no IPv6 {proto:?} tap: {e}"),
        }
    }
    if page {
        let t = Tap::open_page(false, &[udp])
            .map_err(|e| format!("cannot open a raw UDP socket for the test page: {e}; run as root or with CAP_NET_RAW"))?;
        taps.push(t);
        match Tap::open_page(true, &[udp]) {
            Ok(t) => taps.push(t),
            Err(e) => tracing::info!("no IPv6 tap for the test page: {e}"),
        }
    }
    Ok(taps)
}

fn now_us(started: Instant) -> u64 {
    started.elapsed().as_micros() as u64
}

/// The loop: wait for the taps (bounded, so idle nonces are reported on time), answer, report.
fn serve(args: &LiveArgs, taps: &[Tap], out: &Out, r: &mut Responder, started: Instant) -> i32 {
    let mut fds: Vec<libc::pollfd> = taps
        .iter()
        .map(|t| libc::pollfd {
            fd: t.fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; 65_536];
    let mut next_poll = Duration::ZERO;
    loop {
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 250) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return crate::fail(format!(
                "poll on the tap failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        for (i, t) in taps.iter().enumerate() {
            if fds[i].revents & libc::POLLIN != 0 {
                drain(t, &mut buf, (out.sender, out.page), r, started);
            }
        }
        if let Err(code) = apply_changes(args, out, r) {
            return code;
        }
        if started.elapsed() >= next_poll {
            r.poll(now_us(started));
            next_poll = started.elapsed() + Duration::from_millis(500);
        }
        for e in r.take_events() {
            print_event(args.json, &e);
        }
    }
}

/// Reads what is queued (bounded per round so one tap cannot starve the other).
fn drain(
    t: &Tap,
    buf: &mut [u8],
    (sender, page): (&Sender, Option<&page::LivePage>),
    r: &mut Responder,
    started: Instant,
) {
    for _ in 0..512 {
        let pkt = match t.recv(buf) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(_) => return,
        };
        let now = now_us(started);
        if t.is_page() {
            // STUN or DTLS: the page's peer takes its sessions' (RTCD drops those), not RTCD's;
            // none while RTCD does not hold its port (the page would pass a closed port).
            if let Some(p) = page.filter(|_| r.held()) {
                p.take_udp(pkt.from, pkt.to, &pkt.payload);
            }
        } else if t.is_tcp() {
            r.on_tcp(pkt.from, pkt.to, &pkt.payload, now);
        } else if let Some(reply) = r.on_udp(pkt.from, pkt.to, &pkt.payload, now) {
            if let Err(e) = sender.send(pkt.to, pkt.from, &reply) {
                tracing::debug!("live reply to {} not sent: {e}", pkt.from);
            }
        }
    }
}

/// The server-side verdict for a TCP probe: the client sends its UDP hello first, so no UDP
/// from that address means UDP to RTCD's port is blocked on the way (what the client, which
/// only sees silence, cannot tell apart from "no probe-server live here").
fn tcp_udp_note(udp_seen: Option<bool>, from: std::net::IpAddr) -> String {
    match udp_seen {
        Some(true) => String::new(),
        Some(false) => format!(
            "; no live UDP from {from} arrived: UDP to this port is blocked on the way ({})",
            probe_proto::catalog::FindingId::UdpBlocked
        ),
        None => "; whether its UDP arrived is unknown (table full)".to_string(),
    }
}

fn print_event(json: bool, e: &Event) {
    use serde_json::json;
    let (j, text) = match e {
        Event::Hello { from, arrived_at } => (
            json!({"event": "hello", "from": from.to_string(), "arrived_at": arrived_at.to_string()}),
            format!("hello from {from} (arrived at {arrived_at})"),
        ),
        Event::TcpProbe {
            nonce,
            from,
            arrived_at,
            udp_seen,
        } => (
            json!({"event": "tcp", "nonce": format!("{nonce:016x}"), "from": from.to_string(),
                   "arrived_at": arrived_at.to_string(), "udp_seen": udp_seen}),
            format!(
                "tcp  {nonce:016x} from {from}: segment reached {arrived_at} (RTCD's host){}",
                tcp_udp_note(*udp_seen, from.ip())
            ),
        ),
        Event::EchoDone(s) => (
            json!({"event": "udp", "nonce": format!("{:016x}", s.nonce), "from": s.from.to_string(),
                   "arrived_at": s.arrived_at.to_string(), "received": s.rx, "answered": s.tx,
                   "duration_ms": s.last_us.saturating_sub(s.first_us) / 1000}),
            format!(
                "udp  {:016x} from {}: {} datagrams reached {}, {} answered, over {:.1} s",
                s.nonce,
                s.from,
                s.rx,
                s.arrived_at,
                s.tx,
                s.last_us.saturating_sub(s.first_us) as f64 / 1e6
            ),
        ),
    };
    if json {
        emit(j);
    } else {
        probe_shell::outln!("{text}");
    }
}
