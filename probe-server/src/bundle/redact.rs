//! Secrets out of everything the bundle writes: values of keys named like a secret
//! (`admin_secret_key`, `*key*`, `*secret*`, `*password*`, `credential`, `*token*`),
//! credentials inside data-source strings and URLs, and — as a last net — every secret value
//! found that way, wherever else it appears (a log line, a finding).

use std::collections::BTreeSet;

pub const MASK: &str = "REDACTED";

/// Collects the secret values it removed, so [`Redactor::scrub`] can remove them elsewhere.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: BTreeSet<String>,
}

/// Whether a key or variable name holds a secret (`ADMINSECRETKEY` and `admin_secret_key` alike).
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["key", "secret", "password", "passwd", "credential", "token"]
        .iter()
        .any(|w| n.contains(w))
}

fn is_data_source(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "");
    n.contains("datasource") || n.contains("dsn")
}

impl Redactor {
    fn keep(&mut self, secret: &str) {
        // Short values ("", "no", "1") would scrub innocent text everywhere.
        if secret.len() >= 4 {
            self.secrets.insert(secret.to_string());
        }
    }

    /// A string value under `name`.
    pub fn value(&mut self, name: &str, v: &str) -> String {
        if v.is_empty() {
            return String::new();
        }
        if is_secret_name(name) {
            self.keep(v);
            return MASK.into();
        }
        let v = if is_data_source(name) {
            self.dsn(v)
        } else {
            v.to_string()
        };
        self.userinfo(&v)
    }

    /// `user:pass@host` anywhere in a URL-like string keeps the user, drops the password.
    fn userinfo(&mut self, s: &str) -> String {
        let Some(at) = s.rfind('@') else {
            return s.to_string();
        };
        let start = s[..at].find("://").map_or(0, |i| i + 3);
        let info = &s[start..at];
        // `turn:user:pass@host`: a scheme without `//` is a third colon-separated part.
        let info_start = if start == 0 && info.matches(':').count() >= 2 {
            info.find(':').map_or(0, |i| i + 1)
        } else {
            0
        };
        let user_info = &info[info_start..];
        let Some(colon) = user_info.find(':') else {
            return s.to_string();
        };
        let password = &user_info[colon + 1..];
        if password.is_empty() || password == MASK {
            return s.to_string();
        }
        self.keep(password);
        let cut = start + info_start + colon + 1;
        format!("{}{MASK}{}", &s[..cut], &s[at..])
    }

    /// Data-source strings: URL/MySQL userinfo and `password=…` pairs.
    fn dsn(&mut self, s: &str) -> String {
        let mut out = Vec::new();
        for part in s.split_inclusive([' ', '&', '?', ';']) {
            let (body, sep) = match part.char_indices().last() {
                Some((i, ' ' | '&' | '?' | ';')) => (&part[..i], &part[i..]),
                _ => (part, ""),
            };
            match body.split_once('=') {
                Some((k, v))
                    if is_secret_name(k)
                        || k.eq_ignore_ascii_case("pwd")
                        || k.eq_ignore_ascii_case("pass") =>
                {
                    self.keep(v.trim_matches('\''));
                    out.push(format!("{k}={MASK}{sep}"));
                }
                _ => out.push(part.to_string()),
            }
        }
        out.concat()
    }

