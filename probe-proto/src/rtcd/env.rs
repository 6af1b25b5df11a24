//! `RTCD_*` environment overrides, as kelseyhightower/envconfig applies them
//! for RTCD (`envconfig.Process("rtcd", &cfg)`, rtcd cmd/rtcd/config.go:31 (v1.2.6)):
//! the name is `RTCD_` + section + Go field names, upper-cased; a variable
//! that is set wins even when empty; fields are visited in struct order and
//! the first value that does not parse stops RTCD.

use serde_json::Value;

use super::config::{IceServer, RtcdConfig};
use super::goparse::{parse_bool, parse_int0, parse_uint16};
use super::validate::ConfigError;

fn parse_err(var: &str, field: &str, ty: &str, value: &str, details: &str) -> ConfigError {
    ConfigError::new(
        var,
        format!(
            "envconfig.Process: assigning {var} to {field}: converting '{value}' to type {ty}. details: {details}"
        ),
        format!("fix or unset {var}; RTCD refuses to start when it cannot parse it"),
    )
}

/// Reads variables in envconfig's order and records which ones were set.
struct Env<'a> {
    vars: &'a dyn Fn(&str) -> Option<String>,
    applied: Vec<String>,
}

impl Env<'_> {
    fn get(&mut self, var: &str) -> Option<String> {
        let v = (self.vars)(var)?;
        self.applied.push(var.to_string());
        Some(v)
    }

    fn string(&mut self, var: &str, out: &mut String) {
        if let Some(v) = self.get(var) {
            *out = v;
        }
    }

    fn boolean(&mut self, var: &str, field: &str, out: &mut bool) -> Result<(), ConfigError> {
        if let Some(v) = self.get(var) {
            *out = parse_bool(&v).map_err(|e| parse_err(var, field, "bool", &v, &e))?;
        }
        Ok(())
    }

    fn int(&mut self, var: &str, field: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(var) {
            None => Ok(None),
            Some(v) => parse_int0(&v)
                .map(Some)
                .map_err(|e| parse_err(var, field, "int", &v, &e)),
        }
    }
}

impl RtcdConfig {
    /// Applies RTCD's environment overrides over the TOML values. `vars`
    /// answers like `std::env::var(..).ok()` (`Some("")` = set but empty).
    /// Names of applied variables are appended to `env_applied`, even when a
    /// later one fails.
    pub fn apply_env(&mut self, vars: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut env = Env {
            vars,
            applied: Vec::new(),
        };
        let r = self.apply_env_inner(&mut env);
        self.env_applied.append(&mut env.applied);
        r
    }

    fn apply_env_inner(&mut self, env: &mut Env) -> Result<(), ConfigError> {
        // Names: RTCD_ + section + Go field names (service/config.go:38-48, service/api/config.go:11-37,
        // service/rtc/config.go:14-50, service/rtc/turn.go:16 (v1.2.6)); docs/env_config.md lists them.
        self.apply_api_env(env)?;
        self.apply_rtc_env(env)?;
        env.string("RTCD_STORE_DATASOURCE", &mut self.store_data_source);
        self.apply_logger_env(env)
    }

    /// The `api` section (service/api/config.go:11-37 (v1.2.6)).
    fn apply_api_env(&mut self, env: &mut Env) -> Result<(), ConfigError> {
        let api = &mut self.api;
        env.string("RTCD_API_HTTP_LISTENADDRESS", &mut api.listen_address);
        env.boolean("RTCD_API_HTTP_TLS_ENABLE", "Enable", &mut api.tls_enable)?;
        env.string("RTCD_API_HTTP_TLS_CERTFILE", &mut api.tls_cert_file);
        env.string("RTCD_API_HTTP_TLS_CERTKEY", &mut api.tls_cert_key);
        env.boolean(
            "RTCD_API_SECURITY_ENABLEADMIN",
            "EnableAdmin",
            &mut api.enable_admin,
        )?;
        env.string(
            "RTCD_API_SECURITY_ADMINSECRETKEY",
            &mut api.admin_secret_key,
        );
        env.boolean(
            "RTCD_API_SECURITY_ALLOWSELFREGISTRATION",
            "AllowSelfRegistration",
            &mut api.allow_self_registration,
        )?;
        // rtcd service/config.go:23 + service/auth/session_cache.go:18 (v1.2.6).
        if let Some(m) = env.int(
            "RTCD_API_SECURITY_SESSIONCACHE_EXPIRATIONMINUTES",
            "ExpirationMinutes",
        )? {
            api.session_cache_expiration_minutes = m;
        }
        Ok(())
    }

