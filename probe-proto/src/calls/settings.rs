//! The Calls plugin's settings as the plugin reads them (mattermost-plugin-calls eb708b4):
//! Mattermost hands `PluginSettings.Plugins["com.mattermost.calls"]` over the manifest's
//! defaults (`LoadPluginConfiguration`), the plugin decodes it with Go's `encoding/json`
//! (server/configuration.go:37-95, its custom `UnmarshalJSON`s :158-191), fills its own
//! defaults (`SetDefaults`, :193-272), applies `MM_CALLS_*` overrides (`env.rs`) and trims
//! (`setOverrides`, :688-734), then refuses what `IsValid` (:274-351) refuses.

use serde_json::{Map, Value};

use crate::rtcd::{ConfigError, IceServer};

/// The plugin's manifest id, the key of its block in `PluginSettings.Plugins`.
pub const PLUGIN_ID: &str = "com.mattermost.calls";
/// What `GET /api/v4/config` puts in place of a secret setting (Mattermost `model.FakeSetting`).
pub const FAKE_SETTING: &str = "********************************";
/// plugin.json `ICEServersConfigs` default: Mattermost's public STUN server.
pub const DEFAULT_ICE_SERVERS_CONFIGS: &str =
    "[{\"urls\":[\"stun:stun.global.calls.mattermost.com:3478\"]}]";

/// The settings that decide what the integrated RTC server listens on and advertises, whether
/// RTCD takes the calls instead, and whether the plugin starts at all.
#[derive(Debug, Clone, PartialEq)]
pub struct CallsSettings {
    pub ice_host_override: String,
    /// `*int` in the plugin (configuration.go:42): None = not set.
    pub ice_host_port_override: Option<i64>,
    pub udp_server_address: String,
    pub tcp_server_address: String,
    pub udp_server_port: Option<i64>,
    pub tcp_server_port: Option<i64>,
    pub rtcd_service_url: String,
    pub turn_static_auth_secret: String,
    pub turn_credentials_expiration_minutes: Option<i64>,
    pub server_side_turn: Option<bool>,
    pub enable_ipv6: Option<bool>,
    pub max_call_participants: Option<i64>,
    pub max_recording_duration: Option<i64>,
    pub recording_quality: String,
    pub enable_recordings: Option<bool>,
    pub enable_transcriptions: Option<bool>,
    /// Deprecated `ICEServers`: comma-separated URLs (configuration.go:98,177-191).
    pub ice_servers: Vec<String>,
    pub ice_servers_configs: Vec<IceServer>,
    /// Settings the Mattermost API replaced by [`FAKE_SETTING`]: their values are unknown.
    pub hidden: Vec<String>,
    /// `MM_CALLS_*` variables applied, by name, in the plugin's field order.
    pub env_applied: Vec<String>,
    /// `MM_CALLS_*` variables the plugin could not parse: it logs them and keeps the setting.
    pub env_ignored: Vec<String>,
}

/// One setting: its key as plugin.json and config.json spell it, and its Go type.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    IceServers,
    IceServersConfigs,
}

/// The modelled settings in the plugin's struct order (configuration.go:37-143), which is also
/// the order `applyEnvOverrides` visits them in (environment.go:58-122).
pub(crate) const FIELDS: &[(&str, Kind)] = &[
    ("ICEHostOverride", Kind::Str),
    ("ICEHostPortOverride", Kind::Int),
    ("UDPServerAddress", Kind::Str),
    ("TCPServerAddress", Kind::Str),
    ("UDPServerPort", Kind::Int),
    ("TCPServerPort", Kind::Int),
    ("RTCDServiceURL", Kind::Str),
    ("TURNStaticAuthSecret", Kind::Str),
    ("TURNCredentialsExpirationMinutes", Kind::Int),
    ("ServerSideTURN", Kind::Bool),
    ("RecordingQuality", Kind::Str),
    ("EnableIPv6", Kind::Bool),
    ("MaxRecordingDuration", Kind::Int),
    ("ICEServers", Kind::IceServers),
    ("ICEServersConfigs", Kind::IceServersConfigs),
    ("MaxCallParticipants", Kind::Int),
    ("EnableRecordings", Kind::Bool),
    ("EnableTranscriptions", Kind::Bool),
];

