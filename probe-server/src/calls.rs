//! `--calls-config PATH` and `--mattermost URL --mm-token TOKEN`: installations without RTCD.
//! The Calls plugin then runs rtcd's media server inside its own process on the Mattermost host,
//! configured from its System Console settings; this reads them as the plugin does
//! (`probe_proto::calls`), with the plugin's `MM_CALLS_*` variables taken from the running
//! plugin or Mattermost process (`rtcd_env::MATTERMOST`), and hands the RTCD path the
//! `RtcdConfig` the plugin would build, so the candidates and verdicts are computed unchanged.

use std::time::{Duration, Instant};

use probe_proto::calls::{CallsSettings, Deployment};
use probe_proto::http::Url;
use probe_proto::rtcd::RtcdConfig;

use crate::cli::ServeArgs;
use crate::rtcd_env::{self, RtcdEnv};

/// The plugin's settings as an RTCD configuration, whose words to use, and the start-log lines
/// (`(warning, text)`) saying where the settings came from.
pub struct Loaded {
    pub cfg: RtcdConfig,
    pub deployment: Deployment,
    pub lines: Vec<(bool, String)>,
}

/// Where the Calls plugin's settings come from: one set of flags for `probe-server` and
/// `probe-server live` (the doctor has its own, without environment variables, as for RTCD).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CallsSource {
    /// Mattermost's config.json, for installations without RTCD: advertise what the Calls plugin's
    /// integrated RTC server would, from its settings (PluginSettings.Plugins["com.mattermost.calls"]; MM_CALLS_* env applies too).
    #[arg(long, env = "PROBE_SERVER_CALLS_CONFIG", value_name = "PATH", conflicts_with_all = ["rtcd_config", "mattermost"])]
    pub calls_config: Option<std::path::PathBuf>,
    /// Mattermost's site URL: like --calls-config, with the settings read from GET /api/v4/config (needs --mm-token).
    #[arg(
        long,
        env = "PROBE_SERVER_MATTERMOST",
        value_name = "URL",
        conflicts_with = "rtcd_config",
        requires = "mm_token"
    )]
    pub mattermost: Option<String>,
    /// A system admin's personal access token for --mattermost (prefer the environment variable: it stays out of the process list).
    #[arg(
        long,
        env = "PROBE_SERVER_MM_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub mm_token: Option<String>,
}

impl CallsSource {
    /// True when the probe stands in for the Calls plugin's integrated server.
    pub fn wanted(&self) -> bool {
        self.calls_config.is_some() || self.mattermost.is_some()
    }
}

/// True when the probe stands in for the Calls plugin's integrated server.
pub fn wanted(args: &ServeArgs) -> bool {
    args.calls.wanted()
}

/// Reads the settings (file or API), the `MM_CALLS_*` environment, validates as the plugin does
/// and maps to RTCD's configuration. `Err` is one sentence for the start's failure.
pub fn load(args: &ServeArgs) -> Result<Loaded, String> {
    let (text, source, api) = read_settings(
        args.calls.calls_config.as_deref(),
        args.calls.mattermost.as_deref(),
        args.calls.mm_token.as_deref(),
    )?;
    let mut s =
        CallsSettings::from_mattermost_config(&text).map_err(|e| format!("{source}: {e}"))?;
    let env = discover_env(&s);
    s.apply_env(&|k| env.get(k));
    let mut lines = vec![(false, env_line(&env, &source, &s))];
    if env.get("MM_CALLS_DISABLE").as_deref() == Some("true") {
        // activate.go:60-63: the plugin refuses to activate.
        lines.push((
            true,
            "MM_CALLS_DISABLE=true: the Calls plugin does not activate at all".into(),
        ));
    }
    s.validate().map_err(|e| format!("{source}: {e}"))?;
    let num_cpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cfg = s.to_rtcd(num_cpu).map_err(|e| format!("{source}: {e}"))?;
    apply_flags(args, &mut cfg)?;
    let (rtcd_url, line) = rtcd_decision(s.rtcd_url_or_none(), api.as_ref(), &text);
    lines.extend(line.map(|l| (true, l)));
    // The welcome must stay smaller than the client's padded hello (no amplification): a URL
    // of any sane length fits; a longer one is cut for the client's sentence only.
    let rtcd_url = rtcd_url.map(for_wire);
    Ok(Loaded {
        cfg,
        deployment: Deployment::CallsPlugin { rtcd_url },
        lines,
    })
}

