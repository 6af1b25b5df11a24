//! `probe-server doctor`: the troubleshooting guide's host-side checks, run at once on RTCD's
//! host while RTCD runs, each with a deadline; the whole run ends within `--sample` + 5 s.

mod advertise;
mod api;
pub(crate) mod cmd;
pub mod config;
pub mod cpu;
pub mod facts;
mod gather;
pub mod logs;
mod nat;
mod nft;
pub(crate) mod procnet;
pub mod report;
mod rules;
mod snmp;
mod sysctl;

use std::path::PathBuf;

pub use config::Loaded;
use report::DoctorReport;

/// What RTCD to look at; shared by `doctor` and `bundle`.
#[derive(clap::Args, Debug, Clone)]
pub struct Inputs {
    /// RTCD's configuration file (TOML). RTCD_* variables of this environment apply over it,
    /// as they do for RTCD. Without it: RTCD's defaults.
    #[arg(long, value_name = "PATH")]
    pub rtcd_config: Option<PathBuf>,
    /// On a Mattermost host without RTCD: Mattermost's config.json, to check the Calls plugin's
    /// integrated RTC server instead (its settings, and MM_CALLS_* of the Mattermost process).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["rtcd_config", "rtcd_api"])]
    pub calls_config: Option<PathBuf>,
    /// RTCD's API. Default: from the config's [api] http.listen_address (":8045" →
    /// http://127.0.0.1:8045; https when TLS is on).
    #[arg(long, value_name = "URL")]
    pub rtcd_api: Option<String>,
    /// RTCD's log (JSON lines or journal text, e.g. `journalctl -u rtcd > rtcd.log`) to scan.
    /// With --calls-config/--mattermost: Mattermost's log, as --mattermost-log.
    #[arg(long, value_name = "PATH")]
    pub rtcd_log: Option<PathBuf>,
    /// On a Mattermost host without RTCD: Mattermost's log (mattermost.log, JSON lines), whose
    /// Calls plugin lines ("plugin_id":"com.mattermost.calls") get RTCD's log checks.
    #[arg(long, value_name = "PATH", conflicts_with = "rtcd_log")]
    pub mattermost_log: Option<PathBuf>,
    /// On a Mattermost host without RTCD: Mattermost's site URL, to read the Calls plugin's
    /// settings from GET /api/v4/config (needs --mm-token), with the plugin's status and the
    /// licence.
    #[arg(long, value_name = "URL", conflicts_with_all = ["rtcd_config", "rtcd_api", "calls_config"], requires = "mm_token")]
    pub mattermost: Option<String>,
    /// A system admin's personal access token for --mattermost (prefer the environment
    /// variable: it stays out of the process list).
    #[arg(
        long,
        env = "PROBE_SERVER_MM_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub mm_token: Option<String>,
    /// Seconds over which UDP drops and CPU are measured (0.5 to 60).
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = parse_sample)]
    pub sample: f64,
    /// The oldest RTCD the Calls plugin accepts (its min_rtcd_version).
    #[arg(long, value_name = "VERSION", default_value = api::DEFAULT_MIN_VERSION, value_parser = parse_min_version)]
    pub min_rtcd_version: String,
    /// RTCD's version (e.g. 1.2.6), which decides how its candidates are computed (pion/ice
    /// 4.0 rules before 1.2.5, 4.2 rules since). Default: RTCD's GET /version, else the
    /// current rules.
    #[arg(long, value_name = "VERSION", value_parser = parse_rtcd_version)]
    pub rtcd_version: Option<String>,
    /// The systemd unit RTCD runs as, for its environment (`systemctl show`) and journal when
    /// its process cannot be read.
    #[arg(long, value_name = "UNIT", default_value = crate::rtcd_env::DEFAULT_UNIT)]
    pub rtcd_unit: String,
    /// Another STUN server to ask from RTCD's ICE port's address (repeatable), e.g. a
    /// probe-server elsewhere (it answers STUN on its port): when it answers from another
    /// address than RTCD's STUN server, the two mappings show whether RTCD's NAT maps the port
    /// the same way for every peer.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_stun_server)]
    pub stun_check_server: Vec<String>,
    /// Do not send STUN requests from this host to learn how its NAT maps RTCD's ICE port
    /// (done only when RTCD has no ice_host_override and a stun: URL).
    #[arg(long)]
    pub no_nat_check: bool,
}

fn parse_stun_server(s: &str) -> Result<String, String> {
    nat::split_server(s).map(|_| s.to_string()).ok_or_else(|| {
        format!("`{s}` is not HOST:PORT (e.g. 198.51.100.7:8443, [2001:db8::7]:3478)")
    })
}

fn parse_rtcd_version(s: &str) -> Result<String, String> {
    probe_proto::rtcd::PionRules::for_rtcd_version(s).map(|_| s.to_string())
}

