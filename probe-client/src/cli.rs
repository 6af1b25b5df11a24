//! Command line of probe-client.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "probe-client",
    version,
    about = "Tests the network path from here to a Mattermost Calls RTCD server (run probe-server there first)."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// From the Mattermost host: check what the Calls plugin needs from RTCD's API (port 8045).
    RtcdApi(crate::rtcd_api::RtcdApiArgs),
    /// Compare sites side by side from saved `--json` reports (the table of `probe-server results`).
    Compare(crate::compare::CompareArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell on stdout.
    Completions(crate::completions::CompletionsArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// 50 packets/s of ~160 bytes, like an Opus voice call.
    Audio,
    /// Bursts of up to 1200-byte packets at ~1.5 Mbit/s, like screen sharing.
    Video,
}

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The probe server: HOST, HOST:PORT or [IPv6]:PORT (port 8443 when omitted).
    #[arg(required = true)]
    pub server: Option<String>,
    /// Seconds of echo traffic per transport.
    #[arg(long, default_value_t = 5.0, value_parser = parse_duration)]
    pub duration: f64,
    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = ProfileArg::Audio)]
    pub profile: ProfileArg,
    /// Milliseconds between packets (or bursts), overriding the profile.
    #[arg(long, value_parser = parse_interval)]
    pub interval: Option<f64>,
    /// Bytes per packet, overriding the profile (56 to 1200).
    #[arg(long, value_parser = |s: &str| within(s, 56, 1200, "bytes"))]
    pub size: Option<u16>,
    /// Name of this site in reports (default: this host's name), 1 to 64 characters.
    #[arg(long, env = "PROBE_SITE", value_parser = parse_site)]
    pub site: Option<String>,
    /// This site's token, when the admin started probe-server with --site-token NAME=TOKEN; only
    /// a MAC made with it is sent, never the token.
    #[arg(long, env = "PROBE_SITE_TOKEN", hide_env_values = true)]
    pub site_token: Option<String>,
    /// Refuse a server whose certificate does not have this SHA-256 pin (sha256:HEX, printed by probe-server).
    #[arg(long, env = "PROBE_PIN")]
    pub pin: Option<String>,
    /// Access token, when the admin started probe-server with --token.
    #[arg(long, env = "PROBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print one JSON object (schema 1) instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Quiet-period test: halfway through the UDP echo, send nothing for this many seconds, then
    /// resume; finds NAT/firewall UDP mappings shorter than that (udp_mapping_short).
    #[arg(long, value_name = "SECONDS", conflicts_with = "no_udp", value_parser = |s: &str| within(s, 2, 100, "seconds"))]
    pub quiet_test: Option<u16>,
    /// Skip the UDP tests.
    #[arg(long)]
    pub no_udp: bool,
    /// Skip the TCP tests.
    #[arg(long)]
    pub no_tcp: bool,
    /// Do not send the finished report to the server (it keeps reports for `probe-server results`).
    #[arg(long)]
    pub no_upload: bool,
    /// Skip the path-MTU check (large packets both ways; at most 3 s, only when they are lost).
    #[arg(long)]
    pub no_mtu: bool,
    /// Run again every DURATION (e.g. 30s, 5m, 1h) until --count runs or Ctrl-C.
    #[arg(long, value_parser = parse_every)]
    pub every: Option<std::time::Duration>,
    /// With --every: stop after this many runs.
    #[arg(long, requires = "every", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Load mode: this many concurrent sessions from this process; prints summary statistics only.
    #[arg(long, conflicts_with = "every", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub sessions: Option<u32>,
    /// The TURN check: --turn URL… with --turn-user/--turn-pass or --turn-secret, or --mattermost URL --mm-token TOKEN.
    #[command(flatten)]
    pub turn: crate::turn::TurnArgs,
}

/// `30s`, `5m`, `1h` or plain seconds.
pub fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1.0),
        Some((i, 'm')) => (&s[..i], 60.0),
        Some((i, 'h')) => (&s[..i], 3600.0),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use e.g. 30s, 5m or 1h"))?;
    let secs = v * mult;
    if (1.0..=7.0 * 86_400.0).contains(&secs) {
        Ok(std::time::Duration::from_secs_f64(secs))
    } else {
        Err("the interval must be between 1 s and 7 days".into())
    }
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if (0.2..=600.0).contains(&v) {
        Ok(v)
    } else {
        Err("the duration must be between 0.2 and 600 seconds".into())
    }
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
    if (1.0..=1000.0).contains(&v) {
        Ok(v)
    } else {
        Err("the interval must be between 1 and 1000 ms".into())
    }
}

/// A whole number from `lo` to `hi`, said in words (clap's own range error reads `2000 is
/// not in 56..=1200`).
fn within(s: &str, lo: u16, hi: u16, unit: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .ok()
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| format!("must be a whole number of {unit} from {lo} to {hi}"))
}

/// `--site`: checked before the run, as the server checks each upload (a name it would
/// refuse loses the report).
fn parse_site(s: &str) -> Result<String, String> {
    probe_proto::sites::check_site(s).map(|()| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ranges_are_said_in_words() {
        assert_eq!(within("1200", 56, 1200, "bytes"), Ok(1200));
        for bad in ["2000", "55", "x", "-1"] {
            assert_eq!(
                within(bad, 56, 1200, "bytes"),
                Err("must be a whole number of bytes from 56 to 1200".into())
            );
        }
    }

    #[test]
    fn every_forms() {
        assert_eq!(parse_every("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_every("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_every("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_every("90"), Ok(Duration::from_secs(90)));
        assert!(parse_every("0s").is_err());
        assert!(parse_every("fast").is_err());
        assert!(parse_every("").is_err());
    }
}
