//! STUN over UDP, and the echo drivers: datagrams on one connected UDP socket and RFC 4571
//! frames on a TCP link, both thin loops over the same sans-IO [`EchoCore`].

use crate::control::{rand_bytes, read_frame, stun_request, TcpLink};
use crate::progress::Progress;
use probe_proto::client::{EchoCore, EchoOutcome, Schedule};
use probe_proto::echo::SessionKey;
use probe_proto::{frame, stun};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::time::sleep_until;

/// The client's monotonic clock in microseconds since the run started.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }

    /// The instant of a time of this clock.
    fn at(&self, us: u64) -> Instant {
        self.0 + Duration::from_micros(us)
    }
}

/// The echo loop's timer. tokio's timer wheel has millisecond ticks, so a send due at x.3 ms
/// left at (x+1) ms plus the kernel's timer slack: up to a millisecond of send-time jitter.
/// On Linux a timerfd with an absolute CLOCK_MONOTONIC deadline wakes within microseconds;
/// elsewhere (or if no timerfd can be made) tokio's timer is used.
enum SendTimer {
    #[cfg(target_os = "linux")]
    Precise(precise::TimerFd),
    Tokio,
}

impl SendTimer {
    fn new() -> Self {
        #[cfg(target_os = "linux")]
        if let Some(t) = precise::TimerFd::new() {
            return Self::Precise(t);
        }
        Self::Tokio
    }

    async fn sleep_until(&mut self, at: Instant) {
        match self {
            #[cfg(target_os = "linux")]
            Self::Precise(t) => t.sleep_until(at).await,
            Self::Tokio => sleep_until(tokio::time::Instant::from_std(at)).await,
        }
    }
}

#[cfg(target_os = "linux")]
mod precise {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Instant;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub struct TimerFd(AsyncFd<OwnedFd>);

    fn monotonic_now() -> libc::timespec {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts
    }

    impl TimerFd {
        pub fn new() -> Option<Self> {
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if fd < 0 {
                return None;
            }
            // SAFETY: fd is a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: the AsyncFd owns the descriptor for the registration's whole life.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .ok()
                .map(Self)
        }

        /// Arms the timer for `at` (absolute, so a late wake-up is not carried forward) and
        /// waits for it.
        pub async fn sleep_until(&mut self, at: Instant) {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let now = monotonic_now();
            let ns = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: now.tv_sec
                        + left.as_secs() as libc::time_t
                        + (ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (ns % 1_000_000_000) as _,
                },
            };
            let fd = self.0.as_raw_fd();
            // SAFETY: fd is our timerfd and spec a valid itimerspec.
            let r = unsafe {
                libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
            };
            if r != 0 {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                return;
            }
            loop {
                let Ok(mut guard) = self.0.readable().await else {
                    return;
                };
                let mut ticks = [0u8; 8];
                // SAFETY: reads 8 bytes into a buffer of 8.
                let n = unsafe { libc::read(fd, ticks.as_mut_ptr().cast(), ticks.len()) };
                if n >= 0 {
                    return;
                }
                // Nothing yet (a readiness left from an earlier arming, whose count settime
                // reset): wait for this expiry.
                guard.clear_ready();
            }
        }
    }
}

/// What the session needs to sign echo packets.
pub struct EchoSession<'a> {
    pub id: u64,
    pub key: &'a SessionKey,
    pub schedule: &'a Schedule,
    pub clock: Clock,
    pub progress: &'a Progress,
    /// `--quiet-test`: nothing is sent for `.1` µs from `.0` µs into the phase.
    pub quiet: Option<(u64, u64)>,
}

/// STUN retransmission times (RFC 8489 §6.2.1 with a 250 ms RTO, shortened so that a blocked
/// path is concluded in under 3 s).
const STUN_SENDS_MS: [u64; 4] = [0, 250, 750, 1750];
pub const STUN_GIVE_UP: Duration = Duration::from_millis(2750);

pub struct StunAnswer {
    pub mapped: SocketAddr,
    pub rtt_ms: f64,
}

/// No STUN answer before the deadline; `refused` when a send drew "port unreachable".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoAnswer {
    pub refused: bool,
}

pub async fn udp_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(server).await?;
    Ok(s)
}

