//! The client's report: the JSON contract (schema 1) that network teams' scripts rely on, and
//! its human rendering. Fields are only ever added; existing ones keep their meaning.

use crate::catalog::FindingId;
use crate::msg::{CandidateSource, Transport};
use crate::stats::EchoSummary;
use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing the probe found: what is wrong, and the setting or action that fixes it.
///
/// `id` is a [`FindingId`]'s string: code names findings by the catalog's enum, the report keeps
/// the string so reports from other versions (the store, `compare`) load whatever ids they name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub summary: String,
    pub fix: String,
    /// What the path checks measured (issue 13), on the finding they explain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Box<crate::path::PathFacts>>,
}

impl Finding {
    pub fn new(
        id: impl AsRef<str>,
        severity: Severity,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id: id.as_ref().to_owned(),
            severity,
            summary: summary.into(),
            fix: fix.into(),
            path: None,
        }
    }

    /// Attaches the path checks' measurements.
    pub fn with_path(mut self, facts: crate::path::PathFacts) -> Self {
        self.path = Some(Box::new(facts));
        self
    }

    /// Whether this is the finding `id`.
    pub fn is(&self, id: FindingId) -> bool {
        self.id == id.as_str()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StunResult {
    pub mapped: Option<String>,
    pub rtt_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpResult {
    pub reachable: bool,
    pub stun: StunResult,
    pub echo: Option<EchoSummary>,
    /// Not tested (`--no-udp`): `reachable` false says nothing about the path. Omitted
    /// (false) when UDP was tested, so reports of earlier versions read the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// The host, or a firewall rejecting the port, answered "port unreachable": nothing
    /// listens there. Omitted (false) for silence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpResult {
    pub reachable: bool,
    pub connect_ms: Option<f64>,
    pub echo: Option<EchoSummary>,
    /// Not tested (`--no-tcp`); see [`UdpResult::skipped`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// The connection was refused (a reset, or an ICMP unreachable): the host, or a firewall
    /// rejecting the port, says nothing listens there. Omitted (false) for silence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// One host candidate the server advertised on RTCD's behalf, as the client judged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdvertisedCandidate {
    pub address: String,
    pub port: u16,
    pub protocol: Transport,
    /// RFC 1918, RFC 6598, ULA, loopback or link-local: unreachable from outside.
    pub private: bool,
    pub source: CandidateSource,
}

/// The outcome of ICE checks toward one remote address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairResult {
    pub remote: String,
    pub protocol: Transport,
    /// A check sent to exactly this `IP:PORT` got a valid (integrity-checked) response.
    pub ok: bool,
    pub rtt_ms: Option<f64>,
    /// Why the check failed ("no answer within 2.5 s", "connection refused", …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One candidate pair as the ICE agent itself saw it (what a browser's stats would show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPair {
    pub local: String,
    pub remote: String,
    /// "host", "srflx", "prflx" or "relay": a "prflx" remote was learnt from the far side's own
    /// checks and proves nothing about the advertised candidates.
    pub remote_type: String,
    pub state: String,
    pub nominated: bool,
    pub rtt_ms: Option<f64>,
}

/// The ICE host-override check (`"ice"` in the JSON report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IceReport {
    pub advertised: Vec<AdvertisedCandidate>,
    /// The port RTCD itself advertises (the probe may run on another one).
    pub rtcd_port: u16,
    /// The port the probe server listens on.
    #[serde(default)]
    pub probe_port: u16,
    /// The address the client reached the server at, after its own DNS resolution.
    pub dialed: String,
    /// `ice_host_override` as configured on the server; null when empty.
    #[serde(rename = "override")]
    pub override_value: Option<String>,
    /// "none", "ip", "hostname" or "pairs".
    pub override_form: String,
    /// A hostname override as the server resolved it, and as this client resolves it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_resolved_server: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_resolved_client: Vec<String>,
    pub pairs: Vec<PairResult>,
    /// What the ICE agent itself concluded ("connected", "failed", …); not proof on its own.
    #[serde(default)]
    pub agent_state: String,
    /// Every transport the probe reached has an advertised candidate that answered.
    pub ok: bool,
    /// The same checks sent to the address the client dialed, when it is not advertised: tells
    /// "the server answers ICE, just not where it says" from "ICE does not work at all".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dialed_checks: Vec<PairResult>,
    /// The ICE agent's candidate pairs and the pair it selected, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_pairs: Vec<AgentPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_selected: Option<AgentPair>,
    /// The pion/ice rules the server computed the candidates with (servers since proto 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pion_rules: Option<crate::rtcd::PionRules>,
    /// What RTCD's `ice_address_*` filter makes it drop ("override" or "stun"), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_ignores: Option<crate::rtcd::FilterIgnores>,
    /// RTCD's `ice_address_udp` / `ice_address_tcp` as the server read them (empty: unset).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ice_address_udp: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ice_address_tcp: String,
    /// TURN URLs RTCD relays through (server-side TURN): host candidates are not its only way in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relay_servers: Vec<String>,
    /// Whose settings the verdicts name (servers since proto 4); omitted for RTCD.
    #[serde(default, skip_serializing_if = "crate::calls::Deployment::is_rtcd")]
    pub deployment: crate::calls::Deployment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub tool_version: String,
    pub site: String,
    pub server: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub ok: bool,
    pub udp: UdpResult,
    pub tcp: TcpResult,
    pub findings: Vec<Finding>,
    /// The server's version, when the control channel came up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The certificate pin the server presented on the QUIC control channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pin: Option<String>,
    /// The ICE host-override check; null when no session could be opened.
    #[serde(default)]
    pub ice: Option<IceReport>,
    /// The TURN check (`--turn` or `--mattermost`); absent when not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<crate::turn::TurnReport>,
    /// Path MTU both ways on the media 5-tuple (issue 13); absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<crate::path::mtu::MtuReport>,
    /// Live mode: `probe-server live` answered beside a running RTCD, so the figures are for
    /// RTCD's own port (omitted, i.e. false, for the normal probe).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
    /// The browser test page (issue 17): what the browser itself saw; absent from
    /// `probe-client`'s reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<crate::web::BrowserReport>,
}

