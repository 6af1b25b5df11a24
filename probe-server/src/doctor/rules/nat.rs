//! `rtcd_nat`: how the NAT in front of RTCD maps its ICE port, from the STUN answers the
//! doctor got (`doctor::nat`). RTCD with no ice_host_override advertises the STUN-found IP
//! with its *local* port (rtcd v1.2.6 service/rtc/stun.go:37 keeps only the IP;
//! utils.go:122-130 pairs it with the local IP; sfu.go:117-123 maps host candidates; only
//! ice_host_port_override changes the port, sfu.go:311-319 with utils.go:139-144). So that
//! candidate is right when the NAT keeps the port and maps it the same way for every peer,
//! or when the router forwards public UDP ice_port to this host, which the doctor cannot see
//! from inside: hence warnings that name the forward, never errors. No answer is "unknown": a
//! check with no verdict, never a finding.

use probe_proto::calls::env_var;
use probe_proto::calls::wording::{console, Terms};
use probe_proto::catalog::FindingId;
use probe_proto::report::Severity;
use std::net::SocketAddr;

use super::Judged;
use crate::doctor::facts::{NatFacts, NatRun, NatSource};
use crate::doctor::report::Status;

pub const CHECK: &str = "rtcd_nat";

/// The check, and the findings where a verdict is possible.
pub fn rtcd_nat(facts: &NatFacts, terms: Terms, out: &mut Judged) {
    let run = match facts {
        NatFacts::NotRun { why } => return out.skipped(CHECK, why),
        NatFacts::Late => return out.late(CHECK),
        NatFacts::Ran(run) => run,
    };
    let mut parts = Vec::new();
    let mut status = Status::Skipped;
    for src in &run.sources {
        let (text, st) = one_source(run, src, terms, out);
        parts.push(text);
        status = worse(status, st);
    }
    let detail = if status == Status::Skipped {
        format!("unknown: {}", parts.join("; "))
    } else {
        parts.join("; ")
    };
    out.check(CHECK, status, detail);
}

