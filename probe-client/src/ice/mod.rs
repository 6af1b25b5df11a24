//! ICE from the user's network, as a browser would run it against RTCD.
//!
//! The server sends what RTCD would advertise (computed there, never here) and fresh ICE
//! credentials. Three things run at once, all bounded:
//! - our own connectivity checks to each advertised candidate, UDP (`udp.rs`) and TCP
//!   (`tcp.rs`), plus the same check to the address the client dialed when it is not advertised;
//! - a real webrtc-ice agent against the UDP candidates (`agent.rs`), recorded for comparison;
//! - the client's own resolution of a hostname override (`resolve.rs`).
//!
//! The verdict (probe_proto::ice_verdict) rests only on the per-candidate checks.

mod agent;
mod resolve;
mod tcp;
mod udp;

use probe_proto::ice_verdict;
use probe_proto::msg::{IceOffer, Transport};
use probe_proto::report::{AdvertisedCandidate, IceReport, PairResult};
use probe_proto::stun;
use std::net::SocketAddr;
use std::time::Duration;

/// Per-candidate checks stop after this long; a live path answers in one RTT.
const CHECK_BOUND: Duration = Duration::from_millis(2500);
/// The agent gets a little longer: it paces its checks and nominates after the first success.
const AGENT_BOUND: Duration = Duration::from_secs(3);
const RESOLVE_BOUND: Duration = Duration::from_secs(2);
/// Safety net over the whole phase; the parts above end well before it.
const PHASE_BOUND: Duration = Duration::from_secs(6);

/// What the orchestrator knows when the ICE phase starts.
pub struct IceInputs<'a> {
    pub offer: &'a IceOffer,
    /// The server address the client reached (after its own DNS resolution).
    pub dialed: SocketAddr,
    /// The host as the user typed it.
    pub host: &'a str,
    pub udp_reachable: bool,
    pub tcp_reachable: bool,
    /// The transports the user asked to test: `--no-udp` / `--no-tcp` leave out their checks.
    pub udp_tested: bool,
    pub tcp_tested: bool,
}

/// ICE credentials of one check: we are the controlling agent toward the server.
pub struct Creds {
    pub remote_ufrag: String,
    pub remote_pwd: String,
    pub local_ufrag: String,
    tiebreaker: u64,
}

impl Creds {
    fn new(offer: &IceOffer) -> Self {
        let r: [u8; 12] = crate::control::rand_bytes();
        Self {
            remote_ufrag: offer.ufrag.clone(),
            remote_pwd: offer.pwd.clone(),
            // Hex digits are ice-chars; 32 bits of randomness is more than the 24 required.
            local_ufrag: r[..4].iter().map(|b| format!("{b:02x}")).collect(),
            tiebreaker: u64::from_be_bytes(r[4..].try_into().expect("8 bytes")),
        }
    }

    /// USERNAME of a check we send: "serverUfrag:clientUfrag" (RFC 8445 7.2.2).
    fn username(&self) -> String {
        format!("{}:{}", self.remote_ufrag, self.local_ufrag)
    }

    fn check<'a>(&'a self, tid: stun::TransactionId, username: &'a str) -> stun::IceCheck<'a> {
        stun::IceCheck {
            tid,
            username,
            password: &self.remote_pwd,
            // A peer-reflexive host priority, as RFC 8445 7.1.1 asks for.
            priority: (110 << 24) | (65_535 << 8) | 255,
            controlling: true,
            tiebreaker: self.tiebreaker,
            use_candidate: false,
        }
    }
}

/// The result of checks toward one target.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ok: bool,
    pub rtt_ms: Option<f64>,
    pub detail: Option<String>,
}

impl Outcome {
    fn passed(rtt: Duration) -> Self {
        Self {
            ok: true,
            rtt_ms: Some((rtt.as_secs_f64() * 1e6).round() / 1e3),
            detail: None,
        }
    }

    fn failed(detail: &str) -> Self {
        Self {
            ok: false,
            rtt_ms: None,
            detail: Some(detail.to_owned()),
        }
    }

