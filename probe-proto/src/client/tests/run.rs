use crate::client::echo::{EchoCore, EchoOutcome};
use crate::client::run::{
    self, check_transports_and_token, Channel, HelloOutcome, Plan, QuicOutcome, Reach, ReportMeta,
    Run, Step, TcpEchoLink, CONTROL_PAD_TO,
};
use crate::client::schedule::Schedule;
use crate::echo::SessionKey;
use crate::msg::{Control, Counters, Profile, Refused, Welcome};
use crate::report::{IceReport, Report};
use std::net::SocketAddr;

fn dialed() -> SocketAddr {
    "192.0.2.10:8443".parse().expect("literal")
}

fn plan() -> Plan {
    Plan {
        server: "rtcd.example.com:8443".into(),
        port: 8443,
        dialed: dialed(),
        udp: true,
        tcp: true,
        ice: true,
        pin: None,
        token: false,
    }
}

fn udp_ok() -> Reach {
    Reach {
        udp_stun: Some(("198.51.100.7:40000".parse().expect("literal"), 12.345_678)),
        ..Reach::default()
    }
}

fn tcp_ok() -> Reach {
    Reach {
        tcp_connect_ms: Some(3.456_789_1),
        tcp_stun_ok: true,
        ..Reach::default()
    }
}

fn both_ok() -> Reach {
    Reach {
        udp_stun: udp_ok().udp_stun,
        ..tcp_ok()
    }
}

fn welcome(ice: bool) -> Welcome {
    // From JSON so that the optional fields the protocol adds need no change here.
    let offer = serde_json::json!({
        "ufrag": "u", "pwd": "p", "candidates": [], "override_value": null,
        "override_form": "none", "override_resolved": [], "rtcd_port_udp": 8443,
        "rtcd_port_tcp": 8443, "probe_port_udp": 8443, "probe_port_tcp": 8443,
    });
    Welcome {
        proto: 1,
        session_id: 42,
        key: [1; 32],
        server_version: "9.9.9".into(),
        server_time_ms: 0,
        observed: "198.51.100.7:50000".into(),
        ice: ice.then(|| serde_json::from_value(offer).expect("an ICE offer")),
    }
}

/// An echo phase whose replies all came back, driven through the real core.
fn echo_ok(sent: u32) -> EchoOutcome {
    let key = SessionKey::new(&[1; 32]);
    let mut core = EchoCore::new(
        42,
        key.clone(),
        Schedule::new(Profile::Audio, None, None, 10.0),
        0,
    );
    let mut reply = vec![0u8; 200];
    for i in 0..sent {
        let now = u64::from(i) * 20_000;
        let req = core.poll_transmit(now).expect("due").bytes.to_vec();
        let n = crate::echo::encode_reply(&key, &req, now, now, &mut reply);
        core.on_reply(now + 5_000, &reply[..n]);
    }
    core.on_broken(u64::from(sent) * 20_000, "test over".into());
    EchoOutcome {
        broken: None,
        ..core.finish()
    }
}

fn counters(udp: u64, tcp: u64) -> Counters {
    Counters {
        udp_rx: udp,
        udp_tx: udp,
        tcp_rx: tcp,
        tcp_tx: tcp,
        rate_limited: 0,
    }
}

fn meta() -> ReportMeta {
    ReportMeta {
        tool_version: "0.1.0".into(),
        site: "home".into(),
        started_ms: 0,
        duration_ms: 1234,
    }
}

/// What the TCP-and-ICE step asks for: which TCP connection, and whether ICE runs.
fn tcp_and_ice(r: &Run) -> (Option<TcpEchoLink>, bool) {
    match r.step() {
        Step::TcpEchoAndIce { session, tcp, ice } => {
            assert_eq!(session.session_id, 42);
            (tcp, ice.is_some())
        }
        other => panic!("{other:?}"),
    }
}

fn ids(r: &Report) -> Vec<&str> {
    r.findings.iter().map(|f| f.id.as_str()).collect()
}

