//! TLS client configurations and a handshake bounded apart from the request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::CertificateDer;

use super::TimedTcp;

/// Roots of trust: the system's store (rustls-native-certs honours SSL_CERT_FILE and
/// SSL_CERT_DIR), as Go's crypto/x509 uses it.
pub fn native_roots_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no trusted root certificate found on this system{}; point SSL_CERT_FILE at a CA bundle",
            found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    with_roots(roots)
}

/// A client configuration trusting `roots`, with ring and rustls' safe protocol versions.
pub fn with_roots(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts any certificate, for a server on this very host (usually 127.0.0.1, which no
/// certificate names), but still checks the handshake signatures, so the TLS exchange itself
/// is real.
pub fn unverified_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Completes the handshake within `bound` (and the stream's deadline, which then applies
/// again); returns the stream and the negotiated version.
pub(super) fn handshake(
    mut conn: rustls::ClientConnection,
    mut timed: TimedTcp,
    bound: Duration,
) -> std::io::Result<(
    rustls::StreamOwned<rustls::ClientConnection, TimedTcp>,
    Option<String>,
)> {
    let deadline = timed.deadline;
    timed.deadline = deadline.min(Instant::now() + bound);
    while conn.is_handshaking() {
        conn.complete_io(&mut timed)?;
    }
    timed.deadline = deadline;
    let version = conn.protocol_version().map(|v| format!("{v:?}"));
    Ok((rustls::StreamOwned::new(conn, timed), version))
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

/// rustls' TLS 1.2 or 1.3 handshake signature check.
type VerifySignature = fn(
    &[u8],
    &CertificateDer<'_>,
    &rustls::DigitallySignedStruct,
    &rustls::crypto::WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error>;

impl AnyCert {
    /// The handshake signature, checked with the provider's algorithms.
    fn signature(
        &self,
        verify: VerifySignature,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
}

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
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(rustls::crypto::verify_tls12_signature, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(rustls::crypto::verify_tls13_signature, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
