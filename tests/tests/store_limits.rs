//! The result store cannot be poisoned or kept forever: real `probe-server` and `probe-client`
//! in a routed topology. A hostile site name (a spreadsheet formula and a newline followed by a
//! forged log line) reaches neither the log nor the CSV as such; the store file is 0600;
//! `--sites` refuses other sites' uploads and counts them; `--retention` deletes old runs and
//! counts them; `--site-token` keeps a site's runs only from clients proving its token (a MAC,
//! never the token); `--max-store-mb` deletes the oldest runs first and counts them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use probe_tests::probe::{probe_env, SERVER_READY_TIMEOUT};
use probe_tests::proc::run_bounded;
use probe_tests::{binaries, try_start_server, ClientRun, Netns, ServerHandle, TempDir, Topology};
use serde_json::Value;

const LISTEN: &str = "0.0.0.0:8443";
const METRICS: &str = "127.0.0.1:9464";
const SERVER_LIFETIME: Duration = Duration::from_secs(120);
const CLIENT_BOUND: Duration = Duration::from_secs(45);
const TOOL_BOUND: Duration = Duration::from_secs(20);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(ns: &Netns, store: &Path, extra: &[&str]) -> ServerHandle {
    let dir = store.parent().unwrap().display().to_string();
    let store = store.display().to_string();
    let mut args = vec![
        "--listen",
        LISTEN,
        "--state-dir",
        &dir,
        "--store",
        &store,
        "--metrics",
        METRICS,
    ];
    args.extend_from_slice(extra);
    try_start_server(ns, &args, SERVER_READY_TIMEOUT, SERVER_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn stop_gracefully(mut server: ServerHandle) -> String {
    let pid = server.proc_mut().pid() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = server.proc_mut().wait_timeout(Duration::from_secs(10));
    let stderr = server.stderr();
    assert!(
        status.is_some_and(|s| s.success()),
        "the server did not stop cleanly ({status:?})\n{stderr}"
    );
    stderr
}

fn probe(topo: &Topology, server: &ServerHandle, site: &str) -> ClientRun {
    probe_with(topo, server, site, &[])
}

fn probe_with(topo: &Topology, server: &ServerHandle, site: &str, extra: &[&str]) -> ClientRun {
    let mut args = vec![
        topo.server_public_ip.to_string(),
        "--pin".into(),
        server.pin().into(),
        "--json".into(),
        "--site".into(),
        site.into(),
        "--duration".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = probe_tests::run_client(&topo.client, &args, CLIENT_BOUND);
    assert!(
        run.json.is_some(),
        "no report\n{}\n{}",
        run.describe(),
        server.stderr()
    );
    run
}

fn server_tool(args: &[&str]) -> probe_tests::Finished {
    let mut cmd = Command::new(&binaries().server);
    cmd.args(args);
    probe_env(&mut cmd, &BTreeMap::new());
    run_bounded(cmd, "probe-server results", TOOL_BOUND)
}

fn http_get(ns: &Netns, path: &str) -> String {
    let nspath = Path::new("/run/netns").join(ns.name());
    let addr: SocketAddr = METRICS.parse().unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&nspath).expect("netns file");
        // SAFETY: setns changes only this thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read the answer");
        out.split_once("\r\n\r\n").expect("HTTP head").1.to_string()
    })
    .join()
    .expect("HTTP thread")
}

/// The value of the sample `series`, or None while it is absent.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// Polls /metrics until `series` reaches `want` (the writer thread stores asynchronously).
fn wait_sample(ns: &Netns, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = http_get(ns, "/metrics");
        if sample(&body, series) == Some(want) || Instant::now() > deadline {
            assert_eq!(sample(&body, series), Some(want), "{series}:\n{body}");
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hostile_site_name_forges_no_log_line_and_no_spreadsheet_formula() {
    let _g = serial();
    let topo = Topology::routed();
    let dir = TempDir::new("store-hostile");
    let store = dir.path().join("results.sqlite");
    let server = start(&topo.server, &store, &[]);
    let forged = "2026-11-26T08:00:00.000000Z  INFO forged-line";
    let site = format!("=cmd|' /C calc'!A0\n{forged}");
    probe(&topo, &server, &site);
    wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="stored"}"#,
        1.0,
    );
    let stderr = stop_gracefully(server);
    // The name reached the log (folded into the real line), but no line starts with the forgery.
    assert!(stderr.contains("forged-line"), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("2026-11-26T08:00:00.000000Z")),
        "a forged log line:\n{stderr}"
    );

    let csv = server_tool(&["results", "--csv", "--store", store.to_str().unwrap()]);
    assert!(csv.success(), "{}", csv.describe());
    let rows: Vec<&str> = csv.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", csv.stdout);
    assert!(
        rows[0].starts_with("'=cmd|"),
        "the formula is defused: {}",
        csv.stdout
    );
    let json = server_tool(&["results", "--json", "--store", store.to_str().unwrap()]);
    let table: Value = serde_json::from_str(&json.stdout).unwrap();
    let stored = table["sites"][0]["site"].as_str().unwrap().to_string();
    assert!(
        !stored.chars().any(char::is_control),
        "stored site {stored:?}"
    );
    assert!(
        stored.starts_with("=cmd|") && stored.chars().count() <= 64,
        "{stored:?}"
    );
    let runs = server_tool(&[
        "results",
        "--runs",
        "--site",
        &stored,
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(runs.success(), "{}", runs.describe());
    assert_eq!(runs.stdout.lines().count(), 2, "{}", runs.stdout);
    assert!(
        !runs
            .stdout
            .lines()
            .any(|l| l.starts_with("2026-11-26T08:00:00.000000Z")),
        "{}",
        runs.stdout
    );

    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "results.sqlite is the owner's alone");
    for f in ["key.der", "cert.der"] {
        let m = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600, "{f}");
    }
}

