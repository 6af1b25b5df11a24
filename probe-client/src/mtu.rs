//! The path-MTU phase (issue 13), after the echo on the same UDP socket (the media 5-tuple)
//! and on fresh TCP connections to the same port: the plan, retries and rule are
//! [`probe_proto::path::mtu`]'s; this file sets DF, moves bytes and keeps time.
//!
//! DF per OS: Linux `IP_MTU_DISCOVER` (`IP_PMTUDISC_PROBE`: DF set, the kernel's learnt path MTU
//! ignored; `IP_PMTUDISC_DONT`: DF clear) and for IPv6 `IPV6_MTU_DISCOVER` with
//! `IPV6_DONTFRAG`; macOS `IP_DONTFRAG` / `IPV6_DONTFRAG`; Windows `IP_DONTFRAGMENT` /
//! `IPV6_DONTFRAG`. Elsewhere DF is "not settable": only fragmentable probes go upstream and
//! the DF figure is reported unknown. ICMP "fragmentation needed" / "packet too big" is read
//! from the socket's error queue (`IP_RECVERR`) on Linux; elsewhere it is unknown.

use probe_proto::catalog::FindingId;
use probe_proto::echo::{self, SessionKey};
use probe_proto::path::mtu::{self as plan, Action, MtuReport, Plan, TcpMtu, UdpMtu, Way};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

use crate::control::TcpLink;

/// The TCP part ends this long after it started (connect included).
const TCP_DEADLINE: Duration = Duration::from_millis(2500);
/// Connect and the small frame's answer: past this the server is not answering here at all.
const TCP_SMALL: Duration = Duration::from_secs(1);
/// The whole phase, whatever happens (the UDP part ends at 1.5 s by its plan).
pub const PHASE_DEADLINE: Duration = Duration::from_secs(3);

/// What the phase needs from the run.
pub struct Inputs<'a> {
    /// The echo's connected UDP socket, when UDP reached the server.
    pub udp: Option<&'a UdpSocket>,
    /// TCP reached the server: the TCP part runs.
    pub tcp: bool,
    pub addr: SocketAddr,
    pub token: Option<[u8; 32]>,
    pub session: u64,
    pub key: &'a SessionKey,
}

/// Runs both parts side by side, bounded by [`PHASE_DEADLINE`].
pub async fn run(inp: Inputs<'_>) -> MtuReport {
    let t0 = Instant::now();
    let udp = async {
        match inp.udp {
            Some(sock) => Some(udp_part(sock, inp.session, inp.key).await),
            None => None,
        }
    };
    let tcp = async {
        if !inp.tcp {
            return None;
        }
        let part = tcp_part(inp.addr, inp.token, inp.session, inp.key);
        // A little past the part's own deadline, so its large frames report first.
        Some(
            tokio::time::timeout(TCP_DEADLINE + Duration::from_millis(100), part)
                .await
                .unwrap_or_else(|_| unreachable_tcp()),
        )
    };
    let both = async { tokio::join!(udp, tcp) };
    let (udp, tcp) = tokio::time::timeout(PHASE_DEADLINE, both)
        .await
        .unwrap_or((None, None));
    MtuReport {
        udp,
        tcp,
        turn: None,
        ms: t0.elapsed().as_millis() as u64,
    }
}

/// Adds the phase to a finished report: the `mtu` object and its finding (`ok` follows). What
/// the report already has there (the TURN relay's figures, `turn::attach`) is kept, and the
/// whole object is judged again into one finding.
pub fn attach(report: &mut probe_proto::report::Report, mut m: MtuReport) {
    if let Some(prev) = report.mtu.take() {
        m.turn = m.turn.or(prev.turn);
    }
    let mut all: Vec<_> = report
        .findings
        .iter()
        .filter(|f| !f.is(FindingId::LargePacketsLost))
        .cloned()
        .collect();
    all.extend(plan::judge(&m, report.udp.reachable));
    report.set_findings(all);
    report.mtu = Some(m);
}

