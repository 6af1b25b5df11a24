//! A stand-in for RTCD (which cannot be installed here), serving exactly the routes, JSON
//! shapes and status codes of `rtcd-behaviour.md`, plus the helpers the doctor tests need.
//! std only (and probe-proto's WebSocket accept), one thread per connection.
//!
//! ```text
//! rtcd-standin serve [--api ADDR] [--ice-port N] [--ice-address IP]… [--no-tcp]
//!                    [--version V] [--client-id ID --auth-key KEY]
//!                    [--sessions N] [--connected N] [--failed N] [--ice-errors N]
//!                    [--no-drain --rcvbuf BYTES] [--tls-cert-out PEM [--tls-name NAME]…]
//!     /version, /system, /metrics, POST /login, /ws as RTCD answers them; holds the ICE port on
//!     UDP (drained, or with --no-drain never read, so a flood overflows its tiny buffer) and
//!     TCP (closing a connection whose first frame is not STUN). With --tls-cert-out the API
//!     speaks TLS with a fresh self-signed certificate for 127.0.0.1, localhost and each
//!     --tls-name, written (PEM) to that path for clients to trust. Prints
//!     "rtcd-standin ready api=ADDR udp=ADDR[,ADDR] tcp=ADDR|none".
//! rtcd-standin proxy --listen ADDR
//!     An HTTP/1.1 forward proxy that drops hop-by-hop headers (Connection, Upgrade, …) as a
//!     proxy without WebSocket support does: Calls plugin issue #379. CONNECT is tunnelled.
//!     Prints "rtcd-standin proxy ready ADDR".
//! rtcd-standin flood DEST COUNT
//!     Sends COUNT 1000-byte UDP datagrams to DEST as fast as it can; prints "sent N".
//! ```

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn usage(why: &str) -> ! {
    eprintln!("rtcd-standin: {why} (see the source header for usage)");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("proxy") => proxy(&args[1..]),
        Some("flood") => flood(&args[1..]),
        _ => usage("first argument: serve, proxy or flood"),
    }
}

#[derive(Clone)]
struct Config {
    api: SocketAddr,
    ice_port: u16,
    ice_addresses: Vec<std::net::IpAddr>,
    tcp: bool,
    version: String,
    client_id: Option<String>,
    auth_key: Option<String>,
    sessions: u64,
    connected: u64,
    failed: u64,
    ice_errors: u64,
    drain: bool,
    rcvbuf: Option<usize>,
    tls_cert_out: Option<String>,
    tls_names: Vec<String>,
}

