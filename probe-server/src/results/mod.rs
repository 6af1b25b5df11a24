//! Results kept where the admin is: uploads from clients go to a SQLite store (and to the
//! Prometheus metrics); `probe-server results` reads them back.
//!
//! The control channel only parses and queues (microseconds, on the async thread that also
//! answers echo packets); a dedicated thread does the disk writes, so a slow, full or read-only
//! disk costs uploads, never echo replies.

mod show;
pub mod store;
mod writer;

pub use show::{default_store, parse_since, run, ResultsArgs};

use probe_proto::report::{Report, SCHEMA};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use store::Row;

/// A report is a few kilobytes; anything much larger is not one.
const MAX_REPORT_BYTES: usize = 1 << 20;
use probe_proto::sites::MAX_SITE_CHARS;
/// Longest text kept from a report (a finding's sentence is a few hundred characters).
const MAX_TEXT_CHARS: usize = 2048;
/// Longest list kept from a report (findings, candidates, pairs: a few dozen at most).
const MAX_LIST: usize = 256;

/// One uploaded run, as the control channel hands it over.
#[derive(Debug, Clone)]
pub struct UploadedRun {
    /// The client's address as this server saw it on the control channel.
    pub client_addr: SocketAddr,
    /// Server wall clock at upload, milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// The client's schema-1 JSON report, as sent.
    pub report_json: String,
    /// The session it came in and the site token MAC it carried, if any.
    pub proof: Option<SiteProof>,
}

/// What a site token's check needs from the control channel.
#[derive(Clone)]
pub struct SiteProof {
    pub session_id: u64,
    pub session_key: [u8; 32],
    /// [`probe_proto::auth::upload_mac`] from a `SignedUpload`; `None` for a plain upload.
    pub mac: Option<[u8; 32]>,
}

/// Debug output never shows the session key.
impl std::fmt::Debug for SiteProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteProof")
            .field("session_id", &self.session_id)
            .field("session_key", &"<redacted>")
            .field("mac", &self.mac.map(|_| "<present>"))
            .finish()
    }
}

/// What became of uploads, for the metrics and the shutdown log line.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Written to the store.
    pub stored: AtomicU64,
    /// Accepted, then lost to a store error (disk full, read-only, I/O).
    pub store_failed: AtomicU64,
    /// Refused: not a schema-1 report, or over the size limits.
    pub invalid: AtomicU64,
    /// Refused: the writer was that far behind.
    pub queue_full: AtomicU64,
    /// Refused: the site is not on `--sites`.
    pub site_refused: AtomicU64,
    /// Refused: the site has a `--site-token` and the upload did not prove it holds it.
    pub site_token_refused: AtomicU64,
    /// Stored runs deleted for being older than `--retention`.
    pub pruned_retention: AtomicU64,
    /// Stored runs deleted, oldest first, to keep the store under `--max-store-mb`.
    pub pruned_size: AtomicU64,
}

/// Which sites may upload. A site with a `--site-token` only with a MAC made with its token
/// (whatever `--sites` says); any other site when `--sites` lists it, or when there is no
/// `--sites` at all.
#[derive(Default, Clone)]
pub struct SitePolicy {
    pub allowed: Option<std::collections::BTreeSet<String>>,
    /// Site name to [`probe_proto::auth::site_key`] of its token.
    pub tokens: std::collections::BTreeMap<String, [u8; 32]>,
}

/// Debug output names the sites with a token, never the keys.
impl std::fmt::Debug for SitePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SitePolicy")
            .field("allowed", &self.allowed)
            .field("token_sites", &self.tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A site name as a person reads it: `Berlin ` and `berlin` are the same site.
fn folded(site: &str) -> String {
    site.trim().to_lowercase()
}

/// Why an upload's site was refused; each is counted apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteRefusal {
    NotListed(String),
    Token(String),
}

/// Shortest site token taken: an unpinned server sees the upload's MAC, and a short token
/// could be guessed from it offline.
pub const MIN_SITE_TOKEN: usize = 16;

