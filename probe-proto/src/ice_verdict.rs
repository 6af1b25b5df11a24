//! Verdict rules of the ICE host-override check: from the per-candidate checks to one finding
//! that names the RTCD setting to change. Pure, so every rule is unit-tested on constructed
//! reports.
//!
//! Only a check sent to exactly an advertised `IP:PORT` that got an integrity-checked answer
//! counts. The ICE agent's own state (a peer-reflexive success) is mentioned, never trusted.

use crate::calls::wording::Terms;
use crate::calls::Deployment;
use crate::catalog::FindingId;
use crate::msg::Transport;
use crate::report::{Finding, IceReport, PairResult, Severity};
use crate::rtcd::is_private;
use crate::verdict::Facts;
use std::net::{IpAddr, SocketAddr};

/// Every transport that reached the server has an advertised candidate that answered ICE, and
/// there is a UDP candidate at all (media needs one; an empty UDP list never passes).
pub fn ice_ok(ice: &IceReport, udp_reachable: bool, tcp_reachable: bool) -> bool {
    has_udp_candidate(ice)
        && (udp_reachable || tcp_reachable)
        && (!udp_reachable || passed(ice, Transport::Udp))
        && (!tcp_reachable || passed(ice, Transport::Tcp))
}

fn has_udp_candidate(ice: &IceReport) -> bool {
    ice.advertised.iter().any(|c| c.protocol == Transport::Udp)
}

/// Findings of the ICE check, judged on each advertised candidate's own check, in RTCD's terms.
pub fn evaluate(ice: &IceReport, f: &Facts) -> Vec<Finding> {
    evaluate_for(ice, f, &ice.deployment)
}

/// [`evaluate`] for the deployment the server said it stands in for (welcome facts, proto 4):
/// the fixes name RTCD's keys or the Calls plugin's System Console settings.
pub fn evaluate_for(ice: &IceReport, f: &Facts, deployment: &Deployment) -> Vec<Finding> {
    let t = Terms::of(deployment);
    let mut out = Vec::new();
    if let Deployment::CallsPlugin {
        rtcd_url: Some(url),
    } = deployment
    {
        out.push(crate::calls::wording::rtcd_in_charge(url));
    }
    if let Some(info) = probe_port_info(ice, &t) {
        out.push(info);
    }
    let udp = f.udp_tested && f.udp.reachable;
    let tcp = f.tcp_tested && f.tcp.reachable;
    // Facts of RTCD's configuration the server reported: true whatever the network does.
    if !has_udp_candidate(ice) {
        out.push(if t.is_plugin() {
            crate::calls::wording::no_udp_candidate(&ice.ice_address_udp, &ice.ice_address_tcp)
        } else {
            crate::rtcd::findings::no_udp_candidate(
                &ice.ice_address_udp,
                &ice.ice_address_tcp,
                ice.override_form == "pairs",
                ice.pion_rules,
                "RTCD's config",
            )
        });
    }
    // A server that stopped answering before the checks ran (during an echo phase), or whose
    // checks all went unanswered, says nothing about the path: only the configuration facts
    // above are reported. Lost only at the last exchange of counters, after checks it
    // answered, the checks are judged as usual.
    let lost_before_checks = f
        .server_lost
        .is_some_and(|phase| phase != crate::verdict::LOST_AT_COUNTERS);
    let none_answered = !ice.pairs.iter().any(|p| p.ok);
    if f.server_lost.is_some() && (lost_before_checks || none_answered) {
        return out;
    }
    let primary = if udp { Transport::Udp } else { Transport::Tcp };
    let primary_passed = (udp || tcp) && passed(ice, primary);
    let ignored = filter_ignores(ice, primary_passed, &t);
    let ignored_error = ignored
        .as_ref()
        .is_some_and(|f| f.severity == Severity::Error);
    out.extend(ignored);
    if !udp && !tcp {
        // server_unreachable already says it all.
        return out;
    }
    // The address verdict comes from UDP, media's transport; TCP only when UDP never got through.
    if !passed(ice, primary) {
        // With the override dropped by the ice_address filter, or no UDP candidate at all, the
        // usual diagnosis ("the override is wrong") would point at the wrong setting.
        let no_candidate = primary == Transport::Udp && !has_udp_candidate(ice);
        if !ignored_error && !no_candidate {
            out.push(through_relay(diagnose(ice, primary, &t), ice, &t));
        }
    } else if udp && tcp && !passed(ice, Transport::Tcp) {
        out.push(tcp_failed(ice, &t));
    }
    out
}

/// With server-side TURN, RTCD also offers relay candidates on its TURN server (rtcd
/// service/rtc/sfu.go:231-252), and a browser that cannot reach the host candidates connects
/// through the relay: slower and through a third party, but the call works. So a host-candidate
/// error becomes a warning that names the relay calls now depend on.
fn through_relay(mut f: Finding, ice: &IceReport, t: &Terms) -> Finding {
    if ice.relay_servers.is_empty() || f.severity != Severity::Error {
        return f;
    }
    f.severity = Severity::Warning;
    f.summary = format!(
        "{} {} also relays through {} (server-side TURN; probe-server leaves out a TURN server that refuses to allocate from RTCD's host), so calls from here can still connect through the relay, with the extra hop, if this network reaches the TURN server's relay ports.",
        f.summary,
        t.server(),
        ice.relay_servers.join(", ")
    );
    f
}

/// `ice_address_ignores_override` from the server's facts (rtcd server.go:109-122,
/// utils.go:84-87): raised when the address the override (or STUN) would give is not among the
/// UDP candidates; an error unless the advertised candidates answered from here anyway.
fn filter_ignores(ice: &IceReport, primary_passed: bool, t: &Terms) -> Option<Finding> {
    let ignores = ice.filter_ignores?;
    let udp: Vec<IpAddr> = ice
        .advertised
        .iter()
        .filter(|c| c.protocol == Transport::Udp)
        .filter_map(|c| c.address.parse().ok())
        .collect();
    let value = ice.override_value.as_deref().unwrap_or_default();
    let lost = match ignores {
        crate::rtcd::FilterIgnores::Override => {
            let wanted: Vec<IpAddr> = value
                .parse::<IpAddr>()
                .ok()
                .into_iter()
                .chain(
                    ice.override_resolved_server
                        .iter()
                        .filter_map(|s| s.parse().ok()),
                )
                .collect();
            wanted.is_empty() || !wanted.iter().any(|w| udp.contains(w))
        }
        crate::rtcd::FilterIgnores::Stun => udp.iter().all(|ip| is_private(*ip)),
    };
    if !lost {
        return None;
    }
    let severity = if primary_passed {
        Severity::Warning
    } else {
        Severity::Error
    };
    if t.is_plugin() {
        return Some(crate::calls::wording::address_ignores_override(
            ignores,
            value,
            &ice.ice_address_udp,
            &ice.ice_address_tcp,
            &udp,
            severity,
        ));
    }
    Some(crate::rtcd::findings::address_ignores_override(
        ignores,
        value,
        &ice.ice_address_udp,
        &ice.ice_address_tcp,
        &udp,
        "RTCD's config",
        severity,
    ))
}

