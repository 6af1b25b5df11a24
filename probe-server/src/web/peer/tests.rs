//! The whole peer in process: a second str0m `Rtc` plays the browser (full ICE, controlling,
//! DTLS client) over real loopback sockets, through the same `wants_*`/`*_in` calls the
//! socket loops make.

use super::*;
use probe_proto::demux::classify;
use probe_proto::web::{STREAM_AUDIO, STREAM_BURST};
use std::net::UdpSocket as StdUdp;
use str0m::change::SdpAnswer;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

struct StdOut(StdUdp);

impl UdpOut for StdOut {
    fn send(&self, to: SocketAddr, _from: Option<IpAddr>, bytes: &[u8]) {
        let _ = self.0.send_to(bytes, to);
    }
}

fn limits() -> PeerLimits {
    PeerLimits {
        max_sessions: 4,
        max_sessions_per_ip: 2,
        session_lifetime: Duration::from_secs(30),
    }
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The peer on a loopback UDP socket, with a loop doing what udp.rs does.
async fn udp_peer() -> (Peer, SocketAddr) {
    udp_peer_with(limits()).await
}

async fn udp_peer_with(limits: PeerLimits) -> (Peer, SocketAddr) {
    udp_peer_full(limits, CONNECT_WITHIN).await
}

async fn udp_peer_full(limits: PeerLimits, connect_within: Duration) -> (Peer, SocketAddr) {
    let sock = StdUdp::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    let out = StdOut(sock.try_clone().expect("clone"));
    let peer = Peer::start_inner(Arc::new(out), limits, connect_within).expect("start");
    sock.set_nonblocking(true).expect("nonblocking");
    let rx = UdpSocket::from_std(sock).expect("tokio");
    let p = peer.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, src)) = rx.recv_from(&mut buf).await {
            let pkt = &buf[..n];
            if p.wants_udp(classify(pkt), src, pkt) {
                assert!(p.udp_in(src, Some(LOCAL), pkt));
            }
        }
    });
    (peer, addr)
}

/// The browser's side: an offer with the page's channel, then the answer.
async fn browser(
    peer: &Peer,
    leg: Leg,
    cands: &[(SocketAddr, Transport)],
) -> (Rtc, Opened, ChannelId) {
    let provider = Arc::new(str0m::crypto::from_feature_flags());
    let mut rtc = RtcConfig::new()
        .set_crypto_provider(provider)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    let cid = api.add_channel_with_config(ChannelConfig {
        label: "probe".into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..ChannelConfig::default()
    });
    let (offer, pending) = api.apply().expect("an offer");
    let opened = peer
        .open(LOCAL, leg, &offer.to_sdp_string(), cands)
        .await
        .expect("opened");
    assert!(
        opened.answer_sdp.contains("a=ice-lite"),
        "{}",
        opened.answer_sdp
    );
    let answer = SdpAnswer::from_sdp_string(&opened.answer_sdp).expect("answer parses");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("accepted");
    (rtc, opened, cid)
}

fn message(stream: u8, seq: u32, size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size];
    m[0] = stream;
    m[1..5].copy_from_slice(&seq.to_be_bytes());
    m
}

/// What the browser does once the channel is open: 5 audio and 3 burst messages and one of
/// no stream; returns how many echoes came back, per stream.
#[derive(Default)]
struct Echoes {
    sent: bool,
    audio: usize,
    burst: usize,
}

