//! RTCD's HTTP API as seen from its own host: `GET /version` (the guide's `curl
//! http://RTCD:8045/version`) and `GET /metrics` (sessions, connection states, ICE errors).

use probe_proto::catalog::FindingId;
use probe_proto::http::{Response, Url};
use probe_proto::report::{Finding, Severity};
use probe_proto::semver::{self, PluginVerdict, Version};
use probe_shell::http::{self, FetchError, GetConfig};
use std::cmp::Ordering;
use std::time::Instant;

use super::report::{Check, Status};

/// The first RTCD with ICE over TCP (the TCP fallback).
pub const TCP_FALLBACK_VERSION: (u64, u64, u64) = (0, 11, 0);
/// The Calls plugin's `min_rtcd_version`: plugin plugin.json:733 (eb708b4).
pub const DEFAULT_MIN_VERSION: &str = "v0.17.0";
/// Failed connections in RTCD's own counters from which the share below is worth a warning:
/// a handful of failures out of thousands of joins is normal (users closing laptops).
const FAILED_MIN: f64 = 5.0;
/// Share of failed among connected + failed ICE connections that means a systematic problem.
const FAILED_SHARE: f64 = 0.2;

/// RTCD's `/metrics`, summed over label sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub sessions: f64,
    pub connected: f64,
    pub failed: f64,
    pub disconnected: f64,
    pub closed: f64,
    pub ice_errors: f64,
    /// Any `rtcd_` series at all: tells RTCD's metrics from some other exporter's.
    pub rtcd_series: usize,
}

/// Parses the Prometheus text format, keeping the series the doctor reads.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => match line.split_once(char::is_whitespace) {
                Some((s, v)) => (s, v.trim()),
                None => continue,
            },
        };
        // An optional timestamp may follow the value.
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if !v.is_finite() {
            continue;
        }
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if name.starts_with("rtcd_") {
            m.rtcd_series += 1;
        }
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        match name {
            "rtcd_rtc_sessions_total" => m.sessions += v,
            "rtcd_rtc_conn_states_total" => match label("type").as_deref() {
                Some("connected") => m.connected += v,
                Some("failed") => m.failed += v,
                Some("disconnected") => m.disconnected += v,
                Some("closed") => m.closed += v,
                _ => {}
            },
            "rtcd_rtc_errors_total" if label("type").as_deref() == Some("ice") => m.ice_errors += v,
            _ => {}
        }
    }
    m
}

/// Major, minor and patch of a version as the Calls plugin parses it (Masterminds semver
/// v1.5.0, see `probe_proto::semver`); `None` when the plugin could not parse it.
pub fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let v = Version::parse(s).ok()?;
    Some((
        u64::try_from(v.major).ok()?,
        u64::try_from(v.minor).ok()?,
        u64::try_from(v.patch).ok()?,
    ))
}

pub struct Outcome {
    pub checks: Vec<Check>,
    pub findings: Vec<Finding>,
    pub version: Option<String>,
    /// `/version`'s body as RTCD sent it, for the support bundle.
    pub version_json: Option<String>,
}

pub struct Inputs<'a> {
    pub url: &'a Url,
    pub min_version: (u64, u64, u64),
    pub min_version_text: &'a str,
    /// What `--rtcd-api` or the config said, for the fix text.
    pub url_source: &'a str,
    /// Who listens on the API port here, if anyone (from the socket tables).
    pub listener: Option<String>,
}

/// What RTCD's API answered, as recorded for the rules.
#[derive(Debug)]
pub struct ApiFacts {
    pub version: Result<Response, FetchError>,
    /// `GET /metrics`, asked when `/version` answered at all.
    pub metrics: Option<Result<Response, FetchError>>,
}

const USER_AGENT: &str = concat!("probe-server/", env!("CARGO_PKG_VERSION"));

/// Asks RTCD's API for `/version`, then `/metrics` (IO; the rules are [`judge`]).
pub fn gather(url: &Url, deadline: Instant) -> ApiFacts {
    let version = get(url, "/version", deadline);
    let metrics = version.is_ok().then(|| get(url, "/metrics", deadline));
    ApiFacts { version, metrics }
}

/// One GET under the deadline. TLS certificates are not verified: the doctor talks to RTCD on
/// its own host (usually 127.0.0.1, which no certificate names); whether Mattermost trusts
/// RTCD's certificate is what `probe-client rtcd-api` checks from the Mattermost host.
fn get(url: &Url, path: &str, deadline: Instant) -> Result<Response, FetchError> {
    let tls = if url.https {
        Some(http::unverified_config().map_err(FetchError::Exchange)?)
    } else {
        None
    };
    let cfg = GetConfig {
        user_agent: USER_AGENT,
        tls,
    };
    http::get(url, path, &cfg, deadline)
}

