//! The doctor's report: the JSON contract (schema 1; fields are only ever added) and the
//! human table.

use probe_proto::report::{Finding, Severity};
use serde::{Deserialize, Serialize};

use super::facts::OwnerVisibility;
use super::procnet::Owner;

pub use probe_shell::report::{ok, sort_findings, Check, Status};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rtcd {
    pub version: Option<String>,
    pub api: String,
    pub udp_owner: Option<Owner>,
    pub tcp_owner: Option<Owner>,
    /// Sockets the kernel shows on the ICE ports (TCP: listening): with no owner, a process
    /// the doctor could not see holds them (`owner_visibility` says why).
    #[serde(default)]
    pub udp_sockets: usize,
    #[serde(default)]
    pub tcp_sockets: usize,
    #[serde(default)]
    pub owner_visibility: OwnerVisibility,
    /// Where RTCD's `RTCD_*` variables were read.
    #[serde(default)]
    pub env: Option<EnvReport>,
    /// The pion/ice rules RTCD's candidates were computed with (`pion_ice_4_0`/`pion_ice_4_2`).
    #[serde(default)]
    pub pion_rules: Option<probe_proto::rtcd::PionRules>,
    /// Where the version deciding them came from: `--rtcd-version`, `RTCD's /version`, `default`.
    #[serde(default)]
    pub version_source: Option<String>,
}

/// `rtcd.env` in the JSON: `{"source": "process", "pid", "process"}` | `{"source": "systemd",
/// "unit"}` | `{"source": "own"}`, plus the variable names (never their values), the unit
/// RTCD runs under (`systemd_unit`), and why earlier sources were not used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvReport {
    #[serde(flatten)]
    pub source: crate::rtcd_env::Source,
    pub variables: Vec<String>,
    /// The systemd unit RTCD runs under (its cgroup) or that was found.
    pub systemd_unit: Option<String>,
    pub notes: Vec<String>,
    pub ignored_own: Vec<String>,
}

impl From<&crate::rtcd_env::RtcdEnv> for EnvReport {
    fn from(e: &crate::rtcd_env::RtcdEnv) -> Self {
        EnvReport {
            source: e.source.clone(),
            variables: e.vars.keys().cloned().collect(),
            systemd_unit: e.unit.clone(),
            notes: e.notes.clone(),
            ignored_own: e.ignored_own.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    pub schema: u32,
    pub tool_version: String,
    pub host: String,
    pub ok: bool,
    pub rtcd: Rtcd,
    pub checks: Vec<Check>,
    pub findings: Vec<Finding>,
    pub started_at: String,
    pub duration_ms: u64,
    /// Where RTCD's configuration came from (a path, or RTCD's defaults).
    pub config: String,
    /// RTCD (`"rtcd"`), or the Calls plugin's integrated RTC server (`{"calls_plugin": …}`).
    #[serde(default)]
    pub deployment: probe_proto::calls::Deployment,
    /// The STUN answers behind the `rtcd_nat` check (RTCD's own NAT), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<super::facts::NatRun>,
}

impl DoctorReport {
    /// Exit code: 1 when any finding is an error.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            0
        } else {
            1
        }
    }
}

/// The human report: one table row per check, then findings with their fixes.
pub fn render_text(r: &DoctorReport) -> String {
    let plugin = !r.deployment.is_rtcd();
    let env = r
        .rtcd
        .env
        .as_ref()
        .map_or("unknown".to_string(), |e| e.label(plugin));
    let head = if plugin {
        format!(
            "Settings:    {}\nEnvironment: {env}\nRTC server:  the Calls plugin's integrated RTC server (no RTCD, no RTCD API)\n",
            r.config
        )
    } else {
        format!(
            "RTCD config: {}\nRTCD env:    {env}\nRTCD API:    {}   version {}\n",
            r.config,
            r.rtcd.api,
            r.rtcd.version.as_deref().unwrap_or("unknown"),
        )
    };
    let mut out =
        format!(
        "probe-server doctor {} on {}   {}   {:.1} s\n{head}UDP port:    {}\nTCP port:    {}\n\n",
        r.tool_version,
        r.host,
        r.started_at,
        r.duration_ms as f64 / 1000.0,
        owner(&r.rtcd.udp_owner, r.rtcd.udp_sockets, r.rtcd.owner_visibility),
        owner(&r.rtcd.tcp_owner, r.rtcd.tcp_sockets, r.rtcd.owner_visibility),
    );
    let width = r
        .checks
        .iter()
        .map(|c| c.id.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!("{:<width$}  {:<7}  detail\n", "check", "status"));
    for c in &r.checks {
        let mut lines = c.detail.lines();
        out.push_str(&format!(
            "{:<width$}  {:<7}  {}\n",
            c.id,
            c.status.label(),
            lines.next().unwrap_or("")
        ));
        for l in lines {
            out.push_str(&format!("{:<width$}  {:<7}  {l}\n", "", ""));
        }
    }
    out.push('\n');
    probe_proto::report::render_findings(&mut out, &r.findings);
    let count = |s| r.findings.iter().filter(|f| f.severity == s).count();
    let host = if plugin {
        "this Mattermost host (Calls plugin, no RTCD)"
    } else {
        "this RTCD host"
    };
    out.push_str(&if r.ok {
        format!(
            "\nVerdict: PASS — no error on {host} ({} warning(s)).\n",
            count(Severity::Warning)
        )
    } else {
        format!(
            "\nVerdict: FAIL — {} error(s), {} warning(s) on {host}.\n",
            count(Severity::Error),
            count(Severity::Warning)
        )
    });
    out
}