fn unreachable_tcp() -> TcpMtu {
    TcpMtu {
        frame: plan::TCP_FRAME,
        answered: false,
        up_ok: None,
        down_ok: None,
    }
}

/// A socket whose DF setting and ICMP error queue the phase uses: tokio's (the echo's socket)
/// or std's (the TURN link, `turn::mtu`).
#[cfg(unix)]
pub trait RawSock: std::os::fd::AsRawFd {}
#[cfg(unix)]
impl<T: std::os::fd::AsRawFd> RawSock for T {}
#[cfg(windows)]
pub trait RawSock: std::os::windows::io::AsRawSocket {}
#[cfg(windows)]
impl<T: std::os::windows::io::AsRawSocket> RawSock for T {}
#[cfg(not(any(unix, windows)))]
pub trait RawSock {}
#[cfg(not(any(unix, windows)))]
impl<T> RawSock for T {}

/// EMSGSIZE: the local stack refused a DF datagram larger than its interface or route MTU.
pub(crate) fn too_big(e: &std::io::Error) -> bool {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    let code = libc::EMSGSIZE;
    // WSAEMSGSIZE.
    #[cfg(windows)]
    let code = 10040;
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    let code = -1;
    e.raw_os_error() == Some(code)
}

/// Before each probe: an ICMP "too big" that came since the last send sits on the socket as a
/// pending error (Linux sets `sk_err` to EMSGSIZE with or without `IP_RECVERR`, and a waiting
/// receive is not woken for it), which the next send would return instead of sending. Its queue
/// entry is read first (reading the queue may set the error again), then the error is taken.
pub(crate) fn clear_pending(icmp: &mut icmp::Watch, sock: &impl RawSock, take: impl Fn()) {
    icmp.drain(sock);
    take();
}

/// A failed send: the probe is lost (the plan's next round sends it again). EMSGSIZE is this
/// machine's own interface or route refusing it only when the error queue shows a local error,
/// or no ICMP "too big" that the send could have returned instead.
pub(crate) fn on_send_error(
    plan: &mut Plan,
    id: u32,
    e: &std::io::Error,
    icmp: &mut icmp::Watch,
    sock: &impl RawSock,
) {
    let before = icmp.counts();
    icmp.drain(sock);
    let after = icmp.counts();
    if too_big(e) && (after.local > before.local || after.too_big == before.too_big) {
        plan.on_send_too_big(id);
    }
}

/// The UDP plan on the echo's socket; the socket's DF setting is put back afterwards.
async fn udp_part(sock: &UdpSocket, session: u64, key: &SessionKey) -> UdpMtu {
    let v6 = sock.peer_addr().is_ok_and(|a| a.is_ipv6());
    let saved = df::save(sock, v6);
    let settable = df::set(sock, v6, true);
    let mut icmp = icmp::Watch::enable(sock, v6);
    let t0 = Instant::now();
    let us = || t0.elapsed().as_micros() as u64;
    let mut plan = Plan::new(v6, settable, us());
    let (mut out, mut buf) = ([0u8; echo::MTU_MAX_LEN], [0u8; 2048]);
    let mut df_now = settable.then_some(true);
    loop {
        match plan.poll(us()) {
            Action::Send { id, probe } => {
                if probe.way == Way::Up && settable && df_now != Some(probe.df) {
                    df::set(sock, v6, probe.df);
                    df_now = Some(probe.df);
                }
                let n = echo::encode_mtu_probe(
                    key,
                    session,
                    id,
                    us(),
                    probe.request_len(),
                    probe.reply_len(),
                    probe.df,
                    &mut out,
                );
                clear_pending(&mut icmp, sock, || {
                    let _ = sock.take_error();
                });
                if let Err(e) = sock.try_send(&out[..n]) {
                    on_send_error(&mut plan, id, &e, &mut icmp, sock);
                }
            }
            Action::Wait(at) => {
                let at = tokio::time::Instant::from_std(t0 + Duration::from_micros(at));
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    r = sock.recv(&mut buf) => match r {
                        Ok(n) => on_datagram(&mut plan, key, session, &buf[..n]),
                        Err(_) => icmp.drain(sock),
                    },
                }
            }
            Action::Done => break,
        }
    }
    let (seen, mtu) = icmp.finish(sock);
    df::restore(sock, v6, saved);
    plan.result(seen, mtu)
}

