use super::bpf::{self, Proto};
use super::hello::{hello_reply, parse_hello_reply};
use super::ip;
use super::packet::{self, Echo, Kind};
use super::*;
use crate::msg::{CandidateSource, Transport, WireCandidate};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn live_packets_are_in_the_echo_range_and_never_stun() {
    let key = crate::auth::token_key("t");
    for k in [None, Some(&key)] {
        let pkts = [
            packet::echo_request(&Echo::default(), 0, k),
            packet::hello_request(7, k),
            packet::tcp_query(7, k),
            packet::tcp_probe_frame(7, k)[2..].to_vec(),
        ];
        for p in pkts {
            assert_eq!(crate::demux::classify(&p), crate::demux::Kind::Echo);
            assert_ne!(p[0], 0x80, "distinct from normal echo");
            assert_ne!(p[4..8], STUN_COOKIE);
            assert!(packet::check(&p, k).is_ok());
        }
    }
}

#[test]
fn echo_reply_has_the_request_length_and_counts() {
    let mut r = Responder::new(None, Limits::default(), HelloInfo::default(), 0);
    let (from, to) = (sa("198.51.100.7:40000"), sa("203.0.113.1:8443"));
    for seq in 0..3u32 {
        let req = packet::echo_request(
            &Echo {
                nonce: 9,
                seq,
                client_tx_us: 5,
                ..Default::default()
            },
            200,
            None,
        );
        let rep = r.on_udp(from, to, &req, 1000 + u64::from(seq)).unwrap();
        assert_eq!(rep.len(), req.len());
        assert_eq!(packet::check(&rep, None).unwrap().0, Kind::EchoReply);
        let e = packet::parse_echo(&rep).unwrap();
        assert_eq!(
            (e.seq, e.server_rx_count, e.server_tx_count),
            (seq, seq + 1, seq + 1)
        );
        assert_eq!(e.arrived_at, Some(to.ip()));
        assert_eq!(e.client_tx_us, 5);
    }
    // A counters query reads the counts without moving them.
    let q = packet::echo_request(
        &Echo {
            nonce: 9,
            query: true,
            ..Default::default()
        },
        0,
        None,
    );
    for _ in 0..2 {
        let e = packet::parse_echo(&r.on_udp(from, to, &q, 9000).unwrap()).unwrap();
        assert!(e.query);
        assert_eq!((e.server_rx_count, e.server_tx_count), (3, 3));
    }
    // A query for an unknown nonce creates nothing and is not answered.
    let unknown = packet::echo_request(
        &Echo {
            nonce: 10,
            query: true,
            ..Default::default()
        },
        0,
        None,
    );
    assert!(r.on_udp(from, to, &unknown, 9000).is_none());
    assert_eq!(r.nonces(), 1);
}

#[test]
fn token_gates_every_kind() {
    let key = crate::auth::token_key("secret");
    let mut r = Responder::new(Some(key), Limits::default(), HelloInfo::default(), 0);
    let (from, to) = (sa("198.51.100.7:40000"), sa("203.0.113.1:8443"));
    assert!(r
        .on_udp(from, to, &packet::hello_request(1, None), 0)
        .is_none());
    let wrong = crate::auth::token_key("other");
    assert!(r
        .on_udp(from, to, &packet::hello_request(1, Some(&wrong)), 0)
        .is_none());
    assert_eq!(r.drops.bad_mac, 2);
    let rep = r
        .on_udp(from, to, &packet::hello_request(1, Some(&key)), 0)
        .unwrap();
    assert!(packet::check(&rep, Some(&key)).is_ok());
}

#[test]
fn hello_reply_never_outgrows_the_request() {
    let cand = |i: u8| WireCandidate {
        address: IpAddr::V6(format!("2001:db8::{i}").parse().unwrap()),
        port: 8443,
        protocol: Transport::Udp,
        source: CandidateSource::Local,
    };
    let info = HelloInfo {
        rtcd_port_udp: 8443,
        rtcd_port_tcp: 8443,
        override_value: "x".repeat(5000),
        candidates: (0..200).map(cand).collect(),
        ..Default::default()
    };
    let rep = hello_reply(3, &info, None);
    assert!(rep.len() <= packet::HELLO_LEN);
    let back = parse_hello_reply(&rep).unwrap();
    assert!(back.truncated > 0);
    assert_eq!(back.candidates.len() + usize::from(back.truncated), 200);
    assert!(back.override_value.len() <= 200);
}

