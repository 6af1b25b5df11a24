//! The TCP port: RFC 4571 frames, each demultiplexed by its first byte like the UDP port —
//! STUN, echo, or a control message when UDP is blocked and QUIC cannot run.
//!
//! The first byte of a connection says what it carries: 0x16 (a TLS handshake record) opens
//! TLS 1.3 with the QUIC certificate, inside which the same RFC 4571 frames flow and control
//! messages are served; 0x00–0x05 (the length of a frame under 1,536 bytes) is plain framing,
//! which carries STUN and echo as ICE-TCP does, but no session: a hello there only gets a
//! refusal, so a session key or ICE password never crosses in clear — unless its first frame
//! is a STUN request for a browser test page session, whose connection then goes whole to the
//! WebRTC peer (ICE-TCP). An upper-case letter (an HTTP method) is the test page's HTTP.
//! Anything else is closed.
//!
//! No slot without progress: a connection must serve a session (a hello on it that opened
//! one, or echo of a live session) within [`PROGRESS_WITHIN`] of its accept, or it is closed —
//! the TLS handshake counts against that time; until then it can also be displaced by a
//! newcomer (see [`ConnLimits`]). Frames that serve no session (STUN, junk) never extend its
//! life past that deadline.

use crate::control::Channel;
use crate::shared::{canonical, ConnLimits, ConnSlot, Shared};
use probe_proto::demux::{classify, Kind};
use probe_proto::echo;
use probe_proto::frame::{self, Decoder};
use probe_proto::msg::{Transport, CONTROL_TAG};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// ALPN of the TLS control channel on the TCP port. Not QUIC's `calls-probe/1`: inside this
/// TLS run RFC 4571 frames demultiplexed by first byte, not QUIC's one control stream, so a
/// client of one can never be taken for the other.
pub const ALPN: &[u8] = b"calls-probe-tcp/1";
/// First byte of a TLS record carrying a handshake message (RFC 8446 5.1, ContentType 22).
const TLS_HANDSHAKE: u8 = 0x16;
/// Highest first byte of plain framing: a frame under 1,536 bytes, which STUN and echo are.
const PLAIN_FIRST_MAX: u8 = 0x05;
// Echo frames must stay plain-framed on a first byte that cannot be TLS.
const _: () = assert!(probe_proto::echo::MAX_LEN + 2 < (PLAIN_FIRST_MAX as usize + 1) << 8);

/// A connection that serves no session this long after its accept is closed. The client says
/// hello right after its TLS handshake, and sends echo right after connecting for it (its plain
/// reachability connection, which serves no session, is done with in a few seconds).
pub const PROGRESS_WITHIN: Duration = Duration::from_secs(10);

