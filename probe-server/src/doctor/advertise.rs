//! What RTCD advertises to clients as its ICE host candidates, computed from its configuration
//! and this host's addresses (probe-proto's `compute_advertised`), with the IO it needs done
//! here: interface addresses, DNS for a hostname override, and RTCD's own STUN exchange.

use probe_proto::report::{Finding, Severity};
use probe_proto::rtcd::{self, AdvertiseError, Advertised, OverrideForm, Protocol, RtcdConfig};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::report::{Check, Status};

/// RTCD resolves the override with a 1 s timeout.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Outcome {
    pub check: Check,
    pub findings: Vec<Finding>,
}

/// `where_` names the config for fix texts (a path, or "RTCD's config file").
pub fn check(cfg: &RtcdConfig, where_: &str, deadline: Instant) -> Outcome {
    let locals = match crate::interfaces::local_addrs() {
        Ok(l) => l,
        Err(e) => {
            return Outcome {
                check: Check::new(
                    "rtcd_config",
                    Status::Skipped,
                    format!("skipped: cannot list this host's interfaces: {e}"),
                ),
                findings: vec![],
            }
        }
    };
    let stun = stun_answers(cfg, &locals, deadline);
    let resolve = |host: &str, ipv6: bool| resolve(host, ipv6);
    let stun_fn = |ip: IpAddr| stun.get(&ip).copied().flatten();
    let port = |p: i64| u16::try_from(p).unwrap_or(0);
    let result = rtcd::compute_advertised(
        cfg,
        &locals,
        &resolve,
        &stun_fn,
        port(cfg.ice_port_udp),
        port(cfg.ice_port_tcp),
    );
    judge(cfg, where_, result, !stun.is_empty())
}

