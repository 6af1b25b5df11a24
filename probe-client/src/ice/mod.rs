//! ICE from the user's network, as a browser would run it against RTCD (being written).

use probe_proto::msg::IceOffer;
use probe_proto::report::IceReport;
use std::net::SocketAddr;

/// What the orchestrator knows when the ICE phase starts.
pub struct IceInputs<'a> {
    pub offer: &'a IceOffer,
    /// The server address the client reached (after its own DNS resolution).
    pub dialed: SocketAddr,
    /// The host as the user typed it.
    pub host: &'a str,
    pub udp_reachable: bool,
    pub tcp_reachable: bool,
}

pub async fn run(inputs: IceInputs<'_>) -> IceReport {
    IceReport {
        dialed: inputs.dialed.to_string(),
        rtcd_port: inputs.offer.rtcd_port_udp,
        ..IceReport::default()
    }
}
