//! Judging: the host rules, pure functions of [`HostFacts`]. Each area's rule turns its facts
//! into checks (the report's table) and findings (with their fixes); [`judge`] runs them in
//! the report's order and assembles the report.

use probe_proto::catalog::FindingId;
use probe_proto::report::{Finding, Severity};
use std::collections::HashMap;
use std::net::IpAddr;

use super::facts::{CallsApiFacts, HostFacts, LogFacts, Setup};
use super::report::{self, Check, DoctorReport, Status};
use super::{advertise, logs, Done, RulesChoice};

mod host;
mod nat;
mod services;

pub use host::{cpu, ports, socket_buffers, udp_drops, Running};
pub use services::{api, firewall, log_findings};

/// Checks and findings as the rules add them.
#[derive(Debug, Default)]
pub struct Judged {
    pub checks: Vec<Check>,
    pub findings: Vec<Finding>,
    /// The host runs the Calls plugin's integrated RTC server, not RTCD: the words change.
    pub plugin: bool,
}

impl Judged {
    /// The media server as the subject of a sentence.
    fn server(&self) -> &'static str {
        if self.plugin {
            "the Calls plugin's RTC server"
        } else {
            "RTCD"
        }
    }

    /// How the media server picks up a change.
    fn restart(&self) -> &'static str {
        if self.plugin {
            "disable and re-enable the Calls plugin (System Console › Plugins › Plugin Management)"
        } else {
            "restart RTCD"
        }
    }

    fn check(&mut self, id: &str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check::new(id, status, detail));
    }

    fn skipped(&mut self, id: &str, why: impl std::fmt::Display) {
        self.check(id, Status::Skipped, format!("skipped: {why}"));
    }

    fn late(&mut self, id: &str) {
        self.check(
            id,
            Status::Skipped,
            "skipped: did not finish within its deadline",
        );
    }

    fn finding(
        &mut self,
        id: FindingId,
        severity: Severity,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding::new(id, severity, summary, fix));
    }
}

/// Every rule over the facts, in the report's order, and the report.
/// RTCD's process as discovery found it, for the port rules.
fn running(setup: &Setup) -> Option<Running<'_>> {
    let name = match &setup.env.source {
        crate::rtcd_env::Source::Process { process, .. } => process.as_str(),
        _ => "its process",
    };
    setup.env.pid.map(|pid| Running {
        pid,
        name,
        same_netns: setup.rtcd_same_netns,
    })
}

pub fn judge(facts: HostFacts) -> Done {
    let plugin = !facts.setup.deployment.is_rtcd();
    let mut out = Judged {
        plugin,
        ..Judged::default()
    };
    if plugin {
        calls_plugin(facts.setup.calls_api.as_ref(), &mut out);
    }
    let rtcd = running(&facts.setup);
    ports(&facts.ports, &facts.setup.where_, rtcd, &mut out);
    let small = socket_buffers(&facts.buffers, &mut out);
    udp_drops(&facts.drops, &facts.ports, &small, &mut out);
    cpu(&facts.cpu, &facts.ports, &mut out);
    let (version, version_json) = if plugin {
        // activate.go:170-199: rtc runs inside the plugin; there is no RTCD API to ask.
        out.skipped(
            "api_version",
            "the Calls plugin's integrated RTC server has no RTCD API",
        );
        (None, None)
    } else {
        api(&facts.api, &mut out)
    };
    firewall(&facts.firewall, &mut out);
    environment(&facts.setup, &mut out);
    let (stun_now, rules) = advertised(facts.advertise.as_ref(), &mut out);
    nat::rtcd_nat(
        &facts.nat,
        probe_proto::calls::wording::Terms::of(&facts.setup.deployment),
        &mut out,
    );
    log(&facts.log, &facts.setup, &stun_now, &mut out);
    let Judged {
        checks,
        mut findings,
        ..
    } = out;
    report::sort_findings(&mut findings);
    let report = DoctorReport {
        schema: probe_proto::report::SCHEMA,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: facts.host,
        ok: report::ok(&findings),
        rtcd: report::Rtcd {
            version,
            api: facts.api.url.base(),
            udp_owner: facts.ports.udp_holders.main,
            tcp_owner: facts.ports.tcp_holders.main,
            udp_sockets: facts.ports.udp.len(),
            tcp_sockets: facts.ports.tcp.len(),
            owner_visibility: facts.ports.visibility,
            env: Some(report::EnvReport::from(&facts.setup.env)),
            pion_rules: rules.as_ref().map(|c| c.rules),
            version_source: rules.as_ref().map(|c| c.from.to_string()),
        },
        checks,
        findings,
        started_at: probe_proto::report::rfc3339(facts.started_ms),
        duration_ms: facts.duration_ms,
        config: facts.setup.config_source,
        deployment: facts.setup.deployment.clone(),
        nat: match facts.nat {
            super::facts::NatFacts::Ran(run) => Some(run),
            _ => None,
        },
    };
    let log = match facts.log {
        LogFacts::Read(scan) => Some(scan),
        _ => None,
    };
    Done {
        report,
        version_json,
        log,
    }
}

