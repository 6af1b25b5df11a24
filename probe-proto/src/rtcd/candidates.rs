//! What RTCD advertises as its ICE host candidates, computed from its config
//! and the host's addresses without touching the network.
//!
//! Sources read: rtcd `service/rtc/server.go` (`Start`: local IPs, port
//! override, STUN; `initUDP`/`initTCP`), `sfu.go` (`initSettingEngine`,
//! `OnICECandidate` port override), `utils.go` (`generateAddrsPairs`,
//! `getExternalAddrMapFromHostOverride`), `net.go`, `stun.go`; pion/ice
//! v4.0.x `gather.go` (UDP mux and TCP mux gathering), `tcp_mux.go`,
//! `external_ip_mapper.go`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::config::{parse_ice_address, RtcdConfig};
use super::goparse::{canonical, is_domain_name, parse_ip, split_host_port};
use super::mapping::{Lookup, Mapper, PION_MAPPING_ERROR};
use super::net::{
    is_loopback, is_private, is_v6_link_local, pion_tcp_keeps, rtcd_keeps, same_stack,
};
use super::pion::PionRules;
use super::rewrite::{Rewriter, PION_REWRITE_ERROR};
use super::validate::{parse_port_map, single_port, ConfigError};

/// DNS for a hostname override: `(name, ipv6_allowed)` → addresses in
/// preference order, or the resolver's error text.
pub type Resolve<'a> = dyn Fn(&str, bool) -> Result<Vec<IpAddr>, String> + 'a;

/// Standard STUN port, used by [`stun_url`] when the URL has none.
pub const DEFAULT_STUN_PORT: u16 = 3478;

/// An address of an interface that is up, as gathered by the caller.
/// RTCD judges loopback by the address (127/8, ::1), so `loopback` is
/// informational only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAddr {
    pub ip: IpAddr,
    pub loopback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

/// Where a candidate's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The local address itself (no mapping, an identity pair, or unmapped).
    Local,
    /// `ice_host_override` as a single IP or hostname.
    Override,
    /// An `EXTERNAL/LOCAL` pair (or catch-all entry) of the pairs form.
    Mapping,
    /// The address a STUN server reported for this local address.
    Stun,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// Unreachable from outside the server's network (see [`super::is_private`]).
    pub private: bool,
    pub source: Source,
    /// The local address this candidate stands for.
    pub local: IpAddr,
}

/// How `ice_host_override` was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverrideForm {
    None,
    Ip(IpAddr),
    Hostname {
        name: String,
        resolved: IpAddr,
    },
    /// `(external, local)`; a catch-all entry (a lone external IP) has the
    /// unspecified address of its family as local.
    Pairs(Vec<(IpAddr, IpAddr)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertised {
    /// UDP candidates, then TCP ones, in RTCD's gathering order.
    pub candidates: Vec<Candidate>,
    pub override_form: OverrideForm,
    /// RTCD's own configured ports (the candidates carry the probe's).
    pub rtcd_port_udp: u16,
    pub rtcd_port_tcp: u16,
    /// The port `ice_host_port_override` resolves to on this host, if any.
    pub host_port_override: Option<u16>,
    /// Local addresses RTCD listens on over UDP but advertises no UDP
    /// candidate for: the pairs form maps their family but not them, and
    /// pion v4.0.x drops such UDP candidates (TCP keeps the local address).
    /// Always empty with the v4.2 rules, which map them to the external addresses.
    pub dropped: Vec<IpAddr>,
    /// The pion generation whose rewrite rules were applied.
    pub rules: PionRules,
    /// With `ice_address_udp`/`ice_address_tcp` set: the local IPs RTCD keeps (those listed in
    /// either), which drive the override pairs, STUN, the port map, the UDP listeners when
    /// `ice_address_udp` is empty, and every TCP candidate. `None`: no filter.
    pub narrowed: Option<Vec<IpAddr>>,
    /// The filter keeps no local IP, so RTCD silently drops this part of its configuration.
    pub filter_ignores: Option<FilterIgnores>,
}

/// What RTCD silently drops when `ice_address_*` keeps no local IP (rtcd utils.go:84-87).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterIgnores {
    /// A single-IP or hostname `ice_host_override`.
    Override,
    /// STUN discovery of the public address (`ice_servers` with a usable STUN URL).
    Stun,
}

impl Advertised {
    /// The UDP candidates (media's transport).
    pub fn udp(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates
            .iter()
            .filter(|c| c.protocol == Protocol::Udp)
    }

    /// The setting RTCD's `ice_address_*` filter drops, when that matters: rtcd utils.go:84-87
    /// gives no pairs (override) and server.go:137 no STUN for an empty narrowed list, which
    /// costs something only when the address they would give is not advertised anyway.
    pub fn ignored_by_filter(&self) -> Option<FilterIgnores> {
        self.filter_ignores.filter(|ig| match ig {
            FilterIgnores::Override => match &self.override_form {
                OverrideForm::Ip(ip) | OverrideForm::Hostname { resolved: ip, .. } => {
                    !self.udp().any(|c| c.address == *ip)
                }
                _ => true,
            },
            FilterIgnores::Stun => self.udp().all(|c| c.private),
        })
    }
}

/// Why RTCD would advertise nothing: it would not start, or every call join
/// would fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertiseError {
    /// RTCD refuses this configuration at start-up.
    InvalidConfig(ConfigError),
    /// No usable local address: RTCD does not start.
    NoLocalAddress,
    /// An `ice_address_*` entry RTCD cannot listen on: RTCD does not start.
    CannotListen {
        protocol: Protocol,
        address: String,
        rtcd_message: String,
    },
    /// The override hostname does not resolve on this host: every join fails.
    Resolve { host: String, reason: String },
    /// pion refuses the NAT 1:1 entries: every join fails.
    Mapping {
        entry: String,
        generated: bool,
        rules: PionRules,
    },
}

/// What to do about an override RTCD cannot resolve. RTCD passes the value to Go's
/// `LookupIP` as it is (rtcd service/rtc/net.go:157-170, utils.go:71-81): no trimming, and
/// `ip4` unless enable_ipv6, so an IPv6 literal is "no suitable address" rather than DNS.
fn resolve_fix(host: &str) -> &'static str {
    if host.trim() != host {
        "remove the spaces around the value (RTCD does not trim it)"
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        "an IPv6 address needs enable_ipv6 = true (env RTCD_RTC_ENABLEIPV6); otherwise give the IPv4 address users reach RTCD at"
    } else {
        "fix DNS on the RTCD host or give the public IP address instead"
    }
}

impl fmt::Display for AdvertiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(e) => e.fmt(f),
            Self::NoLocalAddress => write!(
                f,
                "no valid address to listen on was found — this host has no IPv4 address \
                 (nor a global IPv6 one with enable_ipv6) on an interface that is up, so RTCD would not start"
            ),
            Self::CannotListen { protocol, address, rtcd_message } => {
                let (key, env) = match protocol {
                    Protocol::Udp => ("ice_address_udp", "RTCD_RTC_ICEADDRESSUDP"),
                    Protocol::Tcp => ("ice_address_tcp", "RTCD_RTC_ICEADDRESSTCP"),
                };
                write!(
                    f,
                    "{rtcd_message} — [rtc] {key} (env {env}) lists {address}, which RTCD cannot listen on \
                     here (not an address of this host, or IPv6 without enable_ipv6), so RTCD would not start"
                )
            }
            Self::Resolve { host, reason } => write!(
                f,
                "failed to resolve host: failed to resolve host {host:?}: {reason} — RTCD resolves \
                 ice_host_override (env RTCD_RTC_ICEHOSTOVERRIDE) on every call join, so every join \
                 would fail; {}",
                resolve_fix(host)
            ),
            Self::Mapping { entry, generated: false, rules: PionRules::V4_0 } => write!(
                f,
                "{PION_MAPPING_ERROR} — pion refuses the entry {entry:?} of ice_host_override \
                 (env RTCD_RTC_ICEHOSTOVERRIDE), so every call join would fail ({}); use IP literals \
                 EXTERNAL/LOCAL of one family, each local IP once, no spaces, and a lone external IP only for a \
                 family no pair uses",
                PionRules::V4_0.label()
            ),
            Self::Mapping { entry, generated: false, rules: PionRules::V4_2 } => write!(
                f,
                "{PION_REWRITE_ERROR} — pion refuses the entry {entry:?} of ice_host_override \
                 (env RTCD_RTC_ICEHOSTOVERRIDE), so every call join would fail ({}); both sides of \
                 each EXTERNAL/LOCAL pair and every lone entry must be IP literals",
                PionRules::V4_2.label()
            ),
            Self::Mapping { entry, generated: true, rules } => write!(
                f,
                "{} — pion refuses the pair {entry:?} RTCD builds from this host's \
                 addresses (an address listed twice, or a STUN answer of the other family), so every \
                 call join would fail; set ice_host_override (env RTCD_RTC_ICEHOSTOVERRIDE) explicitly",
                // ice v4.0.10 errors.go:87 / ice v4.2.0 errors.go:95: each generation's wording.
                match rules {
                    PionRules::V4_0 => PION_MAPPING_ERROR,
                    PionRules::V4_2 => PION_REWRITE_ERROR,
                }
            ),
        }
    }
}

