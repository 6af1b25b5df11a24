//! One probe run as a state machine: the order of the phases, what each outcome leads to, and
//! the report assembled from what was gathered.
//!
//! ```text
//! Reach ──udp──▶ OpenQuic ──up──▶ Hello(Quic) ──welcome──▶ UdpEcho ─▶ TcpEchoAndIce ─▶ Counters ─▶ Done
//!   │              │ pin mismatch ─▶ Abort          │ refused / no answer ─▶ Done
//!   │              └─failed─┐                       │
//!   └──tcp only─────────────┴──▶ OpenTls ──up──▶ Hello(Tcp)
//!                                  │ pin mismatch ─▶ Abort; failed, or no TCP either ─▶ Done
//! ```
//!
//! The TCP fallback's control channel is TLS 1.3 on the TCP port with the QUIC certificate, so
//! the pin is checked there too and no session secret crosses in clear; STUN and echo stay
//! plain RFC 4571 frames, shaped like Calls' own ICE-TCP traffic.
//!
//! The shell asks [`Run::step`] what to do, does that IO, and hands the outcome to the matching
//! `on_*` method; [`Run::report`] then judges the facts.

use super::echo::EchoOutcome;
use super::schedule::Schedule;
use crate::catalog::FindingId;
use crate::ice_verdict;
use crate::msg::{Control, Counters, Hello, IceOffer, Refused, Welcome, PROTO_MAX, PROTO_MIN};
use crate::path::{self, cut, quiet::QuietOutcome};
use crate::report::{self, Finding, IceReport, Report, Severity, StunResult, TcpResult, UdpResult};
use crate::stats::EchoSummary;
use crate::verdict::{self, Facts};
use std::net::SocketAddr;

/// Control payloads are padded to this size so the server's answer is never larger.
pub const CONTROL_PAD_TO: usize = 1100;

/// What is known before any IO: the target and what the user asked to test.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `HOST:PORT` as the user named it.
    pub server: String,
    pub port: u16,
    /// The address the host name resolved to.
    pub dialed: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    /// Run the ICE checks when the server offers them (load mode does not).
    pub ice: bool,
    /// The certificate pin the user gave.
    pub pin: Option<String>,
    /// `--token` was given: every probe is signed with it, and answers must carry its MAC.
    pub token: bool,
}

/// What the reachability probes found.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The UDP STUN answer: mapped address and RTT in ms.
    pub udp_stun: Option<(SocketAddr, f64)>,
    /// The TCP connect time in ms, when the connection was made.
    pub tcp_connect_ms: Option<f64>,
    /// The STUN Binding over that connection was answered.
    pub tcp_stun_ok: bool,
    /// The UDP STUN requests drew "port unreachable" and no answer.
    pub udp_refused: bool,
    /// The TCP connect was refused (a reset or an ICMP unreachable).
    pub tcp_refused: bool,
}

/// How the QUIC control channel attempt (or the TLS one on the TCP port) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuicOutcome {
    Up { pin_seen: Option<String> },
    PinMismatch { seen: String },
    Failed,
}

/// How the hello on the control channel was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum HelloOutcome {
    Welcome(Box<Welcome>),
    Refused(Refused),
    /// No answer, or one that is not an answer to a hello.
    Failed,
    /// The answer carried no valid MAC of the token given: the server runs without a token or
    /// with another one, so the advice is about the token, not the path.
    BadTokenMac,
}

/// Why no session came up, for the finding's advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoControl {
    /// The channel or the hello failed: the port's owner or the path is in question.
    Channel,
    /// The server's answers carried no valid MAC of the token given.
    TokenMac,
}

/// Which connection carries the control messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Quic,
    /// A TLS connection to the TCP port, opened after the reachability probe's plain one.
    Tcp,
}

/// Which TCP connection carries the TCP echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEchoLink {
    /// A fresh plain connection, bound to the session by the echo MAC, never the TLS control
    /// one: RFC 4571 frames in clear are what Calls' ICE-TCP sends, so a middlebox that passes
    /// TLS but not those cannot make the echo pass where calls would fail.
    Fresh,
}