/// `calls_plugin`: the Calls plugin's status as Mattermost's API gives it (`--mattermost`),
/// and what its RTCD service URL means under the licence.
pub fn calls_plugin(api: Option<&CallsApiFacts>, out: &mut Judged) {
    use probe_proto::calls::mattermost::{state_text, PLUGIN_STATE_RUNNING};
    let Some(api) = api else {
        return out.skipped(
            "calls_plugin",
            "the plugin's status comes from Mattermost's API: give --mattermost URL --mm-token",
        );
    };
    let statuses = match &api.status {
        Err(e) => return out.skipped("calls_plugin", e),
        Ok(s) => s,
    };
    let tail = api
        .rtcd_line
        .as_ref()
        .map(|l| format!("; {l}"))
        .unwrap_or_default();
    if statuses.is_empty() {
        out.check(
            "calls_plugin",
            Status::Fail,
            format!("{}: the Calls plugin is not installed{tail}", api.base),
        );
        return out.finding(
            FindingId::CallsPluginNotRunning,
            Severity::Error,
            format!("Mattermost at {} has no Calls plugin installed: no call can start", api.base),
            "install and enable Calls in System Console › Plugins › Plugin Management (or the Marketplace)",
        );
    }
    let each: Vec<String> = statuses
        .iter()
        .map(|s| {
            let node = if s.cluster_id.is_empty() {
                String::new()
            } else {
                format!(" on node {}", s.cluster_id)
            };
            let err = if s.error.is_empty() {
                String::new()
            } else {
                format!(": {}", s.error)
            };
            format!("v{} {}{node}{err}", s.version, state_text(s.state))
        })
        .collect();
    let down: Vec<&String> = statuses
        .iter()
        .zip(&each)
        .filter(|(s, _)| s.state != PLUGIN_STATE_RUNNING)
        .map(|(_, t)| t)
        .collect();
    let detail = format!("{}: Calls {}{tail}", api.base, each.join(", "));
    if down.is_empty() {
        return out.check("calls_plugin", Status::Pass, detail);
    }
    out.check("calls_plugin", Status::Fail, detail);
    out.finding(
        FindingId::CallsPluginNotRunning,
        Severity::Error,
        format!(
            "Mattermost says the Calls plugin is not running ({}): no call can start on it",
            down.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
        "enable it in System Console › Plugins › Plugin Management; if it fails again, read Mattermost's log \
         (lines with \"plugin_id\":\"com.mattermost.calls\", or give it to this doctor with --mattermost-log)",
    );
}

/// Where RTCD's `RTCD_*` variables were read: pass, or warn when RTCD's own environment could
/// not be read although its process runs; `rtcd_config_invalid` when RTCD would refuse one.
pub fn environment(setup: &Setup, out: &mut Judged) {
    let env = &setup.env;
    let status = match env.source {
        crate::rtcd_env::Source::Own if env.pid.is_some() => Status::Warn,
        _ => Status::Pass,
    };
    out.check("rtcd_env", status, env.summary());
    if let Some(e) = &setup.env_error {
        // rtcd cmd/rtcd/config.go:31-33 (v1.2.6): a variable envconfig cannot parse stops RTCD.
        out.finding(
            FindingId::RtcdConfigInvalid,
            Severity::Error,
            format!(
                "RTCD would refuse its environment ({}): {}",
                env.describe(),
                e.rtcd_message
            ),
            e.hint.clone(),
        );
    }
    config_age(setup, out);
    unknown_keys(setup, out);
}

/// `rtcd_config_unknown_key`: RTCD ignores keys it does not know without a word (rtcd
/// cmd/rtcd/config.go:28), so a misspelled setting keeps its default.
pub fn unknown_keys(setup: &Setup, out: &mut Judged) {
    if setup.unknown_keys.is_empty() {
        return;
    }
    let named = |env: bool| -> Vec<String> {
        setup
            .unknown_keys
            .iter()
            .filter(|u| u.path.starts_with("RTCD_") == env)
            .map(ToString::to_string)
            .collect()
    };
    let mut where_: Vec<String> = Vec::new();
    let (keys, vars) = (named(false), named(true));
    if !keys.is_empty() {
        where_.push(format!("in {}: {}", setup.config_source, keys.join(", ")));
    }
    if !vars.is_empty() {
        where_.push(format!("in {}: {}", setup.env.describe(), vars.join(", ")));
    }
    out.finding(
        FindingId::RtcdConfigUnknownKey,
        Severity::Warning,
        format!(
            "RTCD does not know, and ignores without a word, {}; the settings they were meant to be keep their defaults",
            where_.join("; ")
        ),
        "Give each key or variable the name RTCD knows (the closest is named when there is one), or remove it; then restart RTCD.",
    );
}

/// `config_age`: RTCD reads its file once, at start (rtcd cmd/rtcd/main.go:21, no reload:
/// :40), so a file changed since is not what RTCD runs, and every check judged from it speaks
/// of RTCD's next start.
pub fn config_age(setup: &Setup, out: &mut Judged) {
    let Some(age) = setup.config_age else {
        return;
    };
    let when = |s: u64| probe_proto::report::rfc3339(s.saturating_mul(1000));
    if !age.changed_since_start() {
        return out.check(
            "config_age",
            Status::Pass,
            format!(
                "RTCD (pid {}) started at {}, after {} last changed",
                age.pid,
                when(age.rtcd_started_s),
                setup.config_source
            ),
        );
    }
    out.check(
        "config_age",
        Status::Warn,
        format!(
            "{} changed at {}, after RTCD (pid {}) started at {}",
            setup.config_source,
            when(age.modified_s),
            age.pid,
            when(age.rtcd_started_s)
        ),
    );
    out.finding(
        FindingId::RtcdConfigChangedSinceStart,
        Severity::Warning,
        format!(
            "{} was changed at {}, after RTCD started at {}: RTCD still runs with what the file said then, \
             while this run judged the file as it is now",
            setup.config_source,
            when(age.modified_s),
            when(age.rtcd_started_s)
        ),
        "Restart RTCD so that it reads the file (e.g. systemctl restart rtcd), then run the doctor again.",
    );
}

/// What RTCD advertises, as `advertise` judged it, with the pion/ice rules named; returns the
/// STUN exchange run now and the rules.
pub fn advertised(
    adv: Option<&(advertise::Outcome, RulesChoice)>,
    out: &mut Judged,
) -> (HashMap<IpAddr, Option<IpAddr>>, Option<RulesChoice>) {
    let Some((o, choice)) = adv else {
        out.late("rtcd_config");
        return (HashMap::new(), None);
    };
    let mut check = o.check.clone();
    if out.plugin && choice.from == "default" {
        // No RTCD /version to ask: the rtc package is the one the plugin vendors.
        check.detail.push_str(&format!(
            "; candidates computed with {} (the rtc package the Calls plugin vendors: rtcd v1.2.6 in Calls \
             eb708b4's go.mod; --rtcd-version sets the rules for another)",
            choice.rules.label()
        ));
    } else {
        check.detail.push_str(&format!("; {}", choice.text()));
    }
    out.checks.push(check);
    out.findings.extend(o.findings.iter().cloned());
    (o.stun_now.clone(), Some(choice.clone()))
}

/// RTCD's log: the guide's patterns, private candidates, and STUN at RTCD's start.
pub fn log(
    facts: &LogFacts,
    setup: &Setup,
    stun_now: &HashMap<IpAddr, Option<IpAddr>>,
    out: &mut Judged,
) {
    match facts {
        LogFacts::NoSource => out.check(
            "logs",
            Status::Skipped,
            if setup.deployment.is_rtcd() {
                "skipped: no --rtcd-log given and no systemd unit of RTCD found for its journal (e.g. `journalctl -u rtcd --since -1h > rtcd.log` or `docker logs CONTAINER > rtcd.log`, then --rtcd-log rtcd.log)"
            } else {
                "skipped: no --mattermost-log given and no systemd unit of Mattermost found for its journal (give Mattermost's log file, e.g. --mattermost-log /opt/mattermost/logs/mattermost.log)"
            },
        ),
        LogFacts::Late => out.late("logs"),
        LogFacts::Failed(e) => out.skipped("logs", e),
        LogFacts::Read(scan) => {
            let restart = match (&setup.env.unit, setup.deployment.is_rtcd()) {
                (_, false) => "disable and re-enable the Calls plugin in System Console › Plugins › Plugin Management".to_string(),
                (Some(u), true) => format!("`systemctl restart {u}`"),
                (None, true) => "`systemctl restart rtcd`, or restart its container".to_string(),
            };
            let stun = logs::stun_at_start_in(
                &scan.stun,
                stun_now,
                &setup.where_,
                &restart,
                !setup.deployment.is_rtcd(),
            );
            log_findings(scan, stun, !setup.deployment.is_rtcd(), out);
        }
    }
}

#[cfg(test)]
mod tests;
