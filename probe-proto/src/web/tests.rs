//! The browser report on constructed runs: each failure the page can meet gives the finding
//! `probe-client` would give (same ids, same words), plus the browser-only layers.

use super::*;
use crate::msg::{CandidateSource, IceOffer, WireCandidate};
use crate::report::{render_text, Report, Severity};
use std::net::{IpAddr, SocketAddr};

const PORT: u16 = 8443;
/// Where users reach the server (the page's Host), and so the dialed leg's candidate.
const PUBLIC: &str = "198.51.100.1";

fn sa(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), PORT)
}

/// RTCD's offer: host candidates at `ip` on UDP and TCP, with the override as configured.
fn offer(ip: &str, over: Option<&str>, source: CandidateSource) -> IceOffer {
    let cand = |protocol| WireCandidate {
        address: ip.parse().unwrap(),
        port: PORT,
        protocol,
        source,
    };
    IceOffer {
        ufrag: "u".into(),
        pwd: "p".repeat(22),
        candidates: vec![cand(Transport::Udp), cand(Transport::Tcp)],
        override_value: over.map(Into::into),
        override_form: if over.is_some() { "ip" } else { "none" }.into(),
        override_resolved: Vec::new(),
        rtcd_port_udp: PORT,
        rtcd_port_tcp: PORT,
        probe_port_udp: PORT,
        probe_port_tcp: PORT,
        facts: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Pass,
    /// Checks sent, none answered.
    IceFail,
    /// ICE connected, DTLS stays "connecting" (STUN passes, DTLS dropped).
    DtlsFail,
    /// DTLS connected, the channel never opens.
    DataFail,
    /// No candidate pair at all (the browser may not use UDP).
    NoPairs,
    /// `POST /session` failed.
    Signalling,
}

fn samples(n: u32, echoed: u32) -> StreamSamples {
    StreamSamples {
        size: 160,
        samples: (0..n)
            .map(|i| Sample {
                seq: i,
                sent_ms: 1000.0 + f64::from(i) * 20.0,
                rtt_ms: (i < echoed).then_some(10.0 + f64::from(i % 4)),
            })
            .collect(),
    }
}

/// One leg toward `remote` ended as `o`, and what the server counted for it.
fn leg(which: Leg, o: Outcome, remote: SocketAddr) -> (LegResult, ServerCounts) {
    use Outcome::*;
    let session = if o == Signalling {
        String::new()
    } else {
        format!("{which:?}-s").to_lowercase()
    };
    let t = if which == Leg::Tcp {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let ice = matches!(o, Pass | DtlsFail | DataFail);
    let dtls = matches!(o, Pass | DataFail);
    let pair = PairStats {
        state: if ice { "succeeded" } else { "in-progress" }.into(),
        nominated: ice,
        requests_sent: 12,
        responses_received: if ice { 12 } else { 0 },
        local_type: "host".into(),
        local_protocol: if t == Transport::Tcp { "tcp" } else { "udp" }.into(),
        remote_address: remote.ip().to_string(),
        remote_port: remote.port(),
        remote_protocol: if t == Transport::Tcp { "tcp" } else { "udp" }.into(),
        rtt_ms: ice.then_some(2.0),
    };
    let r = LegResult {
        leg: which,
        session: session.clone(),
        deadline_ms: 4000,
        ice_connected_ms: ice.then_some(120.0),
        dtls_connected_ms: dtls.then_some(170.0),
        dc_open_ms: (o == Pass).then_some(175.0),
        ice_state: if ice {
            "connected"
        } else if o == NoPairs {
            "new"
        } else {
            "checking"
        }
        .into(),
        dtls_state: if dtls {
            "connected"
        } else if ice {
            "connecting"
        } else {
            "new"
        }
        .into(),
        pc_state: if o == Pass { "connected" } else { "connecting" }.into(),
        pairs: if matches!(o, NoPairs | Signalling) {
            vec![]
        } else {
            vec![pair.clone()]
        },
        selected: ice.then_some(pair),
        audio: (o == Pass).then(|| samples(250, 250)),
        burst: (o == Pass).then(|| samples(30, 30)),
        error: (o == Signalling).then(|| {
            "the server answered 429: too many web sessions; try again in a minute.".into()
        }),
    };
    let c = ServerCounts {
        session,
        leg: Some(which),
        candidates: vec![(remote, t)],
        stun_requests: if ice { 12 } else { 0 },
        stun_answered: if ice { 12 } else { 0 },
        dtls_records: if dtls { 6 } else { 0 },
        dtls_connected: dtls,
        channel_open: o == Pass,
        audio_rx: if o == Pass { 250 } else { 0 },
        audio_tx: if o == Pass { 250 } else { 0 },
        burst_rx: if o == Pass { 30 } else { 0 },
        burst_tx: if o == Pass { 30 } else { 0 },
    };
    (r, c)
}

/// A run: the offer's advertised address, then the legs in order with their outcomes.
fn run(offer: &IceOffer, udp_gathered: bool, legs: &[(Leg, Outcome)]) -> Report {
    run_in(offer, udp_gathered, legs, false)
}

/// [`run`], in live mode (`live`: the page served by `probe-server live --web`).
fn run_in(offer: &IceOffer, udp_gathered: bool, legs: &[(Leg, Outcome)], live: bool) -> Report {
    let adv = offer.candidates[0].address;
    let (mut results, mut counts) = (Vec::new(), Vec::new());
    for (which, o) in legs {
        let remote = if *which == Leg::Dialed {
            sa(PUBLIC)
        } else {
            SocketAddr::new(adv, PORT)
        };
        let (r, c) = leg(*which, *o, remote);
        results.push(r);
        counts.extend((*o != Outcome::Signalling).then_some(c));
    }
    let gathered = |protocol: &str| GatheredCandidate {
        protocol: protocol.into(),
        kind: "host".into(),
        address: "0b6f2c1e-7f0a-4c41-9d1e-2f3a4b5c6d7e.local".into(),
        port: 50000,
    };
    let m = Measurements {
        site: Some("office".into()),
        user_agent: "Mozilla/5.0 HeadlessChrome/156".into(),
        gathering: Gathering {
            complete: true,
            ms: Some(40.0),
            candidates: if udp_gathered {
                vec![gathered("udp")]
            } else {
                vec![]
            },
        },
        legs: results,
    };
    let mut c = ctx(offer);
    c.live = live;
    if live {
        c.served_on_probe_port = false;
    }
    build_report(&m, &counts, &c)
}

fn ctx(offer: &IceOffer) -> PageContext<'_> {
    PageContext {
        offer,
        host: "198.51.100.1:8443",
        dialed: Some(sa(PUBLIC)),
        served_on_probe_port: true,
        live: false,
        server_version: "0.1.0",
        started_at: "2026-11-30T05:00:00.000Z".into(),
        duration_ms: 9000,
    }
}

fn errors(r: &Report) -> Vec<&str> {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.id.as_str())
        .collect()
}

