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

/// Key of a site token (`probe-server --site-token NAME=TOKEN`, `probe-client --site-token`);
/// domain-separated from the access token's, so one secret used for both still gives two keys.
pub fn site_key(token: &str) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let tag = hmac::sign(&k, b"calls-probe site token v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// What an upload's site MAC covers: the session (its id and the secret key the welcome gave,
/// so a captured upload proves nothing in another session) and a hash of the report bytes as
/// sent (so the MAC vouches for this report only). The token itself never travels.
fn upload_mac_input(session_key: &[u8; 32], session_id: u64, report: &[u8]) -> Vec<u8> {
    let mut m = b"calls-probe site upload v1".to_vec();
    m.extend_from_slice(session_key);
    m.extend_from_slice(&session_id.to_be_bytes());
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, report).as_ref());
    m
}

/// The site MAC of an upload (full HMAC-SHA256).
pub fn upload_mac(
    site_key: &[u8; 32],
    session_key: &[u8; 32],
    session_id: u64,
    report: &[u8],
) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, site_key);
    let tag = hmac::sign(&k, &upload_mac_input(session_key, session_id, report));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time check of an upload's site MAC.
pub fn upload_mac_ok(
    site_key: &[u8; 32],
    session_key: &[u8; 32],
    session_id: u64,
    report: &[u8],
    mac: &[u8; 32],
) -> bool {
    let k = hmac::Key::new(hmac::HMAC_SHA256, site_key);
    hmac::verify(&k, &upload_mac_input(session_key, session_id, report), mac).is_ok()
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
    fn upload_macs_bind_token_session_and_report() {
        let site = site_key("a long site secret");
        assert_ne!(site, token_key("a long site secret"));
        let (k, id, r) = ([7u8; 32], 42u64, b"{\"schema\":1}".as_slice());
        let mac = upload_mac(&site, &k, id, r);
        assert!(upload_mac_ok(&site, &k, id, r, &mac));
        // Another session (key or id), another report or another token: refused.
        assert!(!upload_mac_ok(&site, &[8u8; 32], id, r, &mac));
        assert!(!upload_mac_ok(&site, &k, id + 1, r, &mac));
        assert!(!upload_mac_ok(&site, &k, id, b"{\"schema\":2}", &mac));
        assert!(!upload_mac_ok(&site_key("another secret"), &k, id, r, &mac));
        let mut bent = mac;
        bent[31] ^= 1;
        assert!(!upload_mac_ok(&site, &k, id, r, &bent));
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