    fn into_pair(self, remote: SocketAddr, protocol: Transport) -> PairResult {
        PairResult {
            remote: remote.to_string(),
            protocol,
            ok: self.ok,
            rtt_ms: self.rtt_ms,
            detail: self.detail,
        }
    }
}

/// Why an answer to a check toward `target` does not prove that target, or None when it does.
fn judge(
    m: &stun::Message,
    pkt: &[u8],
    src: SocketAddr,
    target: SocketAddr,
    creds: &Creds,
) -> Option<String> {
    if src != target {
        // Only a peer-reflexive path would explain this; it proves nothing about the target.
        return Some(format!("the answer came from {src}, not from {target}"));
    }
    match m.class {
        stun::Class::Success => {}
        stun::Class::Error => {
            return Some(format!(
                "error response {}",
                m.error_code.map_or_else(|| "?".into(), |c| c.to_string())
            ))
        }
        _ => return Some("unexpected STUN message class".into()),
    }
    if !stun::check_integrity(pkt, creds.remote_pwd.as_bytes()) {
        return Some(
            "the answer failed MESSAGE-INTEGRITY: another ICE agent (not this probe session) answers there"
                .into(),
        );
    }
    None
}

pub async fn run(inputs: IceInputs<'_>) -> IceReport {
    let offer = inputs.offer;
    let mut report = IceReport {
        advertised: offer
            .candidates
            .iter()
            .map(|c| AdvertisedCandidate {
                address: c.address.to_string(),
                port: c.port,
                protocol: c.protocol,
                private: probe_proto::rtcd::is_private(c.address),
                source: c.source,
            })
            .collect(),
        rtcd_port: offer.rtcd_port_udp,
        probe_port: offer.probe_port_udp,
        dialed: inputs.dialed.to_string(),
        override_value: offer.override_value.clone().filter(|v| !v.is_empty()),
        override_form: offer.override_form.clone(),
        override_resolved_server: offer
            .override_resolved
            .iter()
            .map(ToString::to_string)
            .collect(),
        deployment: offer
            .facts
            .as_ref()
            .map(|f| f.deployment.clone())
            .unwrap_or_default(),
        pion_rules: offer.facts.as_ref().map(|f| f.rules),
        filter_ignores: offer.facts.as_ref().and_then(|f| f.filter_ignores),
        ice_address_udp: offer
            .facts
            .as_ref()
            .map(|f| f.ice_address_udp.clone())
            .unwrap_or_default(),
        ice_address_tcp: offer
            .facts
            .as_ref()
            .map(|f| f.ice_address_tcp.clone())
            .unwrap_or_default(),
        relay_servers: offer
            .facts
            .as_ref()
            .map(|f| f.relay_servers.clone())
            .unwrap_or_default(),
        ..IceReport::default()
    };
    match tokio::time::timeout(PHASE_BOUND, checks(&inputs, &mut report)).await {
        Ok(()) => {}
        Err(_) => report.agent_state = "timed out".into(),
    }
    report.ok = ice_verdict::ice_ok(&report, inputs.udp_reachable, inputs.tcp_reachable);
    report
}

/// Candidates dialled at most, both transports and the reference check together: RTCD
/// advertises a handful; more is a server trying to make this client scan a network.
pub const MAX_CANDIDATES: usize = 16;
/// Distinct ports dialled at most (the probe's UDP and TCP ports, the dialed port, a port
/// override).
pub const MAX_PORTS: usize = 4;

/// An I/O error as a fixed phrase: what kind of failure, never the OS's text (which can name
/// the user's own network), since the report may be uploaded.
pub fn error_kind(text: &str) -> &'static str {
    let t = text.to_ascii_lowercase();
    ERROR_KINDS
        .iter()
        .find(|(words, _)| words.iter().any(|w| t.contains(w)))
        .map_or("failed", |(_, kind)| kind)
}

