//! RTCD's log, read the way the guide says to grep it: the guide's error patterns counted, and
//! pion's ICE traces that show RTCD pinging from a private host candidate — the server-side
//! evidence of a missing `ice_host_override`. Takes RTCD's JSON lines, plain lines, and
//! journal lines (`… rtcd[123]: {json}`).

use probe_proto::catalog::FindingId;
use probe_proto::report::{Finding, Severity};
use probe_proto::rtcd::{canonical, is_private};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// RTCD's start-up line, logged once per start before anything else
/// (rtcd service/service.go:67 (v1.2.6): `s.log.Info("service: starting up", …)`).
pub const START_LINE: &str = "service: starting up";
/// RTCD's STUN result per local address, logged once per start
/// (rtcd service/rtc/server.go:151 Warn and :153 Info (v1.2.6)).
const STUN_FAILED: &str = "failed to get public ip address for local interface";
const STUN_GOT: &str = "got public ip address for local interface";
/// Journal lines read at most (the time bound is RTCD's start, when known).
const JOURNAL_LINES: &str = "200000";

/// The guide's patterns, matched case-insensitively (`ICE failed` and `ice failed` are one).
pub const PATTERNS: [&str; 7] = [
    "failed to connect",
    "connection error",
    "ice failed",
    "ice timeout",
    "unauthorized",
    "invalid api key",
    "failed to get public ip address",
];

/// Only the end of a large log is read: recent lines are the ones that matter.
pub const MAX_READ: u64 = 32 * 1024 * 1024;
/// Matched lines kept for the support bundle.
pub const MAX_KEPT: usize = 500;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogScan {
    pub lines: usize,
    /// Bytes skipped at the start of a file larger than [`MAX_READ`].
    pub skipped_bytes: u64,
    pub counts: BTreeMap<&'static str, usize>,
    /// Private addresses RTCD used as ICE host candidates, with how often.
    pub private_candidates: BTreeMap<IpAddr, usize>,
    /// Lines that matched anything, at most [`MAX_KEPT`] (the latest ones).
    pub matched: Vec<String>,
    /// RTCD's start-up STUN exchange as its log tells it.
    pub stun: StunAtStart,
    /// What was read, for the report (`rtcd.log`, `the journal of rtcd.service since …`).
    pub source: String,
}

/// What RTCD's log says about the STUN exchange of its last start: RTCD asks STUN once per
/// local address at start (rtcd service/rtc/server.go:137-158 (v1.2.6)) and, on failure,
/// advertises the local address until it restarts (service/rtc/utils.go:124-130).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StunAtStart {
    /// RTCD's start line was in the log; the results below come after the last one.
    pub start_seen: bool,
    /// That line's timestamp, as RTCD wrote it.
    pub started_at: Option<String>,
    /// The latest result per local address: the public IP, or the error.
    pub results: BTreeMap<IpAddr, Result<String, String>>,
}

/// RTCD's journal (`journalctl -u UNIT`), since `since` (RTCD's start, seconds since the
/// epoch) when known, else its last [`JOURNAL_LINES`] lines; bounded by `deadline`.
/// `plugin`: the unit is Mattermost's; only the Calls plugin's lines count.
pub fn read_journal(
    unit: &str,
    since: Option<u64>,
    deadline: Instant,
    plugin: bool,
) -> Result<LogScan, String> {
    let Some(journalctl) = super::cmd::find_program("journalctl") else {
        return Err("journalctl not found".into());
    };
    let mut c = Command::new(journalctl);
    c.args([
        "--no-pager",
        "-q",
        "-o",
        "cat",
        "-u",
        unit,
        "-n",
        JOURNAL_LINES,
    ]);
    if let Some(t) = since {
        // A minute before the process started: its unit logs its start just before it.
        c.arg(format!("--since=@{}", t.saturating_sub(60)));
    }
    c.env("LC_ALL", "C").env("SYSTEMD_PAGER", "");
    let out = super::cmd::run(c, deadline).map_err(|e| format!("`journalctl -u {unit}`: {e}"))?;
    if !out.success {
        let why = out
            .stderr
            .lines()
            .next()
            .unwrap_or("failed")
            .trim()
            .to_string();
        return Err(format!("`journalctl -u {unit}`: {why}"));
    }
    let mut text = out.stdout;
    if text.len() as u64 > MAX_READ {
        let cut = text.len() - MAX_READ as usize;
        let cut = (cut..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.drain(..cut);
    }
    if text.trim().is_empty() {
        return Err(format!(
            "the journal of {unit} has no lines (journalctl -u {unit})"
        ));
    }
    let mut scan = if plugin {
        let lines: Vec<&str> = text.lines().filter(|l| is_calls_line(l)).collect();
        scan_with(&lines.join("\n"), PLUGIN_START_LINE)
    } else {
        scan(&text)
    };
    scan.source = match since {
        Some(t) => format!(
            "the journal of {unit} since {}'s start ({})",
            if plugin { "Mattermost" } else { "RTCD" },
            probe_proto::report::rfc3339(t * 1000)
        ),
        None => format!("the journal of {unit} (last {JOURNAL_LINES} lines)"),
    };
    Ok(scan)
}

/// How far a process's start time from [`process_start`] may be off: whole seconds, from a
/// boot time that is itself rounded. A file changed within this of a start is not "after" it.
pub const START_SLACK_S: u64 = 2;

/// When process `pid` started, in seconds since the epoch (`/proc/PID/stat` starttime +
/// `/proc/stat` btime).
pub fn process_start(pid: u32, ticks_per_sec: f64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: starttime is field 22.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + (ticks / ticks_per_sec.max(1.0)) as u64)
}

