//! One leg of the page's run judged layer by layer: did a connectivity check get its answer
//! (ICE), did the handshake complete (DTLS), did the channel open and echo (data). The browser's
//! own evidence comes first; the server's counts fill in what the page could not see.

use super::browser::{BrowserLeg, GatheringSummary, Layer};
use super::{echo, Gathering, Leg, LegResult, PairStats, ServerCounts};
use crate::msg::Transport;
use crate::report::AgentPair;
use std::net::{IpAddr, SocketAddr};

/// A leg with the server's counts for its session, if the server knew it.
#[derive(Debug, Clone, Copy)]
pub struct LegView<'a> {
    pub r: &'a LegResult,
    pub counts: Option<&'a ServerCounts>,
}

impl<'a> LegView<'a> {
    pub fn new(r: &'a LegResult, counts: &'a [ServerCounts]) -> Self {
        // A session's counts belong to the leg the server opened it for, whatever the page says.
        let counts = counts.iter().find(|c| {
            !r.session.is_empty() && c.session == r.session && c.leg.is_none_or(|l| l == r.leg)
        });
        LegView { r, counts }
    }

    /// Signalling worked: the server opened a session for it.
    pub fn ran(&self) -> bool {
        !self.r.session.is_empty()
    }

    /// The transport the leg's candidates use.
    pub fn transport(&self) -> Transport {
        match self.r.leg {
            Leg::Tcp => Transport::Tcp,
            Leg::Udp | Leg::Dialed => Transport::Udp,
        }
    }

    fn pairs(&self) -> impl Iterator<Item = &'a PairStats> {
        self.r.pairs.iter().chain(self.r.selected.as_ref())
    }

    /// A connectivity check got its answer. DTLS records at the server count too: browsers
    /// start DTLS only on a pair whose check succeeded (pion/webrtc peerconnection.go:2796-2834,
    /// v4.2.18; the same order in libwebrtc), so the answer did reach the browser.
    pub fn ice_answered(&self) -> bool {
        self.ran()
            && (self.r.ice_connected_ms.is_some()
                || matches!(self.r.ice_state.as_str(), "connected" | "completed")
                || self.pairs().any(answered)
                || self.counts.is_some_and(|c| c.dtls_records > 0)
                || self.dtls_up())
    }

    /// The DTLS handshake completed (a data channel or echoed data proves it too).
    pub fn dtls_up(&self) -> bool {
        self.r.dtls_connected_ms.is_some()
            || self.r.dtls_state == "connected"
            || self.r.dc_open_ms.is_some()
            || self
                .counts
                .is_some_and(|c| c.channel_open || c.audio_rx > 0 || c.burst_rx > 0)
    }

    /// The channel opened and at least one message echoed back.
    pub fn data_ok(&self) -> bool {
        let echoed = |s: &Option<super::StreamSamples>| {
            s.as_ref()
                .is_some_and(|s| s.samples.iter().any(|x| x.rtt_ms.is_some()))
        };
        self.r.dc_open_ms.is_some() && (echoed(&self.r.audio) || echoed(&self.r.burst))
    }

    /// The layer at which the leg stopped; None when it passed end to end.
    pub fn failed(&self) -> Option<Layer> {
        if !self.ran() {
            Some(Layer::Signalling)
        } else if !self.ice_answered() {
            Some(Layer::Ice)
        } else if !self.dtls_up() {
            Some(Layer::Dtls)
        } else if !self.data_ok() {
            Some(Layer::Data)
        } else {
            None
        }
    }

    /// The server address the leg's connection used: the selected pair's, else a pair whose
    /// check succeeded, else the first candidate the answer carried.
    pub fn remote(&self) -> Option<SocketAddr> {
        let of = |p: &PairStats| remote_of(p);
        self.r
            .selected
            .as_ref()
            .and_then(of)
            .or_else(|| self.r.pairs.iter().filter(|p| answered(p)).find_map(of))
            .or_else(|| self.candidates().next())
    }

    /// The candidates the answer carried, as the server recorded them.
    pub fn candidates(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        let t = self.transport();
        self.counts
            .into_iter()
            .flat_map(|c| c.candidates.iter())
            .filter(move |(_, p)| *p == t)
            .map(|(a, _)| SocketAddr::new(a.ip().to_canonical(), a.port()))
    }

    /// A pair toward exactly `target` whose check got an answer, if the browser reported one.
    pub fn pair_to(&self, target: SocketAddr) -> Option<&'a PairStats> {
        let mut first = None;
        for p in self.pairs().filter(|p| remote_of(p) == Some(target)) {
            if answered(p) {
                return Some(p);
            }
            first.get_or_insert(p);
        }
        first
    }
}