/// The same probe flags `--rtcd-config` takes, applied over the plugin's settings.
fn apply_flags(args: &ServeArgs, cfg: &mut RtcdConfig) -> Result<(), String> {
    if let Some(v) = &args.ice_host_override {
        cfg.ice_host_override = v.clone();
    }
    if let Some(v) = &args.ice_host_port_override {
        cfg.ice_host_port_override = v.clone();
    }
    if let Some(v) = &args.ice_servers {
        cfg.ice_servers = probe_proto::rtcd::decode_ice_servers_json(v)
            .map_err(|e| format!("--ice-servers is not RTCD's JSON list of ICE servers: {e}"))?;
    }
    Ok(())
}

/// The plugin's `MM_CALLS_*` variables: its process holds the RTC ports (Linux `/proc`).
fn discover_env(s: &CallsSettings) -> RtcdEnv {
    let port = |p: Option<i64>| p.and_then(|p| u16::try_from(p).ok());
    rtcd_env::discover_for(
        &rtcd_env::MATTERMOST,
        &rtcd_env::Hints {
            udp_ports: port(s.udp_server_port).into_iter().collect(),
            tcp_ports: port(s.tcp_server_port).into_iter().collect(),
            unit: rtcd_env::MATTERMOST_UNIT,
        },
        Instant::now() + Duration::from_secs(3),
    )
}

fn env_line(env: &RtcdEnv, source: &str, s: &CallsSettings) -> String {
    let mut line = format!("Calls plugin settings from {source}; {}", env.summary());
    if !s.env_applied.is_empty() {
        line.push_str(&format!("; applied: {}", s.env_applied.join(", ")));
    }
    if !s.env_ignored.is_empty() {
        line.push_str(&format!(
            "; the plugin ignores (cannot parse): {}",
            s.env_ignored.join(", ")
        ));
    }
    if !s.hidden.is_empty() {
        line.push_str(&format!(
            "; hidden by the API (secret settings, assumed as the plugin's defaults): {} — give --calls-config \
             for their real values",
            s.hidden.join(", ")
        ));
    }
    line
}

/// Mattermost's API with an admin's token (`--mattermost URL --mm-token TOKEN`).
pub struct Api {
    pub url: Url,
    token: String,
}

/// Mattermost's configuration: the file, or `GET /api/v4/config` with an admin's token; with
/// its source for messages, and the API when that is where it came from.
pub fn read_settings(
    calls_config: Option<&std::path::Path>,
    mattermost: Option<&str>,
    token: Option<&str>,
) -> Result<(String, String, Option<Api>), String> {
    if let Some(path) = calls_config {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read Mattermost's configuration {}: {e}; give the config.json Mattermost runs with \
                 (e.g. /opt/mattermost/config/config.json) and make sure this user may read it",
                path.display()
            )
        })?;
        return Ok((text, path.display().to_string(), None));
    }
    let Some(base) = mattermost else {
        return Err("give --calls-config PATH or --mattermost URL".into());
    };
    let api = Api {
        url: Url::parse(base).map_err(|e| format!("--mattermost: {e}"))?,
        token: token.unwrap_or_default().to_string(),
    };
    let text = api.config(Instant::now() + Duration::from_secs(10))?;
    Ok((text, format!("{base}/api/v4/config"), Some(api)))
}

/// Whether calls go to `RTCDServiceURL` (the URL for the welcome) and the start line saying so.
/// With the API the licence decides as the plugin does (plugin server/activate.go:155:
/// `cfg.getRTCDURL() != "" && p.licenseChecker.RTCDAllowed()`); from a file it cannot be
/// known, and the client's sentence keeps the condition.
pub fn rtcd_decision(
    url: Option<&str>,
    api: Option<&Api>,
    config_text: &str,
) -> (Option<String>, Option<String>) {
    let Some(url) = url else { return (None, None) };
    let in_charge = probe_proto::calls::wording::rtcd_in_charge(url).summary;
    let Some(api) = api else {
        return (Some(url.to_string()), Some(in_charge));
    };
    match api.licence(config_text, Instant::now() + Duration::from_secs(3)) {
        Ok((Some(true), why)) => (
            Some(url.to_string()),
            Some(format!("calls go to RTCD at {url}, not to this integrated RTC server: {why}, so the plugin uses its RTCD service URL")),
        ),
        Ok((Some(false), why)) => (
            None,
            Some(format!("the Calls plugin's RTCD service URL {url} is ignored: {why} (RTCD needs Enterprise), so the plugin runs its integrated RTC server, which this probe stands in for")),
        ),
        Ok((None, why)) => (Some(url.to_string()), Some(format!("{in_charge} ({why})"))),
        Err(e) => (
            Some(url.to_string()),
            Some(format!("{in_charge} (the licence could not be read: {e})")),
        ),
    }
}