impl Echoes {
    fn on_event(&mut self, rtc: &mut Rtc, e: Event, cid: ChannelId) {
        match e {
            Event::ChannelOpen(id, _) if id == cid && !self.sent => {
                let mut ch = rtc.channel(cid).expect("open channel");
                for seq in 0..5 {
                    assert!(ch
                        .write(true, &message(STREAM_AUDIO, seq, 160))
                        .expect("write"));
                }
                for seq in 0..3 {
                    assert!(ch
                        .write(true, &message(STREAM_BURST, seq, 1200))
                        .expect("write"));
                }
                assert!(ch.write(true, &message(9, 0, 100)).expect("write"));
                self.sent = true;
            }
            Event::ChannelData(d) => match d.data[0] {
                STREAM_AUDIO => self.audio += 1,
                STREAM_BURST => self.burst += 1,
                other => panic!("echoed a message of stream {other}"),
            },
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.audio == 5 && self.burst == 3
    }
}

/// Drives the browser's `Rtc` over UDP until the echoes are in. `nat`: the advertised address
/// the browser talks to and the socket's real one (a 1:1 DNAT in front of the server).
async fn run_udp(mut rtc: Rtc, cid: ChannelId, nat: (SocketAddr, SocketAddr)) -> Echoes {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = sock.local_addr().expect("addr");
    rtc.add_local_candidate(Candidate::host(me, "udp").expect("candidate"));
    let (public, real) = nat;
    let mut echoes = Echoes::default();
    let mut buf = vec![0u8; 2048];
    let until = Instant::now() + Duration::from_secs(10);
    while !echoes.done() && Instant::now() < until {
        let wait = loop {
            match rtc.poll_output().expect("browser output") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let to = if t.destination == public {
                        real
                    } else {
                        t.destination
                    };
                    sock.send_to(&t.contents, to).await.expect("send");
                }
                Output::Event(e) => echoes.on_event(&mut rtc, e, cid),
            }
        };
        let wait = wait.min(Instant::now() + Duration::from_millis(50));
        match tokio::time::timeout_at(wait.into(), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, src))) => {
                let source = if src == real { public } else { src };
                let r = Receive::new(Protocol::Udp, source, me, &buf[..n]).expect("parses");
                rtc.handle_input(Input::Receive(Instant::now(), r))
                    .expect("input");
            }
            _ => rtc
                .handle_input(Input::Timeout(Instant::now()))
                .expect("timeout"),
        }
    }
    echoes
}

fn assert_counted(peer: &Peer, id: &str, leg: Leg) {
    let c = peer.counts(&[id.to_string(), "nope".into()]);
    assert_eq!(c.len(), 1);
    let c = &c[0];
    assert_eq!((c.session.as_str(), c.leg), (id, Some(leg)));
    assert!(c.stun_requests >= 1 && c.stun_answered >= 1, "{c:?}");
    assert!(
        c.dtls_records >= 2 && c.dtls_connected && c.channel_open,
        "{c:?}"
    );
    assert_eq!(
        (c.audio_rx, c.audio_tx, c.burst_rx, c.burst_tx),
        (5, 5, 3, 3)
    );
    assert_eq!(peer.drops().messages_dropped, 1);
    let s = peer.stats();
    assert_eq!((s.opened, s.connected, s.live), (1, 1, 1));
}

#[tokio::test]
async fn a_browser_connects_over_udp_and_gets_its_echoes() {
    let (peer, addr) = udp_peer().await;
    let (rtc, opened, cid) = browser(&peer, Leg::Udp, &[(addr, Transport::Udp)]).await;
    let echoes = run_udp(rtc, cid, (addr, addr)).await;
    assert!(
        echoes.done(),
        "echoes: {} audio, {} burst",
        echoes.audio,
        echoes.burst
    );
    assert_counted(&peer, &opened.session, Leg::Udp);
}

#[tokio::test]
async fn the_advertised_address_may_differ_from_the_sockets() {
    // ice_host_override behind a DNAT: the answer carries 203.0.113.9, packets arrive on
    // 127.0.0.1; str0m must still see them as sent to its candidate.
    let (peer, addr) = udp_peer().await;
    let public = SocketAddr::new([203, 0, 113, 9].into(), addr.port());
    let (rtc, opened, cid) = browser(&peer, Leg::Udp, &[(public, Transport::Udp)]).await;
    assert!(
        opened.answer_sdp.contains(" 203.0.113.9 "),
        "{}",
        opened.answer_sdp
    );
    let echoes = run_udp(rtc, cid, (public, addr)).await;
    assert!(
        echoes.done(),
        "echoes: {} audio, {} burst",
        echoes.audio,
        echoes.burst
    );
    assert_counted(&peer, &opened.session, Leg::Udp);
}