/// The IO the shell does next, with what it needs from the run so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'a> {
    /// UDP STUN and TCP connect + STUN, side by side, for the transports marked.
    Reach {
        udp: bool,
        tcp: bool,
    },
    OpenQuic,
    /// TLS to the TCP port, checking the pin as QUIC does.
    OpenTls,
    /// Send the hello on this channel.
    Hello(Channel),
    /// Echo over the UDP socket of the reachability probe, in this session.
    UdpEcho(&'a Welcome),
    /// The TCP echo and the ICE checks use different paths, so they run side by side.
    TcpEchoAndIce {
        session: &'a Welcome,
        tcp: Option<TcpEchoLink>,
        ice: Option<&'a IceOffer>,
    },
    /// Ask the server for its counters of the session.
    Counters {
        session_id: u64,
    },
    /// Nothing left to do: build the report.
    Done,
    /// The run cannot be carried out; the sentence says why.
    Abort(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Reach,
    Quic,
    Tls,
    Hello(Channel),
    UdpEcho,
    TcpEchoAndIce,
    Counters,
    Done,
    Abort(String),
}

/// What the report needs besides the run's facts.
#[derive(Debug, Clone)]
pub struct ReportMeta {
    pub tool_version: String,
    pub site: String,
    /// Wall clock at the start, ms since the Unix epoch.
    pub started_ms: u64,
    pub duration_ms: u64,
}

/// The state of one probe run.
#[derive(Debug)]
pub struct Run {
    plan: Plan,
    phase: Phase,
    udp: UdpResult,
    tcp: TcpResult,
    channel: Option<Channel>,
    pin_seen: Option<String>,
    /// Findings about the run itself, in the order they arose.
    extra: Vec<Finding>,
    welcome: Option<Welcome>,
    refused: Option<Refused>,
    udp_echo: Option<EchoOutcome>,
    tcp_echo: Option<EchoOutcome>,
    ice: Option<IceReport>,
    counters: Option<Counters>,
    /// TCP connected but nothing answered a probe: the TLS channel is opened only to learn
    /// whether a probe-server that wants another token (or one) is what stays silent.
    silent: bool,
}

impl Run {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            phase: Phase::Reach,
            udp: UdpResult::default(),
            tcp: TcpResult::default(),
            channel: None,
            pin_seen: None,
            extra: Vec::new(),
            welcome: None,
            refused: None,
            udp_echo: None,
            tcp_echo: None,
            ice: None,
            counters: None,
            silent: false,
        }
    }

    /// The IO to do now. Repeats until the matching `on_*` call moves the run on.
    pub fn step(&self) -> Step<'_> {
        let w = self.welcome.as_ref();
        match (&self.phase, w) {
            (Phase::Reach, _) => Step::Reach {
                udp: self.plan.udp,
                tcp: self.plan.tcp,
            },
            (Phase::Quic, _) => Step::OpenQuic,
            (Phase::Tls, _) => Step::OpenTls,
            (Phase::Hello(c), _) => Step::Hello(*c),
            (Phase::UdpEcho, Some(w)) => Step::UdpEcho(w),
            (Phase::TcpEchoAndIce, Some(w)) => Step::TcpEchoAndIce {
                session: w,
                tcp: self.tcp_echo_link(),
                ice: self.ice_offer(),
            },
            (Phase::Counters, Some(w)) => Step::Counters {
                session_id: w.session_id,
            },
            // The echo phases are only entered with a session; without one there is nothing
            // left but the report.
            (Phase::Done | Phase::UdpEcho | Phase::TcpEchoAndIce | Phase::Counters, _) => {
                Step::Done
            }
            (Phase::Abort(why), _) => Step::Abort(why),
        }
    }

    pub fn on_reach(&mut self, r: Reach) {
        self.udp = UdpResult {
            reachable: r.udp_stun.is_some(),
            stun: StunResult {
                mapped: r.udp_stun.map(|(a, _)| a.to_string()),
                rtt_ms: r.udp_stun.map(|(_, ms)| round3(ms)),
            },
            echo: None,
            skipped: !self.plan.udp,
            refused: r.udp_refused && r.udp_stun.is_none(),
        };
        self.tcp = TcpResult {
            reachable: r.tcp_stun_ok,
            connect_ms: r.tcp_connect_ms.map(round3),
            echo: None,
            skipped: !self.plan.tcp,
            refused: r.tcp_refused && r.tcp_connect_ms.is_none(),
        };
        // QUIC over the UDP port when UDP works, else control messages on the TCP port.
        self.phase = if self.udp.reachable {
            Phase::Quic
        } else {
            self.control_over_tcp()
        };
    }

    pub fn on_quic(&mut self, q: QuicOutcome) {
        self.phase = match q {
            QuicOutcome::Up { pin_seen } => {
                self.pin_seen = pin_seen;
                self.channel = Some(Channel::Quic);
                Phase::Hello(Channel::Quic)
            }
            QuicOutcome::PinMismatch { seen } => self.pin_mismatch(&seen),
            // Asked only to learn who is silent: nothing more to try.
            QuicOutcome::Failed if self.silent => self.no_control(NoControl::Channel),
            QuicOutcome::Failed => self.control_over_tcp(),
        };
    }

    /// How the TLS connection for control on the TCP port ended.
    pub fn on_tls(&mut self, t: QuicOutcome) {
        self.phase = match t {
            QuicOutcome::Up { pin_seen } => {
                self.pin_seen = pin_seen;
                self.channel = Some(Channel::Tcp);
                Phase::Hello(Channel::Tcp)
            }
            QuicOutcome::PinMismatch { seen } => self.pin_mismatch(&seen),
            QuicOutcome::Failed => self.no_control(NoControl::Channel),
        };
    }

    fn pin_mismatch(&self, seen: &str) -> Phase {
        Phase::Abort(format!(
            "the server at {} presents certificate {seen}, not the pinned {} — this is another server, \
             or probe-server's state directory was reset; ask the admin for the current pin",
            self.plan.dialed,
            self.plan.pin.as_deref().unwrap_or_default()
        ))
    }

    pub fn on_hello(&mut self, h: HelloOutcome) {
        self.phase = match h {
            HelloOutcome::Welcome(w) => {
                self.welcome = Some(*w);
                if self.udp.reachable {
                    Phase::UdpEcho
                } else {
                    self.after_udp_echo()
                }
            }
            HelloOutcome::Refused(r) => {
                self.refused = Some(r);
                Phase::Done
            }
            // A probe-server (it agreed on the probe's TLS protocol) ignored our signed STUN
            // and now our hello: the token is the cause, not the path.
            HelloOutcome::Failed | HelloOutcome::BadTokenMac if self.silent => {
                Phase::Abort(self.token_refused())
            }
            HelloOutcome::Failed => self.no_control(NoControl::Channel),
            HelloOutcome::BadTokenMac => self.no_control(NoControl::TokenMac),
        };
    }

    fn token_refused(&self) -> String {
        let pinned = if self.plan.pin.is_some() && self.pin_seen.is_some() {
            " (its certificate matches the pin)"
        } else {
            ""
        };
        let server = self.plan.dialed;
        if self.plan.token {
            format!(
                "the server at {server} is a probe-server{pinned}, but it ignores probes signed with the token \
                 given: the token is wrong, or the server now runs with another; ask the admin for the current token"
            )
        } else {
            format!(
                "the server at {server} is a probe-server{pinned} that requires an access token: run again with \
                 --token (or PROBE_TOKEN) and the token the admin gives you"
            )
        }
    }

    /// The UDP echo's outcome (`None` if it could not run).
    pub fn on_udp_echo(&mut self, o: Option<EchoOutcome>) {
        self.udp_echo = o;
        self.phase = self.after_udp_echo();
    }

    /// The TCP echo's outcome (if it ran) and the ICE report (if the checks ran).
    pub fn on_tcp_echo_and_ice(&mut self, tcp: Option<EchoOutcome>, ice: Option<IceReport>) {
        self.tcp_echo = tcp;
        self.ice = ice;
        self.phase = Phase::Counters;
    }

    /// The server's counters, `None` when it did not answer.
    pub fn on_counters(&mut self, c: Option<Counters>) {
        self.counters = c;
        self.phase = Phase::Done;
    }

    /// The session the server opened, once welcomed.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// The transports the user asked to test (`--no-udp`, `--no-tcp` leave one out).
    pub fn tested(&self) -> (bool, bool) {
        (self.plan.udp, self.plan.tcp)
    }

    pub fn udp_reachable(&self) -> bool {
        self.udp.reachable
    }

    pub fn tcp_reachable(&self) -> bool {
        self.tcp.reachable
    }

    /// Without a working QUIC channel, control runs inside TLS on the TCP port if TCP works.
    /// When TCP connected but nothing answered, TLS still asks who is there: a probe-server
    /// completes its handshake without the token, and only then refuses the hello.
    fn control_over_tcp(&mut self) -> Phase {
        if self.tcp.reachable {
            return Phase::Tls;
        }
        if !self.udp.reachable && self.tcp.connect_ms.is_some() {
            self.silent = true;
            return Phase::Tls;
        }
        // No TCP to ask (--no-tcp, or blocked) but a token given: QUIC needs no token either, so
        // a probe-server that ignores ours still completes its handshake. Only with a token, so
        // a fully blocked path without one costs no QUIC timeout.
        if !self.udp.reachable && self.plan.udp && self.plan.token && !self.udp.refused {
            self.silent = true;
            return Phase::Quic;
        }
        self.no_control(NoControl::Channel)
    }

    /// No session: the server answered STUN but its control channel did not, or nothing did.
    fn no_control(&mut self, why: NoControl) -> Phase {
        if self.udp.reachable || self.tcp.reachable {
            self.extra.push(control_failed(why));
        }
        Phase::Done
    }

    fn after_udp_echo(&self) -> Phase {
        if self.tcp_echo_link().is_some() || self.ice_offer().is_some() {
            Phase::TcpEchoAndIce
        } else {
            Phase::Counters
        }
    }

    fn tcp_echo_link(&self) -> Option<TcpEchoLink> {
        self.tcp.reachable.then_some(TcpEchoLink::Fresh)
    }

    fn ice_offer(&self) -> Option<&IceOffer> {
        self.welcome
            .as_ref()
            .and_then(|w| w.ice.as_ref())
            .filter(|_| self.plan.ice)
    }

    /// The phase in which the server stopped answering, when the final counters never came.
    fn server_lost(&self) -> Option<&'static str> {
        if self.welcome.is_none() || self.counters.is_some() {
            return None;
        }
        let stopped = |o: &Option<EchoOutcome>| o.as_ref().is_some_and(EchoOutcome::stopped_midway);
        Some(if stopped(&self.udp_echo) {
            "the UDP echo phase"
        } else if stopped(&self.tcp_echo) {
            "the TCP echo phase"
        } else {
            crate::verdict::LOST_AT_COUNTERS
        })
    }

    /// The path checks of issue 13: a flow cut mid-run and the quiet-period test on each echo
    /// phase long enough for them, and the hairpin check on the ICE results.
    fn path_findings(&self, c: Option<&Counters>, findings: &mut Vec<Finding>) {
        let mapped: Option<SocketAddr> =
            self.udp.stun.mapped.as_deref().and_then(|m| m.parse().ok());
        let port = self.plan.port;
        if let Some(o) = &self.udp_echo {
            let out = path_checks(o, "udp", port, c.map(|c| c.udp_rx), mapped);
            if out.iter().any(|f| f.is(FindingId::PathCutAfter)) {
                // The loss is the cut's; the cut finding states the loss before it.
                findings.retain(|f| !f.is(FindingId::PacketLoss));
            }
            findings.extend(out);
        }
        if let Some(o) = self.tcp_echo.as_ref().filter(|o| o.broken.is_none()) {
            findings.extend(path_checks(o, "tcp", port, c.map(|c| c.tcp_rx), None));
        }
        let hairpin = self
            .ice
            .as_ref()
            .and_then(|ice| path::hairpin::judge(mapped, ice));
        if let Some(f) = hairpin.as_ref().and_then(path::findings::hairpin) {
            // The client's public address is the advertised one: the override is right for
            // everyone outside, so "set it to the address you dialled" would be wrong advice.
            let same = hairpin.is_some_and(|h| h.relation == path::hairpin::Relation::SameAddress);
            if same && f.is(FindingId::HairpinFails) {
                findings.retain(|f| !f.is(FindingId::IceHostOverrideWrong));
            }
            findings.push(f);
        }
    }

    /// Judges the gathered facts and assembles the report.
    pub fn report(self, meta: ReportMeta) -> Report {
        let mut udp = self.udp.clone();
        let mut tcp = self.tcp.clone();
        let c = self.counters;
        udp.echo = self
            .udp_echo
            .as_ref()
            .map(|o| summary(o, c.map(|c| (c.udp_rx, c.udp_tx))));
        tcp.echo = self
            .tcp_echo
            .as_ref()
            .filter(|o| o.stats.sent() > 0)
            .map(|o| summary(o, c.map(|c| (c.tcp_rx, c.tcp_tx))));
        let facts = Facts {
            server: &self.plan.server,
            port: self.plan.port,
            udp_tested: self.plan.udp,
            tcp_tested: self.plan.tcp,
            udp: &udp,
            tcp: &tcp,
            server_lost: self.server_lost(),
            refused: self.refused.as_ref(),
            token_given: self.plan.token,
        };
        let mut findings = verdict::evaluate(&facts);
        findings.extend(self.extra.iter().cloned());
        if let Some(n) = c.map(|c| c.rate_limited).filter(|n| *n > 0) {
            findings.push(server_rate_limited(n));
        }
        if let Some(ice) = &self.ice {
            findings.extend(ice_verdict::evaluate(ice, &facts));
        }
        self.path_findings(c.as_ref(), &mut findings);
        let mut report = Report {
            schema: report::SCHEMA,
            tool_version: meta.tool_version,
            site: meta.site,
            server: self.plan.server.clone(),
            started_at: report::rfc3339(meta.started_ms),
            duration_ms: meta.duration_ms,
            ok: false,
            udp,
            tcp,
            findings: Vec::new(),
            server_version: self.welcome.as_ref().map(|w| w.server_version.clone()),
            server_pin: self.pin_seen,
            ice: self.ice,
            turn: None,
            mtu: None,
            live: false,
            browser: None,
        };
        report.set_findings(findings);
        report
    }
}

