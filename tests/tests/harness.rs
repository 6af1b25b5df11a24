//! Self-tests of the harness: topologies, nftables plumbing, NAT, hosts
//! files, cleanup and process bounds — with real sockets (the
//! `probe-netcheck` helper of this crate), without the probe binaries.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use probe_tests::netns::{self, Netns};
use probe_tests::proc::Finished;
use probe_tests::topology::{NatConfig, PortMap, Proto, Role};
use probe_tests::{binomial_tolerance_pct, Chain, Proc, Scenario, Topology};

const NETCHECK: &str = env!("CARGO_BIN_EXE_probe-netcheck");
const BOUND: Duration = Duration::from_secs(20);

/// Starts a UDP echo listener on `0.0.0.0:port` in `ns`; it exits after
/// `idle_ms` without traffic.
fn udp_echo(ns: &Netns, port: u16, idle_ms: u64) -> Proc {
    udp_echo_on(ns, &format!("0.0.0.0:{port}"), idle_ms)
}

fn udp_echo_on(ns: &Netns, bind: &str, idle_ms: u64) -> Proc {
    let p = ns.spawn(&[NETCHECK, "udp-echo", bind, &idle_ms.to_string()], BOUND);
    wait_ready(p)
}

/// Starts a TCP listener on `0.0.0.0:port` in `ns` that writes back the peer
/// address it sees.
fn tcp_echo(ns: &Netns, port: u16, idle_ms: u64) -> Proc {
    let p = ns.spawn(
        &[
            NETCHECK,
            "tcp-echo",
            &format!("0.0.0.0:{port}"),
            &idle_ms.to_string(),
        ],
        BOUND,
    );
    wait_ready(p)
}

fn wait_ready(p: Proc) -> Proc {
    if let Err(e) = p
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| l.starts_with("ready "))
    {
        panic!("{} not ready ({e:?}): {}", p.label(), p.stderr());
    }
    p
}

fn udp_send(ns: &Netns, dest: &str, count: u32, gap_us: u32, wait_ms: u32) -> Finished {
    ns.try_exec(
        &[
            NETCHECK,
            "udp-send",
            dest,
            &count.to_string(),
            &gap_us.to_string(),
            &wait_ms.to_string(),
        ],
        BOUND,
    )
}

fn tcp_connect(ns: &Netns, dest: &str, timeout_ms: u32) -> Finished {
    ns.try_exec(
        &[NETCHECK, "tcp-connect", dest, &timeout_ms.to_string()],
        BOUND,
    )
}

