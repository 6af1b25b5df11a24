//! What RTCD would advertise, computed at start from RTCD's own configuration (file, RTCD_*
//! environment, then flags) with probe-proto's port of RTCD's logic and the IO of `rtcd_io`
//! (which the doctor shares).

use crate::cli::ServeArgs;
use crate::interfaces;
use probe_proto::calls::wording::Terms;
use probe_proto::calls::Deployment;
use probe_proto::msg::{CandidateSource, IceFacts, IceOffer, Transport, WireCandidate};
use probe_proto::rtcd::{self, Advertised, OverrideForm, Protocol, RtcdConfig, Source};
use std::time::{Duration, Instant};

/// Reads RTCD's configuration the way RTCD does, then applies the probe's flags on top. With
/// `--rtcd-config`, the `RTCD_*` variables are RTCD's own: the running RTCD's environment,
/// else its systemd unit's, else ours (`rtcd_env`); the start log says which.
/// Also returns the start-log line naming where RTCD's variables came from; the caller logs it
/// once the configuration is known good, so a refused one leaves one sentence on stderr.
pub fn load_config(args: &ServeArgs) -> Result<(RtcdConfig, EnvLine), String> {
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
    let env = if args.rtcd_config.is_some() {
        let port = |p: i64| u16::try_from(p).ok();
        let api_port = cfg
            .api
            .listen_address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        crate::rtcd_env::discover(
            &crate::rtcd_env::Hints {
                udp_ports: port(cfg.ice_port_udp).into_iter().collect(),
                tcp_ports: port(cfg.ice_port_tcp).into_iter().chain(api_port).collect(),
                unit: crate::rtcd_env::DEFAULT_UNIT,
            },
            Instant::now() + Duration::from_secs(3),
        )
    } else {
        // No RTCD config given: RTCD's defaults and this environment, as before.
        crate::rtcd_env::RtcdEnv {
            target: &crate::rtcd_env::RTCD,
            source: crate::rtcd_env::Source::Own,
            vars: crate::rtcd_env::own_vars(),
            notes: vec!["no --rtcd-config given".into()],
            pid: None,
            unit: None,
            ignored_own: Vec::new(),
        }
    };
    let line = EnvLine {
        source: env.kind(),
        summary: env.summary(),
        unknown_keys: probe_proto::rtcd::keys::unknown_all(
            &cfg.table,
            env.vars.keys().map(String::as_str),
        ),
    };
    cfg.apply_env(&|k| env.get(k))
        .map_err(|e| format!("{e} (the variable is in {})", env.describe()))?;
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
    Ok((cfg, line))
}

/// Where RTCD's `RTCD_*` variables came from, for the start log.
pub struct EnvLine {
    pub source: &'static str,
    pub summary: String,
    /// Keys of RTCD's file that RTCD ignores (rtcd cmd/rtcd/config.go:28; see `rtcd::keys`).
    pub unknown_keys: Vec<probe_proto::rtcd::keys::UnknownKey>,
}

