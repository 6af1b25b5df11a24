//! The shared socket's receive and send calls on Linux: `recvfrom`/`sendto` for one datagram
//! on a one-address bind, `recvmsg`-style calls with the local address in
//! `IP_PKTINFO`/`IPV6_PKTINFO` on a wildcard bind, and `recvmmsg`/`sendmmsg` for batches.
//!
//! Why our own and not quinn-udp's: the socket is *blocking*, so the receive thread sleeps in
//! the receive call itself instead of in `poll` and then a receive, one system call per packet
//! fewer. A blocking socket needs `MSG_DONTWAIT` on every send, so that a full buffer drops a
//! reply (or tells quinn to wait) instead of stalling a thread, and quinn-udp 0.5's calls take
//! no flags: on this socket its receive would wait for a whole batch and its send could block.
//! And a sleeping server takes one datagram per wake-up, for which the plain calls are the
//! cheapest (BENCHMARKS.md, "Blocking receive", 2026-11-30).
//!
//! The control messages read and written are the ones quinn-udp's own calls use
//! (quinn-udp 0.5.16 `src/unix.rs`, `prepare_msg` and `decode_recv`): the destination address
//! of each datagram, the source address of each reply, and `UDP_GRO`'s segment size; and one
//! of our own, each datagram's arrival time (`SCM_TIMESTAMPNS`, see `pace`).

use super::{Received, RecvMeta, BATCH, SLOT};
use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Control space per received datagram: the TOS or traffic class, the destination address,
/// the GRO segment size and the receive time (each `CMSG_SPACE` is at most 40 bytes on 64-bit
/// Linux), with room over.
const RECV_CTRL: usize = 160;
/// Control space per sent datagram: one `in6_pktinfo` (40 bytes with its header).
const SEND_CTRL: usize = 64;

/// A control message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Ctrl<const N: usize>([u8; N]);

/// The arrays of one batch call, with `C` bytes of control space per datagram, left unset:
/// only the entries a call uses are written. A sleeping server takes one datagram per call,
/// and setting up all of them (some 10 kB) would cost it more than the call.
struct Batch<const C: usize> {
    names: MaybeUninit<[libc::sockaddr_storage; BATCH]>,
    iovs: MaybeUninit<[libc::iovec; BATCH]>,
    hdrs: MaybeUninit<[libc::mmsghdr; BATCH]>,
    ctrl: MaybeUninit<[Ctrl<C>; BATCH]>,
}

/// Pointers to the first entries of a [`Batch`]'s arrays.
type Entries<const C: usize> = (
    *mut libc::sockaddr_storage,
    *mut libc::iovec,
    *mut libc::mmsghdr,
    *mut Ctrl<C>,
);

impl<const C: usize> Batch<C> {
    fn new() -> Self {
        Self {
            names: MaybeUninit::uninit(),
            iovs: MaybeUninit::uninit(),
            hdrs: MaybeUninit::uninit(),
            ctrl: MaybeUninit::uninit(),
        }
    }

    fn entries(&mut self) -> Entries<C> {
        (
            self.names.as_mut_ptr().cast(),
            self.iovs.as_mut_ptr().cast(),
            self.hdrs.as_mut_ptr().cast(),
            self.ctrl.as_mut_ptr().cast(),
        )
    }
}

