//! RTCD's configuration as RTCD reads it (rtcd `cmd/rtcd/config.go`,
//! `service/config.go`, `service/rtc/config.go`, `service/api/config.go`):
//! defaults first (`SetDefaults`), then the TOML file decoded over them the
//! way BurntSushi/toml does (case-insensitive keys, unknown keys ignored,
//! strict types), then `RTCD_*` environment overrides (see `env.rs`).

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::validate::ConfigError;

/// RTCD's `ice_port_udp` / `ice_port_tcp` default.
pub const DEFAULT_ICE_PORT: i64 = 8443;
/// RTCD's default `[api] http.listen_address`.
pub const DEFAULT_LISTEN_ADDRESS: &str = ":8045";
/// RTCD's default `udp_sockets_count` is NumCPU times this.
pub const UDP_SOCKETS_PER_CPU: i64 = 100;

/// One `ice_servers` entry (`ICEServerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

impl IceServer {
    /// RTCD `IsSTUN`: every URL is `stun:` or `stuns:`, and there is one.
    pub fn is_stun(&self) -> bool {
        !self.urls.is_empty()
            && self
                .urls
                .iter()
                .all(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
    }

    /// RTCD `IsTURN`: every URL is `turn:` or `turns:`, and there is one.
    pub fn is_turn(&self) -> bool {
        !self.urls.is_empty()
            && self
                .urls
                .iter()
                .all(|u| u.starts_with("turn:") || u.starts_with("turns:"))
    }
}

/// `[api]`: HTTP listener and security settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiConfig {
    pub listen_address: String,
    pub tls_enable: bool,
    pub tls_cert_file: String,
    pub tls_cert_key: String,
    pub enable_admin: bool,
    pub admin_secret_key: String,
    pub allow_self_registration: bool,
    /// `security.session_cache.expiration_minutes`; checked when RTCD creates its session
    /// cache (rtcd service/service.go:86, service/auth/session_cache.go:21 (v1.2.6)).
    pub session_cache_expiration_minutes: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen_address: DEFAULT_LISTEN_ADDRESS.to_string(),
            tls_enable: false,
            tls_cert_file: String::new(),
            tls_cert_key: String::new(),
            enable_admin: false,
            admin_secret_key: String::new(),
            allow_self_registration: false,
            // rtcd service/config.go:80 (v1.2.6)
            session_cache_expiration_minutes: 1440,
        }
    }
}

/// `[logger]` (rtcd logger/config.go:14 (v1.2.6)): only what decides whether RTCD starts and
/// where and how it writes its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggerConfig {
    pub enable_console: bool,
    pub console_json: bool,
    pub console_level: String,
    pub enable_file: bool,
    pub file_json: bool,
    pub file_level: String,
    /// Relative to RTCD's working directory.
    pub file_location: String,
    pub enable_color: bool,
}

impl Default for LoggerConfig {
    /// rtcd service/config.go:88-95 (v1.2.6).
    fn default() -> Self {
        Self {
            enable_console: true,
            console_json: false,
            console_level: "INFO".to_string(),
            enable_file: true,
            file_json: true,
            file_level: "DEBUG".to_string(),
            file_location: "rtcd.log".to_string(),
            enable_color: false,
        }
    }
}

/// `[rtc] turn.*`: short-lived TURN credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnConfig {
    pub static_auth_secret: String,
    pub credentials_expiration_minutes: i64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            static_auth_secret: String::new(),
            credentials_expiration_minutes: 1440,
        }
    }
}