fn parse_serve(args: &[String]) -> Config {
    let mut c = Config {
        api: "0.0.0.0:8045".parse().expect("literal"),
        ice_port: 8443,
        ice_addresses: Vec::new(),
        tcp: true,
        version: "v1.1.0".into(),
        client_id: None,
        auth_key: None,
        sessions: 0,
        connected: 0,
        failed: 0,
        ice_errors: 0,
        drain: true,
        rcvbuf: None,
        tls_cert_out: None,
        tls_names: vec!["127.0.0.1".into(), "localhost".into()],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let num = |s: String| {
            s.parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number")))
        };
        match flag.as_str() {
            "--api" => {
                c.api = val()
                    .parse()
                    .unwrap_or_else(|_| usage("--api: not IP:PORT"))
            }
            "--ice-port" => c.ice_port = num(val()) as u16,
            "--ice-address" => c.ice_addresses.push(
                val()
                    .parse()
                    .unwrap_or_else(|_| usage("--ice-address: not an IP")),
            ),
            "--no-tcp" => c.tcp = false,
            "--version" => c.version = val(),
            "--client-id" => c.client_id = Some(val()),
            "--auth-key" => c.auth_key = Some(val()),
            "--sessions" => c.sessions = num(val()),
            "--connected" => c.connected = num(val()),
            "--failed" => c.failed = num(val()),
            "--ice-errors" => c.ice_errors = num(val()),
            "--no-drain" => c.drain = false,
            "--rcvbuf" => c.rcvbuf = Some(num(val()) as usize),
            "--tls-cert-out" => c.tls_cert_out = Some(val()),
            "--tls-name" => c.tls_names.push(val()),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    c
}

fn serve(args: &[String]) {
    let cfg = Arc::new(parse_serve(args));
    let addrs = if cfg.ice_addresses.is_empty() {
        vec!["0.0.0.0".parse().expect("literal")]
    } else {
        cfg.ice_addresses.clone()
    };
    let mut udp_bound = Vec::new();
    for ip in addrs {
        let sock = UdpSocket::bind(SocketAddr::new(ip, cfg.ice_port))
            .unwrap_or_else(|e| usage(&format!("UDP bind {ip}: {e}")));
        if let Some(size) = cfg.rcvbuf {
            set_rcvbuf(&sock, size);
        }
        udp_bound.push(sock.local_addr().expect("bound").to_string());
        if cfg.drain {
            // RTCD drops datagrams that are not STUN for a live session: read and discard.
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while sock.recv_from(&mut buf).is_ok() {}
            });
        } else {
            // Held, never read: the receive buffer fills and the kernel counts drops.
            std::mem::forget(sock);
        }
    }
    let tcp_bound = if cfg.tcp {
        let l = TcpListener::bind(SocketAddr::new(
            "0.0.0.0".parse().expect("literal"),
            cfg.ice_port,
        ))
        .unwrap_or_else(|e| usage(&format!("TCP bind {}: {e}", cfg.ice_port)));
        let addr = l.local_addr().expect("bound").to_string();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || ice_tcp(s));
            }
        });
        addr
    } else {
        "none".into()
    };
    let tls = cfg
        .tls_cert_out
        .as_ref()
        .map(|out| tls_config(&cfg.tls_names, out));
    let api =
        TcpListener::bind(cfg.api).unwrap_or_else(|e| usage(&format!("API bind {}: {e}", cfg.api)));
    println!(
        "rtcd-standin ready api={} udp={} tcp={tcp_bound}",
        api.local_addr().expect("bound"),
        udp_bound.join(",")
    );
    let _ = std::io::stdout().flush();
    let tokens: Arc<Mutex<HashSet<String>>> = Arc::default();
    for s in api.incoming().flatten() {
        let cfg = cfg.clone();
        let tokens = tokens.clone();
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let conn: Box<dyn Rw> = match tls {
                Some(t) => match rustls::ServerConnection::new(t) {
                    Ok(c) => Box::new(rustls::StreamOwned::new(c, s)),
                    Err(_) => return,
                },
                None => Box::new(s),
            };
            let _ = api_conn(conn, &cfg, &tokens);
        });
    }
}

/// A self-signed certificate for `names`, its PEM written to `out`.
fn tls_config(names: &[String], out: &str) -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .unwrap_or_else(|e| usage(&format!("certificate: {e}")));
    std::fs::write(out, ck.cert.pem()).unwrap_or_else(|e| usage(&format!("write {out}: {e}")));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
        })
        .unwrap_or_else(|e| usage(&format!("TLS: {e}")));
    Arc::new(cfg)
}

/// A connection: plain TCP or TLS.
trait Rw: Read + Write + Send {}
impl<T: Read + Write + Send> Rw for T {}

fn set_rcvbuf(sock: &UdpSocket, size: usize) {
    use std::os::fd::AsRawFd;
    let v = size as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        usage(&format!("SO_RCVBUF: {}", std::io::Error::last_os_error()));
    }
}

