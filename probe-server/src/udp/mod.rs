//! The shared UDP port: one socket, demultiplexed by first byte. STUN and echo are answered
//! inline from the sans-IO core; QUIC datagrams are queued to quinn through [`QuicSocket`], an
//! `AsyncUdpSocket` over the same socket, so the control channel crosses the port under test.
//! STUN for a browser test page session's ufrag, and DTLS from an address such a session
//! learnt, are queued to the page's WebRTC peer (`web::peer`), which answers from its own task.

use crate::shared::{canonical, Shared};
use probe_proto::demux::{classify, Kind};
use probe_proto::echo;
use probe_proto::msg::Transport;
use probe_proto::quic;
use probe_proto::session::{Core, EchoAt};
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

mod pace;
use pace::{Next, Pacer};

const QUIC_QUEUE: usize = 1024;
/// The longest the receive thread waits in `poll` (not Linux) before it looks at its stop
/// flag again, should the socket's shutdown not wake it there.
#[cfg(not(target_os = "linux"))]
const IDLE_WAKE: std::time::Duration = std::time::Duration::from_secs(1);
/// Datagrams taken per receive call (recvmmsg): under load one wake-up serves many packets;
/// at a packet per millisecond it is one, as before.
const BATCH: usize = quinn::udp::BATCH_SIZE;
/// A receive slot holds the largest datagram (or GRO batch) the kernel can hand over.
const SLOT: usize = 65_536;
/// A reply slot: echo replies are at most 1200 bytes, STUN answers smaller.
const OUT_SLOT: usize = 2048;

/// A datagram for quinn: bytes, sender, and the local address it was sent to.
pub type QuicDatagram = (Vec<u8>, SocketAddr, Option<IpAddr>);

/// The shared socket. On a wildcard bind it reports the local address each datagram was sent
/// to (IP_PKTINFO) and sends from a chosen one, so a reply always leaves from the address
/// the client addressed — on a multi-homed host the kernel's own choice could differ, and an
/// ICE check answered from another address does not count (RFC 8445 §7.2.5.2.1).
///
/// Only [`serve`]'s thread reads it, so the socket is not registered with the runtime at all:
/// a registration would wake the runtime for every datagram (and, for writability, for every
/// reply's completion). Writers that found the buffer full wait for space through a second,
/// temporary registration of a duplicate that exists only until there is room again.
///
/// On Linux the socket is blocking and the receive thread sleeps in the receive call itself;
/// every send passes `MSG_DONTWAIT` (see `mmsg`), so a full send buffer still drops a reply
/// instead of stalling a thread. Elsewhere it is non-blocking and the thread waits in `poll`.
pub struct Udp {
    sock: std::net::UdpSocket,
    /// A wildcard bind: each datagram's local address is read and each reply sent from it. A
    /// socket bound to one address always answers from it, on the cheaper calls without them.
    wildcard: bool,
    /// quinn-udp's calls for a wildcard bind where `mmsg` does not exist (not Linux).
    #[cfg(not(target_os = "linux"))]
    state: Option<UdpSocketState>,
    /// A send found the socket buffer full; quinn's pollers wait for space.
    send_blocked: AtomicBool,
    /// The kernel stamps each datagram's arrival (`SO_TIMESTAMPNS`, Linux), so the receive
    /// thread may hold datagrams under load (`pace`).
    stamps: bool,
    /// How many times the receive thread held (slept before taking a batch).
    holds: AtomicU64,
}

