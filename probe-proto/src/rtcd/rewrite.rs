//! The NAT 1:1 host rewrite of pion/ice v4.2 as RTCD v1.2.5+ reaches it: RTCD still calls
//! `SettingEngine.SetNAT1To1IPs(entries, host)`, which pion/webrtc v4.2.6 turns into
//! address-rewrite rules for pion/ice v4.2.0. Read from:
//!
//! * webrtc v4.2.6 `icegatherer.go:378-405` (`legacyNAT1To1AddressRewriteRules`): each
//!   `EXT/LOCAL` entry (split at the first '/') becomes a rule pinned to LOCAL; then ONE
//!   catch-all rule lists every external address, of pairs and lone entries alike.
//! * ice v4.2.0 `agent_options.go:117-184` (`sanitizeAddressRewriteRule`,
//!   `sanitizeExternalIPs`): externals and local are trimmed; empty externals are skipped and
//!   duplicates dropped; a rule left with no external, an external with '/', or a value that
//!   is not an IP literal is refused ("invalid address rewrite mapping").
//! * ice v4.2.0 `external_ip_mapper.go:90-127` (`addExternalMappings`): a pinned rule maps
//!   its local whatever the external's family; a catch-all serves the external's family.
//! * ice v4.2.0 `external_ip_mapper.go:415-456` (`evaluateRewriteRules`): the first rule
//!   pinned to the local address wins; else the first catch-all of the local's family; else
//!   the address is left alone. Host rules replace the address (`agent_options.go:145-151`).
//!
//! So, unlike v4.0 ([`super::mapping`]): a local address with no pair is mapped to the
//! external addresses of its family (not dropped), a pair beside a lone IP, a duplicate local
//! (first wins), a cross-family pair and spaces around values are all accepted, and `EXT/`
//! (empty local) is one more catch-all.

use std::net::IpAddr;

use super::goparse::parse_ip;
use super::mapping::Entry;

/// pion v4.2 wording (`ErrInvalidNAT1To1IPMapping`, ice v4.2.0 `errors.go:95`).
pub const PION_REWRITE_ERROR: &str = "invalid address rewrite mapping";

#[derive(Debug)]
enum Rule {
    /// `EXT/LOCAL`: pinned to `local`, any family (`external_ip_mapper.go:111-113`).
    Pinned {
        local: IpAddr,
        external: IpAddr,
        entry: usize,
    },
    /// Externals (with the entry each came from) serving the local addresses of their family.
    CatchAll(Vec<(IpAddr, usize)>),
}

/// The parsed rules, in pion's evaluation order.
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    rules: Vec<Rule>,
}

impl Rewriter {
    /// webrtc `legacyNAT1To1AddressRewriteRules` then ice `sanitizeAddressRewriteRule` and
    /// `newAddressRewriteMapper`. Returns the rules and the `(external, local)` view of each
    /// usable entry (`None` = catch-all); on error, the offending entry.
    pub(crate) fn new(entries: &[String]) -> Result<(Self, Vec<Entry>), String> {
        let mut rules = Vec::new();
        // (entry, external, local) for the caller's report, sorted into entry order below.
        let mut view: Vec<(usize, IpAddr, Option<IpAddr>)> = Vec::new();
        // The catch-all's raw externals, in entry order (icegatherer.go:382-395).
        let mut catch_all: Vec<(&str, usize)> = Vec::new();
        for (idx, e) in entries.iter().enumerate() {
            match e.split_once('/') {
                Some((ext_raw, local_raw)) => {
                    // A pinned rule of one external: refused when it is empty after trimming
                    // (agent_options.go:179-181) or not an IP (:171-173).
                    let ext = parse_ip(ext_raw.trim()).ok_or_else(|| e.clone())?;
                    let local = local_raw.trim();
                    if local.is_empty() {
                        // No Local: the rule is a catch-all of its own, placed before the
                        // final one (external_ip_mapper.go:313-318, :239-244).
                        rules.push(Rule::CatchAll(vec![(ext, idx)]));
                        view.push((idx, ext, None));
                    } else {
                        let local = parse_ip(local).ok_or_else(|| e.clone())?;
                        rules.push(Rule::Pinned {
                            local,
                            external: ext,
                            entry: idx,
                        });
                        view.push((idx, ext, Some(local)));
                    }
                    catch_all.push((ext_raw, idx));
                }
                None => catch_all.push((e.as_str(), idx)),
            }
        }
        // sanitizeExternalIPs (agent_options.go:153-184): trimmed, empties skipped, the same
        // text once, every remaining value an IP literal, at least one value.
        let mut seen: Vec<&str> = Vec::new();
        let mut all = Vec::new();
        for (raw, idx) in catch_all {
            let t = raw.trim();
            if t.is_empty() || seen.contains(&t) {
                continue;
            }
            let ip = parse_ip(t).ok_or_else(|| entries[idx].clone())?;
            seen.push(t);
            all.push((ip, idx));
            if !entries[idx].contains('/') {
                view.push((idx, ip, None));
            }
        }
        if all.is_empty() {
            return Err(entries.first().cloned().unwrap_or_default());
        }
        rules.push(Rule::CatchAll(all));
        view.sort_by_key(|v| v.0);
        Ok((
            Rewriter { rules },
            view.into_iter().map(|(_, e, l)| (e, l)).collect(),
        ))
    }

