//! One transport's echo phase as a state machine: what to send when, and what the replies say.
//!
//! The driver (a UDP socket, or a TCP connection carrying RFC 4571 frames) loops:
//!
//! ```text
//! while let Some(t) = core.poll_transmit(now) { send t.bytes }   // every packet now due
//! match core.poll_timeout() {
//!     None => break,                                              // finished
//!     Some(at) => wait for a reply (core.on_reply) or until `at` (core.handle_timeout),
//! }
//! ```
//!
//! and reports a broken connection with [`EchoCore::on_broken`]. Sending follows the
//! [`Schedule`]: one burst per tick for the schedule's duration, ticks that fire late push the
//! next ones back (no catch-up bursts, as a real media sender behaves). After the last tick the
//! core waits a grace period for late replies; a reply that completes the count ends it early.

use super::schedule::Schedule;
use crate::echo::{self, SessionKey};
use crate::path::quiet::Window;
use crate::path::ServerSample;
use crate::stats::EchoStats;
use std::net::SocketAddr;

/// A tick observed later than this is treated as missed: the schedule restarts from it instead
/// of sending the missed bursts back to back (the behaviour of a tokio interval set to `Delay`).
const LATE_TICK_US: u64 = 5_000;

/// A reply gap longer than this before sending ended means the server went away mid-run.
const STOPPED_GAP_US: u64 = 1_000_000;

/// How long to wait for stragglers after the last send: twice the worst RTT seen, bounded so
/// that a default run stays within 12 s.
pub fn grace_us(max_rtt_us: u64) -> u64 {
    (max_rtt_us.saturating_mul(2) + 200_000).clamp(300_000, 1_000_000)
}

/// One echo request to put on the wire, borrowed from the core until the next call.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub seq: u32,
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Sending,
    /// The schedule is over; replies are still taken until the deadline.
    Draining {
        deadline_us: u64,
    },
    Done,
}

/// One transport's echo run as the run state machine needs it.
#[derive(Debug, Clone, Default)]
pub struct EchoOutcome {
    pub stats: EchoStats,
    /// When the last reply of this session arrived.
    pub last_reply_us: Option<u64>,
    /// When sending stopped (end of schedule, or the connection broke).
    pub sending_ended_us: u64,
    /// Why a TCP connection broke mid-run.
    pub broken: Option<String>,
    /// When sending started, and how long it was planned to last (quiet period included).
    pub started_us: u64,
    pub planned_us: u64,
    /// The quiet period of `--quiet-test`, if one was kept.
    pub quiet: Option<Window>,
    /// The server's counters, polled on the control channel during the phase (by the shell).
    pub server_samples: Vec<ServerSample>,
    /// The client's public address as a STUN Binding on the echo socket saw it after the phase
    /// (by the shell, with `--quiet-test`).
    pub mapped_after: Option<SocketAddr>,
}

impl EchoOutcome {
    /// A phase that could not start (the connection failed).
    pub fn failed(why: String) -> Self {
        Self {
            broken: Some(why),
            ..Self::default()
        }
    }

    /// Replies came at first and then stopped well before sending ended: the server went away.
    pub fn stopped_midway(&self) -> bool {
        self.broken.is_some()
            || self
                .last_reply_us
                .is_some_and(|t| self.sending_ended_us.saturating_sub(t) > STOPPED_GAP_US)
    }
}

/// The echo sender and receiver of one session on one transport.
#[derive(Debug)]
pub struct EchoCore {
    session: u64,
    key: SessionKey,
    schedule: Schedule,
    started_us: u64,
    /// When the next burst is due.
    next_tick_us: u64,
    /// When the current burst's tick was observed; `None` between bursts.
    burst_tick_us: Option<u64>,
    /// Index in the schedule's burst of the next packet.
    burst_at: usize,
    seq: u32,
    max_rtt_us: u64,
    state: State,
    /// `--quiet-test`: from when, for how long nothing is sent (relative to the start).
    quiet: Option<(u64, u64)>,
    out: EchoOutcome,
    malformed: u64,
    foreign: u64,
    late: u64,
    buf: Box<[u8; echo::MAX_LEN]>,
}

impl EchoCore {
    /// A session's echo phase starting at `now_us`; the first burst is due at once.
    pub fn new(session: u64, key: SessionKey, schedule: Schedule, now_us: u64) -> Self {
        let planned_us = schedule.duration.as_micros() as u64;
        Self {
            session,
            key,
            schedule,
            started_us: now_us,
            next_tick_us: now_us,
            burst_tick_us: None,
            burst_at: 0,
            seq: 0,
            max_rtt_us: 0,
            state: State::Sending,
            quiet: None,
            out: EchoOutcome {
                sending_ended_us: now_us,
                started_us: now_us,
                planned_us,
                ..EchoOutcome::default()
            },
            malformed: 0,
            foreign: 0,
            late: 0,
            buf: Box::new([0u8; echo::MAX_LEN]),
        }
    }

    /// Sends nothing for `len_us` from `after_us` into the phase (`--quiet-test`); the phase
    /// lasts that much longer, so the traffic on either side is the schedule's.
    pub fn with_quiet(mut self, after_us: u64, len_us: u64) -> Self {
        self.quiet = Some((after_us, len_us));
        self.out.planned_us = self.schedule.duration.as_micros() as u64 + len_us;
        self.out.quiet = Some(Window {
            from_us: self.started_us + after_us,
            until_us: self.started_us + after_us + len_us,
        });
        self
    }

