//! A blocking HTTP/1.1 GET to RTCD's API on this host, under a deadline, over TCP or TLS.
//!
//! TLS certificates are not verified here: the doctor talks to RTCD on its own host (usually
//! 127.0.0.1, which no certificate names); whether Mattermost trusts RTCD's certificate is
//! what `probe-client rtcd-api` checks from the Mattermost host.

use probe_proto::http::{self, Parse, Response, Url};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a request failed, split so the report can tell "nothing answers" from "something
/// answers, but not like RTCD".
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

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

pub fn get(url: &Url, path: &str, deadline: Instant) -> Result<Response, FetchError> {
    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| FetchError::Exchange(format!("no answer to {what} in time")))
    };
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| FetchError::Connect(format!("cannot resolve {}: {e}", url.host)))?
        .collect();
    let mut last = String::from("no address");
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, left("the TCP connect")?) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("TCP connect to {a} failed: {e}"),
        }
    }
    let tcp = tcp.ok_or(FetchError::Connect(last))?;
    let _ = tcp.set_nodelay(true);
    let target = format!("{}{path}", url.path);
    let req = http::request(
        "GET",
        &target,
        &url.authority(),
        &[
            (
                "User-Agent",
                concat!("probe-server/", env!("CARGO_PKG_VERSION")),
            ),
            ("Connection", "close"),
        ],
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
    let mut stream: Box<dyn Stream> = if url.https {
        let cfg = tls_config().map_err(FetchError::Exchange)?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| FetchError::Exchange(format!("bad TLS name {}: {e}", url.host)))?;
        let conn = rustls::ClientConnection::new(cfg, name)
            .map_err(|e| FetchError::Exchange(format!("TLS: {e}")))?;
        Box::new(rustls::StreamOwned::new(conn, TimedTcp { tcp, deadline }))
    } else {
        Box::new(TimedTcp { tcp, deadline })
    };
    stream.write_all(&req).map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // A peer that closes without TLS close_notify still ended the body.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io(e)),
        };
        if n > 0 {
            buf.extend_from_slice(&chunk[..n]);
        }
        match http::parse_response(&buf, n == 0, false) {
            Ok(Parse::Done(r, _)) => return Ok(r),
            Ok(Parse::Incomplete) if n == 0 => {
                return Err(FetchError::Exchange(format!(
                    "the connection closed before a complete answer to GET {path} ({} bytes)",
                    buf.len()
                )))
            }
            Ok(Parse::Incomplete) => {}
            Err(e) => return Err(FetchError::Exchange(format!("GET {path}: {e}"))),
        }
    }
}

/// A TCP stream whose every read and write is bounded by the deadline.
struct TimedTcp {
    tcp: TcpStream,
    deadline: Instant,
}

impl TimedTcp {
    fn remaining(&self) -> std::io::Result<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
    }
}

impl Read for TimedTcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.remaining()?))?;
        self.tcp.read(buf)
    }
}

impl Write for TimedTcp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.remaining()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts any certificate (see the module note) but still checks the handshake signatures,
/// so the TLS exchange itself is real.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(reply: &'static [u8]) -> Url {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(reply);
        });
        Url::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    }

    #[test]
    fn gets_a_close_delimited_body() {
        let url = serve_once(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"buildVersion\":\"v1\"}",
        );
        let r = get(&url, "/version", Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(r.head.status, 200);
        assert_eq!(r.text(), "{\"buildVersion\":\"v1\"}");
    }

    #[test]
    fn refused_is_a_connect_error_and_silence_hits_the_deadline() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(matches!(
            get(&url, "/", Instant::now() + Duration::from_secs(5)),
            Err(FetchError::Connect(_))
        ));
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
        let t = Instant::now();
        let e = get(
            &url,
            "/version",
            Instant::now() + Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, FetchError::Exchange(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
