//! One probe run, in order: reachability (UDP STUN and TCP in parallel, bounded), control
//! (QUIC, else TCP), UDP echo, TCP echo, final counters, verdict.

use crate::cli::ProbeArgs;
use crate::control::{QuicControl, QuicError, TcpLink, CONTROL_PAD_TO};
use crate::echo::{self, Clock, EchoOutcome, EchoSession};
use crate::ice;
use crate::pin;
use crate::progress::Progress;
use crate::schedule::Schedule;
use crate::target::Target;
use probe_proto::echo::SessionKey;
use probe_proto::ice_verdict;
use probe_proto::msg::{Control, Counters, Hello, Refused, Welcome, PROTO_MAX, PROTO_MIN};
use probe_proto::report::{
    self, Finding, IceReport, Report, Severity, StunResult, TcpResult, UdpResult,
};
use probe_proto::stats::EchoSummary;
use probe_proto::verdict::{self, Facts};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TCP_CONNECT: Duration = Duration::from_secs(2);
const TCP_STUN: Duration = Duration::from_millis(1500);
const QUIC_CONNECT: Duration = Duration::from_secs(3);
const CONTROL_ANSWER: Duration = Duration::from_secs(3);

/// The control channel that came up, if any.
pub enum Ctl {
    Quic(QuicControl),
    Tcp(TcpLink),
    None,
}

impl Ctl {
    async fn request(&mut self, msg: &Control) -> Result<Control, String> {
        match self {
            Ctl::Quic(q) => q.request(msg, CONTROL_ANSWER).await,
            Ctl::Tcp(t) => t.request(msg, CONTROL_ANSWER).await,
            Ctl::None => Err("no control channel".into()),
        }
    }
}

/// What varies between the modes: a single run does everything, load mode skips ICE.
#[derive(Debug, Clone, Copy)]
pub struct RunOpts {
    pub ice: bool,
    pub progress: bool,
}

/// A finished run whose control channel is still open, so the report can be uploaded.
pub struct Finished {
    pub report: Report,
    ctl: Ctl,
    session: Option<u64>,
}

