//! `--metrics ADDR`: GET /metrics in the Prometheus text format, from prometheus-client.
//!
//! Two kinds of series: the server's own counters (read from the sans-IO core at each scrape)
//! and per-site series from uploaded reports. A site's counters are born with its first run, at
//! 1, and Prometheus' `increase()` cannot see a first sample's increment; so the last run's state
//! is also in gauges (verdict, UDP reachability, loss, time), which dashboards read directly.
//! Sites already in the store start at zero after a restart. Site and finding labels come from clients, so both
//! are capped: past the cap a new value is counted as `other`, and the series count stays bounded
//! whatever clients send.
//!
//! prometheus-client writes OpenMetrics. A scraper that asks for it (Prometheus does, in its
//! Accept header) gets it as is; anything else gets the classic text format 0.0.4, which differs
//! only in the counter family names (`_total` on HELP/TYPE too), no `# UNIT` and no `# EOF`.

use crate::results::UploadStats;
use crate::shared::Shared;
use probe_proto::report::Report;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Distinct finding ids with their own label; clients only know a few dozen.
const MAX_FINDING_IDS: usize = 64;
/// Longest site label; longer names are cut (the store keeps them whole).
const MAX_LABEL_CHARS: usize = 64;
/// The overflow label, for sites and findings past the caps.
pub const OTHER: &str = "other";
/// Median RTT of a run, seconds: LAN to intercontinental.
const RTT_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Scrapes served at once; more wait in the kernel's backlog.
const MAX_SCRAPES: usize = 4;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteOutcome {
    site: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteFinding {
    site: String,
    finding: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Event {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// Labels handed out so far, first come first served up to the cap.
#[derive(Debug)]
struct Capped {
    seen: HashSet<String>,
    cap: usize,
}

impl Capped {
    fn label(&mut self, value: String) -> String {
        if self.seen.contains(&value) {
            return value;
        }
        if self.seen.len() < self.cap {
            self.seen.insert(value.clone());
            return value;
        }
        OTHER.into()
    }
}

/// Uploads (each from its own session) a site needs before it gets a label of its own, when
/// no `--sites` list vouches for it.
// Three sessions: one client cannot mint labels by naming a new site on every upload.
pub const DEFAULT_LABEL_AFTER: u32 = 3;
/// Sites counted toward their label at once; the least recently seen is forgotten past it.
const MAX_CANDIDATES: usize = 1024;

/// Site labels: a site earns one after `label_after` uploads (at once when the allow-list
/// vouches for it); at the cap, the least recently seen labelled site gives its label up and its
/// series are removed, so neither a flood of names nor the first comers can hold every label.
#[derive(Debug)]
struct SiteLabels {
    cap: usize,
    label_after: u32,
    clock: u64,
    /// label → (last seen, finding labels it has series for).
    labelled: HashMap<String, (u64, BTreeSet<String>)>,
    /// not yet labelled → (last seen, uploads so far).
    candidates: HashMap<String, (u64, u32)>,
}

/// What [`SiteLabels::label`] decided: the label to use, and a label given up, if any.
struct Labelled {
    label: String,
    evicted: Option<(String, BTreeSet<String>)>,
}

impl SiteLabels {
    fn new(cap: usize, label_after: u32) -> Self {
        Self {
            cap,
            label_after: label_after.max(1),
            clock: 0,
            labelled: HashMap::new(),
            candidates: HashMap::new(),
        }
    }

    fn label(&mut self, site: String, vouched: bool) -> Labelled {
        self.clock += 1;
        let now = self.clock;
        if let Some(e) = self.labelled.get_mut(&site) {
            e.0 = now;
            return Labelled {
                label: site,
                evicted: None,
            };
        }
        let uploads = {
            let c = self.candidates.entry(site.clone()).or_insert((now, 0));
            c.0 = now;
            c.1 = c.1.saturating_add(1);
            c.1
        };
        if self.candidates.len() > MAX_CANDIDATES {
            if let Some(oldest) = self
                .candidates
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            {
                self.candidates.remove(&oldest);
            }
        }
        if self.cap == 0 || (!vouched && uploads < self.label_after) {
            return Labelled {
                label: OTHER.into(),
                evicted: None,
            };
        }
        let mut evicted = None;
        if self.labelled.len() >= self.cap {
            let lru = self
                .labelled
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone());
            if let Some(k) = lru {
                let (_, findings) = self.labelled.remove(&k).unwrap_or_default();
                evicted = Some((k, findings));
            }
        }
        self.candidates.remove(&site);
        self.labelled.insert(site.clone(), (now, BTreeSet::new()));
        Labelled {
            label: site,
            evicted,
        }
    }
}

pub struct Metrics {
    registry: Registry,
    sites: Mutex<SiteLabels>,
    /// `--sites`: these get their label with their first upload.
    vouched: BTreeSet<String>,
    store_pruned: Family<Reason, Counter>,
    finding_ids: Mutex<Capped>,
    runs: Family<SiteOutcome, Counter>,
    rtt: Family<SiteLabel, Histogram, fn() -> Histogram>,
    loss_up: Family<SiteLabel, F64Gauge>,
    loss_down: Family<SiteLabel, F64Gauge>,
    udp_reachable: Family<SiteLabel, Gauge>,
    passed: Family<SiteLabel, Gauge>,
    last_run: Family<SiteLabel, Gauge>,
    findings: Family<SiteFinding, Counter>,
    packets: Family<Kind, Counter>,
    drops: Family<Reason, Counter>,
    sessions: Family<Event, Counter>,
    active: Gauge,
    uploads: Family<Outcome, Counter>,
    web_sessions: Family<Event, Counter>,
    web_active: Gauge,
    web_reports: Family<Outcome, Counter>,
    web_token_refused: Counter,
    web_dropped: Family<Reason, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn rtt_histogram() -> Histogram {
    Histogram::new(RTT_BUCKETS)
}

/// A site name as a label: printable, bounded.
fn site_label(site: &str) -> String {
    site.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_LABEL_CHARS)
        .collect()
}

/// A finding id as a label: the ids' own alphabet, so a client cannot smuggle in noise.
fn finding_label(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_CHARS)
        .collect()
}

impl Metrics {
    /// `max_sites` sites get their own label; `known` (from the store, most recent first) keep
    /// theirs across restarts.
    pub fn new(max_sites: usize, known: &[String]) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            sites: Mutex::new(SiteLabels::new(max_sites, DEFAULT_LABEL_AFTER)),
            vouched: BTreeSet::new(),
            store_pruned: Family::default(),
            finding_ids: Mutex::new(Capped {
                seen: HashSet::new(),
                cap: MAX_FINDING_IDS,
            }),
            runs: Family::default(),
            rtt: Family::new_with_constructor(rtt_histogram as fn() -> Histogram),
            loss_up: Family::default(),
            loss_down: Family::default(),
            udp_reachable: Family::default(),
            passed: Family::default(),
            last_run: Family::default(),
            findings: Family::default(),
            packets: Family::default(),
            drops: Family::default(),
            sessions: Family::default(),
            active: Gauge::default(),
            uploads: Family::default(),
            web_sessions: Family::default(),
            web_active: Gauge::default(),
            web_reports: Family::default(),
            web_token_refused: Counter::default(),
            web_dropped: Family::default(),
        };
        let mut m = m;
        m.register_server(&mut registry);
        m.register_sites(&mut registry);
        m.registry = registry;
        for site in known {
            // Sites already in the store earned their place there: labelled at once.
            let label = m.label(site, true);
            for outcome in ["pass", "fail"] {
                // Zero-valued series from the start, so rate() and absent() behave after restarts.
                let _ = m.runs.get_or_create(&SiteOutcome {
                    site: label.clone(),
                    outcome,
                });
            }
        }
        m
    }

    /// The server's own series, in the order the scrape shows them.
    fn register_server(&self, registry: &mut Registry) {
        registry.register(
            "probe_server_packets",
            "Packets the probe server received and answered, by kind",
            self.packets.clone(),
        );
        registry.register(
            "probe_server_dropped_packets",
            "Packets and control frames not answered, by reason",
            self.drops.clone(),
        );
        registry.register(
            "probe_server_sessions",
            "Probe sessions opened, expired and refused",
            self.sessions.clone(),
        );
        registry.register(
            "probe_server_active_sessions",
            "Probe sessions open now",
            self.active.clone(),
        );
        registry.register(
            "probe_server_uploads",
            "Client reports uploaded to this server, by what became of them",
            self.uploads.clone(),
        );
        registry.register(
            "probe_server_web_sessions",
            "Browser test page WebRTC sessions opened, refused (caps, bad offers) and connected",
            self.web_sessions.clone(),
        );
        registry.register(
            "probe_server_web_active_sessions",
            "Browser test page WebRTC sessions open now",
            self.web_active.clone(),
        );
        registry.register(
            "probe_server_web_reports",
            "Browser test page reports built, and stored or not (results store), or failed",
            self.web_reports.clone(),
        );
        registry.register(
            "probe_server_web_dropped",
            "What the browser test page's WebRTC peer dropped, by reason",
            self.web_dropped.clone(),
        );
        registry.register(
            "probe_server_web_token_refused",
            "Browser test page requests refused for a missing or wrong ?t= token",
            self.web_token_refused.clone(),
        );
        registry.register(
            "probe_server_store_pruned_runs",
            "Stored runs deleted: older than --retention, or oldest first over --max-store-mb",
            self.store_pruned.clone(),
        );
    }

    /// The per-site series from uploaded reports.
    fn register_sites(&self, registry: &mut Registry) {
        registry.register(
            "probe_site_runs",
            "Uploaded probe runs per site, by verdict (pass or fail)",
            self.runs.clone(),
        );
        registry.register(
            "probe_site_rtt_seconds",
            "Median UDP round-trip time of each uploaded run, per site",
            self.rtt.clone(),
        );
        registry.register(
            "probe_site_loss_up_ratio",
            "Client-to-server UDP loss of the site's last run (NaN: no UDP echo)",
            self.loss_up.clone(),
        );
        registry.register(
            "probe_site_loss_down_ratio",
            "Server-to-client UDP loss of the site's last run (NaN: no UDP echo)",
            self.loss_down.clone(),
        );
        registry.register(
            "probe_site_udp_reachable",
            "Whether UDP reached the server in the site's last run (1) or not (0); absent when it did not test UDP",
            self.udp_reachable.clone(),
        );
        registry.register(
            "probe_site_last_run_passed",
            "Whether the site's last run passed (1) or failed (0)",
            self.passed.clone(),
        );
        registry.register(
            "probe_site_last_run_timestamp_seconds",
            "When the site's last run was uploaded, Unix time",
            self.last_run.clone(),
        );
        registry.register(
            "probe_site_findings",
            "Uploaded runs per site that reported a finding, by finding id",
            self.findings.clone(),
        );
    }

    /// `label_after` uploads earn a site its label; the `vouched` sites (`--sites`) get it at once.
    pub fn with_site_policy(mut self, label_after: u32, vouched: &BTreeSet<String>) -> Self {
        self.sites
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .label_after = label_after.max(1);
        self.vouched = vouched.iter().map(|s| site_label(s)).collect();
        self
    }

    fn label(&self, site: &str, vouched: bool) -> String {
        let name = site_label(site);
        let vouched = vouched || self.vouched.contains(&name);
        let l = self
            .sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .label(name, vouched);
        if let Some((gone, findings)) = l.evicted {
            self.forget(&gone, &findings);
        }
        l.label
    }

    /// Removes every series of a site that gave its label up.
    fn forget(&self, site: &str, findings: &BTreeSet<String>) {
        let key = SiteLabel { site: site.into() };
        for outcome in ["pass", "fail"] {
            self.runs.remove(&SiteOutcome {
                site: site.into(),
                outcome,
            });
        }
        self.rtt.remove(&key);
        self.loss_up.remove(&key);
        self.loss_down.remove(&key);
        self.udp_reachable.remove(&key);
        self.passed.remove(&key);
        self.last_run.remove(&key);
        for finding in findings {
            self.findings.remove(&SiteFinding {
                site: site.into(),
                finding: finding.clone(),
            });
        }
    }

    /// Adds one uploaded run to the per-site series.
    pub fn record(&self, r: &Report, received_ms: u64) {
        let site = self.label(&r.site, false);
        let key = SiteLabel { site: site.clone() };
        let outcome = if r.ok { "pass" } else { "fail" };
        self.runs
            .get_or_create(&SiteOutcome {
                site: site.clone(),
                outcome,
            })
            .inc();
        // A run that did not test UDP (`--no-udp`) says nothing: no sample rather than a 0
        // that an alert on blocked UDP would fire on.
        if r.udp.skipped {
            self.udp_reachable.remove(&key);
        } else {
            self.udp_reachable
                .get_or_create(&key)
                .set(i64::from(r.udp.reachable));
        }
        self.passed.get_or_create(&key).set(i64::from(r.ok));
        self.last_run
            .get_or_create(&key)
            .set((received_ms / 1000) as i64);
        let echo = r.udp.echo.as_ref();
        if let Some(rtt) = echo.and_then(|e| e.rtt_ms) {
            self.rtt.get_or_create(&key).observe(rtt.p50 / 1000.0);
        }
        let ratio = |v: Option<f64>| v.map_or(f64::NAN, |p| p / 100.0);
        self.loss_up
            .get_or_create(&key)
            .set(ratio(echo.and_then(|e| e.loss_up_pct)));
        self.loss_down
            .get_or_create(&key)
            .set(ratio(echo.and_then(|e| e.loss_down_pct)));
        let ids: BTreeSet<String> = r.findings.iter().map(|f| finding_label(&f.id)).collect();
        let mut known = self.finding_ids.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            let finding = known.label(id);
            if site != OTHER {
                let mut labels = self.sites.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = labels.labelled.get_mut(&site) {
                    e.1.insert(finding.clone());
                }
            }
            self.findings
                .get_or_create(&SiteFinding {
                    site: site.clone(),
                    finding,
                })
                .inc();
        }
    }

    /// Copies the server's counters in, then encodes everything.
    pub fn encode(
        &self,
        shared: &Shared,
        uploads: Option<&UploadStats>,
        openmetrics: bool,
    ) -> String {
        self.copy_server_stats(shared);
        if let Some(u) = uploads {
            self.copy_upload_stats(u);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        if openmetrics {
            out
        } else {
            to_prometheus_text(&out)
        }
    }

    /// The sans-IO core's counters and session count, as they are now.
    fn copy_server_stats(&self, shared: &Shared) {
        let (s, active) = {
            let core = shared.core();
            (core.stats, core.session_count())
        };
        // Exhaustive on purpose: a counter added to ServerStats fails to build until it is here.
        let probe_proto::session::ServerStats {
            stun_requests,
            stun_replies,
            stun_too_small,
            ice_checks,
            ice_bad_credentials,
            echo_requests,
            echo_replies,
            drop_unknown_session,
            drop_bad_mac,
            drop_malformed,
            sessions_opened,
            sessions_expired,
            sessions_refused,
            drop_rate_limited,
            drop_unauthenticated,
            control_too_small,
            drop_not_ours,
            drop_quic_queue,
            drop_quic_invalid,
            drop_wrong_peer,
            ignored_live_hello,
            conn_no_progress,
            conn_displaced,
        } = s;
        store_counters(
            &self.packets,
            [
                ("stun_request", stun_requests),
                ("stun_reply", stun_replies),
                ("echo_request", echo_requests),
                ("echo_reply", echo_replies),
                ("ice_check", ice_checks),
            ]
            .map(|(kind, v)| (Kind { kind }, v)),
        );
        store_counters(
            &self.drops,
            [
                ("malformed", drop_malformed),
                ("unknown_session", drop_unknown_session),
                ("bad_mac", drop_bad_mac),
                ("rate_limited", drop_rate_limited),
                ("unauthenticated", drop_unauthenticated),
                ("not_ours", drop_not_ours),
                ("quic_queue_full", drop_quic_queue),
                ("quic_invalid", drop_quic_invalid),
                ("wrong_peer", drop_wrong_peer),
                ("stun_too_small", stun_too_small),
                ("control_too_small", control_too_small),
                ("ice_bad_credentials", ice_bad_credentials),
                ("ignored_live_hello", ignored_live_hello),
            ]
            .map(|(reason, v)| (Reason { reason }, v)),
        );
        store_counters(
            &self.sessions,
            [
                ("opened", sessions_opened),
                ("expired", sessions_expired),
                ("refused", sessions_refused),
                ("connection_no_progress", conn_no_progress),
                ("connection_displaced", conn_displaced),
            ]
            .map(|(event, v)| (Event { event }, v)),
        );
        self.active.set(active as i64);
        self.copy_web_stats(shared);
    }

    /// The browser test page: the peer's sessions and the reports built from them.
    fn copy_web_stats(&self, shared: &Shared) {
        let w = &shared.web_state;
        let load = crate::web::WebState::load;
        // Exhaustive on purpose, like the core's counters above.
        let crate::web::peer::PeerStats {
            opened,
            refused,
            connected,
            live,
        } = shared.web().map(|p| p.stats()).unwrap_or_default();
        store_counters(
            &self.web_sessions,
            [
                ("opened", opened),
                ("refused", refused),
                ("connected", connected),
            ]
            .map(|(event, v)| (Event { event }, v)),
        );
        self.web_active.set(live as i64);
        let crate::web::peer::PeerDrops {
            bad_offers,
            errors,
            malformed,
            messages_dropped,
            queue_full,
        } = shared.web().map(|p| p.drops()).unwrap_or_default();
        store_counters(
            &self.web_dropped,
            [
                ("bad_offer", bad_offers),
                ("session_error", errors),
                ("malformed", malformed),
                ("message_dropped", messages_dropped),
                ("queue_full", queue_full),
            ]
            .map(|(reason, v)| (Reason { reason }, v)),
        );
        store_counters(
            &self.web_reports,
            [
                ("built", load(&w.reports_built)),
                ("stored", load(&w.reports_stored)),
                ("not_stored", load(&w.reports_not_stored)),
                ("failed", load(&w.reports_failed)),
            ]
            .map(|(outcome, v)| (Outcome { outcome }, v)),
        );
        self.web_token_refused
            .inner()
            .store(load(&w.token_refused), Ordering::Relaxed);
    }

    /// What became of uploads, and the runs the store pruned.
    fn copy_upload_stats(&self, u: &UploadStats) {
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        store_counters(
            &self.uploads,
            [
                ("stored", &u.stored),
                ("store_failed", &u.store_failed),
                ("invalid", &u.invalid),
                ("queue_full", &u.queue_full),
                ("site_refused", &u.site_refused),
                ("site_token_refused", &u.site_token_refused),
            ]
            .map(|(outcome, v)| (Outcome { outcome }, load(v))),
        );
        store_counters(
            &self.store_pruned,
            [("retention", &u.pruned_retention), ("size", &u.pruned_size)]
                .map(|(reason, v)| (Reason { reason }, load(v))),
        );
    }
}

