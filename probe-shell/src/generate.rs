//! Man pages and shell completions from a binary's clap definition: `BIN generate man|completions
//! DIR` (undocumented; `scripts/package` runs it at package build time) and the completion script
//! a user prints for one shell (`probe-client completions SHELL`).

use clap::{Command, Parser, Subcommand};
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// `BIN generate …`, parsed on its own: it stays out of the binary's `Cli`, so it shows in no
/// help, man page or completion (clap_complete lists even hidden subcommands).
#[derive(Parser, Debug)]
struct GenerateCli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Writes a man page per command and subcommand into DIR (BIN.1, BIN-NAME.1).
    Man { dir: PathBuf },
    /// Writes completions into DIR: bash/BIN, zsh/_BIN, fish/BIN.fish.
    Completions { dir: PathBuf },
}

/// Whether argv asks for the generator (`BIN generate …`).
pub fn requested() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == "generate")
}

/// Runs `BIN generate man|completions DIR` for the binary whose CLI `cmd` builds; the exit code.
pub fn run(bin: &str, cmd: fn() -> Command) -> i32 {
    // argv[1] is `generate`: it stands in for the binary name.
    let args = GenerateCli::parse_from(std::env::args_os().skip(1));
    let done = match &args.what {
        What::Man { dir } => man(cmd(), dir),
        What::Completions { dir } => completions(bin, cmd, dir),
    };
    match done {
        Ok(()) => 0,
        Err(e) => crate::cli::fail(bin, e),
    }
}

/// One man page per command and subcommand into `dir`.
pub fn man(cmd: Command, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display()))
}

/// bash, zsh and fish completions into `dir`, in the layout the packages install.
pub fn completions(bin: &str, cmd: fn() -> Command, dir: &Path) -> Result<(), String> {
    for (shell, sub, file) in [
        (Shell::Bash, "bash", bin.to_string()),
        (Shell::Zsh, "zsh", format!("_{bin}")),
        (Shell::Fish, "fish", format!("{bin}.fish")),
    ] {
        let sub = dir.join(sub);
        std::fs::create_dir_all(&sub)
            .map_err(|e| format!("cannot create {}: {e}", sub.display()))?;
        let path = sub.join(file);
        std::fs::write(&path, script(shell, bin, cmd()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The completion script for one shell.
pub fn script(shell: Shell, bin: &str, mut cmd: Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    out
}

/// Prints the completion script for one shell on stdout; the exit code. A reader that went
/// away ends the process as every other output does ([`crate::cli::write_out`]).
pub fn print(shell: Shell, bin: &str, cmd: Command) -> i32 {
    let text = String::from_utf8_lossy(&script(shell, bin, cmd)).into_owned();
    crate::cli::write_out(format_args!("{text}"));
    0
}

/// Test support for the binaries: generates everything for `bin` into a temporary directory and
/// checks a page per subcommand, three completion scripts, and no trace of `generate` in them.
#[doc(hidden)]
pub fn assert_generates(bin: &str, cmd: fn() -> Command) {
    let dir = std::env::temp_dir().join(format!("{bin}-generate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    man(cmd(), &dir.join("man")).unwrap();
    completions(bin, cmd, &dir.join("completions")).unwrap();
    let names = |d: &str| {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut want = vec![format!("{bin}.1")];
    for sub in cmd().get_subcommands() {
        want.push(format!("{bin}-{}.1", sub.get_name()));
    }
    want.sort();
    assert_eq!(names("man"), want);
    assert_eq!(names("completions"), ["bash", "fish", "zsh"]);
    for (file, version) in [
        (format!("bash/{bin}"), "--version"),
        (format!("zsh/_{bin}"), "'--version[Print version]'"),
        (format!("fish/{bin}.fish"), "-l version"),
    ] {
        let text = std::fs::read_to_string(dir.join("completions").join(&file)).unwrap();
        assert!(text.contains(version), "{file}");
        // The generator itself is no subcommand of the CLI.
        assert!(!text.contains("generate"), "{file}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    fn demo() -> Command {
        Command::new("probe-demo")
            .version("1.0")
            .arg(Arg::new("verbose").long("verbose").num_args(0))
            .subcommand(Command::new("check").about("checks"))
    }

    #[test]
    fn a_page_per_subcommand_and_three_completions() {
        super::assert_generates("probe-demo", demo);
    }
}