/// Turns the computation into the check and its findings (pure, so it is unit-tested).
pub fn judge(
    cfg: &RtcdConfig,
    where_: &str,
    result: Result<Advertised, AdvertiseError>,
    stun_tried: bool,
) -> Outcome {
    let adv = match result {
        Ok(a) => a,
        Err(e) => {
            let id = match e {
                AdvertiseError::Resolve { .. } => "ice_host_override_hostname",
                _ => "rtcd_config_invalid",
            };
            let (summary, fix) = match &e {
                AdvertiseError::InvalidConfig(c) => (
                    format!("RTCD would refuse this configuration: {}", c.rtcd_message),
                    format!("{} (in {where_})", c.hint),
                ),
                other => (
                    other.to_string(),
                    format!("fix the setting named above in {where_} and restart RTCD"),
                ),
            };
            return Outcome {
                check: Check::new("rtcd_config", Status::Fail, summary.clone()),
                findings: vec![Finding::new(id, Severity::Error, summary, fix)],
            };
        }
    };
    let list = |p: Protocol| {
        adv.candidates
            .iter()
            .filter(|c| c.protocol == p)
            .map(|c| {
                format!(
                    "{}:{}{}",
                    c.address,
                    c.port,
                    if c.private { " (private)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let form = match &adv.override_form {
        OverrideForm::None if stun_tried => {
            "no ice_host_override; addresses from STUN where it answered".to_string()
        }
        OverrideForm::None => {
            "no ice_host_override and no STUN server: local addresses".to_string()
        }
        OverrideForm::Ip(ip) => format!("ice_host_override {ip}"),
        OverrideForm::Hostname { name, resolved } => {
            format!("ice_host_override {name} → {resolved} (resolved here)")
        }
        OverrideForm::Pairs(p) => {
            format!("ice_host_override with {} EXTERNAL/LOCAL pair(s)", p.len())
        }
    };
    let detail = format!(
        "advertises UDP {} — TCP {} — {form}",
        list(Protocol::Udp),
        list(Protocol::Tcp)
    );
    let mut findings = Vec::new();
    let udp: Vec<_> = adv
        .candidates
        .iter()
        .filter(|c| c.protocol == Protocol::Udp)
        .collect();
    let all_private = !udp.is_empty() && udp.iter().all(|c| c.private);
    if all_private {
        let addrs: Vec<String> = udp
            .iter()
            .filter(|c| !c.address.is_loopback())
            .map(|c| c.address.to_string())
            .collect();
        let stun_note = if rtcd::stun_url(cfg).is_some() {
            " and its STUN server gave no public address (outbound STUN blocked? Calls plugin issue #110)"
        } else {
            " and no STUN server is configured (ice_servers is empty by default)"
        };
        findings.push(Finding::new(
            "rtcd_advertises_private",
            Severity::Error,
            format!(
                "RTCD advertises only private addresses ({}) as its ICE candidates{stun_note}: clients outside this network time out (\"timed out waiting for rtc connection\")",
                if addrs.is_empty() { "loopback".to_string() } else { addrs.join(", ") }
            ),
            format!(
                "set the address users reach RTCD on: in {where_} under [rtc] add `ice_host_override = \"PUBLIC_IP\"` \
                 (or RTCD_RTC_ICEHOSTOVERRIDE=PUBLIC_IP in RTCD's environment) and restart RTCD; behind NAT also forward UDP/TCP {} to this host",
                adv.rtcd_port_udp
            ),
        ));
    }
    if let OverrideForm::Hostname { name, resolved } = &adv.override_form {
        findings.push(Finding::new(
            "ice_host_override_hostname",
            Severity::Warning,
            format!(
                "ice_host_override is the hostname {name}, which RTCD resolves on this host at every call join: here it is {resolved}{}; \
                 with split-horizon DNS users may resolve it to another address, and a failed lookup fails the join",
                if resolved_private(resolved) { " — a private address" } else { "" }
            ),
            format!("set ice_host_override to the public IP address itself (in {where_}, or RTCD_RTC_ICEHOSTOVERRIDE) unless {name} resolves to it everywhere"),
        ));
    }
    let status = if findings.iter().any(|f| f.severity == Severity::Error) {
        Status::Fail
    } else if findings.is_empty() {
        Status::Pass
    } else {
        Status::Warn
    };
    Outcome {
        check: Check::new("rtcd_config", status, detail),
        findings,
    }
}

fn resolved_private(ip: &IpAddr) -> bool {
    rtcd::is_private(*ip)
}

/// Go's resolver as RTCD calls it: IPv4 only unless IPv6 is on, 1 s.
fn resolve(host: &str, ipv6: bool) -> Result<Vec<IpAddr>, String> {
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
    locals: &[rtcd::LocalAddr],
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

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::rtcd::LocalAddr;

    fn run(toml: &str, locals: &[&str], dns: &[(&str, &str)]) -> Outcome {
        let cfg = RtcdConfig::from_toml_str(toml).unwrap();
        let locals: Vec<LocalAddr> = locals
            .iter()
            .map(|s| {
                let ip: IpAddr = s.parse().unwrap();
                LocalAddr {
                    ip,
                    loopback: ip.is_loopback(),
                }
            })
            .collect();
        let resolve = |h: &str, _: bool| {
            dns.iter()
                .find(|(n, _)| *n == h)
                .map(|(_, ip)| vec![ip.parse().unwrap()])
                .ok_or_else(|| "no such host".to_string())
        };
        let r = rtcd::compute_advertised(&cfg, &locals, &resolve, &|_| None, 8443, 8443);
        judge(&cfg, "/etc/rtcd.toml", r, false)
    }

    fn ids(o: &Outcome) -> Vec<&str> {
        o.findings.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn private_only_without_override_is_an_error_with_the_fix() {
        let o = run("", &["127.0.0.1", "172.31.1.2"], &[]);
        assert_eq!(ids(&o), vec!["rtcd_advertises_private"]);
        let f = &o.findings[0];
        assert!(f.summary.contains("172.31.1.2"), "{}", f.summary);
        assert!(
            f.fix.contains("ice_host_override") && f.fix.contains("RTCD_RTC_ICEHOSTOVERRIDE"),
            "{}",
            f.fix
        );
        assert_eq!(o.check.status, Status::Fail);
    }

    #[test]
    fn public_address_or_override_passes() {
        let o = run("", &["127.0.0.1", "203.0.113.2"], &[]);
        assert!(o.findings.is_empty(), "{:?}", ids(&o));
        assert_eq!(o.check.status, Status::Pass);
        let o = run(
            "[rtc]\nice_host_override = \"203.0.113.10\"\n",
            &["127.0.0.1", "172.31.1.2"],
            &[],
        );
        assert!(o.findings.is_empty(), "{:?}", ids(&o));
        assert!(
            o.check.detail.contains("203.0.113.10:8443"),
            "{}",
            o.check.detail
        );
    }

    #[test]
    fn hostname_override_warns_and_unresolvable_fails() {
        let toml = "[rtc]\nice_host_override = \"calls.example.com\"\n";
        let o = run(
            toml,
            &["172.31.1.2"],
            &[("calls.example.com", "172.31.1.2")],
        );
        // Resolves to a private address here: both the split-horizon warning and the error.
        assert_eq!(
            ids(&o),
            vec!["rtcd_advertises_private", "ice_host_override_hostname"]
        );
        let o = run(
            toml,
            &["172.31.1.2"],
            &[("calls.example.com", "203.0.113.10")],
        );
        assert_eq!(ids(&o), vec!["ice_host_override_hostname"]);
        assert_eq!(o.check.status, Status::Warn);
        let o = run(toml, &["172.31.1.2"], &[]);
        assert_eq!(ids(&o), vec!["ice_host_override_hostname"]);
        assert_eq!(o.findings[0].severity, Severity::Error);
    }

    #[test]
    fn invalid_values_quote_rtcd() {
        let o = run("[rtc]\nice_port_udp = 50000\n", &["203.0.113.2"], &[]);
        assert_eq!(ids(&o), vec!["rtcd_config_invalid"]);
        assert!(
            o.findings[0].summary.contains("not in allowed range"),
            "{}",
            o.findings[0].summary
        );
    }
}
