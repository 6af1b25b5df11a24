//! RTCD's own NAT: the STUN exchange RTCD runs at start, run again now from the same address
//! and, when it is free, the same port, toward RTCD's STUN server and every other one known
//! (the other STUN URLs of `ice_servers`, `--stun-check-server`). Only the IO is here; the
//! verdict is `rules::nat`.
//!
//! Why it matters (rtcd v1.2.6): with an empty `ice_host_override` and a STUN URL, RTCD binds
//! `localIP:ice_port_udp` and asks the first STUN URL once (service/rtc/server.go:137-158,
//! stun.go:15-38), keeps only the IP of the XOR-MAPPED-ADDRESS (stun.go:37), pairs it with the
//! local IP (utils.go:122-130) and advertises that IP with its local port (sfu.go:117-123;
//! the port is replaced only by ice_host_port_override, sfu.go:311-319). That candidate is
//! right only if the NAT keeps the port, and the same mapping serves every peer.

use probe_proto::rtcd::{self, IceServer, RtcdConfig};
use probe_proto::stun;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::facts::{NatAnswer, NatFacts, NatRun, NatServer, NatSource};

/// The longest any one STUN server is waited for, retransmits included.
pub const PER_SERVER: Duration = Duration::from_secs(2);
/// Retransmits after RFC 8489 6.2.1 with RTO 500 ms: at 0, 0.5 and 1.5 s (RTCD sends one
/// request and waits 5 s, stun.go:32; three within 2 s survive a lost packet or two).
const SEND_AT_MS: [u64; 3] = [0, 500, 1500];
/// The local addresses asked at most. RTCD itself asks from every local IP, each from its own
/// socket on ip:ice_port_udp, with no cap (rtcd v1.2.6 service/rtc/server.go:139-156), so a
/// multi-homed host is probed per address as RTCD does; the cap only bounds a host with many
/// bridges.
const MAX_SOURCES: usize = 8;

/// What the doctor was asked for besides RTCD's configuration.
#[derive(Debug, Clone, Default)]
pub struct NatAsk {
    /// `--stun-check-server HOST:PORT` values.
    pub extra: Vec<String>,
    /// `--no-nat-check`.
    pub off: bool,
}

/// Runs the check, or says why it does not apply; returns by `deadline`.
pub fn gather(cfg: &RtcdConfig, ask: &NatAsk, deadline: Instant) -> NatFacts {
    let first = match applies(cfg, ask) {
        Ok(first) => first,
        Err(why) => return NatFacts::NotRun { why },
    };
    let ice_port = u16::try_from(cfg.ice_port_udp).unwrap_or(0);
    let locals = match sources(cfg) {
        Ok(l) if !l.is_empty() => l,
        Ok(_) => {
            return NatFacts::NotRun {
                why: "no local address RTCD would send its STUN request from".into(),
            }
        }
        Err(e) => {
            return NatFacts::NotRun {
                why: format!("cannot list this host's interfaces: {e}"),
            }
        }
    };
    let servers = resolve_all(servers(cfg, first, &ask.extra), cfg.enable_ipv6, deadline);
    let window = Instant::now() + PER_SERVER;
    let until = window.min(deadline);
    let (tx, rx) = mpsc::channel();
    for (i, local) in locals.iter().enumerate() {
        let targets: Vec<Target> = servers
            .iter()
            .enumerate()
            .filter_map(|(j, s)| {
                let addr = s.addr.filter(|a| a.is_ipv4() == local.is_ipv4())?;
                Some(Target {
                    server: j,
                    addr,
                    padded: s.from_flag,
                })
            })
            .collect();
        let (tx, local) = (tx.clone(), *local);
        std::thread::spawn(move || {
            let _ = tx.send((i, from_address(local, ice_port, &targets, until)));
        });
    }
    drop(tx);
    let mut got: Vec<Option<NatSource>> = vec![None; locals.len()];
    while let Ok((i, s)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        got[i] = Some(s);
    }
    if got.iter().any(Option::is_none) {
        return NatFacts::Late;
    }
    NatFacts::Ran(NatRun {
        ice_port,
        port_override: port_override(&cfg.ice_host_port_override, &locals),
        deadline_ms: PER_SERVER.as_millis() as u64,
        servers,
        sources: got.into_iter().flatten().collect(),
    })
}

