//! RTCD's configuration as the server reads it: `RtcdConfig::from_toml_str`, then
//! `apply_env`, `validate` and `compute_advertised`.
//!
//! Input: TOML text, a NUL byte, then `NAME=VALUE` lines for the `RTCD_*` environment (a bare
//! value applies to every variable). Never a panic; advertised candidates carry the probe's
//! ports unless a port override is in force.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::rtcd::{compute_advertised, LocalAddr, RtcdConfig};
use std::collections::HashMap;
use std::net::IpAddr;

fn locals() -> Vec<LocalAddr> {
    [
        "127.0.0.1",
        "203.0.113.5",
        "172.31.0.5",
        "2001:db8::5",
        "fe80::1",
    ]
    .iter()
    .map(|s| LocalAddr {
        ip: s.parse().expect("literal"),
        loopback: s.starts_with("127."),
    })
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(toml) = std::str::from_utf8(toml) else {
        return;
    };
    let env = String::from_utf8_lossy(env);
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut every: Option<String> = None;
    for line in env.lines() {
        match line.split_once('=') {
            Some((k, v)) => {
                vars.insert(k.to_string(), v.to_string());
            }
            None => every = Some(line.to_string()),
        }
    }
    let Ok(mut cfg) = RtcdConfig::from_toml_str(toml) else {
        return;
    };
    let lookup = |name: &str| vars.get(name).cloned().or_else(|| every.clone());
    if cfg.apply_env(&lookup).is_err() {
        return;
    }
    let _ = cfg.validate();
    let resolve = |_: &str, v6: bool| -> Result<Vec<IpAddr>, String> {
        let a: IpAddr = if v6 { "2001:db8::7" } else { "203.0.113.7" }
            .parse()
            .expect("literal");
        Ok(vec![a])
    };
    let stun = |_: IpAddr| Some("198.51.100.9".parse().expect("literal"));
    if let Ok(adv) = compute_advertised(&cfg, &locals(), &resolve, &stun, 8443, 8444) {
        if adv.host_port_override.is_none() {
            for c in &adv.candidates {
                let want = match c.protocol {
                    probe_proto::rtcd::Protocol::Udp => 8443,
                    probe_proto::rtcd::Protocol::Tcp => 8444,
                };
                assert_eq!(c.port, want, "{c:?}");
            }
        }
    }
});