#[test]
fn hello_returns_what_rtcd_advertises_and_where_it_arrived() {
    let info = HelloInfo {
        rtcd_port_udp: 8443,
        override_value: "203.0.113.9".into(),
        override_form: "ip".into(),
        candidates: vec![WireCandidate {
            address: "203.0.113.9".parse().unwrap(),
            port: 8443,
            protocol: Transport::Udp,
            source: CandidateSource::Override,
        }],
        ..Default::default()
    };
    let mut r = Responder::new(None, Limits::default(), info.clone(), 0);
    let rep = r
        .on_udp(
            sa("198.51.100.7:1"),
            sa("10.0.0.2:8443"),
            &packet::hello_request(1, None),
            0,
        )
        .unwrap();
    let got = parse_hello_reply(&rep).unwrap();
    assert_eq!(got.candidates, info.candidates);
    assert_eq!(got.arrived_at, Some("10.0.0.2".parse().unwrap()));
    assert_eq!(got.seen_from, Some("198.51.100.7".parse().unwrap()));
}

#[test]
fn nothing_is_answered_while_rtcd_does_not_hold_its_port() {
    let mut r = Responder::new(None, Limits::default(), HelloInfo::default(), 0);
    let hello = packet::hello_request(1, None);
    let (from, to) = (sa("198.51.100.7:1"), sa("10.0.0.2:8443"));
    r.set_held(false);
    assert_eq!(r.on_udp(from, to, &hello, 0), None);
    assert_eq!(r.drops.not_running, 1);
    // RTCD back: answered again, and a new hello gets a new nonce.
    r.set_held(true);
    assert!(r
        .on_udp(from, to, &packet::hello_request(2, None), 1)
        .is_some());
    assert_eq!(r.drops.not_running, 1);
}

#[test]
fn nonce_table_is_bounded_per_source_and_in_total() {
    let limits = Limits {
        nonces_per_source: 2,
        max_nonces: 3,
        ..Limits::default()
    };
    let mut r = Responder::new(None, limits, HelloInfo::default(), 0);
    let to = sa("203.0.113.1:8443");
    let echo = |n| {
        packet::echo_request(
            &Echo {
                nonce: n,
                ..Default::default()
            },
            0,
            None,
        )
    };
    let a = sa("198.51.100.1:1");
    assert!(r.on_udp(a, to, &echo(1), 0).is_some());
    assert!(r.on_udp(a, to, &echo(2), 0).is_some());
    assert!(
        r.on_udp(a, to, &echo(3), 0).is_none(),
        "per-source nonce limit"
    );
    assert!(r.on_udp(sa("198.51.100.2:1"), to, &echo(4), 0).is_some());
    assert!(
        r.on_udp(sa("198.51.100.3:1"), to, &echo(5), 0).is_none(),
        "table full"
    );
    assert_eq!(r.drops.table_full, 2);
    // Idle nonces are reported and freed.
    r.poll(limits.idle_us);
    let done = r
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::EchoDone(_)))
        .count();
    assert_eq!(done, 3);
    assert_eq!(r.nonces(), 0);
    assert!(r.on_udp(a, to, &echo(3), limits.idle_us).is_some());
}

#[test]
fn total_rate_cap_holds() {
    let limits = Limits {
        total_pps: 2000,
        per_source_pps: 1_000_000,
        ..Limits::default()
    };
    let mut r = Responder::new(None, limits, HelloInfo::default(), 0);
    let to = sa("203.0.113.1:8443");
    let mut answered = 0;
    // 10,000 requests over one second from 10 sources: at most rate + burst answered.
    for i in 0..10_000u64 {
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 10) as u8)), 1);
        let req = packet::echo_request(
            &Echo {
                nonce: i % 10,
                ..Default::default()
            },
            0,
            None,
        );
        if r.on_udp(from, to, &req, i * 100).is_some() {
            answered += 1;
        }
    }
    assert!((2000..=2000 + 201).contains(&answered), "{answered}");
    assert!(r.drops.rate_limited > 0);
}

