//! Sites side by side: the per-site table that `probe-server results` prints from its store and
//! `probe-client compare` prints from saved reports, so both show the same figures for the same
//! runs. Pure: runs in, rows and text/JSON/CSV out.
//!
//! Figures are about the UDP media path (`udp.echo`): a run without a UDP echo (UDP blocked, or
//! `--no-udp`) counts in runs, pass rate and findings, but has no RTT or loss to add. Loss is
//! pooled over packets rather than averaged over runs, so a long run weighs more than a short one.

use crate::catalog::FindingId;
use crate::report::{rfc3339, Report};
use crate::stats::percentile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the `--json` output of the table (`{"schema":1,"sites":[…]}`).
pub const SCHEMA: u32 = 1;
/// Findings shown per site, most frequent first.
pub const TOP_FINDINGS: usize = 3;
/// Longest site name the results store keeps, in characters: a label in tables and metrics.
pub const MAX_SITE_CHARS: usize = 64;
/// What a server without a result store answers an upload: its choice, not a refusal to warn
/// the user about (every other answer that did not keep a report is).
pub const NO_STORE: &str = "this server keeps no results";

/// Whether the results store keeps `site`: 1 to [`MAX_SITE_CHARS`] characters once trimmed.
/// The client checks its `--site` with it before a run, the server each upload.
pub fn check_site(site: &str) -> Result<(), String> {
    let n = site.trim().chars().count();
    if n == 0 || site.chars().count() > MAX_SITE_CHARS {
        return Err(format!(
            "the site name must have 1 to {MAX_SITE_CHARS} printable characters"
        ));
    }
    Ok(())
}

/// What the table needs of one run, extracted from its report (the server keeps these figures in
/// columns, so a year of runs is aggregated without parsing a year of JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// When it ran, Unix ms: the server's receive time when the server has it (client clocks
    /// drift), else the report's `started_at`.
    pub at_ms: u64,
    pub site: String,
    pub ok: bool,
    pub udp_reachable: bool,
    /// False for a run that did not test UDP (`--no-udp`): its `udp_reachable` says nothing.
    pub udp_tested: bool,
    /// The UDP echo's figures; None when the run had no UDP echo.
    pub echo: Option<EchoFigures>,
    /// Finding ids, in report order.
    pub findings: Vec<String>,
    /// What a short test misses (path MTU, a cut path), for the columns that compare sites.
    pub path: PathFigures,
}

/// The path figures of one run that sites are compared on.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathFigures {
    /// Largest UDP payload that crossed unfragmented client → server, as the MTU rule judges it
    /// ([`crate::path::mtu::DirMtu::judged`]): `Some(0)` not even the smallest size; None: not
    /// measured.
    pub mtu_up: Option<u16>,
    /// The same, server → client.
    pub mtu_down: Option<u16>,
    /// Seconds into the run at which the path stopped for good (`path_cut_after`); None: it
    /// did not, or the run was too short to tell.
    pub cut_after_s: Option<f64>,
}