/// Binding request with retransmissions; padded so the answer is never larger than the request.
pub async fn udp_stun(sock: &UdpSocket, token: Option<&[u8; 32]>) -> Result<StunAnswer, NoAnswer> {
    let t0 = Instant::now();
    let give_up = tokio::time::Instant::from_std(t0 + STUN_GIVE_UP);
    let mut buf = [0u8; 1500];
    // Each send is its own transaction, so the RTT is measured from the send that was
    // answered: a first request lost to a flood does not add the resend delay to the figure.
    let mut sent: Vec<([u8; 12], Instant)> = Vec::with_capacity(STUN_SENDS_MS.len());
    let mut refused = false;
    loop {
        let resend_at = STUN_SENDS_MS
            .get(sent.len())
            .map(|ms| tokio::time::Instant::from_std(t0 + Duration::from_millis(*ms)));
        tokio::select! {
            _ = sleep_until(resend_at.unwrap_or(give_up)), if resend_at.is_some() => {
                let tid: [u8; 12] = rand_bytes();
                // The ICMP error of an earlier send may surface here instead of at recv.
                if let Err(e) = sock.send(&stun_request(tid, token)).await {
                    refused |= is_refusal(&e);
                }
                sent.push((tid, Instant::now()));
            }
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    if let Some(answer) = stun_answer(&buf[..n], &sent) {
                        return Ok(answer);
                    }
                }
                // An ICMP unreachable for an earlier send (Windows reports it as a reset);
                // a later send may still be answered, so keep waiting until the deadline.
                Err(e) => refused |= is_refusal(&e),
            },
            _ = sleep_until(give_up) => return Err(NoAnswer { refused }),
        }
    }
}

/// "Port unreachable" on a connected UDP socket: ECONNREFUSED (Linux, macOS), WSAECONNRESET
/// (Windows).
pub(crate) fn is_refusal(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionReset)
}

/// A Binding success for one of our transactions, timed from that transaction's send.
fn stun_answer(pkt: &[u8], sent: &[([u8; 12], Instant)]) -> Option<StunAnswer> {
    let m = stun::decode(pkt).ok()?;
    if m.class != stun::Class::Success {
        return None;
    }
    let (_, at) = sent.iter().find(|(tid, _)| *tid == m.tid)?;
    Some(StunAnswer {
        mapped: m.xor_mapped?,
        rtt_ms: at.elapsed().as_secs_f64() * 1000.0,
    })
}

/// One way of moving echo packets; everything else is the core's.
trait Wire {
    const LABEL: &'static str;
    /// Puts every packet the core has due on the wire; returns how many, or why the
    /// connection broke.
    async fn send_due(&mut self, core: &mut EchoCore, clock: Clock) -> Result<usize, String>;
    /// The next datagram or frame payload; `Ok(None)` when a receive failed without ending
    /// the phase.
    async fn recv(&mut self) -> Result<Option<&[u8]>, String>;
}

/// The echo loop shared by both transports: send what is due, then wait for a reply or the
/// core's next timer.
async fn drive<W: Wire>(wire: &mut W, s: &EchoSession<'_>) -> EchoOutcome {
    let (clock, label) = (s.clock, W::LABEL);
    let mut core = EchoCore::new(s.id, s.key.clone(), s.schedule.clone(), clock.us());
    if let Some((after, len)) = s.quiet {
        core = core.with_quiet(after, len);
    }
    let mut timer = SendTimer::new();
    loop {
        match wire.send_due(&mut core, clock).await {
            Ok(0) => {}
            Ok(_) => s.progress.show(&core.progress(label, clock.us())),
            Err(why) => core.on_broken(clock.us(), why),
        }
        let Some(at) = core.poll_timeout() else {
            break;
        };
        tokio::select! {
            biased;
            r = wire.recv() => match r {
                Ok(Some(bytes)) => core.on_reply(clock.us(), bytes),
                Ok(None) => {}
                Err(why) => core.on_broken(clock.us(), why),
            },
            _ = timer.sleep_until(clock.at(at)) => core.handle_timeout(clock.us()),
        }
    }
    if core.malformed() + core.foreign() + core.late() > 0 {
        tracing::debug!(
            "{label} echo: dropped {} malformed, {} of another session, {} late",
            core.malformed(),
            core.foreign(),
            core.late()
        );
    }
    core.finish()
}

struct UdpWire<'a> {
    sock: &'a UdpSocket,
    buf: [u8; 2048],
}

