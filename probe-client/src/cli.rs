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
    #[arg(long, value_parser = clap::value_parser!(u16).range(56..=1200))]
    pub size: Option<u16>,
    /// Name of this site in reports (default: this host's name).
    #[arg(long)]
    pub site: Option<String>,
    /// Refuse a server whose certificate does not have this SHA-256 pin (sha256:HEX, printed by probe-server).
    #[arg(long, env = "PROBE_PIN")]
    pub pin: Option<String>,
    /// Access token, when the admin started probe-server with --token.
    #[arg(long, env = "PROBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print one JSON object (schema 1) instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Skip the UDP tests.
    #[arg(long)]
    pub no_udp: bool,
    /// Skip the TCP tests.
    #[arg(long)]
    pub no_tcp: bool,
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