pub fn read(path: &Path) -> Result<LogScan, String> {
    let (text, skipped) = read_end(path)?;
    let mut scan = scan(&text);
    scan.skipped_bytes = skipped;
    scan.source = path.display().to_string();
    Ok(scan)
}

/// Mattermost's log (`mattermost.log`, JSON lines, or its console's plain lines): only the
/// Calls plugin's lines. The plugin's RTC server logs through the plugin API
/// (mattermost-plugin-calls server/log.go:109-123: `logger.Info` → `p.API.LogInfo(msg, k, v…)`),
/// which Mattermost writes with `"plugin_id":"com.mattermost.calls"` and the rtc fields
/// (`localAddr`, `error`, `remoteAddr`) as keys of their own, so the RTCD checks read them
/// unchanged; a (re)activation starts with the plugin's "activating" (server/activate.go:58,
/// debug level: seen only when Mattermost's file log level is DEBUG).
pub fn read_mattermost(path: &Path) -> Result<LogScan, String> {
    let (text, skipped) = read_end(path)?;
    let mut plugin_lines = String::new();
    let mut total = 0usize;
    for line in text.lines() {
        total += 1;
        if is_calls_line(line) {
            plugin_lines.push_str(line);
            plugin_lines.push('\n');
        }
    }
    let mut scan = scan_with(&plugin_lines, PLUGIN_START_LINE);
    scan.skipped_bytes = skipped;
    scan.source = format!(
        "{} (Mattermost's log: {} of {total} line(s) from the Calls plugin)",
        path.display(),
        scan.lines
    );
    if total > 0 && scan.lines == 0 {
        return Err(format!(
            "{} has no line of the Calls plugin (\"plugin_id\":\"{}\"): give Mattermost's own log (mattermost.log) of a time the plugin ran",
            path.display(),
            probe_proto::calls::PLUGIN_ID
        ));
    }
    Ok(scan)
}

/// The plugin's activation line (server/activate.go:58 `p.LogDebug("activating")`).
pub const PLUGIN_START_LINE: &str = "activating";

/// A line of Mattermost's log written for the Calls plugin: its JSON `plugin_id`, else
/// (console's plain target) `plugin_id=com.mattermost.calls`.
fn is_calls_line(line: &str) -> bool {
    field(line, "plugin_id").as_deref() == Some(probe_proto::calls::PLUGIN_ID)
}

/// The last [`MAX_READ`] bytes of a file, and how many were skipped before them.
fn read_end(path: &Path) -> Result<(String, u64), String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let skipped = len.saturating_sub(MAX_READ);
    if skipped > 0 {
        f.seek(SeekFrom::Start(skipped))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    }
    let mut bytes = Vec::new();
    f.take(MAX_READ)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), skipped))
}

/// RTCD's log.
pub fn scan(text: &str) -> LogScan {
    scan_with(text, START_LINE)
}