/// RFC 4571 framing; a first frame that is not STUN closes the connection, as pion's TCP mux does.
fn ice_tcp(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut len = [0u8; 2];
    if s.read_exact(&mut len).is_err() {
        return;
    }
    let mut frame = vec![0u8; usize::from(u16::from_be_bytes(len))];
    if s.read_exact(&mut frame).is_err() || frame.first().is_none_or(|b| *b > 3) {
        return;
    }
    // A STUN frame from no live session is ignored; hold until the idle timeout.
    let mut sink = [0u8; 2048];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Reads one request (head and Content-Length body); `None` on EOF or garbage.
fn read_request(s: &mut dyn Rw) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 64 * 1024 || s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    s.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn respond(s: &mut dyn Rw, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

fn api_conn(
    mut s: Box<dyn Rw>,
    cfg: &Config,
    tokens: &Mutex<HashSet<String>>,
) -> std::io::Result<()> {
    let Some(req) = read_request(s.as_mut()) else {
        return Ok(());
    };
    let path = req.target.split('?').next().unwrap_or_default().to_string();
    let json = "application/json";
    let text = "text/plain; charset=utf-8";
    match (req.method.as_str(), path.as_str()) {
        ("GET", "/version") => {
            let body = serde_json::json!({
                "buildDate": "2025-04-02 21:33",
                "buildVersion": cfg.version,
                "buildHash": "7bc1f7a",
                "goVersion": "go1.23.6",
                "goOS": "linux",
                "goArch": "amd64",
            });
            respond(s.as_mut(), "200 OK", json, &body.to_string())
        }
        ("GET", "/system") => respond(s.as_mut(), "200 OK", json, "{\"cpu_load\":0.02}"),
        ("GET", "/metrics") => respond(
            s.as_mut(),
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics(cfg),
        ),
        ("POST", "/login") => {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let ok = cfg.client_id.is_some()
                && field("clientID") == cfg.client_id
                && field("authKey") == cfg.auth_key;
            if ok {
                let token = format!(
                    "standin-{}-{}",
                    std::process::id(),
                    tokens.lock().map_or(0, |t| t.len())
                );
                if let Ok(mut t) = tokens.lock() {
                    t.insert(token.clone());
                }
                respond(
                    s.as_mut(),
                    "200 OK",
                    json,
                    &serde_json::json!({ "bearerToken": token }).to_string(),
                )
            } else {
                respond(
                    s.as_mut(),
                    "400 Bad Request",
                    text,
                    "authentication failed\n",
                )
            }
        }
        ("GET", "/ws") => ws(s, &req, cfg, tokens),
        (_, "/login") => respond(
            s.as_mut(),
            "405 Method Not Allowed",
            text,
            "method not allowed\n",
        ),
        _ => respond(s.as_mut(), "404 Not Found", text, "404 page not found\n"),
    }
}

fn metrics(cfg: &Config) -> String {
    format!(
        "# HELP rtcd_rtc_conn_states_total Total number of RTC connection state changes\n\
         # TYPE rtcd_rtc_conn_states_total counter\n\
         rtcd_rtc_conn_states_total{{type=\"closed\"}} {closed}\n\
         rtcd_rtc_conn_states_total{{type=\"connected\"}} {}\n\
         rtcd_rtc_conn_states_total{{type=\"disconnected\"}} 0\n\
         rtcd_rtc_conn_states_total{{type=\"failed\"}} {}\n\
         # HELP rtcd_rtc_errors_total Total number of RTC errors\n\
         # TYPE rtcd_rtc_errors_total counter\n\
         rtcd_rtc_errors_total{{groupID=\"standin\",type=\"ice\"}} {}\n\
         # HELP rtcd_rtc_sessions_total Total number of active RTC sessions\n\
         # TYPE rtcd_rtc_sessions_total gauge\n\
         rtcd_rtc_sessions_total{{groupID=\"standin\"}} {}\n",
        cfg.connected,
        cfg.failed,
        cfg.ice_errors,
        cfg.sessions,
        closed = cfg.connected,
    )
}

/// RTCD's /ws: auth first (401), then gorilla/websocket's upgrade checks (400).
fn ws(
    mut s: Box<dyn Rw>,
    req: &Request,
    cfg: &Config,
    tokens: &Mutex<HashSet<String>>,
) -> std::io::Result<()> {
    let auth = req.header("Authorization").unwrap_or_default();
    let authed = if let Some(t) = auth.strip_prefix("Bearer ") {
        tokens.lock().is_ok_and(|set| set.contains(t.trim()))
    } else if let Some(b) = auth.strip_prefix("Basic ") {
        match (&cfg.client_id, &cfg.auth_key) {
            (Some(id), Some(key)) => {
                b.trim() == probe_proto::http::base64(format!("{id}:{key}").as_bytes())
            }
            _ => false,
        }
    } else {
        false
    };
    if !authed {
        return respond(
            s.as_mut(),
            "401 Unauthorized",
            "text/plain; charset=utf-8",
            "Unauthorized\n",
        );
    }
    if !req.has_token("Connection", "upgrade") {
        return respond(
            s.as_mut(),
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "websocket: the client is not using the websocket protocol: 'upgrade' token not found in 'Connection' header\n",
        );
    }
    if !req.has_token("Upgrade", "websocket") {
        return respond(
            s.as_mut(),
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "websocket: the client is not using the websocket protocol: 'websocket' token not found in 'Upgrade' header\n",
        );
    }
    let Some(key) = req.header("Sec-WebSocket-Key").filter(|k| !k.is_empty()) else {
        return respond(s.as_mut(), "400 Bad Request", "text/plain; charset=utf-8", "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header is missing or blank\n");
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        probe_proto::http::ws_accept(key)
    );
    s.write_all(head.as_bytes())?;
    s.flush()?;
    // Hold the socket until the client's close frame (opcode 8) or EOF, then answer the close.
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) if n > 0 && buf[0] & 0x0f == 0x8 => {
                return s
                    .write_all(&[0x88, 0x02, 0x03, 0xe8])
                    .and_then(|_| s.flush())
            }
            Ok(_) => {}
        }
    }
}

