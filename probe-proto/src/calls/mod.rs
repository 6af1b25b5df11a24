//! The Calls plugin's integrated media server: without RTCD, the plugin runs rtcd's own
//! `service/rtc` inside its process on the Mattermost host, configured from the plugin's
//! settings (System Console › Plugins › Calls) instead of RTCD's TOML.
//!
//! [`CallsSettings`] reads those settings exactly as the plugin does; [`CallsSettings::to_rtcd`]
//! maps them into the [`RtcdConfig`] the RTCD path uses, exactly as the plugin builds its
//! `rtc.ServerConfig` (mattermost-plugin-calls eb708b4 server/activate.go:170-189), so
//! `compute_advertised` and every ICE rule apply unchanged. [`wording`] puts the verdicts in
//! the plugin's terms.

mod env;
pub mod mattermost;
mod settings;
pub mod wording;

pub use env::{env_var, field_name_to_env_key};
pub use settings::{CallsSettings, DEFAULT_ICE_SERVERS_CONFIGS, FAKE_SETTING, PLUGIN_ID};

use serde::{Deserialize, Serialize};

use crate::rtcd::{ConfigError, IceServer, RtcdConfig};

/// Which media server the probe stands in for: it decides whose settings a verdict names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deployment {
    /// RTCD, configured by its TOML and `RTCD_*` variables.
    #[default]
    Rtcd,
    /// The Calls plugin's integrated RTC server, configured in the System Console.
    CallsPlugin {
        /// `RTCDServiceURL` (or `MM_CALLS_RTCD_SERVICE_URL`): with a licence that allows RTCD
        /// the plugin sends every call there and the integrated server does not run.
        #[serde(default)]
        rtcd_url: Option<String>,
    },
}

impl Deployment {
    pub fn is_rtcd(&self) -> bool {
        matches!(self, Deployment::Rtcd)
    }
}

/// The plugin's own limits (configuration.go:145-151).
const MIN_PORT: i64 = 80;
const MAX_PORT: i64 = 49151;
const MIN_REC_MINUTES: i64 = 15;
const MAX_REC_MINUTES: i64 = 180;

fn invalid(key: &str, msg: String) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        rtcd_message: msg,
        hint: format!(
            "fix {} ({}); the Calls plugin refuses to start with this value",
            wording::console(key),
            env_var(key)
        ),
    }
}

