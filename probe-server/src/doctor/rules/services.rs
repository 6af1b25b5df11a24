//! The rules over what RTCD's services answered: its API, the host firewall's ruleset, and
//! its log.

use probe_proto::catalog::FindingId;
use probe_proto::report::{Finding, Severity};

use super::Judged;
use crate::doctor::api;
use crate::doctor::facts::{ApiSide, FirewallFacts};
use crate::doctor::logs::LogScan;
use crate::doctor::nft;
use crate::doctor::report::Status;

/// Who listens on the API port, for `rtcd_api_unreachable`'s summary.
pub fn listener(a: &ApiSide) -> String {
    let port = a.url.port;
    if !a.local {
        return format!("{} is not an address of this host", a.url.host);
    }
    match (&a.owner, a.listening == 0) {
        (Some(o), _) => format!("{} (pid {}) listens on TCP {port}", o.process, o.pid),
        (None, false) => format!("a process the doctor cannot see listens on TCP {port}"),
        (None, true) => format!("nothing listens on TCP port {port} here"),
    }
}

/// `api_version` and `api_metrics` (see `api::judge`); returns the version RTCD reports and
/// its `/version` body.
pub fn api(a: &ApiSide, out: &mut Judged) -> (Option<String>, Option<String>) {
    let Some(answers) = &a.answers else {
        out.late("api_version");
        out.finding(
            FindingId::RtcdApiUnreachable,
            Severity::Error,
            format!("RTCD's API at {} did not answer in time", a.url.base()),
            "check that RTCD runs and answers `curl URL/version`; pass --rtcd-api if it listens elsewhere",
        );
        return (None, None);
    };
    let inp = api::Inputs {
        url: &a.url,
        min_version: api::parse_version(&a.min_version).unwrap_or((0, 0, 0)),
        min_version_text: &a.min_version,
        url_source: &a.url_source,
        listener: Some(listener(a)),
    };
    let o = api::judge(&inp, answers);
    out.checks.extend(o.checks);
    out.findings.extend(o.findings);
    (o.version, o.version_json)
}

/// `host_firewall`: the nftables input path drops none of RTCD's ports.
pub fn firewall(f: &FirewallFacts, out: &mut Judged) {
    let blocks = match &f.ruleset {
        None => return out.late("host_firewall"),
        Some(Err(why)) => return out.skipped("host_firewall", why),
        Some(Ok(ruleset)) => match nft::find_blocks(ruleset, &f.targets) {
            Err(why) => return out.skipped("host_firewall", why),
            Ok(b) => b,
        },
    };
    if blocks.is_empty() {
        let ports: Vec<String> = f.targets.iter().map(nft::Target::label).collect();
        let detail = format!("nftables input path does not drop {}", ports.join(", "));
        return out.check("host_firewall", Status::Pass, detail);
    }
    let mut lines = Vec::new();
    for b in &blocks {
        let (line, finding) = block_finding(b);
        lines.push(line);
        out.findings.push(finding);
    }
    let status = if blocks.iter().any(|b| !b.conditional) {
        Status::Fail
    } else {
        Status::Warn
    };
    out.check("host_firewall", status, lines.join("\n"));
}

