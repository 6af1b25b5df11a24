//! `probe-server doctor` on RTCD's own NAT (issue 13 item 4): RTCD with no ice_host_override
//! and a stun: URL advertises the STUN-found IP with its local port, so the doctor sends STUN
//! Bindings from RTCD's ICE port's address and says whether the NAT keeps the port and maps it
//! the same way for every destination. Real NATs (nftables in a router namespace), a real
//! STUN server (coturn) and a real probe-server as the second server.
//!
//! ```text
//! rtcd ns  eth0 172.31.9.2/24 ── rt-in 172.31.9.1/24 [router, NAT] rt-out 203.0.113.1/24 ── eth0 203.0.113.2/24 public ns
//!            default via 172.31.9.1                         + 203.0.113.10/32, .11/32          + 203.0.113.3/24
//! ```
//! coturn (STUN only) answers on 203.0.113.2:3478 (RTCD's ice_servers), a probe-server on
//! 203.0.113.3:8443 (`--stun-check-server`).

use std::time::Duration;

use probe_tests::netns::{veth, Netns};
use probe_tests::proc::Finished;
use probe_tests::{Proc, TempDir};
use serde_json::Value;

const STANDIN: &str = env!("CARGO_BIN_EXE_rtcd-standin");
const LIFETIME: Duration = Duration::from_secs(120);
const SAMPLE_SECS: f64 = 1.0;
const RTCD_IP: &str = "172.31.9.2";
const COTURN: &str = "203.0.113.2";
const PROBE: &str = "203.0.113.3";
/// What the NAT findings say must hold behind masquerade's 203.0.113.1.
const FORWARD_203_0_113_1: &str = "RTCD's STUN-derived candidate reaches it only if the router \
     forwards public UDP 8443 (203.0.113.1:8443) to this host; if it does, nothing to fix";

struct Net {
    rtcd: Netns,
    router: Netns,
    public: Netns,
}

/// The three namespaces, with `nat` (nft rules of the router's postrouting chain) as the NAT.
fn net(nat: &[&str]) -> Net {
    net_with_forward(nat, &[])
}

/// As `net`, plus `forward` (nft rules of the router's prerouting chain: inbound forwards).
fn net_with_forward(nat: &[&str], forward: &[&str]) -> Net {
    probe_tests::binaries();
    let n = Net {
        rtcd: Netns::new("rtcd"),
        router: Netns::new("natrouter"),
        public: Netns::new("public"),
    };
    for ns in [&n.rtcd, &n.router, &n.public] {
        ns.isolate_dns();
    }
    veth(&n.rtcd, "eth0", &n.router, "rt-in");
    veth(&n.router, "rt-out", &n.public, "eth0");
    n.rtcd.ip_batch(&[
        format!("addr add {RTCD_IP}/24 dev eth0"),
        "route add default via 172.31.9.1".into(),
    ]);
    n.router.ip_batch(&[
        "addr add 172.31.9.1/24 dev rt-in".into(),
        "addr add 203.0.113.1/24 dev rt-out".into(),
        "addr add 203.0.113.10/32 dev rt-out".into(),
        "addr add 203.0.113.11/32 dev rt-out".into(),
    ]);
    n.router.sysctl("net.ipv4.ip_forward", "1");
    n.public.ip_batch(&[
        format!("addr add {COTURN}/24 dev eth0"),
        format!("addr add {PROBE}/24 dev eth0"),
    ]);
    let mut script = "add table ip natlab\n\
         add chain ip natlab postrouting { type nat hook postrouting priority 100; policy accept; }\n\
         add chain ip natlab prerouting { type nat hook prerouting priority -100; policy accept; }\n"
        .to_string();
    for rule in nat {
        script.push_str(&format!("add rule ip natlab postrouting {rule}\n"));
    }
    for rule in forward {
        script.push_str(&format!("add rule ip natlab prerouting {rule}\n"));
    }
    n.router.nft(&script);
    n
}