/// One `--site-token NAME=TOKEN` (or a line of `--site-token-file`).
pub fn parse_site_token(s: &str) -> Result<(String, String), String> {
    let (name, token) = s.split_once('=').ok_or_else(|| {
        "a site token is NAME=TOKEN (e.g. berlin=$(openssl rand -hex 16))".to_string()
    })?;
    let (name, token) = (name.trim(), token.trim());
    if name.is_empty()
        || name.chars().count() > MAX_SITE_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "the site name of a site token must have 1 to {MAX_SITE_CHARS} printable characters"
        ));
    }
    if token.chars().count() < MIN_SITE_TOKEN {
        return Err(format!(
            "the site token of {name} is shorter than {MIN_SITE_TOKEN} characters; use a random \
             one, e.g. $(openssl rand -hex 16)"
        ));
    }
    Ok((name.to_string(), token.to_string()))
}

impl SitePolicy {
    /// `--sites a,b,c`: names separated by commas, blanks ignored.
    pub fn from_list(list: Option<&str>) -> Self {
        Self {
            allowed: list.map(|l| {
                l.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
            tokens: Default::default(),
        }
    }

    /// Adds `--site-token` entries (name, token).
    pub fn with_tokens(mut self, tokens: &[(String, String)]) -> Self {
        for (name, token) in tokens {
            self.tokens
                .insert(name.clone(), probe_proto::auth::site_key(token));
        }
        self
    }

    /// Sites that get their metrics label at once: listed ones and those with a token.
    pub fn vouched(&self) -> std::collections::BTreeSet<String> {
        let mut v = self.allowed.clone().unwrap_or_default();
        v.extend(self.tokens.keys().cloned());
        v
    }

    /// Why an upload of `site` (whose report bytes are `report`) is refused, if it is.
    pub fn refuses(
        &self,
        site: &str,
        proof: Option<&SiteProof>,
        report: &[u8],
    ) -> Option<SiteRefusal> {
        let name = probe_proto::sites::clean_text(site, MAX_SITE_CHARS);
        // A lookalike of a site with a token (other case, blanks around it) needs that token
        // too, or anyone could file runs beside the real site's under `Berlin `.
        let key = self.tokens.get(site).or_else(|| {
            let f = folded(site);
            self.tokens
                .iter()
                .find_map(|(k, v)| (folded(k) == f).then_some(v))
        });
        if let Some(key) = key {
            return match proof.and_then(|p| p.mac.map(|m| (p, m))) {
                None => Some(SiteRefusal::Token(format!(
                    "site {name} needs its site token: run probe-client with --site-token \
                     (or PROBE_SITE_TOKEN) set to the token the admin gave for {name}"
                ))),
                Some((p, mac))
                    if !probe_proto::auth::upload_mac_ok(
                        key,
                        &p.session_key,
                        p.session_id,
                        report,
                        &mac,
                    ) =>
                {
                    Some(SiteRefusal::Token(format!(
                        "the site token given for site {name} is wrong; ask the admin for the \
                         one set with probe-server --site-token {name}=..."
                    )))
                }
                Some(_) => None,
            };
        }
        match &self.allowed {
            Some(a) if !a.contains(site) => Some(SiteRefusal::NotListed(format!(
                "site {name} is not one this server keeps results for (probe-server --sites)"
            ))),
            _ => None,
        }
    }
}

/// How long and how much the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub retention: Duration,
    pub max_bytes: u64,
}

impl Default for Keep {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            max_bytes: 512 << 20,
        }
    }
}

impl UploadStats {
    fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Where the control channel puts uploads. Never blocks: a full queue or a broken store is
/// reported back to the client and counted, and the echo service goes on.
#[derive(Debug, Default)]
pub struct Sink {
    /// None: this server keeps no results. Taken at shutdown, which ends the writer.
    tx: Mutex<Option<SyncSender<Row>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    pub stats: std::sync::Arc<UploadStats>,
    sites: SitePolicy,
}

impl Sink {
    /// Starts the writer thread on an open store; `metrics` also sees every accepted run.
    #[cfg(test)]
    pub fn start(
        store: store::Store,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> std::io::Result<Self> {
        Self::start_with(store, metrics, SitePolicy::default(), Keep::default())
    }

    /// [`Sink::start`] with a site allow-list and the store's retention and size bounds.
    pub fn start_with(
        store: store::Store,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
        sites: SitePolicy,
        keep: Keep,
    ) -> std::io::Result<Self> {
        let stats = std::sync::Arc::<UploadStats>::default();
        let (tx, worker) = writer::spawn(store, metrics, stats.clone(), keep)?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            stats,
            sites,
        })
    }