/// `idle`: a connection serving a session that completes no frame for this long is closed
/// (RTCD uses 30 s).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    idle: Duration,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let now = shared.now_us();
                // A completed handshake: the source is real, so it has a table of its own
                // that spoofed UDP cannot fill.
                if !shared.core().admit_tcp(canonical(peer).ip(), now) {
                    continue;
                }
                // At a cap with nothing to displace, new connections are closed at once.
                let Some(slot) = limits.acquire(canonical(peer).ip()) else {
                    shared.core().stats.drop_rate_limited += 1;
                    continue;
                };
                let (shared, acceptor) = (shared.clone(), acceptor.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = handle(stream, &shared, idle, &slot, &acceptor) => {}
                        _ = slot.displaced() => shared.core().stats.conn_displaced += 1,
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!("TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection's view besides its control channel.
struct Conn {
    channel: Channel,
    /// The session whose echo this connection carries (opened elsewhere, e.g. over QUIC).
    echo_of: Option<u64>,
    opened: Instant,
    /// The last frame that served the session; before there is one, the last whole frame.
    last_progress: Instant,
    /// Inside TLS: the only place control messages are served.
    tls: bool,
}

impl Conn {
    fn session(&self) -> Option<u64> {
        self.channel.session.or(self.echo_of)
    }

    fn deadline(&self, idle: Duration) -> Instant {
        match self.session() {
            Some(_) => self.last_progress + idle,
            // Frames may keep a young connection from idling out, never past the deadline.
            None => (self.opened + PROGRESS_WITHIN).min(self.last_progress + idle),
        }
    }
}

async fn handle(
    stream: TcpStream,
    shared: &Shared,
    idle: Duration,
    slot: &ConnSlot,
    acceptor: &tokio_rustls::TlsAcceptor,
) {
    let Ok(peer) = stream.peer_addr().map(canonical) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let opened = Instant::now();
    // The first byte and the TLS handshake get no more time than a first frame would.
    let by = opened + PROGRESS_WITHIN.min(idle);
    let mut first = [0u8; 1];
    let first = match tokio::time::timeout_at(by, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0],
        Ok(_) => return,
        Err(_) => {
            shared.core().stats.conn_no_progress += 1;
            return;
        }
    };
    let conn = |tls: bool| Conn {
        channel: Channel::new(peer, if tls { "tls" } else { "tcp" }),
        echo_of: None,
        opened,
        last_progress: opened,
        tls,
    };
    match first {
        TLS_HANDSHAKE => match tokio::time::timeout_at(by, acceptor.accept(stream)).await {
            Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(ALPN) => {
                serve_frames(s, conn(true), shared, idle, slot).await
            }
            // A failed handshake or another application protocol: not ours.
            Ok(_) => shared.core().stats.drop_malformed += 1,
            Err(_) => shared.core().stats.conn_no_progress += 1,
        },
        0..=PLAIN_FIRST_MAX => {
            // ICE-TCP of a browser test page session goes to the WebRTC peer, whole. Only
            // while a session lives can a connection be one: otherwise nothing is peeked.
            if let Some(web) = shared.web().filter(|w| w.stats().live > 0) {
                let frame = peek_first_frame(&stream, by, &mut 0).await;
                if frame.is_some_and(|f| web.wants_tcp(&f)) {
                    slot.progressed();
                    web.tcp_in(stream, peer);
                    return;
                }
            }
            serve_frames(stream, conn(false), shared, idle, slot).await
        }
        // An HTTP method: the browser test page and its API.
        b'A'..=b'Z' if shared.web().is_some() => {
            let via = crate::web::http::Via {
                client: peer,
                slot: Some(slot),
                on_probe_port: true,
            };
            crate::web::http::serve_conn(stream, via, shared).await
        }
        // Like RTCD's TCP mux: a stream that is none of ours is closed at once.
        _ => shared.core().stats.drop_malformed += 1,
    }
}

/// The first RFC 4571 frame's payload, peeked: nothing is consumed, so whoever serves the
/// connection reads it again. None when the peer closed or the frame is not all in by `by`.
/// Woken by the socket, never by a timer: tokio keeps a socket readable while bytes wait
/// unread, so after a peek that finds the frame incomplete the readiness is cleared, and the
/// next wake-up is the next segment's arrival. `peeks` counts the peeks (tests bound it).
async fn peek_first_frame(stream: &TcpStream, by: Instant, peeks: &mut u32) -> Option<Vec<u8>> {
    // A first byte of at most PLAIN_FIRST_MAX bounds the first frame's length.
    let mut buf = vec![0u8; 2 + ((PLAIN_FIRST_MAX as usize + 1) << 8)];
    let wait = async {
        loop {
            stream.readable().await.ok()?;
            *peeks += 1;
            // try_io clears the readiness it saw when the closure says WouldBlock — unless
            // more bytes arrived meanwhile, so none is missed.
            match stream.try_io(Interest::READABLE, || peek_now(stream, &mut buf)) {
                Ok(0) => return None,
                Ok(end) => return Some(buf[2..end].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout_at(by, wait).await.ok()?
}

/// One non-blocking peek: `Ok(end)` of the first frame when it is whole, `Ok(0)` when the
/// peer closed, `WouldBlock` while the frame is incomplete.
fn peek_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut rb = ReadBuf::new(buf);
    let n = match stream.poll_peek(&mut cx, &mut rb) {
        Poll::Ready(Ok(0)) => return Ok(0),
        Poll::Ready(Ok(n)) => n,
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
    };
    let got = rb.filled();
    if n >= 2 {
        let end = 2 + usize::from(u16::from_be_bytes([got[0], got[1]]));
        if n >= end {
            return Ok(end);
        }
    }
    Err(io::ErrorKind::WouldBlock.into())
}

/// The frame loop, the same on a plain connection and inside TLS.
async fn serve_frames<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut conn: Conn,
    shared: &Shared,
    idle: Duration,
    slot: &ConnSlot,
) {
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 8192];
    let mut out = vec![0u8; 2048];
    loop {
        let n = match tokio::time::timeout_at(conn.deadline(idle), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Err(_) if conn.session().is_none() && conn.opened.elapsed() >= PROGRESS_WITHIN => {
                shared.core().stats.conn_no_progress += 1;
                break;
            }
            _ => break,
        };
        if conn.session().is_some_and(|id| !shared.session_alive(id)) {
            break;
        }
        dec.push(&buf[..n]);
        let (replies, close) = frames(shared, &mut conn, &mut dec, &mut out);
        if conn.session().is_some() {
            slot.progressed();
        }
        // A peer that never reads must not pin the connection either. TLS buffers records
        // until flushed.
        let write = async {
            stream.write_all(&replies).await?;
            stream.flush().await
        };
        if !replies.is_empty() && !matches!(tokio::time::timeout(idle, write).await, Ok(Ok(()))) {
            break;
        }
        if close {
            break;
        }
    }
    conn.channel.close(shared);
}

/// Answers every whole frame in the decoder, in order; returns the framed answers and whether
/// the connection must close (a frame that ends it still lets the answers before it go out).
fn frames(shared: &Shared, conn: &mut Conn, dec: &mut Decoder, out: &mut [u8]) -> (Vec<u8>, bool) {
    let mut replies = Vec::new();
    loop {
        let payload = match dec.next_frame() {
            Ok(Some(p)) => p,
            Ok(None) => return (replies, false),
            Err(_) => {
                shared.core().stats.drop_malformed += 1;
                return (replies, true);
            }
        };
        match answer(shared, conn, payload, out) {
            Ok(r) => {
                conn.last_progress = Instant::now();
                if let Some(r) = r {
                    replies.extend(frame::encode(&r));
                }
            }
            Err(()) => return (replies, true),
        }
    }
}

/// Answers one frame, demultiplexed by its first byte; `Err` ends the connection.
fn answer(
    shared: &Shared,
    conn: &mut Conn,
    payload: &[u8],
    out: &mut [u8],
) -> Result<Option<Vec<u8>>, ()> {
    let peer: SocketAddr = conn.channel.peer;
    match classify(payload) {
        Kind::Stun => {
            let now = shared.now_us();
            let mut core = shared.core();
            core.set_wall_ms(crate::control::wall_ms());
            let refused_before = unauthenticated(&core.stats);
            let n = core.on_stun_tcp(now, peer, payload, out);
            // With a token, a frame that does not prove it ends the connection.
            if core.token().is_some() && unauthenticated(&core.stats) > refused_before {
                return Err(());
            }
            Ok(n.map(|n| out[..n].to_vec()))
        }
        Kind::Echo => {
            let now = shared.now_us();
            let mut core = shared.core();
            let verified_before = core.stats.echo_requests;
            let refused_before = unauthenticated(&core.stats);
            let n = core.on_echo(now, peer.ip(), Transport::Tcp, payload, out);
            if core.stats.echo_requests > verified_before && conn.channel.session.is_none() {
                // Verified echo of a live session: this connection now serves it.
                conn.echo_of = echo::peek_request(payload).ok().map(|h| h.session);
            } else if core.token().is_some() && unauthenticated(&core.stats) > refused_before {
                return Err(());
            }
            Ok(n.map(|n| out[..n].to_vec()))
        }
        _ if payload.first() == Some(&CONTROL_TAG) && conn.tls => {
            conn.channel.handle_payload(shared, payload)
        }
        // Only a client from before TLS on TCP sends control in clear: it gets told why not.
        _ if payload.first() == Some(&CONTROL_TAG) => conn.channel.refuse_plain(shared, payload),
        // Like RTCD's TCP mux: a frame that is none of ours ends the connection.
        _ => {
            shared.core().stats.drop_malformed += 1;
            Err(())
        }
    }
}

/// Frames refused for not proving anything (malformed, bad credentials or MAC, no session).
fn unauthenticated(s: &probe_proto::session::ServerStats) -> u64 {
    s.drop_malformed
        + s.drop_unauthenticated
        + s.ice_bad_credentials
        + s.drop_bad_mac
        + s.drop_unknown_session
        + s.drop_wrong_peer
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: (what the client writes into, the server's side).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        (c, l.accept().await.expect("accept").0)
    }

    #[tokio::test]
    async fn the_first_frame_is_peeked_whole_and_left_unread() {
        let (mut c, s) = pair().await;
        let frame = frame::encode(b"\x00\x01STUN-ish");
        // In two pieces, the second a little later: the peek waits for the whole frame.
        c.write_all(&frame[..3]).await.expect("write");
        let rest = frame[3..].to_vec();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(&rest).await.expect("write");
            c
        });
        let by = Instant::now() + Duration::from_secs(2);
        let mut peeks = 0;
        let got = peek_first_frame(&s, by, &mut peeks).await;
        assert_eq!(got.as_deref(), Some(&b"\x00\x01STUN-ish"[..]));
        assert!(peeks <= 3, "one peek per arrival, not per tick: {peeks}");
        // Nothing was consumed: the reader still gets the frame from its first byte.
        let mut s = s;
        let mut back = vec![0u8; frame.len()];
        s.read_exact(&mut back).await.expect("read");
        assert_eq!(back, frame);
        drop(late.await);
    }

    #[tokio::test]
    async fn a_frame_that_never_completes_or_a_close_gives_nothing() {
        let (mut c, s) = pair().await;
        c.write_all(&[0x01, 0x00, 0xAA]).await.expect("write");
        let by = Instant::now() + Duration::from_millis(100);
        assert_eq!(peek_first_frame(&s, by, &mut 0).await, None, "deadline");
        let (c2, s2) = pair().await;
        drop(c2);
        let by = Instant::now() + Duration::from_secs(2);
        assert_eq!(peek_first_frame(&s2, by, &mut 0).await, None, "closed");
        drop(c);
    }

    /// A client that sends one byte and stops costs a peek or two, not one per timer tick,
    /// and is given up at the deadline.
    #[tokio::test]
    async fn a_stalled_first_frame_wakes_nothing_until_its_deadline() {
        let (mut c, s) = pair().await;
        c.write_all(&[0x05]).await.expect("write");
        let start = Instant::now();
        let mut peeks = 0;
        let got = peek_first_frame(&s, start + Duration::from_millis(400), &mut peeks).await;
        assert_eq!(got, None);
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "kept to the deadline"
        );
        assert!(peeks <= 2, "woken {peeks} times by one byte");
        drop(c);
    }
}