impl EnvReport {
    /// `plugin`: the variables are the Calls plugin's `MM_CALLS_*`, read from Mattermost.
    fn label(&self, plugin: bool) -> String {
        let (server, prefix) = if plugin {
            ("Mattermost's", "MM_CALLS_*")
        } else {
            ("RTCD's", "RTCD_*")
        };
        let from = match &self.source {
            crate::rtcd_env::Source::Process { pid, process } => {
                format!("{server} process ({process}, pid {pid})")
            }
            crate::rtcd_env::Source::Systemd { unit } => format!("systemd unit {unit}"),
            crate::rtcd_env::Source::Own => "this shell's environment".to_string(),
        };
        if self.variables.is_empty() {
            format!("{from}, no {prefix} variable")
        } else {
            format!("{from}: {}", self.variables.join(", "))
        }
    }
}

/// The header's line for a port: "nothing listens" only when the kernel shows no socket.
fn owner(o: &Option<Owner>, sockets: usize, v: OwnerVisibility) -> String {
    match o {
        Some(o) => format!("held by {} (pid {})", o.process, o.pid),
        None if sockets > 0 => format!("held by {}", v.unknown_holder_short()),
        None => "nothing listens".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_text() {
        let mut findings = vec![
            Finding::new("w", Severity::Warning, "s", "f"),
            Finding::new("e", Severity::Error, "s", "f"),
        ];
        sort_findings(&mut findings);
        let r = DoctorReport {
            schema: 1,
            tool_version: "0.1.0".into(),
            host: "h".into(),
            ok: ok(&findings),
            rtcd: Rtcd {
                version: None,
                api: "http://127.0.0.1:8045".into(),
                udp_owner: Some(Owner {
                    pid: 7,
                    process: "rtcd".into(),
                    exe: None,
                }),
                tcp_owner: None,
                udp_sockets: 1,
                tcp_sockets: 0,
                owner_visibility: OwnerVisibility::Full,
                env: Some(EnvReport {
                    source: crate::rtcd_env::Source::Systemd {
                        unit: "rtcd.service".into(),
                    },
                    variables: vec!["RTCD_RTC_ICEHOSTOVERRIDE".into()],
                    systemd_unit: Some("rtcd.service".into()),
                    notes: vec![],
                    ignored_own: vec![],
                }),
                pion_rules: Some(probe_proto::rtcd::PionRules::V4_2),
                version_source: Some("default".into()),
            },
            checks: vec![Check::new("udp_port", Status::Pass, "a\nb")],
            findings,
            started_at: "t".into(),
            duration_ms: 1,
            config: "defaults".into(),
            deployment: Default::default(),
            nat: None,
        };
        assert!(!r.ok);
        assert_eq!(r.exit_code(), 1);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["rtcd"]["udp_owner"]["pid"], 7);
        assert_eq!(v["rtcd"]["udp_owner"]["process"], "rtcd");
        assert!(v["rtcd"]["tcp_owner"].is_null());
        assert!(v["rtcd"]["version"].is_null());
        assert_eq!(v["checks"][0]["status"], "pass");
        assert_eq!(v["findings"][0]["id"], "e");
        assert_eq!(v["rtcd"]["env"]["source"], "systemd");
        assert_eq!(v["rtcd"]["env"]["unit"], "rtcd.service");
        assert_eq!(v["rtcd"]["env"]["variables"][0], "RTCD_RTC_ICEHOSTOVERRIDE");
        assert_eq!(v["rtcd"]["pion_rules"], "pion_ice_4_2");
        let back: DoctorReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let t = render_text(&r);
        assert!(t.contains("udp_port") && t.contains("FAIL"), "{t}");
    }

    /// The header's port lines: "nothing listens" only when the kernel shows no socket; a
    /// socket without a visible owner says why it has none.
    #[test]
    fn header_tells_a_hidden_holder_from_none() {
        let rtcd = Owner {
            pid: 7,
            process: "rtcd".into(),
            exe: None,
        };
        let cases = [
            (Some(rtcd), 1, OwnerVisibility::Full, "held by rtcd (pid 7)"),
            (None, 0, OwnerVisibility::NotRoot, "nothing listens"),
            (
                None,
                2,
                OwnerVisibility::NotRoot,
                "held by a process the doctor cannot identify (run as root)",
            ),
            (
                None,
                1,
                OwnerVisibility::Late,
                "held by a process not found before the deadline (run again)",
            ),
            (
                None,
                1,
                OwnerVisibility::Full,
                "held by a process outside the doctor's view (run it on the host)",
            ),
        ];
        for (o, sockets, v, want) in cases {
            assert_eq!(owner(&o, sockets, v), want);
        }
    }
}
