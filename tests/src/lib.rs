//! Integration-test harness for the Calls network probe.
//!
//! Everything here runs the real `probe-server` / `probe-client` binaries on
//! real sockets inside network namespaces that the harness creates and
//! removes itself.  Nothing is mocked.  See `tests/README.md` for the
//! scenario schema.
//!
//! Module map:
//! - [`netns`]: namespace guard (create, exec inside, delete on drop), veth pairs.
//! - [`topology`]: the "routed" and "nat" three-namespace topologies.
//! - [`nft`]: nftables scripts (`table inet probe_test` filter chains, NAT table).
//! - [`proc`]: bounded child processes with captured output.
//! - [`probe`]: building/locating the binaries, `start_server`, `run_client`.
//! - [`expect`]: JSON report assertions (dotted paths, binomial loss bounds).
//! - [`scenario`]: TOML scenario files and their runner.
//! - [`tls`]: TLS on probe-server's TCP port (control messages), and a relay's impostor certificate.
//! - [`chromium`]: headless chromium driven over the DevTools pipe (the browser test page).

pub mod chromium;
pub mod expect;
pub mod netns;
pub mod nft;
pub mod probe;
pub mod proc;
pub mod quic;
pub mod scenario;
pub mod tempdir;
pub mod tls;
pub mod topology;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub use expect::{binomial_tolerance_pct, Expect};
pub use netns::{veth, Netns};
pub use nft::Chain;
pub use probe::{
    binaries, netcheck_bin, run_client, start_server, try_run_client, try_start_server, Binaries,
    ClientRun, ServerHandle, ServerReady,
};
pub use proc::{run_bounded, run_checked, Finished, Proc};
pub use scenario::{run_named, run_scenario_file, Scenario};
pub use tempdir::TempDir;
pub use topology::{NatConfig, PortMap, Proto, Role, Topology, TopologyKind};

/// A name fragment unique to this process and call: `"{pid}-{counter}"`.
pub fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the effective uid of this process is 0.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Panics (never skips) when not running as root.
pub fn require_root() {
    assert!(
        is_root(),
        "the network-namespace integration tests need root: run `sudo cargo test --workspace` (a plain `cargo test` runs only the unit and property tests)"
    );
}

/// The workspace root (parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The directory holding this crate's scenario TOML files.
pub fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Last `max` bytes of `s` (on a char boundary), with a marker if cut.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {} bytes cut …]\n{}", start, &s[start..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_cuts_on_char_boundary() {
        assert_eq!(super::tail("abc", 10), "abc");
        let t = super::tail("ééé", 3);
        assert!(t.ends_with('é'), "{t}");
    }

    #[test]
    fn unique_ids_differ() {
        assert_ne!(super::unique_id(), super::unique_id());
    }
}
