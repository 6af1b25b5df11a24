//! `recvmmsg`/`sendmmsg` on the plain (one-address) path (Linux).

use super::{plain_meta, RecvMeta, Replies, SLOT};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

fn to_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = u32::from_be(a.sin_addr.s_addr).into();
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = a.sin6_addr.s6_addr.into();
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

fn from_addr(addr: SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let s = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in) };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let s = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in6) };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr.s6_addr = a.ip().octets();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Takes up to `meta.len()` datagrams, each into its `SLOT`-byte slot of `bufs`.
pub fn recv(sock: &UdpSocket, bufs: &mut [u8], meta: &mut [RecvMeta]) -> io::Result<usize> {
    const N: usize = super::BATCH;
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut names: [libc::sockaddr_storage; N] = unsafe { zeroed() };
    let mut iovs: [libc::iovec; N] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; N] = unsafe { zeroed() };
    let n = meta.len().min(N).min(bufs.len() / SLOT);
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: bufs[i * SLOT..].as_mut_ptr().cast(),
            iov_len: SLOT,
        };
        hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at a live slot, address buffer and iovec of this frame.
    let got = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            0,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut kept = 0;
    for i in 0..got as usize {
        let h = &hdrs[i];
        // A datagram cut short by its slot, or from an address family we do not serve, is
        // left out (a zero-length entry is counted and dropped by the demultiplexer).
        let whole = h.msg_hdr.msg_flags & libc::MSG_TRUNC == 0;
        let Some(addr) = to_addr(&names[i]) else {
            continue;
        };
        let len = if whole { h.msg_len as usize } else { 0 };
        if kept != i {
            bufs.copy_within(i * SLOT..i * SLOT + len, kept * SLOT);
        }
        meta[kept] = plain_meta(addr, len);
        kept += 1;
    }
    Ok(kept)
}

/// Sends every reply in one `sendmmsg` call; what the kernel did not take is dropped, as a
/// full socket buffer drops a single reply.
pub fn send(sock: &UdpSocket, out: &Replies) -> io::Result<()> {
    const N: usize = super::BATCH;
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut names: [libc::sockaddr_storage; N] = unsafe { zeroed() };
    let mut iovs: [libc::iovec; N] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; N] = unsafe { zeroed() };
    let mut n = 0;
    for (to, _, bytes) in out.iter().take(N) {
        iovs[n] = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        hdrs[n].msg_hdr.msg_namelen = from_addr(to, &mut names[n]);
        hdrs[n].msg_hdr.msg_name = (&mut names[n] as *mut libc::sockaddr_storage).cast();
        hdrs[n].msg_hdr.msg_iov = &mut iovs[n];
        hdrs[n].msg_hdr.msg_iovlen = 1;
        n += 1;
    }
    let mut at = 0;
    while at < n {
        // SAFETY: every header points at a live reply, address and iovec of this frame.
        let sent = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs[at..].as_mut_ptr(),
                (n - at) as libc::c_uint,
                0,
            )
        };
        if sent <= 0 {
            let e = io::Error::last_os_error();
            // The first message failed on its own (e.g. an ICMP error for that peer): skip
            // it and send the rest.
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(e);
            }
            at += 1;
            continue;
        }
        at += sent as usize;
    }
    Ok(())
}