/// The sender's address as the kernel wrote it (`len` bytes of `ss`; the rest may be unset).
///
/// # Safety
/// `ss` points at a sockaddr_storage whose first `len` bytes the kernel wrote.
unsafe fn to_addr(ss: *const libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    if len < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY (all reads): only bytes within `len`, which the caller says are written; unaligned
    // reads, so no reference to partly unset memory is made.
    let family = unsafe { std::ptr::addr_of!((*ss).ss_family).read() };
    match i32::from(family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            let a = unsafe { ss.cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = u32::from_be(a.sin_addr.s_addr).into();
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            let a = unsafe { ss.cast::<libc::sockaddr_in6>().read_unaligned() };
            let ip = a.sin6_addr.s6_addr.into();
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// Writes `addr` into `ss` (zeroed first); returns its length.
///
/// # Safety
/// `ss` is valid for writes.
unsafe fn from_addr(addr: SocketAddr, ss: *mut libc::sockaddr_storage) -> libc::socklen_t {
    // SAFETY: as the caller says; all-zero is a valid sockaddr_storage.
    let ss = unsafe {
        ss.write(zeroed());
        &mut *ss
    };
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

/// Takes up to `want` datagrams, each into its `SLOT`-byte slot of `rx`. With `wait`, waits
/// for the first on a blocking socket (`MSG_WAITFORONE`), then takes what else is queued
/// without waiting; without it (`MSG_DONTWAIT`), or on a non-blocking socket, an empty queue is
/// `WouldBlock`. `local`: read each datagram's destination address and GRO segment size (a
/// wildcard bind asked for both). Each datagram's kernel receive time (`SO_TIMESTAMPNS`) is
/// read where the socket asked for it; the one datagram a sleeping one-address bind waits
/// for is taken with `recvfrom`, without it.
pub fn recv(
    sock: &UdpSocket,
    rx: &mut Received,
    want: usize,
    local: bool,
    wait: bool,
) -> io::Result<usize> {
    if !local && want == 1 && wait {
        return recv_one(sock, rx);
    }
    // The address and control buffers are left for the kernel to write.
    let mut batch = Batch::<RECV_CTRL>::new();
    let (names, iovs, hdrs, ctrl) = batch.entries();
    let n = want.min(rx.meta.len()).min(BATCH).min(rx.bufs.len() / SLOT);
    for i in 0..n {
        // SAFETY: i < BATCH: every pointer stays inside its array; all-zero is a valid mmsghdr.
        unsafe {
            iovs.add(i).write(libc::iovec {
                iov_base: rx.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            });
            let mut h: libc::mmsghdr = zeroed();
            h.msg_hdr.msg_name = names.add(i).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovs.add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctrl.add(i).cast();
            h.msg_hdr.msg_controllen = RECV_CTRL as _;
            hdrs.add(i).write(h);
        }
    }
    let flags = if wait {
        libc::MSG_WAITFORONE
    } else {
        libc::MSG_DONTWAIT
    };
    // SAFETY: every header points at a live slot, address buffer, iovec and control buffer of
    // this frame.
    let got = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs,
            n as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut kept = 0;
    for i in 0..got as usize {
        // SAFETY: the kernel filled the first `got` headers, their addresses and controls.
        let Some((m, stamp)) = (unsafe { meta_of(&*hdrs.add(i), names.add(i), local) }) else {
            continue;
        };
        if kept != i {
            rx.bufs.copy_within(i * SLOT..i * SLOT + m.len, kept * SLOT);
        }
        rx.meta[kept] = m;
        rx.stamps[kept] = stamp;
        kept += 1;
    }
    Ok(kept)
}

/// What the kernel said about one received datagram, and its receive time (0: none). A
/// datagram cut short by its slot is handed over as empty (counted and dropped by the
/// demultiplexer); one from an address family we do not serve is left out. The destination
/// address is kept only with `local` (a wildcard bind).
///
/// # Safety
/// The kernel filled `h`, `msg_namelen` bytes at `name` and the control buffer.
unsafe fn meta_of(
    h: &libc::mmsghdr,
    name: *const libc::sockaddr_storage,
    local: bool,
) -> Option<(RecvMeta, u64)> {
    // SAFETY: as the caller says.
    let addr = unsafe { to_addr(name, h.msg_hdr.msg_namelen) }?;
    let whole = h.msg_hdr.msg_flags & libc::MSG_TRUNC == 0;
    let len = if whole { h.msg_len as usize } else { 0 };
    // SAFETY: as the caller says.
    let c = unsafe { decode_ctrl(&h.msg_hdr) };
    let meta = RecvMeta {
        addr,
        len,
        stride: c.segment.filter(|&s| s > 0).unwrap_or(len),
        ecn: None,
        dst_ip: c.dst.filter(|_| local),
    };
    Some((meta, c.stamp_ns))
}

/// One datagram with `recvfrom`, the cheapest receive call, without control messages: the
/// datagram a sleeping thread waits for usually is the one that woke it, whose stamp would
/// differ little from the read. One that was already queued keeps its wait in the RTT.
fn recv_one(sock: &UdpSocket, rx: &mut Received) -> io::Result<usize> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let slot = &mut rx.bufs[..SLOT];
    // SAFETY: the slot and the address buffer are live and as long as the lengths given.
    let got = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            slot.as_mut_ptr().cast(),
            slot.len(),
            libc::MSG_TRUNC,
            name.as_mut_ptr().cast(),
            &mut namelen,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote namelen bytes of the address.
    let Some(addr) = (unsafe { to_addr(name.as_ptr(), namelen) }) else {
        return Ok(0);
    };
    // With MSG_TRUNC the datagram's real length comes back: one longer than its slot is
    // handed over as empty, as `recv` does.
    let len = match got as usize {
        n if n > SLOT => 0,
        n => n,
    };
    rx.meta[0] = RecvMeta {
        addr,
        len,
        stride: len,
        ecn: None,
        dst_ip: None,
    };
    rx.stamps[0] = 0;
    Ok(1)
}

/// What the control messages of one received datagram say.
#[derive(Default)]
struct Ctrls {
    /// Its destination address (`IP_PKTINFO`/`IPV6_PKTINFO`).
    dst: Option<IpAddr>,
    /// The GRO segment size.
    segment: Option<usize>,
    /// When it reached the socket (`SCM_TIMESTAMPNS`: realtime, ns; 0 when not given).
    stamp_ns: u64,
}

/// The control messages of one received datagram.
///
/// # Safety
/// `h.msg_control` holds `h.msg_controllen` bytes the kernel wrote.
unsafe fn decode_ctrl(h: &libc::msghdr) -> Ctrls {
    let mut out = Ctrls::default();
    // SAFETY (whole loop): CMSG_FIRSTHDR and CMSG_NXTHDR stay within msg_controllen, and each
    // payload is read unaligned, after checking it is as long as the type read.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
    while !c.is_null() {
        let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len) };
        let data = unsafe { libc::CMSG_DATA(c) };
        let fits = |size: usize| len >= unsafe { libc::CMSG_LEN(size as u32) } as usize;
        match (level, kind) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if fits(size_of::<libc::in_pktinfo>()) => {
                let p = unsafe { data.cast::<libc::in_pktinfo>().read_unaligned() };
                out.dst = Some(IpAddr::V4(Ipv4Addr::from(p.ipi_addr.s_addr.to_ne_bytes())));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if fits(size_of::<libc::in6_pktinfo>()) => {
                let p = unsafe { data.cast::<libc::in6_pktinfo>().read_unaligned() };
                out.dst = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
            }
            (libc::SOL_UDP, libc::UDP_GRO) if fits(size_of::<libc::c_int>()) => {
                let s = unsafe { data.cast::<libc::c_int>().read_unaligned() };
                out.segment = usize::try_from(s).ok();
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) if fits(size_of::<libc::timespec>()) => {
                let t = unsafe { data.cast::<libc::timespec>().read_unaligned() };
                let ns = u64::try_from(t.tv_sec)
                    .ok()
                    .zip(u64::try_from(t.tv_nsec).ok());
                let ns = ns.map(|(s, ns)| s.saturating_mul(1_000_000_000).saturating_add(ns));
                out.stamp_ns = ns.unwrap_or(0);
            }
            _ => {}
        }
        c = unsafe { libc::CMSG_NXTHDR(h, c) };
    }
    out
}

/// Sends every datagram in as few `sendmmsg` calls as the kernel allows, never waiting, each
/// from its `from` address when one is given (a wildcard bind: the address the datagram being
/// answered arrived on). A datagram the kernel refuses on its own (an ICMP error for that peer)
/// is skipped; a full socket buffer stops the batch with `WouldBlock` and the rest is dropped,
/// as a full buffer drops a single reply.
pub fn send<'a>(
    sock: &UdpSocket,
    out: impl Iterator<Item = (SocketAddr, Option<IpAddr>, &'a [u8])>,
) -> io::Result<()> {
    let mut batch = Batch::<SEND_CTRL>::new();
    let (names, iovs, hdrs, ctrl) = batch.entries();
    let mut n = 0;
    for (to, from, bytes) in out.take(BATCH) {
        // SAFETY: n < BATCH: every pointer stays inside its array.
        unsafe {
            let msg_hdr = header((names.add(n), iovs.add(n), ctrl.add(n)), to, from, bytes);
            hdrs.add(n).write(libc::mmsghdr {
                msg_hdr,
                msg_len: 0,
            });
        }
        n += 1;
    }
    let mut at = 0;
    while at < n {
        // SAFETY: every header points at a live datagram, address, iovec and control buffer
        // of this frame.
        let sent = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs.add(at),
                (n - at) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent <= 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Err(e),
                // A signal before anything was sent: the same datagrams again.
                io::ErrorKind::Interrupted => {}
                _ => at += 1,
            }
            continue;
        }
        at += sent as usize;
    }
    Ok(())
}

