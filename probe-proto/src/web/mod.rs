//! The browser test page: what the page measures and posts, what the server counted for each
//! of the page's WebRTC sessions, and the data-channel message format between them. The report
//! is built from these by the same rules and finding ids as `probe-client`'s ([`report`]): the
//! same [`crate::report::Report`], plus its `browser` section ([`BrowserReport`]) with what
//! the browser itself saw and the layer each leg failed at.
//!
//! # The exchange (all on the probe's TCP port, HTTP/1.1, JSON bodies)
//! - `GET /?t=TOKEN` serves the page (the token only when the server has one).
//! - `POST /session?t=TOKEN&leg=udp|tcp|dialed`, body `{"type":"offer","sdp":"…"}`: the server
//!   answers `{"session":"<hex id>","answer":{"type":"answer","sdp":"…"},"candidates":[…]}` with
//!   only that leg's candidates ([`Leg`]).
//! - `POST /report?t=TOKEN`, body [`Measurements`]: the server adds its [`ServerCounts`] for the
//!   sessions named, builds the report, stores it, and answers [`ReportReply`].
//!
//! # The data channel
//! One unordered channel with no retransmissions (`ordered: false, maxRetransmits: 0`, as media
//! would be lost, not delayed). Every message is binary: byte 0 the stream ([`STREAM_AUDIO`],
//! [`STREAM_BURST`]), bytes 1–4 the sequence number (big-endian), the rest padding to the
//! stream's size. The server echoes each message unchanged (never larger: the reply is the
//! request) and counts what it received and sent per stream.

use crate::msg::Transport;
use serde::{Deserialize, Serialize};

pub mod bound;
pub mod browser;
mod echo;
mod findings;
mod ice;
mod legs;
pub mod report;
pub mod request;
#[cfg(test)]
mod tests;

pub use browser::BrowserReport;
pub use report::{build_report, PageContext};

/// Audio cadence: 50 messages a second for 5 s, each the size of an Opus frame in SRTP.
pub const STREAM_AUDIO: u8 = 1;
/// Video-like bursts: 1,200-byte messages (pion's outbound MTU for RTP).
pub const STREAM_BURST: u8 = 2;
/// Largest data-channel message the server echoes; anything larger is counted and dropped.
pub const MAX_MESSAGE: usize = 1200;
/// Samples kept per stream when building a report (5 s at 50 pps is 250).
pub const MAX_SAMPLES: usize = 2000;

/// Which candidates the server put in a session's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// RTCD's advertised UDP host candidates (exactly what RTCD would advertise).
    Udp,
    /// RTCD's advertised TCP passive candidates.
    Tcp,
    /// One UDP candidate at the address the page was loaded from (the Host the browser used),
    /// the reference that tells "UDP blocked" from "the advertised address is wrong".
    Dialed,
}

/// The stream a data-channel message belongs to, from its first byte.
pub fn stream_of(msg: &[u8]) -> Option<u8> {
    match msg.first() {
        Some(&s @ (STREAM_AUDIO | STREAM_BURST)) if msg.len() >= 5 && msg.len() <= MAX_MESSAGE => {
            Some(s)
        }
        _ => None,
    }
}

/// What the page posts to `POST /report`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// The site the user typed; "browser" when empty.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub user_agent: String,
    pub gathering: Gathering,
    /// One per session the page ran, in the order run.
    pub legs: Vec<LegResult>,
}

/// The browser's own candidate gathering (a throw-away peer connection, no servers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gathering {
    /// `icegatheringstatechange` reached "complete" before the deadline.
    pub complete: bool,
    pub ms: Option<f64>,
    pub candidates: Vec<GatheredCandidate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatheredCandidate {
    /// "udp" or "tcp".
    pub protocol: String,
    /// "host", "srflx", "prflx" or "relay".
    #[serde(rename = "type")]
    pub kind: String,
    /// An IP, an mDNS name (`….local`) or "" when hidden.
    pub address: String,
    #[serde(default)]
    pub port: u16,
}

/// One WebRTC session of the page, as the browser saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegResult {
    pub leg: Leg,
    /// The id `POST /session` returned; empty when signalling itself failed.
    pub session: String,
    /// The deadline the page gave this session, milliseconds.
    pub deadline_ms: u64,
    /// Milliseconds from `setRemoteDescription` to each state.
    pub ice_connected_ms: Option<f64>,
    pub dtls_connected_ms: Option<f64>,
    pub dc_open_ms: Option<f64>,
    /// Final states: `iceConnectionState`, the DTLS transport's state, `connectionState`.
    pub ice_state: String,
    pub dtls_state: String,
    pub pc_state: String,
    /// Every candidate pair from getStats.
    pub pairs: Vec<PairStats>,
    /// The transport's selected pair.
    pub selected: Option<PairStats>,
    pub audio: Option<StreamSamples>,
    pub burst: Option<StreamSamples>,
    /// What went wrong in the page itself (signalling failed, an exception), in words.
    pub error: Option<String>,
}

/// A candidate pair from getStats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    pub state: String,
    pub nominated: bool,
    pub requests_sent: u64,
    pub responses_received: u64,
    pub local_type: String,
    pub local_protocol: String,
    pub remote_address: String,
    pub remote_port: u16,
    pub remote_protocol: String,
    pub rtt_ms: Option<f64>,
}

/// One stream's messages as the page sent them and saw their echoes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSamples {
    /// Message size in bytes.
    pub size: u32,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub seq: u32,
    /// Page clock (`performance.now()`), milliseconds.
    pub sent_ms: f64,
    /// None: no echo came back before the stream's deadline.
    pub rtt_ms: Option<f64>,
}

/// What the server counted for one session (the page cannot see what never arrived).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerCounts {
    pub session: String,
    pub leg: Option<Leg>,
    /// The candidates the answer carried.
    pub candidates: Vec<(std::net::SocketAddr, Transport)>,
    /// STUN Binding requests for this session's ufrag, and how many were answered.
    pub stun_requests: u64,
    pub stun_answered: u64,
    /// DTLS records received from the browser.
    pub dtls_records: u64,
    pub dtls_connected: bool,
    pub channel_open: bool,
    pub audio_rx: u64,
    pub audio_tx: u64,
    pub burst_rx: u64,
    pub burst_tx: u64,
}

/// What `POST /report` answers: the report as `probe-client --json` prints it, and its text
/// rendering in the same words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportReply {
    pub report: crate::report::Report,
    pub text: String,
    /// Why the report was not kept in the results store, if it was not.
    pub not_stored: Option<String>,
}
