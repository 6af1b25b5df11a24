//! Gathering: every read of the host the doctor makes, at once and each with a deadline, into
//! [`HostFacts`]. Socket tables, owners, counters and CPU ticks at the start of the sample;
//! the API, nftables, what RTCD advertises and its log in threads during it; counters and
//! ticks again at its end. Nothing here judges.

use probe_proto::http::Url;
use probe_proto::rtcd::RtcdConfig;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::facts::{
    ApiSide, ConfigAge, CpuFacts, CpuSample, DropFacts, FirewallFacts, Holders, HostFacts,
    LogFacts, NatFacts, OwnerVisibility, PortFacts, Setup,
};
use super::procnet::{self, Owner, Proto, Sock};
use super::{advertise, api, choose_rules, cpu, logs, nat, nft, snmp, sysctl, Inputs, Loaded};
use super::{hostname, RulesChoice};

/// Spare time after the sample for the last reads and the report, within the 5 s promise.
const JOIN_MARGIN: Duration = Duration::from_millis(4500);
/// Deadlines of the concurrent reads, counted from the end of the sample: they run during it
/// and may use part of the margin on a loaded host.
const API_MARGIN: Duration = Duration::from_millis(3500);
const NFT_MARGIN: Duration = Duration::from_secs(3);
const ADVERTISE_MARGIN: Duration = Duration::from_secs(3);
const OWNER_SCAN_DEADLINE: Duration = Duration::from_millis(1500);
const LOG_MARGIN: Duration = Duration::from_secs(3);
/// The NAT check: DNS (1 s at most) then `nat::PER_SERVER`, within the join margin.
const NAT_MARGIN: Duration = Duration::from_millis(3500);
/// How long the candidate computation waits for RTCD's /version (from the start of the run).
const VERSION_WAIT: Duration = Duration::from_millis(2500);

/// The whole run's reads; ends within `--sample` + 5 s.
pub fn gather(inputs: &Inputs, loaded: &Loaded) -> HostFacts {
    let t0 = Instant::now();
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sample = Duration::from_secs_f64(inputs.sample);
    // Deadlines count from the start of the run (finding RTCD's environment came first).
    let clock = Clock {
        base: loaded.started.min(t0),
        sample,
    };
    let plugin = !loaded.deployment.is_rtcd();
    let start = Start::read(&loaded.cfg, &loaded.api_url, plugin, t0);
    let tasks = Tasks::spawn(inputs, loaded, &clock);
    let buffers = sysctl::read();
    std::thread::sleep((t0 + sample).saturating_duration_since(Instant::now()));
    let drops = start.drops_at_end(t0.elapsed().as_secs_f64());
    let cpu = start.cpu_at_end();
    let hard = clock.base + sample + JOIN_MARGIN;
    let api = ApiSide {
        answers: tasks.api.and_then(|t| t.join(hard)),
        url_source: loaded.api_source.clone(),
        min_version: inputs.min_rtcd_version.clone(),
        ..start.api
    };
    let firewall = FirewallFacts {
        targets: start.targets,
        ruleset: tasks.nft.join(hard),
    };
    let advertise = tasks.advertise.join(hard);
    let log = match tasks.log.map(|t| t.join(hard)) {
        None => LogFacts::NoSource,
        Some(None) => LogFacts::Late,
        Some(Some(Err(e))) => LogFacts::Failed(e),
        Some(Some(Ok(scan))) => LogFacts::Read(scan),
    };
    let nat = tasks.nat.join(hard).unwrap_or(NatFacts::Late);
    HostFacts {
        started_ms,
        host: hostname(),
        setup: Setup {
            config_source: loaded.source.clone(),
            where_: loaded.where_.clone(),
            env: loaded.env.clone(),
            env_error: loaded.env_error.clone(),
            deployment: loaded.deployment.clone(),
            calls_api: loaded.calls_api.clone(),
            config_age: config_age(inputs, loaded),
            rtcd_same_netns: loaded.env.pid.and_then(crate::rtcd_env::same_net_ns),
            // The Calls plugin's settings are JSON with their own names: RTCD's file only.
            unknown_keys: match loaded.deployment {
                probe_proto::calls::Deployment::Rtcd => probe_proto::rtcd::keys::unknown_all(
                    &loaded.cfg.table,
                    loaded.env.vars.keys().map(String::as_str),
                ),
                _ => Vec::new(),
            },
        },
        ports: start.ports,
        buffers,
        drops,
        cpu,
        api,
        firewall,
        advertise,
        log,
        nat,
        duration_ms: t0.elapsed().as_millis() as u64,
    }
}

/// The run's time base: deadlines are `base + sample + margin`.
struct Clock {
    base: Instant,
    sample: Duration,
}

