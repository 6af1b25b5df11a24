//! Shell completions and man pages from the clap definitions: `probe-client completions SHELL`
//! prints a completion script for users without the Debian package; the undocumented
//! `probe-client generate man|completions DIR` writes what the package installs (scripts/package).
//! The work is probe-shell's, shared with probe-server.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

const BIN: &str = "probe-client";

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash (save as ~/.local/share/bash-completion/completions/probe-client), zsh (as
    /// _probe-client in a directory of $fpath) or fish (as
    /// ~/.config/fish/completions/probe-client.fish).
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script for one shell on stdout.
pub fn print(args: CompletionsArgs) -> i32 {
    probe_shell::generate::print(args.shell, BIN, crate::cli::Cli::command())
}

/// Runs `probe-client generate man|completions DIR`; the exit code.
pub fn generate() -> i32 {
    probe_shell::generate::run(BIN, crate::cli::Cli::command)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn a_page_per_subcommand_and_three_completions() {
        probe_shell::generate::assert_generates(super::BIN, crate::cli::Cli::command);
    }
}
