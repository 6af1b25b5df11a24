//! What RTCD would advertise, computed at start from RTCD's own configuration (file, RTCD_*
//! environment, then flags) with probe-proto's port of RTCD's logic and the IO of `rtcd_io`
//! (which the doctor shares).

use crate::cli::ServeArgs;
use crate::interfaces;
use probe_proto::msg::{CandidateSource, IceOffer, Transport, WireCandidate};
use probe_proto::rtcd::{self, Advertised, OverrideForm, Protocol, RtcdConfig, Source};
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

/// What RTCD would advertise with this configuration, with the probe's port on the candidates.
pub fn advertise(
    cfg: &RtcdConfig,
    port: u16,
    rules: rtcd::PionRules,
) -> Result<Advertised, String> {
    let locals = interfaces::local_addrs()
        .map_err(|e| format!("cannot list this host's interfaces: {e}"))?;
    // RTCD waits 5 s for its STUN answers, all local addresses in parallel.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (result, stun) = crate::rtcd_io::advertise(cfg, &locals, port, port, rules, deadline);
    for (local, public) in &stun {
        match public {
            Some(public) => {
                tracing::info!(local = %local, public = %public, "got public IP address for local interface")
            }
            None => {
                tracing::warn!(local = %local, "failed to get public IP address for local interface")
            }
        }
    }
    result.map_err(|e| e.to_string())
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
        match tokio::task::spawn_blocking(move || advertise(&c, port, rtcd::PionRules::default()))
            .await
        {
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
