//! The optional access token (`probe-server --token`). Nothing derived from it travels in clear:
//! the client proves it holds the token with MACs keyed by [`token_key`].
//!
//! - Control messages carry a 16-byte HMAC-SHA256 trailer after the postcard body.
//! - Plain STUN Bindings carry USERNAME [`STUN_USERNAME`] and MESSAGE-INTEGRITY keyed with the
//!   token key (ICE checks use the session's ICE password instead, which only a client that
//!   passed the token check was given).
//! - Echo packets are MACed with the per-session key, which likewise only such a client holds.

use ring::hmac;

/// USERNAME of a token-authenticated plain Binding request.
pub const STUN_USERNAME: &str = "calls-probe";
pub const CONTROL_MAC_LEN: usize = 16;

/// USERNAME of a signed Binding: [`STUN_USERNAME`], a colon and the sender's wall clock in
/// seconds, covered by MESSAGE-INTEGRITY, so a captured Binding stops being answered once its
/// time is out of the server's window.
pub fn stun_username(wall_s: u64) -> String {
    format!("{STUN_USERNAME}:{wall_s}")
}

/// The time in a signed Binding's USERNAME; `None` for any other USERNAME.
pub fn stun_username_time(user: &str) -> Option<u64> {
    user.strip_prefix(STUN_USERNAME)?
        .strip_prefix(':')?
        .parse()
        .ok()
}

/// Derives the MAC key from the operator's secret (domain-separated, so the raw token is
/// never a key of any single message type).
pub fn token_key(token: &str) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let tag = hmac::sign(&k, b"calls-probe token v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

pub fn control_mac(key: &[u8; 32], body: &[u8]) -> [u8; CONTROL_MAC_LEN] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, body);
    let mut out = [0u8; CONTROL_MAC_LEN];
    out.copy_from_slice(&tag.as_ref()[..CONTROL_MAC_LEN]);
    out
}

/// Constant-time check of a control MAC.
pub fn control_mac_ok(key: &[u8; 32], body: &[u8], mac: &[u8]) -> bool {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, body);
    mac.len() == CONTROL_MAC_LEN
        && tag.as_ref()[..CONTROL_MAC_LEN]
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_token_and_macs_verify() {
        let a = token_key("s3cret");
        assert_ne!(a, token_key("s3cret2"));
        let mac = control_mac(&a, b"body");
        assert!(control_mac_ok(&a, b"body", &mac));
        assert!(!control_mac_ok(&a, b"bodx", &mac));
        assert!(!control_mac_ok(&token_key("x"), b"body", &mac));
        assert!(!control_mac_ok(&a, b"body", &mac[..8]));
    }

    #[test]
    fn signed_binding_usernames_carry_the_time() {
        assert_eq!(
            stun_username_time(&stun_username(1_700_000_000)),
            Some(1_700_000_000)
        );
        assert_eq!(stun_username_time(STUN_USERNAME), None);
        assert_eq!(stun_username_time("calls-probe:x"), None);
        assert_eq!(stun_username_time("abcd:efgh"), None);
    }
}
