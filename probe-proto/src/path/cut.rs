//! `path_cut_after`: traffic that flowed and then stopped for good, told apart from loss.
//!
//! The timeline is every request in sending order with whether it was answered. After the last
//! answered request comes a tail of unanswered ones. With the loss rate `p` seen before that
//! (smoothed as `(lost + 1) / (sent + 2)`, so a clean start still has a non-zero rate), `k`
//! independent losses in a row have probability `p^k`. A tail is a cut when that is below
//! [`MAX_CHANCE`] and it lasts at least [`MIN_SILENCE_US`]: random loss, even heavy, does not
//! produce it, and a stall shorter than a few seconds is a glitch, not a cut.
//!
//! The direction comes from the server's own receive counter (the echo reply carries no count;
//! the control channel's counters do): the server receiving the tail means the way back is cut.

use super::{Direction, Sample, ServerSample};

/// A tail this unlikely under the loss seen before it is not loss.
pub const MAX_CHANCE: f64 = 1e-9;
/// A silence shorter than this is a stall, not a cut.
pub const MIN_SILENCE_US: u64 = 3_000_000;
/// Answers needed before the cut for the loss rate to mean anything.
pub const MIN_ANSWERED: usize = 20;
/// The check runs on echo phases at least this long (`--duration 30` or more).
pub const MIN_RUN_US: u64 = 30_000_000;
/// Requests sent this close to a server counter poll may not have reached it yet.
const IN_FLIGHT_US: u64 = 500_000;

/// A cut found in the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    /// Microseconds from the first request to the first request never answered.
    pub after_us: u64,
    pub direction: Direction,
    /// Requests sent after the cut.
    pub unanswered: u64,
    /// Loss before the cut, percent.
    pub loss_before_pct: f64,
}

/// Finds a cut in `timeline` (sending order). `server`: counters polled during the run;
/// `final_rx`: the server's receive count at the end, when it came.
pub fn detect(timeline: &[Sample], server: &[ServerSample], final_rx: Option<u64>) -> Option<Cut> {
    let first = timeline.first()?;
    let last_ok = timeline.iter().rposition(|s| s.answered)?;
    let before = &timeline[..=last_ok];
    let tail = &timeline[last_ok + 1..];
    let answered = before.iter().filter(|s| s.answered).count();
    let (t0, t1) = (tail.first()?, tail.last()?);
    if answered < MIN_ANSWERED || t1.sent_us.saturating_sub(t0.sent_us) < MIN_SILENCE_US {
        return None;
    }
    let lost = before.len() - answered;
    let p = (lost as f64 + 1.0) / (before.len() as f64 + 2.0);
    if (tail.len() as f64) * p.ln() > MAX_CHANCE.ln() {
        return None;
    }
    Some(Cut {
        after_us: t0.sent_us.saturating_sub(first.sent_us),
        direction: direction(before.len() as u64, tail, server, final_rx),
        unanswered: tail.len() as u64,
        loss_before_pct: lost as f64 * 100.0 / before.len() as f64,
    })
}

