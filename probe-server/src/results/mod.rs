//! Results kept where the admin is: uploads from clients go to a SQLite store (and to the
//! Prometheus metrics); `probe-server results` reads them back.
//!
//! The control channel only parses and queues (microseconds, on the async thread that also
//! answers echo packets); a dedicated thread does the disk writes, so a slow, full or read-only
//! disk costs uploads, never echo replies.

mod show;
pub mod store;
mod writer;

pub use show::{run, ResultsArgs};

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
/// Site names are labels in tables and metrics, not documents.
const MAX_SITE_CHARS: usize = 256;

/// One uploaded run, as the control channel hands it over.
#[derive(Debug, Clone)]
pub struct UploadedRun {
    /// The client's address as this server saw it on the control channel.
    pub client_addr: SocketAddr,
    /// Server wall clock at upload, milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// The client's schema-1 JSON report, as sent.
    pub report_json: String,
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
}

impl Sink {
    /// Starts the writer thread on an open store; `metrics` also sees every accepted run.
    pub fn start(
        store: store::Store,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> std::io::Result<Self> {
        let stats = std::sync::Arc::<UploadStats>::default();
        let (tx, worker) = writer::spawn(store, metrics, stats.clone())?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            stats,
        })
    }

    pub fn submit(&self, run: UploadedRun) -> Result<(), String> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err("this server keeps no results".into());
        };
        let report = match check(&run.report_json) {
            Ok(r) => r,
            Err(why) => {
                UploadStats::bump(&self.stats.invalid, 1);
                return Err(why);
            }
        };
        let row = Row {
            received_ms: run.received_ms,
            client_addr: crate::shared::canonical(run.client_addr).to_string(),
            report,
            json: run.report_json,
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

/// A report this server can file: schema 1, parseable, of sane size.
fn check(json: &str) -> Result<Report, String> {
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
    let report: Report = serde_json::from_str(json)
        .map_err(|e| format!("the report is not a schema-{SCHEMA} report: {e}"))?;
    if report.site.is_empty() || report.site.chars().count() > MAX_SITE_CHARS {
        return Err(format!(
            "the site name must have 1 to {MAX_SITE_CHARS} characters"
        ));
    }
    Ok(report)
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
    }
}
