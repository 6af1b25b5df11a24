//! `probe-server live` (issue 12): RTCD's own port tested while an RTCD-like service
//! (`media-standin`, a binary of this crate) holds UDP and TCP 8443 with SO_REUSEPORT and serves
//! its own traffic. Real binaries, namespaces and nftables; the live server never binds 8443.

use std::collections::BTreeMap;
use std::time::Duration;

use probe_tests::netns::Netns;
use probe_tests::probe::probe_env;
use probe_tests::{
    binomial_tolerance_pct, run_client, ClientRun, NatConfig, Proc, TempDir, Topology,
};
use serde_json::Value;

const STANDIN: &str = env!("CARGO_BIN_EXE_media-standin");
const LIFETIME: Duration = Duration::from_secs(150);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The RTCD stand-in: UDP + TCP 8443 with SO_REUSEPORT, echoing its own media.
fn standin(ns: &Netns) -> Proc {
    standin_from(ns, STANDIN)
}

/// The stand-in started from `bin` (a copy named `rtcd` is found as RTCD by its name).
fn standin_from(ns: &Netns, bin: &str) -> Proc {
    probe_tests::binaries();
    let p = ns.spawn(&[bin, "serve"], LIFETIME);
    if let Err(e) = p
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("media-standin ready")
        })
    {
        panic!("media-standin not ready ({e:?}): {}", p.stderr());
    }
    p
}

/// `probe-server live --json EXTRA…` in `ns`, once its start line is out.
fn live_server(ns: &Netns, extra: &[&str]) -> Proc {
    let bins = probe_tests::binaries();
    let mut argv = vec![bins.server.to_str().expect("utf-8 path"), "live", "--json"];
    argv.extend_from_slice(extra);
    let mut cmd = ns.argv_command(&argv);
    probe_env(&mut cmd, &BTreeMap::new());
    let p = Proc::spawn(cmd, format!("[{}] probe-server live", ns.name()), LIFETIME)
        .expect("spawn probe-server live");
    if let Err(e) = p
        .stdout_capture()
        .wait_for_line(Duration::from_secs(20), |l| {
            l.contains("\"event\":\"start\"")
        })
    {
        panic!("probe-server live did not start ({e:?}): {}", p.stderr());
    }
    p
}

/// RTCD's configuration file with `rtc` lines.
fn rtcd_config(dir: &TempDir, rtc: &str) -> String {
    let path = dir.path().join("rtcd.toml");
    std::fs::write(
        &path,
        format!("[rtc]\nice_port_udp = 8443\nice_port_tcp = 8443\n{rtc}\n"),
    )
    .expect("write rtcd.toml");
    path.display().to_string()
}

fn client(ns: &Netns, target: &str, extra: &[&str]) -> ClientRun {
    let mut args = vec![target, "--json", "--no-upload"];
    if !extra.contains(&"--duration") {
        args.extend_from_slice(&["--duration", "3"]);
    }
    args.extend_from_slice(extra);
    run_client(ns, &args, CLIENT_TIMEOUT)
}