/// Name, offer, whether the browser gathered a UDP candidate, legs, the error ids expected.
type Case<'a> = (
    &'a str,
    &'a IceOffer,
    bool,
    &'a [(Leg, Outcome)],
    &'a [&'a str],
);

#[test]
fn scenarios_give_the_findings_probe_client_would_plus_the_browser_layers() {
    use Leg::*;
    use Outcome::*;
    let clean = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let wrong = offer(
        "203.0.113.99",
        Some("203.0.113.99"),
        CandidateSource::Override,
    );
    let nat = offer("10.0.0.5", None, CandidateSource::Local);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("clean", &clean, true, &[(Udp, Pass), (Tcp, Pass)], &[]),
        ("udp blocked", &clean, true, &[(Udp, IceFail), (Tcp, Pass), (Dialed, IceFail)], &["udp_blocked"]),
        ("wrong override", &wrong, true, &[(Udp, IceFail), (Tcp, IceFail), (Dialed, Pass)], &["ice_host_override_wrong"]),
        ("missing override behind NAT", &nat, true, &[(Udp, IceFail), (Tcp, IceFail), (Dialed, Pass)], &["ice_host_override_missing"]),
        ("dtls blocked", &clean, true, &[(Udp, DtlsFail), (Tcp, Pass)], &["dtls_blocked"]),
        ("browser may not use udp", &clean, false, &[(Udp, NoPairs), (Tcp, Pass), (Dialed, NoPairs)], &["browser_no_udp"]),
        // No candidate gathered (no default route) but UDP connects: not browser_no_udp.
        ("nothing gathered, udp works", &clean, false, &[(Udp, Pass), (Tcp, Pass)], &[]),
        ("data channel failed", &clean, true, &[(Udp, DataFail), (Tcp, Pass)], &["data_channel_failed"]),
        ("udp signalling failed", &clean, true, &[(Udp, Signalling), (Tcp, Pass)], &["browser_test_incomplete"]),
        ("no legs", &clean, true, &[], &["browser_test_incomplete"]),
    ];
    for (name, offer, gathered, legs, want) in cases {
        let r = run(offer, *gathered, legs);
        assert_eq!(errors(&r), *want, "{name}: {:#?}", r.findings);
        assert_eq!(r.ok, want.is_empty(), "{name}");
        let text = render_text(&r);
        for f in &r.findings {
            assert!(text.contains(&f.summary), "{name}: {text}");
        }
    }
}

