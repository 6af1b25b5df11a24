//! Our own RFC 8445 connectivity checks over UDP, one target `IP:PORT` at a time.
//!
//! The ICE agent alone cannot judge an advertised candidate: against a full agent it may connect
//! through a peer-reflexive pair while the advertised address is dead. Here a target passes only
//! when a Binding success response with the server's MESSAGE-INTEGRITY comes back from exactly
//! that `IP:PORT`.
//!
//! The checks leave from one unconnected socket, which also sees an answer from the wrong
//! address. The first check to each target also leaves from a socket connected to it (a
//! sentinel): only a connected socket is told of an ICMP port unreachable (ECONNREFUSED;
//! WSAECONNRESET on Windows), so a closed or rejected port reads REFUSED, as the echo does,
//! rather than as silence.

use super::{Creds, Outcome};
use probe_proto::stun;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Retransmission pace per target: ~4 checks/s each keeps the server's unauthenticated
/// rate limit (50 packets/s per source by default) far away, even beside the ICE agent.
const PACE: Duration = Duration::from_millis(250);

struct Target {
    addr: SocketAddr,
    /// When each still-awaited transaction was sent.
    sent: HashMap<stun::TransactionId, Instant>,
    result: Option<Outcome>,
    /// The most telling reason so far why it did not pass.
    detail: Option<String>,
}

/// Checks every target until it passes or `bound` elapses; results in `targets` order.
pub async fn check_all(targets: &[SocketAddr], creds: &Creds, bound: Duration) -> Vec<Outcome> {
    let pick = |v4: bool| -> (Vec<usize>, Vec<SocketAddr>) {
        targets
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_ipv4() == v4)
            .map(|(i, a)| (i, *a))
            .unzip()
    };
    let ((i4, a4), (i6, a6)) = (pick(true), pick(false));
    let (o4, o6) = tokio::join!(
        check_family(&a4, "0.0.0.0:0", creds, bound),
        check_family(&a6, "[::]:0", creds, bound)
    );
    let mut out: Vec<Outcome> = vec![Outcome::default(); targets.len()];
    for (i, o) in i4.into_iter().zip(o4).chain(i6.into_iter().zip(o6)) {
        out[i] = o;
    }
    out
}

async fn check_family(
    addrs: &[SocketAddr],
    bind: &str,
    creds: &Creds,
    bound: Duration,
) -> Vec<Outcome> {
    if addrs.is_empty() {
        return Vec::new();
    }
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("ICE-UDP socket: {e}");
            let detail = format!(
                "cannot open a UDP socket: {}",
                super::error_kind(&e.to_string())
            );
            return addrs.iter().map(|_| Outcome::failed(&detail)).collect();
        }
    };
    let mut targets: Vec<Target> = addrs
        .iter()
        .map(|&addr| Target {
            addr,
            sent: HashMap::new(),
            result: None,
            detail: None,
        })
        .collect();
    let deadline = Instant::now() + bound;
    let mut tick = tokio::time::interval(PACE);
    let mut buf = vec![0u8; 2048];
    let (news, mut heard) = tokio::sync::mpsc::channel(addrs.len().max(1));
    // Dropped with this function: no sentinel outlives the checks.
    let _sentinels = spawn_sentinels(&mut targets, bind, creds, deadline, news);
    while targets.iter().any(|t| t.result.is_none()) {
        tokio::select! {
            Some(h) = heard.recv() => on_heard(&mut targets, h, creds),
            _ = tick.tick() => send_round(&sock, &mut targets, creds).await,
            r = sock.recv_from(&mut buf) => {
                // Errors here are ICMP reports surfacing on some platforms (Windows reports
                // WSAECONNRESET on unconnected sockets): keep listening until the deadline.
                let Ok((n, src)) = r else { continue };
                on_answer(&mut targets, &buf[..n], src, creds);
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let secs = bound.as_secs_f64();
    targets
        .into_iter()
        .map(|t| {
            t.result.unwrap_or_else(|| {
                Outcome::failed(
                    &t.detail
                        .unwrap_or_else(|| format!("no answer within {secs:.1} s")),
                )
            })
        })
        .collect()
}

/// One check to every target still open, from the shared socket.
async fn send_round(sock: &UdpSocket, targets: &mut [Target], creds: &Creds) {
    let username = creds.username();
    for t in targets.iter_mut().filter(|t| t.result.is_none()) {
        let (tid, req) = new_check(creds, &username);
        match sock.send_to(&req, t.addr).await {
            Ok(_) => {
                t.sent.insert(tid, Instant::now());
            }
            Err(e) => {
                tracing::debug!("ICE-UDP send to {}: {e}", t.addr);
                t.detail = Some(format!(
                    "cannot send: {}",
                    super::error_kind(&e.to_string())
                ));
            }
        }
    }
}

/// A sentinel per target, each with its own check (see the module docs).
fn spawn_sentinels(
    targets: &mut [Target],
    bind: &str,
    creds: &Creds,
    deadline: Instant,
    news: tokio::sync::mpsc::Sender<Heard>,
) -> tokio::task::JoinSet<()> {
    let username = creds.username();
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.iter_mut().enumerate() {
        let (tid, req) = new_check(creds, &username);
        t.sent.insert(tid, Instant::now());
        set.spawn(sentinel(
            i,
            t.addr,
            bind.to_owned(),
            req,
            deadline,
            news.clone(),
        ));
    }
    set
}

/// A connectivity check with a fresh transaction id.
fn new_check(creds: &Creds, username: &str) -> (stun::TransactionId, Vec<u8>) {
    let tid: stun::TransactionId = crate::control::rand_bytes();
    (tid, stun::ice_check_request(&creds.check(tid, username)))
}

fn on_heard(targets: &mut [Target], h: Heard, creds: &Creds) {
    match h {
        Heard::Answer(i, pkt) => {
            let src = targets[i].addr;
            on_answer(targets, &pkt, src, creds);
        }
        Heard::Refused(i) => {
            let t = &mut targets[i];
            if t.result.is_none() {
                t.result = Some(Outcome::failed("port unreachable: connection refused"));
            }
        }
    }
}

/// What a sentinel heard from its target.
enum Heard {
    /// A datagram from exactly the target (the socket is connected to it).
    Answer(usize, Vec<u8>),
    /// The target's host (or a firewall before it) answered "port unreachable".
    Refused(usize),
}

/// Sends a check to target `i` from a socket connected to it and reports what comes back
/// before `deadline`; nothing when the socket cannot be had (the shared socket still checks).
async fn sentinel(
    i: usize,
    target: SocketAddr,
    bind: String,
    req: Vec<u8>,
    deadline: Instant,
    news: tokio::sync::mpsc::Sender<Heard>,
) {
    let Ok(sock) = UdpSocket::bind(bind.as_str()).await else {
        return;
    };
    if sock.connect(target).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 2048];
    // The same check up to three times (a retransmission): one ICMP answer can be lost, or
    // held back by the kernel's ICMP rate limit.
    for attempt in 0..SENTINEL_SENDS {
        if let Err(e) = sock.send(&req).await {
            if crate::echo::is_refusal(&e) {
                let _ = news.send(Heard::Refused(i)).await;
            }
            return;
        }
        let until = if attempt + 1 == SENTINEL_SENDS {
            deadline
        } else {
            (Instant::now() + PACE).min(deadline)
        };
        let heard = match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => Heard::Answer(i, buf[..n].to_vec()),
            Ok(Err(e)) if crate::echo::is_refusal(&e) => Heard::Refused(i),
            Ok(Err(_)) => return,
            Err(_) if until < deadline => continue,
            Err(_) => return,
        };
        let _ = news.send(heard).await;
        return;
    }
}

