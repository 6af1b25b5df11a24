//! The host's own rules: RTCD's ports and their holders, socket buffer limits, UDP drops over
//! the sample, and CPU.

use probe_proto::calls::{env_var, wording::console};
use probe_proto::catalog::FindingId;
use probe_proto::report::{Finding, Severity};
use std::collections::{BTreeSet, HashMap};

use super::Judged;
use crate::doctor::cpu::{HIGH_LOAD_PER_CORE, HIGH_SHARE_PCT};
use crate::doctor::facts::{CpuFacts, CpuSample, DropFacts, Holders, OwnerVisibility, PortFacts};
use crate::doctor::procnet::{self, Owner, Sock};
use crate::doctor::report::{Check, Status};
use crate::doctor::{snmp, sysctl};
use crate::rtcd_env::{Target, MATTERMOST, RTCD};

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

/// Who holds one of the media server's ports, as far as the doctor can tell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Held<'a> {
    /// The kernel shows no socket on the port.
    Nothing,
    /// The media server: RTCD, or for the Calls plugin's integrated server Mattermost or its
    /// plugin process.
    Server(&'a Owner),
    /// On an RTCD host, the Calls plugin's process: it runs calls itself.
    CallsPlugin(&'a Owner),
    /// A port forwarder into a container (docker-proxy, rootlesskit, slirp4netns, pasta): the
    /// media server runs behind it, its own sockets are in the container's namespace.
    Forwarder(&'a Owner),
    /// Any other process (a probe-server or nc test left running).
    Other(&'a Owner),
    /// The kernel shows sockets but the scan found no process holding them.
    Unknown(OwnerVisibility),
}

/// The process the media server runs as: RTCD's name says rtcd; the Calls plugin's server
/// runs in Mattermost or its plugin process (plugin server/activate.go:170-199). The same
/// names `rtcd_env` looks for.
fn server_target(plugin: bool) -> &'static Target {
    if plugin {
        &MATTERMOST
    } else {
        &RTCD
    }
}

/// Judges who holds `socks` by the main holder's comm and executable names.
fn held<'a>(socks: &[Sock], h: &'a Holders, v: OwnerVisibility, plugin: bool) -> Held<'a> {
    if socks.is_empty() {
        return Held::Nothing;
    }
    match &h.main {
        None => Held::Unknown(v),
        Some(o) if o.is(server_target(plugin)) => Held::Server(o),
        Some(o) if !plugin && o.is(&MATTERMOST) => Held::CallsPlugin(o),
        Some(o) if is_forwarder(o) => Held::Forwarder(o),
        Some(o) => Held::Other(o),
    }
}

/// Processes that publish a container's port on the host (`docker run -p 8443:8443/udp` with
/// Docker's userland proxy, rootless Docker and Podman): RTCD's documented Docker deployment
/// looks like this, so it is never "another process" to kill.
fn is_forwarder(o: &Owner) -> bool {
    const FORWARDERS: [&str; 4] = ["docker-proxy", "rootlesskit", "slirp4netns", "pasta"];
    let says = |name: &str| FORWARDERS.iter().any(|f| name == *f || name.starts_with(f));
    says(&o.process) || o.exe.as_deref().is_some_and(says)
}

/// The check's detail for a forwarded port: where the media server's own sockets can be seen.
fn forwarded(on: &str, o: &Owner, server: &str) -> String {
    format!(
        "{on} {} (pid {}), which forwards it into a container: {server}'s own sockets are in the \
         container's network namespace; run the doctor there: `nsenter -t PID -n probe-server doctor …` with \
         PID from `docker inspect -f '{{{{.State.Pid}}}}' CONTAINER`",
        o.process, o.pid
    )
}

/// The UDP and TCP ports' holders.
fn both(p: &PortFacts, plugin: bool) -> (Held<'_>, Held<'_>) {
    (
        held(&p.udp, &p.udp_holders, p.visibility, plugin),
        held(&p.tcp, &p.tcp_holders, p.visibility, plugin),
    )
}

/// Why no process of the media server's was measured on `port`, in a sentence's words.
fn not_server(h: Held, proto: &str, port: u16, server: &str) -> String {
    match h {
        Held::Nothing => format!("nothing listens on {proto} {port}"),
        // Only `cpu` gets here with the server: its ticks were unreadable at the start.
        Held::Server(o) => format!(
            "the CPU ticks of {server} (pid {}) could not be read",
            o.pid
        ),
        Held::CallsPlugin(o) => format!(
            "{proto} {port} is held by {} (pid {}), the Calls plugin's process, not {server}",
            o.process, o.pid
        ),
        Held::Other(o) => format!(
            "{proto} {port} is held by {} (pid {}), not {server}",
            o.process, o.pid
        ),
        Held::Forwarder(o) => format!(
            "{proto} {port} is forwarded into a container by {} (pid {}): {server}'s own sockets are in the container's network namespace",
            o.process, o.pid
        ),
        Held::Unknown(v) => format!("{proto} {port} is held by {}", v.unknown_holder()),
    }
}

