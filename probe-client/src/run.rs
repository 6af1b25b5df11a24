//! One probe run: the IO of each phase. The order of the phases, what each outcome leads to and
//! the report are [`probe_proto::client::Run`]'s; this file only opens sockets, moves bytes and
//! keeps time: reachability (UDP STUN and TCP in parallel, bounded), control (QUIC, else TLS on
//! the TCP port), UDP echo, TCP echo beside the ICE checks, final counters.

use crate::cli::ProbeArgs;
use crate::control::{rand_bytes, ChannelError, QuicControl, RequestError, TcpLink, TlsControl};
use crate::echo::{self, Clock, EchoSession};
use crate::ice;
use crate::pin;
use crate::progress::Progress;
use crate::schedule;
use crate::target::Target;
use probe_proto::client::run::{self as core, ReportMeta};
use probe_proto::client::{
    EchoOutcome, HelloOutcome, Plan, QuicOutcome, Reach, Run, Schedule, Step, TcpEchoLink,
};
use probe_proto::echo::SessionKey;
use probe_proto::msg::{Control, Counters, IceOffer, Welcome};
use probe_proto::path::ServerSample;
use probe_proto::report::{IceReport, Report};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

/// Windows answers a reset to its SYN by trying again (twice, 0.5 s apart) before it reports
/// the refusal, so its budget leaves room for that: a closed port is "refused", not silence.
const TCP_CONNECT: Duration = if cfg!(windows) {
    Duration::from_millis(3000)
} else {
    Duration::from_secs(2)
};
const TCP_STUN: Duration = Duration::from_millis(1500);
const QUIC_CONNECT: Duration = Duration::from_secs(3);
/// TCP connect and TLS handshake for control on the TCP port.
const TLS_CONNECT: Duration = Duration::from_secs(3);
const CONTROL_ANSWER: Duration = Duration::from_secs(3);
/// How often the server's counters are polled during a long or quiet UDP echo: they tell
/// which way a cut flow died, and the polls keep the session alive (probe-server frees a
/// session after 15 s without traffic by default, `--idle-timeout`).
const COUNTER_POLL: Duration = Duration::from_secs(5);
/// Echo phases this long poll the counters (the cut check's minimum run).
const LONG_RUN: Duration = Duration::from_micros(probe_proto::path::cut::MIN_RUN_US);

/// The control channel that came up, if any.
pub enum Ctl {
    Quic(QuicControl),
    Tcp(TlsControl),
    None,
}

impl Ctl {
    pub(crate) async fn request(&mut self, msg: &Control) -> Result<Control, String> {
        self.call(msg).await.map_err(|e| e.to_string())
    }

    async fn call(&mut self, msg: &Control) -> Result<Control, RequestError> {
        match self {
            Ctl::Quic(q) => q.call(msg, CONTROL_ANSWER).await,
            Ctl::Tcp(t) => t.call(msg, CONTROL_ANSWER).await,
            Ctl::None => Err(RequestError::Other("no control channel".into())),
        }
    }
}

/// What varies between the modes: a single run does everything, load mode skips ICE.
#[derive(Debug, Clone, Copy)]
pub struct RunOpts {
    pub ice: bool,
    pub progress: bool,
    /// The path-MTU phase (`--no-mtu` turns it off; load mode skips it).
    pub mtu: bool,
}

/// A finished run whose control channel is still open, so the report can be uploaded.
pub struct Finished {
    pub report: Report,
    ctl: Ctl,
    session: Option<u64>,
    /// The welcome's session key and protocol version: a site token's MAC needs them.
    welcome: Option<([u8; 32], u16)>,
}

