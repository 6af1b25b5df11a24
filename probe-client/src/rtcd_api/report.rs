//! `probe-client rtcd-api`'s report: JSON (schema 1; fields only ever added) and text.

use probe_proto::report::{Finding, Severity};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub status: Status,
    pub detail: String,
    /// "direct" or "proxy": the route the check took.
    pub via: String,
}

impl Check {
    pub fn new(id: &str, status: Status, detail: impl Into<String>, via: &str) -> Self {
        Check {
            id: id.into(),
            status,
            detail: detail.into(),
            via: via.into(),
        }
    }
}

/// The proxy the Calls plugin would use, and which route worked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyInfo {
    pub variable: String,
    pub proxy: String,
    pub via_proxy_ok: bool,
    pub direct_ok: bool,
    /// The NO_PROXY value that sends the plugin straight to RTCD.
    pub no_proxy: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiReport {
    pub schema: u32,
    pub tool_version: String,
    pub url: String,
    pub ok: bool,
    pub version: Option<String>,
    pub checks: Vec<Check>,
    pub findings: Vec<Finding>,
    pub proxy: Option<ProxyInfo>,
    pub duration_ms: u64,
}

pub fn render_text(r: &ApiReport) -> String {
    let mut out = format!(
        "probe-client rtcd-api {} → {}   RTCD {}   {:.1} s\n\n",
        r.tool_version,
        r.url,
        r.version.as_deref().unwrap_or("unknown"),
        r.duration_ms as f64 / 1000.0
    );
    out.push_str(&format!(
        "{:<12} {:<7} {:<8} detail\n",
        "check", "via", "status"
    ));
    for c in &r.checks {
        let status = match c.status {
            Status::Pass => "pass",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        };
        out.push_str(&format!(
            "{:<12} {:<7} {:<8} {}\n",
            c.id, c.via, status, c.detail
        ));
    }
    out.push('\n');
    probe_proto::report::render_findings(&mut out, &r.findings);
    let errors = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    out.push_str(&if r.ok {
        "\nVerdict: PASS — the Calls plugin can use RTCD's API from here.\n".to_string()
    } else {
        format!("\nVerdict: FAIL — {errors} error(s): the Calls plugin cannot use RTCD's API from here.\n")
    });
    out
}
