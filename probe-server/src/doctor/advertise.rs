//! What RTCD advertises to clients as its ICE host candidates, computed from its configuration
//! and this host's addresses (probe-proto's `compute_advertised`), with the IO it needs done
//! here: interface addresses, DNS for a hostname override, and RTCD's own STUN exchange.

use probe_proto::catalog::FindingId;
use probe_proto::report::{Finding, Severity};
use probe_proto::rtcd::{
    self, AdvertiseError, Advertised, FilterIgnores, OverrideForm, Protocol, RtcdConfig,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::report::{Check, Status};

pub struct Outcome {
    pub check: Check,
    pub findings: Vec<Finding>,
    /// The STUN exchange RTCD would run at start, run now: per local address the mapped
    /// address, or `None` where no answer came. Empty when no exchange ran.
    pub stun_now: HashMap<IpAddr, Option<IpAddr>>,
}

/// `where_` names the config for fix texts (a path, or "RTCD's config file").
pub fn check(cfg: &RtcdConfig, where_: &str, rules: rtcd::PionRules, deadline: Instant) -> Outcome {
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
                stun_now: HashMap::new(),
            }
        }
    };
    let port = |p: i64| u16::try_from(p).unwrap_or(0);
    let (result, stun) = crate::rtcd_io::advertise(
        cfg,
        &locals,
        port(cfg.ice_port_udp),
        port(cfg.ice_port_tcp),
        rules,
        deadline,
    );
    let mut out = judge(cfg, where_, rules, result, !stun.is_empty());
    out.stun_now = stun;
    out
}

