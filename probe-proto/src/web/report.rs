//! From the page's measurements and the server's counts to a [`Report`]: the same rules and
//! finding ids as `probe-client`, plus the browser-only layers (ICE, DTLS, data channel).

use super::browser::BrowserReport;
use super::legs::{self, LegView};
use super::{bound, findings, ice, Leg, Measurements, ServerCounts};
use crate::msg::{IceOffer, Transport};
use crate::report::{Finding, Report, StunResult, TcpResult, UdpResult};
use crate::verdict::Facts;
use crate::{ice_verdict, verdict};
use std::net::SocketAddr;

/// What the server knows about the page's run besides the measurements.
#[derive(Debug, Clone)]
pub struct PageContext<'a> {
    /// What RTCD would advertise (the offer `probe-client` gets).
    pub offer: &'a IceOffer,
    /// The `Host` header the page was loaded with (`HOST[:PORT]`), as the user named the server.
    pub host: &'a str,
    /// The Host as an address (an IP literal, or resolved by the server) on the probe's UDP
    /// port, where the dialed leg's candidate is; None when unknown.
    pub dialed: Option<SocketAddr>,
    /// The page's HTTP request came in on the probe's own TCP listener (not `--web ADDR`, not a
    /// proxy): a TCP connection to the media port, which the Host header cannot prove (a proxy
    /// may pass the original `Host: …:PORT` on).
    pub served_on_probe_port: bool,
    /// Live mode (`probe-server live --web`): RTCD holds its TCP port, so the page's TCP leg
    /// cannot run and is not missing; the report says it was live, as probe-client's does.
    pub live: bool,
    /// `probe-server`'s version (the report's `server_version`).
    pub server_version: &'a str,
    /// RFC 3339 time the page's first session was opened, and the run's length.
    pub started_at: String,
    pub duration_ms: u64,
}

/// The report of one page run. Pure: never panics on any input (property-tested).
pub fn build_report(m: &Measurements, counts: &[ServerCounts], ctx: &PageContext) -> Report {
    let m = bound::measurements(m);
    let views: Vec<LegView> = m.legs.iter().map(|l| LegView::new(l, counts)).collect();
    let offer = ctx.offer;
    let no_udp = findings::no_udp(&m.gathering, &views);
    let udp = udp_result(&views);
    let tcp = tcp_result(&views, ctx);
    let tcp_ran = views.iter().any(|v| v.r.leg == Leg::Tcp && v.ran());
    let port = match offer.probe_port_udp {
        0 => ctx.dialed.map_or(0, |d| d.port()),
        p => p,
    };
    let server = media_server(ctx.host, port);
    let facts = Facts {
        server: &server,
        port,
        // With UDP forbidden in the browser, UDP to the server was never tried: not judged.
        udp_tested: !no_udp
            && views
                .iter()
                .any(|v| v.transport() == Transport::Udp && v.ran()),
        tcp_tested: tcp.reachable || tcp_ran,
        udp: &udp,
        tcp: &tcp,
        server_lost: None,
        refused: None,
        token_given: false,
    };
    let mut found = verdict::evaluate(&facts);
    let mut ice_report = None;
    if views.iter().any(LegView::ran) {
        let mut r = ice::ice_report(offer, &views, dialed(&views, ctx), no_udp);
        // ICE-TCP is judged when the page's TCP leg ran, or when the server refused it because
        // RTCD advertises no TCP candidate (the ICE verdict names that setting).
        let has_tcp = offer
            .candidates
            .iter()
            .any(|c| c.protocol == Transport::Tcp);
        let ice_facts = Facts {
            tcp_tested: tcp_ran || !has_tcp,
            ..facts.clone()
        };
        r.ok = ice_verdict::ice_ok(&r, facts.udp_tested && udp.reachable, tcp.reachable);
        found.extend(ice_verdict::evaluate(&r, &ice_facts));
        ice_report = Some(r);
    }
    found.extend(browser_findings(&views, offer, no_udp, ctx.live));
    let mut report = Report {
        schema: crate::report::SCHEMA,
        tool_version: ctx.server_version.to_owned(),
        site: bound::site(m.site.as_deref()),
        server,
        started_at: ctx.started_at.clone(),
        duration_ms: ctx.duration_ms,
        ok: false,
        udp,
        tcp,
        findings: Vec::new(),
        server_version: Some(ctx.server_version.to_owned()),
        server_pin: None,
        ice: ice_report,
        turn: None,
        mtu: None,
        live: ctx.live,
        browser: Some(BrowserReport {
            user_agent: m.user_agent.clone(),
            gathering: legs::gathering(&m.gathering),
            legs: views.iter().map(legs::browser_leg).collect(),
        }),
    };
    report.set_findings(found);
    report
}