/// RTCD's configuration, as far as it decides what RTCD listens on and
/// advertises, plus what decides whether RTCD starts at all.
///
/// Integers stay Go `int`-sized (`i64`) so validation can quote the value
/// RTCD would quote (`65000 is not in allowed range`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtcdConfig {
    pub ice_address_udp: String,
    pub ice_address_tcp: String,
    pub ice_port_udp: i64,
    pub ice_port_tcp: i64,
    pub ice_host_override: String,
    /// A single port or `localIP/port,…`; RTCD keeps it a string.
    pub ice_host_port_override: String,
    pub ice_servers: Vec<IceServer>,
    pub turn: TurnConfig,
    pub enable_ipv6: bool,
    /// `None` = RTCD's default, NumCPU × 100 (always valid); kept unresolved
    /// because the CPU count is the host's business, not this crate's.
    pub udp_sockets_count: Option<i64>,
    /// Go `uint16`.
    pub nack_buffer_size: u16,
    pub api: ApiConfig,
    /// `[store] data_source`; may hold credentials, redact it in reports.
    pub store_data_source: String,
    pub logger: LoggerConfig,
    /// The TOML file as parsed (empty for defaults), for redacted dumps.
    /// Environment overrides are not folded into it.
    #[serde(skip)]
    pub table: Table,
    /// Names of the `RTCD_*` variables `apply_env` applied, in RTCD's order.
    pub env_applied: Vec<String>,
    /// Not a setting: server-side TURN entries (by their first URL) where an allocation tried
    /// from RTCD's host failed, with why. RTCD gathers no relay candidate through them, so
    /// [`Self::relay_servers`] leaves them out. Filled by the server (`probe-server`'s `relay`
    /// module), never parsed.
    #[serde(skip)]
    pub relay_failed: Vec<(String, String)>,
    /// Not a setting: the server-side TURN entries (by their first URL) that allocated a relay
    /// from RTCD's host, with the URL that did. An entry in neither list could not be tried
    /// (TCP or TLS TURN).
    #[serde(skip)]
    pub relay_allocated: Vec<(String, String)>,
}

impl Default for RtcdConfig {
    /// RTCD's `SetDefaults` (rtcd service/config.go:78-96 (v1.2.6)). `udp_sockets_count`
    /// stays `None`: NumCPU × 100 (service/config.go:84) is the host's business.
    fn default() -> Self {
        Self {
            ice_address_udp: String::new(),
            ice_address_tcp: String::new(),
            ice_port_udp: DEFAULT_ICE_PORT,
            ice_port_tcp: DEFAULT_ICE_PORT,
            ice_host_override: String::new(),
            ice_host_port_override: String::new(),
            ice_servers: Vec::new(),
            turn: TurnConfig::default(),
            enable_ipv6: false,
            udp_sockets_count: None,
            nack_buffer_size: 256,
            api: ApiConfig::default(),
            store_data_source: "/tmp/rtcd_db".to_string(),
            logger: LoggerConfig::default(),
            table: Table::new(),
            env_applied: Vec::new(),
            relay_failed: Vec::new(),
            relay_allocated: Vec::new(),
        }
    }
}

impl RtcdConfig {
    /// Parses RTCD's TOML over RTCD's defaults. Unknown keys are ignored, as
    /// RTCD ignores them; a wrong value type fails, as it fails RTCD's start.
    /// Does not validate: call [`RtcdConfig::validate`] (after `apply_env`).
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let table: Table = s.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|sp| {
                s.as_bytes()[..sp.start.min(s.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
            ConfigError::new(
                "toml",
                format!(
                    "failed to decode config file: toml: {at}{}",
                    e.message().trim()
                ),
                "fix the TOML syntax of RTCD's config file; RTCD refuses to start with this file",
            )
        })?;
        let mut cfg = Self::default();
        decode(&table, &mut cfg, s)?;
        cfg.table = table;
        Ok(cfg)
    }

    /// The TURN servers RTCD itself allocates relay candidates on, per call join (rtcd
    /// service/rtc/sfu.go:231-252 (v1.2.6)): an all-`turn:`/`turns:` entry is handed to pion only
    /// while `turn.static_auth_secret` is set (:234-236 skips it otherwise, even with a username
    /// and credential). With one, clients outside can reach RTCD through the relay even when its
    /// host candidates are private.
    pub fn relay_servers(&self) -> Vec<&IceServer> {
        self.configured_relays()
            .into_iter()
            .filter(|s| {
                !self
                    .relay_failed
                    .iter()
                    .any(|(u, _)| s.urls.first() == Some(u))
            })
            .collect()
    }