/// Turns the computation into the check and its findings (pure, so it is unit-tested).
pub fn judge(
    cfg: &RtcdConfig,
    where_: &str,
    rules: rtcd::PionRules,
    result: Result<Advertised, AdvertiseError>,
    stun_tried: bool,
) -> Outcome {
    let adv = match result {
        Ok(a) => a,
        Err(e) => {
            let id = match e {
                AdvertiseError::Resolve { .. } => FindingId::IceHostOverrideHostname,
                _ => FindingId::RtcdConfigInvalid,
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
            let detail = if summary.contains(rules.label()) {
                summary.clone()
            } else {
                format!("{summary} — {}", rules.label())
            };
            return Outcome {
                check: Check::new("rtcd_config", Status::Fail, detail),
                findings: vec![Finding::new(id, Severity::Error, summary, fix)],
                stun_now: HashMap::new(),
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
    let filter = match &adv.narrowed {
        None => String::new(),
        Some(n) if n.is_empty() => {
            " — ice_address_* keeps none of this host's addresses".to_string()
        }
        Some(n) => format!(
            " — ice_address_* keeps {}",
            n.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let detail = format!(
        "advertises UDP {} — TCP {} — {form}{filter} — {}",
        or_none(list(Protocol::Udp)),
        or_none(list(Protocol::Tcp)),
        adv.rules.label()
    );
    let mut findings = Vec::new();
    let udp: Vec<_> = adv.udp().collect();
    let udp_ips: Vec<IpAddr> = udp.iter().map(|c| c.address).collect();
    if udp.is_empty() {
        // rtcd server.go:358-363 (initUDP over the narrowed IPs) or pion v4.0 dropping every
        // unpaired address (ice v4.0.10 gather.go:348-353).
        findings.push(rtcd::findings::no_udp_candidate(
            &cfg.ice_address_udp,
            &cfg.ice_address_tcp,
            matches!(adv.override_form, OverrideForm::Pairs(_)),
            Some(adv.rules),
            where_,
        ));
    }
    // rtcd utils.go:84-87: with no narrowed local IP the override and STUN give no pairs. It
    // matters when the address they would give is not advertised anyway.
    let ignored = adv.filter_ignores.filter(|ig| match ig {
        FilterIgnores::Override => match &adv.override_form {
            OverrideForm::Ip(ip) | OverrideForm::Hostname { resolved: ip, .. } => {
                !udp_ips.contains(ip)
            }
            _ => true,
        },
        FilterIgnores::Stun => udp.iter().all(|c| c.private),
    });
    if let Some(ig) = ignored {
        findings.push(rtcd::findings::address_ignores_override(
            ig,
            cfg.ice_host_override.trim(),
            &cfg.ice_address_udp,
            &cfg.ice_address_tcp,
            &udp_ips,
            where_,
            Severity::Error,
        ));
    }
    // Its fix (set ice_host_override) would not help while the filter drops the override.
    let all_private = !udp.is_empty() && udp.iter().all(|c| c.private) && ignored.is_none();
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
            FindingId::RtcdAdvertisesPrivate,
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
            FindingId::IceHostOverrideHostname,
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
        stun_now: HashMap::new(),
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

fn resolved_private(ip: &IpAddr) -> bool {
    rtcd::is_private(*ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::rtcd::LocalAddr;

    fn run(toml: &str, locals: &[&str], dns: &[(&str, &str)]) -> Outcome {
        run_with(toml, locals, dns, rtcd::PionRules::default())
    }

    fn run_with(
        toml: &str,
        locals: &[&str],
        dns: &[(&str, &str)],
        rules: rtcd::PionRules,
    ) -> Outcome {
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
        let r = rtcd::compute_advertised(&cfg, &locals, &resolve, &|_| None, 8443, 8443, rules);
        judge(&cfg, "/etc/rtcd.toml", rules, r, false)
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

    /// rtcd server.go:109-122 + utils.go:84-87: "0.0.0.0" keeps no local IP, the override is
    /// dropped; the private-address rule would give the wrong fix, so only this one is raised.
    #[test]
    fn unspecified_ice_address_ignores_the_override() {
        let toml = "[rtc]\nice_address_udp = \"0.0.0.0\"\nice_host_override = \"203.0.113.10\"\n";
        let o = run(toml, &["127.0.0.1", "172.31.1.2"], &[]);
        assert_eq!(ids(&o), vec!["ice_address_ignores_override"]);
        assert_eq!(o.findings[0].severity, Severity::Error);
        assert!(
            o.findings[0]
                .summary
                .contains("ice_address_udp = \"0.0.0.0\""),
            "{}",
            o.findings[0].summary
        );
        assert!(
            o.findings[0].summary.contains("203.0.113.10"),
            "{}",
            o.findings[0].summary
        );
        assert!(
            o.check
                .detail
                .contains("keeps none of this host's addresses"),
            "{}",
            o.check.detail
        );
        assert_eq!(o.check.status, Status::Fail);
        // The override equal to an advertised local address: nothing is lost, nothing raised.
        let toml = "[rtc]\nice_address_udp = \"0.0.0.0\"\nice_host_override = \"203.0.113.2\"\n";
        let o = run(toml, &["127.0.0.1", "203.0.113.2"], &[]);
        assert!(o.findings.is_empty(), "{:?}", ids(&o));
        // Listing the host's own address keeps the override: no finding.
        let toml =
            "[rtc]\nice_address_udp = \"172.31.1.2\"\nice_host_override = \"203.0.113.10\"\n";
        let o = run(toml, &["127.0.0.1", "172.31.1.2"], &[]);
        assert!(o.findings.is_empty(), "{:?}", ids(&o));
    }

    /// An empty UDP list never passes: ice_address_tcp = "0.0.0.0" alone leaves RTCD no UDP
    /// listener (rtcd server.go:358-363), even on a host with a public address.
    #[test]
    fn no_udp_candidate_is_an_error() {
        let o = run(
            "[rtc]\nice_address_tcp = \"0.0.0.0\"\n",
            &["127.0.0.1", "203.0.113.2"],
            &[],
        );
        assert_eq!(ids(&o), vec!["ice_no_udp_candidate"]);
        assert!(
            o.findings[0]
                .summary
                .contains("ice_address_tcp = \"0.0.0.0\""),
            "{}",
            o.findings[0].summary
        );
        assert_eq!(o.check.status, Status::Fail);
        assert!(o.check.detail.contains("UDP none"), "{}", o.check.detail);
        // pion/ice 4.0 drops unpaired addresses; 4.2 maps them.
        let toml = "[rtc]\nice_host_override = \"203.0.113.10/10.9.9.9\"\n";
        let o = run_with(
            toml,
            &["127.0.0.1", "172.31.1.2"],
            &[],
            rtcd::PionRules::V4_0,
        );
        assert_eq!(ids(&o), vec!["ice_no_udp_candidate"]);
        assert!(
            o.findings[0].summary.contains("pion/ice v4.0"),
            "{}",
            o.findings[0].summary
        );
        let o = run_with(
            toml,
            &["127.0.0.1", "172.31.1.2"],
            &[],
            rtcd::PionRules::V4_2,
        );
        assert!(o.findings.is_empty(), "{:?}", ids(&o));
    }

    #[test]
    fn detail_names_the_rules() {
        let o = run_with("", &["203.0.113.2"], &[], rtcd::PionRules::V4_0);
        assert!(
            o.check.detail.contains("pion/ice v4.0 rules"),
            "{}",
            o.check.detail
        );
        let o = run("", &["203.0.113.2"], &[]);
        assert!(
            o.check.detail.contains("pion/ice v4.2 rules"),
            "{}",
            o.check.detail
        );
        // A value only 4.0 refuses: the error names the rules too.
        let toml = "[rtc]\nice_host_override = \"203.0.113.10/172.31.1.2, 127.0.0.1/127.0.0.1\"\n";
        let o = run_with(
            toml,
            &["127.0.0.1", "172.31.1.2"],
            &[],
            rtcd::PionRules::V4_0,
        );
        assert_eq!(ids(&o), vec!["rtcd_config_invalid"]);
        assert!(
            o.check.detail.contains("pion/ice v4.0"),
            "{}",
            o.check.detail
        );
        let o = run_with(
            toml,
            &["127.0.0.1", "172.31.1.2"],
            &[],
            rtcd::PionRules::V4_2,
        );
        assert!(o.findings.is_empty(), "{:?}", ids(&o));
    }
}