/// Live mode: RTCD holds the TCP port, so the server refuses the TCP leg (signalling fails)
/// and that is not a missing test; UDP is judged as usual, and the report says it was live.
#[test]
fn live_mode_judges_udp_and_does_not_miss_the_tcp_leg() {
    use Leg::*;
    use Outcome::*;
    let clean = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let wrong = offer(
        "203.0.113.99",
        Some("203.0.113.99"),
        CandidateSource::Override,
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("live clean", &clean, true, &[(Udp, Pass), (Tcp, Signalling)], &[]),
        // TCP untested: nothing answered over UDP, said as such (not "UDP or TCP").
        ("live udp blocked", &clean, true, &[(Udp, IceFail), (Tcp, Signalling), (Dialed, IceFail)], &["server_unreachable"]),
        ("live wrong override", &wrong, true, &[(Udp, IceFail), (Tcp, Signalling), (Dialed, Pass)], &["ice_host_override_wrong"]),
        ("live dtls blocked", &clean, true, &[(Udp, DtlsFail), (Tcp, Signalling)], &["dtls_blocked"]),
    ];
    for (name, offer, gathered, legs, want) in cases {
        let r = run_in(offer, *gathered, legs, true);
        assert_eq!(errors(&r), *want, "{name}: {:#?}", r.findings);
        assert!(r.live, "{name}");
        let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
        assert!(!ids.contains(&"browser_test_incomplete"), "{name}: {ids:?}");
        assert!(!ids.contains(&"tcp_blocked"), "{name}: {ids:?}");
        for f in &r.findings {
            assert!(!f.summary.contains("UDP or TCP"), "{name}: {}", f.summary);
        }
    }
    let r = run_in(
        &clean,
        true,
        &[(Udp, IceFail), (Tcp, Signalling), (Dialed, IceFail)],
        true,
    );
    let text = render_text(&r);
    assert!(text.contains("TCP  NOT TESTED (live mode"), "{text}");
    // The page came over another port (--web): the report names the media port.
    let mut c = ctx(&clean);
    c.host = "[2001:db8::1]:8080";
    let m = Measurements::default();
    assert_eq!(build_report(&m, &[], &c).server, "[2001:db8::1]:8443");
    c.host = "calls.example.com:8080";
    assert_eq!(build_report(&m, &[], &c).server, "calls.example.com:8443");
    c.host = "calls.example.com";
    assert_eq!(build_report(&m, &[], &c).server, "calls.example.com:8443");
    // The same clean legs outside live mode: the TCP leg is missing.
    let r = run(&clean, true, &[(Udp, Pass), (Tcp, Signalling)]);
    let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["browser_test_incomplete"], "{:#?}", r.findings);
    assert!(!r.live);
}

