//! Command-line plumbing of both binaries: logging to stderr, the one sentence a run that
//! cannot be carried out prints (exit code 2), and clap usage errors turned into that sentence.

/// Logs to stderr at `level` (`warn`, `info`, …); `RUST_LOG` wins when set, so operators can
/// use the usual directive syntax. Colours only on a terminal, and never with `NO_COLOR`: a log
/// redirected to a file, `nohup` or `docker logs` stays plain text.
pub fn init_logging(level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // An empty RUST_LOG (`RUST_LOG=` in a unit's environment file) is unset, not "log nothing".
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok());
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours(std::io::stderr().is_terminal(), no_color))
        .with_target(false)
        .init();
}

/// A `--log` value: a level, or a directive with a target (`probe_server=debug`). Any other
/// word would parse as a target name and silently log nothing (`warning`, `verbose`).
pub fn parse_log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let t = s.trim();
    let ok = LEVELS.iter().any(|l| t.eq_ignore_ascii_case(l))
        || (t.contains('=')
            && t.split(',').all(|d| {
                d.split_once('=')
                    .is_some_and(|(_, l)| LEVELS.iter().any(|k| l.trim().eq_ignore_ascii_case(k)))
            }));
    if ok {
        Ok(t.to_string())
    } else {
        Err("use one of off, error, warn, info, debug, trace (or a directive such as probe_server=debug)".into())
    }
}

/// Whether log lines get ANSI colours (<https://no-color.org>).
fn colours(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

/// Exit code when stdout's reader went away (`… | head -1`): what a shell reports for a
/// program a closed pipe's SIGPIPE ended (128 + 13), as for any Unix tool.
pub const EXIT_READER_GONE: i32 = 141;

/// Writes to stdout (what [`outln!`](crate::outln) and [`out!`](crate::out) expand to). A
/// reader that went away ends the process quietly with [`EXIT_READER_GONE`], instead of the
/// panic `println!` gives; any other failure (a full disk under a redirect) is one sentence
/// and exit code 2.
pub fn write_out(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) else {
        return;
    };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_READER_GONE);
    }
    let program = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "probe".into());
    std::process::exit(fail(
        &program,
        format!("cannot write the output: {e}; check the disk or file it is redirected to"),
    ));
}

/// `println!` for a binary's output on stdout; see [`write_out`].
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($t)*)))
    };
}

/// `print!` for a binary's output on stdout; see [`write_out`].
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!($($t)*))
    };
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Still one thread here: nothing else reads the environment while it changes.
    for name in env_to_ignore(&C::command(), &args, &|n| std::env::var_os(n)) {
        std::env::remove_var(name);
    }
    match C::try_parse_from(&args) {
        Ok(a) => a,
        Err(e) => {
            let named = subcommand_named(&C::command(), &args);
            match usage_error(program, &e, named.as_deref()) {
                None => e.exit(),
                Some(line) => {
                    let line = match env_source(&C::command(), &e, &args) {
                        Some(var) => format!("{var} in the environment: {line}"),
                        None => line,
                    };
                    std::process::exit(fail(program, line))
                }
            }
        }
    }
}

/// The line a clap error becomes, or `None` for help and version output (not errors).
/// `named` is the subcommand the command line names, for errors whose text has no usage line
/// (a value out of range, a missing value).
fn usage_error(program: &str, e: &clap::Error, named: Option<&str>) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return None;
    }
    let text = e.render().to_string();
    let command = help_command(&text)
        .or_else(|| named.map(|sub| format!("{program} {sub}")))
        .unwrap_or_else(|| program.to_string());
    Some(format!("{} (see {command} --help)", one_sentence(&text)))
}

/// The variable a refused value came from, when the flag is not on the command line: the
/// operator never typed `--listen`, a unit's environment file set it.
fn env_source(cmd: &clap::Command, e: &clap::Error, args: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let typed = args.iter().filter_map(|a| a.to_str()).any(|a| {
        a.strip_prefix("--")
            .is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
    });
    if typed {
        return None;
    }
    let mut cmds = vec![cmd];
    cmds.extend(cmd.get_subcommands());
    cmds.iter()
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .filter(|v| std::env::var_os(v).is_some())
        .map(|v| v.to_string_lossy().into_owned())
}