/// The phrases, first match wins: any of the words (in the lower-cased text) gives the kind.
const ERROR_KINDS: [(&[&str], &str); 8] = [
    (&["refused"], "connection refused"),
    (&["timed out", "timeout"], "timed out"),
    (
        &["network is unreachable", "network unreachable"],
        "network unreachable",
    ),
    (&["unreachable", "no route"], "host unreachable"),
    (&["reset"], "connection reset"),
    (&["closed", "eof", "broken pipe"], "connection closed"),
    (&["permission", "not permitted"], "not permitted"),
    (
        &["address not available", "address family"],
        "address not usable here",
    ),
];

/// Why a candidate address is reported but never dialled, if it is not: addresses that would
/// point this client at itself or at its own link. A user who dialled a loopback (or
/// link-local) server chose that scope, so its candidates of the same scope are dialled.
fn not_dialled(ip: std::net::IpAddr, dialed: std::net::IpAddr) -> Option<&'static str> {
    let (ip, dialed) = (ip.to_canonical(), dialed.to_canonical());
    match ip {
        _ if ip.is_loopback() && dialed.is_loopback() => None,
        _ if is_link_local(ip) && is_link_local(dialed) => None,
        _ if ip.is_loopback() => Some("loopback address"),
        _ if ip.is_unspecified() => Some("unspecified address"),
        _ if ip.is_multicast() => Some("multicast address"),
        _ if is_link_local(ip) => Some("link-local address"),
        std::net::IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast address"),
        _ => None,
    }
}

fn is_link_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The advertised port override: RTCD's `ice_host_port_override` resolves to one port, which its
/// candidates carry instead of the probe's; the first such port is believed, no other.
fn port_override(offer: &IceOffer) -> Option<u16> {
    offer
        .candidates
        .iter()
        .map(|c| c.port)
        .find(|p| *p != offer.probe_port_udp && *p != offer.probe_port_tcp)
}

/// Unique targets of one transport, in advertised order, each with why it is not dialled (None:
/// dial it).
fn targets(offer: &IceOffer, proto: Transport) -> Vec<(SocketAddr, Option<String>)> {
    let mut out: Vec<(SocketAddr, Option<String>)> = Vec::new();
    for c in offer.candidates.iter().filter(|c| c.protocol == proto) {
        let a = SocketAddr::new(c.address, c.port);
        if !out.iter().any(|(x, _)| *x == a) {
            out.push((a, None));
        }
    }
    out
}

