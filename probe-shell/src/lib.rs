//! The shell both binaries share around `probe-proto`'s sans-IO core: the command-line
//! plumbing (logging, the one-sentence usage error, exit code 2), the blocking HTTP/1.1 client
//! (`probe-server doctor` on RTCD's host, `probe-client rtcd-api` from Mattermost's) and the
//! check/status model their reports are made of, and the man pages and completions generated
//! from each binary's clap definition. Blocking std IO and rustls; no async runtime.

pub mod cli;
pub mod generate;
pub mod http;
pub mod report;