    /// The relays counted on, each with what its check said, for texts:
    /// `turn:… , which allocated a relay from this host; turn:…, TCP or TLS TURN, not tried …`.
    pub fn relays_described(&self) -> String {
        self.relay_servers()
            .iter()
            .map(|s| {
                let url = &s.urls[0];
                let note = match self.relay_allocated.iter().find(|(k, _)| k == url) {
                    Some((k, by)) if by == k => "which allocated a relay from this host".into(),
                    Some((_, by)) => format!("where {by} allocated a relay from this host"),
                    None => "TCP or TLS TURN, not tried from here".into(),
                };
                format!("{url}, {note}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The server-side TURN entries as configured, whether or not they allocate.
    pub fn configured_relays(&self) -> Vec<&IceServer> {
        if self.turn.static_auth_secret.is_empty() {
            return Vec::new();
        }
        self.ice_servers.iter().filter(|s| s.is_turn()).collect()
    }

    /// RTCD's socket count for a host with `num_cpu` CPUs.
    pub fn udp_sockets_count_or(&self, num_cpu: usize) -> i64 {
        self.udp_sockets_count
            .unwrap_or((num_cpu as i64).saturating_mul(UDP_SOCKETS_PER_CPU))
    }
}

/// RTCD `ICEAddress.Parse`: comma-separated, each entry trimmed; empty → none.
pub fn parse_ice_address(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(|a| a.trim().to_string()).collect()
}

/// A position in the TOML document, for BurntSushi-style error messages.
struct At<'a> {
    t: &'a Table,
    path: String,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Integer(_) => "integer",
        Value::Float(_) => "float",
        Value::Boolean(_) => "boolean",
        Value::Datetime(_) => "datetime",
        Value::Array(_) => "array",
        Value::Table(_) => "table",
    }
}

/// Go type names BurntSushi hands to `UnmarshalTOML`, quoted by RTCD's errors.
fn go_type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Integer(_) => "int64",
        Value::Float(_) => "float64",
        Value::Boolean(_) => "bool",
        Value::Datetime(_) => "time.Time",
        Value::Array(_) => "[]interface {}",
        Value::Table(_) => "map[string]interface {}",
    }
}

impl<'a> At<'a> {
    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    /// BurntSushi matches a field's tag exactly, else case-insensitively.
    fn get(&self, name: &str) -> Option<(&'a str, &'a Value)> {
        self.t
            .get_key_value(name)
            .or_else(|| self.t.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(k, v)| (k.as_str(), v))
    }

    fn mismatch(&self, k: &str, v: &Value, want: &str) -> ConfigError {
        let key = self.key(k);
        ConfigError::new(
            key.clone(),
            format!(
                "failed to decode config file: toml: (last key {key:?}): incompatible types: \
                 TOML value has type {}; destination has type {want}",
                type_name(v)
            ),
            format!(
                "give {key} a value of type {want} in RTCD's config file; RTCD refuses to start otherwise"
            ),
        )
    }

    fn table(&self, name: &str) -> Result<Option<At<'a>>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some((k, Value::Table(t))) => Ok(Some(At {
                t,
                path: self.key(k),
            })),
            Some((k, v)) => Err(self.mismatch(k, v, "table")),
        }
    }

    fn string(&self, name: &str, out: &mut String) -> Result<(), ConfigError> {
        match self.get(name) {
            None => Ok(()),
            Some((_, Value::String(s))) => {
                out.clone_from(s);
                Ok(())
            }
            Some((k, v)) => Err(self.mismatch(k, v, "string")),
        }
    }

    fn boolean(&self, name: &str, out: &mut bool) -> Result<(), ConfigError> {
        match self.get(name) {
            None => Ok(()),
            Some((_, Value::Boolean(b))) => {
                *out = *b;
                Ok(())
            }
            Some((k, v)) => Err(self.mismatch(k, v, "boolean")),
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some((_, Value::Integer(i))) => Ok(Some(*i)),
            Some((k, v)) => Err(self.mismatch(k, v, "integer")),
        }
    }

    fn unmarshal_err(&self, k: &str, msg: String, hint: &str) -> ConfigError {
        let key = self.key(k);
        ConfigError::new(
            key.clone(),
            format!("failed to decode config file: toml: (last key {key:?}): {msg}"),
            format!("{hint}; RTCD refuses to start otherwise"),
        )
    }
}

