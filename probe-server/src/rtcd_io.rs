//! The IO that RTCD's candidate computation needs, shared by the server (what to advertise to
//! clients) and the doctor (what RTCD advertises): DNS for a hostname override and RTCD's
//! start-up STUN exchange, each bounded, then probe-proto's `compute_advertised`.

use probe_proto::rtcd::{self, AdvertiseError, Advertised, LocalAddr, PionRules, RtcdConfig};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// RTCD resolves the override with a 1 s timeout.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What RTCD would advertise from these local addresses, and the STUN answers it got on the way
/// (empty when no STUN exchange ran; `None` per address where it failed).
pub fn advertise(
    cfg: &RtcdConfig,
    locals: &[LocalAddr],
    port_udp: u16,
    port_tcp: u16,
    rules: PionRules,
    deadline: Instant,
) -> (
    Result<Advertised, AdvertiseError>,
    HashMap<IpAddr, Option<IpAddr>>,
) {
    let stun = stun_answers(cfg, locals, deadline);
    let stun_fn = |ip: IpAddr| stun.get(&ip).copied().flatten();
    let result =
        rtcd::compute_advertised(cfg, locals, &resolve, &stun_fn, port_udp, port_tcp, rules);
    (result, stun)
}

/// RTCD's `resolveHost(host, "ip4"|"ip", time.Second)` (rtcd service/rtc/utils.go) as a
/// `CGO_ENABLED=0` release build runs it: Go's pure resolver, which reads the hosts file first
/// and then asks the resolv.conf name servers itself, with no NSS modules (systemd-resolved's
/// NSS plugin, LDAP, mDNS… are never consulted). Done with hickory-resolver, which reads the
/// same two files; IPv4 answers only unless `ipv6`; the whole lookup bounded by 1 s. Answers
/// sorted as Go sorts them, RFC 6724 (see `sort_rfc6724`); the caller keeps the first.
pub fn resolve(host: &str, ipv6: bool) -> Result<Vec<IpAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let h = host.to_string();
    // A thread of its own, so this works from any context (a Tokio worker included).
    std::thread::spawn(move || {
        let _ = tx.send(resolve_pure(&h, ipv6));
    });
    match rx.recv_timeout(RESOLVE_TIMEOUT + Duration::from_millis(200)) {
        Ok(r) => r,
        Err(_) => Err(format!("lookup {host}: i/o timeout")),
    }
}

fn resolve_pure(host: &str, ipv6: bool) -> Result<Vec<IpAddr>, String> {
    use hickory_resolver::config::{
        LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    };
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::Resolver;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("lookup {host}: {e}"))?;
    rt.block_on(async {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match Resolver::builder(provider.clone()) {
            Ok(b) => b,
            // Go without a usable resolv.conf asks 127.0.0.1:53 and [::1]:53
            // (net/dnsconfig_unix.go defaultNS).
            Err(_) => Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![
                    NameServerConfig::udp_and_tcp(IpAddr::from([127, 0, 0, 1])),
                    NameServerConfig::udp_and_tcp(std::net::Ipv6Addr::LOCALHOST.into()),
                ]),
                provider,
            ),
        };
        let opts = builder.options_mut();
        opts.ip_strategy = if ipv6 {
            LookupIpStrategy::Ipv4AndIpv6
        } else {
            LookupIpStrategy::Ipv4Only
        };
        // Hosts file first, as Go's default "files dns" order.
        opts.use_hosts_file = ResolveHosts::Always;
        opts.timeout = RESOLVE_TIMEOUT;
        // One resolver per lookup: nothing cached between joins, as RTCD.
        opts.cache_size = 0;
        let resolver = builder.build().map_err(|e| format!("lookup {host}: {e}"))?;
        match tokio::time::timeout(RESOLVE_TIMEOUT, resolver.lookup_ip(host)).await {
            Err(_) => Err(format!("lookup {host}: i/o timeout")),
            Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => {
                Err(format!("lookup {host}: no such host"))
            }
            Ok(Err(e)) => Err(format!("lookup {host}: {e}")),
            Ok(Ok(found)) => {
                let mut ips: Vec<IpAddr> = found.iter().filter(|ip| ipv6 || ip.is_ipv4()).collect();
                sort_rfc6724(&mut ips, &source_for);
                if ips.is_empty() {
                    Err(format!("lookup {host}: no such host"))
                } else {
                    Ok(ips)
                }
            }
        }
    })
}

