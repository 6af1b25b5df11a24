//! When the receive thread reads the shared socket: pure policy, no I/O, unit-tested here.
//!
//! - **Sleeping** (packets far apart): wait in the receive call for one datagram. Each packet
//!   costs one wake-up, which is the cheapest there is when nothing else is queued.
//! - **Draining** (a receive came back at once, so a queue was waiting): take batches until
//!   one comes back short.
//! - **Holding** (at least [`HOLD_ABOVE_PPS`] packets a second over a [`WINDOW_US`] window,
//!   as in load mode or with many clients at once): sleep [`HOLD_US`], then take everything
//!   queued in one batch without waiting. At 20 000 packets/s this serves some ten packets per
//!   wake-up instead of one, which is what a network card's interrupt moderation does. Holding
//!   ends after a window under [`HOLD_BELOW_PPS`]. The rate is counted over a window, not from
//!   the gaps between packets, because clients that send on the same tick arrive in bursts.
//!
//! A held request would make the RTT look longer by the time it waited, so the thread holds
//! only where the kernel stamps each datagram's arrival (`SO_TIMESTAMPNS`): the reply's
//! `server rx` is that time, and the client takes the wait out of the RTT as it takes out the
//! server's processing time (`probe_proto::stats`). [`received_us`] converts the stamp. STUN
//! and the browser test page's traffic have no such field (a client times its Bindings and ICE
//! checks whole; the page's data channel is timed in the browser), so for [`HOLD_OFF_US`] after
//! any of them the thread does not hold. (The first one to come while it holds may wait out
//! that hold, about half a millisecond.)

use super::BATCH;

/// How long a holding thread sleeps before it takes what is queued. Short against any RTT
/// worth reporting, long enough that at 20 000 packets/s a wake-up serves about ten datagrams
/// (BENCHMARKS.md, "Holding under load").
pub const HOLD_US: u64 = 500;
/// The window over which the packet rate is counted.
pub const WINDOW_US: u64 = 2_000;
/// Above this rate the thread starts holding...
pub const HOLD_ABOVE_PPS: u64 = 8_000;
/// ...and below this one it stops.
pub const HOLD_BELOW_PPS: u64 = 4_000;
/// Longer than a receive from a non-empty queue takes, shorter than a sleep and wake-up.
pub const AT_ONCE_US: u64 = 5;
/// After STUN or a datagram for the test page's peer, no holding for this long.
pub const HOLD_OFF_US: u64 = 1_000_000;
/// A kernel stamp older than this is a step of the realtime clock, not a wait: ignored.
pub const STAMP_MAX_AGE_US: u64 = 100_000;

/// The next receive call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait in the receive call for the first datagram, then take up to this many.
    Wait(usize),
    /// Sleep [`HOLD_US`], then take up to a batch without waiting.
    Hold,
    /// Take up to a batch without waiting: the last take filled a whole batch.
    Now,
}

/// The receive policy's state.
#[derive(Debug, Clone)]
pub struct Pacer {
    next: Next,
    /// Whether the thread holds (the rate is high).
    holding: bool,
    /// Whether holding is allowed (the socket stamps arrivals).
    may_hold: bool,
    /// When the current rate window started, and the datagrams received in it.
    window_start_us: u64,
    window_pkts: u64,
    /// No holding before this time (see [`Pacer::hold_off`]).
    hold_off_until_us: u64,
}

impl Pacer {
    pub fn new(may_hold: bool, now_us: u64) -> Self {
        Self {
            next: Next::Wait(1),
            holding: false,
            may_hold,
            window_start_us: now_us,
            window_pkts: 0,
            hold_off_until_us: 0,
        }
    }

    pub fn next(&self) -> Next {
        self.next
    }

    /// A receive asked for [`Pacer::next`] and got `n` datagrams (0: a take without waiting
    /// found none) holding `pkts` packets (GRO trains counted by their segments), `waited_us`
    /// after it was asked; `now_us` is the time it returned.
    pub fn on_received(&mut self, (n, pkts): (usize, usize), waited_us: u64, now_us: u64) {
        self.count(pkts as u64, now_us);
        self.next = match (self.holding, self.next) {
            (true, _) if n >= BATCH => Next::Now,
            (true, _) => Next::Hold,
            (false, Next::Wait(want)) if n == want && (want > 1 || waited_us < AT_ONCE_US) => {
                Next::Wait(BATCH)
            }
            // Holding just ended on a full batch: more is queued, and a batch reads its stamps.
            (false, _) if n >= BATCH => Next::Wait(BATCH),
            (false, _) => Next::Wait(1),
        };
    }