impl Wire for UdpWire<'_> {
    const LABEL: &'static str = "UDP";

    async fn send_due(&mut self, core: &mut EchoCore, clock: Clock) -> Result<usize, String> {
        let mut n = 0;
        while let Some(t) = core.poll_transmit(clock.us()) {
            // A send error (ICMP unreachable, full buffer) is loss as the user would see it;
            // never wait for buffer space, which would stall the schedule.
            let _ = self.sock.try_send(t.bytes);
            n += 1;
        }
        Ok(n)
    }

    async fn recv(&mut self) -> Result<Option<&[u8]>, String> {
        // Errors are ICMP unreachables from earlier sends: nothing arrived, keep going.
        Ok(self
            .sock
            .recv(&mut self.buf)
            .await
            .ok()
            .map(|n| &self.buf[..n]))
    }
}

struct TcpWire<'a> {
    link: &'a mut TcpLink,
    batch: Vec<u8>,
    frame: Vec<u8>,
}

impl Wire for TcpWire<'_> {
    const LABEL: &'static str = "TCP";

    async fn send_due(&mut self, core: &mut EchoCore, clock: Clock) -> Result<usize, String> {
        self.batch.clear();
        let mut n = 0;
        while let Some(t) = core.poll_transmit(clock.us()) {
            self.batch.extend(frame::encode(t.bytes));
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let now = clock.us();
        let left = Duration::from_micros(core.write_deadline_us(now) - now);
        match tokio::time::timeout(left, self.link.wr.write_all(&self.batch)).await {
            Ok(Ok(())) => Ok(n),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the TCP connection stopped taking data".into()),
        }
    }

    async fn recv(&mut self) -> Result<Option<&[u8]>, String> {
        self.frame = read_frame(&mut self.link.rd, &mut self.link.dec).await?;
        Ok(Some(&self.frame))
    }
}

pub async fn udp_echo(sock: &UdpSocket, s: &EchoSession<'_>) -> EchoOutcome {
    let mut wire = UdpWire {
        sock,
        buf: [0; 2048],
    };
    drive(&mut wire, s).await
}

