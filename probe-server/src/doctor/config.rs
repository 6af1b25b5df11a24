//! RTCD's configuration as RTCD would read it (file, then `RTCD_*` environment), and the API
//! URL derived from it.

use probe_proto::http::Url;
use probe_proto::rtcd::{ConfigError, RtcdConfig};
use std::time::{Duration, Instant};

use super::facts::CallsApiFacts;
use super::Inputs;
use crate::rtcd_env::{self, RtcdEnv};
use probe_proto::calls::{CallsSettings, Deployment};

/// How long Mattermost's API may take for the plugin's status and licence (its configuration
/// comes first, within its own 10 s: without it there is nothing to check).
const MM_API_DEADLINE: Duration = Duration::from_millis(2500);

/// How long finding RTCD's environment may take (a /proc scan, `systemctl show`): part of the
/// doctor's `--sample` + 5 s.
const ENV_DEADLINE: Duration = Duration::from_millis(1200);

pub struct Loaded {
    pub cfg: RtcdConfig,
    /// For the report: the path, or that RTCD's defaults were used.
    pub source: String,
    /// For fix texts: where the admin edits the setting.
    pub where_: String,
    /// The file as read, for the (redacted) support bundle.
    pub text: Option<String>,
    pub api_url: Url,
    /// How `api_url` was chosen, for messages.
    pub api_source: String,
    /// An `RTCD_*` variable RTCD would refuse (reported as a finding, not a failure to run).
    pub env_error: Option<ConfigError>,
    /// RTCD's `RTCD_*` variables and where they came from (its process, its unit, or ours).
    pub env: RtcdEnv,
    /// When the run started: the doctor's deadlines count from here.
    pub started: Instant,
    /// RTCD, or the Calls plugin's integrated RTC server (`--calls-config`).
    pub deployment: Deployment,
    /// `--mattermost`: what Mattermost's API said about the plugin.
    pub calls_api: Option<CallsApiFacts>,
}