#[tokio::test]
async fn bad_offers_and_caps_are_refused_in_words() {
    let (peer, addr) = udp_peer().await;
    let cands = [(addr, Transport::Udp)];
    let bad = peer.open(LOCAL, Leg::Udp, "not sdp", &cands).await;
    assert!(matches!(bad, Err(OpenError::BadOffer(s)) if s.ends_with('.')));
    let (_a, _, _) = browser(&peer, Leg::Udp, &cands).await;
    let (_b, _, _) = browser(&peer, Leg::Udp, &cands).await;
    let mut rtc = Rtc::new(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_channel("probe".into());
    let (offer, _) = api.apply().expect("offer");
    let link_local = [(SocketAddr::from(([169, 254, 0, 1], 8443)), Transport::Udp)];
    let other = IpAddr::from([192, 0, 2, 50]);
    let none = peer
        .open(other, Leg::Udp, &offer.to_sdp_string(), &link_local)
        .await;
    assert!(matches!(none, Err(OpenError::BadOffer(s)) if s.contains("no usable candidate")));
    let third = peer
        .open(LOCAL, Leg::Udp, &offer.to_sdp_string(), &cands)
        .await;
    assert!(matches!(third, Err(OpenError::Busy(s)) if s.contains("per address")));
    let s = peer.stats();
    assert_eq!((s.opened, s.refused, s.live), (2, 1, 2));
    assert_eq!(peer.drops().bad_offers, 2);
    // STUN for nobody's ufrag and DTLS from an unknown source stay with the other handlers.
    assert!(!peer.wants_udp(Kind::Dtls, addr, &[22; 20]));
}

/// Waits until the task has taken every queued datagram. It handles each one before it next
/// awaits, and the test runtime has one thread: an empty queue means all were handled.
async fn drained(peer: &Peer) {
    let until = Instant::now() + Duration::from_secs(10);
    while peer.udp_tx.capacity() < peer.udp_tx.max_capacity() {
        assert!(Instant::now() < until, "the task does not drain its queue");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::task::yield_now().await;
}

/// The local ufrag in an answer, and a STUN check naming it (not a valid one: wrong password).
fn check_for(opened: &Opened) -> Vec<u8> {
    let ufrag = opened
        .answer_sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("the answer names its ufrag")
        .trim()
        .to_string();
    probe_proto::stun::ice_check_request(&probe_proto::stun::IceCheck {
        tid: [3; 12],
        username: &format!("{ufrag}:x"),
        password: "p",
        priority: 1,
        controlling: true,
        tiebreaker: 1,
        use_candidate: false,
    })
}

/// Polls `cond` for up to `within`.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[tokio::test]
async fn a_session_that_never_connects_ends_early_and_frees_its_slot() {
    // UDP blocked: the page's leg never gets through. Its slot must not stay taken for the
    // whole lifetime, or a few runs fill the per-address cap and the next run is refused.
    let within = Duration::from_millis(1500);
    let (peer, addr) = udp_peer_full(limits(), within).await;
    let cands = [(addr, Transport::Udp)];
    let (rtc, connected, cid) = browser(&peer, Leg::Udp, &cands).await;
    let (_silent, never, _) = browser(&peer, Leg::Udp, &cands).await;
    let echoes = run_udp(rtc, cid, (addr, addr)).await;
    assert!(echoes.done());
    assert_eq!(peer.stats().live, 2);
    let full = peer.open(LOCAL, Leg::Udp, "v=0", &cands).await;
    assert!(matches!(full, Err(OpenError::Busy(_))), "{full:?}");
    // Past the connect deadline (the lifetime is 30 s): the silent one is gone, its counts
    // readable; the connected one lives on.
    tokio::time::sleep(within + Duration::from_millis(500)).await;
    assert_eq!(peer.stats().live, 1);
    assert!(!peer.wants_udp(Kind::Stun, addr, &check_for(&never)));
    let c = peer.counts(&[never.session.clone(), connected.session.clone()]);
    assert_eq!(c.len(), 2);
    assert!(!c[0].dtls_connected && c[1].dtls_connected, "{c:?}");
    let (_next, _, _) = browser(&peer, Leg::Udp, &cands).await;
}

#[tokio::test]
async fn a_report_takes_its_sessions_once_and_ends_them() {
    let (peer, addr) = udp_peer().await;
    let (rtc, opened, cid) = browser(&peer, Leg::Udp, &[(addr, Transport::Udp)]).await;
    let echoes = run_udp(rtc, cid, (addr, addr)).await;
    assert!(echoes.done());
    let ids = [
        opened.session.clone(),
        opened.session.clone(),
        "nope".into(),
    ];
    // Another address cannot take (nor end) it.
    assert!(peer.take_for_report([192, 0, 2, 1].into(), &ids).is_empty());
    assert_eq!(peer.stats().live, 1);
    let got = peer.take_for_report(LOCAL, &ids);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].audio_rx, got[0].burst_tx), (5, 3));
    assert!(peer.take_for_report(LOCAL, &ids).is_empty(), "taken once");
    // Its slot is free at once; its `Rtc` ends soon after (no more routing to it).
    assert_eq!(peer.stats().live, 0);
    let check = check_for(&opened);
    let ended = eventually(Duration::from_secs(2), || {
        !peer.wants_udp(Kind::Stun, addr, &check)
    });
    assert!(ended.await, "the session's Rtc still runs");
    let after = peer.counts(std::slice::from_ref(&opened.session));
    assert_eq!(after.len(), 1, "counts() still reads it");
}