/// A decoded value of one setting.
pub(crate) enum Setting {
    Str(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    List(Vec<String>),
    Servers(Vec<IceServer>),
}

impl Default for CallsSettings {
    /// Nothing set: what the plugin has before `SetDefaults`.
    fn default() -> Self {
        Self {
            ice_host_override: String::new(),
            ice_host_port_override: None,
            udp_server_address: String::new(),
            tcp_server_address: String::new(),
            udp_server_port: None,
            tcp_server_port: None,
            rtcd_service_url: String::new(),
            turn_static_auth_secret: String::new(),
            turn_credentials_expiration_minutes: None,
            server_side_turn: None,
            enable_ipv6: None,
            max_call_participants: None,
            max_recording_duration: None,
            recording_quality: String::new(),
            enable_recordings: None,
            enable_transcriptions: None,
            ice_servers: Vec::new(),
            ice_servers_configs: Vec::new(),
            hidden: Vec::new(),
            env_applied: Vec::new(),
            env_ignored: Vec::new(),
        }
    }
}

/// plugin.json's `settings_schema.settings` defaults of the modelled settings, which Mattermost
/// lays under the stored values (`LoadPluginConfiguration`). Keys without a default there
/// (ICEHostPortOverride, RTCDServiceURL) are absent.
fn manifest_defaults() -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in [
        ("UDPServerAddress", Value::from("")),
        ("TCPServerAddress", Value::from("")),
        ("UDPServerPort", Value::from(8443)),
        ("TCPServerPort", Value::from(8443)),
        ("ICEHostOverride", Value::from("")),
        ("MaxCallParticipants", Value::from(0)),
        (
            "ICEServersConfigs",
            Value::from(DEFAULT_ICE_SERVERS_CONFIGS),
        ),
        ("TURNStaticAuthSecret", Value::from("")),
        ("TURNCredentialsExpirationMinutes", Value::from(240)),
        ("ServerSideTURN", Value::from(false)),
        ("EnableRecordings", Value::from(false)),
        ("MaxRecordingDuration", Value::from(60)),
        ("RecordingQuality", Value::from("medium")),
        ("EnableTranscriptions", Value::from(false)),
        ("EnableIPv6", Value::from(false)),
    ] {
        m.insert(k.to_lowercase(), v);
    }
    m
}

fn load_err(key: &str, detail: String) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        // configuration.go:622-624 wraps Mattermost's LoadPluginConfiguration error.
        rtcd_message: format!(
            "loadConfig: failed to load plugin configuration: {detail}"
        ),
        hint: format!(
            "fix {key} in System Console › Plugins › Calls (config.json PluginSettings.Plugins[\"{PLUGIN_ID}\"]); \
             the Calls plugin does not start with this value"
        ),
    }
}

/// Go's `json.Unmarshal` of one value into the plugin's field (its wording for type errors).
fn decode_field(key: &str, kind: Kind, v: &Value) -> Result<Setting, ConfigError> {
    let mismatch = |ty: &str| {
        let what = match v {
            Value::Number(n) if !n.is_i64() => format!("number {n}"),
            other => crate::rtcd::env::json_kind(other).to_string(),
        };
        load_err(
            key,
            format!("json: cannot unmarshal {what} into Go struct field configuration.{key} of type {ty}"),
        )
    };
    match (kind, v) {
        // null leaves a string as it is and sets a pointer to nil.
        (Kind::Str, Value::Null) => Ok(Setting::Str(None)),
        (Kind::Str, Value::String(s)) => Ok(Setting::Str(Some(s.clone()))),
        (Kind::Str, _) => Err(mismatch("string")),
        (Kind::Int, Value::Null) => Ok(Setting::Int(None)),
        (Kind::Int, Value::Number(n)) => n
            .as_i64()
            .map(|i| Setting::Int(Some(i)))
            .ok_or_else(|| mismatch("int")),
        (Kind::Int, _) => Err(mismatch("int")),
        (Kind::Bool, Value::Null) => Ok(Setting::Bool(None)),
        (Kind::Bool, Value::Bool(b)) => Ok(Setting::Bool(Some(*b))),
        (Kind::Bool, _) => Err(mismatch("bool")),
        // configuration.go:158-191: both take a JSON string (strconv.Unquote of the raw value
        // fails on anything else, null included, with "invalid syntax").
        (Kind::IceServers, Value::String(s)) => Ok(Setting::List(split_ice_servers(s))),
        (Kind::IceServersConfigs, Value::String(s)) if s.is_empty() => {
            Ok(Setting::Servers(Vec::new()))
        }
        (Kind::IceServersConfigs, Value::String(s)) => decode_server_configs(s)
            .map(Setting::Servers)
            .map_err(|e| load_err(key, e)),
        (Kind::IceServers | Kind::IceServersConfigs, _) => {
            Err(load_err(key, "invalid syntax".into()))
        }
    }
}