/// The version RTCD reports: `buildVersion` of a 200 answer to `/version`.
pub fn reported_version(facts: &ApiFacts) -> Option<String> {
    let r = facts
        .version
        .as_ref()
        .ok()
        .filter(|r| r.head.status == 200)?;
    version_field(&r.text(), "buildVersion")
}

fn version_field(body: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}

/// The API's checks and findings from what it answered (pure).
pub fn judge(inp: &Inputs, facts: &ApiFacts) -> Outcome {
    let mut out = Outcome {
        checks: Vec::new(),
        findings: Vec::new(),
        version: None,
        version_json: None,
    };
    if judge_version(inp, &facts.version, &mut out) {
        if let Some(m) = &facts.metrics {
            metrics(m, &mut out);
        }
    }
    out
}

/// `rtcd_api_unreachable`, with why and who listens on the port.
fn unreachable(inp: &Inputs, why: String) -> Finding {
    let url = inp.url.base();
    let listener = inp
        .listener
        .clone()
        .unwrap_or_else(|| format!("nothing listens on TCP port {} here", inp.url.port));
    Finding::new(
        FindingId::RtcdApiUnreachable,
        Severity::Error,
        format!("RTCD's API at {url} does not answer as RTCD: {why} ({listener})"),
        format!(
            "start RTCD or fix its API address: [api] http.listen_address in RTCD's config (env RTCD_API_HTTP_LISTENADDRESS); \
             the doctor used {url} ({}); pass --rtcd-api URL if RTCD listens elsewhere",
            inp.url_source
        ),
    )
}

/// `/version`; false when the API does not answer at all (no metrics then).
fn judge_version(inp: &Inputs, answer: &Result<Response, FetchError>, out: &mut Outcome) -> bool {
    let url = inp.url.base();
    let r = match answer {
        Err(e) => {
            let kind = match e {
                FetchError::Connect(_) => "no connection",
                FetchError::Exchange(_) => "no valid answer",
            };
            let detail = format!("GET {url}/version: {kind}: {e}");
            out.checks
                .push(Check::new("api_version", Status::Fail, detail));
            out.findings.push(unreachable(inp, e.to_string()));
            out.checks.push(Check::new(
                "api_metrics",
                Status::Skipped,
                "skipped: the API does not answer",
            ));
            return false;
        }
        Ok(r) => r,
    };
    let body = r.text();
    let ver = version_field(&body, "buildVersion");
    let why = match (r.head.status, &ver) {
        (200, Some(_)) => None,
        (200, None) => {
            Some("GET /version answered 200 without RTCD's JSON (no buildVersion)".to_string())
        }
        (status, _) => Some(format!("GET /version answered {status} {}", r.head.reason)),
    };
    if let Some(why) = why {
        out.checks
            .push(Check::new("api_version", Status::Fail, why.clone()));
        out.findings.push(unreachable(inp, why));
        return true;
    }
    let ver = ver.unwrap_or_default();
    let field = |k: &str| version_field(&body, k).unwrap_or_default();
    let detail = format!(
        "{url}/version: RTCD {ver} (build {}, {}, {}/{})",
        field("buildHash"),
        field("buildDate"),
        field("goOS"),
        field("goArch")
    );
    let status = version_findings(&ver, inp, &mut out.findings);
    out.checks.push(Check::new("api_version", status, detail));
    out.version_json = Some(body);
    out.version = Some(ver);
    true
}

