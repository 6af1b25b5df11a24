//! Links to a TURN server: UDP datagrams, or a TCP stream (optionally TLS, optionally through an
//! HTTP proxy's CONNECT tunnel) carrying STUN and padded ChannelData back to back (RFC 8656
//! 12.5; RFC 6062-style framing on the stream). Blocking std sockets: every call ends at the
//! deadline it is given, and the whole check runs on a blocking thread.

use probe_proto::http::{self, Parse};
use probe_proto::turn::codec::StreamDecoder;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rtcd_api::goproxy::Proxy;

/// A message-oriented link: datagrams on UDP, STUN/ChannelData messages on a stream.
pub trait Link: Send {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The next message, or `Ok(None)` when `until` passes first.
    fn recv(&mut self, until: Instant) -> io::Result<Option<Vec<u8>>>;
    /// The UDP socket under a datagram link (the path-MTU probes set DF on it).
    fn udp_socket(&self) -> Option<&UdpSocket> {
        None
    }
}

fn left(until: Instant) -> Option<Duration> {
    until
        .checked_duration_since(Instant::now())
        .filter(|d| *d >= Duration::from_millis(1))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub struct UdpLink {
    sock: UdpSocket,
    buf: Vec<u8>,
}

impl UdpLink {
    /// A connected UDP socket: ICMP port-unreachable surfaces as "connection refused".
    pub fn open(server: SocketAddr) -> io::Result<Self> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(server)?;
        Ok(Self {
            sock,
            buf: vec![0; 65_536],
        })
    }
}