/// A log the user named must be readable: a typo would otherwise only show as a skipped check
/// among thirty, and the run would look complete.
fn check_logs(inputs: &Inputs) -> Result<(), String> {
    let named = [
        (
            inputs.rtcd_log.as_ref(),
            "--rtcd-log",
            "RTCD's log (e.g. `journalctl -u rtcd > rtcd.log`)",
        ),
        (
            inputs.mattermost_log.as_ref(),
            "--mattermost-log",
            "Mattermost's mattermost.log",
        ),
    ];
    for (path, flag, what) in named {
        let Some(path) = path else { continue };
        if let Err(e) = std::fs::File::open(path) {
            return Err(format!(
                "{flag}: cannot read {}: {e}; give the path of {what}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Reads the config and environment; `Err` is the one sentence for stderr (exit 2).
pub fn load(inputs: &Inputs) -> Result<Loaded, String> {
    let started = Instant::now();
    check_logs(inputs)?;
    if inputs.calls_config.is_some() || inputs.mattermost.is_some() {
        return load_calls(inputs, started);
    }
    if inputs.mattermost_log.is_some() {
        return Err("--mattermost-log is for a Mattermost host without RTCD: add --calls-config PATH or --mattermost URL, or give RTCD's log with --rtcd-log".into());
    }
    let (mut cfg, source, where_, text) = read_rtcd_file(inputs)?;
    let given_api = match &inputs.rtcd_api {
        Some(u) => Some(Url::parse(u).map_err(|e| {
            format!("--rtcd-api: {e}; give RTCD's API URL, e.g. http://127.0.0.1:8045")
        })?),
        None => None,
    };
    // RTCD's ports as its file says (an RTCD_* port override is in the environment we are
    // looking for): who holds them is RTCD.
    let port = |p: i64| u16::try_from(p).ok();
    let api_port = given_api.as_ref().map(|u| u.port).or_else(|| {
        api_url_from(&cfg.api.listen_address, cfg.api.tls_enable)
            .ok()
            .map(|u| u.port)
    });
    let env = rtcd_env::discover(
        &rtcd_env::Hints {
            udp_ports: port(cfg.ice_port_udp).into_iter().collect(),
            tcp_ports: port(cfg.ice_port_tcp).into_iter().chain(api_port).collect(),
            unit: &inputs.rtcd_unit,
        },
        started + ENV_DEADLINE,
    );
    let env_error = cfg.apply_env(&|k| env.get(k)).err();
    // Server-side TURN counts only where it allocates from this host (relay.rs).
    crate::relay::check_into(&mut cfg);
    let source = if cfg.env_applied.is_empty() {
        source
    } else {
        format!(
            "{source} + {} (from {})",
            cfg.env_applied.join(", "),
            env.describe()
        )
    };
    let (api_url, api_source) = match given_api {
        Some(u) => (u, "--rtcd-api".to_string()),
        None => (
            api_url_from(&cfg.api.listen_address, cfg.api.tls_enable).map_err(|e| {
                format!("cannot derive RTCD's API URL from http.listen_address {:?} ({e}); pass --rtcd-api URL", cfg.api.listen_address)
            })?,
            format!("from http.listen_address {:?}", cfg.api.listen_address),
        ),
    };
    Ok(Loaded {
        cfg,
        source,
        where_,
        text,
        api_url,
        api_source,
        env_error,
        env,
        started,
        deployment: Deployment::Rtcd,
        calls_api: None,
    })
}

/// RTCD's TOML as given (`--rtcd-config`), else RTCD's defaults: the config, how the report
/// names its source, where the fix goes, and the text (for the bundle).
fn read_rtcd_file(inputs: &Inputs) -> Result<(RtcdConfig, String, String, Option<String>), String> {
    Ok(match &inputs.rtcd_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                format!("cannot read RTCD's config {}: {e}; give the path of the TOML file RTCD runs with (its -config flag)", p.display())
            })?;
            let cfg = RtcdConfig::from_toml_str(&text).map_err(|e| {
                format!("RTCD's config {} does not parse ({}); fix it or point --rtcd-config at the file RTCD runs with", p.display(), e.rtcd_message)
            })?;
            let shown = p.display().to_string();
            (cfg, shown.clone(), shown, Some(text))
        }
        None => (
            RtcdConfig::default(),
            "RTCD's defaults (no --rtcd-config given)".to_string(),
            "RTCD's config file".to_string(),
            None,
        ),
    })
}

/// `--calls-config`: the Calls plugin's settings as the plugin reads them (probe_proto::calls),
/// `MM_CALLS_*` from the plugin's or Mattermost's process, mapped to the RTCD configuration its
/// integrated server runs with. Settings the plugin refuses stop the doctor (exit 2), as a
/// config RTCD cannot parse does.
fn load_calls(inputs: &Inputs, started: Instant) -> Result<Loaded, String> {
    let (text, shown, api) = crate::calls::read_settings(
        inputs.calls_config.as_deref(),
        inputs.mattermost.as_deref(),
        inputs.mm_token.as_deref(),
    )?;
    let mut s =
        CallsSettings::from_mattermost_config(&text).map_err(|e| format!("{shown}: {e}"))?;
    let port = |v: Option<i64>| v.and_then(|v| u16::try_from(v).ok());
    let env = rtcd_env::discover_for(
        &rtcd_env::MATTERMOST,
        &rtcd_env::Hints {
            udp_ports: port(s.udp_server_port).into_iter().collect(),
            tcp_ports: port(s.tcp_server_port).into_iter().collect(),
            unit: rtcd_env::MATTERMOST_UNIT,
        },
        started + ENV_DEADLINE,
    );
    s.apply_env(&|k| env.get(k));
    s.validate().map_err(|e| format!("{shown}: {e}"))?;
    let num_cpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cfg = s.to_rtcd(num_cpu).map_err(|e| format!("{shown}: {e}"))?;
    // Server-side TURN counts only where it allocates from this host (relay.rs).
    crate::relay::check_into(&mut cfg);
    let (rtcd_url, rtcd_line) =
        crate::calls::rtcd_decision(s.rtcd_url_or_none(), api.as_ref(), &text);
    let calls_api = api.map(|api| CallsApiFacts {
        base: api.url.base(),
        status: api.calls_status(Instant::now() + MM_API_DEADLINE),
        rtcd_line,
    });
    let source = if s.env_applied.is_empty() {
        format!("the Calls plugin's settings in {shown}")
    } else {
        format!(
            "the Calls plugin's settings in {shown} + {} (from {})",
            s.env_applied.join(", "),
            env.describe()
        )
    };
    Ok(Loaded {
        cfg,
        source,
        where_: "System Console › Plugins › Calls".into(),
        // config.json holds Mattermost's secrets: it never goes into a bundle.
        text: None,
        // The integrated server has no API of its own; never asked (see rules::api).
        api_url: Url::parse("http://127.0.0.1:8045").map_err(|e| e.to_string())?,
        api_source: "none: the Calls plugin's integrated RTC server has no API".into(),
        env_error: None,
        env,
        started,
        deployment: Deployment::CallsPlugin { rtcd_url },
        calls_api,
    })
}

/// `:8045` → `http://127.0.0.1:8045`; a wildcard host is reached on loopback; TLS → https.
pub fn api_url_from(listen: &str, tls: bool) -> Result<Url, String> {
    let (host, port) = listen.rsplit_once(':').ok_or("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" => "[::1]",
        h if h.contains(':') => return Url::parse(&format!("{}://[{h}]:{port}", scheme(tls))),
        h => h,
    };
    Url::parse(&format!("{}://{host}:{port}", scheme(tls)))
}

fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_from_listen_addresses() {
        let u = |l: &str, tls: bool| api_url_from(l, tls).map(|u| u.base());
        assert_eq!(u(":8045", false).unwrap(), "http://127.0.0.1:8045");
        assert_eq!(u("0.0.0.0:9000", true).unwrap(), "https://127.0.0.1:9000");
        assert_eq!(u("[::]:8045", false).unwrap(), "http://[::1]:8045");
        assert_eq!(
            u("203.0.113.2:8045", false).unwrap(),
            "http://203.0.113.2:8045"
        );
        assert_eq!(
            u("[2001:db8::2]:8045", false).unwrap(),
            "http://[2001:db8::2]:8045"
        );
        assert!(u("8045", false).is_err());
    }
}
