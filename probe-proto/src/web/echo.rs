//! A data-channel stream's samples as an [`EchoSummary`], computed by the same [`EchoStats`] as
//! `probe-client`'s echo: the same RTT percentiles, RFC 3550 jitter and reordering, and loss per
//! direction from the server's own counts (upstream loss is what the server never received).

use super::StreamSamples;
use crate::stats::{EchoStats, EchoSummary};

/// The stream's summary; None when the page sent nothing on it. `rx`/`tx`: what the server
/// received and echoed on this stream of this session (None when the server knew no counts).
pub fn summary(s: &StreamSamples, rx: Option<u64>, tx: Option<u64>) -> Option<EchoSummary> {
    if s.samples.is_empty() {
        return None;
    }
    // The page's own sequence numbers are not trusted as indexes (EchoStats sizes its tables by
    // them): samples are renumbered in the page's sequence order, which keeps their order.
    let mut order: Vec<usize> = (0..s.samples.len()).collect();
    order.sort_by_key(|&i| s.samples[i].seq);
    let us = |ms: f64| (ms * 1000.0) as u64;
    let mut stats = EchoStats::new();
    let mut replies: Vec<(u64, u32, u64)> = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let x = &s.samples[i];
        let (seq, sent) = (n as u32, us(x.sent_ms));
        stats.on_sent(seq, sent);
        if let Some(rtt) = x.rtt_ms {
            replies.push((sent.saturating_add(us(rtt)), seq, sent));
        }
    }
    // Replies are fed in arrival order, as they came off the channel, so that reordering and
    // jitter mean what they mean for probe-client's echo.
    replies.sort_unstable();
    for (recv, seq, sent) in replies {
        // No server hold time: the server echoes at once, the page times the whole round trip.
        stats.on_reply(seq, sent, 0, 0, recv);
    }
    Some(stats.summary(rx, tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::Sample;

    #[test]
    fn loss_per_direction_comes_from_the_server_counts() {
        let samples = (0..100u32)
            .map(|i| Sample {
                seq: i,
                sent_ms: f64::from(i) * 20.0,
                rtt_ms: (i % 10 != 0).then_some(10.0 + f64::from(i % 3)),
            })
            .collect();
        let s = StreamSamples { size: 160, samples };
        // The server received 95 of 100 and echoed all 95; the page saw 90 come back.
        let e = summary(&s, Some(95), Some(95)).unwrap();
        assert_eq!((e.sent, e.received), (100, 90));
        assert!((e.loss_up_pct.unwrap() - 5.0).abs() < 1e-9);
        assert!((e.loss_down_pct.unwrap() - 100.0 * 5.0 / 95.0).abs() < 1e-9);
        let r = e.rtt_ms.unwrap();
        assert_eq!((r.min, r.max), (10.0, 12.0));
        assert!(e.jitter_ms > 0.0);
        assert!(summary(&StreamSamples::default(), None, None).is_none());
        assert_eq!(summary(&s, None, None).unwrap().loss_up_pct, None);
    }

    #[test]
    fn a_late_echo_counts_as_reordered() {
        let mk = |seq, rtt| Sample {
            seq,
            sent_ms: f64::from(seq) * 20.0,
            rtt_ms: Some(rtt),
        };
        // seq 0 comes back after seq 1 (sent 20 ms later, 5 ms RTT).
        let s = StreamSamples {
            size: 160,
            samples: vec![mk(1, 5.0), mk(0, 40.0)],
        };
        assert_eq!(summary(&s, None, None).unwrap().reordered, 1);
    }
}