fn proxy(args: &[String]) {
    let listen = match args {
        [flag, addr] if flag == "--listen" => addr
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| usage("--listen: not IP:PORT")),
        _ => usage("proxy --listen ADDR"),
    };
    let l = TcpListener::bind(listen).unwrap_or_else(|e| usage(&format!("bind {listen}: {e}")));
    println!(
        "rtcd-standin proxy ready {}",
        l.local_addr().expect("bound")
    );
    let _ = std::io::stdout().flush();
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = proxy_conn(s);
        });
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) a proxy that does not support upgrades drops.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn proxy_conn(mut client: TcpStream) -> std::io::Result<()> {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&mut client) else {
        return Ok(());
    };
    if req.method == "CONNECT" {
        let Ok(mut upstream) = TcpStream::connect_timeout(
            &req.target
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            Duration::from_secs(10),
        ) else {
            return respond(
                &mut client,
                "502 Bad Gateway",
                "text/plain",
                "cannot connect\n",
            );
        };
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        return pump(client, &mut upstream);
    }
    let Some(rest) = req.target.strip_prefix("http://") else {
        return respond(
            &mut client,
            "400 Bad Request",
            "text/plain",
            "absolute-form http:// URL expected\n",
        );
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Ok(mut upstream) = authority
        .parse::<SocketAddr>()
        .map_err(|_| ())
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(10)).map_err(|_| ()))
    else {
        return respond(
            &mut client,
            "502 Bad Gateway",
            "text/plain",
            "cannot connect upstream\n",
        );
    };
    let mut head = format!("{} {path} HTTP/1.1\r\n", req.method);
    for (n, v) in &req.headers {
        if !HOP_BY_HOP.contains(&n.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&req.body)?;
    pump(client, &mut upstream)
}

/// Copies both ways until either side closes.
fn pump(client: TcpStream, upstream: &mut TcpStream) -> std::io::Result<()> {
    let mut c2 = client.try_clone()?;
    let mut u2 = upstream.try_clone()?;
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let mut client = client;
    let _ = std::io::copy(upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = t.join();
    Ok(())
}

fn flood(args: &[String]) {
    let (dest, count) = match args {
        [d, c] => (
            d.parse::<SocketAddr>()
                .unwrap_or_else(|_| usage("flood DEST: not IP:PORT")),
            c.parse::<u64>()
                .unwrap_or_else(|_| usage("flood COUNT: not a number")),
        ),
        _ => usage("flood DEST COUNT"),
    };
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| usage(&format!("bind: {e}")));
    let payload = [0x55u8; 1000];
    let mut sent = 0u64;
    for _ in 0..count {
        if sock.send_to(&payload, dest).is_ok() {
            sent += 1;
        }
    }
    println!("sent {sent}");
}
