//! `probe-server doctor`, `probe-client rtcd-api` and `probe-server bundle` against the RTCD
//! stand-in (`rtcd-standin`, a binary of this crate), each test in network namespaces it
//! creates and removes. Real binaries, real sockets, real nftables.

use std::path::Path;
use std::time::Duration;

use probe_tests::netns::Netns;
use probe_tests::proc::Finished;
use probe_tests::{Chain, Proc, TempDir, Topology};
use serde_json::Value;

const STANDIN: &str = env!("CARGO_BIN_EXE_rtcd-standin");
const LIFETIME: Duration = Duration::from_secs(120);
/// The doctor's promise: done within --sample + 5 s.
const SAMPLE_SECS: f64 = 1.0;

/// A namespace standing for the RTCD host, with `addr` (CIDR) on a veth whose peer stays in
/// the same namespace (no dummy interfaces on this kernel).
fn rtcd_host(addr: &str) -> Netns {
    // Build (or find) the binaries first: a build must not eat the stand-in's lifetime.
    probe_tests::binaries();
    let ns = Netns::new("rtcd");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.ip(&["addr", "add", addr, "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0p", "up"]);
    ns
}

fn start_standin(ns: &Netns, args: &[&str]) -> Proc {
    let mut argv = vec![STANDIN, "serve"];
    argv.extend_from_slice(args);
    let p = ns.spawn(&argv, LIFETIME);
    if let Err(e) = p
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("rtcd-standin ready")
        })
    {
        panic!("stand-in not ready ({e:?}): {}", p.stderr());
    }
    p
}

struct Run {
    done: Finished,
    json: Value,
}

fn doctor(ns: &Netns, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let bins = probe_tests::binaries();
    let sample = SAMPLE_SECS.to_string();
    let mut argv = vec![
        bins.server.to_str().expect("utf-8 path"),
        "doctor",
        "--json",
        "--sample",
        &sample,
    ];
    argv.extend_from_slice(extra);
    let mut cmd = ns.argv_command(&argv);
    cmd.envs(env.iter().copied());
    let done = probe_tests::run_bounded(
        cmd,
        format!("[{}] probe-server doctor", ns.name()),
        Duration::from_secs(30),
    );
    assert!(
        done.elapsed.as_secs_f64() < SAMPLE_SECS + 5.0,
        "the doctor took {:?}, more than --sample + 5 s\n{}",
        done.elapsed,
        done.describe()
    );
    let json = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("doctor JSON: {e}\n{}", done.describe()));
    Run { done, json }
}

fn finding<'a>(j: &'a Value, id: &str) -> Option<&'a Value> {
    j["findings"].as_array()?.iter().find(|f| f["id"] == id)
}

fn ids(j: &Value) -> Vec<String> {
    j["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["id"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn check<'a>(j: &'a Value, id: &str) -> &'a Value {
    j["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {j:#}"))
}

fn expect_finding<'a>(r: &'a Run, id: &str, severity: &str) -> &'a Value {
    let f =
        finding(&r.json, id).unwrap_or_else(|| panic!("no {id} finding\n{}", r.done.describe()));
    assert_eq!(f["severity"], severity, "{f:#}");
    f
}