/// coturn as a STUN-only server on 203.0.113.2:3478.
fn coturn(public: &Netns) -> Proc {
    let p = public.spawn(
        &[
            "turnserver",
            "--listening-ip",
            COTURN,
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
    public
        .wait_listening(&format!("udp:{COTURN}:3478"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("coturn: {e}"));
    p
}

/// A probe-server on 203.0.113.3:8443: it answers STUN Binding on its port.
fn probe_server(public: &Netns) -> probe_tests::probe::ServerHandle {
    probe_tests::probe::start_server_with_state(
        public,
        &format!("{PROBE}:8443"),
        &[] as &[&str],
        &Default::default(),
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("probe-server: {e}"))
}

/// RTCD's config: no override, coturn as its STUN server.
fn config(dir: &TempDir, extra: &str) -> String {
    let cfg = dir.path().join("rtcd.toml");
    std::fs::write(
        &cfg,
        format!("[rtc]\nice_servers = [\"stun:{COTURN}:3478\"]\n{extra}"),
    )
    .unwrap();
    cfg.display().to_string()
}

struct Run {
    done: Finished,
    json: Value,
}

fn doctor(ns: &Netns, cfg: &str, extra: &[&str]) -> Run {
    let bins = probe_tests::binaries();
    let sample = SAMPLE_SECS.to_string();
    let mut argv = vec![
        bins.server.to_str().expect("utf-8 path"),
        "doctor",
        "--json",
        "--sample",
        &sample,
        "--rtcd-config",
        cfg,
    ];
    argv.extend_from_slice(extra);
    let done = probe_tests::run_bounded(
        ns.argv_command(&argv),
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

fn nat_check(r: &Run) -> (String, String) {
    let c = r.json["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "rtcd_nat"))
        .unwrap_or_else(|| panic!("no rtcd_nat check\n{}", r.done.describe()));
    (
        c["status"].as_str().unwrap().to_string(),
        c["detail"].as_str().unwrap().to_string(),
    )
}

/// The NAT findings (id, severity, summary, fix).
fn nat_findings(r: &Run) -> Vec<(String, String, String, String)> {
    r.json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"].as_str().unwrap().starts_with("rtcd_nat_"))
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("severity"), s("summary"), s("fix"))
        })
        .collect()
}

/// The mapped address server `i` gave the first source, from the report's `nat` section.
fn mapped(r: &Run, i: usize) -> Option<String> {
    let src = &r.json["nat"]["sources"][0];
    src["answers"]
        .as_array()?
        .iter()
        .find(|a| a["server"] == i)?["mapped"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn port_randomising_nat_changes_the_ice_port() {
    // `masquerade random`: the kernel picks a random source port (it picks 8443 again with
    // probability about 1/64 000).
    let n = net(&["oifname \"rt-out\" ip saddr 172.31.9.0/24 masquerade random"]);
    let _coturn = coturn(&n.public);
    let dir = TempDir::new("nat-random");
    let cfg = config(&dir, "");
    let r = doctor(&n.rtcd, &cfg, &[]);
    let got = mapped(&r, 0).unwrap_or_else(|| panic!("no STUN answer\n{}", r.done.describe()));
    let (ip, port) = got.rsplit_once(':').unwrap();
    assert_eq!(
        ip, "203.0.113.1",
        "masquerade uses rt-out's primary address"
    );
    assert_ne!(port, "8443", "{got}");
    let f = nat_findings(&r);
    assert_eq!(f.len(), 1, "{f:#?}");
    let (id, severity, summary, fix) = &f[0];
    // A warning, not an error: with a forward of UDP 8443 (which the doctor cannot see) RTCD
    // works, see `port_randomising_nat_with_a_forward_is_only_a_warning`.
    assert_eq!(
        (id.as_str(), severity.as_str()),
        ("rtcd_nat_changes_port", "warning")
    );
    assert!(
        summary.contains(&format!("maps {RTCD_IP}:8443 to {got}"))
            && summary.contains("advertises 203.0.113.1:8443")
            && summary.contains(FORWARD_203_0_113_1),
        "{summary}"
    );
    assert!(
        fix.contains("ice_host_override = \"203.0.113.1\"")
            && fix.contains("RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.1")
            && fix.contains("RTCD_RTC_ICEHOSTPORTOVERRIDE"),
        "{fix}"
    );
    let (status, detail) = nat_check(&r);
    assert_eq!(status, "warn", "{detail}");
    assert!(
        detail.contains(&format!("from {RTCD_IP}:8443 (RTCD's ICE port)")),
        "{detail}"
    );

    // RTCD running (the stand-in holds UDP 8443): another port of the same address, named,
    // and a warning, since the ICE port itself was not tested.
    let _standin = start_standin(&n.rtcd);
    let r = doctor(&n.rtcd, &cfg, &[]);
    let port = r.json["nat"]["sources"][0]["port"].as_u64().unwrap();
    assert_ne!(port, 8443);
    assert_eq!(r.json["nat"]["sources"][0]["ice_port_taken"], true);
    let f = nat_findings(&r);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        (f[0].0.as_str(), f[0].1.as_str()),
        ("rtcd_nat_changes_port", "warning")
    );
    assert!(
        f[0].2.contains("stop RTCD and run the doctor again"),
        "{}",
        f[0].2
    );
    let (status, detail) = nat_check(&r);
    assert_eq!(status, "warn", "{detail}");
    assert!(
        detail.contains(&format!("from {RTCD_IP}:{port}"))
            && detail.contains(&format!("the port result is for port {port}")),
        "{detail}"
    );
}

#[test]
fn port_randomising_nat_with_a_forward_is_only_a_warning() {
    // pfSense-like: outbound ports randomised, inbound UDP 8443 forwarded to RTCD's host. RTCD
    // advertises 203.0.113.1:8443 and that works; the doctor cannot see the forward from inside,
    // so it must not call this an error.
    let n = net_with_forward(
        &["oifname \"rt-out\" ip saddr 172.31.9.0/24 masquerade random"],
        &[&format!(
            "iifname \"rt-out\" ip daddr 203.0.113.1 udp dport 8443 dnat ip to {RTCD_IP}:8443"
        )],
    );
    let _coturn = coturn(&n.public);
    let dir = TempDir::new("nat-forward");
    let cfg = config(&dir, "");
    let r = doctor(&n.rtcd, &cfg, &[]);
    let got = mapped(&r, 0).unwrap_or_else(|| panic!("no STUN answer\n{}", r.done.describe()));
    assert_ne!(
        got, "203.0.113.1:8443",
        "the NAT kept the port: nothing tested"
    );
    let f = nat_findings(&r);
    assert_eq!(f.len(), 1, "{f:#?}");
    let (id, severity, summary, fix) = &f[0];
    assert_eq!(
        (id.as_str(), severity.as_str()),
        ("rtcd_nat_changes_port", "warning")
    );
    assert!(summary.contains(FORWARD_203_0_113_1), "{summary}");
    assert!(
        fix.starts_with(
            "if the router already forwards public UDP 8443 to this host, nothing to do"
        ) && fix.contains("RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.1"),
        "{fix}"
    );
    assert!(
        r.json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] != "error" || !f["id"].as_str().unwrap().starts_with("rtcd_nat")),
        "{}",
        r.done.describe()
    );
    // The advertised candidate really works here: a client's packet to 203.0.113.1:8443
    // reaches RTCD's port, and RTCD's reply comes back from 203.0.113.1:8443.
    assert_eq!(
        through_forward(&n),
        "203.0.113.1:8443".parse().unwrap(),
        "the forward does not carry the advertised candidate: the case is not what it claims"
    );
    // The human report, as users see it (README).
    let bins = probe_tests::binaries();
    let text = probe_tests::run_bounded(
        n.rtcd.argv_command(&[
            bins.server.to_str().expect("utf-8 path"),
            "doctor",
            "--sample",
            &SAMPLE_SECS.to_string(),
            "--rtcd-config",
            &cfg,
        ]),
        "probe-server doctor (text)".to_string(),
        Duration::from_secs(30),
    );
    println!("{}", text.stdout);
    assert!(
        text.stdout.contains("rtcd_nat_changes_port") && text.stdout.contains("nothing to fix"),
        "{}",
        text.describe()
    );
}

/// A UDP round trip from a client at 203.0.113.2 to 203.0.113.1:8443 and a socket on RTCD's
/// UDP 8443 that echoes: returns where the client saw the reply come from.
fn through_forward(n: &Net) -> std::net::SocketAddr {
    use std::net::UdpSocket;
    let server = probe_tests::netns::spawn_in_ns(&n.rtcd, || {
        let s = UdpSocket::bind("0.0.0.0:8443").expect("bind RTCD's UDP 8443");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let (len, from) = s
            .recv_from(&mut buf)
            .expect("nothing arrived through the forward");
        s.send_to(&buf[..len], from).unwrap();
    });
    let client = probe_tests::netns::spawn_in_ns(&n.public, || {
        let c = UdpSocket::bind(format!("{COTURN}:0")).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 64];
        // Resent until the echo socket is bound (it is bound on another thread).
        for _ in 0..15 {
            c.send_to(b"forward?", "203.0.113.1:8443").unwrap();
            if let Ok((_, from)) = c.recv_from(&mut buf) {
                return Some(from);
            }
        }
        None
    });
    server.join().expect("echo thread");
    client
        .join()
        .expect("client thread")
        .expect("no reply through the forward")
}

/// The RTCD stand-in on 0.0.0.0:8443 (UDP and TCP) with its API on 127.0.0.1:8045.
fn start_standin(ns: &Netns) -> Proc {
    let p = Proc::spawn(
        ns.argv_command(&[STANDIN, "serve", "--version", "v1.2.6"]),
        format!("[{}] rtcd-standin", ns.name()),
        LIFETIME,
    )
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

#[test]
fn port_preserving_nat_passes_with_two_servers() {
    let n = net(&["oifname \"rt-out\" ip saddr 172.31.9.0/24 snat ip to 203.0.113.10"]);
    let _coturn = coturn(&n.public);
    let _probe = probe_server(&n.public);
    let dir = TempDir::new("nat-keep");
    let cfg = config(&dir, "");
    let r = doctor(
        &n.rtcd,
        &cfg,
        &["--stun-check-server", &format!("{PROBE}:8443")],
    );
    assert_eq!(
        mapped(&r, 0).as_deref(),
        Some("203.0.113.10:8443"),
        "{}",
        r.done.describe()
    );
    // The probe-server answered too (a padded Binding: it never answers with more bytes).
    assert_eq!(
        mapped(&r, 1).as_deref(),
        Some("203.0.113.10:8443"),
        "{}",
        r.done.describe()
    );
    assert!(nat_findings(&r).is_empty(), "{:#?}", nat_findings(&r));
    let (status, detail) = nat_check(&r);
    assert_eq!(status, "pass", "{detail}");
    assert!(
        detail.contains("the NAT keeps port 8443")
            && detail.contains("the same mapping for 2 servers"),
        "{detail}"
    );
}

#[test]
fn address_dependent_mapping_varies_per_destination() {
    // Port-preserving, but another public address per destination.
    let n = net(&[
        "oifname \"rt-out\" ip saddr 172.31.9.0/24 ip daddr 203.0.113.2 snat ip to 203.0.113.10",
        "oifname \"rt-out\" ip saddr 172.31.9.0/24 snat ip to 203.0.113.11",
    ]);
    let _coturn = coturn(&n.public);
    let _probe = probe_server(&n.public);
    let dir = TempDir::new("nat-adm");
    let cfg = config(&dir, "");
    let r = doctor(
        &n.rtcd,
        &cfg,
        &["--stun-check-server", &format!("{PROBE}:8443")],
    );
    assert_eq!(
        mapped(&r, 0).as_deref(),
        Some("203.0.113.10:8443"),
        "{}",
        r.done.describe()
    );
    assert_eq!(
        mapped(&r, 1).as_deref(),
        Some("203.0.113.11:8443"),
        "{}",
        r.done.describe()
    );
    let f = nat_findings(&r);
    assert_eq!(f.len(), 1, "{f:#?}");
    let (id, severity, summary, fix) = &f[0];
    assert_eq!(
        (id.as_str(), severity.as_str()),
        ("rtcd_nat_mapping_varies", "warning")
    );
    assert!(
        summary.contains(
            "RTCD's STUN-derived candidate reaches it only if the router forwards public UDP 8443 \
             (203.0.113.10:8443) to this host; if it does, nothing to fix"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("to 203.0.113.10:8443 toward stun:203.0.113.2:3478")
            && summary.contains(&format!(
                "to 203.0.113.11:8443 toward --stun-check-server {PROBE}:8443"
            )),
        "{summary}"
    );
    assert!(
        fix.contains("ice_host_override = \"203.0.113.10\""),
        "{fix}"
    );
    let (status, detail) = nat_check(&r);
    assert_eq!(status, "warn", "{detail}");
    // For the README: the check's detail and the finding, as the report carries them.
    println!("rtcd_nat {status}: {detail}\n{severity} {id} — {summary}\nfix: {fix}");
}

#[test]
fn stun_unreachable_is_unknown_not_a_finding() {
    // Nothing answers on 203.0.113.2:3478 nor on 203.0.113.3:8443.
    let n = net(&["oifname \"rt-out\" ip saddr 172.31.9.0/24 masquerade random"]);
    let dir = TempDir::new("nat-silent");
    let cfg = config(&dir, "");
    let r = doctor(
        &n.rtcd,
        &cfg,
        &["--stun-check-server", &format!("{PROBE}:8443")],
    );
    assert!(nat_findings(&r).is_empty(), "{:#?}", nat_findings(&r));
    let (status, detail) = nat_check(&r);
    assert_eq!(status, "skipped", "{detail}");
    assert!(
        detail.starts_with("unknown: ") && detail.contains("no answer within 2 s"),
        "{detail}"
    );

    // With an override RTCD runs no STUN: the check is not run at all.
    let cfg = config(&dir, "ice_host_override = \"203.0.113.1\"\n");
    let r = doctor(&n.rtcd, &cfg, &[]);
    let (status, detail) = nat_check(&r);
    assert_eq!(status, "skipped");
    assert!(detail.contains("ice_host_override is set"), "{detail}");
    assert!(r.json.get("nat").is_none());
}
