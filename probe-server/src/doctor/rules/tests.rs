//! Every host rule, judged from recorded facts: /proc text as the kernel writes it, sysctl
//! values, RTCD's API answers, `nft -j list ruleset` JSON and log lines.

use super::host::judge_cpu;
use super::services::listener;
use super::*;
use crate::doctor::facts::{
    ApiSide, CpuFacts, CpuSample, DropFacts, FirewallFacts, Holders, OwnerVisibility, PortFacts,
};
use crate::doctor::procnet::{parse_table, Owner, Proto, Sock};
use crate::doctor::snmp::parse_snmp;
use crate::doctor::{api::ApiFacts, nft, sysctl};
use crate::rtcd_env::{RtcdEnv, Source};
use probe_proto::http::{Head, Response, Url};
use probe_shell::http::FetchError;

// /proc/net/udp as recorded on a Linux 6.x host: RTCD's sockets on 203.0.113.2:8443 (57 drops
// so far) and 0.0.0.0:8443, and a resolver on 127.0.0.1:53.
const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  112: 027100CB:20FB 00000000:0000 07 00000000:00000900 00 00000000     0        0 48213 2 00000000a1b2c3d4 57
  113: 00000000:20FB 00000000:0000 07 00000000:00000000 00 00000000     0        0 48214 2 00000000a1b2c3d5 0
  114: 0100007F:0035 00000000:0000 07 00000000:00000000 00 00000000   101        0 1201 2 00000000a1b2c3d6 0
";
// The same sockets at the end of the sample: 48213 dropped 40 more.
const UDP_END: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  112: 027100CB:20FB 00000000:0000 07 00000000:00000900 00 00000000     0        0 48213 2 00000000a1b2c3d4 97
  113: 00000000:20FB 00000000:0000 07 00000000:00000000 00 00000000     0        0 48214 2 00000000a1b2c3d5 0
";
// /proc/net/tcp: a listener on 0.0.0.0:8443 and an established connection on the port.
const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 027100CB:20FB 037100CB:C350 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 20 4 30 10 -1
";
// /proc/net/snmp's Udp rows, before and after a sample in which the host dropped 5.
const SNMP_START: &str = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1520 14 907 1535 905 3 2 0 0
";
const SNMP_END: &str = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1620 14 912 1635 910 3 2 0 0
";

fn owner(pid: u32, process: &str) -> Owner {
    Owner {
        pid,
        process: process.into(),
        exe: None,
    }
}

/// A holder whose comm says nothing (a Go binary renamed its thread, a wrapper) but whose
/// executable is RTCD's.
fn owner_exe(pid: u32, process: &str, exe: &str) -> Owner {
    Owner {
        exe: Some(exe.into()),
        ..owner(pid, process)
    }
}

fn held(o: Option<Owner>) -> Holders {
    Holders {
        all: o.iter().cloned().collect(),
        main: o,
    }
}

fn on_8443(text: &str, proto: Proto) -> Vec<Sock> {
    let table = parse_table(text, proto);
    crate::doctor::procnet::on_port(&table, 8443, &[], proto == Proto::Tcp)
        .into_iter()
        .cloned()
        .collect()
}

fn ports_facts(udp_owner: Option<Owner>) -> PortFacts {
    two_owners(udp_owner.clone(), udp_owner, OwnerVisibility::Full)
}

/// The recorded tables with each port's holder as the `/proc/*/fd` scan found it.
fn two_owners(udp: Option<Owner>, tcp: Option<Owner>, visibility: OwnerVisibility) -> PortFacts {
    PortFacts {
        ice_udp: 8443,
        ice_tcp: 8443,
        udp_error: None,
        udp: on_8443(UDP, Proto::Udp),
        tcp: on_8443(TCP, Proto::Tcp),
        udp_holders: held(udp),
        tcp_holders: held(tcp),
        visibility,
    }
}

fn ids(out: &Judged) -> Vec<(String, Severity)> {
    out.findings
        .iter()
        .map(|f| (f.id.clone(), f.severity))
        .collect()
}

fn statuses(out: &Judged) -> Vec<(String, Status)> {
    out.checks
        .iter()
        .map(|c| (c.id.clone(), c.status))
        .collect()
}

fn id(f: FindingId, s: Severity) -> (String, Severity) {
    (f.as_str().to_string(), s)
}

fn st(id: &str, s: Status) -> (String, Status) {
    (id.to_string(), s)
}

#[test]
fn ports_held_by_rtcd_pass() {
    let mut out = Judged::default();
    ports(
        &ports_facts(Some(owner(812, "rtcd"))),
        "config.toml",
        None,
        &mut out,
    );
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(
        statuses(&out),
        [st("udp_port", Status::Pass), st("tcp_port", Status::Pass)]
    );
    assert_eq!(
        out.checks[0].detail,
        "UDP 8443 on 0.0.0.0, 203.0.113.2: 2 socket(s) held by rtcd (pid 812)"
    );
    assert_eq!(
        out.checks[1].detail,
        "TCP 8443 listening on 0.0.0.0, held by rtcd (pid 812)"
    );
}

/// On a Mattermost host without RTCD the plugin's process holds the port: never "kill it".
#[test]
fn ports_held_by_the_calls_plugin_are_not_another_process() {
    for name in ["plugin-linux-am", "mattermost"] {
        let mut out = Judged::default();
        ports(
            &ports_facts(Some(owner(4242, name))),
            "config.toml",
            None,
            &mut out,
        );
        let ids: Vec<&str> = out.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["calls_plugin_holds_port"], "{name}");
        assert_eq!(out.findings[0].severity, Severity::Info);
        assert!(
            out.findings[0].fix.contains("--calls-config"),
            "{:?}",
            out.findings[0]
        );
        assert!(
            !out.findings[0].fix.contains("kill"),
            "{:?}",
            out.findings[0]
        );
        assert_eq!(statuses(&out)[0], st("udp_port", Status::Pass));
    }
}

