//! `probe-client rtcd-api`'s report: JSON (schema 1; fields only ever added) and text.

use probe_proto::report::{Finding, Severity};
use serde::{Deserialize, Serialize};

use super::procenv::EnvSource;

pub use probe_shell::report::Status;

/// probe-shell's check (`id`, `status`, `detail`) with where it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    #[serde(flatten)]
    pub check: probe_shell::report::Check,
    /// Always "direct": the Calls plugin connects to RTCD's own address whatever the proxy
    /// variables say (kept from schema 1, when a proxy route was tested too).
    pub via: String,
    /// The IPv4 address of RTCD the check was made against (`null` for the URL itself).
    pub address: Option<String>,
}

impl Check {
    pub fn new(
        id: &str,
        status: Status,
        detail: impl Into<String>,
        via: &str,
        address: Option<String>,
    ) -> Self {
        Check {
            check: probe_shell::report::Check::new(id, status, detail),
            via: via.into(),
            address,
        }
    }
}

/// The proxy Go's rules pick for RTCD's URL, which breaks the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyInfo {
    pub variable: String,
    pub proxy: String,
    /// Whether the plugin's requests work with the variable set: RTCD answered the CONNECT
    /// the plugin sends it with 200 (never, for RTCD).
    pub via_proxy_ok: bool,
    /// Whether everything works without the proxy (every address passed).
    pub direct_ok: bool,
    /// The NO_PROXY value that sends the plugin straight to RTCD.
    pub no_proxy: String,
}

/// One of RTCD's IPv4 addresses and how it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressResult {
    pub address: String,
    pub ok: bool,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiReport {
    pub schema: u32,
    pub tool_version: String,
    pub url: String,
    pub ok: bool,
    pub version: Option<String>,
    /// RTCD's IPv4 addresses, one plugin connection each.
    pub addresses: Vec<AddressResult>,
    pub checks: Vec<Check>,
    pub findings: Vec<Finding>,
    pub proxy: Option<ProxyInfo>,
    /// Where the proxy variables were read.
    pub proxy_env: EnvSource,
    /// The minimum the version was compared with (the plugin's min_rtcd_version).
    pub min_rtcd_version: String,
    pub duration_ms: u64,
}

pub fn render_text(r: &ApiReport) -> String {
    let mut out = format!(
        "probe-client rtcd-api {} → {}   RTCD {}   {:.1} s\n",
        r.tool_version,
        r.url,
        r.version.as_deref().unwrap_or("unknown"),
        r.duration_ms as f64 / 1000.0
    );
    out.push_str(&format!("proxy env:   {}\n", r.proxy_env.detail));
    if !r.addresses.is_empty() {
        let list: Vec<&str> = r.addresses.iter().map(|a| a.address.as_str()).collect();
        out.push_str(&format!(
            "addresses:   {} (IPv4 only, one plugin connection each)\n",
            list.join(", ")
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<14} {:<15} {:<8} detail\n",
        "check", "address", "status"
    ));
    for c in &r.checks {
        out.push_str(&format!(
            "{:<14} {:<15} {:<8} {}\n",
            c.check.id,
            c.address.as_deref().unwrap_or("-"),
            c.check.status.label(),
            c.check.detail
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