/// Sends of a sentinel's check at most.
const SENTINEL_SENDS: u32 = 3;

fn on_answer(targets: &mut [Target], pkt: &[u8], src: SocketAddr, creds: &Creds) {
    let Ok(m) = stun::decode(pkt) else { return };
    let Some(t) = targets.iter_mut().find(|t| t.sent.contains_key(&m.tid)) else {
        return;
    };
    let src = SocketAddr::new(src.ip().to_canonical(), src.port());
    if t.result.is_some() {
        return;
    }
    if let Some(d) = super::judge(&m, pkt, src, t.addr, creds) {
        t.detail = Some(d);
        return;
    }
    let sent_at = t.sent[&m.tid];
    t.result = Some(Outcome::passed(sent_at.elapsed()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const PWD: &str = "serverPasswordOf22Chars";

    fn creds() -> Creds {
        Creds {
            remote_ufrag: "srv".into(),
            remote_pwd: PWD.into(),
            local_ufrag: "cli".into(),
            tiebreaker: 7,
        }
    }

    /// Answers each check received on `rx` with the given key, sending from `tx`.
    fn responder(rx: Arc<UdpSocket>, tx: Arc<UdpSocket>, key: &'static str) {
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = rx.recv_from(&mut buf).await {
                let Ok(m) = stun::decode(&buf[..n]) else {
                    continue;
                };
                assert_eq!(m.username.as_deref(), Some("srv:cli"));
                assert!(stun::check_integrity(&buf[..n], PWD.as_bytes()));
                let reply = stun::binding_response(m.tid, from, Some(key.as_bytes()));
                let _ = tx.send_to(&reply, from).await;
            }
        });
    }

    async fn sock() -> Arc<UdpSocket> {
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    }

    #[tokio::test]
    async fn only_integrity_checked_answers_from_the_target_pass() {
        let good = sock().await;
        responder(good.clone(), good.clone(), PWD);
        // Answers through another socket: a valid answer from the wrong address (peer-reflexive).
        let relay = sock().await;
        responder(relay.clone(), good.clone(), PWD);
        // Another agent's password.
        let foreign = sock().await;
        responder(foreign.clone(), foreign.clone(), "someoneElsesPassword!!");
        // Silent.
        let silent = sock().await;
        let targets: Vec<SocketAddr> = [&good, &relay, &foreign, &silent]
            .iter()
            .map(|s| s.local_addr().unwrap())
            .collect();
        let out = check_all(&targets, &creds(), Duration::from_millis(600)).await;
        assert!(out[0].ok && out[0].rtt_ms.is_some(), "{:?}", out[0]);
        assert!(!out[1].ok);
        assert!(
            out[1].detail.as_deref().unwrap().contains("came from"),
            "{:?}",
            out[1]
        );
        assert!(!out[2].ok);
        assert!(out[2]
            .detail
            .as_deref()
            .unwrap()
            .contains("MESSAGE-INTEGRITY"));
        assert!(!out[3].ok);
        assert!(out[3].detail.as_deref().unwrap().starts_with("no answer"));
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_not_silent() {
        // Nothing listens there: loopback answers "port unreachable", which only the
        // sentinel's connected socket is told of.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let good = sock().await;
        responder(good.clone(), good.clone(), PWD);
        let targets = [addr, good.local_addr().unwrap()];
        let bound = Duration::from_secs(5);
        let started = Instant::now();
        let out = check_all(&targets, &creds(), bound).await;
        assert!(!out[0].ok);
        let detail = out[0].detail.as_deref().unwrap();
        // The report shows REFUSED for a detail ending so (report.rs).
        assert!(detail.ends_with("refused"), "{detail}");
        assert!(out[1].ok, "{:?}", out[1]);
        assert!(started.elapsed() < bound, "a refusal ends the check early");
    }
}
