//! `probe-server results`: the per-site table from the store, or one site's runs (`--runs`).
//! Opens the store read-only, so it is safe beside a running server.

use super::store::{Store, StoredRun};
use crate::fail;
use probe_proto::report::rfc3339;
use probe_proto::sites::{self, csv_field, fmt_ms, fmt_pct, printable, short_time, Run};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug, Clone)]
pub struct ResultsArgs {
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only runs received in the last DURATION (e.g. 90m, 24h, 7d, 2w).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Duration>,
    /// List the site's runs one by one instead of the summary (needs --site).
    #[arg(long, requires = "site")]
    pub runs: bool,
    /// JSON instead of the table (with --runs: each run's full report included).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV instead of the table.
    #[arg(long)]
    pub csv: bool,
    /// The store to read (default: results.sqlite in the state directory; wins over --state-dir).
    #[arg(long, env = "PROBE_SERVER_STORE")]
    pub store: Option<PathBuf>,
    /// The server's state directory, when it is not the default.
    #[arg(long, env = "PROBE_SERVER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `90s`, `30m`, `24h`, `7d`, `2w`.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration; use e.g. 90m, 24h, 7d or 2w");
    let unit = s.chars().last().ok_or_else(bad)?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Where the server keeps its store by default, given its state directory.
pub fn default_store(state_dir: Option<PathBuf>) -> PathBuf {
    state_dir
        .unwrap_or_else(crate::cert::default_state_dir)
        .join("results.sqlite")
}

pub fn run(args: ResultsArgs) -> i32 {
    let path = args
        .store
        .clone()
        .unwrap_or_else(|| default_store(args.state_dir.clone()));
    let store = match Store::open_for_reading(&path) {
        Ok(s) => s,
        Err(e) => return fail(format!("{e}.")),
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let since_ms = args
        .since
        .map_or(0, |d| now_ms.saturating_sub(d.as_millis() as u64));
    let runs = match store.runs(args.site.as_deref(), since_ms) {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "cannot read the result store {}: {e}.",
                path.display()
            ))
        }
    };
    let out = if args.runs {
        match render_runs(&store, &runs, &args) {
            Ok(s) => s,
            Err(e) => {
                return fail(format!(
                    "cannot read the result store {}: {e}.",
                    path.display()
                ))
            }
        }
    } else {
        let figures: Vec<Run> = runs.into_iter().map(|r| r.run).collect();
        let table = sites::table(&figures);
        if args.json {
            sites::render_json(&table) + "\n"
        } else if args.csv {
            sites::render_csv(&table)
        } else {
            sites::render_text(&table)
        }
    };
    probe_shell::out!("{out}");
    0
}

fn render_runs(store: &Store, runs: &[StoredRun], args: &ResultsArgs) -> rusqlite::Result<String> {
    if args.json {
        let mut list = Vec::with_capacity(runs.len());
        for r in runs {
            list.push(RunJson::new(r, store.report_json(r.id)?));
        }
        return Ok(serde_json::to_string_pretty(&list).expect("values serialise") + "\n");
    }
    if args.csv {
        return Ok(runs_csv(runs));
    }
    Ok(runs_text(runs, args.site.as_deref().unwrap_or_default()))
}

