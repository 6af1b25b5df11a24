//! Issue 13, large packets: the path-MTU phase of probe-client against real binaries in the
//! routed topology, the router (or the links) shaped to lose large packets: a 1280-byte link
//! with ICMP "fragmentation needed" dropped (a black hole), the same with the ICMP let through,
//! IPv4 fragments dropped by nftables, and a clean path.

use std::collections::BTreeMap;
use std::time::Duration;

use probe_proto::path::mtu::{SIZES_V4, TCP_FRAME};
use probe_tests::probe::{run_client, start_server_with_state};
use probe_tests::topology::{CLIENT_IF, ROUTER_CLIENT_IF, ROUTER_SERVER_IF, SERVER_IF};
use probe_tests::{ClientRun, ServerHandle, Topology};
use serde_json::Value;

const LISTEN: &str = "0.0.0.0:8443";
const SERVER_LIFETIME: Duration = Duration::from_secs(120);
const CLIENT_BOUND: Duration = Duration::from_secs(60);
/// The narrow link's MTU; the largest UDP payload through it is this less 28 bytes of IPv4 and
/// UDP headers.
const LINK_MTU: u16 = 1280;
const IPV4_UDP_HEADERS: u16 = 28;
/// The phase's own bound (probe-client's `mtu::PHASE_DEADLINE`).
const PHASE_MS: u64 = 3000;

