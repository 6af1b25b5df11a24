//! Live mode, the client side: when `probe-server live` taps RTCD's port (RTCD running), the
//! live hello is answered instead of the normal probe. Plain UDP and TCP sockets only, so this
//! builds everywhere; the raw sockets are the server's. Every wait has a deadline.

use crate::cli::ProbeArgs;
use crate::control::rand_bytes;
use crate::target::Target;
use probe_proto::live::judge::{self, Meta, Outcome, TcpProbe};
use probe_proto::live::packet::{self, Echo, Kind};
use probe_proto::live::{hello::parse_hello_reply, HelloInfo};
use probe_proto::msg::Transport;
use probe_proto::report::Report;
use probe_proto::stats::EchoStats;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

const HELLO_DEADLINE: Duration = Duration::from_secs(2);
const HELLO_RETRY: Duration = Duration::from_millis(130);
const HELLO_SENDS: u32 = 3;
const DRAIN: Duration = Duration::from_secs(1);
const TCP_CONNECT: Duration = Duration::from_secs(2);
const QUERY_TRIES: u32 = 5;
const QUERY_RETRY: Duration = Duration::from_millis(300);
/// One live echo every 20 ms toward each address, as an audio stream.
const INTERVAL: Duration = Duration::from_millis(20);
const DEFAULT_SIZE: usize = 200;

/// A live server that answered the hello.
pub struct Hello {
    info: HelloInfo,
    sock: UdpSocket,
    server: String,
    dialed: SocketAddr,
    key: Option<[u8; 32]>,
    t0: Instant,
    started_ms: u64,
}

/// Sends the live hello to the named host's port; `None` when nothing answers in time (no
/// live server: the normal probe goes on).
pub async fn hello(args: &ProbeArgs) -> Option<Hello> {
    // A pin names a probe-server's QUIC certificate: the user means the normal server, and live
    // mode (which has no certificate) would only add a datagram that server counts as dropped.
    if args.no_udp || args.pin.is_some() {
        return None;
    }
    let t0 = Instant::now();
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let target = Target::parse(args.server.as_deref()?).ok()?;
    let dialed = target.resolve().await.ok()?;
    let bind: SocketAddr = if dialed.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .ok()?;
    let sock = UdpSocket::bind(bind).await.ok()?;
    let key = args.token.as_deref().map(probe_proto::auth::token_key);
    let nonce = u64::from_be_bytes(rand_bytes());
    let req = packet::hello_request(nonce, key.as_ref());
    let deadline = tokio::time::Instant::now() + HELLO_DEADLINE;
    let mut buf = vec![0u8; 2048];
    // Sent only while the normal probe waits (its head start): a normal probe-server counts
    // each hello as one dropped datagram, so the retries after that would only add to it.
    let mut sends = HELLO_SENDS;
    while tokio::time::Instant::now() < deadline {
        if sends > 0 {
            sends -= 1;
            sock.send_to(&req, dialed).await.ok()?;
        }
        let wait = (tokio::time::Instant::now() + HELLO_RETRY).min(deadline);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(wait, sock.recv_from(&mut buf)).await {
            let p = &buf[..n];
            if packet::check(p, key.as_ref()) == Ok((Kind::HelloReply, nonce)) {
                let info = parse_hello_reply(p).ok()?;
                return Some(Hello {
                    info,
                    sock,
                    server: target.display(),
                    dialed,
                    key,
                    t0,
                    started_ms,
                });
            }
        }
    }
    None
}

fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// The live run: echo to each advertised UDP address (and the one the user named) beside the
/// TCP probe, then the final counters and the TCP record, then the report.
pub async fn run(args: &ProbeArgs, h: Hello) -> Result<(Report, Vec<String>), String> {
    let base = u64::from_be_bytes(rand_bytes()) & !0xff;
    let targets = targets(&h);
    let tcp_port = h.info.rtcd_port_tcp;
    let tcp = async {
        if args.no_tcp {
            return TcpProbe {
                nonce: base,
                ..TcpProbe::default()
            };
        }
        tcp_probe(
            SocketAddr::new(h.dialed.ip(), tcp_port),
            base,
            h.key.as_ref(),
        )
        .await
    };
    let size = args
        .size
        .map_or(DEFAULT_SIZE, usize::from)
        .max(packet::ECHO_MIN_LEN);
    let dur = Duration::from_secs_f64(args.duration);
    let (mut stats, mut tcp) = tokio::join!(echo(&h, &targets, base, size, dur), tcp);
    if tcp.connected {
        tcp.answer = tcp_query(&h, base).await;
    }
    let counts = final_counts(&h, &targets, base).await;
    let results = targets
        .iter()
        .enumerate()
        .map(|(i, (addr, advertised))| {
            let (rx, tx) = counts[i].map_or((None, None), |(r, t)| {
                (Some(u64::from(r)), Some(u64::from(t)))
            });
            judge::Target {
                addr: *addr,
                advertised: *advertised,
                summary: stats[i].0.summary(rx, tx),
                arrived_at: stats[i].1.take(),
            }
        })
        .collect();
    let o = Outcome {
        server: h.server.clone(),
        dialed: h.dialed,
        hello: h.info.clone(),
        targets: results,
        tcp,
        udp_tested: true,
        tcp_tested: !args.no_tcp,
    };
    let site = args
        .site
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let meta = Meta {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        site,
        started_ms: h.started_ms,
        duration_ms: h.t0.elapsed().as_millis() as u64,
    };
    Ok((judge::report(&o, meta), judge::banner(&o)))
}

/// Every advertised UDP address (on its advertised port), then the named address on RTCD's
/// UDP port if RTCD does not advertise it; at most 16 (the server's per-source nonce limit).
fn targets(h: &Hello) -> Vec<(SocketAddr, bool)> {
    let mut out: Vec<(SocketAddr, bool)> = Vec::new();
    for c in h
        .info
        .candidates
        .iter()
        .filter(|c| c.protocol == Transport::Udp)
    {
        let a = SocketAddr::new(c.address, c.port);
        let dialable = judge::not_dialled(c.address, h.dialed.ip()).is_none();
        if dialable && a.is_ipv4() == h.dialed.is_ipv4() && !out.iter().any(|(x, _)| *x == a) {
            out.push((a, true));
        }
    }
    let named = SocketAddr::new(h.dialed.ip(), h.info.rtcd_port_udp);
    if !out.iter().any(|(x, _)| *x == named) {
        out.push((named, false));
    }
    out.truncate(15);
    out
}

type PerTarget = Vec<(EchoStats, Option<std::net::IpAddr>)>;

/// Sends one echo per target every 20 ms for `dur`, receiving all along, then drains.
async fn echo(
    h: &Hello,
    targets: &[(SocketAddr, bool)],
    base: u64,
    size: usize,
    dur: Duration,
) -> PerTarget {
    let mut st: PerTarget = targets.iter().map(|_| (EchoStats::new(), None)).collect();
    let mut tick = tokio::time::interval(INTERVAL);
    let end = tokio::time::Instant::now() + dur;
    let mut buf = vec![0u8; 2048];
    let mut seq = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick(), if tokio::time::Instant::now() < end => {
                for (i, (addr, _)) in targets.iter().enumerate() {
                    let now = us(h.t0);
                    let e = Echo { nonce: base + 1 + i as u64, seq, client_tx_us: now, ..Echo::default() };
                    st[i].0.on_sent(seq, now);
                    let _ = h.sock.send_to(&packet::echo_request(&e, size, h.key.as_ref()), addr).await;
                }
                seq += 1;
            }
            r = h.sock.recv_from(&mut buf) => {
                if let Ok((n, _)) = r {
                    on_reply(h, &buf[..n], base, &mut st);
                }
            }
            _ = tokio::time::sleep_until(end + DRAIN) => break,
        }
    }
    st
}

fn on_reply(h: &Hello, p: &[u8], base: u64, st: &mut PerTarget) {
    let Ok((Kind::EchoReply, nonce)) = packet::check(p, h.key.as_ref()) else {
        return;
    };
    let Ok(e) = packet::parse_echo(p) else { return };
    let Some(i) = nonce
        .checked_sub(base + 1)
        .map(|i| i as usize)
        .filter(|i| *i < st.len())
    else {
        return;
    };
    if e.query {
        return;
    }
    st[i].0.on_reply(
        e.seq,
        e.client_tx_us,
        e.server_rx_us,
        e.server_tx_us,
        us(h.t0),
    );
    st[i].1 = e.arrived_at.or(st[i].1);
}