/// What is read at the start of the sample.
struct Start {
    ports: PortFacts,
    udp_read: bool,
    udp_addrs: Vec<IpAddr>,
    snmp: Result<snmp::UdpCounters, String>,
    /// The process sampled for CPU and its ticks, with when they were read.
    cpu: Option<(Owner, u64, Instant)>,
    api: ApiSide,
    targets: Vec<nft::Target>,
}

impl Start {
    /// `plugin`: the Calls plugin's integrated server, which has no API port.
    fn read(cfg: &RtcdConfig, api_url: &Url, plugin: bool, t0: Instant) -> Start {
        let ice_udp = u16::try_from(cfg.ice_port_udp).unwrap_or(0);
        let ice_tcp = u16::try_from(cfg.ice_port_tcp).unwrap_or(0);
        let udp0 = procnet::read_tables(Proto::Udp);
        let tcp0 = procnet::read_tables(Proto::Tcp).unwrap_or_default();
        let snmp = snmp::read();
        let udp_addrs = ice_addresses(&cfg.ice_address_udp);
        let udp = owned(procnet::on_port(
            udp0.as_deref().unwrap_or(&[]),
            ice_udp,
            &udp_addrs,
            false,
        ));
        let tcp_addrs = ice_addresses(&cfg.ice_address_tcp);
        let tcp = owned(procnet::on_port(&tcp0, ice_tcp, &tcp_addrs, true));
        let local = !plugin && api_is_local(api_url);
        let api_socks = if local {
            owned(procnet::on_port(&tcp0, api_url.port, &[], true))
        } else {
            Vec::new()
        };
        let inodes: HashSet<u64> = udp
            .iter()
            .chain(&tcp)
            .chain(&api_socks)
            .map(|s| s.inode)
            .collect();
        let scan = procnet::scan_owners(&inodes, t0 + OWNER_SCAN_DEADLINE);
        let visibility = visibility(scan.complete, scan.refused, running_as_root());
        let holders = |socks: &[Sock]| {
            let refs: Vec<&Sock> = socks.iter().collect();
            let (main, all) = procnet::main_owner(&refs, &scan.by_inode);
            Holders { main, all }
        };
        let (udp_holders, tcp_holders) = (holders(&udp), holders(&tcp));
        let api_owner: Option<Owner> = holders(&api_socks).main;
        let cpu = sampled(&udp_holders, &tcp_holders, plugin)
            .and_then(|o| Some((o.clone(), cpu::process_ticks(o.pid)?, Instant::now())));
        Start {
            ports: PortFacts {
                ice_udp,
                ice_tcp,
                udp_error: udp0.as_ref().err().cloned(),
                udp,
                tcp,
                udp_holders,
                tcp_holders,
                visibility,
            },
            udp_read: udp0.is_ok(),
            udp_addrs,
            snmp,
            cpu,
            api: ApiSide {
                url: api_url.clone(),
                url_source: String::new(),
                min_version: String::new(),
                local,
                listening: api_socks.len(),
                owner: api_owner,
                answers: None,
            },
            targets: firewall_targets(ice_udp, ice_tcp, (!plugin).then_some(api_url.port)),
        }
    }

    /// The UDP counters and RTCD's sockets again.
    fn drops_at_end(&self, elapsed: f64) -> DropFacts {
        let snmp_end = snmp::read();
        let table_end = if self.udp_read {
            procnet::read_tables(Proto::Udp).ok()
        } else {
            None
        };
        DropFacts {
            port: self.ports.ice_udp,
            addrs: self.udp_addrs.clone(),
            elapsed,
            snmp_start: self.snmp.clone(),
            snmp_end,
            socks_start: self.ports.udp.clone(),
            table_end,
        }
    }

    /// RTCD's CPU ticks again, the cores and the load.
    fn cpu_at_end(&self) -> CpuFacts {
        let cores = cpu::cores();
        let load = cpu::load1();
        let sample = match self.cpu {
            None => CpuSample::NotFound,
            Some((ref owner, t0, i0)) => match cpu::process_ticks(owner.pid) {
                None => CpuSample::Exited {
                    owner: owner.clone(),
                },
                Some(t1) => CpuSample::Measured {
                    owner: owner.clone(),
                    ticks: t1.saturating_sub(t0),
                    secs: i0.elapsed().as_secs_f64(),
                    ticks_per_sec: cpu::ticks_per_sec(),
                },
            },
        };
        CpuFacts {
            cores,
            load,
            sample,
        }
    }
}

/// The process whose CPU is sampled: a holder of the ports that is the media server (RTCD, or
/// Mattermost for the Calls plugin), else the main holder, whom the rules then refuse to call
/// RTCD.
fn sampled<'a>(udp: &'a Holders, tcp: &'a Holders, plugin: bool) -> Option<&'a Owner> {
    let server = if plugin {
        &crate::rtcd_env::MATTERMOST
    } else {
        &crate::rtcd_env::RTCD
    };
    udp.all
        .iter()
        .chain(&tcp.all)
        .find(|o| o.is(server))
        .or(udp.main.as_ref())
        .or(tcp.main.as_ref())
}

