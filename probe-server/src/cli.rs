//! Command line. Every serve option also reads an environment variable, for systemd units.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "probe-server", version, about = "Answers probe-client on RTCD's port: STUN, echo, ICE checks.")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, env = "PROBE_SERVER_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {}

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
}