/// RTCD runs STUN only with an empty override and a usable first STUN URL (server.go:138,
/// stun.go:26-30): returns that URL's host and port, or why the check does not apply.
fn applies(cfg: &RtcdConfig, ask: &NatAsk) -> Result<(String, u16), String> {
    if ask.off {
        return Err("--no-nat-check".into());
    }
    if !cfg.ice_host_override.is_empty() {
        return Err(
            "ice_host_override is set, so RTCD advertises it and runs no STUN at start (rtcd server.go:138)".into(),
        );
    }
    match rtcd::rtcd_stun_target(cfg) {
        None => Err("no stun: URL in ice_servers, so RTCD runs no STUN and advertises its local addresses (see rtcd_config)".into()),
        Some(Err(e)) => Err(format!(
            "RTCD's own STUN request cannot be sent ({e}), so it advertises its local addresses (see rtcd_config)"
        )),
        Some(Ok(t)) => Ok(t),
    }
}

/// The addresses RTCD sends its STUN request from (rtcd server.go:97-122, 139): its local IPs
/// (IPv6 only global ones with enable_ipv6, net.go:34-79) narrowed by ice_address_*; loopback
/// left out, since no NAT is on that path.
fn sources(cfg: &RtcdConfig) -> std::io::Result<Vec<IpAddr>> {
    let listed: Vec<String> = rtcd::parse_ice_address(&cfg.ice_address_udp)
        .into_iter()
        .chain(rtcd::parse_ice_address(&cfg.ice_address_tcp))
        .collect();
    let mut out: Vec<IpAddr> = Vec::new();
    for l in crate::interfaces::local_addrs()? {
        let ip = rtcd::canonical(l.ip);
        let keep = match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
            IpAddr::V6(v6) => {
                cfg.enable_ipv6
                    && !v6.is_loopback()
                    && !v6.is_unspecified()
                    && !v6.is_multicast()
                    && v6.segments()[0] & 0xffc0 != 0xfe80
            }
        };
        if keep && (listed.is_empty() || listed.contains(&ip.to_string())) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.truncate(MAX_SOURCES);
    Ok(out)
}

/// A server to ask: its label, host and port, and whether `--stun-check-server` gave it.
type Asked = (String, String, u16, bool);

/// RTCD's STUN server first, then every other `stun:` URL of ice_servers (`stuns:` is TLS, no
/// UDP answer there; RTCD's own is asked whatever its scheme, as RTCD does), then the flag's.
fn servers(cfg: &RtcdConfig, first: (String, u16), extra: &[String]) -> Vec<Asked> {
    let first_url = cfg
        .ice_servers
        .iter()
        .find(|s| s.is_stun())
        .map(|s| s.urls[0].clone())
        .unwrap_or_default();
    let mut out = vec![(first_url.clone(), first.0, first.1, false)];
    for url in cfg
        .ice_servers
        .iter()
        .filter(|s| s.is_stun())
        .flat_map(|s| s.urls.iter())
        .filter(|u| **u != first_url && u.starts_with("stun:"))
    {
        // One-URL configuration: probe-proto's STUN URL reading (default port 3478).
        let one = RtcdConfig {
            ice_servers: vec![IceServer {
                urls: vec![url.clone()],
                ..IceServer::default()
            }],
            ..RtcdConfig::default()
        };
        if let Some((host, port)) = rtcd::stun_url(&one) {
            out.push((url.clone(), host, port, false));
        }
    }
    for e in extra {
        if let Some((host, port)) = split_server(e) {
            out.push((format!("--stun-check-server {e}"), host, port, true));
        }
    }
    let mut seen = Vec::new();
    out.retain(|(label, _, _, _)| {
        let new = !seen.contains(label);
        seen.push(label.clone());
        new
    });
    out
}

/// `HOST:PORT` or `[V6]:PORT`, as `--stun-check-server` takes it.
pub fn split_server(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port))
}

