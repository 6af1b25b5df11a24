//! The findings of the path checks, with their measurements attached (`findings[].path`).

use super::cut::Cut;
use super::hairpin::{Hairpin, Relation};
use super::quiet::QuietOutcome;
use super::{secs, PathFacts};
use crate::catalog::FindingId;
use crate::report::{Finding, Severity};
use std::net::SocketAddr;

/// "after 14.8 s the network stopped passing UDP 8443 upstream".
/// `counters`: the server's final counters came; without them a server that died looks the
/// same from here, and the summary says so.
pub fn cut(transport: &str, port: u16, c: &Cut, run_us: u64, counters: bool) -> Finding {
    let proto = transport.to_uppercase();
    let who = if counters {
        "the network"
    } else {
        "the network (or the probe server: its counters did not come either)"
    };
    let facts = PathFacts {
        transport: transport.into(),
        run_s: Some(secs(run_us)),
        cut_after_s: Some(secs(c.after_us)),
        cut_direction: Some(c.direction),
        unanswered_after_cut: Some(c.unanswered),
        loss_before_cut_pct: Some((c.loss_before_pct * 1000.0).round() / 1000.0),
        ..PathFacts::default()
    };
    Finding::new(
        FindingId::PathCutAfter,
        Severity::Error,
        format!(
            "After {:.1} s {who} stopped passing {proto} {port} {} and never recovered: none of the \
             {} packets sent in the remaining {:.1} s came back, where {:.1} % were lost before (not \
             random loss). A call on this path connects and then drops.",
            c.after_us as f64 / 1e6,
            c.direction.words(),
            c.unanswered,
            run_us.saturating_sub(c.after_us) as f64 / 1e6,
            c.loss_before_pct,
        ),
        format!(
            "Find the firewall, IDS or NAT on this network that cuts long {proto} flows (a flow time or \
             volume limit, a UDP flood or P2P rule) and exempt RTCD's port {port}; run again with \
             --duration 60 to confirm the time it allows."
        ),
    )
    .with_path(facts)
}

/// The quiet-period test's finding: `udp_mapping_short` when the mapping did not survive,
/// `None` when it held (the caller reports that in `path_held`).
pub fn quiet(
    outcome: QuietOutcome,
    quiet_us: u64,
    before: Option<SocketAddr>,
    after: Option<SocketAddr>,
) -> Option<Finding> {
    let q = quiet_us as f64 / 1e6;
    let what = match outcome {
        QuietOutcome::Held => return None,
        QuietOutcome::Remapped => format!(
            "after {q:.0} s with nothing sent, the server saw this client at {} instead of {}: the NAT \
             forgot the UDP mapping and made a new one. RTCD's ICE agent keeps sending to the old \
             mapping, which the NAT now drops, and discards media from the new address until ICE learns \
             it, so the call stalls or drops",
            after.map_or_else(|| "?".into(), |a| a.to_string()),
            before.map_or_else(|| "?".into(), |a| a.to_string()),
        ),
        QuietOutcome::NoReplies => format!(
            "replies flowed before {q:.0} s with nothing sent and none came back after it: the NAT or \
             firewall forgot the flow and does not let it start again"
        ),
    };
    let facts = PathFacts {
        transport: "udp".into(),
        quiet_s: Some(secs(quiet_us)),
        quiet_outcome: Some(outcome),
        mapped_before: before.map(|a| a.to_string()),
        mapped_after: after.map(|a| a.to_string()),
        ..PathFacts::default()
    };
    Some(
        Finding::new(
            FindingId::UdpMappingShort,
            Severity::Warning,
            format!(
                "UDP mappings on this network last less than {q:.0} s: {what}. A call survives this only while \
                 packets flow at least that often both ways (RTCD's ICE keepalives every 2 s, browsers' \
                 consent checks every ~5 s per RFC 7675); a longer gap in both directions (a suspended \
                 laptop, a Wi-Fi or uplink stall) drops it."
            ),
            "Raise the UDP mapping / session timeout of this network's NAT or firewall to at least 2 \
             minutes (RFC 4787 REQ-5; on Linux net.netfilter.nf_conntrack_udp_timeout and \
             nf_conntrack_udp_timeout_stream), or exempt RTCD's port from the short timeout.",
        )
        .with_path(facts),
    )
}

/// The long-run checks found nothing wrong: one info finding with what they covered.
pub fn held(transport: &str, run_us: u64, quiet: Option<(u64, Option<SocketAddr>)>) -> Finding {
    let proto = transport.to_uppercase();
    let mut summary = format!(
        "{proto} passed media-shaped traffic both ways for the whole {:.1} s run.",
        run_us as f64 / 1e6
    );
    let mut facts = PathFacts {
        transport: transport.into(),
        run_s: Some(secs(run_us)),
        ..PathFacts::default()
    };
    if let Some((q, mapped)) = quiet {
        summary.push_str(&format!(
            " After {:.0} s with nothing sent, replies resumed from the same public address: UDP \
             mappings here last at least that long.",
            q as f64 / 1e6
        ));
        facts.quiet_s = Some(secs(q));
        facts.quiet_outcome = Some(QuietOutcome::Held);
        facts.mapped_before = mapped.map(|a| a.to_string());
        facts.mapped_after = facts.mapped_before.clone();
    }
    Finding::new(
        FindingId::PathHeld,
        Severity::Info,
        summary,
        "Nothing to fix.",
    )
    .with_path(facts)
}

