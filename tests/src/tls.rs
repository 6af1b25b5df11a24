//! TLS on probe-server's TCP port as probe-client speaks it (TLS 1.3, ALPN `calls-probe-tcp/1`,
//! RFC 4571 frames inside), for tests that send control messages there, and the pieces of a
//! TLS-terminating relay (a man in the middle with a certificate of its own).
//!
//! The client side accepts any certificate and records its pin: tests compare pins themselves.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// probe-server's ALPN for TLS on its TCP port (probe-server/src/tcp.rs).
pub const ALPN: &[u8] = b"calls-probe-tcp/1";

/// A blocking TLS connection over a TCP stream (or any byte stream).
pub type ClientStream<S = TcpStream> = rustls::StreamOwned<rustls::ClientConnection, S>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sha256:HEX` of a DER certificate, as probe-server prints it.
pub fn pin_of(der: &[u8]) -> String {
    use std::fmt::Write;
    let d = ring_digest(der);
    d.iter().fold(String::from("sha256:"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn ring_digest(der: &[u8]) -> Vec<u8> {
    // rustls re-exports no hash function; its ring provider's SHA-256 is reachable through a
    // TLS 1.3 cipher suite.
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = suite.tls13().expect("a TLS 1.3 suite").common.hash_provider;
    hash.hash(der).as_ref().to_vec()
}

/// Accepts any certificate (the signature is still checked) and remembers its pin.
#[derive(Debug)]
pub struct AnyCert {
    provider: Arc<CryptoProvider>,
    pub seen: Mutex<Option<String>>,
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(pin_of(end_entity.as_ref()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS 1.3 to probe-server's TCP port over `tcp`, handshake completed. Returns the stream and
/// the pin of the certificate the server presented.
pub fn connect<S: std::io::Read + std::io::Write>(
    tcp: S,
) -> std::io::Result<(ClientStream<S>, String)> {
    let verifier = Arc::new(AnyCert {
        provider: provider(),
        seen: Mutex::new(None),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let name = ServerName::try_from("probe-server").expect("a name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    let pin = verifier.seen.lock().unwrap().clone().unwrap_or_default();
    Ok((s, pin))
}

/// A server config with a fresh self-signed certificate (not probe-server's) and its pin.
pub fn impostor_config() -> (Arc<rustls::ServerConfig>, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["probe-server".to_string()])
        .expect("a certificate");
    let der = cert.cert.der().to_vec();
    let pin = pin_of(&der);
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("a key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![der.into()], key)
        .expect("cert and key");
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    (Arc::new(cfg), pin)
}
