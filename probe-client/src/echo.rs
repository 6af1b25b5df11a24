//! STUN and media-shaped echo: over UDP on one connected socket, and over a TCP link.

use crate::control::{rand_bytes, read_frame, stun_request, TcpLink};
use crate::progress::Progress;
use crate::schedule::Schedule;
use probe_proto::echo::{self, SessionKey};
use probe_proto::stats::EchoStats;
use probe_proto::stun;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::time::{sleep_until, MissedTickBehavior};

/// The client's monotonic clock in microseconds since the run started.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// What the session needs to sign echo packets.
pub struct EchoSession<'a> {
    pub id: u64,
    pub key: &'a SessionKey,
    pub schedule: &'a Schedule,
    pub clock: Clock,
    pub progress: &'a Progress,
}

/// STUN retransmission times (RFC 8489 §6.2.1 with a 250 ms RTO, shortened so that a blocked
/// path is concluded in under 3 s).
const STUN_SENDS_MS: [u64; 4] = [0, 250, 750, 1750];
pub const STUN_GIVE_UP: Duration = Duration::from_millis(2750);

pub struct StunAnswer {
    pub mapped: SocketAddr,
    pub rtt_ms: f64,
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
pub async fn udp_stun(sock: &UdpSocket, token: Option<&[u8; 32]>) -> Option<StunAnswer> {
    let tid: [u8; 12] = rand_bytes();
    let req = stun_request(tid, token);
    let t0 = Instant::now();
    let give_up = tokio::time::Instant::from_std(t0 + STUN_GIVE_UP);
    let mut buf = [0u8; 1500];
    let mut next = 0;
    loop {
        let resend_at = STUN_SENDS_MS
            .get(next)
            .map(|ms| tokio::time::Instant::from_std(t0 + Duration::from_millis(*ms)));
        tokio::select! {
            _ = sleep_until(resend_at.unwrap_or(give_up)), if resend_at.is_some() => {
                let _ = sock.send(&req).await;
                next += 1;
            }
            r = sock.recv(&mut buf) => {
                // Errors are ICMP unreachables from earlier sends; keep waiting until the deadline.
                if let Ok(n) = r {
                    if let Ok(m) = stun::decode(&buf[..n]) {
                        if m.tid == tid && m.class == stun::Class::Success {
                            if let Some(mapped) = m.xor_mapped {
                                return Some(StunAnswer { mapped, rtt_ms: t0.elapsed().as_secs_f64() * 1000.0 });
                            }
                        }
                    }
                }
            }
            _ = sleep_until(give_up) => return None,
        }
    }
}

/// How long to wait for stragglers after the last send: twice the worst RTT seen, bounded so
/// that a default run stays within 12 s. The wait ends early once every reply is in.
fn grace(max_rtt_us: u64) -> Duration {
    Duration::from_micros((max_rtt_us * 2 + 200_000).clamp(300_000, 1_000_000))
}

/// One transport's echo run as the orchestrator needs it.
pub struct EchoOutcome {
    pub stats: EchoStats,
    pub last_reply: Option<Instant>,
    pub sending_ended: Instant,
    /// Why a TCP connection broke mid-run.
    pub broken: Option<String>,
}

impl EchoOutcome {
    fn new() -> Self {
        Self {
            stats: EchoStats::new(),
            last_reply: None,
            sending_ended: Instant::now(),
            broken: None,
        }
    }

    /// A phase that could not start (the connection failed).
    pub fn failed(why: String) -> Self {
        Self {
            broken: Some(why),
            ..Self::new()
        }
    }

    /// Replies came at first and then stopped well before sending ended: the server went away.
    pub fn stopped_midway(&self) -> bool {
        self.broken.is_some()
            || self.last_reply.is_some_and(|t| {
                self.sending_ended.saturating_duration_since(t) > Duration::from_secs(1)
            })
    }

