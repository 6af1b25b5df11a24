//! RTCD's own view of the network, computed sans-IO: its configuration
//! (TOML, `RTCD_*` environment, start-up validation with RTCD's wording) and
//! the ICE host candidates it advertises.
//!
//! Mirrors rtcd (service/rtc, cmd/rtcd) with either pion generation RTCD has
//! shipped with ([`PionRules`]: ice v4.0.x for rtcd v1.2.0–v1.2.4, ice v4.2 +
//! webrtc v4.2.6 for v1.2.5+). The caller supplies the IO: interface addresses, DNS for a
//! hostname override, and the STUN exchange.
//!
//! # Rules verified against upstream (rtcd v1.2.6 = b3dee59, pion/ice v4.0.10 and v4.2.0, pion/webrtc v4.2.6)
//!
//! * Start-up validation, order and wording: rtcd `service/config.go:26-76,102-106`,
//!   `service/api/config.go:17-46`, `service/rtc/config.go:52-102,183-224,285-398`,
//!   `service/rtc/turn.go:24-35`, `logger/config.go:25-49`, `service/auth/session_cache.go:21-25`
//!   (each rule in `validate.rs` cites its line); `nack_buffer_size = 0` is valid (`:85`).
//! * Local IPs: `net.go:34-79` (IPv4 incl. loopback; global IPv6 with enable_ipv6); the
//!   `ice_address_*` filter compares `ip.String()` (`server.go:109-122`); UDP muxes per entry or
//!   per narrowed IP (`server.go:346-365`), a wildcard entry lists the interfaces itself (ice
//!   `udp_mux.go:72-108`; Go binds "::" under udp4 as 0.0.0.0, net/ipsock.go "Issue 18806");
//!   TCP candidates only for narrowed IPs (`sfu.go:103-115`).
//! * Pairs: `utils.go:60-133` (EXT/LOCAL passed unchanged, before the empty-list check; single
//!   IP/hostname resolved per join; STUN pairs); port map `server.go:124-135`; port override
//!   targets `utils.go:135-166` (only exact `A/B` entries, not identity pairs, not lone IPs) and
//!   `sfu.go:311-319` (host candidates, UDP and TCP).
//! * NAT 1:1: v4.0 `external_ip_mapper.go:82-160`, `gather.go` UDP-mux drop vs TCP keep
//!   (`mapping.rs`); v4.2 webrtc `icegatherer.go:378-405`, ice `agent_options.go:117-184`,
//!   `external_ip_mapper.go:90-456`, `gather.go:123-193,294-299` (`rewrite.rs`).
//! * STUN: `server.go:137-158`, `stun.go:15-38` (first URL of the first all-STUN server; host:port
//!   required; loopback never answers); TURN relays only with `turn.static_auth_secret`
//!   (`sfu.go:231-252`, [`RtcdConfig::relay_servers`]), so private host candidates are then a
//!   warning, not an error.

mod candidates;
mod config;
pub(crate) mod env;
pub mod findings;
mod goparse;
pub mod keys;
mod mapping;
mod net;
mod pion;
mod rewrite;
mod validate;

pub use candidates::{
    compute_advertised, rtcd_local_ips, rtcd_stun_target, stun_url, AdvertiseError, Advertised,
    Candidate, FilterIgnores, LocalAddr, OverrideForm, Protocol, Resolve, Source,
    DEFAULT_STUN_PORT,
};
pub use config::{
    parse_ice_address, ApiConfig, IceServer, RtcdConfig, TurnConfig, DEFAULT_ICE_PORT,
    DEFAULT_LISTEN_ADDRESS, UDP_SOCKETS_PER_CPU,
};
pub use env::decode_ice_servers_json;
pub use goparse::canonical;
pub use mapping::PION_MAPPING_ERROR;
pub use net::is_private;
pub use pion::PionRules;
pub use rewrite::PION_REWRITE_ERROR;
pub use validate::{parse_port_map, ConfigError};

#[cfg(test)]
mod fuzz {
    //! Arbitrary text in the places users type it must never panic.
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn locals() -> Vec<LocalAddr> {
        [
            "127.0.0.1",
            "10.0.0.5",
            "172.17.0.1",
            "2001:db8::5",
            "fe80::1",
        ]
        .iter()
        .map(|s| LocalAddr {
            ip: s.parse().unwrap(),
            loopback: s.starts_with("127."),
        })
        .collect()
    }

    /// Text biased towards the characters these settings are made of.
    fn settingish() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f.:/,\\[\\] ]{0,40}",
            "[0-9./,]{0,30}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn overrides_never_panic(ov in settingish(), port_ov in settingish(), ipv6 in any::<bool>()) {
            let mut cfg = RtcdConfig {
                ice_host_override: ov,
                ice_host_port_override: port_ov,
                enable_ipv6: ipv6,
                ..RtcdConfig::default()
            };
            let resolve = |_: &str, _: bool| -> Result<Vec<IpAddr>, String> {
                Ok(vec!["203.0.113.7".parse().unwrap()])
            };
            let _ = compute_advertised(&cfg, &locals(), &resolve, &|_| None, 8443, 8443, PionRules::V4_0);
            let _ = compute_advertised(&cfg, &locals(), &resolve, &|_| None, 8443, 8443, PionRules::V4_2);
            cfg.ice_servers = vec![IceServer { urls: vec![format!("stun:{}", cfg.ice_host_override)], ..IceServer::default() }];
            cfg.ice_host_override.clear();
            let _ = stun_url(&cfg);
            let _ = rtcd_stun_target(&cfg);
            let stun = |_: IpAddr| Some("198.51.100.9".parse().unwrap());
            let _ = compute_advertised(&cfg, &locals(), &resolve, &stun, 8443, 8443, PionRules::default());
        }

        #[test]
        fn addresses_never_panic(udp in settingish(), tcp in settingish()) {
            let cfg = RtcdConfig { ice_address_udp: udp, ice_address_tcp: tcp, ..RtcdConfig::default() };
            let _ = compute_advertised(&cfg, &locals(), &|_, _| Err("x".into()), &|_| None, 1, 1, PionRules::default());
        }

        #[test]
        fn toml_never_panics(s in any::<String>(), key in "[a-z_]{1,20}", val in settingish()) {
            let _ = RtcdConfig::from_toml_str(&s);
            let doc = format!("[rtc]\n{key} = {val:?}\n[api]\nhttp.{key} = {val}\n");
            if let Ok(cfg) = RtcdConfig::from_toml_str(&doc) {
                let _ = cfg.validate();
            }
        }

        #[test]
        fn env_never_panics(val in settingish()) {
            let mut cfg = RtcdConfig::default();
            let v = val.clone();
            let _ = cfg.apply_env(&move |_| Some(v.clone()));
            let _ = cfg.validate();
            let _ = decode_ice_servers_json(&val);
        }
    }
}
