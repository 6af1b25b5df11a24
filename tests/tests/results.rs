//! Network teams compare sites: three clients with different `--site` upload to one server; the
//! server's store, `probe-server results`, `/metrics` and `probe-client compare` must all tell
//! the same story, and keep telling it after a restart. Start refusals (read-only or damaged
//! store) are one sentence and exit 2.
//!
//! A full disk under the store costs uploads (logged, counted) and never echo replies.
//!
//! One routed topology; the router's nft rules change between the runs: none (site `clean`),
//! 10 % random loss on UDP towards the server (`lossy`), UDP to the probe port dropped
//! (`udp-blocked`: the control channel falls back to TCP and the upload goes that way).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use probe_tests::nft::{filter_script, Chain};
use probe_tests::probe::{probe_env, SERVER_READY_TIMEOUT};
use probe_tests::proc::{run_bounded, run_bounded_stdin};
use probe_tests::{
    binaries, binomial_tolerance_pct, try_start_server, ClientRun, Netns, ServerHandle, TempDir,
    Topology,
};
use serde_json::Value;

const LISTEN: &str = "0.0.0.0:8443";
/// Metrics on the server namespace's loopback: scraped from inside it.
const METRICS: &str = "127.0.0.1:9464";
const SERVER_LIFETIME: Duration = Duration::from_secs(240);
const CLIENT_BOUND: Duration = Duration::from_secs(45);
const TOOL_BOUND: Duration = Duration::from_secs(20);
const SIGMAS: f64 = 4.5;
const LOSS_RULE: &str = "meta l4proto udp ip daddr 203.0.113.2 numgen random mod 100 < 10 drop";
const UDP_BLOCK_RULE: &str = "ip daddr 203.0.113.2 udp dport 8443 drop";

/// One test at a time: each measures loss on two shared cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(ns: &Netns, state: &Path) -> ServerHandle {
    let dir = state.display().to_string();
    try_start_server(
        ns,
        &[
            "--listen",
            LISTEN,
            "--state-dir",
            &dir,
            "--metrics",
            METRICS,
            // Each site here uploads once; the default asks three sessions before a label.
            "--metrics-label-after",
            "1",
        ],
        SERVER_READY_TIMEOUT,
        SERVER_LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// SIGTERM, as systemd stops it: the server must finish writing and exit 0.
fn stop_gracefully(mut server: ServerHandle) -> String {
    // Sent at once after the ready line: the server hooks its signals before printing it.
    let pid = server.proc_mut().pid() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = server.proc_mut().wait_timeout(Duration::from_secs(10));
    let stderr = server.stderr();
    assert!(
        status.is_some_and(|s| s.success()),
        "the server did not stop cleanly on SIGTERM ({status:?})\n{stderr}"
    );
    stderr
}

/// Runs the client for `site`, saves its JSON report under `dir` and returns it.
fn probe(topo: &Topology, server: &ServerHandle, site: &str, extra: &[&str], dir: &Path) -> Value {
    let mut args = vec![
        topo.server_public_ip.to_string(),
        "--pin".into(),
        server.pin().into(),
        "--json".into(),
        "--site".into(),
        site.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let run: ClientRun = probe_tests::run_client(&topo.client, &args, CLIENT_BOUND);
    let json = run.json.clone().unwrap_or_else(|| {
        panic!(
            "no JSON report from site {site}\n{}\n--- server stderr ---\n{}",
            run.describe(),
            server.stderr()
        )
    });
    std::fs::write(dir.join(format!("{site}.json")), &run.stdout).expect("save the report");
    json
}

fn set_router_rules(topo: &Topology, rules: &[&str]) {
    let mut script = filter_script(Chain::Forward, &[] as &[&str]);
    script.push_str("flush chain inet probe_test forward\n");
    topo.router.nft(&script);
    topo.router_forward(rules);
}

fn server_tool(args: &[&str]) -> probe_tests::Finished {
    let mut cmd = Command::new(&binaries().server);
    cmd.args(args);
    probe_env(&mut cmd, &BTreeMap::new());
    run_bounded(cmd, "probe-server results", TOOL_BOUND)
}

fn results_json(store: &Path) -> Value {
    let done = server_tool(&["results", "--json", "--store", &store.display().to_string()]);
    assert!(done.success(), "{}", done.describe());
    serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("{e}\n{}", done.stdout))
}

fn compare(args: &[String], stdin: Option<Vec<u8>>) -> probe_tests::Finished {
    let mut cmd = Command::new(&binaries().client);
    cmd.arg("compare").args(args);
    probe_env(&mut cmd, &BTreeMap::new());
    run_bounded_stdin(cmd, "probe-client compare", TOOL_BOUND, stdin)
}

fn site<'a>(table: &'a Value, name: &str) -> &'a Value {
    table["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|r| r["site"] == name))
        .unwrap_or_else(|| panic!("no site {name} in {table:#}"))
}

