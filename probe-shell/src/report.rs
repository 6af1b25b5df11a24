//! The check/status model of the host-side reports (`probe-server doctor`, `probe-client
//! rtcd-api`): each check has an id, a status and a one-line detail. The JSON is schema 1 of
//! both reports (`{"id", "status": "pass"|"warn"|"fail"|"skipped", "detail"}`); a report that
//! adds fields to its checks flattens [`Check`] into its own struct.

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

impl Status {
    /// How the human tables show it: problems in capitals.
    pub fn label(self) -> &'static str {
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

/// Errors first, then warnings, then information (stable within a severity).
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
}

/// A report is `ok` when no finding is an error.
pub fn ok(findings: &[Finding]) -> bool {
    !findings.iter().any(|f| f.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_json_and_labels() {
        let c = Check::new("udp_port", Status::Skipped, "skipped: why");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "udp_port", "status": "skipped", "detail": "skipped: why"})
        );
        assert_eq!(serde_json::from_value::<Check>(v).unwrap(), c);
        let labels: Vec<&str> = [Status::Pass, Status::Warn, Status::Fail, Status::Skipped]
            .iter()
            .map(|s| s.label())
            .collect();
        assert_eq!(labels, ["pass", "WARN", "FAIL", "skipped"]);
    }

    #[test]
    fn errors_sort_first_and_decide_ok() {
        let mut f = vec![
            Finding::new("i", Severity::Info, "s", "f"),
            Finding::new("w", Severity::Warning, "s", "f"),
            Finding::new("e", Severity::Error, "s", "f"),
        ];
        assert!(!ok(&f));
        sort_findings(&mut f);
        let ids: Vec<&str> = f.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["e", "w", "i"]);
        f.remove(0);
        assert!(ok(&f));
    }
}