/// Sets counters to totals kept elsewhere (the core, the upload queue).
fn store_counters<L: Clone + std::hash::Hash + Eq>(
    family: &Family<L, Counter>,
    values: impl IntoIterator<Item = (L, u64)>,
) {
    for (labels, v) in values {
        family
            .get_or_create(&labels)
            .inner()
            .store(v, Ordering::Relaxed);
    }
}

/// OpenMetrics text → Prometheus text 0.0.4 for what prometheus-client emits: counter families
/// get their `_total` name on HELP and TYPE, `# UNIT` and `# EOF` go.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Serves GET /metrics until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // EMFILE and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (metrics, shared) = (metrics.clone(), shared.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let answer = tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &metrics, &shared));
            if let Ok(Err(e)) | Err(e) = answer.await.map_err(std::io::Error::other) {
                tracing::debug!(%peer, "metrics request failed: {e}");
            }
        });
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    metrics: &Metrics,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The request head only; a scraper sends no body with GET.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                TEXT_TYPE,
                "",
                false,
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let (method, path) = request_line(&head);
    let openmetrics = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    match (method, path.split('?').next().unwrap_or_default()) {
        ("GET" | "HEAD", "/metrics") => {
            let uploads = shared.results.stats.clone();
            let body = metrics.encode(shared, Some(&uploads), openmetrics);
            let ctype = if openmetrics {
                OPENMETRICS_TYPE
            } else {
                TEXT_TYPE
            };
            respond(&mut stream, "200 OK", ctype, &body, method == "HEAD").await
        }
        ("GET" | "HEAD", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                TEXT_TYPE,
                "Metrics are at /metrics.\n",
                method == "HEAD",
            )
            .await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", TEXT_TYPE, "", false).await,
    }
}