fn server(t: &Topology) -> ServerHandle {
    start_server_with_state::<&str>(&t.server, LISTEN, &[], &BTreeMap::new(), SERVER_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn client(t: &Topology) -> ClientRun {
    let dest = format!("{}:8443", t.server_public_ip);
    let args = [
        dest.as_str(),
        "--json",
        "--no-upload",
        "--site",
        "mtu",
        "--duration",
        "1",
    ];
    run_client(&t.client, &args, CLIENT_BOUND)
}

fn finding<'a>(run: &'a ClientRun, id: &str) -> Option<&'a Value> {
    run.json.as_ref()?["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
}

fn mtu(run: &ClientRun) -> &Value {
    let m = &run.json.as_ref().expect("a JSON report")["mtu"];
    assert!(m.is_object(), "no mtu object\n{}", run.describe());
    m
}

/// A narrow hop in the middle: the router's routes toward both sides get an MTU of
/// [`LINK_MTU`], so it fragments or refuses (ICMP "fragmentation needed") what it forwards, while
/// client and server keep 1500-byte links and learn of the narrow hop only by ICMP. (An interface
/// MTU would not do: a veth drops, silently, what exceeds its receiving end's MTU.)
fn narrow_hop(t: &Topology) {
    let m = LINK_MTU.to_string();
    for (ip, dev) in [
        (t.server_ip, ROUTER_SERVER_IF),
        (t.client_ip, ROUTER_CLIENT_IF),
    ] {
        let [a, b, c, _] = ip.octets();
        let net = format!("{a}.{b}.{c}.0/24");
        t.router
            .ip(&["route", "replace", &net, "dev", dev, "mtu", "lock", &m]);
    }
}

/// Narrow links end to end: every interface of both veth pairs, so each end fragments (or
/// refuses, DF set) what it sends itself.
fn narrow_links(t: &Topology) {
    let m = LINK_MTU.to_string();
    for dev in [ROUTER_CLIENT_IF, ROUTER_SERVER_IF] {
        t.router.ip(&["link", "set", "dev", dev, "mtu", &m]);
    }
    t.client.ip(&["link", "set", "dev", CLIENT_IF, "mtu", &m]);
    t.server.ip(&["link", "set", "dev", SERVER_IF, "mtu", &m]);
}

/// The router's own ICMP "fragmentation needed" (type 3 code 4) never leaves it.
fn drop_frag_needed(t: &Topology) {
    t.router.nft(
        "add table ip mtu_icmp\n\
         add chain ip mtu_icmp out { type filter hook output priority 0; policy accept; }\n\
         add rule ip mtu_icmp out icmp type destination-unreachable icmp code 4 counter drop\n",
    );
}

/// `v` (a size the report names) is exactly `truth`, itself a planned size: a one-step
/// tolerance there would hide a wrong answer (1280 reported for a 1252-byte path).
fn exact_size(v: &Value, truth: u16, what: &str, run: &ClientRun) {
    assert!(SIZES_V4.contains(&truth), "{truth} is not a planned size");
    assert_eq!(
        v.as_u64(),
        Some(u64::from(truth)),
        "{what}: truth {truth}\n{}",
        mtu(run)
    );
}

fn check_phase_bound(run: &ClientRun) {
    let ms = mtu(run)["ms"].as_u64().expect("ms");
    assert!(ms <= PHASE_MS + 200, "the phase took {ms} ms");
}

#[test]
fn a_1280_link_with_frag_needed_dropped_is_large_packets_lost_both_ways() {
    let t = Topology::routed();
    narrow_hop(&t);
    drop_frag_needed(&t);
    let _s = server(&t);
    let run = client(&t);
    let f = finding(&run, "large_packets_lost").unwrap_or_else(|| {
        panic!(
            "no large_packets_lost\n{}\n{}",
            run.describe(),
            t.dump_rulesets()
        )
    });
    let truth = LINK_MTU - IPV4_UDP_HEADERS;
    let m = mtu(&run);
    let udp = &m["udp"];
    exact_size(&udp["up"]["largest_df"], truth, "up DF", &run);
    exact_size(&udp["down"]["largest_df"], truth, "down DF", &run);
    // The router fragments what DF allows: every size passes that way.
    let full = u64::from(*SIZES_V4.last().unwrap());
    assert_eq!(udp["up"]["largest_no_df"], full, "{m:#}");
    assert_eq!(udp["down"]["largest_no_df"], full, "{m:#}");
    assert_eq!(udp["up"]["icmp"], false, "the ICMP was dropped: {m:#}");
    // Full-size TCP segments die the same way (the MSS was negotiated on 1500-byte links).
    assert_eq!(m["tcp"]["up_ok"], false, "{m:#}");
    assert_eq!(m["tcp"]["down_ok"], false, "{m:#}");
    assert_eq!(m["tcp"]["frame"], TCP_FRAME, "{m:#}");
    // 1252 bytes still carry media packets: a warning, with the figures on the finding.
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert_eq!(f["path"]["mtu_icmp"], false, "{f:#}");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("ICMP black hole"), "{summary}");
    assert!(summary.contains("TCP MSS black hole"), "{summary}");
    check_phase_bound(&run);
    assert_eq!(run.code, Some(0), "{}", run.describe());
}

#[test]
fn frag_needed_that_arrives_is_reported_with_its_mtu() {
    let t = Topology::routed();
    narrow_hop(&t);
    // The router answers every DF probe, each retry's too (by default it rate-limits its ICMP
    // per host, which let later rounds slip past a lost probe).
    t.router.sysctl("net.ipv4.icmp_ratelimit", "0");
    let _s = server(&t);
    let run = client(&t);
    let m = mtu(&run);
    assert_eq!(m["udp"]["up"]["icmp"], true, "{m:#}");
    assert_eq!(m["udp"]["up"]["icmp_mtu"], LINK_MTU, "{m:#}");
    // DF probes ignore the learnt MTU: the figure is the path's, not a guess. The truth is a
    // planned size, so it is asserted exactly.
    exact_size(
        &m["udp"]["up"]["largest_df"],
        LINK_MTU - IPV4_UDP_HEADERS,
        "up DF",
        &run,
    );
    // The router fragments what DF allows. The ICMP the DF probes drew is queued on the socket
    // as a pending error; were it taken by the next send, the same-size no-DF probe would be
    // lost and blamed on this machine's own interface.
    let full = u64::from(*SIZES_V4.last().unwrap());
    assert_eq!(m["udp"]["up"]["largest_no_df"], full, "{m:#}");
    assert!(
        m["udp"]["up"]
            .get("local_refused")
            .is_none_or(Value::is_null),
        "the ICMP is no local refusal: {m:#}"
    );
    assert!(
        finding(&run, "large_packets_lost").is_some(),
        "{}",
        run.describe()
    );
}

