//! The TCP fallback's control channel runs inside TLS 1.3 with the server's pinned certificate.
//!
//! - `blocked_udp_run_leaks_no_secret_on_the_wire`: UDP to the probe port is dropped by nftables;
//!   the client reaches the server through a relay in the router namespace that records every
//!   byte on both legs. TLS connections are terminated by the relay with a certificate of its
//!   own (the client has no `--pin`, so it accepts it, as it would any certificate), which lets
//!   the test read the welcome and so learn the session key and ICE password. None of them,
//!   nor the token or its key, is anywhere in the bytes that crossed the wire. Before TLS on
//!   TCP, the welcome travelled as plain RFC 4571 frames, exactly the bytes the relay reads
//!   inside TLS here, and the same search found the key there (checked below on those bytes).
//! - `an_impostor_certificate_fails_the_pin`: the same relay, with `--pin`: the run stops with
//!   the pin sentence and exit 2, as for QUIC, and no control message reached the impostor.
//! - `stalled_tls_handshake_is_closed_and_a_plain_hello_is_refused`: a TLS record that never
//!   completes a ClientHello is closed within the 10 s progress deadline; a hello in clear (an
//!   older client) gets a refusal saying why, never a welcome; a hello inside TLS gets one.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use probe_proto::auth;
use probe_proto::frame::Decoder;
use probe_proto::msg::{Control, Hello, Profile, CONTROL_TAG, PROTO_MAX, PROTO_MIN};
use probe_tests::netns::spawn_in_ns;
use probe_tests::probe::{start_server_with_state, try_run_client_env};
use probe_tests::{tls, ClientRun, Netns, Role, ServerHandle, Topology};

