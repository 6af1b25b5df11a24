//! RTCD's server-side TURN, tried from RTCD's host the way RTCD uses it.
//!
//! With a `turn:` entry in `ice_servers` and `turn.static_auth_secret`, RTCD hands pion the TURN
//! server with credentials it makes per session (rtcd `service/rtc/sfu.go:231-252`; explicit
//! `username`/`credential` are used as they are), and pion gathers a relay candidate there.
//! Private host candidates are then no failure: users connect through the relay. But a wrong
//! secret, or a TURN server RTCD's host cannot reach, gives no relay candidate, and the calls fail
//! as if there were no TURN at all. So before the verdicts count on the relay, one Allocate per
//! entry is tried from this host, with the credentials RTCD would use; an entry none of whose
//! UDP URLs allocates is left out of [`RtcdConfig::relay_servers`] (`relay_failed`).
//!
//! Only `turn:` URLs over UDP are tried: TCP and TLS TURN are left as configured (not judged).
//! The allocation is released at once (Refresh with lifetime 0).

use probe_proto::rtcd::{IceServer, RtcdConfig};
use probe_proto::turn::client::{self, Client, Config, Event, Output};
use probe_proto::turn::{rest, uri, TurnTransport};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// All entries are tried side by side within this bound (DNS included).
pub const BOUND: Duration = Duration::from_secs(4);
/// One Allocate transaction, retransmissions included.
const TRANSACTION: Duration = Duration::from_secs(3);

/// Tries RTCD's server-side TURN entries and records the ones that failed in
/// `cfg.relay_failed`; logs what it found. Does nothing without server-side TURN.
pub fn check_into(cfg: &mut RtcdConfig) {
    let entries: Vec<IceServer> = cfg.configured_relays().into_iter().cloned().collect();
    if entries.is_empty() {
        return;
    }
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let minutes = u64::try_from(cfg.turn.credentials_expiration_minutes.max(1)).unwrap_or(1);
    let secret = cfg.turn.static_auth_secret.clone();
    let (tx, rx) = mpsc::channel();
    for (i, e) in entries.iter().enumerate() {
        let (tx, e, secret) = (tx.clone(), e.clone(), secret.clone());
        let creds = credentials(&e, &secret, now_unix + minutes * 60);
        // Detached: a thread stuck in DNS ends on its own; the verdict does not wait for it.
        std::thread::spawn(move || {
            let _ = tx.send((i, try_entry(&e, &creds)));
        });
    }
    drop(tx);
    let deadline = Instant::now() + BOUND;
    let mut results: Vec<Option<Result<String, String>>> = vec![None; entries.len()];
    while results.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, r)) => results[i] = Some(r),
            Err(_) => break,
        }
    }
    cfg.relay_failed.clear();
    for (e, r) in entries.iter().zip(results) {
        let url = e.urls.first().cloned().unwrap_or_default();
        let r = r.unwrap_or_else(|| {
            Err(format!(
                "no answer within {} s (DNS or the TURN server)",
                BOUND.as_secs()
            ))
        });
        match r {
            Ok(what) => tracing::info!("RTCD's server-side TURN {url}: {what}"),
            Err(why) => {
                tracing::warn!(
                    "RTCD's server-side TURN {url} did not allocate a relay from this host ({why}): RTCD gathers \
                     no relay candidate there, so it is not counted on; {}",
                    fix_for(&why)
                );
                cfg.relay_failed.push((url, why));
            }
        }
    }
}

/// The credentials RTCD would give pion for this entry (rtcd sfu.go:236-245): its own when it
/// has any, else REST credentials from the static secret (turn.go `genTURNCredentials`).
fn credentials(e: &IceServer, secret: &str, expiry_unix: u64) -> rest::Credentials {
    if !e.username.is_empty() || !e.credential.is_empty() {
        return rest::Credentials {
            username: e.username.clone(),
            password: e.credential.clone(),
        };
    }
    rest::credentials(secret, "probe-server", expiry_unix)
}

/// What to do about a failed allocation, by its cause.
pub fn fix_for(why: &str) -> &'static str {
    if why.starts_with("401") || why.starts_with("441") {
        "check that turn.static_auth_secret is the TURN server's shared secret (coturn: use-auth-secret with static-auth-secret)"
    } else if why.starts_with("no answer") || why.starts_with("no response") {
        "check that RTCD's host reaches the TURN server's UDP port (firewall, DNS)"
    } else {
        "check the TURN server's log for this allocation"
    }
}