/// An error, as the catalog has it: only STUN was tested, so the run must not pass.
fn control_failed(why: NoControl) -> Finding {
    match why {
        NoControl::Channel => Finding::new(
            FindingId::ControlFailed,
            Severity::Error,
            "The server answered STUN but its control channel did not come up, so no echo test ran.",
            "Check that the port is served by probe-server (not another service), that nothing in the path \
             inspects and drops QUIC (UDP) or TLS (TCP), and, when UDP is blocked, that probe-server is as \
             new as this client (older ones have no TLS on their TCP port); run again with -v for details.",
        ),
        NoControl::TokenMac => Finding::new(
            FindingId::ControlFailed,
            Severity::Error,
            "The server answered STUN, but its answers on the control channel carry no valid MAC of the token \
             given, so no session opened and no echo test ran.",
            "This probe-server runs without --token or with another token: run without --token, or ask the \
             admin for the current one.",
        ),
    }
}

fn server_rate_limited(n: u64) -> Finding {
    Finding::new(
        FindingId::ServerRateLimited,
        Severity::Warning,
        format!(
            "The probe server left {n} echo packet(s) unanswered because of its own rate limits; they are \
             counted neither as upstream nor as downstream loss."
        ),
        "Run with a longer --interval or fewer concurrent clients, or ask the admin to raise \
         --max-reply-pps / --min-interval on probe-server.",
    )
}

