//! Sans-IO protocol of the Calls network probe, in the manner of quinn-proto: message types,
//! packet layouts, codecs, STUN helpers, statistics and verdict rules as pure code, with no
//! sockets and no async runtime, so that every piece is unit-tested and fuzzed directly.
//! `probe-server` and `probe-client` are thin async shells around it.
//!
//! # Wire format: postcard, not bincode
//! Control messages are serde types encoded with postcard 1.x. bincode was the first choice of
//! the brief, but its last release (3.0.0) is a tombstone whose lib.rs is a `compile_error!`, the
//! project is unmaintained and RUSTSEC-2025-0141 flags every version. postcard's wire format is
//! documented and frozen for all of 1.x (a stable contract between client and server builds of
//! different ages), it is compact (varints) and a bogus length prefix in untrusted input is an
//! error, never an allocation. See [`msg`] for the framing and the evolution rule.
//!
//! # One port, demultiplexed by first byte
//! See [`demux`]: STUN 0–3, QUIC 64–127 and 192–255, RTP-shaped echo 128–191 (RFC 7983 and
//! RFC 9443). TCP carries the same packets in RFC 4571 frames ([`frame`]).

pub mod auth;
pub mod calls;
pub mod catalog;
pub mod client;
pub mod demux;
pub mod echo;
pub mod frame;
pub mod http;
pub mod ice_verdict;
pub mod live;
pub mod msg;
pub mod path;
pub mod quic;
pub mod ratelimit;
pub mod report;
pub mod rtcd;
pub mod semver;
pub mod session;
pub mod sites;
pub mod stats;
pub mod stun;
pub mod turn;
pub mod verdict;
pub mod web;
