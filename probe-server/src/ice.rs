//! What RTCD would advertise, computed at start from RTCD's own configuration (file, RTCD_*
//! environment, then flags) with probe-proto's port of RTCD's logic. The IO it needs — the
//! interface list, DNS for a hostname override, STUN discovery — happens here.

use crate::cli::ServeArgs;
use crate::interfaces;
use probe_proto::msg::{CandidateSource, IceOffer, Transport, WireCandidate};
use probe_proto::rtcd::{self, Advertised, OverrideForm, Protocol, RtcdConfig, Source};
use probe_proto::stun;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Reads RTCD's configuration the way RTCD does, then applies the probe's flags on top.
pub fn load_config(args: &ServeArgs) -> Result<RtcdConfig, String> {
    let mut cfg = match &args.rtcd_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read RTCD's configuration {}: {e}; check the path (RTCD's -config flag) and that this user may read it",
                    path.display()
                )
            })?;
            RtcdConfig::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => RtcdConfig::default(),
    };
    cfg.apply_env(&|k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    if let Some(v) = &args.ice_host_override {
        cfg.ice_host_override = v.clone();
    }
    if let Some(v) = &args.ice_host_port_override {
        cfg.ice_host_port_override = v.clone();
    }
    if let Some(v) = &args.ice_servers {
        cfg.ice_servers = rtcd::decode_ice_servers_json(v)
            .map_err(|e| format!("--ice-servers is not RTCD's JSON list of ICE servers: {e}"))?;
    }
    Ok(cfg)
}

/// RTCD's `resolveHost`: the host's resolver with a 1 s deadline.
fn resolve(host: &str, ipv6: bool) -> Result<Vec<IpAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::spawn(move || {
        let r = (name.as_str(), 0)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect::<Vec<_>>());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(1)) {
        Ok(Ok(ips)) => {
            let ips: Vec<IpAddr> = ips.into_iter().filter(|ip| ipv6 || ip.is_ipv4()).collect();
            if ips.is_empty() {
                Err("no suitable address found".into())
            } else {
                Ok(ips)
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("i/o timeout".into()),
    }
}

/// One Binding from `local` to the STUN server, as RTCD does at start: 5 s, one answer.
fn stun_discover(local: IpAddr, server: SocketAddr) -> Option<IpAddr> {
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).ok()?;
    let tid: [u8; 12] = rand_tid(local);
    let req = stun::binding_request(tid, None, None, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1500];
    let mut next_send = Instant::now();
    let mut rto = Duration::from_millis(500);
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            let _ = sock.send_to(&req, server);
            next_send = Instant::now() + rto;
            rto *= 2;
        }
        let wait = next_send
            .min(deadline)
            .saturating_duration_since(Instant::now());
        let _ = sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == server {
                if let Ok(m) = stun::decode(&buf[..n]) {
                    if m.tid == tid && m.class == stun::Class::Success {
                        return m.xor_mapped.map(|a| a.ip());
                    }
                }
            }
        }
    }
    None
}

fn rand_tid(seed: IpAddr) -> [u8; 12] {
    use ring::rand::SecureRandom;
    let mut t = [0u8; 12];
    if ring::rand::SystemRandom::new().fill(&mut t).is_err() {
        t[..4].copy_from_slice(&(seed.to_string().len() as u32).to_be_bytes());
    }
    t
}