fn host_sysctl_small() -> bool {
    ["rmem_max", "wmem_max", "optmem_max"].iter().any(|k| {
        std::fs::read_to_string(format!("/proc/sys/net/core/{k}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|v| v < 16_777_216)
    })
}

#[test]
fn healthy_rtcd_passes_with_version_and_port_owner() {
    let ns = rtcd_host("203.0.113.2/24");
    let standin = start_standin(
        &ns,
        &["--version", "v1.2.3", "--connected", "25", "--failed", "1"],
    );
    let r = doctor(&ns, &[], &[]);
    assert_eq!(r.done.code(), Some(0), "{}", r.done.describe());
    let j = &r.json;
    assert_eq!(j["schema"], 1);
    assert_eq!(j["ok"], true);
    assert_eq!(j["rtcd"]["version"], "v1.2.3");
    assert_eq!(j["rtcd"]["api"], "http://127.0.0.1:8045");
    for owner in ["udp_owner", "tcp_owner"] {
        assert_eq!(j["rtcd"][owner]["pid"], standin.pid(), "{owner}: {j:#}");
        assert_eq!(j["rtcd"][owner]["process"], "rtcd-standin");
    }
    for (id, status) in [
        ("udp_port", "pass"),
        ("tcp_port", "pass"),
        ("api_version", "pass"),
        ("api_metrics", "pass"),
        ("udp_drops", "pass"),
        ("host_firewall", "pass"),
        ("rtcd_config", "pass"),
        ("logs", "skipped"),
    ] {
        assert_eq!(check(j, id)["status"], status, "{id}: {j:#}");
    }
    assert!(check(j, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .contains("203.0.113.2:8443"));
    for absent in [
        "rtcd_not_listening",
        "rtcd_api_unreachable",
        "rtcd_version_old",
        "rtcd_connections_failing",
        "udp_receive_drops",
        "host_firewall_blocks",
        "rtcd_advertises_private",
        "tcp_fallback_off",
    ] {
        assert!(finding(j, absent).is_none(), "unexpected {absent}: {j:#}");
    }
    // Whatever this host's limits are, the finding follows them.
    assert_eq!(
        finding(j, "socket_buffers_small").is_some(),
        host_sysctl_small(),
        "{j:#}"
    );

    // The human report shows the same in a table.
    let bins = probe_tests::binaries();
    let sample = SAMPLE_SECS.to_string();
    let text = ns.try_exec(
        &[bins.server.to_str().unwrap(), "doctor", "--sample", &sample],
        Duration::from_secs(30),
    );
    assert_eq!(text.code(), Some(0), "{}", text.describe());
    assert!(
        text.stdout.contains("held by rtcd-standin") && text.stdout.contains("Verdict: PASS"),
        "{}",
        text.stdout
    );
}

#[test]
fn rtcd_down_is_reported_within_the_deadline() {
    let ns = rtcd_host("203.0.113.2/24");
    let r = doctor(&ns, &[], &[]);
    assert_eq!(r.done.code(), Some(1), "{}", r.done.describe());
    assert_eq!(r.json["ok"], false);
    expect_finding(&r, "rtcd_not_listening", "error");
    expect_finding(&r, "rtcd_api_unreachable", "error");
    assert!(r.json["rtcd"]["udp_owner"].is_null() && r.json["rtcd"]["version"].is_null());
    assert_eq!(check(&r.json, "cpu")["status"], "skipped");
}

#[test]
fn private_addresses_without_override_and_the_fix() {
    let ns = rtcd_host("172.31.1.2/24");
    let _standin = start_standin(&ns, &[]);
    let r = doctor(&ns, &[], &[]);
    assert_eq!(r.done.code(), Some(1), "{}", r.done.describe());
    let f = expect_finding(&r, "rtcd_advertises_private", "error");
    assert!(
        f["summary"].as_str().unwrap().contains("172.31.1.2"),
        "{f:#}"
    );
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains("ice_host_override") && fix.contains("RTCD_RTC_ICEHOSTOVERRIDE"),
        "{fix}"
    );

    // Applying the fix (here through RTCD's environment) clears it.
    let r = doctor(&ns, &[], &[("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10")]);
    assert_eq!(r.done.code(), Some(0), "{}", r.done.describe());
    assert!(
        finding(&r.json, "rtcd_advertises_private").is_none(),
        "{:#}",
        r.json
    );
    assert!(check(&r.json, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .contains("203.0.113.10:8443"));
}

#[test]
fn nftables_rule_dropping_the_ice_port() {
    let ns = rtcd_host("203.0.113.2/24");
    let _standin = start_standin(&ns, &[]);
    probe_tests::nft::add_rules(&ns, Chain::Input, &["udp dport 8443 drop"]);
    let r = doctor(&ns, &[], &[]);
    assert_eq!(r.done.code(), Some(1), "{}", r.done.describe());
    let f = expect_finding(&r, "host_firewall_blocks", "error");
    let s = f["summary"].as_str().unwrap();
    for part in [
        "8443/udp",
        "probe_test",
        "chain input",
        "udp dport 8443 drop",
    ] {
        assert!(s.contains(part), "{part} missing in {s}");
    }
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("nft delete rule inet probe_test input handle"),
        "{f:#}"
    );
    // Only that port: TCP 8443 and the API port stay open.
    assert_eq!(
        ids(&r.json)
            .iter()
            .filter(|i| *i == "host_firewall_blocks")
            .count(),
        1,
        "{:#}",
        r.json
    );
    assert_eq!(check(&r.json, "host_firewall")["status"], "fail");
}

#[test]
fn udp_flood_makes_rtcd_sockets_drop() {
    let ns = rtcd_host("203.0.113.2/24");
    // A socket that is never read, with the smallest buffer the kernel allows.
    let _standin = start_standin(&ns, &["--no-drain", "--rcvbuf", "2048"]);
    let bins = probe_tests::binaries();
    let doctor_proc = ns.spawn(
        &[
            bins.server.to_str().unwrap(),
            "doctor",
            "--json",
            "--sample",
            "2",
        ],
        Duration::from_secs(30),
    );
    // Two bursts inside the sample, whenever the doctor took its first reading.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        let sent = ns.exec(&[STANDIN, "flood", "127.0.0.1:8443", "3000"]);
        assert!(sent.stdout.starts_with("sent "), "{}", sent.describe());
    }
    let done = doctor_proc.finish(Duration::from_secs(20));
    assert!(done.elapsed < Duration::from_secs(7), "{}", done.describe());
    let json: Value =
        serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("{e}\n{}", done.describe()));
    let r = Run { done, json };
    assert_eq!(r.done.code(), Some(1), "{}", r.done.describe());
    let f = expect_finding(&r, "udp_receive_drops", "error");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("RTCD's own UDP sockets"),
        "{f:#}"
    );
    assert_eq!(check(&r.json, "udp_drops")["status"], "fail");
}