/// `udp_port` and `tcp_port`: something listens on the media server's ICE ports, and it is
/// the media server (RTCD, or the Calls plugin's process when `out.plugin`). A holder the
/// doctor cannot identify is never a pass.
/// RTCD's process, found by other means than the configured ports (its API port, its name).
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    pub pid: u32,
    pub name: &'a str,
    /// Whether it shares the doctor's network namespace (`None`: cannot tell).
    pub same_netns: Option<bool>,
}

/// `running`: RTCD's process, when discovery found one by other means although nothing holds
/// the configured ports: then it runs with another configuration, or in a container.
pub fn ports(p: &PortFacts, where_: &str, running: Option<Running<'_>>, out: &mut Judged) {
    let (udp, tcp) = both(p, out.plugin);
    udp_port(p, udp, tcp, (where_, running), out);
    tcp_port(p, udp, tcp, running.is_some(), out);
}

fn udp_port(
    p: &PortFacts,
    udp: Held,
    tcp: Held,
    (where_, running): (&str, Option<Running<'_>>),
    out: &mut Judged,
) {
    let ice_udp = p.ice_udp;
    if let Some(e) = &p.udp_error {
        return out.skipped("udp_port", e);
    }
    let on = format!(
        "UDP {ice_udp} on {}: {} socket(s) held by",
        addresses(&p.udp),
        p.udp.len()
    );
    let (status, detail) = match udp {
        Held::Nothing => {
            not_listening(ice_udp, (where_, running), out);
            (Status::Fail, format!("nothing listens on UDP {ice_udp}"))
        }
        Held::Unknown(v) => return out.skipped("udp_port", format!("{on} {}", v.unknown_holder())),
        Held::Forwarder(o) => return out.skipped("udp_port", forwarded(&on, o, out.server())),
        Held::Server(_) => (
            Status::Pass,
            format!("{on} {}", owners_text(&p.udp_holders.all)),
        ),
        Held::CallsPlugin(o) => {
            let same = matches!(tcp, Held::CallsPlugin(t) if t.pid == o.pid);
            calls_plugin_holds(o, &port_label(p, same), out);
            (
                Status::Pass,
                format!("{on} {}", owners_text(&p.udp_holders.all)),
            )
        }
        Held::Other(o) => {
            let same = matches!(tcp, Held::Other(t) if t.pid == o.pid);
            other_process(o, &port_label(p, same), out);
            (
                Status::Warn,
                format!("{on} {}", owners_text(&p.udp_holders.all)),
            )
        }
    };
    out.check("udp_port", status, detail);
}

/// "UDP port 8443", or "UDP and TCP port 8443" when one finding covers both.
fn port_label(p: &PortFacts, with_tcp: bool) -> (String, &'static str) {
    match (with_tcp, p.ice_udp == p.ice_tcp) {
        (false, _) => (format!("UDP port {}", p.ice_udp), "is"),
        (true, true) => (format!("UDP and TCP port {}", p.ice_udp), "are"),
        (true, false) => (
            format!("UDP port {} and TCP port {}", p.ice_udp, p.ice_tcp),
            "are",
        ),
    }
}

/// `rtcd_not_listening`, in the deployment's words.
fn not_listening(ice_udp: u16, (where_, running): (&str, Option<Running<'_>>), out: &mut Judged) {
    let (summary, fix) = if let (Some(r), false) = (running, out.plugin) {
        runs_elsewhere(ice_udp, where_, r)
    } else if out.plugin {
        (
            format!(
                "nothing listens on UDP port {ice_udp} (the Calls plugin's \"RTC Server Port (UDP)\") on this host: \
                 the plugin is disabled, failed to start, or sends calls to RTCD (RTCD service URL)"
            ),
            "check System Console › Plugins › Plugin Management (Calls: running?) and Mattermost's log \
             (mattermost.log, lines with \"plugin_id\":\"com.mattermost.calls\") for why its RTC server did not start"
                .to_string(),
        )
    } else {
        (
            format!("nothing listens on UDP port {ice_udp} (RTCD's ice_port_udp) on this host: RTCD is not running, or runs with another configuration"),
            format!(
                "start RTCD and check it stays up (`systemctl status rtcd`, `journalctl -u rtcd`); if it uses another config than {where_}, pass it with --rtcd-config"
            ),
        )
    };
    out.finding(FindingId::RtcdNotListening, Severity::Error, summary, fix);
}

/// `rtcd_not_listening` while RTCD runs: another configuration, or another network namespace
/// (a container without host networking, whose ports the host namespace does not show).
fn runs_elsewhere(ice_udp: u16, where_: &str, r: Running<'_>) -> (String, String) {
    let (pid, name) = (r.pid, r.name);
    let head = format!(
        "nothing listens on UDP port {ice_udp} (ice_port_udp in {where_}) in this network namespace, although RTCD \
         runs ({name}, pid {pid})"
    );
    let config_fix = format!(
        "pass the file RTCD runs with (its -config flag: `ps -o args= -p {pid}`) with --rtcd-config, and run the doctor again"
    );
    let ns_fix = format!(
        "run the doctor in RTCD's network namespace (`nsenter -t {pid} -n probe-server doctor …`, or inside its container)"
    );
    match r.same_netns {
        Some(true) => (
            format!("{head}: it runs with another configuration than {where_}"),
            config_fix,
        ),
        Some(false) => (
            format!("{head} in another network namespace (a container): its ports are not visible from here"),
            ns_fix,
        ),
        None => (
            format!("{head}: it runs with another configuration than {where_}, or in a container's own network namespace"),
            format!("{config_fix}; or {ns_fix}"),
        ),
    }
}

/// `calls_plugin_holds_port` on an RTCD host. Not "another process": the Calls plugin runs
/// rtcd's media server itself (plugin server/activate.go:170-199); killing it would stop
/// every call.
fn calls_plugin_holds(o: &Owner, (ports, verb): &(String, &str), out: &mut Judged) {
    out.finding(
        FindingId::CallsPluginHoldsPort,
        Severity::Info,
        format!(
            "{ports} {verb} held by {} (pid {}), the Calls plugin's integrated RTC server: this host \
             runs calls without RTCD",
            o.process, o.pid
        ),
        "check what it advertises with `probe-server --calls-config /opt/mattermost/config/config.json` \
         (Mattermost's config.json) and test it from users' networks with probe-client; RTCD's API and \
         config checks here do not apply to it",
    );
}

/// `rtcd_port_other_process`: a process that is not the media server holds its port.
fn other_process(o: &Owner, (ports, verb): &(String, &str), out: &mut Judged) {
    let (summary, fix) = if out.plugin {
        (
            format!(
                "{ports} {verb} held by {} (pid {}), not by the Calls plugin (mattermost or its plugin-linux-* process)",
                o.process, o.pid
            ),
            format!(
                "stop that process (an RTCD, a probe-server or nc test left running?) with `kill {}`, then disable \
                 and re-enable the Calls plugin so its RTC server can bind the port",
                o.pid
            ),
        )
    } else {
        (
            format!("{ports} {verb} held by {} (pid {}), not by RTCD", o.process, o.pid),
            format!("stop that process (a probe-server or nc test left running?) with `kill {}` and start RTCD", o.pid),
        )
    };
    out.finding(
        FindingId::RtcdPortOtherProcess,
        Severity::Warning,
        summary,
        fix,
    );
}

/// `tcp_port`: the TCP fallback's listener, judged as `udp_port` judges UDP's. RTCD cannot
/// run without it (rtcd v1.2.6 service/rtc/server.go:164 fails Start when initTCP fails;
/// config.go:65 requires ice_port_tcp), nor can the Calls plugin's server (plugin
/// server/activate.go:170-180 passes `TCPServerPort` to rtc).
fn tcp_port(p: &PortFacts, udp: Held, tcp: Held, runs_elsewhere: bool, out: &mut Judged) {
    let ice_tcp = p.ice_tcp;
    let on = format!("TCP {ice_tcp} listening on {}, held by", addresses(&p.tcp));
    let holders = owners_text(&p.tcp_holders.all);
    let (status, detail) = match tcp {
        Held::Nothing if udp == Held::Nothing && p.udp_error.is_none() => {
            (
                Status::Fail,
                if runs_elsewhere && !out.plugin {
                    format!("nothing listens on TCP {ice_tcp} either (RTCD runs elsewhere: see udp_port)")
                } else {
                    format!(
                        "nothing listens on TCP {ice_tcp} either ({} is not running: see udp_port)",
                        out.server()
                    )
                },
            )
        }
        Held::Nothing => {
            tcp_fallback_off(ice_tcp, out);
            (Status::Warn, format!("nothing listens on TCP {ice_tcp}"))
        }
        Held::Unknown(v) => return out.skipped("tcp_port", format!("{on} {}", v.unknown_holder())),
        Held::Forwarder(o) => return out.skipped("tcp_port", forwarded(&on, o, out.server())),
        Held::Server(_) => (Status::Pass, format!("{on} {holders}")),
        Held::CallsPlugin(o) => {
            if !matches!(udp, Held::CallsPlugin(u) if u.pid == o.pid) {
                calls_plugin_holds(o, &(format!("TCP port {ice_tcp}"), "is"), out);
            }
            (Status::Pass, format!("{on} {holders}"))
        }
        Held::Other(o) => {
            if !matches!(udp, Held::Other(u) if u.pid == o.pid) {
                other_process(o, &(format!("TCP port {ice_tcp}"), "is"), out);
            }
            (Status::Warn, format!("{on} {holders}"))
        }
    };
    out.check("tcp_port", status, detail);
}

/// `tcp_fallback_off`: a warning, as the check: users whose networks block UDP cannot join.
fn tcp_fallback_off(ice_tcp: u16, out: &mut Judged) {
    let (summary, fix) = if out.plugin {
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
    out.finding(FindingId::TcpFallbackOff, Severity::Warning, summary, fix);
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

/// What to do about drops: larger buffer limits, else more CPU.
fn drops_fix(small: &[(&'static str, u64)], out: &Judged) -> String {
    if small.is_empty() && out.plugin {
        "the buffer limits are already at the guide's values, so give the Mattermost host more CPU (see the cpu check) or move calls to RTCD".to_string()
    } else if small.is_empty() {
        "the buffer limits are already at the guide's values, so give RTCD more CPU (see the cpu check) or spread calls over more RTCD hosts".to_string()
    } else {
        format!(
            "raise the buffer limits: {}",
            sysctl::fix_text(small, out.restart())
        )
    }
}

/// The sample's readings, shared by the two ways `udp_drops` is judged.
struct DropSample<'a> {
    d: &'a DropFacts,
    host: snmp::UdpCounters,
    /// The host's counters in words.
    host_text: String,
    fix: String,
}

impl DropSample<'_> {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.d.elapsed.max(0.001)
    }

    /// `udp_receive_drops` (warning) from the host's counters; `tail` ends the summary.
    fn host_finding(&self, tail: &str, out: &mut Judged) {
        let h = &self.host;
        out.finding(
            FindingId::UdpReceiveDrops,
            Severity::Warning,
            format!(
                "this host's UDP stack dropped datagrams during the sample (RcvbufErrors +{}, InErrors +{}, SndbufErrors +{}; `netstat -su`){tail}",
                h.rcvbuf_errors, h.in_errors, h.sndbuf_errors
            ),
            self.fix.clone(),
        );
    }
}

/// `udp_drops`: the media server's own sockets dropping is an error, the host's counters a
/// warning. Sockets on the port are the server's only when their holder is (`held`): those
/// of another process, or of one the doctor cannot see, are never reported as RTCD's.
pub fn udp_drops(d: &DropFacts, p: &PortFacts, small: &[(&'static str, u64)], out: &mut Judged) {
    let (s0, s1) = match (&d.snmp_start, &d.snmp_end) {
        (Ok(s0), Ok(s1)) => (s0, s1),
        (Err(why), _) | (_, Err(why)) => return out.skipped("udp_drops", why),
    };
    let host: snmp::UdpCounters = s0.delta(s1);
    let sample = DropSample {
        d,
        host_text: format!(
            "host UDP RcvbufErrors +{}, InErrors +{}, SndbufErrors +{}",
            host.rcvbuf_errors, host.in_errors, host.sndbuf_errors
        ),
        host,
        fix: drops_fix(small, out),
    };
    match held(&p.udp, &p.udp_holders, p.visibility, out.plugin) {
        Held::Server(_) => server_drops(&sample, out),
        other => {
            let why = p
                .udp_error
                .clone()
                .unwrap_or_else(|| not_server(other, "UDP", d.port, out.server()));
            foreign_drops(&sample, other, &why, out)
        }
    }
}

/// `udp_drops` when the media server holds the port: its sockets' drops, then the host's.
fn server_drops(s: &DropSample, out: &mut Judged) {
    let (port, elapsed) = (s.d.port, s.d.elapsed);
    let measured = rtcd_drops(s.d);
    let (delta, total) = measured.unwrap_or((0, 0));
    let server = out.server();
    let detail = format!(
        "over {elapsed:.1} s: {server}'s UDP {port} sockets dropped {delta} ({:.0}/s; {total} since they opened); {}",
        s.rate(delta),
        s.host_text
    );
    if delta > 0 {
        out.finding(
            FindingId::UdpReceiveDrops,
            Severity::Error,
            format!(
                "{}'s own UDP sockets on port {port} dropped {delta} datagrams in {elapsed:.1} s ({:.0}/s): their receive buffers overflow, so users hear choppy audio",
                capitalized(server),
                s.rate(delta)
            ),
            s.fix.clone(),
        );
        out.check("udp_drops", Status::Fail, detail);
    } else if s.host != snmp::UdpCounters::default() {
        let tail = if measured.is_some() {
            format!(", though not on {server}'s sockets")
        } else {
            String::new()
        };
        s.host_finding(&tail, out);
        out.check("udp_drops", Status::Warn, detail);
    } else {
        out.check("udp_drops", Status::Pass, detail);
    }
}

/// `udp_drops` when no socket on the port is known to be the media server's (`why`): the
/// host's counters still count; drops on sockets of an unidentified holder are reported as
/// such (they may be RTCD's); nothing else passes for RTCD's.
fn foreign_drops(s: &DropSample, h: Held, why: &str, out: &mut Judged) {
    let (port, elapsed) = (s.d.port, s.d.elapsed);
    let server = out.server();
    let unknown_delta = match h {
        Held::Unknown(_) => rtcd_drops(s.d).map_or(0, |(delta, _)| delta),
        _ => 0,
    };
    if unknown_delta > 0 {
        out.finding(
            FindingId::UdpReceiveDrops,
            Severity::Warning,
            format!(
                "the sockets on UDP port {port}, held by a process the doctor cannot identify, dropped {unknown_delta} datagrams in {elapsed:.1} s ({:.0}/s): if that process is {server}, its receive buffers overflow and users hear choppy audio",
                s.rate(unknown_delta)
            ),
            format!(
                "find who holds the port (as root: `ss -uapn 'sport = :{port}'`, or run the doctor as root); if it is {server}: {}",
                s.fix
            ),
        );
        let detail = format!(
            "over {elapsed:.1} s: UDP {port}'s sockets dropped {unknown_delta} ({:.0}/s), but {why}; {}",
            s.rate(unknown_delta),
            s.host_text
        );
        return out.check("udp_drops", Status::Warn, detail);
    }
    if s.host != snmp::UdpCounters::default() {
        s.host_finding("", out);
        let detail = format!(
            "over {elapsed:.1} s: {}; {server}'s sockets were not measured: {why}",
            s.host_text
        );
        return out.check("udp_drops", Status::Warn, detail);
    }
    let detail = format!(
        "{}'s sockets were not measured: {why}; over {elapsed:.1} s: {}",
        capitalized(server),
        s.host_text
    );
    out.skipped("udp_drops", detail);
}

/// `cpu`: the media server's share of the machine over the sample, and the host's load. The
/// process measured counts only when it is the server (`held`'s names): a probe-server left on
/// RTCD's port is not RTCD.
pub fn cpu(c: &CpuFacts, p: &PortFacts, out: &mut Judged) {
    let target = server_target(out.plugin);
    let who = capitalized(out.server());
    let (pid, ticks, secs, ticks_per_sec) = match &c.sample {
        CpuSample::Measured {
            owner,
            ticks,
            secs,
            ticks_per_sec,
        } if owner.is(target) => (owner.pid, *ticks, *secs, *ticks_per_sec),
        CpuSample::Exited { owner } if owner.is(target) => {
            let pid = owner.pid;
            return out.skipped("cpu", format!("{who} (pid {pid}) exited during the sample"));
        }
        _ => {
            let load_text = c.load.map_or("load unknown".to_string(), |l| {
                format!("load {l:.2} on {} core(s)", c.cores)
            });
            let why = cpu_not_measured(p, out);
            return out.skipped(
                "cpu",
                format!("{who}'s CPU was not measured: {why}; {load_text}"),
            );
        }
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

/// Why no process of the media server's was measured: the UDP port's holder, else TCP's.
fn cpu_not_measured(p: &PortFacts, out: &Judged) -> String {
    let server = out.server();
    match both(p, out.plugin) {
        (Held::Nothing, Held::Nothing) => format!(
            "nothing listens on its ports (UDP {}, TCP {})",
            p.ice_udp, p.ice_tcp
        ),
        (Held::Nothing, tcp) => not_server(tcp, "TCP", p.ice_tcp, server),
        (udp, _) => not_server(udp, "UDP", p.ice_udp, server),
    }
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