/// One echo phase's path checks: the quiet-period test when one was kept, the cut check on
/// phases of [`cut::MIN_RUN_US`] or more, and `path_held` when they ran and found nothing.
fn path_checks(
    o: &EchoOutcome,
    transport: &str,
    port: u16,
    final_rx: Option<u64>,
    mapped_before: Option<SocketAddr>,
) -> Vec<Finding> {
    let quiet_us = o.quiet.map_or(0, |w| w.until_us - w.from_us);
    let long = o.planned_us.saturating_sub(quiet_us) >= cut::MIN_RUN_US;
    if (!long && o.quiet.is_none()) || o.stats.received() == 0 {
        return Vec::new();
    }
    let tl = o.stats.timeline();
    let q = o
        .quiet
        .and_then(|w| path::quiet::judge(&tl, w, mapped_before, o.mapped_after));
    let mut out = Vec::new();
    if let Some(f) =
        q.and_then(|q| path::findings::quiet(q, quiet_us, mapped_before, o.mapped_after))
    {
        out.push(f);
    }
    let run_us = o.sending_ended_us.saturating_sub(o.started_us);
    if long && q != Some(QuietOutcome::NoReplies) {
        if let Some(c) = cut::detect(&tl, &o.server_samples, final_rx) {
            out.push(path::findings::cut(
                transport,
                port,
                &c,
                run_us,
                final_rx.is_some(),
            ));
        }
    }
    let quiet_held =
        (q == Some(QuietOutcome::Held)).then_some((quiet_us, o.mapped_after.or(mapped_before)));
    if out.is_empty() && (long || quiet_held.is_some()) {
        out.push(path::findings::held(transport, run_us, quiet_held));
    }
    out
}

