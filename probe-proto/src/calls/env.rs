//! The plugin's `MM_CALLS_*` overrides (mattermost-plugin-calls eb708b4 server/environment.go):
//! every field of its configuration struct, embedded `ClientConfig` included, is looked up as
//! `MM_CALLS_` + `fieldNameToEnvKey(name)` (:139-146); a variable that is set wins even when
//! empty; one that does not parse is logged and ignored (:148-246), never fatal.

use super::settings::{decode_server_configs, CallsSettings, Kind, Setting, FIELDS};

/// environment.go:139-146: `([a-z0-9])([A-Z])` → `${1}_${2}`, then `([A-Z])([A-Z][a-z])` →
/// `${1}_${2}`, both as Go's non-overlapping, left-to-right `ReplaceAllString`, then upper-case.
pub fn field_name_to_env_key(name: &str) -> String {
    let c: Vec<char> = name.chars().collect();
    let first = replace_all(&c, 2, |w| {
        (w[0].is_ascii_lowercase() || w[0].is_ascii_digit()) && w[1].is_ascii_uppercase()
    });
    let second = replace_all(&first, 3, |w| {
        w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase() && w[2].is_ascii_lowercase()
    });
    second.iter().collect::<String>().to_uppercase()
}

/// Inserts `_` after the first char of each non-overlapping `len`-char match.
fn replace_all(c: &[char], len: usize, m: impl Fn(&[char]) -> bool) -> Vec<char> {
    let mut out = Vec::with_capacity(c.len() + 4);
    let mut i = 0;
    while i < c.len() {
        if i + len <= c.len() && m(&c[i..i + len]) {
            out.push(c[i]);
            out.push('_');
            out.extend_from_slice(&c[i + 1..i + len]);
            i += len;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The variable that overrides a setting, e.g. `MM_CALLS_ICE_HOST_OVERRIDE`.
pub fn env_var(field: &str) -> String {
    format!("MM_CALLS_{}", field_name_to_env_key(field))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits only.
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `setFieldFromEnv` (environment.go:150-246) for one modelled field.
fn from_env(kind: Kind, v: &str) -> Option<Setting> {
    match kind {
        Kind::Str => Some(Setting::Str(Some(v.to_string()))),
        Kind::Int => parse_int(v).map(|i| Setting::Int(Some(i))),
        Kind::Bool => parse_bool(v).map(|b| Setting::Bool(Some(b))),
        // :233-242: a string slice is split on commas, each entry trimmed.
        Kind::IceServers => Some(Setting::List(
            v.split(',').map(|s| s.trim().to_string()).collect(),
        )),
        // :219-231: plain JSON (not the quoted form config.json uses).
        Kind::IceServersConfigs => decode_server_configs(v).ok().map(Setting::Servers),
    }
}

impl CallsSettings {
    /// Applies `MM_CALLS_*` as `setOverrides` does (configuration.go:688-734): the plugin's
    /// fields in order, then the deprecated `MM_CALLS_RTCD_URL` when `MM_CALLS_RTCD_SERVICE_URL`
    /// did not apply (:719-727), then the trimming. `vars` answers like `std::env::var(..).ok()`.
    pub fn apply_env(&mut self, vars: &dyn Fn(&str) -> Option<String>) {
        for &(field, kind) in FIELDS {
            let var = env_var(field);
            let Some(v) = vars(&var) else { continue };
            match from_env(kind, &v) {
                Some(setting) => {
                    self.set(field, setting);
                    self.env_applied.push(var);
                }
                None => self.env_ignored.push(var),
            }
        }
        let canonical = env_var("RTCDServiceURL");
        if !self.env_applied.contains(&canonical) {
            if let Some(url) = vars("MM_CALLS_RTCD_URL").filter(|u| !u.is_empty()) {
                self.rtcd_service_url = url;
                self.env_applied.push("MM_CALLS_RTCD_URL".into());
            }
        }
        self.trim();
    }

    /// configuration.go:471-481 `getRTCDURL`: the variables win over the setting when not empty.
    pub fn rtcd_url(&self, vars: &dyn Fn(&str) -> Option<String>) -> String {
        for var in ["MM_CALLS_RTCD_SERVICE_URL", "MM_CALLS_RTCD_URL"] {
            if let Some(u) = vars(var).filter(|u| !u.is_empty()) {
                return u;
            }
        }
        self.rtcd_service_url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// environment_test.go's cases, and the names the plugin's docs give.
    #[test]
    fn names_follow_the_plugins_rule() {
        for (field, key) in [
            ("camelCase", "CAMEL_CASE"),
            ("PascalCase", "PASCAL_CASE"),
            ("RTCDServiceURL", "RTCD_SERVICE_URL"),
            ("ICEHostPortOverride", "ICE_HOST_PORT_OVERRIDE"),
            ("ICEHostOverride", "ICE_HOST_OVERRIDE"),
            ("UDPServerAddress", "UDP_SERVER_ADDRESS"),
            ("ICEServersConfigs", "ICE_SERVERS_CONFIGS"),
            ("TURNStaticAuthSecret", "TURN_STATIC_AUTH_SECRET"),
            ("ServerSideTURN", "SERVER_SIDE_TURN"),
            // Not what one would guess: "IPv6" splits before "Pv".
            ("EnableIPv6", "ENABLE_I_PV6"),
        ] {
            assert_eq!(field_name_to_env_key(field), key, "{field}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn overrides_apply_and_bad_values_are_ignored() {
        let mut s = CallsSettings::from_plugin_block(&serde_json::Value::Null).unwrap();
        s.apply_env(&env(&[
            ("MM_CALLS_ICE_HOST_OVERRIDE", " 203.0.113.7 "),
            ("MM_CALLS_ICE_HOST_PORT_OVERRIDE", "30443"),
            ("MM_CALLS_UDP_SERVER_PORT", "84x3"),
            ("MM_CALLS_ENABLE_I_PV6", "T"),
            (
                "MM_CALLS_ICE_SERVERS_CONFIGS",
                "[{\"urls\":[\"stun:s.example.com:3478\"]}]",
            ),
            ("MM_CALLS_ICE_SERVERS", "stun:a:1, stun:b:2"),
        ]));
        assert_eq!(s.ice_host_override, "203.0.113.7");
        assert_eq!(s.ice_host_port_override, Some(30443));
        assert_eq!(
            s.udp_server_port,
            Some(8443),
            "an unparsable value is ignored"
        );
        assert_eq!(s.env_ignored, vec!["MM_CALLS_UDP_SERVER_PORT"]);
        assert_eq!(s.enable_ipv6, Some(true));
        assert_eq!(
            s.ice_servers_configs[0].urls,
            vec!["stun:s.example.com:3478"]
        );
        assert_eq!(s.ice_servers, vec!["stun:a:1", "stun:b:2"]);
        assert_eq!(
            s.env_applied,
            vec![
                "MM_CALLS_ICE_HOST_OVERRIDE",
                "MM_CALLS_ICE_HOST_PORT_OVERRIDE",
                "MM_CALLS_ENABLE_I_PV6",
                "MM_CALLS_ICE_SERVERS",
                "MM_CALLS_ICE_SERVERS_CONFIGS",
            ]
        );
    }

    #[test]
    fn the_deprecated_rtcd_variable_applies_only_without_the_new_one() {
        let mut s = CallsSettings::default();
        s.apply_env(&env(&[("MM_CALLS_RTCD_URL", "http://rtcd.old:8045")]));
        assert_eq!(s.rtcd_service_url, "http://rtcd.old:8045");
        let mut s = CallsSettings::default();
        let vars = env(&[
            ("MM_CALLS_RTCD_URL", "http://rtcd.old:8045"),
            ("MM_CALLS_RTCD_SERVICE_URL", " http://rtcd.new:8045 "),
        ]);
        s.apply_env(&vars);
        assert_eq!(s.rtcd_service_url, "http://rtcd.new:8045");
        assert_eq!(s.rtcd_url(&vars), " http://rtcd.new:8045 ");
        assert_eq!(parse_int("-5"), Some(-5));
        assert_eq!(parse_int("1_000"), None);
    }
}