#[tokio::test]
async fn the_peer_stops_routing_when_its_task_ends() {
    let sock = StdUdp::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    let peer = Peer::start_with(Arc::new(StdOut(sock)), limits()).expect("start");
    let (_rtc, opened, _) = browser(&peer, Leg::Udp, &[(addr, Transport::Udp)]).await;
    assert!(peer.wants_udp(Kind::Stun, addr, &check_for(&opened)));
    let shared = peer.shared.clone();
    // The last handle gone, the task returns (a panic would drop it the same way).
    drop(peer);
    let dead = eventually(Duration::from_secs(2), || {
        shared.dead.load(Ordering::Acquire)
    });
    assert!(dead.await);
    assert!(!shared.any_live(), "a dead task must not be fed");
    assert_eq!(shared.sessions.load(Ordering::Acquire), 0);
}

#[tokio::test]
async fn ice_tcp_connections_are_capped_per_address() {
    let (peer, _) = udp_peer().await;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut clients = Vec::new();
    for _ in 0..=conn::MAX_CONNS_PER_SOURCE {
        let c = TcpStream::connect(addr).await.expect("connect");
        let (s, from) = l.accept().await.expect("accept");
        peer.tcp_in(s, from);
        clients.push(c);
    }
    // The one over the cap is closed at once; the others stay open.
    let mut buf = [0u8; 1];
    let last = clients.last_mut().expect("clients");
    let n = tokio::time::timeout(Duration::from_secs(2), last.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    let first = tokio::time::timeout(Duration::from_millis(200), clients[0].read(&mut buf)).await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(peer.drops().queue_full, 1);
    assert_eq!(
        conn::open_slots(&peer.shared.conns),
        conn::MAX_CONNS_PER_SOURCE
    );
}

/// The TCP side: a listener doing what tcp.rs does (first frame peeked, then handed over).
async fn tcp_peer(peer: Peer) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, from)) = l.accept().await {
            let mut head = [0u8; 2];
            s.peek(&mut head).await.expect("peek");
            let mut first = vec![0u8; 2 + usize::from(u16::from_be_bytes(head))];
            while s.peek(&mut first).await.expect("peek") < first.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(
                peer.wants_tcp(&first[2..]),
                "the first frame names the session"
            );
            peer.tcp_in(s, from);
        }
    });
    addr
}