/// Environment variables clap would read that must not break a command line which does not
/// use them: an empty one (`X=` in a systemd EnvironmentFile) counts as unset, and one that
/// only the default command reads (`PROBE_SERVER_LISTEN`) is ignored when a subcommand runs.
/// Without this, `PROBE_SERVER_METRICS= probe-server results` failed on `--metrics`, a flag
/// `results` does not have.
fn env_to_ignore(
    cmd: &clap::Command,
    args: &[std::ffi::OsString],
    get: &dyn Fn(&std::ffi::OsStr) -> Option<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    fn names(cmd: &clap::Command, out: &mut Vec<std::ffi::OsString>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_owned()),
        );
        for sub in cmd.get_subcommands() {
            names(sub, out);
        }
    }
    let mut all = Vec::new();
    names(cmd, &mut all);
    let mut out: Vec<std::ffi::OsString> = all
        .into_iter()
        .filter(|n| get(n).is_some_and(|v| v.is_empty()) && !guards(n))
        .collect();
    if let Some(sub) = leading_subcommand(cmd, args) {
        let own: Vec<&std::ffi::OsStr> = sub.get_arguments().filter_map(|a| a.get_env()).collect();
        out.extend(
            cmd.get_arguments()
                .filter(|a| !a.is_global_set())
                .filter_map(|a| a.get_env())
                .filter(|e| !own.contains(e) && get(e).is_some())
                .map(|e| e.to_owned()),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// A variable that secures something (a token, a pin, a secret): set but empty, it must stay
/// and be refused as the flag is, never read as unset, or an empty `PROBE_SERVER_TOKEN=`
/// would start an open server.
fn guards(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy().to_ascii_uppercase();
    ["TOKEN", "PIN", "SECRET", "PASS", "KEY"]
        .iter()
        .any(|w| n.contains(w))
}

/// The subcommand the command line runs: only the first word after the global options (and
/// their values) can be one, since the default command's options conflict with subcommands.
/// Not any later word, which may be an option's value (`--state-dir results`).
fn leading_subcommand<'c>(
    cmd: &'c clap::Command,
    args: &[std::ffi::OsString],
) -> Option<&'c clap::Command> {
    let mut words = args.iter().skip(1).filter_map(|a| a.to_str());
    loop {
        let w = words.next()?;
        let Some(long) = w.strip_prefix("--") else {
            return cmd.find_subcommand(w);
        };
        let name = long.split('=').next().unwrap_or(long);
        let global = cmd
            .get_arguments()
            .find(|a| a.is_global_set() && a.get_long() == Some(name))?;
        // `--log debug`: its value is the next word.
        if !long.contains('=') && global.get_action().takes_values() {
            words.next()?;
        }
    }
}

/// The first word of the command line that is one of the program's subcommands, before any
/// `--`: a value that happens to equal a subcommand's name is a rare misdirection to the
/// wrong help page, never a wrong parse.
fn subcommand_named(cmd: &clap::Command, args: &[std::ffi::OsString]) -> Option<String> {
    args.iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .take_while(|a| *a != "--")
        .filter(|a| !a.starts_with('-'))
        .find(|a| cmd.find_subcommand(a).is_some())
        .map(str::to_string)
}

/// The command whose help explains the error (`probe-server results`, not `probe-server`):
/// the words of clap's `Usage:` line before its first option or argument.
fn help_command(text: &str) -> Option<String> {
    let usage = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))?;
    let words: Vec<&str> = usage
        .split_whitespace()
        .take_while(|w| !w.starts_with(['-', '<', '[']))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// A multi-line error text (clap's usage errors) as the one sentence the probe's binaries
