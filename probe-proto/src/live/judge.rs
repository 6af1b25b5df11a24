//! The client's live-mode report, from what its probes learnt: the same verdict rules as the
//! normal probe ([`crate::verdict`], [`crate::ice_verdict`]) plus `tcp_intercepted`. Pure.

use super::packet::TcpSeen;
use super::HelloInfo;
use crate::catalog::FindingId;
use crate::msg::Transport;
use crate::report::{
    AdvertisedCandidate, Finding, IceReport, PairResult, Report, Severity, TcpResult, UdpResult,
};
use crate::stats::EchoSummary;
use crate::verdict::Facts;
use crate::{ice_verdict, report, rtcd, verdict};
use std::net::{IpAddr, SocketAddr};

/// The live echo toward one address on RTCD's port.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// One of the addresses RTCD advertises (else: the address the user named).
    pub advertised: bool,
    pub summary: EchoSummary,
    /// The local address of RTCD's host the requests arrived at, from the replies.
    pub arrived_at: Option<IpAddr>,
}

/// The TCP probe: connect to RTCD's TCP port, one frame carrying the nonce, close.
#[derive(Debug, Clone, Default)]
pub struct TcpProbe {
    pub nonce: u64,
    pub connected: bool,
    pub connect_ms: Option<f64>,
    /// The tap's record, when the query was answered (`Some(None)`: answered, never seen).
    pub answer: Option<Option<TcpSeen>>,
}

/// Everything the live run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub server: String,
    pub dialed: SocketAddr,
    pub hello: HelloInfo,
    pub targets: Vec<Target>,
    pub tcp: TcpProbe,
    pub udp_tested: bool,
    pub tcp_tested: bool,
}

pub struct Meta {
    pub tool_version: String,
    pub site: String,
    pub started_ms: u64,
    pub duration_ms: u64,
}

/// `tcp_intercepted`: the connection was accepted, yet the tap saw our segment never, or from
/// another address than the one it sees this client's UDP from.
pub fn tcp_intercepted(o: &Outcome) -> Option<Finding> {
    if !o.tcp.connected {
        return None;
    }
    let port = o.hello.rtcd_port_tcp;
    let seen = o.tcp.answer.as_ref()?;
    // Never arrived: whatever accepted the connection is not RTCD. Arrived from elsewhere: a
    // relaying proxy, through which ICE-TCP may or may not survive.
    let (severity, what, so) = match (seen, o.hello.seen_from) {
        (None, _) => (
            Severity::Error,
            "never reached RTCD's host".to_string(),
            "ICE-TCP (the fallback when UDP is blocked) cannot reach RTCD",
        ),
        (Some(s), Some(udp_from)) if s.from != udp_from => (
            Severity::Warning,
            format!(
                "reached RTCD's host from {} while this client's UDP arrives from {udp_from}",
                s.from
            ),
            "ICE-TCP (the fallback when UDP is blocked) depends on that proxy relaying RFC 4571 media untouched",
        ),
        _ => return None,
    };
    Some(Finding::new(
        FindingId::TcpIntercepted,
        severity,
        format!(
            "TCP {port} connected, but the probe's segment {what}: a transparent proxy or middlebox \
             answers for RTCD, so {so}."
        ),
        format!(
            "Exempt TCP {port} to RTCD from the transparent proxy / TCP inspection on this network or \
             in front of RTCD's host (look for a REDIRECT/TPROXY rule or a proxy appliance)."
        ),
    ))
}

/// The ICE part: RTCD's advertised candidates, each UDP one judged by whether the live echo
/// sent to it was answered, each TCP one by whether the TCP probe reached RTCD's host.
fn ice_report(o: &Outcome) -> IceReport {
    // The TCP candidate counts as answered when the probe's segment reached RTCD's host at all
    // (through a relaying proxy too: tcp_intercepted says so); never arrived is a failure.
    let tcp_ok = matches!(&o.tcp.answer, Some(Some(_)));
    let mut pairs = Vec::new();
    let advertised = o
        .hello
        .candidates
        .iter()
        .map(|c| {
            let addr = SocketAddr::new(c.address, c.port);
            let (ok, rtt, detail) = match c.protocol {
                Transport::Udp => {
                    let t = o.targets.iter().find(|t| t.addr == addr);
                    let got = t.is_some_and(|t| t.summary.received > 0);
                    let rtt = t.and_then(|t| t.summary.rtt_ms.map(|r| r.p50));
                    let why = match not_dialled(c.address, o.dialed.ip()) {
                        Some(w) => format!("not dialled: {w}"),
                        None => "no live echo answer from this address".to_string(),
                    };
                    (got, rtt, (!got).then_some(why))
                }
                Transport::Tcp => {
                    let same_port = addr.port() == o.hello.rtcd_port_tcp;
                    let ok = tcp_ok && same_port && c.address == o.dialed.ip();
                    (
                        ok,
                        o.tcp.connect_ms,
                        (!ok).then(|| "TCP probe not seen at this address".to_string()),
                    )
                }
            };
            pairs.push(PairResult {
                remote: addr.to_string(),
                protocol: c.protocol,
                ok,
                rtt_ms: rtt,
                detail,
            });
            AdvertisedCandidate {
                address: c.address.to_string(),
                port: c.port,
                protocol: c.protocol,
                private: rtcd::is_private(c.address),
                source: c.source,
            }
        })
        .collect();
    let ov = o.hello.override_value.clone();
    let mut ice = IceReport {
        advertised,
        rtcd_port: o.hello.rtcd_port_udp,
        probe_port: o.hello.rtcd_port_udp,
        dialed: o.dialed.to_string(),
        override_value: (!ov.is_empty()).then_some(ov),
        override_form: o.hello.override_form.clone(),
        pairs,
        agent_state: "live mode: no ICE agent, live echo to each advertised address".into(),
        deployment: o.hello.deployment.clone(),
        dialed_checks: o
            .targets
            .iter()
            .filter(|t| !t.advertised)
            .map(|t| PairResult {
                remote: t.addr.to_string(),
                protocol: Transport::Udp,
                ok: t.summary.received > 0,
                rtt_ms: t.summary.rtt_ms.map(|r| r.p50),
                detail: None,
            })
            .collect(),
        ..IceReport::default()
    };
    ice.ok = ice_verdict::ice_ok(&ice, udp_reachable(o), o.tcp.connected);
    ice
}

