//! Command line. Every serve option also reads an environment variable, for systemd units.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "probe-server",
    version,
    about = "Answers probe-client on RTCD's port: STUN, echo, ICE checks."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, env = "PROBE_SERVER_LOG", default_value = "info", value_parser = probe_shell::cli::parse_log_level)]
    pub log: String,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the troubleshooting guide's host-side checks on RTCD's host (RTCD running).
    Doctor(crate::doctor::DoctorArgs),
    /// Pack what Mattermost support asks for into one .tar.gz, secrets redacted.
    Bundle(crate::bundle::BundleArgs),
    /// Show the results clients uploaded, per site (or one site's runs).
    Results(crate::results::ResultsArgs),
    /// Test RTCD's own port while RTCD runs: tap it with raw sockets (never binding it) and answer live probes.
    #[cfg(target_os = "linux")]
    Live(crate::live::LiveArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// UDP and TCP address to listen on; RTCD's own port by default, so what passes the probe passes media.
    #[arg(long, env = "PROBE_SERVER_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Where the QUIC certificate (and so the pin) is kept across restarts.
    #[arg(long, env = "PROBE_SERVER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Sessions at once, in total.
    #[arg(long, env = "PROBE_SERVER_MAX_SESSIONS", default_value_t = 256)]
    pub max_sessions: usize,
    /// Sessions at once from one source address.
    #[arg(long, env = "PROBE_SERVER_MAX_SESSIONS_PER_IP", default_value_t = 8)]
    pub max_sessions_per_ip: usize,
    /// Longest echo phase a client may ask for, in seconds.
    #[arg(long, env = "PROBE_SERVER_MAX_DURATION", default_value_t = 120)]
    pub max_duration: u32,
    /// Shortest packet interval a client may ask for, in milliseconds.
    #[arg(long, env = "PROBE_SERVER_MIN_INTERVAL", default_value_t = 1.0)]
    pub min_interval: f64,
    /// Largest echo packet, in bytes.
    #[arg(long, env = "PROBE_SERVER_MAX_PACKET", default_value_t = 1200)]
    pub max_packet: usize,
    /// A session with no traffic for this many seconds is freed.
    #[arg(long, env = "PROBE_SERVER_IDLE_TIMEOUT", default_value_t = 15)]
    pub idle_timeout: u64,
    /// Reply packets per second for the whole server, so the probe never loads RTCD's host.
    #[arg(long, env = "PROBE_SERVER_MAX_REPLY_PPS", default_value_t = 50_000)]
    pub max_reply_pps: u32,
    /// Unauthenticated UDP packets per second from one address (STUN, QUIC before Retry); TCP
    /// connects have their own limit, 10 per second (burst 100: an office behind one NAT
    /// opening the test page at once), and Retry-validated QUIC handshakes 5 (burst 20).
    #[arg(long, env = "PROBE_SERVER_UNAUTH_PPS", default_value_t = 50)]
    pub unauth_pps: u32,
    /// Source addresses (IPv6: /64s) the per-source limiters track at once; when full, a
    /// newcomer replaces a random entry.
    #[arg(long, env = "PROBE_SERVER_TRACKED_SOURCES", default_value_t = 65_536)]
    pub tracked_sources: usize,
    /// TCP connections at once.
    #[arg(long, env = "PROBE_SERVER_MAX_TCP_CONNECTIONS", default_value_t = 512)]
    pub max_tcp_connections: usize,
    /// TCP connections at once from one source address (IPv6: one /64); an office behind one
    /// NAT loading the test page together opens two or three each.
    #[arg(
        long,
        env = "PROBE_SERVER_MAX_TCP_CONNECTIONS_PER_IP",
        default_value_t = 32
    )]
    pub max_tcp_connections_per_ip: usize,
    /// A TCP connection that completes no frame for this many seconds is closed (RTCD uses 30).
    #[arg(long, env = "PROBE_SERVER_TCP_IDLE_TIMEOUT", default_value_t = 30)]
    pub tcp_idle_timeout: u64,
    /// Access token: clients must prove they hold it (--token on probe-client); nothing else gets a reply.
    #[arg(
        long,
        env = "PROBE_SERVER_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the access token from this file (first line), keeping it out of the process list.
    #[arg(long, env = "PROBE_SERVER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Do not serve the browser test page (HTTP on the probe's TCP port and its WebRTC sessions).
    #[arg(
        long,
        env = "PROBE_SERVER_NO_WEB",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_web: bool,
    /// Also serve the browser test page on this TCP address (HTTP only), e.g. 0.0.0.0:8080; its
    /// WebRTC sessions still use the probe's own UDP and TCP port.
    #[arg(
        long,
        env = "PROBE_SERVER_WEB",
        value_name = "ADDR",
        conflicts_with = "no_web"
    )]
    pub web: Option<SocketAddr>,
    /// Browser test page sessions (WebRTC) at once, in total; a page run opens two or three.
    #[arg(long, env = "PROBE_SERVER_WEB_MAX_SESSIONS", default_value_t = 32)]
    pub web_max_sessions: usize,
    /// Browser test page sessions at once from one source address.
    #[arg(
        long,
        env = "PROBE_SERVER_WEB_MAX_SESSIONS_PER_IP",
        default_value_t = 6
    )]
    pub web_max_sessions_per_ip: usize,
    /// RTCD's TOML configuration, to advertise ICE candidates exactly as RTCD would (RTCD_RTC_* env applies too).
    #[arg(long, env = "PROBE_SERVER_RTCD_CONFIG")]
    pub rtcd_config: Option<PathBuf>,
    /// Installations without RTCD: the Calls plugin's settings (--calls-config, --mattermost).
    #[command(flatten)]
    pub calls: crate::calls::CallsSource,
    /// Same as RTCD's rtc.ice_host_override (wins over the file and RTCD_RTC_ICEHOSTOVERRIDE).
    #[arg(long, env = "PROBE_SERVER_ICE_HOST_OVERRIDE")]
    pub ice_host_override: Option<String>,
    /// Same as RTCD's rtc.ice_host_port_override: a port, or localIP/port,… pairs.
    #[arg(long, env = "PROBE_SERVER_ICE_HOST_PORT_OVERRIDE")]
    pub ice_host_port_override: Option<String>,
    /// With a hostname ice_host_override: re-resolve it this often, in seconds (RTCD resolves it on every join).
    #[arg(long, env = "PROBE_SERVER_RESOLVE_INTERVAL", default_value_t = 30)]
    pub resolve_interval: u64,
    /// Same as RTCD's rtc.ice_servers, as the JSON of RTCD_RTC_ICESERVERS.
    #[arg(long, env = "PROBE_SERVER_ICE_SERVERS")]
    pub ice_servers: Option<String>,
    /// The RTCD version whose ICE rules to follow, e.g. 1.2.4: rtcd 1.2.0–1.2.4 run pion/ice 4.0,
    /// 1.2.5 and newer pion/ice 4.2, which rewrite EXTERNAL/LOCAL overrides differently (default: 4.2).
    #[arg(
        long = "rtcd-version",
        env = "PROBE_RTCD_VERSION",
        value_name = "VERSION",
        value_parser = parse_rtcd_version
    )]
    pub rtcd_version: Option<probe_proto::rtcd::PionRules>,
    /// SQLite file that keeps the reports clients upload (default: results.sqlite in the state directory).
    #[arg(long, env = "PROBE_SERVER_STORE")]
    pub store: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9464.
    #[arg(long, env = "PROBE_SERVER_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Sites with their own metrics label; the least recently seen gives its label up to a new one.
    #[arg(long, env = "PROBE_SERVER_METRICS_MAX_SITES", default_value_t = 50)]
    pub metrics_max_sites: usize,
    /// Uploads (sessions) a site needs before it gets its own metrics label (without --sites);
    /// until then it is counted as site="other".
    #[arg(long, env = "PROBE_SERVER_METRICS_LABEL_AFTER", default_value_t = crate::metrics::DEFAULT_LABEL_AFTER)]
    pub metrics_label_after: u32,
    /// Keep uploaded runs this long (s, m, h, d or w); older ones are deleted.
    #[arg(long, env = "PROBE_SERVER_RETENTION", default_value = "30d", value_parser = crate::results::parse_since)]
    pub retention: std::time::Duration,
    /// Largest result store, in MiB; past it the oldest runs are deleted first.
    #[arg(long, env = "PROBE_SERVER_MAX_STORE_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_store_mb: u64,
    /// Only these sites (comma-separated) may upload results; they get their metrics labels at once.
    #[arg(long, env = "PROBE_SERVER_SITES", value_name = "SITE,…", value_parser = parse_sites)]
    pub sites: Option<String>,
    /// A site whose runs are kept only from clients holding this token (probe-client --site-token);
    /// repeatable; such a site may upload whatever --sites says. Token: 16+ random characters.
    #[arg(long, value_name = "NAME=TOKEN", value_parser = crate::results::parse_site_token)]
    pub site_token: Vec<(String, String)>,
    /// Read site tokens from this file, one NAME=TOKEN a line (# comments), keeping them out of the process list.
    #[arg(long, env = "PROBE_SERVER_SITE_TOKEN_FILE")]
    pub site_token_file: Option<PathBuf>,
}

