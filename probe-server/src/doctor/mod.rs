//! `probe-server doctor`: the troubleshooting guide's host-side checks, run at once on RTCD's
//! host while RTCD runs, each with a deadline; the whole run ends within `--sample` + 5 s.

mod advertise;
mod api;
pub(crate) mod cmd;
pub mod config;
mod cpu;
mod fetch;
pub mod logs;
mod nft;
pub(crate) mod procnet;
pub mod report;
mod snmp;
mod sysctl;

use probe_proto::http::Url;
use probe_proto::report::{Finding, Severity};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use config::Loaded;
use procnet::{Owner, Proto, Sock};
use report::{Check, DoctorReport, Status};

/// What RTCD to look at; shared by `doctor` and `bundle`.
#[derive(clap::Args, Debug, Clone)]
pub struct Inputs {
    /// RTCD's configuration file (TOML). RTCD_* variables of this environment apply over it,
    /// as they do for RTCD. Without it: RTCD's defaults.
    #[arg(long, value_name = "PATH")]
    pub rtcd_config: Option<PathBuf>,
    /// RTCD's API. Default: from the config's [api] http.listen_address (":8045" →
    /// http://127.0.0.1:8045; https when TLS is on).
    #[arg(long, value_name = "URL")]
    pub rtcd_api: Option<String>,
    /// RTCD's log (JSON lines or journal text, e.g. `journalctl -u rtcd > rtcd.log`) to scan.
    #[arg(long, value_name = "PATH")]
    pub rtcd_log: Option<PathBuf>,
    /// Seconds over which UDP drops and CPU are measured (0.5 to 60).
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = parse_sample)]
    pub sample: f64,
    /// The oldest RTCD the Calls plugin accepts (its min_rtcd_version).
    #[arg(long, value_name = "VERSION", default_value = api::DEFAULT_MIN_VERSION, value_parser = parse_min_version)]
    pub min_rtcd_version: String,
    /// RTCD's version (e.g. 1.2.6), which decides how its candidates are computed (pion/ice
    /// 4.0 rules before 1.2.5, 4.2 rules since). Default: RTCD's GET /version, else the
    /// current rules.
    #[arg(long, value_name = "VERSION", value_parser = parse_rtcd_version)]
    pub rtcd_version: Option<String>,
    /// The systemd unit RTCD runs as, for its environment (`systemctl show`) and journal when
    /// its process cannot be read.
    #[arg(long, value_name = "UNIT", default_value = crate::rtcd_env::DEFAULT_UNIT)]
    pub rtcd_unit: String,
}

fn parse_rtcd_version(s: &str) -> Result<String, String> {
    probe_proto::rtcd::PionRules::for_rtcd_version(s).map(|_| s.to_string())
}

#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Print one JSON object (schema 1) instead of the human report.
    #[arg(long)]
    pub json: bool,
}

fn parse_sample(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if (0.5..=60.0).contains(&v) {
        Ok(v)
    } else {
        Err("the sample must last between 0.5 and 60 seconds".into())
    }
}

/// Parsed as the Calls plugin parses its `min_rtcd_version` (Masterminds semver v1.5.0,
/// plugin server/utils.go:133-136).
fn parse_min_version(s: &str) -> Result<String, String> {
    probe_proto::semver::Version::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("`{s}` is not a version like v0.17.0 ({e})"))
}

pub fn run(args: DoctorArgs) -> i32 {
    let loaded = match config::load(&args.inputs) {
        Ok(l) => l,
        Err(msg) => return crate::fail(msg),
    };
    let done = collect(&args.inputs, &loaded);
    if args.json {
        match serde_json::to_string_pretty(&done.report) {
            Ok(s) => println!("{s}"),
            Err(e) => return crate::fail(format!("cannot encode the report: {e}")),
        }
    } else {
        print!("{}", report::render_text(&done.report));
    }
    done.report.exit_code()
}

/// A finished doctor run, with what the support bundle needs besides the report.
pub struct Done {
    pub report: DoctorReport,
    pub version_json: Option<String>,
    pub log: Option<logs::LogScan>,
}

