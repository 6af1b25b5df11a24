//! TURN REST credentials ("TURN static auth secret", coturn's `use-auth-secret`), as the Calls
//! plugin and RTCD make them, and what their username says about expiry.
//!
//! Mirrors rtcd `service/rtc/turn.go:37-62` (`genTURNCredentials`): username
//! `"<expiry unix seconds>:<user>"`, password `base64(HMAC-SHA1(secret, username))`, standard
//! base64 with padding; and `turn.go:64-84` (`GenTURNConfigs`): expiry = now + minutes, the same
//! username for every TURN server without static credentials. The plugin calls it from
//! `server/api.go:484` with `TURNCredentialsExpirationMinutes` (default 240,
//! `server/configuration.go:209-210`); RTCD's own default is 1440.

use ring::hmac;

/// The plugin's default `TURNCredentialsExpirationMinutes` (plugin `server/configuration.go:210`).
pub const PLUGIN_DEFAULT_MINUTES: u64 = 240;

/// A username and password for the long-term credential mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// REST credentials valid until `expiry_unix` (seconds) for `user`.
pub fn credentials(secret: &str, user: &str, expiry_unix: u64) -> Credentials {
    let username = format!("{expiry_unix}:{user}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    Credentials {
        password: crate::http::base64(tag.as_ref()),
        username,
    }
}

/// The expiry a REST username carries: coturn takes the part before the first `:` (or the
/// whole username) as a Unix timestamp when `use-auth-secret` is on. `None` for a username that
/// does not start with a number (static credentials).
pub fn expiry_of(username: &str) -> Option<u64> {
    let head = username.split(':').next()?;
    if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit()) || head.len() > 12 {
        return None;
    }
    head.parse().ok()
}

/// How the credentials' expiry compares with the local clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Not REST credentials (no timestamp in the username).
    Static,
    /// Valid for this many more seconds by the local clock.
    ValidFor(u64),
    /// Expired this many seconds ago by the local clock.
    ExpiredAgo(u64),
}

pub fn judge_expiry(username: &str, now_unix: u64) -> Expiry {
    match expiry_of(username) {
        None => Expiry::Static,
        Some(t) if t > now_unix => Expiry::ValidFor(t - now_unix),
        Some(t) => Expiry::ExpiredAgo(now_unix - t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_rest_api_example() {
        // Computed independently: printf '%s' '1795651200:alice' |
        //   openssl dgst -sha1 -hmac 'north' -binary | base64
        let c = credentials("north", "alice", 1_795_651_200);
        assert_eq!(c.username, "1795651200:alice");
        assert_eq!(c.password, "i3/F+lFh23G8auqgkwbOF2f+8/U=");
        // The same inputs give the same password; another secret does not.
        assert_eq!(credentials("north", "alice", 1_795_651_200), c);
        assert_ne!(
            credentials("south", "alice", 1_795_651_200).password,
            c.password
        );
    }

    /// RFC 2202 test case 2 for HMAC-SHA1 ("Jefe", "what do ya want for nothing?"), run
    /// through the same code path: the password is exactly base64 of that MAC.
    #[test]
    fn hmac_sha1_base64_known_answer() {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            crate::http::base64(tag.as_ref()),
            // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79 in base64
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn expiry_parsing_and_judgement() {
        assert_eq!(expiry_of("1795651200:alice"), Some(1_795_651_200));
        assert_eq!(expiry_of("1795651200"), Some(1_795_651_200));
        assert_eq!(expiry_of("alice"), None);
        assert_eq!(expiry_of(":alice"), None);
        assert_eq!(expiry_of("12a:alice"), None);
        assert_eq!(judge_expiry("alice", 5), Expiry::Static);
        assert_eq!(judge_expiry("100:a", 40), Expiry::ValidFor(60));
        assert_eq!(judge_expiry("100:a", 160), Expiry::ExpiredAgo(60));
    }
}

/// Seconds since the Unix epoch of an HTTP `Date` header (RFC 9110 IMF-fixdate, which is
/// RFC 2822 syntax), for the clock skew against Mattermost.
pub fn http_date_unix(value: &str) -> Option<i64> {
    let z = jiff::fmt::rfc2822::parse(value.trim()).ok()?;
    Some(z.timestamp().as_second())
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn http_date() {
        assert_eq!(
            super::http_date_unix("Sun, 29 Nov 2026 20:10:26 GMT"),
            Some(1_795_983_026)
        );
        assert_eq!(super::http_date_unix("yesterday"), None);
    }
}
