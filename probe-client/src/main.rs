//! probe-client: what a user runs from their network to test the path to RTCD.

mod cli;
mod compare;
mod control;
mod echo;
mod ice;
mod modes;
mod pin;
mod progress;
mod rtcd_api;
mod run;
mod schedule;
mod target;

use clap::Parser;

fn main() {
    let args = parse_args();
    init_logging(args.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => std::process::exit(fail(format!("cannot start the async runtime: {e}"))),
    };
    let code = rt.block_on(async {
        match args.command {
            None => modes::main(args.probe).await,
            Some(cli::Command::RtcdApi(a)) => rtcd_api::run(a).await,
            Some(cli::Command::Compare(a)) => compare::run(a),
        }
    });
    // Background tasks (QUIC drivers) must not keep a finished run alive.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// One sentence on stderr; exit code 2: the run could not be carried out.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("probe-client: {msg}");
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
            "{} (see probe-client --help)",
            probe_proto::report::one_sentence(&e.render().to_string())
        ))),
    }
}