#[test]
fn sites_allow_list_refuses_other_sites_and_counts_them() {
    let _g = serial();
    let topo = Topology::routed();
    let dir = TempDir::new("store-sites");
    let store = dir.path().join("results.sqlite");
    let server = start(
        &topo.server,
        &store,
        &[
            "--sites",
            "berlin-office,paris",
            "--metrics-label-after",
            "3",
        ],
    );
    let refused = probe(&topo, &server, "intruder");
    wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="site_refused"}"#,
        1.0,
    );
    // Both ends say why the report was lost: the user by default, the admin in the log.
    assert!(
        refused.stderr.contains("did not keep this report") && refused.stderr.contains("--sites"),
        "the client did not say its report was refused:\n{}",
        refused.describe()
    );
    let log = server.stderr();
    assert!(
        log.contains("upload not kept") && log.contains("intruder"),
        "{log}"
    );
    assert!(
        log.contains("--site SITE (one of: berlin-office, paris)"),
        "the users-run line does not name the sites: {log}"
    );
    probe(&topo, &server, "berlin-office");
    // On the list: stored, and labelled with its first run despite --metrics-label-after 3.
    let body = wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="stored"}"#,
        1.0,
    );
    let _ = wait_sample(
        &topo.server,
        r#"probe_site_runs_total{site="berlin-office",outcome="pass"}"#,
        1.0,
    );
    assert!(!body.contains("intruder"), "{body}");
    stop_gracefully(server);
    let json = server_tool(&["results", "--json", "--store", store.to_str().unwrap()]);
    assert!(json.success(), "{}", json.describe());
    let table: Value = serde_json::from_str(&json.stdout).unwrap();
    let sites: Vec<&str> = table["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["site"].as_str())
        .collect();
    assert_eq!(sites, ["berlin-office"], "{table:#}");
}

#[test]
fn retention_deletes_old_runs_at_start_and_counts_them() {
    let _g = serial();
    let topo = Topology::routed();
    let dir = TempDir::new("store-retention");
    let store = dir.path().join("results.sqlite");
    let server = start(&topo.server, &store, &[]);
    probe(&topo, &server, "old-site");
    wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="stored"}"#,
        1.0,
    );
    stop_gracefully(server);
    let before = server_tool(&["results", "--json", "--store", store.to_str().unwrap()]);
    assert!(before.stdout.contains("old-site"), "{}", before.describe());

    std::thread::sleep(Duration::from_millis(2100));
    let server = start(&topo.server, &store, &["--retention", "1s"]);
    wait_sample(
        &topo.server,
        r#"probe_server_store_pruned_runs_total{reason="retention"}"#,
        1.0,
    );
    let stderr = stop_gracefully(server);
    assert!(stderr.contains("deleted stored runs"), "{stderr}");
    let after = server_tool(&["results", "--json", "--store", store.to_str().unwrap()]);
    assert!(after.success(), "{}", after.describe());
    assert!(!after.stdout.contains("old-site"), "{}", after.stdout);
}

