//! The TCP port: RFC 4571 frames, each demultiplexed by its first byte like the UDP port —
//! STUN, echo, or a control message when UDP is blocked and QUIC cannot run.
//!
//! The first byte of a connection says what it carries: 0x16 (a TLS handshake record) opens
//! TLS 1.3 with the QUIC certificate, inside which the same RFC 4571 frames flow and control
//! messages are served; 0x00–0x05 (the length of a frame under 1,536 bytes) is plain framing,
//! which carries STUN and echo as ICE-TCP does, but no session: a hello there only gets a
//! refusal, so a session key or ICE password never crosses in clear. Anything else is closed.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        0..=PLAIN_FIRST_MAX => serve_frames(stream, conn(false), shared, idle, slot).await,
        // Like RTCD's TCP mux: a stream that is none of ours is closed at once.
        _ => shared.core().stats.drop_malformed += 1,
    }
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