#[test]
fn a_clean_run_goes_through_every_phase() {
    let mut r = Run::new(plan());
    assert_eq!(
        r.step(),
        Step::Reach {
            udp: true,
            tcp: true
        }
    );
    r.on_reach(both_ok());
    assert_eq!(r.step(), Step::OpenQuic);
    r.on_quic(QuicOutcome::Up {
        pin_seen: Some("sha256:ab".into()),
    });
    assert_eq!(r.step(), Step::Hello(Channel::Quic));
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(false))));
    assert_eq!(r.welcome().map(|w| w.session_id), Some(42));
    assert!(matches!(r.step(), Step::UdpEcho(w) if w.session_id == 42));
    r.on_udp_echo(Some(echo_ok(5)));
    assert_eq!(tcp_and_ice(&r), (Some(TcpEchoLink::Fresh), false));
    r.on_tcp_echo_and_ice(Some(echo_ok(4)), None);
    assert_eq!(r.step(), Step::Counters { session_id: 42 });
    r.on_counters(Some(counters(5, 4)));
    assert_eq!(r.step(), Step::Done);
    let rep = r.report(meta());
    assert!(rep.ok, "{:?}", rep.findings);
    assert_eq!(ids(&rep), Vec::<&str>::new());
    assert_eq!(rep.udp.stun.mapped.as_deref(), Some("198.51.100.7:40000"));
    assert_eq!(rep.udp.stun.rtt_ms, Some(12.346), "rounded to the µs");
    assert_eq!(rep.tcp.connect_ms, Some(3.457));
    let (u, t) = (
        rep.udp.echo.expect("udp echo"),
        rep.tcp.echo.expect("tcp echo"),
    );
    assert_eq!((u.sent, u.received, u.loss_up_pct), (5, 5, Some(0.0)));
    assert_eq!((t.sent, t.received, t.loss_down_pct), (4, 4, Some(0.0)));
    assert_eq!(rep.server_version.as_deref(), Some("9.9.9"));
    assert_eq!(rep.server_pin.as_deref(), Some("sha256:ab"));
    assert_eq!(rep.server, "rtcd.example.com:8443");
    assert_eq!((rep.site.as_str(), rep.duration_ms), ("home", 1234));
    assert_eq!(rep.started_at, crate::report::rfc3339(0));
}

#[test]
fn blocked_udp_runs_control_over_tls_and_echo_over_plain_tcp() {
    let mut r = Run::new(Plan {
        pin: Some("sha256:ab".into()),
        ..plan()
    });
    r.on_reach(tcp_ok());
    assert!(!r.udp_reachable() && r.tcp_reachable());
    assert_eq!(r.step(), Step::OpenTls, "no QUIC attempt");
    r.on_tls(QuicOutcome::Up {
        pin_seen: Some("sha256:ab".into()),
    });
    assert_eq!(r.step(), Step::Hello(Channel::Tcp));
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(true))));
    assert_eq!(tcp_and_ice(&r), (Some(TcpEchoLink::Fresh), true));
    r.on_tcp_echo_and_ice(Some(echo_ok(3)), None);
    r.on_counters(Some(counters(0, 3)));
    let rep = r.report(meta());
    // The pin was checked over TLS: nothing to say about it.
    assert_eq!(ids(&rep), ["udp_blocked"]);
    assert!(!rep.ok);
    assert!(rep.udp.echo.is_none() && rep.tcp.echo.is_some());
    assert_eq!(rep.server_pin.as_deref(), Some("sha256:ab"));
}

#[test]
fn a_pin_mismatch_over_tls_aborts_like_over_quic() {
    let mut r = Run::new(Plan {
        pin: Some("sha256:aa".into()),
        ..plan()
    });
    r.on_reach(tcp_ok());
    r.on_tls(QuicOutcome::PinMismatch {
        seen: "sha256:bb".into(),
    });
    let Step::Abort(why) = r.step() else {
        panic!("{:?}", r.step())
    };
    assert!(
        why.contains("presents certificate sha256:bb, not the pinned sha256:aa"),
        "{why}"
    );
}