    pub fn submit(&self, run: UploadedRun) -> Result<(), String> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(probe_proto::sites::NO_STORE.into());
        };
        let (report, json) = match check(&run.report_json) {
            Ok(r) => r,
            Err(why) => {
                UploadStats::bump(&self.stats.invalid, 1);
                // Parser messages quote the input: cleaned before they reach a log or the client.
                return Err(probe_proto::sites::clean_text(&why, 512));
            }
        };
        match self
            .sites
            .refuses(&report.site, run.proof.as_ref(), run.report_json.as_bytes())
        {
            Some(SiteRefusal::NotListed(why)) => {
                UploadStats::bump(&self.stats.site_refused, 1);
                return Err(why);
            }
            Some(SiteRefusal::Token(why)) => {
                UploadStats::bump(&self.stats.site_token_refused, 1);
                return Err(why);
            }
            None => {}
        }
        let row = Row {
            received_ms: run.received_ms,
            client_addr: crate::shared::canonical(run.client_addr).to_string(),
            report,
            json,
        };
        match tx.try_send(row) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                UploadStats::bump(&self.stats.queue_full, 1);
                Err("the server is behind with storing results; this report was not kept".into())
            }
            Err(TrySendError::Disconnected(_)) => {
                Err("the server's result store has stopped; this report was not kept".into())
            }
        }
    }

    /// Ends the writer after it has written what is queued (bounded: a hung disk must not hang
    /// the shutdown).
    pub fn finish(&self, bound: Duration) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let t0 = Instant::now();
        while !worker.is_finished() && t0.elapsed() < bound {
            std::thread::sleep(Duration::from_millis(10));
        }
        if worker.is_finished() {
            let _ = worker.join();
        } else {
            tracing::warn!(
                "the result store did not finish writing in time; queued uploads are lost"
            );
        }
    }
}

/// A report this server can file: schema 1, parseable, of sane size, no field it does not
/// know, every text cleaned (control characters out, length capped). Returns the report and the
/// JSON to keep: the report as parsed (so nothing this server does not know is stored).
fn check(json: &str) -> Result<(Report, String), String> {
    if json.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "the report is {} bytes; this server keeps reports up to {MAX_REPORT_BYTES}",
            json.len()
        ));
    }
    #[derive(serde::Deserialize)]
    struct Schema {
        schema: u32,
    }
    let schema = serde_json::from_str::<Schema>(json)
        .map_err(|e| format!("the report is not a probe-client report: {e}"))?;
    if schema.schema != SCHEMA {
        return Err(format!(
            "report schema {} is not the one this server reads ({SCHEMA}); upgrade probe-server",
            schema.schema
        ));
    }
    let raw: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("the report is not a probe-client report: {e}"))?;
    let cleaned = clean_value(raw, 0)?;
    let report: Report = serde_json::from_value(cleaned.clone())
        .map_err(|e| format!("the report is not a schema-{SCHEMA} report: {e}"))?;
    probe_proto::sites::check_site(&report.site)?;
    // Only what this server knows how to read is kept: a field it would not parse is refused,
    // not stored verbatim (and later copied into bundles).
    let known = serde_json::to_value(&report)
        .map_err(|e| format!("the report cannot be re-encoded: {e}"))?;
    let mut unknown = Vec::new();
    unknown_fields(&cleaned, &known, "", &mut unknown);
    if !unknown.is_empty() {
        unknown.truncate(5);
        return Err(format!(
            "the report has fields this server does not know ({}); upgrade probe-server",
            unknown.join(", ")
        ));
    }
    // Kept as this server parsed it: an empty unknown (`"x": null`) does not survive either.
    Ok((report, known.to_string()))
}