/// What `udp_port`/`tcp_port` say for each holder the scan can find. `plugin`: the Calls
/// plugin's integrated server is the media server. Only a holder identified as the server
/// passes; one the doctor cannot see is skipped with what to do, never passed.
#[test]
fn ports_by_holder() {
    use OwnerVisibility::{Full, Late, NotRoot};
    let rtcd = || Some(owner(812, "rtcd"));
    let ps = || Some(owner(1844, "probe-server"));
    let mm = || Some(owner(4242, "mattermost"));
    type Case = (
        &'static str,
        bool,
        Option<Owner>,
        Option<Owner>,
        OwnerVisibility,
        [Status; 2],
        Vec<(FindingId, Severity)>,
    );
    let cases: Vec<Case> = vec![
        (
            "RTCD on both",
            false,
            rtcd(),
            rtcd(),
            Full,
            [Status::Pass; 2],
            vec![],
        ),
        (
            "RTCD by its executable's name",
            false,
            Some(owner_exe(812, "main", "rtcd-linux-amd64")),
            Some(owner_exe(812, "main", "rtcd-linux-amd64")),
            Full,
            [Status::Pass; 2],
            vec![],
        ),
        (
            "hidden without root",
            false,
            None,
            None,
            NotRoot,
            [Status::Skipped; 2],
            vec![],
        ),
        (
            // RTCD's Docker deployment with Docker's userland proxy: one docker-proxy per
            // protocol holds the host's sockets. Never a process to kill.
            "published by docker-proxy",
            false,
            Some(owner(2101, "docker-proxy")),
            Some(owner(2102, "docker-proxy")),
            Full,
            [Status::Skipped; 2],
            vec![],
        ),
        (
            "published by rootless Podman",
            true,
            Some(owner_exe(3101, "pasta.avx2", "pasta.avx2")),
            Some(owner_exe(3101, "pasta.avx2", "pasta.avx2")),
            Full,
            [Status::Skipped; 2],
            vec![],
        ),
        (
            "scan ran out of time",
            false,
            None,
            None,
            Late,
            [Status::Skipped; 2],
            vec![],
        ),
        (
            "root sees no holder",
            false,
            None,
            None,
            Full,
            [Status::Skipped; 2],
            vec![],
        ),
        (
            "a leftover probe-server on both",
            false,
            ps(),
            ps(),
            Full,
            [Status::Warn; 2],
            vec![(FindingId::RtcdPortOtherProcess, Severity::Warning)],
        ),
        (
            "RTCD on UDP, nc on TCP",
            false,
            rtcd(),
            Some(owner(77, "nc")),
            Full,
            [Status::Pass, Status::Warn],
            vec![(FindingId::RtcdPortOtherProcess, Severity::Warning)],
        ),
        (
            "the Calls plugin on an RTCD host",
            false,
            mm(),
            mm(),
            Full,
            [Status::Pass; 2],
            vec![(FindingId::CallsPluginHoldsPort, Severity::Info)],
        ),
        (
            "plugin host: its own process",
            true,
            mm(),
            mm(),
            Full,
            [Status::Pass; 2],
            vec![],
        ),
        (
            "plugin host: an RTCD holds the port",
            true,
            rtcd(),
            rtcd(),
            Full,
            [Status::Warn; 2],
            vec![(FindingId::RtcdPortOtherProcess, Severity::Warning)],
        ),
        (
            "plugin host: hidden",
            true,
            None,
            None,
            NotRoot,
            [Status::Skipped; 2],
            vec![],
        ),
    ];
    for (name, plugin, udp, tcp, v, want, findings) in cases {
        let mut out = Judged {
            plugin,
            ..Judged::default()
        };
        ports(&two_owners(udp, tcp, v), "config.toml", None, &mut out);
        assert_eq!(
            statuses(&out),
            [st("udp_port", want[0]), st("tcp_port", want[1])],
            "{name}: {:?}",
            out.checks
        );
        let want_ids: Vec<_> = findings.into_iter().map(|(f, s)| id(f, s)).collect();
        assert_eq!(ids(&out), want_ids, "{name}");
        for c in out.checks.iter().filter(|c| c.status == Status::Skipped) {
            let says = if name.starts_with("published") {
                c.detail.contains("forwards it into a container") && c.detail.contains("nsenter")
            } else {
                c.detail.ends_with(v.unknown_holder())
            };
            assert!(says, "{name}: {}", c.detail);
        }
    }
}

#[test]
fn unknown_holder_details_say_what_to_do() {
    let mut out = Judged::default();
    ports(
        &two_owners(None, None, OwnerVisibility::NotRoot),
        "c",
        None,
        &mut out,
    );
    assert_eq!(
        out.checks[0].detail,
        "skipped: UDP 8443 on 0.0.0.0, 203.0.113.2: 2 socket(s) held by a process the doctor cannot \
         identify (other users' processes are hidden from it: run the doctor as root)"
    );
    assert_eq!(
        out.checks[1].detail,
        "skipped: TCP 8443 listening on 0.0.0.0, held by a process the doctor cannot identify (other \
         users' processes are hidden from it: run the doctor as root)"
    );
    let mut out = Judged::default();
    ports(
        &two_owners(None, None, OwnerVisibility::Late),
        "c",
        None,
        &mut out,
    );
    assert!(out.checks[1]
        .detail
        .ends_with("ran out of time: run the doctor again)"));
}

/// One process on both ports gets one finding naming both; a second process its own.
#[test]
fn another_process_is_named_once_with_its_kill() {
    let mut out = Judged::default();
    let ps = owner(1844, "probe-server");
    ports(
        &two_owners(Some(ps.clone()), Some(ps), OwnerVisibility::Full),
        "c",
        None,
        &mut out,
    );
    assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
    assert_eq!(
        out.findings[0].summary,
        "UDP and TCP port 8443 are held by probe-server (pid 1844), not by RTCD"
    );
    assert!(out.findings[0].fix.contains("`kill 1844`"));
    assert_eq!(
        out.checks[1].detail,
        "TCP 8443 listening on 0.0.0.0, held by probe-server (pid 1844)"
    );

    let mut out = Judged::default();
    let facts = two_owners(
        Some(owner(812, "rtcd")),
        Some(owner(77, "nc")),
        OwnerVisibility::Full,
    );
    ports(&facts, "c", None, &mut out);
    assert_eq!(
        out.findings[0].summary,
        "TCP port 8443 is held by nc (pid 77), not by RTCD"
    );
}

