//! Rules about the path over time and topology, as pure functions over what the client saw
//! (issue 13): a flow that dies mid-run ([`cut`]), a NAT/firewall mapping that does not outlive
//! a quiet period ([`quiet`]), a client behind the same NAT as RTCD ([`hairpin`]), and large
//! packets lost on the way ([`mtu`]).
//!
//! The measurements travel in the report on the finding they explain (`findings[].path`), or on
//! the `path_held` / `same_nat_as_rtcd` info findings when nothing is wrong: every other report
//! struct is built field by field in code other parts own, and a finding is the one place an
//! optional field can be added without touching them.

pub mod cut;
pub mod findings;
pub mod hairpin;
pub mod mtu;
pub mod quiet;

use serde::{Deserialize, Serialize};

/// One echo request as the client's timeline holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Client time of sending, microseconds since the run started.
    pub sent_us: u64,
    /// A valid reply came back.
    pub answered: bool,
}

/// The server's counters of the session, polled on the control channel during the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSample {
    /// Client time the answer arrived.
    pub at_us: u64,
    /// Echo requests the server received on this transport so far.
    pub rx: u64,
    /// Replies it sent.
    pub tx: u64,
}

/// Which way traffic stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The server stopped receiving: client → server is cut (the way back is untested since).
    Upstream,
    /// The server kept receiving and answering; the answers stopped arriving.
    Downstream,
    /// The server's counters are missing or do not tell.
    Unknown,
}

impl Direction {
    pub fn words(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream (client → server)",
            Direction::Downstream => "downstream (server → client)",
            Direction::Unknown => "in a direction the server's counters do not tell",
        }
    }
}

/// What the path checks measured, as the report carries it (`findings[].path`). Every field is
/// optional so that each check fills only its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathFacts {
    /// "udp" or "tcp".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub transport: String,
    /// Seconds of sending the check covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_s: Option<f64>,
    /// Seconds into the echo at which traffic stopped for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_after_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_direction: Option<Direction>,
    /// Requests sent after the cut, none answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered_after_cut: Option<u64>,
    /// Loss before the cut, percent of requests (both directions together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_before_cut_pct: Option<f64>,
    /// The quiet-period test: seconds with nothing sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_s: Option<f64>,
    /// "held", "remapped" or "no_replies" (see [`quiet::QuietOutcome`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_outcome: Option<quiet::QuietOutcome>,
    /// The client's public address as the server saw it before and after the quiet period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapped_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapped_after: Option<String>,
    /// Hairpin: the client's public address and the RTCD address it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_public: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcd_advertised: Option<String>,
    /// "same_address" or "same_24".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_nat: Option<hairpin::Relation>,
    /// ICE checks to the advertised address came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hairpin_ok: Option<bool>,
    /// Path MTU ([`mtu`]): the largest UDP payload judged each way (0: not even the smallest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_largest_up: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_largest_down: Option<u16>,
    /// An ICMP "fragmentation needed" / "packet too big" reached the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_icmp: Option<bool>,
    /// 1400-byte TCP frames passed both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_tcp_ok: Option<bool>,
}

/// Seconds with millisecond resolution, for the report.
pub fn secs(us: u64) -> f64 {
    (us as f64 / 1000.0).round() / 1000.0
}