#[test]
fn old_rtcd_version() {
    let ns = rtcd_host("203.0.113.2/24");
    let _standin = start_standin(&ns, &["--version", "v0.10.3"]);
    let r = doctor(&ns, &[], &[]);
    assert_eq!(r.done.code(), Some(1), "{}", r.done.describe());
    assert_eq!(r.json["rtcd"]["version"], "v0.10.3");
    let f = expect_finding(&r, "rtcd_version_old", "error");
    assert!(
        f["summary"].as_str().unwrap().contains("TCP fallback"),
        "{f:#}"
    );
    // Same RTCD, a plugin minimum below it: only the missing TCP fallback is left, a warning.
    let r = doctor(&ns, &["--min-rtcd-version", "v0.9.0"], &[]);
    assert_eq!(r.done.code(), Some(0), "{}", r.done.describe());
    expect_finding(&r, "rtcd_version_old", "warning");
}

#[test]
fn failing_connections_in_rtcd_metrics() {
    let ns = rtcd_host("203.0.113.2/24");
    let _standin = start_standin(&ns, &["--connected", "12", "--failed", "30"]);
    let r = doctor(&ns, &[], &[]);
    let f = expect_finding(&r, "rtcd_connections_failing", "warning");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("30 failed, 12 connected"),
        "{f:#}"
    );
}

const PRIVATE_TRACE: &str = r#"{"timestamp":"2025-05-14 10:29:08.935 Z","level":"trace","msg":"Ping STUN from udp4 host 172.31.29.117:8443 (resolved: 172.31.29.117:8443) to udp4 host 198.51.100.7:59737 (resolved: 198.51.100.7:59737)","caller":"rtc/logger.go:54","origin":"ice/v4.(*Agent).sendBindingRequest github.com/pion/ice/v4@v4.0.3/agent.go:921"}"#;

