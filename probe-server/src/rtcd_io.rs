//! The IO that RTCD's candidate computation needs, shared by the server (what to advertise to
//! clients) and the doctor (what RTCD advertises): DNS for a hostname override and RTCD's
//! start-up STUN exchange, each bounded, then probe-proto's `compute_advertised`.

use probe_proto::rtcd::{self, AdvertiseError, Advertised, LocalAddr, PionRules, RtcdConfig};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
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
    let result = rtcd::compute_advertised(cfg, locals, &resolve, &stun_fn, port_udp, port_tcp, rules);
    (result, stun)
}

/// Go's resolver as RTCD calls it: IPv4 only unless IPv6 is on, 1 s.
pub fn resolve(host: &str, ipv6: bool) -> Result<Vec<IpAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let h = host.to_string();
    std::thread::spawn(move || {
        let r = (h.as_str(), 0)
            .to_socket_addrs()
            .map(|it| it.map(|a| a.ip()).collect::<Vec<_>>());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(ips)) => {
            let ips: Vec<IpAddr> = ips.into_iter().filter(|ip| ipv6 || ip.is_ipv4()).collect();
            if ips.is_empty() {
                Err(format!("lookup {host}: no such host"))
            } else {
                Ok(ips)
            }
        }
        Ok(Err(e)) => Err(format!("lookup {host}: {e}")),
        Err(_) => Err(format!("lookup {host}: i/o timeout")),
    }
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