/// Nothing at all: RTCD is down, one error; nothing on TCP only: the fallback is off, a
/// warning like its check (users whose networks block UDP cannot join).
#[test]
fn nothing_listening_and_unreadable_tables() {
    let mut p = ports_facts(None);
    p.udp.clear();
    p.tcp.clear();
    let mut out = Judged::default();
    ports(&p, "/opt/rtcd/config.toml", None, &mut out);
    assert_eq!(
        ids(&out),
        [id(FindingId::RtcdNotListening, Severity::Error)]
    );
    assert_eq!(
        statuses(&out),
        [st("udp_port", Status::Fail), st("tcp_port", Status::Fail)]
    );
    assert!(out.findings[0].fix.contains("/opt/rtcd/config.toml"));
    assert_eq!(
        out.checks[1].detail,
        "nothing listens on TCP 8443 either (RTCD is not running: see udp_port)"
    );
    // RTCD found by other means (its API port, its name): in this network namespace, the file
    // given is not its config; in another one, a container; unknown, either.
    let running = |same_netns| Running {
        pid: 6759,
        name: "rtcd",
        same_netns,
    };
    let mut out = Judged::default();
    ports(&p, "/tmp/other.toml", Some(running(Some(true))), &mut out);
    let f = &out.findings[0];
    assert!(
        f.summary.contains(
            "although RTCD runs (rtcd, pid 6759): it runs with another configuration than /tmp/other.toml"
        ) && f.fix.contains("ps -o args= -p 6759")
            && !f.fix.contains("nsenter"),
        "{f:?}"
    );
    assert_eq!(
        out.checks[1].detail,
        "nothing listens on TCP 8443 either (RTCD runs elsewhere: see udp_port)"
    );
    let mut out = Judged::default();
    ports(&p, "/tmp/other.toml", Some(running(Some(false))), &mut out);
    let f = &out.findings[0];
    assert!(
        f.summary
            .contains("in another network namespace (a container)")
            && f.fix.contains("nsenter -t 6759 -n")
            && !f.summary.contains("another configuration"),
        "{f:?}"
    );
    let mut out = Judged::default();
    ports(&p, "/tmp/other.toml", Some(running(None)), &mut out);
    let f = &out.findings[0];
    assert!(
        f.summary.contains("another configuration") && f.summary.contains("container"),
        "{f:?}"
    );

    let mut p = ports_facts(Some(owner(812, "rtcd")));
    p.tcp.clear();
    let mut out = Judged::default();
    ports(&p, "c", None, &mut out);
    assert_eq!(
        ids(&out),
        [id(FindingId::TcpFallbackOff, Severity::Warning)]
    );
    assert_eq!(
        statuses(&out),
        [st("udp_port", Status::Pass), st("tcp_port", Status::Warn)]
    );

    let mut p = ports_facts(None);
    p.udp_error = Some("cannot read /proc/net/udp: denied".into());
    let mut out = Judged::default();
    ports(&p, "c", None, &mut out);
    assert_eq!(out.checks[0].status, Status::Skipped);
    assert_eq!(
        out.checks[0].detail,
        "skipped: cannot read /proc/net/udp: denied"
    );
}

#[test]
fn socket_buffers_below_the_guide() {
    let mut out = Judged::default();
    let small = socket_buffers(
        &[
            ("net.core.rmem_max", Ok(212_992)),
            ("net.core.wmem_max", Ok(sysctl::RECOMMENDED)),
            ("net.core.optmem_max", Ok(20_480)),
        ],
        &mut out,
    );
    assert_eq!(
        small,
        [
            ("net.core.rmem_max", 212_992),
            ("net.core.optmem_max", 20_480)
        ]
    );
    assert_eq!(
        ids(&out),
        [id(FindingId::SocketBuffersSmall, Severity::Warning)]
    );
    assert_eq!(out.checks[0].status, Status::Warn);
    assert!(out.findings[0]
        .summary
        .contains("net.core.rmem_max = 212992, net.core.optmem_max = 20480"));
    assert!(out.findings[0]
        .fix
        .contains("sysctl -w net.core.rmem_max=16777216"));

    let mut out = Judged::default();
    let ok = [("net.core.rmem_max", Ok(sysctl::RECOMMENDED))];
    assert!(socket_buffers(&ok, &mut out).is_empty());
    assert_eq!(
        (out.checks[0].status, out.checks[0].detail.as_str()),
        (
            Status::Pass,
            "net.core.rmem_max = 16777216 (guide: 16777216 each)"
        )
    );
    let mut out = Judged::default();
    let unread = [("net.core.rmem_max", Err("cannot read".to_string()))];
    socket_buffers(&unread, &mut out);
    assert_eq!(out.checks[0].status, Status::Skipped);
    assert!(out.findings.is_empty());
}

fn drops(start: &str, end: &str, udp_end: Option<&str>) -> DropFacts {
    DropFacts {
        port: 8443,
        addrs: Vec::new(),
        elapsed: 2.0,
        snmp_start: parse_snmp(start).ok_or_else(|| "no Udp rows".to_string()),
        snmp_end: parse_snmp(end).ok_or_else(|| "no Udp rows".to_string()),
        socks_start: on_8443(UDP, Proto::Udp),
        table_end: udp_end.map(|t| parse_table(t, Proto::Udp)),
    }
}

#[test]
fn udp_drops_on_rtcds_sockets_are_an_error() {
    let mut out = Judged::default();
    udp_drops(
        &drops(SNMP_START, SNMP_END, Some(UDP_END)),
        &rtcd_ports(),
        &[],
        &mut out,
    );
    assert_eq!(ids(&out), [id(FindingId::UdpReceiveDrops, Severity::Error)]);
    assert_eq!(out.checks[0].status, Status::Fail);
    assert_eq!(
        out.checks[0].detail,
        "over 2.0 s: RTCD's UDP 8443 sockets dropped 40 (20/s; 97 since they opened); host UDP RcvbufErrors +5, InErrors +5, SndbufErrors +0"
    );
    assert!(out.findings[0]
        .fix
        .contains("already at the guide's values"));
    let mut out = Judged::default();
    udp_drops(
        &drops(SNMP_START, SNMP_END, Some(UDP_END)),
        &rtcd_ports(),
        &[("net.core.rmem_max", 212_992)],
        &mut out,
    );
    assert!(out.findings[0].fix.starts_with("raise the buffer limits: "));
}

#[test]
fn udp_drops_of_the_host_only_warn() {
    let mut out = Judged::default();
    udp_drops(
        &drops(SNMP_START, SNMP_END, Some(UDP)),
        &rtcd_ports(),
        &[],
        &mut out,
    );
    assert_eq!(
        ids(&out),
        [id(FindingId::UdpReceiveDrops, Severity::Warning)]
    );
    assert!(out.findings[0]
        .summary
        .ends_with(", though not on RTCD's sockets"));
    // RTCD's sockets not measured: no claim about them.
    let mut out = Judged::default();
    udp_drops(
        &drops(SNMP_START, SNMP_END, None),
        &rtcd_ports(),
        &[],
        &mut out,
    );
    assert!(out.findings[0].summary.ends_with("`netstat -su`)"));
    assert_eq!(out.checks[0].status, Status::Warn);
}