#[test]
fn a_tls_channel_that_fails_is_control_failed() {
    let mut r = Run::new(plan());
    r.on_reach(tcp_ok());
    r.on_tls(QuicOutcome::Failed);
    assert_eq!(r.step(), Step::Done);
    assert_eq!(ids(&r.report(meta())), ["udp_blocked", "control_failed"]);
}

#[test]
fn blocked_tcp_runs_everything_over_udp() {
    let mut r = Run::new(Plan {
        pin: Some("sha256:ab".into()),
        ..plan()
    });
    r.on_reach(Reach {
        tcp_connect_ms: Some(1.0), // connected, but nothing answered the STUN over it
        ..udp_ok()
    });
    assert_eq!(r.step(), Step::OpenQuic);
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(false))));
    assert!(matches!(r.step(), Step::UdpEcho(w) if w.session_id == 42));
    r.on_udp_echo(Some(echo_ok(5)));
    assert_eq!(
        r.step(),
        Step::Counters { session_id: 42 },
        "no TCP echo, no ICE offered"
    );
    r.on_counters(Some(counters(5, 0)));
    let rep = r.report(meta());
    assert_eq!(ids(&rep), ["tcp_blocked"]);
    assert_eq!(rep.tcp.connect_ms, Some(1.0));
    assert!(rep.tcp.echo.is_none());
}

#[test]
fn both_blocked_ends_after_reachability() {
    let mut r = Run::new(plan());
    r.on_reach(Reach::default());
    assert_eq!(r.step(), Step::Done);
    let rep = r.report(meta());
    assert_eq!(
        ids(&rep),
        ["server_unreachable"],
        "no control_failed on top"
    );
    assert!(!rep.ok);
}

#[test]
fn only_the_transports_asked_for_are_probed() {
    let r = Run::new(Plan {
        udp: false,
        ..plan()
    });
    assert_eq!(
        r.step(),
        Step::Reach {
            udp: false,
            tcp: true
        }
    );
    let mut r = Run::new(Plan {
        tcp: false,
        ..plan()
    });
    r.on_reach(udp_ok());
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(false))));
    r.on_udp_echo(Some(echo_ok(2)));
    r.on_counters(Some(counters(2, 0)));
    let rep = r.report(meta());
    assert_eq!(ids(&rep), Vec::<&str>::new(), "TCP not tested: not blocked");
    assert!(
        rep.tcp.skipped && !rep.udp.skipped,
        "the report says which was not tested"
    );
}

#[test]
fn a_refusal_is_kept_only_when_nothing_answered() {
    let mut r = Run::new(plan());
    r.on_reach(Reach {
        udp_refused: true,
        tcp_refused: true,
        ..Reach::default()
    });
    let rep = r.report(meta());
    assert!(rep.udp.refused && rep.tcp.refused);
    assert!(
        rep.findings[0].summary.contains("refused UDP and TCP"),
        "{}",
        rep.findings[0].summary
    );
    // An earlier send refused, a later one answered: the transport answered.
    let mut r = Run::new(plan());
    r.on_reach(Reach {
        udp_refused: true,
        ..both_ok()
    });
    let rep = r.report(meta());
    assert!(!rep.udp.refused && rep.udp.reachable);
}

#[test]
fn a_refused_hello_ends_the_run() {
    let mut r = Run::new(plan());
    r.on_reach(both_ok());
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Refused(Refused {
        reason: "too many sessions".into(),
        limit: Some("256".into()),
    }));
    assert_eq!(r.step(), Step::Done, "no echo, no counters");
    let rep = r.report(meta());
    assert_eq!(ids(&rep), ["server_refused"]);
    assert!(rep.findings[0]
        .summary
        .contains("too many sessions (limit 256)"));
    assert!(rep.udp.echo.is_none() && rep.server_version.is_none());
}