impl EnvLine {
    pub fn log(&self) {
        tracing::info!(env_source = self.source, "{}", self.summary);
        for u in &self.unknown_keys {
            tracing::warn!(
                "RTCD's configuration sets {u}, which RTCD does not know and ignores without a word \
                 ({}): the setting it was meant to be keeps its default",
                probe_proto::catalog::FindingId::RtcdConfigUnknownKey
            );
        }
    }
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
    let (mut result, stun) = crate::rtcd_io::advertise(cfg, &locals, port, port, rules, deadline);
    if let Ok(adv) = &mut result {
        probe_port_for_port_override(adv, port);
    }
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

/// `ice_host_port_override` is the port users reach (through a load balancer or NAT) that leads
/// to RTCD's own `ice_port_udp`/`ice_port_tcp` (rtcd sfu.go:311-319 rewrites the host
/// candidates' port to it). When the probe listens on another port than RTCD, that port leads to
/// RTCD (or nothing), never to the probe: a check there fails however well the network works, and
/// the verdict would then advise a wrong port override. So the probe tests the advertised
/// addresses on its own port, as it does without a port override; the welcome still carries
/// RTCD's port and the `ice_probe_port` finding says RTCD advertises its own port or override.
fn probe_port_for_port_override(adv: &mut Advertised, probe_port: u16) {
    let Some(p) = adv.host_port_override else {
        return;
    };
    for c in &mut adv.candidates {
        let rtcd_port = match c.protocol {
            Protocol::Udp => adv.rtcd_port_udp,
            Protocol::Tcp => adv.rtcd_port_tcp,
        };
        if probe_port != rtcd_port && c.port == p {
            c.port = probe_port;
        }
    }
}

/// The welcome's ICE part (credentials are filled per session), for RTCD.
pub fn offer(cfg: &RtcdConfig, adv: &Advertised, probe_port: u16) -> IceOffer {
    offer_for(cfg, adv, probe_port, &Deployment::Rtcd)
}

/// [`offer`] naming the deployment, so the client words its verdicts for it.
pub fn offer_for(
    cfg: &RtcdConfig,
    adv: &Advertised,
    probe_port: u16,
    deployment: &Deployment,
) -> IceOffer {
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
        facts: Some(IceFacts {
            rules: adv.rules,
            filter_ignores: adv.filter_ignores,
            ice_address_udp: cfg.ice_address_udp.clone(),
            ice_address_tcp: cfg.ice_address_tcp.clone(),
            relay_servers: cfg
                .relay_servers()
                .iter()
                .flat_map(|s| s.urls.iter().cloned())
                .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
                .collect(),
            deployment: deployment.clone(),
        }),
    }
}

/// Tells the admin at start what RTCD (or the Calls plugin's integrated server) would advertise
/// and with which pion rules, in that deployment's terms, and warns when no user outside this
/// network could reach it, when the ice_address filter drops the override or STUN, and when
/// there is no UDP candidate at all.
pub fn log_advertised_for(
    cfg: &RtcdConfig,
    adv: &Advertised,
    probe_port: u16,
    deployment: &Deployment,
) {
    let lines = match deployment {
        Deployment::Rtcd => advertised_lines(cfg, adv, probe_port),
        Deployment::CallsPlugin { .. } => plugin_lines(cfg, adv, probe_port),
    };
    log_lines(&lines);
}

/// Logs `(warning, text)` lines.
pub fn log_lines(lines: &[(bool, String)]) {
    for line in lines {
        match line {
            (false, text) => tracing::info!("{text}"),
            (true, text) => tracing::warn!("{text}"),
        }
    }
}

/// What the Calls plugin's integrated RTC server would advertise, in the plugin's terms: the
/// same rules as RTCD's, the fixes naming System Console settings and `MM_CALLS_*` variables.
fn plugin_lines(cfg: &RtcdConfig, adv: &Advertised, probe_port: u16) -> Vec<(bool, String)> {
    let t = Terms::of(&Deployment::CallsPlugin { rtcd_url: None });
    let mut out = vec![(
        false,
        format!(
            "The Calls plugin's integrated RTC server would advertise: {} [{}]",
            candidate_list(adv),
            adv.rules.label()
        ),
    )];
    if adv.rtcd_port_udp != probe_port {
        out.push((false, format!(
            "the probe listens on {probe_port}; the plugin's RTC server itself would advertise port {} (UDP, {}) and {} (TCP)",
            adv.rtcd_port_udp,
            probe_proto::calls::wording::console("UDPServerPort"),
            adv.rtcd_port_tcp
        )));
    }
    let udp: Vec<&rtcd::Candidate> = adv.udp().collect();
    let udp_ips: Vec<std::net::IpAddr> = udp.iter().map(|c| c.address).collect();
    let warn = |f: probe_proto::report::Finding| {
        (true, format!("{} ({}). Fix: {}.", f.summary, f.id, f.fix))
    };
    if udp.is_empty() {
        out.push(warn(probe_proto::calls::wording::no_udp_candidate(
            &cfg.ice_address_udp,
            &cfg.ice_address_tcp,
        )));
    }
    if let Some(ig) = adv.ignored_by_filter() {
        out.push(warn(probe_proto::calls::wording::address_ignores_override(
            ig,
            cfg.ice_host_override.trim(),
            &cfg.ice_address_udp,
            &cfg.ice_address_tcp,
            &udp_ips,
            probe_proto::report::Severity::Error,
        )));
    } else if !udp.is_empty() && udp.iter().all(|c| c.private) {
        let addrs: Vec<String> = udp_ips.iter().map(ToString::to_string).collect();
        let consequence = if cfg.relay_servers().is_empty() {
            "users outside this network cannot connect (\"timed out waiting for rtc connection\")"
                .to_string()
        } else {
            format!(
                "users outside this network connect only through the relay on its TURN server (Server Side \
                 TURN: {})",
                cfg.relays_described()
            )
        };
        out.push((true, format!(
            "The Calls plugin's integrated RTC server would advertise only private host addresses ({}): {consequence}. \
             Fix: set {}, {}.",
            addrs.join(", "),
            t.host_line("PUBLIC_IP"),
            t.restart()
        )));
    }
    out
}