/// Ok(what) when one of the entry's UDP URLs allocated, or none could be tried over UDP;
/// Err(why) of the last URL tried otherwise.
fn try_entry(e: &IceServer, creds: &rest::Credentials) -> Result<String, String> {
    let mut last = None;
    for url in &e.urls {
        let Ok(u) = uri::parse(url) else { continue };
        if !u.transports.contains(&TurnTransport::Udp) {
            continue;
        }
        match allocate_udp(&u.authority(), creds) {
            Ok(relayed) => return Ok(format!("allocated relay {relayed} from this host")),
            Err(why) => last = Some(why),
        }
    }
    match last {
        Some(why) => Err(why),
        None => Ok("not tried (no turn: URL over UDP; TCP and TLS TURN are not checked)".into()),
    }
}

/// One Allocate over UDP to `authority`; the relayed address, or why not.
fn allocate_udp(authority: &str, creds: &rest::Credentials) -> Result<SocketAddr, String> {
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("no UDP socket: {e}"))?;
    sock.connect(addr)
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let mut c = Client::new(
        Config {
            username: creds.username.clone(),
            password: creds.password.clone(),
            stream: false,
            timeout: TRANSACTION,
            software: Some(format!("probe-server {}", env!("CARGO_PKG_VERSION"))),
            ipv6_relay: false,
        },
        seed(),
    );
    let send = |b: &[u8]| sock.send(b).map(|_| ()).map_err(|e| format!("{addr}: {e}"));
    send(&c.allocate(Instant::now()))?;
    let mut buf = vec![0u8; 2048];
    loop {
        let wait = c
            .poll_timeout()
            .map_or(Duration::from_millis(1), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .max(Duration::from_millis(1));
        let _ = sock.set_read_timeout(Some(wait));
        let out = match sock.recv(&mut buf) {
            Ok(n) => c.handle(Instant::now(), &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(format!(
                    "no TURN server listens on {addr} (port unreachable)"
                ));
            }
            Err(_) => c.handle_timeout(Instant::now()),
        };
        match out {
            Output::Transmit(b) => send(&b)?,
            Output::Event(Event::Allocated { relayed, .. }) => {
                // Released at once: nothing is relayed through it.
                let _ = sock.send(&c.refresh(Instant::now(), 0));
                return Ok(relayed);
            }
            Output::Event(Event::Failed { error, .. }) => {
                return Err(match client::cause(&error) {
                    client::Cause::Unreachable => format!("no answer from {addr}"),
                    _ => error.to_string(),
                });
            }
            _ => {}
        }
    }
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    // Transaction ids only: a clock-derived fallback is enough if the OS has no randomness.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        s[..16].copy_from_slice(&t.to_le_bytes());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_rtcds_own_or_made_from_the_secret() {
        let own = IceServer {
            urls: vec!["turn:t.example.com".into()],
            username: "u".into(),
            credential: "p".into(),
        };
        let c = credentials(&own, "s", 100);
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let made = IceServer {
            username: String::new(),
            credential: String::new(),
            ..own
        };
        let c = credentials(&made, "s", 100);
        assert_eq!(c, rest::credentials("s", "probe-server", 100));
        assert!(c.username.starts_with("100:"));
    }

    /// Nothing listens: refused at once (loopback answers with ICMP), never a hang.
    #[test]
    fn a_closed_port_fails_fast_and_says_so() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let creds = rest::credentials("s", "probe-server", 100);
        let t0 = Instant::now();
        let err = allocate_udp(&format!("127.0.0.1:{port}"), &creds).unwrap_err();
        assert!(err.contains("port unreachable"), "{err}");
        assert!(t0.elapsed() < TRANSACTION, "{:?}", t0.elapsed());
        let mut cfg = RtcdConfig::from_toml_str(&format!(
            "[rtc]\nice_servers = [\"turn:127.0.0.1:{port}\"]\nturn.static_auth_secret = \"s\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.relay_servers().len(), 1);
        check_into(&mut cfg);
        assert!(cfg.relay_servers().is_empty(), "{:?}", cfg.relay_failed);
        assert_eq!(cfg.relay_failed.len(), 1);
        assert_eq!(cfg.configured_relays().len(), 1);
    }
}