/// Every server's address, resolved at once (each lookup is bounded by 1 s, rtcd_io).
fn resolve_all(list: Vec<Asked>, ipv6: bool, deadline: Instant) -> Vec<NatServer> {
    let (tx, rx) = mpsc::channel();
    for (i, (_, host, port, _)) in list.iter().enumerate() {
        let (tx, host, port) = (tx.clone(), host.clone(), *port);
        std::thread::spawn(move || {
            let r = match host.parse::<IpAddr>() {
                Ok(ip) => Ok(ip),
                Err(_) => crate::rtcd_io::resolve(&host, ipv6).and_then(|ips| {
                    // Go's forResolve (net/ipsock.go) for "udp": IPv4 first.
                    ips.iter()
                        .copied()
                        .find(IpAddr::is_ipv4)
                        .or_else(|| ips.first().copied())
                        .ok_or_else(|| format!("lookup {host}: no such host"))
                }),
            };
            let _ = tx.send((i, r.map(|ip| SocketAddr::new(ip, port))));
        });
    }
    drop(tx);
    let mut got: HashMap<usize, Result<SocketAddr, String>> = HashMap::new();
    while let Ok((i, r)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        got.insert(i, r);
    }
    list.into_iter()
        .enumerate()
        .map(|(i, (label, host, _, from_flag))| {
            let r = got
                .remove(&i)
                .unwrap_or_else(|| Err(format!("lookup {host}: no answer in time")));
            NatServer {
                rtcd_s: i == 0,
                from_flag,
                label,
                addr: r.as_ref().ok().copied(),
                error: r.err(),
            }
        })
        .collect()
}

/// One server to ask from one socket.
#[derive(Debug, Clone, Copy)]
struct Target {
    server: usize,
    addr: SocketAddr,
    /// Also send a padded request: a probe-server answers a plain Binding only when its answer
    /// is no larger than the request (anti-amplification). STUN servers from ice_servers get
    /// exactly what RTCD sends: PADDING is comprehension-required (0x0026), and a server that
    /// does not know it answers 420.
    padded: bool,
}

/// Binds `local:ice_port` (never SO_REUSEPORT: it would take a share of a running RTCD's
/// packets), else another port of `local` when RTCD holds it, and asks every target.
fn from_address(local: IpAddr, ice_port: u16, targets: &[Target], until: Instant) -> NatSource {
    let (sock, taken) = match UdpSocket::bind(SocketAddr::new(local, ice_port)) {
        Ok(s) => (s, false),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            match UdpSocket::bind(SocketAddr::new(local, 0)) {
                Ok(s) => (s, true),
                Err(e) => return unbound(local, true, format!("cannot bind {local}: {e}")),
            }
        }
        Err(e) => {
            return unbound(
                local,
                false,
                format!("cannot bind {}: {e}", SocketAddr::new(local, ice_port)),
            )
        }
    };
    let port = sock.local_addr().map(|a| a.port()).ok();
    let mapped = exchange(&sock, local, targets, until);
    NatSource {
        local,
        port,
        error: None,
        ice_port_taken: taken,
        answers: targets
            .iter()
            .map(|t| NatAnswer {
                server: t.server,
                mapped: mapped.get(&t.server).copied(),
            })
            .collect(),
    }
}

fn unbound(local: IpAddr, taken: bool, error: String) -> NatSource {
    NatSource {
        local,
        port: None,
        error: Some(error),
        ice_port_taken: taken,
        answers: Vec::new(),
    }
}

/// Sends each target its request(s) at `SEND_AT_MS` until it answers, and reads until every
/// target answered or `until`: server index → XOR-MAPPED-ADDRESS.
fn exchange(
    sock: &UdpSocket,
    local: IpAddr,
    targets: &[Target],
    until: Instant,
) -> HashMap<usize, SocketAddr> {
    let start = Instant::now();
    let pad_to = stun::binding_response_len(&SocketAddr::new(local, 0), false);
    // (transaction id, request bytes, target index)
    let mut requests: Vec<([u8; 12], Vec<u8>, usize)> = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        for pad in [0, pad_to].into_iter().take(if t.padded { 2 } else { 1 }) {
            let tid = random_tid();
            requests.push((tid, stun::binding_request(tid, None, None, pad), k));
        }
    }
    let mut got: HashMap<usize, SocketAddr> = HashMap::new();
    let mut buf = [0u8; 1500];
    let mut sent = 0;
    while got.len() < targets.len() && Instant::now() < until {
        let elapsed = start.elapsed().as_millis() as u64;
        while sent < SEND_AT_MS.len() && SEND_AT_MS[sent] <= elapsed {
            for (_, req, k) in &requests {
                if !got.contains_key(&targets[*k].server) {
                    // A failed send is the same as a lost packet: no answer, "unknown".
                    let _ = sock.send_to(req, targets[*k].addr);
                }
            }
            sent += 1;
        }
        let next = SEND_AT_MS
            .get(sent)
            .map_or(until, |ms| start + Duration::from_millis(*ms))
            .min(until);
        let wait = next.saturating_duration_since(Instant::now());
        if wait.is_zero() || sock.set_read_timeout(Some(wait)).is_err() {
            continue;
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        // Malformed or unrelated datagrams are dropped; only a success for one of ours counts.
        let Ok(m) = stun::decode(&buf[..n]) else {
            continue;
        };
        if m.class != stun::Class::Success {
            continue;
        }
        let hit = requests
            .iter()
            .find(|(tid, _, k)| *tid == m.tid && targets[*k].addr == from);
        if let (Some((_, _, k)), Some(mapped)) = (hit, m.xor_mapped) {
            got.insert(targets[*k].server, mapped);
        }
    }
    got
}

