//! What the page's two POSTs do: `POST /session` opens a WebRTC session on the peer with one
//! leg's candidates, `POST /report` builds the report from the page's measurements and the
//! peer's counts (the same rules as probe-client, in probe-proto), keeps it, and answers it.

use super::http::Reply;
use super::WebState;
use crate::shared::{canonical, Shared};
use probe_proto::msg::{IceOffer, Transport};
use probe_proto::web::report::PageContext;
use probe_proto::web::request::{self, Request};
use probe_proto::web::{Leg, Measurements, ReportReply};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// A host name lookup for the dialed leg gets this long (it holds a blocking thread).
const LOOKUP_WITHIN: Duration = Duration::from_secs(2);
/// Sessions a report may name: the page runs three legs; a few more for a retried one.
const MAX_LEGS: usize = 8;

#[derive(Deserialize)]
struct Offer {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

/// The page's sentence while live mode sees nothing holding the media port (RTCD, or the
/// Calls plugin's own server, not running).
pub const MEDIA_DOWN: &str = "the calls media server (RTCD, or the Calls plugin's own) is not running \
                              on that host, so calls cannot connect at all; tell the admin (probe-server \
                              live says so in its log).";

/// `POST /session?leg=…`: the answer, the session id and the candidates the answer carries.
pub async fn session(shared: &Shared, client: SocketAddr, req: &Request, leg: Leg) -> Reply {
    let offer: Offer = match serde_json::from_slice(&req.body) {
        Ok(o) => o,
        Err(e) => return bad_json("offer", &e),
    };
    if offer.kind != "offer" || offer.sdp.trim().is_empty() {
        return Reply::error(400, "the body must be {\"type\":\"offer\",\"sdp\":\"…\"}.");
    }
    if shared.web_state.media_down() {
        // Answering would pass a port nothing listens on: say what is wrong instead.
        return Reply::error(503, MEDIA_DOWN);
    }
    let Some(peer) = shared.web() else {
        return Reply::error(503, "this server runs without the test page's WebRTC peer.");
    };
    let Some(ice) = shared.ice() else {
        return Reply::error(503, "this server has not computed RTCD's candidates.");
    };
    let candidates = match leg_candidates(shared, &ice, req, leg, client.ip()).await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let opened = peer
        .open(canonical(client).ip(), leg, &offer.sdp, &candidates)
        .await;
    match opened {
        Ok(o) => {
            shared
                .web_state
                .note_start(&o.session, crate::control::wall_ms());
            let cands: Vec<_> = candidates
                .iter()
                .map(|(a, p)| serde_json::json!({ "address": a.ip(), "port": a.port(), "protocol": p }))
                .collect();
            Reply::json(
                200,
                &serde_json::json!({
                    "session": o.session,
                    "answer": { "type": "answer", "sdp": o.answer_sdp },
                    "candidates": cands,
                }),
            )
        }
        Err(super::peer::OpenError::BadOffer(why)) => Reply::error(400, &why),
        Err(super::peer::OpenError::Busy(why)) => Reply::error(429, &why),
        Err(super::peer::OpenError::Stopped(why)) => Reply::error(503, &why),
    }
}

fn bad_json(what: &str, e: &serde_json::Error) -> Reply {
    // The parser's message quotes the input: cleaned before it goes back.
    let e = probe_proto::sites::clean_text(&e.to_string(), 200);
    Reply::error(
        400,
        &format!("the {what} is not the JSON this server expects: {e}."),
    )
}

/// The candidates a leg's answer carries: exactly RTCD's advertised ones of that protocol
/// (`IceOffer` is what probe-client gets too), or the address the page was loaded from.
async fn leg_candidates(
    shared: &Shared,
    ice: &IceOffer,
    req: &Request,
    leg: Leg,
    client: IpAddr,
) -> Result<Vec<(SocketAddr, Transport)>, Reply> {
    let of = |proto: Transport| -> Vec<(SocketAddr, Transport)> {
        ice.candidates
            .iter()
            .filter(|c| c.protocol == proto)
            .map(|c| (SocketAddr::new(c.address, c.port), proto))
            .collect()
    };
    let (found, what) = match leg {
        // 404 as for a protocol RTCD does not advertise: nothing to test, not a failure.
        Leg::Tcp if shared.web_state.is_live() => {
            return Err(Reply::error(
                404,
                &format!(
                    "live mode: RTCD holds TCP port {}, so this page cannot test ICE-TCP; \
                     probe-client tests TCP to it.",
                    ice.rtcd_port_tcp
                ),
            ))
        }
        Leg::Udp => (of(Transport::Udp), "UDP"),
        Leg::Tcp => (of(Transport::Tcp), "TCP"),
        Leg::Dialed => {
            let d = dialed(&shared.web_state, ice, req.host.as_deref(), client).await;
            return match d {
                Some(a) => Ok(vec![(a, Transport::Udp)]),
                None => Err(Reply::error(
                    409,
                    "the address this page was loaded from is unknown to the server (the Host \
                     header is not an IP address, and its name does not resolve here).",
                )),
            };
        }
    };
    if found.is_empty() {
        return Err(Reply::error(
            404,
            &format!("RTCD advertises no {what} candidates with this configuration, so there is nothing to test over {what}."),
        ));
    }
    Ok(found)
}

/// The address the browser dialed: the Host header's IP literal, else its name resolved here
/// (bounded in time and in lookups at once), on the probe's UDP port. Of several addresses,
/// one of the client's family first.
async fn dialed(
    state: &WebState,
    ice: &IceOffer,
    host: Option<&str>,
    client: IpAddr,
) -> Option<SocketAddr> {
    let port = ice.probe_port_udp;
    let (name, _) = request::split_host(host?)?;
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), port));
    }
    let name = name.to_owned();
    let lookup = move || {
        use std::net::ToSocketAddrs;
        (name.as_str(), port).to_socket_addrs().map(Vec::from_iter)
    };
    let found = bounded_blocking(&state.lookups, LOOKUP_WITHIN, lookup)
        .await?
        .ok()?;
    let all: Vec<SocketAddr> = found
        .into_iter()
        .map(|a| SocketAddr::new(a.ip().to_canonical(), port))
        .collect();
    let client = client.to_canonical();
    all.iter()
        .find(|a| a.is_ipv4() == client.is_ipv4())
        .or(all.first())
        .copied()
}