/// The server's final counters per target (counters queries are not counted themselves).
async fn final_counts(
    h: &Hello,
    targets: &[(SocketAddr, bool)],
    base: u64,
) -> Vec<Option<(u32, u32)>> {
    let mut out = vec![None; targets.len()];
    let mut buf = vec![0u8; 2048];
    for _ in 0..QUERY_TRIES {
        for (i, (addr, _)) in targets
            .iter()
            .enumerate()
            .filter(|(i, _)| out[*i].is_none())
        {
            let e = Echo {
                nonce: base + 1 + i as u64,
                query: true,
                ..Echo::default()
            };
            let _ = h
                .sock
                .send_to(
                    &packet::echo_request(&e, packet::ECHO_MIN_LEN, h.key.as_ref()),
                    addr,
                )
                .await;
        }
        let wait = tokio::time::Instant::now() + QUERY_RETRY;
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(wait, h.sock.recv_from(&mut buf)).await {
            let p = &buf[..n];
            let (Ok((Kind::EchoReply, nonce)), Ok(e)) =
                (packet::check(p, h.key.as_ref()), packet::parse_echo(p))
            else {
                continue;
            };
            if let Some(i) = nonce
                .checked_sub(base + 1)
                .map(|i| i as usize)
                .filter(|i| *i < out.len())
            {
                if e.query {
                    out[i] = Some((e.server_rx_count, e.server_tx_count));
                }
            }
        }
        if out.iter().all(Option::is_some) {
            break;
        }
    }
    out
}

/// Connects to RTCD's TCP port, sends one RFC 4571 frame with the nonce, waits briefly for
/// RTCD (pion) to close it, and closes.
async fn tcp_probe(addr: SocketAddr, nonce: u64, key: Option<&[u8; 32]>) -> TcpProbe {
    let t = Instant::now();
    let mut p = TcpProbe {
        nonce,
        ..TcpProbe::default()
    };
    let Ok(Ok(mut s)) = timeout(TCP_CONNECT, TcpStream::connect(addr)).await else {
        return p;
    };
    p.connected = true;
    p.connect_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    let _ = s.write_all(&packet::tcp_probe_frame(nonce, key)).await;
    let mut b = [0u8; 64];
    let _ = timeout(Duration::from_secs(1), s.read(&mut b)).await;
    p
}

/// Asks the tap what it saw of the TCP probe; `None` when no answer came (UDP blocked).
async fn tcp_query(h: &Hello, nonce: u64) -> Option<Option<packet::TcpSeen>> {
    let q = packet::tcp_query(nonce, h.key.as_ref());
    let mut buf = vec![0u8; 2048];
    for _ in 0..QUERY_TRIES {
        let _ = h.sock.send_to(&q, h.dialed).await;
        let wait = tokio::time::Instant::now() + QUERY_RETRY;
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(wait, h.sock.recv_from(&mut buf)).await {
            let p = &buf[..n];
            if packet::check(p, h.key.as_ref()) == Ok((Kind::TcpAnswer, nonce)) {
                return packet::parse_tcp_answer(p).ok();
            }
        }
    }
    None
}

/// When neither the live hello nor the normal probe got any UDP answer, yet the port accepted
/// TCP without speaking the probe's STUN (a running RTCD, no probe server): the TCP probe, so
/// that `probe-server live`'s output can tell where it went. Returns the lines that say what to
/// look for there. The report stays the normal probe's: from here, "UDP blocked in front of a
/// live server" and "no probe server at all" look the same, and only the server can tell them
/// apart (its `tcp` line says whether this client's UDP hello arrived).
pub async fn tcp_only(args: &ProbeArgs, port: u16) -> Option<Vec<String>> {
    let target = Target::parse(args.server.as_deref()?).ok()?;
    let dialed = target.resolve().await.ok()?;
    let key = args.token.as_deref().map(probe_proto::auth::token_key);
    let nonce = u64::from_be_bytes(rand_bytes());
    let tcp = tcp_probe(SocketAddr::new(dialed.ip(), port), nonce, key.as_ref()).await;
    if !tcp.connected {
        return None;
    }
    Some(judge::tcp_only_banner(port, nonce))
}
