//! Whose environment decides the proxy: the Calls plugin runs inside the Mattermost server
//! (its plugin processes inherit the server's environment), and Go reads HTTP_PROXY,
//! HTTPS_PROXY and NO_PROXY from there (rtcd service/client.go:116, gorilla/websocket v1.5.3
//! client.go:141-144). An admin's shell, or `sudo`, usually has other variables. On Linux, when a
//! process named `mattermost` runs in this network namespace, its `/proc/PID/environ` is read;
//! elsewhere (or when there is none) this tool's own environment is used, and the report says
//! which.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The variables Go's `ProxyFromEnvironment` reads.
pub const PROXY_VARS: [&str; 7] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

/// Where the proxy variables were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSource {
    /// "mattermost" (a running Mattermost server's environment) or "self".
    pub source: String,
    /// The Mattermost process whose environment was read.
    pub pid: Option<u32>,
    /// One sentence for the report.
    pub detail: String,
}

/// The proxy variables and where they came from.
pub struct ProxyVars {
    pub vars: HashMap<String, String>,
    pub source: EnvSource,
}

impl ProxyVars {
    pub fn get(&self, key: &str) -> Option<String> {
        self.vars.get(key).cloned()
    }
}

fn own() -> HashMap<String, String> {
    PROXY_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// `force_self`: `--proxy-env self`.
pub fn proxy_vars(force_self: bool) -> ProxyVars {
    if force_self {
        return ProxyVars {
            vars: own(),
            source: EnvSource {
                source: "self".into(),
                pid: None,
                detail: "this tool's own environment (--proxy-env self)".into(),
            },
        };
    }
    let (found, why) = mattermost();
    match found {
        Some((pid, vars)) => ProxyVars {
            vars,
            source: EnvSource {
                source: "mattermost".into(),
                pid: Some(pid),
                detail: format!(
                    "the environment of the running Mattermost server (pid {pid}, /proc/{pid}/environ)"
                ),
            },
        },
        None => ProxyVars {
            vars: own(),
            source: EnvSource {
                source: "self".into(),
                pid: None,
                detail: format!(
                    "this tool's own environment: {why}; run it with the Mattermost server's environment"
                ),
            },
        },
    }
}

/// Parses `/proc/PID/environ` (NUL-separated `KEY=VALUE`), keeping the proxy variables.
/// Pure, so its tests run everywhere; only Linux has `/proc` to feed it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn parse_environ(raw: &[u8]) -> HashMap<String, String> {
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            PROXY_VARS
                .contains(&k)
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// A Mattermost process and its proxy variables.
#[cfg(target_os = "linux")]
type Found = (u32, HashMap<String, String>);

/// The Mattermost server in this network namespace and its proxy variables, or why not.
#[cfg(target_os = "linux")]
fn mattermost() -> (Option<Found>, String) {
    let own_ns = std::fs::read_link("/proc/self/ns/net").ok();
    let mut pids: Vec<u32> = match std::fs::read_dir("/proc") {
        Ok(d) => d
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid: &u32| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == "mattermost")
            })
            .collect(),
        Err(e) => return (None, format!("/proc cannot be read ({e})")),
    };
    if pids.is_empty() {
        return (None, "no process named mattermost runs on this host".into());
    }
    pids.sort_unstable();
    let mut why = Vec::new();
    for pid in &pids {
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        if ns.is_none() || ns != own_ns {
            why.push(format!(
                "mattermost (pid {pid}) runs in another network namespace or cannot be inspected (a container? run this tool inside it)"
            ));
            continue;
        }
        match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(raw) => return (Some((*pid, parse_environ(&raw))), String::new()),
            Err(e) => why.push(format!(
                "/proc/{pid}/environ of mattermost cannot be read ({e}; run this tool as root or as Mattermost's user)"
            )),
        }
    }
    (None, why.join("; "))
}

#[cfg(not(target_os = "linux"))]
fn mattermost() -> (Option<(u32, HashMap<String, String>)>, String) {
    (
        None,
        "other processes' environments are read on Linux only".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_keeps_the_proxy_variables() {
        let raw = b"PATH=/usr/bin\0HTTP_PROXY=http://198.51.100.1:3128\0no_proxy=a,b=c\0MM_X=1\0\0";
        let m = parse_environ(raw);
        assert_eq!(m.len(), 2);
        assert_eq!(m["HTTP_PROXY"], "http://198.51.100.1:3128");
        assert_eq!(m["no_proxy"], "a,b=c");
    }
}