    /// ice `evaluateRewriteRules` for a host candidate's local address: `None` when no rule
    /// matches (the address is advertised as is), else the addresses that replace it, each
    /// with the entry it came from (never empty).
    pub(crate) fn lookup(&self, local: IpAddr) -> Option<Vec<(IpAddr, usize)>> {
        let mut first_catch_all: Option<Vec<(IpAddr, usize)>> = None;
        for rule in &self.rules {
            match rule {
                Rule::Pinned {
                    local: l,
                    external,
                    entry,
                } if *l == local => return Some(vec![(*external, *entry)]),
                Rule::Pinned { .. } => {}
                Rule::CatchAll(list) => {
                    let fam: Vec<(IpAddr, usize)> = list
                        .iter()
                        .copied()
                        .filter(|(ip, _)| ip.is_ipv4() == local.is_ipv4())
                        .collect();
                    // A rule whose family mapping is empty is skipped (ruleMappingForLookup,
                    // external_ip_mapper.go:393-396); the first catch-all wins (:440-447).
                    if !fam.is_empty() && first_catch_all.is_none() {
                        first_catch_all = Some(fam);
                    }
                }
            }
        }
        first_catch_all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn new(entries: &[&str]) -> Result<Rewriter, String> {
        let v: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Rewriter::new(&v).map(|(r, _)| r)
    }

    fn ext(r: &Rewriter, local: &str) -> Option<Vec<String>> {
        r.lookup(ip(local))
            .map(|v| v.iter().map(|(ip, _)| ip.to_string()).collect())
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    /// webrtc v4.2.6 icegatherer_test.go TestLegacyNAT1To1AddressRewriteRules "mapping and
    /// catch-all": two pairs and a lone IP give two pinned rules and a catch-all of all three.
    #[test]
    fn legacy_rules_mapping_and_catch_all() {
        let r = new(&["1.2.3.4/10.0.0.1", "5.6.7.8/10.0.0.2", "9.9.9.9"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.1"), strs(&["1.2.3.4"]));
        assert_eq!(ext(&r, "10.0.0.2"), strs(&["5.6.7.8"]));
        assert_eq!(
            ext(&r, "10.0.0.3"),
            strs(&["1.2.3.4", "5.6.7.8", "9.9.9.9"])
        );
        // No IPv6 external: IPv6 addresses are left alone.
        assert_eq!(ext(&r, "2001:db8::5"), None);
        assert_eq!(r.rules.len(), 3);
    }

    /// ice v4.2.0 external_ip_mapper_test.go TestFindExternalIPExplicitMapping: explicit pairs
    /// of both families. Through SetNAT1To1IPs the catch-all rule then serves the locals with
    /// no pair (where ice's own test, without a catch-all rule, finds no mapping).
    #[test]
    fn explicit_pairs_and_the_catch_all_behind_them() {
        let r = new(&[
            "1.2.3.4/10.0.0.1",
            "1.2.3.5/10.0.0.2",
            "2200::1/fe80::1",
            "2200::2/fe80::2",
        ])
        .unwrap();
        assert_eq!(ext(&r, "10.0.0.1"), strs(&["1.2.3.4"]));
        assert_eq!(ext(&r, "10.0.0.2"), strs(&["1.2.3.5"]));
        assert_eq!(ext(&r, "fe80::1"), strs(&["2200::1"]));
        assert_eq!(ext(&r, "fe80::2"), strs(&["2200::2"]));
        // Not dropped as in v4.0: every external of the family.
        assert_eq!(ext(&r, "10.0.0.3"), strs(&["1.2.3.4", "1.2.3.5"]));
        assert_eq!(ext(&r, "fe80::3"), strs(&["2200::1", "2200::2"]));
    }

    /// ice v4.2.0 TestNewExternalIPMapper "implicit and explicit mix" (a pair beside a lone
    /// IP, refused by v4.0's "newExternalIPMapper with implicit and explicit local IP").
    #[test]
    fn pair_beside_a_lone_ip() {
        for entries in [
            &["1.2.3.5/10.0.0.1", "1.2.3.4"][..],
            &["1.2.3.4", "1.2.3.5/10.0.0.1"],
        ] {
            let r = new(entries).unwrap();
            assert_eq!(ext(&r, "10.0.0.1"), strs(&["1.2.3.5"]), "{entries:?}");
            let mut want = vec!["1.2.3.5", "1.2.3.4"];
            if entries[0] == "1.2.3.4" {
                want.reverse();
            }
            assert_eq!(ext(&r, "10.0.0.2"), strs(&want), "{entries:?}");
        }
    }

    /// ice v4.2.0 TestExternalIPMapperRuleOrderAndSpecificity "earliest matching rule wins"
    /// (a duplicate local, refused by v4.0's "Cannot assign two ext IPs for one local IPv4").
    #[test]
    fn duplicate_local_first_wins() {
        let r = new(&["203.0.113.10/10.0.0.5", "198.51.100.10/10.0.0.5"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.5"), strs(&["203.0.113.10"]));
        let r = new(&["2200::1/fe80::1", "2200::0002/fe80::1"]).unwrap();
        assert_eq!(ext(&r, "fe80::1"), strs(&["2200::1"]));
    }

    /// ice v4.2.0 TestNewExternalIPMapper "mixed family pair ipv6 ext ipv4 local" and "…ipv4 ext
    /// ipv6 local", and TestAddressRewriteModeHostReplaceAndAppend "replace host mapping allows
    /// cross family" (refused by v4.0's "Cannot mix different IP family in a pair").
    #[test]
    fn cross_family_pairs() {
        let r = new(&["2200::1/10.0.0.1"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.1"), strs(&["2200::1"]));
        // The catch-all has only an IPv6 external: other IPv4 addresses are left alone.
        assert_eq!(ext(&r, "10.0.0.2"), None);
        assert_eq!(ext(&r, "2001:db8::9"), strs(&["2200::1"]));
        let r = new(&["1.2.3.4/fe80::1"]).unwrap();
        assert_eq!(ext(&r, "fe80::1"), strs(&["1.2.3.4"]));
        let r = new(&["203.0.113.20/2001:db8::5"]).unwrap();
        assert_eq!(ext(&r, "2001:db8::5"), strs(&["203.0.113.20"]));
    }

    /// ice v4.2.0 TestFindExternalIPHost and TestFindExternalIPMultipleCatchAll: lone IPs are
    /// catch-alls per family, and several of one family all apply (v4.0 allowed one).
    #[test]
    fn catch_alls_per_family_and_several() {
        let r = new(&["1.2.3.4", "2200::1"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.1"), strs(&["1.2.3.4"]));
        assert_eq!(ext(&r, "fe80::1"), strs(&["2200::1"]));
        let r = new(&["1.2.3.4", "5.6.7.8"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.1"), strs(&["1.2.3.4", "5.6.7.8"]));
    }

    /// agent_options.go sanitizeExternalIPs / sanitizeAddressRewriteRule: values are trimmed,
    /// empty ones skipped, the same text once.
    #[test]
    fn spaces_empties_and_duplicates() {
        let r = new(&["203.0.113.1/10.0.0.5", " 203.0.113.2/ 172.17.0.1 "]).unwrap();
        assert_eq!(ext(&r, "172.17.0.1"), strs(&["203.0.113.2"]));
        assert_eq!(ext(&r, "127.0.0.1"), strs(&["203.0.113.1", "203.0.113.2"]));
        // A trailing comma leaves an empty entry: skipped.
        let r = new(&["203.0.113.1/10.0.0.5", ""]).unwrap();
        assert_eq!(ext(&r, "127.0.0.1"), strs(&["203.0.113.1"]));
        // The same external twice is listed once.
        let r = new(&["203.0.113.1/10.0.0.5", "203.0.113.1/10.0.0.6"]).unwrap();
        assert_eq!(ext(&r, "127.0.0.1"), strs(&["203.0.113.1"]));
        // `EXT/` has no local: a catch-all of its own, ahead of the final one.
        let r = new(&["203.0.113.1/", "203.0.113.2"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.5"), strs(&["203.0.113.1"]));
        // IPv4-mapped IPv6 is IPv4 (validateIPString uses To4).
        let r = new(&["::ffff:203.0.113.1/10.0.0.5"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.5"), strs(&["203.0.113.1"]));
        // 0.0.0.0 is an ordinary local for pion: no address matches it, the catch-all serves all.
        let r = new(&["203.0.113.1/0.0.0.0"]).unwrap();
        assert_eq!(ext(&r, "10.0.0.5"), strs(&["203.0.113.1"]));
    }

    /// ice v4.2.0 TestNewExternalIPMapper "invalid external ip", "invalid local ip", "invalid
    /// pair format" (through webrtc's split at the first '/', the rest is the local, not an IP).
    #[test]
    fn rejections() {
        for bad in [
            &["bad.2.3.4"][..],
            &["rtc.example.com/10.0.0.5"],
            &["1.2.3.4/10.0.0.bad"],
            &["1.2.3.4/192.168.0.2/10.0.0.1"],
            &["/10.0.0.5"],
            &[" /10.0.0.5"],
            &["/"],
            &["203.0.113.1/10.0.0.5", "rtc.example.com"],
            &[""],
            &[" ", ""],
        ] {
            assert!(new(bad).is_err(), "{bad:?} should be rejected");
        }
        let v: Vec<String> = vec!["203.0.113.1/10.0.0.5".into(), "rtc.example.com".into()];
        assert_eq!(Rewriter::new(&v).unwrap_err(), "rtc.example.com");
    }
}
