//! Verdicts in the words of the deployment: RTCD's TOML keys and `RTCD_*` variables, or the
//! Calls plugin's System Console settings and `MM_CALLS_*` variables. Display names and
//! sections are plugin.json's `settings_schema.sections` (mattermost-plugin-calls eb708b4
//! plugin.json:92-217).

use crate::rtcd::findings::addr_list;
use std::net::IpAddr;

use super::env::env_var;
use super::Deployment;
use crate::catalog::FindingId;
use crate::report::{Finding, Severity};
use crate::rtcd::FilterIgnores;

/// plugin.json: (setting key, section title, display name).
const SETTINGS: &[(&str, &str, &str)] = &[
    ("RTCDServiceURL", "RTCD Service", "RTCD service URL"),
    ("UDPServerAddress", "RTC Server", "RTC Server Address (UDP)"),
    ("TCPServerAddress", "RTC Server", "RTC Server Address (TCP)"),
    ("UDPServerPort", "RTC Server", "RTC Server Port (UDP)"),
    ("TCPServerPort", "RTC Server", "RTC Server Port (TCP)"),
    (
        "EnableIPv6",
        "RTC Server",
        "(Experimental) Enable IPv6 support",
    ),
    ("ICEHostOverride", "ICE and TURN", "ICE Host Override"),
    (
        "ICEHostPortOverride",
        "ICE and TURN",
        "ICE Host Port Override",
    ),
    (
        "ICEServersConfigs",
        "ICE and TURN",
        "ICE Servers Configurations",
    ),
    (
        "TURNStaticAuthSecret",
        "ICE and TURN",
        "TURN Static Auth Secret",
    ),
    (
        "TURNCredentialsExpirationMinutes",
        "ICE and TURN",
        "TURN Credentials Expiration (minutes)",
    ),
    ("ServerSideTURN", "ICE and TURN", "Server Side TURN"),
    (
        "MaxCallParticipants",
        "General Settings",
        "Max call participants",
    ),
    (
        "EnableRecordings",
        "Call recordings",
        "Enable call recordings",
    ),
    (
        "MaxRecordingDuration",
        "Call recordings",
        "Maximum call recording duration",
    ),
    (
        "RecordingQuality",
        "Call recordings",
        "Call recording quality",
    ),
];

/// Where an admin changes a setting: `System Console › Plugins › Calls › ICE and TURN ›
/// "ICE Host Override"`. The deprecated `ICEServers` has no place in the System Console.
pub fn console(key: &str) -> String {
    match SETTINGS.iter().find(|(k, _, _)| *k == key) {
        Some((_, section, name)) => format!("System Console › Plugins › Calls › {section} › \"{name}\""),
        None => format!("the Calls plugin's {key} setting (config.json PluginSettings.Plugins[\"com.mattermost.calls\"])"),
    }
}

/// The plugin setting behind an `rtc.*` key of RTCD's validation (activate.go:171-189).
pub fn setting_for_rtcd_key(rtcd_key: &str) -> &'static str {
    match rtcd_key {
        "rtc.ice_address_udp" => "UDPServerAddress",
        "rtc.ice_address_tcp" => "TCPServerAddress",
        "rtc.ice_port_udp" => "UDPServerPort",
        "rtc.ice_port_tcp" => "TCPServerPort",
        "rtc.ice_host_override" => "ICEHostOverride",
        "rtc.ice_host_port_override" => "ICEHostPortOverride",
        "rtc.ice_servers" => "ICEServersConfigs",
        "rtc.turn.credentials_expiration_minutes" => "TURNCredentialsExpirationMinutes",
        "rtc.turn.static_auth_secret" => "TURNStaticAuthSecret",
        "rtc.enable_ipv6" => "EnableIPv6",
        _ => "ICEServersConfigs",
    }
}

/// The words one verdict needs, per deployment.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    plugin: bool,
}

impl Terms {
    pub fn of(d: &Deployment) -> Self {
        Terms {
            plugin: !d.is_rtcd(),
        }
    }

    pub fn is_plugin(&self) -> bool {
        self.plugin
    }