/// Runs `f` on a blocking thread when a permit of `permits` is free, waiting for it at most
/// `within`. The permit goes with `f` and is released when `f` ends, not at the timeout: a
/// lookup that outlives its caller still holds its thread, so the permits bound the threads.
async fn bounded_blocking<T: Send + 'static>(
    permits: &Arc<tokio::sync::Semaphore>,
    within: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let permit = permits.clone().try_acquire_owned().ok()?;
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    });
    tokio::time::timeout(within, task).await.ok()?.ok()
}

/// Why a report naming no fresh session of its sender is answered but not kept.
const NOT_A_RUN: &str = "the report names no test session opened from this address that was not \
                         reported already, so it was not stored; run the test again to store one";

/// `POST /report`: the report of the page's run, kept in the results store when it may be.
/// `on_probe_port`: the request came in on the probe's own TCP listener.
pub async fn report(
    shared: &Shared,
    client: SocketAddr,
    req: &Request,
    on_probe_port: bool,
) -> Reply {
    let m: Measurements = match serde_json::from_slice(&req.body) {
        Ok(m) => m,
        Err(e) => return bad_json("measurements", &e),
    };
    if m.legs.len() > MAX_LEGS {
        return Reply::error(400, &format!("a report names at most {MAX_LEGS} sessions."));
    }
    let Some(ice) = shared.ice() else {
        return Reply::error(503, "this server has not computed RTCD's candidates.");
    };
    let ids = session_ids(&m);
    // Only sessions this address opened, each reported once: the store keeps one report per
    // page run, not one per POST (and taking them closes them, freeing their slots).
    let client_ip = canonical(client).ip();
    let counts = shared
        .web()
        .map(|p| p.take_for_report(client_ip, &ids))
        .unwrap_or_default();
    let host = req.host.clone().unwrap_or_default();
    let dialed = dialed(&shared.web_state, &ice, Some(&host), client.ip()).await;
    let now = crate::control::wall_ms();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let started = shared.web_state.started(&id_refs).unwrap_or(now).min(now);
    let ctx = PageContext {
        offer: &ice,
        host: &host,
        dialed,
        served_on_probe_port: on_probe_port,
        live: shared.web_state.is_live(),
        server_version: env!("CARGO_PKG_VERSION"),
        started_at: probe_proto::report::rfc3339(started),
        duration_ms: now - started,
    };
    // Pure code that must not panic; if it does, this request fails, not the server.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        probe_proto::web::build_report(&m, &counts, &ctx)
    }));
    let Ok(mut report) = built else {
        WebState::bump(&shared.web_state.reports_failed);
        return Reply::error(
            500,
            "the server could not build the report (a bug: its log says more).",
        );
    };
    WebState::bump(&shared.web_state.reports_built);
    if report.site.trim().is_empty() {
        report.site = "browser".into();
    }
    let not_stored = if counts.is_empty() {
        WebState::bump(&shared.web_state.reports_not_stored);
        Some(NOT_A_RUN.to_string())
    } else {
        store(shared, client, now, &report)
    };
    tracing::info!(
        %client,
        site = %probe_proto::sites::clean_text(&report.site, 64),
        ok = report.ok,
        findings = %report.findings.iter().map(|f| f.id.as_str()).collect::<Vec<_>>().join(","),
        stored = not_stored.is_none(),
        "browser test page report"
    );
    let text = probe_proto::report::render_text(&report);
    let reply = ReportReply {
        report,
        text,
        not_stored,
    };
    Reply::json(200, &reply)
}

