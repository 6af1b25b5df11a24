//! Spike: one port P, UDP + TCP. TCP connections are demultiplexed by first byte
//! (0x00..=0x05 -> RFC 4571 ICE-TCP, otherwise HTTP). UDP datagrams go to the str0m
//! Rtc whose `accepts()` says yes (STUN by ufrag, DTLS/SCTP by remote address).
//!
//! usage: web-spike BIND_IP:PORT ADVERTISED_IP
//!   GET /            -> page.html (embedded)
//!   POST /session?m=udp|tcp|both  body {type,sdp} -> answer {type,sdp}
//!   POST /result     body JSON -> printed on stdout as `RESULT {...}`

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

const PAGE: &str = include_str!("page.html");

enum Msg {
    Offer { sdp: String, mode: String, reply: oneshot::Sender<Result<String, String>> },
    TcpOpen { peer: SocketAddr, tx: mpsc::UnboundedSender<Vec<u8>> },
    TcpFrame { peer: SocketAddr, local: SocketAddr, data: Vec<u8> },
    TcpClosed { peer: SocketAddr },
}

struct Session {
    id: u32,
    rtc: Rtc,
    created: Instant,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow_lite::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let bind: SocketAddr = args.get(1).map(|s| s.as_str()).unwrap_or("0.0.0.0:18443").parse()?;
    let adv: IpAddr = args.get(2).map(|s| s.as_str()).unwrap_or("127.0.0.1").parse()?;
    let adv_addr = SocketAddr::new(adv, bind.port());

    str0m::crypto::from_feature_flags().install_process_default();
    let t0 = Instant::now();
    // One certificate for all sessions (stable fingerprint, no per-session keygen).
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .expect("cert");
    eprintln!("cert generated in {:?}", t0.elapsed());

    let udp = Arc::new(UdpSocket::bind(bind).await?);
    let tcp = TcpListener::bind(bind).await?;
    println!("spike ready udp={} tcp={} advertised={}", udp.local_addr()?, tcp.local_addr()?, adv_addr);

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, peer)) = tcp.accept().await else { continue };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = conn(s, peer, tx).await {
                        eprintln!("tcp {peer}: {e}");
                    }
                });
            }
        });
    }

    let mut sessions: Vec<Session> = Vec::new();
    let mut tcp_conns: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut next_id = 0u32;
    let mut buf = vec![0u8; 2000];
    let local_udp = SocketAddr::new(adv, bind.port());

    loop {
        // Drive every Rtc until it wants to wait; collect the earliest deadline.
        let mut next = Instant::now() + Duration::from_millis(500);
        for s in sessions.iter_mut() {
            loop {
                match s.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        next = next.min(t);
                        break;
                    }
                    Ok(Output::Transmit(t)) => match t.proto {
                        Protocol::Udp => {
                            let _ = udp.try_send_to(&t.contents, t.destination);
                        }
                        _ => {
                            if let Some(c) = tcp_conns.get(&t.destination) {
                                let mut f = Vec::with_capacity(t.contents.len() + 2);
                                f.extend_from_slice(&(t.contents.len() as u16).to_be_bytes());
                                f.extend_from_slice(&t.contents);
                                let _ = c.send(f);
                            }
                        }
                    },
                    Ok(Output::Event(e)) => on_event(s, e),
                    Err(e) => {
                        eprintln!("session {} error {e:?}", s.id);
                        s.rtc.disconnect();
                        break;
                    }
                }
            }
        }
        sessions.retain(|s| s.rtc.is_alive() && s.created.elapsed() < Duration::from_secs(120));

        let mut tcp_data: Vec<u8> = Vec::new();
        let mut tcp_peer: Option<SocketAddr> = None;
        let mut udp_got: Option<(usize, SocketAddr)> = None;
        tokio::select! {
            r = udp.recv_from(&mut buf) => { udp_got = Some(r?); }
            m = rx.recv() => match m.unwrap() {
                Msg::Offer { sdp, mode, reply } => {
                    let r = new_session(&sdp, &mode, adv_addr, cert.clone(), next_id);
                    match r {
                        Ok((rtc, answer)) => {
                            sessions.push(Session { id: next_id, rtc, created: Instant::now() });
                            next_id += 1;
                            let _ = reply.send(Ok(answer));
                        }
                        Err(e) => { let _ = reply.send(Err(e)); }
                    }
                }
                Msg::TcpOpen { peer, tx } => { tcp_conns.insert(peer, tx); }
                Msg::TcpClosed { peer } => { tcp_conns.remove(&peer); }
                Msg::TcpFrame { peer, local, data } => {
                    let _ = local;
                    tcp_data = data;
                    tcp_peer = Some(peer);
                }
            },
            _ = tokio::time::sleep_until(next.into()) => {},
        };
        let input: Option<Input> = if let Some((n, src)) = udp_got {
            (&buf[..n]).try_into().ok().map(|contents| Input::Receive(Instant::now(), Receive {
                proto: Protocol::Udp, source: src, destination: local_udp, contents }))
        } else if let Some(peer) = tcp_peer {
            tcp_data.as_slice().try_into().ok().map(|contents| Input::Receive(Instant::now(), Receive {
                proto: Protocol::Tcp, source: peer, destination: adv_addr, contents }))
        } else { None };
        let now = Instant::now();
        if let Some(input) = input {
            match sessions.iter_mut().find(|s| s.rtc.accepts(&input)) {
                Some(s) => {
                    if let Err(e) = s.rtc.handle_input(input) {
                        eprintln!("session {} input error {e:?}", s.id);
                    }
                }
                None => eprintln!("no session accepts a packet"),
            }
        }
        for s in sessions.iter_mut() {
            let _ = s.rtc.handle_input(Input::Timeout(now));
        }
    }
}