/// Go's pure resolver sorts every answer list (DNS and hosts file alike) by RFC 6724
/// destination address selection (net/dnsclient_unix.go goLookupIPCNAMEOrder and
/// goLookupIPFiles → `sortByRFC6724`, net/addrselect.go), and RTCD keeps the first. Mirrored:
/// rule 1 (no route from this host: last), 2 (matching scope), 5 (matching label), 6 (higher
/// precedence), 8 (smaller scope), stable otherwise; rule 9 is IPv6-only in Go and hardly
/// matters for one name. What it changes in practice: with enable_ipv6 and a name with A and
/// AAAA records, RTCD takes the IPv6 address when this host has global IPv6, whatever order
/// the answers came in.
fn sort_rfc6724(ips: &mut [IpAddr], source: &dyn Fn(IpAddr) -> Option<IpAddr>) {
    if ips.len() < 2 {
        return;
    }
    let key = |dst: IpAddr| {
        let (prec, label) = policy(dst);
        match source(dst) {
            // Go: two unusable destinations compare equal (stable).
            None => (1u8, 0u8, 0u8, 0u8, 0u8),
            Some(src) => (
                0,
                u8::from(scope(src) != scope(dst)),
                u8::from(policy(src).1 != label),
                u8::MAX - prec,
                scope(dst),
            ),
        }
    };
    let mut keyed: Vec<_> = ips.iter().map(|&ip| (key(ip), ip)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    for (slot, (_, ip)) in ips.iter_mut().zip(keyed) {
        *slot = ip;
    }
}

/// RFC 6724 policy table as Go has it (net/addrselect.go rfc6724policyTable): (precedence, label).
fn policy(ip: IpAddr) -> (u8, u8) {
    let v6 = match ip {
        IpAddr::V4(_) => return (35, 4),
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    if v6.is_loopback() {
        (50, 0)
    } else if v6.to_ipv4_mapped().is_some() {
        (35, 4)
    } else if s[0] == 0x2002 {
        (30, 2)
    } else if s[0] == 0x2001 && s[1] == 0 {
        (5, 5)
    } else if s[0] & 0xfe00 == 0xfc00 {
        (3, 13)
    } else if s[..6].iter().all(|&x| x == 0) {
        (1, 3)
    } else if s[0] & 0xffc0 == 0xfec0 {
        (1, 11)
    } else if s[0] == 0x3ffe {
        (1, 12)
    } else {
        (40, 1)
    }
}

/// Go's classifyScope: link-local (2) for 127/8, 169.254/16, ::1 and fe80::/10; site-local (5)
/// for fec0::/10; global (14) otherwise.
fn scope(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_link_local() => 2,
        IpAddr::V4(_) => 14,
        IpAddr::V6(v6) if v6.is_loopback() || v6.segments()[0] & 0xffc0 == 0xfe80 => 2,
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfec0 => 5,
        IpAddr::V6(_) => 14,
    }
}

/// The source address this host would use toward `dst` (Go's srcAddrs: a UDP "dial", no packet
/// sent), or None when there is no route.
fn source_for(dst: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match dst {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(SocketAddr::new(dst, 9)).ok()?;
    sock.local_addr().ok().map(|a| rtcd::canonical(a.ip()))
}

/// RTCD's start-up STUN exchange, one per local address, in parallel. RTCD sends from
/// `localIP:ice_port_udp`, which it holds; the doctor sends from an ephemeral port of the same
/// address, which gets the same public IP from the NAT (the port is not what RTCD uses).
fn stun_answers(
    cfg: &RtcdConfig,
    locals: &[LocalAddr],
    deadline: Instant,
) -> HashMap<IpAddr, Option<IpAddr>> {
    let mut out = HashMap::new();
    let Some(Ok((host, port))) = rtcd::rtcd_stun_target(cfg) else {
        return out;
    };
    if !cfg.ice_host_override.is_empty() {
        return out;
    }
    let server: Option<SocketAddr> = resolve(&host, cfg.enable_ipv6)
        .ok()
        .and_then(|ips| stun_server_choice(&ips, &host))
        .map(|ip| SocketAddr::new(ip, port));
    let (tx, rx) = mpsc::channel();
    let mut asked = 0;
    // From RTCD's own local IPs only: never the IPv6 or link-local ones RTCD leaves out.
    for ip in rtcd::rtcd_local_ips(cfg, locals) {
        out.insert(ip, None);
        let Some(server) = server.filter(|s| s.is_ipv4() == ip.is_ipv4() && !ip.is_loopback())
        else {
            continue;
        };
        let tx = tx.clone();
        asked += 1;
        std::thread::spawn(move || {
            let _ = tx.send((ip, stun_once(ip, server, deadline)));
        });
    }
    drop(tx);
    for _ in 0..asked {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((ip, got)) => {
                out.insert(ip, got);
            }
            Err(_) => break,
        }
    }
    out
}

/// Which address of the STUN host RTCD sends to: Go's `net.ResolveUDPAddr` (rtcd stun.go:27)
/// keeps `addrList.forResolve`'s pick (net/ipsock.go): under "udp4" only IPv4 answers exist;
/// under "udp" (enable_ipv6) the first IPv4 answer unless the URL's host is a bracketed IPv6
/// literal, else the first answer. Not simply the first answer, so an AAAA record listed
/// before the A record does not make the doctor believe RTCD's STUN failed.
fn stun_server_choice(ips: &[IpAddr], host: &str) -> Option<IpAddr> {
    let want6 = host.contains(':');
    ips.iter()
        .copied()
        .find(|ip| ip.is_ipv6() == want6)
        .or_else(|| ips.first().copied())
}

fn stun_once(local: IpAddr, server: SocketAddr, deadline: Instant) -> Option<IpAddr> {
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).ok()?;
    let mut tid = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tid).ok()?;
    let req = probe_proto::stun::binding_request(tid, None, None, 0);
    let mut buf = [0u8; 1500];
    // RTCD sends one request; a retry costs nothing and survives one lost packet.
    for attempt in 0..3 {
        if attempt == 0 || Instant::now() < deadline {
            sock.send_to(&req, server).ok()?;
        }
        let until = (Instant::now() + Duration::from_millis(700)).min(deadline);
        while let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            sock.set_read_timeout(Some(left)).ok()?;
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            if from != server {
                continue;
            }
            if let Ok(m) = probe_proto::stun::decode(&buf[..n]) {
                if m.tid == tid {
                    return m.xor_mapped.map(|a| a.ip());
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's sortByRFC6724 (net/addrselect.go): with global IPv6 here, an AAAA answer goes before
    /// an A answer whatever the order received (precedence 40 > 35); without an IPv6 route it
    /// goes last; IPv4-only lists keep their order.
    #[test]
    fn hostname_with_a_and_aaaa_resolves_as_go_sorts_them() {
        let v4: IpAddr = "203.0.113.10".parse().unwrap();
        let v4b: IpAddr = "198.51.100.10".parse().unwrap();
        let v6: IpAddr = "2001:db8:1::10".parse().unwrap();
        let dual = |dst: IpAddr| -> Option<IpAddr> {
            Some(if dst.is_ipv4() {
                "10.0.0.5".parse().unwrap()
            } else {
                "2001:db8::5".parse().unwrap()
            })
        };
        let v4_only =
            |dst: IpAddr| -> Option<IpAddr> { dst.is_ipv4().then(|| "10.0.0.5".parse().unwrap()) };
        let mut ips = vec![v4, v6];
        sort_rfc6724(&mut ips, &dual);
        assert_eq!(ips, vec![v6, v4]);
        let mut ips = vec![v6, v4];
        sort_rfc6724(&mut ips, &v4_only);
        assert_eq!(ips, vec![v4, v6]);
        let mut ips = vec![v4b, v4];
        sort_rfc6724(&mut ips, &dual);
        assert_eq!(ips, vec![v4b, v4]);
        // A ULA source toward a global AAAA: labels differ (13 vs 1), IPv4 first (rule 5).
        let ula = |dst: IpAddr| -> Option<IpAddr> {
            Some(if dst.is_ipv4() {
                "10.0.0.5".parse().unwrap()
            } else {
                "fd00::5".parse().unwrap()
            })
        };
        let mut ips = vec![v6, v4];
        sort_rfc6724(&mut ips, &ula);
        assert_eq!(ips, vec![v4, v6]);
    }

    /// Go's forResolve (net/ipsock.go) prefers IPv4 for a STUN host name resolved under "udp".
    #[test]
    fn stun_server_with_aaaa_first_uses_the_ipv4_answer() {
        let ips: Vec<IpAddr> = vec![
            "2001:db8::3".parse().unwrap(),
            "203.0.113.3".parse().unwrap(),
        ];
        assert_eq!(stun_server_choice(&ips, "stun.example.com"), Some(ips[1]));
        assert_eq!(
            stun_server_choice(&ips[..1], "stun.example.com"),
            Some(ips[0])
        );
        // An IPv6 literal host (written in brackets in the URL) wants IPv6.
        assert_eq!(stun_server_choice(&ips, "2001:db8::3"), Some(ips[0]));
        assert_eq!(stun_server_choice(&[], "stun.example.com"), None);
    }
}
