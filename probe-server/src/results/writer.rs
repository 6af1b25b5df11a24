//! The one thread that writes to the store. Fed by a bounded channel: when the disk is slow the
//! queue fills and uploads are refused (counted), instead of memory growing or the echo path
//! waiting.

use super::store::{Row, Store};
use super::{Keep, UploadStats};
use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Uploads waiting for the disk; a run takes seconds per client, so this is a deep backlog.
const QUEUE: usize = 256;
/// Rows per transaction when a backlog has built up (one fsync for all of them).
const BATCH: usize = 64;
/// While the store keeps failing, say so at most this often.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// Retention and size are enforced at start and then at most this often (after a write).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub fn spawn(
    store: Store,
    metrics: Option<Arc<Metrics>>,
    stats: Arc<UploadStats>,
    keep: Keep,
) -> std::io::Result<(SyncSender<Row>, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(QUEUE);
    let worker = std::thread::Builder::new()
        .name("result-store".into())
        .spawn(move || write_loop(store, rx, metrics, stats, keep))?;
    Ok((tx, worker))
}

/// Deletes what is past retention or over the size bound; counts and logs it.
fn prune(store: &mut Store, keep: Keep, stats: &UploadStats) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match store.prune(now_ms, keep) {
        Ok((0, 0)) => {}
        Ok((old, size)) => {
            stats.pruned_retention.fetch_add(old, Ordering::Relaxed);
            stats.pruned_size.fetch_add(size, Ordering::Relaxed);
            tracing::info!(
                path = %store.path().display(),
                older_than_retention = old,
                over_size = size,
                "deleted stored runs"
            );
        }
        Err(e) => tracing::warn!(
            path = %store.path().display(),
            "cannot delete old runs from the result store: {e}"
        ),
    }
}

fn write_loop(
    mut store: Store,
    rx: Receiver<Row>,
    metrics: Option<Arc<Metrics>>,
    stats: Arc<UploadStats>,
    keep: Keep,
) {
    let mut failing: Option<Instant> = None;
    let mut lost_since_log = 0u64;
    prune(&mut store, keep, &stats);
    let mut pruned_at = Instant::now();
    // Ends when the sender is dropped (shutdown) and the queue is drained.
    while let Ok(first) = rx.recv() {
        if pruned_at.elapsed() >= PRUNE_EVERY {
            prune(&mut store, keep, &stats);
            pruned_at = Instant::now();
        }
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // The metrics see every accepted run, whatever becomes of the disk write.
        if let Some(m) = &metrics {
            for r in &batch {
                m.record(&r.report, r.received_ms);
            }
        }
        let n = batch.len() as u64;
        match store.insert(&batch) {
            Ok(()) => {
                stats.stored.fetch_add(n, Ordering::Relaxed);
                if failing.take().is_some() {
                    tracing::info!(
                        path = %store.path().display(),
                        "the result store is writable again"
                    );
                }
            }
            Err(e) => {
                stats.store_failed.fetch_add(n, Ordering::Relaxed);
                lost_since_log += n;
                let due = failing.is_none_or(|t| t.elapsed() >= REPEAT_LOG);
                if due {
                    tracing::error!(
                        path = %store.path().display(),
                        lost = lost_since_log,
                        "cannot write uploaded results ({}): {e}; the probe keeps serving",
                        hint(&e)
                    );
                    failing = Some(Instant::now());
                    lost_since_log = 0;
                }
            }
        }
    }
}

/// SQLite's extended result code, when the error carries one.
fn e_extended(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    }
}

/// What the operator should look at, by SQLite's error class.
fn hint(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DiskFull) => "the disk is full",
        // SQLITE_READONLY_DBMOVED: the file was moved or deleted under the running server.
        Some(ReadOnly) if e_extended(e) == Some(1032) => {
            "the store file was moved or deleted while the server runs; restart probe-server to start a new one"
        }
        Some(ReadOnly) => "the store became read-only",
        Some(SystemIoFailure) => "I/O error: check the disk and the kernel log",
        Some(DatabaseCorrupt) | Some(NotADatabase) => {
            "the file is damaged; move it aside and restart to start a new one"
        }
        Some(DatabaseBusy) | Some(DatabaseLocked) => "another process holds the store locked",
        _ => "unexpected store error",
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::tests_support::{report, Scratch};
    use super::super::{Sink, UploadedRun};
    use super::*;

    fn tmp(name: &str) -> (Scratch, std::path::PathBuf) {
        let dir = Scratch::new(name);
        let path = dir.path().join("results.sqlite");
        (dir, path)
    }

    /// A store moved aside under the running server is named as such, not "read-only".
    #[test]
    fn a_store_moved_away_says_so() {
        let (dir, path) = tmp("writer-moved");
        std::fs::create_dir_all(dir.path()).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        std::fs::rename(&path, dir.path().join("old.sqlite")).unwrap();
        let e = conn.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        assert!(hint(&e).contains("moved or deleted"), "{e}: {}", hint(&e));
    }

    fn upload(site: &str) -> UploadedRun {
        UploadedRun {
            client_addr: "[::ffff:198.51.100.2]:5000".parse().unwrap(),
            received_ms: 1_795_651_200_000,
            report_json: serde_json::to_string(&report(site, Some(1.0))).unwrap(),
            proof: None,
        }
    }

    #[test]
    fn accepted_uploads_are_written_before_finish_returns() {
        let (_dir, path) = tmp("finish");
        let sink = Sink::start(Store::open_for_writing(&path).unwrap(), None).unwrap();
        for i in 0..10 {
            sink.submit(upload(&format!("site-{}", i % 3))).unwrap();
        }
        sink.finish(Duration::from_secs(10));
        assert_eq!(sink.stats.stored.load(Ordering::Relaxed), 10);
        let runs = Store::open_for_reading(&path)
            .unwrap()
            .runs(None, 0)
            .unwrap();
        assert_eq!(runs.len(), 10);
        // v4-mapped peers are stored as the IPv4 address people know.
        assert_eq!(runs[0].client_addr, "198.51.100.2:5000");
        assert!(sink.submit(upload("late")).is_err());
    }

    #[test]
    fn a_store_that_cannot_write_is_counted_and_the_sink_stays_usable() {
        let (_dir, path) = tmp("broken");
        let store = Store::open_for_writing(&path).unwrap();
        // Drop the table behind the writer's back: every insert now fails, like a dead disk.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE runs;")
            .unwrap();
        let sink = Sink::start(store, None).unwrap();
        for _ in 0..3 {
            assert!(sink.submit(upload("s")).is_ok());
        }
        sink.finish(Duration::from_secs(10));
        assert_eq!(sink.stats.store_failed.load(Ordering::Relaxed), 3);
        assert_eq!(sink.stats.stored.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn invalid_uploads_are_refused_and_counted() {
        let (_dir, path) = tmp("invalid");
        let sink = Sink::start(Store::open_for_writing(&path).unwrap(), None).unwrap();
        let mut u = upload("s");
        u.report_json = "{\"schema\":1,\"site\":3}".into();
        assert!(sink.submit(u).is_err());
        assert_eq!(sink.stats.invalid.load(Ordering::Relaxed), 1);
        sink.finish(Duration::from_secs(5));
    }
}