#[test]
fn ipv4_fragments_dropped_show_in_the_df_unset_sizes() {
    let t = Topology::routed();
    // Every link is narrow, so each end fragments what it sends without DF; the router drops
    // every non-first fragment before reassembly (priority -500 runs before conntrack's defrag).
    narrow_links(&t);
    t.router.nft(
        "add table ip mtu_frag\n\
         add chain ip mtu_frag pre { type filter hook prerouting priority -500; policy accept; }\n\
         add rule ip mtu_frag pre ip frag-off & 0x1fff != 0 counter drop\n",
    );
    let _s = server(&t);
    let run = client(&t);
    let m = mtu(&run);
    let truth = LINK_MTU - IPV4_UDP_HEADERS;
    for way in ["up", "down"] {
        let d = &m["udp"][way];
        // Each end fragments what exceeds its 1280-byte link: the largest that passes is the
        // largest unfragmented size, itself a planned size.
        exact_size(&d["largest_no_df"], truth, &format!("{way} no DF"), &run);
        assert!(
            d["largest_no_df"].as_u64() < Some(u64::from(*SIZES_V4.last().unwrap())),
            "fragments were dropped: {m:#}"
        );
        exact_size(&d["largest_df"], truth, &format!("{way} DF"), &run);
    }
    let rules = t.router.ruleset();
    let rule = rules
        .lines()
        .find(|l| l.contains("frag-off"))
        .unwrap_or_else(|| panic!("no fragment rule:\n{rules}"));
    assert!(
        !rule.contains("packets 0 "),
        "the fragment rule dropped nothing: {rule}"
    );
    // Both ends know the narrow link (MSS 1240): full-size frames pass.
    assert_eq!(m["tcp"]["up_ok"], true, "{m:#}");
    assert_eq!(m["tcp"]["down_ok"], true, "{m:#}");
    let f = finding(&run, "large_packets_lost").unwrap_or_else(|| panic!("{}", run.describe()));
    assert_eq!(f["severity"], "warning", "{f:#}");
    check_phase_bound(&run);
}

#[test]
fn a_clean_path_passes_every_size_without_a_finding() {
    let t = Topology::routed();
    let _s = server(&t);
    let run = client(&t);
    assert!(
        finding(&run, "large_packets_lost").is_none(),
        "{}",
        run.describe()
    );
    let m = mtu(&run);
    let full = u64::from(*SIZES_V4.last().unwrap());
    for way in ["up", "down"] {
        for key in ["largest_df", "largest_no_df"] {
            assert_eq!(m["udp"][way][key], full, "{way} {key}: {m:#}");
        }
    }
    assert_eq!(m["udp"]["up"]["icmp"], false, "{m:#}");
    assert_eq!(m["tcp"]["up_ok"], true, "{m:#}");
    assert_eq!(m["tcp"]["down_ok"], true, "{m:#}");
    // Nothing was lost, so nothing waited for a deadline.
    let ms = m["ms"].as_u64().expect("ms");
    assert!(ms < 1000, "a clean path took {ms} ms");
    assert_eq!(run.code, Some(0), "{}", run.describe());
}

#[test]
fn no_mtu_skips_the_phase() {
    let t = Topology::routed();
    let _s = server(&t);
    let dest = format!("{}:8443", t.server_public_ip);
    let args = [
        dest.as_str(),
        "--json",
        "--no-upload",
        "--duration",
        "0.5",
        "--no-mtu",
    ];
    let run = run_client(&t.client, &args, CLIENT_BOUND);
    let j = run
        .json
        .as_ref()
        .unwrap_or_else(|| panic!("{}", run.describe()));
    assert!(j.get("mtu").is_none(), "{j:#}");
}