#[test]
fn log_with_a_private_candidate_trace() {
    let ns = rtcd_host("203.0.113.2/24");
    let _standin = start_standin(&ns, &[]);
    let dir = TempDir::new("doctor-log");
    let log = dir.path().join("rtcd.log");
    std::fs::write(
        &log,
        format!("{PRIVATE_TRACE}\n{{\"level\":\"debug\",\"msg\":\"ice failed\"}}\n{{\"level\":\"info\",\"msg\":\"rtc: new session\"}}\n"),
    )
    .unwrap();
    let r = doctor(&ns, &["--rtcd-log", log.to_str().unwrap()], &[]);
    let f = expect_finding(&r, "log_private_candidates", "warning");
    assert!(
        f["summary"].as_str().unwrap().contains("172.31.29.117"),
        "{f:#}"
    );
    let c = check(&r.json, "logs");
    assert!(
        c["detail"].as_str().unwrap().contains("\"ice failed\" ×1"),
        "{c:#}"
    );
    assert!(finding(&r.json, "log_error_patterns").is_some());
}

#[test]
fn bad_input_exits_2_with_one_sentence() {
    let bins = probe_tests::binaries();
    let server = bins.server.to_str().unwrap();
    let client = bins.client.to_str().unwrap();
    let dir = TempDir::new("doctor-bad");
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[rtc\nice_port_udp = 1\n").unwrap();
    let bad_toml = bad_toml.to_str().unwrap();
    for argv in [
        vec![server, "doctor", "--rtcd-config", "/nonexistent/rtcd.toml"],
        vec![server, "doctor", "--rtcd-config", bad_toml],
        vec![server, "doctor", "--rtcd-api", "ftp://x"],
        vec![server, "bundle", "-o", "/nonexistent/dir/b.tar.gz"],
        vec![client, "rtcd-api", "ftp://203.0.113.2"],
        vec![
            client,
            "rtcd-api",
            "http://203.0.113.2:8045",
            "--client-id",
            "only-id",
        ],
    ] {
        let done = probe_tests::run_bounded(
            probe_tests::proc::command(&argv),
            argv.join(" "),
            Duration::from_secs(20),
        );
        assert_eq!(done.code(), Some(2), "{}", done.describe());
        assert_eq!(done.stderr.trim().lines().count(), 1, "{}", done.describe());
        assert!(done.stdout.is_empty(), "{}", done.describe());
    }
}

// ---- probe-client rtcd-api, from the "Mattermost host" (client ns) over a router ----

const KEY: &str = "standin-auth-key-4242";

fn api_topology() -> (Topology, Proc) {
    probe_tests::binaries();
    let t = Topology::routed();
    let standin = start_standin(
        &t.server,
        &[
            "--client-id",
            "mattermost",
            "--auth-key",
            KEY,
            "--version",
            "v1.1.0",
        ],
    );
    (t, standin)
}

fn rtcd_api(t: &Topology, args: &[&str], env: &[(&str, &str)]) -> (Finished, Value) {
    rtcd_api_url(t, &format!("http://{}:8045", t.server_ip), args, env)
}

fn rtcd_api_url(t: &Topology, url: &str, args: &[&str], env: &[(&str, &str)]) -> (Finished, Value) {
    let bins = probe_tests::binaries();
    let mut argv = vec![bins.client.to_str().unwrap(), "rtcd-api", url, "--json"];
    argv.extend_from_slice(args);
    let mut cmd = t.client.argv_command(&argv);
    cmd.envs(env.iter().copied());
    // Keep the proxy and CA settings of the machine running the tests out of it.
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        if !env.iter().any(|(k, _)| *k == v) {
            cmd.env_remove(v);
        }
    }
    let done = probe_tests::run_bounded(cmd, "probe-client rtcd-api", Duration::from_secs(30));
    let json = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("rtcd-api JSON: {e}\n{}", done.describe()));
    (done, json)
}

