//! RTCD's start-up validation (`Config.IsValid` in rtcd `service/config.go`,
//! `service/rtc/config.go`, `service/api/config.go`, `service/rtc/turn.go`,
//! `logger/config.go`, then the session cache `service.New` creates), in RTCD's
//! order and with RTCD's words. Audited line by line against rtcd v1.2.6
//! (b3dee59); each rule cites the line it mirrors.
//!
//! Not mirrored: the TLS check that loads the certificate files
//! (service/api/config.go:27) and opening the store (service/service.go:80):
//! that is IO, and the probe does not run as RTCD's user.

use std::fmt;

use super::config::{parse_ice_address, RtcdConfig};
use super::goparse::{atoi, parse_ip};

/// A configuration RTCD would refuse, or a value the probe cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The TOML key (`rtc.ice_port_udp`) or environment variable at fault.
    pub key: String,
    /// The message RTCD itself prints.
    pub rtcd_message: String,
    /// One sentence from the probe: which setting, and what to do.
    pub hint: String,
}

impl ConfigError {
    pub(crate) fn new(
        key: impl Into<String>,
        rtcd_message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            rtcd_message: rtcd_message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} — {}", self.rtcd_message, self.hint)
    }
}

impl std::error::Error for ConfigError {}

/// RTCD `ICEHostPortOverride.ParseMap` (service/rtc/config.go:295-333 (v1.2.6)):
/// `localIP/port,…` in order. Keys are
/// compared as strings later (RTCD matches `ip.String()`), so they are not
/// parsed as IPs here either; ports are not range-checked (RTCD doesn't).
pub fn parse_port_map(s: &str) -> Result<Vec<(String, i64)>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<(String, i64)> = Vec::new();
    for pair in s.split(',') {
        let parts: Vec<&str> = pair.split('/').collect();
        if parts.len() != 2 {
            return Err("invalid map pairing syntax".into());
        }
        let port = atoi(parts[1]).map_err(|e| format!("failed to parse port number: {e}"))?;
        if out.iter().any(|(k, _)| k == parts[0]) {
            return Err(format!("duplicate mapping found for {}", parts[0]));
        }
        if out.iter().any(|(_, p)| *p == port) {
            return Err(format!("duplicate port found for {port}"));
        }
        out.push((parts[0].to_string(), port));
    }
    Ok(out)
}

/// RTCD `ICEHostPortOverride.SinglePort` (service/rtc/config.go:287 (v1.2.6)):
/// Atoi, 0 when it is not a number.
pub(crate) fn single_port(s: &str) -> i64 {
    atoi(s).unwrap_or(0)
}

/// rtcd service/rtc/config.go:61,65,345 (v1.2.6): `< 80 || > 49151` is refused.
fn port_range(port: i64) -> bool {
    (80..=49151).contains(&port)
}

/// One start-up rule RTCD checks: when `broken`, RTCD refuses to start with `message`.
struct Rule {
    broken: bool,
    key: &'static str,
    message: String,
    hint: &'static str,
}

/// The first broken rule, in RTCD's order.
fn first_broken<const N: usize>(rules: [Rule; N]) -> Result<(), ConfigError> {
    match rules.into_iter().find(|r| r.broken) {
        Some(r) => Err(ConfigError::new(r.key, r.message, r.hint)),
        None => Ok(()),
    }
}

