//! `udp_mapping_short`: the quiet-period test (`--quiet-test N`).
//!
//! Mid-run the client sends nothing for N seconds, then resumes on the same socket. Two things
//! can go wrong when the NAT or firewall forgot the flow during the pause:
//! - **remapped**: the replies come back, but the server now sees the client at another public
//!   port (a STUN Binding on the echo socket after the run against the one before it). RTCD's
//!   ICE agent discards media from an address that is not a known remote candidate
//!   (pion/ice candidate_base.go:358 "Discarded message from …, not a valid remote
//!   candidate", v4.4.1), and keeps sending to the old mapping, which the NAT now drops.
//! - **no_replies**: replies flowed before the pause and none came back after it (a firewall
//!   that does not let the flow start again, or a NAT that sends the new flow elsewhere).
//!
//! A NAT that re-creates the same mapping is indistinguishable from one that kept it and is
//! harmless for a call, so that is "held".

use super::Sample;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How the path came out of the quiet period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietOutcome {
    /// Replies resumed from the same public address.
    Held,
    /// Replies resumed, but the client's public address changed.
    Remapped,
    /// Replies flowed before the pause and never after.
    NoReplies,
}

/// The quiet window, client time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_us: u64,
    pub until_us: u64,
}

/// Replies needed on each side of the pause for a verdict.
pub const MIN_ANSWERED: usize = 10;
/// Requests sent after the pause, none answered, for `no_replies`.
pub const MIN_UNANSWERED_AFTER: usize = 20;

/// Judges the quiet period; `None` when the run does not tell (too little traffic on either
/// side, or no answers before the pause at all).
pub fn judge(
    timeline: &[Sample],
    w: Window,
    mapped_before: Option<SocketAddr>,
    mapped_after: Option<SocketAddr>,
) -> Option<QuietOutcome> {
    let (before, after): (Vec<&Sample>, Vec<&Sample>) =
        timeline.iter().partition(|s| s.sent_us < w.from_us);
    let after: Vec<&Sample> = after
        .into_iter()
        .filter(|s| s.sent_us >= w.until_us)
        .collect();
    if before.iter().filter(|s| s.answered).count() < MIN_ANSWERED {
        return None;
    }
    let answered_after = after.iter().filter(|s| s.answered).count();
    if answered_after == 0 {
        return (after.len() >= MIN_UNANSWERED_AFTER).then_some(QuietOutcome::NoReplies);
    }
    if answered_after < MIN_ANSWERED {
        return None;
    }
    match (mapped_before, mapped_after) {
        (Some(b), Some(a)) if a != b => Some(QuietOutcome::Remapped),
        _ => Some(QuietOutcome::Held),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window {
        from_us: 10_000_000,
        until_us: 30_000_000,
    };

    /// 50 packets/s from 0 to 40 s except in the window; `after_ok`: replies after it.
    fn tl(after_ok: bool) -> Vec<Sample> {
        (0..2000u64)
            .map(|i| i * 20_000)
            .filter(|t| *t < W.from_us || *t >= W.until_us)
            .map(|t| Sample {
                sent_us: t,
                answered: t < W.from_us || after_ok,
            })
            .collect()
    }

    fn a(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn outcomes() {
        let same = (a("203.0.113.1:40000"), a("203.0.113.1:40000"));
        let moved = (a("203.0.113.1:40000"), a("203.0.113.1:51234"));
        assert_eq!(
            judge(&tl(true), W, same.0, same.1),
            Some(QuietOutcome::Held)
        );
        assert_eq!(
            judge(&tl(true), W, moved.0, moved.1),
            Some(QuietOutcome::Remapped)
        );
        assert_eq!(
            judge(&tl(false), W, same.0, None),
            Some(QuietOutcome::NoReplies)
        );
        // Without the second STUN answer a resumed flow is all that is known.
        assert_eq!(judge(&tl(true), W, moved.0, None), Some(QuietOutcome::Held));
    }

    #[test]
    fn too_little_traffic_tells_nothing() {
        // Nothing answered before the pause: the path never worked, not a mapping question.
        let none: Vec<Sample> = tl(true)
            .into_iter()
            .map(|s| Sample {
                answered: s.sent_us >= W.until_us,
                ..s
            })
            .collect();
        assert_eq!(judge(&none, W, None, None), None);
        // The run ended right after the pause.
        let short: Vec<Sample> = tl(false)
            .into_iter()
            .filter(|s| s.sent_us < W.until_us + 100_000)
            .collect();
        assert_eq!(judge(&short, W, None, None), None);
    }
}