/// Echo over the TCP link; a connection that breaks ends the phase with the reason.
pub async fn tcp_echo(link: &mut TcpLink, s: &EchoSession<'_>) -> EchoOutcome {
    let mut wire = TcpWire {
        link,
        batch: Vec::new(),
        frame: Vec::new(),
    };
    drive(&mut wire, s).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::echo as wire;
    use probe_proto::msg::Profile;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const KEY: [u8; 32] = [3; 32];
    const SESSION: u64 = 77;

    /// A server that ignores the first Binding (lost to a flood) and answers the resend: the
    /// RTT is the resend's, not 250 ms more.
    #[tokio::test]
    async fn a_closed_port_is_told_apart_from_silence() {
        // A port nothing listens on: the host answers "port unreachable" (loopback always does).
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let sock = udp_socket(addr).await.expect("socket");
        let got = udp_stun(&sock, None).await.err().expect("no answer");
        assert!(got.refused, "loopback answers a closed port with ICMP");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = tcp.local_addr().expect("addr");
        drop(tcp);
        let e = crate::control::TcpLink::connect(addr, None, Duration::from_secs(2))
            .await
            .err()
            .expect("refused");
        assert!(e.refused, "{e}");
        // A socket that stays silent: no refusal.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let sock = udp_socket(silent.local_addr().expect("addr"))
            .await
            .expect("socket");
        let got = udp_stun(&sock, None).await.err().expect("no answer");
        assert!(!got.refused);
    }

    #[tokio::test]
    async fn stun_rtt_is_timed_from_the_answered_send() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(server.local_addr().unwrap()).await.unwrap();
        let answer = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut seen = Vec::new();
            let mut from = None;
            for _ in 0..2 {
                let (n, f) = server.recv_from(&mut buf).await.unwrap();
                seen.push(stun::decode(&buf[..n]).unwrap().tid);
                from = Some(f);
            }
            let resp = stun::binding_response(seen[1], "192.0.2.9:4000".parse().unwrap(), None);
            server.send_to(&resp, from.unwrap()).await.unwrap();
            seen
        });
        let got = udp_stun(&client, None)
            .await
            .expect("the resend is answered");
        let seen = answer.await.unwrap();
        assert_ne!(seen[0], seen[1], "each send is its own transaction");
        assert_eq!(got.mapped, "192.0.2.9:4000".parse::<SocketAddr>().unwrap());
        assert!(
            got.rtt_ms < 200.0,
            "timed from the first send: {} ms",
            got.rtt_ms
        );
    }

    fn reply_to(req: &[u8]) -> Option<Vec<u8>> {
        let key = SessionKey::new(&KEY);
        wire::verify_request(&key, req).ok()?;
        let mut out = vec![0u8; req.len()];
        let n = wire::encode_reply(&key, req, 1, 2, &mut out);
        out.truncate(n);
        Some(out)
    }

    /// 200 ms of audio: ten packets 20 ms apart.
    async fn echo_with<F, Fut>(run: F) -> EchoOutcome
    where
        F: FnOnce(EchoSession<'static>) -> Fut,
        Fut: std::future::Future<Output = EchoOutcome>,
    {
        let key: &'static SessionKey = Box::leak(Box::new(SessionKey::new(&KEY)));
        let schedule: &'static Schedule =
            Box::leak(Box::new(Schedule::new(Profile::Audio, None, None, 0.2)));
        let progress: &'static Progress = Box::leak(Box::new(Progress::off()));
        run(EchoSession {
            id: SESSION,
            key,
            schedule,
            clock: Clock(Instant::now()),
            progress,
            quiet: None,
        })
        .await
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn precise_timer_never_wakes_early_and_survives_an_abandoned_wait() {
        let mut t = SendTimer::new();
        assert!(matches!(t, SendTimer::Precise(_)));
        // A wait abandoned before its expiry (a reply came first) leaves the timer armed.
        tokio::select! {
            _ = t.sleep_until(Instant::now() + Duration::from_millis(50)) => panic!("too early"),
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
        for i in 0..20 {
            let at = Instant::now() + Duration::from_micros(1500 + i * 100);
            t.sleep_until(at).await;
            let now = Instant::now();
            assert!(now >= at, "woke {:?} early", at - now);
            assert!(
                now - at < Duration::from_millis(500),
                "woke {:?} late",
                now - at
            );
        }
    }

    #[tokio::test]
    async fn udp_driver_sends_the_schedule_and_matches_replies() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                // Garbage first: the core drops it and the run is unaffected.
                let _ = server.send_to(b"noise", from).await;
                if let Some(r) = reply_to(&buf[..n]) {
                    let _ = server.send_to(&r, from).await;
                }
            }
        });
        let sock = udp_socket(addr).await.expect("socket");
        // try_send only sends once the runtime has seen the socket writable; in a run the STUN
        // exchange has done that.
        sock.writable().await.expect("writable");
        let o = echo_with(|s| async move { udp_echo(&sock, &s).await }).await;
        assert!((5..=10).contains(&o.stats.sent()), "{}", o.stats.sent());
        assert_eq!(o.stats.received(), o.stats.sent());
        assert!(!o.stopped_midway() && o.broken.is_none());
    }

    async fn tcp_server(answer: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.expect("accept");
            let mut dec = frame::Decoder::new();
            let mut buf = [0u8; 4096];
            let mut answered = 0;
            while answered < answer {
                let Ok(n @ 1..) = c.read(&mut buf).await else {
                    return;
                };
                dec.push(&buf[..n]);
                while answered < answer {
                    let Ok(Some(req)) = dec.next_frame() else {
                        break;
                    };
                    let r = reply_to(req).expect("a signed request");
                    let _ = c.write_all(&frame::encode(&r)).await;
                    answered += 1;
                }
            }
            // Dropping the stream closes the connection.
        });
        addr
    }

    #[tokio::test]
    async fn tcp_driver_frames_requests_and_matches_replies() {
        let addr = tcp_server(usize::MAX).await;
        let (mut link, _) = TcpLink::connect(addr, None, Duration::from_secs(2))
            .await
            .expect("connect");
        let o = echo_with(|s| async move { tcp_echo(&mut link, &s).await }).await;
        assert!((5..=10).contains(&o.stats.sent()), "{}", o.stats.sent());
        assert_eq!(o.stats.received(), o.stats.sent());
        assert!(o.broken.is_none());
    }

    #[tokio::test]
    async fn tcp_driver_reports_a_closed_connection() {
        let addr = tcp_server(2).await;
        let (mut link, _) = TcpLink::connect(addr, None, Duration::from_secs(2))
            .await
            .expect("connect");
        let o = echo_with(|s| async move { tcp_echo(&mut link, &s).await }).await;
        assert_eq!(o.stats.received(), 2);
        assert!(o.stopped_midway());
        let why = o.broken.expect("broken");
        assert!(
            why.contains("closed") || why.contains("reset") || why.contains("pipe"),
            "{why}"
        );
    }
}
