//! RTCD's log, read the way the guide says to grep it: the guide's error patterns counted, and
//! pion's ICE traces that show RTCD pinging from a private host candidate — the server-side
//! evidence of a missing `ice_host_override`. Takes RTCD's JSON lines, plain lines, and
//! journal lines (`… rtcd[123]: {json}`).

use probe_proto::rtcd::is_private;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

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
}

pub fn read(path: &Path) -> Result<LogScan, String> {
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
    let mut scan = scan(&String::from_utf8_lossy(&bytes));
    scan.skipped_bytes = skipped;
    Ok(scan)
}

pub fn scan(text: &str) -> LogScan {
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

/// The `msg` of a JSON log line (with `error` appended, where RTCD puts the cause), else the
/// line itself.
fn message(line: &str) -> String {
    if let Some(i) = line.find('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line[i..]) {
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
    }
    line.to_string()
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
        assert!(read(Path::new("/nonexistent/rtcd.log")).is_err());
    }
}
