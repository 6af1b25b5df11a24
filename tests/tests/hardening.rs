//! "Safe to leave running on the public internet": the real probe-server in a namespace, attacked
//! and broken from another one.
//!
//! - `no_amplification_*`: every message an unauthenticated sender can send (STUN Binding padded
//!   and not, ICE checks with wrong credentials, echo without the session key, a genuine QUIC
//!   client Initial, control hello/finish over TCP) goes out once from its own socket; every byte
//!   that comes back is counted and must not exceed what was sent. With `--token`, plain STUN
//!   and control without the token's MAC get nothing at all.
//! - `quic_junk_*`: a corrupted QUIC Initial or an unknown QUIC version gets nothing, a genuine
//!   Initial its Retry (the flood's QUIC findings, one packet each).
//! - `flood_*`: 100 000 random and mutated datagrams and TCP frames from six source addresses,
//!   none of which carries the token: no reply, no crash, flat memory, counters that show it, and
//!   a normal run afterwards.
//! - `server_killed_*`, `client_killed_*`, `server_restarted_*`: faults.
//! - `limits_*`, `token_*`: refusals that name the limit, and the access token end to end.
//!
//! Sockets are opened inside the client namespace by a thread that `setns`es into it, so the
//! test itself builds and measures every packet. Tests run one at a time (they measure time and
//! memory on a 2-core machine). `cargo test -p probe-tests --test hardening -- --nocapture`
//! prints the amplification table.

use probe_tests::quic::quic_initials;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use probe_proto::demux::{classify, Kind};
use probe_proto::echo::{self, SessionKey};
use probe_proto::frame::{self, Decoder};
use probe_proto::msg::{Control, Hello, Profile, Welcome, PROTO_MAX, PROTO_MIN};
use probe_proto::{auth, stun};
use probe_tests::netns::{spawn_in_ns, tcp_connect_from};
use probe_tests::probe::{probe_env, start_server_with_state, try_run_client_env};
use probe_tests::{binaries, ClientRun, Netns, Proc, ServerHandle, TempDir};
use probe_tests::{start_server, Topology};
use serde_json::Value;

const PORT: u16 = 8443;
const LISTEN: &str = "0.0.0.0:8443";
const SERVER_LIFETIME: Duration = Duration::from_secs(150);
const CLIENT_BOUND: Duration = Duration::from_secs(45);
/// How long a sender waits for answers after its last request (answers take well under 10 ms).
const QUIET: Duration = Duration::from_millis(300);

/// One test at a time: they measure time, memory and packet counts on two shared cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Sockets inside a namespace.

