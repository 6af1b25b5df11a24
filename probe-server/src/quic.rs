//! The QUIC control endpoint on the shared UDP port.

use crate::cert::Identity;
use crate::control::Channel;
use crate::shared::{canonical, ConnLimits, ConnSlot, Shared};
use anyhow::{Context, Result};
use probe_proto::frame::{self, Decoder};
use std::sync::Arc;
use std::time::Duration;

pub const ALPN: &[u8] = b"calls-probe/1";
/// A control channel that says nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(20);

pub fn server_config(id: &Identity) -> Result<quinn::ServerConfig> {
    // The same certificate and TLS settings as the TCP fallback's TLS (one pin for both).
    let tls = crate::cert::tls_server_config(id, ALPN)?;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).context("QUIC TLS config")?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(IDLE.try_into().expect("small duration")));
    transport.max_concurrent_uni_streams(0u8.into());
    transport.max_concurrent_bidi_streams(1u8.into());
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// A connection must say hello within this time of its first packet: the TLS handshake
/// counts against it, so a handshake left hanging does not hold a slot either.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

pub async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, limits: Arc<ConnLimits>) {
    while let Some(incoming) = endpoint.accept().await {
        let ip = canonical(incoming.remote_address()).ip();
        let now = shared.now_us();
        // Validate the address first (Retry) so an unvalidated source gets one small packet,
        // not the 3x amplification QUIC would otherwise allow. Before Retry the source may be
        // spoofed: it is judged by the UDP table; after, by a table of its own. A Retry leaves
        // no state behind: quinn's token is sealed, not stored, and the Initial gate notes only
        // the IDs of the server's own Initials, which go to validated addresses alone.
        if !incoming.remote_address_validated() {
            if shared.core().admit_unauthenticated(ip, now) {
                let _ = incoming.retry();
            } else {
                incoming.ignore();
            }
            continue;
        }
        if !shared.core().admit_validated_quic(ip, now) {
            incoming.ignore();
            continue;
        }
        let Some(slot) = limits.acquire(ip) else {
            shared.core().stats.drop_rate_limited += 1;
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let peer = canonical(incoming.remote_address());
            let hello_by = tokio::time::Instant::now() + HELLO_WITHIN;
            let handshake = tokio::select! {
                r = tokio::time::timeout_at(hello_by, incoming) => r,
                _ = slot.displaced() => {
                    shared.core().stats.conn_displaced += 1;
                    return;
                }
            };
            match handshake {
                Ok(Ok(conn)) => {
                    tokio::select! {
                        _ = handle(&conn, &shared, hello_by, &slot) => {}
                        _ = slot.displaced() => shared.core().stats.conn_displaced += 1,
                    }
                    conn.close(0u32.into(), b"done");
                }
                Ok(Err(e)) => tracing::debug!(%peer, "QUIC handshake failed: {e}"),
                Err(_) => shared.core().stats.conn_no_progress += 1,
            }
            drop(slot);
        });
    }
}

async fn handle(
    conn: &quinn::Connection,
    shared: &Shared,
    hello_by: tokio::time::Instant,
    slot: &ConnSlot,
) {
    let mut channel = Channel::new(canonical(conn.remote_address()), "quic");
    let (mut send, mut recv) = match tokio::time::timeout_at(hello_by, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return,
        Err(_) => {
            shared.core().stats.conn_no_progress += 1;
            return;
        }
    };
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    'read: loop {
        // Keep-alives keep QUIC up, so liveness is judged on the session: no hello in
        // time, or a session the core expired (idle or over its lifetime), ends the channel.
        let n = tokio::select! {
            r = recv.read(&mut buf) => match r {
                Ok(Some(n)) => n,
                _ => break,
            },
            _ = tick.tick() => {
                let alive = match channel.session {
                    Some(id) => shared.session_alive(id),
                    None => tokio::time::Instant::now() < hello_by,
                };
                if channel.session.is_none() && !alive {
                    shared.core().stats.conn_no_progress += 1;
                }
                if !alive {
                    break;
                }
                continue;
            }
        };
        dec.push(&buf[..n]);
        loop {
            let payload = match dec.next_frame() {
                Ok(Some(p)) => p.to_vec(),
                Ok(None) => break,
                Err(_) => break 'read,
            };
            let answer = channel.handle_payload(shared, &payload);
            if channel.session.is_some() {
                slot.progressed();
            }
            match answer {
                Ok(Some(answer)) => {
                    if send.write_all(&frame::encode(&answer)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => {}
                Err(()) => break 'read,
            }
        }
    }
    channel.close(shared);
}
