//! A blocking HTTP/1.1 client under a deadline, over TCP or TLS (rustls), on std sockets:
//! portable, and both users make a handful of sequential requests.
//!
//! Two ways in: [`get`] resolves a URL's host and GETs one path (the doctor, on RTCD's own
//! host), and [`open`] + [`exchange`] dial one given address with the caller's dial rules (the
//! Calls plugin's, in `probe-client rtcd-api`). Errors are typed, so each caller words them.

use probe_proto::http::{self, Parse, Response, Url};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod tls;

pub use tls::{native_roots_config, unverified_config, with_roots};

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Time left until `deadline`; `TimedOut` once it has passed.
pub fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// A TCP stream whose every read and write is bounded by the deadline.
pub struct TimedTcp {
    pub tcp: TcpStream,
    pub deadline: Instant,
}

impl Read for TimedTcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // A signal (the doctor runs child processes: SIGCHLD) interrupts a blocking read with
        // EINTR; that is no answer from the peer, so try again within the same deadline.
        loop {
            self.tcp.set_read_timeout(Some(remaining(self.deadline)?))?;
            match self.tcp.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for TimedTcp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            self.tcp
                .set_write_timeout(Some(remaining(self.deadline)?))?;
            match self.tcp.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// How a connection is dialled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dial {
    /// Bound on the TCP connect (within the deadline); `None`: the deadline alone.
    pub connect_timeout: Option<Duration>,
    /// Bound on the TLS handshake, done before `open` returns; `None`: the handshake happens
    /// with the first request, under the deadline.
    pub tls_handshake_timeout: Option<Duration>,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The deadline had passed before the connect.
    NoTime,
    /// The TCP connect failed (`TimedOut` when the connect bound ran out).
    Connect(std::io::Error),
    /// https without a TLS configuration.
    NoTlsConfig,
    /// The URL's host is not a TLS server name.
    TlsName(String),
    /// rustls refused to start the connection.
    TlsSetup(rustls::Error),
    /// The bounded handshake failed (`TimedOut`/`WouldBlock` when the bound ran out).
    Handshake(std::io::Error),
}

pub struct Opened {
    pub stream: Box<dyn Stream>,
    pub connect_ms: f64,
    /// Negotiated TLS version, when https and the handshake was done by `open`.
    pub tls: Option<String>,
}

/// TCP to `addr` within `bound` and the deadline, with Nagle off.
pub fn connect(
    addr: SocketAddr,
    bound: Option<Duration>,
    deadline: Instant,
) -> Result<TcpStream, OpenError> {
    let left = remaining(deadline).map_err(|_| OpenError::NoTime)?;
    let tcp = TcpStream::connect_timeout(&addr, bound.map_or(left, |b| left.min(b)))
        .map_err(OpenError::Connect)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Opens a connection to `addr` ready for requests to `url`: TLS when https (with `tls`, for
/// the URL's host name).
pub fn open(
    url: &Url,
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    dial: Dial,
    deadline: Instant,
) -> Result<Opened, OpenError> {
    let t = Instant::now();
    let tcp = connect(addr, dial.connect_timeout, deadline)?;
    let connect_ms = t.elapsed().as_secs_f64() * 1000.0;
    let timed = TimedTcp { tcp, deadline };
    if !url.https {
        return Ok(Opened {
            stream: Box::new(timed),
            connect_ms,
            tls: None,
        });
    }
    let cfg = tls.ok_or(OpenError::NoTlsConfig)?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| OpenError::TlsName(e.to_string()))?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(OpenError::TlsSetup)?;
    let (stream, version) = match dial.tls_handshake_timeout {
        Some(bound) => tls::handshake(conn, timed, bound).map_err(OpenError::Handshake)?,
        None => (rustls::StreamOwned::new(conn, timed), None),
    };
    Ok(Opened {
        stream: Box::new(stream),
        connect_ms,
        tls: version,
    })
}

/// Why an exchange gave no response.
#[derive(Debug)]
pub enum ExchangeError {
    /// Sending the request failed.
    Write(std::io::Error),
    /// Reading failed (`TimedOut`/`WouldBlock` at the deadline).
    Read(std::io::Error),
    /// The peer closed before a complete response, after `bytes` bytes.
    Closed { bytes: usize },
    /// Not an HTTP response; `first` holds up to its first 8 bytes.
    Parse { error: String, first: Vec<u8> },
}

/// Sends `req` and reads one response; returns it with the bytes that followed it (after a
/// 101 they belong to the WebSocket). A peer closing without TLS close_notify still ended the
/// answer; with `reset_ends_answer`, so does a reset after part of it (as Go's reader sees it).
pub fn exchange(
    stream: &mut dyn Stream,
    req: &[u8],
    reset_ends_answer: bool,
) -> Result<(Response, Vec<u8>), ExchangeError> {
    stream.write_all(req).map_err(ExchangeError::Write)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e)
                if reset_ends_answer
                    && e.kind() == std::io::ErrorKind::ConnectionReset
                    && !buf.is_empty() =>
            {
                0
            }
            Err(e) => return Err(ExchangeError::Read(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match http::parse_response(&buf, n == 0, false) {
            Ok(Parse::Done(r, used)) => return Ok((r, buf[used..].to_vec())),
            Ok(Parse::Incomplete) if n == 0 => {
                return Err(ExchangeError::Closed { bytes: buf.len() })
            }
            Ok(Parse::Incomplete) => {}
            Err(e) => {
                return Err(ExchangeError::Parse {
                    error: e.to_string(),
                    first: buf[..buf.len().min(8)].to_vec(),
                })
            }
        }
    }
}

/// Why [`get`] failed, split so a report can tell "nothing answers" from "something answers,
/// but not as expected".
#[derive(Debug)]
pub enum FetchError {
    /// No TCP connection (refused, timed out, no route, name not resolved).
    Connect(String),
    /// Connected, then TLS, the exchange or the deadline failed.
    Exchange(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Connect(e) | FetchError::Exchange(e) => f.write_str(e),
        }
    }
}