/// Spare time after the sample for the last reads and the report, within the 5 s promise.
const JOIN_MARGIN: Duration = Duration::from_millis(4500);
/// Deadlines of the concurrent checks, counted from the end of the sample: they run during it
/// and may use part of the margin on a loaded host.
const API_MARGIN: Duration = Duration::from_millis(3500);
const NFT_MARGIN: Duration = Duration::from_secs(3);
const ADVERTISE_MARGIN: Duration = Duration::from_secs(3);
const OWNER_SCAN_DEADLINE: Duration = Duration::from_millis(1500);
const LOG_MARGIN: Duration = Duration::from_secs(3);
/// How long the candidate computation waits for RTCD's /version (from the start of the run).
const VERSION_WAIT: Duration = Duration::from_millis(2500);

/// Which pion/ice rules the candidates were computed with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesChoice {
    pub rules: probe_proto::rtcd::PionRules,
    /// `--rtcd-version`, `RTCD's /version` or `default`.
    pub from: &'static str,
    /// The version the choice was made from.
    pub version: Option<String>,
    /// Why a reported version was not used.
    pub note: Option<String>,
}

impl RulesChoice {
    pub fn text(&self) -> String {
        let mut t = format!("candidates computed with {}", self.rules.label());
        match (&self.version, self.from) {
            (Some(v), from) => t.push_str(&format!(", from {from} {v}")),
            (None, _) => {
                t.push_str(", the default (RTCD's version unknown; --rtcd-version sets it)")
            }
        }
        if let Some(n) = &self.note {
            t.push_str(&format!(" ({n})"));
        }
        t
    }
}

/// The flag wins, then RTCD's /version, then the default rules (pure, unit-tested).
pub fn choose_rules(flag: Option<&str>, reported: Option<&str>) -> RulesChoice {
    use probe_proto::rtcd::PionRules;
    if let Some(v) = flag {
        if let Ok(rules) = PionRules::for_rtcd_version(v) {
            return RulesChoice {
                rules,
                from: "--rtcd-version",
                version: Some(v.to_string()),
                note: None,
            };
        }
    }
    match reported {
        Some(v) => match PionRules::for_rtcd_version(v) {
            Ok(rules) => RulesChoice {
                rules,
                from: "RTCD's /version",
                version: Some(v.to_string()),
                note: None,
            },
            Err(_) => RulesChoice {
                rules: PionRules::default(),
                from: "default",
                version: None,
                note: Some(format!("RTCD's /version says {v:?}, not a release version")),
            },
        },
        None => RulesChoice {
            rules: PionRules::default(),
            from: "default",
            version: None,
            note: None,
        },
    }
}

/// Where RTCD's `RTCD_*` variables were read: pass, or warn when RTCD's own environment could
/// not be read although its process runs.
fn env_check(env: &crate::rtcd_env::RtcdEnv) -> Check {
    let status = match env.source {
        crate::rtcd_env::Source::Own if env.pid.is_some() => Status::Warn,
        _ => Status::Pass,
    };
    Check::new("rtcd_env", status, env.summary())
}

/// A check running in its own thread; `join` gives up at the deadline (the thread is then
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

fn late(id: &str) -> Check {
    Check::new(
        id,
        Status::Skipped,
        "skipped: did not finish within its deadline",
    )
}

