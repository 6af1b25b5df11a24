//! Client-side statistics of one transport's echo run.
//!
//! The client sends numbered requests (`seq` = 0, 1, 2, … one per packet) and the server echoes
//! each one back with its own receive/send timestamps. [`EchoStats`] is fed with these events
//! (times in microseconds, passed in by the caller: this module never reads a clock) and turns
//! them into an [`EchoSummary`].
//!
//! Definitions:
//! - **RTT** of a reply = `(recv_us - client_send_us) - (server_send_us - server_recv_us)`, i.e.
//!   the client-observed round trip minus the server hold time, computed with saturating
//!   arithmetic (never negative) and reported in milliseconds. The client send time used is the
//!   one echoed in the reply, so the two clocks never need to share an origin.
//! - **Jitter**: the RFC 3550 §6.4.1 interarrival jitter estimator applied to the round-trip
//!   transit (the RTT above): for consecutive unique replies in arrival order,
//!   `D = rtt_j - rtt_i` and `J += (|D| - J) / 16`. Reported in milliseconds.
//! - **Reordered**: a unique reply whose seq is lower than the highest seq already received (in
//!   arrival order); each such reply counts once.
//! - **Duplicates**: a reply for a seq that was already received. Duplicates count neither in
//!   `received` nor in RTT/jitter/reordering.
//! - **Bogus**: a reply for a seq that was never sent; it is ignored apart from this counter.
//! - **Loss up** (client → server) = `(sent - server_rx) / sent * 100`, **loss down**
//!   (server → client) = `(server_tx - (received + duplicates)) / server_tx * 100`, both clamped
//!   to `[0, 100]` and using the server's own counters for this session and transport. The
//!   server answers every copy it gets, so a request duplicated on the way up is answered twice:
//!   both copies coming back is no downstream loss. (A duplicate on the way up still hides as
//!   much upstream loss; the server does not track sequence numbers.)
//!
//! Memory is proportional to the number of packets: one byte of state and the send time per
//! sequence number plus one `f64` per unique reply. Sequence numbers far ahead of the send count are not tracked
//! (see [`MAX_SEQ_AHEAD`]), so a bogus huge seq cannot blow up memory.

use serde::{Deserialize, Serialize};

/// An `on_sent` seq is tracked only if it is less than the number of sends so far plus this
/// slack; beyond it the packet still counts as sent but its replies are treated as bogus.
/// Real clients send seqs 0, 1, 2, … so this only guards memory against nonsense input.
pub const MAX_SEQ_AHEAD: u64 = 1 << 16;

/// Multiplier `k` applied by [`binomial_sigma`]: a deviation within `k` standard deviations
/// (here 5, two-sided false-alarm probability ≈ 6e-7) is accepted by statistical tests.
pub const BINOMIAL_SIGMA_K: f64 = 5.0;

const SEQ_SENT: u8 = 1;
const SEQ_RECEIVED: u8 = 2;

/// Collects one transport's echo run on the client.
#[derive(Debug, Clone, Default)]
pub struct EchoStats {
    /// Number of `on_sent` calls (packets put on the wire).
    sent: u64,
    /// Number of unique, valid replies.
    received: u64,
    /// Replies for a seq already received.
    duplicates: u64,
    /// Replies arriving after a higher seq.
    reordered: u64,
    /// Replies for a seq never sent (or beyond the tracked range).
    bogus: u64,
    /// Per-seq flags (`SEQ_SENT`, `SEQ_RECEIVED`), indexed by seq.
    seqs: Vec<u8>,
    /// Per-seq send time, for the timeline the path checks read ([`EchoStats::timeline`]).
    sent_at_us: Vec<u64>,
    /// Highest seq received so far.
    highest_seq: Option<u32>,
    /// RTT of every unique reply, in milliseconds, in arrival order.
    rtts_ms: Vec<f64>,
    /// RTT of the previous unique reply, for the jitter estimator.
    last_rtt_ms: Option<f64>,
    /// RFC 3550 jitter estimate, in milliseconds.
    jitter_ms: f64,
}

impl EchoStats {
    /// An empty run.
    pub fn new() -> Self {
        Self::default()
    }