    /// The media server, as the subject of a sentence.
    pub fn server(&self) -> &'static str {
        if self.plugin {
            "the Calls plugin's integrated RTC server"
        } else {
            "RTCD"
        }
    }

    /// The media server's, as a possessive.
    pub fn server_s(&self) -> &'static str {
        if self.plugin {
            "the RTC server's"
        } else {
            "RTCD's"
        }
    }

    /// The host the media server runs on.
    pub fn host(&self) -> &'static str {
        if self.plugin {
            "the Mattermost host"
        } else {
            "the RTCD host"
        }
    }

    /// The host override setting, owned, at the start of a sentence.
    pub fn owned_override(&self) -> &'static str {
        if self.plugin {
            "The Calls plugin's ICE Host Override"
        } else {
            "RTCD's ice_host_override"
        }
    }

    /// The port override setting's name in prose.
    pub fn port_override_name(&self) -> &'static str {
        if self.plugin {
            "ICE Host Port Override"
        } else {
            "ice_host_port_override"
        }
    }

    /// A short example of setting the override.
    pub fn short_host_line(&self, value: &str) -> String {
        if self.plugin {
            self.host_line(value)
        } else {
            format!(
                "`ice_host_override = \"{value}\"` in [rtc] (`RTCD_RTC_ICEHOSTOVERRIDE={value}`)"
            )
        }
    }

    /// The pairs form of the override, `EXTERNAL/LOCAL_IP`.
    pub fn pairs_line(&self, external: IpAddr) -> String {
        if self.plugin {
            format!(
                "{} (LOCAL_IP: this host's own address)",
                self.host_line(&format!("{external}/LOCAL_IP"))
            )
        } else {
            format!(
                "`ice_host_override = \"{external}/LOCAL_IP\"` (LOCAL_IP: the RTCD host's own address) in [rtc], or \
                 `RTCD_RTC_ICEHOSTOVERRIDE={external}/LOCAL_IP`"
            )
        }
    }

    /// The host override setting's name in prose.
    pub fn override_name(&self) -> &'static str {
        if self.plugin {
            "ICE Host Override"
        } else {
            "ice_host_override"
        }
    }

    /// How to set the host override to `value`.
    pub fn host_line(&self, value: &str) -> String {
        if self.plugin {
            format!(
                "{} to `{value}` (or `{}={value}` in the Mattermost server's environment)",
                console("ICEHostOverride"),
                env_var("ICEHostOverride")
            )
        } else {
            format!(
                "`ice_host_override = \"{value}\"` in the [rtc] section of RTCD's config (or the environment variable \
                 `RTCD_RTC_ICEHOSTOVERRIDE={value}`)"
            )
        }
    }

    pub fn host_ip_line(&self, ip: IpAddr) -> String {
        self.host_line(&ip.to_string())
    }

    /// How to set the host port override to `port`.
    pub fn port_line(&self, port: u16) -> String {
        if self.plugin {
            format!(
                "{} to {port} (or `{}={port}`)",
                console("ICEHostPortOverride"),
                env_var("ICEHostPortOverride")
            )
        } else {
            format!("`ice_host_port_override = {port}` in [rtc] (or `RTCD_RTC_ICEHOSTPORTOVERRIDE={port}`)")
        }
    }

    /// What to do after changing a setting.
    pub fn restart(&self) -> &'static str {
        if self.plugin {
            "then save, disable and re-enable the Calls plugin (System Console › Plugins › Plugin Management) so \
             its RTC server restarts, and run the probe again"
        } else {
            "then restart RTCD and run the probe again"
        }
    }

    /// The TCP port setting, for firewall advice.
    pub fn tcp_port(&self) -> String {
        if self.plugin {
            format!(
                "{} ({})",
                console("TCPServerPort"),
                env_var("TCPServerPort")
            )
        } else {
            "RTCD's `ice_port_tcp` (RTCD_RTC_ICEPORTTCP)".into()
        }
    }

    /// The advice for an `ice_address_*` filter that keeps no usable TCP candidate.
    pub fn address_fix(&self) -> String {
        if self.plugin {
            format!(
                "In {} and {}, set this host's own IP (or leave both empty to use every address; env {} / {}), {}.",
                console("UDPServerAddress"),
                console("TCPServerAddress"),
                env_var("UDPServerAddress"),
                env_var("TCPServerAddress"),
                self.restart()
            )
        } else {
            "In RTCD's config under [rtc], list this host's own IP in ice_address_udp / ice_address_tcp (or leave \
             both empty to use every address; env RTCD_RTC_ICEADDRESSUDP / RTCD_RTC_ICEADDRESSTCP), then restart RTCD."
                .into()
        }
    }

    /// The address filter as set, for the TCP verdict (RTCD's wording kept as it was).
    pub fn filter_as_set(&self, udp: &str, tcp: &str) -> String {
        if self.plugin {
            return self.address_text(udp, tcp);
        }
        let tcp = if tcp.is_empty() {
            String::new()
        } else {
            format!(" / ice_address_tcp = \"{tcp}\"")
        };
        format!("ice_address_udp = \"{udp}\"{tcp}")
    }

    /// `RTC Server Address (UDP) = "…"` or `ice_address_udp = "…"`.
    pub fn address_text(&self, udp: &str, tcp: &str) -> String {
        let (u, t) = if self.plugin {
            (
                "\"RTC Server Address (UDP)\"",
                "\"RTC Server Address (TCP)\"",
            )
        } else {
            ("ice_address_udp", "ice_address_tcp")
        };
        let mut parts = Vec::new();
        if !udp.is_empty() {
            parts.push(format!("{u} = \"{udp}\""));
        }
        if !tcp.is_empty() {
            parts.push(format!("{t} = \"{tcp}\""));
        }
        if parts.is_empty() {
            format!("{u}/{t}")
        } else {
            parts.join(" and ")
        }
    }
}

