//! IP, UDP and TCP headers as the tap sees and sends them. An IPv4 raw socket receives the IP
//! header (its destination is the local address the packet arrived at); an IPv6 raw socket
//! receives the transport header on, the addresses coming from IPV6_PKTINFO. Sending from
//! RTCD's port without binding it means building the UDP header, and for IPv4 the IP header
//! (IP_HDRINCL), with the checksums computed here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const UDP_HEADER: usize = 8;
const IPV4_HEADER: usize = 20;

/// An IPv4 packet as received: addresses, protocol and the transport bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4View<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub transport: &'a [u8],
}

/// Parses an IPv4 header; `None` for anything malformed or a non-first fragment.
pub fn parse_ipv4(p: &[u8]) -> Option<Ipv4View<'_>> {
    let b0 = *p.first()?;
    let ihl = usize::from(b0 & 0x0f) * 4;
    if b0 >> 4 != 4 || ihl < IPV4_HEADER || p.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    if frag_offset != 0 || total < ihl {
        return None;
    }
    // The kernel may hand over trailing bytes (Ethernet padding): the IP length is the truth.
    let end = total.min(p.len());
    Some(Ipv4View {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        protocol: p[9],
        transport: &p[ihl..end],
    })
}

/// Source port, destination port and payload of a UDP datagram.
pub fn parse_udp(t: &[u8]) -> Option<(u16, u16, &[u8])> {
    if t.len() < UDP_HEADER {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([t[4], t[5]]));
    if len < UDP_HEADER || len > t.len() {
        return None;
    }
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
        &t[UDP_HEADER..len],
    ))
}

/// Source port, destination port and payload of a TCP segment.
pub fn parse_tcp(t: &[u8]) -> Option<(u16, u16, &[u8])> {
    if t.len() < 20 {
        return None;
    }
    let off = usize::from(t[12] >> 4) * 4;
    if off < 20 || off > t.len() {
        return None;
    }
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
        &t[off..],
    ))
}

fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(0, data))
}

/// UDP checksum with the pseudo-header of RFC 768 / RFC 8200 8.1. A computed 0 is sent as
/// 0xffff (0 means "no checksum", which IPv6 forbids).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut acc = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(acc, &s.octets());
            acc = sum16(acc, &d.octets());
            acc = acc.wrapping_add(u32::from(PROTO_UDP) + udp.len() as u32);
        }
        _ => {
            acc = sum16(acc, &v6(src).octets());
            acc = sum16(acc, &v6(dst).octets());
            acc = acc.wrapping_add(udp.len() as u32 + u32::from(PROTO_UDP));
        }
    }
    match fold(sum16(acc, udp)) {
        0 => 0xffff,
        c => c,
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A UDP datagram (header + payload) from `src` to `dst`, checksum filled.
pub fn build_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let len = UDP_HEADER + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = udp_checksum(src.ip(), dst.ip(), &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// A whole IPv4 packet carrying a UDP datagram, for an IP_HDRINCL socket. DF is set, as a
/// media reply would be sent; the kernel fills in nothing but may replace a zero ID.
pub fn build_ipv4_udp(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
    id: u16,
) -> Vec<u8> {
    let s = SocketAddr::from(src);
    let d = SocketAddr::from(dst);
    let udp = build_udp(s, d, payload);
    let total = IPV4_HEADER + udp.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, PROTO_UDP, 0, 0]);
    p.extend_from_slice(&src.0.octets());
    p.extend_from_slice(&dst.0.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&udp);
    p
}
