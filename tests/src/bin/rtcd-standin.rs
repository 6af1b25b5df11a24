//! A stand-in for RTCD (which cannot be installed here), serving exactly the routes, JSON
//! shapes and status codes of rtcd v1.2.6 (b3dee59; `rtcd-behaviour.md`, "Corrections"), plus
//! the helpers the doctor tests need. Each answer cites the rtcd (or Go net/http, gorilla/websocket
//! v1.5.3 as rtcd uses them) source lines it copies. std only (and probe-proto's WebSocket
//! accept), one thread per connection.
//!
//! ```text
//! rtcd-standin serve [--api ADDR] [--ice-port N] [--ice-address IP]… [--no-tcp]
//!                    [--version V] [--client-id ID --auth-key KEY]
//!                    [--sessions N] [--connected N] [--failed N] [--ice-errors N]
//!                    [--no-drain --rcvbuf BYTES] [--tls-cert-out PEM [--tls-name NAME]…]
//!     /version, /system, /metrics, POST /login, /ws as RTCD answers them (a refused /ws login
//!     is 200 with an empty body; /login errors are JSON {"code","error"}; CONNECT is 404;
//!     with TLS, plaintext HTTP gets Go's 400); holds the ICE port on
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
            if tls.is_some() && !plaintext_on_tls_port(&s) {
                return;
            }
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

/// Go's TLS server (rtcd service/api/server.go:63-65 serves with `ServeTLS`) on a first record
/// that is not TLS: when its 5 bytes look like an HTTP request it answers a plain 400
/// (Go net/http server.go `(*conn).serve`, `tlsRecordHeaderLooksLikeHTTP`: "GET /", "HEAD ",
/// "POST ", "PUT /", "OPTIO"), otherwise (a CONNECT, say) it closes without a word. Returns
/// whether to go on with the TLS handshake.
fn plaintext_on_tls_port(s: &TcpStream) -> bool {
    let mut head = [0u8; 5];
    let n = match s.peek(&mut head) {
        Ok(n) => n,
        Err(_) => return false,
    };
    if n == 0 || head[0] == 0x16 {
        return n > 0;
    }
    if n == 5 && [b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO"].contains(&&head) {
        let mut w = s;
        let _ = w.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        );
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    false
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
    respond_with(s, status, &[("Content-Type", ctype)], body)
}

fn respond_with(
    s: &mut dyn Rw,
    status: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

/// Go's `http.Error` (and `http.NotFound`, which is `http.Error(w, "404 page not found", 404)`):
/// text/plain, nosniff, the message and a newline (Go net/http server.go `Error`).
fn go_http_error(
    s: &mut dyn Rw,
    status: &str,
    extra: &[(&str, &str)],
    msg: &str,
) -> std::io::Result<()> {
    let mut headers = extra.to_vec();
    headers.push(("Content-Type", "text/plain; charset=utf-8"));
    headers.push(("X-Content-Type-Options", "nosniff"));
    respond_with(s, status, &headers, &format!("{msg}\n"))
}

/// rtcd's `httpAudit` answer (service/audit.go:21-42): JSON of resData plus `"error"` when
/// failed and always `"code"` as a string, encoded by json.Encoder (keys sorted, trailing newline).
fn audit_json(
    s: &mut dyn Rw,
    status: &str,
    mut res: serde_json::Map<String, serde_json::Value>,
    err: Option<&str>,
) -> std::io::Result<()> {
    if let Some(e) = err {
        res.insert("error".into(), e.into());
    }
    let code = status.split(' ').next().unwrap_or_default();
    res.insert("code".into(), code.into());
    // Sorted keys, as Go encodes a map.
    let sorted: std::collections::BTreeMap<_, _> = res.into_iter().collect();
    let body = format!("{}\n", serde_json::to_string(&sorted).unwrap_or_default());
    respond_with(s, status, &[("Content-Type", "application/json")], &body)
}

fn api_conn(
    mut s: Box<dyn Rw>,
    cfg: &Config,
    tokens: &Mutex<HashSet<String>>,
) -> std::io::Result<()> {
    let Some(req) = read_request(s.as_mut()) else {
        return Ok(());
    };
    // Go's server takes the absolute form too (what Go's transport sends to an http:// proxy —
    // to RTCD itself when a proxy variable applies): net/http readRequest parses the target
    // with url.ParseRequestURI and routes on its path.
    let origin_form = ["http://", "https://"]
        .iter()
        .find_map(|p| req.target.strip_prefix(p))
        .map_or(req.target.as_str(), |rest| {
            rest.find('/').map_or("/", |i| &rest[i..])
        });
    let path = origin_form
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let json = "application/json";
    // A CONNECT carries an authority, not a path: Go's ServeMux matches its empty path
    // against no route (rtcd registers no "/", service/service.go:117-142) and answers
    // http.NotFound (Go net/http server.go `(*ServeMux).findHandler`, CONNECT branch). This
    // is what the Calls plugin's WebSocket dial gets when a proxy variable names no proxy
    // but RTCD itself (gorilla/websocket v1.5.3 proxy.go:34-76; plugin issue #379).
    if req.method == "CONNECT" {
        return go_http_error(s.as_mut(), "404 Not Found", &[], "404 page not found");
    }
    match (req.method.as_str(), path.as_str()) {
        // rtcd service/version.go:51 (getVersion), fields of service/version.go VersionInfo.
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
        // rtcd service/auth.go:189-219 (loginClient), answered by httpAudit (audit.go:21-42).
        ("POST", "/login") => {
            let v: serde_json::Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                // json.Decoder's error, e.g. "EOF" for an empty body: 400 (auth.go:201-205).
                Err(e) => {
                    let msg = if req.body.is_empty() {
                        "EOF".to_string()
                    } else {
                        e.to_string()
                    };
                    return audit_json(
                        s.as_mut(),
                        "400 Bad Request",
                        Default::default(),
                        Some(&msg),
                    );
                }
            };
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let id = field("clientID").unwrap_or_default();
            let key = field("authKey").unwrap_or_default();
            match login_error(cfg, &id, &key) {
                Some(err) => audit_json(
                    s.as_mut(),
                    "400 Bad Request",
                    Default::default(),
                    Some(&err),
                ),
                None => {
                    let token = format!(
                        "standin-{}-{}",
                        std::process::id(),
                        tokens.lock().map_or(0, |t| t.len())
                    );
                    if let Ok(mut t) = tokens.lock() {
                        t.insert(token.clone());
                    }
                    let mut res = serde_json::Map::new();
                    res.insert("bearerToken".into(), token.into());
                    audit_json(s.as_mut(), "200 OK", res, None)
                }
            }
        }
        // Any method reaches the /ws handler (service/service.go:123).
        (_, "/ws") => ws(s, &req, cfg, tokens),
        // loginClient answers any other method with http.NotFound (auth.go:190-192).
        (_, "/login") => go_http_error(s.as_mut(), "404 Not Found", &[], "404 page not found"),
        _ => go_http_error(s.as_mut(), "404 Not Found", &[], "404 page not found"),
    }
}