/// configuration.go:177-191: TrimSpace, then split on commas, entries kept as they are.
fn split_ice_servers(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.trim().split(',').map(str::to_string).collect()
}

/// Go's `json.Unmarshal` into `[]rtc.ICEServerConfig` (rtcd service/rtc/config.go:175-179 (v1.2.6):
/// `urls`, `username`, `credential`; keys matched case-insensitively; null is nothing).
pub(crate) fn decode_server_configs(s: &str) -> Result<Vec<IceServer>, String> {
    let v: Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
    let items = match &v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type []rtc.ICEServerConfig",
                crate::rtcd::env::json_kind(other)
            ))
        }
    };
    items
        .iter()
        .map(crate::rtcd::env::decode_server_config)
        .collect()
}

impl CallsSettings {
    /// Reads the plugin's block (`PluginSettings.Plugins["com.mattermost.calls"]`, or null when
    /// the plugin was never configured) as `loadConfig` does, up to and excluding the
    /// environment: manifest defaults, the stored values over them (keys compared
    /// case-insensitively, as Mattermost lower-cases them), Go's decoding, then `SetDefaults`.
    pub fn from_plugin_block(block: &Value) -> Result<Self, ConfigError> {
        let stored = match block {
            Value::Null => Map::new(),
            Value::Object(o) => o.clone(),
            other => {
                return Err(ConfigError {
                    key: PLUGIN_ID.into(),
                    rtcd_message: format!(
                        "PluginSettings.Plugins[\"{PLUGIN_ID}\"] is a JSON {}, not an object",
                        crate::rtcd::env::json_kind(other)
                    ),
                    hint: "give the Calls plugin's settings as a JSON object, as Mattermost's config.json stores them".into(),
                })
            }
        };
        let mut merged = manifest_defaults();
        let mut hidden = Vec::new();
        for (k, v) in stored {
            if v.as_str() == Some(FAKE_SETTING) {
                hidden.push(k.to_lowercase());
                continue;
            }
            merged.insert(k.to_lowercase(), v);
        }
        let mut s = CallsSettings::default();
        for &(key, kind) in FIELDS {
            if let Some(v) = merged.get(&key.to_lowercase()) {
                s.set(key, decode_field(key, kind, v)?);
            }
        }
        s.hidden = FIELDS
            .iter()
            .filter(|(k, _)| hidden.contains(&k.to_lowercase()))
            .map(|(k, _)| k.to_string())
            .collect();
        s.set_defaults();
        Ok(s)
    }