/// A log whose server (re)start is marked by a line whose message is `start`.
pub fn scan_with(text: &str, start: &str) -> LogScan {
    let mut s = LogScan::default();
    for line in text.lines() {
        s.lines += 1;
        let msg = message(line);
        let lower = msg.to_lowercase();
        let mut hit = false;
        for p in PATTERNS {
            if lower.contains(p) {
                *s.counts.entry(p).or_default() += 1;
                hit = true;
            }
        }
        stun_line(line, &lower, start, &mut s.stun);
        if let Some(ip) = host_candidate(&msg).filter(|ip| is_private(*ip) && !ip.is_loopback()) {
            *s.private_candidates.entry(ip).or_default() += 1;
            hit = true;
        }
        if hit {
            if s.matched.len() == MAX_KEPT {
                s.matched.remove(0);
            }
            s.matched.push(line.to_string());
        }
    }
    s
}

/// Follows RTCD's start line and STUN results (`lower` is the line's message, lower-cased).
fn stun_line(line: &str, lower: &str, start: &str, st: &mut StunAtStart) {
    if is_start(lower, start) {
        *st = StunAtStart {
            start_seen: true,
            started_at: field(line, "timestamp").or_else(|| plain_timestamp(line)),
            results: BTreeMap::new(),
        };
        return;
    }
    let failed = lower.contains(STUN_FAILED);
    if !failed && !lower.contains(STUN_GOT) {
        return;
    }
    let Some(ip) = field(line, "localAddr").and_then(|a| a.parse::<IpAddr>().ok()) else {
        return;
    };
    let result = if failed {
        Err(field(line, "error").unwrap_or_default())
    } else {
        Ok(field(line, "remoteAddr").unwrap_or_default())
    };
    st.results.insert(canonical(ip), result);
}

/// RTCD's start line is distinctive enough to find inside a message; the plugin's one word
/// "activating" must be the whole message (`lower` is the message with its error appended).
fn is_start(lower: &str, start: &str) -> bool {
    if start == START_LINE {
        lower.contains(start)
    } else {
        lower.trim() == start
    }
}

/// A field of a log line: a JSON key (mlog's JSON target), else `key=value` / `key="value"`
/// (mlog's plain target, which RTCD's console — and so the journal — uses by default:
/// rtcd logger/logger.go:37-46 (v1.2.6)).
fn field(line: &str, key: &str) -> Option<String> {
    if let Some(v) = json_record(line) {
        return v.get(key).map(|x| match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let at = from + i;
        from = at + pat.len();
        if at > 0 && !line[..at].ends_with([' ', '\t']) {
            continue;
        }
        let rest = &line[from..];
        return Some(match rest.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or_default().to_string(),
            None => rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        });
    }
    None
}