/// `udp 203.0.113.7:8443 (Override), …` or `nothing`.
fn candidate_list(adv: &Advertised) -> String {
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
    if list.is_empty() {
        "nothing".to_string()
    } else {
        list.join(", ")
    }
}

/// The start log's lines, `(warning, text)`; pure, so it is unit-tested.
fn advertised_lines(cfg: &RtcdConfig, adv: &Advertised, probe_port: u16) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    out.push((
        false,
        format!(
            "RTCD would advertise: {} [{}]",
            candidate_list(adv),
            adv.rules.label()
        ),
    ));
    if adv.rtcd_port_udp != probe_port {
        out.push((
            false,
            format!(
                "the probe listens on {probe_port}; RTCD itself would advertise port {} (UDP) and {} (TCP)",
                adv.rtcd_port_udp, adv.rtcd_port_tcp
            ),
        ));
    }
    let udp: Vec<&rtcd::Candidate> = adv.udp().collect();
    let udp_ips: Vec<std::net::IpAddr> = udp.iter().map(|c| c.address).collect();
    if udp.is_empty() {
        let f = rtcd::findings::no_udp_candidate(
            &cfg.ice_address_udp,
            &cfg.ice_address_tcp,
            matches!(adv.override_form, OverrideForm::Pairs(_)),
            Some(adv.rules),
            "RTCD's config",
        );
        out.push((true, format!("{} ({}). Fix: {}.", f.summary, f.id, f.fix)));
    }
    if let Some(ig) = adv.ignored_by_filter() {
        let f = rtcd::findings::address_ignores_override(
            ig,
            cfg.ice_host_override.trim(),
            &cfg.ice_address_udp,
            &cfg.ice_address_tcp,
            &udp_ips,
            "RTCD's config",
            probe_proto::report::Severity::Error,
        );
        out.push((true, format!("{} ({}). Fix: {}.", f.summary, f.id, f.fix)));
    } else if !udp.is_empty() && udp.iter().all(|c| c.private) {
        let addrs: Vec<String> = udp.iter().map(|c| c.address.to_string()).collect();
        // rtcd sfu.go:231-252: with server-side TURN (a turn: entry and turn.static_auth_secret)
        // RTCD also gathers relay candidates, so outside users still connect through the relay.
        let consequence = if cfg.relay_servers().is_empty() {
            "users outside this network cannot connect (\"timed out waiting for rtc connection\")"
                .to_string()
        } else {
            format!(
                "users outside this network connect only through the relay RTCD gathers on its TURN server ({})",
                cfg.relays_described()
            )
        };
        out.push((
            true,
            format!(
                "RTCD would advertise only private host addresses ({}): {consequence}. Fix: set ice_host_override = \
                 \"PUBLIC_IP\" in the [rtc] section of RTCD's config (or RTCD_RTC_ICEHOSTOVERRIDE=PUBLIC_IP), with the \
                 address users reach this host at.",
                addrs.join(", ")
            ),
        ));
    }
    out
}