#[test]
fn tcp_probe_is_recorded_and_answered_by_query() {
    let mut r = Responder::new(None, Limits::default(), HelloInfo::default(), 0);
    let frame = packet::tcp_probe_frame(42, None);
    r.on_tcp(sa("192.0.2.1:5555"), sa("203.0.113.1:8443"), &frame, 1_000);
    r.on_tcp(sa("192.0.2.1:5555"), sa("203.0.113.1:8443"), &frame, 2_000);
    assert_eq!(
        r.take_events().len(),
        1,
        "a retransmission is not a new probe"
    );
    let ans = r
        .on_udp(
            sa("198.51.100.7:1"),
            sa("203.0.113.1:8443"),
            &packet::tcp_query(42, None),
            11_000,
        )
        .unwrap();
    let seen = packet::parse_tcp_answer(&ans).unwrap().unwrap();
    assert_eq!(seen.from, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(seen.age_ms, 10);
    let none = r
        .on_udp(
            sa("198.51.100.7:1"),
            sa("203.0.113.1:8443"),
            &packet::tcp_query(43, None),
            0,
        )
        .unwrap();
    assert_eq!(packet::parse_tcp_answer(&none).unwrap(), None);
}

#[test]
fn ipv4_udp_round_trip_and_checksums() {
    let p = ip::build_ipv4_udp(
        (Ipv4Addr::new(203, 0, 113, 1), 8443),
        (Ipv4Addr::new(198, 51, 100, 7), 40000),
        b"hello",
        1,
    );
    assert_eq!(ip::checksum(&p[..20]), 0, "IPv4 header checksum verifies");
    let v = ip::parse_ipv4(&p).unwrap();
    assert_eq!(v.protocol, ip::PROTO_UDP);
    assert_eq!(
        ip::udp_checksum(v.src.into(), v.dst.into(), v.transport),
        0xffff,
        "verifies (sum folds to 0)"
    );
    let (sp, dp, payload) = ip::parse_udp(v.transport).unwrap();
    assert_eq!((sp, dp, payload), (8443, 40000, &b"hello"[..]));
}

#[test]
fn udp_checksum_matches_a_known_value() {
    // RFC 1071 example data summed as a UDP pseudo-header packet computed independently
    // (python: sum of 16-bit words, folded, inverted) for 10.0.0.1:1 -> 10.0.0.2:2, "ab".
    let u = ip::build_udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"), b"ab");
    // pseudo: 0a00+0001+0a00+0002+0011+000a ; udp: 0001+0002+000a+0000+6162
    let sum: u32 =
        0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 0x0011 + 0x000a + 0x0001 + 0x0002 + 0x000a + 0x6162;
    let folded = !(((sum & 0xffff) + (sum >> 16)) as u16);
    assert_eq!(u16::from_be_bytes([u[6], u[7]]), folded);
    let v6 = ip::build_udp(sa("[2001:db8::1]:8443"), sa("[2001:db8::2]:9"), b"x");
    assert_eq!(
        ip::udp_checksum(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            &v6
        ),
        0xffff
    );
}

fn tcp_segment(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[2..4].copy_from_slice(&dst_port.to_be_bytes());
    t[12] = 5 << 4;
    t.extend_from_slice(payload);
    t
}

fn ipv4(proto: u8, transport: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 198, 51, 100, 7, 203, 0, 113, 1,
    ];
    let total = (20 + transport.len()) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(transport);
    p
}

/// The test page's filter: STUN (with the cookie) and DTLS to the port reach user space;
/// RTCD's SRTP, the live magic, STUN-looking bytes without the cookie and other ports do not.
#[test]
fn bpf_page_filter_passes_stun_and_dtls_only() {
    let udp = |port: u16, pl: &[u8]| {
        ip::build_udp(
            sa("198.51.100.7:1"),
            SocketAddr::new("203.0.113.1".parse().unwrap(), port),
            pl,
        )
    };
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    let mut no_cookie = stun.clone();
    no_cookie[4] = 0;
    let dtls = |first: u8| {
        let mut d = vec![first, 0xfe, 0xfd];
        d.extend_from_slice(&[0; 30]);
        d
    };
    let prog4 = bpf::page_program(&[8443], false);
    let prog6 = bpf::page_program(&[8443], true);
    for (prog, v4) in [(&prog4, true), (&prog6, false)] {
        let pass = |pl: &[u8], port: u16| {
            let u = udp(port, pl);
            bpf::run(prog, &if v4 { ipv4(17, &u) } else { u }) > 0
        };
        assert!(pass(&stun, 8443), "STUN");
        for first in [20u8, 22, 23, 63] {
            assert!(pass(&dtls(first), 8443), "DTLS {first}");
        }
        assert!(!pass(&stun, 8444), "another port");
        assert!(!pass(&no_cookie, 8443), "no cookie");
        for first in [4u8, 19, 64, 128, 0xB7, 191, 255] {
            assert!(!pass(&dtls(first), 8443), "first byte {first}");
        }
        assert!(!pass(&packet::hello_request(1, None), 8443), "live magic");
        assert!(!pass(&[0x00, 0x01], 8443), "short");
    }
    let mut frag = ipv4(17, &udp(8443, &stun));
    frag[6..8].copy_from_slice(&[0x00, 0x10]);
    assert_eq!(bpf::run(&prog4, &frag), 0, "non-first fragment");
}