/// GET `path` from `addr` inside `ns` (a thread joins the namespace; std sockets only).
fn http_get(ns: &Netns, addr: &str, path: &str, accept: Option<&str>) -> (String, String) {
    let nspath = Path::new("/run/netns").join(ns.name());
    let addr: SocketAddr = addr.parse().expect("metrics address");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{}Connection: close\r\n\r\n",
        accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"))
    );
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
        let (head, body) = out.split_once("\r\n\r\n").expect("HTTP head");
        (head.to_string(), body.to_string())
    })
    .join()
    .expect("HTTP thread")
}

fn promtool_check(body: &str) {
    let present = Command::new("promtool").arg("--version").output();
    assert!(
        present.is_ok(),
        "promtool is missing: install Debian's `prometheus` package (.ci/run does)"
    );
    let mut cmd = Command::new("promtool");
    cmd.args(["check", "metrics"]);
    let done = run_bounded_stdin(cmd, "promtool", TOOL_BOUND, Some(body.as_bytes().to_vec()));
    assert!(
        done.success(),
        "promtool check metrics failed:\n{}\n--- metrics ---\n{body}",
        done.describe()
    );
}

/// The value of the sample line `series` (exact name and labels) in a text exposition.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{body}"))
}

fn num(v: &Value, path: &str) -> f64 {
    probe_tests::expect::lookup(v, path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

fn finding_ids(row: &Value) -> Vec<String> {
    row["top_findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The per-site figures that do not depend on whose clock dated the run.
fn figures(table: &Value) -> Vec<Value> {
    let mut rows: Vec<Value> = table["sites"].as_array().cloned().unwrap_or_default();
    for r in &mut rows {
        let o = r.as_object_mut().expect("row object");
        for time in ["first_run", "last_run", "failing_since"] {
            o.remove(time);
        }
    }
    rows
}

#[test]
fn three_sites_one_server_results_metrics_compare_and_restart() {
    let _one = serial();
    let topo = Topology::routed();
    let state = TempDir::new("results-state");
    let reports = TempDir::new("results-reports");
    let store = state.path().join("results.sqlite");
    let server = start(&topo.server, state.path());

    // ~600 UDP echo packets per run: the 10 % loss is measured to about ±5.5 points.
    let long = ["--duration", "3", "--interval", "5"];
    let clean = probe(&topo, &server, "clean", &long, reports.path());
    set_router_rules(&topo, &[LOSS_RULE]);
    let lossy = probe(&topo, &server, "lossy", &long, reports.path());
    set_router_rules(&topo, &[UDP_BLOCK_RULE]);
    let blocked = probe(
        &topo,
        &server,
        "udp-blocked",
        &["--duration", "2"],
        reports.path(),
    );
    set_router_rules(&topo, &[]);
    assert_eq!(clean["ok"], true, "clean run failed: {clean:#}");
    assert_eq!(lossy["ok"], false, "lossy run passed: {lossy:#}");
    assert_eq!(blocked["udp"]["reachable"], false, "{blocked:#}");

    // The store, through `probe-server results --json`, while the server runs.
    let table = results_json(&store);
    assert_eq!(table["schema"], 1);
    assert_eq!(
        table["sites"].as_array().map(Vec::len),
        Some(3),
        "{table:#}"
    );
    let (c, l, b) = (
        site(&table, "clean"),
        site(&table, "lossy"),
        site(&table, "udp-blocked"),
    );
    for (row, passed) in [(c, 1.0), (l, 0.0), (b, 0.0)] {
        assert_eq!(num(row, "runs"), 1.0, "{row:#}");
        assert_eq!(num(row, "passed"), passed, "{row:#}");
        assert_eq!(num(row, "pass_rate_pct"), passed * 100.0, "{row:#}");
    }
    let sent = |r: &Value| num(r, "udp.echo.sent") as u64;
    let clean_up = num(c, "loss_up_pct");
    assert!(
        clean_up <= 1.0 + binomial_tolerance_pct(sent(&clean), 1.0, SIGMAS),
        "clean site loses {clean_up} % up"
    );
    let lossy_up = num(l, "loss_up_pct");
    let tol = binomial_tolerance_pct(sent(&lossy), 10.0, SIGMAS);
    assert!(
        (lossy_up - 10.0).abs() <= tol,
        "lossy site: loss up {lossy_up} %, want 10 ± {tol:.1} (n = {})",
        sent(&lossy)
    );
    let lossy_down = num(l, "loss_down_pct");
    assert!(
        lossy_down <= 1.0 + binomial_tolerance_pct(sent(&lossy), 1.0, SIGMAS),
        "lossy site: loss down {lossy_down} %"
    );
    // One run per site: the site's figures are that run's own.
    assert_eq!(num(l, "loss_up_pct"), num(&lossy, "udp.echo.loss_up_pct"));
    assert_eq!(num(c, "rtt_p50_ms"), num(&clean, "udp.echo.rtt_ms.p50"));
    assert_eq!(num(c, "rtt_p95_ms"), num(&clean, "udp.echo.rtt_ms.p95"));
    assert!(finding_ids(l).contains(&"packet_loss".to_string()), "{l:#}");
    assert!(finding_ids(b).contains(&"udp_blocked".to_string()), "{b:#}");
    assert_eq!(num(b, "udp_reachable"), 0.0);
    for null in ["loss_up_pct", "loss_down_pct", "rtt_p50_ms"] {
        assert!(
            b[null].is_null(),
            "udp-blocked {null} should be null: {b:#}"
        );
    }
    assert!(l["failing_since"].is_string() && c["failing_since"].is_null());
    // The path-MTU figures travel report → store columns → table (a clean path: every size).
    assert_eq!(
        c["mtu_up_min"], clean["mtu"]["udp"]["up"]["largest_df"],
        "{c:#}"
    );
    assert_eq!(c["mtu_up_min"], 1472, "{c:#}");
    assert_eq!(
        c["mtu_down_min"], clean["mtu"]["udp"]["down"]["largest_df"],
        "{c:#}"
    );
    assert!(b["mtu_up_min"].is_null(), "no UDP, no UDP MTU: {b:#}");
    assert_eq!(c["path_cut_runs"], 0, "{c:#}");

    // `--runs` of one site: the client address as the server saw it, the reflexive address.
    let runs = server_tool(&[
        "results",
        "--store",
        &store.display().to_string(),
        "--site",
        "lossy",
        "--runs",
        "--json",
    ]);
    assert!(runs.success(), "{}", runs.describe());
    let runs: Value = serde_json::from_str(&runs.stdout).expect("runs JSON");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs:#}");
    let client = topo.client_ip.to_string();
    assert!(runs[0]["client_addr"]
        .as_str()
        .unwrap()
        .starts_with(&client));
    assert!(runs[0]["reflexive_addr"]
        .as_str()
        .unwrap()
        .starts_with(&client));
    assert_eq!(runs[0]["report"]["site"], "lossy");

    // The text table names every site and says which fail since when.
    let text = server_tool(&["results", "--store", &store.display().to_string()]);
    assert!(text.success(), "{}", text.describe());
    for want in ["clean", "lossy", "udp-blocked", "udp-blocked fails since"] {
        assert!(
            text.stdout.contains(want),
            "{want} missing:\n{}",
            text.stdout
        );
    }

    // /metrics: valid for promtool, with the per-site series.
    let (head, body) = http_get(&topo.server, METRICS, "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    promtool_check(&body);
    assert_eq!(
        sample(
            &body,
            r#"probe_site_runs_total{site="clean",outcome="pass"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &body,
            r#"probe_site_runs_total{site="lossy",outcome="fail"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &body,
            r#"probe_site_runs_total{site="udp-blocked",outcome="fail"}"#
        ),
        1.0
    );
    let ratio = sample(&body, r#"probe_site_loss_up_ratio{site="lossy"}"#);
    assert!(
        (ratio * 100.0 - lossy_up).abs() < 1e-6,
        "gauge {ratio} vs table {lossy_up}"
    );
    assert!(sample(&body, r#"probe_site_loss_up_ratio{site="udp-blocked"}"#).is_nan());
    assert_eq!(
        sample(&body, r#"probe_site_udp_reachable{site="udp-blocked"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &body,
            r#"probe_site_findings_total{site="udp-blocked",finding="udp_blocked"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&body, r#"probe_site_rtt_seconds_count{site="clean"}"#),
        1.0
    );
    assert_eq!(
        sample(&body, r#"probe_server_sessions_total{event="opened"}"#),
        3.0
    );
    assert_eq!(
        sample(&body, r#"probe_server_uploads_total{outcome="stored"}"#),
        3.0
    );
    assert!(sample(&body, r#"probe_server_packets_total{kind="echo_reply"}"#) > 1000.0);
    // A Prometheus server asks for OpenMetrics and gets it.
    let (head, om) = http_get(
        &topo.server,
        METRICS,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"), "{om}");

    // `compare` on the three saved reports: the same figures, from files and from NDJSON.
    let files: Vec<String> = ["clean", "lossy", "udp-blocked"]
        .iter()
        .map(|s| {
            reports
                .path()
                .join(format!("{s}.json"))
                .display()
                .to_string()
        })
        .collect();
    let mut args = files.clone();
    args.push("--json".into());
    let cmp = compare(&args, None);
    assert!(cmp.success(), "{}", cmp.describe());
    let cmp: Value = serde_json::from_str(&cmp.stdout).expect("compare JSON");
    assert_eq!(
        figures(&cmp),
        figures(&table),
        "compare and results disagree"
    );
    let ndjson: String = [&clean, &lossy, &blocked]
        .iter()
        .map(|v| format!("{v}\n"))
        .collect();
    let piped = compare(&["-".into(), "--json".into()], Some(ndjson.into_bytes()));
    assert!(piped.success(), "{}", piped.describe());
    let piped: Value = serde_json::from_str(&piped.stdout).expect("compare - JSON");
    assert_eq!(figures(&piped), figures(&table));
    let cmp_text = compare(&files, None);
    assert!(
        cmp_text.stdout.contains("udp-blocked fails since"),
        "{}",
        cmp_text.stdout
    );
    // A file that is not a report: one sentence, exit 2.
    let bogus = reports.path().join("bogus.json");
    std::fs::write(&bogus, "{\"hello\": 1}\n").unwrap();
    let bad = compare(&[bogus.display().to_string()], None);
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("bogus.json"), "{}", bad.stderr);

    // Restart: what was stored is still there, new runs add to it, the sites keep their labels.
    stop_gracefully(server);
    let server = start(&topo.server, state.path());
    probe(
        &topo,
        &server,
        "clean",
        &["--duration", "1"],
        reports.path(),
    );
    let after = results_json(&store);
    assert_eq!(
        after["sites"].as_array().map(Vec::len),
        Some(3),
        "{after:#}"
    );
    assert_eq!(num(site(&after, "clean"), "runs"), 2.0);
    assert_eq!(num(site(&after, "clean"), "passed"), 2.0);
    assert_eq!(num(site(&after, "lossy"), "loss_up_pct"), lossy_up);
    let (_, body) = http_get(&topo.server, METRICS, "/metrics", None);
    promtool_check(&body);
    assert_eq!(
        sample(
            &body,
            r#"probe_site_runs_total{site="clean",outcome="pass"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &body,
            r#"probe_site_runs_total{site="lossy",outcome="fail"}"#
        ),
        0.0
    );
    stop_gracefully(server);
}

/// Runs `probe-server` inside its own mount namespace (so a read-only mount dies with it) and
/// returns what it did within the bound.
fn start_in_mount_ns(ns: &Netns, setup: &str, args: &[String]) -> probe_tests::Finished {
    let mut script = format!("set -e; {setup}; exec \"$0\"");
    for (i, _) in args.iter().enumerate() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    let mut argv: Vec<String> = vec![
        "unshare".into(),
        "-m".into(),
        "sh".into(),
        "-c".into(),
        script,
    ];
    argv.push(binaries().server.display().to_string());
    argv.extend(args.iter().cloned());
    let mut cmd = ns.argv_command(&argv);
    probe_env(&mut cmd, &BTreeMap::new());
    run_bounded(cmd, "probe-server (mount ns)", TOOL_BOUND)
}

#[test]
fn unusable_store_stops_the_start_with_one_sentence() {
    let _one = serial();
    let ns = Netns::new("server");
    let state = TempDir::new("results-ro");
    let s = state.path().display().to_string();
    let serve = |store: &str| -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:8443",
            "--state-dir",
            &s,
            "--store",
            store,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let check = |done: &probe_tests::Finished, path: &str, words: &str| {
        assert_eq!(done.code(), Some(2), "{}", done.describe());
        assert!(
            !done.stdout.contains("probe-server ready"),
            "{}",
            done.describe()
        );
        // One sentence and nothing else: no log lines around it.
        let msg: Vec<&str> = done
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(msg.len(), 1, "{}", done.describe());
        assert!(msg[0].starts_with("probe-server: "), "{}", msg[0]);
        assert!(
            msg[0].contains(path) && msg[0].contains(words),
            "{}",
            msg[0]
        );
    };

    // A read-only file system where the store would be created.
    let ro = state.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let ro_s = ro.display().to_string();
    let path = format!("{ro_s}/results.sqlite");
    let done = start_in_mount_ns(
        &ns,
        &format!("mount -t tmpfs -o ro,size=1m tmpfs {ro_s}"),
        &serve(&path),
    );
    check(&done, &path, "cannot be written");

    // An existing store on a file system remounted read-only.
    let kept = state.path().join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    let kept_s = kept.display().to_string();
    let path = format!("{kept_s}/results.sqlite");
    let ok = server_tool(&["results", "--store", &path]);
    assert_eq!(
        ok.code(),
        Some(2),
        "a missing store is an error: {}",
        ok.describe()
    );
    assert!(ok.stderr.contains("no result store"), "{}", ok.stderr);
    // Created by a normal start, then the file system goes read-only under it.
    let first = try_start_server(&ns, &serve(&path), SERVER_READY_TIMEOUT, SERVER_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"));
    stop_gracefully(first);
    assert!(
        Path::new(&path).exists(),
        "the server created no store at {path}"
    );
    let done = start_in_mount_ns(
        &ns,
        &format!("mount --bind {kept_s} {kept_s}; mount -o remount,bind,ro {kept_s}"),
        &serve(&path),
    );
    check(&done, &path, "cannot be written");

    // A full disk at the start: said so (not "cannot open"), and no empty file is left behind
    // for a later `results` to call damaged.
    let full = state.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let full_s = full.display().to_string();
    let path = format!("{full_s}/results.sqlite");
    let mut script = format!(
        "mount -t tmpfs -o size=64k tmpfs {full_s}; dd if=/dev/zero of={full_s}/fill bs=4k 2>/dev/null || true; \
         \"$0\""
    );
    let args = serve(&path);
    for (i, _) in args.iter().enumerate() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    script.push_str(&format!("; rc=$?; echo left: $(ls {full_s}); exit $rc"));
    let mut argv: Vec<String> = vec![
        "unshare".into(),
        "-m".into(),
        "sh".into(),
        "-c".into(),
        script,
    ];
    argv.push(binaries().server.display().to_string());
    argv.extend(args);
    let mut cmd = ns.argv_command(&argv);
    probe_env(&mut cmd, &BTreeMap::new());
    let done = run_bounded(cmd, "probe-server (full disk)", TOOL_BOUND);
    check(&done, &path, "is full; free space there");
    assert!(
        done.stdout.contains("left: fill") && !done.stdout.contains("results.sqlite"),
        "{}",
        done.describe()
    );

    // A damaged store (an SQLite header, garbage after it) is named and left as it is.
    let junk = state.path().join("junk.sqlite");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(vec![0x5au8; 8192 - 16]);
    std::fs::write(&junk, &bytes).unwrap();
    let junk_s = junk.display().to_string();
    let done = start_in_mount_ns(&ns, "true", &serve(&junk_s));
    check(&done, &junk_s, "damaged");
    assert_eq!(
        std::fs::read(&junk).unwrap(),
        bytes,
        "the damaged store was changed"
    );
    // A file that was never a store (a wrong --store path: RTCD's config, say) is named as
    // such; the advice is to check the path, not to move the file aside.
    let toml = state.path().join("rtcd.toml");
    let text = "[rtc]\nice_host_override = \"203.0.113.10\"\n".repeat(20);
    std::fs::write(&toml, &text).unwrap();
    let toml_s = toml.display().to_string();
    let done = start_in_mount_ns(&ns, "true", &serve(&toml_s));
    check(&done, &toml_s, "not a probe-server result store");
    assert!(!done.stderr.contains("mv "), "{}", done.stderr);
    let read = server_tool(&["results", "--store", &toml_s]);
    assert_eq!(read.code(), Some(2), "{}", read.describe());
    assert!(
        read.stderr.contains("check the --store path"),
        "{}",
        read.stderr
    );
    assert_eq!(std::fs::read_to_string(&toml).unwrap(), text);
}

/// A small tmpfs mounted on a directory for the test's duration (lazily unmounted on drop, even
/// when the test panics).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        let done = run_bounded(
            probe_tests::proc::command(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &dir.display().to_string(),
            ]),
            "mount tmpfs",
            TOOL_BOUND,
        );
        assert!(done.success(), "{}", done.describe());
        Self(dir.to_path_buf())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system under `path` with one file until writes fail.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn full_disk_costs_uploads_never_echo_replies() {
    let _one = serial();
    let topo = Topology::routed();
    let state = TempDir::new("results-full");
    let disk_dir = state.path().join("disk");
    std::fs::create_dir_all(&disk_dir).unwrap();
    let _disk = TinyDisk::mount(&disk_dir, "512k");
    let store = disk_dir.join("results.sqlite");
    let dir = state.path().display().to_string();
    let store_s = store.display().to_string();
    let server = try_start_server(
        &topo.server,
        &[
            "--listen",
            LISTEN,
            "--state-dir",
            &dir,
            "--store",
            &store_s,
            "--metrics",
            METRICS,
            "--metrics-label-after",
            "1",
        ],
        SERVER_READY_TIMEOUT,
        SERVER_LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let reports = TempDir::new("results-full-reports");
    let filler = disk_dir.join("filler");
    fill(&filler);

    // The disk is full: the run itself is unaffected, its upload is lost and counted.
    let run = probe(
        &topo,
        &server,
        "full-disk",
        &["--duration", "1"],
        reports.path(),
    );
    assert_eq!(run["ok"], true, "{run:#}");
    assert_eq!(run["udp"]["reachable"], true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = http_get(&topo.server, METRICS, "/metrics", None);
        if sample(
            &body,
            r#"probe_server_uploads_total{outcome="store_failed"}"#,
        ) >= 1.0
            || std::time::Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        sample(
            &body,
            r#"probe_server_uploads_total{outcome="store_failed"}"#
        ),
        1.0,
        "{}",
        server.stderr()
    );
    assert_eq!(
        sample(&body, r#"probe_server_uploads_total{outcome="stored"}"#),
        0.0
    );
    // The metrics saw the run all the same.
    assert_eq!(
        sample(
            &body,
            r#"probe_site_runs_total{site="full-disk",outcome="pass"}"#
        ),
        1.0
    );
    assert!(
        server.stderr().contains("cannot write uploaded results"),
        "{}",
        server.stderr()
    );

    // Space again: the next upload is kept, and the server says it recovered.
    std::fs::remove_file(&filler).unwrap();
    probe(
        &topo,
        &server,
        "full-disk",
        &["--duration", "1"],
        reports.path(),
    );
    let table = results_json(&store);
    assert_eq!(num(site(&table, "full-disk"), "runs"), 1.0, "{table:#}");
    let log = stop_gracefully(server);
    assert!(log.contains("writable again"), "{log}");
}

/// The store is the serving user's (0600, in a 0700 state directory): an admin who runs
/// `probe-server results` as another user is told to use sudo, not that the disk is read-only
/// or that there is no store.
#[test]
fn a_store_this_user_may_not_open_says_sudo() {
    let dir = probe_tests::TempDir::new("results-denied");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("results.sqlite"), b"SQLite format 3\0 not read").unwrap();
    let bins = probe_tests::binaries();
    let as_nobody = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::set_permissions(
            state.join("results.sqlite"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        // Everyone may reach the scratch directory itself.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let argv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bins.server.to_str().unwrap(),
            "results",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        probe_tests::run_bounded(
            probe_tests::proc::command(&argv),
            "probe-server results as nobody",
            Duration::from_secs(20),
        )
    };
    // The server itself, as a user that may not open the store: that user's rights are the
    // fix, never sudo.
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = state.join("results.sqlite");
    let argv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        bins.server.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        own.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ];
    let done = probe_tests::run_bounded(
        probe_tests::proc::command(&argv),
        "probe-server as nobody",
        Duration::from_secs(20),
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr
            .contains("give the user probe-server runs as write access")
            && !done.stderr.contains("sudo"),
        "{}",
        done.describe()
    );
    // The state directory closed (0700), then open but the file the owner's alone (0600).
    for mode in [0o700, 0o755] {
        let done = as_nobody(mode);
        assert_eq!(done.code(), Some(2), "{mode:o}: {}", done.describe());
        assert!(
            done.stderr
                .contains("this user may not open the result store")
                && done.stderr.contains("sudo"),
            "{mode:o}: {}",
            done.describe()
        );
    }
}