pub fn collect(inputs: &Inputs, loaded: &Loaded) -> Done {
    let t0 = Instant::now();
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sample = Duration::from_secs_f64(inputs.sample);
    // Deadlines count from the start of the run (finding RTCD's environment came first).
    let base = loaded.started.min(t0);
    let hard = base + sample + JOIN_MARGIN;
    let cfg = &loaded.cfg;
    let mut checks = Vec::new();
    let mut findings: Vec<Finding> = Vec::new();

    // Start of the sample: sockets, owners, counters.
    let ice_udp = u16::try_from(cfg.ice_port_udp).unwrap_or(0);
    let ice_tcp = u16::try_from(cfg.ice_port_tcp).unwrap_or(0);
    let api_url = loaded.api_url.clone();
    let udp0 = procnet::read_tables(Proto::Udp);
    let tcp0 = procnet::read_tables(Proto::Tcp);
    let snmp0 = snmp::read();
    let addrs = |list: &str| -> Vec<std::net::IpAddr> {
        probe_proto::rtcd::parse_ice_address(list)
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    };
    let udp_addrs = addrs(&cfg.ice_address_udp);
    let tcp_addrs = addrs(&cfg.ice_address_tcp);
    let empty = Vec::new();
    let udp_socks: Vec<&Sock> =
        procnet::on_port(udp0.as_ref().unwrap_or(&empty), ice_udp, &udp_addrs, false);
    let tcp_socks: Vec<&Sock> =
        procnet::on_port(tcp0.as_ref().unwrap_or(&empty), ice_tcp, &tcp_addrs, true);
    let api_local = api_is_local(&api_url);
    let api_socks: Vec<&Sock> = if api_local {
        procnet::on_port(tcp0.as_ref().unwrap_or(&empty), api_url.port, &[], true)
    } else {
        Vec::new()
    };
    let inodes: HashSet<u64> = udp_socks
        .iter()
        .chain(&tcp_socks)
        .chain(&api_socks)
        .map(|s| s.inode)
        .collect();
    let (by_inode, scan_complete) = procnet::owners(&inodes, t0 + OWNER_SCAN_DEADLINE);
    let (udp_owner, udp_all) = procnet::main_owner(&udp_socks, &by_inode);
    let (tcp_owner, tcp_all) = procnet::main_owner(&tcp_socks, &by_inode);
    let (api_owner, _) = procnet::main_owner(&api_socks, &by_inode);
    let rtcd_pid = udp_owner.as_ref().or(tcp_owner.as_ref()).map(|o| o.pid);
    let cpu0 = rtcd_pid
        .and_then(cpu::process_ticks)
        .map(|t| (t, Instant::now()));
    let drops0: HashMap<u64, u64> = udp_socks
        .iter()
        .map(|s| (s.inode, s.drops.unwrap_or(0)))
        .collect();

    // Concurrent checks.
    let api_listener = if api_local {
        Some(match (&api_owner, api_socks.is_empty()) {
            (Some(o), _) => format!(
                "{} (pid {}) listens on TCP {}",
                o.process, o.pid, api_url.port
            ),
            (None, false) => format!(
                "a process the doctor cannot see listens on TCP {}",
                api_url.port
            ),
            (None, true) => format!("nothing listens on TCP port {} here", api_url.port),
        })
    } else {
        Some(format!("{} is not an address of this host", api_url.host))
    };
    let (version_tx, version_rx) = mpsc::channel::<Option<String>>();
    let api_task = {
        let url = api_url.clone();
        let min_text = inputs.min_rtcd_version.clone();
        let source = loaded.api_source.clone();
        spawn(move || {
            let inp = api::Inputs {
                url: &url,
                min_version: api::parse_version(&min_text).unwrap_or((0, 0, 0)),
                min_version_text: &min_text,
                url_source: &source,
                listener: api_listener,
            };
            let o = api::check(&inp, base + sample + API_MARGIN);
            // The candidate rules depend on the version RTCD reports.
            let _ = version_tx.send(o.version.clone());
            o
        })
    };
    let fw_targets = vec![
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
            port: api_url.port,
            what: "RTCD's API port (Mattermost → RTCD)",
        },
    ];
    let nft_task = {
        let targets = fw_targets.clone();
        spawn(move || {
            nft::list_ruleset(base + sample + NFT_MARGIN)
                .and_then(|rs| nft::find_blocks(&rs, &targets))
        })
    };
    let adv_task = {
        let cfg = cfg.clone();
        let where_ = loaded.where_.clone();
        let flag = inputs.rtcd_version.clone();
        spawn(move || {
            // --rtcd-version, else what RTCD's /version says (the API check usually answers in
            // milliseconds; a silent API is not waited for past VERSION_WAIT), else the default.
            let reported = if flag.is_some() {
                None
            } else {
                version_rx
                    .recv_timeout(
                        (base + VERSION_WAIT.min(sample + ADVERTISE_MARGIN / 2))
                            .saturating_duration_since(Instant::now()),
                    )
                    .ok()
                    .flatten()
            };
            let choice = choose_rules(flag.as_deref(), reported.as_deref());
            let o = advertise::check(
                &cfg,
                &where_,
                choice.rules,
                base + sample + ADVERTISE_MARGIN,
            );
            (o, choice)
        })
    };
    let log_task = match (&inputs.rtcd_log, &loaded.env.unit) {
        (Some(p), _) => {
            let p = p.clone();
            Some(spawn(move || logs::read(&p)))
        }
        // No file: RTCD's journal, when its systemd unit is known (from its process, or a
        // loaded unit), since RTCD's start.
        (None, Some(unit)) => {
            let unit = unit.clone();
            let since = loaded
                .env
                .pid
                .and_then(|pid| logs::process_start(pid, cpu::ticks_per_sec()));
            Some(spawn(move || {
                logs::read_journal(&unit, since, base + sample + LOG_MARGIN)
            }))
        }
        (None, None) => None,
    };

    // 1. Ports.
    port_checks(
        &udp0,
        &udp_socks,
        &tcp_socks,
        (&udp_owner, &udp_all),
        (&tcp_owner, &tcp_all),
        scan_complete,
        (ice_udp, ice_tcp),
        loaded,
        &mut checks,
        &mut findings,
    );

    // 3. Socket buffers (needs no sample).
    let buffers = sysctl::read();
    let small = sysctl::small(&buffers);
    {
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
        checks.push(Check::new(
            "socket_buffers",
            status,
            format!(
                "{} (guide: {} each)",
                values.join(", "),
                sysctl::RECOMMENDED
            ),
        ));
        if !small.is_empty() {
            let names: Vec<String> = small.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            findings.push(Finding::new(
                "socket_buffers_small",
                Severity::Warning,
                format!(
                    "socket buffer limits below the guide's 16777216: {} — RTCD asks for 16 MB UDP buffers and the kernel caps them, so bursts overflow and packets drop",
                    names.join(", ")
                ),
                sysctl::fix_text(&small),
            ));
        }
    }

    // End of the sample.
    std::thread::sleep((t0 + sample).saturating_duration_since(Instant::now()));
    let elapsed = t0.elapsed().as_secs_f64();
    udp_drop_check(
        &udp0,
        &drops0,
        ice_udp,
        &udp_addrs,
        &snmp0,
        elapsed,
        &small,
        &mut checks,
        &mut findings,
    );
    cpu_check(rtcd_pid, cpu0, &mut checks, &mut findings);

    // 2. API.
    let mut version = None;
    let mut version_json = None;
    match api_task.join(hard) {
        Some(o) => {
            checks.extend(o.checks);
            findings.extend(o.findings);
            version = o.version;
            version_json = o.version_json;
        }
        None => {
            checks.push(late("api_version"));
            findings.push(Finding::new(
                "rtcd_api_unreachable",
                Severity::Error,
                format!("RTCD's API at {} did not answer in time", api_url.base()),
                "check that RTCD runs and answers `curl URL/version`; pass --rtcd-api if it listens elsewhere",
            ));
        }
    }

    // 5. Firewall.
    match nft_task.join(hard) {
        None => checks.push(late("host_firewall")),
        Some(Err(why)) => checks.push(Check::new(
            "host_firewall",
            Status::Skipped,
            format!("skipped: {why}"),
        )),
        Some(Ok(blocks)) => firewall_findings(&blocks, &fw_targets, &mut checks, &mut findings),
    }

    // 6. Configuration and what RTCD advertises.
    checks.push(env_check(&loaded.env));
    if let Some(e) = &loaded.env_error {
        // rtcd cmd/rtcd/config.go:31-33 (v1.2.6): a variable envconfig cannot parse stops RTCD.
        findings.push(Finding::new(
            "rtcd_config_invalid",
            Severity::Error,
            format!(
                "RTCD would refuse its environment ({}): {}",
                loaded.env.describe(),
                e.rtcd_message
            ),
            e.hint.clone(),
        ));
    }
    let mut stun_now = HashMap::new();
    let mut rules = None;
    match adv_task.join(hard) {
        Some((mut o, choice)) => {
            o.check.detail.push_str(&format!("; {}", choice.text()));
            checks.push(o.check);
            findings.extend(o.findings);
            stun_now = o.stun_now;
            rules = Some(choice);
        }
        None => checks.push(late("rtcd_config")),
    }

    // 8. Logs.
    let mut log = None;
    match log_task.map(|t| t.join(hard)) {
        None => checks.push(Check::new(
            "logs",
            Status::Skipped,
            "skipped: no --rtcd-log given and no systemd unit of RTCD found for its journal (e.g. `journalctl -u rtcd --since -1h > rtcd.log` or `docker logs CONTAINER > rtcd.log`, then --rtcd-log rtcd.log)",
        )),
        Some(None) => checks.push(late("logs")),
        Some(Some(Err(e))) => checks.push(Check::new("logs", Status::Skipped, format!("skipped: {e}"))),
        Some(Some(Ok(scan))) => {
            let restart = match &loaded.env.unit {
                Some(u) => format!("`systemctl restart {u}`"),
                None => "`systemctl restart rtcd`, or restart its container".to_string(),
            };
            let stun = logs::stun_at_start(&scan.stun, &stun_now, &loaded.where_, &restart);
            log_findings(&scan, stun, &mut checks, &mut findings);
            log = Some(scan);
        }
    }

    report::sort_findings(&mut findings);
    let report = DoctorReport {
        schema: probe_proto::report::SCHEMA,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: hostname(),
        ok: report::ok(&findings),
        rtcd: report::Rtcd {
            version,
            api: api_url.base(),
            udp_owner,
            tcp_owner,
            env: Some(report::EnvReport::from(&loaded.env)),
            pion_rules: rules.as_ref().map(|c| c.rules),
            version_source: rules.as_ref().map(|c| c.from.to_string()),
        },
        checks,
        findings,
        started_at: probe_proto::report::rfc3339(started_ms),
        duration_ms: t0.elapsed().as_millis() as u64,
        config: loaded.source.clone(),
    };
    Done {
        report,
        version_json,
        log,
    }
}

