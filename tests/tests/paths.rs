//! Issue 13, the failures a short test passes: a flow the network cuts mid-run
//! (`path_cut_after`), a NAT whose UDP mappings expire during a quiet period
//! (`udp_mapping_short`) and a client behind the same NAT as RTCD without NAT loopback
//! (`hairpin_fails`). Real binaries in the routed topology; the router breaks the path with
//! nftables and conntrack settings.

use std::collections::BTreeMap;
use std::time::Duration;

use probe_tests::probe::{run_client, start_server_with_state};
use probe_tests::{ClientRun, ServerHandle, Topology};
use serde_json::Value;

const LISTEN: &str = "0.0.0.0:8443";
const SERVER_LIFETIME: Duration = Duration::from_secs(240);
const CLIENT_BOUND: Duration = Duration::from_secs(120);
/// The first payload byte of a UDP packet: its top two bits are 0b10 for the RTP-shaped echo
/// only (STUN 0b00, QUIC 0b01/0b11), so the rule cuts the media flow and leaves the QUIC
/// control channel that reports the server's counters.
const ECHO: &str = "@th,64,2 2";

fn server(t: &Topology, extra: &[&str]) -> ServerHandle {
    start_server_with_state(&t.server, LISTEN, extra, &BTreeMap::new(), SERVER_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn client(t: &Topology, extra: &[&str]) -> ClientRun {
    let dest = format!("{}:8443", t.server_public_ip);
    let mut args = vec![dest.as_str(), "--json", "--no-upload", "--site", "paths"];
    args.extend_from_slice(extra);
    run_client(&t.client, &args, CLIENT_BOUND)
}

fn finding<'a>(run: &'a ClientRun, id: &str) -> Option<&'a Value> {
    run.json.as_ref()?["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
}

fn ids(run: &ClientRun) -> Vec<String> {
    run.json.as_ref().map_or_else(Vec::new, |j| {
        j["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["id"].as_str().map(str::to_string))
            .collect()
    })
}

/// A 30-s run; 10 s after the client starts, the router starts dropping the echo in the
/// direction `rule` names.
fn cut_run(rule: &str) -> (ClientRun, Topology) {
    let t = Topology::routed();
    let _s = server(&t, &[]);
    let run = std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_secs(10));
            t.router_forward(&[rule]);
        });
        client(&t, &["--duration", "30", "--no-tcp"])
    });
    (run, t)
}

fn check_cut(run: &ClientRun, t: &Topology, direction: &str) {
    let f = finding(run, "path_cut_after").unwrap_or_else(|| {
        panic!(
            "no path_cut_after in {:?}\n{}\n{}",
            ids(run),
            run.describe(),
            t.dump_rulesets()
        )
    });
    let p = &f["path"];
    let at = p["cut_after_s"].as_f64().expect("cut_after_s");
    assert!((9.0..=12.0).contains(&at), "cut at {at} s: {f:#}");
    assert_eq!(p["cut_direction"], direction, "{f:#}");
    assert_eq!(f["severity"], "error");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("stopped passing UDP 8443"), "{summary}");
    // The loss is the cut's: no separate packet_loss finding for it.
    assert!(finding(run, "packet_loss").is_none(), "{:?}", ids(run));
    assert_eq!(run.code, Some(1), "{}", run.describe());
}

#[test]
fn a_flow_cut_upstream_ten_seconds_in_is_path_cut_after() {
    let (run, t) = cut_run(&format!("udp dport 8443 {ECHO} drop"));
    check_cut(&run, &t, "upstream");
}

#[test]
fn a_flow_cut_downstream_ten_seconds_in_is_path_cut_after() {
    let (run, t) = cut_run(&format!("udp sport 8443 {ECHO} drop"));
    check_cut(&run, &t, "downstream");
}

/// The router masquerades the client behind 203.0.113.1 with a random port per new mapping,
/// as carrier-grade and many home NATs do; `udp_timeout` (seconds) shortens conntrack's
/// UDP timeouts when given.
fn quiet_run(udp_timeout: Option<u32>) -> (ClientRun, Topology) {
    let t = Topology::routed();
    t.router.nft(
        "add table ip paths_nat\n\
         add chain ip paths_nat post { type nat hook postrouting priority 100; policy accept; }\n\
         add rule ip paths_nat post oifname \"rt-server\" masquerade random\n",
    );
    if let Some(s) = udp_timeout {
        // Both: a flow seen both ways for 2 s uses the "stream" timeout (120 s by default).
        t.router
            .sysctl("net.netfilter.nf_conntrack_udp_timeout", &s.to_string());
        t.router.sysctl(
            "net.netfilter.nf_conntrack_udp_timeout_stream",
            &s.to_string(),
        );
    }
    let _s = server(&t, &[]);
    let run = client(&t, &["--duration", "10", "--quiet-test", "20", "--no-tcp"]);
    (run, t)
}