fn findings(j: &Value) -> Vec<String> {
    j["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The live server's JSON events of one kind.
fn events(server: &Proc, kind: &str) -> Vec<Value> {
    server
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

/// Waits (bounded) until the live server has printed `n` events of `kind`.
fn wait_events(server: &Proc, kind: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let e = events(server, kind);
        if e.len() >= n || std::time::Instant::now() > deadline {
            return e;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stand-in's last counters line.
fn counters(standin: &Proc) -> Value {
    standin
        .stdout()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null)
}

/// The ICE pair toward `remote` (RTCD also advertises loopback, which comes first).
fn pair(j: &Value, remote: &str) -> Value {
    j["ice"]["pairs"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["remote"] == remote).cloned())
        .unwrap_or_else(|| panic!("no pair {remote} in {}", j["ice"]))
}

fn report(run: &ClientRun) -> Value {
    run.json
        .clone()
        .unwrap_or_else(|| panic!("no JSON report\n{}", run.describe()))
}

#[test]
fn clean_path_tests_rtcds_own_port() {
    let t = Topology::routed();
    let dir = TempDir::new("live");
    let cfg = rtcd_config(&dir, "");
    let rtcd = standin(&t.server);
    let server = live_server(&t.server, &["--rtcd-config", &cfg]);
    let target = t.server_public_ip.to_string();
    let run = client(&t.client, &target, &[]);
    let j = report(&run);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(findings(&j).is_empty(), "{}", run.describe());
    assert_eq!(j["udp"]["reachable"], true);
    assert_eq!(j["udp"]["echo"]["loss_up_pct"], 0.0, "{}", run.describe());
    assert_eq!(j["udp"]["echo"]["loss_down_pct"], 0.0, "{}", run.describe());
    assert!(j["udp"]["echo"]["sent"].as_u64().unwrap() >= 100);
    assert!(j["udp"]["echo"]["rtt_ms"]["p50"].as_f64().is_some());
    assert_eq!(pair(&j, "203.0.113.2:8443")["ok"], true);
    assert_eq!(j["ice"]["ok"], true);
    assert_eq!(j["live"], true, "the JSON report says it was live");
    // The text form says it was live.
    let text = probe_tests::try_run_client(
        &t.client,
        &[target.as_str(), "--no-upload", "--duration", "1"],
        CLIENT_TIMEOUT,
    );
    assert!(
        text.stdout
            .contains("live: RTCD was running; tested its own port"),
        "{}",
        text.describe()
    );
    // The operator's output: the client's UDP and TCP results as they arrive.
    let udp = wait_events(&server, "udp", 1);
    assert_eq!(
        udp[0]["from"].as_str().unwrap().split(':').next(),
        Some("198.51.100.2")
    );
    assert_eq!(udp[0]["arrived_at"], "203.0.113.2");
    assert!(udp[0]["received"].as_u64().unwrap() >= 100);
    let tcp = wait_events(&server, "tcp", 1);
    assert_eq!(
        tcp[0]["from"].as_str().unwrap().split(':').next(),
        Some("198.51.100.2")
    );
    // RTCD kept receiving: its copy of every live datagram, and the TCP connections.
    let c = counters(&rtcd);
    assert!(c["udp_foreign"].as_u64().unwrap() >= 100, "{c}");
    assert!(c["tcp_accepted"].as_u64().unwrap() >= 1, "{c}");
}

#[test]
fn udp_dropped_by_the_host_firewall() {
    let t = Topology::routed();
    t.server_input(&["udp dport 8443 drop"]);
    let _rtcd = standin(&t.server);
    let server = live_server(&t.server, &[]);
    let run = client(&t.client, &t.server_public_ip.to_string(), &[]);
    let j = report(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    // From the client, UDP blocked in front of a live server and no probe server at all look
    // the same (RTCD answers neither): it must not claim udp_blocked, only that nothing
    // answered, and name the nonce to look for in the server's output.
    assert!(
        findings(&j).contains(&"server_unreachable".to_string())
            && !findings(&j).contains(&"udp_blocked".to_string()),
        "{}",
        run.describe()
    );
    assert_eq!(j["udp"]["reachable"], false);
    assert!(j["tcp"]["connect_ms"].is_number(), "{}", run.describe());
    assert!(run.stderr.contains("look for `tcp "), "{}", run.describe());
    // The tap sees nothing of UDP (the firewall ran first), but the TCP probe, whose nonce the
    // client tells the user to look for; the server gives the verdict: no UDP from that client.
    let tcp = wait_events(&server, "tcp", 1);
    assert_eq!(tcp.len(), 1, "{}", server.stdout());
    assert_eq!(tcp[0]["udp_seen"], false, "{}", server.stdout());
    assert!(
        events(&server, "hello").is_empty() && events(&server, "udp").is_empty(),
        "{}",
        server.stdout()
    );
    let text = probe_tests::try_run_client(
        &t.client,
        &[
            t.server_public_ip.to_string().as_str(),
            "--no-upload",
            "--duration",
            "1",
        ],
        CLIENT_TIMEOUT,
    );
    let nonce_line = text
        .stdout
        .lines()
        .find(|l| l.contains("look for `tcp "))
        .unwrap_or_else(|| panic!("{}", text.describe()));
    let nonce = nonce_line
        .split("`tcp ")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap()
        .to_string();
    let tcp = wait_events(&server, "tcp", 2);
    assert!(
        tcp.iter().any(|e| e["nonce"] == nonce.as_str()),
        "nonce {nonce} not in {}",
        server.stdout()
    );
}

#[test]
fn udp_dropped_by_a_router_firewall() {
    let t = Topology::routed();
    t.router_forward(&["udp dport 8443 drop"]);
    let _rtcd = standin(&t.server);
    let server = live_server(&t.server, &[]);
    let run = client(&t.client, &t.server_public_ip.to_string(), &[]);
    let j = report(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        findings(&j).contains(&"server_unreachable".to_string())
            && !findings(&j).contains(&"udp_blocked".to_string()),
        "{}",
        run.describe()
    );
    assert!(events(&server, "hello").is_empty(), "{}", server.stdout());
    let tcp = wait_events(&server, "tcp", 1);
    assert_eq!(tcp[0]["udp_seen"], false, "{}", server.stdout());
}

#[test]
fn ten_percent_loss_each_way() {
    let t = Topology::routed();
    t.router_forward(&[
        "meta l4proto udp ip daddr 203.0.113.2 numgen random mod 100 < 10 drop",
        "meta l4proto udp ip saddr 203.0.113.2 numgen random mod 100 < 10 drop",
    ]);
    let _rtcd = standin(&t.server);
    let _server = live_server(&t.server, &[]);
    let run = client(
        &t.client,
        &t.server_public_ip.to_string(),
        &["--duration", "8"],
    );
    let j = report(&run);
    assert!(
        findings(&j).contains(&"packet_loss".to_string()),
        "{}",
        run.describe()
    );
    let e = &j["udp"]["echo"];
    let sent = e["sent"].as_u64().unwrap();
    assert!(sent >= 300, "{}", run.describe());
    let up = e["loss_up_pct"].as_f64().unwrap();
    let tol = binomial_tolerance_pct(sent, 10.0, 3.0);
    assert!(
        (up - 10.0).abs() <= tol,
        "loss up {up} % not 10 ± {tol}\n{}",
        run.describe()
    );
    // Downstream: of the replies sent (~90 % of sent), 10 % lost.
    let down = e["loss_down_pct"].as_f64().unwrap();
    let tol = binomial_tolerance_pct(sent * 9 / 10, 10.0, 3.0);
    assert!(
        (down - 10.0).abs() <= tol,
        "loss down {down} % not 10 ± {tol}\n{}",
        run.describe()
    );
}

#[test]
fn wrong_ice_host_override_does_not_arrive() {
    let t = Topology::nat(NatConfig::default());
    let dir = TempDir::new("live");
    let cfg = rtcd_config(&dir, "ice_host_override = \"203.0.113.99\"");
    let _rtcd = standin(&t.server);
    let _server = live_server(&t.server, &["--rtcd-config", &cfg]);
    let run = client(
        &t.client,
        &t.server_public_ip.to_string(),
        &["--duration", "2"],
    );
    let j = report(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let pair = j["ice"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["remote"] == "203.0.113.99:8443")
        .cloned();
    assert_eq!(
        pair.expect("advertised address tested")["ok"],
        false,
        "{}",
        run.describe()
    );
    assert!(
        findings(&j).contains(&"ice_host_override_wrong".to_string()),
        "{}",
        run.describe()
    );
    // The address the user named did answer, through the NAT, arriving at the private address.
    assert_eq!(j["udp"]["reachable"], true);
}

#[test]
fn a_restarted_rtcd_is_followed_an_edited_file_is_not() {
    let t = Topology::routed();
    let dir = TempDir::new("live");
    let cfg = rtcd_config(&dir, "ice_host_override = \"203.0.113.99\"");
    // RTCD's process is found by its name on the port: the stand-in runs as `rtcd`.
    let bin = dir.path().join("rtcd");
    std::fs::copy(STANDIN, &bin).expect("copy the stand-in");
    let bin = bin.display().to_string();
    let mut rtcd = standin_from(&t.server, &bin);
    // The file is saved again after RTCD started (past the start time's 2-s rounding): live
    // mode says RTCD runs what it read before, on stdout too for --json readers.
    std::thread::sleep(Duration::from_secs(3));
    rtcd_config(&dir, "ice_host_override = \"203.0.113.99\"");
    let server = live_server(&t.server, &["--rtcd-config", &cfg]);
    let start = events(&server, "start");
    assert_eq!(start[0]["rtcd_holds_port"], true, "{}", server.stdout());
    let stale = wait_events(&server, "config_changed_since_start", 1);
    assert!(
        stale.len() == 1
            && stale[0]["note"]
                .as_str()
                .is_some_and(|n| n.contains("restart")),
        "{}\n{}",
        server.stdout(),
        server.stderr()
    );
    let target = t.server_public_ip.to_string();
    let run = client(&t.client, &target, &["--duration", "2"]);
    let j = report(&run);
    assert!(
        findings(&j).contains(&"ice_host_override_wrong".to_string()),
        "{}",
        run.describe()
    );
    // The admin fixes the file. RTCD reads it only at start, so nothing changes yet.
    rtcd_config(&dir, "ice_host_override = \"203.0.113.2\"");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        events(&server, "advertise").is_empty(),
        "an edited file is not what RTCD advertises: {}",
        server.stdout()
    );
    // RTCD restarts: said when it stops, and what it advertises now is read.
    rtcd.kill();
    let stopped = wait_events(&server, "rtcd_stopped", 1);
    assert_eq!(stopped.len(), 1, "{}", server.stdout());
    // While it is down, the port is closed for clients too: not "RTCD was running".
    let run = client(&t.client, &target, &["--duration", "2"]);
    let j = report(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(j.get("live").is_none(), "{}", run.describe());
    assert_eq!(j["udp"]["refused"], true, "{}", run.describe());
    assert!(
        findings(&j).contains(&"server_unreachable".to_string()),
        "{}",
        run.describe()
    );
    let _rtcd = standin_from(&t.server, &bin);
    assert_eq!(
        wait_events(&server, "rtcd_started", 1).len(),
        1,
        "{}",
        server.stdout()
    );
    let adv = wait_events(&server, "advertise", 1);
    assert_eq!(adv.len(), 1, "{}\n{}", server.stdout(), server.stderr());
    assert!(adv[0]["rtcd_pid"].is_u64(), "{}", adv[0]);
    assert!(
        adv[0]["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "stamped: {}",
        adv[0]
    );
    assert!(
        adv[0]["advertised"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c == "203.0.113.2:8443/udp")),
        "{}",
        adv[0]
    );
    let run = client(&t.client, &target, &["--duration", "2"]);
    let j = report(&run);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        !findings(&j)
            .iter()
            .any(|f| f.starts_with("ice_host_override")),
        "{}",
        run.describe()
    );
}

#[test]
fn a_hostname_override_is_resolved_again_from_what_rtcd_started_with() {
    let t = Topology::routed();
    let dir = TempDir::new("live");
    // RTCD resolves the name on its own host, on every join.
    t.server.write_hosts(&["203.0.113.99 calls.example.test"]);
    let cfg = rtcd_config(&dir, "ice_host_override = \"calls.example.test\"");
    let bin = dir.path().join("rtcd");
    std::fs::copy(STANDIN, &bin).expect("copy the stand-in");
    let _rtcd = standin_from(&t.server, &bin.display().to_string());
    let server = live_server(&t.server, &["--rtcd-config", &cfg]);
    // The admin edits the file without restarting RTCD, and the name moves in DNS: the probe
    // follows the name RTCD started with, not the file's new one.
    rtcd_config(&dir, "ice_host_override = \"other.example.test\"");
    t.server.write_hosts(&[
        "203.0.113.2 calls.example.test",
        "203.0.113.77 other.example.test",
    ]);
    // Re-resolved every 30 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let adv = loop {
        let adv = events(&server, "advertise");
        if !adv.is_empty() || std::time::Instant::now() > deadline {
            break adv;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(adv.len(), 1, "{}\n{}", server.stdout(), server.stderr());
    assert!(adv[0]["rtcd_pid"].is_null(), "not a restart: {}", adv[0]);
    let list = adv[0]["advertised"].as_array().cloned().unwrap_or_default();
    assert!(
        list.iter().any(|c| c == "203.0.113.2:8443/udp"),
        "{}",
        adv[0]
    );
    assert!(
        !list
            .iter()
            .any(|c| c.as_str().unwrap_or_default().starts_with("203.0.113.77")),
        "{}",
        adv[0]
    );
}

#[test]
fn nat_with_the_right_override_arrives_and_replies_pass() {
    let t = Topology::nat(NatConfig::default());
    let dir = TempDir::new("live");
    let cfg = rtcd_config(&dir, "ice_host_override = \"203.0.113.10\"");
    let _rtcd = standin(&t.server);
    let server = live_server(&t.server, &["--rtcd-config", &cfg]);
    let run = client(&t.client, "203.0.113.10", &[]);
    let j = report(&run);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(
        pair(&j, "203.0.113.10:8443")["ok"],
        true,
        "{}",
        run.describe()
    );
    assert_eq!(
        j["udp"]["echo"]["loss_down_pct"],
        0.0,
        "replies passed the NAT: {}",
        run.describe()
    );
    let udp = wait_events(&server, "udp", 1);
    assert_eq!(udp[0]["arrived_at"], "172.31.1.2", "{}", server.stdout());
}

#[test]
fn rtcd_is_never_disturbed() {
    let t = Topology::routed();
    let rtcd = standin(&t.server);
    let server = live_server(&t.server, &[]);
    // The live server holds no socket on 8443: only the stand-in does.
    let ss = t.server.exec(&["ss", "-Hanup", "sport = :8443"]).stdout;
    let sst = t.server.exec(&["ss", "-Hantp", "sport = :8443"]).stdout;
    assert!(
        !ss.contains("probe-server") && !sst.contains("probe-server"),
        "{ss}{sst}"
    );
    assert!(
        ss.contains("media-standin") && sst.contains("media-standin"),
        "{ss}{sst}"
    );
    let dest = format!("{}:8443", t.server_public_ip);
    let baseline = t
        .client
        .exec(&[STANDIN, "peer", &dest, "--pps", "2000", "--secs", "3"])
        .stdout;
    let baseline: Value = serde_json::from_str(baseline.trim()).expect("peer JSON");
    // Its own 2,000 pps while three live clients probe.
    let peer = t.client.spawn(
        &[STANDIN, "peer", &dest, "--pps", "2000", "--secs", "8"],
        LIFETIME,
    );
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let ns_target = t.server_public_ip.to_string();
            let client_ns = &t.client;
            let bins = probe_tests::binaries();
            client_ns.spawn(
                &[
                    bins.client.to_str().unwrap(),
                    ns_target.as_str(),
                    "--json",
                    "--no-upload",
                    "--duration",
                    "4",
                ],
                LIFETIME,
            )
        })
        .collect();
    for mut c in clients {
        let st = c.wait_timeout(CLIENT_TIMEOUT).expect("client ends");
        let j: Value = probe_tests::probe::parse_report(&c.stdout()).expect("client report");
        assert!(
            st.success() && findings(&j).is_empty(),
            "{}\n{}",
            c.stdout(),
            c.stderr()
        );
        assert_eq!(j["udp"]["echo"]["loss_up_pct"], 0.0);
    }
    let mut peer = peer;
    peer.wait_timeout(Duration::from_secs(20))
        .expect("peer ends");
    let during: Value = serde_json::from_str(peer.stdout().trim()).expect("peer JSON");
    assert_eq!(
        during["loss_pct"], 0.0,
        "RTCD's own traffic lost packets: {during}"
    );
    assert_eq!(baseline["loss_pct"], 0.0, "{baseline}");
    let (b, d) = (
        baseline["rtt_p50_ms"].as_f64().unwrap(),
        during["rtt_p50_ms"].as_f64().unwrap(),
    );
    assert!(
        d <= b * 3.0 + 2.0,
        "RTCD's median RTT rose from {b} ms to {d} ms"
    );
    // Every live connection reached RTCD's accept queue and was served by RTCD itself.
    let c = counters(&rtcd);
    assert_eq!(
        c["udp_echoed"].as_u64(),
        Some(baseline["sent"].as_u64().unwrap() + during["sent"].as_u64().unwrap()),
        "{c}"
    );
    assert_eq!(c["tcp_accepted"].as_u64(), Some(3), "{c}");
    assert_eq!(
        wait_events(&server, "tcp", 3).len(),
        3,
        "{}",
        server.stdout()
    );
}

/// The router redirects TCP 8443 to a proxy of its own (nftables `redirect`), relaying to
/// RTCD (`relay`) or answering itself.
fn proxied(relay: bool) -> (Topology, Proc, Proc, Proc) {
    let t = Topology::routed();
    t.router.nft(
        "add table ip tp\n\
         add chain ip tp pre { type nat hook prerouting priority -100; policy accept; }\n\
         add rule ip tp pre iifname \"rt-client\" tcp dport 8443 redirect to :9443\n",
    );
    let mut argv = vec![STANDIN, "tproxy", "--listen", "0.0.0.0:9443"];
    if relay {
        argv.extend_from_slice(&["--to", "203.0.113.2:8443"]);
    }
    let proxy = t.router.spawn(&argv, LIFETIME);
    proxy
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| l.contains("tproxy ready"))
        .expect("proxy ready");
    let rtcd = standin(&t.server);
    let server = live_server(&t.server, &[]);
    (t, proxy, rtcd, server)
}

fn severity_of(j: &Value, id: &str) -> Option<String> {
    j["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["severity"].as_str().map(String::from))
}

#[test]
fn transparent_tcp_proxy_is_tcp_intercepted() {
    // A proxy that answers for RTCD: the connect succeeds, the segment never reaches its host.
    let (t, _proxy, rtcd, server) = proxied(false);
    let run = client(&t.client, &t.server_public_ip.to_string(), &[]);
    let j = report(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert_eq!(
        severity_of(&j, "tcp_intercepted").as_deref(),
        Some("error"),
        "{}",
        run.describe()
    );
    assert_eq!(j["tcp"]["reachable"], true, "the connect itself succeeded");
    assert!(events(&server, "tcp").is_empty(), "{}", server.stdout());
    assert_eq!(counters(&rtcd)["tcp_accepted"].as_u64(), Some(0));
    drop(t);
    // A proxy that relays: the segment arrives, from the proxy's address.
    let (t, _proxy, _rtcd, server) = proxied(true);
    let run = client(&t.client, &t.server_public_ip.to_string(), &[]);
    let j = report(&run);
    assert_eq!(
        severity_of(&j, "tcp_intercepted").as_deref(),
        Some("warning"),
        "{}",
        run.describe()
    );
    let tcp = wait_events(&server, "tcp", 1);
    assert_eq!(
        tcp[0]["from"].as_str().unwrap().split(':').next(),
        Some("203.0.113.1"),
        "{}",
        server.stdout()
    );
}

#[test]
fn rtcd_pid_enters_rtcds_namespace() {
    let t = Topology::routed();
    let rtcd = standin(&t.server);
    // The live server starts in another namespace (the host's, as beside a container) and
    // enters the stand-in's with --rtcd-pid.
    let pid = rtcd.pid().to_string();
    let _server = live_server(&t.router, &["--rtcd-pid", &pid]);
    let run = client(&t.client, &t.server_public_ip.to_string(), &[]);
    let j = report(&run);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    // Advertised from RTCD's namespace (its address), and answered there.
    assert_eq!(
        pair(&j, "203.0.113.2:8443")["ok"],
        true,
        "{}",
        run.describe()
    );
    // A bad pid is one sentence and exit 2.
    let bins = probe_tests::binaries();
    let done = t.router.try_exec(
        &[
            bins.server.to_str().unwrap(),
            "live",
            "--rtcd-pid",
            "999999999",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(done.stderr.contains("pid 999999999"), "{}", done.describe());
}

#[test]
fn ipv6_tap_and_replies() {
    // Two namespaces on one link, IPv6 only on it (2001:db8::/64): the IPv6 taps take the
    // local address from IPV6_PKTINFO and reply with a hand-made UDP checksum.
    probe_tests::binaries();
    let (c, s) = (Netns::new("live6c"), Netns::new("live6s"));
    for ns in [&c, &s] {
        ns.enable_ipv6();
    }
    probe_tests::veth(&c, "eth0", &s, "eth0");
    c.ip(&["addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad"]);
    s.ip(&["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"]);
    let dir = TempDir::new("live");
    let cfg = rtcd_config(&dir, "enable_ipv6 = true");
    let rtcd = standin(&s);
    let server = live_server(&s, &["--rtcd-config", &cfg]);
    let run = client(&c, "[2001:db8::1]", &["--duration", "1"]);
    let j = report(&run);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(
        pair(&j, "[2001:db8::1]:8443")["ok"],
        true,
        "{}",
        run.describe()
    );
    assert_eq!(j["udp"]["echo"]["loss_down_pct"], 0.0, "{}", run.describe());
    let udp = wait_events(&server, "udp", 1);
    assert_eq!(udp[0]["arrived_at"], "2001:db8::1", "{}", server.stdout());
    let tcp = wait_events(&server, "tcp", 1);
    assert!(
        tcp[0]["from"]
            .as_str()
            .unwrap()
            .starts_with("[2001:db8::2]"),
        "{}",
        server.stdout()
    );
    assert!(
        counters(&rtcd)["udp_foreign"].as_u64().unwrap() > 0,
        "RTCD got its copies over IPv6 too"
    );
}

#[test]
fn token_is_required_when_set() {
    let t = Topology::routed();
    let _rtcd = standin(&t.server);
    let server = live_server(&t.server, &["--token", "s3cret-live"]);
    let target = t.server_public_ip.to_string();
    let run = client(
        &t.client,
        &target,
        &["--token", "s3cret-live", "--duration", "1"],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(report(&run)["udp"]["reachable"], true);
    // Without the token nothing is answered: the client finds no probe server over UDP.
    let run = client(&t.client, &target, &["--duration", "1"]);
    let j = report(&run);
    assert_eq!(j["udp"]["reachable"], false, "{}", run.describe());
    assert_eq!(
        events(&server, "hello").len(),
        1,
        "only the client with the token was greeted"
    );
}

/// Issue 16 item 4: live mode beside the Calls plugin's integrated RTC server (no RTCD), behind
/// 1:1 NAT with no ICE Host Override: what the plugin advertises (its private address) does not
/// arrive, and the fix names the System Console setting, not RTCD's TOML key.
#[test]
fn calls_plugin_without_override_names_the_system_console() {
    let t = Topology::nat(NatConfig::default());
    let dir = TempDir::new("live");
    let path = dir.path().join("config.json");
    let plugin = serde_json::json!({
        "icehostoverride": "", "iceserversconfigs": "",
        "udpserverport": 8443, "tcpserverport": 8443,
    });
    let config = serde_json::json!({
        "PluginSettings": {"Enable": true, "Plugins": {"com.mattermost.calls": plugin}},
    });
    std::fs::write(&path, config.to_string()).expect("write config.json");
    let _plugin = standin(&t.server);
    let server = live_server(
        &t.server,
        &["--calls-config", path.to_str().expect("utf-8 path")],
    );
    let run = client(
        &t.client,
        &t.server_public_ip.to_string(),
        &["--duration", "2"],
    );
    let j = report(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert_eq!(j["live"], true, "{}", run.describe());
    assert_eq!(
        pair(&j, "172.31.1.2:8443")["ok"],
        false,
        "the private address does not arrive: {}",
        run.describe()
    );
    let missing = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "ice_host_override_missing")
        .unwrap_or_else(|| panic!("no ice_host_override_missing\n{}", run.describe()));
    let fix = missing["fix"].as_str().unwrap_or("");
    assert!(
        fix.contains("System Console") && !fix.contains("rtc.ice_host_override"),
        "the fix names the plugin's setting: {fix}"
    );
    assert!(
        j["ice"]["deployment"]["calls_plugin"].is_object(),
        "{}",
        run.describe()
    );
    assert!(
        server.stderr().contains("Calls plugin"),
        "the start log speaks of the plugin: {}",
        server.stderr()
    );
}