    /// The `rtc` section (service/rtc/config.go:14-50, service/rtc/turn.go:16 (v1.2.6)).
    fn apply_rtc_env(&mut self, env: &mut Env) -> Result<(), ConfigError> {
        env.string("RTCD_RTC_ICEADDRESSUDP", &mut self.ice_address_udp);
        if let Some(p) = env.int("RTCD_RTC_ICEPORTUDP", "ICEPortUDP")? {
            self.ice_port_udp = p;
        }
        env.string("RTCD_RTC_ICEADDRESSTCP", &mut self.ice_address_tcp);
        if let Some(p) = env.int("RTCD_RTC_ICEPORTTCP", "ICEPortTCP")? {
            self.ice_port_tcp = p;
        }
        env.string("RTCD_RTC_ICEHOSTOVERRIDE", &mut self.ice_host_override);
        env.string(
            "RTCD_RTC_ICEHOSTPORTOVERRIDE",
            &mut self.ice_host_port_override,
        );
        if let Some(v) = env.get("RTCD_RTC_ICESERVERS") {
            self.ice_servers = decode_ice_servers_json(&v).map_err(|e| {
                parse_err(
                    "RTCD_RTC_ICESERVERS",
                    "ICEServers",
                    "rtc.ICEServers",
                    &v,
                    &e,
                )
            })?;
        }
        env.string(
            "RTCD_RTC_TURNCONFIG_STATICAUTHSECRET",
            &mut self.turn.static_auth_secret,
        );
        if let Some(m) = env.int(
            "RTCD_RTC_TURNCONFIG_CREDENTIALSEXPIRATIONMINUTES",
            "CredentialsExpirationMinutes",
        )? {
            self.turn.credentials_expiration_minutes = m;
        }
        env.boolean("RTCD_RTC_ENABLEIPV6", "EnableIPv6", &mut self.enable_ipv6)?;
        if let Some(n) = env.int("RTCD_RTC_UDPSOCKETSCOUNT", "UDPSocketsCount")? {
            self.udp_sockets_count = Some(n);
        }
        if let Some(v) = env.get("RTCD_RTC_NACKBUFFERSIZE") {
            self.nack_buffer_size = parse_uint16(&v).map_err(|e| {
                parse_err(
                    "RTCD_RTC_NACKBUFFERSIZE",
                    "NACKBufferSize",
                    "uint16",
                    &v,
                    &e,
                )
            })?;
        }
        let mut ignored = false;
        env.boolean("RTCD_RTC_NACKDISABLECOPY", "NACKDisableCopy", &mut ignored)
    }