/// `--runs --csv`: one line per run, the report's figures in columns.
fn runs_csv(runs: &[StoredRun]) -> String {
    let mut out = String::from(
        "id,received_at,site,ok,client_addr,reflexive_addr,tool_version,udp_reachable,\
         rtt_p50_ms,rtt_p95_ms,loss_up_pct,loss_down_pct,findings,udp_tested\n",
    );
    for r in runs {
        let e = r.run.echo;
        let num = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
        let cells = [
            r.id.to_string(),
            rfc3339(r.run.at_ms),
            csv_field(&r.run.site),
            r.run.ok.to_string(),
            csv_field(&r.client_addr),
            csv_field(r.reflexive_addr.as_deref().unwrap_or_default()),
            csv_field(&r.tool_version),
            r.run.udp_reachable.to_string(),
            num(e.and_then(|e| e.rtt_p50_ms)),
            num(e.and_then(|e| e.rtt_p95_ms)),
            num(e.and_then(|e| e.loss_up_pct)),
            num(e.and_then(|e| e.loss_down_pct)),
            csv_field(&r.run.findings.join(" ")),
            r.run.udp_tested.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// `--runs`: the site's runs as a table.
fn runs_text(runs: &[StoredRun], site: &str) -> String {
    if runs.is_empty() {
        return format!("No runs of site {}.\n", printable(site));
    }
    let header = [
        "TIME (UTC)",
        "RESULT",
        "CLIENT",
        "REFLEXIVE",
        "UDP OK",
        "RTT p50",
        "RTT p95",
        "LOSS UP",
        "LOSS DOWN",
        "FINDINGS",
    ];
    let right = [
        false, false, false, false, false, true, true, true, true, false,
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let e = r.run.echo;
            vec![
                short_time(&rfc3339(r.run.at_ms)),
                if r.run.ok { "PASS" } else { "FAIL" }.into(),
                r.client_addr.clone(),
                printable(r.reflexive_addr.as_deref().unwrap_or("-")),
                match (r.run.udp_tested, r.run.udp_reachable) {
                    (false, _) => "not tested",
                    (true, true) => "yes",
                    (true, false) => "no",
                }
                .into(),
                fmt_ms(e.and_then(|e| e.rtt_p50_ms)),
                fmt_ms(e.and_then(|e| e.rtt_p95_ms)),
                fmt_pct(e.and_then(|e| e.loss_up_pct)),
                fmt_pct(e.and_then(|e| e.loss_down_pct)),
                if r.run.findings.is_empty() {
                    "-".into()
                } else {
                    printable(&r.run.findings.join(" "))
                },
            ]
        })
        .collect();
    sites::columns(&header, &rows, &right)
}

/// One run in `--runs --json`, the report included as the client sent it.
#[derive(serde::Serialize)]
struct RunJson<'a> {
    id: i64,
    received_at: String,
    site: &'a str,
    ok: bool,
    client_addr: &'a str,
    reflexive_addr: Option<&'a str>,
    tool_version: &'a str,
    udp_reachable: bool,
    udp_tested: bool,
    rtt_p50_ms: Option<f64>,
    rtt_p95_ms: Option<f64>,
    loss_up_pct: Option<f64>,
    loss_down_pct: Option<f64>,
    findings: &'a [String],
    report: Box<serde_json::value::RawValue>,
}

impl<'a> RunJson<'a> {
    fn new(r: &'a StoredRun, json: String) -> Self {
        let e = r.run.echo;
        // Checked at upload, so it parses; should the file have been edited, show it as a string.
        let report = serde_json::value::RawValue::from_string(json.clone()).unwrap_or_else(|_| {
            serde_json::value::to_raw_value(&json).expect("a string serialises")
        });
        Self {
            id: r.id,
            received_at: rfc3339(r.run.at_ms),
            site: &r.run.site,
            ok: r.run.ok,
            client_addr: &r.client_addr,
            reflexive_addr: r.reflexive_addr.as_deref(),
            tool_version: &r.tool_version,
            udp_reachable: r.run.udp_reachable,
            udp_tested: r.run.udp_tested,
            rtt_p50_ms: e.and_then(|e| e.rtt_p50_ms),
            rtt_p95_ms: e.and_then(|e| e.rtt_p95_ms),
            loss_up_pct: e.and_then(|e| e.loss_up_pct),
            loss_down_pct: e.and_then(|e| e.loss_down_pct),
            findings: &r.run.findings,
            report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_since("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_since("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_since("2w"), Ok(Duration::from_secs(1_209_600)));
        for bad in ["", "d", "7", "-1d", "1.5h", "1y"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