fn api_check<'a>(j: &'a Value, id: &str, via: &str) -> &'a Value {
    j["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id && c["via"] == via))
        .unwrap_or_else(|| panic!("no check {id} via {via}: {j:#}"))
}

#[test]
fn rtcd_api_with_right_and_wrong_keys() {
    let (t, _standin) = api_topology();
    let (done, j) = rtcd_api(&t, &["--client-id", "mattermost", "--auth-key", KEY], &[]);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert_eq!(
        (j["schema"].clone(), j["ok"].clone(), j["version"].clone()),
        (1.into(), true.into(), "v1.1.0".into())
    );
    assert_eq!(j["url"], "http://203.0.113.2:8045");
    for id in ["tcp_connect", "version", "login", "ws_upgrade"] {
        assert_eq!(api_check(&j, id, "direct")["status"], "pass", "{id}: {j:#}");
    }
    assert!(j["findings"].as_array().unwrap().is_empty(), "{j:#}");

    let (done, j) = rtcd_api(
        &t,
        &["--client-id", "mattermost", "--auth-key", "not-the-key"],
        &[],
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(ids(&j), vec!["rtcd_api_auth_failed"], "{j:#}");
    assert!(j["findings"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("authentication failed"));
    assert_eq!(api_check(&j, "login", "direct")["status"], "fail");
}

#[test]
fn rtcd_api_port_dropped_on_the_path() {
    let (t, _standin) = api_topology();
    t.router_forward(&["tcp dport 8045 drop"]);
    let (done, j) = rtcd_api(&t, &["--client-id", "mattermost", "--auth-key", KEY], &[]);
    assert!(
        done.elapsed <= Duration::from_secs(10),
        "verdict took {:?}",
        done.elapsed
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(ids(&j), vec!["rtcd_api_unreachable"], "{j:#}");
    assert_eq!(api_check(&j, "tcp_connect", "direct")["status"], "fail");
    assert!(j["version"].is_null());
}

#[test]
fn rtcd_api_through_a_proxy_that_strips_upgrade() {
    let (t, _standin) = api_topology();
    let proxy_addr = format!("{}:3128", t.router_client_ip);
    let proxy = t
        .router
        .spawn(&[STANDIN, "proxy", "--listen", &proxy_addr], LIFETIME);
    proxy
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("rtcd-standin proxy ready")
        })
        .unwrap_or_else(|e| panic!("proxy not ready ({e:?}): {}", proxy.stderr()));
    let proxy_url = format!("http://{proxy_addr}");
    let creds = ["--client-id", "mattermost", "--auth-key", KEY];

    let (done, j) = rtcd_api(
        &t,
        &creds,
        &[
            ("HTTP_PROXY", &proxy_url),
            ("NO_PROXY", "localhost,.internal"),
        ],
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let f = finding(&j, "proxy_in_path").unwrap_or_else(|| panic!("{j:#}"));
    assert_eq!(f["severity"], "warning");
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("NO_PROXY=localhost,.internal,203.0.113.2"),
        "{f:#}"
    );
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("the direct route works, the proxy route does not"),
        "{f:#}"
    );
    let ws = finding(&j, "rtcd_ws_failed").unwrap_or_else(|| panic!("{j:#}"));
    assert_eq!(ws["severity"], "error");
    assert!(
        ws["summary"]
            .as_str()
            .unwrap()
            .contains("through the proxy"),
        "{ws:#}"
    );
    // The proxy carries plain requests: only the upgrade breaks.
    assert_eq!(api_check(&j, "login", "proxy")["status"], "pass");
    assert_eq!(api_check(&j, "ws_upgrade", "proxy")["status"], "fail");
    assert_eq!(api_check(&j, "ws_upgrade", "direct")["status"], "pass");
    assert_eq!(j["proxy"]["via_proxy_ok"], false);
    assert_eq!(j["proxy"]["direct_ok"], true);

    // With the suggested NO_PROXY the plugin's route is direct again.
    let no_proxy = j["proxy"]["no_proxy"].as_str().unwrap().to_string();
    let (done, j) = rtcd_api(
        &t,
        &creds,
        &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", &no_proxy)],
    );
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert!(
        j["proxy"].is_null() && j["findings"].as_array().unwrap().is_empty(),
        "{j:#}"
    );
}