fn browser_findings(views: &[LegView], offer: &IceOffer, no_udp: bool, live: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if no_udp {
        out.push(findings::browser_no_udp(offer, views));
    }
    out.extend(findings::dtls_blocked(views));
    out.extend(findings::data_channel_failed(views));
    out.extend(findings::incomplete(offer, views, live));
    out
}

/// The server as probe-client names it: the host the user dialed, on the media port (a page
/// served on `--web ADDR` or in live mode came over another port than the one tested).
fn media_server(host: &str, port: u16) -> String {
    let named = super::request::split_host(host).filter(|_| port != 0);
    let name = match named {
        Some((name, _)) => match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{name}:{port}"),
        },
        None => host.to_owned(),
    };
    crate::sites::clean_text(&name, 255)
}

/// UDP as `probe-client` reports it: reachable when a connectivity check over UDP (the udp or
/// the dialed leg) got its answer; the echo from the udp leg's audio stream, else the dialed's.
fn udp_result(views: &[LegView]) -> UdpResult {
    let udp: Vec<&LegView> = views
        .iter()
        .filter(|v| v.transport() == Transport::Udp)
        .collect();
    let answered = udp.iter().find(|v| v.ice_answered());
    let echo = [Leg::Udp, Leg::Dialed].iter().find_map(|leg| {
        udp.iter()
            .filter(|v| v.r.leg == *leg)
            .find_map(|v| audio(v))
    });
    UdpResult {
        reachable: answered.is_some(),
        stun: StunResult {
            mapped: None,
            rtt_ms: answered
                .and_then(|v| v.r.selected.as_ref())
                .and_then(|p| p.rtt_ms),
        },
        echo,
        ..UdpResult::default()
    }
}

/// TCP: reachable when the page itself came in on the probe's TCP listener (an HTTP request is
/// a TCP connection to it), or when the TCP leg's ICE-TCP check got its answer. A page served
/// elsewhere (a reverse proxy, live mode's `--web`) proves nothing about the media port.
fn tcp_result(views: &[LegView], ctx: &PageContext) -> TcpResult {
    let tcp_leg = views.iter().find(|v| v.r.leg == Leg::Tcp && v.ran());
    TcpResult {
        reachable: ctx.served_on_probe_port || tcp_leg.is_some_and(LegView::ice_answered),
        connect_ms: None,
        echo: tcp_leg.and_then(audio),
        ..TcpResult::default()
    }
}

/// A leg's audio stream summarised with the server's counts for it.
fn audio(v: &LegView) -> Option<crate::stats::EchoSummary> {
    let c = v.counts;
    v.r.audio
        .as_ref()
        .and_then(|s| super::echo::summary(s, c.map(|c| c.audio_rx), c.map(|c| c.audio_tx)))
}

/// The address the dialed leg tested: its candidate as the server recorded it, else the page's
/// Host address on the probe's UDP port (the candidate the server builds for that leg).
fn dialed(views: &[LegView], ctx: &PageContext) -> Option<SocketAddr> {
    views
        .iter()
        .filter(|v| v.r.leg == Leg::Dialed)
        .find_map(|v| v.candidates().next())
        .or_else(|| {
            ctx.dialed
                .map(|d| SocketAddr::new(d.ip().to_canonical(), ctx.offer.probe_port_udp))
        })
}
