//! The browser-only findings: what the page can see that `probe-client` cannot (the browser's
//! own UDP policy, DTLS and the data channel after ICE), and tests the page could not run.

use super::browser::Layer;
use super::legs::{transport_name, LegView};
use super::{Gathering, Leg};
use crate::catalog::FindingId;
use crate::msg::{IceOffer, Transport};
use crate::report::{Finding, Severity};

/// The UDP leg formed no candidate pair at all and the browser gathered no UDP candidate: the
/// browser is not allowed to use UDP. Zero candidates alone prove nothing (a network namespace
/// without a default route gathers none and still connects through a peer-reflexive candidate:
/// spike REPORT.md §3), so the missing pairs decide.
pub fn no_udp(g: &Gathering, legs: &[LegView]) -> bool {
    let udp_leg = legs.iter().find(|v| v.r.leg == Leg::Udp && v.ran());
    udp_leg.is_some_and(|v| v.r.pairs.is_empty() && v.r.selected.is_none() && !v.ice_answered())
        && !g.candidates.iter().any(|c| c.protocol == "udp")
}

pub fn browser_no_udp(offer: &IceOffer, legs: &[LegView]) -> Finding {
    let tcp = legs.iter().find(|v| v.r.leg == Leg::Tcp && v.ran());
    let tcp_state = match tcp {
        Some(v) if v.failed().is_none() => ", which works from here",
        Some(_) => ", and the TCP test failed too",
        None => "",
    };
    Finding::new(
        FindingId::BrowserNoUdp,
        Severity::Error,
        format!(
            "This browser is not allowed to use UDP: it gathered no UDP candidate and its UDP test formed no \
             candidate pair, so UDP to port {} was never tried (a browser policy, a VPN or a privacy extension \
             forbids it). Calls from this browser can only use TCP{tcp_state}.",
            offer.probe_port_udp
        ),
        format!(
            "Lift the restriction for the Mattermost site: the Chrome/Edge policy WebRtcIPHandling (or \
             WebRtcIPHandlingUrl) must not be disable_non_proxied_udp, turn off the VPN's or extension's WebRTC \
             protection, and in Firefox set media.peerconnection.ice.proxy_only to false. Until then keep TCP {} \
             (RTCD's ice_port_tcp) open from this network so calls fall back to TCP.",
            offer.probe_port_tcp
        ),
    )
}