/// An answer on the UDP socket: verified with the session key and matched to its probe.
fn on_datagram(plan: &mut Plan, key: &SessionKey, session: u64, b: &[u8]) {
    if let Ok(a) = echo::decode_mtu_ack(key, b) {
        if a.session == session && plan.ack_fits(a.seq, a.request_len, a.len) {
            plan.on_ack(a.seq);
        }
    }
}

/// One large frame each way, each on its own connection (a black-holed segment wedges its
/// connection), after a small frame that proves the server answers there.
async fn tcp_part(
    addr: SocketAddr,
    token: Option<[u8; 32]>,
    session: u64,
    key: &SessionKey,
) -> TcpMtu {
    let start = tokio::time::Instant::now();
    // `None`: the server did not answer the small frame. Then the large frame's outcome:
    // `Some(false)` lost, `None` when its wait was too short for the round trip the small one
    // took (`plan::tcp_large_outcome`).
    let one = |way: Way| async move {
        let small = async {
            let (mut link, _) = TcpLink::connect(addr, token, TCP_SMALL).await.ok()?;
            let p = plan::Probe {
                way,
                size: plan::BASELINE,
                df: true,
            };
            let sent = Instant::now();
            let ok = tcp_probe(&mut link, key, session, 0, p).await;
            ok.then(|| (link, sent.elapsed()))
        };
        let (mut link, rtt) = tokio::time::timeout(TCP_SMALL, small)
            .await
            .ok()
            .flatten()?;
        let p = plan::Probe {
            way,
            size: plan::TCP_FRAME,
            df: true,
        };
        let sent = Instant::now();
        let large = tcp_probe(&mut link, key, session, 1, p);
        let answered = tokio::time::timeout_at(start + TCP_DEADLINE, large)
            .await
            .ok();
        let us = |d: Duration| d.as_micros() as u64;
        Some(plan::tcp_large_outcome(
            answered,
            us(rtt),
            us(sent.elapsed()),
        ))
    };
    let (up, down) = tokio::join!(one(Way::Up), one(Way::Down));
    TcpMtu {
        frame: plan::TCP_FRAME,
        answered: up.is_some() || down.is_some(),
        up_ok: up.flatten(),
        down_ok: down.flatten(),
    }
}

/// Sends one probe in an RFC 4571 frame and waits for its verified answer of the right size.
async fn tcp_probe(
    link: &mut TcpLink,
    key: &SessionKey,
    session: u64,
    seq: u32,
    p: plan::Probe,
) -> bool {
    let mut out = [0u8; echo::MTU_MAX_LEN];
    let n = echo::encode_mtu_probe(
        key,
        session,
        seq,
        0,
        p.request_len(),
        p.reply_len(),
        true,
        &mut out,
    );
    if link.send(&out[..n]).await.is_err() {
        return false;
    }
    loop {
        let Ok(f) = link.next_frame().await else {
            return false;
        };
        let Ok(a) = echo::decode_mtu_ack(key, &f) else {
            continue;
        };
        if a.session == session && a.seq == seq {
            let want = match p.way {
                Way::Up => a.request_len == n && a.len == echo::MIN_LEN,
                Way::Down => a.len == p.reply_len(),
            };
            return want;
        }
    }
}

/// DF on the client's UDP socket, per OS (see the module docs).
pub(crate) mod df {
    use super::RawSock;

    /// What the socket had before the phase (Linux reads it; elsewhere DF was off by default).
    pub type Saved = [Option<i32>; 3];

    #[cfg(target_os = "linux")]
    fn opt(sock: &impl RawSock, level: i32, name: i32, v: Option<i32>) -> Option<i32> {
        let fd = sock.as_raw_fd();
        let mut cur: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: plain socket options on our descriptor with an int-sized value.
        unsafe {
            if let Some(v) = v {
                let p = (&v as *const i32).cast();
                return (libc::setsockopt(fd, level, name, p, len) == 0).then_some(v);
            }
            let p = (&mut cur as *mut i32).cast();
            (libc::getsockopt(fd, level, name, p, &mut len) == 0).then_some(cur)
        }
    }