/// RTCD resolves a hostname override on every call join, so a DNS change takes effect at once
/// there. The probe re-resolves it every `every` (off the serving thread) and hands new
/// sessions what RTCD would advertise now. `cfg` is None when the override is not a hostname.
pub async fn follow_hostname(
    cfg: Option<RtcdConfig>,
    port: u16,
    rules: rtcd::PionRules,
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
        match tokio::task::spawn_blocking(move || advertise(&c, port, rules)).await {
            Ok(Ok(adv)) => {
                // The deployment the start chose stays (RTCD or the Calls plugin).
                let deployment = shared
                    .ice()
                    .and_then(|o| o.facts)
                    .map(|f| f.deployment)
                    .unwrap_or_default();
                let next = offer_for(&cfg, &adv, port, &deployment);
                if shared
                    .ice()
                    .is_some_and(|cur| cur.candidates != next.candidates)
                {
                    tracing::warn!(
                        "ice_host_override {:?} now resolves differently here; new sessions get the new candidates",
                        cfg.ice_host_override
                    );
                    log_advertised_for(&cfg, &adv, port, &deployment);
                }
                shared.set_ice(next);
            }
            Ok(Err(e)) => tracing::warn!("RTCD would fail call joins now: {e}"),
            Err(e) => tracing::warn!("re-resolving the override failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::rtcd::{LocalAddr, PionRules};

    fn adv(toml: &str, locals: &[&str], rules: PionRules) -> (RtcdConfig, Advertised) {
        let cfg = RtcdConfig::from_toml_str(toml).unwrap();
        let l: Vec<LocalAddr> = locals
            .iter()
            .map(|s| LocalAddr {
                ip: s.parse().unwrap(),
                loopback: s.starts_with("127."),
            })
            .collect();
        let a = rtcd::compute_advertised(
            &cfg,
            &l,
            &|_, _| Err("no dns".into()),
            &|_| None,
            8443,
            8443,
            rules,
        )
        .unwrap();
        (cfg, a)
    }

    fn warnings(cfg: &RtcdConfig, a: &Advertised) -> Vec<String> {
        advertised_lines(cfg, a, 8443)
            .into_iter()
            .filter(|(w, _)| *w)
            .map(|(_, t)| t)
            .collect()
    }

    #[test]
    fn start_log_names_rules_and_filter_problems() {
        let (cfg, a) = adv("", &["127.0.0.1", "203.0.113.2"], PionRules::V4_0);
        let lines = advertised_lines(&cfg, &a, 8443);
        assert!(lines[0].1.contains("pion/ice v4.0 rules"), "{:?}", lines);
        assert!(warnings(&cfg, &a).is_empty());

        let (cfg, a) = adv(
            "[rtc]\nice_address_udp = \"0.0.0.0\"\nice_host_override = \"203.0.113.10\"",
            &["127.0.0.1", "172.31.1.2"],
            PionRules::V4_2,
        );
        let w = warnings(&cfg, &a);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("(ice_address_ignores_override)"), "{w:?}");

        let (cfg, a) = adv(
            "[rtc]\nice_address_tcp = \"0.0.0.0\"",
            &["127.0.0.1", "203.0.113.2"],
            PionRules::V4_2,
        );
        let lines = advertised_lines(&cfg, &a, 8443);
        assert!(
            lines[0].1.starts_with("RTCD would advertise: nothing"),
            "{lines:?}"
        );
        let w = warnings(&cfg, &a);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("(ice_no_udp_candidate)"), "{w:?}");
    }

    #[test]
    fn the_offer_carries_the_facts() {
        let (cfg, a) = adv(
            "[rtc]\nice_address_udp = \"0.0.0.0\"\nice_host_override = \"203.0.113.10\"",
            &["127.0.0.1", "172.31.1.2"],
            PionRules::V4_0,
        );
        let o = offer(&cfg, &a, 8443);
        let f = o.facts.unwrap();
        assert_eq!(f.rules, PionRules::V4_0);
        assert_eq!(f.filter_ignores, Some(rtcd::FilterIgnores::Override));
        assert_eq!(f.ice_address_udp, "0.0.0.0");
    }

    /// rtcd sfu.go:311-319: the port override leads users to RTCD's own port. The probe on a
    /// neighbouring port (RTCD running) tests the addresses on its own port instead; on RTCD's
    /// port (RTCD stopped, the docs' procedure) it advertises the override as RTCD does.
    #[test]
    fn port_override_with_probe_on_another_port_tests_the_probe_port() {
        let cfg = RtcdConfig::from_toml_str(
            "[rtc]\nice_host_override = \"203.0.113.10\"\nice_host_port_override = 30443",
        )
        .unwrap();
        let l: Vec<LocalAddr> = ["127.0.0.1", "172.31.1.2"]
            .iter()
            .map(|s| LocalAddr {
                ip: s.parse().unwrap(),
                loopback: s.starts_with("127."),
            })
            .collect();
        let at = |port: u16| {
            let mut a = rtcd::compute_advertised(
                &cfg,
                &l,
                &|_, _| Err("no dns".into()),
                &|_| None,
                port,
                port,
                PionRules::V4_2,
            )
            .unwrap();
            probe_port_for_port_override(&mut a, port);
            a.candidates
                .iter()
                .map(|c| (c.address.to_string(), c.port))
                .collect::<Vec<_>>()
        };
        // On RTCD's port: what RTCD advertises.
        assert!(at(8443).contains(&("203.0.113.10".to_string(), 30443)));
        // On 8444: the probe's port, never the override's.
        let b = at(8444);
        assert!(b.contains(&("203.0.113.10".to_string(), 8444)), "{b:?}");
        assert!(b.iter().all(|(_, p)| *p == 8444), "{b:?}");
    }

    /// Private host candidates with server-side TURN (rtcd sfu.go:231-252): a warning that
    /// names the relay, not "users cannot connect".
    #[test]
    fn private_addresses_with_server_side_turn_name_the_relay() {
        let (cfg, a) = adv(
            "[rtc]\nice_servers = [{urls = [\"turn:turn.example.com:3478\"]}]\nturn.static_auth_secret = \"s\"",
            &["127.0.0.1", "172.31.1.2"],
            PionRules::V4_2,
        );
        let w = warnings(&cfg, &a);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("turn:turn.example.com:3478"), "{w:?}");
        assert!(!w[0].contains("cannot connect"), "{w:?}");
    }

    /// The Calls plugin's settings, mapped as the plugin maps them, give the same candidates
    /// and a start log in the plugin's terms: System Console settings, MM_CALLS_* variables.
    #[test]
    fn plugin_start_log_names_the_system_console() {
        use probe_proto::calls::CallsSettings;
        let block = serde_json::json!({"iceserversconfigs": "", "udpserveraddress": ""});
        let cfg = CallsSettings::from_plugin_block(&block)
            .unwrap()
            .to_rtcd(2)
            .unwrap();
        let locals = [LocalAddr {
            ip: "172.31.1.2".parse().unwrap(),
            loopback: false,
        }];
        let a = rtcd::compute_advertised(
            &cfg,
            &locals,
            &|_, _| Err("no dns".into()),
            &|_| None,
            8443,
            8443,
            PionRules::V4_2,
        )
        .unwrap();
        let lines = plugin_lines(&cfg, &a, 8443);
        let text: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
        assert!(
            text[0].starts_with(
                "The Calls plugin's integrated RTC server would advertise: udp 172.31.1.2:8443"
            ),
            "{text:?}"
        );
        let warn: Vec<&str> = lines
            .iter()
            .filter(|(w, _)| *w)
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(warn.len(), 1, "{warn:?}");
        assert!(
            warn[0].contains(
                "System Console › Plugins › Calls › ICE and TURN › \"ICE Host Override\""
            ),
            "{warn:?}"
        );
        assert!(
            warn[0].contains("MM_CALLS_ICE_HOST_OVERRIDE=PUBLIC_IP"),
            "{warn:?}"
        );
        assert!(
            !warn[0].contains("ice_host_override") && !warn[0].contains("RTCD_RTC_"),
            "{warn:?}"
        );
        // The same facts in RTCD's terms are worded for RTCD.
        let rtcd = advertised_lines(&cfg, &a, 8443);
        assert!(
            rtcd.iter()
                .any(|(_, t)| t.contains("RTCD_RTC_ICEHOSTOVERRIDE")),
            "{rtcd:?}"
        );
    }
}