fn in_ns<T, F>(ns: &Netns, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in_ns(ns, f)
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

// ---------------------------------------------------------------------------------------------
// The server process.

fn server_addr(t: &Topology) -> SocketAddr {
    SocketAddr::new(t.server_public_ip.into(), PORT)
}

fn start(t: &Topology, args: &[&str]) -> ServerHandle {
    start_server_with_state(&t.server, LISTEN, args, &BTreeMap::new(), SERVER_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The server's pid, checked to be probe-server itself: `ip netns exec` execs in place.
fn server_pid(h: &mut ServerHandle) -> u32 {
    let pid = h.proc_mut().pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("server /proc entry");
    assert!(
        exe.file_name().is_some_and(|n| n == "probe-server"),
        "pid {pid} is {} — `ip netns exec` did not exec in place",
        exe.display()
    );
    pid
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// UDP `RcvbufErrors` and `InErrors` of the server's namespace (/proc/PID/net is per netns).
fn udp_kernel_drops(pid: u32) -> u64 {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).expect("net/snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().expect("Udp header"),
        udp.next().expect("Udp row"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| *n == "RcvbufErrors" || *n == "InErrors")
        .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
        .sum()
}

/// SIGTERM, wait for a clean exit, return stderr.
fn stop_gracefully(mut h: ServerHandle) -> String {
    let pid = server_pid(&mut h);
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let status = h.proc_mut().wait_timeout(Duration::from_secs(10));
    let done = h.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "probe-server did not exit 0 within 10 s of SIGTERM ({status:?})\n{}",
        done.describe()
    );
    done.stderr
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The counters of the last `stopped` log line (`key=value` fields).
fn stopped_counters(stderr: &str) -> BTreeMap<String, u64> {
    let clean = strip_ansi(stderr);
    let line = clean
        .lines()
        .rev()
        .find(|l| l.contains(" stopped") && l.contains("dropped="))
        .unwrap_or_else(|| panic!("no `stopped` counters line in the server's stderr:\n{clean}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn wait_stderr(
    h: &mut ServerHandle,
    what: &str,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let waited = h
        .proc_mut()
        .stderr_capture()
        .wait_for_line(within, |l| pred(&strip_ansi(l)));
    waited.unwrap_or_else(|e| {
        panic!(
            "no server log line {what} within {within:?} ({e:?}):\n{}",
            h.stderr()
        )
    })
}

/// Drops the topology and checks that its namespaces are gone.
fn teardown(t: Topology) {
    let names: Vec<String> = [&t.client, &t.router, &t.server]
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    drop(t);
    let left: Vec<String> = probe_tests::netns::list()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// The client process.

fn client_args(t: &Topology, pin: &str, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        server_addr(t).to_string(),
        "--json".into(),
        "--site".into(),
        "hardening".into(),
        "--pin".into(),
        pin.into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run_client(t: &Topology, pin: &str, extra: &[&str], env: &[(&str, &str)]) -> ClientRun {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let run = try_run_client_env(&t.client, &client_args(t, pin, extra), &env, CLIENT_BOUND);
    assert!(
        !run.timed_out,
        "client killed at its bound\n{}",
        run.describe()
    );
    run
}

fn spawn_client(t: &Topology, pin: &str, extra: &[&str]) -> Proc {
    let mut argv = vec![binaries().client.display().to_string()];
    argv.extend(client_args(t, pin, extra));
    let mut cmd = t.client.argv_command(&argv);
    probe_env(&mut cmd, &BTreeMap::new());
    Proc::spawn(cmd, "probe-client (background)", CLIENT_BOUND).expect("spawn probe-client")
}

fn finding<'a>(json: &'a Value, id: &str) -> Option<&'a Value> {
    json["findings"].as_array()?.iter().find(|f| f["id"] == id)
}

fn report(run: &ClientRun) -> &Value {
    run.json
        .as_ref()
        .unwrap_or_else(|| panic!("no JSON report\n{}", run.describe()))
}

fn assert_passes(run: &ClientRun, server: &ServerHandle) {
    assert_eq!(
        run.code,
        Some(0),
        "a normal run must pass\n{}\n--- server stderr ---\n{}",
        run.describe(),
        probe_tests::tail(&server.stderr(), 8000)
    );
}

// ---------------------------------------------------------------------------------------------
// Packets.

/// Deterministic xorshift64*; the flood is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `min..=max` random bytes.
    fn some_bytes(&mut self, min: usize, max: usize) -> Vec<u8> {
        let n = min + self.below(max - min + 1);
        self.bytes(n)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.iter_mut().for_each(|b| *b = self.next() as u8);
        a
    }
}

/// 1–3 random edits that always leave the packet different: bit flips, byte and 16-bit field
/// overwrites, truncation, moved chunks and (when `grow`) appended bytes.
fn mutate(rng: &mut Rng, base: &[u8], grow: bool) -> Vec<u8> {
    let mut p = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        if p.is_empty() {
            p = rng.some_bytes(1, 8);
            continue;
        }
        match rng.below(if grow { 6 } else { 5 }) {
            0 => {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(p.len());
                p[i] ^= 1 + rng.below(255) as u8;
            }
            2 => p.truncate(rng.below(p.len())),
            3 => {
                let i = rng.below(p.len().saturating_sub(1));
                let v = rng.next() as u16;
                let end = (i + 2).min(p.len());
                p[i..end].copy_from_slice(&v.to_be_bytes()[..end - i]);
            }
            4 => {
                let (a, b) = (rng.below(p.len()), rng.below(p.len()));
                let n = rng.below(16).min(p.len() - a.max(b));
                p.copy_within(a..a + n, b);
            }
            _ => {
                let extra = rng.some_bytes(1, 64);
                p.extend(extra);
            }
        }
    }
    if p.is_empty() {
        p.push(rng.next() as u8);
    }
    if p == base {
        let last = p.len() - 1;
        p[last] ^= 0x01;
    }
    p
}

fn hello(pad: usize, duration_ms: u32) -> Control {
    Control::Hello(Hello {
        proto_min: PROTO_MIN,
        proto_max: PROTO_MAX,
        client_version: "hardening-test".into(),
        site: "hardening".into(),
        profile: Profile::Audio,
        interval_us: 20_000,
        size: 160,
        duration_ms,
        pad: vec![0; pad],
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        nonce: rand_nonce(),
    })
}

/// A fresh nonce per hello, as a real client sends (a repeated one is a replay).
fn rand_nonce() -> [u8; 16] {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    out
}

/// A plain Binding (no USERNAME) padded to `pad_to` bytes.
fn binding(rng: &mut Rng, pad_to: usize) -> Vec<u8> {
    stun::binding_request(rng.array(), None, None, pad_to)
}

/// A Binding that claims the token but is signed with another key.
fn binding_wrong_token(rng: &mut Rng) -> Vec<u8> {
    signed_binding(rng, &auth::token_key("not-the-token"), now_s())
}

/// A Binding signed with `key`, carrying the time `at_s` (seconds since the epoch).
fn signed_binding(rng: &mut Rng, key: &[u8; 32], at_s: u64) -> Vec<u8> {
    stun::binding_request(
        rng.array(),
        Some(&auth::stun_username(at_s)),
        Some(key),
        128,
    )
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn ice_check(rng: &mut Rng, username: &str, password: &str) -> Vec<u8> {
    stun::ice_check_request(&stun::IceCheck {
        tid: rng.array(),
        username,
        password,
        priority: 0x6e00_01ff,
        controlling: true,
        tiebreaker: rng.next(),
        use_candidate: false,
    })
}

fn echo_request(key: &[u8; 32], session: u64, seq: u32, len: usize) -> Vec<u8> {
    let mut buf = [0u8; echo::MAX_LEN];
    let n = echo::encode_request(&SessionKey::new(key), session, seq, 1_000, len, &mut buf);
    buf[..n].to_vec()
}

// ---------------------------------------------------------------------------------------------
// Amplification measurement.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Must get no byte back.
    Silent,
    /// Must get an answer (a positive control: proves the path and the server work).
    Answered,
    /// Either; only the byte count is judged.
    Any,
}

struct Row {
    transport: &'static str,
    message: String,
    sent: usize,
    got: usize,
    replies: usize,
    want: Want,
    note: String,
}

struct Table(Vec<Row>);

impl Table {
    fn check(&self, title: &str) {
        let mut text = format!(
            "{title}\n{:<5} {:<58} {:>7} {:>7} {:>4}  want\n",
            "", "message", "sent", "got", "pkts"
        );
        let mut bad = Vec::new();
        for r in &self.0 {
            text.push_str(&format!(
                "{:<5} {:<58} {:>7} {:>7} {:>4}  {:?} {}\n",
                r.transport, r.message, r.sent, r.got, r.replies, r.want, r.note
            ));
            if r.got > r.sent {
                bad.push(format!(
                    "{} {}: {} bytes answered {} bytes",
                    r.transport, r.message, r.sent, r.got
                ));
            }
            match r.want {
                Want::Silent if r.got > 0 => {
                    bad.push(format!("{} {}: must get no reply", r.transport, r.message))
                }
                Want::Answered if r.replies == 0 => bad.push(format!(
                    "{} {}: no answer (the positive control failed)",
                    r.transport, r.message
                )),
                _ => {}
            }
        }
        assert!(bad.is_empty(), "{}\n{text}", bad.join("\n"));
        eprintln!("{text}");
    }
}

/// Sends each datagram once from its own socket, waits [`QUIET`], counts what came back.
fn udp_rows(ns: &Netns, dst: SocketAddr, probes: Vec<(String, Vec<u8>, Want)>) -> Vec<Row> {
    in_ns(ns, move || {
        let socks: Vec<UdpSocket> = probes
            .iter()
            .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
            .collect();
        for (s, (_, bytes, _)) in socks.iter().zip(&probes) {
            s.send_to(bytes, dst).expect("send");
        }
        std::thread::sleep(QUIET);
        let mut buf = [0u8; 65_536];
        socks
            .iter()
            .zip(probes)
            .map(|(s, (message, bytes, want))| {
                s.set_nonblocking(true).expect("nonblocking");
                let (mut got, mut replies, mut note) = (0, 0, String::new());
                while let Ok(n) = s.recv(&mut buf) {
                    got += n;
                    replies += 1;
                    note.push_str(&format!("[{:#04x}…] ", buf[0]));
                }
                Row {
                    transport: "udp",
                    message,
                    sent: bytes.len(),
                    got,
                    replies,
                    want,
                    note,
                }
            })
            .collect()
    })
}

/// One TCP connection speaking RFC 4571 frames, in clear or inside TLS (where control
/// messages go); each `ask` counts the bytes that came back before the connection went quiet
/// for [`QUIET`] or closed (inside TLS: the bytes in clear).
struct Conn {
    s: Box<dyn Stream>,
    dec: Decoder,
    closed: bool,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Answer {
    sent: usize,
    got: usize,
    frames: Vec<Vec<u8>>,
    closed: bool,
}

impl Conn {
    fn open(dst: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&dst, Duration::from_secs(3)).expect("TCP connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(QUIET)).expect("timeout");
        Conn {
            s: Box::new(s),
            dec: Decoder::new(),
            closed: false,
        }
    }

    /// TLS on the TCP port: the only place the server serves control messages.
    fn open_tls(dst: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&dst, Duration::from_secs(3)).expect("TCP connect");
        s.set_nodelay(true).expect("nodelay");
        let (s, _) = probe_tests::tls::connect(s).expect("TLS handshake");
        s.sock.set_read_timeout(Some(QUIET)).expect("timeout");
        Conn {
            s: Box::new(s),
            dec: Decoder::new(),
            closed: false,
        }
    }

    fn ask(&mut self, payload: &[u8]) -> Answer {
        let bytes = frame::encode(payload);
        let _ = self.s.write_all(&bytes).and_then(|_| self.s.flush());
        let mut got = 0;
        let mut buf = [0u8; 8192];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    got += n;
                    self.dec.push(&buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut frames = Vec::new();
        while let Ok(Some(f)) = self.dec.next_frame() {
            frames.push(f.to_vec());
        }
        Answer {
            sent: bytes.len(),
            got,
            frames,
            closed: self.closed,
        }
    }
}

fn tcp_row(message: impl Into<String>, a: &Answer, want: Want) -> Row {
    Row {
        transport: "tcp",
        message: message.into(),
        sent: a.sent,
        got: a.got,
        replies: a.frames.len(),
        want,
        note: if a.closed {
            "(closed)".into()
        } else {
            String::new()
        },
    }
}

fn welcome_of(a: &Answer, token: Option<&[u8; 32]>) -> Welcome {
    match a.frames.first().map(|f| Control::from_payload(f, token)) {
        Some(Ok(Control::Welcome(w))) => w,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

#[test]
fn no_amplification_without_token() {
    let _g = serial();
    let t = Topology::routed();
    // A per-source rate limit could hide an answer and make "silent" rows pass for the wrong
    // reason: lift it, so that every silence here is the server's decision.
    let server = start(
        &t,
        &["--unauth-pps", "100000", "--max-sessions-per-ip", "64"],
    );
    let dst = server_addr(&t);
    let mut rng = Rng(0x5eed_0001);
    let mut rows = Vec::new();

    // Control over TCP. A session stays open on `keep` for the UDP rows below.
    let (tcp_rows, welcome, keep) = in_ns(&t.client, move || {
        let mut rows = Vec::new();
        for pad in [0usize, 100, 200, 300, 400, 500, 600, 800, 1100] {
            let mut c = Conn::open(dst);
            let a = c.ask(&hello(pad, 2_000).to_payload(None));
            let want = match pad {
                0 => Want::Silent,
                1100 => Want::Answered,
                _ => Want::Any,
            };
            rows.push(tcp_row(format!("control hello, pad {pad}"), &a, want));
        }
        for pad in [0usize, 1100] {
            let mut c = Conn::open(dst);
            let a = c.ask(&hello(pad, 3_600_000).to_payload(None));
            rows.push(tcp_row(
                format!("control hello over the limits (refused), pad {pad}"),
                &a,
                if pad == 0 { Want::Any } else { Want::Answered },
            ));
        }
        let mut c = Conn::open_tls(dst);
        let a = c.ask(&hello(1100, 2_000).to_payload(None));
        rows.push(tcp_row(
            "control hello inside TLS, pad 1100 (session kept)",
            &a,
            Want::Answered,
        ));
        let w = welcome_of(&a, None);
        let mut rng = Rng(0x5eed_0002);
        let finish = |session_id, pad| Control::Finish {
            session_id,
            pad: vec![0; pad],
        };
        let a = c.ask(&finish(w.session_id ^ 1, 1100).to_payload(None));
        rows.push(tcp_row("control finish, other session", &a, Want::Silent));
        let a = c.ask(&finish(w.session_id, 0).to_payload(None));
        rows.push(tcp_row("control finish, no pad", &a, Want::Any));
        let a = c.ask(&finish(w.session_id, 1100).to_payload(None));
        rows.push(tcp_row("control finish, pad 1100", &a, Want::Answered));
        for pad in [0usize, 40, 64, 128] {
            let a = c.ask(&binding(&mut rng, pad));
            let want = if pad == 0 { Want::Silent } else { Want::Any };
            rows.push(tcp_row(format!("STUN Binding padded to {pad}"), &a, want));
        }
        let a = c.ask(&binding(&mut rng, 128));
        rows.push(tcp_row("STUN Binding padded to 128", &a, Want::Answered));
        let a = c.ask(&ice_check(
            &mut rng,
            "nosuch:cli1",
            "wrongpasswordwrongpass",
        ));
        rows.push(tcp_row("ICE check, unknown ufrag", &a, Want::Silent));
        let a = c.ask(&echo_request(&rng.array(), rng.next(), 1, 160));
        rows.push(tcp_row("echo, unknown session", &a, Want::Silent));
        let a = c.ask(&echo_request(&rng.array(), w.session_id, 1, 160));
        rows.push(tcp_row("echo, known session, wrong key", &a, Want::Silent));
        let a = c.ask(&echo_request(&w.key, w.session_id, 2, 160));
        rows.push(tcp_row(
            "echo with the session key (control)",
            &a,
            Want::Answered,
        ));
        // Garbage ends a connection, silently.
        let mut c2 = Conn::open(dst);
        let mut junk = vec![msg_tag()];
        junk.extend(rng.bytes(300));
        let a = c2.ask(&junk);
        rows.push(tcp_row("control tag + 300 random bytes", &a, Want::Silent));
        let mut c3 = Conn::open(dst);
        let a = c3.ask(&[0x20; 200]);
        rows.push(tcp_row("frame of none of ours (0x20…)", &a, Want::Silent));
        (rows, w, c)
    });
    rows.extend(tcp_rows);

    let ice = welcome
        .ice
        .clone()
        .expect("the welcome carries ICE credentials");
    let quic = quic_initials(dst, 2);
    let mut probes: Vec<(String, Vec<u8>, Want)> = Vec::new();
    let v4_answer = stun::binding_response_len(&SocketAddr::from(([198, 51, 100, 2], 1)), false);
    for pad in (28..=96).step_by(4) {
        let b = binding(&mut rng, pad);
        let want = if b.len() >= v4_answer {
            Want::Answered
        } else {
            Want::Silent
        };
        probes.push((format!("STUN Binding, {} bytes", b.len()), b, want));
    }
    probes.push((
        "STUN Binding, USERNAME calls-probe, wrong token MAC".into(),
        binding_wrong_token(&mut rng),
        Want::Any,
    ));
    probes.push((
        "ICE check, unknown ufrag".into(),
        ice_check(&mut rng, "nosuch:cli1", "wrongpasswordwrongpass"),
        Want::Silent,
    ));
    probes.push((
        "ICE check, session ufrag, wrong password".into(),
        ice_check(
            &mut rng,
            &format!("{}:cli1", ice.ufrag),
            "wrongpasswordwrongpass",
        ),
        Want::Silent,
    ));
    probes.push((
        "ICE check with the session password (control)".into(),
        ice_check(&mut rng, &format!("{}:cli1", ice.ufrag), &ice.pwd),
        Want::Answered,
    ));
    for len in [56usize, 160, 1200] {
        probes.push((
            format!("echo {len} B, unknown session"),
            echo_request(&rng.array(), rng.next(), 1, len),
            Want::Silent,
        ));
    }
    probes.push((
        "echo, known session, wrong key".into(),
        echo_request(&rng.array(), welcome.session_id, 7, 160),
        Want::Silent,
    ));
    probes.push((
        "echo, known session, truncated by 1".into(),
        echo_request(&welcome.key, welcome.session_id, 8, 161)[..160].to_vec(),
        Want::Silent,
    ));
    probes.push((
        "echo with the session key (control)".into(),
        echo_request(&welcome.key, welcome.session_id, 9, 160),
        Want::Answered,
    ));
    for (i, q) in quic.iter().enumerate() {
        probes.push((
            format!("QUIC v1 client Initial #{i} (expect a Retry)"),
            q.clone(),
            Want::Answered,
        ));
    }
    let mut vn = quic[0].clone();
    vn[1..5].copy_from_slice(&0x0a0a_0a0au32.to_be_bytes());
    probes.push((
        "QUIC long header, unknown version, 1200 B".into(),
        vn,
        Want::Any,
    ));
    let mut short = vec![0x41];
    short.extend(rng.bytes(99));
    probes.push((
        "QUIC short header, unknown CID, 100 B".into(),
        short,
        Want::Any,
    ));
    probes.push(("empty datagram".into(), Vec::new(), Want::Silent));
    probes.push((
        "first byte 0x20 (not ours), 500 B".into(),
        vec![0x20; 500],
        Want::Silent,
    ));
    let udp = udp_rows(&t.client, dst, probes);
    // The Retry is the only thing an unvalidated QUIC address gets: check what it is.
    for r in udp
        .iter()
        .filter(|r| r.message.starts_with("QUIC v1 client Initial"))
    {
        assert!(
            r.replies == 1 && r.note.starts_with("[0xf"),
            "{}: expected exactly one Retry (first byte 0xf?), got {} packets {}",
            r.message,
            r.replies,
            r.note
        );
    }
    rows.extend(udp);
    drop(keep);
    drop(server);
    teardown(t);
    Table(rows).check("amplification, no token (bytes sent vs bytes received)");
}

fn msg_tag() -> u8 {
    probe_proto::msg::CONTROL_TAG
}

const TOKEN: &str = "hardening-t0ken";

#[test]
fn no_amplification_with_token_plain_stun_and_unsigned_control_get_nothing() {
    let _g = serial();
    let t = Topology::routed();
    let server = start(&t, &["--token", TOKEN, "--unauth-pps", "100000"]);
    let dst = server_addr(&t);
    let key = auth::token_key(TOKEN);
    let mut rng = Rng(0x5eed_0003);

    let mut rows = in_ns(&t.client, move || {
        let mut rows = Vec::new();
        let mut rng = Rng(0x5eed_0004);
        // With a token, a frame that proves nothing also ends the connection.
        let mut unproven: Vec<(String, Vec<u8>)> = [0usize, 64, 128, 512]
            .into_iter()
            .map(|pad| {
                (
                    format!("plain STUN Binding padded to {pad}"),
                    binding(&mut rng, pad),
                )
            })
            .collect();
        unproven.push((
            "STUN Binding, wrong token MAC".into(),
            binding_wrong_token(&mut rng),
        ));
        unproven.push((
            "STUN Binding with the token, 11 minutes old (a replay)".into(),
            signed_binding(&mut rng, &key, now_s() - 660),
        ));
        for (what, pkt) in unproven {
            let a = Conn::open(dst).ask(&pkt);
            rows.push(tcp_row(what.clone(), &a, Want::Silent));
            assert!(
                a.closed,
                "{what}: must end the connection when a token is set"
            );
        }
        let mut c = Conn::open(dst);
        let good = signed_binding(&mut rng, &key, now_s());
        let a = c.ask(&good);
        rows.push(tcp_row(
            "STUN Binding with the token (control)",
            &a,
            Want::Answered,
        ));
        for pad in [0usize, 1100] {
            let mut c = Conn::open(dst);
            let a = c.ask(&hello(pad, 2_000).to_payload(None));
            rows.push(tcp_row(
                format!("control hello without MAC, pad {pad}"),
                &a,
                Want::Silent,
            ));
            assert!(
                a.closed,
                "a hello without the token's MAC must end the connection"
            );
        }
        let mut c = Conn::open(dst);
        let a = c.ask(&hello(1100, 2_000).to_payload(Some(&auth::token_key("wrong"))));
        rows.push(tcp_row("control hello, wrong token MAC", &a, Want::Silent));
        let mut c = Conn::open_tls(dst);
        let signed = hello(1100, 2_000).to_payload(Some(&key));
        let a = c.ask(&signed);
        rows.push(tcp_row(
            "control hello with the token inside TLS (control)",
            &a,
            Want::Answered,
        ));
        welcome_of(&a, Some(&key));
        // The same signed bytes again, as someone who got hold of them would send them: no
        // session, no answer.
        let mut c = Conn::open_tls(dst);
        let a = c.ask(&signed);
        rows.push(tcp_row("the same signed hello replayed", &a, Want::Silent));
        rows
    });

    let mut probes = Vec::new();
    for pad in [0usize, 64, 128, 512] {
        probes.push((
            format!("plain STUN Binding padded to {pad}"),
            binding(&mut rng, pad),
            Want::Silent,
        ));
    }
    probes.push((
        "STUN Binding, wrong token MAC".into(),
        binding_wrong_token(&mut rng),
        Want::Silent,
    ));
    probes.push((
        "ICE check, unknown ufrag".into(),
        ice_check(&mut rng, "nosuch:cli1", "wrongpasswordwrongpass"),
        Want::Silent,
    ));
    probes.push((
        "STUN Binding with the token (control)".into(),
        signed_binding(&mut rng, &key, now_s()),
        Want::Answered,
    ));
    probes.push((
        "STUN Binding with the token, 11 minutes old (a replay)".into(),
        signed_binding(&mut rng, &key, now_s() - 660),
        Want::Silent,
    ));
    for q in quic_initials(dst, 1) {
        probes.push((
            "QUIC v1 client Initial (expect a Retry)".into(),
            q,
            Want::Answered,
        ));
    }
    rows.extend(udp_rows(&t.client, dst, probes));
    drop(server);
    teardown(t);
    Table(rows).check("amplification, --token set");
}

/// The flood's QUIC findings, one packet each: what is not a genuine QUIC v1 Initial must get
/// nothing back, while a genuine one gets its Retry.
#[test]
fn quic_junk_gets_no_reply() {
    let _g = serial();
    let t = Topology::routed();
    let server = start(&t, &[]);
    let dst = server_addr(&t);
    let initials = quic_initials(dst, 5);
    let flipped = |mut p: Vec<u8>, at: usize| {
        p[at] ^= 0x01;
        p
    };
    let mut unknown_version = initials[0].clone();
    unknown_version[1..5].copy_from_slice(&0x0a0a_0a0au32.to_be_bytes());
    let probes = vec![
        (
            "genuine QUIC v1 Initial (control: a Retry)".to_string(),
            initials[0].clone(),
            Want::Answered,
        ),
        (
            "Initial, one bit flipped in the encrypted payload".into(),
            flipped(initials[1].clone(), 600),
            Want::Silent,
        ),
        (
            "Initial, one bit flipped in the AEAD tag".into(),
            flipped(initials[2].clone(), 1199),
            Want::Silent,
        ),
        (
            "Initial truncated to 1199 bytes".into(),
            initials[3][..1199].to_vec(),
            Want::Silent,
        ),
        (
            "long header, unknown version 0x0a0a0a0a, 1200 B".into(),
            unknown_version,
            Want::Silent,
        ),
    ];
    let rows = udp_rows(&t.client, dst, probes);
    drop(server);
    teardown(t);
    Table(rows).check("QUIC-looking junk");
}

// ---------------------------------------------------------------------------------------------
// Flood.

const FLOOD_UDP: usize = 80_000;
const FLOOD_TCP_FRAMES: usize = 20_000;
const FLOOD_TCP_SLOTS: usize = 40;
/// Datagrams per second: 80 000 in about 16 s (a debug build on two busy cores keeps up).
const FLOOD_PPS: f64 = 5_000.0;
const FLOOD_SOURCES: [u8; 6] = [2, 10, 11, 12, 13, 14];

fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, FLOOD_SOURCES[i % FLOOD_SOURCES.len()])
}

/// Packet families; each has its own sockets so replies can be told apart.
const FAMILIES: [&str; 4] = ["random", "stun", "echo", "quic"];

/// What a reply is, for the failure message.
fn reply_kind(b: &[u8]) -> &'static str {
    let version = b.get(1..5);
    match b.first() {
        Some(0..=3) => "STUN",
        Some(128..=191) => "echo",
        Some(f) if f & 0xf0 == 0xf0 && version == Some(&[0, 0, 0, 1]) => "QUIC Retry",
        Some(f) if f & 0x80 != 0 && version == Some(&[0, 0, 0, 0]) => "QUIC Version Negotiation",
        Some(f) if f & 0xc0 == 0x40 => "QUIC short header (stateless reset?)",
        _ => "other",
    }
}

#[derive(Default, Debug)]
struct UdpFloodResult {
    sent: usize,
    /// Sent datagrams the server's demultiplexer does not give to QUIC (each must raise exactly
    /// one drop counter).
    sent_not_quic: usize,
    /// (family sent, kind of reply) → (packets, bytes).
    replies: BTreeMap<(&'static str, &'static str), (usize, usize)>,
    elapsed: Duration,
}

fn flood_udp(dst: SocketAddr, initials: Vec<Vec<u8>>) -> UdpFloodResult {
    let mut rng = Rng(0xf100_d0d0_0000_0001);
    let socks: Vec<Vec<UdpSocket>> = (0..FLOOD_SOURCES.len())
        .map(|i| {
            FAMILIES
                .iter()
                .map(|_| {
                    let s = UdpSocket::bind(SocketAddrV4::new(source(i), 0)).expect("bind");
                    s.set_nonblocking(true).expect("nonblocking");
                    s
                })
                .collect()
        })
        .collect();
    let stun_bases: Vec<Vec<u8>> = vec![
        binding(&mut rng, 0),
        binding(&mut rng, 64),
        binding(&mut rng, 512),
        binding_wrong_token(&mut rng),
        ice_check(&mut rng, "nosuch:cli1", "wrongpasswordwrongpass"),
        stun::binding_response(rng.array(), dst, None),
    ];
    let mut res = UdpFloodResult::default();
    let mut buf = [0u8; 65_536];
    let drain = |res: &mut UdpFloodResult, buf: &mut [u8]| {
        for per_src in &socks {
            for (f, s) in FAMILIES.iter().zip(per_src) {
                while let Ok(n) = s.recv(buf) {
                    let e = res.replies.entry((*f, reply_kind(&buf[..n]))).or_default();
                    e.0 += 1;
                    e.1 += n;
                }
            }
        }
    };
    let t0 = Instant::now();
    for i in 0..FLOOD_UDP {
        let family = match rng.below(100) {
            0..=29 => 0,
            30..=54 => 1,
            55..=74 => 2,
            _ => 3,
        };
        let pkt = match family {
            0 => {
                let len = rng.below(1473);
                rng.bytes(len)
            }
            1 => {
                let base = &stun_bases[rng.below(stun_bases.len())];
                mutate(&mut rng, base, true)
            }
            2 => {
                let len = echo::MIN_LEN + rng.below(echo::MAX_LEN - echo::MIN_LEN + 1);
                let req = echo_request(&rng.array(), rng.next(), rng.next() as u32, len);
                if rng.below(4) == 0 {
                    req
                } else {
                    mutate(&mut rng, &req, true)
                }
            }
            // Never appended to: a valid Initial followed by junk is still a valid Initial.
            _ => {
                let base = rng.pick(&initials);
                mutate(&mut rng, base, false)
            }
        };
        if classify(&pkt) != Kind::Quic {
            res.sent_not_quic += 1;
        }
        let sock = &socks[i % FLOOD_SOURCES.len()][family];
        // A full socket buffer would be our own drop, not the server's: retry briefly.
        let mut tries = 0;
        while let Err(e) = sock.send_to(&pkt, dst) {
            assert!(
                e.kind() == ErrorKind::WouldBlock && tries < 1000,
                "flood send: {e}"
            );
            tries += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        res.sent += 1;
        if i % 50 == 49 {
            drain(&mut res, &mut buf);
            let due = t0 + Duration::from_secs_f64((i + 1) as f64 / FLOOD_PPS);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    res.elapsed = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    drain(&mut res, &mut buf);
    res
}

#[derive(Default, Debug)]
struct TcpFloodResult {
    frames: usize,
    connections: usize,
    reply_bytes: usize,
    connect_errors: usize,
}

fn flood_tcp(dst: SocketAddrV4) -> TcpFloodResult {
    let mut rng = Rng(0xf100_d0d0_0000_0002);
    let stun_bases: Vec<Vec<u8>> = vec![
        binding(&mut rng, 0),
        binding(&mut rng, 128),
        binding_wrong_token(&mut rng),
        ice_check(&mut rng, "nosuch:cli1", "wrongpasswordwrongpass"),
    ];
    let wrong = auth::token_key("not-the-token");
    let control_bases: Vec<Vec<u8>> = vec![
        hello(1100, 2_000).to_payload(Some(&wrong)),
        hello(0, 2_000).to_payload(None),
        Control::Finish {
            session_id: 1,
            pad: vec![0; 64],
        }
        .to_payload(Some(&wrong)),
    ];
    let mut res = TcpFloodResult::default();
    // slot: (connection, frames left before its closing frame)
    let mut slots: Vec<Option<(TcpStream, usize)>> = (0..FLOOD_TCP_SLOTS).map(|_| None).collect();
    let mut closing: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 65_536];
    let read_all = |s: &mut TcpStream, buf: &mut [u8]| -> (usize, bool) {
        let mut got = 0;
        loop {
            match s.read(buf) {
                Ok(0) => return (got, true),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return (got, false),
                Err(_) => return (got, true),
            }
        }
    };
    let t0 = Instant::now();
    let per_second = FLOOD_TCP_FRAMES as f64 / (FLOOD_UDP as f64 / FLOOD_PPS);
    while res.frames < FLOOD_TCP_FRAMES {
        let i = rng.below(FLOOD_TCP_SLOTS);
        if slots[i].is_none() {
            match tcp_connect_from(source(i), dst) {
                Ok(s) => {
                    s.set_nodelay(true).expect("nodelay");
                    s.set_nonblocking(true).expect("nonblocking");
                    res.connections += 1;
                    slots[i] = Some((s, 20 + rng.below(400)));
                }
                Err(_) => {
                    res.connect_errors += 1;
                    continue;
                }
            }
        }
        let (s, left) = slots[i].as_mut().expect("connected above");
        let mut out = Vec::new();
        if *left == 0 {
            // Alone in its write, so the frames before it were answered (or not) already.
            let payload = match rng.below(4) {
                0 => {
                    let base = rng.pick(&control_bases);
                    mutate(&mut rng, base, true)
                }
                1 => {
                    let mut p = vec![msg_tag()];
                    p.extend(rng.some_bytes(0, 600));
                    p
                }
                2 => {
                    let mut p = rng.some_bytes(1, 600);
                    p[0] = 4 + rng.below(60) as u8; // none of STUN, echo, control
                    p
                }
                _ => {
                    out.extend_from_slice(&[0xff, 0xff]); // a frame longer than allowed
                    rng.bytes(64)
                }
            };
            if out.is_empty() {
                out = frame::encode(&payload);
            } else {
                out.extend(payload);
            }
            res.frames += 1;
            let _ = s.write_all(&out);
            let (s, _) = slots[i].take().expect("slot");
            closing.push(s);
        } else {
            for _ in 0..(1 + rng.below(8))
                .min(*left)
                .min(FLOOD_TCP_FRAMES - res.frames)
            {
                // Frames that keep the connection open: STUN and echo ranges only.
                let mut p = if rng.below(2) == 0 {
                    let base = &stun_bases[rng.below(stun_bases.len())];
                    let mut p = mutate(&mut rng, base, true);
                    p[0] &= 0x03;
                    p
                } else {
                    let len = echo::MIN_LEN + rng.below(echo::MAX_LEN - echo::MIN_LEN + 1);
                    let req = echo_request(&rng.array(), rng.next(), 1, len);
                    mutate(&mut rng, &req, true)
                };
                p[0] = if p[0] < 4 { p[0] } else { 0x80 | (p[0] & 0x3f) };
                out.extend(frame::encode(&p));
                res.frames += 1;
                *left -= 1;
            }
            let mut written = 0;
            while written < out.len() {
                match s.write(&out[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break,
                }
            }
            let (got, eof) = read_all(s, &mut buf);
            res.reply_bytes += got;
            if eof {
                slots[i] = None;
            }
        }
        closing.retain_mut(|s| {
            let (got, eof) = read_all(s, &mut buf);
            res.reply_bytes += got;
            !eof
        });
        let due = t0 + Duration::from_secs_f64(res.frames as f64 / per_second);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    for s in slots.iter_mut().flatten() {
        res.reply_bytes += read_all(&mut s.0, &mut buf).0;
    }
    for s in &mut closing {
        res.reply_bytes += read_all(s, &mut buf).0;
    }
    res
}

#[test]
fn flood_gets_no_reply_and_leaves_the_server_flat() {
    let _g = serial();
    let t = Topology::routed();
    for n in &FLOOD_SOURCES[1..] {
        t.client
            .ip(&["addr", "add", &format!("198.51.100.{n}/24"), "dev", "eth0"]);
    }
    // The rate limiter is lifted so that every packet reaches the decoders; only the token
    // (which no flood packet carries) decides that nothing is answered.
    let mut server = start(&t, &["--token", TOKEN, "--unauth-pps", "1000000"]);
    let pid = server_pid(&mut server);
    let dst = server_addr(&t);
    let SocketAddr::V4(dst4) = dst else {
        unreachable!("IPv4 topology")
    };
    let initials = quic_initials(dst, 32);
    let rss_before = rss_kb(pid);
    let kernel_before = udp_kernel_drops(pid);

    let t0 = Instant::now();
    let udp = spawn_in_ns(&t.client, move || flood_udp(dst, initials));
    let tcp = spawn_in_ns(&t.client, move || flood_tcp(dst4));
    let udp = udp.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    let tcp = tcp.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    let flood_time = t0.elapsed();
    let rss_after = rss_kb(pid);
    let kernel_drops = udp_kernel_drops(pid) - kernel_before;
    eprintln!(
        "flood: {} datagrams ({} outside QUIC's range) in {:?}, {} TCP frames over {} connections \
         ({} connect errors), {flood_time:?} in all; UDP replies {:?}; TCP reply bytes {}; \
         server RSS {rss_before} kB -> {rss_after} kB; kernel UDP drops {kernel_drops}",
        udp.sent,
        udp.sent_not_quic,
        udp.elapsed,
        tcp.frames,
        tcp.connections,
        tcp.connect_errors,
        udp.replies,
        tcp.reply_bytes
    );
    assert!(
        server.exited().is_none(),
        "probe-server died under the flood\n{}",
        server.stderr()
    );
    assert_eq!(udp.sent + tcp.frames, 100_000);
    assert!(
        flood_time < Duration::from_secs(45),
        "flood took {flood_time:?}"
    );
    let mut problems = Vec::new();
    if !udp.replies.is_empty() {
        problems.push(format!(
            "UDP replies ((family sent, reply kind): (packets, bytes)): {:?}",
            udp.replies
        ));
    }
    if tcp.reply_bytes > 0 {
        problems.push(format!("{} bytes came back over TCP", tcp.reply_bytes));
    }
    let growth = rss_after.saturating_sub(rss_before);
    if growth >= 5 * 1024 {
        problems.push(format!(
            "RSS grew by {growth} kB ({rss_before} -> {rss_after} kB)"
        ));
    }

    let run = run_client(
        &t,
        server.pin(),
        &["--duration", "2", "--token", TOKEN],
        &[],
    );
    assert_passes(&run, &server);
    let stderr = stop_gracefully(server);
    let c = stopped_counters(&stderr);
    eprintln!("stopped counters: {c:?}");
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    // Each datagram outside QUIC's range raises exactly one drop counter; the kernel may have
    // dropped a few before the server read them.
    let floor = udp.sent_not_quic as u64 - kernel_drops;
    if get("dropped") < floor {
        problems.push(format!(
            "`dropped`={} < {floor} flood datagrams that reached the server outside QUIC's range",
            get("dropped")
        ));
    }
    for k in [
        "drop_malformed",
        "drop_unknown_session",
        "drop_unauthenticated",
        "drop_not_ours",
    ] {
        if get(k) == 0 {
            problems.push(format!("counter {k} is 0 after the flood"));
        }
    }
    if kernel_drops * 20 > udp.sent as u64 {
        problems.push(format!(
            "the kernel dropped {kernel_drops} datagrams: the flood rate is too high for this check"
        ));
    }
    teardown(t);
    assert!(
        problems.is_empty(),
        "flood:\n{}\n--- server stderr ---\n{}",
        problems.join("\n"),
        probe_tests::tail(&stderr, 6000)
    );
}

// ---------------------------------------------------------------------------------------------
// Faults.

fn session_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("session="))
        .unwrap_or_else(|| panic!("no session= in {line:?}"))
        .to_string()
}

#[test]
fn server_killed_during_echo_client_reports_server_lost() {
    let _g = serial();
    let t = Topology::routed();
    let mut server = start(&t, &[]);
    let duration = 4.0;
    let client = spawn_client(&t, server.pin(), &["--duration", "4"]);
    let started = Instant::now();
    wait_stderr(
        &mut server,
        "`session opened`",
        Duration::from_secs(15),
        |l| l.contains("session opened"),
    );
    // One second into the UDP echo phase.
    std::thread::sleep(Duration::from_secs(1));
    server.proc_mut().kill();
    let done = client.finish(CLIENT_BOUND);
    let elapsed = started.elapsed();
    let json = probe_tests::probe::parse_report(&done.stdout)
        .unwrap_or_else(|| panic!("no report\n{}", done.describe()));
    let ctx = || format!("{}\n{}", done.describe(), json);
    assert_eq!(done.code(), Some(1), "exit code\n{}", ctx());
    let lost = finding(&json, "server_lost").unwrap_or_else(|| panic!("no server_lost\n{}", ctx()));
    assert_eq!(lost["severity"], "error", "{}", ctx());
    let e = &json["udp"]["echo"];
    let (sent, received) = (e["sent"].as_u64(), e["received"].as_u64());
    assert!(
        matches!((sent, received), (Some(s), Some(r)) if r > 0 && r < s),
        "partial UDP results expected (some replies, not all)\n{}",
        ctx()
    );
    // Its deadline: both echo phases, plus the bounded waits for a dead control channel.
    let deadline = Duration::from_secs_f64(2.0 * duration + 12.0);
    assert!(
        elapsed < deadline,
        "client took {elapsed:?} (deadline {deadline:?})\n{}",
        ctx()
    );
    eprintln!("server killed: client finished in {elapsed:?}");
    drop(server);
    teardown(t);
}

#[test]
fn client_killed_server_frees_the_session_after_idle_timeout() {
    let _g = serial();
    let t = Topology::routed();
    let mut server = start(&t, &["--idle-timeout", "2"]);
    let mut client = spawn_client(&t, server.pin(), &["--duration", "5"]);
    let opened = wait_stderr(
        &mut server,
        "`session opened`",
        Duration::from_secs(15),
        |l| l.contains("session opened"),
    );
    let id = session_of(&opened);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !server.stderr().contains("session expired"),
        "the session expired while the client was alive:\n{}",
        server.stderr()
    );
    client.kill();
    let killed = Instant::now();
    let expired = wait_stderr(
        &mut server,
        "`session expired`",
        Duration::from_secs(8),
        |l| l.contains("session expired"),
    );
    let after = killed.elapsed();
    assert_eq!(session_of(&expired), id, "{expired}");
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_millis(4500),
        "expired {after:?} after the kill; --idle-timeout 2 (checked every second)"
    );
    let stderr = stop_gracefully(server);
    let c = stopped_counters(&stderr);
    assert_eq!(c.get("sessions_opened"), Some(&1), "{c:?}");
    assert_eq!(c.get("sessions_expired"), Some(&1), "{c:?}");
    eprintln!("client killed: session {id} expired {after:?} later");
    teardown(t);
}

#[test]
fn server_restarted_with_same_state_dir_keeps_pin_and_passes() {
    let _g = serial();
    let t = Topology::routed();
    let state = TempDir::new("hardening-state");
    let args = [
        "--listen",
        LISTEN,
        "--state-dir",
        &state.path().display().to_string(),
    ]
    .map(String::from);
    let first = start_server(&t.server, &args);
    let pin = first.pin().to_string();
    let run = run_client(&t, &pin, &["--duration", "1"], &[]);
    assert_passes(&run, &first);
    stop_gracefully(first);
    let second = start_server(&t.server, &args);
    assert_eq!(second.pin(), pin, "the pin changed across a restart");
    let run = run_client(&t, &pin, &["--duration", "1"], &[]);
    assert_passes(&run, &second);
    assert_eq!(report(&run)["server_pin"], pin.as_str());
    drop(second);
    teardown(t);
}

// ---------------------------------------------------------------------------------------------
// Limits and token.

#[test]
fn limits_produce_a_clear_refusal() {
    let _g = serial();
    let t = Topology::routed();
    let server = start(&t, &["--max-duration", "1"]);
    let run = run_client(&t, server.pin(), &["--duration", "3"], &[]);
    let json = report(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let f = finding(json, "server_refused")
        .unwrap_or_else(|| panic!("no server_refused\n{}", run.describe()));
    assert_eq!(f["severity"], "error");
    assert!(
        f["summary"]
            .as_str()
            .unwrap_or("")
            .contains("max-duration=1s"),
        "the refusal must name the limit: {f}"
    );
    let ok = run_client(&t, server.pin(), &["--duration", "1"], &[]);
    assert_passes(&ok, &server);
    drop(server);

    let mut server = start(&t, &["--max-sessions-per-ip", "1"]);
    let first = spawn_client(&t, server.pin(), &["--duration", "4"]);
    wait_stderr(
        &mut server,
        "`session opened`",
        Duration::from_secs(15),
        |l| l.contains("session opened"),
    );
    let second = run_client(&t, server.pin(), &["--duration", "1"], &[]);
    let first = first.finish(CLIENT_BOUND);
    assert_eq!(first.code(), Some(0), "first client\n{}", first.describe());
    assert_eq!(second.code, Some(1), "{}", second.describe());
    let f = finding(report(&second), "server_refused")
        .unwrap_or_else(|| panic!("no server_refused\n{}", second.describe()));
    assert!(
        f["summary"]
            .as_str()
            .unwrap_or("")
            .contains("max-sessions-per-ip=1"),
        "the refusal must name the limit: {f}"
    );
    let stderr = stop_gracefully(server);
    assert_eq!(stopped_counters(&stderr).get("sessions_refused"), Some(&1));
    teardown(t);
}

#[test]
fn token_required_and_accepted_from_flag_and_env() {
    let _g = serial();
    let t = Topology::routed();
    let mut server = start(&t, &["--token", TOKEN]);
    let line = wait_stderr(&mut server, "`users run:`", Duration::from_secs(5), |l| {
        l.contains("users run: probe-client")
    });
    assert!(
        line.contains(&format!("--pin {}", server.pin()))
            && line.contains(&format!("--token '{TOKEN}'")),
        "the startup log gives a copy-paste client command with pin and token: {line}"
    );
    let pin = server.pin().to_string();
    // The server answers no probe without the token; the client still learns, from the TLS
    // handshake on the TCP port (no token needed for that), that a probe-server is there, and
    // says the token is the cause (exit 2, as for a wrong pin), not that nothing answered.
    for (what, extra, want) in [
        (
            "no token",
            vec!["--duration", "1"],
            "that requires an access token: run again with --token",
        ),
        (
            "wrong token",
            vec!["--duration", "1", "--token", "wrong"],
            "but it ignores probes signed with the token given",
        ),
    ] {
        let run = run_client(&t, &pin, &extra, &[]);
        assert_eq!(run.code, Some(2), "{what}\n{}", run.describe());
        assert!(
            run.stderr
                .contains("is a probe-server (its certificate matches the pin)")
                && run.stderr.contains(want),
            "{what}\n{}",
            run.describe()
        );
    }
    let run = run_client(&t, &pin, &["--duration", "1", "--token", TOKEN], &[]);
    assert_passes(&run, &server);
    let run = run_client(&t, &pin, &["--duration", "1"], &[("PROBE_TOKEN", TOKEN)]);
    assert_passes(&run, &server);
    let stderr = stop_gracefully(server);
    let c = stopped_counters(&stderr);
    assert!(
        c.get("drop_unauthenticated").is_some_and(|n| *n > 0),
        "{c:?}"
    );
    assert_eq!(c.get("sessions_opened"), Some(&2), "{c:?}");
    teardown(t);
}

#[test]
fn idle_tcp_connections_are_closed_after_the_configured_timeout() {
    let _g = serial();
    let t = Topology::routed();
    let server = start(&t, &["--tcp-idle-timeout", "1"]);
    let dst = match server_addr(&t) {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("the topology is IPv4"),
    };
    let src = t.client_ip;
    // A silent connection: the server must hang up after about a second, not keep it open.
    let closed_after = in_ns(&t.client, move || {
        let mut s = tcp_connect_from(src, dst).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t0 = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = std::io::Read::read(&mut s, &mut buf);
        (n.map_err(|e| e.kind()), t0.elapsed())
    });
    assert_eq!(
        closed_after.0,
        Ok(0),
        "the server closes the connection (EOF)"
    );
    assert!(
        closed_after.1 >= Duration::from_millis(900) && closed_after.1 < Duration::from_secs(5),
        "closed after {:?}",
        closed_after.1
    );
    drop(server);
    teardown(t);
}