const PORT: u16 = 8443;
const TOKEN: &str = "tcp-tls-t0ken-do-not-leak";
const CLIENT_BOUND: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(t: &Topology, args: &[&str]) -> ServerHandle {
    start_server_with_state(
        &t.server,
        "0.0.0.0:8443",
        args,
        &Default::default(),
        Duration::from_secs(150),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// UDP to the probe port dropped on the router, toward it and through it.
fn block_udp(t: &Topology) {
    t.add_rules(
        Role::Router,
        probe_tests::Chain::Input,
        &[format!("udp dport {PORT} drop")],
    );
    t.router_forward(&[format!("udp dport {PORT} drop")]);
}

// ---------------------------------------------------------------------------------------------
// The recording relay.

/// What crossed one relayed connection.
#[derive(Default)]
struct Log {
    tls: bool,
    /// Wire bytes: client→relay, relay→client, relay→server, server→relay.
    wire: [Vec<u8>; 4],
    /// What the client sent and what it was sent, in clear (inside TLS when terminated).
    clear_up: Vec<u8>,
    clear_down: Vec<u8>,
}

/// A socket that copies what it reads and writes into one connection's log.
struct Tap {
    s: TcpStream,
    log: Arc<Mutex<Log>>,
    rx: usize,
    tx: usize,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.s.read(buf)?;
        self.log.lock().unwrap().wire[self.rx].extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.s.write(buf)?;
        self.log.lock().unwrap().wire[self.tx].extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

struct Relay {
    logs: Arc<Mutex<Vec<Arc<Mutex<Log>>>>>,
    impostor_pin: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Listens on `listen` in `ns` and relays each connection to `upstream`; a connection that
/// starts a TLS handshake is terminated with an impostor certificate and re-encrypted.
fn relay(ns: &Netns, listen: SocketAddr, upstream: SocketAddr) -> Relay {
    let (cfg, impostor_pin) = tls::impostor_config();
    let logs: Arc<Mutex<Vec<Arc<Mutex<Log>>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let l = spawn_in_ns(ns, move || TcpListener::bind(listen).expect("relay bind"))
        .join()
        .expect("bind thread");
    l.set_nonblocking(true).expect("nonblocking");
    let (logs2, stop2) = (logs.clone(), stop.clone());
    // Sockets keep the namespace they were made in: the upstream connects from this thread's.
    spawn_in_ns(ns, move || {
        while !stop2.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => {
                    let log = Arc::new(Mutex::new(Log::default()));
                    logs2.lock().unwrap().push(log.clone());
                    let (cfg, stop) = (cfg.clone(), stop2.clone());
                    std::thread::spawn(move || relay_one(c, upstream, cfg, log, stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Relay {
        logs,
        impostor_pin,
        stop,
    }
}

fn relay_one(
    c: TcpStream,
    upstream: SocketAddr,
    cfg: Arc<rustls::ServerConfig>,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
) {
    c.set_nonblocking(false).expect("blocking");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 1];
    if c.peek(&mut first).unwrap_or(0) == 0 {
        return;
    }
    let Ok(s) = TcpStream::connect_timeout(&upstream, Duration::from_secs(3)) else {
        return;
    };
    let tap = |s: TcpStream, rx, tx| Tap {
        s,
        log: log.clone(),
        rx,
        tx,
    };
    let (down, up) = (tap(c, 0, 1), tap(s, 3, 2));
    if first[0] == 0x16 {
        log.lock().unwrap().tls = true;
        let conn = rustls::ServerConnection::new(cfg).expect("server connection");
        let mut client_side = rustls::StreamOwned::new(conn, down);
        while client_side.conn.is_handshaking() {
            if client_side.conn.complete_io(&mut client_side.sock).is_err() {
                return; // the client refused the impostor (its pin)
            }
        }
        let Ok((server_side, _)) = tls::connect(up) else {
            return;
        };
        pump(client_side, server_side, &log, &stop);
    } else {
        pump(down, up, &log, &stop);
    }
}

fn set_timeout(s: &TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
}

trait Sock: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Sock for Tap {
    fn tcp(&self) -> &TcpStream {
        &self.s
    }
}

impl Sock for rustls::StreamOwned<rustls::ServerConnection, Tap> {
    fn tcp(&self) -> &TcpStream {
        &self.sock.s
    }
}

impl Sock for rustls::StreamOwned<rustls::ClientConnection, Tap> {
    fn tcp(&self) -> &TcpStream {
        &self.sock.s
    }
}

/// Copies both ways until either side closes, logging the clear bytes.
fn pump(mut down: impl Sock, mut up: impl Sock, log: &Mutex<Log>, stop: &AtomicBool) {
    set_timeout(down.tcp());
    set_timeout(up.tcp());
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        for dir in [0, 1] {
            let (from, to): (&mut dyn Sock, &mut dyn Sock) = if dir == 0 {
                (&mut down, &mut up)
            } else {
                (&mut up, &mut down)
            };
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let mut l = log.lock().unwrap();
                    let clear = if dir == 0 {
                        &mut l.clear_up
                    } else {
                        &mut l.clear_down
                    };
                    clear.extend_from_slice(&buf[..n]);
                    drop(l);
                    if to.write_all(&buf[..n]).and_then(|_| to.flush()).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the logs.

fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut d = Decoder::new();
    d.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = d.next_frame() {
        out.push(f.to_vec());
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The secrets of every welcome the client was sent: session key and ICE password.
fn secrets(logs: &[Arc<Mutex<Log>>], token_key: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for l in logs {
        let l = l.lock().unwrap();
        for f in frames(&l.clear_down) {
            if let Ok(Control::Welcome(w)) = Control::from_payload(&f, Some(token_key)) {
                out.push(("session key".to_string(), w.key.to_vec()));
                let ice = w.ice.expect("the welcome carries ICE credentials");
                out.push(("ICE password".to_string(), ice.pwd.into_bytes()));
            }
        }
    }
    out
}

fn client(t: &Topology, dial: SocketAddr, extra: &[&str]) -> ClientRun {
    let mut args = vec![
        dial.to_string(),
        "--json".into(),
        "--site".into(),
        "tcp-tls".into(),
        "--duration".into(),
        "2".into(),
        "--no-upload".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let env = [("PROBE_TOKEN".to_string(), TOKEN.to_string())].into();
    let run = try_run_client_env(&t.client, &args, &env, CLIENT_BOUND);
    assert!(!run.timed_out, "client killed\n{}", run.describe());
    run
}

/// The relay answers on the router's client-side address, the client dials it.
fn relayed(t: &Topology) -> (Relay, SocketAddr) {
    let listen = SocketAddr::new(t.router_client_ip.into(), PORT);
    let upstream = SocketAddr::new(t.server_public_ip.into(), PORT);
    (relay(&t.router, listen, upstream), listen)
}

#[test]
fn blocked_udp_run_leaks_no_secret_on_the_wire() {
    let _g = serial();
    let t = Topology::routed();
    let server = start(&t, &["--token", TOKEN]);
    block_udp(&t);
    let (relay, dial) = relayed(&t);
    let run = client(&t, dial, &[]);
    let report = run
        .json
        .clone()
        .unwrap_or_else(|| panic!("no report\n{}", run.describe()));
    assert!(
        report["udp"]["reachable"] == false && report["tcp"]["reachable"] == true,
        "UDP blocked, TCP through the relay\n{}",
        run.describe()
    );
    let received = report["tcp"]["echo"]["received"].as_u64().unwrap_or(0);
    assert!(
        received > 0,
        "the TCP echo ran in the session\n{}",
        run.describe()
    );
    let server_pin = server.pin().to_string();
    drop(server);
    let logs = relay.logs.lock().unwrap().clone();
    let impostor_pin = relay.impostor_pin.clone();
    drop(relay);
    let key = auth::token_key(TOKEN);
    let found = secrets(&logs, &key);
    assert!(
        !found.is_empty(),
        "the relay read no welcome: the test cannot see the secrets it looks for"
    );
    let mut secret_list = found.clone();
    secret_list.push(("token".into(), TOKEN.as_bytes().to_vec()));
    secret_list.push(("token key".into(), key.to_vec()));
    let (mut tls_conns, mut plain_conns) = (0, 0);
    for l in &logs {
        let l = l.lock().unwrap();
        for (leg, bytes) in l.wire.iter().enumerate() {
            for (what, s) in &secret_list {
                assert!(
                    !contains(bytes, s),
                    "the {what} crossed the wire in clear (leg {leg}, tls={})",
                    l.tls
                );
            }
        }
        if l.tls {
            tls_conns += 1;
            // The negative control: in clear, as plain framing carried it before, the key is
            // found by the same search.
            let clear_has_key = found
                .iter()
                .any(|(what, s)| what == "session key" && contains(&l.clear_down, s));
            assert!(
                clear_has_key || l.clear_down.is_empty(),
                "a TLS connection's clear bytes without the key"
            );
        } else {
            plain_conns += 1;
            for f in frames(&l.clear_up).iter().chain(&frames(&l.clear_down)) {
                assert_ne!(
                    f.first(),
                    Some(&CONTROL_TAG),
                    "a control message in clear on a plain connection"
                );
            }
        }
    }
    assert!(
        tls_conns >= 1 && plain_conns >= 2,
        "expected the plain reachability and echo connections and a TLS control connection, \
         got {plain_conns} plain and {tls_conns} TLS"
    );
    eprintln!(
        "relayed {plain_conns} plain and {tls_conns} TLS connections; {} secrets checked",
        secret_list.len()
    );
    // Without --pin the report names the certificate it saw: the relay's, not the server's.
    assert_eq!(report["server_pin"], impostor_pin.as_str());
    assert_ne!(impostor_pin, server_pin);
}

#[test]
fn an_impostor_certificate_fails_the_pin() {
    let _g = serial();
    let t = Topology::routed();
    let server = start(&t, &["--token", TOKEN]);
    block_udp(&t);
    let (relay, dial) = relayed(&t);
    let run = client(&t, dial, &["--pin", server.pin()]);
    assert_eq!(
        run.code,
        Some(2),
        "a pin failure ends the run\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("pinned") && run.stderr.contains(&relay.impostor_pin),
        "the pin sentence names the certificate seen\n{}",
        run.describe()
    );
    let logs = relay.logs.lock().unwrap().clone();
    let tls_conns = logs.iter().filter(|l| l.lock().unwrap().tls).count();
    assert!(tls_conns >= 1, "the client tried TLS through the relay");
    for l in &logs {
        let l = l.lock().unwrap();
        assert!(
            !l.tls || l.clear_up.is_empty(),
            "the client sent {} bytes to the impostor",
            l.clear_up.len()
        );
    }
    drop(server);
}

fn hello() -> Control {
    let mut nonce = [0u8; 16];
    nonce[..4].copy_from_slice(&std::process::id().to_be_bytes());
    Control::Hello(Hello {
        proto_min: PROTO_MIN,
        proto_max: PROTO_MAX,
        client_version: "tcp-tls-test".into(),
        site: "tcp-tls".into(),
        profile: Profile::Audio,
        interval_us: 20_000,
        size: 160,
        duration_ms: 2_000,
        pad: vec![0; 1100],
        time_ms: 0,
        nonce,
    })
}

/// Sends `hello` as one frame and returns the first control answer.
fn ask(s: &mut impl ReadWrite) -> Control {
    s.write_all(&hello().to_frame(None)).expect("send");
    s.flush().expect("flush");
    let mut d = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = d.next_frame().expect("frames") {
            return Control::from_payload(f, None).expect("a control message");
        }
        let n = s.read(&mut buf).expect("an answer");
        assert!(n > 0, "closed without an answer");
        d.push(&buf[..n]);
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn stalled_tls_handshake_is_closed_and_a_plain_hello_is_refused() {
    let _g = serial();
    let t = Topology::routed();
    let server = start(&t, &[]);
    let dst = SocketAddr::new(t.server_public_ip.into(), PORT);
    let connect = move || {
        let s = TcpStream::connect_timeout(&dst, Duration::from_secs(3)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    // A TLS record header announcing a ClientHello that never comes.
    let stalled = spawn_in_ns(&t.client, move || {
        let mut s = connect();
        s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]).unwrap();
        let t0 = Instant::now();
        let mut b = [0u8; 64];
        let closed = matches!(s.read(&mut b), Ok(0) | Err(_));
        (closed, t0.elapsed())
    });
    let answers = spawn_in_ns(&t.client, move || {
        let plain = ask(&mut connect());
        let (mut s, pin) = tls::connect(connect()).expect("TLS handshake");
        (plain, ask(&mut s), pin)
    })
    .join()
    .expect("answers");
    let (plain, inside, pin) = answers;
    match plain {
        Control::Refused(r) => assert!(r.reason.contains("inside TLS"), "{}", r.reason),
        other => panic!("a hello in clear must be refused, got {other:?}"),
    }
    assert!(
        matches!(inside, Control::Welcome(_)),
        "a hello inside TLS opens a session: {inside:?}"
    );
    assert_eq!(
        pin,
        server.pin(),
        "TLS on TCP presents the QUIC certificate"
    );
    let (closed, after) = stalled.join().expect("stalled");
    assert!(
        closed && after >= Duration::from_secs(8) && after <= Duration::from_secs(12),
        "a handshake that never completes is closed at the 10 s deadline (closed={closed}, after {after:?})"
    );
    drop(server);
}