fn on_event(s: &mut Session, e: Event) {
    let ms = s.created.elapsed().as_millis();
    match e {
        Event::IceConnectionStateChange(st) => println!("session {} +{ms}ms ice {st:?}", s.id),
        Event::Connected => println!("session {} +{ms}ms dtls connected", s.id),
        Event::ChannelOpen(id, label) => println!("session {} +{ms}ms channel open {label} {id:?}", s.id),
        Event::ChannelData(d) => {
            // Echo back (the real probe would count, timestamp and echo).
            if let Some(mut ch) = s.rtc.channel(d.id) {
                let _ = ch.write(d.binary, &d.data);
            }
        }
        Event::ChannelClose(id) => println!("session {} +{ms}ms channel close {id:?}", s.id),
        _ => {}
    }
}

fn new_session(
    offer_json: &str,
    mode: &str,
    adv: SocketAddr,
    cert: str0m::crypto::dtls::DtlsCert,
    id: u32,
) -> Result<(Rtc, String), String> {
    let offer: SdpOffer = serde_json::from_str(offer_json).map_err(|e| e.to_string())?;
    let mut rtc = RtcConfig::new().set_ice_lite(true).set_dtls_cert(cert).build(Instant::now());
    if mode == "udp" || mode == "both" {
        rtc.add_local_candidate(Candidate::host(adv, "udp").map_err(|e| e.to_string())?);
    }
    if mode == "tcp" || mode == "both" {
        let c = Candidate::builder()
            .tcp()
            .host(adv)
            .tcptype(TcpType::Passive)
            .build()
            .map_err(|e| e.to_string())?;
        rtc.add_local_candidate(c);
    }
    let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
    println!("session {id} mode={mode} answer candidates: {:?}",
        answer.to_sdp_string().lines().filter(|l| l.starts_with("a=candidate")).collect::<Vec<_>>());
    Ok((rtc, serde_json::to_string(&answer).map_err(|e| e.to_string())?))
}

async fn conn(mut s: TcpStream, peer: SocketAddr, tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    let n = s.peek(&mut first).await?;
    if n == 0 {
        return Ok(());
    }
    if first[0] <= 0x05 {
        // RFC 4571 framing: ICE-TCP. Without TCP_NODELAY small frames wait ~40 ms (Nagle + delayed ACK).
        s.set_nodelay(true)?;
        let local = s.local_addr()?;
        let (mut r, mut w) = s.into_split();
        let (otx, mut orx) = mpsc::unbounded_channel::<Vec<u8>>();
        let _ = tx.send(Msg::TcpOpen { peer, tx: otx });
        tokio::spawn(async move {
            while let Some(f) = orx.recv().await {
                if w.write_all(&f).await.is_err() {
                    break;
                }
            }
        });
        loop {
            let mut len = [0u8; 2];
            if r.read_exact(&mut len).await.is_err() {
                break;
            }
            let mut data = vec![0u8; u16::from_be_bytes(len) as usize];
            if r.read_exact(&mut data).await.is_err() {
                break;
            }
            let _ = tx.send(Msg::TcpFrame { peer, local, data });
        }
        let _ = tx.send(Msg::TcpClosed { peer });
        return Ok(());
    }
    // HTTP/1.1, one request per connection (enough for a spike).
    let mut req = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&tmp[..n]);
        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if req.len() > 65536 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_string();
    let clen: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0);
    while req.len() < head_end + clen {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&tmp[..n]);
    }
    let body = String::from_utf8_lossy(&req[head_end..]).to_string();
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, ctype, out) = match (method, path) {
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", PAGE.to_string()),
        ("POST", "/session") => {
            let mode = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("m="))
                .unwrap_or("both")
                .to_string();
            let (rtx, rrx) = oneshot::channel();
            let _ = tx.send(Msg::Offer { sdp: body, mode, reply: rtx });
            match rrx.await {
                Ok(Ok(a)) => ("200 OK", "application/json", a),
                Ok(Err(e)) => ("400 Bad Request", "text/plain", e),
                Err(_) => ("500 Internal Server Error", "text/plain", String::new()),
            }
        }
        ("POST", "/result") => {
            println!("RESULT {body}");
            ("204 No Content", "text/plain", String::new())
        }
        _ => ("404 Not Found", "text/plain", String::new()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{out}",
        out.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await?;
    Ok(())
}

mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
}
