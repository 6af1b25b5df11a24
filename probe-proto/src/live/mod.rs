//! Live mode (issue 12), sans-IO: testing RTCD's own port while RTCD runs and serves calls.
//!
//! `probe-server live` never binds RTCD's port (RTCD binds it with SO_REUSEPORT: any bind would
//! split RTCD's traffic). It taps copies of what the kernel delivers to the port with raw
//! sockets, behind a BPF filter ([`bpf`]) that passes only live packets, and answers with raw
//! sends whose source is RTCD's port and the local address the datagram arrived at ([`ip`]).
//! A tapped copy was delivered after the host's input firewall: it crossed every hop up to
//! RTCD's socket.
//!
//! # What RTCD does with each live packet
//! RTCD 1.2.6 runs pion/ice v4.2.0 (rtcd go.mod, replaced by the fork
//! `github.com/bgardner8008/ice/v4 v4.2.0-role-conflict-fix-v4`); RTCD 1.2.0–1.2.4 run v4.0.x.
//! The lines cited are identical in pion/ice v4.0.10 and v4.2.0 unless noted. RTCD's pion
//! logger (rtcd service/rtc/logger.go:82-108) maps pion's Trace **and Debug** to mlog Trace,
//! Info to Info and Warn to Warn.
//!
//! - **UDP live datagram (echo, hello, TCP query)** from an address RTCD has no session with:
//!   RTCD's UDP mux (`ice.NewUDPMuxDefault`, rtcd service/rtc/server.go:338) looks the source
//!   up in its address map (udp_mux.go:321-323); not found, it tests `stun.IsMessage`
//!   (udp_mux.go:326), which is false for a live packet (bytes 4..8 are never STUN's magic
//!   cookie, see [`packet`]); so it logs `Dropping packet from <ip>, addr: <ip:port>` at
//!   **Trace** (udp_mux.go:353 in v4.2.0, :352 in v4.0.10) and drops it. Nothing is created,
//!   nothing is answered; at RTCD's usual Info/Debug level nothing is logged.
//! - **TCP live probe**: pion's TCP mux accepts the connection (Debug `Accepted connection
//!   from: … to …`, tcp_mux.go:108, so mlog Trace), reads the first RFC 4571 frame into a
//!   512-byte buffer (tcp_mux.go:197, 209; the live frame is 48 bytes, so it is read whole),
//!   fails to decode it as STUN, closes the connection and logs at **Warn**
//!   `Failed to handle decode ICE from <client> to <local>: …` (tcp_mux.go:231-236). That Warn
//!   is the one line RTCD logs per live TCP probe; every other first frame logs a Warn too
//!   (a STUN non-Binding: `Not a STUN message`, :238-243; no frame at all: `Error reading first
//!   packet`, :214), and a Binding with an unknown ufrag is worse: pion creates a packet conn for
//!   it and keeps it 30 s (tcp_mux.go:291-293, `AliveDurationForConnFromStun` 30 s, :78-80). Hence a non-STUN
//!   frame: one Warn, no state.
//!
//! A client whose address does have a session with RTCD (a user in a call on the same public
//! address and port) is not a concern: live packets come from a fresh ephemeral port.

pub mod bpf;
pub mod hello;
pub mod ip;
pub mod judge;
pub mod packet;
pub mod responder;

pub use hello::HelloInfo;
pub use responder::{Event, Limits, NonceStats, Responder};

#[cfg(test)]
mod tests;