impl Report {
    /// Sets the findings and derives `ok` from them, so the two can never disagree.
    pub fn set_findings(&mut self, findings: Vec<Finding>) {
        self.ok = !findings.iter().any(|f| f.severity == Severity::Error);
        self.findings = findings;
    }

    /// The report as a server speaking `proto` can take: without the fields it does not know
    /// (it refuses a report with unknown fields). What the fields said stays in the findings'
    /// words.
    pub fn for_proto(&self, proto: u16) -> std::borrow::Cow<'_, Report> {
        if proto >= 6 {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut r = self.clone();
        (r.udp.skipped, r.udp.refused) = (false, false);
        (r.tcp.skipped, r.tcp.refused) = (false, false);
        std::borrow::Cow::Owned(r)
    }

    /// Exit code of a completed run: 1 when any finding is an error.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            0
        } else {
            1
        }
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |p| format!("{p:.1} %"))
}

fn echo_lines(out: &mut String, e: &EchoSummary) {
    out.push_str(&format!(
        "     sent {}  received {}  loss up {}  down {}\n",
        e.sent,
        e.received,
        opt_pct(e.loss_up_pct),
        opt_pct(e.loss_down_pct)
    ));
    match &e.rtt_ms {
        Some(r) => out.push_str(&format!(
            "     RTT ms  min {}  p50 {}  p95 {}  p99 {}  max {}   jitter {} ms  reordered {}  duplicates {}\n",
            ms(r.min),
            ms(r.p50),
            ms(r.p95),
            ms(r.p99),
            ms(r.max),
            ms(e.jitter_ms),
            e.reordered,
            e.duplicates
        )),
        None => out.push_str("     no echo reply came back\n"),
    }
}