/// `--rtcd-version`: the pion rules that RTCD version runs.
fn parse_rtcd_version(v: &str) -> Result<probe_proto::rtcd::PionRules, String> {
    probe_proto::rtcd::PionRules::for_rtcd_version(v)
}

/// `--sites`: at least one name, or every upload would be refused.
fn parse_sites(s: &str) -> Result<String, String> {
    if s.split(',').all(|n| n.trim().is_empty()) {
        return Err("it names no site: list the sites, comma-separated, or leave --sites out to keep every site's runs".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::rtcd::PionRules;

    #[test]
    fn rtcd_version_chooses_the_rules() {
        let parse = |v: &[&str]| {
            let mut argv = vec!["probe-server"];
            argv.extend_from_slice(v);
            Cli::try_parse_from(argv)
        };
        let rules = |v: &[&str]| parse(v).unwrap().serve.rtcd_version;
        assert_eq!(rules(&["--rtcd-version", "1.2.4"]), Some(PionRules::V4_0));
        assert_eq!(rules(&["--rtcd-version", "v1.2.6"]), Some(PionRules::V4_2));
        assert_eq!(rules(&[]), None);
        assert!(parse(&["--rtcd-version", "latest"]).is_err());
    }

    #[test]
    fn the_test_page_is_on_unless_turned_off() {
        let parse = |v: &[&str]| {
            let mut argv = vec!["probe-server"];
            argv.extend_from_slice(v);
            Cli::try_parse_from(argv).map(|c| c.serve)
        };
        let d = parse(&[]).unwrap();
        assert!(!d.no_web);
        assert_eq!(d.web, None);
        assert!(parse(&["--no-web"]).unwrap().no_web);
        let w = parse(&["--web", "127.0.0.1:8080"]).unwrap();
        assert_eq!(w.web, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(parse(&["--no-web", "--web", "127.0.0.1:8080"]).is_err());
        assert!(parse(&["--web", "8080"]).is_err());
    }

    #[test]
    fn store_limits_have_safe_defaults_and_flags() {
        let parse = |v: &[&str]| {
            let mut argv = vec!["probe-server"];
            argv.extend_from_slice(v);
            Cli::try_parse_from(argv).map(|c| c.serve)
        };
        let d = parse(&[]).unwrap();
        assert_eq!(d.retention, std::time::Duration::from_secs(30 * 86_400));
        assert_eq!(d.max_store_mb, 512);
        assert_eq!(d.sites, None);
        let s = parse(&[
            "--retention",
            "12h",
            "--max-store-mb",
            "8",
            "--sites",
            "a,b",
        ])
        .unwrap();
        assert_eq!(s.retention, std::time::Duration::from_secs(12 * 3600));
        assert_eq!(s.max_store_mb, 8);
        assert_eq!(s.sites.as_deref(), Some("a,b"));
        assert!(parse(&["--max-store-mb", "0"]).is_err());
        assert!(parse(&["--retention", "forever"]).is_err());
        // A list that names no site would refuse every upload.
        for empty in ["", " ", ",", " , "] {
            assert!(parse(&["--sites", empty]).is_err(), "{empty:?}");
        }
    }
}
