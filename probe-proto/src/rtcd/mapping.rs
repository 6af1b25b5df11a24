//! pion/ice's NAT 1:1 host mapper as in v4.0.x (`external_ip_mapper.go`),
//! the version RTCD's go.mod pins (v4.0.10). Per address family: either one
//! catch-all external IP (`EXT`) or `EXT/LOCAL` pairs, never both; no local
//! twice; both sides of a pair in the same family; IP literals only.
//! (pion ≥ 4.1 rewrote this as "address rewrite rules": it allows a catch-all
//! beside pairs and says "invalid address rewrite mapping".)

use std::net::IpAddr;

use super::goparse::parse_ip;

/// pion v4.0.x wording (`ErrInvalidNAT1To1IPMapping`).
pub const PION_MAPPING_ERROR: &str = "invalid 1:1 NAT IP mapping";

#[derive(Debug, Default)]
struct Family {
    /// Catch-all external IP and the entry it came from.
    sole: Option<(IpAddr, usize)>,
    /// (local, external, entry index).
    pairs: Vec<(IpAddr, IpAddr, usize)>,
}

impl Family {
    fn valid(&self) -> bool {
        self.sole.is_some() || !self.pairs.is_empty()
    }
}

/// What the mapper does to one local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No mapping for this family: the local IP is used.
    Unchanged,
    /// Mapped by entry `entry` (index into the list given to `Mapper::new`).
    Mapped { external: IpAddr, entry: usize },
    /// The family has mappings but none for this IP (pion logs
    /// "1:1 NAT mapping is enabled but no external IP is found for X").
    NotFound,
}

#[derive(Debug, Default)]
pub(crate) struct Mapper {
    v4: Family,
    v6: Family,
}

/// One parsed entry: external, and local (`None` = catch-all).
pub(crate) type Entry = (IpAddr, Option<IpAddr>);

impl Mapper {
    /// pion `newExternalIPMapper(CandidateTypeHost, entries)`. On error,
    /// returns the first offending entry.
    pub(crate) fn new(entries: &[String]) -> Result<(Self, Vec<Entry>), String> {
        let mut m = Mapper::default();
        let mut parsed = Vec::with_capacity(entries.len());
        for (idx, e) in entries.iter().enumerate() {
            let bad = || e.clone();
            let parts: Vec<&str> = e.split('/').collect();
            if parts.len() > 2 {
                return Err(bad());
            }
            let ext = parse_ip(parts[0]).ok_or_else(bad)?;
            let fam = if ext.is_ipv4() { &mut m.v4 } else { &mut m.v6 };
            if parts.len() == 1 {
                if fam.sole.is_some() || !fam.pairs.is_empty() {
                    return Err(bad());
                }
                fam.sole = Some((ext, idx));
                parsed.push((ext, None));
            } else {
                let loc = parse_ip(parts[1]).ok_or_else(bad)?;
                if loc.is_ipv4() != ext.is_ipv4()
                    || fam.sole.is_some()
                    || fam.pairs.iter().any(|(l, _, _)| *l == loc)
                {
                    return Err(bad());
                }
                fam.pairs.push((loc, ext, idx));
                parsed.push((ext, Some(loc)));
            }
        }
        Ok((m, parsed))
    }

    /// pion `findExternalIP` for a host candidate's local address.
    pub(crate) fn find(&self, local: IpAddr) -> Lookup {
        let fam = if local.is_ipv4() { &self.v4 } else { &self.v6 };
        if !fam.valid() {
            return Lookup::Unchanged;
        }
        if let Some((external, entry)) = fam.sole {
            return Lookup::Mapped { external, entry };
        }
        match fam.pairs.iter().find(|(l, _, _)| *l == local) {
            Some(&(_, external, entry)) => Lookup::Mapped { external, entry },
            None => Lookup::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn new(entries: &[&str]) -> Result<Mapper, String> {
        let v: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Mapper::new(&v).map(|(m, _)| m)
    }

    #[test]
    fn pairs_and_sole() {
        let m = new(&["203.0.113.1/10.0.0.5", "203.0.113.2/10.0.0.6"]).unwrap();
        assert_eq!(
            m.find(ip("10.0.0.6")),
            Lookup::Mapped {
                external: ip("203.0.113.2"),
                entry: 1
            }
        );
        assert_eq!(m.find(ip("172.17.0.1")), Lookup::NotFound);
        assert_eq!(m.find(ip("2001:db8::5")), Lookup::Unchanged);
        let m = new(&["203.0.113.1"]).unwrap();
        assert_eq!(
            m.find(ip("172.17.0.1")),
            Lookup::Mapped {
                external: ip("203.0.113.1"),
                entry: 0
            }
        );
        // One catch-all per family, families independent.
        let m = new(&["203.0.113.1", "2001:db8::1/2001:db8::5"]).unwrap();
        assert_eq!(m.find(ip("2001:db8::6")), Lookup::NotFound);
        // 0.0.0.0 is not special for pion: a pair for local 0.0.0.0.
        let m = new(&["203.0.113.1/0.0.0.0"]).unwrap();
        assert_eq!(m.find(ip("10.0.0.5")), Lookup::NotFound);
        // IPv4-mapped IPv6 is IPv4 for pion (net.IP.To4).
        let m = new(&["::ffff:203.0.113.1/10.0.0.5"]).unwrap();
        assert_eq!(
            m.find(ip("10.0.0.5")),
            Lookup::Mapped {
                external: ip("203.0.113.1"),
                entry: 0
            }
        );
    }

    #[test]
    fn pion_rejections() {
        for bad in [
            &["rtc.example.com/10.0.0.5"][..],
            &["203.0.113.1/10.0.0.5/1"],
            &["203.0.113.1/"],
            &[" 203.0.113.1/10.0.0.5"],
            &["203.0.113.1", "203.0.113.2"],
            &["203.0.113.1/10.0.0.5", "203.0.113.2"],
            &["203.0.113.2", "203.0.113.1/10.0.0.5"],
            &["203.0.113.1/10.0.0.5", "203.0.113.2/10.0.0.5"],
            &["203.0.113.1/2001:db8::5"],
            &["2001:db8::1/10.0.0.5"],
            &["203.0.113.1/10.0.0.5", ""],
        ] {
            assert!(new(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