/// One line per advertised candidate: did a check sent to exactly that address answer?
fn ice_lines(out: &mut String, ice: &IceReport) {
    let form = match ice.override_value.as_deref() {
        Some(v) => format!("ice_host_override = \"{v}\""),
        None => "no ice_host_override".into(),
    };
    out.push_str(&format!("ICE  RTCD advertises ({form}):\n"));
    for c in &ice.advertised {
        let remote = if c.address.contains(':') {
            format!("[{}]:{}", c.address, c.port)
        } else {
            format!("{}:{}", c.address, c.port)
        };
        let pair = ice
            .pairs
            .iter()
            .find(|p| p.remote == remote && p.protocol == c.protocol);
        let verdict = match pair {
            Some(p) if p.ok => match p.rtt_ms {
                Some(rtt) => format!("answers ({} ms)", ms(rtt)),
                None => "answers".into(),
            },
            // The client's own words ("TCP connect failed: connection refused"): the host
            // answered that nothing listens there, which silence does not say.
            Some(p) if p.detail.as_deref().is_some_and(|d| d.ends_with("refused")) => {
                "REFUSED".into()
            }
            // Never dialled (a loopback address, a port outside the probe's): not silence.
            Some(p)
                if p.detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("not dialled")) =>
            {
                p.detail.clone().unwrap_or_default()
            }
            Some(_) => "NO ANSWER".into(),
            None => "not checked".into(),
        };
        let proto = match c.protocol {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        let private = if c.private { ", private" } else { "" };
        out.push_str(&format!(
            "     {proto} {remote:<24} {:<16} {verdict}\n",
            format!("{:?}{private}", c.source).to_lowercase()
        ));
    }
}

/// The TURN section: credentials, then per URL and transport the furthest step, the relayed
/// address, the permissions toward RTCD and the echo through the relay beside the direct path.
fn turn_lines(out: &mut String, t: &crate::turn::TurnReport, direct: Option<&EchoSummary>) {
    out.push_str(&format!("TURN ({})\n", t.source));
    if let Some(ep) = &t.endpoint {
        let state = if ep.ok {
            format!("{} TURN URL(s)", ep.turn_urls.len())
        } else {
            format!("FAILED: {}", ep.error.as_deref().unwrap_or("no answer"))
        };
        out.push_str(&format!("     credentials endpoint {}  {state}\n", ep.url));
    }
    if let Some(c) = &t.credentials {
        let validity = match c.valid_for_s {
            Some(s) if s > 0 => format!("valid {} more min", s / 60),
            Some(s) => format!("EXPIRED {} s ago", -s),
            None => "no expiry (static)".into(),
        };
        let skew = match (c.clock_skew_ms, &c.skew_reference) {
            (Some(ms), Some(r)) if ms.abs() < 50 => format!("   clock ±0.0 s vs {r}"),
            (Some(ms), Some(r)) => format!("   clock {:+.1} s vs {r}", ms as f64 / 1000.0),
            _ => String::new(),
        };
        out.push_str(&format!(
            "     {} credentials  user {}  {validity}{skew}\n",
            c.kind, c.username
        ));
    }
    for a in &t.attempts {
        turn_attempt_lines(out, a, direct);
    }
}

/// One TURN attempt: its furthest step, timings, relayed address, permissions and echo.
fn turn_attempt_lines(
    out: &mut String,
    a: &crate::turn::TurnAttempt,
    direct: Option<&EchoSummary>,
) {
    use crate::turn::Reached;
    let state = match a.reached {
        Reached::Echoed => "relays to the probe server".to_string(),
        Reached::Nothing => "NO ALLOCATION".to_string(),
        r => format!("stopped at: {}", format!("{r:?}").to_lowercase()),
    };
    let via = a
        .proxy
        .as_ref()
        .map(|p| format!(" via proxy {p}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "     {:<4} {}  {}{via}  {state}\n",
        a.transport.label(),
        a.url,
        a.server.as_deref().unwrap_or("-"),
    ));
    let mut timings: Vec<String> = a
        .steps
        .iter()
        .filter(|s| s.ok && s.step != "refresh")
        .filter_map(|s| s.ms.map(|v| format!("{} {}", s.step, ms(v))))
        .collect();
    if a.refreshes_ok > 0 || !a.refresh_failures.is_empty() {
        timings.push(format!(
            "  refreshes ok {}{}",
            a.refreshes_ok,
            if a.refresh_failures.is_empty() {
                String::new()
            } else {
                format!(", FAILED: {}", a.refresh_failures.join("; "))
            }
        ));
    }
    if !timings.is_empty() {
        out.push_str(&format!("          ms: {}\n", timings.join("  ")));
    }
    if let Some(rel) = &a.relayed {
        let private = if a.relayed_private { " (PRIVATE)" } else { "" };
        out.push_str(&format!(
            "          relayed {rel}{private}   you are {} to the TURN server\n",
            a.mapped.as_deref().unwrap_or("?")
        ));
    }
    for p in &a.permissions {
        let who = if p.rtcd { "RTCD " } else { "probe" };
        let verdict = if p.ok {
            "permitted".to_string()
        } else {
            format!("REFUSED {}", p.detail.as_deref().unwrap_or(""))
        };
        out.push_str(&format!(
            "          permission {who} {:<18} {verdict}\n",
            p.peer
        ));
    }
    if let Some(e) = &a.echo {
        echo_compare_line(out, "via relay  ", e, "   no echo came back");
        if let Some(d) = direct {
            echo_compare_line(out, "direct UDP ", d, "");
        }
    }
    if let Some(e) = &a.error {
        out.push_str(&format!("          stopped: {e}\n"));
    }
}

