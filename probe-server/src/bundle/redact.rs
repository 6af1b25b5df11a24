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
/// A lifetime is not (`credentials_expiration_minutes`, the plugin's
/// `TURNCredentialsExpirationMinutes`): support needs it, and masking its number breaks the TOML.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.contains("expir") {
        return false;
    }
    ["key", "secret", "password", "passwd", "credential", "token"]
        .iter()
        .any(|w| n.contains(w))
}

impl Redactor {
    fn keep(&mut self, secret: &str) {
        let secret = secret.trim();
        // Short or plain values ("", "no", "1", "true", "8443") would scrub innocent text
        // everywhere; where they stand next to their name they are masked all the same.
        let plain = matches!(
            secret.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "none" | "yes" | "redacted"
        ) || (secret.len() < 6 && secret.bytes().all(|b| b.is_ascii_digit()));
        // Never a text holding the mask itself: "REDACTED\"" kept from a second pass would
        // strip the closing quote from every masked value (the bundle's TOML stops parsing).
        if secret.len() >= 4 && !plain && !secret.contains(MASK) {
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
        // Data-source strings and any other value: by shape, as free text (libpq quoting too).
        let v = self.mysql_userinfo(v);
        let v = self.line(&v);
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

    /// Removes secrets from free text (a log line, a finding, a whole file): first by shape
    /// (URL and MySQL-DSN userinfo, `name=value`/`name: value` under a secret-like name with libpq,
    /// shell and JSON quoting, `Authorization:` headers, `Bearer`/`Basic` credentials, a long
    /// hex/base64 string next to a secret-like name), remembering what it removed; then every
    /// secret value seen so far, wherever it appears.
    pub fn scrub(&mut self, text: &str) -> String {
        let shaped: String = text
            .split_inclusive('\n')
            .map(|line| {
                let l = self.mysql_userinfo(line);
                self.line(&l)
            })
            .collect();
        self.known(&shaped)
    }

    /// Every secret value seen so far, removed from `text`.
    fn known(&self, text: &str) -> String {
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

/// Characters of a name (`security.admin_secret_key`, `X-Api-Token`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Characters of a hex, base64 or base64url secret.
fn is_secret_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-' | '.' | '~')
}

/// A long opaque string: what a generated key, token or hash looks like.
fn looks_generated(w: &str) -> bool {
    w.chars().count() >= 16
        && w.chars().all(is_secret_char)
        && w.chars().any(|c| c.is_ascii_digit())
        && w.chars().any(|c| c.is_ascii_alphabetic())
}

fn starts(c: &[char], i: usize, pat: &str) -> bool {
    let mut k = i;
    for p in pat.chars() {
        match c.get(k) {
            Some(x) if x.eq_ignore_ascii_case(&p) => k += 1,
            _ => return false,
        }
    }
    true
}

/// A value starting at `k`: `'…'` (libpq `\'` escapes, the shell's `'\''`), `"…"` (backslash
/// escapes), `\"…\"` (JSON inside JSON), or bare up to a separator. Returns the opening quote as
/// written, the value, and where the value (with its closing quote) ends.
fn value_at(c: &[char], k: usize, to_eol: bool) -> (String, String, usize) {
    let n = c.len();
    if starts(c, k, "\\\"") {
        let mut m = k + 2;
        while m < n && !starts(c, m, "\\\"") {
            m += 1;
        }
        let end = if m < n { m + 2 } else { n };
        return ("\\\"".into(), c[k + 2..m.min(n)].iter().collect(), end);
    }
    match c.get(k) {
        Some('\'') => {
            let mut m = k + 1;
            while m < n {
                if starts(c, m, "'\\''") {
                    m += 4;
                } else if c[m] == '\\' && m + 1 < n {
                    m += 2;
                } else if c[m] == '\'' {
                    break;
                } else {
                    m += 1;
                }
            }
            let end = if m < n { m + 1 } else { n };
            ("'".into(), c[k + 1..m.min(n)].iter().collect(), end)
        }
        Some('"') => {
            let mut m = k + 1;
            while m < n && c[m] != '"' {
                m += if c[m] == '\\' { 2 } else { 1 };
            }
            let end = if m < n { m + 1 } else { n };
            ("\"".into(), c[k + 1..m.min(n)].iter().collect(), end)
        }
        _ => {
            let mut m = k;
            while m < n
                && c[m] != '\n'
                && c[m] != '\r'
                && (to_eol
                    || !(c[m].is_whitespace()
                        || matches!(
                            c[m],
                            '&' | ';' | ',' | ')' | '}' | ']' | '"' | '\'' | '<' | '>'
                        )))
            {
                m += 1;
            }
            let v: String = c[k..m].iter().collect();
            let trimmed = v.trim_end().to_string();
            (String::new(), trimmed.clone(), k + trimmed.chars().count())
        }
    }
}

impl Redactor {
    /// `user:password@tcp(host)` (Go's MySQL DSN) in free text.
    fn mysql_userinfo(&mut self, line: &str) -> String {
        let mut out = line.to_string();
        for proto in ["@tcp(", "@unix("] {
            let mut from = 0;
            while let Some(pos) = out[from..].find(proto).map(|p| p + from) {
                let start = out[..pos]
                    .rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '=' | '/'))
                    .map_or(0, |i| i + 1);
                let info = &out[start..pos];
                match info.find(':') {
                    Some(colon) if !info[colon + 1..].is_empty() && &info[colon + 1..] != MASK => {
                        let pw = info[colon + 1..].to_string();
                        self.keep(&pw);
                        out.replace_range(start + colon + 1..pos, MASK);
                        from = start + colon + 1 + MASK.len() + proto.len();
                    }
                    _ => from = pos + proto.len(),
                }
            }
        }
        out
    }

    /// One line of free text, by shape.
    fn line(&mut self, line: &str) -> String {
        let c: Vec<char> = line.chars().collect();
        let n = c.len();
        let mut out = String::with_capacity(line.len());
        let mut i = 0;
        while i < n {
            if starts(&c, i, "://") {
                i = self.url_userinfo(&c, i, &mut out);
                continue;
            }
            if !is_name_char(c[i]) || (i > 0 && is_name_char(c[i - 1])) {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let mut j = i;
            while j < n && is_name_char(c[j]) {
                j += 1;
            }
            let name: String = c[i..j].iter().collect();
            out.push_str(&name);
            let name_start = i;
            i = j;
            let lower = name.to_ascii_lowercase();
            // Bearer/Basic credentials wherever they appear.
            if lower == "bearer" || lower == "basic" {
                i = self.auth_credential(&c, j, lower == "bearer", &mut out);
                continue;
            }
            let header =
                lower.ends_with("authorization") || lower == "cookie" || lower == "set-cookie";
            let secret = header || is_secret_name(&name) || lower == "pwd" || lower == "pass";
            if !secret {
                continue;
            }
            match self.named_value(&c, name_start, j, header, &mut out) {
                Some(end) => i = end,
                None => self.opaque_after(&c, j),
            }
        }
        out
    }

    /// `scheme://user:password@host` at `i` (the `://`): the password masked. Returns where
    /// the scan goes on.
    fn url_userinfo(&mut self, c: &[char], i: usize, out: &mut String) -> usize {
        let n = c.len();
        out.push_str("://");
        let i = i + 3;
        let mut end = i;
        while end < n
            && !c[end].is_whitespace()
            && !matches!(c[end], '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`')
        {
            end += 1;
        }
        let auth = &c[i..end];
        let Some(at) = auth.iter().rposition(|&x| x == '@') else {
            return i;
        };
        let Some(colon) = auth[..at].iter().position(|&x| x == ':') else {
            return i;
        };
        let pw: String = auth[colon + 1..at].iter().collect();
        if pw.is_empty() || pw == MASK {
            return i;
        }
        self.keep(&pw);
        out.extend(&auth[..=colon]);
        out.push_str(MASK);
        out.extend(&auth[at..]);
        end
    }

    /// The credential after `Bearer`/`Basic` (the word ends at `j`), masked when long enough
    /// to be one. Returns where the scan goes on.
    fn auth_credential(&mut self, c: &[char], j: usize, bearer: bool, out: &mut String) -> usize {
        let n = c.len();
        let mut k = j;
        while k < n && c[k] == ' ' {
            k += 1;
        }
        let mut m = k;
        while m < n && is_secret_char(c[m]) {
            m += 1;
        }
        let cred: String = c[k..m].iter().collect();
        let long_enough = if bearer { 4 } else { 8 };
        if k > j && cred.chars().count() >= long_enough && cred != MASK {
            self.keep(&cred);
            out.extend(&c[j..k]);
            out.push_str(MASK);
            return m;
        }
        j
    }

    /// `name = value` / `name: value` after a secret's name (starting at `name_start`, ending
    /// at `j`): the value masked when it looks like one. `None` when no separator follows;
    /// else where the scan goes on.
    fn named_value(
        &mut self,
        c: &[char],
        name_start: usize,
        j: usize,
        header: bool,
        out: &mut String,
    ) -> Option<usize> {
        let n = c.len();
        // The separator: an optional closing quote of a quoted name, spaces, `=` or `:`.
        let mut k = j;
        if starts(c, k, "\\\"") {
            k += 2;
        } else if k < n
            && (c[k] == '"' || c[k] == '\'')
            && name_start > 0
            && c[name_start - 1] == c[k]
        {
            k += 1;
        }
        while k < n && c[k] == ' ' {
            k += 1;
        }
        let sep = c.get(k).copied().filter(|x| *x == '=' || *x == ':');
        let sep = sep.filter(|_| !starts(c, k, "://"))?;
        k += 1;
        while k < n && c[k] == ' ' {
            k += 1;
        }
        let (quote, value, end) = value_at(c, k, header);
        let quoted = !quote.is_empty();
        let secretish = sep == '='
            || quoted
            || header
            || looks_generated(&value)
            || (value.chars().count() >= 6 && value.chars().any(|x| x.is_ascii_digit()));
        let already = value.trim_matches(|q| q == '\'' || q == '"') == MASK;
        if value.is_empty() || already || !secretish {
            return Some(j);
        }
        if header {
            // Keep the credential itself for the net: `Basic dXNlcjpwYXNz`.
            if let Some((_, cred)) = value.split_once(' ') {
                self.keep(cred.trim());
            }
        }
        self.keep(&value);
        out.extend(&c[j..k]);
        out.push_str(&quote);
        out.push_str(MASK);
        out.push_str(&quote);
        Some(end)
    }

    /// A long opaque string within the next three words after `j`: `api key 3f9a…`, kept for
    /// the net (the line itself is left as it is).
    fn opaque_after(&mut self, c: &[char], j: usize) {
        let n = c.len();
        let mut m = j;
        for _ in 0..3 {
            while m < n && (c[m] == ' ' || c[m] == '\t') {
                m += 1;
            }
            let w0 = m;
            while m < n && !c[m].is_whitespace() {
                m += 1;
            }
            let word: String = c[w0..m]
                .iter()
                .collect::<String>()
                .trim_matches(|x: char| matches!(x, '"' | '\'' | ',' | ';' | '(' | ')' | '.'))
                .to_string();
            if looks_generated(&word) {
                self.keep(&word);
                break;
            }
        }
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
        let quoted = r.env(
            "RTCD_STORE_DATASOURCE",
            "host=db password='correct horse battery' sslmode=disable",
        );
        assert_eq!(quoted, "host=db password='REDACTED' sslmode=disable");
        assert_eq!(
            r.env("RTCD_RTC_ICESERVERS", "turn:u:inline-pw@203.0.113.20"),
            "turn:u:REDACTED@203.0.113.20"
        );
        let scrubbed = r.scrub("abcd1234 cred-5678 mysql-pw1 kv-pw-42 inline-pw");
        assert_eq!(scrubbed, "REDACTED REDACTED REDACTED REDACTED REDACTED");
    }

    /// Free text, by shape: (line, secret that must go, text that must stay).
    const SHAPES: [(&str, &str, &str); 16] = [
        (
            "conn: host=db password='correct horse battery' sslmode=off",
            "correct horse battery",
            "sslmode=off",
        ),
        (
            "conn: host=db password='it\\'s a pw' user=x",
            "it\\'s a pw",
            "user=x",
        ),
        (
            "export PGPASSWORD='shell '\\''quoted'\\'' pw'",
            "quoted'\\'' pw",
            "export PGPASSWORD=",
        ),
        (
            "RTCD_TOKEN=\"dq secret value\" rtcd",
            "dq secret value",
            "rtcd",
        ),
        (
            "dial postgres://rtcd:url-pw-31@db:5432/rtcd failed",
            "url-pw-31",
            "postgres://rtcd:REDACTED@db:5432",
        ),
        (
            "fetch https://admin:p%40ss-77@203.0.113.5:8045/version",
            "p%40ss-77",
            "@203.0.113.5:8045/version",
        ),
        (
            "mysql rtcd:my-pw-88@tcp(203.0.113.30:3306)/rtcd",
            "my-pw-88",
            "rtcd:REDACTED@tcp(203.0.113.30:3306)",
        ),
        (
            "> Authorization: Basic YWRtaW46aHVudGVyMg==",
            "YWRtaW46aHVudGVyMg==",
            "Authorization: REDACTED",
        ),
        (
            "GET /api Authorization: Bearer eyJhbGciOi.J9x-4Qz",
            "eyJhbGciOi.J9x-4Qz",
            "GET /api",
        ),
        (
            "{\"authorization\":\"Bearer jwt-9988-aa\",\"msg\":\"connection error\"}",
            "jwt-9988-aa",
            "connection error",
        ),
        (
            "retrying with bearer tok_5Hq2Lw9Z",
            "tok_5Hq2Lw9Z",
            "retrying with bearer",
        ),
        (
            "{\"msg\":\"unauthorized\",\"api_key\":\"json-key-4411\"}",
            "json-key-4411",
            "unauthorized",
        ),
        (
            "{\"msg\":\"x password=\\\"esc aped\\\" y\"}",
            "esc aped",
            "\"msg\"",
        ),
        (
            "using admin key 3f9a0c7d1e2b4a6f8c0d2e4f6a8b0c1d for the API",
            "3f9a0c7d1e2b4a6f8c0d2e4f6a8b0c1d",
            "for the API",
        ),
        (
            "secret: Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",
            "secret:",
        ),
        (
            "dsn?user=rtcd&pass=amp-pw-12&sslmode=disable",
            "amp-pw-12",
            "&sslmode=disable",
        ),
    ];

    #[test]
    fn free_text_loses_secrets_by_shape_and_keeps_the_rest() {
        for (line, secret, keep) in SHAPES {
            let mut r = Redactor::default();
            let out = r.scrub(line);
            assert!(!out.contains(secret), "{secret:?} left in {out:?}");
            assert!(out.contains(keep), "{keep:?} lost from {out:?}");
            assert!(out.contains(MASK), "{out:?}");
        }
    }

    #[test]
    fn quoted_libpq_password_loses_the_whole_value() {
        let mut r = Redactor::default();
        assert_eq!(
            r.scrub("password='correct horse battery' host=db"),
            "password='REDACTED' host=db"
        );
        // What was found by shape is removed wherever else it appears.
        assert_eq!(r.scrub("echo correct horse battery"), "echo REDACTED");
    }

    #[test]
    fn innocent_text_is_left_alone() {
        let mut r = Redactor::default();
        for line in [
            "ICE failed: no candidate answered on 203.0.113.10:8443",
            "keyframe requested for track abc",
            "pin=sha256:4ead8982aa00bb11cc22dd33ee44ff5566778899aabbccddeeff001122334455",
            "token check passed",
            "enable_admin = true",
        ] {
            assert_eq!(r.scrub(line), line);
        }
    }

    /// The bundle masks a config by key, then scrubs every file as text: the second pass must
    /// leave the first one's masks (and their quotes) alone, or the TOML stops parsing.
    #[test]
    fn a_masked_config_scrubbed_again_is_still_toml() {
        let cfg: toml::Value = toml::from_str(
            "[a]\ncert_key = \"/etc/k.pem\"\nnotes = \"Authorization: Bearer abcdef0123456789XYZ\"\n\
             [b]\nadmin_secret_key = \"s3cret-value-1\"\nlisten = \":8045\"\n",
        )
        .unwrap();
        let mut r = Redactor::default();
        let text = toml::to_string(&r.toml("", &cfg)).unwrap();
        let once = r.scrub(&text);
        let twice = r.scrub(&once);
        let back: toml::Table = twice.parse().unwrap_or_else(|e| panic!("{e}:\n{twice}"));
        assert_eq!(back["a"]["cert_key"].as_str(), Some(MASK), "{twice}");
        assert_eq!(back["b"]["listen"].as_str(), Some(":8045"), "{twice}");
        assert!(
            !twice.contains("abcdef0123456789XYZ") && !twice.contains("s3cret"),
            "{twice}"
        );
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
            "credentials_expiration_minutes",
            "TURNCredentialsExpirationMinutes",
        ] {
            assert!(!is_secret_name(s), "{s}");
        }
    }
}