/// Where a leg connected, for sentences: "UDP to 203.0.113.1:8443 (udp test)".
fn place(v: &LegView) -> String {
    let t = match v.transport() {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    let leg = format!("{:?}", v.r.leg).to_lowercase();
    match v.remote() {
        Some(a) => format!("{t} to {a} (the page's {leg} test)"),
        None => format!("{t} (the page's {leg} test)"),
    }
}

/// ICE connected on a leg but DTLS never did: one finding naming every such leg.
pub fn dtls_blocked(legs: &[LegView]) -> Option<Finding> {
    let failed: Vec<&LegView> = legs
        .iter()
        .filter(|v| v.failed() == Some(Layer::Dtls))
        .collect();
    if failed.is_empty() {
        return None;
    }
    let parts: Vec<String> = failed
        .iter()
        .map(|v| {
            let server = match v.counts {
                Some(c) if c.dtls_records == 0 => {
                    ", and the server received no DTLS record (dropped on the way in)".to_string()
                }
                Some(c) => format!(
                    ", and the server received {} DTLS record(s) (its replies are lost on the way back, \
                     unless the handshake itself failed: the server's log says)",
                    c.dtls_records
                ),
                None => String::new(),
            };
            format!(
                "over {}, the handshake did not complete within {:.1} s (last DTLS state \"{}\"){server}",
                place(v),
                v.r.deadline_ms as f64 / 1000.0,
                v.r.dtls_state
            )
        })
        .collect();
    let ports: Vec<String> = failed
        .iter()
        .map(|v| {
            let port = v
                .remote()
                .map_or_else(String::new, |a| format!(" {}", a.port()));
            format!("{}{port}", transport_name(v.transport()).to_uppercase())
        })
        .collect();
    Some(Finding::new(
        FindingId::DtlsBlocked,
        Severity::Error,
        format!(
            "ICE connected but DTLS did not: {}. Something on the path lets ICE checks (STUN) through and \
             drops DTLS, so calls connect and then fail.",
            parts.join("; ")
        ),
        format!(
            "Exempt RTCD's media port ({}) from deep packet inspection / application filtering on this network's \
             firewall, proxy or VPN: WebRTC sends DTLS (first byte 20-63) on the same 5-tuple right after ICE.",
            ports.join(", ")
        ),
    ))
}

/// DTLS connected but the channel did not open or nothing echoed back.
pub fn data_channel_failed(legs: &[LegView]) -> Option<Finding> {
    let failed: Vec<String> = legs
        .iter()
        .filter(|v| v.failed() == Some(Layer::Data))
        .map(|v| {
            let what = if v.r.dc_open_ms.is_none() {
                "the data channel never opened".to_string()
            } else {
                let sent =
                    |s: &Option<super::StreamSamples>| s.as_ref().map_or(0, |s| s.samples.len());
                format!(
                    "the channel opened but none of {} message(s) echoed back",
                    sent(&v.r.audio) + sent(&v.r.burst)
                )
            };
            let server = v.counts.map_or_else(String::new, |c| {
                format!(
                    " (the server received {} message(s) and echoed {})",
                    c.audio_rx.saturating_add(c.burst_rx),
                    c.audio_tx.saturating_add(c.burst_tx)
                )
            });
            format!("over {}, {what}{server}", place(v))
        })
        .collect();
    if failed.is_empty() {
        return None;
    }
    Some(Finding::new(
        FindingId::DataChannelFailed,
        Severity::Error,
        format!(
            "DTLS connected but the data did not: {}. Encrypted records after the handshake do not get through.",
            failed.join("; ")
        ),
        "Look for a middlebox that passes the DTLS handshake and then drops, throttles or rewrites the encrypted \
         records (a size or rate limit, a UDP session limit), then run the page again.",
    ))
}

/// Legs the page could not run (signalling failed), or no leg at all. A TCP leg refused because
/// RTCD advertises no TCP candidate is left to the ICE verdict, which names that setting.
pub fn incomplete(offer: &IceOffer, legs: &[LegView], live: bool) -> Option<Finding> {
    // A TCP leg is expected only where it can run: RTCD advertises ICE-TCP, and the port is
    // the probe's (in live mode RTCD holds it).
    let has_tcp = !live
        && offer
            .candidates
            .iter()
            .any(|c| c.protocol == Transport::Tcp);
    let missing: Vec<String> = legs
        .iter()
        .filter(|v| !v.ran() && (v.r.leg != Leg::Tcp || has_tcp))
        .map(|v| {
            // The server's sentences end with a full stop; the list adds its own.
            let why = v.r.error.as_deref().unwrap_or("no session was opened");
            let why = why.trim_end().trim_end_matches('.');
            format!(
                "the {} test: {why}",
                format!("{:?}", v.r.leg).to_lowercase()
            )
        })
        .collect();
    let udp_ran = legs
        .iter()
        .any(|v| v.ran() && v.transport() == Transport::Udp);
    if missing.is_empty() && udp_ran {
        return None;
    }
    let summary = if legs.is_empty() {
        "The page ran no connection test, so nothing was judged.".to_string()
    } else if missing.is_empty() {
        "The page ran no UDP test.".to_string()
    } else {
        format!("The page could not run {}.", missing.join("; "))
    };
    let (severity, summary) = if udp_ran {
        (Severity::Warning, summary)
    } else {
        (
            Severity::Error,
            format!("{summary} UDP, media's transport, was not tested."),
        )
    };
    Some(Finding::new(
        FindingId::BrowserTestIncomplete,
        severity,
        summary,
        "Run the page again; if it repeats, the message above names the cause (the admin can raise \
         probe-server's web session limits).",
    ))
}