impl PathFigures {
    pub fn from_report(r: &Report) -> Self {
        let udp = r.mtu.as_ref().and_then(|m| m.udp.as_ref());
        let cut = r
            .findings
            .iter()
            .filter(|f| f.id == FindingId::PathCutAfter.as_str())
            .find_map(|f| f.path.as_ref().and_then(|p| p.cut_after_s));
        Self {
            mtu_up: udp.and_then(|u| u.up.judged()),
            mtu_down: udp.and_then(|u| u.down.judged()),
            cut_after_s: cut,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoFigures {
    pub sent: u64,
    pub loss_up_pct: Option<f64>,
    pub loss_down_pct: Option<f64>,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
}

impl Run {
    pub fn from_report(r: &Report, at_ms: u64) -> Self {
        Self {
            at_ms,
            site: r.site.clone(),
            ok: r.ok,
            udp_reachable: r.udp.reachable,
            udp_tested: !r.udp.skipped,
            echo: r.udp.echo.as_ref().map(|e| EchoFigures {
                sent: e.sent,
                loss_up_pct: e.loss_up_pct,
                loss_down_pct: e.loss_down_pct,
                rtt_p50_ms: e.rtt_ms.map(|r| r.p50),
                rtt_p95_ms: e.rtt_ms.map(|r| r.p95),
            }),
            findings: r.findings.iter().map(|f| f.id.clone()).collect(),
            path: PathFigures::from_report(r),
        }
    }

    /// A run dated by the report's own `started_at`; None when that is not our RFC 3339 form.
    pub fn dated(r: &Report) -> Option<Self> {
        Some(Self::from_report(r, parse_rfc3339(&r.started_at)?))
    }
}

/// How many of a site's runs reported a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingCount {
    pub id: String,
    pub runs: u64,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteRow {
    pub site: String,
    pub runs: u64,
    pub passed: u64,
    pub pass_rate_pct: f64,
    pub first_run: String,
    pub last_run: String,
    /// Start of the current streak of failed runs; null when the last run passed.
    pub failing_since: Option<String>,
    /// Runs in which UDP answered at all.
    pub udp_reachable: u64,
    /// Median over runs of each run's median UDP RTT.
    pub rtt_p50_ms: Option<f64>,
    /// Median over runs of each run's 95th-percentile UDP RTT (a typical run's tail).
    pub rtt_p95_ms: Option<f64>,
    /// Client → server UDP loss, pooled over all echo packets of the site.
    pub loss_up_pct: Option<f64>,
    /// Server → client UDP loss, pooled over the packets that reached the server.
    pub loss_down_pct: Option<f64>,
    pub top_findings: Vec<FindingCount>,
    /// Smallest over the runs that measured it of the largest UDP payload that crossed
    /// client → server unfragmented (0: not even 1,200 B): the worst the site has seen.
    #[serde(default)]
    pub mtu_up_min: Option<u16>,
    /// The same, server → client.
    #[serde(default)]
    pub mtu_down_min: Option<u16>,
    /// Runs whose path stopped for good mid-run (`path_cut_after`).
    #[serde(default)]
    pub path_cut_runs: u64,
    /// Median over those runs of the time into the run at which it stopped.
    #[serde(default)]
    pub path_cut_after_s: Option<f64>,
    /// Runs that tested UDP (all but `--no-udp` ones): what `udp_reachable` counts out of.
    #[serde(default)]
    pub udp_tested: u64,
}

/// The whole table, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub schema: u32,
    pub sites: Vec<SiteRow>,
}

/// Groups runs by site (sorted by name) and computes each row.
pub fn table(runs: &[Run]) -> Table {
    let mut by_site: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_site.entry(&r.site).or_default().push(r);
    }
    let sites = by_site
        .into_iter()
        .map(|(site, mut runs)| {
            runs.sort_by_key(|r| r.at_ms);
            row(site, &runs)
        })
        .collect();
    Table {
        schema: SCHEMA,
        sites,
    }
}

/// `runs` sorted by time, oldest first, non-empty.
fn row(site: &str, runs: &[&Run]) -> SiteRow {
    let n = runs.len() as u64;
    let passed = runs.iter().filter(|r| r.ok).count() as u64;
    let failing_since = runs
        .iter()
        .rev()
        .take_while(|r| !r.ok)
        .last()
        .map(|r| rfc3339(r.at_ms));
    let echoes: Vec<&EchoFigures> = runs.iter().filter_map(|r| r.echo.as_ref()).collect();
    let mut p50s: Vec<f64> = echoes.iter().filter_map(|e| e.rtt_p50_ms).collect();
    let mut p95s: Vec<f64> = echoes.iter().filter_map(|e| e.rtt_p95_ms).collect();
    p50s.sort_by(f64::total_cmp);
    p95s.sort_by(f64::total_cmp);
    let mut cuts: Vec<f64> = runs.iter().filter_map(|r| r.path.cut_after_s).collect();
    cuts.sort_by(f64::total_cmp);
    // Up: each run's loss weighs by the packets it sent. Down: by the packets that reached the
    // server, which is what the server sent back.
    let up = pooled(
        echoes
            .iter()
            .filter_map(|e| e.loss_up_pct.map(|l| (l, e.sent as f64))),
    );
    let down = pooled(echoes.iter().filter_map(|e| {
        let reached = e.sent as f64 * (1.0 - e.loss_up_pct.unwrap_or(0.0) / 100.0);
        e.loss_down_pct.map(|l| (l, reached))
    }));
    SiteRow {
        site: site.to_string(),
        runs: n,
        passed,
        pass_rate_pct: passed as f64 * 100.0 / n.max(1) as f64,
        first_run: runs.first().map_or_else(String::new, |r| rfc3339(r.at_ms)),
        last_run: runs.last().map_or_else(String::new, |r| rfc3339(r.at_ms)),
        failing_since,
        udp_reachable: runs.iter().filter(|r| r.udp_reachable).count() as u64,
        rtt_p50_ms: percentile(&p50s, 50.0),
        rtt_p95_ms: percentile(&p95s, 50.0),
        loss_up_pct: up,
        loss_down_pct: down,
        top_findings: top_findings(runs),
        mtu_up_min: runs.iter().filter_map(|r| r.path.mtu_up).min(),
        mtu_down_min: runs.iter().filter_map(|r| r.path.mtu_down).min(),
        path_cut_runs: cuts.len() as u64,
        path_cut_after_s: percentile(&cuts, 50.0),
        udp_tested: runs.iter().filter(|r| r.udp_tested).count() as u64,
    }
}

/// Weighted mean of `(pct, weight)`; None when nothing has weight.
fn pooled(parts: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let (sum, total) = parts
        .filter(|(_, w)| *w > 0.0)
        .fold((0.0, 0.0), |(s, t), (v, w)| (s + v * w, t + w));
    (total > 0.0).then(|| sum / total)
}

fn top_findings(runs: &[&Run]) -> Vec<FindingCount> {
    // id → (runs that reported it, best position in a report's list).
    let mut counts: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for r in runs {
        let mut seen: Vec<&str> = Vec::new();
        for (pos, id) in r.findings.iter().enumerate() {
            // A finding listed twice in one report still counts one run.
            if seen.contains(&id.as_str()) {
                continue;
            }
            seen.push(id);
            let e = counts.entry(id).or_insert((0, pos));
            e.0 += 1;
            e.1 = e.1.min(pos);
        }
    }
    let mut v: Vec<(&str, u64, usize)> = counts
        .into_iter()
        .map(|(id, (n, pos))| (id, n, pos))
        .collect();
    // Most frequent first; ties in report order (the client lists errors first), then by id.
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(b.0)));
    v.truncate(TOP_FINDINGS);
    v.into_iter()
        .map(|(id, runs, _)| FindingCount {
            id: id.to_string(),
            runs,
        })
        .collect()
}

