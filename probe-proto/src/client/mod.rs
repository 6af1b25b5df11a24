//! The client's sans-IO core, as [`crate::session`] is the server's: the async shell in
//! `probe-client` owns sockets, timers and the clock, and only moves bytes and times in and out.
//!
//! - [`schedule`]: the media-shaped sending schedule (profile, interval, burst sizes).
//! - [`echo`]: [`EchoCore`], one transport's echo sender and receiver (sequence numbers, signed
//!   packets, reply matching, statistics, the grace period for late replies). UDP datagrams and
//!   RFC 4571 frame payloads from TCP go through the same core.
//! - [`run`]: [`Run`], the order of a probe run and what each outcome leads to, and the report
//!   assembled from the gathered facts.
//!
//! Time is a monotonic count of microseconds since the run started, passed in by the caller (the
//! same clock the echo packets carry); nothing here reads a clock or draws randomness.

pub mod echo;
pub mod run;
pub mod schedule;

pub use echo::{EchoCore, EchoOutcome, Transmit};
pub use run::{Channel, HelloOutcome, Plan, QuicOutcome, Reach, Run, Step, TcpEchoLink};
pub use schedule::Schedule;

#[cfg(test)]
mod tests;