/// The plugin's own version check (plugin server/rtcd.go:339-370, utils.go:132-148, eb708b4),
/// then the TCP fallback.
fn version_findings(ver: &str, inp: &Inputs, findings: &mut Vec<Finding>) -> Status {
    // The minimum was validated by `parse_min_version`; the tuple is the fallback.
    let minimum = Version::parse(inp.min_version_text).unwrap_or_else(|_| Version {
        major: inp.min_version.0 as i64,
        minor: inp.min_version.1 as i64,
        patch: inp.min_version.2 as i64,
        pre: String::new(),
        metadata: String::new(),
    });
    let upgrade = "upgrade RTCD to the version the Calls plugin asks for (its release notes name it), e.g. the latest release from github.com/mattermost/rtcd/releases";
    let have = match semver::plugin_verdict(&minimum, ver) {
        PluginVerdict::DevBuild => return Status::Pass,
        PluginVerdict::Unparsable(e) => {
            findings.push(Finding::new(
                FindingId::RtcdVersionInvalid,
                Severity::Error,
                format!(
                    "RTCD reports the version {ver:?}, which the Calls plugin cannot parse as a semantic version ({e}): the plugin refuses this RTCD (\"failed to parse currVersion\")"
                ),
                "run an RTCD release build (its /version says vMAJOR.MINOR.PATCH), e.g. the latest release from github.com/mattermost/rtcd/releases",
            ));
            return Status::Fail;
        }
        PluginVerdict::TooOld => {
            let v = Version::parse(ver).ok();
            findings.push(Finding::new(
                FindingId::RtcdVersionOld,
                Severity::Error,
                format!(
                    "RTCD {ver} is older than {} — the Calls plugin refuses it{}",
                    inp.min_version_text,
                    if v.as_ref().is_some_and(below_tcp_fallback) {
                        ", and it has no TCP fallback (needs v0.11.0)"
                    } else {
                        ""
                    }
                ),
                upgrade,
            ));
            return Status::Fail;
        }
        PluginVerdict::Accepted => Version::parse(ver).ok(),
    };
    if have.as_ref().is_some_and(below_tcp_fallback) {
        findings.push(Finding::new(
            FindingId::RtcdVersionOld,
            Severity::Warning,
            format!("RTCD {ver} is older than v0.11.0: no TCP fallback, so users whose networks block UDP cannot join calls"),
            upgrade,
        ));
        Status::Warn
    } else {
        Status::Pass
    }
}

fn below_tcp_fallback(v: &Version) -> bool {
    let (major, minor, patch) = TCP_FALLBACK_VERSION;
    let fallback = Version {
        major: major as i64,
        minor: minor as i64,
        patch: patch as i64,
        pre: String::new(),
        metadata: String::new(),
    };
    v.compare(&fallback) == Ordering::Less
}