impl Api {
    /// `GET /api/v4/config` (Mattermost API reference, "Get configuration": "Must have
    /// `manage_system` permission"; 401 without a valid session, 403 without the permission).
    pub fn config(&self, deadline: Instant) -> Result<String, String> {
        let path = "/api/v4/config";
        match self.get(path, deadline)? {
            (200, body) => Ok(body),
            (401, _) => Err(format!(
                "Mattermost refused the token (401 on GET {path}); give a valid personal access token of a system admin with --mm-token"
            )),
            (403, _) => Err(format!(
                "the token's user may not read Mattermost's configuration (403 on GET {path}); give a system admin's token (manage_system), or use --calls-config with config.json"
            )),
            (s, _) => Err(format!("Mattermost answered {s} to GET {path}; check --mattermost (Mattermost's site URL)")),
        }
    }

    /// `GET /api/v4/license/client?format=old` (Mattermost API reference, "Get client license":
    /// a subset of the licence, string values; `IsLicensed` and `SkuShortName` among them) and
    /// the plugin's decision over it ([`probe_proto::calls::mattermost::rtcd_allowed`]).
    pub fn licence(
        &self,
        config_text: &str,
        deadline: Instant,
    ) -> Result<(Option<bool>, String), String> {
        let path = "/api/v4/license/client?format=old";
        let body = match self.get(path, deadline)? {
            (200, body) => body,
            (s, _) => return Err(format!("Mattermost answered {s} to GET {path}")),
        };
        let lic: std::collections::BTreeMap<String, String> = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path} did not return the client licence: {e}"))?;
        Ok(probe_proto::calls::mattermost::rtcd_allowed(
            &lic,
            config_text,
        ))
    }

    /// `GET /api/v4/plugins/statuses` (Mattermost API reference, "Get plugins status"): the
    /// Calls plugin's entries.
    pub fn calls_status(
        &self,
        deadline: Instant,
    ) -> Result<Vec<probe_proto::calls::mattermost::PluginStatus>, String> {
        let path = "/api/v4/plugins/statuses";
        match self.get(path, deadline)? {
            (200, body) => probe_proto::calls::mattermost::calls_statuses(&body)
                .map_err(|e| format!("GET {path}: {e}")),
            (s, _) => Err(format!("Mattermost answered {s} to GET {path}")),
        }
    }

    /// One authenticated GET: the status and body.
    fn get(&self, path_and_query: &str, deadline: Instant) -> Result<(u16, String), String> {
        use probe_shell::http;
        let url = &self.url;
        let tls = if url.https {
            Some(http::native_roots_config()?)
        } else {
            None
        };
        let path = format!("{}{path_and_query}", url.path);
        let auth = format!("Bearer {}", self.token);
        let req = probe_proto::http::request(
            "GET",
            &path,
            &url.authority(),
            &[
                ("User-Agent", USER_AGENT),
                ("Authorization", &auth),
                ("Connection", "close"),
            ],
            b"",
        )
        .map_err(|e| e.to_string())?;
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(url.host.as_str(), url.port))
            .map_err(|e| format!("cannot resolve {}: {e}; check --mattermost", url.host))?;
        let mut last = format!("{} has no address", url.host);
        for a in addrs {
            let mut opened = match http::open(url, a, tls.as_ref(), http::Dial::default(), deadline)
            {
                Ok(o) => o,
                Err(e) => {
                    last = format!("cannot connect to Mattermost at {a}: {e:?}");
                    continue;
                }
            };
            let (r, _) = http::exchange(opened.stream.as_mut(), &req, false)
                .map_err(|e| format!("GET {path} from Mattermost at {a} failed: {e:?}"))?;
            return Ok((r.head.status, r.text()));
        }
        Err(last)
    }
}

/// The longest RTCD URL the welcome carries (characters).
const MAX_URL_ON_WIRE: usize = 200;

const USER_AGENT: &str = concat!("probe-server/", env!("CARGO_PKG_VERSION"));

/// The URL cut to [`MAX_URL_ON_WIRE`] characters.
fn for_wire(u: String) -> String {
    match u.char_indices().nth(MAX_URL_ON_WIRE) {
        Some((i, _)) => format!("{}…", &u[..i]),
        None => u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_urls_are_cut_for_the_welcome() {
        assert_eq!(for_wire("http://rtcd:8045".into()), "http://rtcd:8045");
        let long = format!("http://{}.example.com", "é".repeat(300));
        let cut = for_wire(long);
        assert_eq!(cut.chars().count(), MAX_URL_ON_WIRE + 1);
        assert!(cut.ends_with('…'));
    }
}