    #[cfg(target_os = "linux")]
    fn options(v6: bool) -> [(i32, i32); 3] {
        if v6 {
            [
                (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
                (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
                // A v6 socket may carry v4-mapped traffic; harmless otherwise.
                (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            ]
        } else {
            [(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER); 3]
        }
    }

    #[cfg(target_os = "linux")]
    pub fn save(sock: &impl RawSock, v6: bool) -> Saved {
        options(v6).map(|(l, n)| opt(sock, l, n, None))
    }

    /// Sets DF on or off; false when this system cannot.
    #[cfg(target_os = "linux")]
    pub fn set(sock: &impl RawSock, v6: bool, df: bool) -> bool {
        let o = options(v6);
        if v6 {
            let (mode, dontfrag) = if df {
                (libc::IPV6_PMTUDISC_PROBE, 1)
            } else {
                (libc::IPV6_PMTUDISC_WANT, 0)
            };
            let _ = opt(sock, o[2].0, o[2].1, Some(mode_v4(df)));
            opt(sock, o[0].0, o[0].1, Some(mode)).is_some()
                && opt(sock, o[1].0, o[1].1, Some(dontfrag)).is_some()
        } else {
            opt(sock, o[0].0, o[0].1, Some(mode_v4(df))).is_some()
        }
    }

    #[cfg(target_os = "linux")]
    fn mode_v4(df: bool) -> i32 {
        if df {
            libc::IP_PMTUDISC_PROBE
        } else {
            libc::IP_PMTUDISC_DONT
        }
    }

    #[cfg(target_os = "linux")]
    pub fn restore(sock: &impl RawSock, v6: bool, saved: Saved) {
        for ((l, n), v) in options(v6).into_iter().zip(saved) {
            if let Some(v) = v {
                let _ = opt(sock, l, n, Some(v));
            }
        }
    }

    #[cfg(target_os = "macos")]
    pub fn set(sock: &impl RawSock, v6: bool, df: bool) -> bool {
        let (level, name) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG)
        } else {
            (libc::IPPROTO_IP, libc::IP_DONTFRAG)
        };
        let v: libc::c_int = df.into();
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int-sized option on our descriptor.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&v as *const i32).cast(),
                len,
            ) == 0
        }
    }

    #[cfg(windows)]
    pub fn set(sock: &impl RawSock, v6: bool, df: bool) -> bool {
        #[link(name = "ws2_32")]
        extern "system" {
            fn setsockopt(s: usize, level: i32, name: i32, val: *const u8, len: i32) -> i32;
        }
        // ws2ipdef.h: IPPROTO_IP 0 / IP_DONTFRAGMENT 14, IPPROTO_IPV6 41 / IPV6_DONTFRAG 14.
        let (level, name) = if v6 { (41, 14) } else { (0, 14) };
        let v: u32 = df.into();
        // SAFETY: a DWORD option on our socket.
        unsafe {
            setsockopt(
                sock.as_raw_socket() as usize,
                level,
                name,
                (&v as *const u32).cast(),
                4,
            ) == 0
        }
    }

    /// DF not settable on this system.
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    pub fn set(_: &impl RawSock, _: bool, _: bool) -> bool {
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub fn save(_: &impl RawSock, _: bool) -> Saved {
        [None; 3]
    }

    /// Back to DF off, these systems' default for UDP.
    #[cfg(not(target_os = "linux"))]
    pub fn restore(sock: &impl RawSock, v6: bool, _: Saved) {
        let _ = set(sock, v6, false);
    }
}

/// Error-queue entries read: ICMP "too big" from the path, and errors of this machine's own
/// stack (`SO_EE_ORIGIN_LOCAL`, e.g. a DF send over the interface MTU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub too_big: u32,
    pub local: u32,
}

