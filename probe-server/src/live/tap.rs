//! The raw sockets of the tap. Nothing here binds RTCD's port: RTCD binds it with SO_REUSEPORT,
//! so any socket of ours on it would take a share of RTCD's traffic. Raw sockets receive a copy
//! of what the kernel delivers (after the input firewall) and send with a source port written
//! by hand.

use probe_proto::live::bpf::{self, Proto};
use probe_proto::live::ip;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One tapped packet: who sent it, which local address and port it arrived at, its payload.
pub struct Tapped {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// The receive side for one family and transport.
pub struct Tap {
    fd: OwnedFd,
    v6: bool,
    proto: Proto,
    /// The test page's UDP tap (STUN and DTLS), not the live probe's.
    page: bool,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn raw_socket(family: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid T for the duration of the call and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

impl Tap {
    /// Opens the raw socket, attaches the live filter, then drains what queued before it applied.
    pub fn open(proto: Proto, v6: bool, ports: &[u16]) -> io::Result<Tap> {
        Self::open_with(proto, v6, &bpf::program(proto, ports, v6), false)
    }

    /// The test page's UDP tap: its sessions' STUN and DTLS ([`bpf::page_program`]).
    pub fn open_page(v6: bool, ports: &[u16]) -> io::Result<Tap> {
        Self::open_with(Proto::Udp, v6, &bpf::page_program(ports, v6), true)
    }

    fn open_with(proto: Proto, v6: bool, program: &[bpf::Insn], page: bool) -> io::Result<Tap> {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        let protocol = match proto {
            Proto::Udp => libc::IPPROTO_UDP,
            Proto::Tcp => libc::IPPROTO_TCP,
        };
        let fd = raw_socket(family, protocol)?;
        let insns: Vec<libc::sock_filter> = program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let prog = libc::sock_fprog {
            len: insns.len() as u16,
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
        if v6 {
            setsockopt(
                &fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                &1 as &libc::c_int,
            )?;
        }
        let tap = Tap {
            fd,
            v6,
            proto,
            page,
        };
        let mut buf = [0u8; 2048];
        while tap.recv_raw(&mut buf, libc::MSG_DONTWAIT).is_ok() {}
        Ok(tap)
    }

    pub fn is_tcp(&self) -> bool {
        self.proto == Proto::Tcp
    }

    pub fn is_page(&self) -> bool {
        self.page
    }

    pub fn fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Receives one packet without blocking; `Ok(None)` when nothing is queued or the packet is
    /// not one to keep (malformed headers are the kernel's to refuse, so this is rare).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Tapped>> {
        let (n, src, dst6) = self.recv_raw(buf, libc::MSG_DONTWAIT)?;
        let data = &buf[..n];
        let (src_ip, dst_ip, transport) = if self.v6 {
            let (Some(s), Some(d)) = (src, dst6) else {
                return Ok(None);
            };
            (s, IpAddr::V6(d), data)
        } else {
            let Some(v) = ip::parse_ipv4(data) else {
                return Ok(None);
            };
            (IpAddr::V4(v.src), IpAddr::V4(v.dst), v.transport)
        };
        let parsed = match self.proto {
            Proto::Udp => ip::parse_udp(transport),
            Proto::Tcp => ip::parse_tcp(transport),
        };
        Ok(parsed.map(|(sp, dp, payload)| Tapped {
            from: SocketAddr::new(src_ip, sp),
            to: SocketAddr::new(dst_ip, dp),
            payload: payload.to_vec(),
        }))
    }

    /// recvmsg: the bytes, the sender's address (IPv6: the IP header is not given to us) and,
    /// for IPv6, the local address from IPV6_PKTINFO.
    fn recv_raw(
        &self,
        buf: &mut [u8],
        flags: libc::c_int,
    ) -> io::Result<(usize, Option<IpAddr>, Option<Ipv6Addr>)> {
        // SAFETY: zeroed sockaddr_storage and msghdr are valid initial states.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut cbuf = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: every pointer in msg refers to live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut src = None;
        let mut dst = None;
        if self.v6 {
            // SAFETY: the kernel filled `name` as a sockaddr_in6 for an AF_INET6 socket.
            let sin6 = unsafe { &*(&name as *const _ as *const libc::sockaddr_in6) };
            src = Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            // SAFETY: walking the control messages the kernel wrote, with libc's macros.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_PKTINFO
                    {
                        let info = &*(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                        dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
        }
        Ok((n as usize, src, dst))
    }
}

/// The send side: IPv4 with our own IP header (IPPROTO_RAW implies IP_HDRINCL), IPv6 with the
/// source address chosen through IPV6_PKTINFO. Neither is bound to anything.
pub struct Sender {
    v4: OwnedFd,
    v6: Option<OwnedFd>,
    /// IPv4 identification; atomic because the test page's peer sends from its own thread.
    id: std::sync::atomic::AtomicU16,
}

impl Sender {
    pub fn open() -> io::Result<Sender> {
        let v4 = raw_socket(libc::AF_INET, libc::IPPROTO_RAW)?;
        // A raw IPPROTO_UDP socket also receives every UDP datagram: a drop-all filter keeps
        // RTCD's traffic from being copied to it.
        let v6 = raw_socket(libc::AF_INET6, libc::IPPROTO_UDP)
            .ok()
            .and_then(|fd| {
                let drop_all = [libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0,
                }];
                let prog = libc::sock_fprog {
                    len: 1,
                    filter: drop_all.as_ptr() as *mut _,
                };
                setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog).ok()?;
                Some(fd)
            });
        Ok(Sender {
            v4,
            v6,
            id: std::sync::atomic::AtomicU16::new(1),
        })
    }

    /// Sends `payload` from `from` (RTCD's port, the local address the request arrived at) to `to`.
    pub fn send(&self, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> io::Result<()> {
        match (from.ip(), to.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let id = self.id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let pkt = ip::build_ipv4_udp((s, from.port()), (d, to.port()), payload, id);
                self.sendto_v4(d, &pkt)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let udp = ip::build_udp(from, to, payload);
                self.sendmsg_v6(s, d, &udp)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address families differ",
            )),
        }
    }

    fn sendto_v4(&self, dst: Ipv4Addr, pkt: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_in is valid; the fields set below make it the destination.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(dst).to_be();
        // SAFETY: pkt and sa are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.v4.as_raw_fd(),
                pkt.as_ptr() as *const libc::c_void,
                pkt.len(),
                // Never block the caller (the tap loop, the page's only worker): a full send
                // buffer drops the datagram, as the network would.
                libc::MSG_DONTWAIT,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn sendmsg_v6(&self, src: Ipv6Addr, dst: Ipv6Addr, udp: &[u8]) -> io::Result<()> {
        let Some(fd) = &self.v6 else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no IPv6 raw socket",
            ));
        };
        // SAFETY: zeroed C structs are valid initial states; pointers below refer to locals.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_addr.s6_addr = dst.octets();
        let mut iov = libc::iovec {
            iov_base: udp.as_ptr() as *mut libc::c_void,
            iov_len: udp.len(),
        };
        let mut cbuf = [0u64; 8];
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut sa as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
        msg.msg_controllen =
            unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) } as _;
        // SAFETY: the control buffer is large enough for one in6_pktinfo message.
        let n = unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as _;
            let info = libc::CMSG_DATA(c) as *mut libc::in6_pktinfo;
            (*info).ipi6_addr.s6_addr = src.octets();
            (*info).ipi6_ifindex = 0;
            libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Enters the network namespace of RTCD's process (containers): must run before any thread
/// or socket exists, since a namespace is per thread and sockets keep the one they were made in.
pub fn enter_netns(pid: u32) -> io::Result<()> {
    let path = format!("/proc/{pid}/ns/net");
    let f = std::fs::File::open(&path)?;
    // SAFETY: setns(2) on an fd we own, for the calling (main) thread.
    cvt(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }).map(|_| ())
}