#[test]
fn a_failed_quic_channel_falls_back_to_tcp() {
    let mut r = Run::new(plan());
    r.on_reach(both_ok());
    r.on_quic(QuicOutcome::Failed);
    assert_eq!(r.step(), Step::OpenTls);
    r.on_tls(QuicOutcome::Up { pin_seen: None });
    assert_eq!(r.step(), Step::Hello(Channel::Tcp));
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(false))));
    assert!(
        matches!(r.step(), Step::UdpEcho(_)),
        "UDP works even though QUIC did not"
    );
    r.on_udp_echo(Some(echo_ok(1)));
    assert_eq!(tcp_and_ice(&r), (Some(TcpEchoLink::Fresh), false));
}

#[test]
fn no_control_channel_at_all_is_a_finding() {
    let mut r = Run::new(plan());
    r.on_reach(udp_ok());
    r.on_quic(QuicOutcome::Failed);
    assert_eq!(r.step(), Step::Done);
    assert_eq!(ids(&r.report(meta())), ["tcp_blocked", "control_failed"]);

    let mut r = Run::new(plan());
    r.on_reach(both_ok());
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Failed);
    assert_eq!(r.step(), Step::Done);
    assert_eq!(ids(&r.report(meta())), ["control_failed"]);
}

/// Only STUN was tested: an error (as the catalog says), so the run neither passes nor exits 0,
/// and the advice follows from why: the path, or the token.
#[test]
fn no_session_is_an_error_whose_advice_follows_the_cause() {
    use crate::catalog::FindingId;
    use crate::report::Severity;
    // (how the hello ended, words the fix must have, words it must not)
    let table = [
        (HelloOutcome::Failed, "inspects and drops QUIC", "--token"),
        (
            HelloOutcome::BadTokenMac,
            "runs without --token or with another token: run without --token, or ask the admin for the current one",
            "QUIC",
        ),
    ];
    for (hello, has, lacks) in table {
        let mut r = Run::new(Plan {
            token: true,
            ..plan()
        });
        r.on_reach(both_ok());
        r.on_quic(QuicOutcome::Up { pin_seen: None });
        r.on_hello(hello.clone());
        assert_eq!(r.step(), Step::Done, "{hello:?}");
        let rep = r.report(meta());
        assert_eq!(ids(&rep), ["control_failed"], "{hello:?}");
        let f = &rep.findings[0];
        assert!(f.is(FindingId::ControlFailed) && f.severity == Severity::Error);
        assert!(!rep.ok && rep.exit_code() == 1, "{hello:?}");
        assert!(
            f.fix.contains(has) && !f.fix.contains(lacks),
            "{hello:?}: {}",
            f.fix
        );
        assert!(rep.udp.echo.is_none() && rep.ice.is_none());
    }
}

/// A port that connects but stays silent to a signed probe: the token, not the firewall.
#[test]
fn a_silent_port_with_a_token_given_blames_the_token() {
    for token in [true, false] {
        let mut r = Run::new(Plan { token, ..plan() });
        r.on_reach(Reach {
            tcp_connect_ms: Some(0.5),
            ..Reach::default()
        });
        // TLS asks who is there; not a probe-server (or none answering TLS): as before.
        assert_eq!(r.step(), Step::OpenTls);
        r.on_tls(QuicOutcome::Failed);
        assert_eq!(r.step(), Step::Done);
        let rep = r.report(meta());
        assert_eq!(ids(&rep), ["server_unreachable"]);
        let fix = &rep.findings[0].fix;
        assert_eq!(fix.contains("the token is wrong"), token, "{fix}");
        // TCP connected: not a firewall; RTCD itself may hold the port.
        assert!(
            !fix.contains("firewall") && fix.contains("probe-server live"),
            "{fix}"
        );
        assert!(
            rep.findings[0]
                .summary
                .contains("the path itself was not judged"),
            "{}",
            rep.findings[0].summary
        );
    }
}