fn owned(socks: Vec<&Sock>) -> Vec<Sock> {
    socks.into_iter().cloned().collect()
}

fn ice_addresses(list: &str) -> Vec<IpAddr> {
    probe_proto::rtcd::parse_ice_address(list)
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// The ports users (and Mattermost) reach; `api_port` is `None` for the Calls plugin's
/// integrated server, which has no API of its own (plugin server/activate.go:170-199).
pub(super) fn firewall_targets(
    ice_udp: u16,
    ice_tcp: u16,
    api_port: Option<u16>,
) -> Vec<nft::Target> {
    let Some(api_port) = api_port else {
        return vec![
            nft::Target {
                proto: Proto::Udp,
                port: ice_udp,
                what: "the Calls plugin's RTC Server Port (UDP, media)",
            },
            nft::Target {
                proto: Proto::Tcp,
                port: ice_tcp,
                what: "the Calls plugin's RTC Server Port (TCP, the fallback)",
            },
        ];
    };
    vec![
        nft::Target {
            proto: Proto::Udp,
            port: ice_udp,
            what: "RTCD's ICE port (media over UDP)",
        },
        nft::Target {
            proto: Proto::Tcp,
            port: ice_tcp,
            what: "RTCD's ICE TCP port (the TCP fallback)",
        },
        nft::Target {
            proto: Proto::Tcp,
            port: api_port,
            what: "RTCD's API port (Mattermost → RTCD)",
        },
    ]
}

fn api_is_local(url: &Url) -> bool {
    match url.host.parse::<IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || crate::interfaces::local_addrs().is_ok_and(|l| l.iter().any(|a| a.ip == ip))
        }
        Err(_) => url.host == "localhost" || url.host == hostname(),
    }
}

/// The reads that run during the sample, each in its own thread.
struct Tasks {
    /// `None` for the Calls plugin's integrated server: no API to ask.
    api: Option<Pending<api::ApiFacts>>,
    nft: Pending<Result<serde_json::Value, String>>,
    advertise: Pending<(advertise::Outcome, RulesChoice)>,
    log: Option<Pending<Result<logs::LogScan, String>>>,
    nat: Pending<NatFacts>,
}

impl Tasks {
    fn spawn(inputs: &Inputs, loaded: &Loaded, clock: &Clock) -> Tasks {
        let (version_tx, version_rx) = mpsc::channel::<Option<String>>();
        // The plugin's server has no API: nothing at its "API URL" may decide its rules (the
        // sender dropped here tells the candidate computation at once).
        let api = loaded.deployment.is_rtcd().then(|| {
            let url = loaded.api_url.clone();
            let deadline = clock.base + clock.sample + API_MARGIN;
            spawn(move || {
                let facts = api::gather(&url, deadline);
                // The candidate rules depend on the version RTCD reports.
                let _ = version_tx.send(api::reported_version(&facts));
                facts
            })
        });
        let nft_deadline = clock.base + clock.sample + NFT_MARGIN;
        let nft = spawn(move || nft::list_ruleset(nft_deadline));
        let (cfg, ask) = (
            loaded.cfg.clone(),
            nat::NatAsk {
                extra: inputs.stun_check_server.clone(),
                off: inputs.no_nat_check,
            },
        );
        let nat_deadline = clock.base + clock.sample + NAT_MARGIN;
        let nat = spawn(move || nat::gather(&cfg, &ask, nat_deadline));
        Tasks {
            nat,
            api,
            nft,
            advertise: spawn_advertise(inputs, loaded, clock, version_rx),
            log: spawn_log(inputs, loaded, clock),
        }
    }
}

/// What RTCD advertises, computed with the rules for its version: --rtcd-version, else what
/// RTCD's /version says (the API usually answers in milliseconds; a silent API is not waited
/// for past VERSION_WAIT), else the default.
fn spawn_advertise(
    inputs: &Inputs,
    loaded: &Loaded,
    clock: &Clock,
    version_rx: mpsc::Receiver<Option<String>>,
) -> Pending<(advertise::Outcome, RulesChoice)> {
    let cfg = loaded.cfg.clone();
    let where_ = loaded.where_.clone();
    let deployment = loaded.deployment.clone();
    let flag = inputs.rtcd_version.clone();
    let wait_until = clock.base + VERSION_WAIT.min(clock.sample + ADVERTISE_MARGIN / 2);
    let deadline = clock.base + clock.sample + ADVERTISE_MARGIN;
    spawn(move || {
        let reported = if flag.is_some() {
            None
        } else {
            version_rx
                .recv_timeout(wait_until.saturating_duration_since(Instant::now()))
                .ok()
                .flatten()
        };
        let choice = choose_rules(flag.as_deref(), reported.as_deref());
        let o = advertise::check(&cfg, &where_, choice.rules, deadline, &deployment);
        (o, choice)
    })
}

