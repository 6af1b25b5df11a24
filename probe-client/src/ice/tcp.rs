//! ICE-TCP active checks (RFC 6544): webrtc-ice has no TCP candidates, so these are ours.
//! A connection to exactly the advertised `IP:PORT`, Binding requests with the ICE credentials
//! in RFC 4571 frames, and a success response with the server's MESSAGE-INTEGRITY.

use super::{Creds, Outcome};
use crate::control::TcpLink;
use probe_proto::stun;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// TCP retransmits for us; a resend only covers a check the server's rate limit dropped.
const RESEND: Duration = Duration::from_millis(700);

pub async fn check(target: SocketAddr, creds: &Creds, bound: Duration) -> Outcome {
    let deadline = Instant::now() + bound;
    let mut link = match TcpLink::connect(target, None, bound).await {
        Ok((l, _)) => l,
        Err(e) => {
            // The OS's words stay here (they can name the user's own network); the report says
            // only what kind of failure it was.
            tracing::debug!("ICE-TCP connect to {target}: {e}");
            return Outcome::failed(&format!(
                "TCP connect failed: {}",
                super::error_kind(&e.to_string())
            ));
        }
    };
    let username = creds.username();
    let mut sent: HashMap<stun::TransactionId, Instant> = HashMap::new();
    let mut detail: Option<String> = None;
    let mut tick = tokio::time::interval(RESEND);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let tid: stun::TransactionId = crate::control::rand_bytes();
                let req = stun::ice_check_request(&creds.check(tid, &username));
                if let Err(e) = link.send(&req).await {
                    tracing::debug!("ICE-TCP send to {target}: {e}");
                    return Outcome::failed(&format!("TCP send failed: {}", super::error_kind(&e.to_string())));
                }
                sent.insert(tid, Instant::now());
            }
            f = link.next_frame() => {
                let frame = match f {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!("ICE-TCP read from {target}: {e}");
                        return Outcome::failed(&detail.unwrap_or_else(|| {
                            format!("TCP connection ended: {}", super::error_kind(&e))
                        }));
                    }
                };
                let Ok(m) = stun::decode(&frame) else { continue };
                let Some(at) = sent.get(&m.tid) else { continue };
                // The connection goes to the target and nowhere else: the source is the target.
                match super::judge(&m, &frame, target, target, creds) {
                    None => return Outcome::passed(at.elapsed()),
                    Some(d) => detail = Some(d),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let secs = bound.as_secs_f64();
                return Outcome::failed(&detail.unwrap_or_else(|| {
                    format!("connected, but no answer to the ICE check within {secs:.1} s")
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const PWD: &str = "serverPasswordOf22Chars";

    /// A passive ICE-TCP peer answering framed checks with `key`.
    async fn peer(key: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, from) = l.accept().await.unwrap();
            let mut dec = frame::Decoder::new();
            let mut buf = [0u8; 2048];
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                dec.push(&buf[..n]);
                while let Ok(Some(p)) = dec.next_frame() {
                    let m = stun::decode(p).unwrap();
                    assert!(stun::check_integrity(p, PWD.as_bytes()));
                    let reply = stun::binding_response(m.tid, from, Some(key.as_bytes()));
                    s.write_all(&frame::encode(&reply)).await.unwrap();
                }
            }
        });
        addr
    }

    fn creds() -> Creds {
        Creds {
            remote_ufrag: "srv".into(),
            remote_pwd: PWD.into(),
            local_ufrag: "cli".into(),
            tiebreaker: 7,
        }
    }

    #[tokio::test]
    async fn framed_checks_pass_only_with_the_servers_key() {
        let bound = Duration::from_millis(800);
        let ok = check(peer(PWD).await, &creds(), bound).await;
        assert!(ok.ok && ok.rtt_ms.is_some(), "{ok:?}");
        let foreign = check(peer("someoneElsesPassword!!").await, &creds(), bound).await;
        assert!(!foreign.ok);
        assert!(foreign.detail.unwrap().contains("MESSAGE-INTEGRITY"));
        // Nothing listening: the connect fails.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        let refused = check(closed, &creds(), bound).await;
        assert!(!refused.ok);
        assert!(refused.detail.unwrap().starts_with("TCP connect failed"));
    }
}