/// The silent port is a probe-server (it agreed on the probe's TLS protocol) that refuses the
/// hello: the token given is wrong, or one is needed. Not "nothing answered": exit 2, as for a
/// wrong pin, so a stale token in a schedule is not taken for an outage.
#[test]
fn a_probe_server_that_ignores_our_token_is_told_apart_from_silence() {
    for (token, pin, want) in [
        (true, None, "ignores probes signed with the token given"),
        (
            false,
            None,
            "requires an access token: run again with --token",
        ),
        (
            true,
            Some("sha256:aa"),
            "probe-server (its certificate matches the pin)",
        ),
    ] {
        let mut r = Run::new(Plan {
            token,
            pin: pin.map(String::from),
            ..plan()
        });
        r.on_reach(Reach {
            tcp_connect_ms: Some(0.5),
            ..Reach::default()
        });
        r.on_tls(QuicOutcome::Up {
            pin_seen: pin.map(String::from),
        });
        assert_eq!(r.step(), Step::Hello(Channel::Tcp));
        r.on_hello(HelloOutcome::Failed);
        let Step::Abort(why) = r.step() else {
            panic!("{:?}", r.step())
        };
        assert!(
            why.starts_with("the server at 192.0.2.10:8443 is a probe-server")
                && why.contains(want),
            "{why}"
        );
    }
    // No TCP to ask, a token given: QUIC asks instead (it needs no token either).
    let mut r = Run::new(Plan {
        token: true,
        tcp: false,
        ..plan()
    });
    r.on_reach(Reach::default());
    assert_eq!(r.step(), Step::OpenQuic);
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    assert_eq!(r.step(), Step::Hello(Channel::Quic));
    r.on_hello(HelloOutcome::Failed);
    let Step::Abort(why) = r.step() else {
        panic!("{:?}", r.step())
    };
    assert!(
        why.contains("ignores probes signed with the token given"),
        "{why}"
    );
    // Nothing answers QUIC either: silence, as before, with no second try.
    let mut r = Run::new(Plan {
        token: true,
        ..plan()
    });
    r.on_reach(Reach::default());
    assert_eq!(r.step(), Step::OpenQuic);
    r.on_quic(QuicOutcome::Failed);
    assert_eq!(r.step(), Step::Done);
    assert_eq!(ids(&r.report(meta())), ["server_unreachable"]);
    // Without a token, a silent path costs no QUIC attempt; a refused UDP port neither.
    let mut r = Run::new(plan());
    r.on_reach(Reach::default());
    assert_eq!(r.step(), Step::Done);
    let mut r = Run::new(Plan {
        token: true,
        ..plan()
    });
    r.on_reach(Reach {
        udp_refused: true,
        ..Reach::default()
    });
    assert_eq!(r.step(), Step::Done);
}

#[test]
fn a_pin_mismatch_aborts() {
    let mut r = Run::new(Plan {
        pin: Some("sha256:aa".into()),
        ..plan()
    });
    r.on_reach(both_ok());
    r.on_quic(QuicOutcome::PinMismatch {
        seen: "sha256:bb".into(),
    });
    let Step::Abort(why) = r.step() else {
        panic!("{:?}", r.step())
    };
    let why = why.to_string();
    assert!(
        why.starts_with("the server at 192.0.2.10:8443 presents certificate sha256:bb, not the pinned sha256:aa"),
        "{why}"
    );
}

#[test]
fn missing_counters_name_the_phase_where_the_server_went_away() {
    let lost = |udp: EchoOutcome, tcp: Option<EchoOutcome>| {
        let mut r = Run::new(plan());
        r.on_reach(both_ok());
        r.on_quic(QuicOutcome::Up { pin_seen: None });
        r.on_hello(HelloOutcome::Welcome(Box::new(welcome(false))));
        r.on_udp_echo(Some(udp));
        r.on_tcp_echo_and_ice(tcp, None);
        r.on_counters(None);
        let rep = r.report(meta());
        assert!(ids(&rep).contains(&"server_lost"), "{:?}", ids(&rep));
        let f = rep.findings.iter().find(|f| f.id == "server_lost").cloned();
        f.expect("server_lost").summary
    };
    let broken = EchoOutcome::failed("connection reset".into());
    assert!(lost(broken.clone(), None).contains("during the UDP echo phase"));
    assert!(lost(echo_ok(3), Some(broken)).contains("during the TCP echo phase"));
    assert!(lost(echo_ok(3), Some(echo_ok(3))).contains("during the final exchange of counters"));
}