/// One datagram, never waiting; every error is returned (quinn and the page's peer decide).
pub fn send_one(
    sock: &UdpSocket,
    to: SocketAddr,
    from: Option<IpAddr>,
    bytes: &[u8],
) -> io::Result<()> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    if from.is_none() {
        // SAFETY: the pointer is to a live sockaddr_storage.
        let namelen = unsafe { from_addr(to, name.as_mut_ptr()) };
        // SAFETY: the bytes and the address are live and as long as the lengths given.
        return retry(|| unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT,
                name.as_ptr().cast(),
                namelen,
            )
        });
    }
    let mut iov = MaybeUninit::<libc::iovec>::uninit();
    let mut ctrl = MaybeUninit::<Ctrl<SEND_CTRL>>::uninit();
    // SAFETY: the pointers are to live buffers of this frame, which outlive the call.
    let h = unsafe {
        let entry = (name.as_mut_ptr(), iov.as_mut_ptr(), ctrl.as_mut_ptr());
        header(entry, to, from, bytes)
    };
    // SAFETY: the header points at live buffers of this frame.
    retry(|| unsafe { libc::sendmsg(sock.as_raw_fd(), &h, libc::MSG_DONTWAIT) })
}

/// The header that sends `bytes` to `to` (from `from`, when given), writing the address, the
/// iovec and the control message it points at into `entry`.
///
/// # Safety
/// The three pointers are valid for writes, and stay so while the header is used.
unsafe fn header(
    (name, iov, ctrl): (
        *mut libc::sockaddr_storage,
        *mut libc::iovec,
        *mut Ctrl<SEND_CTRL>,
    ),
    to: SocketAddr,
    from: Option<IpAddr>,
    bytes: &[u8],
) -> libc::msghdr {
    // SAFETY: as the caller says; all-zero is a valid msghdr.
    unsafe {
        iov.write(libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        });
        let mut h: libc::msghdr = zeroed();
        h.msg_namelen = from_addr(to, name);
        h.msg_name = name.cast();
        h.msg_iov = iov;
        h.msg_iovlen = 1;
        if let Some(from) = from {
            ctrl.write(Ctrl([0; SEND_CTRL]));
            h.msg_control = ctrl.cast();
            h.msg_controllen = SEND_CTRL as _;
            encode_source(&mut h, from);
        }
        h
    }
}