/// A check on this pair got its answer.
pub fn answered(p: &PairStats) -> bool {
    p.state == "succeeded" || p.responses_received > 0
}

/// The pair's remote `IP:PORT`, when the browser reported an address (not an mDNS name).
pub fn remote_of(p: &PairStats) -> Option<SocketAddr> {
    let ip: IpAddr = p
        .remote_address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip.to_canonical(), p.remote_port))
}

/// A browser pair in the report's [`AgentPair`] shape.
pub fn agent_pair(p: &PairStats) -> AgentPair {
    let remote = remote_of(p).map_or_else(
        || format!("{}:{}", p.remote_address, p.remote_port),
        |a| a.to_string(),
    );
    AgentPair {
        // The page sees no local address (mDNS hides it): the local side is its protocol and type.
        local: format!("{} {}", p.local_protocol, p.local_type),
        remote,
        // ICE-lite servers never send checks, so the remote is always a candidate the answer
        // carried: a host candidate.
        remote_type: "host".into(),
        state: p.state.clone(),
        nominated: p.nominated,
        rtt_ms: p.rtt_ms,
    }
}

/// The leg as the report's browser section shows it.
pub fn browser_leg(v: &LegView) -> BrowserLeg {
    let c = v.counts;
    let audio =
        v.r.audio
            .as_ref()
            .and_then(|s| echo::summary(s, c.map(|c| c.audio_rx), c.map(|c| c.audio_tx)));
    let burst =
        v.r.burst
            .as_ref()
            .and_then(|s| echo::summary(s, c.map(|c| c.burst_rx), c.map(|c| c.burst_tx)));
    let candidates = c.map_or_else(Vec::new, |c| {
        c.candidates
            .iter()
            .take(super::bound::MAX_PAIRS)
            .map(|(a, t)| format!("{} {a}", transport_name(*t)))
            .collect()
    });
    BrowserLeg {
        leg: v.r.leg,
        session: v.r.session.clone(),
        candidates,
        ice_connected_ms: v.r.ice_connected_ms,
        dtls_connected_ms: v.r.dtls_connected_ms,
        dc_open_ms: v.r.dc_open_ms,
        ice_state: v.r.ice_state.clone(),
        dtls_state: v.r.dtls_state.clone(),
        pc_state: v.r.pc_state.clone(),
        selected: v.r.selected.as_ref().map(agent_pair),
        server: c.cloned(),
        audio,
        burst,
        failed: v.failed(),
        error: v.r.error.clone(),
    }
}

/// The gathering phase, counted by protocol and type.
pub fn gathering(g: &Gathering) -> GatheringSummary {
    let mut s = GatheringSummary {
        complete: g.complete,
        ms: g.ms,
        ..GatheringSummary::default()
    };
    for c in &g.candidates {
        match c.protocol.as_str() {
            "udp" => s.udp += 1,
            "tcp" => s.tcp += 1,
            _ => {}
        }
        match c.kind.as_str() {
            "host" => s.host += 1,
            "srflx" => s.srflx += 1,
            "prflx" => s.prflx += 1,
            "relay" => s.relay += 1,
            _ => {}
        }
        if c.address.ends_with(".local") {
            s.mdns += 1;
        }
    }
    s
}

/// "udp" or "tcp", as the page and the JSON spell it.
pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}