/// One line of the relay-versus-direct echo comparison; `no_rtt` stands where the RTT would.
fn echo_compare_line(out: &mut String, label: &str, e: &EchoSummary, no_rtt: &str) {
    out.push_str(&format!(
        "          {label} sent {}  received {}  loss up {}  down {}",
        e.sent,
        e.received,
        opt_pct(e.loss_up_pct),
        opt_pct(e.loss_down_pct)
    ));
    match &e.rtt_ms {
        Some(r) => out.push_str(&format!(
            "   RTT p50 {} p95 {} ms  jitter {} ms",
            ms(r.p50),
            ms(r.p95),
            ms(e.jitter_ms)
        )),
        None => out.push_str(no_rtt),
    }
    out.push('\n');
}

/// Findings as every report of the probe shows them: severity, id, summary, then the fix.
pub fn render_findings(out: &mut String, findings: &[Finding]) {
    if findings.is_empty() {
        out.push_str("No problems found.\n");
    }
    for f in findings {
        // Summaries quote what servers said (a refusal reason, an override value): no control
        // character from there reaches the terminal.
        out.push_str(&format!(
            "{:<7}  {} — {}\n",
            f.severity.label().to_uppercase(),
            crate::sites::strip_controls(&f.id.to_string()),
            crate::sites::strip_controls(&f.summary)
        ));
        out.push_str(&format!(
            "         fix: {}\n",
            crate::sites::strip_controls(&f.fix)
        ));
    }
}

/// The report with every string stripped of control characters, for the terminal: many of its
/// strings come from the server (refusal reason, override value, candidates, versions).
fn printable_report(r: &Report) -> std::borrow::Cow<'_, Report> {
    fn clean(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => {
                let c = crate::sites::strip_controls(s);
                let changed = c != *s;
                *s = c;
                changed
            }
            serde_json::Value::Array(a) => a.iter_mut().fold(false, |ch, x| clean(x) | ch),
            serde_json::Value::Object(o) => o.values_mut().fold(false, |ch, x| clean(x) | ch),
            _ => false,
        }
    }
    let Ok(mut v) = serde_json::to_value(r) else {
        return std::borrow::Cow::Borrowed(r);
    };
    if !clean(&mut v) {
        return std::borrow::Cow::Borrowed(r);
    }
    serde_json::from_value(v).map_or(std::borrow::Cow::Borrowed(r), std::borrow::Cow::Owned)
}