#[test]
fn no_udp_drops_pass_and_unreadable_counters_skip() {
    let mut out = Judged::default();
    udp_drops(
        &drops(SNMP_START, SNMP_START, Some(UDP)),
        &rtcd_ports(),
        &[],
        &mut out,
    );
    assert!(out.findings.is_empty());
    assert_eq!(out.checks[0].status, Status::Pass);
    let mut out = Judged::default();
    udp_drops(
        &drops("Ip: 1\n", SNMP_END, Some(UDP)),
        &rtcd_ports(),
        &[],
        &mut out,
    );
    assert_eq!(
        (out.checks[0].status, out.checks[0].detail.as_str()),
        (Status::Skipped, "skipped: no Udp rows")
    );
}

/// RTCD holding both recorded ports.
fn rtcd_ports() -> PortFacts {
    ports_facts(Some(owner(812, "rtcd")))
}

/// The port's sockets are not known to be RTCD's: never "RTCD's sockets dropped 0". The
/// recorded tables' sockets drop 40 during the sample (UDP → UDP_END).
#[test]
fn udp_drops_only_count_rtcd_s_own_sockets() {
    use OwnerVisibility::{Full, NotRoot};
    let nothing = {
        let mut p = ports_facts(None);
        p.udp.clear();
        p
    };
    let ps = || Some(owner(1844, "probe-server"));
    // (case, port facts, socket drops at the end, host counters at the end, status, finding)
    type Case = (
        &'static str,
        PortFacts,
        &'static str,
        &'static str,
        Status,
        Option<Severity>,
    );
    let cases: Vec<Case> = vec![
        (
            "nothing listens",
            nothing.clone(),
            UDP,
            SNMP_START,
            Status::Skipped,
            None,
        ),
        (
            "nothing listens, host drops",
            nothing,
            UDP,
            SNMP_END,
            Status::Warn,
            Some(Severity::Warning),
        ),
        (
            "hidden holder, no drops",
            two_owners(None, None, NotRoot),
            UDP,
            SNMP_START,
            Status::Skipped,
            None,
        ),
        (
            "hidden holder drops",
            two_owners(None, None, NotRoot),
            UDP_END,
            SNMP_START,
            Status::Warn,
            Some(Severity::Warning),
        ),
        (
            "a probe-server's sockets drop",
            two_owners(ps(), ps(), Full),
            UDP_END,
            SNMP_START,
            Status::Skipped,
            None,
        ),
        (
            "RTCD's sockets drop",
            rtcd_ports(),
            UDP_END,
            SNMP_START,
            Status::Fail,
            Some(Severity::Error),
        ),
    ];
    for (name, p, udp_end, snmp_end, status, severity) in cases {
        let mut out = Judged::default();
        udp_drops(
            &drops(SNMP_START, snmp_end, Some(udp_end)),
            &p,
            &[],
            &mut out,
        );
        assert_eq!(out.checks[0].status, status, "{name}: {:?}", out.checks);
        let got: Vec<Severity> = out.findings.iter().map(|f| f.severity).collect();
        assert_eq!(got, severity.into_iter().collect::<Vec<_>>(), "{name}");
        let claims_rtcd = out.checks[0].detail.contains("RTCD's UDP")
            || out
                .findings
                .iter()
                .any(|f| f.summary.contains("RTCD's own"));
        assert_eq!(
            claims_rtcd,
            status == Status::Fail,
            "{name}: {:?}",
            out.checks
        );
    }
}

#[test]
fn udp_drops_say_why_rtcd_s_sockets_were_not_measured() {
    let mut out = Judged::default();
    let ps = Some(owner(1844, "probe-server"));
    let p = two_owners(ps.clone(), ps, OwnerVisibility::Full);
    udp_drops(
        &drops(SNMP_START, SNMP_START, Some(UDP_END)),
        &p,
        &[],
        &mut out,
    );
    assert_eq!(
        out.checks[0].detail,
        "skipped: RTCD's sockets were not measured: UDP 8443 is held by probe-server (pid 1844), not RTCD; over 2.0 s: host UDP RcvbufErrors +0, InErrors +0, SndbufErrors +0"
    );
    let mut out = Judged::default();
    let p = two_owners(None, None, OwnerVisibility::NotRoot);
    udp_drops(
        &drops(SNMP_START, SNMP_START, Some(UDP_END)),
        &p,
        &[],
        &mut out,
    );
    assert!(
        out.findings[0].summary.starts_with(
            "the sockets on UDP port 8443, held by a process the doctor cannot identify, dropped 40 datagrams"
        ),
        "{:?}",
        out.findings[0]
    );
    assert!(out.findings[0].fix.contains("ss -uapn 'sport = :8443'"));
    // The Calls plugin's server is Mattermost's process: its sockets are the server's.
    let mut out = Judged {
        plugin: true,
        ..Judged::default()
    };
    let mm = ports_facts(Some(owner(4242, "plugin-linux-am")));
    udp_drops(
        &drops(SNMP_START, SNMP_START, Some(UDP_END)),
        &mm,
        &[],
        &mut out,
    );
    assert_eq!(out.checks[0].status, Status::Fail);
}

fn cpu_facts(sample: CpuSample, load: Option<f64>) -> CpuFacts {
    CpuFacts {
        cores: 2,
        load,
        sample,
    }
}

/// 510 ticks at 100 Hz over 3 s: 170 % of one core, 85 % of two.
fn busy(o: Owner) -> CpuSample {
    CpuSample::Measured {
        owner: o,
        ticks: 510,
        secs: 3.0,
        ticks_per_sec: 100.0,
    }
}

#[test]
fn cpu_measured_over_the_sample() {
    let mut out = Judged::default();
    cpu(
        &cpu_facts(busy(owner(812, "rtcd")), Some(1.0)),
        &rtcd_ports(),
        &mut out,
    );
    assert_eq!(ids(&out), [id(FindingId::RtcdHighCpu, Severity::Warning)]);
    assert_eq!(
        out.checks[0].detail,
        "RTCD (pid 812) used 170 % of one core (85 % of the machine); load 1.00 on 2 core(s)"
    );
    let mut out = Judged::default();
    let exited = CpuSample::Exited {
        owner: owner(9, "rtcd"),
    };
    cpu(&cpu_facts(exited, None), &rtcd_ports(), &mut out);
    assert_eq!(
        (out.checks[0].status, out.checks[0].detail.as_str()),
        (
            Status::Skipped,
            "skipped: RTCD (pid 9) exited during the sample"
        )
    );
}