/// `auth.Service.Login`'s error for these credentials, or `None` when they are right
/// (rtcd service/auth/service.go:44-60 Authenticate, 109-121 Login; store.ErrNotFound is
/// "error: not found", service/store/store.go:11).
fn login_error(cfg: &Config, id: &str, key: &str) -> Option<String> {
    match (&cfg.client_id, &cfg.auth_key) {
        (Some(cid), Some(ckey)) if cid == id => {
            (ckey != key).then(|| "login failed: authentication failed".to_string())
        }
        _ => Some("login failed: authentication failed: error: not found".to_string()),
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

/// Go's `(*Request).BasicAuth` (net/http request.go `parseBasicAuth`): a case-insensitive
/// "Basic " prefix, standard base64, split at the first ':'.
fn basic_auth(header: &str) -> Option<(String, String)> {
    let prefix = header.get(..6)?;
    if !prefix.eq_ignore_ascii_case("Basic ") {
        return None;
    }
    let decoded = base64_decode(&header[6..])?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, key) = text.split_once(':')?;
    Some((id.to_string(), key.to_string()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { val(*c)? };
            n = (n << 6) | v;
        }
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

/// RTCD's /ws (service/ws/server.go:108-137): the auth callback first — when it fails the
/// handler returns without writing, so Go answers **200 with an empty body** and no upgrade
/// (server.go:120-126; authHandler's httpAudit gets a nil writer, service/auth.go:18-38, and
/// basicAuthHandler/bearerAuthHandler write nothing, auth.go:40-78) — then gorilla/websocket's
/// Upgrade checks (v1.5.3 server.go:125-159), whose errors are `http.Error(w,
/// StatusText(status), status)` with `Sec-Websocket-Version: 13` (server.go:77-86).
fn ws(
    mut s: Box<dyn Rw>,
    req: &Request,
    cfg: &Config,
    tokens: &Mutex<HashSet<String>>,
) -> std::io::Result<()> {
    let auth = req.header("Authorization").unwrap_or_default();
    // authHandler picks bearer on a case-sensitive "Bearer " prefix (auth.go:34-37).
    let authed = if let Some(t) = auth.strip_prefix("Bearer ") {
        tokens.lock().is_ok_and(|set| set.contains(t))
    } else {
        match (basic_auth(auth), &cfg.client_id, &cfg.auth_key) {
            // An empty client ID is refused (auth.go:50-52), then Authenticate (auth.go:54-57).
            (Some((id, key)), Some(cid), Some(ckey)) => {
                !id.is_empty() && &id == cid && &key == ckey
            }
            _ => false,
        }
    };
    if !authed {
        // Nothing written by the handler: net/http sends 200 OK, Content-Length: 0.
        return respond_with(s.as_mut(), "200 OK", &[], "");
    }
    let refuse = |s: &mut dyn Rw, status: &str| {
        let text = status.split_once(' ').map_or("", |(_, t)| t);
        go_http_error(s, status, &[("Sec-Websocket-Version", "13")], text)
    };
    if !req.has_token("Connection", "upgrade") || !req.has_token("Upgrade", "websocket") {
        return refuse(s.as_mut(), "400 Bad Request");
    }
    if req.method != "GET" {
        return refuse(s.as_mut(), "405 Method Not Allowed");
    }
    if !req.has_token("Sec-WebSocket-Version", "13") {
        return refuse(s.as_mut(), "400 Bad Request");
    }
    // checkSameOrigin (server.go:88-100): an Origin must name the request's Host.
    if let Some(origin) = req.header("Origin") {
        let host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if !host.eq_ignore_ascii_case(req.header("Host").unwrap_or_default()) {
            return refuse(s.as_mut(), "403 Forbidden");
        }
    }
    // isValidChallengeKey: base64 of 16 bytes (server.go:156-159).
    let Some(key) = req
        .header("Sec-WebSocket-Key")
        .filter(|k| base64_decode(k).is_some_and(|b| b.len() == 16))
    else {
        return refuse(s.as_mut(), "400 Bad Request");
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
