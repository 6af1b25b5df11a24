//! One HTTP exchange with RTCD's API the way Go's default transport makes it: direct, or through
//! an HTTP proxy (absolute-form requests for http://, a CONNECT tunnel for https://), with TLS
//! verified against the system's roots. Blocking std sockets under a deadline: portable, and
//! the run is a handful of sequential requests.

use probe_proto::http::{self, Parse, Response, Url};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::goproxy::Proxy;

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    Direct,
    Proxy(&'a Proxy),
}

/// Which step of opening a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// TCP to RTCD (direct) or to the proxy.
    Connect(String),
    /// The proxy refused or did not answer the CONNECT.
    Proxy(String),
    Tls(String),
    /// A proxy kind this tool does not speak (socks5, https proxies).
    Unsupported(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Connect(e)
            | OpenError::Proxy(e)
            | OpenError::Tls(e)
            | OpenError::Unsupported(e) => f.write_str(e),
        }
    }
}

pub struct Opened {
    pub stream: Box<dyn Stream>,
    pub connect_ms: f64,
    /// Negotiated TLS version, when https.
    pub tls: Option<String>,
}

/// Roots of trust: the system's store (rustls-native-certs honours SSL_CERT_FILE and
/// SSL_CERT_DIR), as Go's crypto/x509 uses it.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no trusted root certificate found on this system{}; point SSL_CERT_FILE at a CA bundle",
            found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// TCP whose reads and writes all end at the deadline.
struct TimedTcp {
    tcp: TcpStream,
    deadline: Instant,
}

impl Read for TimedTcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.set_read_timeout(Some(remaining(self.deadline)?))?;
        self.tcp.read(buf)
    }
}

impl Write for TimedTcp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp
            .set_write_timeout(Some(remaining(self.deadline)?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "no answer before the deadline".into()
        }
        _ => e.to_string(),
    }
}

fn connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for a in addrs {
        let left = remaining(deadline).map_err(|_| {
            format!("TCP connect to {a}: no answer before the deadline (port filtered?)")
        })?;
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!("TCP connect to {a}: no answer before the deadline (port filtered?)")
            }
            Err(e) => last = format!("TCP connect to {a}: {e}"),
        }
    }
    Err(last)
}

/// Opens a connection ready for one request to `url`.
pub fn open(
    url: &Url,
    route: Route,
    tls: Option<&Arc<rustls::ClientConfig>>,
    deadline: Instant,
) -> Result<Opened, OpenError> {
    let t = Instant::now();
    let (host, port) = match route {
        Route::Direct => (url.host.clone(), url.port),
        Route::Proxy(p) if p.scheme == "http" => (p.host.clone(), p.port),
        Route::Proxy(p) => {
            return Err(OpenError::Unsupported(format!(
                "{} proxies are not tested by this tool ({}={})",
                p.scheme, p.var, p.raw
            )))
        }
    };
    let tcp = connect(&host, port, deadline).map_err(OpenError::Connect)?;
    let connect_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut timed = TimedTcp { tcp, deadline };
    if let (Route::Proxy(p), true) = (route, url.https) {
        tunnel(&mut timed, url, p)?;
    }
    if !url.https {
        return Ok(Opened {
            stream: Box::new(timed),
            connect_ms,
            tls: None,
        });
    }
    let cfg = tls.ok_or_else(|| OpenError::Tls("no TLS configuration".into()))?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| OpenError::Tls(format!("{} is not a valid TLS server name: {e}", url.host)))?;
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name)
        .map_err(|e| OpenError::Tls(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut timed).map_err(|e| {
            OpenError::Tls(format!("TLS handshake with {}: {}", url.host, io_text(&e)))
        })?;
    }
    let version = conn.protocol_version().map(|v| format!("{v:?}"));
    Ok(Opened {
        stream: Box::new(rustls::StreamOwned::new(conn, timed)),
        connect_ms,
        tls: version,
    })
}

/// HTTP CONNECT through the proxy, as Go's transport does for https URLs.
fn tunnel(s: &mut TimedTcp, url: &Url, p: &Proxy) -> Result<(), OpenError> {
    let auth = p.userinfo.as_ref().map(|u| {
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        http::basic_auth(user, pass)
    });
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("Proxy-Authorization", a.as_str()));
    }
    let req = http::request("CONNECT", &url.authority(), &url.authority(), &headers, b"")
        .map_err(|e| OpenError::Proxy(e.to_string()))?;
    s.write_all(&req)
        .map_err(|e| OpenError::Proxy(format!("CONNECT via {}: {}", p.authority(), io_text(&e))))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the proxy's blank line may be consumed (it is TLS).
    loop {
        let n = s.read(&mut byte).map_err(|e| {
            OpenError::Proxy(format!("CONNECT via {}: {}", p.authority(), io_text(&e)))
        })?;
        if n == 0 {
            return Err(OpenError::Proxy(format!(
                "the proxy {} closed the connection on CONNECT",
                p.authority()
            )));
        }
        buf.push(byte[0]);
        match http::parse_head(&buf) {
            Ok(Parse::Incomplete) => {}
            Ok(Parse::Done(h, _)) if h.status / 100 == 2 => return Ok(()),
            Ok(Parse::Done(h, _)) => {
                return Err(OpenError::Proxy(format!(
                    "the proxy {} refused CONNECT {}: {} {}",
                    p.authority(),
                    url.authority(),
                    h.status,
                    h.reason
                )))
            }
            Err(e) => {
                return Err(OpenError::Proxy(format!(
                    "the proxy {} answered CONNECT with {e}",
                    p.authority()
                )))
            }
        }
    }
}

/// The request target: absolute-form to a plain HTTP proxy, origin-form otherwise.
pub fn target(url: &Url, route: Route, path: &str) -> String {
    match route {
        Route::Proxy(_) if !url.https => url.join(path),
        _ => format!("{}{path}", url.path),
    }
}

/// Proxy-Authorization for requests sent to a plain HTTP proxy.
pub fn proxy_auth(url: &Url, route: Route) -> Option<String> {
    match route {
        Route::Proxy(p) if !url.https => p.userinfo.as_ref().map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            http::basic_auth(user, pass)
        }),
        _ => None,
    }
}

/// Sends `req` and reads one response; returns it with the bytes that followed it (after a
/// 101 they belong to the WebSocket).
pub fn exchange(stream: &mut dyn Stream, req: &[u8]) -> Result<(Response, Vec<u8>), String> {
    stream.write_all(req).map_err(|e| io_text(&e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io_text(&e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match http::parse_response(&buf, n == 0, false) {
            Ok(Parse::Done(r, used)) => return Ok((r, buf[used..].to_vec())),
            Ok(Parse::Incomplete) if n == 0 => {
                return Err(if buf.is_empty() {
                    "the connection closed without an answer".into()
                } else {
                    format!(
                        "the connection closed in the middle of the answer ({} bytes)",
                        buf.len()
                    )
                })
            }
            Ok(Parse::Incomplete) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}