/// Only RTCD's process is RTCD: by its comm or its executable's name (as `rtcd_env` finds it),
/// or Mattermost's for the Calls plugin's server. Anything else is skipped with why.
#[test]
fn cpu_of_a_process_that_is_not_rtcd_is_not_rtcd_s() {
    use OwnerVisibility::{Full, NotRoot};
    let ps = || owner(1844, "probe-server");
    let nothing = {
        let mut p = ports_facts(None);
        p.udp.clear();
        p.tcp.clear();
        p
    };
    // (case, plugin, sample, port facts, detail: None = measured)
    type Case = (
        &'static str,
        bool,
        CpuSample,
        PortFacts,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "a leftover probe-server",
            false,
            busy(ps()),
            two_owners(Some(ps()), Some(ps()), Full),
            Some("skipped: RTCD's CPU was not measured: UDP 8443 is held by probe-server (pid 1844), not RTCD; load 0.50 on 2 core(s)"),
        ),
        (
            "a hidden holder",
            false,
            CpuSample::NotFound,
            two_owners(None, None, NotRoot),
            Some("skipped: RTCD's CPU was not measured: UDP 8443 is held by a process the doctor cannot identify (other users' processes are hidden from it: run the doctor as root); load 0.50 on 2 core(s)"),
        ),
        (
            "nothing listens",
            false,
            CpuSample::NotFound,
            nothing,
            Some("skipped: RTCD's CPU was not measured: nothing listens on its ports (UDP 8443, TCP 8443); load 0.50 on 2 core(s)"),
        ),
        (
            "the Calls plugin on an RTCD host",
            false,
            busy(owner(4242, "mattermost")),
            ports_facts(Some(owner(4242, "mattermost"))),
            Some("skipped: RTCD's CPU was not measured: UDP 8443 is held by mattermost (pid 4242), the Calls plugin's process, not RTCD; load 0.50 on 2 core(s)"),
        ),
        (
            "RTCD known by its executable",
            false,
            busy(owner_exe(812, "main", "rtcd")),
            ports_facts(Some(owner_exe(812, "main", "rtcd"))),
            None,
        ),
        (
            "plugin host: its own process",
            true,
            busy(owner(4242, "plugin-linux-am")),
            ports_facts(Some(owner(4242, "plugin-linux-am"))),
            None,
        ),
        (
            "plugin host: an RTCD is not the plugin",
            true,
            busy(owner(812, "rtcd")),
            rtcd_ports(),
            Some("skipped: The Calls plugin's RTC server's CPU was not measured: UDP 8443 is held by rtcd (pid 812), not the Calls plugin's RTC server; load 0.50 on 2 core(s)"),
        ),
    ];
    for (name, plugin, sample, p, want) in cases {
        let mut out = Judged {
            plugin,
            ..Judged::default()
        };
        cpu(&cpu_facts(sample, Some(0.5)), &p, &mut out);
        match want {
            Some(detail) => {
                assert_eq!(out.checks[0].status, Status::Skipped, "{name}");
                assert_eq!(out.checks[0].detail, detail, "{name}");
            }
            None => assert!(
                out.checks[0].detail.contains("(pid ") && out.checks[0].status != Status::Skipped,
                "{name}: {:?}",
                out.checks
            ),
        }
    }
}

#[test]
fn cpu_verdict_thresholds() {
    let (c, f) = judge_cpu(7, 170.0, 2, Some(1.0));
    assert_eq!(c.status, Status::Warn);
    assert!(f.is_some_and(|f| f.is(FindingId::RtcdHighCpu)));
    let (c, f) = judge_cpu(7, 150.0, 2, Some(1.0));
    assert_eq!(
        (c.status, f.is_none()),
        (Status::Pass, true),
        "75 % of the machine is below 80 %"
    );
    let (c, f) = judge_cpu(7, 10.0, 2, Some(4.5));
    assert_eq!(
        (c.status, f.is_none()),
        (Status::Warn, true),
        "an overloaded host warns without blaming RTCD"
    );
    assert!(c.detail.contains("overloaded"));
    let (c, _) = judge_cpu(7, 10.0, 0, None);
    assert_eq!(
        c.status,
        Status::Pass,
        "zero cores reported is treated as one"
    );
}

fn response(status: u16, reason: &str, body: &str) -> Result<Response, FetchError> {
    Ok(Response {
        head: Head {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        },
        body: body.as_bytes().to_vec(),
    })
}

const VERSION: &str = r#"{"buildHash":"b3dee59","buildDate":"2025-10-01 10:00","buildVersion":"v1.2.6","goVersion":"go1.24.6","goOS":"linux","goArch":"amd64"}"#;
// RTCD's /metrics: 30 connected, 10 failed (25 %).
const METRICS: &str = "rtcd_rtc_conn_states_total{type=\"connected\"} 30\nrtcd_rtc_conn_states_total{type=\"failed\"} 10\nrtcd_rtc_sessions_total{groupID=\"g\"} 2\n";

fn api_side(answers: Option<ApiFacts>) -> ApiSide {
    ApiSide {
        url: Url::parse("http://127.0.0.1:8045").unwrap(),
        url_source: "from [api] http.listen_address \":8045\"".into(),
        min_version: "v0.17.0".into(),
        local: true,
        listening: 1,
        owner: Some(owner(812, "rtcd")),
        answers,
    }
}

#[test]
fn api_answers_as_rtcd() {
    let facts = ApiFacts {
        version: response(200, "OK", VERSION),
        metrics: Some(response(200, "OK", METRICS)),
    };
    let mut out = Judged::default();
    let (version, json) = api(&api_side(Some(facts)), &mut out);
    assert_eq!(version.as_deref(), Some("v1.2.6"));
    assert_eq!(json.as_deref(), Some(VERSION));
    assert_eq!(
        statuses(&out),
        [
            st("api_version", Status::Pass),
            st("api_metrics", Status::Warn)
        ]
    );
    assert_eq!(
        out.checks[0].detail,
        "http://127.0.0.1:8045/version: RTCD v1.2.6 (build b3dee59, 2025-10-01 10:00, linux/amd64)"
    );
    assert_eq!(
        ids(&out),
        [id(FindingId::RtcdConnectionsFailing, Severity::Warning)]
    );
}