fn passed(ice: &IceReport, proto: Transport) -> bool {
    ice.pairs.iter().any(|p| p.protocol == proto && p.ok)
}

fn name(proto: Transport) -> &'static str {
    match proto {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    }
}

/// The advertised `IP:PORT`s of one transport, for sentences and comparisons. Loopback
/// candidates (RTCD advertises them too) can never be reached from another host: left out.
fn advertised(ice: &IceReport, proto: Transport) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for c in ice.advertised.iter().filter(|c| c.protocol == proto) {
        if let Ok(ip) = c.address.parse::<IpAddr>() {
            let a = SocketAddr::new(ip, c.port);
            if !ip.is_loopback() && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

fn list(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "no candidate reachable from another host".into();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the reference check to the dialed address showed on this transport: Some(true) when
/// the server answered ICE there, Some(false) when it did not, None when nothing was sent.
fn reference(ice: &IceReport, proto: Transport, dialed: Option<SocketAddr>) -> Option<bool> {
    let d = dialed?;
    let same = |p: &&PairResult| p.protocol == proto && p.remote.parse::<SocketAddr>() == Ok(d);
    ice.dialed_checks
        .iter()
        .chain(&ice.pairs)
        .find(same)
        .map(|p| p.ok)
}

/// A sentence when the agent connected only through a peer-reflexive pair.
fn prflx_note(ice: &IceReport) -> String {
    match &ice.agent_selected {
        Some(s) if s.remote_type == "prflx" => format!(
            " The ICE agent did connect, but only through a peer-reflexive pair ({}): that works for clients \
             with public addresses or endpoint-independent NATs and fails from most corporate networks, so it is \
             not a pass of the advertised address.",
            s.remote
        ),
        _ => String::new(),
    }
}

/// What every diagnosis of a failed transport starts from.
struct Diag<'a> {
    ice: &'a IceReport,
    terms: &'a Terms,
    /// "UDP" or "TCP".
    t: &'static str,
    dialed: Option<SocketAddr>,
    adv: Vec<SocketAddr>,
    adv_list: String,
    /// The reference check to the dialed address (see [`reference`]).
    reached: Option<bool>,
    prflx: String,
    /// The port users reach the server on, when it differs from what is advertised and the
    /// server answered ICE there: a port override belongs in the fix too.
    port_fix: Option<u16>,
}

impl<'a> Diag<'a> {
    fn new(ice: &'a IceReport, proto: Transport, terms: &'a Terms) -> Self {
        let dialed: Option<SocketAddr> = ice.dialed.parse().ok();
        let adv = advertised(ice, proto);
        let reached = reference(ice, proto, dialed);
        let port_fix = match (dialed, reached) {
            (Some(d), Some(true)) if adv.iter().any(|a| a.port() != d.port()) => Some(d.port()),
            _ => None,
        };
        Diag {
            ice,
            terms,
            t: name(proto),
            dialed,
            adv_list: list(&adv),
            adv,
            reached,
            prflx: prflx_note(ice),
            port_fix,
        }
    }

    fn with_port(&self, fix: String) -> String {
        match self.port_fix {
            Some(p) => format!("{fix}, and {}", self.terms.port_line(p)),
            None => fix,
        }
    }
}

/// The one finding for a transport none of whose advertised candidates answered.
fn diagnose(ice: &IceReport, proto: Transport, terms: &Terms) -> Finding {
    let d = Diag::new(ice, proto, terms);
    if let Some(f) = split_horizon(&d) {
        return f;
    }
    let dialed = match (d.reached, d.dialed) {
        (Some(true), Some(dialed)) => dialed,
        _ => return ice_failed(&d),
    };
    if let Some(f) = port_mismatch(&d, dialed) {
        return f;
    }
    if ice.override_form == "none" || ice.override_value.is_none() {
        override_missing(&d, dialed)
    } else {
        override_wrong(&d, dialed)
    }
}

/// 1. Split-horizon DNS: the server resolved the override name to something users do not get.
fn split_horizon(d: &Diag) -> Option<Finding> {
    let (ice, terms) = (d.ice, d.terms);
    let (srv, ovn, restart) = (terms.server(), terms.override_name(), terms.restart());
    if ice.override_form != "hostname"
        || ice.override_resolved_server.is_empty()
        || ice.override_resolved_client.is_empty()
        || ice
            .override_resolved_server
            .iter()
            .any(|s| ice.override_resolved_client.contains(s))
    {
        return None;
    }
    let name = ice.override_value.as_deref().unwrap_or("?");
    let client: Vec<IpAddr> = ice
        .override_resolved_client
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let good = d
        .dialed
        .map(|d| d.ip())
        .filter(|ip| client.contains(ip))
        .or_else(|| client.first().copied());
    let fix = match good {
        Some(ip) => format!(
            "Set the override to the address users resolve, as an IP: {}; or make {} resolve \
             `{name}` to {ip} too (its /etc/hosts or DNS view), since {srv} resolves the name on its own host at \
             every call join; {restart}.",
            d.with_port(terms.host_ip_line(ip)),
            terms.host()
        ),
        None => format!(
            "Make {} resolve `{name}` to the public address users reach, or set \
             {ovn} to that address as an IP; {restart}.",
            terms.host()
        ),
    };
    Some(Finding::new(
        FindingId::IceSplitHorizonDns,
        Severity::Error,
        format!(
            "{} `{name}` resolves to {} on {} but to {} here (split-horizon \
             DNS): {srv} advertises {}, which gets no answer to ICE over {} from this network, so calls \
             fail with \"timed out waiting for rtc connection\".{}",
            terms.owned_override(),
            ice.override_resolved_server.join(", "),
            terms.host(),
            ice.override_resolved_client.join(", "),
            d.adv_list,
            d.t,
            d.prflx
        ),
        fix,
    ))
}

/// 2. The server does not answer ICE even where the client reached it: not an address problem.
fn ice_failed(d: &Diag) -> Finding {
    let why = match d.reached {
        Some(false) => format!(
            "the same check to {}, where the probe server answers plain STUN, got no valid answer \
             either",
            d.dialed
                .map_or_else(|| d.ice.dialed.clone(), |a| a.to_string())
        ),
        _ => "no reference check could be made".into(),
    };
    Finding::new(
        FindingId::IceFailed,
        Severity::Error,
        format!(
            "ICE over {} failed: no advertised candidate ({}) answered a connectivity check, and {why}.{}",
            d.t, d.adv_list, d.prflx
        ),
        "Something drops ICE connectivity checks (STUN with credentials) while letting plain STUN through: look \
         for a firewall or load balancer with STUN/VoIP inspection, make sure probe-server (not another service) \
         owns the port, and run the probe again with -v for details.",
    )
}

/// 3. The right address on the wrong port: a port-mapping load balancer or NAT.
fn port_mismatch(d: &Diag, dialed: SocketAddr) -> Option<Finding> {
    let (terms, srv, restart) = (d.terms, d.terms.server(), d.terms.restart());
    let a = d
        .adv
        .iter()
        .find(|a| a.ip() == dialed.ip() && a.port() != dialed.port())?;
    let hostname_note = if d.ice.override_form == "hostname" {
        format!(
            " {srv} applies the port override only to a literal IP override, so also set {}",
            terms.host_ip_line(dialed.ip())
        )
    } else {
        String::new()
    };
    Some(Finding::new(
        FindingId::IcePortOverrideWrong,
        Severity::Error,
        format!(
            "{srv} advertises {a}, but this client reaches the server at {dialed}: the address is right, yet \
             nothing answers ICE over {} on port {} from here (a load balancer or NAT forwards port {} to {} \
             port).{}",
            d.t,
            a.port(),
            dialed.port(),
            terms.server_s(),
            d.prflx
        ),
        format!(
            "Advertise the port users reach: {}.{hostname_note} Or forward port {} to {srv} as well; {restart}.",
            terms.port_line(dialed.port()),
            a.port()
        ),
    ))
}

/// "this client reached the server at …", saying so when that address is itself private.
fn reached_text(dialed: SocketAddr) -> String {
    if is_private(dialed.ip()) {
        format!(
            "this client reached the server at {dialed}, itself a private address (VPN or internal network?)"
        )
    } else {
        format!("this client reached the server at {dialed}")
    }
}

/// The fix that sets the override to the dialed address (or, when that is private, to the
/// public address users reach).
fn set_fix(d: &Diag, dialed: SocketAddr, lead: &str) -> String {
    let (terms, restart) = (d.terms, d.terms.restart());
    if is_private(dialed.ip()) {
        // A lead that already says "the address users reach … at:" is not said twice.
        let what = if lead.ends_with(':') {
            "the public one, not the private address this client used".to_string()
        } else {
            format!("the public address users reach {} at", terms.server())
        };
        format!(
            "{lead} {what}, e.g. {}; {restart}.",
            terms.short_host_line("PUBLIC_IP")
        )
    } else {
        format!(
            "{lead} {}; {restart}.",
            d.with_port(terms.host_ip_line(dialed.ip()))
        )
    }
}

/// 4. No override: the server advertises its local (or STUN-found) addresses.
fn override_missing(d: &Diag, dialed: SocketAddr) -> Finding {
    let (ice, srv) = (d.ice, d.terms.server());
    let what = if !d.adv.is_empty() && ice.advertised.iter().all(|c| c.private) {
        "only private addresses"
    } else if ice
        .advertised
        .iter()
        .any(|c| c.source == crate::msg::CandidateSource::Stun)
    {
        "the address its STUN server reported"
    } else {
        "its local addresses"
    };
    Finding::new(
        FindingId::IceHostOverrideMissing,
        Severity::Error,
        format!(
            "No {} is set, so {srv} advertises {what} ({}): no answer to ICE over {} \
             from this network, while {}: calls fail with \"timed out waiting for rtc \
             connection\".{}",
            d.terms.override_name(),
            d.adv_list,
            d.t,
            reached_text(dialed),
            d.prflx
        ),
        set_fix(
            d,
            dialed,
            &format!("Set the override to the address users reach {srv} at:"),
        ),
    )
}

/// 5. An override is set, but its address is not where users reach the server.
fn override_wrong(d: &Diag, dialed: SocketAddr) -> Finding {
    let (ice, terms, srv) = (d.ice, d.terms, d.terms.server());
    let value = ice.override_value.as_deref().unwrap_or_default();
    let fix = if ice.override_form != "pairs" {
        set_fix(
            d,
            dialed,
            &format!("Set the override to the address users reach {srv} at:"),
        )
    } else if is_private(dialed.ip()) {
        set_fix(d, dialed, "Make the external side of each pair")
    } else {
        format!(
            "Make the external side of the pair the address users reach: {}{}; {}.",
            terms.pairs_line(dialed.ip()),
            d.port_fix
                .map(|p| format!(", and {}", terms.port_line(p)))
                .unwrap_or_default(),
            terms.restart()
        )
    };
    Finding::new(
        FindingId::IceHostOverrideWrong,
        Severity::Error,
        format!(
            "{} is set to `{value}`, so {srv} advertises {}: no answer to ICE over {} \
             from this network, while {}.{}",
            terms.override_name(),
            d.adv_list,
            d.t,
            reached_text(dialed),
            d.prflx
        ),
        fix,
    )
}

/// TCP candidates fail while UDP works: TCP fallback is broken for UDP-blocked users.
fn tcp_failed(ice: &IceReport, terms: &Terms) -> Finding {
    let srv = terms.server();
    let adv = advertised(ice, Transport::Tcp);
    if adv.is_empty() && !ice.ice_address_udp.is_empty() {
        // RTCD advertises no TCP candidate reachable from another host: with `ice_address_*` set,
        // RTCD's IP filter keeps only the listed local IPs (rtcd sfu.go:103-115, server.go:109-122),
        // and "0.0.0.0" is none of them. No firewall opening helps; the setting does.
        return Finding::new(
            FindingId::IceTcpFailed,
            Severity::Warning,
            format!(
                "{srv} advertises no TCP candidate reachable from another host, while UDP works: its IP filter keeps \
                 only the local IPs listed in {} (\"0.0.0.0\" is none of them). Users on \
                 networks that block UDP cannot use TCP fallback.",
                terms.filter_as_set(&ice.ice_address_udp, &ice.ice_address_tcp)
            ),
            terms.address_fix(),
        );
    }
    let dialed: Option<SocketAddr> = ice.dialed.parse().ok();
    let port_hint = match (dialed, reference(ice, Transport::Tcp, dialed)) {
        (Some(d), Some(true)) if adv.iter().any(|a| a.ip() == d.ip() && a.port() != d.port()) => {
            format!(
                " The server answers ICE over TCP at {d}, so only the advertised port is wrong: set {}.",
                terms.port_line(d.port())
            )
        }
        _ => String::new(),
    };
    Finding::new(
        FindingId::IceTcpFailed,
        Severity::Warning,
        format!(
            "ICE over TCP fails: no advertised TCP candidate ({}) answered a connectivity check, while UDP works. \
             Users on networks that block UDP cannot use TCP fallback.",
            list(&adv)
        ),
        format!(
            "Open inbound TCP to {} from client networks — host firewall, \
             security groups, load balancers (which must forward TCP too).{port_hint}",
            terms.tcp_port()
        ),
    )
}

/// When the probe answers on another port than RTCD, say which port RTCD itself advertises.
fn probe_port_info(ice: &IceReport, terms: &Terms) -> Option<Finding> {
    let srv = terms.server();
    let probe = ice.probe_port;
    if ice.rtcd_port == 0 || probe == 0 || probe == ice.rtcd_port {
        return None;
    }
    let rtcd = ice.rtcd_port;
    Some(Finding::new(
        FindingId::IceProbePort,
        Severity::Info,
        format!(
            "probe-server runs on port {probe}, not on {} port {rtcd}: the ICE checks tested the advertised \
             addresses on port {probe}; {srv} itself advertises them with port {rtcd} (or its {}).",
            terms.server_s(),
            terms.port_override_name()
        ),
        format!(
            "To test port {rtcd} itself, run `probe-server live` on that host: it tests {srv}'s own port while \
             it serves calls (see the README's \"Testing a live RTCD\"); or stop {srv} for a moment and run \
             probe-server with `--listen 0.0.0.0:{rtcd}`."
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::CandidateSource;
    use crate::report::{AdvertisedCandidate, AgentPair, TcpResult, UdpResult};

    fn cand(
        addr: &str,
        port: u16,
        protocol: Transport,
        source: CandidateSource,
    ) -> AdvertisedCandidate {
        AdvertisedCandidate {
            address: addr.into(),
            port,
            protocol,
            private: is_private(addr.parse().unwrap()),
            source,
        }
    }

    fn pair(remote: &str, protocol: Transport, ok: bool) -> PairResult {
        PairResult {
            remote: remote.into(),
            protocol,
            ok,
            rtt_ms: ok.then_some(0.5),
            detail: (!ok).then(|| "no answer".into()),
        }
    }

    /// One situation: the server advertises `addr:port` (UDP and TCP, as `form` with override
    /// `value`) and the client dialed `dialed`; `udp_ok`/`tcp_ok` are the advertised candidates'
    /// results, and the dialed address answers.
    #[derive(Clone, Copy)]
    struct Case<'a> {
        addr: &'a str,
        port: u16,
        form: &'a str,
        value: Option<&'a str>,
        dialed: &'a str,
        udp_ok: bool,
        tcp_ok: bool,
    }

    impl Case<'_> {
        fn report(self) -> IceReport {
            report(self)
        }
    }

    /// A report where RTCD advertises `addr:port` (UDP and TCP) and the client dialed `dialed`;
    /// `udp_ok`/`tcp_ok` are the advertised candidates' results, and the dialed address answers.
    fn report(c: Case) -> IceReport {
        let Case {
            addr,
            port,
            form,
            value,
            dialed,
            udp_ok,
            tcp_ok,
        } = c;
        let source = match form {
            "none" => CandidateSource::Local,
            "pairs" => CandidateSource::Mapping,
            _ => CandidateSource::Override,
        };
        let remote = format!("{addr}:{port}");
        let mut r = IceReport {
            advertised: vec![
                cand(addr, port, Transport::Udp, source),
                cand(addr, port, Transport::Tcp, source),
            ],
            rtcd_port: port,
            dialed: dialed.into(),
            override_value: value.map(Into::into),
            override_form: form.into(),
            pairs: vec![
                pair(&remote, Transport::Udp, udp_ok),
                pair(&remote, Transport::Tcp, tcp_ok),
            ],
            agent_state: if udp_ok { "connected" } else { "checking" }.into(),
            ..IceReport::default()
        };
        if remote != dialed {
            r.dialed_checks = vec![
                pair(dialed, Transport::Udp, true),
                pair(dialed, Transport::Tcp, true),
            ];
        }
        r
    }

    fn facts<'a>(udp: &'a UdpResult, tcp: &'a TcpResult) -> Facts<'a> {
        Facts {
            server: "203.0.113.10:8443",
            port: 8443,
            udp_tested: true,
            tcp_tested: true,
            udp,
            tcp,
            server_lost: None,
            refused: None,
            token_given: false,
        }
    }

    fn reach(udp: bool, tcp: bool) -> (UdpResult, TcpResult) {
        (
            UdpResult {
                reachable: udp,
                ..Default::default()
            },
            TcpResult {
                reachable: tcp,
                ..Default::default()
            },
        )
    }

    fn eval(r: &IceReport, udp: bool, tcp: bool) -> Vec<Finding> {
        let (u, t) = reach(udp, tcp);
        evaluate(r, &facts(&u, &t))
    }

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.id.as_str()).collect()
    }

    /// One row of the verdict table: a named situation and what the verdict must say.
    struct Row {
        name: &'static str,
        case: Case<'static>,
        /// UDP and TCP reachable.
        reach: (bool, bool),
        ids: &'static [&'static str],
        ice_ok: bool,
        summary_has: &'static [&'static str],
        fix_has: &'static [&'static str],
        fix_lacks: &'static [&'static str],
    }

    const ROWS: &[Row] = &[
        Row {
            name: "the right override passes silently",
            case: Case {
                addr: "203.0.113.10",
                port: 8443,
                form: "ip",
                value: Some("203.0.113.10"),
                dialed: "203.0.113.10:8443",
                udp_ok: true,
                tcp_ok: true,
            },
            reach: (true, true),
            ids: &[],
            ice_ok: true,
            summary_has: &[],
            fix_has: &[],
            fix_lacks: &[],
        },
        Row {
            name: "a wrong override names the dialed address",
            case: Case {
                addr: "203.0.113.99",
                port: 8443,
                form: "ip",
                value: Some("203.0.113.99"),
                dialed: "203.0.113.10:8443",
                udp_ok: false,
                tcp_ok: false,
            },
            reach: (true, true),
            ids: &["ice_host_override_wrong"],
            ice_ok: false,
            summary_has: &["`203.0.113.99`"],
            fix_has: &["ice_host_override = \"203.0.113.10\""],
            fix_lacks: &[],
        },
        Row {
            name: "the right address on the wrong port asks for a port override only",
            case: Case {
                addr: "203.0.113.10",
                port: 8443,
                form: "ip",
                value: Some("203.0.113.10"),
                dialed: "203.0.113.10:443",
                udp_ok: false,
                tcp_ok: false,
            },
            reach: (true, true),
            ids: &["ice_port_override_wrong"],
            ice_ok: false,
            summary_has: &[],
            fix_has: &[
                "ice_host_port_override = 443",
                "RTCD_RTC_ICEHOSTPORTOVERRIDE=443",
            ],
            fix_lacks: &["ice_host_override ="],
        },
        Row {
            name: "nothing reachable adds nothing (server_unreachable says it)",
            case: Case {
                addr: "172.31.1.2",
                port: 8443,
                form: "none",
                value: None,
                dialed: "203.0.113.10:8443",
                udp_ok: false,
                tcp_ok: false,
            },
            reach: (false, false),
            ids: &[],
            ice_ok: false,
            summary_has: &[],
            fix_has: &[],
            fix_lacks: &[],
        },
    ];

    #[test]
    fn verdict_table() {
        for row in ROWS {
            let r = row.case.report();
            let (udp, tcp) = row.reach;
            let f = eval(&r, udp, tcp);
            assert_eq!(ids(&f), row.ids, "{}", row.name);
            assert_eq!(ice_ok(&r, udp, tcp), row.ice_ok, "{}", row.name);
            for want in row.summary_has {
                assert!(
                    f[0].summary.contains(want),
                    "{}: {want} in {}",
                    row.name,
                    f[0].summary
                );
            }
            for want in row.fix_has {
                assert!(
                    f[0].fix.contains(want),
                    "{}: {want} in {}",
                    row.name,
                    f[0].fix
                );
            }
            for not in row.fix_lacks {
                assert!(
                    !f[0].fix.contains(not),
                    "{}: {not} in {}",
                    row.name,
                    f[0].fix
                );
            }
        }
    }

    /// Every situation of the table again, with the server gone mid-run: no check is judged, only
    /// what RTCD's configuration says (here the probe's port, when it is not RTCD's).
    #[test]
    fn a_server_lost_mid_run_leaves_the_checks_unjudged() {
        let mut judged_when_up = 0;
        for row in ROWS {
            let (u, t) = reach(row.reach.0, row.reach.1);
            let mut r = row.case.report();
            r.probe_port = r.rtcd_port + 10_000;
            judged_when_up += evaluate(&r, &facts(&u, &t))
                .iter()
                .filter(|f| !f.is(FindingId::IceProbePort))
                .count();
            let lost = Facts {
                server_lost: Some("the UDP echo phase"),
                ..facts(&u, &t)
            };
            let got = evaluate(&r, &lost);
            assert!(
                got.iter().all(|f| f.is(FindingId::IceProbePort)) && got.len() == 1,
                "{}: {:?}",
                row.name,
                ids(&got)
            );
        }
        assert!(
            judged_when_up > 0,
            "the same checks are judged while the server answers"
        );
        // Lost only at the final counters, after checks it answered: judged as usual.
        let mut judged_after = 0;
        for row in ROWS {
            let (u, t) = reach(row.reach.0, row.reach.1);
            let r = row.case.report();
            let up = evaluate(&r, &facts(&u, &t));
            let late = Facts {
                server_lost: Some(crate::verdict::LOST_AT_COUNTERS),
                ..facts(&u, &t)
            };
            if r.pairs.iter().any(|p| p.ok) {
                assert_eq!(ids(&evaluate(&r, &late)), ids(&up), "{}", row.name);
                judged_after += 1;
            }
        }
        assert!(judged_after > 0, "some rows have an answered check");
    }

    #[test]
    fn private_host_candidates_with_server_side_turn_is_a_warning_naming_the_relay() {
        let mut r = Case {
            addr: "172.31.1.2",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        r.relay_servers = vec!["turn:turn.example.com:3478".into()];
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_missing"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].summary.contains("turn:turn.example.com:3478"),
            "{}",
            f[0].summary
        );
        // Without the relay the same report is an error (the test below).
    }

    #[test]
    fn missing_override_names_the_dialed_address() {
        let r = Case {
            addr: "172.31.1.2",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_missing"]);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(
            f[0].summary.contains("only private addresses"),
            "{}",
            f[0].summary
        );
        assert!(f[0].summary.contains("172.31.1.2:8443"));
        assert!(
            f[0].fix.contains("ice_host_override = \"203.0.113.10\""),
            "{}",
            f[0].fix
        );
        assert!(f[0].fix.contains("RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.10"));
        // Same port: no port override suggested.
        assert!(!f[0].fix.contains("ice_host_port_override"));
        assert!(!ice_ok(&r, true, true));
    }

    #[test]
    fn missing_override_behind_port_mapping_names_both_lines() {
        let r = Case {
            addr: "172.31.1.2",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_missing"]);
        assert!(f[0].fix.contains("ice_host_override = \"203.0.113.10\""));
        assert!(f[0].fix.contains("ice_host_port_override = 443"));
        assert!(f[0].fix.contains("RTCD_RTC_ICEHOSTPORTOVERRIDE=443"));
    }

    #[test]
    fn missing_override_when_stun_found_the_wrong_address() {
        let mut r = Case {
            addr: "198.51.100.77",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        for c in &mut r.advertised {
            c.source = CandidateSource::Stun;
        }
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_missing"]);
        assert!(f[0].summary.contains("STUN server reported"));
    }

    #[test]
    fn missing_override_with_private_dialed_address_does_not_recommend_it() {
        let r = Case {
            addr: "172.31.9.9",
            port: 8443,
            form: "none",
            value: None,
            dialed: "10.1.2.3:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_missing"]);
        assert!(!f[0].fix.contains("\"10.1.2.3\""), "{}", f[0].fix);
        assert!(f[0].fix.contains("PUBLIC_IP"));
        assert_eq!(
            f[0].fix.matches("users reach").count(),
            1,
            "said once: {}",
            f[0].fix
        );
    }

    #[test]
    fn wrong_pair_override_keeps_the_pair_form() {
        let r = Case {
            addr: "203.0.113.99",
            port: 8443,
            form: "pairs",
            value: Some("203.0.113.99/172.31.1.2"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_wrong"]);
        assert!(f[0].fix.contains("203.0.113.10/LOCAL_IP"), "{}", f[0].fix);
    }

    #[test]
    fn wrong_port_with_hostname_override_asks_for_an_ip() {
        let mut r = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "hostname",
            value: Some("calls.example.test"),
            dialed: "203.0.113.10:443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        r.override_resolved_server = vec!["203.0.113.10".into()];
        r.override_resolved_client = vec!["203.0.113.10".into()];
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_port_override_wrong"]);
        assert!(f[0].fix.contains("ice_host_override = \"203.0.113.10\""));
    }

    #[test]
    fn split_horizon_dns() {
        let mut r = Case {
            addr: "172.31.1.2",
            port: 8443,
            form: "hostname",
            value: Some("calls.example.test"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        r.override_resolved_server = vec!["172.31.1.2".into()];
        r.override_resolved_client = vec!["203.0.113.10".into()];
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_split_horizon_dns"]);
        assert!(f[0].summary.contains("172.31.1.2") && f[0].summary.contains("203.0.113.10"));
        assert!(f[0].fix.contains("ice_host_override = \"203.0.113.10\""));
        // Same name resolving alike but dead: a wrong override, not DNS.
        r.override_resolved_client = vec!["172.31.1.2".into()];
        assert_eq!(ids(&eval(&r, true, true)), vec!["ice_host_override_wrong"]);
        // The client could not resolve it at all: nothing to compare.
        r.override_resolved_client = vec![];
        assert_eq!(ids(&eval(&r, true, true)), vec!["ice_host_override_wrong"]);
    }

    #[test]
    fn split_horizon_that_still_works_is_not_an_error() {
        let mut r = Case {
            addr: "198.51.100.50",
            port: 8443,
            form: "hostname",
            value: Some("calls.example.test"),
            dialed: "203.0.113.10:8443",
            udp_ok: true,
            tcp_ok: true,
        }
        .report();
        r.override_resolved_server = vec!["198.51.100.50".into()];
        r.override_resolved_client = vec!["203.0.113.10".into()];
        assert!(eval(&r, true, true).is_empty());
    }

    #[test]
    fn ice_failed_when_even_the_dialed_address_does_not_answer() {
        let mut r = Case {
            addr: "203.0.113.99",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.99"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        for p in &mut r.dialed_checks {
            p.ok = false;
        }
        assert_eq!(ids(&eval(&r, true, true)), vec!["ice_failed"]);
        // The advertised address is the dialed one and it does not answer ICE.
        let r = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        assert_eq!(ids(&eval(&r, true, true)), vec!["ice_failed"]);
    }

    #[test]
    fn tcp_failing_while_udp_works_is_a_warning() {
        let r = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:8443",
            udp_ok: true,
            tcp_ok: false,
        }
        .report();
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_tcp_failed"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(!ice_ok(&r, true, true));
        // TCP not reachable at all: tcp_blocked (the main verdict) covers it, ICE says nothing.
        assert!(eval(&r, true, false).is_empty());
        assert!(ice_ok(&r, true, false));
    }

    #[test]
    fn tcp_port_mismatch_is_named_in_the_warning() {
        let mut r = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:443",
            udp_ok: true,
            tcp_ok: false,
        }
        .report();
        r.pairs[0].remote = "203.0.113.10:443".into();
        r.advertised[0].port = 443;
        r.rtcd_port = 443;
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_tcp_failed"]);
        assert!(
            f[0].fix.contains("ice_host_port_override = 443"),
            "{}",
            f[0].fix
        );
    }

    #[test]
    fn udp_blocked_judges_the_address_over_tcp() {
        let r = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: true,
        }
        .report();
        assert!(eval(&r, false, true).is_empty());
        assert!(ice_ok(&r, false, true));
        let r = Case {
            addr: "172.31.1.2",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let f = eval(&r, false, true);
        assert_eq!(ids(&f), vec!["ice_host_override_missing"]);
        assert!(f[0].summary.contains("over TCP"));
    }

    #[test]
    fn prflx_success_never_passes_and_is_named() {
        let mut r = Case {
            addr: "203.0.113.99",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.99"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: true,
        }
        .report();
        r.agent_state = "connected".into();
        r.agent_selected = Some(AgentPair {
            local: "198.51.100.2:40000".into(),
            remote: "203.0.113.10:8443".into(),
            remote_type: "prflx".into(),
            state: "succeeded".into(),
            nominated: true,
            rtt_ms: Some(0.4),
        });
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_wrong"]);
        assert!(f[0].summary.contains("peer-reflexive"));
        assert!(!ice_ok(&r, true, true));
    }

    #[test]
    fn probe_on_another_port_is_an_info() {
        let mut r = Case {
            addr: "203.0.113.10",
            port: 9443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:9443",
            udp_ok: true,
            tcp_ok: true,
        }
        .report();
        r.rtcd_port = 8443;
        r.probe_port = 9443;
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_probe_port"]);
        assert_eq!(f[0].severity, Severity::Info);
        assert!(f[0].summary.contains("8443") && f[0].summary.contains("9443"));
        // A port override (443) on the public candidate, probe on RTCD's port: no info.
        let mut r = Case {
            addr: "203.0.113.10",
            port: 443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:443",
            udp_ok: true,
            tcp_ok: true,
        }
        .report();
        r.rtcd_port = 8443;
        r.probe_port = 8443;
        r.advertised.push(cand(
            "127.0.0.1",
            8443,
            Transport::Udp,
            CandidateSource::Local,
        ));
        assert!(eval(&r, true, true).is_empty());
    }

    #[test]
    fn loopback_candidates_stay_out_of_sentences() {
        let mut r = Case {
            addr: "203.0.113.99",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.99"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        r.advertised.insert(
            0,
            cand("127.0.0.1", 8443, Transport::Udp, CandidateSource::Local),
        );
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_host_override_wrong"]);
        assert!(!f[0].summary.contains("127.0.0.1"), "{}", f[0].summary);
    }

    #[test]
    fn ids_match_the_contract() {
        // The ids scripts rely on (issue 3); a rename must fail here.
        let r = Case {
            addr: "172.31.1.2",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let json = serde_json::to_value(&eval(&r, true, true)[0]).unwrap();
        assert_eq!(json["id"], "ice_host_override_missing");
        assert_eq!(json["severity"], "error");
    }

    /// The server's facts say RTCD's ice_address filter dropped the override (rtcd
    /// server.go:109-122, utils.go:84-87): that is the finding, not "the override is wrong".
    #[test]
    fn filter_dropping_the_override_is_named() {
        let mut r = Case {
            addr: "172.31.1.2",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        for c in &mut r.advertised {
            c.source = CandidateSource::Local;
        }
        r.advertised.retain(|c| c.protocol == Transport::Udp);
        r.filter_ignores = Some(crate::rtcd::FilterIgnores::Override);
        r.ice_address_udp = "0.0.0.0".into();
        r.pion_rules = Some(crate::rtcd::PionRules::V4_2);
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_address_ignores_override"]);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(
            f[0].summary.contains("ice_address_udp = \"0.0.0.0\""),
            "{}",
            f[0].summary
        );
        assert!(f[0].summary.contains("172.31.1.2"), "{}", f[0].summary);
        // If the local addresses answered from here anyway, it is a warning, and ICE passed.
        r.pairs[0].ok = true;
        let f = eval(&r, true, false);
        assert_eq!(ids(&f), vec!["ice_address_ignores_override"]);
        assert_eq!(f[0].severity, Severity::Warning);
        // No facts (an older server): the usual diagnosis.
        r.pairs[0].ok = false;
        r.filter_ignores = None;
        assert_eq!(ids(&eval(&r, true, true)), vec!["ice_host_override_wrong"]);
    }

    /// An empty UDP candidate list never passes, whatever TCP does.
    #[test]
    fn no_udp_candidate_never_passes() {
        let mut r = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:8443",
            udp_ok: true,
            tcp_ok: true,
        }
        .report();
        r.advertised.retain(|c| c.protocol == Transport::Tcp);
        r.pairs.retain(|p| p.protocol == Transport::Tcp);
        r.ice_address_tcp = "0.0.0.0".into();
        assert!(
            !ice_ok(&r, false, true),
            "TCP alone must not pass without a UDP candidate"
        );
        assert!(!ice_ok(&r, true, true));
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_no_udp_candidate"]);
        assert!(
            f[0].summary.contains("ice_address_tcp = \"0.0.0.0\""),
            "{}",
            f[0].summary
        );
        let f = eval(&r, false, true);
        assert_eq!(ids(&f), vec!["ice_no_udp_candidate"]);
        // Nothing advertised at all, server unreachable: still said.
        r.advertised.clear();
        assert_eq!(ids(&eval(&r, false, false)), vec!["ice_no_udp_candidate"]);
    }

    /// Configurations RTCD v1.2.6 accepts and serves (its UDP candidates include a public
    /// address, the single override's among them), computed as the server computes them, with
    /// a network where every public candidate answers: the client verdict raises no error.
    mod accepted_configs {
        use super::*;
        use crate::rtcd::{self, LocalAddr, OverrideForm, PionRules, RtcdConfig};
        use proptest::prelude::*;

        const OVERRIDES: &[&str] = &[
            "",
            "203.0.113.10",
            "203.0.113.2",
            "calls.example.com",
            "203.0.113.10/10.0.0.5",
            "203.0.113.10/10.0.0.5,127.0.0.1/127.0.0.1",
            "203.0.113.10/10.0.0.5, 203.0.113.11/172.17.0.1",
            "203.0.113.10/10.0.0.5,198.51.100.1",
        ];
        const PORT_OVERRIDES: &[&str] = &[
            "",
            "ice_host_port_override = 30443",
            "ice_host_port_override = \"10.0.0.5/443,10.0.0.9/444\"",
        ];
        const ADDRESSES: &[&str] = &[
            "",
            "ice_address_udp = \"10.0.0.5\"",
            "ice_address_udp = \" 203.0.113.2 \"",
            "ice_address_udp = \"0.0.0.0\"",
            "ice_address_tcp = \"10.0.0.5,203.0.113.2\"",
        ];
        const SERVERS: &[&str] = &[
            "",
            "ice_servers = [\"stun:stun.example.com:3478\"]",
            "ice_servers = [{urls = [\"turn:t.example.com:3478\"], username = \"u\", credential = \"p\"}]",
        ];
        const HOSTS: &[&[&str]] = &[
            &["127.0.0.1", "10.0.0.5", "172.17.0.1"],
            &["127.0.0.1", "203.0.113.2"],
            &["127.0.0.1", "203.0.113.2", "10.0.0.5", "172.17.0.1"],
            &["127.0.0.1", "10.0.0.5", "2001:db8::5"],
        ];

        /// The report a client gets on a fine network: every public candidate answers, private
        /// and loopback ones do not (the client is outside).
        fn report_for(a: &rtcd::Advertised, ov: &str) -> Option<IceReport> {
            let form = match &a.override_form {
                OverrideForm::None => "none",
                OverrideForm::Ip(_) => "ip",
                OverrideForm::Hostname { .. } => "hostname",
                OverrideForm::Pairs(_) => "pairs",
            };
            let advertised: Vec<AdvertisedCandidate> = a
                .candidates
                .iter()
                .map(|c| AdvertisedCandidate {
                    address: c.address.to_string(),
                    port: c.port,
                    protocol: match c.protocol {
                        rtcd::Protocol::Udp => Transport::Udp,
                        rtcd::Protocol::Tcp => Transport::Tcp,
                    },
                    private: c.private,
                    source: CandidateSource::Local,
                })
                .collect();
            let dialed = a.udp().find(|c| !c.private)?;
            let pairs = advertised
                .iter()
                .filter(|c| !c.address.parse::<IpAddr>().unwrap().is_loopback())
                .map(|c| {
                    let remote = SocketAddr::new(c.address.parse().unwrap(), c.port).to_string();
                    pair(&remote, c.protocol, !c.private)
                })
                .collect();
            Some(IceReport {
                advertised,
                rtcd_port: a.rtcd_port_udp,
                probe_port: 8443,
                dialed: SocketAddr::new(dialed.address, dialed.port).to_string(),
                override_value: (!ov.is_empty()).then(|| ov.to_string()),
                override_form: form.into(),
                pairs,
                pion_rules: Some(a.rules),
                filter_ignores: a.filter_ignores,
                ..IceReport::default()
            })
        }

        fn check(
            ov: &str,
            po: &str,
            ad: &str,
            sv: &str,
            ipv6: bool,
            host: &[&str],
            rules: PionRules,
        ) -> Result<bool, String> {
            let toml = format!(
                "[rtc]\nice_host_override = \"{ov}\"\nenable_ipv6 = {ipv6}\n{po}\n{ad}\n{sv}\n"
            );
            let cfg = RtcdConfig::from_toml_str(&toml).unwrap();
            let locals: Vec<LocalAddr> = host
                .iter()
                .map(|s| LocalAddr {
                    ip: s.parse().unwrap(),
                    loopback: s.starts_with("127."),
                })
                .collect();
            let resolve = |_: &str, _: bool| Ok(vec!["203.0.113.10".parse().unwrap()]);
            let stun = |ip: IpAddr| (!ip.is_loopback()).then(|| "203.0.113.50".parse().unwrap());
            let Ok(a) = rtcd::compute_advertised(&cfg, &locals, &resolve, &stun, 8443, 8443, rules)
            else {
                return Ok(false);
            };
            let udp: Vec<IpAddr> = a.udp().map(|c| c.address).collect();
            let wanted = match &a.override_form {
                OverrideForm::Ip(ip) | OverrideForm::Hostname { resolved: ip, .. } => {
                    udp.contains(ip)
                }
                _ => true,
            };
            let Some(r) = report_for(&a, ov).filter(|_| wanted) else {
                return Ok(false);
            };
            let f = eval(&r, true, true);
            let errs: Vec<&str> = f
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| f.id.as_str())
                .collect();
            if errs.is_empty() {
                Ok(true)
            } else {
                Err(format!("{rules:?} {host:?}\n{toml}→ {errs:?}"))
            }
        }

        /// The table is not vacuous: the usual deployments are among the served ones.
        #[test]
        fn usual_deployments_are_served_and_pass() {
            let nat = HOSTS[0];
            for (ov, host) in [
                ("203.0.113.10", nat),
                ("calls.example.com", nat),
                ("203.0.113.10/10.0.0.5", nat),
                ("203.0.113.10/10.0.0.5,198.51.100.1", nat),
                ("", HOSTS[1]),
            ] {
                for rules in [PionRules::V4_0, PionRules::V4_2] {
                    // pion v4.0 refuses a pair beside a lone IP (ice v4.0.10
                    // external_ip_mapper.go:29-38): RTCD 1.2.4 fails every join there.
                    let want = !(rules == PionRules::V4_0 && ov.ends_with("198.51.100.1"));
                    assert_eq!(
                        check(ov, "", "", "", false, host, rules),
                        Ok(want),
                        "{ov} {rules:?}"
                    );
                }
            }
            // STUN discovery on the NAT host.
            assert_eq!(
                check("", "", "", SERVERS[1], false, nat, PionRules::V4_2),
                Ok(true)
            );
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]
            #[test]
            fn served_configs_raise_no_client_error(
                ov in prop::sample::select(OVERRIDES),
                po in prop::sample::select(PORT_OVERRIDES),
                ad in prop::sample::select(ADDRESSES),
                sv in prop::sample::select(SERVERS),
                ipv6 in any::<bool>(),
                host in prop::sample::select(HOSTS),
                v42 in any::<bool>(),
            ) {
                let rules = if v42 { PionRules::V4_2 } else { PionRules::V4_0 };
                if let Err(e) = check(ov, po, ad, sv, ipv6, host, rules) {
                    prop_assert!(false, "{}", e);
                }
            }
        }
    }

    /// ice_address_udp = "0.0.0.0" on a host with a public address: UDP works, RTCD makes no TCP
    /// candidate (rtcd sfu.go:103-115). A warning that names the filter, not "open inbound TCP".
    #[test]
    fn ice_address_udp_unspecified_no_tcp_candidate_names_the_filter() {
        let mut r = Case {
            addr: "203.0.113.2",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.2:8443",
            udp_ok: true,
            tcp_ok: false,
        }
        .report();
        r.advertised.retain(|c| c.protocol == Transport::Udp);
        r.pairs.retain(|p| p.protocol == Transport::Udp);
        r.ice_address_udp = "0.0.0.0".into();
        let f = eval(&r, true, true);
        assert_eq!(ids(&f), vec!["ice_tcp_failed"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].summary.contains("ice_address_udp = \"0.0.0.0\""),
            "{}",
            f[0].summary
        );
        assert!(f[0].fix.contains("ice_address_udp"), "{}", f[0].fix);
    }

    /// The same situations behind the Calls plugin's integrated server: every finding names the
    /// System Console setting and no RTCD key (a table of named cases).
    #[test]
    fn plugin_deployment_names_the_system_console() {
        let plugin = Deployment::CallsPlugin { rtcd_url: None };
        let mut no_override = Case {
            addr: "10.0.0.5",
            port: 8443,
            form: "none",
            value: None,
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        no_override
            .advertised
            .iter_mut()
            .for_each(|c| c.private = true);
        let wrong = Case {
            addr: "203.0.113.99",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.99"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let port = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:30443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let pairs = Case {
            addr: "203.0.113.99",
            port: 8443,
            form: "pairs",
            value: Some("203.0.113.99/10.0.0.5"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        let tcp = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:8443",
            udp_ok: true,
            tcp_ok: false,
        }
        .report();
        let mut filter = Case {
            addr: "10.0.0.5",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:8443",
            udp_ok: false,
            tcp_ok: false,
        }
        .report();
        filter.filter_ignores = Some(crate::rtcd::FilterIgnores::Override);
        filter.ice_address_udp = "0.0.0.0".into();
        let mut no_udp = tcp.clone();
        no_udp.advertised.retain(|c| c.protocol == Transport::Tcp);
        no_udp.ice_address_tcp = "10.9.9.9".into();
        let mut other_port = tcp.clone();
        other_port.probe_port = 9443;
        let cases = [
            (
                "no override",
                no_override,
                "ice_host_override_missing",
                "\"ICE Host Override\"",
            ),
            (
                "wrong override",
                wrong,
                "ice_host_override_wrong",
                "\"ICE Host Override\"",
            ),
            (
                "wrong port",
                port,
                "ice_port_override_wrong",
                "\"ICE Host Port Override\" to 30443",
            ),
            (
                "pairs",
                pairs,
                "ice_host_override_wrong",
                "203.0.113.10/LOCAL_IP",
            ),
            ("tcp", tcp, "ice_tcp_failed", "\"RTC Server Port (TCP)\""),
            (
                "filter",
                filter,
                "ice_address_ignores_override",
                "\"RTC Server Address (UDP)\"",
            ),
            (
                "no udp",
                no_udp,
                "ice_no_udp_candidate",
                "\"RTC Server Address (TCP)\"",
            ),
            (
                "probe port",
                other_port,
                "ice_probe_port",
                "ICE Host Port Override",
            ),
        ];
        for (name, r, id, setting) in cases {
            let (u, t) = reach(true, true);
            let f = evaluate_for(&r, &facts(&u, &t), &plugin);
            let hit = f.iter().find(|f| f.id.as_str() == id);
            let hit = hit.unwrap_or_else(|| panic!("{name}: no {id} in {:?}", ids(&f)));
            let text = format!("{} {}", hit.summary, hit.fix);
            assert!(text.contains(setting), "{name}: {setting} not in {text}");
            for rtcd in [
                "ice_host_override",
                "ice_address_",
                "ice_port_",
                "RTCD_RTC_",
                "[rtc]",
                "restart RTCD",
                "RTCD's",
            ] {
                assert!(!text.contains(rtcd), "{name}: {rtcd} in {text}");
            }
            // The same report in RTCD's terms names RTCD's keys.
            let rtcd = evaluate(&r, &facts(&u, &t));
            assert!(!format!("{rtcd:?}").contains("System Console"), "{name}");
        }
        let (u, t) = reach(true, true);
        let with_rtcd = Deployment::CallsPlugin {
            rtcd_url: Some("http://rtcd.example.com:8045".into()),
        };
        let r = Case {
            addr: "203.0.113.10",
            port: 8443,
            form: "ip",
            value: Some("203.0.113.10"),
            dialed: "203.0.113.10:8443",
            udp_ok: true,
            tcp_ok: true,
        }
        .report();
        let f = evaluate_for(&r, &facts(&u, &t), &with_rtcd);
        assert_eq!(ids(&f), vec!["calls_via_rtcd"]);
        assert!(f[0].summary.contains("http://rtcd.example.com:8045"));
    }
}