/// Human report: a short table per transport, then findings with what to do.
pub fn render_text(r: &Report) -> String {
    let r = &*printable_report(r);
    let mut out = header_line(r);
    let udp_state = if r.udp.reachable {
        "reachable"
    } else if r.udp.skipped {
        "NOT TESTED (--no-udp)"
    } else if r.findings.iter().any(|f| f.is(FindingId::BrowserNoUdp)) {
        "NOT TESTED (this browser may not use UDP)"
    } else if r.udp.refused {
        "REFUSED (\"port unreachable\": nothing listens there, or a firewall rejects it)"
    } else {
        "NO ANSWER"
    };
    out.push_str(&format!("UDP  {udp_state}"));
    if let (Some(m), Some(rtt)) = (&r.udp.stun.mapped, r.udp.stun.rtt_ms) {
        out.push_str(&format!(
            "   STUN: you are {m} as seen by the server ({} ms)",
            ms(rtt)
        ));
    }
    out.push('\n');
    if let Some(e) = &r.udp.echo {
        echo_lines(&mut out, e);
    }
    let tcp_state = if r.tcp.reachable {
        "reachable"
    } else if r.tcp.skipped {
        "NOT TESTED (--no-tcp)"
    } else if r.tcp.refused {
        "REFUSED (nothing listens there, or a firewall rejects it)"
    } else if r.live && r.browser.is_some() {
        // The page in live mode: RTCD holds its TCP port, so the page had no TCP leg.
        "NOT TESTED (live mode: RTCD holds the TCP port)"
    } else {
        "NO ANSWER"
    };
    out.push_str(&format!("TCP  {tcp_state}"));
    if let Some(c) = r.tcp.connect_ms {
        out.push_str(&format!("   connect {} ms", ms(c)));
    }
    out.push('\n');
    if let Some(e) = &r.tcp.echo {
        echo_lines(&mut out, e);
    }
    if let Some(m) = &r.mtu {
        crate::path::mtu::render_lines(&mut out, m);
    }
    if let Some(ice) = &r.ice {
        ice_lines(&mut out, ice);
    }
    if let Some(turn) = &r.turn {
        turn_lines(&mut out, turn, r.udp.echo.as_ref());
    }
    if let Some(b) = &r.browser {
        crate::web::browser::render_lines(&mut out, b);
    }
    out.push('\n');
    render_findings(&mut out, &r.findings);
    out.push_str(&verdict_line(r));
    out
}

/// The first line: which tool wrote the report, toward which server, for which site, when.
fn header_line(r: &Report) -> String {
    // A page run's report is built by probe-server from what the browser measured.
    let tool = if r.browser.is_some() {
        "browser test page, probe-server"
    } else {
        "probe-client"
    };
    format!(
        "{tool} {} → {}   site {}   {}   {:.1} s\n\n",
        r.tool_version,
        r.server,
        r.site,
        r.started_at,
        r.duration_ms as f64 / 1000.0
    )
}