    /// Reads a whole Mattermost `config.json` (or the `GET /api/v4/config` answer).
    pub fn from_mattermost_config(text: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError {
            key: "config.json".into(),
            rtcd_message: format!("not JSON: {e}"),
            hint: "give Mattermost's config.json (the file MM_CONFIG or --config names), or its GET /api/v4/config answer".into(),
        })?;
        if !v.is_object() {
            return Err(ConfigError {
                key: "config.json".into(),
                rtcd_message: format!("a JSON {}, not Mattermost's configuration object", crate::rtcd::env::json_kind(&v)),
                hint: "give Mattermost's config.json (the file MM_CONFIG or --config names), or its GET /api/v4/config answer".into(),
            });
        }
        let block = v
            .get("PluginSettings")
            .and_then(|p| p.get("Plugins"))
            .and_then(|p| p.get(PLUGIN_ID))
            .cloned()
            .unwrap_or(Value::Null);
        Self::from_plugin_block(&block)
    }

    pub(crate) fn set(&mut self, key: &str, v: Setting) {
        match (key, v) {
            ("ICEHostOverride", Setting::Str(Some(s))) => self.ice_host_override = s,
            ("UDPServerAddress", Setting::Str(Some(s))) => self.udp_server_address = s,
            ("TCPServerAddress", Setting::Str(Some(s))) => self.tcp_server_address = s,
            ("RTCDServiceURL", Setting::Str(Some(s))) => self.rtcd_service_url = s,
            ("TURNStaticAuthSecret", Setting::Str(Some(s))) => self.turn_static_auth_secret = s,
            ("RecordingQuality", Setting::Str(Some(s))) => self.recording_quality = s,
            ("ICEHostPortOverride", Setting::Int(i)) => self.ice_host_port_override = i,
            ("UDPServerPort", Setting::Int(i)) => self.udp_server_port = i,
            ("TCPServerPort", Setting::Int(i)) => self.tcp_server_port = i,
            ("TURNCredentialsExpirationMinutes", Setting::Int(i)) => {
                self.turn_credentials_expiration_minutes = i
            }
            ("MaxRecordingDuration", Setting::Int(i)) => self.max_recording_duration = i,
            ("MaxCallParticipants", Setting::Int(i)) => self.max_call_participants = i,
            ("ServerSideTURN", Setting::Bool(b)) => self.server_side_turn = b,
            ("EnableIPv6", Setting::Bool(b)) => self.enable_ipv6 = b,
            ("EnableRecordings", Setting::Bool(b)) => self.enable_recordings = b,
            ("EnableTranscriptions", Setting::Bool(b)) => self.enable_transcriptions = b,
            ("ICEServers", Setting::List(l)) => self.ice_servers = l,
            ("ICEServersConfigs", Setting::Servers(v)) => self.ice_servers_configs = v,
            _ => {}
        }
    }

    /// `SetDefaults` (configuration.go:193-272), for the modelled settings.
    pub(crate) fn set_defaults(&mut self) {
        self.udp_server_port.get_or_insert(8443);
        self.tcp_server_port.get_or_insert(8443);
        self.max_call_participants.get_or_insert(0);
        self.turn_credentials_expiration_minutes.get_or_insert(240);
        self.server_side_turn.get_or_insert(false);
        self.enable_recordings.get_or_insert(false);
        self.enable_transcriptions.get_or_insert(false);
        self.max_recording_duration.get_or_insert(60);
        if self.recording_quality.is_empty() {
            self.recording_quality = "medium".into();
        }
        self.enable_ipv6.get_or_insert(false);
    }

    /// The trimming of `setOverrides` (configuration.go:729-733).
    pub(crate) fn trim(&mut self) {
        for s in [
            &mut self.ice_host_override,
            &mut self.udp_server_address,
            &mut self.tcp_server_address,
            &mut self.rtcd_service_url,
        ] {
            *s = s.trim().to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unconfigured_plugin_gets_the_manifest_defaults() {
        let s = CallsSettings::from_plugin_block(&Value::Null).unwrap();
        assert_eq!(
            (s.udp_server_port, s.tcp_server_port),
            (Some(8443), Some(8443))
        );
        assert_eq!(s.ice_host_port_override, None);
        assert_eq!(s.ice_servers_configs.len(), 1);
        assert_eq!(
            s.ice_servers_configs[0].urls,
            vec!["stun:stun.global.calls.mattermost.com:3478"]
        );
        assert_eq!(s.turn_credentials_expiration_minutes, Some(240));
        assert_eq!(s.enable_ipv6, Some(false));
    }

    /// A block as Mattermost stores it: lower-cased keys, numbers as numbers, the ICE servers as
    /// a JSON string inside the JSON.
    #[test]
    fn a_stored_block_is_read_case_insensitively() {
        let block = json!({
            "icehostoverride": " 203.0.113.7 ",
            "icehostportoverride": 30443,
            "udpserveraddress": "10.0.0.5",
            "UDPServerPort": 8444,
            "iceserversconfigs": "[{\"urls\":[\"turn:turn.example.com:3478\"],\"username\":\"u\",\"credential\":\"p\"}]",
            "iceservers": " stun:a.example.com:3478,stun:b.example.com:3478 ",
            "serversideturn": true,
            "turnstaticauthsecret": "s3cret",
            "enableipv6": true,
            "rtcdserviceurl": null
        });
        let s = CallsSettings::from_plugin_block(&block).unwrap();
        assert_eq!(
            s.ice_host_override, " 203.0.113.7 ",
            "trimmed only by setOverrides"
        );
        assert_eq!(s.ice_host_port_override, Some(30443));
        assert_eq!(s.udp_server_address, "10.0.0.5");
        assert_eq!(s.udp_server_port, Some(8444));
        assert_eq!(s.tcp_server_port, Some(8443));
        assert_eq!(s.ice_servers_configs[0].username, "u");
        assert_eq!(
            s.ice_servers,
            vec!["stun:a.example.com:3478", "stun:b.example.com:3478"]
        );
        assert_eq!(s.server_side_turn, Some(true));
        assert_eq!(s.enable_ipv6, Some(true));
        assert_eq!(s.rtcd_service_url, "");
    }

    #[test]
    fn wrong_types_fail_like_go() {
        let e =
            CallsSettings::from_plugin_block(&json!({"icehostportoverride": "30443"})).unwrap_err();
        assert_eq!(
            e.rtcd_message,
            "loadConfig: failed to load plugin configuration: json: cannot unmarshal string into Go struct field configuration.ICEHostPortOverride of type int"
        );
        assert_eq!(e.key, "ICEHostPortOverride");
        let e = CallsSettings::from_plugin_block(&json!({"udpserverport": 8443.5})).unwrap_err();
        assert!(e.rtcd_message.ends_with("cannot unmarshal number 8443.5 into Go struct field configuration.UDPServerPort of type int"), "{e}");
        // The ICE servers must be a JSON string holding JSON, not JSON itself.
        let e = CallsSettings::from_plugin_block(
            &json!({"iceserversconfigs": [{"urls": ["stun:x:1"]}]}),
        )
        .unwrap_err();
        assert!(e.rtcd_message.ends_with("invalid syntax"), "{e}");
        let e = CallsSettings::from_plugin_block(&json!({"iceserversconfigs": "{\"urls\":[]}"}))
            .unwrap_err();
        assert!(
            e.rtcd_message
                .ends_with("cannot unmarshal object into Go value of type []rtc.ICEServerConfig"),
            "{e}"
        );
        assert!(CallsSettings::from_plugin_block(&json!(5)).is_err());
    }

    #[test]
    fn api_secrets_are_hidden_not_values() {
        let block =
            json!({"iceserversconfigs": FAKE_SETTING, "turnstaticauthsecret": FAKE_SETTING});
        let s = CallsSettings::from_plugin_block(&block).unwrap();
        assert_eq!(s.hidden, vec!["TURNStaticAuthSecret", "ICEServersConfigs"]);
        assert_eq!(s.turn_static_auth_secret, "");
    }

    #[test]
    fn config_json_finds_the_block() {
        let cfg = json!({"ServiceSettings": {}, "PluginSettings": {"Plugins": {PLUGIN_ID: {"icehostoverride": "203.0.113.7"}}}});
        let s = CallsSettings::from_mattermost_config(&cfg.to_string()).unwrap();
        assert_eq!(s.ice_host_override, "203.0.113.7");
        assert!(CallsSettings::from_mattermost_config("[]").is_err());
        assert!(CallsSettings::from_mattermost_config("{").is_err());
    }
}