#[test]
fn the_clean_run_reports_like_probe_client() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let r = run(
        &o,
        true,
        &[(Leg::Udp, Outcome::Pass), (Leg::Tcp, Outcome::Pass)],
    );
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert!(r.udp.reachable && r.tcp.reachable);
    let e = r.udp.echo.as_ref().unwrap();
    assert_eq!(
        (e.sent, e.received, e.loss_up_pct, e.loss_down_pct),
        (250, 250, Some(0.0), Some(0.0))
    );
    assert!(r.tcp.echo.is_some());
    let ice = r.ice.as_ref().unwrap();
    assert!(
        ice.ok && ice.pairs.len() == 2 && ice.pairs.iter().all(|p| p.ok),
        "{ice:#?}"
    );
    assert_eq!(ice.dialed, "198.51.100.1:8443");
    assert_eq!(
        (r.site.as_str(), r.server.as_str()),
        ("office", "198.51.100.1:8443")
    );
    let b = r.browser.as_ref().unwrap();
    assert_eq!((b.gathering.udp, b.gathering.mdns), (1, 1));
    assert!(b.legs.iter().all(|l| l.failed.is_none()));
    let text = render_text(&r);
    for want in [
        "browser test page",
        "Browser  Mozilla/5.0",
        "leg udp",
        "passed",
        "Verdict: PASS",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // The JSON loads back as a Report (the results store, `compare`); floats may move by an ulp.
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(
        (back.findings, back.ice),
        (r.findings.clone(), r.ice.clone())
    );
    assert_eq!(back.browser.unwrap().legs.len(), 2);
}

#[test]
fn each_failing_leg_names_its_layer_and_the_server_counts() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let r = run(
        &o,
        true,
        &[(Leg::Udp, Outcome::DtlsFail), (Leg::Tcp, Outcome::Pass)],
    );
    let b = r.browser.as_ref().unwrap();
    assert_eq!(b.legs[0].failed, Some(browser::Layer::Dtls));
    let f = r
        .findings
        .iter()
        .find(|f| f.is(crate::catalog::FindingId::DtlsBlocked))
        .unwrap();
    assert!(
        f.summary.contains("UDP to 198.51.100.1:8443"),
        "{}",
        f.summary
    );
    assert!(f.summary.contains("no DTLS record"), "{}", f.summary);
    assert!(f.fix.contains("UDP 8443"), "{}", f.fix);
    let text = render_text(&r);
    assert!(
        text.contains("FAILED at DTLS") && text.contains("server saw: 12 ICE check(s)"),
        "{text}"
    );
    // UDP is reachable (ICE answered): DTLS is what failed, not the port.
    assert!(r.udp.reachable);
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["browser"]["legs"][0]["failed"], "dtls");
}

#[test]
fn loss_per_direction_uses_the_server_counts_and_probe_client_words() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let (mut udp, mut c) = leg(Leg::Udp, Outcome::Pass, sa(PUBLIC));
    // The server got 225 of 250 (10 % lost upstream) and echoed them all; 225 came back.
    c.audio_rx = 225;
    c.audio_tx = 225;
    udp.audio = Some(samples(250, 225));
    let (tcp, ct) = leg(Leg::Tcp, Outcome::Pass, sa(PUBLIC));
    let m = Measurements {
        legs: vec![udp, tcp],
        gathering: Gathering {
            complete: true,
            ms: None,
            candidates: vec![],
        },
        ..Measurements::default()
    };
    let r = build_report(&m, &[c, ct], &ctx(&o));
    let e = r.udp.echo.as_ref().unwrap();
    assert_eq!((e.loss_up_pct, e.loss_down_pct), (Some(10.0), Some(0.0)));
    assert_eq!(errors(&r), ["packet_loss"]);
    assert!(r.findings[0]
        .summary
        .contains("10.0 % client → server (upstream)"));
    assert_eq!(r.site, "browser");
}