#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Print one JSON object (schema 1) instead of the human report.
    #[arg(long)]
    pub json: bool,
}

fn parse_sample(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if (0.5..=60.0).contains(&v) {
        Ok(v)
    } else {
        Err("the sample must last between 0.5 and 60 seconds".into())
    }
}

/// Parsed as the Calls plugin parses its `min_rtcd_version` (Masterminds semver v1.5.0,
/// plugin server/utils.go:133-136).
fn parse_min_version(s: &str) -> Result<String, String> {
    probe_proto::semver::Version::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("`{s}` is not a version like v0.17.0 ({e})"))
}

pub fn run(args: DoctorArgs) -> i32 {
    let loaded = match config::load(&args.inputs) {
        Ok(l) => l,
        Err(msg) => return crate::fail(msg),
    };
    let done = collect(&args.inputs, &loaded);
    if args.json {
        match serde_json::to_string_pretty(&done.report) {
            Ok(s) => probe_shell::outln!("{s}"),
            Err(e) => return crate::fail(format!("cannot encode the report: {e}")),
        }
    } else {
        probe_shell::out!("{}", report::render_text(&done.report));
    }
    done.report.exit_code()
}

/// A finished doctor run, with what the support bundle needs besides the report.
pub struct Done {
    pub report: DoctorReport,
    pub version_json: Option<String>,
    pub log: Option<logs::LogScan>,
}

/// Which pion/ice rules the candidates were computed with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesChoice {
    pub rules: probe_proto::rtcd::PionRules,
    /// `--rtcd-version`, `RTCD's /version` or `default`.
    pub from: &'static str,
    /// The version the choice was made from.
    pub version: Option<String>,
    /// Why a reported version was not used.
    pub note: Option<String>,
}

impl RulesChoice {
    pub fn text(&self) -> String {
        let mut t = format!("candidates computed with {}", self.rules.label());
        match (&self.version, self.from) {
            (Some(v), from) => t.push_str(&format!(", from {from} {v}")),
            (None, _) => {
                t.push_str(", the default (RTCD's version unknown; --rtcd-version sets it)")
            }
        }
        if let Some(n) = &self.note {
            t.push_str(&format!(" ({n})"));
        }
        t
    }
}

/// The flag wins, then RTCD's /version, then the default rules (pure, unit-tested).
pub fn choose_rules(flag: Option<&str>, reported: Option<&str>) -> RulesChoice {
    use probe_proto::rtcd::PionRules;
    if let Some(v) = flag {
        if let Ok(rules) = PionRules::for_rtcd_version(v) {
            return RulesChoice {
                rules,
                from: "--rtcd-version",
                version: Some(v.to_string()),
                note: None,
            };
        }
    }
    match reported {
        Some(v) => match PionRules::for_rtcd_version(v) {
            Ok(rules) => RulesChoice {
                rules,
                from: "RTCD's /version",
                version: Some(v.to_string()),
                note: None,
            },
            Err(_) => RulesChoice {
                rules: PionRules::default(),
                from: "default",
                version: None,
                note: Some(format!("RTCD's /version says {v:?}, not a release version")),
            },
        },
        None => RulesChoice {
            rules: PionRules::default(),
            from: "default",
            version: None,
            note: None,
        },
    }
}

/// The doctor's run: gather the host's facts (all the IO, `--sample` + 5 s at most), then
/// judge them (pure rules).
pub fn collect(inputs: &Inputs, loaded: &Loaded) -> Done {
    rules::judge(gather::gather(inputs, loaded))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod rules_tests {
    use super::*;
    use probe_proto::rtcd::PionRules;

    #[test]
    fn flag_then_version_then_default() {
        let c = choose_rules(Some("1.2.4"), Some("v1.2.6"));
        assert_eq!((c.rules, c.from), (PionRules::V4_0, "--rtcd-version"));
        assert!(c.text().contains("--rtcd-version 1.2.4"), "{}", c.text());
        let c = choose_rules(None, Some("v1.2.4"));
        assert_eq!((c.rules, c.from), (PionRules::V4_0, "RTCD's /version"));
        assert!(
            c.text().contains("v4.0") && c.text().contains("v1.2.4"),
            "{}",
            c.text()
        );
        let c = choose_rules(None, Some("v1.2.6"));
        assert_eq!((c.rules, c.from), (PionRules::V4_2, "RTCD's /version"));
        let c = choose_rules(None, None);
        assert_eq!((c.rules, c.from), (PionRules::default(), "default"));
        assert!(c.text().contains("version unknown"), "{}", c.text());
        // A development build's version is not a release: the default, and the report says why.
        let c = choose_rules(None, Some("dev-abc123"));
        assert_eq!((c.rules, c.from), (PionRules::default(), "default"));
        assert!(c.text().contains("\"dev-abc123\""), "{}", c.text());
    }
}
