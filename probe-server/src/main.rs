//! probe-server: runs beside RTCD, on RTCD's port, and answers the probe client.

mod bundle;
mod calls;
mod cert;
mod cli;
mod control;
mod doctor;
mod generate;
mod ice;
mod interfaces;
#[cfg(target_os = "linux")]
mod live;
mod metrics;
mod quic;
mod relay;
mod results;
mod rtcd_env;
mod rtcd_io;
mod serve;
mod shared;
mod tcp;
mod udp;
mod web;

fn main() {
    // `probe-server generate man|completions DIR` (scripts/package) stays outside `Cli`, so no
    // man page, completion or --help lists it.
    if probe_shell::generate::requested() {
        std::process::exit(generate::main());
    }
    let args = parse_args();
    init_logging(&args.log);
    let code = match args.command {
        None => serve::run(args.serve),
        Some(cli::Command::Doctor(a)) => doctor::run(a),
        Some(cli::Command::Bundle(a)) => bundle::run(a),
        Some(cli::Command::Results(a)) => results::run(a),
        #[cfg(target_os = "linux")]
        Some(cli::Command::Live(a)) => live::run(a),
    };
    std::process::exit(code);
}

fn init_logging(level: &str) {
    probe_shell::cli::init_logging(level);
}

/// One sentence on stderr and exit 2: the run could not be carried out.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    probe_shell::cli::fail("probe-server", msg)
}

/// Parses the command line; a usage error becomes one line on stderr and exit 2.
fn parse_args() -> cli::Cli {
    probe_shell::cli::parse_args("probe-server")
}
