//! The TURN check, sans IO: a TURN client ([`client`]) over our own codec ([`codec`]), TURN
//! REST credentials ([`rest`]), TURN URIs ([`uri`]), the report's `turn` object and the
//! findings drawn from it ([`verdict`]).
//!
//! # Why our own client, not webrtc-rs `turn`
//! The webrtc-rs `turn` crate (0.17) has a working client, but it is built for relaying, not for
//! diagnosing: `Client::allocate()` runs the 401 challenge, the retry and the 438 handling
//! internally and returns a `RelayConn` or one `Error` whose variants do not carry the STUN
//! error code and reason; CreatePermission and ChannelBind happen implicitly on the first
//! `send_to` toward a peer, so "the server refuses to relay to RTCD's address" (a 403 on
//! CreatePermission, coturn's `denied-peer-ip`) is not observable as such; refreshes run on its
//! own timers; and it owns the socket through its Tokio `Conn` trait, so TURN over TLS through an
//! HTTP proxy's CONNECT tunnel would need an adapter around all of that. The probe needs each
//! step, its timing and its exact error code. `stun_codec` has the RFC 5766 attribute types,
//! but its MESSAGE-INTEGRITY check re-encodes the decoded message (see `crate::stun`'s notes), so
//! the TURN codec here works on the byte level like `crate::stun` does, and is tested against
//! the RFC 5769 long-term-credential vector.
//!
//! The drivers (UDP, TCP and TLS sockets, proxies, the clock) live in `probe-client/src/turn`.

pub mod client;
pub mod codec;
pub mod rest;
pub mod uri;
pub mod verdict;

use crate::stats::EchoSummary;
use serde::{Deserialize, Serialize};

pub use client::{Cause, Op};

/// How the client reached the TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnTransport {
    Udp,
    Tcp,
    /// `turns:` — TLS over TCP.
    Tls,
}

impl TurnTransport {
    pub fn label(self) -> &'static str {
        match self {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
            TurnTransport::Tls => "tls",
        }
    }
}

/// The furthest step one attempt reached, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reached {
    Nothing,
    /// TCP connected (and TLS handshake done, for `turns:`); UDP has no such step.
    Connected,
    Allocated,
    /// At least one permission was installed.
    Permitted,
    ChannelBound,
    /// Echo went to the probe server through the relay and came back.
    Echoed,
}

/// One step of an attempt, with its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// "connect", "tls", "allocate", "permission", "channel_bind", "refresh", "echo".
    pub step: String,
    pub ok: bool,
    pub ms: Option<f64>,
    /// The peer for permission and channel steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The STUN error code when the server answered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// CreatePermission toward one address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionResult {
    pub peer: String,
    /// An address RTCD advertises (the others: the probe server's own address).
    pub rtcd: bool,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One TURN URL over one transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnAttempt {
    pub url: String,
    pub transport: TurnTransport,
    /// The address used (first that answered, else the last tried).
    pub server: Option<String>,
    /// What the host name resolved to (A and AAAA).
    pub resolved: Vec<String>,
    /// The HTTP proxy the connection went through (CONNECT), when one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    pub reached: Reached,
    pub steps: Vec<StepResult>,
    pub relayed: Option<String>,
    pub relayed_private: bool,
    /// The client's address as the TURN server saw it.
    pub mapped: Option<String>,
    pub permissions: Vec<PermissionResult>,
    /// Echo through the relay to the probe server (loss per direction from the server's own
    /// relay counters).
    pub echo: Option<EchoSummary>,
    pub refreshes_ok: u32,
    /// "Refresh: 403 Forbidden IP", … — refreshes of the allocation, permissions or channel.
    pub refresh_failures: Vec<String>,
    /// 438 Stale Nonce answers handled.
    pub stale_nonces: u32,
    pub software: Option<String>,
    /// Why the attempt stopped short, and what that means.
    pub error: Option<String>,
    pub cause: Option<Cause>,
}

impl TurnAttempt {
    pub fn new(url: &str, transport: TurnTransport) -> Self {
        Self {
            url: url.into(),
            transport,
            server: None,
            resolved: vec![],
            proxy: None,
            reached: Reached::Nothing,
            steps: vec![],
            relayed: None,
            relayed_private: false,
            mapped: None,
            permissions: vec![],
            echo: None,
            refreshes_ok: 0,
            refresh_failures: vec![],
            stale_nonces: 0,
            software: None,
            error: None,
            cause: None,
        }
    }
}

/// The credentials used, without the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// "rest" (an expiry in the username, from a shared secret) or "static".
    pub kind: String,
    pub username: String,
    pub expires_at: Option<String>,
    /// Seconds left by this computer's clock (negative: expired).
    pub valid_for_s: Option<i64>,
    /// This computer's clock minus the reference clock, in ms (positive: ahead).
    pub clock_skew_ms: Option<i64>,
    /// Which clock: "mattermost" (its HTTP Date) or "probe-server" (the welcome).
    pub skew_reference: Option<String>,
}

/// The Mattermost credentials endpoint, fetched as the web app does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointResult {
    pub url: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// TURN URLs it returned (with credentials) or configured without needing them.
    pub turn_urls: Vec<String>,
}

/// The report's `turn` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnReport {
    /// "flags" (--turn) or "mattermost" (--mattermost).
    pub source: String,
    pub credentials: Option<CredentialInfo>,
    pub endpoint: Option<EndpointResult>,
    pub attempts: Vec<TurnAttempt>,
    /// At least one attempt carried echo through the relay to the probe server.
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use crate::msg::{Control, Counters};

    /// The proto-3 control messages round-trip and stay within the hello's padding.
    #[test]
    fn relay_control_messages_round_trip() {
        let msgs = [
            Control::RelayPeer {
                session_id: 7,
                relayed: "203.0.113.1:49152".parse().unwrap(),
                pad: vec![0; 64],
            },
            Control::RelayAdded {
                accepted: false,
                reason: Some("at most 4 relays per session".into()),
            },
            Control::RelayFinish {
                session_id: 7,
                pad: vec![0; 64],
            },
            Control::RelayCounters(Counters {
                udp_rx: 250,
                udp_tx: 249,
                ..Counters::default()
            }),
        ];
        let key = crate::auth::token_key("t");
        for m in msgs {
            for token in [None, Some(&key)] {
                let p = m.to_payload(token);
                assert_eq!(Control::from_payload(&p, token).unwrap(), m);
            }
        }
    }
}