#[test]
fn bpf_passes_live_packets_to_the_port_only() {
    let live = packet::hello_request(1, None);
    let media = [0x80u8; 100];
    let udp = |port: u16, pl: &[u8]| {
        ip::build_udp(
            sa("198.51.100.7:1"),
            SocketAddr::new("203.0.113.1".parse().unwrap(), port),
            pl,
        )
    };
    let prog4 = bpf::program(Proto::Udp, &[8443, 8444], false);
    let prog6 = bpf::program(Proto::Udp, &[8443], true);
    assert!(bpf::run(&prog4, &ipv4(17, &udp(8443, &live))) > 0);
    assert!(bpf::run(&prog4, &ipv4(17, &udp(8444, &live))) > 0);
    assert_eq!(bpf::run(&prog4, &ipv4(17, &udp(8445, &live))), 0);
    assert_eq!(bpf::run(&prog4, &ipv4(17, &udp(8443, &media))), 0);
    assert!(bpf::run(&prog6, &udp(8443, &live)) > 0);
    assert_eq!(bpf::run(&prog6, &udp(8443, &media)), 0);
    let mut frag = ipv4(17, &udp(8443, &live));
    frag[6..8].copy_from_slice(&[0x00, 0x10]);
    assert_eq!(bpf::run(&prog4, &frag), 0, "non-first fragment");
    let tprog = bpf::program(Proto::Tcp, &[8443], false);
    let frame = packet::tcp_probe_frame(5, None);
    assert!(bpf::run(&tprog, &ipv4(6, &tcp_segment(8443, &frame))) > 0);
    assert_eq!(
        bpf::run(&tprog, &ipv4(6, &tcp_segment(8443, &[0, 20, 0, 1]))),
        0
    );
    assert_eq!(bpf::run(&tprog, &ipv4(6, &tcp_segment(80, &frame))), 0);
    let mut opts = vec![0u8; 32];
    opts[2..4].copy_from_slice(&8443u16.to_be_bytes());
    opts[12] = 8 << 4; // 12 bytes of TCP options
    opts.extend_from_slice(&frame);
    assert!(
        bpf::run(&tprog, &ipv4(6, &opts)) > 0,
        "TCP options are skipped"
    );
    let t6 = bpf::program(Proto::Tcp, &[8443], true);
    assert!(bpf::run(&t6, &tcp_segment(8443, &frame)) > 0);
}

proptest! {
    #[test]
    fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500), magic in any::<bool>()) {
        let mut b = bytes;
        if magic && b.len() >= 5 {
            b[..4].copy_from_slice(&packet::MAGIC);
            b[4] %= 8;
        }
        let key = crate::auth::token_key("k");
        let _ = packet::check(&b, None);
        let _ = packet::check(&b, Some(&key));
        let _ = packet::parse_echo(&b);
        let _ = packet::parse_tcp_answer(&b);
        let _ = parse_hello_reply(&b);
        if let Some(v) = ip::parse_ipv4(&b) {
            let _ = ip::parse_udp(v.transport);
            let _ = ip::parse_tcp(v.transport);
        }
        let _ = ip::parse_udp(&b);
        let _ = ip::parse_tcp(&b);
        for prog in [bpf::program(Proto::Udp, &[8443], false), bpf::program(Proto::Tcp, &[8443], true)] {
            let _ = bpf::run(&prog, &b);
        }
        let mut r = Responder::new(None, Limits::default(), HelloInfo::default(), 0);
        if let Some(rep) = r.on_udp(sa("198.51.100.7:1"), sa("203.0.113.1:8443"), &b, 0) {
            prop_assert!(rep.len() <= b.len());
        }
        r.on_tcp(sa("198.51.100.7:1"), sa("203.0.113.1:8443"), &b, 0);
    }
}