fn decode(root: &Table, cfg: &mut RtcdConfig, src: &str) -> Result<(), ConfigError> {
    let root = At {
        t: root,
        path: String::new(),
    };
    if let Some(api) = root.table("api")? {
        if let Some(http) = api.table("http")? {
            http.string("listen_address", &mut cfg.api.listen_address)?;
            if let Some(tls) = http.table("tls")? {
                tls.boolean("enable", &mut cfg.api.tls_enable)?;
                tls.string("cert_file", &mut cfg.api.tls_cert_file)?;
                tls.string("cert_key", &mut cfg.api.tls_cert_key)?;
            }
        }
        if let Some(sec) = api.table("security")? {
            sec.boolean("enable_admin", &mut cfg.api.enable_admin)?;
            sec.string("admin_secret_key", &mut cfg.api.admin_secret_key)?;
            sec.boolean(
                "allow_self_registration",
                &mut cfg.api.allow_self_registration,
            )?;
            if let Some(cache) = sec.table("session_cache")? {
                if let Some(m) = cache.int("expiration_minutes")? {
                    cfg.api.session_cache_expiration_minutes = m;
                }
            }
        }
    }
    if let Some(rtc) = root.table("rtc")? {
        rtc.string("ice_address_udp", &mut cfg.ice_address_udp)?;
        rtc.string("ice_address_tcp", &mut cfg.ice_address_tcp)?;
        if let Some(p) = rtc.int("ice_port_udp")? {
            cfg.ice_port_udp = p;
        }
        if let Some(p) = rtc.int("ice_port_tcp")? {
            cfg.ice_port_tcp = p;
        }
        rtc.string("ice_host_override", &mut cfg.ice_host_override)?;
        decode_port_override(&rtc, cfg)?;
        decode_ice_servers(&rtc, cfg, src)?;
        if let Some(turn) = rtc.table("turn")? {
            turn.string("static_auth_secret", &mut cfg.turn.static_auth_secret)?;
            if let Some(m) = turn.int("credentials_expiration_minutes")? {
                cfg.turn.credentials_expiration_minutes = m;
            }
        }
        rtc.boolean("enable_ipv6", &mut cfg.enable_ipv6)?;
        if let Some(n) = rtc.int("udp_sockets_count")? {
            cfg.udp_sockets_count = Some(n);
        }
        // Not kept, but a value of the wrong type stops RTCD (service/rtc/config.go:49).
        let mut nack_disable_copy = true;
        rtc.boolean("nack_disable_copy", &mut nack_disable_copy)?;
        if let Some(n) = rtc.int("nack_buffer_size")? {
            cfg.nack_buffer_size = u16::try_from(n).map_err(|_| {
                rtc.unmarshal_err(
                    "nack_buffer_size",
                    format!("{n} is out of range for uint16"),
                    "set nack_buffer_size to a power of two between 32 and 8192",
                )
            })?;
        }
    }
    if let Some(store) = root.table("store")? {
        store.string("data_source", &mut cfg.store_data_source)?;
    }
    // rtcd logger/config.go:14-23 (v1.2.6): the toml tags of logger.Config.
    if let Some(log) = root.table("logger")? {
        let l = &mut cfg.logger;
        log.boolean("enable_console", &mut l.enable_console)?;
        log.boolean("console_json", &mut l.console_json)?;
        log.string("console_level", &mut l.console_level)?;
        log.boolean("enable_file", &mut l.enable_file)?;
        log.boolean("file_json", &mut l.file_json)?;
        log.string("file_level", &mut l.file_level)?;
        log.string("file_location", &mut l.file_location)?;
        log.boolean("enable_color", &mut l.enable_color)?;
    }
    Ok(())
}

/// RTCD `ICEHostPortOverride.UnmarshalTOML`: a string, or an integer kept as
/// its decimal text.
fn decode_port_override(rtc: &At, cfg: &mut RtcdConfig) -> Result<(), ConfigError> {
    match rtc.get("ice_host_port_override") {
        None => Ok(()),
        Some((_, Value::String(s))) => {
            cfg.ice_host_port_override.clone_from(s);
            Ok(())
        }
        Some((_, Value::Integer(i))) => {
            cfg.ice_host_port_override = i.to_string();
            Ok(())
        }
        Some((k, v)) => Err(rtc.unmarshal_err(
            k,
            format!("unknown type {}", go_type_name(v)),
            "set ice_host_port_override to a port number or a \"localIP/port,…\" string",
        )),
    }
}

/// True when the document declares `[[rtc.ice_servers]]` (an array of
/// tables). BurntSushi hands that to RTCD as `[]map[string]interface {}`,
/// which RTCD's `UnmarshalTOML` rejects; the parsed `Table` no longer tells
/// the two array forms apart, so look at the headers.
fn ice_servers_is_array_of_tables(src: &str) -> bool {
    src.lines().any(|l| {
        let l = l.trim();
        let Some(inner) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) else {
            return false;
        };
        let parts: Vec<String> = inner
            .split('.')
            .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect();
        parts.len() == 2
            && parts[0].eq_ignore_ascii_case("rtc")
            && parts[1].eq_ignore_ascii_case("ice_servers")
    })
}

