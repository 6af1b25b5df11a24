//! Command-line plumbing of both binaries: logging to stderr, the one sentence a run that
//! cannot be carried out prints (exit code 2), and clap usage errors turned into that sentence.

/// Logs to stderr at `level` (`warn`, `info`, …); `RUST_LOG` wins when set, so operators can
/// use the usual directive syntax.
pub fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// One sentence on stderr, prefixed with the program's name; returns exit code 2: the run
/// could not be carried out.
pub fn fail(program: &str, msg: impl std::fmt::Display) -> i32 {
    eprintln!("{program}: {msg}");
    2
}

/// Parses the command line; `--help` and `--version` print and exit 0, a usage error becomes
/// one line on stderr and exit 2.
pub fn parse_args<C: clap::Parser>(program: &str) -> C {
    match C::try_parse() {
        Ok(a) => a,
        Err(e) => match usage_error(program, &e) {
            None => e.exit(),
            Some(line) => std::process::exit(fail(program, line)),
        },
    }
}

/// The line a clap error becomes, or `None` for help and version output (not errors).
fn usage_error(program: &str, e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return None;
    }
    Some(format!(
        "{} (see {program} --help)",
        one_sentence(&e.render().to_string())
    ))
}

/// A multi-line error text (clap's usage errors) as the one sentence the probe's binaries
/// print: the lines before the usage, joined, without the `error:` prefix and tips.
pub fn one_sentence(text: &str) -> String {
    text.lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("tip:") && !l.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .trim_end_matches('.')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[command(name = "probe-x", version)]
    struct Cli {
        server: String,
        #[arg(long)]
        count: Option<u32>,
    }

    #[test]
    fn clap_errors_become_one_sentence() {
        let text = "error: the following required arguments were not provided:\n  <SERVER>\n\nUsage: probe-client <SERVER>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_sentence(text),
            "the following required arguments were not provided: <SERVER>"
        );
    }

    #[test]
    fn usage_errors_name_the_program_and_help_is_not_an_error() {
        let e = Cli::try_parse_from(["probe-x"]).unwrap_err();
        let line = usage_error("probe-x", &e).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("<SERVER>"), "{line}");
        assert!(line.ends_with("(see probe-x --help)"), "{line}");
        let e = Cli::try_parse_from(["probe-x", "h", "--count", "many"]).unwrap_err();
        let line = usage_error("probe-x", &e).unwrap();
        assert!(
            line.contains("many") && !line.starts_with("error:"),
            "{line}"
        );
        let help = Cli::try_parse_from(["probe-x", "--help"]).unwrap_err();
        assert_eq!(usage_error("probe-x", &help), None);
        let version = Cli::try_parse_from(["probe-x", "--version"]).unwrap_err();
        assert_eq!(usage_error("probe-x", &version), None);
    }

    #[test]
    fn fail_is_exit_code_2() {
        assert_eq!(fail("probe-x", "cannot start"), 2);
    }
}