/// `ice_address_ignores_override` for the plugin: the RTC Server Address filter keeps none of
/// the host's IPs, so rtc drops the override or STUN (the same rule as RTCD's, see
/// `rtcd::findings::address_ignores_override`; the plugin passes the setting as is,
/// activate.go:172-173).
pub fn address_ignores_override(
    ignores: FilterIgnores,
    override_value: &str,
    udp: &str,
    tcp: &str,
    advertised_udp: &[IpAddr],
    severity: Severity,
) -> Finding {
    let t = Terms { plugin: true };
    let what = match ignores {
        FilterIgnores::Override => format!("the ICE Host Override `{override_value}`"),
        FilterIgnores::Stun => {
            "the public address its STUN server (ICE Servers Configurations) would report".into()
        }
    };
    Finding::new(
        FindingId::IceAddressIgnoresOverride,
        severity,
        format!(
            "The Calls plugin's {} matches none of the host's own IP addresses (the RTC server keeps only local IPs \
             written exactly as listed; \"0.0.0.0\" is none of them), so it silently ignores {what}: it advertises {} \
             over UDP instead, and no TCP candidate at all",
            t.address_text(udp, tcp),
            addr_list(advertised_udp)
        ),
        format!(
            "leave {} and {} empty to listen on every address (or unset {} / {}), or set this host's own IP there; \
             keep {} as it is; {}",
            console("UDPServerAddress"),
            console("TCPServerAddress"),
            env_var("UDPServerAddress"),
            env_var("TCPServerAddress"),
            match ignores {
                FilterIgnores::Override => "the ICE Host Override",
                FilterIgnores::Stun => "the ICE Servers Configurations",
            },
            t.restart()
        ),
    )
}

/// `ice_no_udp_candidate` for the plugin (see `rtcd::findings::no_udp_candidate`).
pub fn no_udp_candidate(udp: &str, tcp: &str) -> Finding {
    let t = Terms { plugin: true };
    let why = if udp.is_empty() && !tcp.is_empty() {
        format!(
            "\"RTC Server Address (TCP)\" = \"{tcp}\" keeps none of the host's IP addresses, and with \"RTC Server \
             Address (UDP)\" empty the RTC server opens its UDP listeners only on the addresses that filter keeps"
        )
    } else {
        "the settings leave the RTC server no address to listen on over UDP".into()
    };
    Finding::new(
        FindingId::IceNoUdpCandidate,
        Severity::Error,
        format!(
            "The Calls plugin's integrated RTC server would advertise no UDP ICE candidate at all: {why}. Calls then \
             have no UDP media path (\"timed out waiting for rtc connection\" for every user who cannot use ICE-TCP)"
        ),
        format!(
            "check {}, {} and {}; {}",
            console("UDPServerAddress"),
            console("TCPServerAddress"),
            console("ICEHostOverride"),
            t.restart()
        ),
    )
}

/// `calls_via_rtcd`: the plugin sends calls to RTCD, so the integrated server is not what
/// users reach (activate.go:155: `RTCDServiceURL` set and a licence that allows RTCD).
pub fn rtcd_in_charge(url: &str) -> Finding {
    Finding::new(
        FindingId::CallsViaRtcd,
        Severity::Info,
        format!(
            "The Calls plugin has {} = `{url}`: with an Enterprise licence (or EnableDeveloper and EnableTesting) \
             it sends every call to RTCD there and does not run its integrated RTC server, so these ICE results \
             describe a server calls do not use",
            console("RTCDServiceURL")
        ),
        format!(
            "test RTCD instead: run probe-server --rtcd-config on the RTCD host behind {url}; without such a \
             licence the plugin ignores the URL and these results apply"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths_use_the_display_names() {
        assert_eq!(
            console("ICEHostOverride"),
            "System Console › Plugins › Calls › ICE and TURN › \"ICE Host Override\""
        );
        let t = Terms::of(&Deployment::CallsPlugin { rtcd_url: None });
        assert!(t
            .host_line("203.0.113.7")
            .contains("MM_CALLS_ICE_HOST_OVERRIDE=203.0.113.7"));
        assert!(t
            .port_line(30443)
            .contains("\"ICE Host Port Override\" to 30443"));
        let r = Terms::of(&Deployment::Rtcd);
        assert!(r
            .host_line("203.0.113.7")
            .contains("RTCD_RTC_ICEHOSTOVERRIDE"));
    }

    #[test]
    fn plugin_findings_name_no_rtcd_key() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let fs = [
            address_ignores_override(
                FilterIgnores::Override,
                "203.0.113.7",
                "0.0.0.0",
                "",
                &[ip],
                Severity::Error,
            ),
            address_ignores_override(
                FilterIgnores::Stun,
                "",
                "0.0.0.0",
                "",
                &[],
                Severity::Warning,
            ),
            no_udp_candidate("", "10.9.9.9"),
            no_udp_candidate("", ""),
        ];
        for f in fs {
            let text = format!("{} {}", f.summary, f.fix);
            for rtcd in [
                "ice_host_override",
                "ice_address_",
                "RTCD_RTC_",
                "[rtc]",
                "restart RTCD",
            ] {
                assert!(!text.contains(rtcd), "{rtcd} in {text}");
            }
            assert!(text.contains("System Console › Plugins › Calls"), "{text}");
        }
    }
}
