//! Results kept where the admin is: uploads from clients go to a SQLite store and to the
//! Prometheus metrics; `probe-server results` reads them back (being written).

use std::net::SocketAddr;

/// One uploaded run, as the control channel hands it over.
#[derive(Debug, Clone)]
pub struct UploadedRun {
    /// The client's address as this server saw it on the control channel.
    pub client_addr: SocketAddr,
    /// Server wall clock at upload, milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// The client's schema-1 JSON report, as sent.
    pub report_json: String,
}

/// Where the control channel puts uploads. Never blocks: a full queue or a broken store is
/// reported back to the client and counted, and the echo service goes on.
#[derive(Debug, Default)]
pub struct Sink {}

impl Sink {
    pub fn submit(&self, _run: UploadedRun) -> Result<(), String> {
        Err("this server keeps no results".into())
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ResultsArgs {}

pub fn run(_args: ResultsArgs) -> i32 {
    crate::fail("results is not implemented yet")
}