/// The closing verdict line, from the findings' severities.
fn verdict_line(r: &Report) -> String {
    let count = |sev: Severity| r.findings.iter().filter(|f| f.severity == sev).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    let only_error = |id: FindingId| {
        r.findings.iter().any(|f| f.is(id))
            && r.findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .all(|f| f.is(id))
    };
    if r.findings.iter().any(|f| f.is(FindingId::ServerRefused)) {
        "\nVerdict: NOT TESTED — the probe server refused this test (see above); the path itself was not judged.\n"
            .to_string()
    } else if only_error(FindingId::ControlFailed) {
        // Only STUN answered: nothing about media was measured, so neither PASS nor a path
        // FAIL (a blocked transport next to it is still a FAIL).
        "\nVerdict: NOT TESTED — only STUN answered: no session opened, so the path itself was not judged (see above).\n"
            .to_string()
    } else if r.ok {
        // A PASS covers only what was tested.
        let over = match (r.udp.skipped, r.tcp.skipped) {
            (true, _) => " over TCP (UDP not tested)",
            (_, true) => " over UDP (TCP not tested)",
            _ => "",
        };
        format!(
            "\nVerdict: PASS — media can reach this server from here{over} ({warnings} warning(s)).\n"
        )
    } else {
        format!("\nVerdict: FAIL — {errors} error(s), {warnings} warning(s). Calls from this network will not work as they should.\n")
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-11-26T07:50:00.123Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    let ts = i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_section_renders_steps_permissions_and_echo() {
        use crate::turn::{
            CredentialInfo, PermissionResult, Reached, StepResult, TurnAttempt, TurnReport,
            TurnTransport,
        };
        let mut a = TurnAttempt::new("turn:turn.example.test:3478", TurnTransport::Udp);
        a.server = Some("203.0.113.1:3478".into());
        a.reached = Reached::Allocated;
        a.steps.push(StepResult {
            step: "allocate".into(),
            ok: true,
            ms: Some(1.5),
            peer: None,
            code: None,
            detail: None,
        });
        a.relayed = Some("203.0.113.1:50000".into());
        a.permissions.push(PermissionResult {
            peer: "172.17.0.2".into(),
            rtcd: true,
            ok: false,
            code: Some(403),
            detail: Some("403 Forbidden IP".into()),
        });
        a.error = Some("no permission for the probe server".into());
        let t = TurnReport {
            source: "flags".into(),
            credentials: Some(CredentialInfo {
                kind: "rest".into(),
                username: "100:alice".into(),
                expires_at: None,
                valid_for_s: Some(-30),
                clock_skew_ms: Some(-125_000),
                skew_reference: Some("mattermost".into()),
            }),
            endpoint: None,
            attempts: vec![a],
            ok: false,
        };
        let mut out = String::new();
        turn_lines(&mut out, &t, None);
        for want in [
            "TURN (flags)",
            "rest credentials  user 100:alice  EXPIRED 30 s ago   clock -125.0 s vs mattermost",
            "udp  turn:turn.example.test:3478  203.0.113.1:3478  stopped at: allocated",
            "ms: allocate 1.50",
            "permission RTCD  172.17.0.2         REFUSED 403 Forbidden IP",
            "stopped: no permission for the probe server",
        ] {
            assert!(out.contains(want), "{want:?} in\n{out}");
        }
        // Reports without a TURN check keep their JSON exactly (no "turn" key).
        let mut r = Report {
            schema: SCHEMA,
            tool_version: "t".into(),
            site: "s".into(),
            server: "h:1".into(),
            started_at: "x".into(),
            duration_ms: 1,
            ok: true,
            udp: UdpResult::default(),
            tcp: TcpResult::default(),
            findings: vec![],
            server_version: None,
            server_pin: None,
            ice: None,
            turn: None,
            mtu: None,
            live: false,
            browser: None,
        };
        assert!(!serde_json::to_string(&r).unwrap().contains("\"turn\""));
        r.turn = Some(t);
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_651_200_123), "2026-11-26T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_670_400_999), "2026-11-26T05:20:00.999Z");
    }

    #[test]
    fn ok_follows_error_findings() {
        let mut r = Report {
            schema: SCHEMA,
            tool_version: "t".into(),
            site: "s".into(),
            server: "h:1".into(),
            started_at: rfc3339(0),
            duration_ms: 1,
            ok: false,
            udp: UdpResult::default(),
            tcp: TcpResult::default(),
            findings: vec![],
            server_version: None,
            server_pin: None,
            ice: None,
            turn: None,
            mtu: None,
            live: false,
            browser: None,
        };
        r.set_findings(vec![Finding::new("x", Severity::Warning, "s", "f")]);
        assert!(r.ok);
        assert_eq!(r.exit_code(), 0);
        r.set_findings(vec![Finding::new("y", Severity::Error, "s", "f")]);
        assert!(!r.ok);
        assert_eq!(r.exit_code(), 1);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["findings"][0]["severity"], "error");
        assert!(v["udp"]["echo"].is_null());
        assert!(render_text(&r).contains("FAIL"));
        // A control channel that never came up: only STUN was tested, the path not judged;
        // with a blocked transport beside it, that transport still fails the run.
        let control = Finding::new(FindingId::ControlFailed, Severity::Error, "s", "f");
        r.set_findings(vec![control.clone()]);
        assert_eq!(r.exit_code(), 1);
        assert!(
            render_text(&r).contains("Verdict: NOT TESTED — only STUN answered"),
            "{}",
            render_text(&r)
        );
        let blocked = Finding::new(FindingId::UdpBlocked, Severity::Error, "s", "f");
        r.set_findings(vec![blocked, control]);
        assert!(render_text(&r).contains("Verdict: FAIL"));
    }
}

#[cfg(test)]
mod printable_tests {
    use super::*;

    #[test]
    fn server_strings_are_stripped_of_control_characters_before_printing() {
        let mut r: Report = serde_json::from_value(serde_json::json!({
            "schema": 1, "tool_version": "0.1.0", "site": "s", "server": "203.0.113.2:8443",
            "started_at": "2026-11-26T08:00:00.000Z", "duration_ms": 1, "ok": false,
            "udp": {"reachable": false, "stun": {"mapped": null, "rtt_ms": null}, "echo": null},
            "tcp": {"reachable": false}, "findings": []
        }))
        .unwrap();
        r.server_version = Some("9.9\x1b]0;pwned\x07".into());
        r.set_findings(vec![Finding::new(
            "server_refused",
            Severity::Error,
            "The probe server refused the test: too long\n\x1b[2JERROR    forged — line",
            "ask\rthe admin",
        )]);
        let text = render_text(&r);
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(
            text.contains("too long[2JERROR    forged — line"),
            "the forged line is folded into the real one: {text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("ERROR    forged")),
            "{text}"
        );
    }