#[test]
fn a_tcp_leg_refused_for_lack_of_tcp_candidates_is_left_to_the_ice_verdict() {
    let mut o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    o.candidates.retain(|c| c.protocol == Transport::Udp);
    let r = run(
        &o,
        true,
        &[(Leg::Udp, Outcome::Pass), (Leg::Tcp, Outcome::Signalling)],
    );
    let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["ice_tcp_failed"], "{:#?}", r.findings);
    // With TCP candidates advertised, the same refusal is a test the page could not run.
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let r = run(
        &o,
        true,
        &[(Leg::Udp, Outcome::Pass), (Leg::Tcp, Outcome::Signalling)],
    );
    let f = &r.findings[0];
    assert_eq!(
        (f.id.as_str(), f.severity),
        ("browser_test_incomplete", Severity::Warning)
    );
    assert!(f.summary.contains("429"), "{}", f.summary);
    // The server's sentence ends with a full stop; the summary adds none of its own to it.
    assert!(
        f.summary.contains("in a minute.") && !f.summary.contains(".."),
        "{}",
        f.summary
    );
}

#[test]
fn a_page_served_elsewhere_does_not_prove_tcp() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let (u, cu) = leg(Leg::Udp, Outcome::Pass, sa(PUBLIC));
    let (t, ct) = leg(Leg::Tcp, Outcome::IceFail, sa(PUBLIC));
    let m = Measurements {
        legs: vec![u, t],
        ..Measurements::default()
    };
    let mut c = ctx(&o);
    c.served_on_probe_port = false;
    let r = build_report(&m, &[cu.clone(), ct.clone()], &c);
    assert!(!r.tcp.reachable);
    let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["tcp_blocked"], "{:#?}", r.findings);
    // The Host header proves nothing: a proxy may keep the probe's port in it.
    for host in ["probe.example", "probe.example:8443", "198.51.100.1:8443"] {
        c.host = host;
        let r = build_report(&m, &[cu.clone(), ct.clone()], &c);
        assert!(!r.tcp.reachable, "{host}");
    }
    // Served on the probe's own listener: TCP reached it, whatever the Host says.
    c.served_on_probe_port = true;
    c.host = "probe.example:443";
    let r = build_report(&m, &[cu, ct], &c);
    assert!(r.tcp.reachable);
}

#[test]
fn input_from_the_internet_is_bounded() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let (mut l, c) = leg(Leg::Udp, Outcome::Pass, sa(PUBLIC));
    l.audio = Some(samples(MAX_SAMPLES as u32 * 3, 10));
    l.pairs = vec![l.pairs[0].clone(); 1000];
    l.error = Some("x\u{1b}[2J".repeat(10_000));
    let m = Measurements {
        site: Some("   ".into()),
        user_agent: "A".repeat(100_000),
        legs: vec![l; 500],
        gathering: Gathering {
            complete: false,
            ms: Some(f64::NAN),
            candidates: vec![GatheredCandidate::default(); 10_000],
        },
    };
    let r = build_report(&m, &[c], &ctx(&o));
    let b = r.browser.as_ref().unwrap();
    assert_eq!(b.legs.len(), bound::MAX_LEGS);
    assert!(b.user_agent.chars().count() <= 200);
    assert_eq!(b.gathering.ms, None);
    assert_eq!(b.legs[0].audio.as_ref().unwrap().sent, MAX_SAMPLES as u64);
    assert!(!b.legs[0].error.as_deref().unwrap().contains('\u{1b}'));
    assert!(r.ice.as_ref().unwrap().agent_pairs.len() <= bound::MAX_PAIRS);
    assert_eq!(r.site, "browser");
    assert!(serde_json::to_string(&r).unwrap().len() < 2_000_000);
}