/// Parses an RFC 3339 UTC instant (`YYYY-MM-DDTHH:MM:SS[.fff]Z`, as `rfc3339` writes it) back
/// to Unix ms; instants before 1970 or with a non-UTC offset are refused.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    if !s.ends_with('Z') {
        return None;
    }
    let ts: jiff::Timestamp = s.parse().ok()?;
    u64::try_from(ts.as_millisecond()).ok()
}

/// `0.12 ms`, `15.3 ms`, `150 ms` or `n/a`.
pub fn fmt_ms(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v >= 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.2} ms"),
    }
}

/// `9.8 %` or `n/a`.
pub fn fmt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |p| format!("{p:.1} %"))
}

/// `2026-11-26T07:50:00.123Z` → `2026-11-26 07:50:00` for the text table.
pub fn short_time(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}

fn findings_cell(f: &[FindingCount], runs: u64) -> String {
    if f.is_empty() {
        return "-".into();
    }
    f.iter()
        .map(|c| {
            if runs == 1 {
                c.id.clone()
            } else {
                format!("{}({}/{runs})", c.id, c.runs)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Site names come from clients: keep control characters out of the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if is_unsafe_char(c) { '?' } else { c })
        .collect()
}

/// Lays out cells in columns; `right[i]` right-aligns column i (numbers).
pub fn columns(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            let last = i + 1 == cells.len();
            if right.get(i).copied().unwrap_or(false) {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if !last {
                    out.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                out.push_str("  ");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The human table, then one line per failing site saying since when.
pub fn render_text(t: &Table) -> String {
    if t.sites.is_empty() {
        return "No runs.\n".into();
    }
    let header = [
        "SITE",
        "RUNS",
        "PASS",
        "LAST RUN (UTC)",
        "UDP OK",
        "RTT p50",
        "RTT p95",
        "LOSS UP",
        "LOSS DOWN",
        "MTU UP/DOWN",
        "FINDINGS",
    ];
    let right = [
        false, true, true, false, true, true, true, true, true, true, false,
    ];
    let rows: Vec<Vec<String>> = t
        .sites
        .iter()
        .map(|s| {
            vec![
                printable(&s.site),
                s.runs.to_string(),
                format!("{:.0} %", s.pass_rate_pct),
                short_time(&s.last_run),
                udp_cell(s),
                fmt_ms(s.rtt_p50_ms),
                fmt_ms(s.rtt_p95_ms),
                fmt_pct(s.loss_up_pct),
                fmt_pct(s.loss_down_pct),
                fmt_mtu(s.mtu_up_min, s.mtu_down_min),
                printable(&findings_cell(&s.top_findings, s.runs)),
            ]
        })
        .collect();
    let mut out = columns(&header, &rows, &right);
    let mut notes = Vec::new();
    for s in t.sites.iter().filter(|s| s.failing_since.is_some()) {
        notes.push(format!(
            "{} fails since {} UTC",
            printable(&s.site),
            short_time(s.failing_since.as_deref().unwrap_or_default())
        ));
    }
    for s in t.sites.iter().filter(|s| s.path_cut_runs > 0) {
        notes.push(format!(
            "{}: the path stopped mid-run in {} of {} runs, after {} (median)",
            printable(&s.site),
            s.path_cut_runs,
            s.runs,
            s.path_cut_after_s
                .map_or_else(|| "n/a".into(), |v| format!("{v:.1} s"))
        ));
    }
    if !notes.is_empty() {
        out.push('\n');
    }
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

/// The worst largest-unfragmented sizes, `1252/1472`; `<1200` when not even the smallest
/// probe passed; `n/a` for a direction never measured.
fn fmt_mtu(up: Option<u16>, down: Option<u16>) -> String {
    let one = |v: Option<u16>| match v {
        None => "n/a".to_string(),
        Some(0) => "<1200".to_string(),
        Some(v) => v.to_string(),
    };
    if up.is_none() && down.is_none() {
        return "n/a".into();
    }
    format!("{}/{}", one(up), one(down))
}

pub fn render_json(t: &Table) -> String {
    serde_json::to_string_pretty(t).expect("the table serialises")
}

/// One CSV text field: control characters removed, a leading `= + - @`, TAB or CR (which a
/// spreadsheet would run as a formula) prefixed with `'`, quoted per RFC 4180 when it needs to be.
pub fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let mut s = strip_controls(s);
    if formula {
        s.insert(0, '\'');
    }
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Whether a character can rewrite what a terminal or a log line shows: C0/C1 controls
/// (newline, escape sequences) and the Unicode bidirectional overrides and isolates.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` without the characters of [`is_unsafe_char`].
pub fn strip_controls(s: &str) -> String {
    s.chars().filter(|c| !is_unsafe_char(*c)).collect()
}

/// A text that came from the network, made safe for a log, a store, a terminal or a CSV:
/// unsafe characters removed, then at most `max` characters (an ellipsis marks a cut).
pub fn clean_text(s: &str, max: usize) -> String {
    let s = strip_controls(s);
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.3}"))
}

/// Runs UDP answered in, out of the runs that tested it.
fn udp_cell(s: &SiteRow) -> String {
    if s.udp_tested == 0 {
        "not tested".into()
    } else {
        format!("{}/{}", s.udp_reachable, s.udp_tested)
    }
}

/// Same columns as the JSON; empty cells where JSON has null; findings as `id:runs;…`.
pub fn render_csv(t: &Table) -> String {
    let mut out = String::from(
        "site,runs,passed,pass_rate_pct,first_run,last_run,failing_since,udp_reachable,\
         rtt_p50_ms,rtt_p95_ms,loss_up_pct,loss_down_pct,top_findings,mtu_up_min,mtu_down_min,\
         path_cut_runs,path_cut_after_s,udp_tested\n",
    );
    for s in &t.sites {
        let findings: Vec<String> = s
            .top_findings
            .iter()
            .map(|f| format!("{}:{}", f.id, f.runs))
            .collect();
        let cells = [
            csv_field(&s.site),
            s.runs.to_string(),
            s.passed.to_string(),
            format!("{:.1}", s.pass_rate_pct),
            s.first_run.clone(),
            s.last_run.clone(),
            s.failing_since.clone().unwrap_or_default(),
            s.udp_reachable.to_string(),
            num(s.rtt_p50_ms),
            num(s.rtt_p95_ms),
            num(s.loss_up_pct),
            num(s.loss_down_pct),
            csv_field(&findings.join(";")),
            s.mtu_up_min.map_or_else(String::new, |v| v.to_string()),
            s.mtu_down_min.map_or_else(String::new, |v| v.to_string()),
            s.path_cut_runs.to_string(),
            num(s.path_cut_after_s),
            s.udp_tested.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn site_names_are_one_to_64_characters() {
        assert!(super::check_site("berlin").is_ok());
        assert!(super::check_site(&"é".repeat(super::MAX_SITE_CHARS)).is_ok());
        for bad in ["", "   ", &"x".repeat(super::MAX_SITE_CHARS + 1)] {
            let e = super::check_site(bad).unwrap_err();
            assert!(e.contains("1 to 64"), "{e}");
        }
    }

    use super::*;
    use crate::report::{Finding, Severity, TcpResult, UdpResult, SCHEMA as REPORT_SCHEMA};
    use crate::stats::{EchoSummary, RttSummary};

    fn echo(sent: u64, up: f64, down: f64, p50: f64, p95: f64) -> EchoSummary {
        EchoSummary {
            sent,
            received: sent,
            loss_up_pct: Some(up),
            loss_down_pct: Some(down),
            rtt_ms: Some(RttSummary {
                min: p50 / 2.0,
                p50,
                p95,
                p99: p95,
                max: p95 * 2.0,
            }),
            jitter_ms: 0.1,
            reordered: 0,
            duplicates: 0,
        }
    }

    fn run(site: &str, at_ms: u64, udp: Option<EchoSummary>, findings: &[(&str, Severity)]) -> Run {
        let mut r = Report {
            schema: REPORT_SCHEMA,
            tool_version: "0.1.0".into(),
            site: site.into(),
            server: "203.0.113.2:8443".into(),
            started_at: rfc3339(at_ms),
            duration_ms: 1000,
            ok: true,
            udp: UdpResult {
                reachable: udp.is_some(),
                echo: udp,
                ..UdpResult::default()
            },
            tcp: TcpResult {
                reachable: true,
                ..TcpResult::default()
            },
            findings: vec![],
            server_version: None,
            server_pin: None,
            ice: None,
            turn: None,
            mtu: None,
            live: false,
            browser: None,
        };
        r.set_findings(
            findings
                .iter()
                .map(|(id, sev)| Finding::new(id, *sev, "s", "f"))
                .collect(),
        );
        Run::from_report(&r, at_ms)
    }

    const T0: u64 = 1_795_651_200_000; // 2026-11-26T00:00:00Z

    #[test]
    fn rows_per_site_sorted_by_name() {
        let runs = vec![
            run("b-office", T0, Some(echo(100, 0.0, 0.0, 10.0, 20.0)), &[]),
            run(
                "a-home",
                T0 + 1000,
                Some(echo(100, 0.0, 0.0, 30.0, 40.0)),
                &[],
            ),
            run(
                "b-office",
                T0 + 2000,
                Some(echo(100, 0.0, 0.0, 12.0, 22.0)),
                &[],
            ),
        ];
        let t = table(&runs);
        assert_eq!(t.schema, SCHEMA);
        let names: Vec<&str> = t.sites.iter().map(|s| s.site.as_str()).collect();
        assert_eq!(names, ["a-home", "b-office"]);
        assert_eq!(t.sites[1].runs, 2);
        assert_eq!(t.sites[1].first_run, rfc3339(T0));
        assert_eq!(t.sites[1].last_run, rfc3339(T0 + 2000));
        assert_eq!(t.sites[1].pass_rate_pct, 100.0);
        assert_eq!(t.sites[1].failing_since, None);
    }

    #[test]
    fn loss_is_pooled_over_packets() {
        // 10 % of 900 and 0 % of 100 → 90 lost of 1000 = 9 %, not the 5 % a mean of runs gives.
        let runs = vec![
            run("s", T0, Some(echo(900, 10.0, 0.0, 1.0, 2.0)), &[]),
            run("s", T0 + 1, Some(echo(100, 0.0, 0.0, 1.0, 2.0)), &[]),
        ];
        let s = &table(&runs).sites[0];
        assert!((s.loss_up_pct.unwrap() - 9.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.loss_down_pct, Some(0.0));
    }

    #[test]
    fn loss_down_weighs_packets_that_reached_the_server() {
        // Run 1: 1000 sent, 50 % lost up → 500 reached, 20 % of those lost down (100).
        // Run 2: 500 sent, none lost up, none down. Down loss = 100 / 1000 = 10 %.
        let runs = vec![
            run("s", T0, Some(echo(1000, 50.0, 20.0, 1.0, 2.0)), &[]),
            run("s", T0 + 1, Some(echo(500, 0.0, 0.0, 1.0, 2.0)), &[]),
        ];
        let s = &table(&runs).sites[0];
        assert!((s.loss_down_pct.unwrap() - 10.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn rtt_is_the_median_over_runs() {
        let runs: Vec<Run> = [5.0, 1.0, 3.0]
            .iter()
            .enumerate()
            .map(|(i, p50)| {
                run(
                    "s",
                    T0 + i as u64,
                    Some(echo(10, 0.0, 0.0, *p50, p50 * 10.0)),
                    &[],
                )
            })
            .collect();
        let s = &table(&runs).sites[0];
        assert_eq!(s.rtt_p50_ms, Some(3.0));
        assert_eq!(s.rtt_p95_ms, Some(30.0));
    }

    #[test]
    fn runs_that_did_not_test_udp_are_not_counted_as_blocked() {
        let skipped = |at| Run {
            udp_tested: false,
            ..run("tcp-only", at, None, &[])
        };
        let mut runs = vec![
            skipped(T0),
            run("tcp-only", T0 + 1, Some(echo(600, 0.0, 0.0, 1.0, 2.0)), &[]),
        ];
        let s = &table(&runs).sites[0];
        assert_eq!((s.udp_reachable, s.udp_tested, s.runs), (1, 1, 2));
        let text = render_text(&table(&runs));
        assert!(text.contains(" 1/1 "), "{text}");
        runs.pop();
        let t = table(&runs);
        assert_eq!((t.sites[0].udp_reachable, t.sites[0].udp_tested), (0, 0));
        assert!(
            render_text(&t).contains("not tested"),
            "{}",
            render_text(&t)
        );
        let csv = render_csv(&t);
        let (head, line) = csv.split_once('\n').unwrap();
        assert!(
            head.ends_with(",udp_tested") && line.trim_end().ends_with(",0"),
            "{csv}"
        );
        // From a report: `--no-udp` sets `udp.skipped`.
        let mut r: Report = serde_json::from_value(serde_json::json!({
            "schema": 1, "tool_version": "0.1.0", "site": "s", "server": "203.0.113.2:8443",
            "started_at": "2026-11-26T08:00:00.000Z", "duration_ms": 1, "ok": true,
            "udp": {"reachable": false, "stun": {"mapped": null, "rtt_ms": null}, "echo": null},
            "tcp": {"reachable": true}, "findings": []
        }))
        .unwrap();
        assert!(Run::from_report(&r, 0).udp_tested);
        r.udp.skipped = true;
        assert!(!Run::from_report(&r, 0).udp_tested);
    }

    #[test]
    fn udp_blocked_site_has_no_udp_figures_and_fails() {
        let runs = vec![run(
            "blocked",
            T0,
            None,
            &[("udp_blocked", Severity::Error)],
        )];
        let s = &table(&runs).sites[0];
        assert_eq!(s.passed, 0);
        assert_eq!(s.pass_rate_pct, 0.0);
        assert_eq!(s.udp_reachable, 0);
        assert_eq!(
            (s.rtt_p50_ms, s.loss_up_pct, s.loss_down_pct),
            (None, None, None)
        );
        assert_eq!(s.failing_since, Some(rfc3339(T0)));
        let text = render_text(&table(&runs));
        assert!(text.contains("n/a"), "{text}");
        assert!(
            text.contains("blocked fails since 2026-11-26 00:00:00 UTC"),
            "{text}"
        );
    }

    #[test]
    fn failing_since_is_the_start_of_the_last_streak() {
        let e = || Some(echo(10, 0.0, 0.0, 1.0, 2.0));
        let bad = [("packet_loss", Severity::Error)];
        let runs = vec![
            run("s", T0, e(), &bad),
            run("s", T0 + 1000, e(), &[]),
            run("s", T0 + 2000, e(), &bad),
            run("s", T0 + 3000, e(), &bad),
        ];
        let s = &table(&runs).sites[0];
        assert_eq!(s.failing_since, Some(rfc3339(T0 + 2000)));
        assert_eq!(s.passed, 1);
        assert_eq!(s.pass_rate_pct, 25.0);
    }

    #[test]
    fn findings_most_frequent_first_and_capped() {
        let e = || Some(echo(10, 0.0, 0.0, 1.0, 2.0));
        let w = Severity::Warning;
        let runs = vec![
            run("s", T0, e(), &[("a", w), ("b", w), ("b", w)]),
            run("s", T0 + 1, e(), &[("b", w), ("c", w)]),
            run("s", T0 + 2, e(), &[("d", w), ("c", w)]),
        ];
        let f = &table(&runs).sites[0].top_findings;
        let got: Vec<(&str, u64)> = f.iter().map(|c| (c.id.as_str(), c.runs)).collect();
        // b and c tie at 2: b came first in a report; a and d tie at 1 and position: by id.
        assert_eq!(got, [("b", 2), ("c", 2), ("a", 1)]);
        // The client lists errors first; a tie keeps that order rather than the alphabet's.
        let runs = vec![run(
            "s",
            T0,
            None,
            &[
                ("udp_blocked", Severity::Error),
                ("pin_unverified", Severity::Info),
            ],
        )];
        let f = &table(&runs).sites[0].top_findings;
        assert_eq!(f[0].id, "udp_blocked");
    }

    #[test]
    fn json_and_csv_carry_the_same_figures() {
        let runs = vec![
            run(
                "lossy, \"east\"",
                T0,
                Some(echo(600, 10.0, 0.5, 1.5, 3.0)),
                &[("packet_loss", Severity::Error)],
            ),
            run("clean", T0, Some(echo(600, 0.0, 0.0, 0.5, 0.9)), &[]),
        ];
        let t = table(&runs);
        let back: Table = serde_json::from_str(&render_json(&t)).unwrap();
        assert_eq!(back, t);
        let csv = render_csv(&t);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].split(',').count(), 18);
        assert!(lines[1].starts_with("clean,1,1,100.0,"), "{csv}");
        assert!(
            lines[2].starts_with("\"lossy, \"\"east\"\"\",1,0,0.0,"),
            "{csv}"
        );
        assert!(lines[2].contains(",10.000,0.500,packet_loss:1"), "{csv}");
    }

    #[test]
    fn text_table_aligns_and_escapes_control_characters() {
        let runs = vec![
            run("a\u{1b}[31m", T0, Some(echo(600, 0.0, 0.0, 0.5, 0.9)), &[]),
            run(
                "longer-site-name",
                T0,
                Some(echo(600, 10.0, 0.0, 15.0, 150.0)),
                &[("packet_loss", Severity::Error)],
            ),
        ];
        let text = render_text(&table(&runs));
        assert!(!text.contains('\u{1b}'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        // Header and both rows put RUNS' right edge in the same column.
        let edge = |l: &str, pat: &str| l.find(pat).map(|i| i + pat.len());
        assert_eq!(edge(lines[0], "RUNS"), edge(lines[1], " 1"));
        assert!(
            lines[2].contains("10.0 %")
                && lines[2].contains("150 ms")
                && lines[2].contains("15.0 ms"),
            "{text}"
        );
        assert!(text.contains("longer-site-name fails since"), "{text}");
        assert_eq!(render_text(&table(&[])), "No runs.\n");
    }

    #[test]
    fn a_saved_report_is_dated_by_its_start() {
        let r = run("s", T0 + 42, Some(echo(600, 10.0, 0.5, 1.5, 3.0)), &[]);
        let mut report: Report = Report {
            schema: REPORT_SCHEMA,
            tool_version: "t".into(),
            site: "s".into(),
            server: "h:1".into(),
            started_at: rfc3339(T0 + 42),
            duration_ms: 1,
            ok: true,
            udp: UdpResult {
                reachable: true,
                echo: Some(echo(600, 10.0, 0.5, 1.5, 3.0)),
                ..UdpResult::default()
            },
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
        assert_eq!(Run::dated(&report), Some(r));
        report.started_at = "yesterday".into();
        assert_eq!(Run::dated(&report), None);
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_defused() {
        for (cell, want) in [
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("+1+1", "'+1+1"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tcmd", "'cmd"),
            ("\rcmd", "'cmd"),
            ("berlin-office", "berlin-office"),
            ("a,b", "\"a,b\""),
        ] {
            assert_eq!(csv_field(cell), want, "{cell:?}");
        }
        let mut r = run("=cmd|' /C calc'!A0", 1, None, &[]);
        r.findings = vec!["-x".into()];
        let csv = render_csv(&table(&[r]));
        let row = csv.lines().nth(1).unwrap();
        assert!(row.starts_with("'=cmd|"), "{row}");
        assert!(row.contains(",'-x:1,"), "{row}");
    }

    #[test]
    fn clean_text_strips_controls_and_bidi_and_caps_length() {
        assert_eq!(clean_text("a\nb\x1b[31mc\u{202e}d", 100), "ab[31mcd");
        assert_eq!(clean_text("abcdef", 4), "abc…");
        assert_eq!(clean_text("abc", 3), "abc");
        assert_eq!(printable("x\ny\u{2066}"), "x?y?");
    }

    /// A run with the MTU figures of a 1280 hop (1252 both ways with DF) and, optionally, a
    /// path cut after `cut_s`.
    fn path_run(site: &str, at_ms: u64, up: u16, cut_s: Option<f64>) -> Run {
        let mut r = Report {
            schema: REPORT_SCHEMA,
            tool_version: "0.1.0".into(),
            site: site.into(),
            server: "203.0.113.2:8443".into(),
            started_at: rfc3339(at_ms),
            duration_ms: 30_000,
            ok: cut_s.is_none(),
            udp: UdpResult::default(),
            tcp: TcpResult::default(),
            findings: vec![],
            server_version: None,
            server_pin: None,
            ice: None,
            turn: None,
            mtu: Some(
                serde_json::from_value(serde_json::json!({"ms": 60, "udp": {
                    "ip_version": 4, "sizes": [1200, 1252, 1280], "up_df_settable": true,
                    "up": {"answered": true, "largest_df": up, "largest_no_df": 1280,
                           "passed_df": [up], "passed_no_df": [1200, 1252, 1280], "icmp": false},
                    "down": {"answered": true, "largest_df": 1252, "largest_no_df": 1280,
                             "passed_df": [1252], "passed_no_df": [1280], "icmp": null}}}))
                .expect("mtu object"),
            ),
            live: false,
            browser: None,
        };
        if let Some(cut) = cut_s {
            let mut f = Finding::new(FindingId::PathCutAfter.as_str(), Severity::Error, "s", "f");
            f.path = Some(Box::new(crate::path::PathFacts {
                cut_after_s: Some(cut),
                ..Default::default()
            }));
            r.set_findings(vec![f]);
        }
        Run::from_report(&r, at_ms)
    }

    #[test]
    fn path_figures_compare_sites_by_their_worst_run() {
        let runs = vec![
            path_run("branch", T0, 1252, None),
            path_run("branch", T0 + 1000, 1200, Some(14.8)),
            path_run("branch", T0 + 2000, 1252, Some(20.0)),
            path_run("branch", T0 + 3000, 1252, Some(15.2)),
            path_run("hq", T0, 1472, None),
        ];
        assert_eq!(runs[1].path.mtu_up, Some(1200));
        assert_eq!(runs[1].path.cut_after_s, Some(14.8));
        let t = table(&runs);
        let b = &t.sites[0];
        assert_eq!((b.mtu_up_min, b.mtu_down_min), (Some(1200), Some(1252)));
        assert_eq!((b.path_cut_runs, b.path_cut_after_s), (3, Some(15.2)));
        assert_eq!(
            (t.sites[1].mtu_up_min, t.sites[1].path_cut_runs),
            (Some(1472), 0)
        );
        let text = render_text(&t);
        assert!(text.contains("1200/1252"), "{text}");
        assert!(text.contains("1472/1252"), "{text}");
        assert!(
            text.contains("branch: the path stopped mid-run in 3 of 4 runs, after 15.2 s (median)"),
            "{text}"
        );
        assert!(!text.contains("hq: the path"), "{text}");
        let csv = render_csv(&t);
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let branch: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
        let col = |name: &str| branch[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(
            (
                col("mtu_up_min"),
                col("mtu_down_min"),
                col("path_cut_runs"),
                col("path_cut_after_s")
            ),
            ("1200", "1252", "3", "15.200")
        );
        // A run without the MTU phase (older client, --no-mtu) leaves the column unknown.
        let old = run("old", T0, Some(echo(100, 0.0, 0.0, 10.0, 20.0)), &[]);
        assert_eq!(old.path, PathFigures::default());
        assert!(render_text(&table(&[old])).contains("n/a"));
    }

    #[test]
    fn rfc3339_round_trips() {
        for ms in [
            0,
            951_782_400_000,
            T0 + 123,
            1_795_670_400_999,
            4_102_444_800_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms), "{}", rfc3339(ms));
        }
        assert_eq!(parse_rfc3339("2026-11-26T00:00:00Z"), Some(T0));
        assert_eq!(parse_rfc3339("2026-11-26T00:00:00.5Z"), Some(T0 + 500));
        for bad in [
            "",
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-11-26T00:00:00+01:00",
            "x-y-zTa:b:cZ",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