fn request_line(head: &str) -> (&str, &str) {
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::report::{rfc3339, Finding, Severity, TcpResult, UdpResult};
    use probe_proto::stats::{EchoSummary, RttSummary};

    fn report(site: &str, loss_up: Option<f64>, findings: &[&str]) -> Report {
        let mut r = Report {
            schema: 1,
            tool_version: "0.1.0".into(),
            site: site.into(),
            server: "203.0.113.2:8443".into(),
            started_at: rfc3339(0),
            duration_ms: 1,
            ok: true,
            udp: UdpResult {
                reachable: loss_up.is_some(),
                echo: loss_up.map(|l| EchoSummary {
                    sent: 600,
                    received: 540,
                    loss_up_pct: Some(l),
                    loss_down_pct: Some(0.0),
                    rtt_ms: Some(RttSummary {
                        min: 0.1,
                        p50: 0.2,
                        p95: 0.4,
                        p99: 0.5,
                        max: 0.9,
                    }),
                    jitter_ms: 0.0,
                    reordered: 0,
                    duplicates: 0,
                }),
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
        r.set_findings(
            findings
                .iter()
                .map(|id| Finding::new(id, Severity::Error, "s", "f"))
                .collect(),
        );
        r
    }

    fn shared() -> Shared {
        Shared::new(
            probe_proto::session::Core::new(probe_proto::session::Limits::default()),
            None,
        )
    }

    #[test]
    fn per_site_series_and_server_counters() {
        let m = Metrics::new(10, &["earlier".into()]).with_site_policy(1, &BTreeSet::new()); // one upload per site here
        m.record(
            &report("lossy", Some(10.0), &["packet_loss"]),
            1_795_651_200_000,
        );
        m.record(
            &report("blocked", None, &["udp_blocked"]),
            1_795_651_200_000,
        );
        let mut tcp_only = report("tcp-only", None, &[]);
        tcp_only.udp.skipped = true;
        m.record(&tcp_only, 1_795_651_200_000);
        let text = m.encode(&shared(), Some(&UploadStats::default()), false);
        assert!(
            !text.contains("probe_site_udp_reachable{site=\"tcp-only\"}"),
            "a --no-udp run has no UDP sample:\n{text}"
        );
        for want in [
            "probe_site_runs_total{site=\"lossy\",outcome=\"fail\"} 1",
            "probe_site_runs_total{site=\"earlier\",outcome=\"pass\"} 0",
            "probe_site_loss_up_ratio{site=\"lossy\"} 0.1",
            "probe_site_loss_up_ratio{site=\"blocked\"} NaN",
            "probe_site_udp_reachable{site=\"blocked\"} 0",
            "probe_site_last_run_passed{site=\"lossy\"} 0",
            "probe_site_last_run_passed{site=\"tcp-only\"} 1",
            "probe_site_findings_total{site=\"blocked\",finding=\"udp_blocked\"} 1",
            "probe_site_rtt_seconds_count{site=\"lossy\"} 1",
            "probe_site_last_run_timestamp_seconds{site=\"lossy\"} 1795651200",
            "probe_server_packets_total{kind=\"echo_reply\"} 0",
            "probe_server_dropped_packets_total{reason=\"rate_limited\"} 0",
            "probe_server_sessions_total{event=\"refused\"} 0",
            "probe_server_uploads_total{outcome=\"stored\"} 0",
            "# TYPE probe_site_runs_total counter",
            "# TYPE probe_site_rtt_seconds histogram",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        assert!(!text.contains("# EOF"));
        let om = m.encode(&shared(), None, true);
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE probe_site_runs counter"));
    }

    #[test]
    fn labels_are_capped_and_sanitised() {
        let m = Metrics::new(2, &[]).with_site_policy(1, &BTreeSet::new()); // one upload per site here
        for site in ["a", "b", "c", "d"] {
            m.record(&report(site, Some(0.0), &["x y\"z", "ok_id"]), 0);
        }
        m.record(&report(&"s".repeat(500), Some(0.0), &[]), 0);
        let text = m.encode(&shared(), None, false);
        // Two labels at most: the two most recently seen sites (d and the long name) hold them.
        let labelled: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("probe_site_last_run_passed{site=\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(labelled.len(), 2, "{text}");
        assert!(labelled.contains("d"), "{text}");
        assert!(
            !text.contains("site=\"a\"") && !text.contains("site=\"c\""),
            "{text}"
        );
        assert!(text.contains("finding=\"x_y_z\""), "{text}");
        assert!(text.contains(&"s".repeat(64)), "{text}");
        assert!(!text.contains(&"s".repeat(65)), "{text}");
    }

    #[test]
    fn site_gets_its_own_label_only_after_three_sessions() {
        let m = Metrics::new(10, &[]).with_site_policy(3, &BTreeSet::new());
        for _ in 0..2 {
            m.record(&report("newcomer", Some(0.0), &["packet_loss"]), 0);
        }
        let text = m.encode(&shared(), None, false);
        assert!(!text.contains("site=\"newcomer\""), "{text}");
        assert!(
            text.contains("probe_site_runs_total{site=\"other\",outcome=\"fail\"} 2"),
            "{text}"
        );
        m.record(&report("newcomer", Some(0.0), &[]), 0);
        let text = m.encode(&shared(), None, false);
        assert!(
            text.contains("probe_site_runs_total{site=\"newcomer\",outcome=\"pass\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn allow_listed_sites_are_labelled_at_once() {
        let vouched: BTreeSet<String> = ["berlin".to_string()].into();
        let m = Metrics::new(10, &[]).with_site_policy(3, &vouched);
        m.record(&report("berlin", Some(0.0), &[]), 0);
        let text = m.encode(&shared(), None, false);
        assert!(text.contains("site=\"berlin\""), "{text}");
    }

    #[test]
    fn least_recently_seen_label_is_recycled_and_its_series_removed() {
        let m = Metrics::new(2, &[]).with_site_policy(1, &BTreeSet::new());
        m.record(&report("a", Some(0.0), &[]), 0);
        m.record(&report("b", None, &["udp_blocked"]), 0);
        m.record(&report("a", Some(0.0), &[]), 0);
        // Full: c takes b's label (b was seen least recently), and b's series go.
        m.record(&report("c", Some(0.0), &[]), 0);
        let text = m.encode(&shared(), None, false);
        assert!(!text.contains("site=\"b\""), "{text}");
        assert!(
            text.contains("probe_site_runs_total{site=\"a\",outcome=\"pass\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("probe_site_runs_total{site=\"c\",outcome=\"pass\"} 1"),
            "{text}"
        );
        // A flood of new names cannot hold the labels: each takes one only in turn.
        for i in 0..100 {
            m.record(&report(&format!("flood-{i}"), Some(0.0), &[]), 0);
        }
        let text = m.encode(&shared(), None, false);
        let series = text
            .lines()
            .filter(|l| l.starts_with("probe_site_last_run_passed{"))
            .count();
        assert_eq!(series, 2, "{text}");
    }

    #[test]
    fn pruned_runs_and_refused_sites_are_counted() {
        let m = Metrics::new(2, &[]);
        let u = UploadStats::default();
        u.pruned_retention.store(3, Ordering::Relaxed);
        u.pruned_size.store(7, Ordering::Relaxed);
        u.site_refused.store(2, Ordering::Relaxed);
        u.site_token_refused.store(4, Ordering::Relaxed);
        let text = m.encode(&shared(), Some(&u), false);
        for want in [
            "probe_server_store_pruned_runs_total{reason=\"retention\"} 3",
            "probe_server_store_pruned_runs_total{reason=\"size\"} 7",
            "probe_server_uploads_total{outcome=\"site_refused\"} 2",
            "probe_server_uploads_total{outcome=\"site_token_refused\"} 4",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
    }

    #[test]
    fn site_names_with_quotes_are_escaped() {
        let m = Metrics::new(5, &[]).with_site_policy(1, &BTreeSet::new()); // one upload per site here
        m.record(&report("Berlin \"HQ\"\\1\nx", Some(0.0), &[]), 0);
        let text = m.encode(&shared(), None, false);
        assert!(text.contains(r#"site="Berlin \"HQ\"\\1?x""#), "{text}");
    }

    #[test]
    fn test_page_counters_are_exported() {
        let m = Metrics::new(2, &[]);
        let s = shared();
        for _ in 0..3 {
            crate::web::WebState::bump(&s.web_state.reports_built);
        }
        crate::web::WebState::bump(&s.web_state.reports_not_stored);
        crate::web::WebState::bump(&s.web_state.token_refused);
        let text = m.encode(&s, None, false);
        for want in [
            "probe_server_web_reports_total{outcome=\"built\"} 3",
            "probe_server_web_reports_total{outcome=\"not_stored\"} 1",
            "probe_server_web_reports_total{outcome=\"stored\"} 0",
            "probe_server_web_token_refused_total 1",
            "probe_server_web_dropped_total{reason=\"queue_full\"} 0",
            // No peer in this server: its series are there, at zero.
            "probe_server_web_sessions_total{event=\"opened\"} 0",
            "probe_server_web_sessions_total{event=\"connected\"} 0",
            "probe_server_web_active_sessions 0",
            "# TYPE probe_server_web_sessions_total counter",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
    }

    #[test]
    fn prometheus_text_renames_counter_families_only() {
        let om = "# HELP a A.\n# TYPE a counter\na_total 1\n# HELP g G.\n# TYPE g gauge\n# UNIT g seconds\ng 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }

    /// Every series the shipped Grafana dashboard queries is one this server exports.
    #[test]
    fn dashboard_queries_only_exported_series() {
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/grafana-dashboard.json")).unwrap();
        let mut exprs = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(e) = o.get("expr").and_then(|e| e.as_str()) {
                        out.push(e.to_string());
                    }
                    o.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&dash["panels"], &mut exprs);
        assert!(exprs.len() > 10, "{exprs:?}");
        let m = Metrics::new(5, &[]);
        m.record(&report("s", Some(1.0), &["packet_loss"]), 0);
        let text = m.encode(&shared(), Some(&UploadStats::default()), false);
        for e in &exprs {
            for name in e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("probe_"))
            {
                assert!(
                    text.lines().any(|l| l.starts_with(name)),
                    "the dashboard queries {name}, which /metrics does not have"
                );
            }
        }
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("GET", "/metrics")
        );
        assert_eq!(request_line(""), ("", ""));
    }
}