    /// Traffic whose RTT no stamp corrects (STUN, the test page's) came at `now_us`: stop
    /// holding, and do not start for [`HOLD_OFF_US`].
    pub fn hold_off(&mut self, now_us: u64) {
        self.hold_off_until_us = now_us.saturating_add(HOLD_OFF_US);
        if self.holding {
            self.holding = false;
            self.next = match self.next {
                Next::Now => Next::Wait(BATCH),
                _ => Next::Wait(1),
            };
        }
    }

    /// A receive failed: start again from a single waiting receive.
    pub fn on_error(&mut self, now_us: u64) {
        self.count(0, now_us);
        self.next = Next::Wait(1);
    }

    /// Counts `n` datagrams; at the end of a window, decides whether to hold.
    fn count(&mut self, n: u64, now_us: u64) {
        self.window_pkts += n;
        let span = now_us.saturating_sub(self.window_start_us);
        if span < WINDOW_US {
            return;
        }
        let pps = self.window_pkts.saturating_mul(1_000_000) / span;
        let bar = match self.holding {
            true => HOLD_BELOW_PPS,
            false => HOLD_ABOVE_PPS,
        };
        self.holding = self.may_hold && now_us >= self.hold_off_until_us && pps >= bar;
        (self.window_start_us, self.window_pkts) = (now_us, 0);
    }
}

/// When a datagram reached the socket, on the server's clock (`now_us`, read just after the
/// receive): `stamp_ns` is the kernel's realtime stamp (0: none) and `real_now_ns` the realtime
/// clock read with `now_us`. No stamp, a stamp in the future or one older than
/// [`STAMP_MAX_AGE_US`] (the realtime clock stepped) gives `now_us`.
pub fn received_us(now_us: u64, real_now_ns: u64, stamp_ns: u64) -> u64 {
    if stamp_ns == 0 {
        return now_us;
    }
    let age_us = real_now_ns.saturating_sub(stamp_ns) / 1_000;
    match age_us {
        a if a > STAMP_MAX_AGE_US => now_us,
        a => now_us.saturating_sub(a),
    }
}

