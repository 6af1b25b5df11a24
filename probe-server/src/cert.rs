//! The server's TLS identity, for QUIC and for TLS on the TCP port alike: a self-signed
//! certificate generated on first start and kept in the state directory, so the pin users copy
//! stays valid across restarts and protects both control channels.

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
    let empty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() == 0);
    if empty(&cert_path) || empty(&key_path) {
        // Left by a first start that failed half-way (a full disk) before writes were atomic:
        // nothing was ever pinned by it, so a new identity is made.
        tracing::warn!(
            dir = %dir.display(),
            "the stored certificate or key is empty (a start that failed half-way): a new one, with a new pin, is made"
        );
    } else if cert_path.exists() && key_path.exists() {
        let cert_der = std::fs::read(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?;
        let key_der = std::fs::read(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        // Files left by an older version (or copied in with a wide umask) are tightened.
        tighten(&key_path);
        tighten(&cert_path);
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
    write_private(&cert_path, &cert_der)?;
    let pin = pin_of(&cert_der);
    Ok(Identity {
        cert_der,
        key_der,
        pin,
    })
}

/// TLS 1.3 (ring, as QUIC uses) with the identity's certificate, offering `alpn` only.
pub fn tls_server_config(
    id: &Identity,
    alpn: &[u8],
) -> Result<std::sync::Arc<rustls::ServerConfig>> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cert = rustls::pki_types::CertificateDer::from(id.cert_der.clone());
    let key = rustls::pki_types::PrivateKeyDer::try_from(id.key_der.clone())
        .map_err(|e| anyhow::anyhow!("the stored private key is unusable: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with ring is available")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .context("the stored certificate and key do not match")?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    // No resumption: every connection proves the pinned key afresh, and holds no ticket state.
    tls.send_tls13_tickets = 0;
    Ok(std::sync::Arc::new(tls))
}

/// State files are the owner's alone (0600), whatever they hold. A file this process may read
/// but not chmod (another owner) is left as it is, with a warning.
pub fn tighten(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), "cannot make this state file private (chmod 600): {e}");
        }
    }
}

/// Written whole or not at all (a temporary file renamed over the path): a disk that fills
/// half-way leaves no empty file that a later start would take for the identity.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let what = || {
        format!(
            "cannot write {}; free space on that disk, or choose another --state-dir",
            path.display()
        )
    };
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // Mode 0600 from the first byte; a planted symlink is refused, not followed.
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(what)
}

/// A path as it may appear in a log line: its control characters (a newline that would forge a
/// line, an escape sequence) left out.
pub fn printable_path(f: &Path) -> String {
    f.display()
        .to_string()
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

/// The `--token …` part of the copy-paste client command in the start log. A token that came
/// from a file or from `PROBE_SERVER_TOKEN` is never printed: the line points at the file or the
/// variable. Only a token the admin typed on this command line (so already in the process list
/// and the shell history) is echoed, shell-quoted, and only when it is plain printable ASCII.
pub fn token_hint(token: Option<&str>, file: Option<&Path>, env: Option<&str>) -> String {
    match (token, file) {
        (Some(t), _) if env == Some(t) => " --token \"$PROBE_SERVER_TOKEN\"".into(),
        (Some(t), _) if !t.is_empty() && t.trim().bytes().all(|b| b.is_ascii_graphic()) => {
            format!(" --token '{}'", t.trim().replace('\'', "'\\''"))
        }
        (Some(_), _) => " --token \"$PROBE_TOKEN\"".into(),
        (None, Some(f)) => {
            let shown = printable_path(f);
            format!(
                " --token \"$(head -n1 '{}')\"",
                shown.replace('\'', "'\\''")
            )
        }
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Empty files from a first start that failed half-way are not an identity: a new one is
    /// made (before, every later start failed on "certificate and key do not match").
    #[test]
    fn empty_identity_files_are_made_again() {
        let dir = std::env::temp_dir().join(format!("probe-cert-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.der"), b"").unwrap();
        std::fs::write(dir.join("key.der"), b"").unwrap();
        let id = load_or_create(&dir).unwrap();
        assert!(tls_server_config(&id, b"x").is_ok());
        assert!(std::fs::metadata(dir.join("cert.der")).unwrap().len() > 0);
        assert!(
            !dir.join(".cert.der.tmp").exists(),
            "no temporary file left"
        );
        // And the same identity on the next start.
        assert_eq!(load_or_create(&dir).unwrap().pin, id.pin);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn token_from_env_or_file_is_never_in_the_client_command() {
        let secret = "s3cr3t-from-env";
        let env = token_hint(Some(secret), None, Some(secret));
        assert_eq!(env, " --token \"$PROBE_SERVER_TOKEN\"");
        let file = token_hint(None, Some(Path::new("/etc/probe-server.token")), None);
        assert_eq!(file, " --token \"$(head -n1 '/etc/probe-server.token')\"");
        assert!(!file.contains(secret) && !env.contains(secret));
        // Typed on the command line: echoed, quoted for the shell.
        assert_eq!(token_hint(Some("abc"), None, None), " --token 'abc'");
        assert_eq!(token_hint(Some("a'b"), None, None), " --token 'a'\\''b'");
        // Not printable: a placeholder, never raw bytes in the log.
        let odd = token_hint(Some("x\ny"), None, None);
        assert!(!odd.contains('\n') && !odd.contains("x"), "{odd}");
        assert_eq!(token_hint(None, None, None), "");
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_and_cert_are_created_0600_and_wide_ones_are_tightened() {
        let dir = std::env::temp_dir().join(format!("probe-cert-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create(&dir).unwrap();
        assert_eq!(mode(&dir.join("key.der")), 0o600);
        assert_eq!(mode(&dir.join("cert.der")), 0o600);
        for f in ["key.der", "cert.der"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let again = load_or_create(&dir).unwrap();
        assert_eq!(again.pin, first.pin);
        assert_eq!(mode(&dir.join("key.der")), 0o600);
        assert_eq!(mode(&dir.join("cert.der")), 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("probe-cert-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("key.der")).unwrap();
        // The write replaces the link itself (a rename), never what it points at.
        write_private(&dir.join("key.der"), b"secret").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let meta = std::fs::symlink_metadata(dir.join("key.der")).unwrap();
        assert!(meta.file_type().is_file(), "a regular file now, 0600");
        assert_eq!(mode(&dir.join("key.der")), 0o600);
        // A link planted at the temporary name is not followed either.
        std::os::unix::fs::symlink(&target, dir.join(".cert.der.tmp")).unwrap();
        write_private(&dir.join("cert.der"), b"c").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