/// Upstream when the server got (almost) none of the tail, downstream when it got most of it.
/// The server's count before the cut is at most `sent_before`, so `rx - sent_before` is a lower
/// bound of the tail it received.
fn direction(
    sent_before: u64,
    tail: &[Sample],
    server: &[ServerSample],
    final_rx: Option<u64>,
) -> Direction {
    let last_poll = server.iter().rfind(|s| s.at_us > tail[0].sent_us);
    let (rx, tail_sent) = match (final_rx, last_poll) {
        (Some(rx), _) => (rx, tail.len() as u64),
        (None, Some(s)) => {
            let by = s.at_us.saturating_sub(IN_FLIGHT_US);
            (s.rx, tail.iter().filter(|t| t.sent_us <= by).count() as u64)
        }
        (None, None) => return Direction::Unknown,
    };
    if tail_sent == 0 {
        return Direction::Unknown;
    }
    let got = rx.saturating_sub(sent_before);
    if got * 2 >= tail_sent {
        Direction::Downstream
    } else if got * 10 <= tail_sent {
        Direction::Upstream
    } else {
        Direction::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 50 packets/s for `secs`; `answered(i, t_us)` says which came back.
    fn run(secs: u64, answered: impl Fn(usize, u64) -> bool) -> Vec<Sample> {
        (0..secs as usize * 50)
            .map(|i| {
                let t = 1_000_000 + i as u64 * 20_000;
                Sample {
                    sent_us: t,
                    answered: answered(i, t),
                }
            })
            .collect()
    }

    fn cut_at(at_us: u64) -> impl Fn(usize, u64) -> bool {
        move |_, t| t < at_us
    }

    #[test]
    fn a_flow_cut_midway_is_found_at_the_right_time() {
        let tl = run(30, cut_at(15_800_000));
        let c = detect(&tl, &[], None).expect("a cut");
        // First unanswered request at 15.8 s of the run clock, 14.8 s after the first send.
        assert_eq!(c.after_us, 14_800_000);
        assert_eq!(c.unanswered, 15 * 50 + 10);
        assert_eq!(c.loss_before_pct, 0.0);
        assert_eq!(c.direction, Direction::Unknown, "no counters, no direction");
    }

    #[test]
    fn heavy_random_loss_is_not_a_cut() {
        // 30 % loss, spread: the longest run of losses is short.
        let tl = run(30, |i, _| (i * 7919) % 10 >= 3);
        assert_eq!(detect(&tl, &[], None), None);
        // 30 % loss as bursts of 10 (200 ms): still loss, not a cut.
        let tl = run(30, |i, _| (i / 10) % 10 >= 3);
        assert_eq!(detect(&tl, &[], None), None);
    }

    #[test]
    fn a_short_stall_or_lossy_start_is_not_a_cut() {
        // Nothing answered for the last 2 s: below the silence a cut needs.
        assert_eq!(detect(&run(30, cut_at(29_000_000)), &[], None), None);
        // A path that loses 95 % before the tail cannot make a 4-s tail improbable enough.
        let tl = run(30, |i, t| t < 27_000_000 && i % 20 == 0);
        assert_eq!(detect(&tl, &[], None), None);
        // Never answered at all: that is another finding's business.
        assert_eq!(detect(&run(30, |_, _| false), &[], None), None);
        assert_eq!(detect(&[], &[], None), None);
    }

    #[test]
    fn the_server_counters_tell_the_direction() {
        let tl = run(30, cut_at(11_000_000));
        let before = 10 * 50;
        let tail = tl.len() as u64 - before;
        // The server received nothing after the cut: the way up is cut.
        let up = detect(&tl, &[], Some(before)).expect("cut");
        assert_eq!(up.direction, Direction::Upstream);
        // It received everything: the way down is cut.
        let down = detect(&tl, &[], Some(before + tail)).expect("cut");
        assert_eq!(down.direction, Direction::Downstream);
        // Half-way numbers do not decide.
        let mid = detect(&tl, &[], Some(before + tail / 4)).expect("cut");
        assert_eq!(mid.direction, Direction::Unknown);
        // Without final counters, the last poll after the cut decides, counting only what
        // was sent before it.
        let polls = [
            ServerSample {
                at_us: 6_000_000,
                rx: 250,
                tx: 250,
            },
            ServerSample {
                at_us: 21_000_000,
                rx: before + 495,
                tx: before + 495,
            },
        ];
        let polled = detect(&tl, &polls, None).expect("cut");
        assert_eq!(polled.direction, Direction::Downstream);
        let polls = [ServerSample {
            at_us: 21_000_000,
            rx: before,
            tx: before,
        }];
        assert_eq!(
            detect(&tl, &polls, None).unwrap().direction,
            Direction::Upstream
        );
    }
}