/// The client shares RTCD's public address or network: `hairpin_fails` when the checks to it
/// do not come back, `same_nat_as_rtcd` when they do, nothing when none was sent.
pub fn hairpin(h: &Hairpin) -> Option<Finding> {
    let ok = h.ok?;
    let rel = match h.relation {
        Relation::SameAddress => format!("is RTCD's advertised address {}", h.rtcd),
        Relation::SameNetwork => {
            format!("is in the same /24 as RTCD's advertised address {}", h.rtcd)
        }
    };
    let facts = PathFacts {
        transport: format!("{:?}", h.protocol).to_lowercase(),
        client_public: Some(h.client_public.to_string()),
        rtcd_advertised: Some(h.rtcd.to_string()),
        same_nat: Some(h.relation),
        hairpin_ok: Some(ok),
        ..PathFacts::default()
    };
    let f = if ok {
        let why = match h.relation {
            Relation::SameAddress => {
                "it is behind the same NAT as RTCD, and ICE checks to that address come \
                 back, so the NAT loops packets back (hairpinning works)"
            }
            Relation::SameNetwork => {
                "the same site or provider block, and ICE checks to that address come \
                 back, so any NAT between the two loops packets back"
            }
        };
        Finding::new(
            FindingId::SameNatAsRtcd,
            Severity::Info,
            format!(
                "This client's public address {} {rel}: {why}.",
                h.client_public
            ),
            "Nothing to fix; if a NAT is shared, keep its NAT loopback enabled.",
        )
    } else {
        Finding::new(
            FindingId::HairpinFails,
            Severity::Error,
            format!(
                "This client's public address {} {rel}: it is {}behind the same NAT as RTCD, and ICE checks \
                 to {} get no answer because the NAT does not loop packets back to itself (no \
                 hairpinning, RFC 4787 REQ-9). Users on this network cannot join calls; outside users can.",
                h.client_public,
                if h.relation == Relation::SameAddress { "" } else { "likely " },
                h.rtcd
            ),
            format!(
                "Enable NAT loopback (hairpin NAT) for {} on the router; or, if RTCD's host has a second, \
                 inside-facing address, set ice_host_override to EXTERNAL/LOCAL pairs that map only the \
                 outward-facing address (the inside one stays advertised as is and inside users reach it); \
                 or give users a TURN server outside this NAT. Split-horizon DNS does not help: RTCD \
                 resolves a hostname override on its own host and advertises that one address to everyone.",
                h.rtcd
            ),
        )
    };
    Some(f.with_path(facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Transport;

    fn a(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn a_cut_without_counters_does_not_blame_the_network_alone() {
        let c = Cut {
            after_us: 14_800_000,
            direction: crate::path::Direction::Unknown,
            unanswered: 760,
            loss_before_pct: 0.0,
        };
        let with = cut("udp", 8443, &c, 30_000_000, true);
        assert!(
            with.summary
                .starts_with("After 14.8 s the network stopped passing UDP 8443"),
            "{}",
            with.summary
        );
        let without = cut("udp", 8443, &c, 30_000_000, false);
        assert!(
            without.summary.contains("(or the probe server"),
            "{}",
            without.summary
        );
    }

    #[test]
    fn quiet_findings_carry_the_addresses() {
        let (b, n) = (a("203.0.113.1:4000"), a("203.0.113.1:5000"));
        assert!(quiet(QuietOutcome::Held, 20_000_000, b, b).is_none());
        let f = quiet(QuietOutcome::Remapped, 20_000_000, b, n).expect("a finding");
        assert!(f.is(FindingId::UdpMappingShort) && f.severity == Severity::Warning);
        assert!(
            f.summary
                .contains("203.0.113.1:5000 instead of 203.0.113.1:4000"),
            "{}",
            f.summary
        );
        let p = f.path.expect("facts");
        assert_eq!(
            (p.quiet_s, p.quiet_outcome),
            (Some(20.0), Some(QuietOutcome::Remapped))
        );
        let f = quiet(QuietOutcome::NoReplies, 20_000_000, b, None).expect("a finding");
        assert!(f.summary.contains("none came back"), "{}", f.summary);
    }

    #[test]
    fn hairpin_findings_by_outcome_and_relation() {
        let h = Hairpin {
            client_public: "203.0.113.7".parse().unwrap(),
            rtcd: "203.0.113.10:8443".parse().unwrap(),
            protocol: Transport::Udp,
            relation: Relation::SameNetwork,
            ok: None,
        };
        assert!(hairpin(&h).is_none(), "no check, no claim");
        let fails = hairpin(&Hairpin {
            ok: Some(false),
            ..h
        })
        .unwrap();
        assert!(fails.is(FindingId::HairpinFails) && fails.severity == Severity::Error);
        assert!(
            fails.summary.contains("likely behind the same NAT"),
            "{}",
            fails.summary
        );
        let same = Hairpin {
            ok: Some(false),
            relation: Relation::SameAddress,
            ..h
        };
        assert!(!hairpin(&same).unwrap().summary.contains("likely"));
        let works = hairpin(&Hairpin {
            ok: Some(true),
            ..h
        })
        .unwrap();
        assert!(works.is(FindingId::SameNatAsRtcd) && works.severity == Severity::Info);
        assert_eq!(works.path.unwrap().hairpin_ok, Some(true));
    }
}
