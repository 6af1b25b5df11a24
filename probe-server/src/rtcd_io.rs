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
/// in the order received (the caller keeps the first).
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
                let ips: Vec<IpAddr> = found.iter().filter(|ip| ipv6 || ip.is_ipv4()).collect();
                if ips.is_empty() {
                    Err(format!("lookup {host}: no such host"))
                } else {
                    Ok(ips)
                }
            }
        }
    })
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
        .and_then(|ips| ips.first().map(|ip| SocketAddr::new(*ip, port)));
    let (tx, rx) = mpsc::channel();
    let mut asked = 0;
    for l in locals {
        let ip = rtcd::canonical(l.ip);
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
