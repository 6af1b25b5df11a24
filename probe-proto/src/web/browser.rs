//! The browser section of a page run's report (`"browser"` in the JSON): what the browser itself
//! saw, leg by leg, and the layer that failed. The verdict lives in the report's findings; this
//! is the evidence behind them.

use super::{Leg, ServerCounts};
use crate::report::AgentPair;
use crate::stats::EchoSummary;
use serde::{Deserialize, Serialize};

/// What the page measured, bounded and cleaned (see [`super::bound`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrowserReport {
    pub user_agent: String,
    pub gathering: GatheringSummary,
    /// One per session the page ran, in the order run.
    pub legs: Vec<BrowserLeg>,
}

/// The browser's own candidate gathering, counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatheringSummary {
    pub complete: bool,
    pub ms: Option<f64>,
    pub udp: u32,
    pub tcp: u32,
    pub host: u32,
    pub srflx: u32,
    pub prflx: u32,
    pub relay: u32,
    /// Host candidates hidden behind an mDNS name (`….local`).
    pub mdns: u32,
}

/// The layer at which a leg stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// `POST /session` failed: nothing was tested.
    Signalling,
    /// No connectivity check got an answer.
    Ice,
    /// ICE worked, the DTLS handshake did not complete.
    Dtls,
    /// DTLS worked, the data channel did not open or nothing echoed back.
    Data,
}

impl Layer {
    pub fn label(self) -> &'static str {
        match self {
            Layer::Signalling => "signalling",
            Layer::Ice => "ICE",
            Layer::Dtls => "DTLS",
            Layer::Data => "data channel",
        }
    }
}

/// One WebRTC session of the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrowserLeg {
    pub leg: Leg,
    pub session: String,
    /// The candidates the answer carried (`udp 203.0.113.1:8443`), from the server's counts.
    pub candidates: Vec<String>,
    pub ice_connected_ms: Option<f64>,
    pub dtls_connected_ms: Option<f64>,
    pub dc_open_ms: Option<f64>,
    pub ice_state: String,
    pub dtls_state: String,
    pub pc_state: String,
    pub selected: Option<AgentPair>,
    /// What the server counted for this session; None when it knew no such session.
    pub server: Option<ServerCounts>,
    pub audio: Option<EchoSummary>,
    pub burst: Option<EchoSummary>,
    /// The layer that failed; None when the leg passed end to end.
    pub failed: Option<Layer>,
    pub error: Option<String>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.0} ms"))
}

/// The report's short browser section: gathering, then one line per leg (and its echo).
pub fn render_lines(out: &mut String, b: &BrowserReport) {
    out.push_str(&format!("Browser  {}\n", b.user_agent));
    let g = &b.gathering;
    out.push_str(&format!(
        "     gathering {}{}: {} udp, {} tcp (host {}, srflx {}, mDNS {})\n",
        if g.complete { "complete" } else { "INCOMPLETE" },
        g.ms.map(|v| format!(" in {v:.0} ms")).unwrap_or_default(),
        g.udp,
        g.tcp,
        g.host,
        g.srflx,
        g.mdns
    ));
    for l in &b.legs {
        leg_lines(out, l);
    }
}

fn leg_lines(out: &mut String, l: &BrowserLeg) {
    let name = format!("{:?}", l.leg).to_lowercase();
    let state = match (l.failed, &l.error) {
        (None, _) => "passed".to_string(),
        (Some(Layer::Signalling), Some(e)) => format!("NOT RUN: {e}"),
        (Some(layer), _) => format!("FAILED at {}", layer.label()),
    };
    out.push_str(&format!(
        "     leg {name:<6}  ICE {}  DTLS {}  channel {}   {state}\n",
        ms(l.ice_connected_ms),
        ms(l.dtls_connected_ms),
        ms(l.dc_open_ms)
    ));
    if let Some(p) = &l.selected {
        let rtt = p
            .rtt_ms
            .map(|r| format!(" ({r:.1} ms)"))
            .unwrap_or_default();
        out.push_str(&format!("          pair {} → {}{rtt}\n", p.local, p.remote));
    }
    if l.failed.is_some_and(|f| f != Layer::Signalling) {
        if let Some(c) = &l.server {
            out.push_str(&format!(
                "          server saw: {} ICE check(s), answered {}; {} DTLS record(s); channel {}\n",
                c.stun_requests,
                c.stun_answered,
                c.dtls_records,
                if c.channel_open { "open" } else { "not open" }
            ));
        }
    }
    for (what, e) in [("audio", &l.audio), ("burst", &l.burst)] {
        if let Some(e) = e {
            let p = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} %"));
            let rtt = e
                .rtt_ms
                .map(|r| format!("  RTT p50 {:.1} p95 {:.1} ms", r.p50, r.p95))
                .unwrap_or_default();
            out.push_str(&format!(
                "          {what} sent {} received {}  loss up {} down {}{rtt}\n",
                e.sent,
                e.received,
                p(e.loss_up_pct),
                p(e.loss_down_pct)
            ));
        }
    }
}