#[test]
fn a_tcp_echo_that_sent_nothing_is_not_reported() {
    let mut r = Run::new(plan());
    r.on_reach(both_ok());
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(false))));
    r.on_udp_echo(Some(echo_ok(2)));
    r.on_tcp_echo_and_ice(Some(EchoOutcome::failed("refused".into())), None);
    r.on_counters(Some(counters(2, 0)));
    let rep = r.report(meta());
    assert!(rep.tcp.echo.is_none() && rep.udp.echo.is_some());
}

#[test]
fn server_rate_limits_and_ice_reports_join_the_findings() {
    let mut r = Run::new(plan());
    r.on_reach(both_ok());
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(true))));
    r.on_udp_echo(Some(echo_ok(2)));
    assert_eq!(tcp_and_ice(&r), (Some(TcpEchoLink::Fresh), true));
    r.on_tcp_echo_and_ice(Some(echo_ok(2)), Some(IceReport::default()));
    r.on_counters(Some(Counters {
        rate_limited: 7,
        ..counters(2, 2)
    }));
    let rep = r.report(meta());
    let f = &rep.findings;
    let at = f
        .iter()
        .position(|f| f.id == "server_rate_limited")
        .expect("rate limit finding");
    assert!(f[at].summary.contains("left 7 echo packet(s)"));
    assert!(rep.ice.is_some());
    // The ICE verdict's findings follow the run's own.
    assert!(f[at + 1..].iter().all(|f| f.id != "server_rate_limited"));
}

#[test]
fn load_mode_skips_ice_even_when_offered() {
    let mut r = Run::new(Plan {
        ice: false,
        tcp: false,
        ..plan()
    });
    r.on_reach(udp_ok());
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(true))));
    r.on_udp_echo(Some(echo_ok(1)));
    assert_eq!(r.step(), Step::Counters { session_id: 42 });
}

#[test]
fn control_messages_are_padded() {
    let s = Schedule::new(Profile::Video, None, None, 5.0);
    let h = run::hello("0.1.0", "site", &s, 1_700_000_000_000, [9; 16]);
    let Control::Hello(hello) = &h else {
        panic!("{h:?}")
    };
    assert_eq!(
        (hello.interval_us, hello.size, hello.duration_ms),
        (5_555, 1200, 5_000)
    );
    for m in [h.clone(), run::finish(42)] {
        let n = m.to_payload(None).len();
        assert!((CONTROL_PAD_TO - 2..=CONTROL_PAD_TO).contains(&n), "{n}");
    }
}

#[test]
fn argument_checks_without_io() {
    assert!(check_transports_and_token(true, true, None)
        .unwrap_err()
        .contains("leave nothing to test"));
    assert!(check_transports_and_token(false, false, Some("  "))
        .unwrap_err()
        .contains("token is empty"));
    assert_eq!(check_transports_and_token(true, false, None), Ok(None));
    assert_eq!(
        check_transports_and_token(false, false, Some(" t ")),
        Ok(Some(crate::auth::token_key("t")))
    );
}

/// A 30-s audio echo driven through the real core whose replies stop for good at `cut_us`
/// (`None`: never).
fn echo_30s(cut_us: Option<u64>) -> EchoOutcome {
    let key = SessionKey::new(&[1; 32]);
    let mut core = EchoCore::new(
        42,
        key.clone(),
        Schedule::new(Profile::Audio, None, None, 30.0),
        0,
    );
    let mut reply = vec![0u8; 200];
    let mut now = 0;
    while let Some(at) = core.poll_timeout() {
        now = now.max(at);
        core.handle_timeout(now);
        while let Some(t) = core.poll_transmit(now) {
            let req = t.bytes.to_vec();
            if cut_us.is_none_or(|c| now < c) {
                let n = crate::echo::encode_reply(&key, &req, now, now, &mut reply);
                core.on_reply(now + 5_000, &reply[..n]);
            }
        }
    }
    core.finish()
}