fn random_tid() -> [u8; 12] {
    let mut tid = [0u8; 12];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tid).is_err() {
        // Unreachable on Linux; a clock-derived id still tells our answers apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        tid.copy_from_slice(&t.to_le_bytes()[..12]);
    }
    tid
}

/// rtcd server.go:124-135 and config.go:287-293: a `localIP/port` map resolves to the port of
/// the first local IP it names, else the value is one port (0: none).
fn port_override(raw: &str, locals: &[IpAddr]) -> Option<u16> {
    // Untrimmed, as Go's strconv.Atoi reads it (" 30443" is no port).
    if raw.is_empty() {
        return None;
    }
    if let Ok(map) = rtcd::parse_port_map(raw) {
        if let Some(p) = locals.iter().find_map(|ip| {
            let s = ip.to_string();
            map.iter().find(|(k, _)| *k == s).map(|(_, p)| *p)
        }) {
            return u16::try_from(p).ok().filter(|p| *p != 0);
        }
    }
    raw.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_check_server_values() {
        assert_eq!(
            split_server("198.51.100.7:8443"),
            Some(("198.51.100.7".into(), 8443))
        );
        assert_eq!(
            split_server("[2001:db8::7]:3478"),
            Some(("2001:db8::7".into(), 3478))
        );
        assert_eq!(
            split_server("stun.example.com:3478"),
            Some(("stun.example.com".into(), 3478))
        );
        assert_eq!(split_server("stun.example.com"), None);
        assert_eq!(split_server(":3478"), None);
        assert_eq!(split_server("h:0"), None);
    }

    #[test]
    fn servers_rtcd_s_first_then_the_others_then_the_flag() {
        let cfg = RtcdConfig::from_toml_str(
            "[rtc]\nice_servers = [\"stun:a.example.com:3478\", {urls = [\"stun:b.example.com\", \"stun:a.example.com:3478\"]}, \"turn:t.example.com:3478\"]",
        )
        .unwrap();
        let first = rtcd::rtcd_stun_target(&cfg).unwrap().unwrap();
        let got = servers(&cfg, first, &["198.51.100.7:8443".into()]);
        let hosts: Vec<(&str, u16)> = got.iter().map(|(_, h, p, _)| (h.as_str(), *p)).collect();
        assert_eq!(
            hosts,
            [
                ("a.example.com", 3478),
                ("b.example.com", 3478),
                ("198.51.100.7", 8443)
            ]
        );
        assert_eq!(got[2].0, "--stun-check-server 198.51.100.7:8443");
        assert!(got[2].3 && !got[0].3 && !got[1].3);
    }

    #[test]
    fn port_override_as_rtcd_resolves_it() {
        let l: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap()];
        assert_eq!(port_override("", &l), None);
        assert_eq!(port_override("30443", &l), Some(30443));
        assert_eq!(port_override(" 30443", &l), None);
        assert_eq!(port_override("10.0.0.9/8448,10.0.0.5/8449", &l), Some(8449));
    }

    #[test]
    fn applies_only_without_override_and_with_a_stun_url() {
        let ask = NatAsk::default();
        let c = |t: &str| RtcdConfig::from_toml_str(t).unwrap();
        assert!(applies(
            &c("[rtc]\nice_servers = [\"stun:s.example.com:3478\"]"),
            &ask
        )
        .is_ok());
        let e = applies(&c("[rtc]\nice_servers = [\"stun:s.example.com:3478\"]\nice_host_override = \"203.0.113.7\""), &ask)
            .unwrap_err();
        assert!(e.contains("ice_host_override is set"), "{e}");
        assert!(applies(&c(""), &ask).unwrap_err().contains("no stun: URL"));
        let off = NatAsk {
            off: true,
            ..NatAsk::default()
        };
        assert_eq!(
            applies(
                &c("[rtc]\nice_servers = [\"stun:s.example.com:3478\"]"),
                &off
            )
            .unwrap_err(),
            "--no-nat-check"
        );
    }
}