impl CallsSettings {
    /// The plugin's `IsValid` (configuration.go:274-351) for the modelled settings, in its order
    /// and words. Not mirrored: the transcription and live-caption checks (:315-327, :333-349),
    /// which apply only with recordings and transcriptions on and do not touch the RTC server.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("UDPServerAddress", &self.udp_server_address),
            ("TCPServerAddress", &self.tcp_server_address),
        ] {
            // Go's net.ParseIP: an IPv4 or IPv6 literal, no zone, no brackets.
            if !v.is_empty() && v.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(key, format!("{key} parsing failed")));
            }
        }
        for (key, p) in [
            ("UDPServerPort", self.udp_server_port),
            ("TCPServerPort", self.tcp_server_port),
        ] {
            let Some(p) = p else {
                return Err(invalid(key, format!("{key} should not be nil")));
            };
            if !(MIN_PORT..=MAX_PORT).contains(&p) {
                return Err(invalid(
                    key,
                    format!(
                        "{key} is not valid: {p} is not in allowed range [{MIN_PORT}, {MAX_PORT}]"
                    ),
                ));
            }
        }
        self.validate_rest()
    }

    fn validate_rest(&self) -> Result<(), ConfigError> {
        if self.max_call_participants.is_none_or(|n| n < 0) {
            return Err(invalid(
                "MaxCallParticipants",
                "MaxCallParticipants is not valid".into(),
            ));
        }
        if self
            .turn_credentials_expiration_minutes
            .is_some_and(|m| m < 0)
        {
            return Err(invalid(
                "TURNCredentialsExpirationMinutes",
                "TURNCredentialsExpirationMinutes is not valid".into(),
            ));
        }
        if self
            .max_recording_duration
            .is_none_or(|m| !(MIN_REC_MINUTES..=MAX_REC_MINUTES).contains(&m))
        {
            return Err(invalid(
                "MaxRecordingDuration",
                format!("MaxRecordingDuration is not valid: range should be [{MIN_REC_MINUTES}, {MAX_REC_MINUTES}]"),
            ));
        }
        // job_service.go:38: recorderBaseConfigs has "low", "medium" and "high".
        if !["low", "medium", "high"].contains(&self.recording_quality.as_str()) {
            return Err(invalid(
                "RecordingQuality",
                "RecordingQuality is not valid".into(),
            ));
        }
        if let Some(p) = self.ice_host_port_override {
            if p != 0 && !(MIN_PORT..=MAX_PORT).contains(&p) {
                return Err(invalid(
                    "ICEHostPortOverride",
                    format!("ICEHostPortOverride is not valid: {p} is not in allowed range [{MIN_PORT}, {MAX_PORT}]"),
                ));
            }
        }
        Ok(())
    }

    /// `getICEServers(false)` (configuration.go:764-781): the configured servers, then the
    /// deprecated URL list as one more server.
    pub fn ice_servers_for_rtc(&self) -> Vec<IceServer> {
        let mut out = self.ice_servers_configs.clone();
        if !self.ice_servers.is_empty() {
            out.push(IceServer {
                urls: self.ice_servers.clone(),
                ..IceServer::default()
            });
        }
        out
    }

    /// The `rtc.ServerConfig` the plugin builds (activate.go:171-189) as an [`RtcdConfig`],
    /// then rtc's own validation (`rtc.NewServer` → `ServerConfig.IsValid`, rtcd
    /// service/rtc/config.go:52-102 (v1.2.6)) with the plugin's setting named. `num_cpu` is the
    /// host's CPU count: the plugin opens that many UDP sockets, not RTCD's 100 per CPU.
    pub fn to_rtcd(&self, num_cpu: usize) -> Result<RtcdConfig, ConfigError> {
        let mut c = RtcdConfig {
            ice_address_udp: self.udp_server_address.clone(),
            ice_address_tcp: self.tcp_server_address.clone(),
            ice_port_udp: self.udp_server_port.unwrap_or(8443),
            ice_port_tcp: self.tcp_server_port.unwrap_or(8443),
            ice_host_override: self.ice_host_override.clone(),
            // activate.go:187-189: the integer as its decimal text, 0 included (which rtc then
            // refuses: "0" is no port and no mapping).
            ice_host_port_override: self
                .ice_host_port_override
                .map(|p| p.to_string())
                .unwrap_or_default(),
            ice_servers: self.ice_servers_for_rtc(),
            enable_ipv6: self.enable_ipv6.unwrap_or(false),
            udp_sockets_count: Some(num_cpu.max(1) as i64),
            // Unset by the plugin: 0 turns rtc's NACK buffer check off (config.go:85).
            nack_buffer_size: 0,
            ..RtcdConfig::default()
        };
        c.turn.credentials_expiration_minutes =
            self.turn_credentials_expiration_minutes.unwrap_or(240);
        // activate.go:184-186: the secret reaches rtc only with Server Side TURN on.
        if self.server_side_turn.unwrap_or(false) {
            c.turn.static_auth_secret = self.turn_static_auth_secret.clone();
        }
        c.validate().map_err(|e| {
            let key = wording::setting_for_rtcd_key(&e.key);
            ConfigError {
                hint: format!(
                    "fix {} ({}); the Calls plugin does not start while rtc refuses it",
                    wording::console(key),
                    env_var(key)
                ),
                key: key.to_string(),
                rtcd_message: e.rtcd_message,
            }
        })?;
        Ok(c)
    }

    /// `RTCDServiceURL` when set (after the `MM_CALLS_*` overrides).
    pub fn rtcd_url_or_none(&self) -> Option<&str> {
        (!self.rtcd_service_url.is_empty()).then_some(self.rtcd_service_url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcd::{compute_advertised, LocalAddr, PionRules, Source};
    use serde_json::json;

    /// A recorded config.json plugin block (Mattermost 11, Calls v1.x, configured in the System
    /// Console; keys lower-cased as Mattermost stores them).
    const RECORDED: &str = r#"{
      "PluginSettings": {"Enable": true, "Plugins": {"com.mattermost.calls": {
        "allowscreensharing": true, "defaultenabled": true, "enableipv6": false,
        "enablerecordings": false, "icehostoverride": "203.0.113.10",
        "icehostportoverride": null, "iceserversconfigs": "[{\"urls\":[\"stun:stun.global.calls.mattermost.com:3478\"]}]",
        "maxcallparticipants": 0, "maxrecordingduration": 60, "recordingquality": "medium",
        "rtcdserviceurl": "", "serversideturn": false, "tcpserveraddress": "",
        "tcpserverport": 8443, "turncredentialsexpirationminutes": 1440,
        "turnstaticauthsecret": "", "udpserveraddress": "", "udpserverport": 8443
      }}}
    }"#;

    fn locals() -> Vec<LocalAddr> {
        vec![
            LocalAddr {
                ip: "127.0.0.1".parse().unwrap(),
                loopback: true,
            },
            LocalAddr {
                ip: "10.0.0.5".parse().unwrap(),
                loopback: false,
            },
        ]
    }

    #[test]
    fn a_recorded_block_maps_to_rtc_and_advertises_the_override() {
        let s = CallsSettings::from_mattermost_config(RECORDED).unwrap();
        s.validate().unwrap();
        let c = s.to_rtcd(4).unwrap();
        assert_eq!(c.ice_host_override, "203.0.113.10");
        assert_eq!(c.ice_host_port_override, "");
        assert_eq!(c.udp_sockets_count, Some(4));
        assert_eq!(c.turn.credentials_expiration_minutes, 1440);
        assert!(c.ice_servers[0].is_stun());
        let adv = compute_advertised(
            &c,
            &locals(),
            &|_, _| Err("no DNS".into()),
            &|_| None,
            8443,
            8443,
            PionRules::V4_2,
        )
        .unwrap();
        assert!(adv
            .candidates
            .iter()
            .any(|c| c.address.to_string() == "203.0.113.10" && c.source == Source::Override));
    }

    #[test]
    fn the_port_override_is_an_integer_mapped_to_text() {
        let block = json!({"icehostportoverride": 30443, "iceserversconfigs": ""});
        let s = CallsSettings::from_plugin_block(&block).unwrap();
        assert_eq!(s.to_rtcd(1).unwrap().ice_host_port_override, "30443");
        // The plugin allows 0, rtc does not: "0" is neither a port nor a mapping.
        let s = CallsSettings::from_plugin_block(&json!({"icehostportoverride": 0})).unwrap();
        s.validate().unwrap();
        let e = s.to_rtcd(1).unwrap_err();
        assert_eq!(e.key, "ICEHostPortOverride");
        assert!(
            e.rtcd_message
                .starts_with("invalid ICEHostPortOverride value"),
            "{e}"
        );
        assert!(e.hint.contains("ICE Host Port Override"), "{e}");
        let s = CallsSettings::from_plugin_block(&json!({"icehostportoverride": 65000})).unwrap();
        assert_eq!(
            s.validate().unwrap_err().rtcd_message,
            "ICEHostPortOverride is not valid: 65000 is not in allowed range [80, 49151]"
        );
    }

    #[test]
    fn validation_mirrors_is_valid() {
        let cases = [
            (
                json!({"udpserveraddress": "rtc.example.com"}),
                "UDPServerAddress parsing failed",
            ),
            (
                json!({"tcpserveraddress": "10.0.0.5:8443"}),
                "TCPServerAddress parsing failed",
            ),
            (
                json!({"udpserverport": 79}),
                "UDPServerPort is not valid: 79 is not in allowed range [80, 49151]",
            ),
            (
                json!({"maxcallparticipants": -1}),
                "MaxCallParticipants is not valid",
            ),
            (
                json!({"turncredentialsexpirationminutes": -1}),
                "TURNCredentialsExpirationMinutes is not valid",
            ),
            (
                json!({"maxrecordingduration": 5}),
                "MaxRecordingDuration is not valid: range should be [15, 180]",
            ),
            (
                json!({"recordingquality": "ultra"}),
                "RecordingQuality is not valid",
            ),
        ];
        for (block, want) in cases {
            let s = CallsSettings::from_plugin_block(&block).unwrap();
            assert_eq!(s.validate().unwrap_err().rtcd_message, want, "{block}");
        }
    }

    #[test]
    fn server_side_turn_passes_the_secret_and_relays() {
        let block = json!({
            "iceserversconfigs": "[{\"urls\":[\"turn:turn.example.com:3478\"]}]",
            "turnstaticauthsecret": "s3cret",
        });
        let s = CallsSettings::from_plugin_block(&block).unwrap();
        assert!(
            s.to_rtcd(1).unwrap().relay_servers().is_empty(),
            "Server Side TURN off"
        );
        let mut s = s;
        s.server_side_turn = Some(true);
        let c = s.to_rtcd(1).unwrap();
        assert_eq!(c.turn.static_auth_secret, "s3cret");
        assert_eq!(c.relay_servers().len(), 1);
    }

    #[test]
    fn deprecated_ice_servers_come_last_as_one_server() {
        let block = json!({"iceservers": "stun:a.example.com:3478,stun:b.example.com:3478", "iceserversconfigs": "[{\"urls\":[\"stun:c.example.com:3478\"]}]"});
        let s = CallsSettings::from_plugin_block(&block).unwrap();
        let c = s.to_rtcd(1).unwrap();
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(
            c.ice_servers[1].urls,
            vec!["stun:a.example.com:3478", "stun:b.example.com:3478"]
        );
        // rtc's own URL validation names the plugin's setting.
        let s = CallsSettings::from_plugin_block(
            &json!({"iceserversconfigs": "[{\"urls\":[\"http://x\"]}]"}),
        )
        .unwrap();
        let e = s.to_rtcd(1).unwrap_err();
        assert!(
            e.rtcd_message.starts_with("invalid ICEServers value"),
            "{e}"
        );
        assert_eq!(e.key, "ICEServersConfigs");
    }

    #[test]
    fn narrowing_and_ipv6_map_through() {
        let block =
            json!({"udpserveraddress": "10.0.0.5", "enableipv6": true, "iceserversconfigs": ""});
        let c = CallsSettings::from_plugin_block(&block)
            .unwrap()
            .to_rtcd(2)
            .unwrap();
        assert_eq!(c.ice_address_udp, "10.0.0.5");
        assert!(c.enable_ipv6);
        assert!(c.ice_servers.is_empty());
    }

    #[test]
    fn deployment_json_is_tagged() {
        assert_eq!(
            serde_json::to_string(&Deployment::Rtcd).unwrap(),
            "\"rtcd\""
        );
        let d = Deployment::CallsPlugin {
            rtcd_url: Some("http://rtcd:8045".into()),
        };
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, r#"{"calls_plugin":{"rtcd_url":"http://rtcd:8045"}}"#);
        // null port: SetDefaults puts 8443 back.
        let s = CallsSettings::from_plugin_block(&json!({"tcpserverport": null})).unwrap();
        assert_eq!(s.tcp_server_port, Some(8443));
        assert_eq!(serde_json::from_str::<Deployment>(&j).unwrap(), d);
    }
}