#[test]
fn measurements_parse_from_the_page_json_the_contract_describes() {
    let body = r#"{
      "site": "office", "user_agent": "Mozilla/5.0",
      "gathering": {"complete": true, "ms": 41.5, "candidates": [
        {"protocol": "udp", "type": "host", "address": "0b6f2c1e.local", "port": 55447}]},
      "legs": [{
        "leg": "udp", "session": "9f3a", "deadline_ms": 4000,
        "ice_connected_ms": 120.5, "dtls_connected_ms": 170.0, "dc_open_ms": 175.25,
        "ice_state": "connected", "dtls_state": "connected", "pc_state": "connected",
        "pairs": [{"state": "succeeded", "nominated": true, "requests_sent": 3,
                   "responses_received": 3, "local_type": "prflx", "local_protocol": "udp",
                   "remote_address": "203.0.113.10", "remote_port": 8443,
                   "remote_protocol": "udp", "rtt_ms": 1.5}],
        "selected": null,
        "audio": {"size": 160, "samples": [{"seq": 0, "sent_ms": 1000.0, "rtt_ms": 9.5},
                                           {"seq": 1, "sent_ms": 1020.0, "rtt_ms": null}]},
        "burst": null, "error": null
      }, {
        "leg": "dialed", "session": "", "deadline_ms": 4000,
        "ice_connected_ms": null, "dtls_connected_ms": null, "dc_open_ms": null,
        "ice_state": "", "dtls_state": "", "pc_state": "", "pairs": [], "selected": null,
        "audio": null, "burst": null, "error": "the server answered 409: unknown"
      }]
    }"#;
    let m: Measurements = serde_json::from_str(body).unwrap();
    assert_eq!(m.gathering.candidates[0].kind, "host");
    assert_eq!(m.legs[0].pairs[0].remote_port, 8443);
    assert_eq!(m.legs[0].audio.as_ref().unwrap().samples[1].rtt_ms, None);
    assert_eq!(m.legs[1].leg, Leg::Dialed);
    let back: Measurements = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    // `site` and `user_agent` may be left out.
    let m: Measurements = serde_json::from_str(
        r#"{"gathering":{"complete":false,"ms":null,"candidates":[]},"legs":[]}"#,
    )
    .unwrap();
    assert_eq!((m.site, m.user_agent.as_str()), (None, ""));
}