#[test]
fn api_silent_refused_or_not_rtcd() {
    let mut out = Judged::default();
    assert_eq!(api(&api_side(None), &mut out), (None, None));
    assert_eq!(
        ids(&out),
        [id(FindingId::RtcdApiUnreachable, Severity::Error)]
    );
    assert_eq!(
        out.checks[0].detail,
        "skipped: did not finish within its deadline"
    );

    let refused = ApiFacts {
        version: Err(FetchError::Connect(
            "TCP connect to 127.0.0.1:8045 failed: refused".into(),
        )),
        metrics: None,
    };
    let mut out = Judged::default();
    api(&api_side(Some(refused)), &mut out);
    assert_eq!(
        statuses(&out),
        [
            st("api_version", Status::Fail),
            st("api_metrics", Status::Skipped)
        ]
    );
    assert!(out.checks[0]
        .detail
        .contains(": no connection: TCP connect"));
    assert!(out.findings[0]
        .summary
        .ends_with("(rtcd (pid 812) listens on TCP 8045)"));

    let other = ApiFacts {
        version: response(200, "OK", "<html>"),
        metrics: Some(response(404, "Not Found", "")),
    };
    let mut out = Judged::default();
    assert_eq!(api(&api_side(Some(other)), &mut out), (None, None));
    assert_eq!(
        statuses(&out),
        [
            st("api_version", Status::Fail),
            st("api_metrics", Status::Warn)
        ]
    );
    assert_eq!(out.checks[1].detail, "GET /metrics answered 404 Not Found");
    assert!(out.findings[0]
        .summary
        .contains("without RTCD's JSON (no buildVersion)"));
}

#[test]
fn api_listener_in_words() {
    let mut a = api_side(None);
    assert_eq!(listener(&a), "rtcd (pid 812) listens on TCP 8045");
    a.owner = None;
    assert_eq!(
        listener(&a),
        "a process the doctor cannot see listens on TCP 8045"
    );
    a.listening = 0;
    assert_eq!(listener(&a), "nothing listens on TCP port 8045 here");
    a.local = false;
    assert_eq!(listener(&a), "127.0.0.1 is not an address of this host");
}

fn targets() -> Vec<nft::Target> {
    let t = |proto, port, what| nft::Target { proto, port, what };
    vec![
        t(Proto::Udp, 8443, "RTCD's ICE port (media over UDP)"),
        t(Proto::Tcp, 8443, "RTCD's ICE TCP port (the TCP fallback)"),
        t(Proto::Tcp, 8045, "RTCD's API port (Mattermost → RTCD)"),
    ]
}

#[test]
fn firewall_from_a_recorded_ruleset() {
    let recorded: serde_json::Value =
        serde_json::from_str(include_str!("../testdata/nft-ruleset.json")).unwrap();
    let mut out = Judged::default();
    let facts = FirewallFacts {
        targets: targets(),
        ruleset: Some(Ok(recorded)),
    };
    firewall(&facts, &mut out);
    assert_eq!(out.checks[0].status, Status::Fail);
    let sev: Vec<Severity> = out.findings.iter().map(|f| f.severity).collect();
    assert_eq!(
        sev,
        [
            Severity::Error,
            Severity::Warning,
            Severity::Error,
            Severity::Error
        ]
    );
    assert!(out
        .findings
        .iter()
        .all(|f| f.is(FindingId::HostFirewallBlocks)));
    assert!(out.checks[0]
        .detail
        .starts_with("8443/udp dropped by table inet filter, chain input: rule `udp dport @icep drop` (handle 9)"));
    assert!(out.findings[0]
        .fix
        .contains("nft delete rule inet filter input handle 9"));
    assert!(out.findings[1].summary.contains("for some packets"));
}

#[test]
fn firewall_open_unreadable_or_late() {
    let empty = serde_json::json!({"nftables": [{"metainfo": {"json_schema_version": 1}}]});
    let mut out = Judged::default();
    firewall(
        &FirewallFacts {
            targets: targets(),
            ruleset: Some(Ok(empty)),
        },
        &mut out,
    );
    assert_eq!(
        (out.checks[0].status, out.checks[0].detail.as_str()),
        (
            Status::Pass,
            "nftables input path does not drop 8443/udp, 8443/tcp, 8045/tcp"
        )
    );
    let mut out = Judged::default();
    let no_nft = FirewallFacts {
        targets: targets(),
        ruleset: Some(Err("nft is not installed".into())),
    };
    firewall(&no_nft, &mut out);
    let late = FirewallFacts {
        targets: targets(),
        ruleset: None,
    };
    firewall(&late, &mut out);
    assert_eq!(
        statuses(&out),
        [
            st("host_firewall", Status::Skipped),
            st("host_firewall", Status::Skipped)
        ]
    );
    assert_eq!(out.checks[0].detail, "skipped: nft is not installed");
    assert!(out.findings.is_empty());
}

/// A key RTCD does not know is named, with the one meant; none, no finding.
#[test]
fn unknown_keys_are_a_warning_naming_the_key_meant() {
    let mut s = setup(Source::Own, None);
    let mut out = Judged::default();
    unknown_keys(&s, &mut out);
    assert!(out.findings.is_empty());
    s.unknown_keys = probe_proto::rtcd::keys::unknown_keys(
        &"[rtc]\nicehostoverride = \"203.0.113.7\"\n"
            .parse()
            .unwrap(),
    );
    s.unknown_keys.extend(probe_proto::rtcd::keys::unknown_env([
        "RTCD_RTC_TURN_STATICAUTHSECRET",
    ]));
    unknown_keys(&s, &mut out);
    assert_eq!(
        ids(&out),
        [id(FindingId::RtcdConfigUnknownKey, Severity::Warning)]
    );
    assert!(
        out.findings[0].summary.contains(
            "in /opt/rtcd/config.toml: rtc.icehostoverride (did you mean rtc.ice_host_override?)"
        ),
        "{}",
        out.findings[0].summary
    );
    assert!(
        out.findings[0].summary.contains(
            "RTCD_RTC_TURN_STATICAUTHSECRET (did you mean RTCD_RTC_TURNCONFIG_STATICAUTHSECRET?)"
        ),
        "{}",
        out.findings[0].summary
    );
}

