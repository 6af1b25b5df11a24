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
    start_standin_env(ns, args, &[])
}

/// The stand-in with `env` in ITS environment (as a systemd unit or `docker -e` gives RTCD its
/// `RTCD_*` variables), not in the doctor's.
fn start_standin_env(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut argv = vec![STANDIN, "serve"];
    argv.extend_from_slice(args);
    let mut cmd = ns.argv_command(&argv);
    cmd.envs(env.iter().copied());
    let p = Proc::spawn(cmd, format!("[{}] rtcd-standin", ns.name()), LIFETIME)
        .expect("spawn the stand-in");
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
    doctor_as(ns, &[], extra, env)
}

/// The doctor run through `wrapper` (e.g. `setpriv` to drop root), then `extra` flags.
fn doctor_as(ns: &Netns, wrapper: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Run {
    let bins = probe_tests::binaries();
    let sample = SAMPLE_SECS.to_string();
    let mut argv = wrapper.to_vec();
    argv.extend_from_slice(&[
        bins.server.to_str().expect("utf-8 path"),
        "doctor",
        "--json",
        "--sample",
        &sample,
    ]);
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

/// `setpriv` to nobody: the doctor then cannot read root's `/proc/PID/fd`.
const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
];

/// Run without root while RTCD (here the stand-in, as root) holds its ports: the kernel shows
/// the sockets but not who holds them, so the port checks say so instead of passing, nothing
/// is called RTCD's, and the header does not say "nothing listens" (README: "without root
/// those checks say skipped with the reason, never a false pass").
#[test]
fn unprivileged_doctor_never_passes_a_holder_it_cannot_see() {
    let ns = rtcd_host("203.0.113.2/24");
    let _standin = start_standin(&ns, &[]);
    let r = doctor_as(&ns, AS_NOBODY, &["--no-nat-check"], &[]);
    let j = &r.json;
    for id in ["udp_port", "tcp_port"] {
        let c = check(j, id);
        assert_eq!(c["status"], "skipped", "{id}: {j:#}");
        let detail = c["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("cannot identify") && detail.contains("run the doctor as root"),
            "{id}: {detail}"
        );
    }
    for id in ["udp_drops", "cpu"] {
        let c = check(j, id);
        assert_ne!(c["status"], "pass", "{id}: {j:#}");
        let detail = c["detail"].as_str().unwrap_or_default();
        assert!(!detail.contains("RTCD's UDP"), "{id}: {detail}");
    }
    assert!(j["rtcd"]["udp_owner"].is_null(), "{j:#}");
    assert!(finding(j, "rtcd_not_listening").is_none(), "{j:#}");

    let bins = probe_tests::binaries();
    let mut argv = AS_NOBODY.to_vec();
    argv.extend_from_slice(&[
        bins.server.to_str().unwrap(),
        "doctor",
        "--sample",
        "0.5",
        "--no-nat-check",
    ]);
    let text = ns.try_exec(&argv, Duration::from_secs(30));
    for proto in ["UDP", "TCP"] {
        let line =
            format!("{proto} port:    held by a process the doctor cannot identify (run as root)");
        assert!(text.stdout.contains(&line), "{line}\n{}", text.describe());
    }
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

    // Applying the fix (in RTCD's environment, RTCD restarted) clears it.
    drop(_standin);
    let _standin = start_standin_env(&ns, &[], &[("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10")]);
    let r = doctor(&ns, &[], &[]);
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

    // The same fix misspelled in the file: RTCD ignores the key without a word, so does not
    // the doctor.
    let dir = TempDir::new("doctor-unknown-key");
    let cfg = dir.path().join("rtcd.toml");
    std::fs::write(&cfg, "[rtc]\nicehostoverride = \"203.0.113.10\"\n").unwrap();
    let r = doctor(&ns, &["--rtcd-config", cfg.to_str().unwrap()], &[]);
    let f = expect_finding(&r, "rtcd_config_unknown_key", "warning");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("rtc.icehostoverride (did you mean rtc.ice_host_override?)"),
        "{f:#}"
    );
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
fn a_config_changed_after_rtcd_started_is_not_what_rtcd_runs() {
    let ns = rtcd_host("203.0.113.2/24");
    let dir = TempDir::new("doctor-age");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[rtc]\nice_host_override = \"203.0.113.2\"\n").expect("write config");
    let cfg_arg = cfg.display().to_string();
    let standin = start_standin(&ns, &[]);
    let r = doctor(&ns, &["--rtcd-config", &cfg_arg], &[]);
    let age = check(&r.json, "config_age");
    assert_eq!(age["status"], "pass", "{:#}", r.json);
    assert!(
        age["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("pid {}", standin.pid())),
        "{age:#}"
    );
    assert!(finding(&r.json, "rtcd_config_changed_since_start").is_none());
    // The admin edits the file and does not restart RTCD (dated ahead: no waiting here).
    let later = std::time::SystemTime::now() + Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(&cfg)
        .and_then(|f| f.set_modified(later))
        .expect("date the file");
    let r = doctor(&ns, &["--rtcd-config", &cfg_arg], &[]);
    assert_eq!(
        check(&r.json, "config_age")["status"],
        "warn",
        "{:#}",
        r.json
    );
    let f = expect_finding(&r, "rtcd_config_changed_since_start", "warning");
    assert!(
        f["fix"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Restart RTCD"),
        "{f:#}"
    );
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

// ---- RTCD's real environment, STUN at start, version-driven rules (issue 10) ----

/// A directory with fake `systemctl` / `journalctl` scripts, first on PATH: this machine has no
/// systemd. Each script records its argv in `DIR/NAME.args`.
fn fake_systemd(dir: &Path, systemctl_out: &str, journal: Option<&str>) -> String {
    use std::os::unix::fs::PermissionsExt;
    let script = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{}'\ncat <<'PROBE_EOF'\n{body}\nPROBE_EOF\n",
                dir.join(format!("{name}.args")).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script("systemctl", systemctl_out);
    if let Some(j) = journal {
        script("journalctl", j);
    }
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

#[test]
fn rtcd_env_is_read_from_the_running_rtcd_process() {
    let ns = rtcd_host("172.31.1.2/24");
    // The override is in RTCD's own environment only (systemd unit / docker -e), not the doctor's.
    let standin = start_standin_env(&ns, &[], &[("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10")]);
    // The admin's shell even has another value: RTCD does not run with it, so it is ignored.
    let r = doctor(&ns, &[], &[("RTCD_RTC_ICEHOSTOVERRIDE", "198.51.100.99")]);
    assert_eq!(r.done.code(), Some(0), "{}", r.done.describe());
    let j = &r.json;
    assert!(finding(j, "rtcd_advertises_private").is_none(), "{j:#}");
    let detail = check(j, "rtcd_config")["detail"].as_str().unwrap();
    assert!(detail.contains("203.0.113.10:8443"), "{detail}");
    assert!(!detail.contains("198.51.100.99"), "{detail}");
    let env = &j["rtcd"]["env"];
    assert_eq!(env["source"], "process", "{j:#}");
    assert_eq!(env["pid"], standin.pid(), "{j:#}");
    assert_eq!(env["process"], "rtcd-standin");
    assert_eq!(env["variables"][0], "RTCD_RTC_ICEHOSTOVERRIDE");
    assert_eq!(env["ignored_own"][0], "RTCD_RTC_ICEHOSTOVERRIDE");
    let c = check(j, "rtcd_env");
    assert_eq!(c["status"], "pass");
    let d = c["detail"].as_str().unwrap();
    assert!(
        d.contains(&format!("/proc/{}/environ", standin.pid()))
            && d.contains("ignored from this shell"),
        "{d}"
    );
    assert!(
        j["config"]
            .as_str()
            .unwrap()
            .contains("RTCD_RTC_ICEHOSTOVERRIDE (from the running RTCD's environment"),
        "{j:#}"
    );

    // A value RTCD would refuse in ITS environment is reported, quoting envconfig.
    drop(standin);
    let _standin = start_standin_env(&ns, &[], &[("RTCD_RTC_ICEPORTTCP", "x8443")]);
    let r = doctor(&ns, &[], &[]);
    let f = expect_finding(&r, "rtcd_config_invalid", "error");
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.contains("the running RTCD's environment") && s.contains("assigning RTCD_RTC_ICEPORTTCP"),
        "{s}"
    );
}

#[test]
fn rtcd_env_from_the_systemd_unit_when_rtcd_is_stopped() {
    let ns = rtcd_host("172.31.1.2/24");
    let dir = TempDir::new("fake-systemd");
    let path = fake_systemd(
        dir.path(),
        "LoadState=loaded\nEnvironment=RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.10 \"RTCD_STORE_DATASOURCE=/var/lib/rtcd db\"",
        None,
    );
    // RTCD is stopped (nothing holds its ports); sudo's environment has no RTCD_* variable.
    let r = doctor(&ns, &[], &[("PATH", path.as_str())]);
    let j = &r.json;
    assert_eq!(j["rtcd"]["env"]["source"], "systemd", "{j:#}");
    assert_eq!(j["rtcd"]["env"]["unit"], "rtcd.service");
    assert_eq!(
        j["rtcd"]["env"]["variables"],
        serde_json::json!(["RTCD_RTC_ICEHOSTOVERRIDE", "RTCD_STORE_DATASOURCE"]),
        "{j:#}"
    );
    let detail = check(j, "rtcd_config")["detail"].as_str().unwrap();
    assert!(detail.contains("203.0.113.10:8443"), "{detail}");
    let args = std::fs::read_to_string(dir.path().join("systemctl.args")).unwrap();
    assert!(
        args.contains("show") && args.contains("Environment") && args.contains("rtcd.service"),
        "{args}"
    );
    assert!(check(j, "rtcd_env")["detail"]
        .as_str()
        .unwrap()
        .contains("no running RTCD found"));

    // A unit that does not exist: this shell's environment, and the report says so.
    let dir2 = TempDir::new("fake-systemd");
    let path2 = fake_systemd(dir2.path(), "LoadState=not-found", None);
    let r = doctor(
        &ns,
        &[],
        &[
            ("PATH", path2.as_str()),
            ("RTCD_RTC_ICEHOSTOVERRIDE", "198.51.100.7"),
        ],
    );
    assert_eq!(r.json["rtcd"]["env"]["source"], "own", "{:#}", r.json);
    let d = check(&r.json, "rtcd_env")["detail"].as_str().unwrap();
    assert!(d.contains("LoadState=not-found"), "{d}");
    assert!(check(&r.json, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .contains("198.51.100.7:8443"));
}

/// The start log is read by its own thread: wait (bounded) until it has the line that comes last
/// in it, so a loaded machine does not race the assertions below. They say what is missing.
fn start_log(server: &mut probe_tests::probe::ServerHandle, last: &str) {
    let _ = server
        .proc_mut()
        .stderr_capture()
        .wait_for_line(Duration::from_secs(5), |l| l.contains(last));
}

#[test]
fn probe_server_advertises_with_rtcd_s_environment() {
    let ns = rtcd_host("172.31.1.2/24");
    let dir = TempDir::new("server-env");
    let cfg = dir.path().join("rtcd.toml");
    std::fs::write(&cfg, "[rtc]\nice_port_udp = 8443\nice_port_tcp = 8443\n").unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    // RTCD runs (on its ports), the probe on a neighbouring one: RTCD's process environment.
    let standin = start_standin_env(&ns, &[], &[("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10")]);
    let mut server = probe_tests::probe::start_server_with_state(
        &ns,
        "0.0.0.0:9443",
        &["--rtcd-config", cfg.as_str()],
        &Default::default(),
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    start_log(&mut server, "udp 203.0.113.10:");
    let err = server.stderr();
    assert!(
        err.contains("env_source=\"process\"") || err.contains("env_source=process"),
        "{err}"
    );
    assert!(
        err.contains(&format!("rtcd-standin, pid {}", standin.pid()))
            && err.contains("RTCD_RTC_ICEHOSTOVERRIDE"),
        "{err}"
    );
    assert!(
        err.contains("udp 203.0.113.10:"),
        "RTCD's override not advertised:\n{err}"
    );
    server.stop();
    drop(standin);

    // RTCD stopped, the probe on RTCD's port: the unit's Environment= (quoted as systemd does).
    let fake = TempDir::new("fake-systemd");
    let path = fake_systemd(
        fake.path(),
        "LoadState=loaded\nEnvironment=\"RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.11\" \"OTHER=a b\"",
        None,
    );
    let env: std::collections::BTreeMap<String, String> =
        [("PATH".to_string(), path)].into_iter().collect();
    let mut server = probe_tests::probe::start_server_with_state(
        &ns,
        "0.0.0.0:8443",
        &["--rtcd-config", cfg.as_str()],
        &env,
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    start_log(&mut server, "udp 203.0.113.11:8443");
    let err = server.stderr();
    assert!(err.contains("the systemd unit rtcd.service"), "{err}");
    assert!(err.contains("udp 203.0.113.11:8443"), "{err}");
    assert!(
        !err.contains("OTHER"),
        "only RTCD_* variables are kept:\n{err}"
    );
}

/// RTCD's start and its STUN results as its file log (mlog JSON) writes them
/// (rtcd service/service.go:67, service/rtc/server.go:151/153).
fn stun_log(stun_line: &str) -> String {
    format!(
        "{}\n{}\n{stun_line}\n",
        r#"{"timestamp":"2026-11-20 08:00:00.001 Z","level":"info","msg":"service: starting up","caller":"service/service.go:67","buildVersion":"v1.2.6"}"#,
        r#"{"timestamp":"2026-11-20 08:00:00.002 Z","level":"warn","msg":"failed to get public IP address for local interface","caller":"rtc/server.go:151","localAddr":"127.0.0.1","error":"failed to get public address: read udp4 127.0.0.1:8443: i/o timeout"}"#
    )
}

#[test]
fn stun_failed_at_rtcd_start_while_it_answers_now() {
    probe_tests::binaries();
    let t = Topology::nat(probe_tests::NatConfig::default());
    let stun = t.router_public_ip.to_string();
    let _coturn = t.router.spawn(
        &[
            "turnserver",
            "--listening-ip",
            &stun,
            "--listening-port",
            "3478",
            "--no-auth",
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file",
            "stdout",
            "--simple-log",
        ],
        LIFETIME,
    );
    t.router
        .wait_listening(&format!("udp:{stun}:3478"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("coturn: {e}"));
    let _standin = start_standin(&t.server, &["--version", "v1.2.6"]);
    let dir = TempDir::new("stun-at-start");
    let cfg = dir.path().join("rtcd.toml");
    std::fs::write(
        &cfg,
        format!("[rtc]\nice_servers = [\"stun:{stun}:3478\"]\n"),
    )
    .unwrap();
    let log = dir.path().join("rtcd.log");
    let server_ip = t.server_ip.to_string();
    std::fs::write(
        &log,
        stun_log(&format!(
            r#"{{"timestamp":"2026-11-20 08:00:05.003 Z","level":"warn","msg":"failed to get public IP address for local interface","caller":"rtc/server.go:151","localAddr":"{server_ip}","error":"failed to get public address: read udp4 {server_ip}:8443: i/o timeout"}}"#
        )),
    )
    .unwrap();
    let args = [
        "--rtcd-config",
        cfg.to_str().unwrap(),
        "--rtcd-log",
        log.to_str().unwrap(),
    ];
    let r = doctor(&t.server, &args, &[]);
    assert_eq!(r.done.code(), Some(1), "{}", r.done.describe());
    let f = expect_finding(&r, "rtcd_stun_failed_at_start", "error");
    let s = f["summary"].as_str().unwrap();
    let public = t.server_public_ip.to_string();
    assert!(
        s.contains("RTCD advertises its private address until restarted")
            && s.contains(&format!("{server_ip} → {public}")),
        "{s}"
    );
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains("restart RTCD") && fix.contains(&format!("ice_host_override = \"{public}\"")),
        "{fix}"
    );
    assert_eq!(check(&r.json, "logs")["status"], "fail");
    // STUN answers now: the computed advertisement is the public address.
    assert!(check(&r.json, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("{public}:8443")));

    // After a restart where STUN answered, nothing is reported.
    std::fs::write(
        &log,
        stun_log(&format!(
            r#"{{"timestamp":"2026-11-20 08:00:00.120 Z","level":"info","msg":"got public IP address for local interface","caller":"rtc/server.go:153","localAddr":"{server_ip}","remoteAddr":"{public}"}}"#
        )),
    )
    .unwrap();
    let r = doctor(&t.server, &args, &[]);
    assert!(
        finding(&r.json, "rtcd_stun_failed_at_start").is_none(),
        "{:#}",
        r.json
    );
    assert_eq!(r.done.code(), Some(0), "{}", r.done.describe());
}

#[test]
fn stun_failure_at_start_found_in_the_unit_journal() {
    // No --rtcd-log: the journal of RTCD's unit (journalctl faked: no systemd here), in RTCD's
    // console format (mlog plain), and STUN does not answer now (no STUN server): the failure
    // at start is shown, but no stale-start error (RTCD would fail again).
    let ns = rtcd_host("172.31.1.2/24");
    let dir = TempDir::new("fake-journal");
    let journal = "info  [2026-11-20 08:00:00.001 Z] service: starting up                          caller=\"service/service.go:67\" buildVersion=v1.2.6\nwarn  [2026-11-20 08:00:05.003 Z] failed to get public IP address for local interface caller=\"rtc/server.go:151\" localAddr=172.31.1.2 error=\"failed to get public address: read udp4 172.31.1.2:8443: i/o timeout\"";
    let path = fake_systemd(
        dir.path(),
        "LoadState=loaded\nEnvironment=\"RTCD_RTC_ICESERVERS=[\\\"stun:192.0.2.1:3478\\\"]\"",
        Some(journal),
    );
    let r = doctor(&ns, &[], &[("PATH", path.as_str())]);
    let c = check(&r.json, "logs");
    let d = c["detail"].as_str().unwrap();
    assert!(d.contains("the journal of rtcd.service"), "{c:#}");
    assert!(
        d.contains("172.31.1.2 failed") && d.contains("2026-11-20 08:00:00.001 Z"),
        "{d}"
    );
    assert!(
        finding(&r.json, "rtcd_stun_failed_at_start").is_none(),
        "{:#}",
        r.json
    );
    let args = std::fs::read_to_string(dir.path().join("journalctl.args")).unwrap();
    assert!(args.contains("-u rtcd.service"), "{args}");
}

#[test]
fn candidate_rules_follow_rtcd_s_version() {
    let ns = rtcd_host("203.0.113.2/24");
    let _standin = start_standin(&ns, &["--version", "v1.2.4"]);
    let r = doctor(&ns, &[], &[]);
    let j = &r.json;
    assert_eq!(j["rtcd"]["pion_rules"], "pion_ice_4_0", "{j:#}");
    assert_eq!(j["rtcd"]["version_source"], "RTCD's /version");
    let d = check(j, "rtcd_config")["detail"].as_str().unwrap();
    assert!(d.contains("pion/ice v4.0") && d.contains("v1.2.4"), "{d}");
    // The flag wins over what RTCD says.
    let r = doctor(&ns, &["--rtcd-version", "1.2.6"], &[]);
    assert_eq!(r.json["rtcd"]["pion_rules"], "pion_ice_4_2", "{:#}", r.json);
    assert_eq!(r.json["rtcd"]["version_source"], "--rtcd-version");
    drop(_standin);
    let _standin = start_standin(&ns, &["--version", "v1.2.6"]);
    let r = doctor(&ns, &[], &[]);
    assert_eq!(r.json["rtcd"]["pion_rules"], "pion_ice_4_2", "{:#}", r.json);
    // No RTCD answering: the default rules, said so.
    drop(_standin);
    let r = doctor(&ns, &[], &[]);
    assert_eq!(r.json["rtcd"]["version_source"], "default", "{:#}", r.json);
    assert!(check(&r.json, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .contains("version unknown"));
    // A version that is not one is a usage error.
    let bins = probe_tests::binaries();
    let done = ns.try_exec(
        &[
            bins.server.to_str().unwrap(),
            "doctor",
            "--rtcd-version",
            "latest",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
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
    // The plugin never logs in: /ws with Basic credentials is the whole check.
    for id in ["tcp_connect", "version", "ws_upgrade"] {
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

// Proxies: the plugin always dials RTCD's own address, so there is no "proxy route" to test —
// see tests/rtcd_api.rs (`http_proxy_makes_the_plugin_send_connect_to_rtcd` and neighbours).

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
    // RTCD's RTCD_* variables are in ITS environment (the bundle reads /proc/PID/environ).
    let datasource = format!("rtcd:{}@tcp(203.0.113.30:3306)/rtcd", SECRETS[6]);
    let ice_servers = format!(
        r#"[{{"urls":["turn:203.0.113.20:3478"],"username":"u","credential":"{}"}}]"#,
        SECRETS[7]
    );
    let _standin = start_standin_env(
        &ns,
        &["--version", "v1.1.0"],
        &[
            ("RTCD_API_SECURITY_ADMINSECRETKEY", SECRETS[5]),
            ("RTCD_STORE_DATASOURCE", datasource.as_str()),
            ("RTCD_RTC_ICESERVERS", ice_servers.as_str()),
        ],
    );
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
    let cmd = ns.argv_command(&argv);
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
        env.contains("RTCD_STORE_DATASOURCE=rtcd:REDACTED@tcp(203.0.113.30:3306)/rtcd")
            && env.contains("the running RTCD's environment (rtcd-standin"),
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

/// A config RTCD refuses at start (a port written as a string) still gets a bundle: the file as
/// it is (secrets redacted), why it was refused, the system. Exit 1: written, but the doctor
/// did not run. Before, no bundle at all (exit 2), exactly when support needs one. A file that is
/// not TOML at all stays out: its secrets cannot be found reliably (a multi-line string).
#[test]
fn an_unparsable_config_still_gets_a_bundle() {
    let type_error = "[api]\nsecurity.admin_secret_key = \"kept-out-of-the-bundle-42\"\n\n[rtc]\nice_port_udp = \"8443\"\nice_host_override = \"203.0.113.2\"\n";
    let syntax_error = "[api]\nsecurity.admin_secret_key = \'\'\'kept-out-of-the-bundle-42\'\'\'\n[rtc]\nturn.static_auth_secret = \"\"\"\nkept-out-too-43\"\"\"\nice_host_override = \"203.0.113.2\"\nice_host_override = \"203.0.113.3\"\n";
    for (text, whole) in [(type_error, true), (syntax_error, false)] {
        let dir = TempDir::new("bundle-unparsable");
        let config = dir.path().join("rtcd.toml");
        std::fs::write(&config, text).unwrap();
        let out = dir.path().join("support.tar.gz");
        let bins = probe_tests::binaries();
        let store = dir.path().join("results.sqlite");
        let argv = [
            bins.server.to_str().unwrap(),
            "bundle",
            "-o",
            out.to_str().unwrap(),
            "--rtcd-config",
            config.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ];
        let done = probe_tests::run_bounded(
            probe_tests::proc::command(&argv),
            "probe-server bundle",
            Duration::from_secs(30),
        );
        assert_eq!(done.code(), Some(1), "{}", done.describe());
        assert!(
            done.stderr.contains("does not parse")
                && done.stderr.contains("the doctor did not run"),
            "{}",
            done.describe()
        );
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
        let read = |name: &str| {
            let p = files
                .iter()
                .find(|p| p.file_name().unwrap() == name)
                .unwrap_or_else(|| panic!("{name} missing from {files:?}"));
            std::fs::read_to_string(p).unwrap()
        };
        let cfg = read("rtcd-config.toml");
        if whole {
            assert!(
                cfg.contains("ice_port_udp = \"8443\"") && cfg.contains("REDACTED"),
                "the file as it is, redacted:\n{cfg}"
            );
        } else {
            assert!(cfg.contains("left out"), "{cfg}");
        }
        assert!(read("config-error.txt").contains("does not parse"));
        assert!(read("system.txt").contains("probe-server"));
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            for secret in ["kept-out-of-the-bundle-42", "kept-out-too-43"] {
                assert!(!text.contains(secret), "{secret} in {}", f.display());
            }
        }
    }
}