    /// rtcd logger/config.go:14-23 (v1.2.6), in field order (docs/env_config.md).
    fn apply_logger_env(&mut self, env: &mut Env) -> Result<(), ConfigError> {
        let l = &mut self.logger;
        env.boolean(
            "RTCD_LOGGER_ENABLECONSOLE",
            "EnableConsole",
            &mut l.enable_console,
        )?;
        env.boolean(
            "RTCD_LOGGER_CONSOLEJSON",
            "ConsoleJSON",
            &mut l.console_json,
        )?;
        env.string("RTCD_LOGGER_CONSOLELEVEL", &mut l.console_level);
        env.boolean("RTCD_LOGGER_ENABLEFILE", "EnableFile", &mut l.enable_file)?;
        env.boolean("RTCD_LOGGER_FILEJSON", "FileJSON", &mut l.file_json)?;
        env.string("RTCD_LOGGER_FILELEVEL", &mut l.file_level);
        env.string("RTCD_LOGGER_FILELOCATION", &mut l.file_location);
        env.boolean(
            "RTCD_LOGGER_ENABLECOLOR",
            "EnableColor",
            &mut l.enable_color,
        )?;
        Ok(())
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON array of strings (nulls become ""), or null; Go's `[]string`.
fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|e| match e {
                Value::String(s) => Some(s.clone()),
                Value::Null => Some(String::new()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// `urls` of one ICE server config (Go `[]string`): Go names the element's type when an
/// element is not a string, and `[]string` when the field is not a list at all.
fn urls_field(u: &Value) -> Result<Vec<String>, String> {
    let err = |v: &Value, ty: &str| {
        format!(
            "json: cannot unmarshal {} into Go struct field ICEServerConfig.urls of type {ty}",
            json_kind(v)
        )
    };
    match u {
        Value::Array(a) => a
            .iter()
            .map(|e| match e {
                Value::String(s) => Ok(s.clone()),
                Value::Null => Ok(String::new()),
                other => Err(err(other, "string")),
            })
            .collect(),
        other => string_list(other).ok_or_else(|| err(other, "[]string")),
    }
}

/// RTCD `ICEServers.Decode`: first as a JSON list of URL strings, which
/// becomes ONE server holding all of them; else as a list of
/// `{"urls": [...], "username": "...", "credential": "..."}` objects (keys
/// matched case-insensitively, as Go's encoding/json does). `urls` must be a
/// list: Go refuses a bare string there, so RTCD refuses it too. Errors are
/// Go-like; JSON syntax errors carry serde_json's wording.
pub fn decode_ice_servers_json(s: &str) -> Result<Vec<IceServer>, String> {
    let v: Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
    if let Some(urls) = string_list(&v) {
        return Ok(vec![IceServer {
            urls,
            ..IceServer::default()
        }]);
    }
    let Value::Array(items) = &v else {
        return Err(format!(
            "json: cannot unmarshal {} into Go value of type rtc.ICEServers",
            json_kind(&v)
        ));
    };
    items.iter().map(decode_server_config).collect()
}

/// One element of the list: null is an empty server, else an object whose `urls`,
/// `username` and `credential` keys are matched exactly first, then case-insensitively.
pub(crate) fn decode_server_config(item: &Value) -> Result<IceServer, String> {
    let obj = match item {
        Value::Null => return Ok(IceServer::default()),
        Value::Object(o) => o,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type rtc.ICEServerConfig",
                json_kind(other)
            ))
        }
    };
    let field = |name: &str| {
        obj.get(name).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    };
    let mut server = IceServer::default();
    if let Some(u) = field("urls") {
        server.urls = urls_field(u)?;
    }
    for (name, out_field) in [
        ("username", &mut server.username),
        ("credential", &mut server.credential),
    ] {
        match field(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => *out_field = s.clone(),
            Some(other) => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go struct field ICEServerConfig.{name} of type string",
                    json_kind(other)
                ))
            }
        }
    }
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_errors_name_the_type_as_go_does() {
        // Go's encoding/json names the element's type for a bad element, the field's for a
        // field that is not a list.
        let bad_elem = decode_server_config(&serde_json::json!({"urls": ["stun:a:3478", 1]}));
        assert_eq!(
            bad_elem.unwrap_err(),
            "json: cannot unmarshal number into Go struct field ICEServerConfig.urls of type string"
        );
        let bare = decode_server_config(&serde_json::json!({"urls": "stun:a:3478"}));
        assert_eq!(
            bare.unwrap_err(),
            "json: cannot unmarshal string into Go struct field ICEServerConfig.urls of type []string"
        );
        let ok = decode_server_config(&serde_json::json!({"URLS": ["stun:a:3478", null]})).unwrap();
        assert_eq!(ok.urls, vec!["stun:a:3478".to_string(), String::new()]);
    }
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_wins_over_toml() {
        let mut cfg = RtcdConfig::from_toml_str(
            "[rtc]\nice_host_override = \"198.51.100.1\"\nice_port_udp = 8443\n[api.http]\nlisten_address = \":9000\"",
        )
        .unwrap();
        cfg.apply_env(&env(&[
            ("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.7"),
            (
                "RTCD_RTC_ICEHOSTPORTOVERRIDE",
                "10.0.0.1/8448,10.0.0.2/8449",
            ),
            ("RTCD_RTC_ICEPORTUDP", "0x20FC"),
            ("RTCD_RTC_ICEPORTTCP", "8445"),
            ("RTCD_RTC_ICEADDRESSUDP", "10.0.0.1"),
            ("RTCD_RTC_ICEADDRESSTCP", "10.0.0.2"),
            ("RTCD_RTC_ENABLEIPV6", "true"),
            ("RTCD_RTC_UDPSOCKETSCOUNT", "8"),
            ("RTCD_API_HTTP_LISTENADDRESS", ":8046"),
            ("RTCD_API_SECURITY_ADMINSECRETKEY", "k"),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(cfg.ice_host_override, "203.0.113.7");
        assert_eq!(cfg.ice_host_port_override, "10.0.0.1/8448,10.0.0.2/8449");
        assert_eq!((cfg.ice_port_udp, cfg.ice_port_tcp), (8444, 8445));
        assert_eq!(
            (cfg.ice_address_udp.as_str(), cfg.ice_address_tcp.as_str()),
            ("10.0.0.1", "10.0.0.2")
        );
        assert!(cfg.enable_ipv6);
        assert_eq!(cfg.udp_sockets_count, Some(8));
        assert_eq!(cfg.api.listen_address, ":8046");
        assert_eq!(cfg.api.admin_secret_key, "k");
        assert_eq!(
            cfg.env_applied,
            vec![
                "RTCD_API_HTTP_LISTENADDRESS",
                "RTCD_API_SECURITY_ADMINSECRETKEY",
                "RTCD_RTC_ICEADDRESSUDP",
                "RTCD_RTC_ICEPORTUDP",
                "RTCD_RTC_ICEADDRESSTCP",
                "RTCD_RTC_ICEPORTTCP",
                "RTCD_RTC_ICEHOSTOVERRIDE",
                "RTCD_RTC_ICEHOSTPORTOVERRIDE",
                "RTCD_RTC_ENABLEIPV6",
                "RTCD_RTC_UDPSOCKETSCOUNT",
            ]
        );
        cfg.validate().unwrap();
    }

    #[test]
    fn set_but_empty_counts() {
        let mut cfg =
            RtcdConfig::from_toml_str("[rtc]\nice_host_override = \"198.51.100.1\"").unwrap();
        cfg.apply_env(&env(&[("RTCD_RTC_ICEHOSTOVERRIDE", "")]))
            .unwrap();
        assert_eq!(cfg.ice_host_override, "");
        let e = RtcdConfig::default()
            .apply_env(&env(&[("RTCD_RTC_ICEPORTUDP", "")]))
            .unwrap_err();
        assert_eq!(
            e.rtcd_message,
            "envconfig.Process: assigning RTCD_RTC_ICEPORTUDP to ICEPortUDP: converting '' to type int. details: strconv.ParseInt: parsing \"\": invalid syntax"
        );
        assert_eq!(e.key, "RTCD_RTC_ICEPORTUDP");
    }

    #[test]
    fn bad_values_stop_like_envconfig() {
        let mut cfg = RtcdConfig::default();
        let e = cfg
            .apply_env(&env(&[
                ("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.7"),
                ("RTCD_RTC_ENABLEIPV6", "yes"),
            ]))
            .unwrap_err();
        assert_eq!(
            e.rtcd_message,
            "envconfig.Process: assigning RTCD_RTC_ENABLEIPV6 to EnableIPv6: converting 'yes' to type bool. details: strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
        assert!(e.to_string().contains("fix or unset RTCD_RTC_ENABLEIPV6"));
        assert_eq!(
            cfg.env_applied,
            vec!["RTCD_RTC_ICEHOSTOVERRIDE", "RTCD_RTC_ENABLEIPV6"]
        );
        let e = RtcdConfig::default()
            .apply_env(&env(&[("RTCD_RTC_NACKBUFFERSIZE", "70000")]))
            .unwrap_err();
        assert!(e.rtcd_message.contains("to type uint16"), "{e}");
    }

    #[test]
    fn ice_servers_json_url_list_is_one_server() {
        let mut cfg = RtcdConfig::default();
        cfg.apply_env(&env(&[(
            "RTCD_RTC_ICESERVERS",
            r#"["stun:stun.example.com:3478","stun:stun2.example.com:3478"]"#,
        )]))
        .unwrap();
        assert_eq!(cfg.ice_servers.len(), 1);
        assert_eq!(cfg.ice_servers[0].urls.len(), 2);
        cfg.validate().unwrap();
        // One server mixing STUN and TURN URLs fails RTCD's validation.
        let servers = decode_ice_servers_json(r#"["stun:a:3478","turn:b:3478"]"#).unwrap();
        cfg.ice_servers = servers;
        assert!(cfg.validate().is_err());
        // An empty list is one server with no URL: RTCD refuses it.
        cfg.ice_servers = decode_ice_servers_json("[]").unwrap();
        assert_eq!(
            cfg.validate().unwrap_err().rtcd_message,
            "invalid ICEServers value: invalid empty URLs"
        );
    }

    #[test]
    fn ice_servers_json_objects() {
        let s = decode_ice_servers_json(
            r#"[{"urls":["turn:turn.example.com:3478"],"username":"u","credential":"p"},{"URLS":["stun:s:3478"]},null]"#,
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].username, "u");
        assert_eq!(s[0].credential, "p");
        assert_eq!(s[1].urls, vec!["stun:s:3478"]);
        assert_eq!(s[2], IceServer::default());
        assert_eq!(
            decode_ice_servers_json(r#"[{"urls":"stun:s:3478"}]"#).unwrap_err(),
            "json: cannot unmarshal string into Go struct field ICEServerConfig.urls of type []string"
        );
        assert_eq!(
            decode_ice_servers_json(r#"["stun:s:3478", {"urls":[]}]"#).unwrap_err(),
            "json: cannot unmarshal string into Go value of type rtc.ICEServerConfig"
        );
        assert_eq!(
            decode_ice_servers_json(r#"{"urls":[]}"#).unwrap_err(),
            "json: cannot unmarshal object into Go value of type rtc.ICEServers"
        );
        assert!(decode_ice_servers_json("not json").is_err());
        let e = RtcdConfig::default()
            .apply_env(&env(&[(
                "RTCD_RTC_ICESERVERS",
                r#"[{"urls":"stun:s:3478"}]"#,
            )]))
            .unwrap_err();
        assert!(
            e.rtcd_message.starts_with(
                "envconfig.Process: assigning RTCD_RTC_ICESERVERS to ICEServers: converting '[{\"urls\":\"stun:s:3478\"}]' to type rtc.ICEServers. details: json: cannot unmarshal string"
            ),
            "{e}"
        );
    }
}
