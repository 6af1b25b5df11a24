//! Keys of RTCD's TOML file that RTCD does not know.
//!
//! RTCD decodes its file with BurntSushi/toml's `DecodeFile` and never looks at the keys no
//! field took (`MetaData.Undecoded`; rtcd `cmd/rtcd/config.go:28`). A misspelled key
//! (`icehostoverride`, `ice_host_overide`, a key under the wrong section) is therefore ignored
//! without a word, and the setting it was meant to be keeps its default: the classic "I set the
//! override and nothing changed". The keys RTCD knows are the `toml` tags of its config structs
//! (rtcd v1.2.6: `service/config.go:16-41,97-100`, `service/api/config.go:11-36`,
//! `service/auth/session_cache.go:18`, `service/rtc/config.go:14-50,175-179`,
//! `service/rtc/turn.go:17-22`, `logger/config.go:14-23`; untagged fields by their Go name),
//! matched case-insensitively, as BurntSushi matches fields.
//!
//! The environment the same way: envconfig reads only the `RTCD_*` names of those fields
//! (rtcd `cmd/rtcd/config.go:31`), so `RTCD_RTC_TURN_STATICAUTHSECRET` (the section's Go name is
//! `TURNConfig`) changes nothing. The names it reads are the ones [`RtcdConfig::apply_env`]
//! asks for, so the two lists cannot drift apart.

use super::RtcdConfig;
use toml::{Table, Value};

/// Every key path RTCD's structs take (lower case). `rtc.ice_servers.*` is an entry's keys.
const KNOWN: &[&str] = &[
    "api.http.listen_address",
    "api.http.tls.enable",
    "api.http.tls.cert_file",
    "api.http.tls.cert_key",
    "api.security.enable_admin",
    "api.security.admin_secret_key",
    "api.security.allow_self_registration",
    "api.security.session_cache.expiration_minutes",
    "rtc.ice_address_udp",
    "rtc.ice_port_udp",
    "rtc.ice_address_tcp",
    "rtc.ice_port_tcp",
    "rtc.ice_host_override",
    "rtc.ice_host_port_override",
    "rtc.ice_servers",
    "rtc.ice_servers.*.urls",
    "rtc.ice_servers.*.username",
    "rtc.ice_servers.*.credential",
    "rtc.turn.static_auth_secret",
    "rtc.turn.credentials_expiration_minutes",
    "rtc.enable_ipv6",
    "rtc.udp_sockets_count",
    "rtc.nack_buffer_size",
    "rtc.nack_disable_copy",
    "store.data_source",
    "logger.enable_console",
    "logger.console_json",
    "logger.console_level",
    "logger.enable_file",
    "logger.file_json",
    "logger.file_level",
    "logger.file_location",
    "logger.enable_color",
];

/// Variables RTCD reads outside envconfig, with `os.Getenv`.
const EXTRA_ENV: &[&str] = &[
    // rtcd service/rtc/sfu.go:98 (b3dee59).
    "RTCD_RTC_DTLS_INSECURE_SKIP_HELLOVERIFY",
];