fn setup(source: Source, pid: Option<u32>) -> Setup {
    Setup {
        calls_api: None,
        config_source: "/opt/rtcd/config.toml".into(),
        where_: "/opt/rtcd/config.toml".into(),
        env: RtcdEnv {
            target: &crate::rtcd_env::RTCD,
            source,
            vars: Default::default(),
            notes: Vec::new(),
            pid,
            unit: Some("rtcd.service".into()),
            ignored_own: Vec::new(),
        },
        env_error: None,
        deployment: probe_proto::calls::Deployment::Rtcd,
        config_age: None,
        rtcd_same_netns: None,
        unknown_keys: Vec::new(),
    }
}

#[test]
fn a_file_changed_after_rtcd_started_is_not_what_rtcd_runs() {
    use crate::doctor::facts::ConfigAge;
    let age = |modified_s, rtcd_started_s| {
        let mut s = setup(Source::Own, Some(812));
        s.config_age = Some(ConfigAge {
            modified_s,
            rtcd_started_s,
            pid: 812,
        });
        let mut out = Judged::default();
        config_age(&s, &mut out);
        out
    };
    // Edited after RTCD started (RTCD reads it only then).
    let out = age(1_796_000_100, 1_796_000_000);
    assert_eq!(out.checks[0].status, Status::Warn);
    assert_eq!(
        ids(&out),
        [id(
            FindingId::RtcdConfigChangedSinceStart,
            Severity::Warning
        )]
    );
    assert!(
        out.findings[0].summary.contains("/opt/rtcd/config.toml"),
        "{}",
        out.findings[0].summary
    );
    assert!(out.findings[0].fix.starts_with("Restart RTCD"));
    // Edited, then RTCD restarted: what the file says is what RTCD runs.
    let out = age(1_796_000_000, 1_796_000_100);
    assert_eq!(out.checks[0].status, Status::Pass);
    assert!(out.findings.is_empty());
    // Within the start time's rounding: not "after".
    let out = age(1_796_000_002, 1_796_000_000);
    assert!(out.findings.is_empty());
    // Unknown (no file given, RTCD not found): no row, no finding.
    let mut out = Judged::default();
    config_age(&setup(Source::Own, None), &mut out);
    assert!(out.checks.is_empty() && out.findings.is_empty());
}

#[test]
fn environment_source_and_refused_variables() {
    let mut out = Judged::default();
    environment(
        &setup(
            Source::Systemd {
                unit: "rtcd.service".into(),
            },
            None,
        ),
        &mut out,
    );
    assert_eq!(out.checks[0].status, Status::Pass);
    assert!(out.findings.is_empty());
    let mut s = setup(Source::Own, Some(812));
    s.env_error = Some(probe_proto::rtcd::ConfigError {
        key: "RTCD_RTC_ICEPORTUDP".into(),
        rtcd_message: "envconfig.Process: assigning RTCD_RTC_ICEPORTUDP".into(),
        hint: "set it to a port number".into(),
    });
    let mut out = Judged::default();
    environment(&s, &mut out);
    assert_eq!(
        out.checks[0].status,
        Status::Warn,
        "RTCD runs but its environment was not read"
    );
    assert_eq!(
        ids(&out),
        [id(FindingId::RtcdConfigInvalid, Severity::Error)]
    );
    assert_eq!(out.findings[0].fix, "set it to a port number");
}

#[test]
fn advertised_names_the_rules_or_is_late() {
    let mut out = Judged::default();
    let (stun, rules) = advertised(None, &mut out);
    assert!(stun.is_empty() && rules.is_none());
    assert_eq!(out.checks[0].id, "rtcd_config");
    let outcome = advertise::Outcome {
        check: Check::new("rtcd_config", Status::Pass, "RTCD advertises 203.0.113.2"),
        findings: Vec::new(),
        stun_now: HashMap::from([(
            "10.0.0.9".parse().unwrap(),
            Some("203.0.113.2".parse().unwrap()),
        )]),
    };
    let choice = super::super::choose_rules(None, Some("v1.2.6"));
    let mut out = Judged::default();
    let (stun, rules) = advertised(Some(&(outcome, choice.clone())), &mut out);
    assert_eq!(stun.len(), 1);
    assert_eq!(rules, Some(choice.clone()));
    assert_eq!(
        out.checks[0].detail,
        format!("RTCD advertises 203.0.113.2; {}", choice.text())
    );
}

// RTCD's JSON log: private host candidates in its ICE traces, a guide pattern, and a start
// whose STUN request failed for 10.0.0.9.
const LOG: &str = r#"{"timestamp":"2026-11-20 08:00:00.001 Z","level":"info","msg":"service: starting up","caller":"service/service.go:67"}
{"timestamp":"2026-11-20 08:00:05.002 Z","level":"warn","msg":"failed to get public ip address for local interface","localAddr":"10.0.0.9","error":"i/o timeout"}
{"timestamp":"2026-11-20 09:29:08.935 Z","level":"trace","msg":"Ping STUN from udp4 host 172.31.29.117:8443 (resolved: 172.31.29.117:8443) to udp4 host 198.51.100.7:59737"}
{"timestamp":"2026-11-20 09:29:23.935 Z","level":"debug","msg":"ice failed","caller":"rtc/sfu.go:400"}
"#;

#[test]
fn log_patterns_private_candidates_and_stun_at_start() {
    let scan = logs::scan(LOG);
    let s = setup(
        Source::Systemd {
            unit: "rtcd.service".into(),
        },
        Some(812),
    );
    let stun_now = HashMap::from([(
        "10.0.0.9".parse().unwrap(),
        Some("203.0.113.2".parse().unwrap()),
    )]);
    let mut out = Judged::default();
    log(&LogFacts::Read(scan.clone()), &s, &stun_now, &mut out);
    let got: Vec<&str> = out.findings.iter().map(|f| f.id.as_str()).collect();
    assert!(got.contains(&"log_private_candidates"), "{got:?}");
    assert!(got.contains(&"log_error_patterns"), "{got:?}");
    assert_eq!(out.checks[0].id, "logs");
    assert!(
        out.checks[0].detail.contains("172.31.29.117 (×1)"),
        "{}",
        out.checks[0].detail
    );
    let f = out
        .findings
        .iter()
        .find(|f| f.is(FindingId::RtcdStunFailedAtStart))
        .expect("STUN failed at the start and answers now");
    assert_eq!(f.severity, Severity::Error);
    assert!(
        f.fix.contains("`systemctl restart rtcd.service`"),
        "{}",
        f.fix
    );
    assert_eq!(out.checks[0].status, Status::Fail);
    assert!(
        out.checks[0]
            .detail
            .contains("; STUN at RTCD's last start (2026-11-20 08:00:00.001 Z): 10.0.0.9 failed"),
        "{}",
        out.checks[0].detail
    );
    // Without STUN answering now, the failure at start is history, not a finding.
    let mut out = Judged::default();
    log(&LogFacts::Read(scan), &s, &HashMap::new(), &mut out);
    assert!(!out
        .findings
        .iter()
        .any(|f| f.is(FindingId::RtcdStunFailedAtStart)));
    assert_eq!(out.checks[0].status, Status::Warn);
}