#[test]
fn probe_client_reports_keep_their_json() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let mut r = run(&o, true, &[(Leg::Udp, Outcome::Pass)]);
    r.browser = None;
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("\"browser\""));
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.browser, None);
    assert!(render_text(&r).starts_with("probe-client "));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn ms() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            (0.0..5000.0f64).prop_map(Some),
            any::<f64>().prop_map(Some),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(-1.0)),
        ]
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("succeeded".to_string()),
            Just("connected".to_string()),
            Just("udp".to_string()),
            Just("tcp".to_string()),
            Just("198.51.100.1".to_string()),
            Just("::ffff:198.51.100.1".to_string()),
            Just("s1".to_string()),
            ".{0,12}",
        ]
    }

    fn pair() -> impl Strategy<Value = PairStats> {
        (
            word(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            word(),
            word(),
            word(),
            any::<u16>(),
            ms(),
        )
            .prop_map(
                |(state, nominated, rq, rs, lt, lp, ra, rp, rtt)| PairStats {
                    state,
                    nominated,
                    requests_sent: rq,
                    responses_received: rs,
                    local_type: lt,
                    local_protocol: lp.clone(),
                    remote_address: ra,
                    remote_port: rp,
                    remote_protocol: lp,
                    rtt_ms: rtt,
                },
            )
    }

    fn stream() -> impl Strategy<Value = Option<StreamSamples>> {
        proptest::option::of(
            proptest::collection::vec((any::<u32>(), ms(), ms()), 0..40).prop_map(|v| {
                StreamSamples {
                    size: 160,
                    samples: v
                        .into_iter()
                        .map(|(seq, s, rtt)| Sample {
                            seq,
                            sent_ms: s.unwrap_or(f64::NAN),
                            rtt_ms: rtt,
                        })
                        .collect(),
                }
            }),
        )
    }

    fn leg() -> impl Strategy<Value = LegResult> {
        let which = prop_oneof![Just(Leg::Udp), Just(Leg::Tcp), Just(Leg::Dialed)];
        (
            (which, word(), any::<u64>(), ms(), ms(), ms()),
            (word(), word(), word()),
            (
                proptest::collection::vec(pair(), 0..4),
                proptest::option::of(pair()),
            ),
            (stream(), stream(), proptest::option::of(".{0,20}")),
        )
            .prop_map(
                |(
                    (leg, session, deadline_ms, ice, dtls, dc),
                    (is, ds, ps),
                    (pairs, selected),
                    (audio, burst, error),
                )| {
                    LegResult {
                        leg,
                        session,
                        deadline_ms,
                        ice_connected_ms: ice,
                        dtls_connected_ms: dtls,
                        dc_open_ms: dc,
                        ice_state: is,
                        dtls_state: ds,
                        pc_state: ps,
                        pairs,
                        selected,
                        audio,
                        burst,
                        error,
                    }
                },
            )
    }

    fn counts() -> impl Strategy<Value = ServerCounts> {
        (
            word(),
            proptest::collection::vec(any::<u64>(), 10),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(session, n, dtls_connected, channel_open)| ServerCounts {
                session,
                leg: None,
                candidates: vec![
                    (sa(PUBLIC), Transport::Udp),
                    ("[::1]:8443".parse().unwrap(), Transport::Tcp),
                ],
                stun_requests: n[0],
                stun_answered: n[1],
                dtls_records: n[2],
                dtls_connected,
                channel_open,
                audio_rx: n[3],
                audio_tx: n[4],
                burst_rx: n[5],
                burst_tx: n[6],
            })
    }

    fn gathered() -> impl Strategy<Value = GatheredCandidate> {
        (word(), word(), word(), any::<u16>()).prop_map(|(protocol, kind, address, port)| {
            GatheredCandidate {
                protocol,
                kind,
                address,
                port,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn build_report_never_panics_and_its_json_loads_back(
            legs in proptest::collection::vec(leg(), 0..5),
            counts in proptest::collection::vec(counts(), 0..4),
            candidates in proptest::collection::vec(gathered(), 0..4),
            complete in any::<bool>(),
            gms in ms(),
            site in proptest::option::of(".{0,80}"),
            ua in ".{0,40}",
            which in 0usize..3,
            dialed in proptest::option::of(any::<(u32, u16)>()),
        ) {
            let offers = [
                offer(PUBLIC, Some(PUBLIC), CandidateSource::Override),
                offer("10.0.0.5", None, CandidateSource::Local),
                IceOffer { candidates: vec![], ..offer(PUBLIC, None, CandidateSource::Local) },
            ];
            let m = Measurements { site, user_agent: ua, gathering: Gathering { complete, ms: gms, candidates }, legs };
            let mut c = ctx(&offers[which]);
            c.dialed = dialed.map(|(ip, port)| SocketAddr::new(IpAddr::from(ip.to_be_bytes()), port));
            let r = build_report(&m, &counts, &c);
            let _ = render_text(&r);
            let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            prop_assert_eq!(back.findings.len(), r.findings.len());
            prop_assert_eq!(r.ok, !r.findings.iter().any(|f| f.severity == Severity::Error));
        }
    }
}

#[test]
fn counts_the_server_kept_for_another_leg_are_not_taken() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let (u, mut c) = leg(Leg::Udp, Outcome::Pass, sa(PUBLIC));
    c.leg = Some(Leg::Tcp);
    let m = Measurements {
        legs: vec![u],
        ..Measurements::default()
    };
    let r = build_report(&m, &[c], &ctx(&o));
    assert!(r.browser.as_ref().unwrap().legs[0].server.is_none());
    assert_eq!(r.udp.echo.as_ref().unwrap().loss_up_pct, None);
}

/// The server answering checks is not UDP reachability: the answers may be lost on the way
/// back (probe-client's STUN counts only answers it received, too).
#[test]
fn checks_answered_by_the_server_but_never_received_are_no_answer() {
    let o = offer(PUBLIC, Some(PUBLIC), CandidateSource::Override);
    let (u, mut cu) = leg(Leg::Udp, Outcome::IceFail, sa(PUBLIC));
    (cu.stun_requests, cu.stun_answered) = (12, 12);
    let (t, ct) = leg(Leg::Tcp, Outcome::Pass, sa(PUBLIC));
    let m = Measurements {
        legs: vec![u, t],
        ..Measurements::default()
    };
    let r = build_report(&m, &[cu, ct], &ctx(&o));
    assert!(!r.udp.reachable);
    assert_eq!(errors(&r), ["udp_blocked"]);
    let text = render_text(&r);
    assert!(
        text.contains("server saw: 12 ICE check(s), answered 12"),
        "{text}"
    );
    let p = &r.ice.as_ref().unwrap().pairs[0];
    assert_eq!(
        p.detail.as_deref(),
        Some("no answer: the browser sent 12 check(s), 0 answered (pair in-progress)")
    );
}