/// A key RTCD ignores, with the known key it most likely meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// As written, dotted (`rtc.icehostoverride`), or the variable's name.
    pub path: String,
    pub did_you_mean: Option<String>,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.did_you_mean {
            Some(k) => write!(f, "{} (did you mean {k}?)", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// The file's unknown keys, then the environment's unknown `RTCD_*` variables.
pub fn unknown_all<'a>(table: &Table, env: impl IntoIterator<Item = &'a str>) -> Vec<UnknownKey> {
    let mut out = unknown_keys(table);
    out.extend(unknown_env(env));
    out
}

/// The keys of `table` (RTCD's file as parsed) that RTCD ignores, sorted by path.
pub fn unknown_keys(table: &Table) -> Vec<UnknownKey> {
    let mut out = Vec::new();
    walk(table, "", "", &mut out);
    out
}

/// `shown`: the path as written; `known`: the same in lower case with `*` for array entries.
/// An `ice_servers` entry's keys are matched exactly: RTCD reads them from a map
/// (`m["username"]`, rtcd service/rtc/config.go:266-272), not through the decoder's
/// case-insensitive field matching.
fn walk(table: &Table, shown: &str, known: &str, out: &mut Vec<UnknownKey>) {
    let exact = known.ends_with(".*");
    for (k, v) in table {
        let shown = join(shown, k);
        let known = join(
            known,
            &if exact {
                k.clone()
            } else {
                k.to_ascii_lowercase()
            },
        );
        let is_leaf = KNOWN.contains(&known.as_str());
        let is_section = KNOWN.iter().any(|p| p.starts_with(&format!("{known}.")));
        match v {
            Value::Table(t) if is_section => walk(t, &shown, &known, out),
            Value::Array(items) if is_leaf && is_section => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Table(t) = item {
                        walk(t, &format!("{shown}[{i}]"), &format!("{known}.*"), out);
                    }
                }
            }
            _ if is_leaf => {}
            _ => out.push(UnknownKey {
                did_you_mean: nearest(&known, exact),
                path: shown,
            }),
        }
    }
}

/// Every `RTCD_*` variable RTCD reads: the names [`RtcdConfig::apply_env`] asks for.
pub fn known_env() -> Vec<String> {
    let asked = std::cell::RefCell::new(Vec::new());
    let _ = RtcdConfig::default().apply_env(&|k| {
        asked.borrow_mut().push(k.to_string());
        None
    });
    let mut known = asked.into_inner();
    known.extend(EXTRA_ENV.iter().map(|s| s.to_string()));
    known
}

/// The `RTCD_*` variables among `names` that RTCD does not read, with the name most likely
/// meant; sorted.
pub fn unknown_env<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<UnknownKey> {
    let known = known_env();
    let squash = |s: &str| s.replace('_', "").to_ascii_uppercase();
    let mut out: Vec<UnknownKey> = names
        .into_iter()
        .filter(|n| n.starts_with("RTCD_") && !known.iter().any(|k| k == n))
        .map(|n| {
            let limit = 2 + n.len() / 5;
            let meant = known
                .iter()
                .map(|k| (edits(&squash(k), &squash(n)), k))
                .filter(|(d, _)| *d <= limit)
                .min_by_key(|(d, _)| *d)
                .map(|(_, k)| k.clone());
            UnknownKey {
                path: n.to_string(),
                did_you_mean: meant,
            }
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}.{b}")
    }
}

/// The known key closest to `path`: the same but for underscores, else within two edits of
/// its last part in the same section, else the same name in another section.
/// `entry`: a key of an `ice_servers` entry, whose suggestion is the entry key's own name.
fn nearest(path: &str, entry: bool) -> Option<String> {
    let squash = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    if entry {
        return ["urls", "username", "credential"]
            .iter()
            .find(|k| squash(k) == squash(last) || edits(k, &last.to_ascii_lowercase()) <= 2)
            .map(|k| k.to_string());
    }
    let leaves = KNOWN.iter().filter(|k| !k.contains('*'));
    let best = leaves
        .clone()
        .filter_map(|k| {
            let (kp, kl) = k.rsplit_once('.').unwrap_or(("", k));
            let d = if squash(kl) == squash(last) {
                0
            } else {
                edits(kl, last)
            };
            let cost = d * 2 + usize::from(kp != parent);
            (d <= 2).then_some((cost, *k))
        })
        .min_by_key(|(c, _)| *c);
    best.map(|(_, k)| k.to_string())
}

