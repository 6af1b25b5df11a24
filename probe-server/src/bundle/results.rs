//! The latest probe-client reports the server stored (`probe-server results` reads the same
//! store), for the bundle.

use std::path::{Path, PathBuf};

use crate::results::store::{OpenError, Store};

/// How far back the bundle looks, and how many runs it keeps at most (the newest).
const WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;
const MAX_RUNS: usize = 100;

/// The store `probe-server` writes by default: `results.sqlite` in its state directory.
pub fn default_path(state_dir: Option<PathBuf>) -> PathBuf {
    crate::results::default_store(state_dir)
}

/// `probe-results.json` with the latest runs, or a note saying why there are none.
pub fn file(path: &Path, now_ms: u64) -> (String, String) {
    let note = |why: String| ("probe-results.txt".to_string(), format!("# {why}\n"));
    let store = match Store::open_for_reading(path) {
        Ok(s) => s,
        Err(OpenError::Missing(p)) => {
            return note(format!(
                "no result store at {}: this server keeps no probe-client results (or give its --store)",
                p.display()
            ))
        }
        Err(e) => return note(format!("the result store could not be read: {e}")),
    };
    let runs = match store.runs(None, now_ms.saturating_sub(WINDOW_MS)) {
        Ok(r) => r,
        Err(e) => {
            return note(format!(
                "the result store {} could not be read: {e}",
                path.display()
            ))
        }
    };
    if runs.is_empty() {
        return note(format!(
            "the result store {} has no run from the last 30 days",
            path.display()
        ));
    }
    let latest = &runs[runs.len().saturating_sub(MAX_RUNS)..];
    let items: Vec<serde_json::Value> = latest
        .iter()
        .map(|r| {
            let report = store
                .report_json(r.id)
                .ok()
                .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                .unwrap_or(serde_json::Value::Null);
            serde_json::json!({
                "received_at": probe_proto::report::rfc3339(r.run.at_ms),
                "site": r.run.site,
                "client_addr": r.client_addr,
                "report": report,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "store": path.display().to_string(),
        "runs_in_window": runs.len(),
        "runs": items,
    });
    (
        "probe-results.json".into(),
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_stores_are_said_so() {
        let dir = std::env::temp_dir().join(format!("bundle-results-{}", std::process::id()));
        let path = dir.join("results.sqlite");
        let (name, text) = file(&path, 0);
        assert_eq!(name, "probe-results.txt");
        assert!(text.contains("no result store at"), "{text}");
        Store::open_for_writing(&path).unwrap();
        let (name, text) = file(&path, 0);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(name, "probe-results.txt");
        assert!(text.contains("has no run"), "{text}");
    }
}