/// A send call, again if a signal interrupted it (as quinn-udp's send does).
fn retry(mut call: impl FnMut() -> isize) -> io::Result<()> {
    loop {
        if call() >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes the one control message that sends a datagram from `from`, as quinn-udp does:
/// `IP_PKTINFO` with `ipi_spec_dst` for IPv4, `IPV6_PKTINFO` for IPv6; sets `msg_controllen`
/// to its size.
///
/// # Safety
/// `h.msg_control` points at `h.msg_controllen` (at least `SEND_CTRL`) writable bytes.
unsafe fn encode_source(h: &mut libc::msghdr, from: IpAddr) {
    // SAFETY: the buffer has room for one cmsghdr and the larger payload (in6_pktinfo).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        let size = match from {
            IpAddr::V4(v4) => {
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                let p = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                libc::CMSG_DATA(c)
                    .cast::<libc::in_pktinfo>()
                    .write_unaligned(p);
                size_of::<libc::in_pktinfo>()
            }
            IpAddr::V6(v6) => {
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                let p = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: v6.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                libc::CMSG_DATA(c)
                    .cast::<libc::in6_pktinfo>()
                    .write_unaligned(p);
                size_of::<libc::in6_pktinfo>()
            }
        };
        (*c).cmsg_len = libc::CMSG_LEN(size as u32) as _;
        h.msg_controllen = libc::CMSG_SPACE(size as u32) as _;
    }
}