/// print: the lines before the usage, joined, without the `error:` prefix; clap's tips (a
/// similar argument for a typo) follow after a semicolon.
pub fn one_sentence(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let (tips, said): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.starts_with("tip:"));
    let mut out = said
        .join(" ")
        .trim_start_matches("error: ")
        .trim_end_matches('.')
        .to_string();
    for tip in tips {
        out.push_str("; ");
        out.push_str(tip.trim_start_matches("tip:").trim().trim_end_matches('.'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    #[command(name = "probe-x", version)]
    struct Cli {
        server: Option<String>,
        #[arg(long)]
        count: Option<u32>,
        #[command(subcommand)]
        sub: Option<Sub>,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Results {
            #[arg(long, required = true)]
            site: Option<String>,
        },
    }

    #[test]
    fn a_typo_keeps_clap_s_suggestion_and_a_subcommand_error_points_at_its_help() {
        let e = Cli::try_parse_from(["probe-x", "h", "--cuont", "3"]).unwrap_err();
        let line = usage_error("probe-x", &e, None).unwrap();
        assert!(
            line.contains("'--cuont'") && line.contains("'--count'"),
            "{line}"
        );
        assert!(line.ends_with("(see probe-x --help)"), "{line}");
        let e = Cli::try_parse_from(["probe-x", "results"]).unwrap_err();
        let line = usage_error("probe-x", &e, None).unwrap();
        assert!(line.contains("--site"), "{line}");
        assert!(line.ends_with("(see probe-x results --help)"), "{line}");
    }

    #[derive(Parser, Debug)]
    #[command(name = "probe-y", args_conflicts_with_subcommands = true)]
    struct Served {
        #[arg(long, global = true, env = "Y_LOG", default_value = "info")]
        log: String,
        #[arg(long, env = "Y_LISTEN")]
        listen: Option<u16>,
        #[arg(long, env = "Y_STATE")]
        state: Option<String>,
        #[arg(long, env = "Y_TOKEN")]
        token: Option<String>,
        #[command(subcommand)]
        sub: Option<Report>,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Report {
        Results {
            #[arg(long, env = "Y_STATE")]
            state: Option<String>,
        },
    }

    /// An empty variable is unset; one only the default command reads is ignored by a
    /// subcommand; one the subcommand reads, and the global one, are kept.
    #[test]
    fn environment_a_command_line_does_not_use_is_ignored() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &std::ffi::OsStr| {
                pairs
                    .iter()
                    .find(|(k, _)| std::ffi::OsStr::new(k) == n)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let argv = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        static SET: [(&str, &str); 3] = [
            ("Y_LISTEN", "not-a-port"),
            ("Y_STATE", "/s"),
            ("Y_LOG", "debug"),
        ];
        let set = &SET;
        let got = env_to_ignore(
            &Served::command(),
            &argv(&["probe-y", "results"]),
            &env(set),
        );
        assert_eq!(got, vec![std::ffi::OsString::from("Y_LISTEN")]);
        // After the global option and its value, too.
        let got = env_to_ignore(
            &Served::command(),
            &argv(&["probe-y", "--log", "debug", "results"]),
            &env(set),
        );
        assert_eq!(got, vec![std::ffi::OsString::from("Y_LISTEN")]);
        // A subcommand's name as an option's value runs the default command: nothing goes.
        let got = env_to_ignore(
            &Served::command(),
            &argv(&["probe-y", "--state", "results"]),
            &env(set),
        );
        assert!(got.is_empty(), "{got:?}");
        let got = env_to_ignore(&Served::command(), &argv(&["probe-y"]), &env(set));
        assert!(
            got.is_empty(),
            "the default command reads them all: {got:?}"
        );
        // An empty token stays, to be refused as an empty --token is.
        static EMPTY: [(&str, &str); 3] = [("Y_STATE", ""), ("Y_LOG", ""), ("Y_TOKEN", "")];
        let empty = &EMPTY;
        let mut got = env_to_ignore(&Served::command(), &argv(&["probe-y"]), &env(empty));
        got.sort();
        assert_eq!(
            got,
            vec![std::ffi::OsString::from("Y_LOG"), "Y_STATE".into()]
        );
    }

    #[test]
    fn log_levels_are_levels_not_target_names() {
        for ok in [
            "info",
            "WARN",
            " debug ",
            "probe_server=debug",
            "a=info,b=trace",
        ] {
            assert!(parse_log_level(ok).is_ok(), "{ok}");
        }
        for bad in ["warning", "verbose", "", "probe_server=loud", "a=info,b"] {
            assert!(parse_log_level(bad).is_err(), "{bad}");
        }
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
        let e = Cli::try_parse_from(["probe-x", "a", "b"]).unwrap_err();
        let line = usage_error("probe-x", &e, None).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("'b'"), "{line}");
        assert!(line.ends_with("(see probe-x --help)"), "{line}");
        let e = Cli::try_parse_from(["probe-x", "h", "--count", "many"]).unwrap_err();
        let line = usage_error("probe-x", &e, None).unwrap();
        assert!(
            line.contains("many") && !line.starts_with("error:"),
            "{line}"
        );
        let help = Cli::try_parse_from(["probe-x", "--help"]).unwrap_err();
        assert_eq!(usage_error("probe-x", &help, None), None);
        let version = Cli::try_parse_from(["probe-x", "--version"]).unwrap_err();
        assert_eq!(usage_error("probe-x", &version, None), None);
    }

    #[test]
    fn a_value_error_points_at_the_subcommand_the_line_names() {
        use clap::CommandFactory;
        let argv = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        // A missing value: clap's text has no usage line.
        let args = argv(&["probe-x", "results", "--site"]);
        let e = Cli::try_parse_from(&args).unwrap_err();
        let named = subcommand_named(&Cli::command(), &args);
        assert_eq!(named.as_deref(), Some("results"));
        let line = usage_error("probe-x", &e, named.as_deref()).unwrap();
        assert!(line.ends_with("(see probe-x results --help)"), "{line}");
        // Flags, values and what follows `--` are not subcommands.
        let args = argv(&["probe-x", "--count", "3", "host", "--", "results"]);
        assert_eq!(subcommand_named(&Cli::command(), &args), None);
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, false));
        assert!(!colours(false, false));
        assert!(!colours(true, true));
    }

    #[test]
    fn fail_is_exit_code_2() {
        assert_eq!(fail("probe-x", "cannot start"), 2);
    }
}