fn metrics(answer: &Result<Response, FetchError>, out: &mut Outcome) {
    let r = match answer {
        Ok(r) if r.head.status == 200 => r,
        Ok(r) => {
            out.checks.push(Check::new(
                "api_metrics",
                Status::Warn,
                format!("GET /metrics answered {} {}", r.head.status, r.head.reason),
            ));
            return;
        }
        Err(e) => {
            out.checks.push(Check::new(
                "api_metrics",
                Status::Warn,
                format!("GET /metrics: {e}"),
            ));
            return;
        }
    };
    let m = parse_metrics(&r.text());
    if m.rtcd_series == 0 {
        out.checks.push(Check::new(
            "api_metrics",
            Status::Warn,
            "GET /metrics has no rtcd_* series",
        ));
        return;
    }
    let decided = m.connected + m.failed;
    let share = if decided > 0.0 {
        m.failed / decided
    } else {
        0.0
    };
    let detail = format!(
        "{} active session(s); since RTCD started: {} connection(s) connected, {} failed ({:.0} %), {} ICE error(s)",
        m.sessions,
        m.connected,
        m.failed,
        share * 100.0,
        m.ice_errors
    );
    if m.failed >= FAILED_MIN && share >= FAILED_SHARE {
        out.findings.push(Finding::new(
            FindingId::RtcdConnectionsFailing,
            Severity::Warning,
            format!(
                "{:.0} % of RTCD's ICE connections failed since it started ({} failed, {} connected): media does not reach RTCD from many clients",
                share * 100.0,
                m.failed,
                m.connected
            ),
            "run `probe-client RTCD_HOST` from an affected user's network to see whether UDP/TCP 8443 reach RTCD, and check the rtcd_advertises_private / host_firewall_blocks results here",
        ));
        out.checks
            .push(Check::new("api_metrics", Status::Warn, detail));
    } else {
        out.checks
            .push(Check::new("api_metrics", Status::Pass, detail));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like rtcd's /metrics (prometheus client_golang text format).
    const METRICS: &str = r#"# HELP rtcd_rtc_conn_states_total Total number of RTC connection state changes
# TYPE rtcd_rtc_conn_states_total counter
rtcd_rtc_conn_states_total{type="closed"} 12
rtcd_rtc_conn_states_total{type="connected"} 30
rtcd_rtc_conn_states_total{type="disconnected"} 2
rtcd_rtc_conn_states_total{type="failed"} 10
# TYPE rtcd_rtc_errors_total counter
rtcd_rtc_errors_total{groupID="g1",type="ice"} 3
rtcd_rtc_errors_total{groupID="g2",type="ice"} 4
rtcd_rtc_errors_total{groupID="g1",type="rtp"} 9
# TYPE rtcd_rtc_sessions_total gauge
rtcd_rtc_sessions_total{groupID="g1"} 2
rtcd_rtc_sessions_total{groupID="g2"} 1 1700000000000
go_goroutines 42
rtcd_rtc_client_rtt_sum NaN
"#;

    #[test]
    fn sums_series_over_labels() {
        let m = parse_metrics(METRICS);
        assert_eq!(
            (
                m.sessions,
                m.connected,
                m.failed,
                m.disconnected,
                m.closed,
                m.ice_errors
            ),
            (3.0, 30.0, 10.0, 2.0, 12.0, 7.0)
        );
        assert!(m.rtcd_series > 0);
        assert_eq!(parse_metrics("go_goroutines 4\n").rtcd_series, 0);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v1.1.0"), Some((1, 1, 0)));
        assert_eq!(parse_version("0.17.0-rc2"), Some((0, 17, 0)));
        assert_eq!(parse_version("v2"), Some((2, 0, 0)));
        assert_eq!(parse_version("dev-7bc1f7a"), None);
        // Masterminds: only a lower-case v, no spaces.
        assert_eq!(parse_version("V1.1.0"), None);
        assert_eq!(parse_version("1.1.0 "), None);
        assert!(parse_version("v0.10.9") < Some(TCP_FALLBACK_VERSION));
        assert!(parse_version(DEFAULT_MIN_VERSION) > Some(TCP_FALLBACK_VERSION));
    }

    fn answered(status: u16, body: &str) -> Result<Response, FetchError> {
        Ok(Response {
            head: probe_proto::http::Head {
                status,
                reason: "R".into(),
                headers: Vec::new(),
            },
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn the_reported_version_needs_a_200_with_build_version() {
        let facts = |status, body: &str| ApiFacts {
            version: answered(status, body),
            metrics: None,
        };
        let v = facts(200, r#"{"buildVersion":"v1.2.6","buildHash":"b3dee59"}"#);
        assert_eq!(reported_version(&v).as_deref(), Some("v1.2.6"));
        assert_eq!(reported_version(&facts(200, "{}")), None);
        assert_eq!(
            reported_version(&facts(500, r#"{"buildVersion":"v1"}"#)),
            None
        );
        let refused = ApiFacts {
            version: Err(FetchError::Connect("refused".into())),
            metrics: None,
        };
        assert_eq!(reported_version(&refused), None);
    }

    #[test]
    fn metrics_of_another_exporter_warn() {
        let url = Url::parse("http://127.0.0.1:8045").unwrap();
        let inp = Inputs {
            url: &url,
            min_version: (0, 17, 0),
            min_version_text: "v0.17.0",
            url_source: "test",
            listener: None,
        };
        let facts = ApiFacts {
            version: answered(200, r#"{"buildVersion":"v1.2.6"}"#),
            metrics: Some(answered(200, "go_goroutines 4\n")),
        };
        let o = judge(&inp, &facts);
        let got: Vec<(&str, Status)> = o.checks.iter().map(|c| (c.id.as_str(), c.status)).collect();
        assert_eq!(
            got,
            [("api_version", Status::Pass), ("api_metrics", Status::Warn)]
        );
        assert_eq!(o.checks[1].detail, "GET /metrics has no rtcd_* series");
        assert!(o.findings.is_empty());
        assert_eq!(o.version.as_deref(), Some("v1.2.6"));
    }

    fn findings_for(ver: &str, min: &str) -> Vec<(String, Severity)> {
        let url = Url::parse("http://127.0.0.1:8045").unwrap();
        let inp = Inputs {
            url: &url,
            min_version: parse_version(min).unwrap(),
            min_version_text: min,
            url_source: "test",
            listener: None,
        };
        let mut f = Vec::new();
        version_findings(ver, &inp, &mut f);
        f.into_iter().map(|f| (f.id, f.severity)).collect()
    }

    #[test]
    fn version_verdicts() {
        assert!(findings_for("v1.1.0", "v0.17.0").is_empty());
        assert_eq!(
            findings_for("v0.16.2", "v0.17.0"),
            vec![("rtcd_version_old".into(), Severity::Error)]
        );
        // Below the TCP fallback but above a lowered plugin minimum: a warning.
        assert_eq!(
            findings_for("v0.10.0", "v0.9.0"),
            vec![("rtcd_version_old".into(), Severity::Warning)]
        );
        // A prerelease sorts below its release: the plugin refuses v0.17.0-rc1 against v0.17.0.
        assert_eq!(
            findings_for("v0.17.0-rc1", "v0.17.0"),
            vec![("rtcd_version_old".into(), Severity::Error)]
        );
        // Dev builds skip the plugin's check (rtcd.go:355-359).
        assert!(findings_for("dev-7bc1f7a", "v0.17.0").is_empty());
        assert!(findings_for("master", "v0.17.0").is_empty());
        // Anything else that does not parse is refused by the plugin.
        assert_eq!(
            findings_for("custom-build", "v0.17.0"),
            vec![("rtcd_version_invalid".into(), Severity::Error)]
        );
    }
}