/// Waits for a listener to exit and returns the N of its `done N` line
/// (datagrams received) with its output.
fn received(p: Proc) -> (u64, Finished) {
    let done = p.finish(Duration::from_secs(15));
    let n = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("done "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no done line: {}", done.describe()));
    (n, done)
}

fn assert_reply_seen(send: &Finished, seen_prefix: &str) {
    assert!(send.success(), "no reply: {}", send.describe());
    assert!(
        send.stdout
            .lines()
            .any(|l| l.starts_with("reply ") && l.contains(&format!("seen {seen_prefix}"))),
        "reply does not show source {seen_prefix}: {}",
        send.describe()
    );
}

#[test]
fn routed_udp_and_tcp_reach_the_server() {
    let t = Topology::routed();
    let echo = udp_echo(&t.server, 9000, 1500);
    let send = udp_send(&t.client, "203.0.113.2:9000", 3, 1000, 500);
    // The reply comes from the server's address; no NAT on the path.
    assert_reply_seen(&send, "198.51.100.2:");
    assert!(
        send.stdout.contains("reply 203.0.113.2:9000 "),
        "{}",
        send.describe()
    );
    let (n, _) = received(echo);
    assert_eq!(n, 3);

    let tcp = tcp_echo(&t.server, 9000, 1500);
    let c = tcp_connect(&t.client, "203.0.113.2:9000", 2000);
    assert!(c.success(), "{}", c.describe());
    assert!(c.stdout.contains("seen 198.51.100.2:"), "{}", c.describe());
    drop(tcp);
}

#[test]
fn router_forward_drop_rule_blocks_udp_only() {
    let t = Topology::routed();
    t.router_forward(&["ip daddr 203.0.113.2 udp dport 9000 counter drop"]);
    let echo = udp_echo(&t.server, 9000, 1500);
    let send = udp_send(&t.client, "203.0.113.2:9000", 3, 1000, 500);
    assert!(
        !send.success(),
        "UDP got through a drop rule: {}",
        send.describe()
    );
    assert!(
        send.stdout.contains("sent 3 replies 0"),
        "{}",
        send.describe()
    );
    let (n, _) = received(echo);
    assert_eq!(n, 0, "server received datagrams through a drop rule");
    // The rule matched (counter), so the drop was the router's doing.
    let rules = t.router.ruleset();
    assert!(rules.contains("counter packets 3 "), "{rules}");

    // TCP on the same port is unaffected.
    let tcp = tcp_echo(&t.server, 9000, 1500);
    let c = tcp_connect(&t.client, "203.0.113.2:9000", 2000);
    assert!(c.success(), "{}", c.describe());
    drop(tcp);
}

#[test]
fn input_rules_in_client_and_server_namespaces() {
    let t = Topology::routed();
    // Server input drop: nothing arrives.
    t.server_input(&["udp dport 9000 drop"]);
    let echo = udp_echo(&t.server, 9000, 1200);
    let send = udp_send(&t.client, "203.0.113.2:9000", 3, 1000, 400);
    assert!(!send.success(), "{}", send.describe());
    assert_eq!(received(echo).0, 0);

    // Client input drop of the replies: the server receives, the client
    // hears nothing back.
    t.client_input(&["udp sport 9001 drop"]);
    let echo = udp_echo(&t.server, 9001, 1200);
    let send = udp_send(&t.client, "203.0.113.2:9001", 3, 1000, 400);
    assert!(!send.success(), "{}", send.describe());
    assert_eq!(received(echo).0, 3);

    // Output chain in the client: nothing leaves.
    t.add_rules(Role::Client, Chain::Output, &["udp dport 9002 drop"]);
    let echo = udp_echo(&t.server, 9002, 1200);
    let _ = udp_send(&t.client, "203.0.113.2:9002", 3, 1000, 400);
    assert_eq!(received(echo).0, 0);
}

#[test]
fn random_loss_rule_is_binomial() {
    let t = Topology::routed();
    t.router_forward(&["meta l4proto udp ip daddr 203.0.113.2 numgen random mod 100 < 10 drop"]);
    let n = 1000u64;
    let echo = udp_echo(&t.server, 9000, 1500);
    let send = udp_send(&t.client, "203.0.113.2:9000", n as u32, 300, 500);
    assert!(send.success(), "{}", send.describe());
    let (got, _) = received(echo);
    let loss_pct = (n - got) as f64 / n as f64 * 100.0;
    let tol = binomial_tolerance_pct(n, 10.0, 4.5);
    assert!(
        (loss_pct - 10.0).abs() <= tol,
        "measured {loss_pct} % loss, expected 10 % ± {tol} pp (n={n})"
    );
}

#[test]
fn nat_public_address_reaches_private_server() {
    let t = Topology::nat(NatConfig::default());
    assert_eq!(t.server_public_ip.to_string(), "203.0.113.10");
    assert_eq!(t.server_ip.to_string(), "172.31.1.2");
    let echo = udp_echo(&t.server, 9000, 1500);
    let send = udp_send(&t.client, "203.0.113.10:9000", 3, 1000, 500);
    // Reply un-DNATed (comes from the public address); the server sees the
    // client's real address (no client-side NAT).
    assert_reply_seen(&send, "198.51.100.2:");
    assert!(
        send.stdout.contains("reply 203.0.113.10:9000 "),
        "{}",
        send.describe()
    );
    assert_eq!(received(echo).0, 3);

    let tcp = tcp_echo(&t.server, 9443, 1500);
    t.server
        .wait_listening("tcp:9443", Duration::from_secs(5))
        .unwrap();
    let c = tcp_connect(&t.client, "203.0.113.10:9443", 2000);
    assert!(c.success(), "{}", c.describe());
    assert!(c.stdout.contains("seen 198.51.100.2:"), "{}", c.describe());
    drop(tcp);
}

#[test]
fn nat_private_address_is_unreachable_from_client() {
    let t = Topology::nat(NatConfig::default());
    let echo = udp_echo(&t.server, 9000, 1500);
    let send = udp_send(&t.client, "172.31.1.2:9000", 3, 1000, 500);
    assert!(
        !send.success(),
        "client reached the private address: {}",
        send.describe()
    );
    assert_eq!(received(echo).0, 0);

    let tcp = tcp_echo(&t.server, 9000, 2500);
    let c = tcp_connect(&t.client, "172.31.1.2:9000", 1000);
    assert!(
        !c.success(),
        "client connected to the private address: {}",
        c.describe()
    );
    drop(tcp);
}

#[test]
fn nat_server_outbound_is_snatted_to_public_ip() {
    let t = Topology::nat(NatConfig::default());
    // Server → client: the client sees the public address.
    let echo = udp_echo(&t.client, 9000, 1500);
    let send = udp_send(&t.server, "198.51.100.2:9000", 2, 1000, 500);
    assert_reply_seen(&send, "203.0.113.10:");
    drop(received(echo));

    // Server → a service in the router ns on 203.0.113.1 (where a STUN
    // server will run): it too sees the public address.  The service must
    // bind 203.0.113.1 itself (see nft::nat_script).
    let echo = udp_echo_on(&t.router, "203.0.113.1:3478", 1500);
    t.router
        .wait_listening("udp:3478", Duration::from_secs(5))
        .unwrap();
    let send = udp_send(&t.server, "203.0.113.1:3478", 2, 1000, 500);
    assert_reply_seen(&send, "203.0.113.10:");
    drop(received(echo));

    // Client → the router service: seen as the client itself.
    let echo = udp_echo(&t.router, 3479, 1500);
    let send = udp_send(&t.client, "203.0.113.1:3479", 2, 1000, 500);
    assert_reply_seen(&send, "198.51.100.2:");
    drop(received(echo));
}

#[test]
fn nat_port_map_443_to_8443() {
    let t = Topology::nat(NatConfig::ports(vec![PortMap {
        proto: Proto::Both,
        public: 443,
        private: 8443,
    }]));
    let echo = udp_echo(&t.server, 8443, 2000);
    let send = udp_send(&t.client, "203.0.113.10:443", 2, 1000, 500);
    assert_reply_seen(&send, "198.51.100.2:");
    assert!(
        send.stdout.contains("reply 203.0.113.10:443 "),
        "{}",
        send.describe()
    );
    // Unmapped port: not forwarded.
    let send = udp_send(&t.client, "203.0.113.10:8443", 2, 1000, 500);
    assert!(!send.success(), "{}", send.describe());
    assert_eq!(received(echo).0, 2);

    let tcp = tcp_echo(&t.server, 8443, 2000);
    let c = tcp_connect(&t.client, "203.0.113.10:443", 2000);
    assert!(c.success(), "{}", c.describe());
    let c = tcp_connect(&t.client, "203.0.113.10:8443", 1000);
    assert!(
        !c.success(),
        "unmapped TCP port reached the server: {}",
        c.describe()
    );
    drop(tcp);
}

#[test]
fn hosts_files_are_per_namespace() {
    let host_hosts = std::fs::read_to_string("/etc/hosts").ok();
    let t = Topology::routed();
    t.client.write_hosts(&["203.0.113.10 calls.example.test"]);
    t.server.write_hosts(&["172.31.1.2 calls.example.test"]);
    let r = t
        .client
        .try_exec(&[NETCHECK, "resolve", "calls.example.test"], BOUND);
    assert!(r.success(), "{}", r.describe());
    assert_eq!(r.stdout.trim(), "203.0.113.10");
    let r = t
        .server
        .try_exec(&[NETCHECK, "resolve", "calls.example.test"], BOUND);
    assert_eq!(r.stdout.trim(), "172.31.1.2", "{}", r.describe());
    assert!(t.client.etc_dir().join("hosts").is_file());
    assert_eq!(std::fs::read_to_string("/etc/hosts").ok(), host_hosts);
}

#[test]
fn namespaces_are_removed_on_drop_and_after_panic() {
    // Plain drop, with a process left running inside.
    let ns = Netns::new("cleanup");
    let name = ns.name().to_string();
    ns.write_hosts(&["203.0.113.5 x.example.test"]);
    let sleeper = ns.spawn(&["sleep", "30"], BOUND);
    let pid = sleeper.pid();
    std::mem::forget(sleeper); // the guard, not the Proc, must kill it
    assert!(netns::exists(&name));
    drop(ns);
    assert!(!netns::exists(&name), "{name} still exists");
    assert!(!std::path::Path::new("/etc/netns").join(&name).exists());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Killed: gone, or a zombie nobody reaps (we forgot the handle).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if stat.is_empty() || state == Some("Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} survived its namespace: {stat}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A panic while a whole topology (with a server-like process) is up.
    let names = Mutex::new(Vec::new());
    let r = catch_unwind(AssertUnwindSafe(|| {
        let t = Topology::nat(NatConfig::default());
        names
            .lock()
            .unwrap()
            .extend(Role::ALL.iter().map(|&r| t.ns(r).name().to_string()));
        let _echo = udp_echo(&t.server, 9000, 10_000);
        panic!("deliberate panic inside a topology");
    }));
    assert!(r.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left after panic: {left:?}");
    for n in &names {
        assert!(
            !std::path::Path::new("/etc/netns").join(n).exists(),
            "/etc/netns/{n} left"
        );
    }
}

#[test]
fn hung_process_is_killed_at_its_bound() {
    let ns = Netns::new("bound");
    let t = Instant::now();
    let done = ns.try_exec(&["sleep", "30"], Duration::from_millis(300));
    assert!(done.timed_out, "{}", done.describe());
    assert_eq!(done.code(), None);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(ns.pids().is_empty(), "left: {:?}", ns.pids());
}

#[test]
fn scenario_files_parse() {
    let names = probe_tests::scenario::scenario_names();
    assert!(!names.is_empty());
    for name in names {
        let s = Scenario::named(&name).unwrap_or_else(|e| panic!("{e}"));
        let _ = s.topology_kind();
    }
}

#[test]
fn scenario_schema_nat_and_spawn() {
    let dir = probe_tests::TempDir::new("schema");
    let path = dir.path().join("ice_sample.toml");
    std::fs::write(
        &path,
        r#"
description = "sample of the NAT/ICE schema"
topology = "nat"

[nat]
[[nat.map]]
proto = "tcp"
public = 443
private = 8443
[[nat.map]]
proto = "udp"
public = 8443
private = 8443

[client]
server = "calls.example.test:443"
hosts = ["{server_public_ip} calls.example.test"]
args = ["--pin", "{pin}"]
timeout_secs = 30

[server]
hosts = ["{server_ip} calls.example.test"]
args = ["--stun", "{router_public_ip}:3478"]

[[spawn]]
ns = "router"
argv = ["turnserver", "--listening-ip", "{router_public_ip}", "--listening-port", "3478"]
wait_listen = ["udp:{router_public_ip}:3478"]

[expect]
exit_code = 0
udp = { reachable = true }
[expect.starts_with]
"udp.stun.mapped" = "198.51.100.2:"
"#,
    )
    .unwrap();
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.name, "ice_sample");
    match s.topology_kind() {
        probe_tests::TopologyKind::Nat(cfg) => {
            assert!(!cfg.forward_all);
            assert_eq!(cfg.maps.len(), 2);
            assert_eq!(cfg.maps[0].proto, Proto::Tcp);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.file.spawn[0].ns, Role::Router);
    assert_eq!(s.expect.equals[0].0, "udp.reachable");

    // Schema mistakes are reported, not ignored.
    for bad in [
        "description = \"x\"\ntopology = \"routed\"\n[nat]\n",
        "description = \"x\"\ntopology = \"routed\"\n[router]\nargs = [\"a\"]\n",
        "description = \"x\"\ntopology = \"routed\"\n[client]\nargz = []\n",
        "description = \"x\"\ntopology = \"bridged\"\n",
        "description = \"x\"\ntopology = \"routed\"\n[expect]\nfindings = [\"typo\"]\n",
    ] {
        std::fs::write(&path, bad).unwrap();
        assert!(Scenario::load(&path).is_err(), "accepted {bad:?}");
    }
}
