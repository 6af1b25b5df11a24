//! What the doctor observed on RTCD's host, recorded as plain values: the socket tables and
//! their owners, sysctl values, UDP counters, CPU ticks, the API's answers, the nftables
//! ruleset (JSON), what RTCD advertises and its log. `gather` fills it (all the IO); `rules`
//! judges it (pure), so every rule is unit-tested from recorded facts.

use probe_proto::http::Url;
use probe_proto::rtcd::ConfigError;
use std::net::{IpAddr, SocketAddr};

use super::advertise;
use super::api::ApiFacts;
use super::logs::LogScan;
use super::nft::Target;
use super::procnet::{Owner, Sock};
use super::snmp::UdpCounters;
use super::RulesChoice;
use crate::rtcd_env::RtcdEnv;

pub struct HostFacts {
    /// When the run started (ms since the Unix epoch) and how long it took.
    pub started_ms: u64,
    pub duration_ms: u64,
    pub host: String,
    pub setup: Setup,
    pub ports: PortFacts,
    /// `net.core.*mem_max` values, or why each could not be read.
    pub buffers: Vec<(&'static str, Result<u64, String>)>,
    pub drops: DropFacts,
    pub cpu: CpuFacts,
    pub api: ApiSide,
    pub firewall: FirewallFacts,
    /// What RTCD advertises (judged by `advertise`), with the pion/ice rules used; `None`: not
    /// done within its deadline.
    pub advertise: Option<(advertise::Outcome, RulesChoice)>,
    pub log: LogFacts,
    /// RTCD's own NAT, seen with STUN from its ICE port's address.
    pub nat: NatFacts,
}

/// What the run was given and found before gathering: RTCD's configuration and environment.
pub struct Setup {
    /// Where RTCD's configuration came from (a path, or RTCD's defaults).
    pub config_source: String,
    /// Where the admin edits a setting, for fix texts.
    pub where_: String,
    pub env: RtcdEnv,
    /// An `RTCD_*` variable RTCD would refuse.
    pub env_error: Option<ConfigError>,
    /// RTCD, or the Calls plugin's integrated RTC server.
    pub deployment: probe_proto::calls::Deployment,
    /// What Mattermost's API said about the Calls plugin (`--mattermost`), else `None`.
    pub calls_api: Option<CallsApiFacts>,
    /// RTCD's configuration file's last change and RTCD's start, in seconds since the epoch,
    /// when both are known (a file given, RTCD's process found).
    pub config_age: Option<ConfigAge>,
    /// Whether RTCD's process (when found) shares the doctor's network namespace; `None`:
    /// not found, or not readable.
    pub rtcd_same_netns: Option<bool>,
    /// Keys of RTCD's file that RTCD ignores (misspelled or misplaced).
    pub unknown_keys: Vec<probe_proto::rtcd::keys::UnknownKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigAge {
    pub modified_s: u64,
    pub rtcd_started_s: u64,
    pub pid: u32,
}

impl ConfigAge {
    /// `path`'s last change beside the start of RTCD's process `pid` (`rtcd_started_s`).
    pub fn read(path: &std::path::Path, pid: u32, rtcd_started_s: u64) -> Option<Self> {
        let modified_s = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(Self {
            modified_s,
            rtcd_started_s,
            pid,
        })
    }

    /// The file changed after RTCD started (beyond the start time's rounding): RTCD, which
    /// reads it only at start, runs with what it said before.
    pub fn changed_since_start(&self) -> bool {
        self.modified_s > self.rtcd_started_s + super::logs::START_SLACK_S
    }
}

/// Mattermost's API on the Calls plugin: its status and, when an RTCD service URL is set,
/// whether the licence makes the plugin use it.
#[derive(Debug, Clone)]
pub struct CallsApiFacts {
    /// Mattermost's site URL, for messages.
    pub base: String,
    pub status: Result<Vec<probe_proto::calls::mattermost::PluginStatus>, String>,
    /// The RTCD service URL's verdict (`calls::rtcd_decision`), when the URL is set.
    pub rtcd_line: Option<String>,
}

/// Who holds a set of sockets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holders {
    /// The process holding the most of them.
    pub main: Option<Owner>,
    /// Every distinct holder, the main one first.
    pub all: Vec<Owner>,
}

/// RTCD's ICE ports at the start of the sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortFacts {
    pub ice_udp: u16,
    pub ice_tcp: u16,
    /// Why the UDP tables could not be read.
    pub udp_error: Option<String>,
    /// Sockets on the ICE ports (limited to RTCD's ice_address_*; TCP: listening only).
    pub udp: Vec<Sock>,
    pub tcp: Vec<Sock>,
    pub udp_holders: Holders,
    pub tcp_holders: Holders,
    /// How much of `/proc/*/fd` the scan for owners saw.
    pub visibility: OwnerVisibility,
}

/// How much the `/proc/*/fd` scan for sockets' owners saw: a socket without an owner is only
/// "held by nobody" when it saw everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerVisibility {
    /// Every process's fds were read.
    #[default]
    Full,
    /// Some processes' fds were refused (other users' processes, without root).
    NotRoot,
    /// Some were refused to root itself: no CAP_SYS_PTRACE (a container's default set), or
    /// hidepid or a security module.
    Restricted,
    /// The scan did not finish before its deadline.
    Late,
}