impl Udp {
    pub fn new(sock: std::net::UdpSocket) -> io::Result<Self> {
        let wildcard = sock.local_addr()?.ip().is_unspecified();
        // On a wildcard bind quinn-udp sets the options its calls rely on (IP_PKTINFO or
        // IPV6_RECVPKTINFO, UDP_GRO, no fragmentation); on Linux `mmsg` makes the calls, with
        // the same options.
        #[cfg(target_os = "linux")]
        if wildcard {
            UdpSocketState::new((&sock).into())?;
        }
        #[cfg(not(target_os = "linux"))]
        let state = match wildcard {
            true => Some(UdpSocketState::new((&sock).into())?),
            false => None,
        };
        // quinn-udp leaves the socket non-blocking.
        sock.set_nonblocking(cfg!(not(target_os = "linux")))?;
        #[cfg(target_os = "linux")]
        let stamps = stamp_arrivals(&sock);
        #[cfg(not(target_os = "linux"))]
        let stamps = false;
        Ok(Self {
            sock,
            wildcard,
            #[cfg(not(target_os = "linux"))]
            state,
            send_blocked: AtomicBool::new(false),
            stamps,
            holds: AtomicU64::new(0),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Sends without waiting: a full socket buffer drops the reply, as the network would.
    /// `from`: the local address to send from (a wildcard bind; ignored on a one-address bind),
    /// as the datagram being answered arrived on — the browser page's peer sends this way too.
    pub fn send_from(
        &self,
        to: SocketAddr,
        from: Option<IpAddr>,
        contents: &[u8],
    ) -> io::Result<()> {
        let from = from.filter(|_| self.wildcard);
        #[cfg(target_os = "linux")]
        let r = mmsg::send_one(&self.sock, to, from, contents);
        #[cfg(not(target_os = "linux"))]
        let r = match &self.state {
            None => self.sock.send_to(contents, to).map(|_| ()),
            Some(state) => state.send(
                (&self.sock).into(),
                &Transmit {
                    destination: to,
                    ecn: None,
                    contents,
                    segment_size: None,
                    src_ip: from,
                },
            ),
        };
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.send_blocked.store(true, Ordering::Release);
        }
        r
    }

    /// Shuts the socket for reading: a receive waiting on it returns at once, and every later
    /// one finds nothing. How the receive thread is stopped.
    fn shut_reading(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is the socket's, open while `self` lives. An unconnected UDP
        // socket answers ENOTCONN, but Linux marks it shut and wakes its waiters all the same
        // (net/ipv4/af_inet.c, `inet_shutdown`); `an_aborted_loop_lets_go_of_its_socket`
        // checks it.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RD) };
    }

    /// Sends every reply of a batch: one `sendmmsg` on Linux, else one call each. Downstream
    /// path-MTU answers go one by one with the DF setting their probe asked for.
    fn send_batch(&self, out: &Replies) {
        let mtu = out.iter().any(|(_, _, b)| echo::mtu_reply_df(b).is_some());
        // A reply's `from` is the address its request came to, which only a wildcard bind reads.
        #[cfg(target_os = "linux")]
        if !mtu && out.len() > 1 {
            if let Err(e) = mmsg::send(&self.sock, out.iter()) {
                tracing::debug!("UDP batch send failed: {e}");
            }
            return;
        }
        for (to, from, bytes) in out.iter() {
            let r = match echo::mtu_reply_df(bytes).filter(|_| mtu) {
                Some(df) => self.send_with_df(to, from, bytes, df),
                None => self.send_from(to, from, bytes),
            };
            if let Err(e) = r {
                tracing::debug!("UDP send to {to} failed: {e}");
            }
        }
    }

    /// One datagram with DF set (never fragmented here, whatever path MTU the kernel learnt) or
    /// fragmentable, then the socket's own setting back. Only the receive thread sends these. A
    /// QUIC packet the runtime's thread sends meanwhile leaves with this setting; were it one of
    /// quinn's path-MTU probes sent fragmentable, quinn would overrate the path until its
    /// black-hole detection corrects it. Rare: only during a client's downstream MTU phase.
    fn send_with_df(
        &self,
        to: SocketAddr,
        from: Option<IpAddr>,
        bytes: &[u8],
        df: bool,
    ) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let saved = df_mode::set(&self.sock, df);
            let r = self.send_from(to, from, bytes);
            df_mode::restore(&self.sock, saved);
            r
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = df;
            self.send_from(to, from, bytes)
        }
    }

