//! Certificate pinning for both control channels, QUIC and TLS on the TCP port (one certificate
//! serves both): the server's certificate is self-signed, so trust comes from the SHA-256 pin
//! the admin copies from the server's ready line.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};

/// Normalises `sha256:HEX` (case-insensitive, optional prefix, optional colons); the
/// `pin=` of the ready line, pasted with it, is taken off too.
pub fn parse_pin(s: &str) -> Result<String, String> {
    let t = s.trim();
    let t = t.strip_prefix("pin=").unwrap_or(t);
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &t[7..],
        _ => t,
    };
    let hex: String = t
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(format!("sha256:{hex}"))
    } else {
        Err(format!(
            "`{s}` is not a certificate pin; copy the `pin=sha256:…` value (64 hex digits) from the probe-server ready line"
        ))
    }
}

pub fn pin_of(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    format!(
        "sha256:{}",
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[derive(Debug)]
pub struct PinVerifier {
    expected: Option<String>,
    /// The pin the server actually presented, for the mismatch message and the report.
    pub seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    pub fn new(expected: Option<String>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            expected,
            seen: Mutex::new(None),
            provider,
        }
    }

    pub fn seen(&self) -> Option<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True when a pin was given and the server presented another certificate.
    pub fn mismatch(&self) -> bool {
        matches!((&self.expected, self.seen()), (Some(e), Some(s)) if *e != s)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = pin_of(end_entity.as_ref());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(pin.clone());
        match &self.expected {
            Some(want) if *want != pin => Err(rustls::Error::General(format!(
                "certificate pin {pin} is not {want}"
            ))),
            // Without --pin the run still measures the path; the report names the pin it saw.
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is used by neither control channel".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The pin says which key; the signature still proves the server holds it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_forms() {
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_pin(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert_eq!(
            parse_pin(&hex.to_uppercase()).unwrap(),
            format!("sha256:{hex}")
        );
        // The ready line's `pin=…` pasted whole, and an upper-case prefix.
        for pasted in [
            format!("pin=sha256:{hex}"),
            format!("SHA256:{}", hex.to_uppercase()),
        ] {
            assert_eq!(
                parse_pin(&pasted).unwrap(),
                format!("sha256:{hex}"),
                "{pasted}"
            );
        }
        assert!(parse_pin("sha256:abc").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