    #[test]
    fn a_skipped_or_refused_transport_is_not_shown_as_silence() {
        let mut r: Report = serde_json::from_value(serde_json::json!({
            "schema": 1, "tool_version": "0.1.0", "site": "s", "server": "203.0.113.2:8443",
            "started_at": "2026-11-26T08:00:00.000Z", "duration_ms": 1, "ok": false,
            "udp": {"reachable": false, "stun": {"mapped": null, "rtt_ms": null}, "echo": null},
            "tcp": {"reachable": false}, "findings": []
        }))
        .unwrap();
        // A report without the fields (earlier versions) reads as tested and silent.
        assert!(!r.udp.skipped && !r.udp.refused && !r.tcp.skipped && !r.tcp.refused);
        let text = render_text(&r);
        assert!(
            text.contains("UDP  NO ANSWER") && text.contains("TCP  NO ANSWER"),
            "{text}"
        );
        r.udp.skipped = true;
        r.tcp.refused = true;
        let text = render_text(&r);
        assert!(text.contains("UDP  NOT TESTED (--no-udp)"), "{text}");
        assert!(
            text.contains("TCP  REFUSED (nothing listens there"),
            "{text}"
        );
        r.set_findings(Vec::new());
        let pass = render_text(&r);
        assert!(
            pass.contains("PASS — media can reach this server from here over TCP (UDP not tested)"),
            "{pass}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["udp"]["skipped"], true);
        assert_eq!(json["tcp"]["refused"], true);
        // Omitted when false, so a normal run's JSON is what it always was.
        assert!(json["udp"].get("refused").is_none() && json["tcp"].get("skipped").is_none());
        // A server older than proto 6 refuses unknown fields: they are left out for it.
        let old = serde_json::to_value(r.for_proto(5).as_ref()).unwrap();
        assert!(old["udp"].get("skipped").is_none() && old["tcp"].get("refused").is_none());
        assert_eq!(old["findings"], json["findings"]);
        assert_eq!(serde_json::to_value(r.for_proto(6).as_ref()).unwrap(), json);
        r.udp = UdpResult {
            refused: true,
            ..Default::default()
        };
        r.tcp.skipped = true;
        let text = render_text(&r);
        assert!(
            text.contains("UDP  REFUSED (\"port unreachable\""),
            "{text}"
        );
        assert!(text.contains("TCP  NOT TESTED (--no-tcp)"), "{text}");
        // An ICE check the host refused, beside one that got silence.
        let cand = |address: &str, protocol| AdvertisedCandidate {
            address: address.into(),
            port: 8443,
            protocol,
            private: false,
            source: CandidateSource::Local,
        };
        let pair = |remote: &str, protocol, detail: &str| PairResult {
            remote: remote.into(),
            protocol,
            ok: false,
            rtt_ms: None,
            detail: Some(detail.into()),
        };
        r.ice = Some(IceReport {
            advertised: vec![
                cand("192.0.2.7", Transport::Tcp),
                cand("192.0.2.8", Transport::Udp),
                cand("127.0.0.1", Transport::Udp),
            ],
            pairs: vec![
                pair(
                    "192.0.2.7:8443",
                    Transport::Tcp,
                    "TCP connect failed: connection refused",
                ),
                pair("192.0.2.8:8443", Transport::Udp, "no answer within 2.5 s"),
                pair(
                    "127.0.0.1:8443",
                    Transport::Udp,
                    "not dialled: loopback address",
                ),
            ],
            ..IceReport::default()
        });
        let text = render_text(&r);
        let line = |ip: &str| {
            text.lines()
                .find(|l| l.contains(ip))
                .unwrap_or_default()
                .to_string()
        };
        assert!(line("192.0.2.7:8443").ends_with("REFUSED"), "{text}");
        assert!(line("192.0.2.8:8443").ends_with("NO ANSWER"), "{text}");
        // A candidate never dialled says so, rather than that it was silent.
        assert!(
            line("127.0.0.1:8443").ends_with("not dialled: loopback address"),
            "{text}"
        );
    }
}
