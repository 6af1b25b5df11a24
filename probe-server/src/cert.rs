//! The server's QUIC identity: a self-signed certificate generated on first start and kept in
//! the state directory, so the pin users copy stays valid across restarts.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub struct Identity {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    /// `sha256:HEX` of the certificate, what clients pass to `--pin`.
    pub pin: String,
}

/// Default state directory: /var/lib for root (systemd's StateDirectory), else the user's.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        return PathBuf::from(dir);
    }
    #[cfg(unix)]
    {
        // Only root may write /var/lib; everyone else gets an XDG-style per-user directory.
        if is_root() {
            return PathBuf::from("/var/lib/probe-server");
        }
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("probe-server");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/probe-server"),
        None => PathBuf::from(".probe-server"),
    }
}

#[cfg(unix)]
fn is_root() -> bool {
    // SAFETY-free: the effective uid is readable from /proc without libc on Linux; elsewhere
    // fall back to the HOME heuristic of XDG.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn pin_of(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Loads the identity from `dir`, creating it on first start.
pub fn load_or_create(dir: &Path) -> Result<Identity> {
    let cert_path = dir.join("cert.der");
    let key_path = dir.join("key.der");
    if cert_path.exists() && key_path.exists() {
        let cert_der = std::fs::read(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?;
        let key_der = std::fs::read(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let pin = pin_of(&cert_der);
        return Ok(Identity {
            cert_der,
            key_der,
            pin,
        });
    }
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the state directory {} (choose another with --state-dir)",
            dir.display()
        )
    })?;
    let cert = rcgen::generate_simple_self_signed(vec!["probe-server".to_string()])
        .map_err(|e| anyhow::anyhow!("cannot generate a certificate: {e}"))?;
    let cert_der = cert.cert.der().to_vec();
    let key_der = cert.signing_key.serialize_der();
    write_private(&key_path, &key_der)?;
    std::fs::write(&cert_path, &cert_der)
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    let pin = pin_of(&cert_der);
    Ok(Identity {
        cert_der,
        key_der,
        pin,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