/// Levenshtein distance, for short keys.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(toml: &str) -> Vec<(String, Option<String>)> {
        unknown_keys(&toml.parse::<Table>().unwrap())
            .into_iter()
            .map(|u| (u.path, u.did_you_mean))
            .collect()
    }

    #[test]
    fn rtcds_own_sample_has_no_unknown_key() {
        // rtcd config/config.sample.toml's keys, its commented-out ones set.
        let sample = r#"
[api]
http.listen_address = ":8045"
http.tls.enable = false
http.tls.cert_file = ""
http.tls.cert_key = ""
security.allow_self_registration = false
security.enable_admin = false
security.admin_secret_key = ""
security.session_cache.expiration_minutes = 1440
[rtc]
ice_address_udp = ""
ice_port_udp = 8443
ice_address_tcp = ""
ice_port_tcp = 8443
enable_ipv6 = false
ice_host_override = ""
ice_host_port_override = 30443
ice_servers = [{urls = ["stun:localhost:3478"], username = "test", credential = "test"}, "stun:s:3478"]
turn.static_auth_secret = ""
turn.credentials_expiration_minutes = 1440
udp_sockets_count = 4
nack_buffer_size = 256
nack_disable_copy = true
[store]
data_source = "/tmp/rtcd_db"
[logger]
enable_console = true
console_json = false
console_level = "INFO"
enable_file = true
file_json = true
file_level = "DEBUG"
file_location = "rtcd.log"
enable_color = true
"#;
        assert_eq!(unknown(sample), vec![]);
        // Case does not matter to RTCD's decoder, nor to this check.
        assert_eq!(
            unknown("[RTC]\nICE_Host_Override = \"203.0.113.7\"\n"),
            vec![]
        );
        // But an ice_servers entry is a map RTCD reads by exact key.
        assert_eq!(
            unknown("[rtc]\nice_servers = [{urls = [\"turn:t\"], Username = \"u\"}]\n"),
            vec![(
                "rtc.ice_servers[0].Username".into(),
                Some("username".into())
            )]
        );
    }

    /// The names envconfig reads, from `apply_env` itself; a near miss is named with the one meant.
    #[test]
    fn environment_names_rtcd_does_not_read() {
        let known = known_env();
        assert!(known.len() >= 25, "{known:?}");
        for n in [
            "RTCD_RTC_ICEHOSTOVERRIDE",
            "RTCD_RTC_TURNCONFIG_STATICAUTHSECRET",
            "RTCD_LOGGER_ENABLECOLOR",
            "RTCD_RTC_DTLS_INSECURE_SKIP_HELLOVERIFY",
        ] {
            assert!(known.iter().any(|k| k == n), "{n}");
        }
        let got = unknown_env([
            "RTCD_RTC_ICEHOSTOVERRIDE",
            "RTCD_RTC_TURN_STATICAUTHSECRET",
            "RTCD_RTC_ICE_HOST_OVERRIDE",
            "RTCD_SOMETHING_ELSE_ENTIRELY",
            "PATH",
        ]);
        let got: Vec<(&str, Option<&str>)> = got
            .iter()
            .map(|u| (u.path.as_str(), u.did_you_mean.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "RTCD_RTC_ICE_HOST_OVERRIDE",
                    Some("RTCD_RTC_ICEHOSTOVERRIDE")
                ),
                (
                    "RTCD_RTC_TURN_STATICAUTHSECRET",
                    Some("RTCD_RTC_TURNCONFIG_STATICAUTHSECRET")
                ),
                ("RTCD_SOMETHING_ELSE_ENTIRELY", None),
            ]
        );
    }

    #[test]
    fn misspelled_and_misplaced_keys_are_named_with_the_key_meant() {
        let got = unknown(
            "[rtc]\nicehostoverride = \"203.0.113.7\"\nice_host_overide = \"x\"\nice_servers = [{urls = [\"stun:s\"], password = \"p\"}]\n\n[api]\nice_host_override = \"y\"\n[extra]\nnote = 1\n",
        );
        assert_eq!(
            got,
            vec![
                (
                    "api.ice_host_override".into(),
                    Some("rtc.ice_host_override".into())
                ),
                ("extra".into(), None),
                (
                    "rtc.ice_host_overide".into(),
                    Some("rtc.ice_host_override".into())
                ),
                ("rtc.ice_servers[0].password".into(), None),
                (
                    "rtc.icehostoverride".into(),
                    Some("rtc.ice_host_override".into())
                ),
            ]
        );
    }
}