/// What [`get`] sends and trusts.
pub struct GetConfig<'a> {
    pub user_agent: &'a str,
    /// For https URLs (`None`: an https URL fails).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// `GET url.path + path` with `Connection: close`: resolves the URL's host, takes the first
/// address that connects, and reads the response within the deadline.
pub fn get(
    url: &Url,
    path: &str,
    cfg: &GetConfig,
    deadline: Instant,
) -> Result<Response, FetchError> {
    let mut opened = dial_any(url, cfg.tls.as_ref(), deadline)?;
    let req = http::request(
        "GET",
        &format!("{}{path}", url.path),
        &url.authority(),
        &[("User-Agent", cfg.user_agent), ("Connection", "close")],
        b"",
    )
    .map_err(|e| FetchError::Exchange(e.to_string()))?;
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            FetchError::Exchange(format!("no answer to GET {path} in time"))
        } else {
            FetchError::Exchange(format!("GET {path}: {e}"))
        }
    };
    match exchange(opened.stream.as_mut(), &req, false) {
        Ok((r, _)) => Ok(r),
        Err(ExchangeError::Write(e) | ExchangeError::Read(e)) => Err(io(e)),
        Err(ExchangeError::Closed { bytes }) => Err(FetchError::Exchange(format!(
            "the connection closed before a complete answer to GET {path} ({bytes} bytes)"
        ))),
        Err(ExchangeError::Parse { error, .. }) => {
            Err(FetchError::Exchange(format!("GET {path}: {error}")))
        }
    }
}

/// The first of the host's addresses that accepts a TCP connection, opened for `url`.
fn dial_any(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    deadline: Instant,
) -> Result<Opened, FetchError> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| FetchError::Connect(format!("cannot resolve {}: {e}", url.host)))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match open(url, a, tls, Dial::default(), deadline) {
            Ok(o) => return Ok(o),
            Err(OpenError::Connect(e)) => last = format!("TCP connect to {a} failed: {e}"),
            Err(OpenError::NoTime) => {
                return Err(FetchError::Exchange(
                    "no answer to the TCP connect in time".into(),
                ))
            }
            Err(OpenError::TlsName(e)) => {
                return Err(FetchError::Exchange(format!(
                    "bad TLS name {}: {e}",
                    url.host
                )))
            }
            Err(OpenError::TlsSetup(e)) => return Err(FetchError::Exchange(format!("TLS: {e}"))),
            Err(OpenError::NoTlsConfig) => {
                return Err(FetchError::Exchange("TLS setup: no configuration".into()))
            }
            // `Dial::default()` leaves the handshake to the request.
            Err(OpenError::Handshake(e)) => return Err(FetchError::Exchange(format!("TLS: {e}"))),
        }
    }
    Err(FetchError::Connect(last))
}

#[cfg(test)]
mod tests;