fn udp_run(o: EchoOutcome, server_rx: u64) -> Report {
    let mut r = Run::new(Plan {
        tcp: false,
        ..plan()
    });
    r.on_reach(udp_ok());
    r.on_quic(QuicOutcome::Up { pin_seen: None });
    r.on_hello(HelloOutcome::Welcome(Box::new(welcome(false))));
    r.on_udp_echo(Some(o));
    r.on_counters(Some(counters(server_rx, 0)));
    r.report(meta())
}

#[test]
fn a_long_run_cut_midway_is_path_cut_after_not_packet_loss() {
    let o = echo_30s(Some(12_000_000));
    let answered = o.stats.received();
    // The server received only what was answered: the way up is cut.
    let rep = udp_run(o, answered);
    assert_eq!(ids(&rep), ["path_cut_after"], "{:#?}", rep.findings);
    assert!(!rep.ok);
    let f = &rep.findings[0];
    let p = f.path.as_deref().expect("measurements attached");
    assert_eq!(p.cut_after_s, Some(12.0));
    assert_eq!(p.cut_direction, Some(crate::path::Direction::Upstream));
    assert!(
        f.summary
            .starts_with("After 12.0 s the network stopped passing UDP 8443 upstream"),
        "{}",
        f.summary
    );
    let json = serde_json::to_value(&rep).unwrap();
    assert_eq!(json["findings"][0]["path"]["cut_direction"], "upstream");
}

#[test]
fn a_long_clean_run_says_the_path_held_and_short_runs_say_nothing_new() {
    let o = echo_30s(None);
    let sent = o.stats.sent();
    let rep = udp_run(o, sent);
    assert_eq!(ids(&rep), ["path_held"], "{:#?}", rep.findings);
    assert!(rep.ok);
    // A 5-s run: no path check, and the JSON has no `path` anywhere.
    let rep = udp_run(echo_ok(5), 5);
    assert_eq!(ids(&rep), Vec::<&str>::new());
    assert!(!serde_json::to_string(&rep).unwrap().contains("\"path\""));
}

#[test]
fn the_quiet_test_compares_the_public_address_before_and_after() {
    let quiet_echo = |after: &str| {
        let key = SessionKey::new(&[1; 32]);
        let schedule = Schedule::new(Profile::Audio, None, None, 2.0);
        let mut core =
            EchoCore::new(42, key.clone(), schedule, 0).with_quiet(1_000_000, 20_000_000);
        let mut reply = vec![0u8; 200];
        let mut now = 0;
        while let Some(at) = core.poll_timeout() {
            now = now.max(at);
            core.handle_timeout(now);
            while let Some(t) = core.poll_transmit(now) {
                let req = t.bytes.to_vec();
                let n = crate::echo::encode_reply(&key, &req, now, now, &mut reply);
                core.on_reply(now + 5_000, &reply[..n]);
            }
        }
        let mut o = core.finish();
        o.mapped_after = after.parse().ok();
        o
    };
    // udp_ok()'s STUN answer: 198.51.100.7:40000.
    let moved = udp_run(quiet_echo("198.51.100.7:50000"), 100);
    assert_eq!(ids(&moved), ["udp_mapping_short"], "{:#?}", moved.findings);
    let held = udp_run(quiet_echo("198.51.100.7:40000"), 100);
    assert_eq!(ids(&held), ["path_held"], "{:#?}", held.findings);
    let p = held.findings[0].path.as_deref().expect("facts");
    assert_eq!(
        p.quiet_outcome,
        Some(crate::path::quiet::QuietOutcome::Held)
    );
    assert_eq!(p.mapped_after.as_deref(), Some("198.51.100.7:40000"));
}