/// Every string stripped of control characters and cut to its cap; lists and depth bounded.
fn clean_value(v: serde_json::Value, depth: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    if depth > 16 {
        return Err("the report is nested too deeply".into());
    }
    Ok(match v {
        Value::String(s) => Value::String(probe_proto::sites::clean_text(&s, MAX_TEXT_CHARS)),
        Value::Array(a) if a.len() > MAX_LIST => {
            return Err(format!(
                "the report has a list of {} items; this server keeps up to {MAX_LIST}",
                a.len()
            ))
        }
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|x| clean_value(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| Ok((k, clean_value(x, depth + 1)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other,
    })
}

/// Paths of `sent` that the parsed report does not have (an absent default — null, empty — is
/// not a field of its own).
fn unknown_fields(
    sent: &serde_json::Value,
    known: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (sent, known) {
        (Value::Object(s), Value::Object(k)) => {
            for (key, v) in s {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    None if is_empty(v) => {}
                    None => out.push(probe_proto::sites::clean_text(&p, 64)),
                }
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (i, (sv, kv)) in s.iter().zip(k).enumerate() {
                unknown_fields(sv, kv, &format!("{path}.{i}"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_without_store_refuses_politely() {
        let s = Sink::default();
        let e = s
            .submit(UploadedRun {
                client_addr: "198.51.100.2:1".parse().unwrap(),
                received_ms: 0,
                report_json: "{}".into(),
                proof: None,
            })
            .unwrap_err();
        assert_eq!(e, "this server keeps no results");
    }

    #[test]
    fn check_refuses_what_is_not_a_report() {
        assert!(check("not json")
            .unwrap_err()
            .contains("not a probe-client report"));
        assert!(check("{\"schema\":2}").unwrap_err().contains("schema 2"));
        assert!(check("{\"schema\":1}").unwrap_err().contains("schema-1"));
        let big = format!(
            "{{\"schema\":1,\"x\":\"{}\"}}",
            "a".repeat(MAX_REPORT_BYTES)
        );
        assert!(check(&big).unwrap_err().contains("bytes"));
        let mut r = store::tests_support::report("s", Some(0.0));
        assert!(check(&serde_json::to_string(&r).unwrap()).is_ok());
        r.site = "x".repeat(MAX_SITE_CHARS + 1);
        assert!(check(&serde_json::to_string(&r).unwrap()).is_err());
        r.site = "\n\t".into();
        assert!(check(&serde_json::to_string(&r).unwrap()).is_err());
    }

    fn report_value(site: &str) -> serde_json::Value {
        serde_json::to_value(store::tests_support::report(site, Some(0.0))).unwrap()
    }

    #[test]
    fn unknown_report_fields_are_refused_at_upload() {
        let mut v = report_value("s");
        v["smuggled"] = serde_json::json!("a document the admin never asked for");
        let e = check(&v.to_string()).unwrap_err();
        assert!(e.contains("smuggled"), "{e}");
        let mut v = report_value("s");
        v["udp"]["stun"]["extra"] = serde_json::json!({"x": 1});
        let e = check(&v.to_string()).unwrap_err();
        assert!(e.contains("udp.stun.extra"), "{e}");
        // An absent optional written as null is not a field of its own, and is not stored.
        let mut v = report_value("s");
        v["ice"] = serde_json::Value::Null;
        v["empty_unknown"] = serde_json::Value::Null;
        let (_, kept) = check(&v.to_string()).unwrap();
        assert!(!kept.contains("empty_unknown"), "{kept}");
    }

    #[test]
    fn report_text_is_stripped_of_control_characters_and_capped_before_storing() {
        let mut v = report_value("berlin\n2026-11-26T00:00:00Z  INFO forged\u{1b}[2J");
        v["tool_version"] = serde_json::json!("0.1.0\r\nX-Forged: 1");
        v["server"] = serde_json::json!("x".repeat(10 * MAX_TEXT_CHARS));
        let (report, json) = check(&v.to_string()).unwrap();
        assert_eq!(report.site, "berlin2026-11-26T00:00:00Z  INFO forged[2J");
        assert_eq!(report.tool_version, "0.1.0X-Forged: 1");
        assert_eq!(report.server.chars().count(), MAX_TEXT_CHARS);
        assert!(!json.contains("\\n") && !json.contains("\\u001b"), "{json}");
        let mut v = report_value("s");
        v["findings"] = serde_json::Value::Array(vec![serde_json::Value::Null; MAX_LIST + 1]);
        assert!(check(&v.to_string()).unwrap_err().contains("list"));
    }

    #[test]
    fn sites_allow_list_refuses_other_sites() {
        let p = SitePolicy::from_list(Some("berlin, paris,,"));
        assert_eq!(p.refuses("berlin", None, b""), None);
        assert!(
            matches!(p.refuses("tokyo", None, b""), Some(SiteRefusal::NotListed(w)) if w.contains("--sites"))
        );
        assert_eq!(
            SitePolicy::from_list(None).refuses("anything", None, b""),
            None
        );
    }

    #[test]
    fn a_site_with_a_token_needs_a_mac_over_this_session_and_report() {
        let token = "0123456789abcdef0123";
        let tokens = [("berlin".to_string(), token.to_string())];
        let key = probe_proto::auth::site_key(token);
        let report = b"{\"schema\":1,\"site\":\"berlin\"}";
        let proof = |mac| SiteProof {
            session_id: 9,
            session_key: [4; 32],
            mac,
        };
        let good = probe_proto::auth::upload_mac(&key, &[4; 32], 9, report);
        for policy in [
            SitePolicy::from_list(None).with_tokens(&tokens),
            // The token admits its site even when --sites does not list it.
            SitePolicy::from_list(Some("paris")).with_tokens(&tokens),
        ] {
            assert_eq!(
                policy.refuses("berlin", Some(&proof(Some(good))), report),
                None
            );
            let none = policy.refuses("berlin", Some(&proof(None)), report);
            assert!(
                matches!(&none, Some(SiteRefusal::Token(w)) if w.contains("needs its site token")),
                "{none:?}"
            );
            let wrong = probe_proto::auth::upload_mac(
                &probe_proto::auth::site_key("another token of 20"),
                &[4; 32],
                9,
                report,
            );
            let w = policy.refuses("berlin", Some(&proof(Some(wrong))), report);
            assert!(
                matches!(&w, Some(SiteRefusal::Token(m)) if m.contains("is wrong")),
                "{w:?}"
            );
            // A MAC captured in another session, or over another report, proves nothing.
            let other = SiteProof {
                session_id: 10,
                ..proof(Some(good))
            };
            assert!(policy.refuses("berlin", Some(&other), report).is_some());
            assert!(policy
                .refuses("berlin", Some(&proof(Some(good))), b"{}")
                .is_some());
        }
        // Other sites: as --sites says (everyone without it).
        let open = SitePolicy::from_list(None).with_tokens(&tokens);
        assert_eq!(open.refuses("tokyo", None, report), None);
        let listed = SitePolicy::from_list(Some("paris")).with_tokens(&tokens);
        assert!(matches!(
            listed.refuses("tokyo", None, report),
            Some(SiteRefusal::NotListed(_))
        ));
        assert_eq!(listed.vouched().len(), 2);
        // Lookalikes of a token site need its token; a valid MAC admits them.
        for lookalike in ["Berlin", " berlin ", "BERLIN"] {
            assert!(
                matches!(
                    open.refuses(lookalike, Some(&proof(None)), report),
                    Some(SiteRefusal::Token(_))
                ),
                "{lookalike:?}"
            );
            assert_eq!(
                open.refuses(lookalike, Some(&proof(Some(good))), report),
                None
            );
        }
        // Debug output keeps the keys out.
        let shown = format!("{open:?} {:?}", proof(Some(good)));
        assert!(
            shown.contains("berlin") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains(&format!("{:?}", key)), "{shown}");
        assert!(!shown.contains("[4, 4, 4"), "{shown}");
    }

    #[test]
    fn site_token_arguments_are_name_equals_a_long_token() {
        assert_eq!(
            parse_site_token(" berlin = 0123456789abcdef ").unwrap(),
            ("berlin".to_string(), "0123456789abcdef".to_string())
        );
        assert!(parse_site_token("berlin")
            .unwrap_err()
            .contains("NAME=TOKEN"));
        assert!(parse_site_token("=0123456789abcdef")
            .unwrap_err()
            .contains("site name"));
        assert!(parse_site_token("berlin=short")
            .unwrap_err()
            .contains("shorter than 16"));
    }
}