/// One dropping rule or policy: the check's line and its `host_firewall_blocks` finding.
fn block_finding(b: &nft::Block) -> (String, Finding) {
    let t = &b.target;
    let proto = t.label().split('/').nth(1).unwrap_or("udp").to_string();
    let place = format!("table {} {}, chain {}", b.family, b.table, b.chain);
    let keep = format!(
        "then make it permanent where your firewall is kept (/etc/nftables.conf, `ufw allow {}`, or `firewall-cmd --permanent --add-port={}`)",
        t.label(),
        t.label()
    );
    let (what, fix) = match &b.rule {
        Some((rule, handle)) => (
            format!("rule `{rule}` (handle {handle})"),
            format!(
                "remove it (`nft delete rule {} {} {} handle {handle}`) or accept the port before it (`nft insert rule {} {} {} {proto} dport {} accept`), {keep}",
                b.family, b.table, b.chain, b.family, b.table, b.chain, t.port
            ),
        ),
        None => (
            "the chain's policy drop (no rule accepts it)".to_string(),
            format!(
                "accept the port: `nft add rule {} {} {} {proto} dport {} accept`, {keep}",
                b.family, b.table, b.chain, t.port
            ),
        ),
    };
    let when = if b.conditional {
        " for some packets (the rule has other conditions)"
    } else {
        ""
    };
    let severity = if b.conditional {
        Severity::Warning
    } else {
        Severity::Error
    };
    let finding = Finding::new(
        FindingId::HostFirewallBlocks,
        severity,
        format!(
            "the host firewall drops {} ({}){when}: {place}, {what}",
            t.label(),
            t.what
        ),
        fix,
    );
    (
        format!("{} dropped by {place}: {what}{when}", t.label()),
        finding,
    )
}

/// `logs`: the guide's error patterns, private ICE host candidates, and RTCD's STUN at start
/// (`stun`: its detail and finding, from `logs::stun_at_start`).
pub fn log_findings(
    scan: &LogScan,
    (stun_detail, stun_finding): (Option<String>, Option<Finding>),
    plugin: bool,
    out: &mut Judged,
) {
    let counts: Vec<String> = scan
        .counts
        .iter()
        .map(|(p, n)| format!("\"{p}\" ×{n}"))
        .collect();
    let mut detail = format!(
        "{}: {} line(s){}; guide patterns: {}",
        scan.source,
        scan.lines,
        if scan.skipped_bytes > 0 {
            " (the end of the file)"
        } else {
            ""
        },
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    );
    let mut status = Status::Pass;
    if !scan.private_candidates.is_empty() {
        detail.push_str(&private_candidates(scan, plugin, out));
        status = Status::Warn;
    }
    if let Some(d) = stun_detail {
        detail.push_str(&format!("; {d}"));
    }
    if let Some(f) = stun_finding {
        status = if f.severity == Severity::Error {
            Status::Fail
        } else {
            Status::Warn
        };
        out.findings.push(f);
    }
    if !counts.is_empty() {
        if status == Status::Pass {
            status = Status::Warn;
        }
        out.finding(
            FindingId::LogErrorPatterns,
            Severity::Info,
            format!(
                "{} has lines matching the guide's error patterns: {}",
                if plugin { "The Calls plugin's part of Mattermost's log" } else { "RTCD's log" },
                counts.join(", ")
            ),
            "read those lines (probe-server bundle collects them) next to this report's other findings",
        );
    }
    out.check("logs", status, detail);
}

/// `log_private_candidates`; returns the detail's addition.
fn private_candidates(scan: &LogScan, plugin: bool, out: &mut Judged) -> String {
    let ips: Vec<String> = scan
        .private_candidates
        .iter()
        .map(|(ip, n)| format!("{ip} (×{n})"))
        .collect();
    let (who, fix) = if plugin {
        (
            "The Calls plugin's RTC server",
            format!(
                "set {} (env MM_CALLS_ICE_HOST_OVERRIDE) to the public address users reach this host on, then disable and re-enable the plugin",
                probe_proto::calls::wording::console("ICEHostOverride")
            ),
        )
    } else {
        (
            "RTCD",
            "set [rtc] ice_host_override (env RTCD_RTC_ICEHOSTOVERRIDE) to the public address users reach RTCD on, and restart RTCD".to_string(),
        )
    };
    out.finding(
        FindingId::LogPrivateCandidates,
        Severity::Warning,
        format!(
            "{who}'s ICE traces show it using private host candidate(s) {} (\"Ping STUN from udp4 host …\"): clients outside this network cannot reach those",
            scan.private_candidates.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
        fix,
    );
    format!(
        "; ICE traces from private host candidates: {}",
        ips.join(", ")
    )
}
