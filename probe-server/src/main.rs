//! probe-server: runs beside RTCD, on RTCD's port, and answers the probe client.

mod bundle;
mod cert;
mod cli;
mod control;
mod doctor;
mod ice;
mod interfaces;
mod metrics;
mod quic;
mod results;
mod rtcd_io;
mod serve;
mod shared;
mod tcp;
mod udp;

use clap::Parser;

fn main() {
    let args = parse_args();
    init_logging(&args.log);
    let code = match args.command {
        None => serve::run(args.serve),
        Some(cli::Command::Doctor(a)) => doctor::run(a),
        Some(cli::Command::Bundle(a)) => bundle::run(a),
        Some(cli::Command::Results(a)) => results::run(a),
    };
    std::process::exit(code);
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG wins when set, so operators can use the usual directive syntax.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// One sentence on stderr and exit 2: the run could not be carried out.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("probe-server: {msg}");
    2
}

/// Parses the command line; a usage error becomes one line on stderr and exit 2.
fn parse_args() -> cli::Cli {
    use clap::error::ErrorKind;
    match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => std::process::exit(fail(format!(
            "{} (see probe-server --help)",
            probe_proto::report::one_sentence(&e.render().to_string())
        ))),
    }
}
