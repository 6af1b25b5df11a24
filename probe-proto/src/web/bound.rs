//! Bounds on what the page posts. It comes from a browser on the internet, so before any rule
//! reads it every list is capped, every string cleaned and cut, every time made finite.

use super::{
    GatheredCandidate, Gathering, LegResult, Measurements, PairStats, Sample, StreamSamples,
    MAX_SAMPLES,
};
use crate::sites::clean_text;

/// Legs read at most (a run has three).
pub const MAX_LEGS: usize = 64;
/// Candidate pairs read per leg (a leg has one per remote candidate and local address).
pub const MAX_PAIRS: usize = 32;
/// Gathered candidates read (a browser has a handful per interface).
pub const MAX_GATHERED: usize = 64;
/// Longest free text kept (user agent, the page's error).
const MAX_TEXT: usize = 200;
/// Longest short word kept (states, types, addresses, session ids).
const MAX_WORD: usize = 64;
/// Site names as the results store takes them (probe-server results MAX_SITE_CHARS).
const MAX_SITE: usize = 64;
/// Any duration above this (about 2.8 h) is nonsense from a page whose run lasts seconds.
const MAX_MS: f64 = 1e7;

/// A time in milliseconds, or None when it is not a finite, non-negative number.
pub fn ms(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v.min(MAX_MS))
}

/// The measurements with every bound applied.
pub fn measurements(m: &Measurements) -> Measurements {
    Measurements {
        site: Some(site(m.site.as_deref())),
        user_agent: clean_text(&m.user_agent, MAX_TEXT),
        gathering: gathering(&m.gathering),
        legs: m.legs.iter().take(MAX_LEGS).map(leg).collect(),
    }
}

/// The site the user typed, or "browser" when empty.
pub fn site(s: Option<&str>) -> String {
    let s = clean_text(s.unwrap_or_default().trim(), MAX_SITE);
    if s.trim().is_empty() {
        "browser".into()
    } else {
        s.trim().to_owned()
    }
}

fn word(s: &str) -> String {
    clean_text(s, MAX_WORD)
}

fn gathering(g: &Gathering) -> Gathering {
    Gathering {
        complete: g.complete,
        ms: ms(g.ms),
        candidates: g
            .candidates
            .iter()
            .take(MAX_GATHERED)
            .map(|c| GatheredCandidate {
                protocol: word(&c.protocol).to_ascii_lowercase(),
                kind: word(&c.kind).to_ascii_lowercase(),
                address: word(&c.address),
                port: c.port,
            })
            .collect(),
    }
}

fn leg(l: &LegResult) -> LegResult {
    LegResult {
        leg: l.leg,
        session: word(&l.session),
        deadline_ms: l.deadline_ms.min(MAX_MS as u64),
        ice_connected_ms: ms(l.ice_connected_ms),
        dtls_connected_ms: ms(l.dtls_connected_ms),
        dc_open_ms: ms(l.dc_open_ms),
        ice_state: word(&l.ice_state).to_ascii_lowercase(),
        dtls_state: word(&l.dtls_state).to_ascii_lowercase(),
        pc_state: word(&l.pc_state).to_ascii_lowercase(),
        pairs: l.pairs.iter().take(MAX_PAIRS).map(pair).collect(),
        selected: l.selected.as_ref().map(pair),
        audio: l.audio.as_ref().map(stream),
        burst: l.burst.as_ref().map(stream),
        error: l.error.as_deref().map(|e| clean_text(e, MAX_TEXT)),
    }
}

fn pair(p: &PairStats) -> PairStats {
    PairStats {
        state: word(&p.state).to_ascii_lowercase(),
        nominated: p.nominated,
        requests_sent: p.requests_sent,
        responses_received: p.responses_received,
        local_type: word(&p.local_type).to_ascii_lowercase(),
        local_protocol: word(&p.local_protocol).to_ascii_lowercase(),
        remote_address: word(&p.remote_address),
        remote_port: p.remote_port,
        remote_protocol: word(&p.remote_protocol).to_ascii_lowercase(),
        rtt_ms: ms(p.rtt_ms),
    }
}

fn stream(s: &StreamSamples) -> StreamSamples {
    StreamSamples {
        size: s.size,
        samples: s
            .samples
            .iter()
            .take(MAX_SAMPLES)
            .map(|x| Sample {
                seq: x.seq,
                sent_ms: ms(Some(x.sent_ms)).unwrap_or(0.0),
                rtt_ms: ms(x.rtt_ms),
            })
            .collect(),
    }
}
