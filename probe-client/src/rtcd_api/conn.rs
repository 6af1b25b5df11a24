//! One connection to one of RTCD's addresses, made the way the Calls plugin makes it: its
//! dialer ignores the address Go asks for and connects to `IP:port` of the RTCD URL itself
//! (plugin server/rtcd.go:680-687), within 4 s (`dialingTimeout`, rtcd.go:36); TLS verifies the
//! URL's host name against the system's roots, with Go's 1 s `TLSHandshakeTimeout` (rtcd
//! service/client.go:123). The blocking client is probe-shell's; this module holds the
//! plugin's dial rules and words the errors as the report shows them.

use probe_proto::http::{Response, Url};
use probe_shell::http::{self as shell, Dial, ExchangeError};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use probe_shell::http::{Opened, Stream};

/// The plugin's dial timeout (plugin server/rtcd.go:36, used at 680-687).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(4);
/// Go's transport TLS handshake bound in RTCD's client (rtcd service/client.go:123).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The plugin's dial rules.
const PLUGIN_DIAL: Dial = Dial {
    connect_timeout: Some(DIAL_TIMEOUT),
    tls_handshake_timeout: Some(TLS_HANDSHAKE_TIMEOUT),
};

/// Which step of opening a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    Connect(String),
    Tls(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Connect(e) | OpenError::Tls(e) => f.write_str(e),
        }
    }
}

/// Roots of trust: the system's store, as Go's crypto/x509 uses it.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    shell::native_roots_config()
}

fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "no answer before the deadline".into()
        }
        _ => e.to_string(),
    }
}

/// The report's words for a failed connect to `addr`.
fn connect_text(addr: SocketAddr, e: shell::OpenError) -> String {
    let filtered = || format!("TCP connect to {addr}: no answer within 4 s (port filtered?)");
    match e {
        shell::OpenError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut => filtered(),
        shell::OpenError::Connect(e) => format!("TCP connect to {addr}: {e}"),
        _ => filtered(),
    }
}

/// TCP to `addr` within the plugin's dial timeout (and the run's deadline).
fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
    shell::connect(addr, Some(DIAL_TIMEOUT), deadline).map_err(|e| connect_text(addr, e))
}

/// A plain TCP connection to `addr`, for what the plugin sends before any TLS (a proxy's
/// CONNECT).
pub fn open_plain(addr: SocketAddr, deadline: Instant) -> Result<Box<dyn Stream>, String> {
    let tcp = connect(addr, deadline)?;
    Ok(Box::new(shell::TimedTcp { tcp, deadline }))
}

/// Opens a connection to `addr` ready for one request to `url` (TLS when https, verified for
/// the URL's host name as Go does).
pub fn open(
    url: &Url,
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    deadline: Instant,
) -> Result<Opened, OpenError> {
    shell::open(url, addr, tls, PLUGIN_DIAL, deadline).map_err(|e| match e {
        shell::OpenError::NoTime | shell::OpenError::Connect(_) => {
            OpenError::Connect(connect_text(addr, e))
        }
        shell::OpenError::NoTlsConfig => OpenError::Tls("no TLS configuration".into()),
        shell::OpenError::TlsName(e) => {
            OpenError::Tls(format!("{} is not a valid TLS server name: {e}", url.host))
        }
        shell::OpenError::TlsSetup(e) => OpenError::Tls(e.to_string()),
        shell::OpenError::Handshake(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    "not done within Go's 1 s TLS handshake timeout".to_string()
                }
                _ => e.to_string(),
            };
            OpenError::Tls(format!("TLS handshake with {} at {addr}: {why}", url.host))
        }
    })
}

/// Sends `req` and reads one response; returns it with the bytes that followed it (after a
/// 101 they belong to the WebSocket).
pub fn exchange(stream: &mut dyn Stream, req: &[u8]) -> Result<(Response, Vec<u8>), String> {
    shell::exchange(stream, req, true).map_err(|e| match e {
        ExchangeError::Write(e) => io_text(&e),
        ExchangeError::Read(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            "the connection was closed (reset) without an answer".into()
        }
        ExchangeError::Read(e) => io_text(&e),
        ExchangeError::Closed { bytes: 0 } => "the connection closed without an answer".into(),
        ExchangeError::Closed { bytes } => {
            format!("the connection closed in the middle of the answer ({bytes} bytes)")
        }
        ExchangeError::Parse { error, first } => {
            format!("not an HTTP answer ({error}; first bytes {first:02x?})")
        }
    })
}