/// Site name to run count, from `probe-server results --json`.
fn stored_runs(store: &Path) -> BTreeMap<String, u64> {
    let json = server_tool(&["results", "--json", "--store", store.to_str().unwrap()]);
    assert!(json.success(), "{}", json.describe());
    let table: Value = serde_json::from_str(&json.stdout).unwrap();
    table["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["site"].as_str().unwrap().to_string(),
                s["runs"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn site_token_keeps_only_runs_that_prove_the_token() {
    let _g = serial();
    let topo = Topology::routed();
    let dir = TempDir::new("store-site-token");
    let store = dir.path().join("results.sqlite");
    let token = "berlin-7f3a9c0e5d2b4f61";
    let file = dir.path().join("site-tokens");
    std::fs::write(&file, format!("# site tokens\nberlin = {token}\n")).unwrap();
    let server = start(
        &topo.server,
        &store,
        &["--site-token-file", file.to_str().unwrap()],
    );
    let refused = r#"probe_server_uploads_total{outcome="site_token_refused"}"#;
    // No token, then a wrong one: refused, counted, said in one sentence; the verdict stands.
    let bare = probe(&topo, &server, "berlin");
    wait_sample(&topo.server, refused, 1.0);
    let wrong = probe_with(
        &topo,
        &server,
        "berlin",
        &["--site-token", "not-the-berlin-token"],
    );
    wait_sample(&topo.server, refused, 2.0);
    assert!(
        bare.stderr.contains("needs its site token"),
        "{}",
        bare.describe()
    );
    assert!(
        wrong
            .stderr
            .contains("site token given for site berlin is wrong"),
        "{}",
        wrong.describe()
    );
    let good = probe_with(&topo, &server, "berlin", &["--site-token", token]);
    wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="stored"}"#,
        1.0,
    );
    assert_eq!(
        bare.code,
        good.code,
        "{}\n{}",
        bare.describe(),
        good.describe()
    );
    assert_eq!(wrong.code, good.code, "{}", wrong.describe());
    assert!(!good.stderr.contains("did not keep"), "{}", good.describe());
    // Without --sites, a site that has no token uploads freely.
    probe(&topo, &server, "tokyo");
    wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="stored"}"#,
        2.0,
    );
    let stderr = stop_gracefully(server);
    assert!(
        !stderr.contains(token),
        "the token reached the log:\n{stderr}"
    );
    let runs = stored_runs(&store);
    assert_eq!(
        runs,
        BTreeMap::from([("berlin".to_string(), 1), ("tokyo".to_string(), 1)]),
        "only the run with the right token is kept for berlin"
    );
}

/// SQLite's pages in use, as the store measures itself.
fn used_bytes(store: &Path) -> u64 {
    let q = |pragma: &str| -> u64 {
        let out = Command::new("sqlite3")
            .arg(store)
            .arg(format!("PRAGMA {pragma};"))
            .output()
            .expect("sqlite3 runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (q("page_count") - q("freelist_count")) * q("page_size")
}

#[test]
fn max_store_mb_deletes_the_oldest_runs_first_and_counts_them() {
    let _g = serial();
    let topo = Topology::routed();
    let dir = TempDir::new("store-size");
    let store = dir.path().join("results.sqlite");
    let server = start(&topo.server, &store, &[]);
    probe(&topo, &server, "kept-site");
    wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="stored"}"#,
        1.0,
    );
    stop_gracefully(server);
    // Copies of that real run, an hour older, fill the store well past 1 MiB.
    let fill = "CREATE TEMP TABLE t AS SELECT * FROM runs; \
        UPDATE t SET id = NULL, site = 'old-filler', received_ms = received_ms - 3600000; \
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) \
        INSERT INTO runs SELECT t.* FROM t, n;";
    let out = Command::new("sqlite3")
        .arg(&store)
        .arg(fill)
        .output()
        .expect("sqlite3 runs");
    assert!(out.status.success(), "{out:?}");
    let before = used_bytes(&store);
    assert!(before > 2 << 20, "the filler is {before} bytes");
    assert_eq!(stored_runs(&store)["old-filler"], 1500);

    let server = start(&topo.server, &store, &["--max-store-mb", "1"]);
    let series = r#"probe_server_store_pruned_runs_total{reason="size"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pruned = loop {
        let body = http_get(&topo.server, "/metrics");
        match sample(&body, series) {
            Some(n) if n > 0.0 => break n,
            _ if Instant::now() > deadline => panic!("{series} stays 0:\n{body}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    probe(&topo, &server, "new-site");
    wait_sample(
        &topo.server,
        r#"probe_server_uploads_total{outcome="stored"}"#,
        1.0,
    );
    let stderr = stop_gracefully(server);
    assert!(stderr.contains("deleted stored runs"), "{stderr}");
    let runs = stored_runs(&store);
    // The oldest runs (the filler) went, as many as the metric says; the newer ones stayed.
    assert_eq!(runs.get("kept-site"), Some(&1), "{runs:?}");
    assert_eq!(runs.get("new-site"), Some(&1), "{runs:?}");
    let left = runs.get("old-filler").copied().unwrap_or(0);
    assert_eq!(left as f64, 1500.0 - pruned, "{runs:?}");
    assert!(left < 1500, "{runs:?}");
    // Pruning runs before writes, so the one run written since may stand over the bound.
    let after = used_bytes(&store);
    assert!(
        after <= (1 << 20) + (64 << 10),
        "the store uses {after} bytes over its 1 MiB"
    );
}