/// Fail > Warn > Pass > Skipped (a verdict on one address beats "unknown" on another).
fn worse(a: Status, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Skipped => 0,
        Status::Pass => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// What the answers to one local address say: its part of the detail, its status, and its
/// findings (added to `out`).
fn one_source(run: &NatRun, src: &NatSource, terms: Terms, out: &mut Judged) -> (String, Status) {
    let Some(port) = src.port else {
        let e = src.error.as_deref().unwrap_or("not bound");
        return (format!("from {}: {e}", src.local), Status::Skipped);
    };
    let from = SocketAddr::new(src.local, port);
    let head = if src.ice_port_taken {
        format!(
            "from {from} (UDP {} of this address is in use, by {} while it runs; another port of the same address, so the \
             port result is for port {port})",
            run.ice_port,
            terms.server()
        )
    } else {
        format!("from {from} ({} ICE port)", terms.server_s())
    };
    let answers: Vec<(usize, SocketAddr)> = src
        .answers
        .iter()
        .filter_map(|a| Some((a.server, a.mapped?)))
        .collect();
    let mut text = format!("{head}: {}", listing(run, src));
    // RTCD's own server first: its answer is the one RTCD used; another stands in for it.
    let reference = answers
        .iter()
        .find(|(i, _)| run.servers[*i].rtcd_s)
        .or(answers.first())
        .copied();
    let Some((ref_server, mapped)) = reference else {
        text.push_str(" — no STUN answer, so nothing is known about the NAT");
        return (text, Status::Skipped);
    };
    // The port question is asked of any server that saw another port (a NAT may keep the port
    // toward RTCD's STUN server only); the IP question is `mapping`'s.
    let (port_server, port_mapped) = if mapped.port() == port {
        answers
            .iter()
            .find(|(_, m)| m.port() != port)
            .copied()
            .unwrap_or((ref_server, mapped))
    } else {
        (ref_server, mapped)
    };
    let (port_text, port_status) = port_kept(run, src, port, port_server, port_mapped, terms, out);
    let (mapping_text, mapping_status) = mapping(run, src, port, &answers, terms, out);
    text.push_str(&format!(" — {port_text}; {mapping_text}"));
    (text, worse(port_status, mapping_status))
}

/// Each server's answer to one address, and the servers that could not be asked.
fn listing(run: &NatRun, src: &NatSource) -> String {
    let listed = src
        .answers
        .iter()
        .map(|a| {
            let label = &run.servers[a.server].label;
            match a.mapped {
                Some(m) => format!("{label} → {m}"),
                None => format!(
                    "{label} → no answer within {:.0} s",
                    run.deadline_ms as f64 / 1000.0
                ),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let unasked: Vec<String> = run
        .servers
        .iter()
        .filter(|s| s.addr.is_none())
        .map(|s| {
            format!(
                "{} not asked ({})",
                s.label,
                s.error.as_deref().unwrap_or("no address")
            )
        })
        .collect();
    let mut text = if listed.is_empty() {
        "no STUN server of this address family with an address".to_string()
    } else {
        listed
    };
    if !unasked.is_empty() {
        text.push_str(&format!(", {}", unasked.join(", ")));
    }
    text
}

/// Does the NAT keep the port? Never more than a warning: a NAT that randomises outbound
/// ports but forwards public UDP ice_port to this host (pfSense's default, many enterprise
/// firewalls) serves RTCD's candidate (STUN IP + local port) correctly, and the doctor cannot
/// see an inbound forward from inside. The product rule: a verdict that fires on a setup RTCD
/// serves correctly is a bug, so this says what must hold rather than that it is broken.
fn port_kept(
    run: &NatRun,
    src: &NatSource,
    port: u16,
    server: usize,
    mapped: SocketAddr,
    terms: Terms,
    out: &mut Judged,
) -> (String, Status) {
    if mapped.ip() == src.local && mapped.port() == port {
        return (
            "no NAT on this address (the server saw it unchanged)".into(),
            Status::Pass,
        );
    }
    if mapped.port() == port {
        return (format!("the NAT keeps port {port}"), Status::Pass);
    }
    if let Some(p) = run.port_override {
        return (
            format!(
                "the NAT changes port {port} to {}, but {} advertises port {p} ({}): a forward of public port {p}, not \
                 this mapping, must carry it",
                mapped.port(),
                terms.server(),
                terms.port_override_name()
            ),
            Status::Pass,
        );
    }
    let ice = run.ice_port;
    let label = &run.servers[server].label;
    let measured = if src.ice_port_taken {
        format!(
            "maps port {port} of {} (the doctor's; {} holds {ice}) to {mapped} when {label} asks, so it most likely \
             changes {ice} too",
            src.local,
            terms.server()
        )
    } else {
        format!("maps {}:{ice} to {mapped} when {label} asks", src.local)
    };
    let rerun = if src.ice_port_taken {
        format!(
            "; stop {} and run the doctor again to test port {ice} itself",
            terms.server()
        )
    } else {
        String::new()
    };
    out.finding(
        FindingId::RtcdNatChangesPort,
        Severity::Warning,
        format!(
            "the NAT in front of this host {measured}, so outbound packets do not keep the port: {} advertises {}:{ice} \
             (the STUN-found IP with its local port). {}; without that forward clients time out (\"timed out waiting \
             for rtc connection\"){rerun}",
            terms.server(),
            mapped.ip(),
            needs_forward(terms, &mapped.ip().to_string(), ice),
        ),
        fix_text(mapped, ice, terms),
    );
    (
        format!(
            "the NAT changes port {port} to {} (fine only with a forward of UDP {ice})",
            mapped.port()
        ),
        Status::Warn,
    )
}

/// What must hold for RTCD's STUN-derived candidate to work, which the doctor cannot see.
fn needs_forward(terms: Terms, ip: &str, ice: u16) -> String {
    let whose = terms.server_s();
    // Starts a sentence: "RTCD's" or "The RTC server's".
    let whose = whose[..1].to_uppercase() + &whose[1..];
    format!(
        "{whose} STUN-derived candidate reaches it only if the router forwards public UDP {ice} ({ip}:{ice}) to \
         this host; if it does, nothing to fix"
    )
}

/// Do two servers at different addresses see the same mapping?
fn mapping(
    run: &NatRun,
    src: &NatSource,
    port: u16,
    answers: &[(usize, SocketAddr)],
    terms: Terms,
    out: &mut Judged,
) -> (String, Status) {
    let mut distinct: Vec<(usize, SocketAddr)> = Vec::new();
    for a in answers {
        let server = run.servers[a.0].addr;
        if !distinct.iter().any(|d| run.servers[d.0].addr == server) {
            distinct.push(*a);
        }
    }
    if distinct.len() < 2 {
        return (
            "mapping per destination unknown: one server answered (add --stun-check-server HOST:PORT, e.g. a \
             probe-server elsewhere, or a second stun: URL)"
                .into(),
            Status::Pass,
        );
    }
    // RTCD's own server first (stable sort): its answer is the IP RTCD advertises.
    distinct.sort_by_key(|d| !run.servers[d.0].rtcd_s);
    let a = distinct[0];
    // Only the IP of a STUN answer is used (stun.go:37); a port-only difference is
    // `port_kept`'s question, and with a forward of the ICE port only the IP matters.
    let Some(b) = distinct[1..].iter().find(|d| d.1.ip() != a.1.ip()).copied() else {
        let text = match distinct[1..].iter().find(|d| d.1 != a.1) {
            Some(d) => format!(
                "the same public IP for {} servers (only the port differs: {} vs {})",
                distinct.len(),
                a.1,
                d.1
            ),
            None => format!("the same mapping for {} servers", distinct.len()),
        };
        return (text, Status::Pass);
    };
    let name = |i: usize| run.servers[i].label.clone();
    let addr = |i: usize| {
        run.servers[i]
            .addr
            .map_or("?".to_string(), |s| s.to_string())
    };
    // A warning, not an error (product rule: no verdict on a setup RTCD serves correctly): a
    // forward of UDP ice_port on the IP RTCD learnt carries clients' packets whatever the
    // NAT's outbound mapping, and the doctor cannot see a forward from inside.
    out.finding(
        FindingId::RtcdNatMappingVaries,
        Severity::Warning,
        format!(
            "the NAT in front of this host maps {}:{port} to {} toward {} ({}) but to {} toward {} ({}): its outbound \
             mapping depends on the destination, so the IP {} learnt from its STUN server ({}) is not the one \
             clients' packets from it meet. {}; without that forward clients time out",
            src.local,
            a.1,
            name(a.0),
            addr(a.0),
            b.1,
            name(b.0),
            addr(b.0),
            terms.server(),
            a.1.ip(),
            needs_forward(terms, &a.1.ip().to_string(), run.ice_port),
        ),
        fix_text(a.1, run.ice_port, terms),
    );
    (
        format!(
            "the public IP differs per destination ({} vs {}; fine only with a forward of UDP {})",
            a.1, b.1, run.ice_port
        ),
        Status::Warn,
    )
}

/// The exact settings: the public IP as the override, a forward of the ICE port, and the
/// port override for a forward from another public port.
fn fix_text(mapped: SocketAddr, ice: u16, terms: Terms) -> String {
    let port_line = if terms.is_plugin() {
        format!(
            "{} to PUBLIC_PORT (or `{}=PUBLIC_PORT`)",
            console("ICEHostPortOverride"),
            env_var("ICEHostPortOverride")
        )
    } else {
        "`ice_host_port_override = PUBLIC_PORT` in [rtc] (or `RTCD_RTC_ICEHOSTPORTOVERRIDE=PUBLIC_PORT`)".into()
    };
    format!(
        "if the router already forwards public UDP {ice} to this host, nothing to do; otherwise do not rely on STUN \
         through this NAT: set the public address users reach, here the one the NAT showed: {}; forward public UDP \
         {ice} (and TCP {ice}) on the router to this host's port {ice}, and if the forward comes from another public \
         port also set {port_line}; {}",
        terms.host_line(&mapped.ip().to_string()),
        terms.restart()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::facts::{NatAnswer, NatServer};
    use probe_proto::calls::Deployment;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn server(label: &str, addr: &str, rtcd_s: bool) -> NatServer {
        NatServer {
            label: label.into(),
            rtcd_s,
            from_flag: !rtcd_s,
            addr: Some(sa(addr)),
            error: None,
        }
    }

    /// Facts as recorded from 172.31.9.2 behind 203.0.113.10: RTCD's coturn on 203.0.113.2,
    /// a probe-server on 203.0.113.3 (`--stun-check-server`).
    fn run(
        port: u16,
        taken: bool,
        a: Option<&str>,
        b: Option<&str>,
        port_override: Option<u16>,
    ) -> NatFacts {
        NatFacts::Ran(NatRun {
            ice_port: 8443,
            port_override,
            deadline_ms: 2000,
            servers: vec![
                server("stun:203.0.113.2:3478", "203.0.113.2:3478", true),
                server(
                    "--stun-check-server 203.0.113.3:8443",
                    "203.0.113.3:8443",
                    false,
                ),
            ],
            sources: vec![NatSource {
                local: "172.31.9.2".parse().unwrap(),
                port: Some(port),
                error: None,
                ice_port_taken: taken,
                answers: vec![
                    NatAnswer {
                        server: 0,
                        mapped: a.map(sa),
                    },
                    NatAnswer {
                        server: 1,
                        mapped: b.map(sa),
                    },
                ],
            }],
        })
    }

    fn judge(f: &NatFacts) -> Judged {
        let mut out = Judged::default();
        rtcd_nat(f, Terms::of(&Deployment::default()), &mut out);
        out
    }

    fn ids(j: &Judged) -> Vec<(FindingId, Severity)> {
        j.findings
            .iter()
            .map(|f| (FindingId::parse(&f.id).unwrap(), f.severity))
            .collect()
    }

    #[test]
    fn randomised_port_on_the_ice_port_is_a_warning_naming_the_forward() {
        let f = run(
            8443,
            false,
            Some("203.0.113.10:40213"),
            Some("203.0.113.10:40213"),
            None,
        );
        let j = judge(&f);
        // A warning: with a forward of UDP 8443 (invisible from inside) RTCD works.
        assert_eq!(
            ids(&j),
            [(FindingId::RtcdNatChangesPort, Severity::Warning)]
        );
        let finding = &j.findings[0];
        assert!(
            finding.summary.contains(
                "RTCD's STUN-derived candidate reaches it only if the router forwards public UDP 8443 \
                 (203.0.113.10:8443) to this host; if it does, nothing to fix"
            ),
            "{}",
            finding.summary
        );
        assert!(
            finding.fix.starts_with(
                "if the router already forwards public UDP 8443 to this host, nothing to do"
            ),
            "{}",
            finding.fix
        );
        assert!(
            finding
                .summary
                .contains("maps 172.31.9.2:8443 to 203.0.113.10:40213"),
            "{}",
            finding.summary
        );
        assert!(
            finding.summary.contains("advertises 203.0.113.10:8443"),
            "{}",
            finding.summary
        );
        assert!(
            finding.fix.contains("ice_host_override = \"203.0.113.10\""),
            "{}",
            finding.fix
        );
        assert!(
            finding
                .fix
                .contains("RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.10"),
            "{}",
            finding.fix
        );
        assert!(
            finding
                .fix
                .contains("RTCD_RTC_ICEHOSTPORTOVERRIDE=PUBLIC_PORT"),
            "{}",
            finding.fix
        );
        assert_eq!(j.checks[0].status, Status::Warn);
        assert!(
            j.checks[0]
                .detail
                .contains("the same mapping for 2 servers"),
            "{}",
            j.checks[0].detail
        );
    }

    #[test]
    fn port_kept_and_same_mapping_passes() {
        let j = judge(&run(
            8443,
            false,
            Some("203.0.113.10:8443"),
            Some("203.0.113.10:8443"),
            None,
        ));
        assert!(j.findings.is_empty(), "{:?}", j.findings);
        assert_eq!(j.checks[0].status, Status::Pass);
        assert!(
            j.checks[0].detail.contains("the NAT keeps port 8443"),
            "{}",
            j.checks[0].detail
        );
    }

    #[test]
    fn another_port_when_rtcd_holds_it_is_a_warning_naming_the_port() {
        let j = judge(&run(41000, true, Some("203.0.113.10:52001"), None, None));
        assert_eq!(
            ids(&j),
            [(FindingId::RtcdNatChangesPort, Severity::Warning)]
        );
        let d = &j.checks[0].detail;
        assert!(
            d.contains("from 172.31.9.2:41000") && d.contains("port result is for port 41000"),
            "{d}"
        );
        assert!(
            d.contains("no answer within 2 s") && d.contains("mapping per destination unknown"),
            "{d}"
        );
        assert!(
            j.findings[0]
                .summary
                .contains("stop RTCD and run the doctor again"),
            "{}",
            j.findings[0].summary
        );
        // The same port kept on that port: a pass.
        let j = judge(&run(41000, true, Some("203.0.113.10:41000"), None, None));
        assert!(j.findings.is_empty());
        assert_eq!(j.checks[0].status, Status::Pass);
    }

    #[test]
    fn address_dependent_mapping_is_a_warning() {
        let j = judge(&run(
            8443,
            false,
            Some("203.0.113.10:8443"),
            Some("203.0.113.11:8443"),
            None,
        ));
        assert_eq!(
            ids(&j),
            [(FindingId::RtcdNatMappingVaries, Severity::Warning)]
        );
        let s = &j.findings[0].summary;
        assert!(
            s.contains("forwards public UDP 8443 (203.0.113.10:8443) to this host"),
            "{s}"
        );
        assert!(
            s.contains("to 203.0.113.10:8443 toward stun:203.0.113.2:3478")
                && s.contains("to 203.0.113.11:8443 toward --stun-check-server"),
            "{s}"
        );
        assert!(j.findings[0]
            .fix
            .contains("ice_host_override = \"203.0.113.10\""));
        assert_eq!(j.checks[0].status, Status::Warn);
        // RTCD's own server's answer is the reference, wherever it is in the list.
        let mut f = run(
            8443,
            false,
            Some("203.0.113.10:8443"),
            Some("203.0.113.11:8443"),
            None,
        );
        if let NatFacts::Ran(r) = &mut f {
            r.servers[0].rtcd_s = false;
            r.servers[1].rtcd_s = true;
        }
        let j = judge(&f);
        let s = &j.findings[0].summary;
        assert!(
            s.contains("the IP RTCD learnt from its STUN server (203.0.113.11)"),
            "{s}"
        );
    }

    #[test]
    fn a_port_only_difference_is_not_a_mapping_finding() {
        // Same IP toward both servers; RTCD's server sees 8443 kept, the other another port.
        let j = judge(&run(
            8443,
            false,
            Some("203.0.113.10:8443"),
            Some("203.0.113.10:40999"),
            None,
        ));
        // The port question is still asked, of the server that saw another port.
        assert_eq!(
            ids(&j),
            [(FindingId::RtcdNatChangesPort, Severity::Warning)]
        );
        assert!(
            j.findings[0]
                .summary
                .contains("to 203.0.113.10:40999 when --stun-check-server"),
            "{}",
            j.findings[0].summary
        );
        assert!(
            j.checks[0]
                .detail
                .contains("the same public IP for 2 servers (only the port differs"),
            "{}",
            j.checks[0].detail
        );
    }

    #[test]
    fn no_answer_is_unknown_never_a_finding() {
        let j = judge(&run(8443, false, None, None, None));
        assert!(j.findings.is_empty());
        assert_eq!(j.checks[0].status, Status::Skipped);
        assert!(
            j.checks[0].detail.starts_with("unknown: "),
            "{}",
            j.checks[0].detail
        );
        let j = judge(&NatFacts::NotRun {
            why: "--no-nat-check".into(),
        });
        assert!(j.findings.is_empty());
        assert_eq!(j.checks[0].status, Status::Skipped);
        let j = judge(&NatFacts::Late);
        assert!(j.findings.is_empty());
        assert_eq!(j.checks[0].status, Status::Skipped);
    }

    #[test]
    fn a_port_override_makes_the_port_change_harmless() {
        let j = judge(&run(
            8443,
            false,
            Some("203.0.113.10:40213"),
            Some("203.0.113.10:40999"),
            Some(30443),
        ));
        assert!(j.findings.is_empty(), "{:?}", j.findings);
        assert!(
            j.checks[0].detail.contains("advertises port 30443"),
            "{}",
            j.checks[0].detail
        );
        // Another public IP per destination still matters: the IP is STUN's.
        let j = judge(&run(
            8443,
            false,
            Some("203.0.113.10:8443"),
            Some("203.0.113.11:8443"),
            Some(30443),
        ));
        assert_eq!(
            ids(&j),
            [(FindingId::RtcdNatMappingVaries, Severity::Warning)]
        );
    }

    #[test]
    fn no_nat_passes() {
        let mut f = run(8443, false, Some("172.31.9.2:8443"), None, None);
        if let NatFacts::Ran(r) = &mut f {
            r.sources[0].answers.truncate(1);
        }
        let j = judge(&f);
        assert!(j.findings.is_empty());
        assert!(
            j.checks[0].detail.contains("no NAT"),
            "{}",
            j.checks[0].detail
        );
    }

    #[test]
    fn the_plugin_gets_its_system_console_settings() {
        let f = run(8443, false, Some("203.0.113.10:40213"), None, None);
        let mut out = Judged {
            plugin: true,
            ..Judged::default()
        };
        rtcd_nat(
            &f,
            Terms::of(&Deployment::CallsPlugin { rtcd_url: None }),
            &mut out,
        );
        let fix = &out.findings[0].fix;
        assert!(
            fix.contains("ICE Host Override") && fix.contains("MM_CALLS"),
            "{fix}"
        );
        assert!(!fix.contains("RTCD_RTC_"), "{fix}");
    }
}