/// `info  [2025-05-14 10:29:08.935 Z] msg …`: the bracketed timestamp of a plain line (not a
/// journal prefix's `rtcd[812]`).
fn plain_timestamp(line: &str) -> Option<String> {
    line.match_indices('[').find_map(|(a, _)| {
        let inner = &line[a + 1..];
        let inner = &inner[..inner.find(']')?];
        let b = inner.as_bytes();
        (b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-')
            .then(|| inner.to_string())
    })
}

/// `rtcd_stun_failed_at_start`: RTCD's STUN request failed at its last start for a local
/// address that STUN maps to another address now. RTCD asked once, at start (rtcd
/// service/rtc/server.go:138-157 (v1.2.6)), and with no answer it pairs the local address with
/// itself (service/rtc/utils.go:124-130), so it advertises that address until restarted,
/// whatever STUN answers now. `stun_now` is the doctor's own exchange (empty: none ran, e.g.
/// an override is set now, so RTCD asked no STUN either). In the Calls plugin's terms when
/// `plugin`: its integrated server asks STUN the same way (the same rtc package, plugin
/// server/activate.go:190-196).
pub fn stun_at_start_in(
    st: &StunAtStart,
    stun_now: &HashMap<IpAddr, Option<IpAddr>>,
    where_: &str,
    restart: &str,
    plugin: bool,
) -> (Option<String>, Option<Finding>) {
    if st.results.is_empty() {
        return (None, None);
    }
    let when = start_when(st, plugin);
    let parts: Vec<String> = st
        .results
        .iter()
        .map(|(ip, r)| match r {
            Ok(public) => format!("{ip} → {public}"),
            Err(_) => format!("{ip} failed"),
        })
        .collect();
    let detail = format!("STUN {when}: {}", parts.join(", "));
    let mut stale: Vec<(IpAddr, IpAddr, &str)> = Vec::new();
    for (ip, r) in &st.results {
        let Err(why) = r else { continue };
        if let Some(Some(now)) = stun_now.get(ip) {
            if now != ip {
                stale.push((*ip, *now, why.as_str()));
            }
        }
    }
    if stale.is_empty() {
        return (Some(detail), None);
    }
    (
        Some(detail),
        Some(stale_finding(st, &stale, (&when, where_, restart), plugin)),
    )
}

/// When the STUN results in the log were logged.
fn start_when(st: &StunAtStart, plugin: bool) -> String {
    let who = if plugin { "the RTC server's" } else { "RTCD's" };
    match (&st.start_seen, &st.started_at) {
        (true, Some(t)) => format!("at {who} last start ({t})"),
        (true, None) => format!("at {who} last start"),
        (false, _) => format!("in the log ({who} start line is not in what was read)"),
    }
}

/// `rtcd_stun_failed_at_start` for the addresses whose STUN failed at start but answers now
/// (`stale`: local IP, public IP now, why it failed).
fn stale_finding(
    st: &StunAtStart,
    stale: &[(IpAddr, IpAddr, &str)],
    (when, where_, restart): (&str, &str, &str),
    plugin: bool,
) -> Finding {
    let who = if plugin {
        "the Calls plugin's RTC server"
    } else {
        "RTCD"
    };
    let private = stale.iter().all(|(ip, _, _)| is_private(*ip));
    // Another address whose STUN answered at start gives RTCD a public candidate of its own
    // (rtcd service/rtc/server.go:137-158 maps each local IP separately), and clients reach
    // that one: the stale addresses cost nothing but the candidates themselves.
    let public_at_start: Vec<&str> = st
        .results
        .values()
        .filter_map(|r| r.as_deref().ok())
        .filter(|p| p.parse::<IpAddr>().is_ok_and(|ip| !is_private(ip)))
        .collect();
    let list = |f: &dyn Fn(&(IpAddr, IpAddr, &str)) -> String| {
        stale.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let effect = if public_at_start.is_empty() {
        "so clients outside this network cannot reach it".to_string()
    } else {
        format!(
            "for {} ({who} still advertises {} from its other address{}, which clients outside can reach)",
            if stale.len() > 1 { "them" } else { "it" },
            public_at_start.join(", "),
            if public_at_start.len() > 1 { "es" } else { "" },
        )
    };
    let summary = format!(
        "{}'s STUN request failed {when} for {} while STUN answers now ({}): {who} advertises its {} address{} until restarted, {effect}",
        if plugin { "The Calls plugin's RTC server" } else { "RTCD" },
        list(&|(ip, _, why)| if why.is_empty() { ip.to_string() } else { format!("{ip}: {why}") }),
        list(&|(ip, now, _)| format!("{ip} → {now}")),
        if private { "private" } else { "local" },
        if stale.len() > 1 { "es" } else { "" },
    );
    let public = stale[0].1;
    let fix = if plugin {
        format!(
            "restart the plugin's RTC server ({restart}) so it asks STUN again now that it answers; to stop depending on STUN at start, set {} to {public} (or MM_CALLS_ICE_HOST_OVERRIDE={public} in Mattermost's environment) and restart the plugin",
            probe_proto::calls::wording::console("ICEHostOverride")
        )
    } else {
        format!(
            "restart RTCD ({restart}) so it asks STUN again now that it answers; to stop depending on STUN at start, set ice_host_override = \"{public}\" under [rtc] in {where_} (or RTCD_RTC_ICEHOSTOVERRIDE={public} in RTCD's environment) and restart RTCD"
        )
    };
    let severity = if st.start_seen && public_at_start.is_empty() {
        Severity::Error
    } else {
        Severity::Warning
    };
    Finding::new(FindingId::RtcdStunFailedAtStart, severity, summary, fix)
}

/// The `msg` of a JSON log line (with `error` appended, where RTCD puts the cause), else the
/// line itself.
fn message(line: &str) -> String {
    if let Some(v) = json_record(line) {
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (msg, err) = (field("msg"), field("error"));
        if !msg.is_empty() || !err.is_empty() {
            return format!("{msg} {err}");
        }
    }
    line.to_string()
}

/// Where a JSON record starts in a line (a named constant: a brace literal inside a function
/// throws off the brace-counting function-length check).
const JSON_START: char = '{';

/// The JSON record a line carries (mlog's JSON target), from its first brace: after a journal
/// prefix (`rtcd[812]: {…}`) too. `None` for a plain line.
fn json_record(line: &str) -> Option<serde_json::Value> {
    let i = line.find(JSON_START)?;
    serde_json::from_str(&line[i..]).ok()
}

/// The local side of a pion STUN trace: `Ping STUN from udp4 host 172.31.29.117:8443 (resolved:
/// …) to udp4 host …`, or the same with `tcp4`/`udp6`. Only host candidates count: a
/// server-reflexive or relay candidate is not RTCD's own address.
fn host_candidate(msg: &str) -> Option<IpAddr> {
    let after = &msg[msg.find("STUN from ")? + "STUN from ".len()..];
    let mut words = after.split_whitespace();
    let network = words.next()?;
    if !(network.starts_with("udp") || network.starts_with("tcp")) || words.next()? != "host" {
        return None;
    }
    let addr = words.next()?;
    addr.parse::<SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| addr.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RTCD's wording of [`stun_at_start_in`].
    fn stun_at_start(
        st: &StunAtStart,
        stun_now: &HashMap<IpAddr, Option<IpAddr>>,
        where_: &str,
        restart: &str,
    ) -> (Option<String>, Option<Finding>) {
        stun_at_start_in(st, stun_now, where_, restart, false)
    }

    // RTCD's JSON log format (the guide's example line, remote address changed to a
    // documentation one), journal-wrapped lines and a plain one.
    const LOG: &str = r#"{"timestamp":"2025-05-14 10:29:08.935 Z","level":"trace","msg":"Ping STUN from udp4 host 172.31.29.117:8443 (resolved: 172.31.29.117:8443) to udp4 host 198.51.100.7:59737 (resolved: 198.51.100.7:59737)","caller":"rtc/logger.go:54"}
{"timestamp":"2025-05-14 10:29:09.100 Z","level":"trace","msg":"Ping STUN from udp4 host 172.31.29.117:8443 (resolved: 172.31.29.117:8443) to udp4 host 198.51.100.7:59737 (resolved: 198.51.100.7:59737)"}
{"timestamp":"2025-05-14 10:29:09.200 Z","level":"trace","msg":"Ping STUN from udp4 host 127.0.0.1:8443 (resolved: 127.0.0.1:8443) to udp4 host 198.51.100.7:59737"}
{"timestamp":"2025-05-14 10:29:09.300 Z","level":"trace","msg":"Ping STUN from udp4 host 203.0.113.2:8443 (resolved: 203.0.113.2:8443) to udp4 host 198.51.100.7:59737"}
{"timestamp":"2025-05-14 10:29:10.000 Z","level":"trace","msg":"Ping STUN from udp4 srflx 10.0.0.9:8443 related 10.0.0.9:8443 to udp4 host 198.51.100.7:59737"}
Nov 26 07:29:01 rtc1 rtcd[812]: {"timestamp":"2025-05-14 10:29:23.935 Z","level":"debug","msg":"ice failed","caller":"rtc/sfu.go:400"}
Nov 26 07:29:02 rtc1 rtcd[812]: {"timestamp":"2025-05-14 10:29:24.000 Z","level":"warn","msg":"failed to get public IP address for local interface","error":"read udp 10.0.0.9:8443: i/o timeout"}
2025/05/14 10:30:00 ICE Timeout while waiting for candidates
{"level":"error","msg":"ws handler","error":"Unauthorized"}
{"level":"info","msg":"rtc: new session"}
"#;

    #[test]
    fn counts_patterns_and_private_candidates() {
        let s = scan(LOG);
        assert_eq!(s.lines, 10);
        assert_eq!(s.counts.get("ice failed"), Some(&1));
        assert_eq!(s.counts.get("failed to get public ip address"), Some(&1));
        assert_eq!(s.counts.get("ice timeout"), Some(&1));
        assert_eq!(s.counts.get("unauthorized"), Some(&1));
        assert_eq!(s.counts.get("connection error"), None);
        // Loopback, public and non-host candidates are not evidence.
        let ips: Vec<(String, usize)> = s
            .private_candidates
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(ips, vec![("172.31.29.117".to_string(), 2)]);
        assert_eq!(s.matched.len(), 6);
        assert!(!s.matched.iter().any(|l| l.contains("new session")));
    }

    /// RTCD's file log (mlog JSON target, rtcd logger/logger.go:58-77): three starts; STUN fails
    /// for 172.31.1.2 at the last one (service/rtc/server.go:151), loopback always fails.
    const STARTS_JSON: &str = r#"{"timestamp":"2026-11-20 08:00:00.001 Z","level":"info","msg":"service: starting up","caller":"service/service.go:67","buildDate":"2025-10-01 10:00","buildVersion":"v1.2.6","buildHash":"b3dee59","goVersion":"go1.24.6","goOS":"linux","goArch":"amd64"}
{"timestamp":"2026-11-20 08:00:00.120 Z","level":"info","msg":"got public IP address for local interface","caller":"rtc/server.go:153","localAddr":"172.31.1.2","remoteAddr":"203.0.113.10"}
{"timestamp":"2026-11-25 09:00:00.001 Z","level":"info","msg":"service: starting up","caller":"service/service.go:67","buildVersion":"v1.2.6"}
{"timestamp":"2026-11-25 09:00:05.002 Z","level":"warn","msg":"failed to get public IP address for local interface","caller":"rtc/server.go:151","localAddr":"127.0.0.1","error":"failed to get public address: read udp4 127.0.0.1:8443: i/o timeout"}
{"timestamp":"2026-11-25 09:00:10.003 Z","level":"warn","msg":"failed to get public IP address for local interface","caller":"rtc/server.go:151","localAddr":"172.31.1.2","error":"failed to get public address: read udp4 172.31.1.2:8443: i/o timeout"}
{"timestamp":"2026-11-25 09:01:00.000 Z","level":"debug","msg":"rtc: new session","caller":"rtc/server.go:300"}
"#;

    /// The same on RTCD's console (mlog plain target, the journal's text by default:
    /// logger/logger.go:43-46), one start, STUN answered.
    const START_PLAIN_OK: &str = "info  [2026-11-26 07:00:00.001 Z] service: starting up                          caller=\"service/service.go:67\" buildDate=\"2025-10-01 10:00\" buildVersion=v1.2.6 buildHash=b3dee59\n\
Nov 26 07:00:05 rtc1 rtcd[812]: info  [2026-11-26 07:00:05.010 Z] got public IP address for local interface     caller=\"rtc/server.go:153\" localAddr=172.31.1.2 remoteAddr=203.0.113.10\n";

    fn now(pairs: &[(&str, Option<&str>)]) -> HashMap<IpAddr, Option<IpAddr>> {
        pairs
            .iter()
            .map(|(l, m)| (l.parse().unwrap(), m.map(|m| m.parse().unwrap())))
            .collect()
    }

    #[test]
    fn stun_failed_at_the_last_start_while_stun_answers_now() {
        let s = scan(STARTS_JSON);
        assert!(s.stun.start_seen);
        assert_eq!(
            s.stun.started_at.as_deref(),
            Some("2026-11-25 09:00:00.001 Z")
        );
        // Only the last start's results: the earlier success does not count.
        assert_eq!(s.stun.results.len(), 2);
        assert!(s.stun.results[&"172.31.1.2".parse::<IpAddr>().unwrap()].is_err());
        let stun_now = now(&[("127.0.0.1", None), ("172.31.1.2", Some("203.0.113.10"))]);
        let (detail, f) = stun_at_start(
            &s.stun,
            &stun_now,
            "/etc/rtcd.toml",
            "`systemctl restart rtcd.service`",
        );
        let f = f.expect("finding");
        assert_eq!(f.id, "rtcd_stun_failed_at_start");
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.summary
                .contains("advertises its private address until restarted"),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains("172.31.1.2 → 203.0.113.10"),
            "{}",
            f.summary
        );
        assert!(f.summary.contains("i/o timeout"), "{}", f.summary);
        // Loopback failed then and fails now: not evidence.
        assert!(!f.summary.contains("127.0.0.1"), "{}", f.summary);
        assert!(
            f.fix.contains("systemctl restart rtcd.service"),
            "{}",
            f.fix
        );
        assert!(
            f.fix.contains("ice_host_override = \"203.0.113.10\""),
            "{}",
            f.fix
        );
        assert!(detail.unwrap().contains("172.31.1.2 failed"));
    }

    #[test]
    fn no_finding_when_stun_fails_now_too_or_maps_to_itself_or_did_not_run() {
        let s = scan(STARTS_JSON);
        let restart = "`systemctl restart rtcd`";
        // Fails now too: RTCD advertises the private address for a reason the advertise
        // check reports (rtcd_advertises_private), not a stale start.
        let (_, f) = stun_at_start(&s.stun, &now(&[("172.31.1.2", None)]), "c", restart);
        assert!(f.is_none());
        // STUN maps the address to itself (no NAT): what RTCD advertises is right.
        let (_, f) = stun_at_start(
            &s.stun,
            &now(&[("172.31.1.2", Some("172.31.1.2"))]),
            "c",
            restart,
        );
        assert!(f.is_none());
        // No exchange now (an override is set now, or no STUN URL): nothing to compare.
        let (_, f) = stun_at_start(&s.stun, &HashMap::new(), "c", restart);
        assert!(f.is_none());
        // A restart after which STUN answered clears it (plain console format, journal prefix).
        let text = format!("{STARTS_JSON}{START_PLAIN_OK}");
        let s2 = scan(&text);
        assert_eq!(
            s2.stun.started_at.as_deref(),
            Some("2026-11-26 07:00:00.001 Z")
        );
        assert_eq!(
            s2.stun.results.values().collect::<Vec<_>>(),
            vec![&Ok("203.0.113.10".to_string())]
        );
        let (d, f) = stun_at_start(
            &s2.stun,
            &now(&[("172.31.1.2", Some("203.0.113.10"))]),
            "c",
            restart,
        );
        assert!(f.is_none());
        assert!(d.unwrap().contains("172.31.1.2 → 203.0.113.10"));
    }

    #[test]
    fn a_second_address_failing_while_another_got_its_public_ip_is_a_warning() {
        // eth0 got its public address at start, the Docker bridge did not: media works
        // through eth0's public candidate.
        let text = "{\"level\":\"info\",\"msg\":\"service: starting up\",\"timestamp\":\"2026-11-26 07:00:00.001 Z\"}\n\
{\"level\":\"info\",\"msg\":\"got public IP address for local interface\",\"localAddr\":\"10.0.0.5\",\"remoteAddr\":\"203.0.113.7\",\"timestamp\":\"2026-11-26 07:00:00.200 Z\"}\n\
{\"level\":\"warn\",\"msg\":\"failed to get public IP address for local interface\",\"localAddr\":\"172.17.0.1\",\"error\":\"i/o timeout\",\"timestamp\":\"2026-11-26 07:00:05.200 Z\"}\n";
        let s = scan(text);
        assert!(s.stun.start_seen, "{:?}", s.stun);
        assert_eq!(s.stun.results.len(), 2, "{:?}", s.stun);
        let (_, f) = stun_at_start(
            &s.stun,
            &now(&[
                ("10.0.0.5", Some("203.0.113.7")),
                ("172.17.0.1", Some("203.0.113.7")),
            ]),
            "c",
            "r",
        );
        let f = f.expect("still reported");
        assert_eq!(f.severity, Severity::Warning, "{}", f.summary);
        assert!(
            f.summary.contains("still advertises 203.0.113.7"),
            "{}",
            f.summary
        );
        // Only the failed address, without a public one: an error (see the test above).
    }

    #[test]
    fn plain_failure_without_a_start_line_is_only_a_warning() {
        let text = "warn  [2026-11-26 07:00:05.010 Z] failed to get public IP address for local interface caller=\"rtc/server.go:151\" localAddr=10.0.0.9 error=\"failed to get public address: read udp4 10.0.0.9:8443: i/o timeout\"\n";
        let s = scan(text);
        assert!(!s.stun.start_seen);
        let (_, f) = stun_at_start(
            &s.stun,
            &now(&[("10.0.0.9", Some("198.51.100.20"))]),
            "c",
            "r",
        );
        let f = f.unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.summary.contains(
                "10.0.0.9: failed to get public address: read udp4 10.0.0.9:8443: i/o timeout"
            ),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains("start line is not in what was read"),
            "{}",
            f.summary
        );
        // Lines that are not RTCD's STUN results change nothing.
        let s = scan("{\"msg\":\"got public IP address for local interface\"}\nlocalAddr=10.0.0.9 something else\n");
        assert!(s.stun.results.is_empty());
    }

    #[test]
    fn fields_and_timestamps() {
        assert_eq!(field("a=1 b=\"x y\" c=3", "b").as_deref(), Some("x y"));
        assert_eq!(field("xa=1 a=2", "a").as_deref(), Some("2"));
        assert_eq!(field("{\"n\":5}", "n").as_deref(), Some("5"));
        assert_eq!(
            plain_timestamp("Nov 26 rtcd[812]: info  [2026-11-26 07:00:00.001 Z] x").as_deref(),
            Some("2026-11-26 07:00:00.001 Z")
        );
        assert_eq!(plain_timestamp("rtcd[812]: no time"), None);
    }

    #[test]
    fn ipv6_candidates_and_reading_a_file() {
        let s = scan("Ping STUN from udp6 host [fd00::5]:8443 to udp6 host [2001:db8::9]:4000\n");
        assert_eq!(
            s.private_candidates.keys().next().map(|i| i.to_string()),
            Some("fd00::5".into())
        );
        let dir = std::env::temp_dir().join(format!("doctor-logs-{}", std::process::id()));
        std::fs::write(&dir, LOG).unwrap();
        let from_file = read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(from_file.counts, scan(LOG).counts);
        assert_eq!(from_file.source, dir.display().to_string());
        assert!(read(Path::new("/nonexistent/rtcd.log")).is_err());
    }

    /// Mattermost's own log (mlog JSON target) with the Calls plugin's lines as the plugin API
    /// writes them (plugin server/log.go:86-123: the rtc fields as keys, `origin` first;
    /// Mattermost adds `plugin_id`), mixed with Mattermost's and another plugin's lines.
    #[test]
    fn mattermost_log_keeps_only_the_calls_plugin() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/doctor/testdata/mattermost.log"
        ));
        let s = read_mattermost(path).unwrap();
        assert_eq!(s.lines, 5, "{s:?}");
        assert!(s.source.contains("5 of 9 line(s)"), "{}", s.source);
        // Another plugin's "failed to connect" and Mattermost's own STUN-like line do not count.
        assert_eq!(s.counts.get("failed to connect"), None);
        assert_eq!(s.counts.get("ice failed"), Some(&1));
        assert!(s.stun.start_seen);
        assert_eq!(
            s.stun.started_at.as_deref(),
            Some("2026-11-26 07:00:01.120 Z")
        );
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(s.stun.results.get(&ip).is_some_and(|r| r.is_err()), "{s:?}");
        assert_eq!(s.stun.results.len(), 1);
        assert_eq!(s.private_candidates.get(&ip), Some(&1));
        let (d, f) = stun_at_start_in(
            &s.stun,
            &now(&[("10.0.0.9", Some("203.0.113.10"))]),
            "System Console › Plugins › Calls",
            "disable and re-enable the plugin",
            true,
        );
        assert!(d.unwrap().contains("at the RTC server's last start"));
        let f = f.expect("stale STUN at start");
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.summary
                .starts_with("The Calls plugin's RTC server's STUN request failed"),
            "{}",
            f.summary
        );
        assert!(
            f.fix.contains("\"ICE Host Override\" to 203.0.113.10"),
            "{}",
            f.fix
        );
        assert!(!f.fix.contains("RTCD"), "{}", f.fix);
        // RTCD's log given as Mattermost's: none of its lines is the plugin's.
        let dir = std::env::temp_dir().join(format!("doctor-mmlog-{}", std::process::id()));
        std::fs::write(&dir, LOG).unwrap();
        let e = read_mattermost(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(e.contains("has no line of the Calls plugin"), "{e}");
    }

    #[test]
    fn json_records_after_a_journal_prefix_else_plain_text() {
        let journal = r#"Nov 26 rtcd[812]: {"msg":"ICE failed","error":"timeout"}"#;
        assert_eq!(json_record(journal).unwrap()["msg"], "ICE failed");
        assert_eq!(message(journal), "ICE failed timeout");
        // A brace that starts no JSON: the line is plain, and its fields are `key=value`.
        let plain = "info  [2026-11-26 07:00:00.001 Z] got {odd} localAddr=10.0.0.5";
        assert_eq!(json_record(plain), None);
        assert_eq!(message(plain), plain);
        assert_eq!(field(plain, "localAddr").as_deref(), Some("10.0.0.5"));
        // JSON without a message keeps the line as it is.
        assert_eq!(message(r#"{"level":"info"}"#), r#"{"level":"info"}"#);
    }
}