    /// The next packet due at `now_us`, signed and numbered; `None` until something is due.
    /// Call it until it returns `None` after every event, so whole bursts leave together.
    pub fn poll_transmit(&mut self, now_us: u64) -> Option<Transmit<'_>> {
        if self.state != State::Sending {
            return None;
        }
        let tick = match self.burst_tick_us {
            Some(t) => t,
            None if now_us < self.next_tick_us => return None,
            None if now_us.saturating_sub(self.started_us) >= self.duration_us() => {
                self.end_sending(now_us);
                return None;
            }
            None => *self.burst_tick_us.insert(now_us),
        };
        let Some(&size) = self.schedule.burst.get(self.burst_at) else {
            self.end_burst(tick);
            return None;
        };
        let seq = self.seq;
        let n = echo::encode_request(&self.key, self.session, seq, now_us, size, &mut *self.buf);
        self.out.stats.on_sent(seq, now_us);
        self.seq = self.seq.wrapping_add(1);
        self.burst_at += 1;
        if self.burst_at == self.schedule.burst.len() {
            self.end_burst(tick);
        }
        Some(Transmit {
            seq,
            bytes: &self.buf[..n],
        })
    }

    /// When the core next needs [`Self::handle_timeout`] (or `poll_transmit`) without a reply
    /// arriving; `None` once the phase is over.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Sending => Some(self.burst_tick_us.unwrap_or(self.next_tick_us)),
            State::Draining { deadline_us } => Some(deadline_us),
            State::Done => None,
        }
    }

    /// The timer of [`Self::poll_timeout`] fired: ends the schedule or the grace period.
    pub fn handle_timeout(&mut self, now_us: u64) {
        match self.state {
            State::Sending
                if self.burst_tick_us.is_none()
                    && now_us >= self.next_tick_us
                    && now_us.saturating_sub(self.started_us) >= self.duration_us() =>
            {
                self.end_sending(now_us)
            }
            State::Draining { deadline_us } if now_us >= deadline_us => self.state = State::Done,
            _ => {}
        }
    }

    /// A datagram or frame payload arrived at `now_us`. Replies of this session feed the
    /// statistics; anything else is counted and dropped.
    pub fn on_reply(&mut self, now_us: u64, bytes: &[u8]) {
        self.handle_timeout(now_us);
        if self.state == State::Done {
            self.late += 1;
            return;
        }
        let r = match echo::decode_reply(&self.key, bytes) {
            Ok(r) if r.session == self.session => r,
            Ok(_) => {
                self.foreign += 1;
                return;
            }
            Err(_) => {
                self.malformed += 1;
                return;
            }
        };
        self.max_rtt_us = self.max_rtt_us.max(now_us.saturating_sub(r.client_send_us));
        self.out.last_reply_us = Some(now_us);
        let s = &mut self.out.stats;
        s.on_reply(
            r.seq,
            r.client_send_us,
            r.server_recv_us,
            r.server_send_us,
            now_us,
        );
        // Every request answered: no need to wait out the grace period.
        if matches!(self.state, State::Draining { .. }) && s.received() >= s.sent() {
            self.state = State::Done;
        }
    }

    /// The connection broke at `now_us`: the phase ends here.
    pub fn on_broken(&mut self, now_us: u64, why: String) {
        self.out.broken = Some(why);
        self.out.sending_ended_us = now_us;
        self.state = State::Done;
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn stats(&self) -> &EchoStats {
        &self.out.stats
    }

    /// Datagrams that were not a valid echo reply (wrong shape, MAC that does not verify).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Valid replies of another session.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// Datagrams that arrived after the phase was over.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Until when a blocked write may wait: a path that goes black mid-run fills the send
    /// buffer, and the phase must never wait past its end (at least 100 ms, so a write always
    /// gets a chance).
    pub fn write_deadline_us(&self, now_us: u64) -> u64 {
        let end = self.started_us + self.duration_us() + 1_000_000;
        end.max(now_us + 100_000)
    }

    /// The progress line of this phase.
    pub fn progress(&self, label: &str, now_us: u64) -> String {
        format!(
            "{label} echo {:.1}/{:.0} s  sent {}  received {}",
            now_us.saturating_sub(self.started_us) as f64 / 1e6,
            self.duration_us() as f64 / 1e6,
            self.out.stats.sent(),
            self.out.stats.received()
        )
    }

    /// The phase's result; call it once [`Self::poll_timeout`] returns `None`.
    pub fn finish(self) -> EchoOutcome {
        self.out
    }

    fn duration_us(&self) -> u64 {
        self.out.planned_us
    }

    fn end_sending(&mut self, now_us: u64) {
        self.out.sending_ended_us = now_us;
        self.state = State::Draining {
            deadline_us: now_us + grace_us(self.max_rtt_us),
        };
    }

    /// The next tick follows the one just served, or restarts from it when it fired late.
    fn end_burst(&mut self, tick_us: u64) {
        let period = self.schedule.tick.as_micros() as u64;
        self.next_tick_us = if tick_us > self.next_tick_us + LATE_TICK_US {
            tick_us + period
        } else {
            self.next_tick_us + period
        };
        // A tick inside the quiet period moves to its end.
        if let Some(w) = self.out.quiet {
            if (w.from_us..w.until_us).contains(&self.next_tick_us) {
                self.next_tick_us = w.until_us;
            }
        }
        self.burst_tick_us = None;
        self.burst_at = 0;
    }
}