/// The sessions the measurements name, each once.
fn session_ids(m: &Measurements) -> Vec<String> {
    let mut ids: Vec<String> = m
        .legs
        .iter()
        .map(|l| l.session.clone())
        .filter(|s| !s.is_empty())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Hands the report to the results store; why not, if it was not kept.
fn store(
    shared: &Shared,
    client: SocketAddr,
    now: u64,
    report: &probe_proto::report::Report,
) -> Option<String> {
    let json = match serde_json::to_string(report) {
        Ok(j) => j,
        Err(e) => return Some(format!("the report could not be written out: {e}")),
    };
    let run = crate::results::UploadedRun {
        client_addr: client,
        received_ms: now,
        report_json: json,
        proof: None,
    };
    match shared.results.submit(run) {
        Ok(()) => {
            WebState::bump(&shared.web_state.reports_stored);
            None
        }
        Err(why) => {
            WebState::bump(&shared.web_state.reports_not_stored);
            Some(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::msg::{CandidateSource, WireCandidate};

    fn offer() -> IceOffer {
        let cand = |a: &str, protocol| WireCandidate {
            address: a.parse().expect("literal"),
            port: 8443,
            protocol,
            source: CandidateSource::Override,
        };
        IceOffer {
            ufrag: String::new(),
            pwd: String::new(),
            candidates: vec![
                cand("203.0.113.5", Transport::Udp),
                cand("203.0.113.5", Transport::Tcp),
                cand("198.51.100.9", Transport::Udp),
            ],
            override_value: Some("203.0.113.5".into()),
            override_form: "ip".into(),
            override_resolved: vec![],
            rtcd_port_udp: 8443,
            rtcd_port_tcp: 8443,
            probe_port_udp: 18443,
            probe_port_tcp: 18443,
            facts: None,
        }
    }

    fn post(host: Option<&str>) -> Request {
        Request {
            method: request::Method::Post,
            path: "/session".into(),
            query: vec![],
            host: host.map(str::to_string),
            body: vec![],
        }
    }

    /// A blocking call that outlives its timeout keeps its permit until it ends: the permits
    /// bound the threads, not just the waiting callers.
    #[tokio::test]
    async fn a_timed_out_blocking_call_keeps_its_permit_until_it_ends() {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let slow = move || rx.recv_timeout(Duration::from_secs(5)).is_ok();
        let got = bounded_blocking(&permits, Duration::from_millis(50), slow).await;
        assert_eq!(got, None, "timed out");
        assert_eq!(permits.available_permits(), 0, "the thread still runs");
        let refused = bounded_blocking(&permits, Duration::from_secs(1), || 1).await;
        assert_eq!(refused, None, "no permit while it runs");
        tx.send(()).expect("send");
        let by = std::time::Instant::now() + Duration::from_secs(5);
        while permits.available_permits() == 0 && std::time::Instant::now() < by {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            bounded_blocking(&permits, Duration::from_secs(1), || 7).await,
            Some(7)
        );
    }

    #[tokio::test]
    async fn no_session_starts_while_rtcd_does_not_hold_its_port() {
        let shared = Shared::new(
            probe_proto::session::Core::new(probe_proto::session::Limits::default()),
            Some(offer()),
        );
        let req = Request {
            body: br#"{"type":"offer","sdp":"v=0"}"#.to_vec(),
            ..post(Some("203.0.113.5:18443"))
        };
        let client = "192.0.2.7:5000".parse().expect("literal");
        shared.web_state.set_media_down(true);
        let r = session(&shared, client, &req, Leg::Udp).await;
        assert_eq!(r.status, 503);
        assert!(String::from_utf8_lossy(&r.body).contains("is not running on that host"));
        shared.web_state.set_media_down(false);
        let r = session(&shared, client, &req, Leg::Udp).await;
        assert!(
            !String::from_utf8_lossy(&r.body).contains("is not running"),
            "past the check"
        );
    }

    /// A report naming no session its sender opened (here: none the server knows) is built and
    /// answered, but not stored: only a page run's own report is.
    #[tokio::test]
    async fn a_report_of_no_session_of_its_sender_is_answered_not_stored() {
        let shared = Shared::new(
            probe_proto::session::Core::new(probe_proto::session::Limits::default()),
            None,
        );
        shared.set_ice(offer());
        let body = serde_json::json!({
            "site": "forged",
            "gathering": {"complete": true, "ms": null, "candidates": []},
            "legs": [{
                "leg": "udp", "session": "00ff", "deadline_ms": 4000,
                "ice_connected_ms": 10.0, "dtls_connected_ms": 20.0, "dc_open_ms": 30.0,
                "ice_state": "connected", "dtls_state": "connected", "pc_state": "connected",
                "pairs": [], "selected": null, "audio": null, "burst": null, "error": null,
            }],
        });
        let req = Request {
            body: body.to_string().into_bytes(),
            ..post(Some("203.0.113.5:18443"))
        };
        let client = "192.0.2.7:5000".parse().expect("literal");
        let r = report(&shared, client, &req, true).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["not_stored"], NOT_A_RUN, "{v:#}");
        assert_eq!(v["report"]["site"], "forged");
        assert_eq!(WebState::load(&shared.web_state.reports_stored), 0);
        assert_eq!(WebState::load(&shared.web_state.reports_not_stored), 1);
    }

    #[tokio::test]
    async fn each_leg_gets_exactly_its_candidates() {
        let shared = Shared::new(
            probe_proto::session::Core::new(probe_proto::session::Limits::default()),
            None,
        );
        let (ice, client) = (offer(), "192.0.2.7".parse().expect("literal"));
        let addr = |s: &str| s.parse::<SocketAddr>().expect("literal");
        let leg = |req: Request, leg| {
            let (shared, ice) = (&shared, &ice);
            async move { leg_candidates(shared, ice, &req, leg, client).await }
        };
        let udp = leg(post(Some("h")), Leg::Udp).await.expect("udp");
        assert_eq!(
            udp,
            vec![
                (addr("203.0.113.5:8443"), Transport::Udp),
                (addr("198.51.100.9:8443"), Transport::Udp)
            ]
        );
        let tcp = leg(post(Some("h")), Leg::Tcp).await.expect("tcp");
        assert_eq!(tcp, vec![(addr("203.0.113.5:8443"), Transport::Tcp)]);
        // The dialed leg: the Host the page was loaded with, on the probe's own UDP port.
        let d = leg(post(Some("192.0.2.1:8080")), Leg::Dialed)
            .await
            .expect("ip");
        assert_eq!(d, vec![(addr("192.0.2.1:18443"), Transport::Udp)]);
        let d6 = leg(post(Some("[2001:db8::1]")), Leg::Dialed)
            .await
            .expect("v6");
        assert_eq!(d6, vec![(addr("[2001:db8::1]:18443"), Transport::Udp)]);
        let named = leg(post(Some("localhost:8443")), Leg::Dialed)
            .await
            .expect("name");
        assert!(
            named[0].0.ip().is_loopback() && named[0].0.port() == 18443,
            "{named:?}"
        );
        for host in [None, Some("no-such-host.invalid"), Some("a b")] {
            let r = leg(post(host), Leg::Dialed).await.expect_err("unknown");
            assert_eq!(r.status, 409, "{host:?}");
        }
        // RTCD advertising nothing over a protocol: 404, in words.
        let mut no_tcp = offer();
        no_tcp.candidates.retain(|c| c.protocol == Transport::Udp);
        let r = leg_candidates(&shared, &no_tcp, &post(None), Leg::Tcp, client)
            .await
            .expect_err("no tcp");
        assert_eq!(r.status, 404);
        assert!(String::from_utf8_lossy(&r.body).contains("no TCP candidates"));
    }
}