    /// A request with sequence `seq` was sent at client time `sent_us`.
    ///
    /// The send time feeds the timeline (the statistics take it from the reply).
    pub fn on_sent(&mut self, seq: u32, sent_us: u64) {
        let limit = self.sent.saturating_add(MAX_SEQ_AHEAD);
        self.sent = self.sent.saturating_add(1);
        if u64::from(seq) >= limit {
            return;
        }
        let idx = seq as usize;
        if idx >= self.seqs.len() {
            self.seqs.resize(idx + 1, 0);
            self.sent_at_us.resize(idx + 1, 0);
        }
        self.seqs[idx] |= SEQ_SENT;
        self.sent_at_us[idx] = sent_us;
    }

    /// Every tracked request in sequence order: when it was sent and whether it was answered.
    pub fn timeline(&self) -> Vec<crate::path::Sample> {
        self.seqs
            .iter()
            .zip(&self.sent_at_us)
            .filter(|(f, _)| **f & SEQ_SENT != 0)
            .map(|(f, t)| crate::path::Sample {
                sent_us: *t,
                answered: *f & SEQ_RECEIVED != 0,
            })
            .collect()
    }

    /// A reply arrived at client time `recv_us`, carrying the client's send timestamp echoed
    /// back and the server's receive/send timestamps (server clock, unrelated origin).
    /// Replies for a seq never sent are ignored (counted in `bogus`).
    pub fn on_reply(
        &mut self,
        seq: u32,
        client_send_us: u64,
        server_recv_us: u64,
        server_send_us: u64,
        recv_us: u64,
    ) {
        let Some(state) = self.seqs.get_mut(seq as usize) else {
            self.bogus += 1;
            return;
        };
        if *state & SEQ_SENT == 0 {
            self.bogus += 1;
            return;
        }
        if *state & SEQ_RECEIVED != 0 {
            self.duplicates += 1;
            return;
        }
        *state |= SEQ_RECEIVED;
        self.received += 1;

        match self.highest_seq {
            Some(highest) if seq < highest => self.reordered += 1,
            _ => self.highest_seq = Some(seq),
        }

        let rtt_ms =
            rtt_us(client_send_us, server_recv_us, server_send_us, recv_us) as f64 / 1000.0;
        if let Some(prev) = self.last_rtt_ms {
            let d = (rtt_ms - prev).abs();
            self.jitter_ms += (d - self.jitter_ms) / 16.0;
        }
        self.last_rtt_ms = Some(rtt_ms);
        self.rtts_ms.push(rtt_ms);
    }

    /// Number of requests sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Number of unique valid replies.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Number of duplicate replies.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Number of reordered replies.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Number of replies for seqs never sent.
    pub fn bogus(&self) -> u64 {
        self.bogus
    }

    /// Current jitter estimate in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    /// Summarises the run. `server_rx`/`server_tx`: the server's own counters for this
    /// session+transport (None if the server never reported them).
    pub fn summary(&self, server_rx: Option<u64>, server_tx: Option<u64>) -> EchoSummary {
        let loss_up_pct = match server_rx {
            Some(rx) if self.sent > 0 => Some(loss_pct(self.sent, rx)),
            _ => None,
        };
        let loss_down_pct = server_tx.map(|tx| {
            if tx == 0 {
                0.0
            } else {
                loss_pct(tx, self.received + self.duplicates)
            }
        });
        let rtt_ms = if self.rtts_ms.is_empty() {
            None
        } else {
            let mut sorted = self.rtts_ms.clone();
            sorted.sort_by(f64::total_cmp);
            RttSummary::from_sorted(&sorted)
        };
        EchoSummary {
            sent: self.sent,
            received: self.received,
            loss_up_pct,
            loss_down_pct,
            rtt_ms,
            jitter_ms: self.jitter_ms,
            reordered: self.reordered,
            duplicates: self.duplicates,
        }
    }
}

/// RTT in microseconds with the server hold time removed, saturating at 0.
fn rtt_us(client_send_us: u64, server_recv_us: u64, server_send_us: u64, recv_us: u64) -> u64 {
    let round_trip = recv_us.saturating_sub(client_send_us);
    let hold = server_send_us.saturating_sub(server_recv_us);
    round_trip.saturating_sub(hold)
}

/// `(expected - got) / expected * 100`, clamped to `[0, 100]`; `expected` must be > 0.
fn loss_pct(expected: u64, got: u64) -> f64 {
    let lost = expected.saturating_sub(got);
    (lost as f64 / expected as f64 * 100.0).clamp(0.0, 100.0)
}