impl Link for UdpLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.send(bytes).map(|_| ())
    }

    fn udp_socket(&self) -> Option<&UdpSocket> {
        Some(&self.sock)
    }

    fn recv(&mut self, until: Instant) -> io::Result<Option<Vec<u8>>> {
        let Some(d) = left(until) else {
            return Ok(None);
        };
        self.sock.set_read_timeout(Some(d))?;
        match self.sock.recv(&mut self.buf) {
            Ok(n) => Ok(Some(self.buf[..n].to_vec())),
            Err(e) if is_timeout(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A TCP connection, TLS or not, through a proxy's tunnel or not.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl StreamLink {
    pub fn new(s: Stream) -> Self {
        Self {
            s,
            dec: StreamDecoder::new(),
        }
    }
}

/// `host:port` of a proxy (IPv6 in brackets).
pub fn proxy_authority(p: &Proxy) -> String {
    probe_proto::http::host_port(&p.host, p.port)
}

pub struct StreamLink {
    s: Stream,
    dec: StreamDecoder,
}

/// What opening a stream reports besides the stream.
pub struct Opened {
    pub stream: Stream,
    pub connect_ms: f64,
    pub tls_ms: Option<f64>,
    pub tls_version: Option<String>,
}

/// Why a stream link did not open, by step.
#[derive(Debug)]
pub enum OpenError {
    Connect(String),
    Proxy(String),
    Tls(String),
}

fn io_text(e: &io::Error) -> String {
    if is_timeout(e) {
        "no answer before the deadline".into()
    } else {
        e.to_string()
    }
}

/// Connects to `server` (directly, or through `proxy` with CONNECT to `authority`) and, with
/// `tls = Some((config, name))`, runs the TLS handshake for `name` (sent as SNI when it is a
/// host name).
pub fn open_stream(
    server: SocketAddr,
    authority: &str,
    proxy: Option<(&Proxy, SocketAddr)>,
    tls: Option<(Arc<rustls::ClientConfig>, &str)>,
    deadline: Instant,
) -> Result<Opened, OpenError> {
    let t0 = Instant::now();
    let first_hop = proxy.map_or(server, |(_, addr)| addr);
    // A TCP connect gets what a STUN transaction gets (3 s): a filtered port is judged as fast
    // over TCP as over UDP.
    let d = left(deadline)
        .ok_or_else(|| OpenError::Connect("no time left".into()))?
        .min(Duration::from_secs(3));
    let mut tcp = TcpStream::connect_timeout(&first_hop, d).map_err(|e| {
        let what = if proxy.is_some() { "the proxy " } else { "" };
        OpenError::Connect(format!("TCP connect to {what}{first_hop}: {}", io_text(&e)))
    })?;
    let _ = tcp.set_nodelay(true);
    if let Some((p, _)) = proxy {
        connect_tunnel(&mut tcp, p, authority, deadline).map_err(OpenError::Proxy)?;
    }
    let connect_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let Some((cfg, name)) = tls else {
        return Ok(Opened {
            stream: Stream::Tcp(tcp),
            connect_ms,
            tls_ms: None,
            tls_version: None,
        });
    };
    let t1 = Instant::now();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| OpenError::Tls(format!("{name} is not a valid TLS server name: {e}")))?;
    let mut conn = rustls::ClientConnection::new(cfg, server_name)
        .map_err(|e| OpenError::Tls(e.to_string()))?;
    while conn.is_handshaking() {
        let d = left(deadline)
            .ok_or_else(|| OpenError::Tls("TLS handshake: no answer before the deadline".into()))?;
        let _ = tcp.set_read_timeout(Some(d));
        let _ = tcp.set_write_timeout(Some(d));
        conn.complete_io(&mut tcp).map_err(|e| {
            // rustls reports certificate problems as InvalidData wrapping its own error.
            OpenError::Tls(format!("TLS handshake with {name}: {}", tls_text(&e)))
        })?;
    }
    let tls_version = conn.protocol_version().map(|v| format!("{v:?}"));
    Ok(Opened {
        stream: Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
        connect_ms,
        tls_ms: Some(t1.elapsed().as_secs_f64() * 1000.0),
        tls_version,
    })
}

/// A TLS failure in the words of its fix.
fn tls_text(e: &io::Error) -> String {
    let raw = io_text(e);
    let lower = raw.to_ascii_lowercase();
    let hint = if raw.contains("UnknownIssuer") || lower.contains("unknown issuer") {
        " — the chain does not lead to a trusted CA: coturn must send the intermediates (cert= with the full chain); a private CA needs --turn-ca here and in the browsers"
    } else if raw.contains("NotValidForName") || lower.contains("not valid for name") {
        " — the certificate is not issued for this name (clients send it as SNI): use the name on the certificate in the turns: URL, or reissue it"
    } else if raw.contains("Expired") || lower.contains("expired") {
        " — the certificate has expired"
    } else if raw.contains("HandshakeFailure") || raw.contains("ProtocolVersion") {
        " — no TLS version/cipher in common with what browsers offer"
    } else {
        ""
    };
    format!("{raw}{hint}")
}

/// HTTP CONNECT, as a browser does for TURN over TCP/TLS behind a proxy.
fn connect_tunnel(
    tcp: &mut TcpStream,
    p: &Proxy,
    authority: &str,
    deadline: Instant,
) -> Result<(), String> {
    let auth = p.userinfo.as_ref().map(|u| {
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        http::basic_auth(user, pass)
    });
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("Proxy-Authorization", a.as_str()));
    }
    let req =
        http::request("CONNECT", authority, authority, &headers, b"").map_err(|e| e.to_string())?;
    let via = proxy_authority(p);
    let d = left(deadline).ok_or("no time left for CONNECT")?;
    let _ = tcp.set_write_timeout(Some(d));
    tcp.write_all(&req)
        .map_err(|e| format!("CONNECT via {via}: {}", io_text(&e)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: what follows the proxy's blank line belongs to the TURN server.
    loop {
        let d = left(deadline)
            .ok_or_else(|| format!("CONNECT via {via}: no answer before the deadline"))?;
        let _ = tcp.set_read_timeout(Some(d));
        let n = tcp
            .read(&mut byte)
            .map_err(|e| format!("CONNECT via {via}: {}", io_text(&e)))?;
        if n == 0 {
            return Err(format!("the proxy {via} closed the connection on CONNECT"));
        }
        buf.push(byte[0]);
        match http::parse_head(&buf) {
            Ok(Parse::Incomplete) => {}
            Ok(Parse::Done(h, _)) if h.status / 100 == 2 => return Ok(()),
            Ok(Parse::Done(h, _)) => {
                return Err(format!(
                    "the proxy {via} refused CONNECT {authority}: {} {}",
                    h.status, h.reason
                ))
            }
            Err(e) => return Err(format!("the proxy {via} answered CONNECT with {e}")),
        }
    }
}

impl Link for StreamLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let _ = self.s.tcp().set_write_timeout(Some(Duration::from_secs(2)));
        self.s.write_all(bytes)?;
        self.s.flush()
    }

    fn recv(&mut self, until: Instant) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(m) = self
                .dec
                .next_message()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(Some(m));
            }
            let Some(d) = left(until) else {
                return Ok(None);
            };
            self.s.tcp().set_read_timeout(Some(d))?;
            match self.s.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the TURN server closed the connection",
                    ))
                }
                Ok(n) => self.dec.push(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The TLS configuration for `turns:`: the system's roots plus `extra_ca` (PEM), TLS 1.2 and
/// 1.3 as browsers offer them.
pub fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --turn-ca {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--turn-ca {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--turn-ca {}: no PEM certificate in it",
                path.display()
            ));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "--turn-ca {}: no usable certificate",
                path.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err("no trusted root certificate on this system; pass --turn-ca".into());
    }
    probe_shell::http::with_roots(roots)
}