    /// The receive `next` asks for: up to that many datagrams, waiting for the first (in the
    /// receive call on Linux, a blocking socket; else in `poll` first), or (Linux) up to a
    /// batch of what is queued, 0 when nothing is.
    #[cfg(target_os = "linux")]
    fn recv_batch(&self, rx: &mut Received, next: Next) -> io::Result<usize> {
        match next {
            Next::Wait(want) => mmsg::recv(&self.sock, rx, want.max(1), self.wildcard, true),
            Next::Hold | Next::Now => {
                match mmsg::recv(&self.sock, rx, BATCH, self.wildcard, false) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    r => r,
                }
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_batch(&self, rx: &mut Received, _next: Next) -> io::Result<usize> {
        let events = self.wait_readable()?;
        let sock = &self.sock;
        let r = match &self.state {
            Some(state) => {
                // On the stack: no allocation per batch.
                let mut slots = rx.bufs.chunks_mut(SLOT);
                let mut bufs: [IoSliceMut<'_>; BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("BATCH slots")));
                state.recv(sock.into(), &mut bufs, &mut rx.meta)
            }
            None => sock.recv_from(&mut rx.bufs[..SLOT]).map(|(len, addr)| {
                rx.meta[0] = plain_meta(addr, len);
                1
            }),
        };
        // A pending socket error keeps a level-triggered poll ready while receives find
        // nothing: take it, or the loop would spin.
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            && events & libc::POLLERR != 0
        {
            let _ = sock.take_error();
        }
        r
    }

    /// Blocks until a datagram (or an error) is waiting, or [`IDLE_WAKE`] passed; returns
    /// `poll`'s events.
    #[cfg(not(target_os = "linux"))]
    fn wait_readable(&self) -> io::Result<libc::c_short> {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            let wake = IDLE_WAKE.as_millis() as libc::c_int;
            // SAFETY: one valid pollfd for the call.
            if unsafe { libc::poll(&mut fd, 1, wake) } >= 0 {
                return Ok(fd.revents);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Asks the kernel to stamp each datagram's arrival (`SO_TIMESTAMPNS`); whether it will.
#[cfg(target_os = "linux")]
fn stamp_arrivals(sock: &std::net::UdpSocket) -> bool {
    let on = df_mode::put(sock, (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS), 1);
    if !on {
        let e = io::Error::last_os_error();
        tracing::debug!("SO_TIMESTAMPNS: {e}; the receive thread will not hold datagrams");
    }
    on
}

/// Registers an owned socket with the runtime for writability only.
fn register_writable(sock: std::net::UdpSocket) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the AsyncFd owns the socket, so its descriptor stays open and the same for the
    // registration's whole life.
    unsafe { AsyncFd::register_with_interest(sock, Interest::WRITABLE) }.map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn plain_meta(addr: SocketAddr, len: usize) -> RecvMeta {
    RecvMeta {
        addr,
        len,
        stride: len,
        ecn: None,
        dst_ip: None,
    }
}

/// Receive slots and what the kernel said about each, allocated once.
struct Received {
    bufs: Vec<u8>,
    meta: Vec<RecvMeta>,
    /// Each datagram's arrival, as the kernel stamped it (realtime, ns; 0: not stamped).
    stamps: Vec<u64>,
}

impl Received {
    fn new() -> Self {
        Self {
            bufs: vec![0; SLOT * BATCH],
            meta: vec![RecvMeta::default(); BATCH],
            stamps: vec![0; BATCH],
        }
    }

    fn datagram(&self, i: usize) -> (&RecvMeta, &[u8]) {
        let m = &self.meta[i];
        (m, &self.bufs[i * SLOT..i * SLOT + m.len.min(SLOT)])
    }
}

/// Replies of one batch, written in place by the core, allocated once.
struct Replies {
    bufs: Vec<u8>,
    /// Destination, source address (wildcard bind) and length of each reply.
    heads: Vec<(SocketAddr, Option<IpAddr>, usize)>,
}

impl Replies {
    fn new() -> Self {
        Self {
            bufs: vec![0; OUT_SLOT * BATCH],
            heads: Vec::with_capacity(BATCH),
        }
    }

    fn len(&self) -> usize {
        self.heads.len()
    }

    /// The slot the next reply is written into; `None` when the batch is full (a GRO batch can
    /// carry more datagrams than there are slots: the rest wait for the next flush).
    fn next_slot(&mut self) -> Option<&mut [u8]> {
        let i = self.heads.len();
        self.bufs.get_mut(i * OUT_SLOT..(i + 1) * OUT_SLOT)
    }

    fn push(&mut self, to: SocketAddr, from: Option<IpAddr>, len: usize) {
        self.heads.push((to, from, len));
    }

    fn iter(&self) -> impl Iterator<Item = (SocketAddr, Option<IpAddr>, &[u8])> {
        self.heads
            .iter()
            .enumerate()
            .map(|(i, &(to, from, len))| (to, from, &self.bufs[i * OUT_SLOT..i * OUT_SLOT + len]))
    }
}

/// Reads every datagram and routes it, on a thread of its own; the task ends when the thread
/// does (the socket failed), and aborting the task stops the thread at once: the socket is
/// shut for reading, which wakes a waiting receive (a receive timeout would do it too, but
/// would arm a timer for every wait and wake an idle server every period).
///
/// Why a thread: a server that sleeps between packets pays for every wake-up, and through the
/// runtime a wake-up is `epoll_wait`, the reactor's dispatch and the task's poll before the
/// receive. Measured at 500 packets/s on one core (BENCHMARKS.md, 2026-11-30), the runtime's
/// path cost the server 5–8 µs more per echoed packet than a thread waiting in `poll`; this
/// one waits in the receive call itself (Linux), which saves another 2–3 µs (`receive`).
/// Replies are sent inline and QUIC datagrams are queued to quinn as before.
pub async fn serve(sock: Arc<Udp>, shared: Arc<Shared>, quic_tx: mpsc::Sender<QuicDatagram>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let flag = stop.clone();
    let waker = sock.clone();
    let thread = std::thread::Builder::new()
        .name("udp-rx".into())
        .spawn(move || {
            receive(&sock, &shared, &quic_tx, &flag);
            drop(done_tx);
        });
    if let Err(e) = thread {
        tracing::error!("cannot start the UDP receive thread: {e}");
        return;
    }
    // Dropped when the task ends or is aborted: the thread sees the flag when the shutdown
    // wakes it. Nothing else receives on this socket (quinn and the page's peer get their
    // datagrams through queues), and sends are unaffected.
    struct StopOnDrop(Arc<AtomicBool>, Arc<Udp>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            self.1.shut_reading();
        }
    }
    let _stop = StopOnDrop(stop, waker);
    let _ = done_rx.await;
}

/// The receive loop: wait for datagrams, route them, send the replies; until the socket fails
/// or the task is gone. When to read and how much is `pace`'s policy.
///
/// One datagram per call while the thread sleeps between packets: a batch call costs more than
/// it saves there (its setup, and the second, empty receive of `MSG_WAITFORONE`), which
/// measured 1–3 µs per packet at 500 packets/s (BENCHMARKS.md). A call that came back at once
/// found a queue, so the loop drains it in batches until one comes back short. Under load
/// (thousands of packets a second) it holds: sleeps [`pace::HOLD_US`] and takes what came.
fn receive(sock: &Udp, shared: &Shared, quic_tx: &mpsc::Sender<QuicDatagram>, stop: &AtomicBool) {
    let mut rx = Received::new();
    let mut out = Replies::new();
    let mut pacer = Pacer::new(sock.stamps, shared.now_us());
    loop {
        let next = pacer.next();
        if next == Next::Hold {
            sock.holds.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_micros(pace::HOLD_US));
        }
        let asked = shared.now_us();
        let got = sock.recv_batch(&mut rx, next);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match got {
            Ok(n) => {
                // The same clock readings time the receive and stamp the batch. The realtime
                // one converts the kernel's stamps; read first, so that a delay between the
                // two can only shorten a hold (lengthen an RTT), never the other way.
                let wall = crate::control::wall();
                let now = shared.now_us();
                let routed = route_batch(&rx, n, (now, wall), &mut out, sock, shared, quic_tx);
                pacer.on_received((n, routed.pkts), now.saturating_sub(asked), now);
                if routed.uncorrected {
                    pacer.hold_off(now);
                }
            }
            Err(e) => {
                pacer.on_error(shared.now_us());
                // ICMP errors from earlier sends surface here; keep serving.
                let transient = matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::NetworkUnreachable
                        | io::ErrorKind::Interrupted
                );
                if !transient {
                    tracing::error!("UDP receive failed: {e}");
                    return;
                }
            }
        }
    }
}

/// What a batch held, for the receive policy.
struct Routed {
    /// Datagrams, a GRO train counted by its segments.
    pkts: usize,
    /// Any datagram whose RTT the client measures without the server's hold taken out: STUN
    /// (its RTT is the round trip of the Binding) and the test page's traffic.
    uncorrected: bool,
}

/// Routes `n` received datagrams, read at `now` (and `wall`, the realtime clock since the Unix
/// epoch), and sends the replies they caused. An echo reply says when its request reached the
/// socket, where the kernel stamped that.
fn route_batch(
    rx: &Received,
    n: usize,
    (now, wall): (u64, std::time::Duration),
    out: &mut Replies,
    sock: &Udp,
    shared: &Shared,
    quic_tx: &mpsc::Sender<QuicDatagram>,
) -> Routed {
    let mut routed = Routed {
        pkts: 0,
        uncorrected: false,
    };
    // One clock reading and one lock per batch, not per datagram.
    let mut core = shared.core();
    core.set_wall_ms(wall.as_millis() as u64);
    let real_ns = wall.as_nanos() as u64;
    for i in 0..n {
        let (meta, data) = rx.datagram(i);
        let at = EchoAt::new(now, pace::received_us(now, real_ns, rx.stamps[i]));
        let (src, dst) = (meta.addr, meta.dst_ip);
        // With GRO the kernel may hand over several datagrams of one sender in one buffer.
        // An empty datagram (or one cut short, handed over as empty) is still counted.
        let pkts = data.chunks(meta.stride.max(1));
        for pkt in pkts.chain(data.is_empty().then_some(&[][..])) {
            if out.next_slot().is_none() {
                drop(core);
                sock.send_batch(out);
                out.heads.clear();
                core = shared.core();
            }
            routed.uncorrected |= route(&mut core, shared, quic_tx, at, (src, dst), pkt, out);
            routed.pkts += 1;
        }
    }
    drop(core);
    if out.len() > 0 {
        sock.send_batch(out);
        out.heads.clear();
    }
    routed
}

/// One datagram through the first-byte demultiplexer: STUN and echo are answered into `out`,
/// QUIC is queued to quinn, the rest is counted and dropped. Whether it was STUN or for the
/// test page's peer (traffic whose RTT no stamp corrects: see `Routed`).
fn route(
    core: &mut Core,
    shared: &Shared,
    quic_tx: &mpsc::Sender<QuicDatagram>,
    at: EchoAt,
    (src, dst): (SocketAddr, Option<IpAddr>),
    pkt: &[u8],
    out: &mut Replies,
) -> bool {
    let now = at.now_us();
    let Some(slot) = out.next_slot() else {
        return false;
    };
    let kind = classify(pkt);
    let mut paged = false;
    let reply = match kind {
        // STUN for a browser test page session's ufrag goes to its WebRTC peer; the rest is
        // probe-client's (or nobody's) and the core answers it.
        Kind::Stun => match shared.web() {
            Some(web) if web.wants_udp(Kind::Stun, src, pkt) => {
                to_web(web, (src, dst), pkt);
                None
            }
            _ => core.on_stun(now, canonical(src), pkt, slot),
        },
        // The exact address: path-MTU answers go only to where verified echo came from.
        Kind::Echo => core.on_echo(at, canonical(src), Transport::Udp, pkt, slot),
        Kind::Quic => {
            if shared.quic_gate().check(pkt, now) != quic::Verdict::Pass {
                core.stats.drop_quic_invalid += 1;
            } else if quic_tx.try_send((pkt.to_vec(), src, dst)).is_err() {
                core.stats.drop_quic_queue += 1;
            }
            None
        }
        // DTLS from an address a browser test page session learnt goes to its peer.
        Kind::Dtls => {
            match shared.web() {
                Some(web) if web.wants_udp(Kind::Dtls, src, pkt) => {
                    to_web(web, (src, dst), pkt);
                    paged = true;
                }
                _ => core.stats.drop_not_ours += 1,
            }
            None
        }
        Kind::Other => {
            core.stats.drop_not_ours += 1;
            None
        }
    };
    if let Some(len) = reply {
        out.push(src, dst, len);
    }
    paged || kind == Kind::Stun
}

/// Queues a datagram for the test page's peer, which answers from its own task (through
/// [`Udp::send_from`]); `src` as received, so replies go to the same form of the address.
/// A full queue drops it; the peer counts that (`PeerDrops::queue_full`).
fn to_web(web: &crate::web::peer::Peer, (src, dst): (SocketAddr, Option<IpAddr>), pkt: &[u8]) {
    let _ = web.udp_in(src, dst, pkt);
}

/// The DF setting of the shared socket around one downstream path-MTU answer (Linux).
/// IPv4: `IP_PMTUDISC_PROBE` sets DF and ignores the learnt path MTU, `IP_PMTUDISC_DONT` clears
/// DF. IPv6 has no DF bit: `IPV6_PMTUDISC_PROBE` with `IPV6_DONTFRAG` never fragments here,
/// `IPV6_PMTUDISC_WANT` without it lets this host fragment to the path MTU it learnt.
#[cfg(target_os = "linux")]
mod df_mode {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// The options as they were: (IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, IPV6_DONTFRAG).
    pub type Saved = [Option<libc::c_int>; 3];

    const OPTS: [(libc::c_int, libc::c_int); 3] = [
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
    ];

    fn get(sock: &UdpSocket, (level, name): (libc::c_int, libc::c_int)) -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v and len are valid for the call; the descriptor is the socket's.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(v)
    }

    /// Sets an integer socket option; whether the socket took it.
    pub fn put(
        sock: &UdpSocket,
        (level, name): (libc::c_int, libc::c_int),
        v: libc::c_int,
    ) -> bool {
        // SAFETY: v outlives the call; the descriptor is the socket's.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    }

    /// Sets DF on or off (each option the socket has; an IPv4 socket has no IPv6 ones).
    pub fn set(sock: &UdpSocket, df: bool) -> Saved {
        let saved = OPTS.map(|o| get(sock, o));
        let want = if df {
            [libc::IP_PMTUDISC_PROBE, libc::IPV6_PMTUDISC_PROBE, 1]
        } else {
            [libc::IP_PMTUDISC_DONT, libc::IPV6_PMTUDISC_WANT, 0]
        };
        for ((o, v), had) in OPTS.into_iter().zip(want).zip(saved) {
            if had.is_some() {
                put(sock, o, v);
            }
        }
        saved
    }

    pub fn restore(sock: &UdpSocket, saved: Saved) {
        for (o, v) in OPTS.into_iter().zip(saved) {
            if let Some(v) = v {
                put(sock, o, v);
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod mmsg;

/// quinn's view of the shared socket: receives only what the demultiplexer queued for it.
pub struct QuicSocket {
    io: Arc<Udp>,
    rx: Mutex<mpsc::Receiver<QuicDatagram>>,
    /// Told which connection IDs the server issues, so the demultiplexer can let the client's
    /// later Initials through.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QuicSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicSocket")
    }
}

impl QuicSocket {
    pub fn new(io: Arc<Udp>, shared: Arc<Shared>) -> (Self, mpsc::Sender<QuicDatagram>) {
        let (tx, rx) = mpsc::channel(QUIC_QUEUE);
        (
            Self {
                io,
                rx: Mutex::new(rx),
                shared,
            },
            tx,
        )
    }
}

impl AsyncUdpSocket for QuicSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable {
            io: self.io.clone(),
            wait: None,
        })
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        // Noted before it leaves: the receive thread may take the client's answer to it before
        // this thread runs again, and that answer passes the gate only once its ID is noted.
        if t.contents.first().is_some_and(|b| b & 0x80 != 0) {
            let now = self.shared.now_us();
            self.shared.quic_gate().note_sent(t.contents, now);
        }
        // quinn names the local address of the connection; replies leave from it.
        match self.io.send_from(t.destination, t.src_ip, t.contents) {
            // Any other error (an ICMP error for that peer, a datagram too large) would end the
            // connection: quinn's driver returns it. quinn-udp's own send logs and drops such a
            // datagram instead (quinn-udp 0.5.16 src/unix.rs, `send`: "will only ever return
            // errors of kind WouldBlock"), and loss recovery resends.
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                tracing::debug!("QUIC send to {} failed: {e}", t.destination);
                Ok(())
            }
            r => r,
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        match rx.poll_recv(cx) {
            Poll::Ready(Some((data, addr, dst_ip))) => {
                let len = data.len().min(bufs[0].len());
                bufs[0][..len].copy_from_slice(&data[..len]);
                meta[0] = RecvMeta {
                    addr,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip,
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "demultiplexer stopped",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

/// Write-readiness for one quinn task. The socket is normally writable (UDP sends do not wait
/// for the peer), so this answers at once; only after a send found the buffer full does it
/// register a duplicate of the socket for writability, and drops that registration once there
/// is room again, so replies never cost EPOLLOUT wake-ups.
struct Writable {
    io: Arc<Udp>,
    wait: Option<AsyncFd<std::net::UdpSocket>>,
}

impl std::fmt::Debug for Writable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writable")
    }
}

impl UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        if !self.io.send_blocked.load(Ordering::Acquire) {
            self.wait = None;
            return Poll::Ready(Ok(()));
        }
        if self.wait.is_none() {
            let dup = self.io.sock.try_clone()?;
            self.wait = Some(register_writable(dup)?);
        }
        let wait = self.wait.as_ref().expect("set above");
        match wait.poll_write_ready(cx) {
            Poll::Ready(Ok(_)) => {
                self.io.send_blocked.store(false, Ordering::Release);
                self.wait = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdUdp;
    use std::time::Duration;

    /// The shared socket as the server makes it (blocking), with a receive timeout so that a
    /// lost datagram fails a test instead of hanging it.
    fn blocking_udp(bind: &str) -> Udp {
        let udp = Udp::new(StdUdp::bind(bind).expect("bind")).expect("udp");
        udp.sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        udp
    }

    fn bound() -> StdUdp {
        let s = StdUdp::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s
    }

    #[test]
    fn one_call_takes_a_batch_and_one_call_answers_it() {
        let server = bound();
        server.set_nonblocking(true).expect("nonblocking");
        let to = server.local_addr().expect("addr");
        let clients = [bound(), bound()];
        for (i, len) in [60usize, 1, 1200, 300, 0].into_iter().enumerate() {
            clients[i % 2]
                .send_to(&vec![i as u8 + 1; len], to)
                .expect("send");
        }
        let mut rx = Received::new();
        let n = mmsg::recv(&server, &mut rx, BATCH, false, true).expect("recv");
        assert_eq!(n, 5);
        let mut out = Replies::new();
        for i in 0..n {
            let (meta, data) = rx.datagram(i);
            let want = clients[i % 2].local_addr().expect("addr");
            assert_eq!((meta.addr, meta.len), (want, [60, 1, 1200, 300, 0][i]));
            assert!(data.iter().all(|&b| b == i as u8 + 1));
            // Answer with the datagram's length and index, as the core writes into the slot.
            let slot = out.next_slot().expect("room");
            slot[..4].copy_from_slice(&[i as u8, 0xAA, 0xBB, 0xCC]);
            out.push(meta.addr, None, 4);
        }
        // Nothing more queued: the next call reports it, for a batch and for one datagram.
        let again = mmsg::recv(&server, &mut rx, BATCH, false, true);
        assert_eq!(again.expect_err("empty").kind(), io::ErrorKind::WouldBlock);
        let again = mmsg::recv(&server, &mut rx, 1, false, true);
        assert_eq!(again.expect_err("empty").kind(), io::ErrorKind::WouldBlock);
        mmsg::send(&server, out.iter()).expect("send");
        let mut got = [Vec::new(), Vec::new()];
        let mut buf = [0u8; 64];
        // Client 0 sent datagrams 0, 2 and 4; client 1 sent 1 and 3.
        for (c, count) in [(0, 3), (1, 2)] {
            for _ in 0..count {
                let (len, from) = clients[c].recv_from(&mut buf).expect("reply");
                assert_eq!((len, from), (4, to));
                got[c].push(buf[0]);
            }
        }
        assert_eq!(got, [vec![0, 2, 4], vec![1, 3]]);
        // A later batch into the same slots gets whole addresses and its own bytes.
        for (i, c) in clients.iter().enumerate().rev() {
            c.send_to(&[0x70 + i as u8; 90], to).expect("send");
        }
        let n = mmsg::recv(&server, &mut rx, BATCH, false, true).expect("recv");
        assert_eq!(n, 2);
        for (i, c) in [1, 0].into_iter().enumerate() {
            let (meta, data) = rx.datagram(i);
            assert_eq!(meta.addr, clients[c].local_addr().expect("addr"));
            assert_eq!(data, &[0x70 + c as u8; 90][..]);
        }
        // One at a time (the call a sleeping server makes): the oldest first, then the next.
        for (c, len) in [(0, 7), (1, 1200)] {
            clients[c].send_to(&vec![0x60; len], to).expect("send");
        }
        for (c, len) in [(0, 7), (1, 1200)] {
            let n = mmsg::recv(&server, &mut rx, 1, false, true).expect("recv");
            let (meta, data) = rx.datagram(0);
            assert_eq!(
                (n, meta.addr, meta.stride),
                (1, clients[c].local_addr().expect("a"), len)
            );
            assert_eq!(data, &vec![0x60; len][..]);
        }
    }

    /// The receive thread sleeps in the receive call, so the socket must be blocking, whatever
    /// mode it came in; sends never wait because each passes MSG_DONTWAIT.
    #[test]
    fn the_shared_socket_is_left_blocking() {
        for bind in ["127.0.0.1:0", "0.0.0.0:0", "[::]:0"] {
            let sock = StdUdp::bind(bind).expect("bind");
            sock.set_nonblocking(true).expect("nonblocking");
            let udp = Udp::new(sock).expect("udp");
            let fd = std::os::fd::AsRawFd::as_raw_fd(&udp.sock);
            // SAFETY: F_GETFL on an open descriptor.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            assert_eq!(flags & libc::O_NONBLOCK, 0, "{bind}");
        }
    }

    /// A dual-stack wildcard bind: IPv6 datagrams carry their local address in IPV6_PKTINFO,
    /// IPv4 ones as IPv4-mapped, and each reply leaves from the address its client wrote to.
    #[test]
    fn a_dual_stack_bind_answers_ipv6_and_ipv4_mapped_from_the_address_written_to() {
        let udp = blocking_udp("[::]:0");
        let port = udp.local_addr().expect("addr").port();
        let v6 = StdUdp::bind("[::1]:0").expect("bind ::1");
        v6.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let cases: [(&StdUdp, SocketAddr, IpAddr); 3] = [
            (
                &v6,
                SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
                "::1".parse().expect("ip"),
            ),
            (
                &bound(),
                SocketAddr::from(([127, 0, 0, 2], port)),
                "::ffff:127.0.0.2".parse().expect("ip"),
            ),
            (
                &bound(),
                SocketAddr::from(([127, 0, 0, 1], port)),
                "::ffff:127.0.0.1".parse().expect("ip"),
            ),
        ];
        let mut rx = Received::new();
        for (client, to, local) in cases {
            client.send_to(b"hello", to).expect("send");
            assert_eq!(udp.recv_batch(&mut rx, Next::Wait(1)).expect("recv"), 1);
            let (meta, data) = rx.datagram(0);
            assert_eq!((meta.dst_ip, data), (Some(local), &b"hello"[..]));
            udp.send_from(meta.addr, meta.dst_ip, b"hi").expect("reply");
            let mut buf = [0u8; 8];
            assert_eq!(client.recv_from(&mut buf).expect("reply"), (2, to));
        }
    }

    /// On a wildcard bind, each datagram's local address is read and the reply leaves from it:
    /// a client that wrote to 127.0.0.2 hears back from 127.0.0.2, not from the address the
    /// kernel would pick for its own (127.0.0.1). A GSO train from one sender may come as one
    /// buffer (GRO), cut at its segment size.
    #[test]
    fn a_wildcard_bind_reads_the_local_address_answers_from_it_and_takes_gro_trains() {
        let udp = blocking_udp("0.0.0.0:0");
        let port = udp.local_addr().expect("addr").port();
        let client = bound();
        let mut rx = Received::new();
        for last in [1u8, 2] {
            let to = SocketAddr::from(([127, 0, 0, last], port));
            client.send_to(&[last; 40], to).expect("send");
            assert_eq!(udp.recv_batch(&mut rx, Next::Wait(BATCH)).expect("recv"), 1);
            let (meta, data) = rx.datagram(0);
            assert_eq!((meta.dst_ip, data), (Some(to.ip()), &[last; 40][..]));
            udp.send_from(meta.addr, meta.dst_ip, &[last, 9])
                .expect("reply");
            let mut buf = [0u8; 8];
            assert_eq!(client.recv_from(&mut buf).expect("reply"), (2, to));
            // And in a batch.
            let mut out = Replies::new();
            out.next_slot().expect("room")[..1].copy_from_slice(&[last]);
            out.push(meta.addr, meta.dst_ip, 1);
            out.next_slot().expect("room")[..1].copy_from_slice(&[last]);
            out.push(meta.addr, meta.dst_ip, 1);
            udp.send_batch(&out);
            for _ in 0..2 {
                assert_eq!(client.recv_from(&mut buf).expect("reply"), (1, to));
            }
        }
        // Three 100-byte datagrams in one send (UDP_SEGMENT); the kernel may hand them over
        // as one buffer (GRO) or one by one, and every byte arrives either way.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
        let seg: libc::c_int = 100;
        // SAFETY: a valid option value of the right size on an open socket.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&seg as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "UDP_SEGMENT: {}", io::Error::last_os_error());
        let train: Vec<u8> = (0..300).map(|i| (i / 100) as u8).collect();
        client
            .send_to(&train, SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("send");
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = udp.recv_batch(&mut rx, Next::Wait(BATCH)).expect("recv");
            for i in 0..n {
                let (meta, data) = rx.datagram(i);
                got.extend(data.chunks(meta.stride).map(<[u8]>::to_vec));
            }
        }
        let want: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn the_loop_answers_a_burst_over_several_batches_and_counts_the_rest() {
        // The plain path (one address) and the wildcard path (IP_PKTINFO).
        for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
            burst_through(bind).await;
        }
    }

    /// A serving loop on `bind` with one echo session for 127.0.0.1, and its key.
    struct EchoLoop {
        sock: Arc<Udp>,
        to: SocketAddr,
        shared: Arc<Shared>,
        task: tokio::task::JoinHandle<()>,
        id: u64,
        key: probe_proto::echo::SessionKey,
    }

    fn echo_loop(bind: &str) -> EchoLoop {
        use probe_proto::msg::{Hello, Profile};
        use probe_proto::session::Limits;
        let sock = Arc::new(Udp::new(StdUdp::bind(bind).expect("bind")).expect("udp"));
        let to = SocketAddr::new(
            [127, 0, 0, 1].into(),
            sock.local_addr().expect("addr").port(),
        );
        let hello = Hello {
            proto_min: 1,
            proto_max: 1,
            client_version: "t".into(),
            site: "s".into(),
            profile: Profile::Audio,
            interval_us: 20_000,
            size: 160,
            duration_ms: 5_000,
            pad: Vec::new(),
            time_ms: 0,
            nonce: [0; 16],
        };
        let (id, key) = (42u64, [7u8; 32]);
        // A session may send at load-mode rates (the default allows 1 000 packets/s).
        let limits = Limits {
            min_interval_us: 10,
            ..Limits::default()
        };
        let mut core = Core::new(limits);
        let peer: IpAddr = "127.0.0.1".parse().expect("literal");
        core.open(0, peer, &hello, id, key, None).expect("open");
        let shared = Arc::new(Shared::new(core, None));
        let (quic_tx, _quic_rx) = mpsc::channel(8);
        let task = tokio::spawn(serve(sock.clone(), shared.clone(), quic_tx));
        EchoLoop {
            sock,
            to,
            shared,
            task,
            id,
            key: probe_proto::echo::SessionKey::new(&key),
        }
    }

    async fn burst_through(bind: &str) {
        use probe_proto::echo;
        let EchoLoop {
            to,
            shared,
            task,
            id,
            key: k,
            ..
        } = echo_loop(bind);
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut buf = [0u8; 2048];
        // More requests than one receive batch holds, back to back.
        let count = BATCH as u32 + 8;
        for seq in 0..count {
            let n = echo::encode_request(&k, id, seq, 0, 160, &mut buf);
            client.send_to(&buf[..n], to).await.expect("send");
        }
        // An empty datagram and one outside every demux range: counted, not answered.
        client.send_to(&[], to).await.expect("send");
        client.send_to(&[10u8; 20], to).await.expect("send");
        let mut seqs = Vec::new();
        for _ in 0..count {
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("a reply in time")
                .expect("recv");
            seqs.push(
                echo::decode_reply(&k, &buf[..n])
                    .expect("a valid reply")
                    .seq,
            );
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..count).collect::<Vec<_>>());
        for _ in 0..200 {
            if shared.core().stats.drop_not_ours == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = shared.core().stats;
        assert_eq!(
            (stats.echo_replies, stats.drop_not_ours),
            (u64::from(count), 2)
        );
        task.abort();
    }

    /// An aborted loop ends its thread, and lets go of the socket, without any datagram.
    #[tokio::test]
    async fn an_aborted_loop_lets_go_of_its_socket() {
        let lp = echo_loop("127.0.0.1:0");
        // One answered request: the thread is running and waiting for the next.
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut buf = [0u8; 2048];
        let n = probe_proto::echo::encode_request(&lp.key, lp.id, 0, 0, 100, &mut buf);
        client.send_to(&buf[..n], lp.to).await.expect("send");
        tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("a reply in time")
            .expect("recv");
        let sock = Arc::downgrade(&lp.sock);
        drop(lp.sock);
        lp.task.abort();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while sock.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread still holds the socket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_full_reply_batch_has_no_slot() {
        let mut out = Replies::new();
        let to: SocketAddr = "127.0.0.1:9".parse().expect("literal");
        for _ in 0..BATCH {
            assert!(out.next_slot().is_some_and(|s| s.len() == OUT_SLOT));
            out.push(to, None, 10);
        }
        assert!(out.next_slot().is_none());
        assert_eq!(out.iter().count(), BATCH);
    }

    /// The kernel stamps each datagram's arrival; a take without waiting returns what is
    /// queued, and nothing (not an error, not a wait) when the queue is empty.
    #[test]
    fn a_take_without_waiting_reads_arrival_stamps() {
        let real = || {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            t.expect("after 1970").as_nanos() as u64
        };
        for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
            let udp = blocking_udp(bind);
            assert!(udp.stamps, "SO_TIMESTAMPNS");
            let to = SocketAddr::new(
                [127, 0, 0, 1].into(),
                udp.local_addr().expect("addr").port(),
            );
            let client = bound();
            let mut rx = Received::new();
            assert_eq!(udp.recv_batch(&mut rx, Next::Now).expect("empty"), 0);
            // The first socket on a host to ask has its stamps switched on by a kernel work
            // item; until then datagrams are stamped when read. Wait for a real stamp.
            let mut warm = false;
            for _ in 0..500 {
                client.send_to(&[0x80; 8], to).expect("send");
                std::thread::sleep(Duration::from_millis(1));
                let read = real();
                assert_eq!(udp.recv_batch(&mut rx, Next::Wait(BATCH)).expect("recv"), 1);
                if rx.stamps[0] != 0 && rx.stamps[0] + 500_000 < read {
                    warm = true;
                    break;
                }
            }
            assert!(warm, "no arrival stamp before the read in 500 tries");
            let before = real();
            for len in [20, 30, 40] {
                client.send_to(&vec![0x80; len], to).expect("send");
            }
            let after = real();
            std::thread::sleep(Duration::from_millis(2));
            // A take without waiting; on a loaded host the rest may come a moment later.
            let mut got = Vec::new();
            let mut next = Next::Hold;
            while got.len() < 3 {
                let n = udp.recv_batch(&mut rx, next).expect("recv");
                got.extend((0..n).map(|i| (rx.datagram(i).1.len(), rx.stamps[i])));
                next = Next::Wait(BATCH);
            }
            assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [20, 30, 40]);
            for &(_, stamp) in &got {
                assert!(
                    before <= stamp && stamp <= after,
                    "{before} {stamp} {after}"
                );
            }
            assert!(got[0].1 <= got[1].1 && got[1].1 <= got[2].1);
            // The datagram a sleeping one-address bind waits for comes without one.
            client.send_to(&[0x80; 8], to).expect("send");
            assert_eq!(udp.recv_batch(&mut rx, Next::Wait(1)).expect("recv"), 1);
            assert_eq!(rx.stamps[0] == 0, bind == "127.0.0.1:0", "{bind}");
        }
    }

    /// Under load the loop holds requests and says so: each reply's `server rx` is when its
    /// request arrived, before `server tx` by the time it was held, which the client takes out
    /// of the RTT, and never longer than the round trip the client saw. Requests come as load
    /// mode's do: 20 at once every millisecond, 20 000 a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loaded_loop_holds_requests_and_reports_how_long() {
        use probe_proto::echo;
        let lp = echo_loop("127.0.0.1:0");
        let (to, id, key) = (lp.to, lp.id, lp.key.clone());
        let (bursts, per_burst) = (30u32, 20u32);
        let count = bursts * per_burst;
        let start = std::time::Instant::now();
        let clock = move || start.elapsed().as_micros() as u64;
        let mut rounds = tokio::task::spawn_blocking(move || {
            let client = bound();
            // Read while sending: unread replies could overflow the receive buffer.
            let reader = client.try_clone().expect("clone");
            let rkey = key.clone();
            let replies = std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut got = Vec::new();
                for _ in 0..count {
                    let Ok((n, _)) = reader.recv_from(&mut buf) else {
                        break;
                    };
                    let seen_us = clock();
                    let r = echo::decode_reply(&rkey, &buf[..n]).expect("a valid reply");
                    assert!(r.server_recv_us <= r.server_send_us);
                    let hold = r.server_send_us - r.server_recv_us;
                    got.push((hold, seen_us - r.client_send_us));
                }
                got
            });
            let mut buf = [0u8; 2048];
            for b in 0..bursts {
                for i in 0..per_burst {
                    let seq = b * per_burst + i;
                    let n = echo::encode_request(&key, id, seq, clock(), 100, &mut buf);
                    client.send_to(&buf[..n], to).expect("send");
                }
                // On schedule (a burst each millisecond from the start), so a late wake-up
                // is caught up and the rate stays 20 000 a second.
                let due = Duration::from_millis(u64::from(b) + 1);
                std::thread::sleep(due.saturating_sub(start.elapsed()));
            }
            replies.join().expect("replies")
        })
        .await
        .expect("client");
        // Requests or replies may be lost in a receive buffer while its reader waits for a core
        // (two here, shared by every test running): this test is about the holds.
        let stats = lp.shared.core().stats;
        assert!(
            rounds.len() * 2 >= count as usize,
            "{} replies",
            rounds.len()
        );
        assert_eq!(stats.echo_replies, stats.echo_requests);
        // The time a request spent in the server is within the round trip the client saw.
        for &(hold, round_trip) in &rounds {
            assert!(
                hold <= round_trip,
                "held {hold} µs of a {round_trip} µs round trip"
            );
        }
        // It held, and held requests waited anything up to HOLD_US (and the timer's slack),
        // about half of it on average; a loop that never held answers most within microseconds.
        let holds = lp.sock.holds.load(Ordering::Relaxed);
        assert!(holds > 0, "the thread never held");
        rounds.sort_unstable();
        let median = rounds[rounds.len() / 2].0;
        assert!(median >= pace::HOLD_US / 5, "median hold {median} µs");
        lp.task.abort();
    }
}
