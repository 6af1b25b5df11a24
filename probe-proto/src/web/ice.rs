//! The ICE section of a page run's report, filled as `probe-client` fills it
//! (probe-client/src/ice/mod.rs `run`): the same advertised candidates and server facts from the
//! [`IceOffer`], one [`PairResult`] per advertised candidate, and the reference check at the
//! address the page was loaded from (the dialed leg), so `ice_verdict` judges it unchanged.

use super::legs::{agent_pair, answered, transport_name, LegView};
use super::Leg;
use crate::msg::{IceOffer, Transport};
use crate::report::{AdvertisedCandidate, IceReport, PairResult};
use std::net::SocketAddr;

/// Advertised targets judged at most per transport (RTCD advertises a handful).
const MAX_TARGETS: usize = 32;

/// The ICE report of the page's legs. `dialed`: the address the dialed leg tested; `no_udp`:
/// the browser may not use UDP, so UDP was never tried.
pub fn ice_report(
    offer: &IceOffer,
    legs: &[LegView],
    dialed: Option<SocketAddr>,
    no_udp: bool,
) -> IceReport {
    let facts = offer.facts.as_ref();
    let mut r = IceReport {
        advertised: offer
            .candidates
            .iter()
            .take(MAX_TARGETS * 2)
            .map(|c| AdvertisedCandidate {
                address: c.address.to_string(),
                port: c.port,
                protocol: c.protocol,
                private: crate::rtcd::is_private(c.address),
                source: c.source,
            })
            .collect(),
        rtcd_port: offer.rtcd_port_udp,
        probe_port: offer.probe_port_udp,
        dialed: dialed.map(|d| d.to_string()).unwrap_or_default(),
        override_value: offer.override_value.clone().filter(|v| !v.is_empty()),
        override_form: offer.override_form.clone(),
        override_resolved_server: offer
            .override_resolved
            .iter()
            .map(|a| a.to_string())
            .collect(),
        deployment: facts.map(|f| f.deployment.clone()).unwrap_or_default(),
        pion_rules: facts.map(|f| f.rules),
        filter_ignores: facts.and_then(|f| f.filter_ignores),
        ice_address_udp: facts.map(|f| f.ice_address_udp.clone()).unwrap_or_default(),
        ice_address_tcp: facts.map(|f| f.ice_address_tcp.clone()).unwrap_or_default(),
        relay_servers: facts.map(|f| f.relay_servers.clone()).unwrap_or_default(),
        ..IceReport::default()
    };
    for t in [Transport::Udp, Transport::Tcp] {
        // A transport no leg tried stays "not checked" rather than "no answer".
        let tried = legs.iter().any(|v| v.transport() == t && v.ran());
        if !tried || (no_udp && t == Transport::Udp) {
            continue;
        }
        for target in targets(offer, t) {
            r.pairs.push(judge(target, t, legs, offer, dialed));
        }
    }
    let dialed_leg = legs.iter().find(|v| v.r.leg == Leg::Dialed && v.ran());
    if let (Some(d), Some(v)) = (dialed, dialed_leg) {
        // As probe-client: the reference check is listed apart only when not advertised.
        if !r
            .pairs
            .iter()
            .any(|p| p.protocol == Transport::Udp && p.remote == d.to_string())
        {
            r.dialed_checks
                .push(judge(d, Transport::Udp, &[*v], offer, Some(d)));
        }
    }
    if let Some(v) = legs.iter().find(|v| v.r.leg == Leg::Udp && v.ran()) {
        r.agent_state = v.r.ice_state.clone();
        r.agent_pairs = v.r.pairs.iter().map(agent_pair).collect();
        r.agent_selected = v.r.selected.as_ref().map(agent_pair);
    }
    r
}

/// Unique advertised `IP:PORT`s of one transport, in advertised order.
fn targets(offer: &IceOffer, t: Transport) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for c in offer.candidates.iter().filter(|c| c.protocol == t) {
        let a = SocketAddr::new(c.address.to_canonical(), c.port);
        if !out.contains(&a) && out.len() < MAX_TARGETS {
            out.push(a);
        }
    }
    out
}

/// The candidates a leg's answer carried: as the server recorded them, else as the contract
/// says the server builds them.
fn answer_candidates(v: &LegView, offer: &IceOffer, dialed: Option<SocketAddr>) -> Vec<SocketAddr> {
    let recorded: Vec<SocketAddr> = v.candidates().collect();
    if !recorded.is_empty() || v.counts.is_some() {
        return recorded;
    }
    match v.r.leg {
        Leg::Dialed => dialed.into_iter().collect(),
        _ => targets(offer, v.transport()),
    }
}

/// One advertised target judged from the legs of its transport: passed when the browser had a
/// pair to exactly that address whose check got an answer, or, without pair statistics (some
/// browsers give none), when the leg got an answer and this target was its only candidate.
fn judge(
    target: SocketAddr,
    t: Transport,
    legs: &[LegView],
    offer: &IceOffer,
    dialed: Option<SocketAddr>,
) -> PairResult {
    let mut out = PairResult {
        remote: target.to_string(),
        protocol: t,
        ok: false,
        rtt_ms: None,
        detail: None,
    };
    let ran: Vec<&LegView> = legs
        .iter()
        .filter(|v| v.transport() == t && v.ran())
        .collect();
    let mut seen = None;
    for v in &ran {
        match v.pair_to(target) {
            Some(p) if answered(p) => {
                out.ok = true;
                out.rtt_ms = p.rtt_ms;
                out.detail = None;
                return out;
            }
            Some(p) => seen = Some(p),
            None if v.ice_answered() && answer_candidates(v, offer, dialed) == [target] => {
                out.ok = true;
                out.rtt_ms = v.r.selected.as_ref().and_then(|p| p.rtt_ms);
                return out;
            }
            None => {}
        }
    }
    out.detail = Some(match seen {
        Some(p) => format!(
            "no answer: the browser sent {} check(s), {} answered (pair {})",
            p.requests_sent, p.responses_received, p.state
        ),
        None => format!(
            "the browser formed no {} candidate pair with it",
            transport_name(t)
        ),
    });
    out
}