impl RtcdConfig {
    /// RTCD's start-up validation; the first failure, as RTCD reports it.
    /// The order is rtcd's: `Config.IsValid` (service/config.go:62-76 (v1.2.6)), then the
    /// session cache `service.New` creates (service/service.go:86).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_api()?;
        self.validate_rtc()?;
        // rtcd service/config.go:102-106 (v1.2.6)
        if self.store_data_source.is_empty() {
            return Err(ConfigError::new(
                "store.data_source",
                "invalid DataSource value: should not be empty",
                "set [store] data_source (env RTCD_STORE_DATASOURCE) to a directory RTCD can write",
            ));
        }
        self.validate_logger()?;
        // rtcd service/auth/session_cache.go:21-25, wrapped by service/service.go:86-88 and
        // cmd/rtcd/main.go:32 (v1.2.6).
        if self.api.session_cache_expiration_minutes <= 0 {
            return Err(ConfigError::new(
                "api.security.session_cache.expiration_minutes",
                "failed to create service: failed to create session cache: invalid ExpirationMinutes value: should be a positive number",
                "set [api] security.session_cache.expiration_minutes (env RTCD_API_SECURITY_SESSIONCACHE_EXPIRATIONMINUTES) to a positive number of minutes, or remove it to get 1440",
            ));
        }
        Ok(())
    }

    /// rtcd logger/config.go:25-49 (v1.2.6). Level names are mlog's `StdAll` (panic, fatal,
    /// error, warn, info, debug, trace, and stdlog in newer mlog), matched lower-cased.
    fn validate_logger(&self) -> Result<(), ConfigError> {
        const LEVELS: [&str; 8] = [
            "panic", "fatal", "error", "warn", "info", "debug", "trace", "stdlog",
        ];
        let l = &self.logger;
        let known = |v: &str| LEVELS.contains(&v.to_lowercase().as_str());
        first_broken([
            Rule {
                broken: !l.enable_console && !l.enable_file,
                key: "logger.enable_console",
                message: "should enable at least one logging target".into(),
                hint: "set [logger] enable_console or enable_file (env RTCD_LOGGER_ENABLECONSOLE / RTCD_LOGGER_ENABLEFILE) to true",
            },
            Rule {
                broken: l.enable_console && !known(&l.console_level),
                key: "logger.console_level",
                message: format!("invalid ConsoleLevel value {:?}", l.console_level),
                hint: "set [logger] console_level (env RTCD_LOGGER_CONSOLELEVEL) to one of error, warn, info, debug, trace",
            },
            Rule {
                broken: l.enable_file && !known(&l.file_level),
                key: "logger.file_level",
                message: format!("invalid FileLevel value {:?}", l.file_level),
                hint: "set [logger] file_level (env RTCD_LOGGER_FILELEVEL) to one of error, warn, info, debug, trace",
            },
            Rule {
                broken: l.enable_file && l.file_location.is_empty(),
                key: "logger.file_location",
                message: "invalid FileLocation value: should not be empty".into(),
                hint: "set [logger] file_location (env RTCD_LOGGER_FILELOCATION) to the log file's path, or turn enable_file off",
            },
        ])
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        let a = &self.api;
        first_broken([
            // rtcd service/config.go:26-35, wrapped at :51-53 (v1.2.6)
            Rule {
                broken: a.enable_admin && a.admin_secret_key.is_empty(),
                key: "api.security.admin_secret_key",
                message: "failed to validate admin config: invalid AdminSecretKey value: should not be empty".into(),
                hint: "set [api] security.admin_secret_key (env RTCD_API_SECURITY_ADMINSECRETKEY) or turn security.enable_admin off",
            },
            // rtcd service/api/config.go:39-46, wrapped at service/config.go:55-57 (v1.2.6)
            Rule {
                broken: a.listen_address.is_empty(),
                key: "api.http.listen_address",
                message: "failed to validate http config: invalid ListenAddress value: should not be empty".into(),
                hint: "set [api] http.listen_address (env RTCD_API_HTTP_LISTENADDRESS), e.g. \":8045\"",
            },
            // rtcd service/api/config.go:17-25 (v1.2.6)
            Rule {
                broken: a.tls_enable && a.tls_cert_file.is_empty(),
                key: "api.http.tls.cert_file",
                message: "failed to validate http config: invalid TLS config: invalid CertFile value: should not be empty".into(),
                hint: "set [api] http.tls.cert_file (env RTCD_API_HTTP_TLS_CERTFILE) or turn http.tls.enable off",
            },
            Rule {
                broken: a.tls_enable && a.tls_cert_key.is_empty(),
                key: "api.http.tls.cert_key",
                message: "failed to validate http config: invalid TLS config: invalid CertKey value: should not be empty".into(),
                hint: "set [api] http.tls.cert_key (env RTCD_API_HTTP_TLS_CERTKEY) or turn http.tls.enable off",
            },
        ])
    }

    /// rtcd `ServerConfig.IsValid`, service/rtc/config.go:52-102 (v1.2.6).
    fn validate_rtc(&self) -> Result<(), ConfigError> {
        self.validate_ice_addresses()?; // service/rtc/config.go:53-59
        self.validate_ice_ports()?; // service/rtc/config.go:61-67
        self.validate_ice_servers()?; // service/rtc/config.go:69-71
        self.validate_turn()?; // service/rtc/config.go:73-75
        self.validate_port_override()?; // service/rtc/config.go:77-79
        self.validate_udp_sockets_count()?; // service/rtc/config.go:81-83
        self.validate_nack_buffer_size() // service/rtc/config.go:85-99
    }

    fn validate_ice_addresses(&self) -> Result<(), ConfigError> {
        // service/rtc/config.go:53-59 with ICEAddress.IsValid at :386-398: each trimmed entry
        // must pass net.ParseIP.
        for (field, key, env, value) in [
            (
                "ICEAddressUDP",
                "rtc.ice_address_udp",
                "RTCD_RTC_ICEADDRESSUDP",
                &self.ice_address_udp,
            ),
            (
                "ICEAddressTCP",
                "rtc.ice_address_tcp",
                "RTCD_RTC_ICEADDRESSTCP",
                &self.ice_address_tcp,
            ),
        ] {
            if let Some(bad) = parse_ice_address(value)
                .into_iter()
                .find(|a| parse_ip(a).is_none())
            {
                return Err(ConfigError::new(
                    key,
                    format!("invalid {field} value: invalid ICEAddress value: {bad} is not a valid IP address"),
                    format!("set [rtc] {} (env {env}) to a comma-separated list of IP addresses, or leave it empty to listen on all interfaces", key.trim_start_matches("rtc.")),
                ));
            }
        }
        Ok(())
    }

    fn validate_ice_ports(&self) -> Result<(), ConfigError> {
        // service/rtc/config.go:61-67
        for (field, key, env, port) in [
            (
                "ICEPortUDP",
                "rtc.ice_port_udp",
                "RTCD_RTC_ICEPORTUDP",
                self.ice_port_udp,
            ),
            (
                "ICEPortTCP",
                "rtc.ice_port_tcp",
                "RTCD_RTC_ICEPORTTCP",
                self.ice_port_tcp,
            ),
        ] {
            if !port_range(port) {
                return Err(ConfigError::new(
                    key,
                    format!("invalid {field} value: {port} is not in allowed range [80, 49151]"),
                    format!(
                        "set [rtc] {} (env {env}) to a port between 80 and 49151",
                        key.trim_start_matches("rtc.")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// service/rtc/config.go:81-83; unset means NumCPU × 100 (service/config.go:84), > 0.
    fn validate_udp_sockets_count(&self) -> Result<(), ConfigError> {
        if let Some(n) = self.udp_sockets_count {
            if n <= 0 {
                return Err(ConfigError::new(
                    "rtc.udp_sockets_count",
                    "invalid UDPSocketsCount value: should be greater than 0",
                    "remove [rtc] udp_sockets_count (env RTCD_RTC_UDPSOCKETSCOUNT) to get RTCD's default, or set it above 0",
                ));
            }
        }
        Ok(())
    }

    /// service/rtc/config.go:85-99: checked only when non-zero (0 is valid).
    fn validate_nack_buffer_size(&self) -> Result<(), ConfigError> {
        let n = self.nack_buffer_size;
        let nack = if n == 0 {
            None
        } else if n < 32 {
            Some("invalid NACKBufferSize value: should be at least 32")
        } else if n > 8192 {
            Some("invalid NACKBufferSize value: should not exceed 8192")
        } else if !n.is_power_of_two() {
            Some("invalid NACKBufferSize value: must be a power of 2 (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)")
        } else {
            None
        };
        if let Some(msg) = nack {
            return Err(ConfigError::new(
                "rtc.nack_buffer_size",
                msg,
                "set [rtc] nack_buffer_size (env RTCD_RTC_NACKBUFFERSIZE) to a power of two from 32 to 8192 (or 0), or remove it to get 256",
            ));
        }
        Ok(())
    }

    /// service/rtc/config.go:183-224 (v1.2.6): per server, no URL → "invalid empty URLs";
    /// then per URL in order: empty → "invalid empty URL", else the whole server must be all
    /// STUN or all TURN (IsSTUN/IsTURN, :199-215), so the first URL decides.
    fn validate_ice_servers(&self) -> Result<(), ConfigError> {
        for s in &self.ice_servers {
            let why = if s.urls.is_empty() {
                Some("invalid empty URLs")
            } else if s.urls[0].is_empty() {
                // RTCD checks each URL in turn, emptiness first, then the kind
                // of the whole server: the first URL decides which error wins.
                Some("invalid empty URL")
            } else if !s.is_stun() && !s.is_turn() {
                Some("URL is not a valid STUN/TURN server")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ConfigError::new(
                    "rtc.ice_servers",
                    format!("invalid ICEServers value: {why}"),
                    "make each [rtc] ice_servers entry (env RTCD_RTC_ICESERVERS) list only stun:/stuns: URLs or only turn:/turns: URLs, none of them empty",
                ));
            }
        }
        Ok(())
    }

    /// service/rtc/turn.go:24-35 (v1.2.6): only with a static auth secret; 1 ≤ minutes < 10080.
    fn validate_turn(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        if t.static_auth_secret.is_empty() {
            return Ok(());
        }
        let why = if t.credentials_expiration_minutes <= 0 {
            "should be a positive number"
        } else if t.credentials_expiration_minutes >= 7 * 24 * 60 {
            "should be less than 1 week"
        } else {
            return Ok(());
        };
        Err(ConfigError::new(
            "rtc.turn.credentials_expiration_minutes",
            format!("invalid TURNConfig: invalid CredentialsExpirationMinutes value: {why}"),
            "set [rtc] turn.credentials_expiration_minutes (env RTCD_RTC_TURNCONFIG_CREDENTIALSEXPIRATIONMINUTES) between 1 and 10079 while turn.static_auth_secret is set",
        ))
    }

    /// service/rtc/config.go:335-356 (v1.2.6): empty is valid; a non-zero Atoi must be in
    /// [80, 49151]; anything else must parse as a map.
    fn validate_port_override(&self) -> Result<(), ConfigError> {
        let s = &self.ice_host_port_override;
        if s.is_empty() {
            return Ok(());
        }
        const HINT: &str = "set [rtc] ice_host_port_override (env RTCD_RTC_ICEHOSTPORTOVERRIDE) to one port in [80, 49151] or to localIP/port pairs separated by commas, each IP and each port used once";
        let port = single_port(s);
        if port != 0 {
            if !port_range(port) {
                return Err(ConfigError::new(
                    "rtc.ice_host_port_override",
                    format!("invalid ICEHostPortOverride value: {port} is not in allowed range [80, 49151]"),
                    HINT,
                ));
            }
            return Ok(());
        }
        parse_port_map(s).map(|_| ()).map_err(|e| {
            ConfigError::new(
                "rtc.ice_host_port_override",
                format!("invalid ICEHostPortOverride value: failed to parse mapping: {e}"),
                HINT,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcd::config::IceServer;

    fn cfg() -> RtcdConfig {
        RtcdConfig::default()
    }

    fn msg(c: &RtcdConfig) -> String {
        c.validate().unwrap_err().rtcd_message
    }

    #[test]
    fn defaults_are_valid() {
        cfg().validate().unwrap();
    }

    #[test]
    fn ports_use_rtcd_wording() {
        let mut c = cfg();
        c.ice_port_udp = 22;
        assert_eq!(
            msg(&c),
            "invalid ICEPortUDP value: 22 is not in allowed range [80, 49151]"
        );
        c.ice_port_udp = 65000;
        assert_eq!(
            msg(&c),
            "invalid ICEPortUDP value: 65000 is not in allowed range [80, 49151]"
        );
        let mut c = cfg();
        c.ice_port_tcp = 0;
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.rtcd_message,
            "invalid ICEPortTCP value: 0 is not in allowed range [80, 49151]"
        );
        assert_eq!(e.key, "rtc.ice_port_tcp");
        assert!(
            e.to_string()
                .contains(" — set [rtc] ice_port_tcp (env RTCD_RTC_ICEPORTTCP)"),
            "{e}"
        );
    }

    #[test]
    fn ice_addresses() {
        let mut c = cfg();
        c.ice_address_udp = "not_an_address".into();
        assert_eq!(
            msg(&c),
            "invalid ICEAddressUDP value: invalid ICEAddress value: not_an_address is not a valid IP address"
        );
        c.ice_address_udp = "127.0.0.1 , 192.168.45.45 ,  10.8.8.8".into();
        c.validate().unwrap();
        c.ice_address_tcp = "127.0.0.1,256.45.45.45".into();
        assert_eq!(
            msg(&c),
            "invalid ICEAddressTCP value: invalid ICEAddress value: 256.45.45.45 is not a valid IP address"
        );
    }

    #[test]
    fn ice_servers_rules() {
        let mut c = cfg();
        let srv = |urls: &[&str]| IceServer {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            ..IceServer::default()
        };
        c.ice_servers = vec![srv(&[])];
        assert_eq!(msg(&c), "invalid ICEServers value: invalid empty URLs");
        c.ice_servers = vec![srv(&[""])];
        assert_eq!(msg(&c), "invalid ICEServers value: invalid empty URL");
        c.ice_servers = vec![srv(&["localhost:3478"])];
        assert_eq!(
            msg(&c),
            "invalid ICEServers value: URL is not a valid STUN/TURN server"
        );
        c.ice_servers = vec![srv(&["turn:turn1.localhost:3478", "turn2.localhost:3478"])];
        assert_eq!(
            msg(&c),
            "invalid ICEServers value: URL is not a valid STUN/TURN server"
        );
        c.ice_servers = vec![srv(&["stun:a:3478", "turn:b:3478"])];
        assert_eq!(
            msg(&c),
            "invalid ICEServers value: URL is not a valid STUN/TURN server"
        );
        c.ice_servers = vec![srv(&["turn:a:3478", ""])];
        assert_eq!(
            msg(&c),
            "invalid ICEServers value: URL is not a valid STUN/TURN server"
        );
        c.ice_servers = vec![
            srv(&["stuns:a:5349", "stun:b:3478"]),
            srv(&["turns:t:5349"]),
        ];
        c.validate().unwrap();
    }

    #[test]
    fn port_override_forms() {
        let mut c = cfg();
        for ok in ["30443", "10.0.0.1/8443,10.0.0.2/8444", "10.0.0.1/70000"] {
            c.ice_host_port_override = ok.into();
            c.validate().unwrap();
        }
        c.ice_host_port_override = "45".into();
        assert_eq!(
            msg(&c),
            "invalid ICEHostPortOverride value: 45 is not in allowed range [80, 49151]"
        );
        c.ice_host_port_override = "65000".into();
        assert_eq!(
            msg(&c),
            "invalid ICEHostPortOverride value: 65000 is not in allowed range [80, 49151]"
        );
        c.ice_host_port_override = "127.0.0.1,8443".into();
        assert_eq!(
            msg(&c),
            "invalid ICEHostPortOverride value: failed to parse mapping: invalid map pairing syntax"
        );
        c.ice_host_port_override = "0".into();
        assert!(msg(&c).ends_with("invalid map pairing syntax"));
        c.ice_host_port_override = "10.0.0.1/x".into();
        assert_eq!(
            msg(&c),
            "invalid ICEHostPortOverride value: failed to parse mapping: failed to parse port number: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        c.ice_host_port_override = "127.0.0.1/8444,127.0.0.1/8445".into();
        assert!(msg(&c).ends_with("duplicate mapping found for 127.0.0.1"));
        c.ice_host_port_override = "127.0.0.1/8444,127.0.0.2/8444".into();
        assert!(msg(&c).ends_with("duplicate port found for 8444"));
    }

    #[test]
    fn nack_buffer_size_zero_is_valid() {
        // rtcd service/rtc/config.go:85: the checks run only when the value is non-zero.
        let mut c = cfg();
        c.nack_buffer_size = 0;
        c.validate().unwrap();
        let c = RtcdConfig::from_toml_str("[rtc]\nnack_buffer_size = 0\n").unwrap();
        assert_eq!(c.nack_buffer_size, 0);
        c.validate().unwrap();
        let mut c = cfg();
        c.apply_env(&|k| (k == "RTCD_RTC_NACKBUFFERSIZE").then(|| "0".to_string()))
            .unwrap();
        c.validate().unwrap();
        for ok in [32u16, 64, 8192] {
            let mut c = cfg();
            c.nack_buffer_size = ok;
            c.validate().unwrap();
        }
        let mut c = cfg();
        c.nack_buffer_size = 16384;
        assert_eq!(
            msg(&c),
            "invalid NACKBufferSize value: should not exceed 8192"
        );
        c.nack_buffer_size = 1;
        assert_eq!(
            msg(&c),
            "invalid NACKBufferSize value: should be at least 32"
        );
    }

    #[test]
    fn logger_rules() {
        // rtcd logger/config.go:25-49.
        let mut c = cfg();
        c.logger.enable_console = false;
        c.logger.enable_file = false;
        assert_eq!(msg(&c), "should enable at least one logging target");
        let mut c = cfg();
        c.logger.console_level = "verbose".into();
        assert_eq!(msg(&c), "invalid ConsoleLevel value \"verbose\"");
        // A level of a disabled target is not checked; case does not matter.
        c.logger.enable_console = false;
        c.validate().unwrap();
        let mut c = cfg();
        c.logger.file_level = "Warn".into();
        c.logger.console_level = "TRACE".into();
        c.validate().unwrap();
        c.logger.file_level = "warning".into();
        assert_eq!(msg(&c), "invalid FileLevel value \"warning\"");
        let mut c = cfg();
        c.logger.file_location.clear();
        assert_eq!(msg(&c), "invalid FileLocation value: should not be empty");
        c.logger.enable_file = false;
        c.validate().unwrap();
        // The sample config's [logger] section is valid; TOML and env both reach it.
        let mut c = RtcdConfig::from_toml_str(
            "[logger]\nenable_console = false\nfile_level = \"INFO\"\nfile_location = \"/var/log/rtcd.log\"\n",
        )
        .unwrap();
        assert!(!c.logger.enable_console);
        assert_eq!(c.logger.file_location, "/var/log/rtcd.log");
        c.validate().unwrap();
        c.apply_env(&|k| (k == "RTCD_LOGGER_ENABLEFILE").then(|| "false".to_string()))
            .unwrap();
        assert_eq!(msg(&c), "should enable at least one logging target");
        assert!(RtcdConfig::from_toml_str("[logger]\nenable_file = \"yes\"\n").is_err());
    }

    #[test]
    fn session_cache_expiration() {
        // rtcd service/auth/session_cache.go:21, via service/service.go:86.
        let c = RtcdConfig::from_toml_str("[api]\nsecurity.session_cache.expiration_minutes = 0\n")
            .unwrap();
        assert_eq!(
            msg(&c),
            "failed to create service: failed to create session cache: invalid ExpirationMinutes value: should be a positive number"
        );
        let mut c = cfg();
        c.apply_env(&|k| {
            (k == "RTCD_API_SECURITY_SESSIONCACHE_EXPIRATIONMINUTES").then(|| "60".to_string())
        })
        .unwrap();
        assert_eq!(c.api.session_cache_expiration_minutes, 60);
        c.validate().unwrap();
        c.api.session_cache_expiration_minutes = -1;
        assert!(msg(&c).ends_with("should be a positive number"));
    }

    #[test]
    fn nack_disable_copy_type_is_checked() {
        // service/rtc/config.go:49: a bool; another type stops BurntSushi's decode.
        RtcdConfig::from_toml_str("[rtc]\nnack_disable_copy = false\n").unwrap();
        let e = RtcdConfig::from_toml_str("[rtc]\nnack_disable_copy = \"no\"\n").unwrap_err();
        assert!(e.rtcd_message.contains("incompatible types"), "{e}");
    }

    #[test]
    fn parse_map_keeps_order() {
        assert_eq!(
            parse_port_map("127.0.0.1/8443,127.0.0.2/8445").unwrap(),
            vec![
                ("127.0.0.1".to_string(), 8443),
                ("127.0.0.2".to_string(), 8445)
            ]
        );
        assert_eq!(parse_port_map("").unwrap(), vec![]);
    }

    #[test]
    fn other_sections() {
        let mut c = cfg();
        c.udp_sockets_count = Some(0);
        assert_eq!(
            msg(&c),
            "invalid UDPSocketsCount value: should be greater than 0"
        );
        let mut c = cfg();
        c.nack_buffer_size = 16;
        assert_eq!(
            msg(&c),
            "invalid NACKBufferSize value: should be at least 32"
        );
        c.nack_buffer_size = 100;
        assert!(msg(&c).starts_with("invalid NACKBufferSize value: must be a power of 2"));
        let mut c = cfg();
        c.turn.static_auth_secret = "s".into();
        c.turn.credentials_expiration_minutes = 20000;
        assert_eq!(
            msg(&c),
            "invalid TURNConfig: invalid CredentialsExpirationMinutes value: should be less than 1 week"
        );
        let mut c = cfg();
        c.api.enable_admin = true;
        assert_eq!(
            msg(&c),
            "failed to validate admin config: invalid AdminSecretKey value: should not be empty"
        );
        let mut c = cfg();
        c.api.listen_address.clear();
        assert_eq!(
            msg(&c),
            "failed to validate http config: invalid ListenAddress value: should not be empty"
        );
        let mut c = cfg();
        c.api.tls_enable = true;
        assert_eq!(
            msg(&c),
            "failed to validate http config: invalid TLS config: invalid CertFile value: should not be empty"
        );
        let mut c = cfg();
        c.store_data_source.clear();
        assert_eq!(msg(&c), "invalid DataSource value: should not be empty");
    }
}
