//! `probe-server generate man DIR` and `probe-server generate completions DIR` (undocumented):
//! the man pages and shell completions the Debian package installs, generated from the clap
//! definitions at package build time by `scripts/package`.

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use std::path::{Path, PathBuf};

const BIN: &str = "probe-server";

/// `probe-server generate …`, parsed on its own (see main).
#[derive(Parser, Debug)]
#[command(name = "probe-server generate")]
struct GenerateCli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Writes a man page per command and subcommand into DIR (probe-server.1, probe-server-NAME.1).
    Man { dir: PathBuf },
    /// Writes completions into DIR: bash/probe-server, zsh/_probe-server, fish/probe-server.fish.
    Completions { dir: PathBuf },
}

/// Runs `probe-server generate man|completions DIR`; the exit code.
pub fn main() -> i32 {
    // argv[1] is `generate`: it stands in for the binary name.
    let args = GenerateCli::parse_from(std::env::args_os().skip(1));
    let done = match &args.what {
        What::Man { dir } => man(dir),
        What::Completions { dir } => completions(dir),
    };
    match done {
        Ok(()) => 0,
        Err(e) => crate::fail(e),
    }
}

fn man(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(crate::cli::Cli::command(), dir)
        .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display()))
}

fn completions(dir: &Path) -> Result<(), String> {
    for (shell, sub, file) in [
        (Shell::Bash, "bash", BIN.to_string()),
        (Shell::Zsh, "zsh", format!("_{BIN}")),
        (Shell::Fish, "fish", format!("{BIN}.fish")),
    ] {
        let sub = dir.join(sub);
        std::fs::create_dir_all(&sub)
            .map_err(|e| format!("cannot create {}: {e}", sub.display()))?;
        let path = sub.join(file);
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut crate::cli::Cli::command(), BIN, &mut out);
        std::fs::write(&path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn a_page_per_subcommand_and_three_completions() {
        let dir =
            std::env::temp_dir().join(format!("probe-server-generate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        super::man(&dir.join("man")).unwrap();
        super::completions(&dir.join("completions")).unwrap();
        let names = |d: &str| {
            let mut v: Vec<String> = std::fs::read_dir(dir.join(d))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let mut want = vec!["probe-server.1".to_string()];
        for sub in crate::cli::Cli::command().get_subcommands() {
            want.push(format!("probe-server-{}.1", sub.get_name()));
        }
        want.sort();
        assert_eq!(names("man"), want);
        assert_eq!(names("completions"), ["bash", "fish", "zsh"]);
        for (file, version) in [
            ("bash/probe-server", "--version"),
            ("zsh/_probe-server", "'--version[Print version]'"),
            ("fish/probe-server.fish", "-l version"),
        ] {
            let text = std::fs::read_to_string(dir.join("completions").join(file)).unwrap();
            assert!(text.contains(version), "{file}");
            // The generator itself is no subcommand of the CLI.
            assert!(!text.contains("generate"), "{file}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
