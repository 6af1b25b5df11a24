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

/// All entries, and all URLs of an entry, are tried side by side within this bound (DNS
/// included), as pion gathers from every URL at once.
pub const BOUND: Duration = Duration::from_secs(4);
/// One Allocate transaction, retransmissions included.
const TRANSACTION: Duration = Duration::from_secs(3);

/// How one entry (or one of its URLs) fared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tried {
    /// The URL that allocated, and the relayed address.
    Allocated(String, SocketAddr),
    /// TCP or TLS TURN only: counted on as configured.
    Untried,
    /// Why not, with what to check.
    Failed(String),
}

/// Tries RTCD's server-side TURN entries and records the outcome in `cfg.relay_failed` and
/// `cfg.relay_allocated`; logs what it found. Does nothing without server-side TURN.
pub fn check_into(cfg: &mut RtcdConfig) {
    let entries: Vec<IceServer> = cfg.configured_relays().into_iter().cloned().collect();
    if entries.is_empty() {
        return;
    }
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let minutes = u64::try_from(cfg.turn.credentials_expiration_minutes.max(1)).unwrap_or(1);
    let (tx, rx) = mpsc::channel();
    for (i, e) in entries.iter().enumerate() {
        let (tx, e) = (tx.clone(), e.clone());
        let creds = credentials(&e, &cfg.turn.static_auth_secret, now_unix + minutes * 60);
        // Detached: a thread stuck in DNS ends on its own; the verdict does not wait for it.
        std::thread::spawn(move || {
            let _ = tx.send((i, try_entry(&e, &creds)));
        });
    }
    drop(tx);
    let results = collect(&rx, entries.len(), Instant::now() + BOUND);
    cfg.relay_failed.clear();
    cfg.relay_allocated.clear();
    for (e, r) in entries.iter().zip(results) {
        let url = e.urls.first().cloned().unwrap_or_default();
        match r {
            Tried::Allocated(by, relayed) => {
                tracing::info!("RTCD's server-side TURN {by}: allocated relay {relayed} from this host");
                cfg.relay_allocated.push((url, by));
            }
            Tried::Untried => tracing::info!(
                "RTCD's server-side TURN {url}: not tried (TCP or TLS TURN only), counted on as configured"
            ),
            Tried::Failed(why) => {
                // Each cause names its URL (an entry that never reported names them all).
                let why = if e.urls.iter().any(|u| why.starts_with(u.as_str())) {
                    why
                } else {
                    format!("{}: {why}", e.urls.join(", "))
                };
                tracing::warn!(
                    "RTCD's server-side TURN did not allocate a relay from this host ({why}): RTCD gathers \
                     no relay candidate there, so it is not counted on"
                );
                cfg.relay_failed.push((url, why));
            }
        }
    }
}

/// The results of `n` tries sent on `rx`, in order; one that did not come by `deadline` failed.
fn collect(rx: &mpsc::Receiver<(usize, Tried)>, n: usize, deadline: Instant) -> Vec<Tried> {
    let mut results: Vec<Option<Tried>> = vec![None; n];
    while results.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, r)) => results[i] = Some(r),
            Err(_) => break,
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Tried::Failed(format!(
                    "no answer within {} s: check that RTCD's host resolves and reaches the TURN server",
                    BOUND.as_secs()
                ))
            })
        })
        .collect()
}

/// The credentials RTCD would give pion for this entry (rtcd sfu.go:236-245): its own when it
/// has any, else REST credentials from the static secret (turn.go `genTURNCredentials`).
fn credentials(e: &IceServer, secret: &str, expiry_unix: u64) -> rest::Credentials {
    if own_credentials(e) {
        return rest::Credentials {
            username: e.username.clone(),
            password: e.credential.clone(),
        };
    }
    rest::credentials(secret, "probe-server", expiry_unix)
}

fn own_credentials(e: &IceServer) -> bool {
    !e.username.is_empty() || !e.credential.is_empty()
}