// The batch size is quinn-udp's, which is 1 where the platform has no recvmmsg; the thread
// holds only on Linux.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Feeds `n` datagrams after `waited_us`, the clock moving on by `step_us`.
    fn after(p: &mut Pacer, clock: &mut u64, (n, waited_us, step_us): (usize, u64, u64)) -> Next {
        *clock += step_us;
        p.on_received((n, n), waited_us, *clock);
        p.next()
    }

    #[test]
    fn a_sleeping_thread_takes_one_and_drains_a_queue_in_batches() {
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        assert_eq!(p.next(), Next::Wait(1));
        let mut at = |n, waited| after(&mut p, &mut t, (n, waited, waited));
        assert_eq!(at(1, 20_000), Next::Wait(1), "slept: one again");
        assert_eq!(at(1, 3), Next::Wait(BATCH), "came at once: a queue");
        assert_eq!(at(BATCH, 1), Next::Wait(BATCH), "a full batch: more");
        assert_eq!(at(4, 900), Next::Wait(1), "short: drained");
        assert_eq!(at(1, 20_000), Next::Wait(1));
        // An empty return (a datagram from an address family we do not serve) is short.
        assert_eq!(at(0, 1), Next::Wait(1));
    }

    #[test]
    fn a_high_rate_over_a_window_starts_holding_and_a_low_one_ends_it() {
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        // 9 000 packets/s, one at a time: holding starts when the window closes.
        for _ in 0..(WINDOW_US / 111) {
            assert_eq!(after(&mut p, &mut t, (1, 100, 111)), Next::Wait(1));
        }
        assert_eq!(after(&mut p, &mut t, (1, 100, 111)), Next::Hold);
        assert_eq!(after(&mut p, &mut t, (5, 0, 550)), Next::Hold, "a few came");
        assert_eq!(
            after(&mut p, &mut t, (BATCH, 0, 550)),
            Next::Now,
            "a full batch"
        );
        assert_eq!(after(&mut p, &mut t, (BATCH, 0, 5)), Next::Now);
        assert_eq!(
            after(&mut p, &mut t, (0, 0, 550)),
            Next::Hold,
            "a burst's gap"
        );
        // Bursts of 20 every millisecond (clients on one tick) keep it holding.
        for _ in 0..10 {
            assert_eq!(after(&mut p, &mut t, (20, 0, 550)), Next::Hold);
            assert_eq!(after(&mut p, &mut t, (0, 0, 450)), Next::Hold);
        }
        // 3 000 packets/s: a window later it waits again, and a full batch drains as before.
        let mut next = Next::Hold;
        for _ in 0..=(2 * WINDOW_US / 333) {
            next = after(&mut p, &mut t, (1, 0, 333));
        }
        assert_eq!(next, Next::Wait(1));
        assert_eq!(after(&mut p, &mut t, (1, 1, 1)), Next::Wait(BATCH));
    }

    #[test]
    fn bursts_start_holding_too_and_it_needs_stamps() {
        // Bursts of 20 every millisecond: a sleep, one that came at once, then the queue.
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        assert_eq!(after(&mut p, &mut t, (1, 990, 990)), Next::Wait(1));
        assert_eq!(after(&mut p, &mut t, (1, 0, 1)), Next::Wait(BATCH));
        assert_eq!(after(&mut p, &mut t, (18, 0, 9)), Next::Wait(1));
        while t < 2 * WINDOW_US {
            after(&mut p, &mut t, (1, 990, 990));
            after(&mut p, &mut t, (1, 0, 1));
            after(&mut p, &mut t, (18, 0, 9));
        }
        assert_eq!(p.next(), Next::Hold);
        // A socket without arrival stamps never holds: the wait would go into the RTT.
        let (mut p, mut t) = (Pacer::new(false, 0), 0);
        for _ in 0..100 {
            assert_ne!(after(&mut p, &mut t, (1, 50, 50)), Next::Hold);
        }
        // An error starts again from one waiting receive, and keeps the rate count.
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        for _ in 0..(WINDOW_US / 100) {
            after(&mut p, &mut t, (1, 100, 100));
        }
        p.on_error(t + 1);
        assert_eq!(p.next(), Next::Wait(1));
        assert_eq!(after(&mut p, &mut t, (1, 100, 100)), Next::Hold);
    }

    #[test]
    fn holding_that_ends_on_a_full_batch_drains_in_batches() {
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        while p.next() != Next::Hold {
            after(&mut p, &mut t, (10, 0, 100));
        }
        assert_eq!(after(&mut p, &mut t, (BATCH, 0, 1)), Next::Now);
        p.hold_off(t);
        assert_eq!(p.next(), Next::Wait(BATCH), "more was queued");
        // The rate falls while a full batch comes in: the queue is drained in batches.
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        while p.next() != Next::Hold {
            after(&mut p, &mut t, (10, 0, 100));
        }
        assert_eq!(
            after(&mut p, &mut t, (BATCH, 0, 10 * WINDOW_US)),
            Next::Wait(BATCH)
        );
        assert_eq!(after(&mut p, &mut t, (3, 900, 900)), Next::Wait(1));
    }

    #[test]
    fn gro_trains_count_by_their_segments() {
        // One datagram per receive, each a train of 20: 20 000 packets/s.
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        for _ in 0..=(WINDOW_US / 1_000) {
            t += 1_000;
            p.on_received((1, 20), 990, t);
        }
        assert_eq!(p.next(), Next::Hold);
    }

    #[test]
    fn test_page_traffic_stops_holding_for_a_while() {
        let (mut p, mut t) = (Pacer::new(true, 0), 0);
        while p.next() != Next::Hold {
            after(&mut p, &mut t, (10, 0, 100));
        }
        p.hold_off(t);
        assert_eq!(p.next(), Next::Wait(1), "stopped at once");
        let until = t + HOLD_OFF_US;
        while t + 100 < until {
            assert_ne!(after(&mut p, &mut t, (10, 0, 100)), Next::Hold, "at {t}");
        }
        t = until;
        // The first window that closes after the hold-off may hold again.
        let mut held = false;
        for _ in 0..=(WINDOW_US / 100) {
            held |= after(&mut p, &mut t, (10, 0, 100)) == Next::Hold;
        }
        assert!(held);
    }

    #[test]
    fn a_kernel_stamp_moves_the_receive_time_back_by_the_wait() {
        let real = 1_764_000_000_000_000_000u64;
        assert_eq!(received_us(10_000, real, real - 420_000), 9_580);
        assert_eq!(received_us(10_000, real, real), 10_000);
        assert_eq!(received_us(10_000, real, 0), 10_000, "no stamp");
        assert_eq!(
            received_us(10_000, real, real + 5_000_000),
            10_000,
            "stamp ahead"
        );
        let old = real - (STAMP_MAX_AGE_US + 1) * 1_000;
        assert_eq!(received_us(10_000, real, old), 10_000, "a clock step");
        let oldest_kept = real - STAMP_MAX_AGE_US * 1_000;
        assert_eq!(received_us(200_000, real, oldest_kept), 100_000);
        assert_eq!(
            received_us(300, real, real - 1_000_000),
            0,
            "never below zero"
        );
    }
}