#[test]
fn a_mapping_shorter_than_the_quiet_period_is_udp_mapping_short() {
    let (run, t) = quiet_run(Some(10));
    let f = finding(&run, "udp_mapping_short").unwrap_or_else(|| {
        panic!(
            "no udp_mapping_short in {:?}\n{}\n{}",
            ids(&run),
            run.describe(),
            t.dump_rulesets()
        )
    });
    let p = &f["path"];
    assert_eq!(p["quiet_s"], 20.0, "{f:#}");
    assert_eq!(p["quiet_outcome"], "remapped", "{f:#}");
    let (before, after) = (p["mapped_before"].as_str(), p["mapped_after"].as_str());
    assert!(
        before.is_some_and(|b| b.starts_with("203.0.113.1:")),
        "{f:#}"
    );
    assert!(
        after.is_some_and(|a| a.starts_with("203.0.113.1:")),
        "{f:#}"
    );
    assert_ne!(before, after, "{f:#}");
    assert!(finding(&run, "path_held").is_none(), "{:?}", ids(&run));
}

#[test]
fn a_mapping_that_outlives_the_quiet_period_holds() {
    let (run, _t) = quiet_run(None);
    assert!(
        finding(&run, "udp_mapping_short").is_none(),
        "{}",
        run.describe()
    );
    let f = finding(&run, "path_held").unwrap_or_else(|| panic!("{}", run.describe()));
    assert_eq!(f["path"]["quiet_outcome"], "held", "{f:#}");
    assert_eq!(f["severity"], "info");
    // The session outlived 20 s without echo traffic (counter polls keep it alive).
    assert_eq!(run.code, Some(0), "{}", run.describe());
}

/// The router is also the NAT of RTCD's site: it owns the public address 192.0.2.10, shows
/// the client to the server as 192.0.2.10 (SNAT), and RTCD advertises 192.0.2.10
/// (ice_host_override). `loopback` adds the DNAT that sends inside traffic for the public
/// address back in (NAT loopback / hairpinning).
fn same_nat_run(loopback: bool) -> (ClientRun, Topology) {
    let t = Topology::routed();
    t.router
        .ip(&["addr", "add", "192.0.2.10/32", "dev", "rt-client"]);
    let mut script = String::from(
        "add table ip paths_nat\n\
         add chain ip paths_nat pre { type nat hook prerouting priority -100; policy accept; }\n\
         add chain ip paths_nat post { type nat hook postrouting priority 100; policy accept; }\n\
         add rule ip paths_nat post ip saddr 198.51.100.2 oifname \"rt-server\" snat to 192.0.2.10\n",
    );
    if loopback {
        script.push_str(
            "add rule ip paths_nat pre ip daddr 192.0.2.10 udp dport 8443 dnat to 203.0.113.2\n",
        );
    }
    t.router.nft(&script);
    let _s = server(&t, &["--ice-host-override", "192.0.2.10"]);
    let run = client(&t, &["--duration", "1", "--no-tcp"]);
    (run, t)
}

#[test]
fn behind_rtcds_nat_without_loopback_is_hairpin_fails() {
    let (run, t) = same_nat_run(false);
    let f = finding(&run, "hairpin_fails").unwrap_or_else(|| {
        panic!(
            "no hairpin_fails in {:?}\n{}\n{}",
            ids(&run),
            run.describe(),
            t.dump_rulesets()
        )
    });
    let p = &f["path"];
    assert_eq!(p["client_public"], "192.0.2.10", "{f:#}");
    assert_eq!(p["rtcd_advertised"], "192.0.2.10:8443", "{f:#}");
    assert_eq!(p["same_nat"], "same_address", "{f:#}");
    assert_eq!(p["transport"], "udp", "{f:#}");
    // The override is right for everyone outside: no advice to change it.
    assert!(
        finding(&run, "ice_host_override_wrong").is_none(),
        "{:?}",
        ids(&run)
    );
    assert_eq!(p["hairpin_ok"], false, "{f:#}");
    let fix = f["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("NAT loopback") && fix.contains("EXTERNAL/LOCAL"),
        "{fix}"
    );
    assert_eq!(run.code, Some(1));
}

#[test]
fn behind_rtcds_nat_with_loopback_says_so_without_error() {
    let (run, t) = same_nat_run(true);
    assert!(
        finding(&run, "hairpin_fails").is_none(),
        "{:?}\n{}\n{}",
        ids(&run),
        run.describe(),
        t.dump_rulesets()
    );
    let f = finding(&run, "same_nat_as_rtcd").unwrap_or_else(|| {
        panic!(
            "no same_nat_as_rtcd in {:?}\n{}\n{}",
            ids(&run),
            run.describe(),
            t.dump_rulesets()
        )
    });
    assert_eq!(f["path"]["hairpin_ok"], true, "{f:#}");
    assert_eq!(f["severity"], "info");
}
