//! Attacks on an exposed probe-server while a legitimate client runs (issue 11): the client's
//! verdict must stay clean — no `server_rate_limited`, no loss finding, no refused TCP.
//!
//! - `tcp_slots_held_by_32_addresses_sending_junk_do_not_lock_out_a_client`: 32 addresses
//!   each hold their 16 TCP connections (the whole default fallback of 512) and send an
//!   undecodable frame (`00 01 00`) every second, reconnecting whenever they are closed.
//! - `quic_slots_held_by_32_addresses_without_hello_do_not_lock_out_a_client`: 32 addresses
//!   each complete 8 QUIC handshakes (all 256 session slots) and never open a stream,
//!   reconnecting whenever the server closes them.
//! - `spoofed_sources_and_a_padded_stun_flood_do_not_lock_out_a_client`: a raw socket in the
//!   client's namespace sends padded STUN Bindings from 500 spoofed sources (more than the
//!   server's per-source table holds, each refreshed before its bucket refills: the lockout of
//!   the issue) plus junk, while the client runs over UDP and TCP.
//! - `spoofed_quic_initials_cannot_fill_the_issued_connection_id_table`: genuine QUIC Initials
//!   from 506 spoofed sources (400/s, each answered by a Retry) while the client runs; none of
//!   the client's own Initials may be dropped as junk (they were, 6 a run, when Retries filled
//!   the 4,096-entry table).
//! - `a_padded_stun_flood_above_the_stun_budget_does_not_shed_a_clients_bindings`: padded
//!   Bindings from 506 spoofed sources at 20 times the STUN budget; the client's Bindings
//!   (UDP and TCP) are still answered (before: `udp_blocked`).
//! - `ice_checks_from_a_foreign_source_get_no_larger_answer`: a 56-byte ICE check with the
//!   session's credentials is answered (64 B) from the session's peer, gets nothing from another
//!   address, and a padded one gets no more than it sent.
//! - `hellos_with_forged_log_lines_forge_nothing_while_a_client_runs`: hellos whose site and
//!   client version carry a newline, a forged log line, a terminal escape and 500 bytes.
//! - `the_test_page_under_session_slowloris_and_dtls_floods_still_serves_a_page_and_a_client`:
//!   the browser test page (issue 17) attacked from 8 addresses at once — fake SDP offers that
//!   hold page sessions, slowloris HTTP, ICE checks and DTLS records aimed at its WebRTC peer —
//!   while probe-client and a real chromium page run from the client's address.
//! - `six_addresses_can_fill_the_page_sessions_and_a_page_user_gets_one_sentence`: the limit of
//!   the per-address cap: 6 addresses fill the 32 page sessions; a page user then gets the 429
//!   sentence on the page (not a network finding) and probe-client stays clean.
//!
//! Each prints the attack rate and the server's CPU time under it (`-- --nocapture`).

use probe_tests::quic::quic_initials;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use probe_proto::stun;
use probe_tests::netns::{sockaddr_in, spawn_in_ns, tcp_connect_from};
use probe_tests::probe::{start_server_with_state, try_run_client_env};
use probe_tests::{ClientRun, ServerHandle, Topology};
use serde_json::Value;