impl OwnerVisibility {
    /// Completes "held by …" in a check's detail when the kernel shows sockets on a port but
    /// the scan found no process holding them, with what to do about it.
    pub fn unknown_holder(self) -> &'static str {
        match self {
            OwnerVisibility::NotRoot => {
                "a process the doctor cannot identify (other users' processes are hidden from it: run the doctor as root)"
            }
            OwnerVisibility::Restricted => {
                "a process the doctor cannot identify (even root may not read other processes' fds here: in a container the doctor needs CAP_SYS_PTRACE, e.g. docker run --cap-add SYS_PTRACE; or run it on the host)"
            }
            OwnerVisibility::Late => {
                "a process the doctor cannot identify (its scan of /proc/*/fd ran out of time: run the doctor again)"
            }
            // Root saw every process in its PID namespace: the holder lives outside it (the
            // doctor in a container sharing the host's network) or is the kernel itself.
            OwnerVisibility::Full => {
                "a process the doctor cannot identify (no process it can see has the socket open: run it on the host, not in a container)"
            }
        }
    }

    /// The same, short, for the report's header.
    pub fn unknown_holder_short(self) -> &'static str {
        match self {
            OwnerVisibility::NotRoot => "a process the doctor cannot identify (run as root)",
            OwnerVisibility::Restricted => {
                "a process the doctor cannot identify (root without CAP_SYS_PTRACE?)"
            }
            OwnerVisibility::Late => "a process not found before the deadline (run again)",
            OwnerVisibility::Full => "a process outside the doctor's view (run it on the host)",
        }
    }
}

/// UDP drops over the sample: the host's counters and RTCD's own sockets' `drops` column.
#[derive(Debug, Clone, PartialEq)]
pub struct DropFacts {
    pub port: u16,
    /// RTCD's ice_address_udp, parsed (empty: every address).
    pub addrs: Vec<IpAddr>,
    /// Seconds from the start of the run to the second reading.
    pub elapsed: f64,
    pub snmp_start: Result<UdpCounters, String>,
    pub snmp_end: Result<UdpCounters, String>,
    /// RTCD's UDP sockets at the start (with their drop counters).
    pub socks_start: Vec<Sock>,
    /// The whole UDP table at the end; `None` when either reading failed.
    pub table_end: Option<Vec<Sock>>,
}

/// RTCD's CPU use over the sample and the host's load.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuFacts {
    pub cores: usize,
    pub load: Option<f64>,
    pub sample: CpuSample,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CpuSample {
    /// No process known to hold RTCD's ports (or its ticks could not be read at the start).
    NotFound,
    /// The process sampled (RTCD's, when a holder is RTCD) ended during the sample.
    Exited { owner: Owner },
    /// Clock ticks the holder used over `secs`; the rules decide whether it is RTCD.
    Measured {
        owner: Owner,
        ticks: u64,
        secs: f64,
        ticks_per_sec: f64,
    },
}

/// RTCD's API: where it was asked, who listens there, and what it answered.
#[derive(Debug)]
pub struct ApiSide {
    pub url: Url,
    /// How the URL was chosen (`--rtcd-api`, the config), for fix texts.
    pub url_source: String,
    pub min_version: String,
    /// The URL's host is this host.
    pub local: bool,
    /// Sockets listening on the API port here, and their holder.
    pub listening: usize,
    pub owner: Option<Owner>,
    /// `None`: no answer within the deadline.
    pub answers: Option<ApiFacts>,
}

/// The nftables ruleset (`nft -j list ruleset`) and the ports it is searched for.
#[derive(Debug, Clone, PartialEq)]
pub struct FirewallFacts {
    pub targets: Vec<Target>,
    /// `None`: not read within the deadline.
    pub ruleset: Option<Result<serde_json::Value, String>>,
}

/// RTCD's log, from `--rtcd-log` or its journal.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFacts {
    /// No file given and no systemd unit known.
    NoSource,
    /// Not read within the deadline.
    Late,
    Failed(String),
    Read(LogScan),
}

/// RTCD's own NAT: Binding requests sent from this host, from the ICE port's address, to the
/// STUN servers RTCD is given and those of `--stun-check-server`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum NatFacts {
    /// Not run: why (an override, no STUN server, `--no-nat-check`).
    NotRun {
        why: String,
    },
    /// Not finished within its deadline.
    Late,
    Ran(NatRun),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NatRun {
    /// RTCD's ice_port_udp.
    pub ice_port: u16,
    /// ice_host_port_override as RTCD resolves it on this host: the port it advertises
    /// instead of the local one at a STUN-found address.
    pub port_override: Option<u16>,
    /// How long each server was given, retransmits included.
    pub deadline_ms: u64,
    pub servers: Vec<NatServer>,
    /// One per local address RTCD sends its STUN request from.
    pub sources: Vec<NatSource>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NatServer {
    /// As given: `stun:203.0.113.2:3478`, or `--stun-check-server 198.51.100.7:8443`.
    pub label: String,
    /// The server RTCD itself asks (its first STUN URL).
    pub rtcd_s: bool,
    /// Given with `--stun-check-server` (a probe-server, say), not by RTCD's ice_servers.
    pub from_flag: bool,
    /// Its address; `None`: see `error` (DNS).
    pub addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NatSource {
    pub local: IpAddr,
    /// The port the requests left from; `None`: nothing could be bound (see `error`).
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The ICE port was in use (RTCD running), so `port` is another port of the address.
    pub ice_port_taken: bool,
    /// One per server of this address's family that has an address.
    pub answers: Vec<NatAnswer>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NatAnswer {
    /// Index into `servers`.
    pub server: usize,
    /// The XOR-MAPPED-ADDRESS; `None`: no answer within the deadline.
    pub mapped: Option<SocketAddr>,
}