#[test]
fn a_clean_log_passes_and_missing_logs_skip() {
    let s = setup(Source::Own, None);
    let mut out = Judged::default();
    let clean = logs::scan("{\"level\":\"info\",\"msg\":\"rtc: new session\"}\n");
    log(&LogFacts::Read(clean), &s, &HashMap::new(), &mut out);
    log(&LogFacts::NoSource, &s, &HashMap::new(), &mut out);
    log(&LogFacts::Late, &s, &HashMap::new(), &mut out);
    log(
        &LogFacts::Failed("cannot read rtcd.log: gone".into()),
        &s,
        &HashMap::new(),
        &mut out,
    );
    assert!(out.findings.is_empty());
    let got: Vec<(Status, &str)> = out
        .checks
        .iter()
        .map(|c| (c.status, c.detail.as_str()))
        .collect();
    assert_eq!(got[0].0, Status::Pass);
    assert!(got[1].1.starts_with("skipped: no --rtcd-log given"));
    assert_eq!(got[2].1, "skipped: did not finish within its deadline");
    assert_eq!(got[3].1, "skipped: cannot read rtcd.log: gone");
}

/// The whole judgement of one recorded host: check order, sorted findings, the report.
#[test]
fn judge_assembles_the_report() {
    let facts = HostFacts {
        started_ms: 1_795_651_200_123,
        duration_ms: 3012,
        host: "rtc1".into(),
        setup: setup(
            Source::Systemd {
                unit: "rtcd.service".into(),
            },
            Some(812),
        ),
        ports: ports_facts(Some(owner(812, "rtcd"))),
        buffers: vec![("net.core.rmem_max", Ok(212_992))],
        drops: drops(SNMP_START, SNMP_START, Some(UDP)),
        cpu: cpu_facts(CpuSample::NotFound, None),
        api: api_side(None),
        firewall: FirewallFacts {
            targets: targets(),
            ruleset: None,
        },
        advertise: None,
        log: LogFacts::NoSource,
        nat: crate::doctor::facts::NatFacts::NotRun {
            why: "--no-nat-check".into(),
        },
    };
    let done = judge(facts);
    let r = &done.report;
    let order: Vec<&str> = r.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        order,
        [
            "udp_port",
            "tcp_port",
            "socket_buffers",
            "udp_drops",
            "cpu",
            "api_version",
            "host_firewall",
            "rtcd_env",
            "rtcd_config",
            "rtcd_nat",
            "logs"
        ]
    );
    let found: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(found, ["rtcd_api_unreachable", "socket_buffers_small"]);
    assert!(!r.ok);
    assert_eq!(r.started_at, "2026-11-26T00:00:00.123Z");
    assert_eq!((r.duration_ms, r.host.as_str()), (3012, "rtc1"));
    assert_eq!(r.rtcd.udp_owner, Some(owner(812, "rtcd")));
    assert_eq!(r.rtcd.api, "http://127.0.0.1:8045");
    assert_eq!(
        (r.rtcd.pion_rules, r.rtcd.version_source.as_deref()),
        (None, None)
    );
    assert!(done.version_json.is_none() && done.log.is_none());
}

/// `calls_plugin`: Mattermost's API on the Calls plugin (`--mattermost`).
#[test]
fn calls_plugin_status_from_the_api() {
    use crate::doctor::facts::CallsApiFacts;
    use probe_proto::calls::mattermost::PluginStatus;
    let status = |state: i64, error: &str| PluginStatus {
        plugin_id: "com.mattermost.calls".into(),
        cluster_id: String::new(),
        state,
        error: error.into(),
        version: "1.11.0".into(),
    };
    let facts = |status: Result<Vec<PluginStatus>, String>| CallsApiFacts {
        base: "http://127.0.0.1:8065".into(),
        status,
        rtcd_line: None,
    };
    let run = |f: Option<&CallsApiFacts>| {
        let mut out = Judged::default();
        super::calls_plugin(f, &mut out);
        out
    };
    let ok = run(Some(&facts(Ok(vec![status(2, "")]))));
    assert_eq!(ok.checks[0].status, Status::Pass);
    assert_eq!(
        ok.checks[0].detail,
        "http://127.0.0.1:8065: Calls v1.11.0 running"
    );
    assert!(ok.findings.is_empty());
    let failed = run(Some(&facts(Ok(vec![status(3, "rtc: failed to listen")]))));
    assert_eq!(failed.checks[0].status, Status::Fail);
    assert_eq!(
        failed.findings[0].id,
        FindingId::CallsPluginNotRunning.as_str()
    );
    assert!(
        failed.findings[0]
            .summary
            .contains("v1.11.0 failed to start: rtc: failed to listen"),
        "{}",
        failed.findings[0].summary
    );
    let missing = run(Some(&facts(Ok(vec![]))));
    assert!(missing.findings[0]
        .summary
        .contains("no Calls plugin installed"));
    let unreadable = run(Some(&facts(Err("Mattermost answered 403".into()))));
    assert_eq!(unreadable.checks[0].status, Status::Skipped);
    assert!(unreadable.findings.is_empty());
    // From config.json alone the status is unknown: skipped, saying how to get it.
    let file = run(None);
    assert_eq!(file.checks[0].status, Status::Skipped);
    assert!(file.checks[0]
        .detail
        .contains("--mattermost URL --mm-token"));
}

/// The firewall check's ports: RTCD's three, the Calls plugin's two (its integrated server has
/// no API port).
#[test]
fn firewall_targets_per_deployment() {
    let ports = |api| {
        crate::doctor::gather::firewall_targets(8443, 8443, api)
            .iter()
            .map(nft::Target::label)
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(Some(8045)), ["8443/udp", "8443/tcp", "8045/tcp"]);
    assert_eq!(ports(None), ["8443/udp", "8443/tcp"]);
    let plugin = crate::doctor::gather::firewall_targets(8443, 8443, None);
    assert!(plugin.iter().all(|t| !t.what.contains("RTCD")));
}