/// Every URL of the entry at once: allocated when one allocates (pion gathers from all of
/// them), not tried when none could be tried over UDP, else failed with the first URL's why.
fn try_entry(e: &IceServer, creds: &rest::Credentials) -> Tried {
    let (tx, rx) = mpsc::channel();
    let own = own_credentials(e);
    for (i, url) in e.urls.iter().enumerate() {
        let (tx, url, creds) = (tx.clone(), url.clone(), creds.clone());
        std::thread::spawn(move || {
            let r = match uri::parse(&url) {
                Ok(u) if u.transports.contains(&TurnTransport::Udp) => {
                    match allocate_udp(&u.authority(), &creds) {
                        Ok(relayed) => Tried::Allocated(url.clone(), relayed),
                        Err(why) => Tried::Failed(format!("{url}: {}", with_fix(&why, own))),
                    }
                }
                _ => Tried::Untried,
            };
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    let all = collect(&rx, e.urls.len(), Instant::now() + BOUND);
    if let Some(a) = all.iter().find(|r| matches!(r, Tried::Allocated(..))) {
        return a.clone();
    }
    if all.contains(&Tried::Untried) {
        return Tried::Untried;
    }
    // Every URL's cause: the first may hide the one that matters (a 401 behind a dead URL).
    let whys: Vec<String> = all
        .into_iter()
        .zip(&e.urls)
        .filter_map(|(r, u)| match r {
            Tried::Failed(why) if why.starts_with(u.as_str()) => Some(why),
            Tried::Failed(why) => Some(format!("{u}: {why}")),
            _ => None,
        })
        .collect();
    Tried::Failed(whys.join("; "))
}

/// A failure with what to check, by its cause.
fn with_fix((kind, why): &Failure, own_credentials: bool) -> String {
    let fix = match kind {
        Kind::Auth if own_credentials => {
            "check the entry's username and credential, which RTCD uses instead of the secret"
        }
        Kind::Auth => {
            "check that turn.static_auth_secret is the TURN server's shared secret (coturn: use-auth-secret with static-auth-secret)"
        }
        Kind::Dns => "check that RTCD's host resolves the TURN server's name to an IPv4 address (DNS)",
        Kind::Refused => "check that the TURN server runs and listens on that UDP port",
        Kind::Silent => "check that RTCD's host reaches the TURN server's UDP port (firewall)",
        Kind::Other => "check the TURN server's log for this allocation",
    };
    format!("{why}: {fix}")
}

/// What kind of failure an allocation met, which decides what to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dns,
    /// ICMP port unreachable: nothing listens there.
    Refused,
    /// No answer at all.
    Silent,
    /// 401 (with credentials) or 441: the credentials.
    Auth,
    Other,
}

/// A failed allocation: its kind and, in words, what happened.
type Failure = (Kind, String);

/// One Allocate over UDP to `authority`, over IPv4 as pion's relay gathering does (it listens
/// on `udp4` and resolves the TURN server for it); the relayed address, or why not.
fn allocate_udp(authority: &str, creds: &rest::Credentials) -> Result<SocketAddr, Failure> {
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| (Kind::Dns, format!("cannot resolve {authority}: {e}")))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| (Kind::Dns, format!("{authority} has no IPv4 address")))?;
    let other = |what: String| (Kind::Other, what);
    let sock = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| other(format!("no UDP socket: {e}")))?;
    sock.connect(addr)
        .map_err(|e| other(format!("cannot reach {addr}: {e}")))?;
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
    let send = |b: &[u8]| {
        sock.send(b)
            .map(|_| ())
            .map_err(|e| other(format!("{addr}: {e}")))
    };
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
                return Err((
                    Kind::Refused,
                    format!("no TURN server listens on {addr} (port unreachable)"),
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
                    client::Cause::Unreachable => (Kind::Silent, format!("no answer from {addr}")),
                    client::Cause::Auth => (Kind::Auth, error.to_string()),
                    _ => other(error.to_string()),
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
        let failure = allocate_udp(&format!("127.0.0.1:{port}"), &creds).unwrap_err();
        let err = &failure.1;
        assert!(err.contains("port unreachable"), "{err}");
        assert!(
            with_fix(&failure, false).ends_with("listens on that UDP port"),
            "{err}"
        );
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
        // A dead UDP URL beside a TCP one: pion may still gather over TCP, so not failed.
        let mut cfg = RtcdConfig::from_toml_str(&format!(
            "[rtc]\nice_servers = [{{urls = [\"turn:127.0.0.1:{port}\", \"turn:127.0.0.1:{port}?transport=tcp\"]}}]\nturn.static_auth_secret = \"s\"\n"
        ))
        .unwrap();
        check_into(&mut cfg);
        assert!(cfg.relay_failed.is_empty(), "{:?}", cfg.relay_failed);
        assert!(cfg.relay_allocated.is_empty());
        assert_eq!(cfg.relay_servers().len(), 1);
    }
}
