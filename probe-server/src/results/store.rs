//! The SQLite file that keeps uploaded runs. One table; the figures the site table needs are
//! columns (so `results` never parses a year of JSON), the report itself is kept whole.
//!
//! Rollback journal, not WAL: `probe-server results` may run as another user than the server,
//! and a WAL database cannot be read without write access to its `-shm` file.

use probe_proto::catalog::FindingId;
use probe_proto::report::Report;
use probe_proto::sites::{EchoFigures, PathFigures, Run};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA user_version` of the layout below; a file with a higher one is left alone.
const LAYOUT: i64 = 3;

/// Layout 1 → 2: the path figures that sites are compared on (issue 13).
const TO_LAYOUT_2: &str = "
ALTER TABLE runs ADD COLUMN mtu_up INTEGER;
ALTER TABLE runs ADD COLUMN mtu_down INTEGER;
ALTER TABLE runs ADD COLUMN cut_after_s REAL;
";

/// Layout 2 → 3: whether the run tested UDP at all (`--no-udp`). Runs stored before it did.
const TO_LAYOUT_3: &str = "
ALTER TABLE runs ADD COLUMN udp_tested INTEGER NOT NULL DEFAULT 1;
";

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY,
    received_ms    INTEGER NOT NULL,  -- server clock, Unix ms
    site           TEXT    NOT NULL,
    client_addr    TEXT    NOT NULL,  -- as the server saw the control channel
    reflexive_addr TEXT,              -- report udp.stun.mapped: the client's public UDP address
    started_at     TEXT    NOT NULL,  -- client clock, RFC 3339
    tool_version   TEXT    NOT NULL,
    ok             INTEGER NOT NULL,
    udp_reachable  INTEGER NOT NULL,
    udp_sent       INTEGER,           -- null: no UDP echo in this run
    loss_up_pct    REAL,
    loss_down_pct  REAL,
    rtt_p50_ms     REAL,
    rtt_p95_ms     REAL,
    findings       TEXT    NOT NULL,  -- finding ids, space-separated
    report         TEXT    NOT NULL,  -- the schema-1 JSON as the client sent it
    mtu_up         INTEGER,           -- largest unfragmented UDP payload up (0: < 1200); null: not measured
    mtu_down       INTEGER,           -- the same, down
    cut_after_s    REAL,              -- the path stopped for good this far into the run
    udp_tested     INTEGER NOT NULL DEFAULT 1  -- 0: --no-udp, udp_reachable says nothing
);
CREATE INDEX IF NOT EXISTS runs_site_time ON runs (site, received_ms);
CREATE INDEX IF NOT EXISTS runs_time ON runs (received_ms);
";

/// One run ready to insert: the parsed report for the columns, the JSON as sent.
#[derive(Debug, Clone)]
pub struct Row {
    pub received_ms: u64,
    pub client_addr: String,
    pub report: Report,
    pub json: String,
}

/// One stored run as `--runs` lists it.
#[derive(Debug, Clone)]
pub struct StoredRun {
    pub id: i64,
    pub run: Run,
    pub client_addr: String,
    pub reflexive_addr: Option<String>,
    pub tool_version: String,
}

/// Why the store could not be opened, worded for the operator.
#[derive(Debug)]
pub enum OpenError {
    /// File system or permissions: nothing to write to.
    ReadOnly(PathBuf, String),
    /// The file is there but is not (or no longer) our database: never replaced.
    Corrupt(PathBuf, String),
    /// The file is no SQLite database at all: most likely a wrong path (a config file, say).
    NotAStore(PathBuf),
    Missing(PathBuf),
    /// This user may not open it (the store is the serving user's, mode 0600).
    Denied(PathBuf, String),
    /// The disk holding it is full.
    Full(PathBuf),
    Other(PathBuf, String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::ReadOnly(p, why) => write!(
                f,
                "the result store {} cannot be written ({why}); give --store a path on a writable disk",
                p.display()
            ),
            OpenError::Corrupt(p, why) => write!(
                f,
                "the result store {} is damaged or not a probe-server store ({why}); it was left as it is: \
                 move it aside (mv {0} {0}.broken) to start a new one, or give --store another path",
                p.display()
            ),
            OpenError::NotAStore(p) => write!(
                f,
                "{} is not a probe-server result store (not an SQLite database); it was left as it \
                 is: check the --store path (or --state-dir)",
                p.display()
            ),
            OpenError::Missing(p) => write!(
                f,
                "there is no result store at {} (or only an empty file: no upload was ever kept); \
                 probe-server creates it when it starts serving (with the same --store or --state-dir)",
                p.display()
            ),
            OpenError::Denied(p, why) => write!(
                f,
                "this user may not open the result store {} ({why}); it belongs to the user probe-server \
                 serves as: run the command with sudo, or as that user",
                p.display()
            ),
            OpenError::Full(p) => write!(
                f,
                "the disk holding the result store {} is full; free space there, or give --store a path \
                 on another disk",
                p.display()
            ),
            OpenError::Other(p, why) => {
                write!(f, "cannot open the result store {}: {why}", p.display())
            }
        }
    }
}

fn classify(path: &Path, e: &rusqlite::Error) -> OpenError {
    let p = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => OpenError::Full(p),
        Some(ErrorCode::PermissionDenied) => {
            fs_problem(path).unwrap_or_else(|| OpenError::Denied(p, "permission denied".into()))
        }
        Some(ErrorCode::ReadOnly) => OpenError::ReadOnly(p, e.to_string()),
        Some(ErrorCode::NotADatabase) if !sqlite_header(path) => OpenError::NotAStore(p),
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            OpenError::Corrupt(p, e.to_string())
        }
        Some(ErrorCode::CannotOpen) => {
            fs_problem(path).unwrap_or_else(|| OpenError::Other(p, e.to_string()))
        }
        _ => OpenError::Other(p, e.to_string()),
    }
}

/// Whether the file starts as every SQLite database does (its header string, sqlite.org
/// fileformat §1.3.1): a file that does not was never a store, so moving it aside is not
/// the advice.
fn sqlite_header(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}

/// SQLite says only "unable to open database file"; ask the OS what it is: a read-only file
/// system, or a file or directory this user may not use (the store is the serving user's).
fn fs_problem(path: &Path) -> Option<OpenError> {
    let p = path.to_path_buf();
    let denied =
        |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM));
    if let Err(e) = std::fs::File::open(path) {
        if denied(&e) {
            return Some(OpenError::Denied(
                p,
                format!("permission denied on {}", path.display()),
            ));
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let probe = dir.join(".probe-server-write-test");
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            Some(OpenError::ReadOnly(p, "read-only file system".into()))
        }
        Err(e) if denied(&e) => Some(OpenError::Denied(
            p,
            format!("permission denied on {}", dir.display()),
        )),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Some(OpenError::Full(p)),
        Err(_) => None,
    }
}

/// The store holds client addresses and reports: the owner's alone. A new file is created
/// 0600 (and SQLite gives its journal the database file's mode); an existing one, and any
/// `-journal`/`-wal`/`-shm` beside it, is tightened to 0600. A symlink at the path is refused.
/// Whether this call created the file (so that a failed start may remove it again).
fn create_private(path: &Path) -> Result<bool, OpenError> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let new = created.is_ok();
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(OpenError::Other(
                    path.into(),
                    "it is a symbolic link; give --store the real path".into(),
                ));
            }
        }
        // Let SQLite say what is wrong (read-only, missing directory, …) in its own words.
        Err(_) => return Ok(false),
    }
    let name = path.as_os_str().to_string_lossy();
    for p in [
        name.to_string(),
        format!("{name}-journal"),
        format!("{name}-wal"),
        format!("{name}-shm"),
    ] {
        crate::cert::tighten(Path::new(&p));
    }
    Ok(new)
}

/// A store the serving user may not open: the fix is that user's rights, never sudo (which
/// would push an exposed server towards root).
fn for_the_server(e: OpenError) -> OpenError {
    match e {
        OpenError::Denied(p, why) => {
            let dir = p
                .parent()
                .map_or_else(|| ".".into(), |d| d.display().to_string());
            OpenError::Other(
                p,
                format!(
                    "{why}; give the user probe-server runs as write access to {dir} and the file, or a --store \
                     (or --state-dir) that user owns"
                ),
            )
        }
        e => e,
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when absent) for the server: checks that the file is ours and intact and
    /// that it can be written, so that every such problem shows at start, not at the first upload.
    pub fn open_for_writing(path: &Path) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                let why = format!("cannot create {}: {e}", dir.display());
                return Err(if e.raw_os_error() == Some(libc::EROFS) {
                    OpenError::ReadOnly(path.into(), why)
                } else {
                    OpenError::Other(path.into(), why)
                });
            }
        }
        let created = create_private(path).map_err(for_the_server)?;
        let opened = Self::open_created(path).map_err(for_the_server);
        // Nothing left behind that a later `results` would call damaged: an empty file this
        // start created itself (a full disk, say) goes again.
        if opened.is_err() && created && std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(path);
        }
        opened
    }

    /// [`Self::open_for_writing`] once the file exists, 0600.
    fn open_created(path: &Path) -> Result<Self, OpenError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, &e))?;
        // SQLite falls back to read-only silently when the file is not writable.
        if conn.is_readonly("main").unwrap_or(false) {
            return Err(OpenError::ReadOnly(
                path.into(),
                "the file or its file system is read-only".into(),
            ));
        }
        let store = Self {
            conn,
            path: path.into(),
        };
        store.settle()?;
        store.check_intact()?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store read-only, for `probe-server results`.
    pub fn open_for_reading(path: &Path) -> Result<Self, OpenError> {
        // exists() says false for a file in a directory this user may not enter.
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenError::Missing(path.into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(OpenError::Denied(
                    path.into(),
                    format!(
                        "permission denied on {}",
                        path.parent().unwrap_or(path).display()
                    ),
                ))
            }
            // Created by a server that could not write a byte (a full disk at its start).
            Ok(m) if m.len() == 0 => return Err(OpenError::Missing(path.into())),
            _ => {}
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, &e))?;
        let store = Self {
            conn,
            path: path.into(),
        };
        store.settle()?;
        let version = store.layout_version()?;
        if version > LAYOUT {
            return Err(store.newer(version));
        }
        if !store.has_runs_table()? {
            return Err(OpenError::Corrupt(
                path.into(),
                "it has no runs table".into(),
            ));
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> OpenError {
        classify(&self.path, &e)
    }

    fn settle(&self) -> Result<(), OpenError> {
        // The server writes while `results` reads: wait for the other's lock rather than fail.
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| self.err(e))
    }

    fn layout_version(&self) -> Result<i64, OpenError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn newer(&self, version: i64) -> OpenError {
        OpenError::Other(
            self.path.clone(),
            format!("it was written by a newer probe-server (layout {version}, this one knows {LAYOUT})"),
        )
    }

    fn has_runs_table(&self) -> Result<bool, OpenError> {
        self.conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// `quick_check` reads every page once: a few seconds for a very large store, at start only.
    fn check_intact(&self) -> Result<(), OpenError> {
        let verdict: String = self
            .conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(OpenError::Corrupt(self.path.clone(), verdict))
        }
    }

    fn migrate(&self) -> Result<(), OpenError> {
        let version = self.layout_version()?;
        if version > LAYOUT {
            return Err(self.newer(version));
        }
        if version == 0 {
            // A fresh file has no tables; a SQLite file of something else is not ours to extend.
            let foreign: Option<String> = self
                .conn
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'runs' LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(t) = foreign {
                return Err(OpenError::Corrupt(
                    self.path.clone(),
                    format!("it holds a table `{t}` that probe-server did not create"),
                ));
            }
        }
        let upgrade = match version {
            1 => format!("{TO_LAYOUT_2} {TO_LAYOUT_3}"),
            2 => TO_LAYOUT_3.to_string(),
            _ => String::new(),
        };
        // One transaction: the new columns, their backfill and the new layout number land
        // together or not at all. Also the write test: on a read-only medium it fails here.
        let upgraded = self
            .conn
            .execute_batch(&format!("BEGIN IMMEDIATE; {CREATE} {upgrade}"))
            .and_then(|()| {
                if version == 1 {
                    self.backfill_path_cuts()?;
                }
                self.conn
                    .execute_batch(&format!("PRAGMA user_version = {LAYOUT}; COMMIT;"))
            });
        upgraded.map_err(|e| {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.err(e)
        })
    }

    /// Runs stored before layout 2 predate the MTU check, but may carry a path cut in their
    /// report: fill its column so the site table counts them too.
    fn backfill_path_cuts(&self) -> rusqlite::Result<()> {
        let pattern = format!("%{}%", FindingId::PathCutAfter.as_str());
        let mut st = self
            .conn
            .prepare("SELECT id, report FROM runs WHERE findings LIKE ?1")?;
        let found: Vec<(i64, String)> = st
            .query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, json) in found {
            // A report this server stored parses; one that no longer does keeps a null column.
            let Ok(report) = serde_json::from_str::<Report>(&json) else {
                continue;
            };
            let cut = PathFigures::from_report(&report).cut_after_s;
            self.conn.execute(
                "UPDATE runs SET cut_after_s = ?1 WHERE id = ?2",
                params![cut, id],
            )?;
        }
        Ok(())
    }

    /// Inserts the rows in one transaction: all are kept or none.
    pub fn insert(&mut self, rows: &[Row]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT INTO runs (received_ms, site, client_addr, reflexive_addr, started_at, \
                 tool_version, ok, udp_reachable, udp_sent, loss_up_pct, loss_down_pct, rtt_p50_ms, \
                 rtt_p95_ms, findings, report, mtu_up, mtu_down, cut_after_s, udp_tested) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19)",
            )?;
            for row in rows {
                let r = &row.report;
                let fig = Run::from_report(r, row.received_ms);
                let echo = fig.echo;
                st.execute(params![
                    row.received_ms as i64,
                    r.site,
                    row.client_addr,
                    r.udp.stun.mapped,
                    r.started_at,
                    r.tool_version,
                    r.ok,
                    r.udp.reachable,
                    echo.map(|e| e.sent as i64),
                    echo.and_then(|e| e.loss_up_pct),
                    echo.and_then(|e| e.loss_down_pct),
                    echo.and_then(|e| e.rtt_p50_ms),
                    echo.and_then(|e| e.rtt_p95_ms),
                    finding_ids(&fig.findings),
                    row.json,
                    fig.path.mtu_up,
                    fig.path.mtu_down,
                    fig.path.cut_after_s,
                    fig.udp_tested,
                ])?;
            }
        }
        tx.commit()
    }

    /// Bytes the store's pages hold (free pages, which SQLite reuses, not counted).
    pub fn used_bytes(&self) -> rusqlite::Result<u64> {
        let q = |p: &str| -> rusqlite::Result<i64> {
            self.conn.pragma_query_value(None, p, |r| r.get(0))
        };
        let (pages, free, size) = (q("page_count")?, q("freelist_count")?, q("page_size")?);
        Ok(((pages - free).max(0) * size.max(0)) as u64)
    }

    /// Deletes runs received before `now_ms − retention`, then the oldest runs until the pages
    /// in use fit `max_bytes`. Returns (deleted for age, deleted for size).
    pub fn prune(&mut self, now_ms: u64, keep: super::Keep) -> rusqlite::Result<(u64, u64)> {
        let cutoff = now_ms.saturating_sub(keep.retention.as_millis() as u64);
        let old = self
            .conn
            .execute("DELETE FROM runs WHERE received_ms < ?1", [cutoff as i64])?
            as u64;
        let mut size = 0u64;
        // Bounded: each round deletes up to 64 runs, and a store has finitely many.
        while self.used_bytes()? > keep.max_bytes {
            let n = self.conn.execute(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs ORDER BY received_ms, id LIMIT 64)",
                [],
            )? as u64;
            if n == 0 {
                break;
            }
            size += n;
        }
        Ok((old, size))
    }

    /// Runs received at or after `since_ms`, of one site or all, oldest first.
    pub fn runs(&self, site: Option<&str>, since_ms: u64) -> rusqlite::Result<Vec<StoredRun>> {
        // `results` may read a layout-1 file the (older) server still has open: its runs have
        // no path columns yet, which reads as "not measured".
        let layout: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let path_cols = if layout >= 2 {
            "mtu_up, mtu_down, cut_after_s"
        } else {
            "NULL, NULL, NULL"
        };
        let udp_tested = if layout >= 3 { "udp_tested" } else { "1" };
        let mut st = self.conn.prepare(&format!(
            "SELECT id, received_ms, site, ok, udp_reachable, udp_sent, loss_up_pct, loss_down_pct, \
             rtt_p50_ms, rtt_p95_ms, findings, client_addr, reflexive_addr, tool_version, \
             {path_cols}, {udp_tested} FROM runs WHERE (?1 IS NULL OR site = ?1) AND received_ms >= ?2 \
             ORDER BY received_ms, id"
        ))?;
        let rows = st.query_map(params![site, since_ms as i64], |r| {
            let sent: Option<i64> = r.get(5)?;
            let findings: String = r.get(10)?;
            Ok(StoredRun {
                id: r.get(0)?,
                run: Run {
                    at_ms: r.get::<_, i64>(1)?.max(0) as u64,
                    site: r.get(2)?,
                    ok: r.get(3)?,
                    udp_reachable: r.get(4)?,
                    udp_tested: r.get(17)?,
                    echo: match sent {
                        None => None,
                        Some(sent) => Some(EchoFigures {
                            sent: sent.max(0) as u64,
                            loss_up_pct: r.get(6)?,
                            loss_down_pct: r.get(7)?,
                            rtt_p50_ms: r.get(8)?,
                            rtt_p95_ms: r.get(9)?,
                        }),
                    },
                    findings: findings.split_whitespace().map(str::to_string).collect(),
                    path: PathFigures {
                        mtu_up: r.get(14)?,
                        mtu_down: r.get(15)?,
                        cut_after_s: r.get(16)?,
                    },
                },
                client_addr: r.get(11)?,
                reflexive_addr: r.get(12)?,
                tool_version: r.get(13)?,
            })
        })?;
        rows.collect()
    }

    /// The stored JSON of one run.
    pub fn report_json(&self, id: i64) -> rusqlite::Result<String> {
        self.conn
            .query_row("SELECT report FROM runs WHERE id = ?1", [id], |r| r.get(0))
    }

    /// Distinct sites, most recently heard first (the metrics keep their labels across restarts).
    pub fn recent_sites(&self, limit: usize) -> rusqlite::Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT site FROM runs GROUP BY site ORDER BY MAX(received_ms) DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| r.get(0))?;
        rows.collect()
    }
}

/// Ids joined by spaces; an id with whitespace (a client's invention) is kept readable.
fn finding_ids(ids: &[String]) -> String {
    ids.iter()
        .map(|id| id.split_whitespace().collect::<Vec<_>>().join("_"))
        .filter(|id| !id.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A constructed report and a scratch directory for unit tests here and in the sibling modules.
#[cfg(test)]
pub mod tests_support {
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system temp dir, removed on drop.
    pub struct Scratch(PathBuf);

    impl Scratch {
        pub fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("probe-results-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    use probe_proto::report::{
        rfc3339, Finding, Report, Severity, StunResult, TcpResult, UdpResult,
    };
    use probe_proto::stats::{EchoSummary, RttSummary};

    pub fn report(site: &str, loss_up: Option<f64>) -> Report {
        let mut r = Report {
            schema: 1,
            tool_version: "0.1.0".into(),
            site: site.into(),
            server: "203.0.113.2:8443".into(),
            started_at: rfc3339(1_795_651_200_000),
            duration_ms: 3000,
            ok: true,
            udp: UdpResult {
                reachable: loss_up.is_some(),
                stun: StunResult {
                    mapped: loss_up.map(|_| "198.51.100.2:40000".into()),
                    rtt_ms: Some(0.2),
                },
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
                    jitter_ms: 0.01,
                    reordered: 0,
                    duplicates: 0,
                }),
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
        if loss_up.is_none() {
            r.set_findings(vec![Finding::new("udp_blocked", Severity::Error, "s", "f")]);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{report, Scratch};
    use super::*;

    fn row(site: &str, at: u64, loss_up: Option<f64>) -> Row {
        let report = report(site, loss_up);
        Row {
            received_ms: at,
            client_addr: "198.51.100.2:51000".into(),
            json: serde_json::to_string(&report).unwrap(),
            report,
        }
    }

    /// An empty file (a server that could not write a byte) is no store yet, not a damaged one;
    /// and a server start that fails leaves no empty file behind.
    #[test]
    fn an_empty_file_is_no_store_yet() {
        let dir = Scratch::new("store-empty");
        std::fs::create_dir_all(dir.path()).unwrap();
        let path = dir.path().join("results.sqlite");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            Store::open_for_reading(&path),
            Err(OpenError::Missing(_))
        ));
        let bad = dir.path().join("not-a-store.sqlite");
        std::fs::write(&bad, b"this is a config file, not a database at all\n").unwrap();
        assert!(Store::open_for_writing(&bad).is_err());
        assert!(bad.exists(), "a file that was there is never removed");
    }

    fn tmp(name: &str) -> (Scratch, PathBuf) {
        let dir = Scratch::new(name);
        let path = dir.path().join("sub").join("results.sqlite");
        (dir, path)
    }

    #[test]
    fn rows_survive_reopening_and_filter_by_site_and_time() {
        let (_dir, path) = tmp("reopen");
        {
            let mut s = Store::open_for_writing(&path).unwrap();
            s.insert(&[row("a", 1000, Some(10.0)), row("b", 2000, None)])
                .unwrap();
        }
        let mut s = Store::open_for_writing(&path).unwrap();
        s.insert(&[row("a", 3000, Some(0.0))]).unwrap();
        drop(s);
        let r = Store::open_for_reading(&path).unwrap();
        let all = r.runs(None, 0).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].run.site, "b");
        assert_eq!(all[1].run.echo, None);
        assert_eq!(all[1].run.findings, ["udp_blocked"]);
        assert_eq!(all[1].reflexive_addr, None);
        assert_eq!(all[0].reflexive_addr.as_deref(), Some("198.51.100.2:40000"));
        assert_eq!(all[0].run.echo.unwrap().loss_up_pct, Some(10.0));
        let a_late = r.runs(Some("a"), 2000).unwrap();
        assert_eq!(a_late.len(), 1);
        assert_eq!(a_late[0].run.at_ms, 3000);
        let json = r.report_json(a_late[0].id).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.site, "a");
        assert_eq!(r.recent_sites(10).unwrap(), ["a", "b"]);
        // What the store gives back is what the report says.
        assert_eq!(all[0].run, Run::from_report(&report("a", Some(10.0)), 1000));
    }

    #[test]
    fn a_layout_1_store_gains_the_path_columns_and_keeps_its_runs() {
        use probe_proto::catalog::FindingId;
        use probe_proto::report::{Finding, Severity};
        let (_dir, path) = tmp("layout1");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A run with a path cut, stored the way layout 1 stored it.
        let mut cut = report("branch", Some(0.0));
        let mut f = Finding::new(FindingId::PathCutAfter.as_str(), Severity::Error, "s", "f");
        f.path = Some(Box::new(probe_proto::path::PathFacts {
            cut_after_s: Some(14.8),
            ..Default::default()
        }));
        cut.set_findings(vec![f]);
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE runs (id INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, \
                 site TEXT NOT NULL, client_addr TEXT NOT NULL, reflexive_addr TEXT, \
                 started_at TEXT NOT NULL, tool_version TEXT NOT NULL, ok INTEGER NOT NULL, \
                 udp_reachable INTEGER NOT NULL, udp_sent INTEGER, loss_up_pct REAL, \
                 loss_down_pct REAL, rtt_p50_ms REAL, rtt_p95_ms REAL, findings TEXT NOT NULL, \
                 report TEXT NOT NULL); PRAGMA user_version = 1;",
            )
            .unwrap();
            for (at, r) in [(1000i64, &cut), (2000, &report("branch", Some(1.0)))] {
                let ids: Vec<String> = r.findings.iter().map(|f| f.id.clone()).collect();
                c.execute(
                    "INSERT INTO runs (received_ms, site, client_addr, started_at, tool_version, \
                     ok, udp_reachable, findings, report) VALUES (?1, 'branch', '198.51.100.2', \
                     ?2, '0.1.0', 1, 1, ?3, ?4)",
                    params![
                        at,
                        r.started_at,
                        ids.join(" "),
                        serde_json::to_string(r).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        // `probe-server results` before the new server has opened (and upgraded) it.
        let before = Store::open_for_reading(&path).unwrap();
        let old = before.runs(None, 0).unwrap();
        assert_eq!(old.len(), 2);
        assert_eq!(old[0].run.path, PathFigures::default(), "not measured yet");
        drop(before);
        let mut s = Store::open_for_writing(&path).unwrap();
        s.insert(&[row("branch", 3000, Some(0.0))]).unwrap();
        drop(s);
        let r = Store::open_for_reading(&path).unwrap();
        let runs = r.runs(None, 0).unwrap();
        assert_eq!(runs.len(), 3, "nothing lost in the upgrade");
        assert_eq!(runs[0].run.path.cut_after_s, Some(14.8), "backfilled");
        assert_eq!(runs[1].run.path, PathFigures::default());
        assert!(
            runs.iter().all(|r| r.run.udp_tested),
            "runs before --no-udp was kept tested UDP"
        );
        assert_eq!(r.layout_version().unwrap(), LAYOUT);
    }

    #[test]
    fn a_layout_2_store_learns_which_runs_tested_udp() {
        let (_dir, path) = tmp("layout2");
        let mut s = Store::open_for_writing(&path).unwrap();
        s.insert(&[row("branch", 1000, Some(0.0))]).unwrap();
        // Back to layout 2 as an older server left it: no udp_tested column.
        s.conn
            .execute_batch("ALTER TABLE runs DROP COLUMN udp_tested; PRAGMA user_version = 2;")
            .unwrap();
        drop(s);
        let before = Store::open_for_reading(&path).unwrap();
        assert!(before.runs(None, 0).unwrap()[0].run.udp_tested);
        drop(before);
        let mut s = Store::open_for_writing(&path).unwrap();
        let mut skipped = row("branch", 2000, None);
        skipped.report.udp.skipped = true;
        s.insert(&[skipped]).unwrap();
        let runs = s.runs(None, 0).unwrap();
        assert_eq!(runs.len(), 2, "nothing lost in the upgrade");
        assert!(runs[0].run.udp_tested);
        assert!(
            !runs[1].run.udp_tested,
            "a --no-udp run is kept as not tested"
        );
        assert_eq!(s.layout_version().unwrap(), LAYOUT);
    }

    #[test]
    fn garbage_file_is_reported_and_left_alone() {
        let (_dir, path) = tmp("garbage");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let junk = vec![0x42u8; 8192];
        std::fs::write(&path, &junk).unwrap();
        let e = Store::open_for_writing(&path).err().expect("refused");
        assert!(matches!(e, OpenError::NotAStore(..)), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(
            !e.to_string().contains("mv "),
            "no advice to move a foreign file: {e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), junk);
        assert!(matches!(
            Store::open_for_reading(&path).err(),
            Some(OpenError::NotAStore(..))
        ));
        // An SQLite file whose pages are garbage is a damaged store: that one may be moved aside.
        let mut damaged = b"SQLite format 3\0".to_vec();
        damaged.extend(vec![0x42u8; 8192 - 16]);
        std::fs::write(&path, &damaged).unwrap();
        let e = Store::open_for_writing(&path).err().expect("refused");
        assert!(matches!(e, OpenError::Corrupt(..)), "{e}");
        assert!(e.to_string().contains("mv "), "{e}");
    }

    #[test]
    fn foreign_sqlite_file_is_not_extended() {
        let (_dir, path) = tmp("foreign");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE photos (id INTEGER);")
            .unwrap();
        let e = Store::open_for_writing(&path).err().expect("refused");
        assert!(e.to_string().contains("photos"), "{e}");
    }

    #[test]
    fn reading_a_missing_store_says_where_it_looked() {
        let (_dir, path) = tmp("missing");
        let e = Store::open_for_reading(&path).err().expect("missing");
        assert!(matches!(e, OpenError::Missing(_)));
        assert!(e.to_string().contains("results.sqlite"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn store_and_its_journal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = tmp("mode");
        let mut s = Store::open_for_writing(&path).unwrap();
        s.insert(&[row("a", 1000, Some(0.0))]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        drop(s);
        // A store left world-readable by an older version is tightened when the server opens it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let journal = PathBuf::from(format!("{}-journal", path.display()));
        std::fs::write(&journal, b"").unwrap();
        std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _s = Store::open_for_writing(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        if journal.exists() {
            assert_eq!(mode(&journal), 0o600);
        }
    }

    #[test]
    fn a_symlink_at_the_store_path_is_refused() {
        let (dir, path) = tmp("symlink");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(Store::open_for_writing(&path).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn retention_deletes_runs_older_than_it() {
        let (_dir, path) = tmp("retention");
        let mut s = Store::open_for_writing(&path).unwrap();
        let day = 86_400_000;
        let now = 100 * day;
        s.insert(&[
            row("a", now - 40 * day, Some(0.0)),
            row("a", now - 31 * day, Some(0.0)),
            row("b", now - 29 * day, Some(0.0)),
            row("b", now, Some(0.0)),
        ])
        .unwrap();
        let keep = super::super::Keep::default();
        assert_eq!(s.prune(now, keep).unwrap(), (2, 0));
        let left: Vec<u64> = s
            .runs(None, 0)
            .unwrap()
            .iter()
            .map(|r| r.run.at_ms)
            .collect();
        assert_eq!(left, [now - 29 * day, now]);
        assert_eq!(s.prune(now, keep).unwrap(), (0, 0));
    }

    #[test]
    fn size_bound_deletes_oldest_runs_first() {
        let (_dir, path) = tmp("size");
        let mut s = Store::open_for_writing(&path).unwrap();
        let rows: Vec<Row> = (0..400).map(|i| row("a", 1_000 + i, Some(0.0))).collect();
        s.insert(&rows).unwrap();
        let full = s.used_bytes().unwrap();
        let keep = super::super::Keep {
            retention: Duration::from_secs(u64::MAX / 4000),
            max_bytes: full / 2,
        };
        let (old, size) = s.prune(2_000, keep).unwrap();
        assert_eq!(old, 0);
        assert!(size > 0 && size < 400, "{size}");
        assert!(s.used_bytes().unwrap() <= full / 2);
        let left = s.runs(None, 0).unwrap();
        assert_eq!(left.len() as u64, 400 - size);
        // The newest are the ones kept.
        assert_eq!(left.last().unwrap().run.at_ms, 1_399);
        assert_eq!(left[0].run.at_ms, 1_000 + size);
    }

    #[test]
    fn finding_ids_never_contain_the_separator() {
        assert_eq!(
            finding_ids(&["a b".into(), "c".into(), " ".into()]),
            "a_b c"
        );
    }
}