/// `--rtcd-log`, else RTCD's journal when its systemd unit is known (from its process, or a
/// loaded unit), since RTCD's start.
fn spawn_log(
    inputs: &Inputs,
    loaded: &Loaded,
    clock: &Clock,
) -> Option<Pending<Result<logs::LogScan, String>>> {
    let plugin = !loaded.deployment.is_rtcd();
    let file = if plugin {
        inputs.mattermost_log.as_ref().or(inputs.rtcd_log.as_ref())
    } else {
        inputs.rtcd_log.as_ref()
    };
    match (file, &loaded.env.unit) {
        (Some(p), _) => {
            let p = p.clone();
            Some(spawn(move || {
                if plugin {
                    logs::read_mattermost(&p)
                } else {
                    logs::read(&p)
                }
            }))
        }
        (None, Some(unit)) => {
            let unit = unit.clone();
            let since = loaded
                .env
                .pid
                .and_then(|pid| logs::process_start(pid, cpu::ticks_per_sec()));
            let deadline = clock.base + clock.sample + LOG_MARGIN;
            Some(spawn(move || {
                logs::read_journal(&unit, since, deadline, plugin)
            }))
        }
        (None, None) => None,
    }
}

/// When RTCD's file last changed and when RTCD started (RTCD only: the plugin's settings
/// apply when they change, not at Mattermost's start).
fn config_age(inputs: &Inputs, loaded: &Loaded) -> Option<ConfigAge> {
    if !loaded.deployment.is_rtcd() {
        return None;
    }
    let pid = loaded.env.pid?;
    let started = logs::process_start(pid, cpu::ticks_per_sec())?;
    ConfigAge::read(inputs.rtcd_config.as_ref()?, pid, started)
}

/// A read running in its own thread; `join` gives up at the deadline (the thread is then
/// abandoned: the process ends right after the report).
struct Pending<T>(mpsc::Receiver<T>);

fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    Pending(rx)
}

impl<T> Pending<T> {
    fn join(self, deadline: Instant) -> Option<T> {
        self.0
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }
}

/// How much the owner scan saw; refusals mean "not root" only when the doctor is not root.
fn visibility(complete: bool, refused: usize, root: bool) -> OwnerVisibility {
    match (complete, refused, root) {
        (false, _, _) => OwnerVisibility::Late,
        (true, 0, _) => OwnerVisibility::Full,
        (true, _, false) => OwnerVisibility::NotRoot,
        (true, _, true) => OwnerVisibility::Restricted,
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {

    #[test]
    fn refused_fds_name_their_cause() {
        use OwnerVisibility::{Full, Late, NotRoot, Restricted};
        assert_eq!(visibility(false, 3, true), Late);
        assert_eq!(visibility(true, 0, false), Full);
        assert_eq!(visibility(true, 2, false), NotRoot);
        // Root refused (a container without CAP_SYS_PTRACE) is not told to run as root.
        assert_eq!(visibility(true, 2, true), Restricted);
        assert!(!Restricted
            .unknown_holder()
            .contains("run the doctor as root"));
        assert!(Restricted.unknown_holder().contains("CAP_SYS_PTRACE"));
    }

    use super::*;

    fn o(pid: u32, process: &str) -> Owner {
        Owner {
            pid,
            process: process.into(),
            exe: None,
        }
    }

    /// CPU is sampled from the media server when any holder is it, even if another process
    /// holds more sockets; else from the main holder (the rules then say it is not RTCD).
    #[test]
    fn cpu_samples_the_media_server_first() {
        let leftover = o(1844, "probe-server");
        let rtcd = o(812, "rtcd");
        let udp = Holders {
            main: Some(leftover.clone()),
            all: vec![leftover.clone(), rtcd.clone()],
        };
        assert_eq!(sampled(&udp, &Holders::default(), false), Some(&rtcd));
        let only = Holders {
            main: Some(leftover.clone()),
            all: vec![leftover.clone()],
        };
        assert_eq!(sampled(&only, &Holders::default(), false), Some(&leftover));
        let mm = o(4242, "plugin-linux-am");
        let tcp = Holders {
            main: Some(mm.clone()),
            all: vec![mm.clone()],
        };
        assert_eq!(sampled(&udp, &tcp, true), Some(&mm));
        assert_eq!(
            sampled(&Holders::default(), &Holders::default(), false),
            None
        );
    }
}