/// RTCD `ICEServers.UnmarshalTOML`: an array whose items are URL strings or
/// tables with `urls` (an array; anything else leaves no URL), `username`
/// and `credential` (non-strings become "").
fn decode_ice_servers(rtc: &At, cfg: &mut RtcdConfig, src: &str) -> Result<(), ConfigError> {
    const HINT: &str = "write ice_servers as an inline array, e.g. ice_servers = [\"stun:stun.example.com:3478\"] or [{urls = [\"turn:turn.example.com:3478\"], username = \"u\", credential = \"p\"}]";
    let Some((k, v)) = rtc.get("ice_servers") else {
        return Ok(());
    };
    let items = match v {
        Value::Array(_) if ice_servers_is_array_of_tables(src) => {
            return Err(rtc.unmarshal_err(k, "invalid type []map[string]interface {}".into(), HINT))
        }
        Value::Array(a) => a,
        other => {
            return Err(rtc.unmarshal_err(k, format!("invalid type {}", go_type_name(other)), HINT))
        }
    };
    let mut servers = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(u) => servers.push(IceServer {
                urls: vec![u.clone()],
                ..IceServer::default()
            }),
            Value::Table(t) => {
                let s = |key: &str| match t.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    _ => String::new(),
                };
                let urls = match t.get("urls") {
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|u| u.as_str().unwrap_or_default().to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                servers.push(IceServer {
                    urls,
                    username: s("username"),
                    credential: s("credential"),
                });
            }
            other => {
                return Err(rtc.unmarshal_err(
                    k,
                    format!("unknown type {}", go_type_name(other)),
                    HINT,
                ))
            }
        }
    }
    cfg.ice_servers = servers;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rtcd `config/config.sample.toml`, abridged comments, same keys.
    const SAMPLE: &str = r#"
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
# ice_host_port_override = 30443
ice_servers = []
turn.static_auth_secret = ""
turn.credentials_expiration_minutes = 1440
# udp_sockets_count =

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

    #[test]
    fn sample_config_parses_to_defaults() {
        let cfg = RtcdConfig::from_toml_str(SAMPLE).unwrap();
        // The sample turns colours on; RTCD's default is off (service/config.go:95).
        let expected = RtcdConfig {
            table: cfg.table.clone(),
            logger: LoggerConfig {
                enable_color: true,
                ..LoggerConfig::default()
            },
            ..RtcdConfig::default()
        };
        assert_eq!(cfg, expected);
        assert!(cfg.table.contains_key("logger"));
        cfg.validate().unwrap();
    }

    #[test]
    fn empty_and_unknown_keys_give_defaults() {
        let cfg = RtcdConfig::from_toml_str("").unwrap();
        assert_eq!(cfg, RtcdConfig::default());
        let cfg = RtcdConfig::from_toml_str("[invalid]\nfoo = 1\n[rtc]\nbar = \"x\"").unwrap();
        assert_eq!(cfg.ice_port_udp, 8443);
        assert_eq!(cfg.api.listen_address, ":8045");
    }

    #[test]
    fn rtc_keys_are_read() {
        let cfg = RtcdConfig::from_toml_str(
            r#"
[rtc]
ice_address_udp = "10.0.0.5"
ice_address_tcp = "10.0.0.5, 10.0.0.6"
ice_port_udp = 8444
ICE_PORT_TCP = 8445
ice_host_override = "rtc.example.com"
ice_host_port_override = 30443
enable_ipv6 = true
udp_sockets_count = 4
nack_buffer_size = 512
ice_servers = ["stun:stun.example.com:3478", {urls = ["turn:turn.example.com:3478"], username = "u", credential = "p"}]
[api.http.tls]
enable = true
cert_file = "c.pem"
cert_key = "k.pem"
[api.security]
enable_admin = true
admin_secret_key = "s3cret"
allow_self_registration = true
"#,
        )
        .unwrap();
        assert_eq!(cfg.ice_address_udp, "10.0.0.5");
        assert_eq!(
            parse_ice_address(&cfg.ice_address_tcp),
            vec!["10.0.0.5", "10.0.0.6"]
        );
        assert_eq!((cfg.ice_port_udp, cfg.ice_port_tcp), (8444, 8445));
        assert_eq!(cfg.ice_host_port_override, "30443");
        assert!(cfg.enable_ipv6);
        assert_eq!(cfg.udp_sockets_count, Some(4));
        assert_eq!(cfg.udp_sockets_count_or(8), 4);
        assert_eq!(RtcdConfig::default().udp_sockets_count_or(8), 800);
        assert_eq!(cfg.nack_buffer_size, 512);
        assert_eq!(cfg.ice_servers.len(), 2);
        assert!(cfg.ice_servers[0].is_stun());
        assert!(cfg.ice_servers[1].is_turn());
        assert_eq!(cfg.ice_servers[1].username, "u");
        assert!(cfg.api.tls_enable && cfg.api.enable_admin && cfg.api.allow_self_registration);
        assert_eq!(cfg.api.admin_secret_key, "s3cret");
        cfg.validate().unwrap();
    }

    #[test]
    fn wrong_types_fail_like_rtcd() {
        let e = RtcdConfig::from_toml_str("[rtc]\nice_port_udp = \"8443\"").unwrap_err();
        assert_eq!(e.key, "rtc.ice_port_udp");
        assert!(e.rtcd_message.contains("incompatible types"), "{e}");
        let e = RtcdConfig::from_toml_str("[rtc]\nice_host_port_override = 1.5").unwrap_err();
        assert!(e.rtcd_message.ends_with("unknown type float64"), "{e}");
        let e = RtcdConfig::from_toml_str("[rtc]\nice_servers = \"stun:x:1\"").unwrap_err();
        assert!(e.rtcd_message.ends_with("invalid type string"), "{e}");
        let e = RtcdConfig::from_toml_str("[rtc]\nice_servers = [1]").unwrap_err();
        assert!(e.rtcd_message.ends_with("unknown type int64"), "{e}");
        let e =
            RtcdConfig::from_toml_str("[[rtc.ice_servers]]\nurls = [\"stun:x:1\"]").unwrap_err();
        assert!(
            e.rtcd_message
                .ends_with("invalid type []map[string]interface {}"),
            "{e}"
        );
        let e = RtcdConfig::from_toml_str("[rtc]\nnack_buffer_size = 70000").unwrap_err();
        assert!(e.rtcd_message.contains("out of range for uint16"), "{e}");
        let e = RtcdConfig::from_toml_str("rtc = 5").unwrap_err();
        assert_eq!(e.key, "rtc");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = RtcdConfig::from_toml_str("[rtc]\nice_port_udp = = 1\n").unwrap_err();
        assert!(
            e.rtcd_message
                .starts_with("failed to decode config file: toml: line 2"),
            "{e}"
        );
        assert!(e.to_string().contains(" — "));
    }

    #[test]
    fn ice_server_tables_mirror_unmarshal_toml() {
        // `urls` given as a string is silently dropped by RTCD, which then
        // fails validation with "invalid empty URLs".
        let cfg =
            RtcdConfig::from_toml_str("[rtc]\nice_servers = [{urls = \"stun:x:1\"}]").unwrap();
        assert_eq!(cfg.ice_servers, vec![IceServer::default()]);
        assert_eq!(
            cfg.validate().unwrap_err().rtcd_message,
            "invalid ICEServers value: invalid empty URLs"
        );
        let cfg = RtcdConfig::from_toml_str(
            "[rtc]\nice_servers = [{urls = [\"stun:x:1\", 3], username = 7}]",
        )
        .unwrap();
        assert_eq!(cfg.ice_servers[0].urls, vec!["stun:x:1", ""]);
        assert_eq!(cfg.ice_servers[0].username, "");
    }

    /// rtcd sfu.go:234-236: TURN entries without `turn.static_auth_secret` are skipped.
    #[test]
    fn relay_servers_need_the_static_auth_secret() {
        let toml = "[rtc]\nice_servers = [\"stun:s.example.com:3478\", {urls = [\"turn:t.example.com:3478\"], username = \"u\", credential = \"p\"}]\n";
        let c = RtcdConfig::from_toml_str(toml).unwrap();
        assert!(c.relay_servers().is_empty());
        let c =
            RtcdConfig::from_toml_str(&format!("{toml}turn.static_auth_secret = \"s\"\n")).unwrap();
        assert_eq!(c.relay_servers().len(), 1);
        assert_eq!(c.relay_servers()[0].urls[0], "turn:t.example.com:3478");
        // One that failed to allocate from RTCD's host gives RTCD no relay candidate.
        let mut c = c;
        c.relay_failed = vec![("turn:t.example.com:3478".into(), "401 Unauthorized".into())];
        assert!(c.relay_servers().is_empty());
        assert_eq!(c.configured_relays().len(), 1);
    }
}