impl std::error::Error for AdvertiseError {}

/// RTCD `getSTUN`: the first URL of the first server whose URLs are all
/// `stun:`/`stuns:`.
fn first_stun_url(cfg: &RtcdConfig) -> Option<&str> {
    cfg.ice_servers
        .iter()
        .find(|s| s.is_stun())
        .map(|s| s.urls[0].as_str())
}

/// The first STUN URL's host and port (default 3478), read the way STUN URIs
/// are normally read. RTCD itself is stricter, see [`rtcd_stun_target`].
pub fn stun_url(cfg: &RtcdConfig) -> Option<(String, u16)> {
    let url = first_stun_url(cfg)?;
    let rest = url.split_once(':')?.1;
    let rest = rest.split('?').next().unwrap_or_default();
    if let Some(r) = rest.strip_prefix('[') {
        let (host, after) = r.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => DEFAULT_STUN_PORT,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    if rest.parse::<Ipv6Addr>().is_ok() {
        return Some((rest.to_string(), DEFAULT_STUN_PORT));
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None if !rest.is_empty() => Some((rest.to_string(), DEFAULT_STUN_PORT)),
        None => None,
    }
}

/// Where RTCD sends its STUN Binding (rtcd `stun.go`): everything after the
/// first ':' of the first STUN URL must be `host:port` for Go's
/// `ResolveUDPAddr`, so a URL without a port makes RTCD's STUN fail (and
/// RTCD advertise the local address). `None`: no STUN URL; `Err`: RTCD's
/// error text.
pub fn rtcd_stun_target(cfg: &RtcdConfig) -> Option<Result<(String, u16), String>> {
    let url = first_stun_url(cfg)?;
    let server = &url[url.find(':').map_or(0, |i| i + 1)..];
    let parsed = split_host_port(server).and_then(|(host, port)| {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("lookup port {port:?}: unknown port"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok((host, p)),
            _ => Err(format!("address {port}: invalid port")),
        }
    });
    Some(parsed.map_err(|e| format!("failed to resolve stun host: {e}")))
}

/// RTCD `resolveHost(host, "ip4"|"ip", 1s)`, first address kept. IP literals
/// need no DNS; names Go's resolver refuses never reach `resolve`.
fn resolve_override(
    host: &str,
    ipv6: bool,
    resolve: &Resolve<'_>,
) -> Result<(IpAddr, bool), AdvertiseError> {
    let fail = |reason: String| AdvertiseError::Resolve {
        host: host.to_string(),
        reason,
    };
    if let Some(ip) = parse_ip(host) {
        if ip.is_ipv6() && !ipv6 {
            return Err(fail(format!("address {host}: no suitable address found")));
        }
        return Ok((ip, true));
    }
    if !is_domain_name(host) {
        return Err(fail(format!("lookup {host}: no such host")));
    }
    resolve(host, ipv6)
        .map_err(fail)?
        .into_iter()
        .map(canonical)
        .find(|ip| ipv6 || ip.is_ipv4())
        .map(|ip| (ip, false))
        .ok_or_else(|| fail(format!("lookup {host}: no such host")))
}

/// The NAT 1:1 entries RTCD hands pion (rtcd `generateAddrsPairs`), with the
/// source each entry gives a candidate.
struct Pairs {
    form: OverrideForm,
    entries: Vec<String>,
    sources: Vec<Source>,
}

fn generate_pairs(
    cfg: &RtcdConfig,
    rtcd_ips: &[IpAddr],
    public: Option<&[(IpAddr, Option<IpAddr>)]>,
    resolve: &Resolve<'_>,
) -> Result<Pairs, AdvertiseError> {
    let ov = cfg.ice_host_override.as_str();
    let mut p = Pairs {
        form: OverrideForm::None,
        entries: Vec::new(),
        sources: Vec::new(),
    };
    let push = |p: &mut Pairs, ext: IpAddr, local: IpAddr, src: Source| {
        p.entries.push(format!("{ext}/{local}"));
        p.sources.push(src);
    };
    if ov.contains('/') {
        // Passed to pion unchanged: no trimming, no DNS, no check by RTCD.
        for e in ov.split(',') {
            let identity = matches!(e.split_once('/'), Some((a, b)) if a == b);
            p.entries.push(e.to_string());
            p.sources.push(if identity {
                Source::Local
            } else {
                Source::Mapping
            });
        }
        return Ok(p);
    }
    if !ov.is_empty() {
        let (ip, literal) = resolve_override(ov, cfg.enable_ipv6, resolve)?;
        p.form = if literal {
            OverrideForm::Ip(ip)
        } else {
            OverrideForm::Hostname {
                name: ov.to_string(),
                resolved: ip,
            }
        };
        if rtcd_ips.len() == 1 && same_stack(ip, rtcd_ips[0]) {
            push(&mut p, ip, rtcd_ips[0], Source::Override);
            return Ok(p);
        }
        for &local in rtcd_ips {
            if is_loopback(local) {
                push(&mut p, local, local, Source::Local);
            } else if same_stack(ip, local) {
                push(&mut p, ip, local, Source::Override);
            }
        }
        return Ok(p);
    }
    for &local in rtcd_ips {
        let Some(public) = public else { break };
        match public
            .iter()
            .find(|(l, _)| *l == local)
            .and_then(|(_, p)| *p)
        {
            Some(found) => push(&mut p, found, local, Source::Stun),
            None => push(&mut p, local, local, Source::Local),
        }
    }
    Ok(p)
}

/// rtcd `initUDP`/`initTCP` listening on `ice_address_*`: the addresses
/// listened on, or RTCD's start-up error. The unspecified address makes pion
/// list the interface addresses itself.
fn listen_addresses(
    protocol: Protocol,
    raw: &str,
    port: i64,
    all: &[IpAddr],
    ipv6: bool,
) -> Result<Vec<IpAddr>, AdvertiseError> {
    let mut out = Vec::new();
    for entry in parse_ice_address(raw) {
        let Some(ip) = parse_ip(&entry) else {
            continue; // validate() already refused it
        };
        let net = match (protocol, ipv6) {
            (Protocol::Udp, false) => "udp4",
            (Protocol::Udp, true) => "udp",
            (Protocol::Tcp, false) => "tcp4",
            (Protocol::Tcp, true) => "tcp",
        };
        let hostport = match ip {
            IpAddr::V6(_) => format!("[{entry}]:{port}"),
            IpAddr::V4(_) => format!("{entry}:{port}"),
        };
        let op_err = if ip.is_ipv6() && !ipv6 && !ip.is_unspecified() {
            Some(format!(
                "listen {net}: address {entry}: no suitable address found"
            ))
        } else if !ip.is_unspecified() && !all.contains(&ip) {
            Some(format!(
                "listen {net} {hostport}: bind: cannot assign requested address"
            ))
        } else {
            None
        };
        if let Some(op_err) = op_err {
            let rtcd_message = match protocol {
                Protocol::Udp => {
                    format!("failed to create UDP connections: failed to listen on udp: {op_err}")
                }
                Protocol::Tcp => format!("failed to create TCP listener: {op_err}"),
            };
            return Err(AdvertiseError::CannotListen {
                protocol,
                address: entry,
                rtcd_message,
            });
        }
        if ip.is_unspecified() {
            // Go binds "0.0.0.0" or "[::]" under udp4/tcp4 as the IPv4 wildcard (net/ipsock.go
            // internetAddrList, "Issue 18806": "::" falls back to 0.0.0.0), and either one under
            // udp/tcp (enable_ipv6) as the dual-stack [::] (net/ipsock_posix.go
            // favoriteAddrFamily). pion's mux on the wildcard then lists the interface addresses
            // itself: IPv4 only for an IPv4 local address, both families for [::] (ice v4.2.0
            // udp_mux.go:72-108).
            out.extend(
                all.iter()
                    .copied()
                    .filter(|a| a.is_ipv4() || (ipv6 && pion_tcp_keeps(*a, true))),
            );
        } else {
            out.push(ip);
        }
    }
    Ok(out)
}

/// rtcd `Start`: a `localIP/port` map resolves to the port of the first local
/// IP (in interface order) that it names; then `SinglePort`, Go-truncated to
/// 16 bits as RTCD's `uint16(port)` does.
fn effective_port_override(raw: &str, rtcd_ips: &[IpAddr]) -> Option<u16> {
    let mut single = raw.to_string();
    if let Ok(map) = parse_port_map(raw) {
        if let Some(port) = rtcd_ips.iter().find_map(|ip| {
            let s = ip.to_string();
            map.iter().find(|(k, _)| *k == s).map(|(_, p)| *p)
        }) {
            single = port.to_string();
        }
    }
    match single_port(&single) {
        0 => None,
        p => Some(p as u16),
    }
}

/// rtcd `getExternalAddrMapFromHostOverride(override, publicAddrsMap)`:
/// candidate addresses (as Go prints them) whose port the override replaces.
/// The external side of each entry, except identity pairs (rtcd
/// `utils_test.go` "mixed mapping"), plus the STUN-found addresses. A
/// hostname stays a hostname here, so it never matches a candidate.
fn port_override_targets(
    cfg: &RtcdConfig,
    public: Option<&[(IpAddr, Option<IpAddr>)]>,
) -> Vec<String> {
    let ov = cfg.ice_host_override.as_str();
    let mut out = Vec::new();
    if ov.is_empty() {
        // rtcd utils.go:139-144: every STUN-found address.
        for (_, found) in public.unwrap_or_default() {
            if let Some(ip) = found {
                out.push(ip.to_string());
            }
        }
    } else if !ov.contains('/') {
        // rtcd utils.go:147-150: the override text itself, whole.
        out.push(ov.to_string());
    } else {
        // rtcd utils.go:153-163: split at ',' then '/', untrimmed; an entry that is not exactly
        // two parts (a lone external IP beside pairs, which pion v4.2 accepts) is skipped, and
        // so is an identity pair.
        for p in ov.split(',') {
            let pair: Vec<&str> = p.split('/').collect();
            if pair.len() == 2 && pair[0] != pair[1] {
                out.push(pair[0].to_string());
            }
        }
    }
    out
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The local addresses RTCD works with, from the interface list through its filters.
struct Locals {
    /// Every up interface address, canonical, in interface order.
    all: Vec<IpAddr>,
    /// RTCD's local IPs narrowed by `ice_address_*` (all of RTCD's when no filter is set).
    narrowed: Vec<IpAddr>,
    /// Whether an `ice_address_*` filter is set.
    filtered: bool,
}

/// RTCD's own local IPs (rtcd server.go:97-122): IPv6 only when global with enable_ipv6,
/// narrowed by `ice_address_*`. They, not every interface address, are what RTCD asks its STUN
/// server from (server.go:138-160); empty when RTCD would not start.
pub fn rtcd_local_ips(cfg: &RtcdConfig, locals: &[LocalAddr]) -> Vec<IpAddr> {
    Locals::new(cfg, locals).map_or_else(|_| Vec::new(), |l| l.narrowed)
}

impl Locals {
    fn new(cfg: &RtcdConfig, locals: &[LocalAddr]) -> Result<Self, AdvertiseError> {
        let all: Vec<IpAddr> = locals.iter().map(|l| canonical(l.ip)).collect();
        // rtcd server.go:97-103 (getSystemIPs, net.go:34-79).
        let rtcd_ips: Vec<IpAddr> = all
            .iter()
            .copied()
            .filter(|ip| rtcd_keeps(*ip, cfg.enable_ipv6))
            .collect();
        if rtcd_ips.is_empty() {
            return Err(AdvertiseError::NoLocalAddress);
        }
        // rtcd server.go:109-122: with either ice_address_* set, the local IPs are narrowed to
        // those whose text (Go's netip String) is listed in either one. "0.0.0.0" names no
        // local IP.
        let listed: Vec<String> = parse_ice_address(&cfg.ice_address_udp)
            .into_iter()
            .chain(parse_ice_address(&cfg.ice_address_tcp))
            .collect();
        let filtered = !listed.is_empty();
        let narrowed: Vec<IpAddr> = if filtered {
            rtcd_ips
                .into_iter()
                .filter(|ip| listed.contains(&ip.to_string()))
                .collect()
        } else {
            rtcd_ips
        };
        Ok(Locals {
            all,
            narrowed,
            filtered,
        })
    }

    /// The local addresses that get a UDP candidate, and those that get a TCP one.
    fn listeners(&self, cfg: &RtcdConfig) -> Result<(Vec<IpAddr>, Vec<IpAddr>), AdvertiseError> {
        let ipv6 = cfg.enable_ipv6;
        // rtcd server.go:346-363 (initUDP): one mux per ice_address_udp entry when it is set (an
        // unspecified entry makes pion list the interface addresses itself, ice
        // udp_mux.go:72-108), else one per narrowed local IP.
        let udp = if cfg.ice_address_udp.is_empty() {
            self.narrowed.clone()
        } else {
            listen_addresses(
                Protocol::Udp,
                &cfg.ice_address_udp,
                cfg.ice_port_udp,
                &self.all,
                ipv6,
            )?
        };
        // rtcd server.go:385-409 (initTCP): the listeners only have to bind. Which addresses get
        // a passive TCP candidate is pion's interface list (ice net.go:47-126) through RTCD's IP
        // filter, which keeps only the narrowed local IPs (rtcd sfu.go:103-115; ice net.go:111
        // and gather.go:263 in v4.2.0, gather.go:138 in v4.0.10). The mux's own bind address
        // does not limit it: RTCD's multi-mux has none and its single mux listens on every
        // address.
        listen_addresses(
            Protocol::Tcp,
            &cfg.ice_address_tcp,
            cfg.ice_port_tcp,
            &self.all,
            ipv6,
        )?;
        let tcp = self
            .all
            .iter()
            .copied()
            .filter(|ip| pion_tcp_keeps(*ip, ipv6) && self.narrowed.contains(ip))
            .collect();
        Ok((udp, tcp))
    }
}

/// rtcd server.go:137-158: STUN runs when there is no override and any ICE server, once per
/// narrowed local IP.
fn stun_wanted(cfg: &RtcdConfig) -> bool {
    cfg.ice_host_override.is_empty() && !cfg.ice_servers.is_empty()
}

/// The STUN-found address of each narrowed local IP, when RTCD runs STUN at all.
fn stun_public(
    cfg: &RtcdConfig,
    narrowed: &[IpAddr],
    stun: &dyn Fn(IpAddr) -> Option<IpAddr>,
) -> Option<Vec<(IpAddr, Option<IpAddr>)>> {
    if !stun_wanted(cfg) || narrowed.is_empty() {
        return None;
    }
    let usable = matches!(rtcd_stun_target(cfg), Some(Ok(_)));
    Some(
        narrowed
            .iter()
            .map(|&ip| {
                (
                    ip,
                    if usable {
                        stun(ip).map(canonical)
                    } else {
                        None
                    },
                )
            })
            .collect(),
    )
}

/// rtcd utils.go:84-87: with no narrowed local IP, a single-IP or hostname override (still
/// resolved first, utils.go:77-82) and STUN give no pairs at all. The EXT/LOCAL form is
/// returned before that check (utils.go:67-69) and still applies.
fn filter_ignores(cfg: &RtcdConfig, l: &Locals) -> Option<FilterIgnores> {
    if !l.filtered || !l.narrowed.is_empty() {
        None
    } else if !cfg.ice_host_override.is_empty() && !cfg.ice_host_override.contains('/') {
        Some(FilterIgnores::Override)
    } else if stun_wanted(cfg) && matches!(rtcd_stun_target(cfg), Some(Ok(_))) {
        Some(FilterIgnores::Stun)
    } else {
        None
    }
}

/// Computes RTCD's advertised host candidates, carrying `port_udp` /
/// `port_tcp` (the ports the probe listens on) unless `ice_host_port_override`
/// replaces them, as RTCD would.
///
/// * `locals`: addresses of the interfaces that are up, in interface order.
/// * `resolve(name, ipv6_allowed)`: DNS for a hostname override, answers in
///   preference order (RTCD keeps the first; IPv4 only unless `enable_ipv6`).
/// * `stun(local)`: the XOR-MAPPED address a Binding from `local` gets from
///   the server at [`rtcd_stun_target`] (None = no answer). Called, once per
///   local address RTCD uses (loopback included, as RTCD does), only when the
///   override is empty and RTCD can use the first STUN URL.
///
/// Validates the configuration first: RTCD would not start otherwise.
pub fn compute_advertised(
    cfg: &RtcdConfig,
    locals: &[LocalAddr],
    resolve: &Resolve<'_>,
    stun: &dyn Fn(IpAddr) -> Option<IpAddr>,
    port_udp: u16,
    port_tcp: u16,
    rules: PionRules,
) -> Result<Advertised, AdvertiseError> {
    cfg.validate().map_err(AdvertiseError::InvalidConfig)?;
    let l = Locals::new(cfg, locals)?;
    let (udp_listen, tcp_locals) = l.listeners(cfg)?;
    // rtcd server.go:124-135: the port map is looked up among the narrowed local IPs.
    let host_port_override = effective_port_override(&cfg.ice_host_port_override, &l.narrowed);
    let public = stun_public(cfg, &l.narrowed, stun);
    let mut pairs = generate_pairs(cfg, &l.narrowed, public.as_deref(), resolve)?;
    let mapper = HostMapper::new(cfg, &mut pairs, rules)?;
    let mut g = Gathered {
        mapper,
        sources: &pairs.sources,
        host_port_override,
        targets: port_override_targets(cfg, public.as_deref()),
        candidates: Vec::new(),
        dropped: Vec::new(),
    };
    g.gather(Protocol::Udp, &udp_listen, port_udp);
    g.gather(Protocol::Tcp, &tcp_locals, port_tcp);
    let (candidates, dropped) = (g.candidates, g.dropped);
    Ok(Advertised {
        candidates,
        override_form: pairs.form,
        rtcd_port_udp: cfg.ice_port_udp as u16,
        rtcd_port_tcp: cfg.ice_port_tcp as u16,
        host_port_override,
        dropped,
        rules,
        filter_ignores: filter_ignores(cfg, &l),
        narrowed: l.filtered.then_some(l.narrowed),
    })
}

/// The host-candidate mapper of the pion generation in use.
enum HostMapper {
    None,
    V4_0(Mapper),
    V4_2(Rewriter),
}

impl HostMapper {
    /// rtcd sfu.go:117-124: SetNAT1To1IPs only with pairs. With the EXT/LOCAL override, the
    /// pairs' form becomes what pion parsed.
    fn new(cfg: &RtcdConfig, pairs: &mut Pairs, rules: PionRules) -> Result<Self, AdvertiseError> {
        if pairs.entries.is_empty() {
            return Ok(HostMapper::None);
        }
        let map_err = |entry: String| AdvertiseError::Mapping {
            entry,
            generated: !cfg.ice_host_override.contains('/'),
            rules,
        };
        let (mapper, parsed) = match rules {
            // pion/ice v4.0.x external_ip_mapper.go:82-147.
            PionRules::V4_0 => {
                let (m, parsed) = Mapper::new(&pairs.entries).map_err(map_err)?;
                (HostMapper::V4_0(m), parsed)
            }
            // webrtc v4.2.6 icegatherer.go:378-405 + ice v4.2.0 external_ip_mapper.go.
            PionRules::V4_2 => {
                let (r, parsed) = Rewriter::new(&pairs.entries).map_err(map_err)?;
                (HostMapper::V4_2(r), parsed)
            }
        };
        if cfg.ice_host_override.contains('/') {
            pairs.form = OverrideForm::Pairs(
                parsed
                    .iter()
                    .map(|&(ext, local)| (ext, local.unwrap_or_else(|| unspecified_like(ext))))
                    .collect(),
            );
        }
        Ok(mapper)
    }

    /// The addresses advertised for `local` over `protocol`, with where each comes from;
    /// `None`: pion drops the candidate.
    fn map(
        &self,
        local: IpAddr,
        protocol: Protocol,
        sources: &[Source],
    ) -> Option<Vec<(IpAddr, Source)>> {
        let r = match self {
            HostMapper::None => return Some(vec![(local, Source::Local)]),
            HostMapper::V4_0(m) => {
                return match m.find(local) {
                    Lookup::Unchanged => Some(vec![(local, Source::Local)]),
                    Lookup::Mapped { external, entry } => Some(vec![(external, sources[entry])]),
                    // ice v4.0.10 gather.go:348-353: the UDP mux drops the candidate; the TCP
                    // path (gather.go:148-153) keeps the local address.
                    Lookup::NotFound if protocol == Protocol::Udp => None,
                    Lookup::NotFound => Some(vec![(local, Source::Local)]),
                };
            }
            HostMapper::V4_2(r) => r,
        };
        let Some(list) = r.lookup(local) else {
            return Some(vec![(local, Source::Local)]);
        };
        let mut v: Vec<(IpAddr, Source)> = list
            .into_iter()
            .map(|(ip, entry)| {
                let ip = canonical(ip);
                let src = match sources[entry] {
                    // An identity entry's external standing in for another address (through
                    // the catch-all) is a mapping.
                    Source::Local if ip != local => Source::Mapping,
                    s => s,
                };
                (ip, src)
            })
            .collect();
        // ice v4.2.0 gather.go:294-299: one passive TCP candidate per local address, the first
        // mapped one; UDP gets them all (gather.go:481-533).
        if protocol == Protocol::Tcp {
            v.truncate(1);
        }
        Some(v)
    }
}

/// The candidates gathered so far, and what gathering them needs.
struct Gathered<'a> {
    mapper: HostMapper,
    sources: &'a [Source],
    host_port_override: Option<u16>,
    /// Candidate addresses whose port `ice_host_port_override` replaces.
    targets: Vec<String>,
    candidates: Vec<Candidate>,
    dropped: Vec<IpAddr>,
}

impl Gathered<'_> {
    fn gather(&mut self, protocol: Protocol, locals: &[IpAddr], base_port: u16) {
        for &local in locals {
            let Some(mapped) = self.mapper.map(local, protocol, self.sources) else {
                self.dropped.push(local);
                continue;
            };
            for (address, source) in mapped {
                // Link-local IPv6 is never advertised (RFC 8445 location tracking).
                let link_local = matches!(address, IpAddr::V6(v6) if is_v6_link_local(v6));
                // pion drops a candidate equal to one already gathered.
                let duplicate = self
                    .candidates
                    .iter()
                    .any(|c| c.protocol == protocol && c.address == address);
                if link_local || duplicate {
                    continue;
                }
                let port = match self.host_port_override {
                    Some(p) if self.targets.contains(&address.to_string()) => p,
                    _ => base_port,
                };
                self.candidates.push(Candidate {
                    address,
                    port,
                    protocol,
                    private: is_private(address),
                    source,
                    local,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn locals(list: &[&str]) -> Vec<LocalAddr> {
        list.iter()
            .map(|s| LocalAddr {
                ip: ip(s),
                loopback: ip(s).is_loopback(),
            })
            .collect()
    }

    /// The usual host: loopback, the LAN address, a Docker bridge.
    const HOST: &[&str] = &["127.0.0.1", "10.0.0.5", "172.17.0.1"];

    /// RTCD asks STUN from its own local IPs only: no IPv6 without enable_ipv6, never
    /// loopback or link-local IPv6, and only those `ice_address_*` names.
    #[test]
    fn rtcd_local_ips_are_rtcds_not_every_interface_address() {
        let all = locals(&["127.0.0.1", "10.0.0.5", "::1", "fe80::1", "2001:db8::5"]);
        let got = rtcd_local_ips(&cfg(""), &all);
        assert_eq!(got, vec![ip("127.0.0.1"), ip("10.0.0.5")]);
        let got = rtcd_local_ips(&cfg("[rtc]\nenable_ipv6 = true"), &all);
        assert_eq!(
            got,
            vec![ip("127.0.0.1"), ip("10.0.0.5"), ip("2001:db8::5")]
        );
        let got = rtcd_local_ips(&cfg("[rtc]\nice_address_udp = \"10.0.0.5\""), &all);
        assert_eq!(got, vec![ip("10.0.0.5")]);
    }

    fn cfg(toml: &str) -> RtcdConfig {
        RtcdConfig::from_toml_str(toml).unwrap()
    }

    fn no_dns(name: &str, _: bool) -> Result<Vec<IpAddr>, String> {
        panic!("unexpected DNS lookup of {name}")
    }

    fn no_stun(local: IpAddr) -> Option<IpAddr> {
        panic!("unexpected STUN from {local}")
    }

    fn run(c: &RtcdConfig, l: &[&str]) -> Result<Advertised, AdvertiseError> {
        compute_advertised(
            c,
            &locals(l),
            &no_dns,
            &no_stun,
            8443,
            8443,
            PionRules::V4_0,
        )
    }

    /// (address, port, source) of the candidates of one protocol.
    fn list(a: &Advertised, p: Protocol) -> Vec<(String, u16, Source)> {
        a.candidates
            .iter()
            .filter(|c| c.protocol == p)
            .map(|c| (c.address.to_string(), c.port, c.source))
            .collect()
    }

    fn same(v: &[(&str, u16, Source)]) -> Vec<(String, u16, Source)> {
        v.iter().map(|(a, p, s)| (a.to_string(), *p, *s)).collect()
    }

    use Protocol::{Tcp, Udp};
    use Source::{Local, Mapping, Override, Stun};

    #[test]
    fn no_override_advertises_local_addresses() {
        let a = run(&cfg(""), HOST).unwrap();
        let want = same(&[
            ("127.0.0.1", 8443, Local),
            ("10.0.0.5", 8443, Local),
            ("172.17.0.1", 8443, Local),
        ]);
        assert_eq!(list(&a, Udp), want);
        assert_eq!(list(&a, Tcp), want);
        assert!(a
            .candidates
            .iter()
            .all(|c| c.private && c.address == c.local));
        assert_eq!(a.override_form, OverrideForm::None);
        assert_eq!((a.rtcd_port_udp, a.rtcd_port_tcp), (8443, 8443));
        assert!(a.dropped.is_empty());

        let a = run(&cfg(""), &["127.0.0.1", "203.0.113.5"]).unwrap();
        let public = &a.candidates[1];
        assert_eq!((public.address, public.private), (ip("203.0.113.5"), false));
    }

    #[test]
    fn ipv6_needs_enable_ipv6_and_global_unicast() {
        let l = &[
            "127.0.0.1",
            "::1",
            "fe80::1",
            "2001:db8::5",
            "fd00::5",
            "10.0.0.5",
        ];
        let a = run(&cfg(""), l).unwrap();
        let v4 = same(&[("127.0.0.1", 8443, Local), ("10.0.0.5", 8443, Local)]);
        assert_eq!(list(&a, Udp), v4);
        assert_eq!(list(&a, Tcp), v4);

        let a = run(&cfg("[rtc]\nenable_ipv6 = true"), l).unwrap();
        let all = same(&[
            ("127.0.0.1", 8443, Local),
            ("2001:db8::5", 8443, Local),
            ("fd00::5", 8443, Local),
            ("10.0.0.5", 8443, Local),
        ]);
        assert_eq!(list(&a, Udp), all);
        assert_eq!(list(&a, Tcp), all);
        assert!(!a.candidates[1].private && a.candidates[2].private);
    }

    #[test]
    fn single_ip_override_with_one_local_address() {
        let a = run(
            &cfg("[rtc]\nice_host_override = \"203.0.113.7\""),
            &["10.0.0.5"],
        )
        .unwrap();
        assert_eq!(a.override_form, OverrideForm::Ip(ip("203.0.113.7")));
        let want = same(&[("203.0.113.7", 8443, Override)]);
        assert_eq!(list(&a, Udp), want);
        assert_eq!(list(&a, Tcp), want);
        assert_eq!(a.candidates[0].local, ip("10.0.0.5"));
        assert!(!a.candidates[0].private);
    }

    #[test]
    fn single_ip_override_with_several_local_addresses() {
        let a = run(&cfg("[rtc]\nice_host_override = \"203.0.113.7\""), HOST).unwrap();
        // Loopback maps to itself; every other IPv4 address to the override,
        // and pion keeps one candidate per address.
        let want = same(&[("127.0.0.1", 8443, Local), ("203.0.113.7", 8443, Override)]);
        assert_eq!(list(&a, Udp), want);
        assert_eq!(list(&a, Tcp), want);
        assert_eq!(a.candidates[1].local, ip("10.0.0.5"));

        // An IPv4 override leaves IPv6 addresses alone.
        let a = run(
            &cfg("[rtc]\nice_host_override = \"203.0.113.7\"\nenable_ipv6 = true"),
            &["127.0.0.1", "10.0.0.5", "2001:db8::5"],
        )
        .unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[
                ("127.0.0.1", 8443, Local),
                ("203.0.113.7", 8443, Override),
                ("2001:db8::5", 8443, Local),
            ])
        );
    }

    #[test]
    fn override_equal_to_the_lan_address_is_still_the_override() {
        let c = cfg("[rtc]\nice_host_override = \"10.0.0.5\"\nice_host_port_override = 30443");
        let a = run(&c, HOST).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[("127.0.0.1", 8443, Local), ("10.0.0.5", 30443, Override)])
        );
    }

    #[test]
    fn hostname_override_is_resolved_on_the_server() {
        let c =
            cfg("[rtc]\nice_host_override = \"rtc.example.com\"\nice_host_port_override = 30443");
        let asked = RefCell::new(Vec::new());
        let split_horizon = |name: &str, v6: bool| {
            asked.borrow_mut().push((name.to_string(), v6));
            Ok(vec![ip("10.0.0.5"), ip("203.0.113.7")])
        };
        let a = compute_advertised(
            &c,
            &locals(HOST),
            &split_horizon,
            &no_stun,
            8443,
            8443,
            PionRules::V4_0,
        )
        .unwrap();
        assert_eq!(
            asked.borrow().as_slice(),
            &[("rtc.example.com".to_string(), false)]
        );
        assert_eq!(
            a.override_form,
            OverrideForm::Hostname {
                name: "rtc.example.com".into(),
                resolved: ip("10.0.0.5")
            }
        );
        // The first answer wins, private here; and a hostname never matches a
        // candidate address, so the port override does not apply.
        assert_eq!(
            list(&a, Udp),
            same(&[("127.0.0.1", 8443, Local), ("10.0.0.5", 8443, Override)])
        );
        assert!(a.candidates[1].private);

        let public = |_: &str, _: bool| Ok(vec![ip("2001:db8::7"), ip("203.0.113.7")]);
        let a = compute_advertised(
            &c,
            &locals(HOST),
            &public,
            &no_stun,
            8443,
            8443,
            PionRules::V4_0,
        )
        .unwrap();
        assert_eq!(
            a.candidates[1].address,
            ip("203.0.113.7"),
            "IPv6 answers skipped without enable_ipv6"
        );
        assert!(!a.candidates[1].private);
        assert_eq!(a.candidates[1].port, 8443);
    }

    #[test]
    fn hostname_resolution_failures() {
        let c = cfg("[rtc]\nice_host_override = \"rtc.example.com\"");
        let nx = |_: &str, _: bool| {
            Err("lookup rtc.example.com on 127.0.0.53:53: no such host".to_string())
        };
        let e = compute_advertised(
            &c,
            &locals(HOST),
            &nx,
            &no_stun,
            8443,
            8443,
            PionRules::V4_0,
        )
        .unwrap_err();
        assert!(matches!(e, AdvertiseError::Resolve { .. }));
        let text = e.to_string();
        assert!(
            text.starts_with("failed to resolve host: failed to resolve host \"rtc.example.com\": lookup rtc.example.com on"),
            "{text}"
        );
        assert!(text.contains("RTCD_RTC_ICEHOSTOVERRIDE"), "{text}");
        let empty = |_: &str, _: bool| Ok(vec![]);
        assert!(compute_advertised(
            &c,
            &locals(HOST),
            &empty,
            &no_stun,
            8443,
            8443,
            PionRules::V4_0
        )
        .is_err());

        // Not a name Go would look up: no DNS at all.
        let e = run(&cfg("[rtc]\nice_host_override = \" 203.0.113.7\""), HOST).unwrap_err();
        assert!(e.to_string().contains("no such host"), "{e}");
        // The fix is the value's spaces, not DNS.
        assert!(
            e.to_string()
                .ends_with("remove the spaces around the value (RTCD does not trim it)"),
            "{e}"
        );
        // An IPv6 literal needs enable_ipv6 (RTCD resolves with \"ip4\").
        let e = run(&cfg("[rtc]\nice_host_override = \"2001:db8::7\""), HOST).unwrap_err();
        assert!(e.to_string().contains("no suitable address found"), "{e}");
        assert!(e.to_string().contains("needs enable_ipv6 = true"), "{e}");
        assert!(!e.to_string().contains("fix DNS"), "{e}");
    }

    #[test]
    fn pairs_form_replaces_and_drops() {
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.1/10.0.0.5\"");
        let a = run(&c, HOST).unwrap();
        assert_eq!(
            a.override_form,
            OverrideForm::Pairs(vec![(ip("203.0.113.1"), ip("10.0.0.5"))])
        );
        // pion v4.0.x: UDP candidates of unmapped IPv4 addresses are dropped,
        // TCP ones keep their local address.
        assert_eq!(list(&a, Udp), same(&[("203.0.113.1", 8443, Mapping)]));
        assert_eq!(a.dropped, vec![ip("127.0.0.1"), ip("172.17.0.1")]);
        assert_eq!(
            list(&a, Tcp),
            same(&[
                ("127.0.0.1", 8443, Local),
                ("203.0.113.1", 8443, Mapping),
                ("172.17.0.1", 8443, Local),
            ])
        );

        let c = cfg("[rtc]\nice_host_override = \"127.0.0.1/127.0.0.1,203.0.113.1/10.0.0.5,203.0.113.2/172.17.0.1\"");
        let a = run(&c, HOST).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[
                ("127.0.0.1", 8443, Local),
                ("203.0.113.1", 8443, Mapping),
                ("203.0.113.2", 8443, Mapping),
            ])
        );
        assert!(a.dropped.is_empty());
    }

    #[test]
    fn pairs_form_catch_all_per_family() {
        let c = cfg("[rtc]\nenable_ipv6 = true\nice_host_override = \"203.0.113.1,2001:db8::1/2001:db8::5\"");
        let a = run(&c, &["127.0.0.1", "10.0.0.5", "2001:db8::5"]).unwrap();
        assert_eq!(
            a.override_form,
            OverrideForm::Pairs(vec![
                (ip("203.0.113.1"), ip("0.0.0.0")),
                (ip("2001:db8::1"), ip("2001:db8::5")),
            ])
        );
        assert_eq!(
            list(&a, Udp),
            same(&[
                ("203.0.113.1", 8443, Mapping),
                ("2001:db8::1", 8443, Mapping)
            ])
        );
        // `EXT/0.0.0.0` is an ordinary pair for pion: it matches no address.
        let a = run(
            &cfg("[rtc]\nice_host_override = \"203.0.113.1/0.0.0.0\""),
            HOST,
        )
        .unwrap();
        assert!(list(&a, Udp).is_empty());
        assert_eq!(a.dropped.len(), 3);
    }

    #[test]
    fn pairs_form_errors_use_pion_wording() {
        for bad in [
            "rtc.example.com/10.0.0.5",
            "203.0.113.1/10.0.0.5, 203.0.113.2/172.17.0.1",
            "203.0.113.1/10.0.0.5,203.0.113.2",
            "203.0.113.1,203.0.113.2/10.0.0.5",
            "203.0.113.1/10.0.0.5,203.0.113.2/10.0.0.5",
            "203.0.113.1/2001:db8::5",
            "203.0.113.1/10.0.0.5/8443",
        ] {
            let c = cfg(&format!("[rtc]\nice_host_override = \"{bad}\""));
            let e = run(&c, HOST).unwrap_err();
            assert!(
                matches!(
                    e,
                    AdvertiseError::Mapping {
                        generated: false,
                        ..
                    }
                ),
                "{bad}"
            );
            let text = e.to_string();
            assert!(text.starts_with("invalid 1:1 NAT IP mapping — "), "{text}");
            assert!(text.contains("pion/ice v4.0"), "{text}");
        }
        // RTCD builds pairs from the host's addresses; a duplicate address
        // makes pion refuse them too.
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.7\"");
        let e = run(&c, &["127.0.0.1", "10.0.0.5", "10.0.0.5"]).unwrap_err();
        assert!(
            matches!(
                e,
                AdvertiseError::Mapping {
                    generated: true,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn port_override_single_port() {
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.7\"\nice_host_port_override = 30443");
        let a = run(&c, HOST).unwrap();
        assert_eq!(a.host_port_override, Some(30443));
        let want = same(&[("127.0.0.1", 8443, Local), ("203.0.113.7", 30443, Override)]);
        assert_eq!(list(&a, Udp), want);
        assert_eq!(list(&a, Tcp), want);

        // Without an override or STUN there is nothing to re-port.
        let a = run(&cfg("[rtc]\nice_host_port_override = \"30443\""), HOST).unwrap();
        assert!(a.candidates.iter().all(|c| c.port == 8443));

        // Identity pairs keep their port; mapped pairs get the new one.
        let c = cfg("[rtc]\nice_host_override = \"127.0.0.1/127.0.0.1,203.0.113.1/10.0.0.5\"\nice_host_port_override = 30443");
        let a = run(&c, HOST).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[("127.0.0.1", 8443, Local), ("203.0.113.1", 30443, Mapping)])
        );
    }

    #[test]
    fn port_override_map_form() {
        let base = "[rtc]\nice_host_override = \"203.0.113.7\"\n";
        let a = run(
            &cfg(&format!(
                "{base}ice_host_port_override = \"10.0.0.9/8448,10.0.0.5/8449\""
            )),
            HOST,
        )
        .unwrap();
        assert_eq!(a.host_port_override, Some(8449));
        assert_eq!(a.candidates[1].port, 8449);
        // First local address (interface order) named by the map wins.
        let a = run(
            &cfg(&format!(
                "{base}ice_host_port_override = \"172.17.0.1/8450,10.0.0.5/8449\""
            )),
            HOST,
        )
        .unwrap();
        assert_eq!(a.host_port_override, Some(8449));
        // No entry for this host: no override, silently.
        let a = run(
            &cfg(&format!(
                "{base}ice_host_port_override = \"10.0.0.8/8448,10.0.0.9/8449\""
            )),
            HOST,
        )
        .unwrap();
        assert_eq!(a.host_port_override, None);
        assert!(a.candidates.iter().all(|c| c.port == 8443));
        // RTCD does not range-check map ports and truncates to 16 bits.
        let a = run(
            &cfg(&format!(
                "{base}ice_host_port_override = \"10.0.0.5/70000\""
            )),
            HOST,
        )
        .unwrap();
        assert_eq!(a.host_port_override, Some(70000u32 as u16));
    }

    #[test]
    fn port_override_errors_fail_validation() {
        let e = run(
            &cfg("[rtc]\nice_host_port_override = \"10.0.0.5:8448\""),
            HOST,
        )
        .unwrap_err();
        let AdvertiseError::InvalidConfig(ce) = e else {
            panic!("expected a config error")
        };
        assert_eq!(
            ce.rtcd_message,
            "invalid ICEHostPortOverride value: failed to parse mapping: invalid map pairing syntax"
        );
    }

    #[test]
    fn stun_discovered_addresses() {
        let c = cfg(
            "[rtc]\nice_servers = [\"stun:stun.example.com:3478\"]\nice_host_port_override = 30443",
        );
        let asked = RefCell::new(Vec::new());
        let stun = |local: IpAddr| {
            asked.borrow_mut().push(local);
            (local == ip("10.0.0.5")).then(|| ip("203.0.113.9"))
        };
        let a = compute_advertised(
            &c,
            &locals(HOST),
            &no_dns,
            &stun,
            8443,
            8443,
            PionRules::V4_0,
        )
        .unwrap();
        assert_eq!(
            *asked.borrow(),
            vec![ip("127.0.0.1"), ip("10.0.0.5"), ip("172.17.0.1")]
        );
        let want = same(&[
            ("127.0.0.1", 8443, Local),
            ("203.0.113.9", 30443, Stun),
            ("172.17.0.1", 8443, Local),
        ]);
        assert_eq!(list(&a, Udp), want);
        assert_eq!(list(&a, Tcp), want);
        assert_eq!(a.override_form, OverrideForm::None);
    }

    #[test]
    fn stun_failure_advertises_local_addresses() {
        let c = cfg("[rtc]\nice_servers = [\"stun:stun.example.com:3478\"]");
        let a = compute_advertised(
            &c,
            &locals(HOST),
            &no_dns,
            &|_| None,
            8443,
            8443,
            PionRules::V4_0,
        )
        .unwrap();
        assert!(a
            .candidates
            .iter()
            .all(|c| c.source == Local && c.address == c.local));
        // A STUN URL without a port is unusable for RTCD: no STUN at all.
        let c = cfg("[rtc]\nice_servers = [\"stun:stun.example.com\"]");
        assert!(rtcd_stun_target(&c)
            .unwrap()
            .unwrap_err()
            .contains("missing port in address"));
        assert_eq!(stun_url(&c), Some(("stun.example.com".into(), 3478)));
        let a = run(&c, HOST).unwrap();
        assert!(a.candidates.iter().all(|c| c.source == Local));
        // TURN-only servers: no STUN either. An override: no STUN either.
        run(
            &cfg("[rtc]\nice_servers = [\"turn:turn.example.com:3478\"]"),
            HOST,
        )
        .unwrap();
        run(
            &cfg("[rtc]\nice_servers = [\"stun:s:3478\"]\nice_host_override = \"203.0.113.7\""),
            HOST,
        )
        .unwrap();
    }

    #[test]
    fn stun_url_forms() {
        let with = |urls: &str| cfg(&format!("[rtc]\nice_servers = [{urls}]"));
        assert_eq!(
            stun_url(&with(
                "\"turn:t:3478\", {urls = [\"stuns:[2001:db8::1]:5349\", \"stun:b:1\"]}"
            )),
            Some(("2001:db8::1".into(), 5349))
        );
        assert_eq!(
            stun_url(&with("\"stun:[2001:db8::1]\"")),
            Some(("2001:db8::1".into(), 3478))
        );
        assert_eq!(
            stun_url(&with("\"stun:203.0.113.3:3479\"")),
            Some(("203.0.113.3".into(), 3479))
        );
        assert_eq!(stun_url(&with("\"turn:t:3478\"")), None);
        assert_eq!(stun_url(&RtcdConfig::default()), None);
        assert_eq!(
            rtcd_stun_target(&with("\"stun:203.0.113.3:3479\"")),
            Some(Ok(("203.0.113.3".into(), 3479)))
        );
        assert_eq!(rtcd_stun_target(&RtcdConfig::default()), None);
    }

    /// rtcd server.go:109-122 narrows the local IPs to those listed in either ice_address_*;
    /// sfu.go:103-115 (SetIPFilter) keeps TCP candidates to them.
    #[test]
    fn ice_address_narrows_udp_and_tcp() {
        let c = cfg("[rtc]\nice_address_udp = \"10.0.0.5\"\nice_address_tcp = \"10.0.0.5\"");
        let a = run(&c, HOST).unwrap();
        let want = same(&[("10.0.0.5", 8443, Local)]);
        assert_eq!(list(&a, Udp), want);
        assert_eq!(
            list(&a, Tcp),
            want,
            "the IP filter limits TCP candidates too"
        );
        assert_eq!(a.narrowed, Some(vec![ip("10.0.0.5")]));
        assert_eq!(a.filter_ignores, None);

        // ice_address_udp alone narrows TCP as well (TCP listens on every address).
        let a = run(&cfg("[rtc]\nice_address_udp = \"10.0.0.5\""), HOST).unwrap();
        assert_eq!(list(&a, Tcp), same(&[("10.0.0.5", 8443, Local)]));
        // ice_address_tcp alone: the UDP muxes follow the narrowed list (initUDP, server.go:358-363).
        let a = run(&cfg("[rtc]\nice_address_tcp = \"10.0.0.5\""), HOST).unwrap();
        assert_eq!(list(&a, Udp), same(&[("10.0.0.5", 8443, Local)]));
        // The union of both lists.
        let a = run(
            &cfg("[rtc]\nice_address_udp = \"10.0.0.5\"\nice_address_tcp = \"172.17.0.1\""),
            HOST,
        )
        .unwrap();
        assert_eq!(a.narrowed, Some(vec![ip("10.0.0.5"), ip("172.17.0.1")]));
        assert_eq!(list(&a, Udp), same(&[("10.0.0.5", 8443, Local)]));
        assert_eq!(list(&a, Tcp).len(), 2);

        let c = cfg("[rtc]\nice_address_udp = \"10.0.0.5\"\nice_host_override = \"203.0.113.7\"");
        let a = run(&c, HOST).unwrap();
        assert_eq!(list(&a, Udp), same(&[("203.0.113.7", 8443, Override)]));
        assert_eq!(list(&a, Tcp), same(&[("203.0.113.7", 8443, Override)]));
    }

    /// "0.0.0.0" names no local IP: the narrowed list is empty. utils.go:84-87 then makes no
    /// pairs (override and STUN ignored) and the IP filter lets no TCP candidate through; the
    /// UDP mux on 0.0.0.0 still advertises every interface address, unmapped.
    #[test]
    fn ice_address_unspecified_ignores_override_and_stun() {
        for rules in [PionRules::V4_0, PionRules::V4_2] {
            let c = cfg("[rtc]\nice_address_udp = \"0.0.0.0\"\nice_host_override = \"203.0.113.7\"\nice_host_port_override = 30443");
            let a = compute_advertised(&c, &locals(HOST), &no_dns, &no_stun, 8443, 8443, rules)
                .unwrap();
            assert_eq!(
                list(&a, Udp),
                same(&[
                    ("127.0.0.1", 8443, Local),
                    ("10.0.0.5", 8443, Local),
                    ("172.17.0.1", 8443, Local),
                ])
            );
            assert!(list(&a, Tcp).is_empty(), "no TCP candidate");
            assert_eq!(a.narrowed, Some(vec![]));
            assert_eq!(a.filter_ignores, Some(FilterIgnores::Override));
            assert_eq!(a.override_form, OverrideForm::Ip(ip("203.0.113.7")));
            assert_eq!(a.rules, rules);

            // STUN is not even sent.
            let c = cfg("[rtc]\nice_address_udp = \"0.0.0.0\"\nice_servers = [\"stun:stun.example.com:3478\"]");
            let a = compute_advertised(&c, &locals(HOST), &no_dns, &no_stun, 8443, 8443, rules)
                .unwrap();
            assert_eq!(a.filter_ignores, Some(FilterIgnores::Stun));
            assert!(a.candidates.iter().all(|c| c.source == Local));
        }
        // The hostname is still resolved first (utils.go:77-82): a failed lookup still fails.
        let c =
            cfg("[rtc]\nice_address_udp = \"0.0.0.0\"\nice_host_override = \"rtc.example.com\"");
        let nx = |_: &str, _: bool| Err("no such host".to_string());
        let e = compute_advertised(
            &c,
            &locals(HOST),
            &nx,
            &no_stun,
            8443,
            8443,
            PionRules::V4_2,
        )
        .unwrap_err();
        assert!(matches!(e, AdvertiseError::Resolve { .. }));
        // The EXT/LOCAL form is returned before the empty check (utils.go:67-69): it applies.
        let c = cfg(
            "[rtc]\nice_address_udp = \"0.0.0.0\"\nice_host_override = \"203.0.113.7/10.0.0.5\"",
        );
        let a = run(&c, HOST).unwrap();
        assert_eq!(a.filter_ignores, None);
        assert_eq!(list(&a, Udp), same(&[("203.0.113.7", 8443, Mapping)]));
        // A non-canonical spelling matches no local IP either (Go compares ip.String()).
        let a = run(
            &cfg("[rtc]\nenable_ipv6 = true\nice_address_udp = \"2001:DB8::5\"\nice_host_override = \"203.0.113.7\""),
            &["127.0.0.1", "10.0.0.5", "2001:db8::5"],
        )
        .unwrap();
        assert_eq!(a.narrowed, Some(vec![]));
        assert_eq!(a.filter_ignores, Some(FilterIgnores::Override));
    }

    /// Only ice_address_tcp = "0.0.0.0": initUDP loops over zero narrowed IPs
    /// (server.go:358-363), so there is no UDP candidate, and no TCP one either.
    #[test]
    fn ice_address_tcp_unspecified_alone_leaves_no_candidate() {
        let a = run(&cfg("[rtc]\nice_address_tcp = \"0.0.0.0\""), HOST).unwrap();
        assert!(a.candidates.is_empty(), "{:?}", a.candidates);
        assert_eq!(a.udp().count(), 0);
        assert_eq!(a.narrowed, Some(vec![]));
        // Nothing configured is dropped here: no override, no STUN.
        assert_eq!(a.filter_ignores, None);
        // Without any filter the same host has candidates.
        assert!(run(&cfg(""), HOST).unwrap().narrowed.is_none());
    }

    fn run42(c: &RtcdConfig, l: &[&str]) -> Result<Advertised, AdvertiseError> {
        compute_advertised(
            c,
            &locals(l),
            &no_dns,
            &no_stun,
            8443,
            8443,
            PionRules::V4_2,
        )
    }

    /// pion/ice v4.2 through webrtc v4.2.6 (icegatherer.go:378-405): an address with no pair is
    /// rewritten to the externals of its family by the catch-all, not dropped.
    #[test]
    fn v4_2_pairs_form_maps_unpaired_addresses() {
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.1/10.0.0.5\"");
        let a = run42(&c, HOST).unwrap();
        assert_eq!(a.rules, PionRules::V4_2);
        assert!(a.dropped.is_empty());
        // 127.0.0.1 and 172.17.0.1 become 203.0.113.1 too: one candidate per address.
        assert_eq!(list(&a, Udp), same(&[("203.0.113.1", 8443, Mapping)]));
        assert_eq!(list(&a, Tcp), same(&[("203.0.113.1", 8443, Mapping)]));
        assert_eq!(a.candidates[0].local, ip("127.0.0.1"));

        // Two externals for unpaired addresses: both advertised over UDP, the first over TCP
        // (ice v4.2.0 gather.go:294-299).
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.1/10.0.0.5,203.0.113.2/10.0.0.6\"");
        let a = run42(&c, &["10.0.0.9"]).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[
                ("203.0.113.1", 8443, Mapping),
                ("203.0.113.2", 8443, Mapping)
            ])
        );
        assert_eq!(list(&a, Tcp), same(&[("203.0.113.1", 8443, Mapping)]));

        // An identity pair's external serves the catch-all too.
        let c = cfg("[rtc]\nice_host_override = \"127.0.0.1/127.0.0.1,203.0.113.1/10.0.0.5\"");
        let a = run42(&c, HOST).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[("127.0.0.1", 8443, Local), ("203.0.113.1", 8443, Mapping)])
        );
    }

    /// Values pion/ice v4.0 refuses ("every join fails") and v4.2 serves.
    #[test]
    fn v4_2_accepts_what_v4_0_refused() {
        for (value, want) in [
            // Spaces after the comma are trimmed.
            (
                "203.0.113.1/10.0.0.5, 203.0.113.2/172.17.0.1",
                &[("203.0.113.1", Mapping), ("203.0.113.2", Mapping)][..],
            ),
            // A pair beside a lone IP.
            (
                "203.0.113.1/10.0.0.5,203.0.113.2",
                &[("203.0.113.1", Mapping), ("203.0.113.2", Mapping)],
            ),
            // A duplicate local: the first pair wins for it; the others get both externals.
            (
                "203.0.113.1/10.0.0.5,203.0.113.2/10.0.0.5",
                &[("203.0.113.1", Mapping), ("203.0.113.2", Mapping)],
            ),
            // A cross-family pair.
            (
                "2001:db8::1/10.0.0.5",
                &[
                    ("127.0.0.1", Local),
                    ("2001:db8::1", Mapping),
                    ("172.17.0.1", Local),
                ],
            ),
        ] {
            let c = cfg(&format!("[rtc]\nice_host_override = \"{value}\""));
            assert!(
                matches!(
                    run(&c, HOST),
                    Err(AdvertiseError::Mapping {
                        rules: PionRules::V4_0,
                        ..
                    })
                ),
                "{value}: v4.0 refuses it"
            );
            let a = run42(&c, HOST).unwrap_or_else(|e| panic!("{value}: {e}"));
            let got: Vec<(String, Source)> =
                a.udp().map(|c| (c.address.to_string(), c.source)).collect();
            let want: Vec<(String, Source)> =
                want.iter().map(|(a, s)| (a.to_string(), *s)).collect();
            let mut got_sorted = got.clone();
            got_sorted.sort_by(|x, y| x.0.cmp(&y.0));
            let mut want_sorted = want.clone();
            want_sorted.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(got_sorted, want_sorted, "{value}");
        }
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.1/10.0.0.5,203.0.113.2/10.0.0.5\"");
        let a = run42(&c, &["10.0.0.5"]).unwrap();
        assert_eq!(list(&a, Udp), same(&[("203.0.113.1", 8443, Mapping)]));
        // RTCD's own pairs from a host listing an address twice: refused by v4.0 only.
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.7\"");
        let l = &["127.0.0.1", "10.0.0.5", "10.0.0.5"];
        assert!(run(&c, l).is_err());
        let a = run42(&c, l).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[("127.0.0.1", 8443, Local), ("203.0.113.7", 8443, Override)])
        );
    }

    #[test]
    fn v4_2_still_refuses_non_ip_values() {
        for bad in [
            "rtc.example.com/10.0.0.5",
            "203.0.113.1/10.0.0.5/8443",
            "203.0.113.1/10.0.0.5,rtc.example.com",
        ] {
            let c = cfg(&format!("[rtc]\nice_host_override = \"{bad}\""));
            let e = run42(&c, HOST).unwrap_err();
            assert!(
                matches!(
                    e,
                    AdvertiseError::Mapping {
                        generated: false,
                        rules: PionRules::V4_2,
                        ..
                    }
                ),
                "{bad}"
            );
            assert!(
                e.to_string()
                    .starts_with("invalid address rewrite mapping — "),
                "{e}"
            );
        }
    }

    #[test]
    fn ice_address_rtcd_cannot_listen_on() {
        let e = run(&cfg("[rtc]\nice_address_udp = \"10.0.0.9\""), HOST).unwrap_err();
        assert_eq!(
            e,
            AdvertiseError::CannotListen {
                protocol: Udp,
                address: "10.0.0.9".into(),
                rtcd_message: "failed to create UDP connections: failed to listen on udp: listen udp4 10.0.0.9:8443: bind: cannot assign requested address".into(),
            }
        );
        assert!(e.to_string().contains("RTCD_RTC_ICEADDRESSUDP"));
        let e = run(
            &cfg("[rtc]\nice_address_udp = \"2001:db8::5\""),
            &["10.0.0.5", "2001:db8::5"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no suitable address found"), "{e}");
        let e = run(&cfg("[rtc]\nice_address_tcp = \"10.0.0.9\""), HOST).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("failed to create TCP listener: listen tcp4 10.0.0.9:8443"),
            "{e}"
        );
    }

    #[test]
    fn probe_port_differs_from_rtcd_port() {
        let c = cfg(
            "[rtc]\nice_host_override = \"203.0.113.7\"\nice_port_udp = 8443\nice_port_tcp = 8443",
        );
        let a = compute_advertised(
            &c,
            &locals(HOST),
            &no_dns,
            &no_stun,
            8444,
            8445,
            PionRules::V4_0,
        )
        .unwrap();
        assert_eq!((a.rtcd_port_udp, a.rtcd_port_tcp), (8443, 8443));
        assert!(list(&a, Udp).iter().all(|c| c.1 == 8444));
        assert!(list(&a, Tcp).iter().all(|c| c.1 == 8445));
    }

    #[test]
    fn rtcd_would_not_start() {
        let e = run(&cfg("[rtc]\nice_port_udp = 22"), HOST).unwrap_err();
        assert!(matches!(e, AdvertiseError::InvalidConfig(_)));
        assert!(e
            .to_string()
            .starts_with("invalid ICEPortUDP value: 22 is not in allowed range [80, 49151] — "));
        assert_eq!(
            run(&cfg(""), &[]).unwrap_err(),
            AdvertiseError::NoLocalAddress
        );
        assert_eq!(
            run(&cfg(""), &["2001:db8::5"]).unwrap_err(),
            AdvertiseError::NoLocalAddress
        );
    }

    #[test]
    fn env_override_wins_end_to_end() {
        let mut c = cfg("[rtc]\nice_host_override = \"198.51.100.1\"");
        c.apply_env(&|k: &str| {
            (k == "RTCD_RTC_ICEHOSTOVERRIDE").then(|| "203.0.113.7".to_string())
        })
        .unwrap();
        let a = run(&c, HOST).unwrap();
        assert_eq!(a.override_form, OverrideForm::Ip(ip("203.0.113.7")));
        assert_eq!(c.env_applied, vec!["RTCD_RTC_ICEHOSTOVERRIDE"]);
    }

    #[test]
    fn serde_names_are_lowercase() {
        let a = run(
            &cfg("[rtc]\nice_host_override = \"203.0.113.7\""),
            &["10.0.0.5"],
        )
        .unwrap();
        let j = serde_json::to_value(&a.candidates[0]).unwrap();
        assert_eq!(j["protocol"], "udp");
        assert_eq!(j["source"], "override");
        assert_eq!(j["address"], "203.0.113.7");
        let back: Advertised = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }

    /// A lone external IP beside pairs (accepted by pion v4.2) is not in RTCD's port-override
    /// map: rtcd utils.go:153-158 skips every entry that is not exactly `A/B`. The candidate it
    /// gives through the catch-all keeps RTCD's port.
    #[test]
    fn pairs_with_a_lone_ip_and_port_override_keep_the_port_of_the_lone_ip() {
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.10/10.0.0.5,198.51.100.1\"\nice_host_port_override = 30443");
        let a = run42(&c, HOST).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[
                ("203.0.113.10", 30443, Mapping),
                ("198.51.100.1", 8443, Mapping)
            ])
        );
        // The single form: the override text itself is the key (utils.go:147-150).
        let c = cfg("[rtc]\nice_host_override = \"203.0.113.10\"\nice_host_port_override = 30443");
        let a = run42(&c, HOST).unwrap();
        assert!(a.udp().all(|c| c.port == 30443 || c.address.is_loopback()));
    }

    /// `ice_address_udp = "::"` without enable_ipv6: Go binds "[::]:8443" under udp4 as
    /// 0.0.0.0 (net/ipsock.go internetAddrList, Issue 18806), so RTCD starts and pion lists
    /// every IPv4 address (ice v4.2.0 udp_mux.go:72-108). Not "cannot listen".
    #[test]
    fn ice_address_udp_ipv6_unspecified_without_ipv6_listens_on_ipv4() {
        for key in ["ice_address_udp", "ice_address_tcp"] {
            let c = cfg(&format!("[rtc]\n{key} = \"::\""));
            let a = run42(&c, &["127.0.0.1", "203.0.113.2"]).unwrap();
            assert_eq!(a.narrowed, Some(vec![]), "{key}");
            if key == "ice_address_udp" {
                assert_eq!(
                    list(&a, Udp),
                    same(&[("127.0.0.1", 8443, Local), ("203.0.113.2", 8443, Local)])
                );
            }
        }
        // A specific IPv6 address under udp4 still fails RTCD's start.
        let c = cfg("[rtc]\nice_address_udp = \"2001:db8::5\"");
        assert!(matches!(
            run42(&c, &["127.0.0.1", "203.0.113.2", "2001:db8::5"]),
            Err(AdvertiseError::CannotListen { .. })
        ));
    }

    /// `ice_address_udp = "0.0.0.0"` with enable_ipv6: Go listens on the dual-stack [::]
    /// (net/ipsock_posix.go favoriteAddrFamily), whose local address is "::", so pion lists the
    /// IPv6 addresses too (ice v4.2.0 udp_mux.go:77-84).
    #[test]
    fn ice_address_udp_unspecified_with_ipv6_lists_both_families() {
        let c = cfg("[rtc]\nenable_ipv6 = true\nice_address_udp = \"0.0.0.0\"");
        let a = run42(&c, &["127.0.0.1", "203.0.113.2", "2001:db8::5", "fe80::1"]).unwrap();
        assert_eq!(
            list(&a, Udp),
            same(&[
                ("127.0.0.1", 8443, Local),
                ("203.0.113.2", 8443, Local),
                ("2001:db8::5", 8443, Local),
            ])
        );
    }
}