impl Finished {
    /// A session was opened: without one no server took part, so there is no one to upload
    /// to, and the report's findings already say why.
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Sends the report to the server to keep, with `site_token`'s MAC when given; returns why
    /// not when it was not kept.
    pub async fn upload(&mut self, site_token: Option<&str>) -> Result<(), String> {
        let Some(session_id) = self.session else {
            return Err("no session with the server".into());
        };
        let proto = self.welcome.map_or(1, |(_, p)| p);
        let report =
            serde_json::to_string(&self.report.for_proto(proto)).expect("reports serialise");
        let msg = upload_message(session_id, report, self.welcome, site_token);
        match self.ctl.request(&msg).await? {
            Control::Stored { accepted: true, .. } => Ok(()),
            Control::Stored { reason, .. } => Err(reason.unwrap_or_else(|| "refused".into())),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    pub async fn close(self) {
        if let Ctl::Quic(q) = &self.ctl {
            q.close().await;
        }
    }
}

pub async fn run(args: &ProbeArgs, opts: RunOpts) -> Result<Finished, String> {
    let t0 = Instant::now();
    let started_ms = wall_ms();
    let target = Target::parse(args.server.as_deref().unwrap_or_default())?;
    let pin = args.pin.as_deref().map(pin::parse_pin).transpose()?;
    let token = core::check_transports_and_token(args.no_udp, args.no_tcp, args.token.as_deref())?;
    args.turn.validate()?;
    let site = args
        .site
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let progress = if opts.progress {
        Progress::new()
    } else {
        Progress::off()
    };
    progress.show(&format!("resolving {}", target.host));
    let addr = target.resolve().await?;
    let mut io = Io {
        addr,
        host: target.host.clone(),
        pin: pin.clone(),
        token,
        site: site.clone(),
        schedule: schedule::from_args(args),
        quiet: args.quiet_test.map(|q| quiet_window(args.duration, q)),
        clock: Clock(t0),
        progress,
        udp_sock: None,
        tcp_link: None,
        ctl: Ctl::None,
    };
    let mut run = Run::new(Plan {
        server: target.display(),
        port: target.port,
        dialed: addr,
        udp: !args.no_udp,
        tcp: !args.no_tcp,
        ice: opts.ice,
        pin,
        token: token.is_some(),
    });
    let fetched = if args.turn.enabled() {
        crate::turn::prefetch(&args.turn).await?
    } else {
        None
    };
    io.drive(&mut run).await?;
    let mtu = io.mtu(&run, opts.mtu).await;
    // The TURN check (issue 18) needs the welcome's session and RTCD's candidates.
    let turn = if args.turn.enabled() {
        io.progress.show("TURN");
        let ctx = crate::turn::Context::from_run(run.welcome(), addr, args, t0, started_ms);
        Some(crate::turn::check(&args.turn, &ctx, &mut io.ctl, fetched).await)
    } else {
        None
    };
    io.progress.clear();
    let session = run.welcome().map(|w| w.session_id);
    let welcome = run.welcome().map(|w| (w.key, w.proto));
    let mut report = run.report(ReportMeta {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        site,
        started_ms,
        duration_ms: t0.elapsed().as_millis() as u64,
    });
    if let Some((t, f)) = turn {
        crate::turn::attach(&mut report, t, f);
    }
    if let Some(m) = mtu {
        crate::mtu::attach(&mut report, m);
    }
    Ok(Finished {
        report,
        ctl: io.ctl,
        session,
        welcome,
    })
}

/// The upload: signed with the site token's key when there is a token and the server speaks
/// proto 5 (an older server knows no site tokens and takes the plain upload).
fn upload_message(
    session_id: u64,
    report: String,
    welcome: Option<([u8; 32], u16)>,
    site_token: Option<&str>,
) -> Control {
    match (welcome, site_token) {
        (Some((key, proto)), Some(token)) if proto >= 5 => {
            let site_key = probe_proto::auth::site_key(token);
            let site_mac =
                probe_proto::auth::upload_mac(&site_key, &key, session_id, report.as_bytes());
            Control::SignedUpload {
                session_id,
                report,
                site_mac,
            }
        }
        _ => Control::Upload { session_id, report },
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The run's sockets and what they need.
struct Io {
    addr: SocketAddr,
    /// The host as the user typed it.
    host: String,
    pin: Option<String>,
    token: Option<[u8; 32]>,
    site: String,
    schedule: Schedule,
    /// `--quiet-test`: (start, length) in µs into the UDP echo.
    quiet: Option<(u64, u64)>,
    clock: Clock,
    progress: Progress,
    /// The reachability probe's UDP socket, kept for the UDP echo.
    udp_sock: Option<UdpSocket>,
    /// The reachability probe's TCP connection, when it answered STUN; later the echo's.
    tcp_link: Option<TcpLink>,
    ctl: Ctl,
}

impl Io {
    /// Does what the run asks for until it is done; `Err` when the run cannot be carried out.
    async fn drive(&mut self, run: &mut Run) -> Result<(), String> {
        loop {
            match run.step() {
                Step::Reach { udp, tcp } => {
                    let r = self.reach(udp, tcp).await;
                    run.on_reach(r);
                }
                Step::OpenQuic => {
                    let q = self.open_quic().await;
                    run.on_quic(q);
                }
                Step::OpenTls => {
                    let t = self.open_tls().await;
                    run.on_tls(t);
                }
                Step::Hello(_) => {
                    let h = self.hello().await;
                    run.on_hello(h);
                }
                Step::UdpEcho(w) => {
                    let o = self.udp_echo(w).await;
                    run.on_udp_echo(o);
                }
                Step::TcpEchoAndIce { session, tcp, ice } => {
                    let reach = Transports {
                        reachable: (run.udp_reachable(), run.tcp_reachable()),
                        tested: run.tested(),
                    };
                    let (t, i) = self.tcp_echo_and_ice(session, tcp, ice, reach).await;
                    run.on_tcp_echo_and_ice(t, i);
                }
                Step::Counters { session_id } => {
                    let c = self.counters(session_id).await;
                    run.on_counters(c);
                }
                Step::Done => return Ok(()),
                Step::Abort(why) => return Err(why.to_string()),
            }
        }
    }

    /// Both transports at once, so a fully blocked network is concluded in ~3 s.
    async fn reach(&mut self, udp: bool, tcp: bool) -> Reach {
        let (addr, token) = (self.addr, self.token);
        self.progress.show(&format!("probing UDP and TCP {addr}"));
        let udp_probe = async {
            if !udp {
                return None;
            }
            match echo::udp_socket(addr).await {
                Ok(sock) => {
                    let answer = echo::udp_stun(&sock, token.as_ref()).await;
                    Some((sock, answer))
                }
                Err(e) => {
                    tracing::warn!("cannot open a UDP socket toward {addr}: {e}");
                    None
                }
            }
        };
        let tcp_probe = async {
            if !tcp {
                return (None, Err(false));
            }
            match TcpLink::connect(addr, token, TCP_CONNECT).await {
                Ok((mut link, ms)) => {
                    let ok = link.stun(TCP_STUN).await.is_ok();
                    (Some(link).filter(|_| ok), Ok(ms))
                }
                Err(e) => {
                    tracing::info!("TCP {addr}: {e}");
                    (None, Err(e.refused))
                }
            }
        };
        let (udp_p, (link, connected)) = tokio::join!(udp_probe, tcp_probe);
        let (sock, answer) = udp_p.map_or((None, None), |(s, a)| (Some(s), Some(a)));
        self.udp_sock = sock;
        let tcp_stun_ok = link.is_some();
        self.tcp_link = link;
        let answered = answer.as_ref().and_then(|a| a.as_ref().ok());
        Reach {
            udp_stun: answered.map(|a| (a.mapped, a.rtt_ms)),
            tcp_connect_ms: connected.ok(),
            tcp_stun_ok,
            udp_refused: matches!(answer, Some(Err(echo::NoAnswer { refused: true }))),
            tcp_refused: connected == Err(true),
        }
    }

    async fn open_quic(&mut self) -> QuicOutcome {
        self.progress.show("opening the QUIC control channel");
        match QuicControl::connect(self.addr, self.pin.clone(), self.token, QUIC_CONNECT).await {
            Ok(q) => {
                let pin_seen = q.pin_seen.clone();
                self.ctl = Ctl::Quic(q);
                QuicOutcome::Up { pin_seen }
            }
            Err(ChannelError::PinMismatch { seen }) => QuicOutcome::PinMismatch { seen },
            Err(ChannelError::Failed(e)) => {
                // TLS on the TCP port follows; if it fails too, the report's control_failed
                // says so (a warning per session was noise in load mode).
                tracing::info!("QUIC control channel failed: {e}; trying TLS on the TCP port");
                QuicOutcome::Failed
            }
        }
    }

    /// Control inside TLS on the TCP port; the probe's plain connection is done with.
    async fn open_tls(&mut self) -> QuicOutcome {
        self.tcp_link = None;
        self.progress
            .show("opening the TLS control channel on the TCP port");
        match TlsControl::connect(self.addr, self.pin.clone(), self.token, TLS_CONNECT).await {
            Ok(t) => {
                let pin_seen = t.pin_seen.clone();
                self.ctl = Ctl::Tcp(t);
                QuicOutcome::Up { pin_seen }
            }
            Err(ChannelError::PinMismatch { seen }) => QuicOutcome::PinMismatch { seen },
            Err(ChannelError::Failed(e)) => {
                tracing::warn!("TLS control channel on the TCP port failed: {e}");
                QuicOutcome::Failed
            }
        }
    }

    async fn hello(&mut self) -> HelloOutcome {
        let version = env!("CARGO_PKG_VERSION");
        // The server sizes the session's lifetime from the planned duration: the quiet
        // period is part of it.
        let mut planned = self.schedule.clone();
        planned.duration += Duration::from_micros(self.quiet.map_or(0, |q| q.1));
        let hello = core::hello(version, &self.site, &planned, wall_ms(), rand_bytes());
        match self.ctl.call(&hello).await {
            Ok(Control::Welcome(w)) => HelloOutcome::Welcome(Box::new(w)),
            Ok(Control::Refused(r)) => HelloOutcome::Refused(r),
            Ok(other) => {
                tracing::warn!("unexpected answer to hello: {other:?}");
                HelloOutcome::Failed
            }
            Err(e) => {
                // The report or the abort sentence says what it means (-v shows the cause).
                tracing::info!("hello failed: {e}");
                match e {
                    RequestError::TokenMac => HelloOutcome::BadTokenMac,
                    RequestError::Other(_) => HelloOutcome::Failed,
                }
            }
        }
    }

    /// The UDP echo; a long or quiet one polls the server's counters beside it, and a quiet
    /// one asks STUN again afterwards for the public address the server sees now.
    async fn udp_echo(&mut self, w: &Welcome) -> Option<EchoOutcome> {
        let key = SessionKey::new(&w.key);
        let Io {
            udp_sock,
            ctl,
            schedule,
            quiet,
            clock,
            progress,
            token,
            ..
        } = self;
        let sock = udp_sock.as_ref()?;
        let mut session = echo_session(w, &key, schedule, *clock, progress);
        session.quiet = *quiet;
        let poll = quiet.is_some() || schedule.duration >= LONG_RUN;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let echo = async {
            let o = echo::udp_echo(sock, &session).await;
            let _ = done_tx.send(());
            o
        };
        let polls = async {
            if poll {
                poll_counters(ctl, w.session_id, *clock, done_rx).await
            } else {
                Vec::new()
            }
        };
        let (mut o, samples) = tokio::join!(echo, polls);
        o.server_samples = samples;
        if quiet.is_some() {
            progress.show("asking STUN for the public address after the quiet period");
            o.mapped_after = echo::udp_stun(sock, token.as_ref())
                .await
                .ok()
                .map(|a| a.mapped);
        }
        Some(o)
    }

    async fn tcp_echo_and_ice(
        &mut self,
        w: &Welcome,
        tcp: Option<TcpEchoLink>,
        offer: Option<&IceOffer>,
        reach: Transports,
    ) -> (Option<EchoOutcome>, Option<IceReport>) {
        let (udp_reachable, tcp_reachable) = reach.reachable;
        let (udp_tested, tcp_tested) = reach.tested;
        let key = SessionKey::new(&w.key);
        // Destructured so the two phases borrow disjoint parts.
        let Io {
            addr,
            host,
            token,
            schedule,
            clock,
            progress,
            tcp_link,
            ..
        } = self;
        let session = echo_session(w, &key, schedule, *clock, progress);
        let tcp_phase = async {
            let TcpEchoLink::Fresh = tcp?;
            let link = match TcpLink::connect(*addr, *token, TCP_CONNECT).await {
                Ok((l, _)) => Ok(tcp_link.insert(l)),
                Err(e) => Err(e.to_string()),
            };
            Some(match link {
                Ok(link) => echo::tcp_echo(link, &session).await,
                Err(e) => EchoOutcome::failed(e),
            })
        };
        let ice_phase = async {
            Some(
                ice::run(ice::IceInputs {
                    offer: offer?,
                    dialed: *addr,
                    host,
                    udp_reachable,
                    tcp_reachable,
                    udp_tested,
                    tcp_tested,
                })
                .await,
            )
        };
        tokio::join!(tcp_phase, ice_phase)
    }

    /// The path-MTU phase (issue 13), while the session is open, on the echo's UDP socket.
    async fn mtu(&mut self, run: &Run, on: bool) -> Option<probe_proto::path::mtu::MtuReport> {
        let w = run.welcome().filter(|_| on)?;
        self.progress.show("path MTU: large packets both ways");
        let key = SessionKey::new(&w.key);
        let inputs = crate::mtu::Inputs {
            udp: self.udp_sock.as_ref().filter(|_| run.udp_reachable()),
            tcp: run.tcp_reachable(),
            addr: self.addr,
            token: self.token,
            session: w.session_id,
            key: &key,
        };
        Some(crate::mtu::run(inputs).await)
    }

    async fn counters(&mut self, session_id: u64) -> Option<Counters> {
        self.progress.show("collecting the server's counters");
        match self.ctl.request(&core::finish(session_id)).await {
            Ok(Control::Counters(c)) => Some(c),
            Ok(other) => {
                tracing::warn!("final counters unavailable: unexpected answer {other:?}");
                None
            }
            Err(e) => {
                tracing::warn!("final counters unavailable: {e}");
                None
            }
        }
    }
}

/// The quiet period of `--quiet-test SECONDS`: halfway through the sending time, so the path
/// is measured on both sides of it.
fn quiet_window(duration_s: f64, quiet_s: u16) -> (u64, u64) {
    (
        (duration_s * 500_000.0) as u64,
        u64::from(quiet_s) * 1_000_000,
    )
}

/// Polls the server's counters every [`COUNTER_POLL`] until `done` fires.
async fn poll_counters(
    ctl: &mut Ctl,
    session_id: u64,
    clock: Clock,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> Vec<ServerSample> {
    let mut out = Vec::new();
    loop {
        tokio::select! {
            _ = &mut done => return out,
            _ = tokio::time::sleep(COUNTER_POLL) => {}
        }
        match ctl.request(&core::finish(session_id)).await {
            Ok(Control::Counters(c)) => out.push(ServerSample {
                at_us: clock.us(),
                rx: c.udp_rx,
                tx: c.udp_tx,
            }),
            Ok(other) => tracing::info!("counter poll answered with {other:?}"),
            Err(e) => tracing::info!("counter poll unanswered: {e}"),
        }
    }
}

fn echo_session<'a>(
    w: &Welcome,
    key: &'a SessionKey,
    schedule: &'a Schedule,
    clock: Clock,
    progress: &'a Progress,
) -> EchoSession<'a> {
    EchoSession {
        id: w.session_id,
        key,
        schedule,
        clock,
        progress,
        quiet: None,
    }
}

/// What the TCP-and-ICE phase needs to know of the transports: reached, and asked for.
#[derive(Debug, Clone, Copy)]
struct Transports {
    reachable: (bool, bool),
    tested: (bool, bool),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn args(extra: &[&str]) -> ProbeArgs {
        let argv = [&["probe-client"], extra, &["--site", "unit"]].concat();
        Cli::try_parse_from(argv).expect("args").probe
    }

    #[test]
    fn uploads_carry_a_site_mac_only_to_servers_that_speak_proto_5() {
        let token = "0123456789abcdef0123";
        let report = || "{\"schema\":1}".to_string();
        let Control::SignedUpload {
            session_id,
            report: sent,
            site_mac,
        } = upload_message(7, report(), Some(([5; 32], 5)), Some(token))
        else {
            panic!("a proto 5 server gets the signed upload");
        };
        let key = probe_proto::auth::site_key(token);
        assert!(probe_proto::auth::upload_mac_ok(
            &key,
            &[5; 32],
            session_id,
            sent.as_bytes(),
            &site_mac
        ));
        // The MAC is all that goes: the token is nowhere in the message.
        let wire = upload_message(7, report(), Some(([5; 32], 5)), Some(token)).to_payload(None);
        assert!(!wire.windows(token.len()).any(|w| w == token.as_bytes()));
        for (welcome, t) in [
            (Some(([5; 32], 4)), Some(token)),
            (Some(([5; 32], 5)), None),
        ] {
            assert!(matches!(
                upload_message(7, report(), welcome, t),
                Control::Upload { session_id: 7, .. }
            ));
        }
    }

    const OPTS: RunOpts = RunOpts {
        ice: false,
        progress: false,
        mtu: false,
    };

    async fn error(extra: &[&str]) -> String {
        match run(&args(extra), OPTS).await {
            Ok(f) => panic!("ran: {:?}", f.report),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn arguments_are_checked_before_any_io() {
        let both = error(&["192.0.2.1", "--no-udp", "--no-tcp"]).await;
        assert!(both.contains("leave nothing to test"), "{both}");
        let token = error(&["192.0.2.1", "--token", " "]).await;
        assert!(token.contains("token is empty"), "{token}");
        let pin = error(&["192.0.2.1", "--pin", "md5:00"]).await;
        assert!(pin.contains("is not a certificate pin"), "{pin}");
    }

    /// Nothing listens on the port: the run ends after reachability with one finding.
    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let t0 = Instant::now();
        let done = run(&args(&[&format!("127.0.0.1:{port}")]), OPTS)
            .await
            .expect("a report");
        let r = &done.report;
        let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["server_unreachable"]);
        assert!(!r.ok && !r.udp.reachable && !r.tcp.reachable);
        assert!(r.udp.echo.is_none() && r.server_version.is_none() && done.session.is_none());
        assert_eq!(
            (r.site.as_str(), r.server.as_str()),
            ("unit", &*format!("127.0.0.1:{port}"))
        );
        // Concluded by the STUN deadline, not by anything longer.
        assert!(t0.elapsed() < echo::STUN_GIVE_UP + Duration::from_secs(1));
    }
}