/// ICMP "fragmentation needed" / "packet too big" for the client's socket.
#[cfg(target_os = "linux")]
pub(crate) mod icmp {
    use super::RawSock;

    /// The error queue is on while the phase runs (`IP_RECVERR`): the kernel queues each ICMP
    /// error for this socket with its type, code and the MTU it names.
    pub struct Watch {
        level_name: Option<(i32, i32)>,
        seen: bool,
        mtu: Option<u16>,
        counts: super::Counts,
    }

    fn set(sock: &impl RawSock, (level, name): (i32, i32), v: i32) -> bool {
        let len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: an int-sized option on our descriptor.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&v as *const i32).cast(),
                len,
            ) == 0
        }
    }

    impl Watch {
        pub fn enable(sock: &impl RawSock, v6: bool) -> Self {
            let o = if v6 {
                (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
            } else {
                (libc::IPPROTO_IP, libc::IP_RECVERR)
            };
            Self {
                level_name: set(sock, o, 1).then_some(o),
                seen: false,
                mtu: None,
                counts: super::Counts::default(),
            }
        }

        /// Reads every queued error; notes ICMP type 3 code 4 (v4) or ICMPv6 type 2 (v6).
        pub fn drain(&mut self, sock: &impl RawSock) {
            if self.level_name.is_none() {
                return;
            }
            while let Some((origin, kind, code, info)) = next_error(sock) {
                let too_big = (origin == libc::SO_EE_ORIGIN_ICMP && kind == 3 && code == 4)
                    || (origin == libc::SO_EE_ORIGIN_ICMP6 && kind == 2);
                if too_big {
                    self.seen = true;
                    self.counts.too_big += 1;
                    self.mtu = u16::try_from(info).ok().filter(|m| *m > 0).or(self.mtu);
                } else if origin == libc::SO_EE_ORIGIN_LOCAL {
                    self.counts.local += 1;
                }
            }
        }

        /// Entries read so far.
        pub fn counts(&self) -> super::Counts {
            self.counts
        }

        /// Whether one came (`None`: the queue could not be turned on) and the MTU it named.
        pub fn finish(mut self, sock: &impl RawSock) -> (Option<bool>, Option<u16>) {
            self.drain(sock);
            let Some(o) = self.level_name else {
                return (None, None);
            };
            set(sock, o, 0);
            self.drain_off(sock);
            (Some(self.seen), self.mtu)
        }

        /// Errors queued before the option went off are read too, so none is left pending.
        fn drain_off(&mut self, sock: &impl RawSock) {
            while next_error(sock).is_some() {}
        }
    }

    /// One entry of the error queue: (origin, ICMP type, code, info), without waiting.
    fn next_error(sock: &impl RawSock) -> Option<(u8, u8, u8, u32)> {
        let mut data = [0u8; 2048];
        let mut ctrl = [0u64; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all-zero is a valid msghdr; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&ctrl) as _;
        let flags = libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT;
        // SAFETY: msg describes live buffers of this frame.
        if unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) } < 0 {
            return None;
        }
        let mut found = Some((0, 0, 0, 0));
        // SAFETY: the kernel filled msg's control buffer; CMSG_* walk within its length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let h = &*c;
                let ours = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                    || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
                if ours {
                    let e: libc::sock_extended_err =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    found = Some((e.ee_origin, e.ee_type, e.ee_code, e.ee_info));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        found
    }
}

/// Elsewhere ICMP is not seen: reported unknown, never guessed.
#[cfg(not(target_os = "linux"))]
pub(crate) mod icmp {
    use super::RawSock;

    pub struct Watch;

    impl Watch {
        pub fn enable(_: &impl RawSock, _: bool) -> Self {
            Self
        }
        pub fn drain(&mut self, _: &impl RawSock) {}
        /// Nothing is read here: a refused send counts as local.
        pub fn counts(&self) -> super::Counts {
            super::Counts::default()
        }
        pub fn finish(self, _: &impl RawSock) -> (Option<bool>, Option<u16>) {
            (None, None)
        }
    }
}
