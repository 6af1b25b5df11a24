//! `hairpin_fails`: the client is behind the same NAT as RTCD and dials RTCD's public address.
//!
//! The client's public address is what the probe server's STUN answer says; RTCD's is what it
//! advertises. Equal addresses, or the same IPv4 /24 (IPv6 /64), mean the client very likely
//! sits in RTCD's own network or its provider's block, so ICE to the advertised address only
//! works if the NAT loops packets back to itself (RFC 4787 REQ-9, "hairpinning"), which many do
//! not. The ICE checks to that address say whether it does.

use crate::msg::Transport;
use crate::report::IceReport;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The client's public address is RTCD's advertised address.
    SameAddress,
    /// Same IPv4 /24 (or IPv6 /64).
    #[serde(rename = "same_24")]
    SameNetwork,
}

/// How the client's public address relates to an advertised one.
pub fn relation(client: IpAddr, rtcd: IpAddr) -> Option<Relation> {
    let (c, r) = (client.to_canonical(), rtcd.to_canonical());
    if c == r {
        return Some(Relation::SameAddress);
    }
    let same = match (c, r) {
        (IpAddr::V4(c), IpAddr::V4(r)) => c.octets()[..3] == r.octets()[..3],
        (IpAddr::V6(c), IpAddr::V6(r)) => c.octets()[..8] == r.octets()[..8],
        _ => false,
    };
    same.then_some(Relation::SameNetwork)
}

/// The client and RTCD share a public address or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hairpin {
    pub client_public: IpAddr,
    /// The advertised candidate it matches.
    pub rtcd: SocketAddr,
    pub protocol: Transport,
    pub relation: Relation,
    /// ICE checks to that candidate came back; `None` when none was sent.
    pub ok: Option<bool>,
}

/// The public advertised candidate that shares the client's public address or network, with
/// what the ICE checks to it found: checked before unchecked, UDP before TCP, failing before
/// answering.
pub fn judge(client_public: Option<SocketAddr>, ice: &IceReport) -> Option<Hairpin> {
    let client = client_public?.ip();
    let mut found: Vec<Hairpin> = ice
        .advertised
        .iter()
        .filter(|c| !c.private)
        .filter_map(|c| {
            let ip: IpAddr = c.address.parse().ok()?;
            let relation = relation(client, ip)?;
            let rtcd = SocketAddr::new(ip, c.port);
            let checks: Vec<bool> = ice
                .pairs
                .iter()
                .filter(|p| p.protocol == c.protocol && p.remote.parse() == Ok(rtcd))
                .map(|p| p.ok)
                .collect();
            Some(Hairpin {
                client_public: client,
                rtcd,
                protocol: c.protocol,
                relation,
                ok: (!checks.is_empty()).then(|| checks.contains(&true)),
            })
        })
        .collect();
    // Media goes over UDP when it can; ICE-TCP only matters where UDP is not checked.
    found.sort_by_key(|h| {
        (
            h.ok.is_none(),
            h.protocol != Transport::Udp,
            h.ok != Some(false),
        )
    });
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AdvertisedCandidate, PairResult};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn relations() {
        assert_eq!(
            relation(ip("203.0.113.10"), ip("203.0.113.10")),
            Some(Relation::SameAddress)
        );
        assert_eq!(
            relation(ip("203.0.113.7"), ip("203.0.113.10")),
            Some(Relation::SameNetwork)
        );
        assert_eq!(relation(ip("203.0.114.10"), ip("203.0.113.10")), None);
        assert_eq!(
            relation(ip("::ffff:203.0.113.10"), ip("203.0.113.10")),
            Some(Relation::SameAddress)
        );
        assert_eq!(
            relation(ip("2001:db8:1:2::1"), ip("2001:db8:1:2::99")),
            Some(Relation::SameNetwork)
        );
        assert_eq!(
            relation(ip("2001:db8:1:3::1"), ip("2001:db8:1:2::99")),
            None
        );
        assert_eq!(relation(ip("2001:db8::1"), ip("203.0.113.10")), None);
    }

    fn ice(cands: &[(&str, bool)], pairs: &[(&str, bool)]) -> IceReport {
        let advertised = cands
            .iter()
            .map(|(a, private)| {
                let sa: SocketAddr = a.parse().unwrap();
                // Built from JSON so fields added to the report need no change here.
                let c: AdvertisedCandidate = serde_json::from_value(serde_json::json!({
                    "address": sa.ip().to_string(), "port": sa.port(), "protocol": "udp",
                    "private": private, "source": "override",
                }))
                .unwrap();
                c
            })
            .collect();
        let pairs = pairs
            .iter()
            .map(|(r, ok)| PairResult {
                remote: r.to_string(),
                protocol: Transport::Udp,
                ok: *ok,
                rtt_ms: None,
                detail: None,
            })
            .collect();
        IceReport {
            advertised,
            pairs,
            ..IceReport::default()
        }
    }

    fn me(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn judged_from_the_checks_to_the_matching_candidate() {
        let r = ice(
            &[("203.0.113.10:8443", false)],
            &[("203.0.113.10:8443", false)],
        );
        let h = judge(me("203.0.113.10:40000"), &r).expect("same NAT");
        assert_eq!((h.relation, h.ok), (Relation::SameAddress, Some(false)));
        assert_eq!(h.rtcd, "203.0.113.10:8443".parse().unwrap());
        let ok = ice(
            &[("203.0.113.10:8443", false)],
            &[("203.0.113.10:8443", true)],
        );
        let h = judge(me("203.0.113.77:40000"), &ok).expect("same /24");
        assert_eq!((h.relation, h.ok), (Relation::SameNetwork, Some(true)));
        // No check sent: related, result unknown.
        let unchecked = ice(&[("203.0.113.10:8443", false)], &[]);
        assert_eq!(judge(me("203.0.113.10:1"), &unchecked).unwrap().ok, None);
        // A failing matching candidate wins over a working one.
        let two = ice(
            &[("203.0.113.11:8443", false), ("203.0.113.10:8443", false)],
            &[("203.0.113.11:8443", true), ("203.0.113.10:8443", false)],
        );
        assert_eq!(judge(me("203.0.113.10:1"), &two).unwrap().ok, Some(false));
    }

    #[test]
    fn udp_decides_over_tcp() {
        let mut r = ice(
            &[("203.0.113.10:8443", false)],
            &[("203.0.113.10:8443", true)],
        );
        let mut tcp = r.advertised[0].clone();
        tcp.protocol = Transport::Tcp;
        r.advertised.push(tcp);
        r.pairs.push(PairResult {
            protocol: Transport::Tcp,
            ok: false,
            ..r.pairs[0].clone()
        });
        let h = judge(me("203.0.113.10:1"), &r).unwrap();
        assert_eq!((h.protocol, h.ok), (Transport::Udp, Some(true)));
        // Without a UDP check, the TCP one is what is known.
        r.pairs.remove(0);
        let h = judge(me("203.0.113.10:1"), &r).unwrap();
        assert_eq!((h.protocol, h.ok), (Transport::Tcp, Some(false)));
    }

    #[test]
    fn unrelated_or_private_is_not_a_hairpin() {
        let r = ice(
            &[("203.0.113.10:8443", false)],
            &[("203.0.113.10:8443", false)],
        );
        assert_eq!(judge(me("198.51.100.2:40000"), &r), None);
        assert_eq!(judge(None, &r), None);
        let private = ice(&[("172.31.1.2:8443", true)], &[("172.31.1.2:8443", false)]);
        assert_eq!(judge(me("172.31.1.9:40000"), &private), None);
    }
}