const PORT: u16 = 8443;
const LISTEN: &str = "0.0.0.0:8443";
const SERVER_LIFETIME: Duration = Duration::from_secs(180);
const CLIENT_BOUND: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(t: &Topology, args: &[&str]) -> ServerHandle {
    start_server_with_state(&t.server, LISTEN, args, &BTreeMap::new(), SERVER_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn server_dst(t: &Topology) -> SocketAddrV4 {
    SocketAddrV4::new(t.server_public_ip, PORT)
}

/// The server's CPU time so far (user + system), from /proc.
fn cpu_time(h: &mut ServerHandle) -> Duration {
    let pid = h.proc_mut().pid();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// SIGTERM, then the counters of the server's `stopped` line.
fn stop_counters(h: ServerHandle) -> BTreeMap<String, u64> {
    stop_server(h).1
}

/// SIGTERM; the server's stderr as written, and the counters of its `stopped` line.
fn stop_server(mut h: ServerHandle) -> (String, BTreeMap<String, u64>) {
    let pid = h.proc_mut().pid();
    // SAFETY: kill has no memory preconditions; pid is our child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let _ = h.proc_mut().wait_timeout(Duration::from_secs(10));
    let stderr = h.stop().stderr;
    let mut clean = String::new();
    let mut chars = stderr.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            clean.push(c);
        }
    }
    let line = clean
        .lines()
        .rev()
        .find(|l| l.contains(" stopped") && l.contains("dropped="))
        .unwrap_or_else(|| panic!("no `stopped` counters line:\n{clean}"))
        .to_string();
    let counters = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    (stderr, counters)
}

fn run_client(t: &Topology, pin: &str) -> ClientRun {
    let args: Vec<String> = [
        SocketAddr::from(server_dst(t)).to_string().as_str(),
        "--json",
        "--site",
        "attacks",
        "--pin",
        pin,
        "--duration",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = try_run_client_env(&t.client, &args, &BTreeMap::new(), CLIENT_BOUND);
    assert!(
        !run.timed_out,
        "client killed at its bound\n{}",
        run.describe()
    );
    run
}

/// The verdict a user would see stays clean: the run passes, both transports were reached
/// and echoed, and no finding blames the path or the server's limits.
fn assert_clean(run: &ClientRun, server: &ServerHandle) {
    let ctx = || {
        format!(
            "{}\n--- server stderr ---\n{}",
            run.describe(),
            probe_tests::tail(&server.stderr(), 6000)
        )
    };
    let json: &Value = run
        .json
        .as_ref()
        .unwrap_or_else(|| panic!("no report\n{}", ctx()));
    let ids: Vec<&str> = json["findings"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["id"].as_str()).collect())
        .unwrap_or_default();
    for bad in [
        "server_rate_limited",
        "packet_loss",
        "udp_blocked",
        "tcp_blocked",
        "server_refused",
        "server_lost",
        // The control channel ran over QUIC with the pin checked, not a fallback.
        "control_failed",
        "pin_unverified",
    ] {
        assert!(
            !ids.contains(&bad),
            "finding {bad} under attack: {ids:?}\n{}",
            ctx()
        );
    }
    assert_eq!(
        run.code,
        Some(0),
        "the run must pass under attack\n{}",
        ctx()
    );
}

/// Adds `n` addresses 198.51.100.`first`.. to the client's interface.
fn add_sources(t: &Topology, first: u8, n: u8) -> Vec<Ipv4Addr> {
    let ips: Vec<Ipv4Addr> = (first..first + n)
        .map(|i| Ipv4Addr::new(198, 51, 100, i))
        .collect();
    let lines: Vec<String> = ips
        .iter()
        .map(|ip| format!("addr add {ip}/24 dev eth0"))
        .collect();
    t.client.ip_batch(&lines);
    ips
}

// ---------------------------------------------------------------------------------------------
// Slot holding over TCP.

struct HoldResult {
    connects: usize,
    /// The longest any attacker connection stayed open.
    longest: Duration,
    frames: usize,
}

/// Keeps `per_source` connections open from every source, writing `00 01 00` on each every
/// second and reconnecting whatever the server closed, until `stop`.
fn hold_tcp(
    sources: Vec<Ipv4Addr>,
    per_source: usize,
    dst: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> HoldResult {
    let mut conns: Vec<(Ipv4Addr, Option<(TcpStream, Instant)>)> = sources
        .iter()
        .flat_map(|ip| std::iter::repeat_n(*ip, per_source))
        .map(|ip| (ip, None))
        .collect();
    let mut res = HoldResult {
        connects: 0,
        longest: Duration::ZERO,
        frames: 0,
    };
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for (ip, slot) in conns.iter_mut() {
            if let Some((s, since)) = slot {
                let closed = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                    Err(_) => true,
                };
                if closed || s.write_all(&[0x00, 0x01, 0x00]).is_err() {
                    res.longest = res.longest.max(since.elapsed());
                    *slot = None;
                } else {
                    res.frames += 1;
                }
            }
            if slot.is_none() {
                if let Ok(s) = tcp_connect_from(*ip, dst) {
                    s.set_nonblocking(true).expect("nonblocking");
                    res.connects += 1;
                    *slot = Some((s, Instant::now()));
                }
            }
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    for (_, slot) in conns {
        if let Some((_, since)) = slot {
            res.longest = res.longest.max(since.elapsed());
        }
    }
    res
}

#[test]
fn tcp_slots_held_by_32_addresses_sending_junk_do_not_lock_out_a_client() {
    let _g = serial();
    let t = Topology::routed();
    let sources = add_sources(&t, 100, 32);
    // The default 512 connections: exactly what 32 addresses × 16 fill (under the 32 per
    // address).
    let mut server = start(&t, &[]);
    let cpu0 = cpu_time(&mut server);
    let stop = Arc::new(AtomicBool::new(false));
    let dst = server_dst(&t);
    let attacker = {
        let stop = stop.clone();
        spawn_in_ns(&t.client, move || hold_tcp(sources, 16, dst, stop))
    };
    // Let the attack fill every slot, then run the client through it.
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    let run = run_client(&t, server.pin());
    let elapsed = t0.elapsed();
    // Keep holding past the progress deadline, to see how long a connection can stay.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(elapsed));
    stop.store(true, Ordering::Relaxed);
    let held = attacker.join().expect("attacker thread");
    let cpu = cpu_time(&mut server) - cpu0;
    eprintln!(
        "TCP hold: 32 addresses x 16 connections, {} connects, {} junk frames, longest {:?}; \
         server CPU {:?} over {:?}",
        held.connects,
        held.frames,
        held.longest,
        cpu,
        t0.elapsed() + Duration::from_secs(3)
    );
    assert_clean(&run, &server);
    let c = stop_counters(server);
    let closed = c.get("conn_no_progress").copied().unwrap_or(0)
        + c.get("conn_displaced").copied().unwrap_or(0);
    eprintln!("closed without progress or displaced: {closed}");
    assert!(
        closed >= 512,
        "the server closed only {closed} attacker connections"
    );
    assert!(
        held.longest < Duration::from_secs(13),
        "a connection that never said hello stayed {:?}",
        held.longest
    );
    assert!(
        held.connects > 512,
        "the attack held its slots: {} connects",
        held.connects
    );
}

// ---------------------------------------------------------------------------------------------
// Spoofed sources.

/// An IPv4/UDP datagram with a chosen source, for a raw IP_HDRINCL socket (checksum 0: UDP over
/// IPv4 allows it; the kernel fills the IP header checksum).
fn spoofed(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    let udp_len = 8 + payload.len();
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&[(udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    p.extend_from_slice(payload);
    p
}

/// 506 source addresses a raw socket in the client's namespace may spoof: 198.51.100.3-254
/// and 192.0.2.1-254, routed back toward the client's link so the server's answers go
/// somewhere (the router must forward them, so its reverse-path filter is off).
fn spoofable_sources(t: &Topology) -> Vec<Ipv4Addr> {
    t.router
        .ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.2"]);
    for k in ["all", "default", "rt-client"] {
        t.router
            .sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0");
    }
    let mut sources: Vec<Ipv4Addr> = (3..=254).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    sources.extend((1..=254).map(|i| Ipv4Addr::new(192, 0, 2, i)));
    sources
}

struct FloodResult {
    sent: u64,
    secs: f64,
}

/// Padded STUN Bindings (1000 bytes), and every tenth a junk datagram.
fn padded_stun_or_junk(i: usize) -> Vec<u8> {
    if i % 10 == 9 {
        vec![0x00, 0x01, 0x00]
    } else {
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&(i as u64).to_be_bytes());
        stun::binding_request(tid, None, None, 1000)
    }
}

/// Sends `pps` datagrams per second from `sources` (round robin, one fixed port each, so the
/// router's conntrack holds one entry per source) until `stop`; datagram `i` is `payload(i)`.
fn spoof_flood(
    sources: Vec<Ipv4Addr>,
    dst: SocketAddrV4,
    pps: f64,
    stop: Arc<AtomicBool>,
    mut payload: impl FnMut(usize) -> Vec<u8>,
) -> FloodResult {
    // SAFETY: a raw socket owned by the TcpStream-like wrapper below for its whole life.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor that only this owner closes.
    let owner = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let to = sockaddr_in(dst);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let src = SocketAddrV4::new(sources[i % sources.len()], 40_000);
        let pkt = spoofed(src, dst, &payload(i));
        // SAFETY: the buffer and address outlive the call.
        let n = unsafe {
            libc::sendto(
                owner.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                len,
            )
        };
        if n > 0 {
            sent += 1;
        }
        i += 1;
        let due = t0 + Duration::from_secs_f64(sent as f64 / pps);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    FloodResult {
        sent,
        secs: t0.elapsed().as_secs_f64(),
    }
}

#[test]
fn spoofed_sources_and_a_padded_stun_flood_do_not_lock_out_a_client() {
    let _g = serial();
    let t = Topology::routed();
    let sources = spoofable_sources(&t);
    // A table of 256 sources with 506 spoofed ones refreshed every ~0.25 s: before issue 11,
    // the table stayed full of pinned entries and every newcomer shared one drained bucket.
    let mut server = start(&t, &["--tracked-sources", "256"]);
    let cpu0 = cpu_time(&mut server);
    let stop = Arc::new(AtomicBool::new(false));
    let dst = server_dst(&t);
    // PROBE_ATTACK_PPS raises the rate for measurements (BENCHMARKS.md); keep it under the
    // server's STUN budget (a fifth of --max-reply-pps), past which Bindings are shed.
    let pps: f64 = std::env::var("PROBE_ATTACK_PPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000.0);
    let flood = {
        let stop = stop.clone();
        spawn_in_ns(&t.client, move || {
            spoof_flood(sources, dst, pps, stop, padded_stun_or_junk)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let run = run_client(&t, server.pin());
    stop.store(true, Ordering::Relaxed);
    let f = flood.join().expect("flood thread");
    let cpu = cpu_time(&mut server) - cpu0;
    eprintln!(
        "spoofed flood: {} datagrams from 506 sources in {:.1} s ({:.0} pps, 90 % padded \
         1000-byte STUN Bindings); server CPU {:?} ({:.0} % of one core)",
        f.sent,
        f.secs,
        f.sent as f64 / f.secs,
        cpu,
        cpu.as_secs_f64() / f.secs * 100.0
    );
    assert!(
        f.sent as f64 >= f.secs * pps * 0.8,
        "the flood ran at {:.0} pps, not {pps}",
        f.sent as f64 / f.secs
    );
    assert_clean(&run, &server);
    // The flood reached the server and its Bindings were answered: the table churned through
    // every spoofed source rather than locking anyone out.
    let c = stop_counters(server);
    eprintln!("server counters: {c:?}");
    let stun_sent = f.sent * 9 / 10;
    let answered = c.get("stun_replies").copied().unwrap_or(0);
    assert!(
        answered >= stun_sent * 8 / 10,
        "{answered} of {stun_sent} spoofed Bindings answered: the flood did not reach the server"
    );
}

// ---------------------------------------------------------------------------------------------
// Slot holding over QUIC.

/// Accepts any certificate: the attacker does not care whose server it is.
#[derive(Debug)]
struct AnyCert(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn quic_client_config() -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(algs)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"calls-probe/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Completes QUIC handshakes from every source, `per_source` at a time, and never opens a
/// stream; reconnects whatever the server closes, until `stop`. Returns (handshakes, longest
/// time a connection stayed up).
async fn hold_quic(
    sources: Vec<Ipv4Addr>,
    per_source: usize,
    dst: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> (usize, Duration) {
    let mut tasks = Vec::new();
    for ip in sources {
        let sock = std::net::UdpSocket::bind((ip, 0)).expect("bind");
        let mut ep = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            sock,
            Arc::new(quinn::TokioRuntime),
        )
        .expect("endpoint");
        ep.set_default_client_config(quic_client_config());
        for _ in 0..per_source {
            let (ep, stop) = (ep.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let (mut n, mut longest) = (0usize, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(connecting) = ep.connect(dst.into(), "probe") else {
                        break;
                    };
                    let t0 = Instant::now();
                    let Ok(Ok(conn)) =
                        tokio::time::timeout(Duration::from_secs(5), connecting).await
                    else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    n += 1;
                    tokio::select! {
                        _ = conn.closed() => {}
                        _ = async { while !stop.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        } } => {}
                    }
                    longest = longest.max(t0.elapsed());
                }
                (n, longest)
            }));
        }
    }
    let mut total = (0, Duration::ZERO);
    for t in tasks {
        let (n, l) = t.await.expect("task");
        total = (total.0 + n, total.1.max(l));
    }
    total
}

#[test]
fn quic_slots_held_by_32_addresses_without_hello_do_not_lock_out_a_client() {
    let _g = serial();
    let t = Topology::routed();
    let sources = add_sources(&t, 140, 32);
    // The defaults: 256 sessions, 8 per address — what 32 addresses can fill with handshakes.
    let mut server = start(&t, &[]);
    let cpu0 = cpu_time(&mut server);
    let stop = Arc::new(AtomicBool::new(false));
    let dst = server_dst(&t);
    let attacker = {
        let stop = stop.clone();
        spawn_in_ns(&t.client, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(hold_quic(sources, 8, dst, stop))
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    let t0 = Instant::now();
    let run = run_client(&t, server.pin());
    std::thread::sleep(Duration::from_secs(12).saturating_sub(t0.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let (handshakes, longest) = attacker.join().expect("attacker thread");
    let cpu = cpu_time(&mut server) - cpu0;
    eprintln!(
        "QUIC hold: 32 addresses x 8 connections, {handshakes} handshakes, longest {longest:?}; \
         server CPU {cpu:?} over {:?}",
        t0.elapsed() + Duration::from_secs(4)
    );
    assert_clean(&run, &server);
    let c = stop_counters(server);
    let closed = c.get("conn_no_progress").copied().unwrap_or(0)
        + c.get("conn_displaced").copied().unwrap_or(0);
    eprintln!("closed without progress or displaced: {closed}");
    assert!(
        closed >= 256,
        "the server closed only {closed} attacker connections"
    );
    assert!(
        handshakes >= 256,
        "the attack did not fill the slots: {handshakes} handshakes"
    );
    assert!(
        longest < Duration::from_secs(13),
        "a QUIC connection that never said hello stayed {longest:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The issued-connection-ID table (QUIC Initials from spoofed sources).

/// Counts, on the router, the Retries (long header type 3: first byte 0xf?) the server sends
/// to anyone but the client's own address: the answers to the spoofed Initials.
fn count_spoofed_retries(t: &Topology) {
    t.router.nft(
        "table inet retries {
           chain forwarded {
             type filter hook forward priority 0;
             ip saddr 203.0.113.2 ip daddr != 198.51.100.2 udp sport 8443 @th,64,8 & 0xf0 == 0xf0 counter
           }
         }",
    );
}

fn spoofed_retries(t: &Topology) -> u64 {
    let rules = t.router.ruleset();
    let at = rules
        .find("counter packets ")
        .unwrap_or_else(|| panic!("no Retry counter in\n{rules}"));
    rules[at + 16..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a packet count")
}

/// Completes `n` QUIC handshakes one after another from the client's own address and returns
/// how long each took.
async fn timed_handshakes(dst: SocketAddrV4, n: usize) -> Vec<Duration> {
    let mut cfg = quinn::EndpointConfig::default();
    cfg.grease_quic_bit(false);
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let mut ep =
        quinn::Endpoint::new(cfg, None, sock, Arc::new(quinn::TokioRuntime)).expect("endpoint");
    ep.set_default_client_config(quic_client_config());
    let mut times = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let connecting = ep.connect(dst.into(), "probe").expect("connect");
        match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Ok(Ok(conn)) => {
                times.push(t0.elapsed());
                conn.close(0u32.into(), b"");
            }
            _ => times.push(Duration::from_secs(10)),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ep.wait_idle().await;
    times
}

#[test]
fn spoofed_quic_initials_cannot_fill_the_issued_connection_id_table() {
    let _g = serial();
    let t = Topology::routed();
    let sources = spoofable_sources(&t);
    count_spoofed_retries(&t);
    let mut server = start(&t, &[]);
    let cpu0 = cpu_time(&mut server);
    let dst = server_dst(&t);
    // The table held 4,096 IDs for 30 s each: ~140 Retries/s kept it full. PROBE_ATTACK_PPS
    // raises the rate for measurements.
    let pps: f64 = std::env::var("PROBE_ATTACK_PPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400.0);
    let initials = quic_initials(dst.into(), 512);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        spawn_in_ns(&t.client, move || {
            spoof_flood(sources, dst, pps, stop, move |i| {
                initials[i % initials.len()].clone()
            })
        })
    };
    // Long enough for 4,096 Retries at the default rate.
    std::thread::sleep(Duration::from_secs_f64((4096.0 / pps).max(2.0) + 2.0));
    let times = spawn_in_ns(&t.client, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(timed_handshakes(dst, 5))
    })
    .join()
    .expect("handshakes");
    let run = run_client(&t, server.pin());
    stop.store(true, Ordering::Relaxed);
    let f = flood.join().expect("flood thread");
    let cpu = cpu_time(&mut server) - cpu0;
    let retries = spoofed_retries(&t);
    eprintln!(
        "spoofed QUIC Initials: {} from 506 sources in {:.1} s ({:.0} pps, 1200 B), {retries} \
         Retries to spoofed sources; server CPU {:?} ({:.0} % of one core); handshakes from \
         the client under it: {times:?}",
        f.sent,
        f.secs,
        f.sent as f64 / f.secs,
        cpu,
        cpu.as_secs_f64() / f.secs * 100.0
    );
    assert!(
        f.sent as f64 >= f.secs * pps * 0.8,
        "the flood ran at {:.0} pps, not {pps}",
        f.sent as f64 / f.secs
    );
    assert_clean(&run, &server);
    let c = stop_counters(server);
    eprintln!("server counters: {c:?}");
    // The attack was real: well over 4,096 spoofed Initials got their Retry.
    assert!(
        retries >= 4096,
        "only {retries} Retries went to spoofed sources"
    );
    // The client's later Initials (ACKs sealed with other keys, addressed to the ID the server
    // chose) were let through: nothing the flood did made them look like junk.
    assert_eq!(
        c.get("drop_quic_invalid").copied().unwrap_or(0),
        0,
        "genuine Initials were dropped as invalid under the flood"
    );
    // No handshake waited for a retransmission (a lost datagram costs a PTO, ~1 s).
    let slowest = times.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(900),
        "a handshake under the flood took {slowest:?}: {times:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A STUN flood above the STUN budget.

#[test]
fn a_padded_stun_flood_above_the_stun_budget_does_not_shed_a_clients_bindings() {
    let _g = serial();
    let t = Topology::routed();
    let sources = spoofable_sources(&t);
    // The STUN budget is a fifth of --max-reply-pps: 250 Bindings/s here, so a flood 20 times
    // over it fits a shared two-core test machine. PROBE_ATTACK_PPS raises the rate.
    let budget = 250.0;
    let mut server = start(&t, &["--max-reply-pps", "1250"]);
    let cpu0 = cpu_time(&mut server);
    let pps: f64 = std::env::var("PROBE_ATTACK_PPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(budget * 20.0);
    let stop = Arc::new(AtomicBool::new(false));
    let dst = server_dst(&t);
    let flood = {
        let stop = stop.clone();
        spawn_in_ns(&t.client, move || {
            spoof_flood(sources, dst, pps, stop, |i| {
                let mut tid = [0u8; 12];
                tid[..8].copy_from_slice(&(i as u64).to_be_bytes());
                stun::binding_request(tid, None, None, 1000)
            })
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let run = run_client(&t, server.pin());
    stop.store(true, Ordering::Relaxed);
    let f = flood.join().expect("flood thread");
    let cpu = cpu_time(&mut server) - cpu0;
    eprintln!(
        "STUN flood over the budget: {} padded 1000-byte Bindings from 506 spoofed sources in \
         {:.1} s ({:.0} pps, budget {budget} pps); server CPU {:?} ({:.0} % of one core)",
        f.sent,
        f.secs,
        f.sent as f64 / f.secs,
        cpu,
        cpu.as_secs_f64() / f.secs * 100.0
    );
    assert!(
        f.sent as f64 >= f.secs * pps * 0.8,
        "the flood ran at {:.0} pps, not {pps}",
        f.sent as f64 / f.secs
    );
    assert_clean(&run, &server);
    let json = run.json.as_ref().expect("a report");
    eprintln!(
        "client: udp {} tcp reachable {}",
        json["udp"]["stun"], json["tcp"]["reachable"]
    );
    assert!(
        json["udp"]["stun"]["mapped"].is_string() && json["tcp"]["reachable"] == true,
        "the client's Bindings went unanswered: udp {} tcp {}",
        json["udp"],
        json["tcp"]
    );
    let c = stop_counters(server);
    eprintln!("server counters: {c:?}");
    // The flood was over the budget and the budget held: anonymous Bindings were shed.
    let answered = c.get("stun_replies").copied().unwrap_or(0) as f64;
    assert!(
        answered <= f.secs * budget * 1.5 + 100.0,
        "{answered} Bindings answered in {:.1} s: the budget did not hold",
        f.secs
    );
    assert!(
        (f.sent as f64) > answered * 5.0,
        "the flood was not over the budget: {} sent, {answered} answered",
        f.sent
    );
}

// ---------------------------------------------------------------------------------------------
// ICE checks from a foreign source.

/// A hello as a client sends it, padded, with a fresh nonce.
fn hello_over_quic(site: &str, client_version: &str) -> probe_proto::msg::Control {
    use probe_proto::msg::{Control, Hello, Profile, PROTO_MAX, PROTO_MIN};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    nonce[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    Control::Hello(Hello {
        proto_min: PROTO_MIN,
        proto_max: PROTO_MAX,
        client_version: client_version.into(),
        site: site.into(),
        profile: Profile::Audio,
        interval_us: 20_000,
        size: 160,
        duration_ms: 30_000,
        pad: vec![0; 1100],
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        nonce,
    })
}

/// A QUIC client endpoint on `bind`, accepting any certificate.
fn quic_endpoint(bind: SocketAddr) -> quinn::Endpoint {
    let mut cfg = quinn::EndpointConfig::default();
    cfg.grease_quic_bit(false);
    let sock = std::net::UdpSocket::bind(bind).expect("bind");
    let mut ep =
        quinn::Endpoint::new(cfg, None, sock, Arc::new(quinn::TokioRuntime)).expect("endpoint");
    ep.set_default_client_config(quic_client_config());
    ep
}

/// Sends `hello` on a new stream of `conn`; returns the first control answer, and the stream
/// (the session lasts as long as it is open).
async fn ask_hello(
    conn: &quinn::Connection,
    hello: &probe_proto::msg::Control,
) -> Option<(
    probe_proto::msg::Control,
    (quinn::SendStream, quinn::RecvStream),
)> {
    use probe_proto::frame::{self, Decoder};
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&frame::encode(&hello.to_payload(None)))
        .await
        .ok()?;
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 8192];
    loop {
        if let Some(p) = dec.next_frame().ok()? {
            let answer = probe_proto::msg::Control::from_payload(p, None).ok()?;
            return Some((answer, (send, recv)));
        }
        let n = recv.read(&mut buf).await.ok()??;
        dec.push(&buf[..n]);
    }
}

/// Drops the (optional) FINGERPRINT and restores the length MESSAGE-INTEGRITY was computed
/// over: with an 8-character username, a 56-byte check whose IPv4 answer is 64 bytes.
fn without_fingerprint(mut m: Vec<u8>) -> Vec<u8> {
    m.truncate(m.len() - 8);
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

/// Bytes that come back to `sock` within 500 ms of sending `req` (0 when nothing does).
async fn answer_len(sock: &tokio::net::UdpSocket, req: &[u8]) -> usize {
    sock.send(req).await.expect("send");
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    }
}

/// A session opened over QUIC from the client's address; then ICE checks with its credentials
/// from that address and from `foreign` (another address of the client's link). Returns
/// (request length, answer length) for: small from the peer, small from the foreign address,
/// padded from the foreign address.
async fn ice_checks_from_peer_and_foreign(
    dst: SocketAddrV4,
    foreign: Ipv4Addr,
) -> [(usize, usize); 3] {
    use probe_proto::msg::Control;
    let ep = quic_endpoint("198.51.100.2:0".parse().expect("literal"));
    let conn = ep
        .connect(dst.into(), "probe")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (welcome, _stream) =
        match ask_hello(&conn, &hello_over_quic("attacks", "attacks-test")).await {
            Some((Control::Welcome(w), stream)) => (w, stream),
            other => panic!("expected a welcome, got {other:?}"),
        };
    let ice = welcome.ice.expect("the welcome carries ICE credentials");
    // USERNAME is our ufrag alone: the smallest check that names the session (the server
    // reads the part before any colon).
    let check = |tid: u8, pad: usize| {
        let m = stun::binding_request([tid; 12], Some(&ice.ufrag), Some(ice.pwd.as_bytes()), pad);
        if pad == 0 {
            without_fingerprint(m)
        } else {
            m
        }
    };
    let peer = tokio::net::UdpSocket::bind("198.51.100.2:0")
        .await
        .expect("bind");
    peer.connect(SocketAddr::from(dst)).await.expect("connect");
    let other = tokio::net::UdpSocket::bind((foreign, 0))
        .await
        .expect("bind");
    other.connect(SocketAddr::from(dst)).await.expect("connect");
    let small = check(1, 0);
    let padded = check(2, 128);
    let rows = [
        (small.len(), answer_len(&peer, &small).await),
        (small.len(), answer_len(&other, &check(3, 0)).await),
        (padded.len(), answer_len(&other, &padded).await),
    ];
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    rows
}

#[test]
fn ice_checks_from_a_foreign_source_get_no_larger_answer() {
    let _g = serial();
    let t = Topology::routed();
    let foreign = add_sources(&t, 200, 1)[0];
    let server = start(&t, &[]);
    let dst = server_dst(&t);
    let rows = spawn_in_ns(&t.client, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(ice_checks_from_peer_and_foreign(dst, foreign))
    })
    .join()
    .expect("ICE checks");
    eprintln!(
        "ICE check with the session's credentials, (request bytes, answer bytes): from the \
         peer {:?}; from {foreign}: small {:?}, padded {:?}",
        rows[0], rows[1], rows[2]
    );
    let c = stop_counters(server);
    eprintln!("server counters: {c:?}");
    let (small, answered) = rows[0];
    assert!(
        answered > small,
        "control: the session's peer gets its (larger) answer: {:?}",
        rows[0],
    );
    assert_eq!(
        rows[1].1, 0,
        "a small check from a foreign source was answered: {:?}",
        rows[1]
    );
    assert!(
        rows[2].1 > 0 && rows[2].1 <= rows[2].0,
        "a padded check from a foreign source gets an answer no larger than itself: {:?}",
        rows[2]
    );
    assert!(
        c.get("stun_too_small").copied().unwrap_or(0) >= 1,
        "the server did not count the refused check: {c:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hellos that try to forge log lines.

/// From `from`, a hello every 250 ms on a fresh QUIC connection whose site and client version
/// carry a newline, a forged log line, a terminal escape and 500 more bytes, until `stop`.
/// Returns (hellos sent, sessions opened).
async fn forged_hellos(
    dst: SocketAddrV4,
    from: Ipv4Addr,
    forged: String,
    stop: Arc<AtomicBool>,
) -> (usize, usize) {
    let ep = quic_endpoint(SocketAddr::from((from, 0)));
    let tail = "x".repeat(500);
    let site = format!("attk-site\n{forged}\u{1b}[2J{tail}");
    let version = format!("attk-ver\r\n{forged}{tail}");
    let (mut sent, mut opened) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        if let Ok(connecting) = ep.connect(dst.into(), "probe") {
            if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(3), connecting).await {
                sent += 1;
                let answer = tokio::time::timeout(
                    Duration::from_secs(3),
                    ask_hello(&conn, &hello_over_quic(&site, &version)),
                )
                .await;
                if matches!(answer, Ok(Some((probe_proto::msg::Control::Welcome(_), _)))) {
                    opened += 1;
                }
                conn.close(0u32.into(), b"done");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ep.wait_idle().await;
    (sent, opened)
}

#[test]
fn hellos_with_forged_log_lines_forge_nothing_while_a_client_runs() {
    let _g = serial();
    let t = Topology::routed();
    let from = add_sources(&t, 170, 1)[0];
    let mut server = start(&t, &[]);
    let cpu0 = cpu_time(&mut server);
    let t0 = Instant::now();
    let dst = server_dst(&t);
    let forged = "2026-11-26T08:00:00.000000Z  INFO forged-line";
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, forged) = (stop.clone(), forged.to_string());
        spawn_in_ns(&t.client, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(forged_hellos(dst, from, forged, stop))
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let run = run_client(&t, server.pin());
    stop.store(true, Ordering::Relaxed);
    let (sent, opened) = attacker.join().expect("attacker thread");
    let cpu = cpu_time(&mut server) - cpu0;
    eprintln!(
        "forged hellos: {sent} sent (one QUIC handshake each), {opened} sessions opened in \
         {:?}; server CPU {cpu:?}",
        t0.elapsed()
    );
    assert_clean(&run, &server);
    let (raw, _) = stop_server(server);
    assert!(
        sent >= 10 && opened >= 1,
        "{sent} hellos sent, {opened} opened"
    );
    // The fields reached the log, folded into the server's own line and cut short.
    assert!(
        raw.contains("attk-site"),
        "the hello was not logged:\n{raw}"
    );
    let long = "x".repeat(100);
    let forgeries: Vec<&str> = raw
        .lines()
        .filter(|l| l.starts_with("2026-11-26T08:00:00") || l.contains(&long))
        .collect();
    assert!(
        forgeries.is_empty(),
        "forged or uncut log lines: {forgeries:?}"
    );
    assert!(
        !raw.contains("\u{1b}[2J"),
        "the attacker's terminal escape reached the log"
    );
}

// ---------------------------------------------------------------------------------------------
// The browser test page (issue 17): its HTTP API, its WebRTC sessions and the DTLS/STUN routing
// to them, attacked from other addresses while probe-client and a real page run.

/// The page's session caps: the defaults, spelled out so the test states what it checks.
const WEB_MAX_SESSIONS: usize = 32;
const WEB_PER_IP: usize = 6;
/// The slowloris connections must be gone by the request deadline (10 s) plus polling slack.
const HTTP_DEADLINE_BOUND: Duration = Duration::from_millis(11_000);
/// Shorter than any page session holds its slot: one that never connects is ended 35 s after
/// it opened (probe-server's `web::peer::CONNECT_WITHIN`), so within this window an address
/// can never have opened more sessions than its cap.
const HELD_AT_LEAST: Duration = Duration::from_secs(30);
/// By then every fake session has ended (35 s after it opened, without a connection).
const FAKES_END: Duration = Duration::from_secs(36);

/// A data-channel offer as a browser sends it (a chromium offer's lines, trimmed), from no
/// browser: nothing ever answers the server's side, so each session it opens holds its slot
/// until the session's lifetime ends. str0m accepts it (checked: 200 with an answer).
const FAKE_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
    a=ice-ufrag:Fk3q\r\na=ice-pwd:Zr8sX1n0bQ2vT4yW6uE9aK5m\r\na=ice-options:trickle\r\n\
    a=fingerprint:sha-256 3C:4A:09:8B:2D:1E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:\
    5F:60:71:82:93:A4:B5:C6:D7:E8\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n\
    a=max-message-size:262144\r\n";

/// The NAT topology of tests/tests/web.rs (the page needs RTCD's candidates: the override is
/// the router's public address) and probe-server with the page's caps.
fn start_web(t: &Topology, dir: &probe_tests::TempDir) -> ServerHandle {
    let rtcd = dir.path().join("rtcd.toml");
    std::fs::write(
        &rtcd,
        format!("[rtc]\nice_host_override = \"{}\"\n", t.server_public_ip),
    )
    .expect("write rtcd.toml");
    let (max, per_ip) = (WEB_MAX_SESSIONS.to_string(), WEB_PER_IP.to_string());
    let rtcd = rtcd.display().to_string();
    start(
        t,
        &[
            "--rtcd-config",
            &rtcd,
            "--web-max-sessions",
            &max,
            "--web-max-sessions-per-ip",
            &per_ip,
        ],
    )
}

/// A tiny xorshift: the attackers' random names need no quality.
fn next_rand(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn rand_word(seed: &mut u64, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| CHARS[(next_rand(seed) % CHARS.len() as u64) as usize] as char)
        .collect()
}

/// One `POST /session?leg=udp` with the fake offer from `src`: (status, body); status 0 when
/// the connection ended without an answer.
fn post_session(src: Ipv4Addr, dst: SocketAddrV4) -> (u16, String) {
    let body = serde_json::json!({ "type": "offer", "sdp": FAKE_OFFER }).to_string();
    let req = format!(
        "POST /session?leg=udp HTTP/1.1\r\nHost: {dst}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut s) = tcp_connect_from(src, dst) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The server's ufrag in a 200's SDP answer: what a browser's checks name first in USERNAME.
fn answer_ufrag(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let sdp = v["answer"]["sdp"].as_str()?;
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::to_string)
}

#[derive(Default)]
struct SessionFlood {
    /// Per source: how many answers of each status (0: the connection ended without one).
    statuses: BTreeMap<Ipv4Addr, BTreeMap<u16, usize>>,
    /// Per source: when each 200 came, from the flood's start.
    accepted: BTreeMap<Ipv4Addr, Vec<Duration>>,
    /// Per source: the 200s of the first, concurrent burst.
    burst_ok: BTreeMap<Ipv4Addr, usize>,
    /// The `error` sentences of the 429s.
    refusals: std::collections::BTreeSet<String>,
}

impl SessionFlood {
    fn count(&self, status: u16) -> usize {
        self.statuses
            .values()
            .map(|m| m.get(&status).copied().unwrap_or(0))
            .sum()
    }

    /// The most sessions `src` opened within any [`HELD_AT_LEAST`] window.
    fn most_within_window(&self, src: Ipv4Addr) -> usize {
        let times = self.accepted.get(&src).map_or(&[][..], Vec::as_slice);
        times
            .iter()
            .map(|t0| {
                times
                    .iter()
                    .filter(|t| **t >= *t0 && **t - *t0 < HELD_AT_LEAST)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    fn record(
        &mut self,
        src: Ipv4Addr,
        (status, body): (u16, &str),
        at: Duration,
        ufrags: &Mutex<Vec<String>>,
    ) {
        *self
            .statuses
            .entry(src)
            .or_default()
            .entry(status)
            .or_default() += 1;
        match status {
            200 => {
                self.accepted.entry(src).or_default().push(at);
                ufrags.lock().unwrap().extend(answer_ufrag(body));
            }
            429 => {
                let v: Value = serde_json::from_str(body).unwrap_or_default();
                let why = v["error"].as_str().unwrap_or(body);
                self.refusals.insert(why.to_string());
            }
            _ => {}
        }
    }
}

/// `POST /session` with the fake offer from every source: first `burst` at once per source,
/// then `per_round` per source every 2 s (under the TCP admission rate, 10/s per address),
/// until `stop`. The server ufrags of the sessions it got go to `ufrags`.
fn session_flood(
    sources: Vec<Ipv4Addr>,
    dst: SocketAddrV4,
    (burst, per_round): (usize, usize),
    ufrags: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> SessionFlood {
    let mut res = SessionFlood::default();
    let t0 = Instant::now();
    // Concurrent offers: the caps must hold when requests race (threads share the namespace).
    let first: Vec<(Ipv4Addr, (u16, String))> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .flat_map(|ip| std::iter::repeat_n(*ip, burst))
            .map(|ip| s.spawn(move || (ip, post_session(ip, dst))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("post"))
            .collect()
    });
    for (ip, (status, body)) in first {
        *res.burst_ok.entry(ip).or_default() += usize::from(status == 200);
        res.record(ip, (status, &body), t0.elapsed(), &ufrags);
    }
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for ip in &sources {
            for _ in 0..per_round {
                let (status, body) = post_session(*ip, dst);
                res.record(*ip, (status, &body), t0.elapsed(), &ufrags);
            }
        }
        while round.elapsed() < Duration::from_secs(2) && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    res
}

#[derive(Default)]
struct Loris {
    opened: usize,
    /// Connections the server ended (EOF or reset), and of those, how many had a 408 first.
    server_closed: usize,
    answered_408: usize,
    /// From connect to the server's close.
    lifetimes: Vec<Duration>,
    /// The oldest connection still open when the attack stopped.
    oldest_open: Duration,
    bytes_sent: usize,
}

struct SlowConn {
    s: TcpStream,
    since: Instant,
    next_byte: Instant,
    got: Vec<u8>,
    sent: usize,
}

/// What a slow client trickles after its request line: a header that never ends.
const SLOW_HEADER: &[u8] = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Slowloris: `per_source` connections from every source, each sending `GET / HTTP/1.1\r\n`
/// and then one byte every 2 s, reconnecting whatever the server closed, until `stop`.
fn slowloris(
    sources: Vec<Ipv4Addr>,
    per_source: usize,
    dst: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> Loris {
    let mut conns: Vec<(Ipv4Addr, Option<SlowConn>)> = sources
        .iter()
        .flat_map(|ip| std::iter::repeat_n(*ip, per_source))
        .map(|ip| (ip, None))
        .collect();
    let mut res = Loris::default();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        for (ip, slot) in conns.iter_mut() {
            if let Some(c) = slot {
                let closed = loop {
                    match c.s.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => c.got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                        Err(_) => break true,
                    }
                };
                // A write to a connection the server closed fails (reset): its close too.
                let closed = closed
                    || (Instant::now() >= c.next_byte && {
                        let b = SLOW_HEADER[c.sent % SLOW_HEADER.len()];
                        c.next_byte += Duration::from_secs(2);
                        c.sent += 1;
                        res.bytes_sent += 1;
                        c.s.write_all(&[b]).is_err()
                    });
                if closed {
                    res.server_closed += 1;
                    res.answered_408 += usize::from(c.got.starts_with(b"HTTP/1.1 408 "));
                    res.lifetimes.push(c.since.elapsed());
                    *slot = None;
                }
            }
            if slot.is_none() {
                if let Ok(mut s) = tcp_connect_from(*ip, dst) {
                    let line = b"GET / HTTP/1.1\r\n";
                    if s.write_all(line).is_ok() && s.set_nonblocking(true).is_ok() {
                        res.opened += 1;
                        res.bytes_sent += line.len();
                        let now = Instant::now();
                        *slot = Some(SlowConn {
                            s,
                            since: now,
                            next_byte: now + Duration::from_secs(2),
                            got: Vec::new(),
                            sent: 0,
                        });
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in conns.into_iter().filter_map(|(_, c)| c) {
        res.oldest_open = res.oldest_open.max(c.since.elapsed());
    }
    res
}

#[derive(Default)]
struct Junk {
    stun_random: u64,
    stun_live_ufrag: u64,
    dtls: u64,
    bytes_sent: u64,
    datagrams_back: u64,
    bytes_back: u64,
}

/// A DTLS 1.2 record header and the start of a ClientHello, then noise: first byte 22.
fn dtls_like(seed: &mut u64) -> Vec<u8> {
    let mut p = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 100, 1, 0, 0, 88];
    p.extend((0..100).map(|_| next_rand(seed) as u8));
    p
}

/// From each source's own UDP socket, 100 datagrams/s in all until `stop`: ICE checks with a
/// random USERNAME and password, ICE checks naming a live page session's ufrag (learnt from
/// the session flood's answers) with a wrong password, and DTLS-looking records. Counts
/// every byte that comes back.
fn udp_junk(
    sources: Vec<Ipv4Addr>,
    dst: SocketAddrV4,
    ufrags: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> Junk {
    let socks: Vec<std::net::UdpSocket> = sources
        .iter()
        .map(|ip| {
            let s = std::net::UdpSocket::bind((*ip, 0)).expect("bind junk socket");
            s.connect(dst).expect("connect junk socket");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut res = Junk::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = [0u8; 2048];
    let drain = |res: &mut Junk, buf: &mut [u8]| {
        for s in &socks {
            while let Ok(n) = s.recv(buf) {
                res.datagrams_back += 1;
                res.bytes_back += n as u64;
            }
        }
    };
    let t0 = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let live = {
            let u = ufrags.lock().unwrap();
            (!u.is_empty()).then(|| u[(i as usize / 3) % u.len()].clone())
        };
        let pkt = match (i % 3, live) {
            (2, _) => {
                res.dtls += 1;
                dtls_like(&mut seed)
            }
            (k, live) => {
                let local = rand_word(&mut seed, 4);
                let (remote, counter) = match (k, live) {
                    (1, Some(l)) => (l, &mut res.stun_live_ufrag),
                    _ => (rand_word(&mut seed, 16), &mut res.stun_random),
                };
                *counter += 1;
                let mut tid = [0u8; 12];
                tid[..8].copy_from_slice(&next_rand(&mut seed).to_be_bytes());
                let (user, password) = (format!("{remote}:{local}"), rand_word(&mut seed, 22));
                stun::ice_check_request(&stun::IceCheck {
                    tid,
                    username: &user,
                    password: &password,
                    priority: 1_853_817_087,
                    controlling: true,
                    tiebreaker: next_rand(&mut seed),
                    use_candidate: true,
                })
            }
        };
        if socks[i as usize % socks.len()].send(&pkt).is_ok() {
            res.bytes_sent += pkt.len() as u64;
        }
        i += 1;
        drain(&mut res, &mut buf);
        let due = t0 + Duration::from_millis(i * 10);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Late answers would still count.
    std::thread::sleep(Duration::from_millis(500));
    drain(&mut res, &mut buf);
    res
}

/// Headless chromium in the client namespace runs the page to its verdict; returns the
/// server's ReportReply. The page's sessions must not be refused, and the verdict is clean.
fn run_clean_page(t: &Topology, dir: &probe_tests::TempDir, server: &ServerHandle) -> Value {
    use probe_tests::chromium::{require_chromium, run_page, Options};
    require_chromium();
    let url = format!(
        "http://{}:{PORT}/?deadline_ms=4000&site=attacks-web",
        t.server_public_ip
    );
    let run = run_page(
        Some(&t.client),
        &url,
        &dir.path().join("page.png"),
        &Options::default(),
        Duration::from_secs(50),
    );
    let ctx = || {
        format!(
            "{}\n--- server stderr ---\n{}",
            run.describe(),
            probe_tests::tail(&server.stderr(), 8000)
        )
    };
    let reply = match &run.result {
        Ok(v) => v.clone(),
        Err(e) => panic!("the page gave no result under attack: {e}\n{}", ctx()),
    };
    let report = &reply["report"];
    assert!(
        reply.get("error").is_none() && report.is_object(),
        "the page could not complete under attack\n{}",
        ctx()
    );
    let errors: Vec<&str> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["severity"] == "error")
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert!(
        errors.is_empty(),
        "page findings under attack: {errors:?}\n{}",
        ctx()
    );
    assert_eq!(report["ok"], true, "{report:#}\n{}", ctx());
    for leg in ["udp", "tcp"] {
        let l = report["browser"]["legs"]
            .as_array()
            .and_then(|a| a.iter().find(|l| l["leg"] == leg))
            .unwrap_or_else(|| panic!("leg {leg} did not run\n{}", ctx()));
        assert!(l["failed"].is_null(), "leg {leg} failed: {l:#}\n{}", ctx());
        eprintln!(
            "page leg {leg}: ICE {} ms, DTLS {} ms, channel {} ms; audio sent {} received {}, \
             loss up {} % down {} %",
            l["ice_connected_ms"],
            l["dtls_connected_ms"],
            l["dc_open_ms"],
            l["audio"]["sent"],
            l["audio"]["received"],
            l["audio"]["loss_up_pct"],
            l["audio"]["loss_down_pct"]
        );
    }
    eprintln!(
        "page run {:.1} s: {}",
        run.elapsed.as_secs_f64(),
        reply["text"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .last()
            .unwrap_or_default()
    );
    reply
}

/// The counters of the server's `stopped (test page)` line.
fn web_counters(stderr: &str) -> BTreeMap<String, u64> {
    let plain: String = {
        let mut out = String::new();
        let mut chars = stderr.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                out.push(c);
            }
        }
        out
    };
    let line = plain
        .lines()
        .rev()
        .find(|l| l.contains("stopped (test page)"))
        .unwrap_or_else(|| panic!("no `stopped (test page)` line:\n{plain}"))
        .to_string();
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The test page under three attacks at once, from eight addresses other than the client's:
/// fake offers that hold page sessions (2 addresses), slowloris HTTP (4 addresses × 16
/// connections) and STUN/DTLS junk aimed at the page's peer
/// (ICE checks for random and for live ufrags, DTLS records from addresses that passed no
/// check). Meanwhile probe-client and a real chromium page run from the client's address and
/// both stay clean; the per-address cap held, every slow request was ended by the server's
/// deadline with a 408, and not one byte went back to the junk.
#[test]
fn the_test_page_under_session_slowloris_and_dtls_floods_still_serves_a_page_and_a_client() {
    let _g = serial();
    let t = Topology::nat(probe_tests::NatConfig::default());
    let dir = probe_tests::TempDir::new("attacks-web");
    let offerers = add_sources(&t, 100, 2);
    let loris_from = add_sources(&t, 110, 4);
    let junk_from = add_sources(&t, 120, 2);
    let mut server = start_web(&t, &dir);
    let cpu0 = cpu_time(&mut server);
    let dst = server_dst(&t);
    let stop = Arc::new(AtomicBool::new(false));
    let ufrags = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let flood = {
        let (stop, ufrags, ips) = (stop.clone(), ufrags.clone(), offerers.clone());
        // 8 per address, 16 at once: no more than the peer's queue of offers holds (16,
        // probe-server web/peer.rs OPEN_QUEUE); its overflow is refused as "busy" whatever
        // the address, a weakness of its own that this test does not measure.
        let burst = WEB_PER_IP + 2;
        spawn_in_ns(&t.client, move || {
            session_flood(ips, dst, (burst, 4), ufrags, stop)
        })
    };
    let loris = {
        let stop = stop.clone();
        spawn_in_ns(&t.client, move || slowloris(loris_from, 16, dst, stop))
    };
    let junk = {
        let (stop, ufrags) = (stop.clone(), ufrags.clone());
        spawn_in_ns(&t.client, move || udp_junk(junk_from, dst, ufrags, stop))
    };
    std::thread::sleep(Duration::from_secs(3));
    let run = run_client(&t, server.pin());
    let reply = run_clean_page(&t, &dir, &server);
    // Past the request deadline at least once for every slow connection.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(t0.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let attack_time = t0.elapsed();
    let flood = flood.join().expect("session flood");
    let loris = loris.join().expect("slowloris");
    let junk = junk.join().expect("junk");
    let cpu = cpu_time(&mut server) - cpu0;
    assert_clean(&run, &server);

    let (ok, refused) = (flood.count(200), flood.count(429));
    for (ip, by_status) in &flood.statuses {
        eprintln!("fake offers from {ip}: {by_status:?} (status: answers)");
    }
    eprintln!(
        "fake offers: {} sent, {ok} sessions opened, {refused} refused (429); refusals: {:?}",
        flood
            .statuses
            .values()
            .flat_map(|m| m.values())
            .sum::<usize>(),
        flood.refusals
    );
    let max_life = loris.lifetimes.iter().max().copied().unwrap_or_default();
    let min_life = loris.lifetimes.iter().min().copied().unwrap_or_default();
    eprintln!(
        "slowloris: 4 addresses x 16 connections, {} opened, {} bytes sent; {} closed by the \
         server ({} after a 408), lifetimes {:?}..{:?}; oldest still open at the end {:?}",
        loris.opened,
        loris.bytes_sent,
        loris.server_closed,
        loris.answered_408,
        min_life,
        max_life,
        loris.oldest_open
    );
    eprintln!(
        "STUN/DTLS junk: {} ICE checks with random ufrags, {} naming live page sessions with a \
         wrong password, {} DTLS records, {} bytes sent; {} datagrams / {} bytes came back",
        junk.stun_random,
        junk.stun_live_ufrag,
        junk.dtls,
        junk.bytes_sent,
        junk.datagrams_back,
        junk.bytes_back
    );
    eprintln!("server CPU {cpu:?} over {attack_time:?}");
    let (stderr, core) = stop_server(server);
    let web = web_counters(&stderr);
    eprintln!("server log: {} lines", stderr.lines().count());
    eprintln!(
        "server counters: {web:?}; conn_no_progress {:?}",
        core.get("conn_no_progress")
    );

    // (1) Fake offers: each address got exactly its cap from the concurrent burst and never
    // more than it while its sessions held their slots; the rest were 429 with a sentence
    // naming the per-address limit (the global cap was never the one that refused).
    for (ip, by_status) in &flood.statuses {
        let burst = flood.burst_ok.get(ip).copied().unwrap_or(0);
        assert_eq!(burst, WEB_PER_IP, "{ip}: the burst opened {burst} sessions");
        let most = flood.most_within_window(*ip);
        assert_eq!(
            most,
            WEB_PER_IP,
            "{ip} opened {most} sessions within {HELD_AT_LEAST:?}: {:?}",
            flood.accepted.get(ip)
        );
        let other: usize = by_status
            .iter()
            .filter(|(s, _)| ![200, 429].contains(*s))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(other, 0, "{ip}: answers other than 200/429: {by_status:?}");
    }
    assert!(
        ok <= WEB_MAX_SESSIONS && refused > 0,
        "{ok} opened, {refused} refused"
    );
    assert!(
        flood.refusals.len() == 1
            && flood
                .refusals
                .iter()
                .all(|s| s.contains("per address") && s.ends_with('.') && !s.contains('\n')),
        "429 sentences: {:?}",
        flood.refusals
    );
    // The server's own counts agree: the attackers' sessions plus the page's legs.
    let page_legs = reply["report"]["browser"]["legs"]
        .as_array()
        .map_or(0, Vec::len) as u64;
    assert_eq!(
        web.get("web_sessions_opened"),
        Some(&(ok as u64 + page_legs)),
        "{web:?}"
    );
    assert_eq!(
        web.get("web_sessions_refused"),
        Some(&(refused as u64)),
        "{web:?}"
    );
    // (2) Slowloris: every connection ended by the server at its deadline, with a 408.
    assert!(
        loris.server_closed >= 64,
        "only {} slow connections were closed by the server",
        loris.server_closed
    );
    assert_eq!(
        loris.answered_408, loris.server_closed,
        "slow connections closed without the 408"
    );
    assert!(
        max_life <= HTTP_DEADLINE_BOUND && loris.oldest_open <= HTTP_DEADLINE_BOUND,
        "a slow request lived {max_life:?} (still open: {:?})",
        loris.oldest_open
    );
    // (3) Junk: nothing back, and the live-ufrag checks were really aimed at live sessions.
    assert!(
        junk.stun_live_ufrag > 0 && junk.stun_random > 0 && junk.dtls > 0,
        "junk not sent"
    );
    assert_eq!(
        (junk.datagrams_back, junk.bytes_back),
        (0, 0),
        "the junk got answers"
    );
}

/// The limit of the per-address cap: enough addresses (6 × 6 > 32) fill the global cap with
/// fake offers. Then a page user's offer gets the documented 429 in one sentence; the page
/// shows it and waits for a place, and runs to a clean verdict once the fake sessions end
/// (35 s without a connection); probe-client, whose sessions have their own caps, still gets
/// a clean result meanwhile.
#[test]
fn six_addresses_can_fill_the_page_sessions_and_a_page_waits_for_a_place() {
    let _g = serial();
    let t = Topology::nat(probe_tests::NatConfig::default());
    let dir = probe_tests::TempDir::new("attacks-web-full");
    let n = WEB_MAX_SESSIONS.div_ceil(WEB_PER_IP);
    let offerers = add_sources(&t, 100, n as u8);
    let server = start_web(&t, &dir);
    let dst = server_dst(&t);
    // Stopped from the start: the concurrent burst only, WEB_PER_IP per address.
    let stop = Arc::new(AtomicBool::new(true));
    // One address at a time, each with its WEB_PER_IP offers at once (fewer than the peer's
    // queue of offers holds).
    let mut flood = SessionFlood::default();
    for ip in &offerers {
        let (stop, ips) = (stop.clone(), vec![*ip]);
        let ufrags = Arc::new(Mutex::new(Vec::new()));
        let one = spawn_in_ns(&t.client, move || {
            session_flood(ips, dst, (WEB_PER_IP, 0), ufrags, stop)
        })
        .join()
        .expect("session flood");
        flood.statuses.extend(one.statuses);
        flood.refusals.extend(one.refusals);
    }
    let flooded = Instant::now();
    let (ok, refused) = (flood.count(200), flood.count(429));
    eprintln!(
        "{n} addresses x {WEB_PER_IP} fake offers at once: {ok} sessions opened, {refused} \
         refused: {:?}",
        flood.refusals
    );
    assert_eq!(ok, WEB_MAX_SESSIONS, "{:?}", flood.statuses);
    assert_eq!(
        refused,
        n * WEB_PER_IP - WEB_MAX_SESSIONS,
        "{:?}",
        flood.statuses
    );
    let (status, body) = spawn_in_ns(&t.client, move || {
        post_session(probe_tests::topology::CLIENT_IP, dst)
    })
    .join()
    .expect("post");
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let sentence = v["error"].as_str().unwrap_or_default().to_string();
    eprintln!("a page user's POST /session: {status} {sentence:?}");
    assert_eq!(status, 429, "{body}");
    assert!(
        sentence.contains("its limit") && sentence.ends_with('.') && !sentence.contains('\n'),
        "{body}"
    );
    let run = run_client(&t, server.pin());
    assert_clean(&run, &server);
    // What the user sees: the page says the server is busy, keeps asking, and runs when the
    // fake sessions have ended.
    probe_tests::chromium::require_chromium();
    let url = format!(
        "http://{}:{PORT}/?deadline_ms=4000&audio_s=1&site=attacks-web-full",
        t.server_public_ip
    );
    let page = probe_tests::chromium::run_page(
        Some(&t.client),
        &url,
        &dir.path().join("page.png"),
        &probe_tests::chromium::Options::default(),
        FAKES_END + Duration::from_secs(50),
    );
    let reply = page
        .result
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}\n{}", page.describe()));
    let report = &reply["report"];
    let busy: Vec<&String> = page
        .console
        .iter()
        .filter(|l| l.contains("busy:"))
        .collect();
    eprintln!(
        "the page under a full session table: done after {:.1} s, fakes ended {:.1} s after \
         the flood; {} busy answers; ok {}; page console: {busy:?}",
        page.elapsed.as_secs_f64(),
        flooded.elapsed().as_secs_f64(),
        busy.len(),
        report["ok"]
    );
    assert!(
        !busy.is_empty() && busy.iter().all(|l| l.contains(&sentence)),
        "the page did not show {sentence:?} while it waited\n{}",
        page.describe()
    );
    assert_eq!(report["ok"], true, "{report:#}\n{}", page.describe());
    let legs = report["browser"]["legs"].as_array().map_or(0, Vec::len);
    let web = web_counters(&stop_server(server).0);
    eprintln!("server counters: {web:?}");
    assert_eq!(
        web.get("web_sessions_opened"),
        Some(&((ok + legs) as u64)),
        "{web:?}"
    );
    assert_eq!(
        web.get("web_sessions_refused"),
        Some(&((refused + 1 + busy.len()) as u64)),
        "{web:?}"
    );
}
