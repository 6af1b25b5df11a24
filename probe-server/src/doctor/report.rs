//! The doctor's report: the JSON contract (schema 1; fields are only ever added) and the
//! human table.

use probe_proto::report::{Finding, Severity};
use serde::{Deserialize, Serialize};

use super::procnet::Owner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn new(id: &str, status: Status, detail: impl Into<String>) -> Self {
        Check {
            id: id.into(),
            status,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rtcd {
    pub version: Option<String>,
    pub api: String,
    pub udp_owner: Option<Owner>,
    pub tcp_owner: Option<Owner>,
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

/// Errors first, then warnings, then information; `ok` follows from them.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
}

pub fn ok(findings: &[Finding]) -> bool {
    !findings.iter().any(|f| f.severity == Severity::Error)
}

/// The human report: one table row per check, then findings with their fixes.
pub fn render_text(r: &DoctorReport) -> String {
    let mut out = format!(
        "probe-server doctor {} on {}   {}   {:.1} s\nRTCD config: {}\nRTCD API:    {}   version {}\nUDP port:    {}\nTCP port:    {}\n\n",
        r.tool_version,
        r.host,
        r.started_at,
        r.duration_ms as f64 / 1000.0,
        r.config,
        r.rtcd.api,
        r.rtcd.version.as_deref().unwrap_or("unknown"),
        owner(&r.rtcd.udp_owner),
        owner(&r.rtcd.tcp_owner),
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
    out.push_str(&if r.ok {
        format!(
            "\nVerdict: PASS — no error on this RTCD host ({} warning(s)).\n",
            count(Severity::Warning)
        )
    } else {
        format!(
            "\nVerdict: FAIL — {} error(s), {} warning(s) on this RTCD host.\n",
            count(Severity::Error),
            count(Severity::Warning)
        )
    });
    out
}

fn owner(o: &Option<Owner>) -> String {
    match o {
        Some(o) => format!("held by {} (pid {})", o.process, o.pid),
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
                }),
                tcp_owner: None,
            },
            checks: vec![Check::new("udp_port", Status::Pass, "a\nb")],
            findings,
            started_at: "t".into(),
            duration_ms: 1,
            config: "defaults".into(),
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
        let t = render_text(&r);
        assert!(t.contains("udp_port") && t.contains("FAIL"), "{t}");
    }
}