/// Which advertised targets are dialled: each target keeps its place (the report lists every
/// advertised candidate), and those not dialled carry the reason. Allowed ports are the probe's
/// own, the dialed one and one advertised port override; at most [`MAX_PORTS`] distinct ports and
/// [`MAX_CANDIDATES`] dials in all (`reserved` dials are already spoken for).
fn plan(
    offer: &IceOffer,
    dialed: SocketAddr,
    udp: &mut [(SocketAddr, Option<String>)],
    tcp: &mut [(SocketAddr, Option<String>)],
    reserved: usize,
) {
    let dialed_port = dialed.port();
    let over = port_override(offer);
    let allowed = |p: u16| {
        p == offer.probe_port_udp
            || p == offer.probe_port_tcp
            || p == dialed_port
            || Some(p) == over
    };
    let mut ports: Vec<u16> = vec![dialed_port];
    let mut dials = reserved;
    for (addr, why) in udp.iter_mut().chain(tcp.iter_mut()) {
        let port = addr.port();
        *why = if let Some(w) = not_dialled(addr.ip(), dialed.ip()) {
            Some(format!("not dialled: {w}"))
        } else if !allowed(port) {
            Some(format!(
                "not dialled: port {port} is neither the probe's port nor the advertised port override"
            ))
        } else if !ports.contains(&port) && ports.len() >= MAX_PORTS {
            Some(format!(
                "not dialled: more than {MAX_PORTS} distinct ports advertised"
            ))
        } else if dials >= MAX_CANDIDATES {
            Some(format!(
                "not dialled: more than {MAX_CANDIDATES} candidates advertised"
            ))
        } else {
            None
        };
        if why.is_none() {
            dials += 1;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
}

/// One transport's checks: every advertised target (with why it is not dialled, if so) and the
/// reference check toward the dialed address.
struct TransportChecks {
    protocol: Transport,
    plan: Vec<(SocketAddr, Option<String>)>,
    reference: Option<SocketAddr>,
}

impl TransportChecks {
    /// The advertised targets that are dialled.
    fn dialled(&self) -> Vec<SocketAddr> {
        self.plan
            .iter()
            .filter(|(_, w)| w.is_none())
            .map(|(a, _)| *a)
            .collect()
    }

    /// Every address checked: the dialled targets, then the reference.
    fn all(&self) -> Vec<SocketAddr> {
        let mut all = self.dialled();
        all.extend(self.reference);
        all
    }

    /// Records the outcomes (in the order of [`all`](Self::all)): every advertised target in
    /// its place, the ones not dialled saying why, and the reference check.
    fn record(&self, out: Vec<Outcome>, report: &mut IceReport) {
        let mut results: std::collections::HashMap<SocketAddr, Outcome> =
            self.all().into_iter().zip(out).collect();
        for (addr, why) in &self.plan {
            let o = match why {
                Some(w) => Outcome::failed(w),
                None => results.remove(addr).unwrap_or_default(),
            };
            report.pairs.push(o.into_pair(*addr, self.protocol));
        }
        if let Some(r) = self.reference {
            let o = results.remove(&r).unwrap_or_default();
            report.dialed_checks.push(o.into_pair(r, self.protocol));
        }
    }
}

async fn checks(inputs: &IceInputs<'_>, report: &mut IceReport) {
    let offer = inputs.offer;
    let creds = Creds::new(offer);
    let dialed = SocketAddr::new(inputs.dialed.ip().to_canonical(), inputs.dialed.port());
    let mut udp_plan = targets(offer, Transport::Udp);
    let mut tcp_plan = targets(offer, Transport::Tcp);
    if !inputs.udp_tested {
        udp_plan.clear();
    }
    if !inputs.tcp_tested {
        tcp_plan.clear();
    }
    // The reference check toward the dialed address, on each transport that reached it.
    let udp_ref =
        (inputs.udp_reachable && !udp_plan.iter().any(|(a, _)| *a == dialed)).then_some(dialed);
    let tcp_ref =
        (inputs.tcp_reachable && !tcp_plan.iter().any(|(a, _)| *a == dialed)).then_some(dialed);
    let reserved = usize::from(udp_ref.is_some()) + usize::from(tcp_ref.is_some());
    plan(offer, dialed, &mut udp_plan, &mut tcp_plan, reserved);
    for (addr, why) in udp_plan.iter().chain(&tcp_plan) {
        if let Some(why) = why {
            tracing::info!("ICE candidate {addr} {why}");
        }
    }
    let udp = TransportChecks {
        protocol: Transport::Udp,
        plan: udp_plan,
        reference: udp_ref,
    };
    let tcp = TransportChecks {
        protocol: Transport::Tcp,
        plan: tcp_plan,
        reference: tcp_ref,
    };
    let udp_cands = udp.dialled();
    let (udp_all, tcp_all) = (udp.all(), tcp.all());

    let udp_task = udp::check_all(&udp_all, &creds, CHECK_BOUND);
    let tcp_task = async {
        let futs = tcp_all.iter().map(|t| tcp::check(*t, &creds, CHECK_BOUND));
        futures_join_all(futs).await
    };
    let agent_task = run_agent(inputs, &udp_cands);
    let hostname = offer
        .override_value
        .as_deref()
        .filter(|_| offer.override_form == "hostname");
    let resolve_task = async {
        match hostname {
            Some(name) => Some(resolve::resolve(name, RESOLVE_BOUND).await),
            None => None,
        }
    };
    let (udp_out, tcp_out, agent_out, resolved) =
        tokio::join!(udp_task, tcp_task, agent_task, resolve_task);

    udp.record(udp_out, report);
    tcp.record(tcp_out, report);
    report.agent_state = agent_out.state;
    report.agent_pairs = agent_out.pairs;
    report.agent_selected = agent_out.selected;
    match resolved {
        Some(Ok(ips)) => {
            report.override_resolved_client = ips.iter().map(ToString::to_string).collect()
        }
        // The name came from the server: no control character reaches the terminal.
        Some(Err(e)) => tracing::info!("{}", probe_proto::sites::strip_controls(&e.to_string())),
        None => {}
    }
    tracing::debug!("host as typed: {}", inputs.host);
}

/// The ICE agent toward the dialled UDP candidates, when UDP reached the server at all.
async fn run_agent(inputs: &IceInputs<'_>, udp_cands: &[SocketAddr]) -> agent::AgentOutcome {
    let not_run = |state: &str| agent::AgentOutcome::only(state.into());
    if !inputs.udp_tested {
        return not_run("not run: --no-udp");
    }
    if !inputs.udp_reachable {
        return not_run("not run: UDP unreachable");
    }
    // The agent is third-party code: bound it here too, so that a slow close can never make
    // the phase's last-resort bound drop the checks' results below.
    let bound = AGENT_BOUND + Duration::from_secs(1);
    let offer = inputs.offer;
    let agent = agent::run(udp_cands, &offer.ufrag, &offer.pwd, AGENT_BOUND);
    match tokio::time::timeout(bound, agent).await {
        Ok(o) => o,
        Err(_) => not_run("timed out"),
    }
}

/// Runs futures concurrently and keeps their order (no `futures` crate dependency for this).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::msg::{CandidateSource, WireCandidate};

    #[test]
    fn credentials_shape_the_check() {
        let offer = IceOffer {
            ufrag: "srvU".into(),
            pwd: "serverPasswordOf22Chars".into(),
            candidates: vec![],
            override_value: None,
            override_form: "none".into(),
            override_resolved: vec![],
            rtcd_port_udp: 8443,
            rtcd_port_tcp: 8443,
            probe_port_udp: 8443,
            probe_port_tcp: 8443,
            facts: None,
        };
        let creds = Creds::new(&offer);
        let user = creds.username();
        assert!(user.starts_with("srvU:"));
        let tid = [3u8; 12];
        let bytes = stun::ice_check_request(&creds.check(tid, &user));
        let m = stun::decode(&bytes).unwrap();
        assert_eq!(m.username.as_deref(), Some(user.as_str()));
        assert!(m.controlling.is_some());
        // Keyed with the server's password: the server can verify it, nobody else.
        assert!(stun::check_integrity(&bytes, offer.pwd.as_bytes()));
        assert!(!stun::check_integrity(&bytes, b"anotherPassword"));
    }

    #[test]
    fn judge_requires_exact_source_success_and_integrity() {
        let offer_pwd = "serverPasswordOf22Chars";
        let creds = Creds {
            remote_ufrag: "s".into(),
            remote_pwd: offer_pwd.into(),
            local_ufrag: "c".into(),
            tiebreaker: 1,
        };
        let target: SocketAddr = "203.0.113.10:8443".parse().unwrap();
        let me: SocketAddr = "198.51.100.2:5000".parse().unwrap();
        let tid = [1u8; 12];
        let good = stun::binding_response(tid, me, Some(offer_pwd.as_bytes()));
        let m = stun::decode(&good).unwrap();
        assert_eq!(judge(&m, &good, target, target, &creds), None);
        // The same valid answer from another address (a peer-reflexive path) proves nothing.
        let other: SocketAddr = "203.0.113.10:443".parse().unwrap();
        assert!(judge(&m, &good, other, target, &creds).is_some());
        // Wrong key: another agent's answer.
        let foreign = stun::binding_response(tid, me, Some(b"otherPassword"));
        let m = stun::decode(&foreign).unwrap();
        assert!(judge(&m, &foreign, target, target, &creds).is_some());
        // No integrity at all (a plain STUN server on that port).
        let plain = stun::binding_response(tid, me, None);
        let m = stun::decode(&plain).unwrap();
        assert!(judge(&m, &plain, target, target, &creds).is_some());
    }

    #[test]
    fn targets_dedup_per_transport() {
        let c = |a: &str, p: Transport| WireCandidate {
            address: a.parse().unwrap(),
            port: 8443,
            protocol: p,
            source: CandidateSource::Override,
        };
        let offer = IceOffer {
            ufrag: "u".into(),
            pwd: "p".into(),
            candidates: vec![
                c("203.0.113.10", Transport::Udp),
                c("203.0.113.10", Transport::Udp),
                c("172.31.1.2", Transport::Udp),
                c("203.0.113.10", Transport::Tcp),
            ],
            override_value: None,
            override_form: "none".into(),
            override_resolved: vec![],
            rtcd_port_udp: 8443,
            rtcd_port_tcp: 8443,
            probe_port_udp: 8443,
            probe_port_tcp: 8443,
            facts: None,
        };
        assert_eq!(targets(&offer, Transport::Udp).len(), 2);
        assert_eq!(targets(&offer, Transport::Tcp).len(), 1);
    }

    fn offer_with(cands: Vec<(&str, u16, Transport, CandidateSource)>) -> IceOffer {
        IceOffer {
            ufrag: "u".into(),
            pwd: "p".into(),
            candidates: cands
                .into_iter()
                .map(|(a, port, protocol, source)| WireCandidate {
                    address: a.parse().unwrap(),
                    port,
                    protocol,
                    source,
                })
                .collect(),
            override_value: None,
            override_form: "none".into(),
            override_resolved: vec![],
            rtcd_port_udp: 8443,
            rtcd_port_tcp: 8443,
            probe_port_udp: 8443,
            probe_port_tcp: 8443,
            facts: None,
        }
    }

    fn planned(offer: &IceOffer) -> Vec<(SocketAddr, Option<String>)> {
        let mut u = targets(offer, Transport::Udp);
        let mut t = targets(offer, Transport::Tcp);
        plan(
            offer,
            "203.0.113.10:8443".parse().unwrap(),
            &mut u,
            &mut t,
            0,
        );
        u.into_iter().chain(t).collect()
    }

    #[test]
    fn a_server_cannot_make_the_client_scan_ports() {
        use CandidateSource::Local;
        // 2,000 ports on one address: two are dialled.
        let scan: Vec<_> = (7500..9500u16)
            .map(|p| ("203.0.113.10", p, Transport::Tcp, Local))
            .collect();
        let p = planned(&offer_with(scan));
        assert_eq!(p.len(), 2000, "every advertised target is reported");
        let dialled: Vec<u16> = p
            .iter()
            .filter(|(_, w)| w.is_none())
            .map(|(a, _)| a.port())
            .collect();
        // The probe's port, and the first other port taken for RTCD's one port override.
        assert_eq!(dialled, [7500, 8443]);
        assert!(p[1]
            .1
            .as_deref()
            .unwrap()
            .contains("neither the probe's port"));
    }

    #[test]
    fn at_most_16_candidates_are_dialled() {
        use CandidateSource::Local;
        let hosts: Vec<String> = (1..=200).map(|i| format!("198.51.100.{}", i)).collect();
        let cands: Vec<_> = hosts
            .iter()
            .map(|h| (h.as_str(), 8443, Transport::Udp, Local))
            .collect();
        let p = planned(&offer_with(cands));
        let dialled = p.iter().filter(|(_, w)| w.is_none()).count();
        assert_eq!(dialled, MAX_CANDIDATES);
        assert!(p[16]
            .1
            .as_deref()
            .unwrap()
            .contains("more than 16 candidates"));
    }

    #[test]
    fn the_port_override_is_dialled_and_at_most_4_ports_in_all() {
        use CandidateSource::{Local, Override};
        let offer = offer_with(vec![
            ("203.0.113.10", 30443, Transport::Udp, Override),
            ("203.0.113.10", 30444, Transport::Udp, Override),
            ("203.0.113.11", 8443, Transport::Udp, Local),
        ]);
        let p = planned(&offer);
        assert_eq!(p[0].1, None, "the override port is dialled");
        assert!(p[1].1.is_some(), "a second override port is not believed");
        assert_eq!(p[2].1, None);
        // Probe ports that differ per transport, the dialed port and the override: 4 ports.
        let mut offer = offer_with(vec![
            ("203.0.113.10", 30443, Transport::Udp, Override),
            ("203.0.113.10", 8443, Transport::Udp, Local),
            ("203.0.113.10", 8444, Transport::Tcp, Local),
        ]);
        offer.probe_port_tcp = 8444;
        let mut u = targets(&offer, Transport::Udp);
        let mut t = targets(&offer, Transport::Tcp);
        plan(
            &offer,
            "203.0.113.10:443".parse().unwrap(),
            &mut u,
            &mut t,
            0,
        );
        assert!(u.iter().chain(&t).all(|(_, w)| w.is_none()), "{u:?} {t:?}");
    }

    #[test]
    fn loopback_and_link_local_candidates_are_reported_not_dialled() {
        use CandidateSource::Local;
        let p = planned(&offer_with(vec![
            ("127.0.0.1", 8443, Transport::Udp, Local),
            ("169.254.10.1", 8443, Transport::Udp, Local),
            ("fe80::1", 8443, Transport::Udp, Local),
            ("::1", 8443, Transport::Tcp, Local),
            ("::ffff:127.0.0.1", 8443, Transport::Tcp, Local),
            ("0.0.0.0", 8443, Transport::Tcp, Local),
            ("203.0.113.10", 8443, Transport::Udp, Local),
        ]));
        let why: Vec<Option<&str>> = p.iter().map(|(_, w)| w.as_deref()).collect();
        assert_eq!(why[0], Some("not dialled: loopback address"));
        assert_eq!(why[1], Some("not dialled: link-local address"));
        assert_eq!(why[2], Some("not dialled: link-local address"));
        assert_eq!(why[3], None, "203.0.113.10 (UDP) is dialled");
        assert_eq!(why[4], Some("not dialled: loopback address"));
        assert_eq!(why[5], Some("not dialled: loopback address"));
        assert_eq!(why[6], Some("not dialled: unspecified address"));
    }

    #[test]
    fn a_loopback_server_dials_its_loopback_candidates() {
        use CandidateSource::Local;
        let offer = offer_with(vec![
            ("127.0.0.1", 8443, Transport::Udp, Local),
            ("::1", 8443, Transport::Tcp, Local),
            ("169.254.10.1", 8443, Transport::Udp, Local),
        ]);
        let mut u = targets(&offer, Transport::Udp);
        let mut t = targets(&offer, Transport::Tcp);
        plan(&offer, "127.0.0.1:8443".parse().unwrap(), &mut u, &mut t, 0);
        let why: Vec<Option<&str>> = u.iter().chain(&t).map(|(_, w)| w.as_deref()).collect();
        assert_eq!(
            why[0], None,
            "the user dialled loopback: 127.0.0.1 is the server"
        );
        assert_eq!(why[1], Some("not dialled: link-local address"));
        assert_eq!(why[2], None, "::1 is loopback too");
    }

    #[test]
    fn connect_errors_become_fixed_phrases() {
        for (os, kind) in [
            ("Connection refused (os error 111)", "connection refused"),
            ("TCP connect timed out", "timed out"),
            (
                "Network is unreachable (os error 101)",
                "network unreachable",
            ),
            ("No route to host (os error 113)", "host unreachable"),
            (
                "Connection reset by peer (os error 104)",
                "connection reset",
            ),
            ("something about 10.1.2.3 on eth0", "failed"),
        ] {
            assert_eq!(error_kind(os), kind);
        }
    }
}