/// Summary of one transport's echo run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoSummary {
    /// Requests sent by the client.
    pub sent: u64,
    /// Unique replies received by the client.
    pub received: u64,
    /// `(sent - server_rx)/sent*100`, clamped to `[0,100]`; None without `server_rx` or when
    /// nothing was sent.
    pub loss_up_pct: Option<f64>,
    /// `(server_tx - received)/server_tx*100`, clamped; None without `server_tx`; `Some(0.0)`
    /// when `server_tx == 0`.
    pub loss_down_pct: Option<f64>,
    /// RTT distribution in milliseconds; None when no reply arrived.
    pub rtt_ms: Option<RttSummary>,
    /// RFC 3550 jitter of the round-trip transit, milliseconds.
    pub jitter_ms: f64,
    /// Replies that arrived after a higher seq.
    pub reordered: u64,
    /// Replies received more than once (extra copies).
    pub duplicates: u64,
}

/// RTT distribution in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RttSummary {
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl RttSummary {
    /// Builds the summary from an ascending-sorted slice; None when empty.
    pub fn from_sorted(sorted: &[f64]) -> Option<Self> {
        Some(Self {
            min: *sorted.first()?,
            p50: percentile(sorted, 50.0)?,
            p95: percentile(sorted, 95.0)?,
            p99: percentile(sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// Nearest-rank percentile (p in 0..=100) of an ascending-sorted slice; None when empty.
///
/// The rank is `ceil(p/100 * n)`, clamped to `1..=n` (so p = 0 gives the minimum). `p` outside
/// `0..=100` is clamped; NaN is treated as 0.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    // Small epsilon so that e.g. 99.9 % of 1000 is rank 999 despite floating-point error.
    let rank = (p * n as f64 / 100.0 - 1e-9).ceil();
    let rank = if rank < 1.0 {
        1
    } else {
        (rank as usize).min(n)
    };
    Some(sorted[rank - 1])
}

/// Binomial tolerance helper used by tests elsewhere: for `n` trials with probability `p`,
/// returns `k * sqrt(n p (1-p))` with `k` = [`BINOMIAL_SIGMA_K`], i.e. an acceptable absolute
/// deviation of the success count from `n p`. `p` is clamped to `[0, 1]` (NaN gives 0).
pub fn binomial_sigma(n: u64, p: f64) -> f64 {
    if p.is_nan() {
        return 0.0;
    }
    let p = p.clamp(0.0, 1.0);
    BINOMIAL_SIGMA_K * (n as f64 * p * (1.0 - p)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary server clock origin, unrelated to the client's.
    const SERVER_ORIGIN: u64 = 7_000_000_000;

    /// Feeds a reply for `seq` sent at `sent_us` with the given network RTT and server hold.
    fn reply(s: &mut EchoStats, seq: u32, sent_us: u64, rtt_us: u64, hold_us: u64) {
        let server_recv = SERVER_ORIGIN + sent_us + rtt_us / 2;
        let server_send = server_recv + hold_us;
        s.on_reply(
            seq,
            sent_us,
            server_recv,
            server_send,
            sent_us + rtt_us + hold_us,
        );
    }

    fn send_all(s: &mut EchoStats, n: u32) {
        for seq in 0..n {
            s.on_sent(seq, u64::from(seq) * 1000);
        }
    }

    #[test]
    fn timeline_has_send_times_and_answers_in_seq_order() {
        let mut s = EchoStats::new();
        send_all(&mut s, 4);
        reply(&mut s, 2, 2000, 500, 10);
        reply(&mut s, 0, 0, 500, 10);
        let tl: Vec<(u64, bool)> = s
            .timeline()
            .iter()
            .map(|x| (x.sent_us, x.answered))
            .collect();
        assert_eq!(tl, [(0, true), (1000, false), (2000, true), (3000, false)]);
    }

    #[test]
    fn no_loss() {
        let mut s = EchoStats::new();
        send_all(&mut s, 100);
        for seq in 0..100 {
            reply(&mut s, seq, u64::from(seq) * 1000, 20_000, 300);
        }
        assert_eq!(s.sent(), 100);
        assert_eq!(s.received(), 100);
        let sum = s.summary(Some(100), Some(100));
        assert_eq!(sum.sent, 100);
        assert_eq!(sum.received, 100);
        assert_eq!(sum.loss_up_pct, Some(0.0));
        assert_eq!(sum.loss_down_pct, Some(0.0));
        let rtt = sum.rtt_ms.unwrap();
        for v in [rtt.min, rtt.p50, rtt.p95, rtt.p99, rtt.max] {
            assert_eq!(v, 20.0, "server hold time must be removed");
        }
        assert_eq!(sum.jitter_ms, 0.0);
        assert_eq!(sum.reordered, 0);
        assert_eq!(sum.duplicates, 0);
    }

    #[test]
    fn loss_up_only() {
        let mut s = EchoStats::new();
        send_all(&mut s, 100);
        // The server got 90 of 100 and echoed all 90, all of which arrived.
        for seq in (0..100).filter(|q| q % 10 != 3) {
            reply(&mut s, seq, u64::from(seq) * 1000, 10_000, 0);
        }
        let sum = s.summary(Some(90), Some(90));
        assert_eq!(sum.received, 90);
        assert!((sum.loss_up_pct.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(sum.loss_down_pct, Some(0.0));
    }

    #[test]
    fn loss_down_only() {
        let mut s = EchoStats::new();
        send_all(&mut s, 100);
        // The server got and echoed all 100, but 10 replies never arrived.
        for seq in (0..100).filter(|q| q % 10 != 7) {
            reply(&mut s, seq, u64::from(seq) * 1000, 10_000, 0);
        }
        let sum = s.summary(Some(100), Some(100));
        assert_eq!(sum.received, 90);
        assert_eq!(sum.loss_up_pct, Some(0.0));
        assert!((sum.loss_down_pct.unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn loss_without_server_counters_and_clamping() {
        let mut s = EchoStats::new();
        send_all(&mut s, 10);
        reply(&mut s, 0, 0, 1000, 0);
        let sum = s.summary(None, None);
        assert_eq!(sum.loss_up_pct, None);
        assert_eq!(sum.loss_down_pct, None);
        // Server claims more than sent / we received more than it sent: clamp to 0.
        let sum = s.summary(Some(50), Some(0));
        assert_eq!(sum.loss_up_pct, Some(0.0));
        assert_eq!(sum.loss_down_pct, Some(0.0));
        let sum = s.summary(Some(0), Some(10));
        assert_eq!(sum.loss_up_pct, Some(100.0));
        assert!((sum.loss_down_pct.unwrap() - 90.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 0.5), Some(1.0));
        assert_eq!(percentile(&v, 50.5), Some(51.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        // Nearest rank on a small set: ceil(0.5 * 4) = 2.
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        let w: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&w, 99.9), Some(999.0));
        let r = RttSummary::from_sorted(&v).unwrap();
        assert_eq!(
            (r.min, r.p50, r.p95, r.p99, r.max),
            (1.0, 50.0, 95.0, 99.0, 100.0)
        );
    }

    #[test]
    fn rtt_percentiles_from_run() {
        let mut s = EchoStats::new();
        send_all(&mut s, 100);
        // Reverse arrival order so that sorting matters; RTT of seq q is (q+1) ms.
        for seq in (0..100u32).rev() {
            reply(
                &mut s,
                seq,
                u64::from(seq) * 1000,
                u64::from(seq + 1) * 1000,
                55,
            );
        }
        let r = s.summary(None, None).rtt_ms.unwrap();
        assert_eq!(
            (r.min, r.p50, r.p95, r.p99, r.max),
            (1.0, 50.0, 95.0, 99.0, 100.0)
        );
    }

    #[test]
    fn jitter_constant_transit_is_zero() {
        let mut s = EchoStats::new();
        send_all(&mut s, 50);
        for seq in 0..50 {
            // Different hold times must not matter: they are subtracted.
            reply(
                &mut s,
                seq,
                u64::from(seq) * 1000,
                15_000,
                u64::from(seq) * 7,
            );
        }
        assert_eq!(s.summary(None, None).jitter_ms, 0.0);
    }

    #[test]
    fn jitter_alternating_by_hand() {
        let mut s = EchoStats::new();
        send_all(&mut s, 4);
        for (seq, rtt) in [(0u32, 10_000u64), (1, 20_000), (2, 10_000), (3, 20_000)] {
            reply(&mut s, seq, u64::from(seq) * 1000, rtt, 100);
        }
        // |D| = 10 each step: J1 = 10/16 = 0.625; J2 = 0.625 + 9.375/16 = 1.2109375;
        // J3 = 1.2109375 + 8.7890625/16 = 1.76025390625.
        assert_eq!(s.jitter_ms(), 1.760_253_906_25);
        assert_eq!(s.summary(None, None).jitter_ms, 1.760_253_906_25);
    }

    #[test]
    fn jitter_alternating_converges_to_10ms() {
        let mut s = EchoStats::new();
        let n = 400;
        send_all(&mut s, n);
        for seq in 0..n {
            let rtt = if seq % 2 == 0 { 10_000 } else { 20_000 };
            reply(&mut s, seq, u64::from(seq) * 1000, rtt, 0);
        }
        let j = s.summary(None, None).jitter_ms;
        // J_n = 10 (1 - (15/16)^n) with n = 399 steps.
        let expected = 10.0 * (1.0 - (15.0f64 / 16.0).powi(399));
        assert!((j - expected).abs() < 1e-9, "{j} vs {expected}");
        assert!((j - 10.0).abs() < 1e-6);
    }

    #[test]
    fn reordering() {
        let mut s = EchoStats::new();
        send_all(&mut s, 4);
        for seq in [0, 2, 1, 3] {
            reply(&mut s, seq, u64::from(seq) * 1000, 5000, 0);
        }
        let sum = s.summary(Some(4), Some(4));
        assert_eq!(sum.reordered, 1);
        assert_eq!(sum.received, 4);
        assert_eq!(sum.duplicates, 0);

        // A late packet behind several later ones still counts once.
        let mut s = EchoStats::new();
        send_all(&mut s, 5);
        for seq in [1, 2, 3, 4, 0] {
            reply(&mut s, seq, u64::from(seq) * 1000, 5000, 0);
        }
        assert_eq!(s.reordered(), 1);
    }

    #[test]
    fn duplicates() {
        let mut s = EchoStats::new();
        send_all(&mut s, 3);
        reply(&mut s, 0, 0, 5000, 0);
        reply(&mut s, 1, 1000, 5000, 0);
        reply(&mut s, 1, 1000, 90_000, 0);
        reply(&mut s, 0, 0, 90_000, 0);
        reply(&mut s, 2, 2000, 5000, 0);
        let sum = s.summary(Some(3), Some(5));
        assert_eq!(sum.received, 3);
        assert_eq!(sum.duplicates, 2);
        assert_eq!(sum.reordered, 0, "duplicates are not reordering");
        assert_eq!(sum.jitter_ms, 0.0, "duplicates do not feed jitter");
        assert_eq!(sum.rtt_ms.unwrap().max, 5.0, "duplicates do not feed RTT");
        // The server answered 5 copies (2 duplicated on the way up) and all 5 came back.
        assert_eq!(
            sum.loss_down_pct,
            Some(0.0),
            "answered duplicates are not downstream loss"
        );
        assert_eq!(
            s.summary(Some(3), Some(6))
                .loss_down_pct
                .map(|l| (l * 1000.0).round()),
            Some(16667.0)
        );
    }

    #[test]
    fn unsent_seqs_ignored() {
        let mut s = EchoStats::new();
        send_all(&mut s, 3);
        reply(&mut s, 3, 0, 5000, 0);
        reply(&mut s, u32::MAX, 0, 5000, 0);
        assert_eq!(s.received(), 0);
        assert_eq!(s.bogus(), 2);
        reply(&mut s, 1, 1000, 5000, 0);
        assert_eq!(s.received(), 1);
        let sum = s.summary(None, None);
        assert_eq!(sum.duplicates, 0);
        assert_eq!(sum.reordered, 0);

        // A huge bogus seq on the send side is not tracked (no giant allocation).
        let mut s = EchoStats::new();
        s.on_sent(u32::MAX, 0);
        assert_eq!(s.sent(), 1);
        reply(&mut s, u32::MAX, 0, 5000, 0);
        assert_eq!(s.received(), 0);
        assert_eq!(s.bogus(), 1);
    }

    #[test]
    fn rtt_saturates() {
        let mut s = EchoStats::new();
        send_all(&mut s, 2);
        // Hold time larger than the round trip, and a reply "before" the send.
        s.on_reply(0, 1000, 0, 10_000, 2000);
        s.on_reply(1, 5000, 100, 100, 1000);
        let r = s.summary(None, None).rtt_ms.unwrap();
        assert_eq!((r.min, r.max), (0.0, 0.0));
    }

    #[test]
    fn empty_run() {
        let s = EchoStats::default();
        assert_eq!(s.sent(), 0);
        assert_eq!(s.received(), 0);
        let sum = s.summary(Some(0), Some(0));
        assert_eq!(
            sum,
            EchoSummary {
                sent: 0,
                received: 0,
                loss_up_pct: None,
                loss_down_pct: Some(0.0),
                rtt_ms: None,
                jitter_ms: 0.0,
                reordered: 0,
                duplicates: 0,
            }
        );
        assert_eq!(s.summary(None, None).loss_down_pct, None);
    }

    #[test]
    fn binomial_sigma_values() {
        assert!((binomial_sigma(10_000, 0.1) - BINOMIAL_SIGMA_K * 30.0).abs() < 1e-9);
        assert_eq!(binomial_sigma(0, 0.5), 0.0);
        assert_eq!(binomial_sigma(100, 0.0), 0.0);
        assert_eq!(binomial_sigma(100, 1.0), 0.0);
        assert_eq!(binomial_sigma(100, f64::NAN), 0.0);
        assert!((binomial_sigma(100, 0.5) - BINOMIAL_SIGMA_K * 5.0).abs() < 1e-9);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Sent(u32, u64),
        Reply(u32, u64, u64, u64, u64),
    }

    fn seq_strategy() -> impl Strategy<Value = u32> {
        prop_oneof![4 => 0u32..300, 1 => any::<u32>()]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            (seq_strategy(), any::<u64>()).prop_map(|(q, t)| Op::Sent(q, t)),
            (
                seq_strategy(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(q, a, b, c, d)| Op::Reply(q, a, b, c, d)),
        ]
    }

    fn check_summary(sum: &EchoSummary) -> Result<(), TestCaseError> {
        prop_assert!(sum.received <= sum.sent);
        for l in [sum.loss_up_pct, sum.loss_down_pct].into_iter().flatten() {
            prop_assert!((0.0..=100.0).contains(&l), "loss {l}");
        }
        prop_assert!(sum.jitter_ms.is_finite() && sum.jitter_ms >= 0.0);
        if let Some(r) = sum.rtt_ms {
            prop_assert!(r.min <= r.p50 && r.p50 <= r.p95 && r.p95 <= r.p99 && r.p99 <= r.max);
            prop_assert!(r.min >= 0.0 && r.max.is_finite());
        } else {
            prop_assert_eq!(sum.received, 0);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_ops_never_panic(
            ops in proptest::collection::vec(op_strategy(), 0..200),
            server_rx in proptest::option::of(any::<u64>()),
            server_tx in proptest::option::of(any::<u64>()),
        ) {
            let mut s = EchoStats::new();
            for op in ops {
                match op {
                    Op::Sent(q, t) => s.on_sent(q, t),
                    Op::Reply(q, a, b, c, d) => s.on_reply(q, a, b, c, d),
                }
                prop_assert!(s.received() <= s.sent());
            }
            let sum = s.summary(server_rx, server_tx);
            check_summary(&sum)?;
            prop_assert_eq!(sum.sent, s.sent());
            prop_assert_eq!(sum.received, s.received());
        }

        #[test]
        fn well_formed_runs(
            n in 0u32..300,
            replies in proptest::collection::vec((any::<proptest::sample::Index>(), 0u64..200_000, 0u64..5_000), 0..400),
            server_rx in proptest::option::of(0u64..400),
            server_tx in proptest::option::of(0u64..400),
        ) {
            let mut s = EchoStats::new();
            send_all(&mut s, n);
            let mut unique = std::collections::BTreeSet::new();
            let mut dups = 0u64;
            if n > 0 {
                for (idx, rtt, hold) in &replies {
                    let seq = idx.index(n as usize) as u32;
                    if !unique.insert(seq) {
                        dups += 1;
                    }
                    reply(&mut s, seq, u64::from(seq) * 1000, *rtt, *hold);
                }
            }
            prop_assert_eq!(s.received(), unique.len() as u64);
            prop_assert_eq!(s.duplicates(), dups);
            prop_assert_eq!(s.bogus(), 0);
            let sum = s.summary(server_rx, server_tx);
            check_summary(&sum)?;
            if let Some(r) = sum.rtt_ms {
                prop_assert!(r.max <= 200.0);
            }
        }
    }
}