    /// A TOML value under `name`, recursively.
    pub fn toml(&mut self, name: &str, v: &toml::Value) -> toml::Value {
        match v {
            toml::Value::String(s) => toml::Value::String(self.value(name, s)),
            toml::Value::Array(a) => {
                toml::Value::Array(a.iter().map(|x| self.toml(name, x)).collect())
            }
            toml::Value::Table(t) => toml::Value::Table(
                t.iter()
                    .map(|(k, x)| (k.clone(), self.toml(k, x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A JSON value under `name`, recursively.
    pub fn json(&mut self, name: &str, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.value(name, s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(name, x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.json(k, x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// An environment variable; JSON values (RTCD_RTC_ICESERVERS) are redacted field by field.
    pub fn env(&mut self, name: &str, v: &str) -> String {
        if !is_secret_name(name) {
            if let Ok(j) = serde_json::from_str::<serde_json::Value>(v) {
                if j.is_array() || j.is_object() {
                    return self.json(name, &j).to_string();
                }
            }
        }
        self.value(name, v)
    }

    /// Removes every secret seen so far from free text.
    pub fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        // Longest first, so a secret containing another is removed whole.
        let mut s: Vec<&String> = self.secrets.iter().collect();
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        for secret in s {
            t = t.replace(secret.as_str(), MASK);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A config shaped like RTCD's config.sample.toml, with secrets everywhere they can be.
    const CONFIG: &str = r#"
[api]
http.listen_address = ":8045"
http.tls.enable = true
http.tls.cert_file = "/etc/rtcd/cert.pem"
http.tls.cert_key = "/etc/rtcd/very-private.key"
security.enable_admin = true
security.admin_secret_key = "s3cr3t-admin-KEY"
security.allow_self_registration = false

[rtc]
ice_port_udp = 8443
ice_host_override = "203.0.113.10"
ice_servers = [
  { urls = ["turn:203.0.113.20:3478"], username = "calls", credential = "turnpass-9911" },
  "stun:203.0.113.21:3478",
]
turn.static_auth_secret = "static-turn-SECRET"

[store]
data_source = "postgres://rtcd:db-Pa55word@203.0.113.30:5432/rtcd?sslmode=disable&password=qp-secret-77"

[logger]
api_token = "tok-123456"
"#;

    const SECRETS: [&str; 7] = [
        "s3cr3t-admin-KEY",
        "/etc/rtcd/very-private.key",
        "turnpass-9911",
        "static-turn-SECRET",
        "db-Pa55word",
        "qp-secret-77",
        "tok-123456",
    ];

    #[test]
    fn toml_config_keeps_settings_loses_secrets() {
        let table: toml::Table = CONFIG.parse().unwrap();
        let mut r = Redactor::default();
        let out = toml::to_string(&r.toml("", &toml::Value::Table(table))).unwrap();
        for s in SECRETS {
            assert!(!out.contains(s), "{s} left in:\n{out}");
        }
        for keep in [
            "203.0.113.10",
            "ice_port_udp = 8443",
            "turn:203.0.113.20:3478",
            "rtcd:REDACTED@203.0.113.30",
            "calls",
        ] {
            assert!(out.contains(keep), "{keep} missing:\n{out}");
        }
        // The net catches the same secrets in free text.
        let line = "connecting with postgres://rtcd:db-Pa55word@x and key s3cr3t-admin-KEY";
        let scrubbed = r.scrub(line);
        assert!(
            !scrubbed.contains("db-Pa55word") && !scrubbed.contains("s3cr3t-admin-KEY"),
            "{scrubbed}"
        );
    }

    #[test]
    fn environment_variables() {
        let mut r = Redactor::default();
        assert_eq!(r.env("RTCD_API_SECURITY_ADMINSECRETKEY", "abcd1234"), MASK);
        assert_eq!(
            r.env("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10"),
            "203.0.113.10"
        );
        let servers =
            r#"[{"urls":["turn:203.0.113.20:3478"],"username":"u","credential":"cred-5678"}]"#;
        let out = r.env("RTCD_RTC_ICESERVERS", servers);
        assert!(
            !out.contains("cred-5678") && out.contains("turn:203.0.113.20:3478"),
            "{out}"
        );
        let dsn = r.env(
            "RTCD_STORE_DATASOURCE",
            "rtcd:mysql-pw1@tcp(203.0.113.30:3306)/rtcd",
        );
        assert_eq!(dsn, "rtcd:REDACTED@tcp(203.0.113.30:3306)/rtcd");
        let kv = r.env(
            "RTCD_STORE_DATASOURCE",
            "host=db user=rtcd password=kv-pw-42 sslmode=disable",
        );
        assert_eq!(kv, "host=db user=rtcd password=REDACTED sslmode=disable");
        assert_eq!(
            r.env("RTCD_RTC_ICESERVERS", "turn:u:inline-pw@203.0.113.20"),
            "turn:u:REDACTED@203.0.113.20"
        );
        let scrubbed = r.scrub("abcd1234 cred-5678 mysql-pw1 kv-pw-42 inline-pw");
        assert_eq!(scrubbed, "REDACTED REDACTED REDACTED REDACTED REDACTED");
    }

    #[test]
    fn names() {
        for s in [
            "admin_secret_key",
            "ADMINSECRETKEY",
            "credential",
            "db_password",
            "cert_key",
            "api_token",
        ] {
            assert!(is_secret_name(s), "{s}");
        }
        for s in [
            "ice_host_override",
            "data_source",
            "listen_address",
            "username",
            "urls",
        ] {
            assert!(!is_secret_name(s), "{s}");
        }
    }
}
