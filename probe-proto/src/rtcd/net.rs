//! Address classification: which addresses outside users cannot reach, and
//! which local addresses RTCD and pion keep.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when users outside the server's network cannot reach `ip`:
/// RFC 1918 (10/8, 172.16/12, 192.168/16), RFC 6598 shared address space
/// (100.64/10, carrier-grade NAT), IPv6 ULA (fc00::/7), loopback, link-local
/// and the unspecified address. IPv4-mapped IPv6 is judged by its IPv4 part.
///
/// Everything else counts as public, including the documentation ranges
/// 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24 (and 2001:db8::/32):
/// the tests use them as stand-ins for public addresses, so the tool must not
/// flag them.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(v4),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || is_v6_link_local(v6)
                    || (v6.segments()[0] & 0xfe00) == 0xfc00
            }
        },
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_private()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
}

/// fe80::/10.
pub(crate) fn is_v6_link_local(v6: Ipv6Addr) -> bool {
    (v6.segments()[0] & 0xffc0) == 0xfe80
}

/// Go's `IsLoopback` (by address, not by interface flag): 127/8 and ::1.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// RTCD `getSystemIPs` (service/rtc/net.go): every IPv4 address is kept,
/// loopback included; IPv6 only with `enable_ipv6` and only when Go calls it
/// global unicast (not ::, ::1, multicast or fe80::/10; ULAs *are* kept).
pub(crate) fn rtcd_keeps(ip: IpAddr, enable_ipv6: bool) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => {
            enable_ipv6
                && !v6.is_unspecified()
                && !v6.is_loopback()
                && !v6.is_multicast()
                && !is_v6_link_local(v6)
        }
    }
}

/// pion `localInterfaces` for TCP host candidates: every IPv4 address
/// (loopback included, RTCD turns it on); IPv6 only when RTCD asks for tcp6
/// (`enable_ipv6`), minus IPv4-compatible (::/96, hence :: and ::1) and
/// site-local fec0::/10. Link-local IPv6 is gathered but never advertised
/// (RFC 8445 location tracking), so it is left out here as well.
pub(crate) fn pion_tcp_keeps(ip: IpAddr, enable_ipv6: bool) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            enable_ipv6
                && s[..6].iter().any(|&x| x != 0)
                && (s[0] & 0xffc0) != 0xfec0
                && !is_v6_link_local(v6)
        }
    }
}

/// Go's `areAddressesSameStack`.
pub(crate) fn same_stack(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges() {
        for s in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip(s)), "{s} should be private");
        }
    }

    #[test]
    fn public_ranges_include_documentation() {
        for s in [
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.5",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:203.0.113.5",
        ] {
            assert!(!is_private(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn rtcd_and_pion_filters() {
        assert!(rtcd_keeps(ip("127.0.0.1"), false));
        assert!(!rtcd_keeps(ip("2001:db8::1"), false));
        assert!(rtcd_keeps(ip("2001:db8::1"), true));
        assert!(
            rtcd_keeps(ip("fd00::1"), true),
            "Go counts ULA as global unicast"
        );
        assert!(!rtcd_keeps(ip("fe80::1"), true));
        assert!(!rtcd_keeps(ip("::1"), true));
        assert!(pion_tcp_keeps(ip("127.0.0.1"), false));
        assert!(pion_tcp_keeps(ip("2001:db8::1"), true));
        assert!(!pion_tcp_keeps(ip("::1"), true));
        assert!(!pion_tcp_keeps(ip("fec0::1"), true));
        assert!(!pion_tcp_keeps(ip("fe80::1"), true));
        assert!(!pion_tcp_keeps(ip("2001:db8::1"), false));
    }
}