/// What RTCD would advertise with this configuration, with the probe's port on the candidates.
pub fn advertise(cfg: &RtcdConfig, port: u16) -> Result<Advertised, String> {
    let locals = interfaces::local_addrs()
        .map_err(|e| format!("cannot list this host's interfaces: {e}"))?;
    // STUN discovery runs only with an empty override and a STUN URL, once per local IP, in
    // parallel so that a blocked STUN server costs 5 s in total, as in RTCD.
    let mut found: HashMap<IpAddr, IpAddr> = HashMap::new();
    if cfg.ice_host_override.trim().is_empty() {
        if let Some(Ok((host, stun_port))) = rtcd::rtcd_stun_target(cfg) {
            match resolve(&host, cfg.enable_ipv6) {
                Ok(ips) => {
                    let server = SocketAddr::new(ips[0], stun_port);
                    let handles: Vec<_> = locals
                        .iter()
                        .map(|l| {
                            let ip = l.ip;
                            (ip, std::thread::spawn(move || stun_discover(ip, server)))
                        })
                        .collect();
                    for (ip, h) in handles {
                        match h.join().ok().flatten() {
                            Some(public) => {
                                tracing::info!(local = %ip, public = %public, "got public IP address for local interface");
                                found.insert(ip, public);
                            }
                            None => {
                                tracing::warn!(local = %ip, stun = %server, "failed to get public IP address for local interface")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("failed to resolve stun host {host:?}: {e}"),
            }
        }
    }
    let stun_fn = |ip: IpAddr| found.get(&ip).copied();
    rtcd::compute_advertised(cfg, &locals, &resolve, &stun_fn, port, port)
        .map_err(|e| e.to_string())
}

/// The welcome's ICE part (credentials are filled per session).
pub fn offer(cfg: &RtcdConfig, adv: &Advertised, probe_port: u16) -> IceOffer {
    let (form, resolved) = match &adv.override_form {
        OverrideForm::None => ("none", vec![]),
        OverrideForm::Ip(_) => ("ip", vec![]),
        OverrideForm::Hostname { resolved, .. } => ("hostname", vec![*resolved]),
        OverrideForm::Pairs(_) => ("pairs", vec![]),
    };
    let ov = cfg.ice_host_override.trim();
    IceOffer {
        ufrag: String::new(),
        pwd: String::new(),
        candidates: adv
            .candidates
            .iter()
            .map(|c| WireCandidate {
                address: c.address,
                port: c.port,
                protocol: match c.protocol {
                    Protocol::Udp => Transport::Udp,
                    Protocol::Tcp => Transport::Tcp,
                },
                source: match c.source {
                    Source::Local => CandidateSource::Local,
                    Source::Override => CandidateSource::Override,
                    Source::Mapping => CandidateSource::Mapping,
                    Source::Stun => CandidateSource::Stun,
                },
            })
            .collect(),
        override_value: (!ov.is_empty()).then(|| ov.to_string()),
        override_form: form.into(),
        override_resolved: resolved,
        rtcd_port_udp: adv.rtcd_port_udp,
        rtcd_port_tcp: adv.rtcd_port_tcp,
        probe_port_udp: probe_port,
        probe_port_tcp: probe_port,
    }
}

/// Tells the admin at start what RTCD would advertise, and warns when no user outside this
/// network could reach it.
pub fn log_advertised(adv: &Advertised, probe_port: u16) {
    let list: Vec<String> = adv
        .candidates
        .iter()
        .map(|c| {
            format!(
                "{} {}:{} ({:?}{})",
                match c.protocol {
                    Protocol::Udp => "udp",
                    Protocol::Tcp => "tcp",
                },
                c.address,
                c.port,
                c.source,
                if c.private { ", private" } else { "" }
            )
        })
        .collect();
    tracing::info!("RTCD would advertise: {}", list.join(", "));
    if adv.rtcd_port_udp != probe_port {
        tracing::info!(
            "the probe listens on {probe_port}; RTCD itself would advertise port {} (UDP) and {} (TCP)",
            adv.rtcd_port_udp,
            adv.rtcd_port_tcp
        );
    }
    let udp: Vec<&rtcd::Candidate> = adv
        .candidates
        .iter()
        .filter(|c| c.protocol == Protocol::Udp)
        .collect();
    if !udp.is_empty() && udp.iter().all(|c| c.private) {
        let addrs: Vec<String> = udp.iter().map(|c| c.address.to_string()).collect();
        tracing::warn!(
            "RTCD would advertise only private addresses ({}): users outside this network cannot connect \
             (\"timed out waiting for rtc connection\"). Fix: set ice_host_override = \"PUBLIC_IP\" in the [rtc] \
             section of RTCD's config (or RTCD_RTC_ICEHOSTOVERRIDE=PUBLIC_IP), with the address users reach this \
             host at.",
            addrs.join(", ")
        );
    }
}

/// RTCD resolves a hostname override on every call join, so a DNS change takes effect at once
/// there. The probe re-resolves it every `every` (off the serving thread) and hands new
/// sessions what RTCD would advertise now. `cfg` is None when the override is not a hostname.
pub async fn follow_hostname(
    cfg: Option<RtcdConfig>,
    port: u16,
    every: Duration,
    shared: std::sync::Arc<crate::shared::Shared>,
) {
    let Some(cfg) = cfg else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let c = cfg.clone();
        match tokio::task::spawn_blocking(move || advertise(&c, port)).await {
            Ok(Ok(adv)) => {
                let next = offer(&cfg, &adv, port);
                if shared
                    .ice()
                    .is_some_and(|cur| cur.candidates != next.candidates)
                {
                    tracing::warn!(
                        "ice_host_override {:?} now resolves differently here; new sessions get the new candidates",
                        cfg.ice_host_override
                    );
                    log_advertised(&adv, port);
                }
                shared.set_ice(next);
            }
            Ok(Err(e)) => tracing::warn!("RTCD would fail call joins now: {e}"),
            Err(e) => tracing::warn!("re-resolving the override failed: {e}"),
        }
    }
}