fn api_is_local(url: &Url) -> bool {
    match url.host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || crate::interfaces::local_addrs().is_ok_and(|l| l.iter().any(|a| a.ip == ip))
        }
        Err(_) => url.host == "localhost" || url.host == hostname(),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn addresses(socks: &[&Sock]) -> String {
    let set: BTreeSet<String> = socks.iter().map(|s| s.local.ip().to_string()).collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}

fn owners_text(all: &[Owner]) -> String {
    all.iter()
        .map(|o| format!("{} (pid {})", o.process, o.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
fn port_checks(
    udp0: &Result<Vec<Sock>, String>,
    udp_socks: &[&Sock],
    tcp_socks: &[&Sock],
    udp: (&Option<Owner>, &[Owner]),
    tcp: (&Option<Owner>, &[Owner]),
    scan_complete: bool,
    (ice_udp, ice_tcp): (u16, u16),
    loaded: &Loaded,
    checks: &mut Vec<Check>,
    findings: &mut Vec<Finding>,
) {
    let invisible = if scan_complete {
        "a process the doctor cannot see (run it as root)"
    } else {
        "a process not found before the deadline"
    };
    if let Err(e) = udp0 {
        checks.push(Check::new(
            "udp_port",
            Status::Skipped,
            format!("skipped: {e}"),
        ));
    } else if udp_socks.is_empty() {
        checks.push(Check::new(
            "udp_port",
            Status::Fail,
            format!("nothing listens on UDP {ice_udp}"),
        ));
        findings.push(Finding::new(
            "rtcd_not_listening",
            Severity::Error,
            format!("nothing listens on UDP port {ice_udp} (RTCD's ice_port_udp) on this host: RTCD is not running, or runs with another configuration"),
            format!(
                "start RTCD and check it stays up (`systemctl status rtcd`, `journalctl -u rtcd`); if it uses another config than {}, pass it with --rtcd-config",
                loaded.where_
            ),
        ));
    } else {
        let who = match udp.0 {
            Some(_) => owners_text(udp.1),
            None => invisible.to_string(),
        };
        let mut status = Status::Pass;
        if let Some(o) = udp.0 {
            if !o.process.to_lowercase().contains("rtcd") {
                status = Status::Warn;
                findings.push(Finding::new(
                    "rtcd_port_other_process",
                    Severity::Warning,
                    format!("UDP port {ice_udp} is held by {} (pid {}), not by RTCD", o.process, o.pid),
                    format!("stop that process (a probe-server or nc test left running?) with `kill {}` and start RTCD", o.pid),
                ));
            }
        }
        checks.push(Check::new(
            "udp_port",
            status,
            format!(
                "UDP {ice_udp} on {}: {} socket(s) held by {who}",
                addresses(udp_socks),
                udp_socks.len()
            ),
        ));
    }
    if tcp_socks.is_empty() {
        checks.push(Check::new(
            "tcp_port",
            Status::Warn,
            format!("nothing listens on TCP {ice_tcp}"),
        ));
        findings.push(Finding::new(
            "tcp_fallback_off",
            Severity::Info,
            format!("nothing listens on TCP port {ice_tcp} (RTCD's ice_port_tcp): the TCP fallback (RTCD v0.11+) is not available, so users whose networks block UDP cannot join"),
            "RTCD v0.11+ listens on [rtc] ice_port_tcp (env RTCD_RTC_ICEPORTTCP, default 8443); upgrade RTCD or check that setting and ice_address_tcp",
        ));
    } else {
        let who = match tcp.0 {
            Some(_) => owners_text(tcp.1),
            None => invisible.to_string(),
        };
        checks.push(Check::new(
            "tcp_port",
            Status::Pass,
            format!(
                "TCP {ice_tcp} listening on {}, held by {who}",
                addresses(tcp_socks)
            ),
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn udp_drop_check(
    udp0: &Result<Vec<Sock>, String>,
    drops0: &HashMap<u64, u64>,
    port: u16,
    addrs: &[std::net::IpAddr],
    snmp0: &Result<snmp::UdpCounters, String>,
    elapsed: f64,
    small: &[(&'static str, u64)],
    checks: &mut Vec<Check>,
    findings: &mut Vec<Finding>,
) {
    let snmp1 = snmp::read();
    let (Ok(s0), Ok(s1)) = (snmp0, &snmp1) else {
        let why = snmp0
            .as_ref()
            .err()
            .or(snmp1.as_ref().err())
            .cloned()
            .unwrap_or_default();
        checks.push(Check::new(
            "udp_drops",
            Status::Skipped,
            format!("skipped: {why}"),
        ));
        return;
    };
    let host = s0.delta(s1);
    let mut rtcd_delta = 0u64;
    let mut rtcd_total = 0u64;
    let mut measured = false;
    if udp0.is_ok() {
        if let Ok(udp1) = procnet::read_tables(Proto::Udp) {
            measured = true;
            for s in procnet::on_port(&udp1, port, addrs, false) {
                let now = s.drops.unwrap_or(0);
                rtcd_total += now;
                rtcd_delta += now.saturating_sub(drops0.get(&s.inode).copied().unwrap_or(0));
            }
        }
    }
    let rate = |n: u64| n as f64 / elapsed.max(0.001);
    let detail = format!(
        "over {elapsed:.1} s: RTCD's UDP {port} sockets dropped {rtcd_delta} ({:.0}/s; {rtcd_total} since they opened); host UDP RcvbufErrors +{}, InErrors +{}, SndbufErrors +{}",
        rate(rtcd_delta),
        host.rcvbuf_errors,
        host.in_errors,
        host.sndbuf_errors
    );
    let buffers = if small.is_empty() {
        "the buffer limits are already at the guide's values, so give RTCD more CPU (see the cpu check) or spread calls over more RTCD hosts".to_string()
    } else {
        format!("raise the buffer limits: {}", sysctl::fix_text(small))
    };
    if rtcd_delta > 0 {
        findings.push(Finding::new(
            "udp_receive_drops",
            Severity::Error,
            format!(
                "RTCD's own UDP sockets on port {port} dropped {rtcd_delta} datagrams in {elapsed:.1} s ({:.0}/s): their receive buffers overflow, so users hear choppy audio",
                rate(rtcd_delta)
            ),
            buffers,
        ));
        checks.push(Check::new("udp_drops", Status::Fail, detail));
    } else if host.rcvbuf_errors > 0 || host.in_errors > 0 || host.sndbuf_errors > 0 {
        findings.push(Finding::new(
            "udp_receive_drops",
            Severity::Warning,
            format!(
                "this host's UDP stack dropped datagrams during the sample (RcvbufErrors +{}, InErrors +{}, SndbufErrors +{}; `netstat -su`){}",
                host.rcvbuf_errors,
                host.in_errors,
                host.sndbuf_errors,
                if measured { ", though not on RTCD's sockets" } else { "" }
            ),
            buffers,
        ));
        checks.push(Check::new("udp_drops", Status::Warn, detail));
    } else {
        checks.push(Check::new("udp_drops", Status::Pass, detail));
    }
}

fn cpu_check(
    pid: Option<u32>,
    start: Option<(u64, Instant)>,
    checks: &mut Vec<Check>,
    findings: &mut Vec<Finding>,
) {
    let cores = cpu::cores();
    let load = cpu::load1();
    let load_text = load.map_or("load unknown".to_string(), |l| {
        format!("load {l:.2} on {cores} core(s)")
    });
    let (Some(pid), Some((t0, i0))) = (pid, start) else {
        checks.push(Check::new(
            "cpu",
            Status::Skipped,
            format!("skipped: RTCD's process was not found; {load_text}"),
        ));
        return;
    };
    let Some(t1) = cpu::process_ticks(pid) else {
        checks.push(Check::new(
            "cpu",
            Status::Skipped,
            format!("skipped: RTCD (pid {pid}) exited during the sample"),
        ));
        return;
    };
    let secs = i0.elapsed().as_secs_f64().max(0.001);
    let one_core_pct = t1.saturating_sub(t0) as f64 / cpu::ticks_per_sec() / secs * 100.0;
    let (check, finding) = judge_cpu(pid, one_core_pct, cores, load);
    checks.push(check);
    findings.extend(finding);
}

/// The CPU verdict from what was measured: RTCD's share of the machine, and the load.
fn judge_cpu(
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
    if share >= cpu::HIGH_SHARE_PCT {
        let finding = Finding::new(
            "rtcd_high_cpu",
            Severity::Warning,
            format!("RTCD used {share:.0} % of this machine's {cores} core(s) during the sample: high CPU degrades call quality"),
            "give RTCD more cores or spread calls over more RTCD hosts (the guide's Performance Baselines give calls per core)",
        );
        (Check::new("cpu", Status::Warn, detail), Some(finding))
    } else if load.is_some_and(|l| l / cores as f64 >= cpu::HIGH_LOAD_PER_CORE) {
        (
            Check::new(
                "cpu",
                Status::Warn,
                format!("{detail} — the host is overloaded"),
            ),
            None,
        )
    } else {
        (Check::new("cpu", Status::Pass, detail), None)
    }
}

fn firewall_findings(
    blocks: &[nft::Block],
    targets: &[nft::Target],
    checks: &mut Vec<Check>,
    findings: &mut Vec<Finding>,
) {
    let ports: Vec<String> = targets.iter().map(nft::Target::label).collect();
    if blocks.is_empty() {
        checks.push(Check::new(
            "host_firewall",
            Status::Pass,
            format!("nftables input path does not drop {}", ports.join(", ")),
        ));
        return;
    }
    let mut lines = Vec::new();
    for b in blocks {
        let t = &b.target;
        let proto = t.label().split('/').nth(1).unwrap_or("udp").to_string();
        let place = format!("table {} {}, chain {}", b.family, b.table, b.chain);
        let (what, fix) = match &b.rule {
            Some((rule, handle)) => (
                format!("rule `{rule}` (handle {handle})"),
                format!(
                    "remove it (`nft delete rule {} {} {} handle {handle}`) or accept the port before it (`nft insert rule {} {} {} {proto} dport {} accept`), then make it permanent where your firewall is kept (/etc/nftables.conf, `ufw allow {}`, or `firewall-cmd --permanent --add-port={}`)",
                    b.family, b.table, b.chain, b.family, b.table, b.chain, t.port, t.label(), t.label()
                ),
            ),
            None => (
                "the chain's policy drop (no rule accepts it)".to_string(),
                format!(
                    "accept the port: `nft add rule {} {} {} {proto} dport {} accept`, then make it permanent where your firewall is kept (/etc/nftables.conf, `ufw allow {}`, or `firewall-cmd --permanent --add-port={}`)",
                    b.family, b.table, b.chain, t.port, t.label(), t.label()
                ),
            ),
        };
        let when = if b.conditional {
            " for some packets (the rule has other conditions)"
        } else {
            ""
        };
        lines.push(format!("{} dropped by {place}: {what}{when}", t.label()));
        findings.push(Finding::new(
            "host_firewall_blocks",
            if b.conditional {
                Severity::Warning
            } else {
                Severity::Error
            },
            format!(
                "the host firewall drops {} ({}){when}: {place}, {what}",
                t.label(),
                t.what
            ),
            fix,
        ));
    }
    let status = if blocks.iter().any(|b| !b.conditional) {
        Status::Fail
    } else {
        Status::Warn
    };
    checks.push(Check::new("host_firewall", status, lines.join("\n")));
}

fn log_findings(
    scan: &logs::LogScan,
    (stun_detail, stun_finding): (Option<String>, Option<Finding>),
    checks: &mut Vec<Check>,
    findings: &mut Vec<Finding>,
) {
    let counts: Vec<String> = scan
        .counts
        .iter()
        .map(|(p, n)| format!("\"{p}\" ×{n}"))
        .collect();
    let mut detail = format!(
        "{}: {} line(s){}; guide patterns: {}",
        scan.source,
        scan.lines,
        if scan.skipped_bytes > 0 {
            " (the end of the file)"
        } else {
            ""
        },
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    );
    let mut status = Status::Pass;
    if !scan.private_candidates.is_empty() {
        let ips: Vec<String> = scan
            .private_candidates
            .iter()
            .map(|(ip, n)| format!("{ip} (×{n})"))
            .collect();
        detail.push_str(&format!(
            "; ICE traces from private host candidates: {}",
            ips.join(", ")
        ));
        status = Status::Warn;
        findings.push(Finding::new(
            "log_private_candidates",
            Severity::Warning,
            format!(
                "RTCD's ICE traces show it using private host candidate(s) {} (\"Ping STUN from udp4 host …\"): clients outside this network cannot reach those",
                scan.private_candidates.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            "set [rtc] ice_host_override (env RTCD_RTC_ICEHOSTOVERRIDE) to the public address users reach RTCD on, and restart RTCD",
        ));
    }
    if let Some(d) = stun_detail {
        detail.push_str(&format!("; {d}"));
    }
    if let Some(f) = stun_finding {
        status = if f.severity == Severity::Error {
            Status::Fail
        } else {
            Status::Warn
        };
        findings.push(f);
    }
    if !counts.is_empty() {
        if status == Status::Pass {
            status = Status::Warn;
        }
        findings.push(Finding::new(
            "log_error_patterns",
            Severity::Info,
            format!("RTCD's log has lines matching the guide's error patterns: {}", counts.join(", ")),
            "read those lines (probe-server bundle collects them) next to this report's other findings",
        ));
    }
    checks.push(Check::new("logs", status, detail));
}

#[cfg(test)]
mod rules_tests {
    use super::*;
    use probe_proto::rtcd::PionRules;

    #[test]
    fn flag_then_version_then_default() {
        let c = choose_rules(Some("1.2.4"), Some("v1.2.6"));
        assert_eq!((c.rules, c.from), (PionRules::V4_0, "--rtcd-version"));
        assert!(c.text().contains("--rtcd-version 1.2.4"), "{}", c.text());
        let c = choose_rules(None, Some("v1.2.4"));
        assert_eq!((c.rules, c.from), (PionRules::V4_0, "RTCD's /version"));
        assert!(
            c.text().contains("v4.0") && c.text().contains("v1.2.4"),
            "{}",
            c.text()
        );
        let c = choose_rules(None, Some("v1.2.6"));
        assert_eq!((c.rules, c.from), (PionRules::V4_2, "RTCD's /version"));
        let c = choose_rules(None, None);
        assert_eq!((c.rules, c.from), (PionRules::default(), "default"));
        assert!(c.text().contains("version unknown"), "{}", c.text());
        // A development build's version is not a release: the default, and the report says why.
        let c = choose_rules(None, Some("dev-abc123"));
        assert_eq!((c.rules, c.from), (PionRules::default(), "default"));
        assert!(c.text().contains("\"dev-abc123\""), "{}", c.text());
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn cpu_verdict_thresholds() {
        let (c, f) = judge_cpu(7, 170.0, 2, Some(1.0));
        assert_eq!(
            (c.status, f.map(|f| f.id)),
            (Status::Warn, Some("rtcd_high_cpu".to_string()))
        );
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
}