mod judging {
    use super::super::judge::{self, Outcome, TcpProbe};
    use super::super::packet::TcpSeen;
    use super::super::HelloInfo;
    use crate::catalog::FindingId;
    use std::net::IpAddr;

    fn outcome(connected: bool, answer: Option<Option<&str>>) -> Outcome {
        let seen = |ip: &str| TcpSeen {
            from: ip.parse().unwrap(),
            from_port: 1,
            arrived_at: "203.0.113.2".parse().unwrap(),
            age_ms: 0,
        };
        Outcome {
            server: "203.0.113.2".into(),
            dialed: "203.0.113.2:8443".parse().unwrap(),
            hello: HelloInfo {
                rtcd_port_udp: 8443,
                rtcd_port_tcp: 8443,
                seen_from: Some("198.51.100.2".parse::<IpAddr>().unwrap()),
                ..HelloInfo::default()
            },
            targets: Vec::new(),
            tcp: TcpProbe {
                nonce: 1,
                connected,
                connect_ms: connected.then_some(1.0),
                answer: answer.map(|a| a.map(seen)),
            },
            udp_tested: true,
            tcp_tested: true,
        }
    }

    #[test]
    fn tcp_intercepted_when_unseen_or_seen_from_elsewhere() {
        let hit = |o: &Outcome| {
            judge::tcp_intercepted(o).is_some_and(|f| f.is(FindingId::TcpIntercepted))
        };
        assert!(hit(&outcome(true, Some(None))), "connected, never seen");
        let sev = |o: &Outcome| judge::tcp_intercepted(o).map(|f| f.severity);
        assert_eq!(
            sev(&outcome(true, Some(None))),
            Some(crate::report::Severity::Error)
        );
        assert_eq!(
            sev(&outcome(true, Some(Some("203.0.113.1")))),
            Some(crate::report::Severity::Warning)
        );
        assert!(
            hit(&outcome(true, Some(Some("203.0.113.1")))),
            "seen from the proxy"
        );
        assert!(
            !hit(&outcome(true, Some(Some("198.51.100.2")))),
            "seen from the client"
        );
        assert!(
            !hit(&outcome(false, Some(None))),
            "not connected: tcp_blocked's business"
        );
        assert!(
            !hit(&outcome(true, None)),
            "no answer (UDP blocked): unknown, not judged"
        );
    }

    #[test]
    fn not_dialled_follows_the_normal_ice_rule() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            judge::not_dialled(ip("127.0.0.1"), ip("203.0.113.2")),
            Some("loopback address")
        );
        assert_eq!(judge::not_dialled(ip("127.0.0.1"), ip("127.0.0.1")), None);
        assert_eq!(
            judge::not_dialled(ip("169.254.1.1"), ip("203.0.113.2")),
            Some("link-local address")
        );
        assert_eq!(
            judge::not_dialled(ip("172.31.1.2"), ip("203.0.113.2")),
            None
        );
    }
}

#[test]
fn tcp_probe_says_whether_the_clients_udp_arrived() {
    let mut r = Responder::new(None, Limits::default(), HelloInfo::default(), 0);
    let to = sa("203.0.113.1:8443");
    let udp_seen = |r: &mut Responder| {
        r.take_events().into_iter().find_map(|e| match e {
            Event::TcpProbe { udp_seen, .. } => Some(udp_seen),
            _ => None,
        })
    };
    // No UDP from this client before its TCP probe: UDP is blocked on the way.
    let tcp = packet::tcp_probe_frame(1, None);
    r.on_tcp(sa("198.51.100.7:40001"), to, &tcp, 1_000);
    assert_eq!(udp_seen(&mut r), Some(Some(false)));
    // Its hello arrived first (another port of the same address): seen.
    let from = sa("198.51.100.8:40000");
    assert!(r
        .on_udp(from, to, &packet::hello_request(2, None), 2_000)
        .is_some());
    r.on_tcp(
        sa("198.51.100.8:40002"),
        to,
        &packet::tcp_probe_frame(3, None),
        3_000,
    );
    assert_eq!(udp_seen(&mut r), Some(Some(true)));
    // Long after the hello, the memory has lapsed: not seen.
    r.poll(2_000 + responder::UDP_MEMORY_US);
    r.take_events();
    r.on_tcp(
        sa("198.51.100.8:40003"),
        to,
        &packet::tcp_probe_frame(4, None),
        3_000 + responder::UDP_MEMORY_US,
    );
    assert_eq!(udp_seen(&mut r), Some(Some(false)));
}