/// Microsecond resolution is all a millisecond figure can honestly claim.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn summary(o: &EchoOutcome, server: Option<(u64, u64)>) -> EchoSummary {
    let mut s = o.stats.summary(server.map(|c| c.0), server.map(|c| c.1));
    s.jitter_ms = round3(s.jitter_ms);
    s.loss_up_pct = s.loss_up_pct.map(round3);
    s.loss_down_pct = s.loss_down_pct.map(round3);
    s
}

/// The hello of a session: the planned traffic, so the server can refuse what its limits do
/// not allow. `time_ms` (wall clock) and `nonce` (random) come from the shell.
pub fn hello(
    client_version: &str,
    site: &str,
    schedule: &Schedule,
    time_ms: u64,
    nonce: [u8; 16],
) -> Control {
    padded(|pad| {
        Control::Hello(Hello {
            proto_min: PROTO_MIN,
            proto_max: PROTO_MAX,
            client_version: client_version.into(),
            site: site.into(),
            profile: schedule.profile,
            interval_us: schedule.mean_interval_us(),
            size: schedule.max_size(),
            duration_ms: schedule.duration.as_millis() as u32,
            pad,
            time_ms,
            nonce,
        })
    })
}

/// The end of sending, asking for the server's counters.
pub fn finish(session_id: u64) -> Control {
    padded(|pad| Control::Finish { session_id, pad })
}

/// Builds a control message padded to [`CONTROL_PAD_TO`] bytes, so the server may answer it
/// without ever sending more than it received.
fn padded(make: impl Fn(Vec<u8>) -> Control) -> Control {
    let bare = make(Vec::new()).to_payload(None).len();
    // Two bytes of slack for the varint length prefix of the pad growing.
    make(vec![0; CONTROL_PAD_TO.saturating_sub(bare + 2)])
}

/// The checks on the arguments that need no IO, in the order the user should hear about them;
/// returns the token's key.
pub fn check_transports_and_token(
    no_udp: bool,
    no_tcp: bool,
    token: Option<&str>,
) -> Result<Option<[u8; 32]>, String> {
    if no_udp && no_tcp {
        return Err(
            "--no-udp and --no-tcp together leave nothing to test; drop one of them".into(),
        );
    }
    match token.map(str::trim) {
        Some("") => {
            Err("the access token is empty; pass the token the admin gave you with --token".into())
        }
        t => Ok(t.map(crate::auth::token_key)),
    }
}