#[tokio::test]
async fn a_browser_connects_over_ice_tcp_and_gets_its_echoes() {
    let (peer, _) = udp_peer().await;
    let addr = tcp_peer(peer.clone()).await;
    let (mut rtc, opened, cid) = browser(&peer, Leg::Tcp, &[(addr, Transport::Tcp)]).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let me = stream.local_addr().expect("addr");
    let active = Candidate::builder()
        .tcp()
        .host(me)
        .tcptype(str0m::net::TcpType::Active)
        .build()
        .expect("candidate");
    rtc.add_local_candidate(active);
    let mut echoes = Echoes::default();
    let mut buf = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while !echoes.done() && Instant::now() < until {
        let wait = loop {
            match rtc.poll_output().expect("browser output") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) if t.proto == Protocol::Tcp => {
                    let mut f = (t.contents.len() as u16).to_be_bytes().to_vec();
                    f.extend_from_slice(&t.contents);
                    stream.write_all(&f).await.expect("write");
                }
                Output::Transmit(_) => {}
                Output::Event(e) => echoes.on_event(&mut rtc, e, cid),
            }
        };
        let wait = wait.min(Instant::now() + Duration::from_millis(50));
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(wait.into(), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => panic!("the server closed the connection"),
            Err(_) => {}
        }
        while buf.len() >= 2 && buf.len() >= 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]])) {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            let frame: Vec<u8> = buf.drain(..2 + len).skip(2).collect();
            let r = Receive::new(Protocol::Tcp, addr, me, &frame).expect("parses");
            rtc.handle_input(Input::Receive(Instant::now(), r))
                .expect("input");
        }
        rtc.handle_input(Input::Timeout(Instant::now()))
            .expect("timeout");
    }
    assert!(
        echoes.done(),
        "echoes: {} audio, {} burst",
        echoes.audio,
        echoes.burst
    );
    assert_counted(&peer, &opened.session, Leg::Tcp);
}

/// Deterministic noise (no extra crate): a xorshift generator.
fn noise(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test]
async fn garbage_for_a_live_session_neither_kills_it_nor_the_task() {
    let (peer, addr) = udp_peer().await;
    let (rtc, opened, cid) = browser(&peer, Leg::Udp, &[(addr, Transport::Udp)]).await;
    let id = opened.session.clone();
    let ufrag = opened
        .answer_sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("the answer names its ufrag")
        .trim()
        .to_string();
    let check = probe_proto::stun::ice_check_request(&probe_proto::stun::IceCheck {
        tid: [3; 12],
        username: &format!("{ufrag}:x"),
        password: "wrong",
        priority: 1,
        controlling: true,
        tiebreaker: 1,
        use_candidate: true,
    });
    let from: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let mut seed = 0x2545_f491_4f6c_dd1d;
    for i in 0..3000 {
        let mut pkt = check.clone();
        for _ in 0..(i % 5) {
            let r = noise(&mut seed);
            let at = 20 + r as usize % (pkt.len() - 20);
            pkt[at] = (r >> 32) as u8;
        }
        pkt.truncate(20 + noise(&mut seed) as usize % (pkt.len() - 19));
        if peer.wants_udp(classify(&pkt), from, &pkt) {
            peer.udp_in(from, Some(LOCAL), &pkt);
        }
        if i % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    drained(&peer).await;
    // Nothing forged got an answer or a route, and the real browser still gets through.
    let c = &peer.counts(std::slice::from_ref(&id))[0];
    assert_eq!(c.stun_answered, 0, "{c:?}");
    assert!(!peer.wants_udp(Kind::Dtls, from, &[22; 20]));
    let echoes = run_udp(rtc, cid, (addr, addr)).await;
    assert!(
        echoes.done(),
        "echoes: {} audio, {} burst",
        echoes.audio,
        echoes.burst
    );
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_and_its_counts_stay() {
    let short = PeerLimits {
        session_lifetime: Duration::from_millis(300),
        ..limits()
    };
    let (peer, addr) = udp_peer_with(short).await;
    let (rtc, opened, cid) = browser(&peer, Leg::Udp, &[(addr, Transport::Udp)]).await;
    let check = check_for(&opened);
    assert!(peer.wants_udp(Kind::Stun, addr, &check));
    assert_eq!(peer.stats().live, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(peer.stats().live, 0);
    assert!(!peer.wants_udp(Kind::Stun, addr, &check));
    assert_eq!(peer.counts(&[opened.session]).len(), 1);
    // The browser that comes too late gets nothing.
    let echoes =
        tokio::time::timeout(Duration::from_secs(3), run_udp(rtc, cid, (addr, addr))).await;
    assert!(echoes.map_or(true, |e| e.audio == 0));
}
