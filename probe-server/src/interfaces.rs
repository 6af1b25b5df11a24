//! Addresses of this host's interfaces that are up, as RTCD gathers them (loopback included;
//! the RTCD logic in probe-proto filters them).
//!
//! Hand-written over `getifaddrs` on purpose: RTCD keeps interfaces with Go's `net.FlagUp`
//! (IFF_UP; rtcd service/rtc/net.go:43-47 getSystemIPs, v1.2.6), while `if-addrs` reports
//! IFF_RUNNING as "up" and drops link-local addresses unless a feature is set, so an interface
//! that is up without carrier (RTCD uses it) would go missing.

use probe_proto::rtcd::LocalAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[cfg(unix)]
pub fn local_addrs() -> std::io::Result<Vec<LocalAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free exactly once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let flags = ifa.ifa_flags as libc::c_int;
        if ifa.ifa_addr.is_null() || flags & libc::IFF_UP == 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family tells its real type.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        out.push(LocalAddr {
            ip,
            loopback: flags & libc::IFF_LOOPBACK != 0,
        });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(not(unix))]
pub fn local_addrs() -> std::io::Result<Vec<LocalAddr>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "listing interfaces is implemented for Unix hosts, where RTCD runs",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_listed() {
        let addrs = super::local_addrs().unwrap();
        assert!(
            addrs.iter().any(|a| a.loopback && a.ip.is_loopback()),
            "{addrs:?}"
        );
    }
}