impl Finished {
    /// Sends the report to the server to keep; returns why not when it was not kept.
    pub async fn upload(&mut self) -> Result<(), String> {
        let Some(session_id) = self.session else {
            return Err("no session with the server".into());
        };
        let report = serde_json::to_string(&self.report).expect("reports serialise");
        match self
            .ctl
            .request(&Control::Upload { session_id, report })
            .await?
        {
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
    let clock = Clock(t0);
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let target = Target::parse(args.server.as_deref().unwrap_or_default())?;
    let pin = args.pin.as_deref().map(pin::parse_pin).transpose()?;
    if args.no_udp && args.no_tcp {
        return Err(
            "--no-udp and --no-tcp together leave nothing to test; drop one of them".into(),
        );
    }
    let token = match args.token.as_deref().map(str::trim) {
        Some("") => {
            return Err(
                "the access token is empty; pass the token the admin gave you with --token".into(),
            )
        }
        t => t.map(probe_proto::auth::token_key),
    };
    let schedule = Schedule::from_args(args);
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

    // Reachability: both transports at once, so a fully blocked network is concluded in ~3 s.
    progress.show(&format!("probing UDP and TCP {addr}"));
    let udp_probe = async {
        if args.no_udp {
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
        if args.no_tcp {
            return None;
        }
        match TcpLink::connect(addr, token, TCP_CONNECT).await {
            Ok((mut link, ms)) => {
                let ok = link.stun(TCP_STUN).await.is_ok();
                Some((Some(link).filter(|_| ok), Some(ms), ok))
            }
            Err(e) => {
                tracing::info!("TCP {addr}: {e}");
                Some((None, None, false))
            }
        }
    };
    let (udp_p, tcp_p) = tokio::join!(udp_probe, tcp_probe);
    let (udp_sock, stun_answer) = udp_p.map_or((None, None), |(s, a)| (Some(s), a));
    let mut udp = UdpResult {
        reachable: stun_answer.is_some(),
        stun: StunResult {
            mapped: stun_answer.as_ref().map(|a| a.mapped.to_string()),
            rtt_ms: stun_answer.as_ref().map(|a| round3(a.rtt_ms)),
        },
        echo: None,
    };
    let (mut tcp_link, connect_ms, tcp_ok) = tcp_p.unwrap_or((None, None, false));
    let mut tcp = TcpResult {
        reachable: tcp_ok,
        connect_ms: connect_ms.map(round3),
        echo: None,
    };

    // Control: QUIC over the UDP port when UDP works, else framed messages on the TCP port.
    let mut extra: Vec<Finding> = Vec::new();
    let mut ctl = Ctl::None;
    let mut pin_seen = None;
    if udp.reachable {
        progress.show("opening the QUIC control channel");
        match QuicControl::connect(addr, pin.clone(), token, QUIC_CONNECT).await {
            Ok(q) => {
                pin_seen = q.pin_seen.clone();
                ctl = Ctl::Quic(q);
            }
            Err(QuicError::PinMismatch { seen }) => {
                return Err(format!(
                    "the server at {addr} presents certificate {seen}, not the pinned {} — this is another server, \
                     or probe-server's state directory was reset; ask the admin for the current pin",
                    pin.unwrap_or_default()
                ));
            }
            Err(QuicError::Failed(e)) => tracing::warn!("QUIC control channel failed: {e}"),
        }
    }
    if matches!(ctl, Ctl::None) {
        if let Some(link) = tcp_link.take() {
            ctl = Ctl::Tcp(link);
            if pin.is_some() {
                extra.push(Finding::new(
                    "pin_unverified",
                    Severity::Info,
                    "The control channel ran over plain TCP (UDP is blocked), so the server's certificate pin could not be checked.",
                    "Nothing to fix for the measurement; the pin is checked whenever UDP works.",
                ));
            }
        }
    }
    let nonce: [u8; 16] = crate::control::rand_bytes();
    let hello = padded(|pad| {
        Control::Hello(Hello {
            proto_min: PROTO_MIN,
            proto_max: PROTO_MAX,
            client_version: env!("CARGO_PKG_VERSION").into(),
            site: site.clone(),
            profile: schedule.profile,
            interval_us: schedule.mean_interval_us(),
            size: schedule.max_size(),
            duration_ms: schedule.duration.as_millis() as u32,
            pad,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            nonce,
        })
    });
    let mut refused: Option<Refused> = None;
    let mut welcome: Option<Welcome> = None;
    if !matches!(ctl, Ctl::None) {
        match ctl.request(&hello).await {
            Ok(Control::Welcome(w)) => welcome = Some(w),
            Ok(Control::Refused(r)) => refused = Some(r),
            Ok(other) => tracing::warn!("unexpected answer to hello: {other:?}"),
            Err(e) => tracing::warn!("hello failed: {e}"),
        }
    }
    if welcome.is_none() && refused.is_none() && (udp.reachable || tcp.reachable) {
        extra.push(Finding::new(
            "control_failed",
            Severity::Warning,
            "The server answered STUN but its control channel did not come up, so no echo test ran.",
            "Check that the port is served by probe-server (not another service) and that nothing in the path \
             inspects and drops QUIC; run again with -v for details.",
        ));
    }

    let mut udp_out: Option<EchoOutcome> = None;
    let mut tcp_out: Option<EchoOutcome> = None;
    let mut counters: Option<Counters> = None;
    let mut ice: Option<IceReport> = None;
    if let Some(w) = &welcome {
        let key = SessionKey::new(&w.key);
        let session = EchoSession {
            id: w.session_id,
            key: &key,
            schedule: &schedule,
            clock,
            progress: &progress,
        };
        if let (true, Some(sock)) = (udp.reachable, &udp_sock) {
            udp_out = Some(echo::udp_echo(sock, &session).await);
        }
        // The TCP echo and the ICE checks use different paths, so they run side by side: the
        // default run stays within ~12 s even when ICE has to wait out its deadline.
        let tcp_phase = async {
            if !tcp.reachable {
                return None;
            }
            let link = match &mut ctl {
                Ctl::Tcp(link) => Ok(link),
                // A fresh connection: the probe's one may have idled out during a long UDP phase.
                _ => match TcpLink::connect(addr, token, TCP_CONNECT).await {
                    Ok((l, _)) => Ok(tcp_link.insert(l)),
                    Err(e) => Err(e),
                },
            };
            Some(match link {
                Ok(link) => echo::tcp_echo(link, &session).await,
                Err(e) => EchoOutcome::failed(e),
            })
        };
        let ice_phase = async {
            let offer = w.ice.as_ref().filter(|_| opts.ice)?;
            Some(
                ice::run(ice::IceInputs {
                    offer,
                    dialed: addr,
                    host: &target.host,
                    udp_reachable: udp.reachable,
                    tcp_reachable: tcp.reachable,
                })
                .await,
            )
        };
        (tcp_out, ice) = tokio::join!(tcp_phase, ice_phase);
        progress.show("collecting the server's counters");
        let finish = padded(|pad| Control::Finish {
            session_id: w.session_id,
            pad,
        });
        match ctl.request(&finish).await {
            Ok(Control::Counters(c)) => counters = Some(c),
            other => tracing::warn!("final counters unavailable: {other:?}"),
        }
    }
    progress.clear();

    udp.echo = udp_out
        .as_ref()
        .map(|o| summary(o, counters.map(|c| (c.udp_rx, c.udp_tx))));
    tcp.echo = tcp_out
        .as_ref()
        .filter(|o| o.stats.sent() > 0)
        .map(|o| summary(o, counters.map(|c| (c.tcp_rx, c.tcp_tx))));
    let lost = match (&welcome, counters) {
        (Some(_), None) => Some(
            if udp_out.as_ref().is_some_and(EchoOutcome::stopped_midway) {
                "the UDP echo phase"
            } else if tcp_out.as_ref().is_some_and(EchoOutcome::stopped_midway) {
                "the TCP echo phase"
            } else {
                "the final exchange of counters"
            },
        ),
        _ => None,
    };
    let facts = Facts {
        server: &target.display(),
        port: target.port,
        udp_tested: !args.no_udp,
        tcp_tested: !args.no_tcp,
        udp: &udp,
        tcp: &tcp,
        server_lost: lost,
        refused: refused.as_ref(),
    };
    let mut findings = verdict::evaluate(&facts);
    findings.extend(extra);
    if let Some(n) = counters.map(|c| c.rate_limited).filter(|n| *n > 0) {
        findings.push(Finding::new(
            "server_rate_limited",
            Severity::Warning,
            format!(
                "The probe server left {n} echo packet(s) unanswered because of its own rate limits; they are \
                 counted neither as upstream nor as downstream loss."
            ),
            "Run with a longer --interval or fewer concurrent clients, or ask the admin to raise \
             --max-reply-pps / --min-interval on probe-server.",
        ));
    }
    if let Some(ice) = &ice {
        findings.extend(ice_verdict::evaluate(ice, &facts));
    }
    let mut report = Report {
        schema: report::SCHEMA,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        site,
        server: target.display(),
        started_at: report::rfc3339(started_ms),
        duration_ms: t0.elapsed().as_millis() as u64,
        ok: false,
        udp,
        tcp,
        findings: Vec::new(),
        server_version: welcome.as_ref().map(|w| w.server_version.clone()),
        server_pin: pin_seen,
        ice,
    };
    report.set_findings(findings);
    Ok(Finished {
        report,
        ctl,
        session: welcome.map(|w| w.session_id),
    })
}

/// Microsecond resolution is all a millisecond figure can honestly claim.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn summary(o: &EchoOutcome, server: Option<(u64, u64)>) -> EchoSummary {
    let mut s = o.stats.summary(server.map(|c| c.0), server.map(|c| c.1));
    s.jitter_ms = round3(s.jitter_ms);
    s.loss_up_pct = s.loss_up_pct.map(round3);
    s.loss_down_pct = s.loss_down_pct.map(round3);
    s
}

/// Builds a control message padded to [`CONTROL_PAD_TO`] bytes, so the server may answer it
/// without ever sending more than it received.
fn padded(make: impl Fn(Vec<u8>) -> Control) -> Control {
    let bare = make(Vec::new()).to_payload(None).len();
    // Two bytes of slack for the varint length prefix of the pad growing.
    make(vec![0; CONTROL_PAD_TO.saturating_sub(bare + 2)])
}
