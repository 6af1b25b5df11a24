//! probe-client: what a user runs from their network to test the path to RTCD.

mod cli;
mod compare;
mod completions;
mod control;
mod echo;
mod ice;
mod live;
mod modes;
mod mtu;
mod pin;
mod progress;
mod rtcd_api;
mod run;
mod schedule;
mod target;
mod turn;

fn main() {
    // `probe-client generate man|completions DIR` (scripts/package) stays outside `Cli`, so no
    // man page, completion or --help lists it.
    if probe_shell::generate::requested() {
        std::process::exit(completions::generate());
    }
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
            Some(cli::Command::Completions(a)) => completions::print(a),
        }
    });
    // Background tasks (QUIC drivers) must not keep a finished run alive.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

fn init_logging(verbose: u8) {
    probe_shell::cli::init_logging(match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    });
}

/// One sentence on stderr; exit code 2: the run could not be carried out.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    probe_shell::cli::fail("probe-client", msg)
}

/// Parses the command line; a usage error becomes one line on stderr and exit 2.
fn parse_args() -> cli::Cli {
    probe_shell::cli::parse_args("probe-client")
}