#[test]
fn tls_api_checked_from_both_hosts() {
    probe_tests::binaries();
    let t = Topology::routed();
    let dir = TempDir::new("tls");
    let cert = dir.path().join("rtcd-cert.pem");
    let cert = cert.to_str().unwrap();
    let server_ip = t.server_ip.to_string();
    let _standin = start_standin(
        &t.server,
        &[
            "--client-id",
            "mattermost",
            "--auth-key",
            KEY,
            "--tls-cert-out",
            cert,
            "--tls-name",
            &server_ip,
        ],
    );
    // On the RTCD host: TLS on in RTCD's config makes the doctor use https.
    let config = dir.path().join("rtcd.toml");
    std::fs::write(
        &config,
        "[api]\nhttp.tls.enable = true\nhttp.tls.cert_file = \"/etc/rtcd/cert.pem\"\nhttp.tls.cert_key = \"/etc/rtcd/key.pem\"\n",
    )
    .unwrap();
    let r = doctor(&t.server, &["--rtcd-config", config.to_str().unwrap()], &[]);
    assert_eq!(
        r.json["rtcd"]["api"], "https://127.0.0.1:8045",
        "{:#}",
        r.json
    );
    assert_eq!(
        check(&r.json, "api_version")["status"],
        "pass",
        "{:#}",
        r.json
    );
    assert_eq!(r.json["rtcd"]["version"], "v1.1.0");

    // From the Mattermost host: trusted through SSL_CERT_FILE, as Go would read it…
    let url = format!("https://{server_ip}:8045");
    let creds = ["--client-id", "mattermost", "--auth-key", KEY];
    let (done, j) = rtcd_api_url(&t, &url, &creds, &[("SSL_CERT_FILE", cert)]);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert_eq!(api_check(&j, "tls", "direct")["status"], "pass");
    assert_eq!(api_check(&j, "ws_upgrade", "direct")["status"], "pass");
    // …and refused when this host trusts another CA only.
    let other = dir.path().join("other-ca.pem");
    let other_ca = rcgen::generate_simple_self_signed(vec![server_ip.clone()]).unwrap();
    std::fs::write(&other, other_ca.cert.pem()).unwrap();
    let (done, j) = rtcd_api_url(
        &t,
        &url,
        &creds,
        &[("SSL_CERT_FILE", other.to_str().unwrap())],
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(api_check(&j, "tls", "direct")["status"], "fail", "{j:#}");
    assert_eq!(ids(&j), vec!["rtcd_api_unreachable"], "{j:#}");
    let summary = j["findings"][0]["summary"].as_str().unwrap();
    assert!(summary.contains("certificate"), "{summary}");
}

// ---- probe-server bundle ----

const SECRETS: [&str; 9] = [
    "cfg-admin-secret-9F3A",
    "cfg-db-password-77QZ",
    "cfg-turn-credential-51XK",
    "cfg-static-auth-secret-3MPL",
    "cfg-api-key-path-ZZ81",
    "env-admin-secret-K2J9",
    "env-db-password-W0Q4",
    "env-turn-credential-H7T1",
    "cfg-extra-password-8YUD",
];

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn bundle_has_everything_and_no_secret() {
    let ns = rtcd_host("203.0.113.2/24");
    let _standin = start_standin(&ns, &["--version", "v1.1.0"]);
    let dir = TempDir::new("bundle");
    let config = dir.path().join("rtcd.toml");
    std::fs::write(
        &config,
        format!(
            r#"[api]
http.listen_address = ":8045"
http.tls.cert_key = "/etc/rtcd/{}.pem"
security.enable_admin = true
security.admin_secret_key = "{}"

[rtc]
ice_host_override = "203.0.113.2"
ice_servers = [{{ urls = ["turn:203.0.113.20:3478"], username = "calls", credential = "{}" }}]
turn.static_auth_secret = "{}"

[store]
data_source = "postgres://rtcd:{}@203.0.113.30:5432/rtcd?sslmode=disable"

[extra]
smtp_password = "{}"
"#,
            SECRETS[4], SECRETS[0], SECRETS[2], SECRETS[3], SECRETS[1], SECRETS[8]
        ),
    )
    .unwrap();
    let log = dir.path().join("rtcd.log");
    // A log line that leaks a secret: the bundle must not carry it along.
    std::fs::write(
        &log,
        format!(
            "{PRIVATE_TRACE}\n{{\"level\":\"error\",\"msg\":\"unauthorized\",\"key\":\"{}\"}}\n",
            SECRETS[0]
        ),
    )
    .unwrap();
    let out = dir.path().join("support.tar.gz");
    // No result store here: the bundle says so instead of guessing.
    let store = dir.path().join("results.sqlite");
    let bins = probe_tests::binaries();
    let argv = [
        bins.server.to_str().unwrap(),
        "bundle",
        "-o",
        out.to_str().unwrap(),
        "--rtcd-config",
        config.to_str().unwrap(),
        "--rtcd-log",
        log.to_str().unwrap(),
        "--sample",
        "1",
        "--store",
        store.to_str().unwrap(),
    ];
    let mut cmd = ns.argv_command(&argv);
    cmd.env("RTCD_API_SECURITY_ADMINSECRETKEY", SECRETS[5])
        .env(
            "RTCD_STORE_DATASOURCE",
            format!("rtcd:{}@tcp(203.0.113.30:3306)/rtcd", SECRETS[6]),
        )
        .env(
            "RTCD_RTC_ICESERVERS",
            format!(
                r#"[{{"urls":["turn:203.0.113.20:3478"],"username":"u","credential":"{}"}}]"#,
                SECRETS[7]
            ),
        );
    let done = probe_tests::run_bounded(cmd, "probe-server bundle", Duration::from_secs(30));
    assert_eq!(done.code(), Some(0), "{}", done.describe());

    // The system's tar reads it: the archive is standard.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let untar = probe_tests::run_bounded(
        probe_tests::proc::command(&[
            "tar",
            "-xzf",
            out.to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
        ]),
        "tar -xzf",
        Duration::from_secs(20),
    );
    assert!(untar.success(), "{}", untar.describe());
    let mut files = Vec::new();
    walk(&x, &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "doctor.json",
        "doctor.txt",
        "rtcd-version.json",
        "rtcd-config.toml",
        "rtcd-config-effective.json",
        "rtcd-env.txt",
        "system.txt",
        "rtcd-log-matches.txt",
        "probe-results.txt",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        for s in SECRETS {
            assert!(!text.contains(s), "secret {s} in {}:\n{text}", f.display());
        }
    }
    let read = |name: &str| {
        let p = files
            .iter()
            .find(|p| p.file_name().unwrap() == name)
            .unwrap();
        std::fs::read_to_string(p).unwrap()
    };
    // Redacted, not emptied: the settings support needs are still there.
    let cfg = read("rtcd-config.toml");
    assert!(
        cfg.contains("203.0.113.2")
            && cfg.contains("REDACTED")
            && cfg.contains("turn:203.0.113.20:3478"),
        "{cfg}"
    );
    let env = read("rtcd-env.txt");
    assert!(
        env.contains("RTCD_STORE_DATASOURCE=rtcd:REDACTED@tcp(203.0.113.30:3306)/rtcd"),
        "{env}"
    );
    let doc: Value = serde_json::from_str(&read("doctor.json")).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["rtcd"]["version"], "v1.1.0", "{doc:#}");
    let version: Value = serde_json::from_str(&read("rtcd-version.json")).unwrap();
    assert_eq!(version["buildVersion"], "v1.1.0");
    assert!(read("rtcd-log-matches.txt").contains("172.31.29.117"));
    assert!(read("system.txt").contains("kernel "));
}