    fn record(&mut self, s: &EchoSession, bytes: &[u8], max_rtt: &mut u64) {
        if let Ok(r) = echo::decode_reply(s.key, bytes) {
            if r.session == s.id {
                let now = s.clock.us();
                *max_rtt = (*max_rtt).max(now.saturating_sub(r.client_send_us));
                self.stats.on_reply(
                    r.seq,
                    r.client_send_us,
                    r.server_recv_us,
                    r.server_send_us,
                    now,
                );
                self.last_reply = Some(Instant::now());
            }
        }
    }
}

fn show(s: &EchoSession, label: &str, started: Instant, stats: &EchoStats) {
    s.progress.show(&format!(
        "{label} echo {:.1}/{:.0} s  sent {}  received {}",
        started.elapsed().as_secs_f64(),
        s.schedule.duration.as_secs_f64(),
        stats.sent(),
        stats.received()
    ));
}

pub async fn udp_echo(sock: &UdpSocket, s: &EchoSession<'_>) -> EchoOutcome {
    let mut o = EchoOutcome::new();
    let mut tick = tokio::time::interval(s.schedule.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut seq = 0u32;
    let mut max_rtt = 0;
    let mut done_at: Option<tokio::time::Instant> = None;
    let mut buf = [0u8; 2048];
    let mut out = [0u8; echo::MAX_LEN];
    loop {
        tokio::select! {
            biased;
            r = sock.recv(&mut buf) => {
                if let Ok(n) = r {
                    o.record(s, &buf[..n], &mut max_rtt);
                }
                if done_at.is_some() && o.stats.received() >= o.stats.sent() {
                    break;
                }
            }
            _ = tick.tick(), if done_at.is_none() => {
                if started.elapsed() >= s.schedule.duration {
                    o.sending_ended = Instant::now();
                    done_at = Some(tokio::time::Instant::now() + grace(max_rtt));
                    continue;
                }
                for &size in &s.schedule.burst {
                    let t = s.clock.us();
                    let n = echo::encode_request(s.key, s.id, seq, t, size, &mut out);
                    // A send error (ICMP unreachable, full buffer) is loss as the user would see
                    // it; never wait for buffer space, which would stall the schedule.
                    let _ = sock.try_send(&out[..n]);
                    o.stats.on_sent(seq, t);
                    seq += 1;
                }
                show(s, "UDP", started, &o.stats);
            }
            _ = sleep_until(done_at.unwrap_or_else(tokio::time::Instant::now)), if done_at.is_some() => break,
        }
    }
    o
}

/// Echo over the TCP link. Returns the stats and, if the connection broke, why.
pub async fn tcp_echo(link: &mut TcpLink, s: &EchoSession<'_>) -> EchoOutcome {
    let mut o = EchoOutcome::new();
    let mut tick = tokio::time::interval(s.schedule.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut seq = 0u32;
    let mut max_rtt = 0;
    let mut done_at: Option<tokio::time::Instant> = None;
    let mut out = [0u8; echo::MAX_LEN];
    let TcpLink { rd, wr, dec, .. } = link;
    loop {
        tokio::select! {
            biased;
            f = read_frame(rd, dec) => match f {
                Ok(p) => {
                    o.record(s, &p, &mut max_rtt);
                    if done_at.is_some() && o.stats.received() >= o.stats.sent() {
                        break;
                    }
                }
                Err(e) => { o.broken = Some(e); break; }
            },
            _ = tick.tick(), if done_at.is_none() => {
                if started.elapsed() >= s.schedule.duration {
                    o.sending_ended = Instant::now();
                    done_at = Some(tokio::time::Instant::now() + grace(max_rtt));
                    continue;
                }
                let mut batch = Vec::new();
                for &size in &s.schedule.burst {
                    let t = s.clock.us();
                    let n = echo::encode_request(s.key, s.id, seq, t, size, &mut out);
                    batch.extend(probe_proto::frame::encode(&out[..n]));
                    o.stats.on_sent(seq, t);
                    seq += 1;
                }
                use tokio::io::AsyncWriteExt;
                // A path that goes black mid-run fills the send buffer; never wait past the phase.
                let left = (started + s.schedule.duration + Duration::from_secs(1))
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                match tokio::time::timeout(left, wr.write_all(&batch)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        o.broken = Some(e.to_string());
                        break;
                    }
                    Err(_) => {
                        o.broken = Some("the TCP connection stopped taking data".into());
                        break;
                    }
                }
                show(s, "TCP", started, &o.stats);
            }
            _ = sleep_until(done_at.unwrap_or_else(tokio::time::Instant::now)), if done_at.is_some() => break,
        }
    }
    if o.broken.is_some() {
        o.sending_ended = Instant::now();
    }
    o
}