fn answered_hello(o: &Outcome) -> bool {
    o.hello.seen_from.is_some()
}

fn udp_reachable(o: &Outcome) -> bool {
    // The hello itself crossed the path both ways.
    o.targets.iter().any(|t| t.summary.received > 0) || o.hello.seen_from.is_some()
}

/// The echo shown as the UDP result: toward the address the user named, else the first
/// advertised one that answered.
fn main_echo(o: &Outcome) -> Option<EchoSummary> {
    let dialed = o.targets.iter().find(|t| t.addr.ip() == o.dialed.ip());
    let answered = o.targets.iter().find(|t| t.summary.received > 0);
    dialed
        .filter(|t| t.summary.received > 0)
        .or(answered)
        .or(dialed)
        .map(|t| t.summary.clone())
}

pub fn report(o: &Outcome, meta: Meta) -> Report {
    let udp = UdpResult {
        reachable: udp_reachable(o),
        stun: Default::default(),
        echo: main_echo(o),
        skipped: !o.udp_tested,
        refused: false,
    };
    let tcp = TcpResult {
        reachable: o.tcp.connected,
        connect_ms: o.tcp.connect_ms,
        echo: None,
        skipped: !o.tcp_tested,
        refused: false,
    };
    // Without a hello (UDP blocked) nothing is known of RTCD's candidates.
    let ice = answered_hello(o).then(|| ice_report(o));
    let facts = Facts {
        server: &o.server,
        port: o.hello.rtcd_port_udp,
        udp_tested: o.udp_tested,
        tcp_tested: o.tcp_tested,
        udp: &udp,
        tcp: &tcp,
        server_lost: None,
        refused: None,
        token_given: false,
    };
    let mut findings = verdict::evaluate(&facts);
    if let Some(ice) = &ice {
        findings.extend(ice_verdict::evaluate(ice, &facts));
    }
    findings.extend(tcp_intercepted(o));
    let mut r = Report {
        schema: report::SCHEMA,
        tool_version: meta.tool_version,
        site: meta.site,
        server: o.server.clone(),
        started_at: report::rfc3339(meta.started_ms),
        duration_ms: meta.duration_ms,
        ok: false,
        udp,
        tcp,
        findings: Vec::new(),
        server_version: None,
        server_pin: None,
        ice,
        turn: None,
        mtu: None,
        live: true,
        browser: None,
    };
    r.set_findings(findings);
    r
}

/// The lines the text report starts with in live mode (the hello was answered), and what to
/// look for when the TCP result could not be fetched: the nonce in `probe-server live`'s output.
pub fn banner(o: &Outcome) -> Vec<String> {
    let mut out = vec!["live: RTCD was running; tested its own port".to_string()];
    for t in &o.targets {
        let at = t
            .arrived_at
            .map(|a| format!(" (arrived at {a})"))
            .unwrap_or_default();
        out.push(format!(
            "live: udp {}{}: {} of {} answered{at}",
            t.addr,
            if t.advertised { " advertised" } else { "" },
            t.summary.received,
            t.summary.sent
        ));
    }
    if o.tcp.connected && o.tcp.answer.is_none() {
        out.push(format!(
            "live: TCP connected but its record could not be fetched over UDP: look for tcp {:016x} in probe-server live's output",
            o.tcp.nonce
        ));
    }
    out
}

/// No probe server answered over UDP, yet the port accepts TCP as RTCD does: the TCP probe
/// went out, and only `probe-server live`'s output can say whether it reached RTCD's host.
pub fn tcp_only_banner(port: u16, nonce: u64) -> Vec<String> {
    vec![
        format!(
            "live: nothing answered over UDP {port}, but TCP {port} accepts connections as RTCD does (no probe-server there)."
        ),
        format!(
            "live: if `probe-server live` runs beside RTCD, look for `tcp {:016x}` in its output: there, TCP reaches \
             RTCD and UDP is blocked; absent, something else answered the TCP connection.",
            nonce
        ),
    ]
}

/// Why an advertised address is reported but never sent to, if it is not: the same rule as the
/// normal probe's ICE check (probe-client ice/mod.rs `not_dialled`): loopback, link-local and
/// the like would point the client at itself, unless the user dialled that scope.
pub fn not_dialled(ip: IpAddr, dialed: IpAddr) -> Option<&'static str> {
    let (ip, dialed) = (ip.to_canonical(), dialed.to_canonical());
    let link_local = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    match ip {
        _ if ip.is_loopback() && dialed.is_loopback() => None,
        _ if link_local(ip) && link_local(dialed) => None,
        _ if ip.is_loopback() => Some("loopback address"),
        _ if ip.is_unspecified() => Some("unspecified address"),
        _ if ip.is_multicast() => Some("multicast address"),
        _ if link_local(ip) => Some("link-local address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast address"),
        _ => None,
    }
}
