//! The TCP port: RFC 4571 frames, each demultiplexed by its first byte like the UDP port —
//! STUN, echo, or a control message when UDP is blocked and QUIC cannot run.

use crate::control::Channel;
use crate::shared::{canonical, ConnLimits, Shared};
use probe_proto::demux::{classify, Kind};
use probe_proto::frame::{self, Decoder};
use probe_proto::msg::{Transport, CONTROL_TAG};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `idle`: a connection that completes no frame for this long is closed (RTCD uses 30 s).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    idle: Duration,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let now = shared.now_us();
                if !shared
                    .core()
                    .admit_unauthenticated(canonical(peer).ip(), now)
                {
                    continue;
                }
                // At a cap, new connections are closed at once rather than queued.
                let Some(slot) = limits.acquire(canonical(peer).ip()) else {
                    shared.core().stats.drop_rate_limited += 1;
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle(stream, shared, idle).await;
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

async fn handle(mut stream: TcpStream, shared: Arc<Shared>, idle: Duration) {
    let Ok(peer) = stream.peer_addr().map(canonical) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut channel = Channel::new(peer, "tcp");
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 8192];
    let mut out = vec![0u8; 2048];
    // Idle means no complete frame: a byte now and then (slow loris) does not keep a slot.
    let mut last_frame = tokio::time::Instant::now();
    loop {
        let deadline = last_frame + idle;
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        if channel.session.is_some_and(|id| !shared.session_alive(id)) {
            break;
        }
        dec.push(&buf[..n]);
        let mut replies = Vec::new();
        // Frames are answered in order; a frame that ends the connection still lets the
        // answers to the frames before it go out.
        let mut close = false;
        loop {
            let payload = match dec.next_frame() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(_) => {
                    shared.core().stats.drop_malformed += 1;
                    close = true;
                    break;
                }
            };
            last_frame = tokio::time::Instant::now();
            match answer(&shared, &mut channel, peer, payload, &mut out) {
                Ok(Some(r)) => replies.extend(frame::encode(&r)),
                Ok(None) => {}
                Err(()) => {
                    close = true;
                    break;
                }
            }
        }
        // A peer that never reads must not pin the connection either.
        if !replies.is_empty()
            && !matches!(
                tokio::time::timeout(idle, stream.write_all(&replies)).await,
                Ok(Ok(()))
            )
        {
            break;
        }
        if close {
            break;
        }
    }
    channel.close(&shared);
}

/// Answers one frame, demultiplexed by its first byte; `Err` ends the connection.
fn answer(
    shared: &Shared,
    channel: &mut Channel,
    peer: SocketAddr,
    payload: &[u8],
    out: &mut [u8],
) -> Result<Option<Vec<u8>>, ()> {
    match classify(payload) {
        Kind::Stun => {
            let now = shared.now_us();
            Ok(shared
                .core()
                .on_stun(now, peer, payload, out)
                .map(|n| out[..n].to_vec()))
        }
        Kind::Echo => {
            let now = shared.now_us();
            let n = shared
                .core()
                .on_echo(now, peer.ip(), Transport::Tcp, payload, out);
            Ok(n.map(|n| out[..n].to_vec()))
        }
        _ if payload.first() == Some(&CONTROL_TAG) => channel.handle_payload(shared, payload),
        // Like RTCD's TCP mux: a frame that is none of ours ends the connection.
        _ => {
            shared.core().stats.drop_malformed += 1;
            Err(())
        }
    }
}
