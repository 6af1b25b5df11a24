//! nftables scripts.
//!
//! Scenario rules live in `table inet probe_test` in each namespace, in
//! filter base chains `input`, `output` and `forward` (priority 0, policy
//! accept).  The NAT topology's own rules live in a separate
//! `table inet probe_nat`, so scenario rules never disturb the NAT.
//! Everything is applied with `ip netns exec NS nft -f -` (atomic per call).

use std::net::Ipv4Addr;

use crate::netns::Netns;
use crate::topology::{NatConfig, Proto};

/// Table holding scenario filter rules.
pub const TABLE: &str = "probe_test";
/// Table holding the NAT topology's rules.
pub const NAT_TABLE: &str = "probe_nat";

/// A filter chain of `table inet probe_test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// Packets to this namespace.
    Input,
    /// Packets from this namespace.
    Output,
    /// Packets routed through this namespace (the router).
    Forward,
}

impl Chain {
    /// nft chain / hook name.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Input => "input",
            Chain::Output => "output",
            Chain::Forward => "forward",
        }
    }
}

/// Script that creates the table/chain if needed and appends `rules`
/// (each one nft rule statement on one line, e.g.
/// `ip daddr 203.0.113.2 udp dport 8443 drop`).
pub fn filter_script<S: AsRef<str>>(chain: Chain, rules: &[S]) -> String {
    let c = chain.name();
    let mut s = format!(
        "add table inet {TABLE}\n\
         add chain inet {TABLE} {c} {{ type filter hook {c} priority 0; policy accept; }}\n"
    );
    for r in rules {
        let r = r.as_ref().trim();
        assert!(
            !r.contains('\n') && !r.contains('\r'),
            "an nft rule must be one line: {r:?}"
        );
        if r.is_empty() {
            continue;
        }
        s.push_str(&format!("add rule inet {TABLE} {c} {r}\n"));
    }
    s
}

/// Appends `rules` to `chain` of `table inet probe_test` in `ns`.
pub fn add_rules<S: AsRef<str>>(ns: &Netns, chain: Chain, rules: &[S]) {
    if rules.iter().all(|r| r.as_ref().trim().is_empty()) {
        return;
    }
    ns.nft(&filter_script(chain, rules));
}

/// The router's NAT script.
///
/// - DNAT: packets arriving on `client_if` for `cfg.public_ip` go to
///   `server_ip` — each [`crate::PortMap`] first (public port → private
///   port), then, if `cfg.forward_all`, every other port unchanged.
/// - SNAT: the private net's traffic leaving on `client_if`, and its traffic
///   to the router's own public addresses (e.g. a STUN server on
///   203.0.113.1), appears to come from `cfg.public_ip`.
/// - Blackhole: packets from `client_if` to the private net are dropped
///   unless they were DNATed or answer a connection the private side
///   opened (the internet does not route 172.31.0.0/16).
///
/// A service in the router ns must bind 203.0.113.1 (not 0.0.0.0): the
/// SNATed server appears as 203.0.113.10, a local address, so an unbound
/// socket answers from 203.0.113.10, misses the conntrack entry and the
/// reply never reaches the server.
pub fn nat_script(
    cfg: &NatConfig,
    client_if: &str,
    server_if: &str,
    private_net: &str,
    server_ip: Ipv4Addr,
) -> String {
    let t = NAT_TABLE;
    let pubip = cfg.public_ip;
    let mut s = format!(
        "add table inet {t}\n\
         add chain inet {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}\n\
         add chain inet {t} input {{ type nat hook input priority 100; policy accept; }}\n\
         add chain inet {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}\n\
         add chain inet {t} forward {{ type filter hook forward priority -10; policy accept; }}\n"
    );
    for m in &cfg.maps {
        let protos: &[&str] = match m.proto {
            Proto::Udp => &["udp"],
            Proto::Tcp => &["tcp"],
            Proto::Both => &["udp", "tcp"],
        };
        for p in protos {
            s.push_str(&format!(
                "add rule inet {t} prerouting iifname \"{client_if}\" ip daddr {pubip} {p} dport {} dnat ip to {server_ip}:{}\n",
                m.public, m.private
            ));
        }
    }
    if cfg.forward_all {
        s.push_str(&format!(
            "add rule inet {t} prerouting iifname \"{client_if}\" ip daddr {pubip} dnat ip to {server_ip}\n"
        ));
    }
    s.push_str(&format!(
        "add rule inet {t} postrouting oifname \"{client_if}\" ip saddr {private_net} snat ip to {pubip}\n\
         add rule inet {t} input iifname \"{server_if}\" ip saddr {private_net} ip daddr != {private_net} snat ip to {pubip}\n\
         add rule inet {t} forward iifname \"{client_if}\" ip daddr {private_net} ct status dnat accept\n\
         add rule inet {t} forward iifname \"{client_if}\" ip daddr {private_net} ct direction reply accept\n\
         add rule inet {t} forward iifname \"{client_if}\" ip daddr {private_net} drop\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_script_shape() {
        let s = filter_script(
            Chain::Forward,
            &["ip daddr 203.0.113.2 udp dport 8443 drop", " "],
        );
        assert_eq!(
            s,
            "add table inet probe_test\n\
             add chain inet probe_test forward { type filter hook forward priority 0; policy accept; }\n\
             add rule inet probe_test forward ip daddr 203.0.113.2 udp dport 8443 drop\n"
        );
    }

    #[test]
    #[should_panic(expected = "one line")]
    fn rejects_multiline_rules() {
        filter_script(Chain::Input, &["drop\nflush ruleset"]);
    }
}
