//! The host's own rules: RTCD's ports and their holders, socket buffer limits, UDP drops over
//! the sample, and CPU.

use probe_proto::calls::{env_var, wording::console};
use probe_proto::catalog::FindingId;
use probe_proto::report::{Finding, Severity};
use std::collections::{BTreeSet, HashMap};

use super::Judged;
use crate::doctor::cpu::{HIGH_LOAD_PER_CORE, HIGH_SHARE_PCT};
use crate::doctor::facts::{CpuFacts, CpuSample, DropFacts, Holders, PortFacts};
use crate::doctor::procnet::{self, Owner, Sock};
use crate::doctor::report::{Check, Status};
use crate::doctor::{snmp, sysctl};

fn addresses(socks: &[Sock]) -> String {
    let set: BTreeSet<String> = socks.iter().map(|s| s.local.ip().to_string()).collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}

/// "the Calls plugin's RTC server" → "The Calls plugin's RTC server"; "RTCD" stays.
fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn owners_text(all: &[Owner]) -> String {
    all.iter()
        .map(|o| format!("{} (pid {})", o.process, o.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who holds the sockets, in the check's words.
fn held_by(h: &Holders, scan_complete: bool) -> String {
    match h.main {
        Some(_) => owners_text(&h.all),
        None if scan_complete => "a process the doctor cannot see (run it as root)".to_string(),
        None => "a process not found before the deadline".to_string(),
    }
}

/// `udp_port` and `tcp_port`: something listens on RTCD's ICE ports, and it is RTCD.
pub fn ports(p: &PortFacts, where_: &str, out: &mut Judged) {
    udp_port(p, where_, out);
    tcp_port(p, false, out);
}

/// `udp_port` and `tcp_port` on a Mattermost host without RTCD: the Calls plugin's process
/// (mattermost-plugin-calls server/activate.go:170-199) holds the ICE ports.
pub fn plugin_ports(p: &PortFacts, out: &mut Judged) {
    let ice_udp = p.ice_udp;
    if let Some(e) = &p.udp_error {
        return out.skipped("udp_port", e);
    }
    if p.udp.is_empty() {
        out.check(
            "udp_port",
            Status::Fail,
            format!("nothing listens on UDP {ice_udp}"),
        );
        out.finding(
            FindingId::RtcdNotListening,
            Severity::Error,
            format!(
                "nothing listens on UDP port {ice_udp} (the Calls plugin's \"RTC Server Port (UDP)\") on this host: \
                 the plugin is disabled, failed to start, or sends calls to RTCD (RTCD service URL)"
            ),
            "check System Console › Plugins › Plugin Management (Calls: running?) and Mattermost's log \
             (mattermost.log, lines with \"plugin_id\":\"com.mattermost.calls\") for why its RTC server did not start",
        );
        return tcp_port(p, true, out);
    }
    let mut status = Status::Pass;
    if let Some(o) = &p.udp_holders.main {
        if !(crate::rtcd_env::MATTERMOST.says)(&o.process) {
            status = Status::Warn;
            out.finding(
                FindingId::RtcdPortOtherProcess,
                Severity::Warning,
                format!(
                    "UDP port {ice_udp} is held by {} (pid {}), not by the Calls plugin (mattermost or its \
                     plugin-linux-* process)",
                    o.process, o.pid
                ),
                format!(
                    "stop that process (an RTCD, a probe-server or nc test left running?) with `kill {}`, then disable \
                     and re-enable the Calls plugin so its RTC server can bind the port",
                    o.pid
                ),
            );
        }
    }
    let detail = format!(
        "UDP {ice_udp} on {}: {} socket(s) held by {}",
        addresses(&p.udp),
        p.udp.len(),
        held_by(&p.udp_holders, p.scan_complete)
    );
    out.check("udp_port", status, detail);
    tcp_port(p, true, out);
}

fn udp_port(p: &PortFacts, where_: &str, out: &mut Judged) {
    let ice_udp = p.ice_udp;
    if let Some(e) = &p.udp_error {
        return out.skipped("udp_port", e);
    }
    if p.udp.is_empty() {
        out.check(
            "udp_port",
            Status::Fail,
            format!("nothing listens on UDP {ice_udp}"),
        );
        out.finding(
            FindingId::RtcdNotListening,
            Severity::Error,
            format!("nothing listens on UDP port {ice_udp} (RTCD's ice_port_udp) on this host: RTCD is not running, or runs with another configuration"),
            format!(
                "start RTCD and check it stays up (`systemctl status rtcd`, `journalctl -u rtcd`); if it uses another config than {where_}, pass it with --rtcd-config"
            ),
        );
        return;
    }
    let mut status = Status::Pass;
    if let Some(o) = &p.udp_holders.main {
        if (crate::rtcd_env::MATTERMOST.says)(&o.process) {
            // Not "another process": the Calls plugin runs rtcd's media server itself
            // (plugin server/activate.go:170-199); killing it would stop every call.
            out.finding(
                FindingId::CallsPluginHoldsPort,
                Severity::Info,
                format!(
                    "UDP port {ice_udp} is held by {} (pid {}), the Calls plugin's integrated RTC server: this host \
                     runs calls without RTCD",
                    o.process, o.pid
                ),
                "check what it advertises with `probe-server --calls-config /opt/mattermost/config/config.json` \
                 (Mattermost's config.json) and test it from users' networks with probe-client; RTCD's API and \
                 config checks here do not apply to it",
            );
        } else if !o.process.to_lowercase().contains("rtcd") {
            status = Status::Warn;
            out.finding(
                FindingId::RtcdPortOtherProcess,
                Severity::Warning,
                format!("UDP port {ice_udp} is held by {} (pid {}), not by RTCD", o.process, o.pid),
                format!("stop that process (a probe-server or nc test left running?) with `kill {}` and start RTCD", o.pid),
            );
        }
    }
    let detail = format!(
        "UDP {ice_udp} on {}: {} socket(s) held by {}",
        addresses(&p.udp),
        p.udp.len(),
        held_by(&p.udp_holders, p.scan_complete)
    );
    out.check("udp_port", status, detail);
}

/// `plugin`: the Calls plugin's integrated server, whose TCP listener has always been there
/// (plugin server/activate.go:170-180 passes `TCPServerPort` to rtc).
fn tcp_port(p: &PortFacts, plugin: bool, out: &mut Judged) {
    let ice_tcp = p.ice_tcp;
    if p.tcp.is_empty() {
        out.check(
            "tcp_port",
            Status::Warn,
            format!("nothing listens on TCP {ice_tcp}"),
        );
        let (summary, fix) = if plugin {
            (
                format!("nothing listens on TCP port {ice_tcp} (the Calls plugin's \"RTC Server Port (TCP)\"): the TCP fallback is not available, so users whose networks block UDP cannot join"),
                format!(
                    "check {} and {} (env {} / {}), and Mattermost's log for why the plugin's RTC server did not bind it",
                    console("TCPServerPort"),
                    console("TCPServerAddress"),
                    env_var("TCPServerPort"),
                    env_var("TCPServerAddress")
                ),
            )
        } else {
            (
                format!("nothing listens on TCP port {ice_tcp} (RTCD's ice_port_tcp): the TCP fallback (RTCD v0.11+) is not available, so users whose networks block UDP cannot join"),
                "RTCD v0.11+ listens on [rtc] ice_port_tcp (env RTCD_RTC_ICEPORTTCP, default 8443); upgrade RTCD or check that setting and ice_address_tcp".to_string(),
            )
        };
        out.finding(FindingId::TcpFallbackOff, Severity::Info, summary, fix);
        return;
    }
    let detail = format!(
        "TCP {ice_tcp} listening on {}, held by {}",
        addresses(&p.tcp),
        held_by(&p.tcp_holders, p.scan_complete)
    );
    out.check("tcp_port", Status::Pass, detail);
}

/// `socket_buffers`: the kernel's caps against the guide's 16 MB; returns the keys below it.
pub fn socket_buffers(
    buffers: &[(&'static str, Result<u64, String>)],
    out: &mut Judged,
) -> Vec<(&'static str, u64)> {
    let small = sysctl::small(buffers);
    let values: Vec<String> = buffers
        .iter()
        .map(|(k, v)| match v {
            Ok(n) => format!("{k} = {n}"),
            Err(e) => format!("{k}: {e}"),
        })
        .collect();
    let status = if !small.is_empty() {
        Status::Warn
    } else if buffers.iter().any(|(_, v)| v.is_err()) {
        Status::Skipped
    } else {
        Status::Pass
    };
    let detail = format!(
        "{} (guide: {} each)",
        values.join(", "),
        sysctl::RECOMMENDED
    );
    out.check("socket_buffers", status, detail);
    if !small.is_empty() {
        let names: Vec<String> = small.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        out.finding(
            FindingId::SocketBuffersSmall,
            Severity::Warning,
            format!(
                "socket buffer limits below the guide's 16777216: {} — {} asks for 16 MB UDP buffers and the kernel caps them, so bursts overflow and packets drop",
                names.join(", "),
                out.server()
            ),
            sysctl::fix_text(&small, out.restart()),
        );
    }
    small
}

/// RTCD's sockets' drops over the sample: `(dropped during it, total since they opened)`, or
/// `None` when the tables could not be read twice.
fn rtcd_drops(d: &DropFacts) -> Option<(u64, u64)> {
    let end = d.table_end.as_ref()?;
    let start: HashMap<u64, u64> = d
        .socks_start
        .iter()
        .map(|s| (s.inode, s.drops.unwrap_or(0)))
        .collect();
    let (mut delta, mut total) = (0u64, 0u64);
    for s in procnet::on_port(end, d.port, &d.addrs, false) {
        let now = s.drops.unwrap_or(0);
        total += now;
        delta += now.saturating_sub(start.get(&s.inode).copied().unwrap_or(0));
    }
    Some((delta, total))
}

/// `udp_drops`: RTCD's own sockets dropping is an error, the host's counters a warning.
pub fn udp_drops(d: &DropFacts, small: &[(&'static str, u64)], out: &mut Judged) {
    let (s0, s1) = match (&d.snmp_start, &d.snmp_end) {
        (Ok(s0), Ok(s1)) => (s0, s1),
        (Err(why), _) | (_, Err(why)) => return out.skipped("udp_drops", why),
    };
    let host: snmp::UdpCounters = s0.delta(s1);
    let measured = rtcd_drops(d);
    let (rtcd_delta, rtcd_total) = measured.unwrap_or((0, 0));
    let (port, elapsed) = (d.port, d.elapsed);
    let rate = |n: u64| n as f64 / elapsed.max(0.001);
    let detail = format!(
        "over {elapsed:.1} s: {}'s UDP {port} sockets dropped {rtcd_delta} ({:.0}/s; {rtcd_total} since they opened); host UDP RcvbufErrors +{}, InErrors +{}, SndbufErrors +{}",
        out.server(),
        rate(rtcd_delta),
        host.rcvbuf_errors,
        host.in_errors,
        host.sndbuf_errors
    );
    let buffers = if small.is_empty() && out.plugin {
        "the buffer limits are already at the guide's values, so give the Mattermost host more CPU (see the cpu check) or move calls to RTCD".to_string()
    } else if small.is_empty() {
        "the buffer limits are already at the guide's values, so give RTCD more CPU (see the cpu check) or spread calls over more RTCD hosts".to_string()
    } else {
        format!(
            "raise the buffer limits: {}",
            sysctl::fix_text(small, out.restart())
        )
    };
    let server = out.server();
    if rtcd_delta > 0 {
        out.finding(
            FindingId::UdpReceiveDrops,
            Severity::Error,
            format!(
                "{}'s own UDP sockets on port {port} dropped {rtcd_delta} datagrams in {elapsed:.1} s ({:.0}/s): their receive buffers overflow, so users hear choppy audio",
                capitalized(server),
                rate(rtcd_delta)
            ),
            buffers,
        );
        out.check("udp_drops", Status::Fail, detail);
    } else if host != snmp::UdpCounters::default() {
        out.finding(
            FindingId::UdpReceiveDrops,
            Severity::Warning,
            format!(
                "this host's UDP stack dropped datagrams during the sample (RcvbufErrors +{}, InErrors +{}, SndbufErrors +{}; `netstat -su`){}",
                host.rcvbuf_errors,
                host.in_errors,
                host.sndbuf_errors,
                if measured.is_some() { format!(", though not on {server}'s sockets") } else { String::new() }
            ),
            buffers,
        );
        out.check("udp_drops", Status::Warn, detail);
    } else {
        out.check("udp_drops", Status::Pass, detail);
    }
}

/// `cpu`: RTCD's share of the machine over the sample, and the host's load.
pub fn cpu(c: &CpuFacts, out: &mut Judged) {
    let (pid, ticks, secs, ticks_per_sec) = match c.sample {
        CpuSample::NotFound => {
            let load_text = c.load.map_or("load unknown".to_string(), |l| {
                format!("load {l:.2} on {} core(s)", c.cores)
            });
            let who = capitalized(out.server());
            return out.skipped("cpu", format!("{who}'s process was not found; {load_text}"));
        }
        CpuSample::Exited { pid } => {
            let who = capitalized(out.server());
            return out.skipped("cpu", format!("{who} (pid {pid}) exited during the sample"));
        }
        CpuSample::Measured {
            pid,
            ticks,
            secs,
            ticks_per_sec,
        } => (pid, ticks, secs, ticks_per_sec),
    };
    let one_core_pct = ticks as f64 / ticks_per_sec / secs.max(0.001) * 100.0;
    let (mut check, mut finding) = judge_cpu(pid, one_core_pct, c.cores, c.load);
    if out.plugin {
        // The same measurement of the process holding the port: Mattermost's (or its plugin's).
        check.detail = check
            .detail
            .replacen("RTCD", "The Calls plugin's process", 1);
        if let Some(f) = finding.as_mut() {
            f.summary = f.summary.replacen("RTCD", "The Calls plugin's process", 1);
            f.fix = "give the Mattermost host more cores, or move calls to RTCD (the guide's Performance Baselines give calls per core)".into();
        }
    }
    out.checks.push(check);
    out.findings.extend(finding);
}

/// The CPU verdict from what was measured: RTCD's share of the machine, and the load.
pub fn judge_cpu(
    pid: u32,
    one_core_pct: f64,
    cores: usize,
    load: Option<f64>,
) -> (Check, Option<Finding>) {
    let cores = cores.max(1);
    let load_text = load.map_or("load unknown".to_string(), |l| {
        format!("load {l:.2} on {cores} core(s)")
    });
    let share = one_core_pct / cores as f64;
    let detail = format!("RTCD (pid {pid}) used {one_core_pct:.0} % of one core ({share:.0} % of the machine); {load_text}");
    if share >= HIGH_SHARE_PCT {
        let finding = Finding::new(
            FindingId::RtcdHighCpu,
            Severity::Warning,
            format!("RTCD used {share:.0} % of this machine's {cores} core(s) during the sample: high CPU degrades call quality"),
            "give RTCD more cores or spread calls over more RTCD hosts (the guide's Performance Baselines give calls per core)",
        );
        (Check::new("cpu", Status::Warn, detail), Some(finding))
    } else if load.is_some_and(|l| l / cores as f64 >= HIGH_LOAD_PER_CORE) {
        let detail = format!("{detail} — the host is overloaded");
        (Check::new("cpu", Status::Warn, detail), None)
    } else {
        (Check::new("cpu", Status::Pass, detail), None)
    }
}
