//! The probe binaries: building/locating them, starting the server, running
//! the client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::netns::Netns;
use crate::proc::{LineWait, Proc};
use crate::tempdir::TempDir;

/// Bound for `cargo build` of the binaries (override with
/// `PROBE_TESTS_BUILD_TIMEOUT_SECS`).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long [`start_server`] waits for the ready line.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default lifetime bound of a server started by [`start_server`].
pub const SERVER_LIFETIME: Duration = Duration::from_secs(180);

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// probe-server.
    pub server: PathBuf,
    /// probe-client.
    pub client: PathBuf,
}

/// `target/<profile>` of the running test binary
/// (`target/debug/deps/x` → `target/debug`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe has a parent").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir
    }
}

/// Builds probe-server and probe-client once per test process and returns
/// their paths.  Panics if not root, or if the build fails.
///
/// Runs `$CARGO build -p probe-server -p probe-client` (CARGO, else
/// `cargo`) in the workspace with the target dir and profile of the running
/// test binary.  With `PROBE_TESTS_BIN_DIR` set, uses the binaries there
/// instead of building.
pub fn binaries() -> &'static Binaries {
    crate::require_root();
    static BINS: OnceLock<Result<Binaries, String>> = OnceLock::new();
    match BINS.get_or_init(build_binaries) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn build_binaries() -> Result<Binaries, String> {
    let dir = match std::env::var_os("PROBE_TESTS_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let profile_dir = profile_dir();
            let target_dir = profile_dir
                .parent()
                .ok_or("profile dir has no parent")?
                .to_path_buf();
            let profile = profile_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(&cargo);
            cmd.current_dir(crate::workspace_root())
                .env("CARGO_TARGET_DIR", &target_dir)
                .args(["build", "-p", "probe-server", "-p", "probe-client"]);
            match profile.as_str() {
                "debug" => {}
                "release" => {
                    cmd.arg("--release");
                }
                other => {
                    cmd.args(["--profile", other]);
                }
            }
            let timeout = std::env::var("PROBE_TESTS_BUILD_TIMEOUT_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(BUILD_TIMEOUT);
            let desc = format!("{cmd:?}");
            let done = crate::proc::run_bounded(cmd, "cargo build (probe binaries)", timeout);
            if !done.success() {
                return Err(format!(
                    "building the probe binaries failed ({desc}):\n{}",
                    done.describe()
                ));
            }
            profile_dir
        }
    };
    let server = dir.join("probe-server");
    let client = dir.join("probe-client");
    for b in [&server, &client] {
        if !b.is_file() {
            return Err(format!("binary not found after build: {}", b.display()));
        }
    }
    Ok(Binaries { server, client })
}

/// The `probe-netcheck` helper binary of this crate (built by cargo
/// alongside the integration tests).
pub fn netcheck_bin() -> PathBuf {
    let p = profile_dir().join("probe-netcheck");
    assert!(
        p.is_file(),
        "{} not found (it is built by `cargo test -p probe-tests`)",
        p.display()
    );
    p
}

/// What the server printed on its ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReady {
    /// UDP listen address.
    pub udp: SocketAddr,
    /// TCP listen address.
    pub tcp: SocketAddr,
    /// Certificate pin, `sha256:HEX`.
    pub pin: String,
}

/// Applies the probe processes' environment: inherited `PROBE_*` variables
/// (e.g. `PROBE_PIN`, `PROBE_SERVER_LISTEN`, which the binaries read) are
/// removed so the test alone decides, `NO_COLOR=1` keeps logs readable,
/// then `env` is added.
pub fn probe_env(cmd: &mut std::process::Command, env: &BTreeMap<String, String>) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("PROBE_") && !k.starts_with("PROBE_TESTS_") {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.envs(env);
}

/// Prefix of the server's ready line.
pub const READY_PREFIX: &str = "probe-server ready ";

/// Parses `probe-server ready udp=IP:PORT tcp=IP:PORT pin=sha256:HEX`.
pub fn parse_ready_line(line: &str) -> Result<ServerReady, String> {
    let err = |why: &str| format!("bad ready line ({why}): {line:?}");
    let rest = line
        .trim_end()
        .strip_prefix(READY_PREFIX)
        .ok_or_else(|| err("prefix"))?;
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != 3 {
        return Err(err("want exactly udp=, tcp=, pin="));
    }
    let get = |key: &str, f: &str| f.strip_prefix(key).map(str::to_string);
    let udp = get("udp=", fields[0]).ok_or_else(|| err("udp="))?;
    let tcp = get("tcp=", fields[1]).ok_or_else(|| err("tcp="))?;
    let pin = get("pin=", fields[2]).ok_or_else(|| err("pin="))?;
    let udp: SocketAddr = udp.parse().map_err(|_| err("udp address"))?;
    let tcp: SocketAddr = tcp.parse().map_err(|_| err("tcp address"))?;
    let hex = pin
        .strip_prefix("sha256:")
        .ok_or_else(|| err("pin must be sha256:HEX"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("pin must be 64 hex digits"));
    }
    Ok(ServerReady { udp, tcp, pin })
}

/// A running probe-server.  Dropping it kills the server.
#[derive(Debug)]
pub struct ServerHandle {
    /// Parsed ready line.
    pub ready: ServerReady,
    proc: Proc,
    state_dir: Option<TempDir>,
}

impl ServerHandle {
    /// Certificate pin (`sha256:HEX`).
    pub fn pin(&self) -> &str {
        &self.ready.pin
    }

    /// stderr so far (logs).
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// stdout so far (including the ready line).
    pub fn stdout(&self) -> String {
        self.proc.stdout()
    }

    /// The state dir created by [`start_server_with_state`], if any.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_ref().map(TempDir::path)
    }

    /// `Some(status)` if the server has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.try_status()
    }

    /// The underlying process.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Kills the server and returns its output.
    pub fn stop(self) -> crate::proc::Finished {
        self.proc.finish(Duration::ZERO)
    }
}

/// Starts `probe-server ARGS` in `ns` and waits (≤ 10 s) for its ready
/// line.  Panics with the server's output if it does not come.
pub fn start_server<S: AsRef<str>>(ns: &Netns, args: &[S]) -> ServerHandle {
    try_start_server(ns, args, SERVER_READY_TIMEOUT, SERVER_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Creates a state dir and starts
/// `probe-server --listen LISTEN --state-dir DIR EXTRA…` with extra
/// environment `env`; the dir lives as long as the handle.
pub fn start_server_with_state<S: AsRef<str>>(
    ns: &Netns,
    listen: &str,
    extra: &[S],
    env: &BTreeMap<String, String>,
    lifetime: Duration,
) -> Result<ServerHandle, String> {
    let dir = TempDir::new("server-state");
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--state-dir".to_string(),
        dir.path().display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.as_ref().to_string()));
    let mut h = spawn_server(ns, &args, env, SERVER_READY_TIMEOUT, lifetime)?;
    h.state_dir = Some(dir);
    Ok(h)
}

/// [`start_server`] returning the failure instead of panicking.
pub fn try_start_server<S: AsRef<str>>(
    ns: &Netns,
    args: &[S],
    ready_timeout: Duration,
    lifetime: Duration,
) -> Result<ServerHandle, String> {
    spawn_server(ns, args, &BTreeMap::new(), ready_timeout, lifetime)
}

fn spawn_server<S: AsRef<str>>(
    ns: &Netns,
    args: &[S],
    env: &BTreeMap<String, String>,
    ready_timeout: Duration,
    lifetime: Duration,
) -> Result<ServerHandle, String> {
    let bins = crate::binaries();
    let mut argv = vec![bins.server.display().to_string()];
    argv.extend(args.iter().map(|a| a.as_ref().to_string()));
    let mut cmd = ns.argv_command(&argv);
    probe_env(&mut cmd, env);
    let mut proc = Proc::spawn(cmd, format!("[{}] probe-server", ns.name()), lifetime)
        .map_err(|e| format!("cannot spawn probe-server: {e}"))?;
    let waited = proc
        .stdout_capture()
        .wait_for_line(ready_timeout, |l| l.starts_with(READY_PREFIX));
    let fail = |proc: &mut Proc, why: String| {
        proc.kill();
        format!(
            "probe-server did not become ready: {why}\nargv: {argv:?}\n--- server stdout ---\n{}\n--- server stderr ---\n{}",
            crate::tail(&proc.stdout(), 16 * 1024),
            crate::tail(&proc.stderr(), 16 * 1024)
        )
    };
    match waited {
        Ok(line) => match parse_ready_line(&line) {
            Ok(ready) => Ok(ServerHandle {
                ready,
                proc,
                state_dir: None,
            }),
            Err(e) => Err(fail(&mut proc, e)),
        },
        Err(LineWait::Timeout) => Err(fail(
            &mut proc,
            format!("no ready line within {ready_timeout:?}"),
        )),
        Err(LineWait::Closed) => {
            let st = proc.wait_timeout(Duration::from_secs(2));
            Err(fail(
                &mut proc,
                format!("stdout closed without a ready line (exit: {st:?})"),
            ))
        }
    }
}

/// Result of one probe-client run.
#[derive(Debug, Clone)]
pub struct ClientRun {
    /// Exit code; `None` if killed (timeout or signal).
    pub code: Option<i32>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
    /// stdout parsed as JSON (the report), if it parses.
    pub json: Option<serde_json::Value>,
    /// Killed at the wall-clock bound.
    pub timed_out: bool,
    /// Wall-clock time including process start.
    pub elapsed: Duration,
    /// The argv that ran.
    pub argv: Vec<String>,
}

impl ClientRun {
    /// Multi-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "probe-client argv: {:?}\nexit code: {:?}{} after {:?}\n--- client stdout ---\n{}\n--- client stderr ---\n{}",
            self.argv,
            self.code,
            if self.timed_out { " (KILLED at bound)" } else { "" },
            self.elapsed,
            crate::tail(&self.stdout, 32 * 1024),
            crate::tail(&self.stderr, 16 * 1024)
        )
    }
}

/// Parses a report from stdout: the whole of it, else the first JSON value
/// starting at the first line that begins with `{`.
pub fn parse_report(stdout: &str) -> Option<serde_json::Value> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(stdout.trim()) {
        return Some(v);
    }
    let start = stdout
        .match_indices('{')
        .map(|(i, _)| i)
        .find(|&i| i == 0 || stdout.as_bytes()[i - 1] == b'\n')?;
    serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()
}

/// Runs `probe-client ARGS` in `ns`, killing it after `timeout`; never
/// panics on the outcome (check `timed_out` / `code`).
pub fn try_run_client<S: AsRef<str>>(ns: &Netns, args: &[S], timeout: Duration) -> ClientRun {
    try_run_client_env(ns, args, &BTreeMap::new(), timeout)
}

/// [`try_run_client`] with extra environment variables.
pub fn try_run_client_env<S: AsRef<str>>(
    ns: &Netns,
    args: &[S],
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> ClientRun {
    let bins = crate::binaries();
    let mut argv = vec![bins.client.display().to_string()];
    argv.extend(args.iter().map(|a| a.as_ref().to_string()));
    let mut cmd = ns.argv_command(&argv);
    probe_env(&mut cmd, env);
    let done = crate::proc::run_bounded(cmd, format!("[{}] probe-client", ns.name()), timeout);
    ClientRun {
        code: done.code(),
        json: parse_report(&done.stdout),
        stdout: done.stdout,
        stderr: done.stderr,
        timed_out: done.timed_out,
        elapsed: done.elapsed,
        argv,
    }
}

/// Like [`try_run_client`] but fails (panics with the output) if the client
/// ran past `timeout`.
pub fn run_client<S: AsRef<str>>(ns: &Netns, args: &[S], timeout: Duration) -> ClientRun {
    let run = try_run_client(ns, args, timeout);
    assert!(
        !run.timed_out,
        "probe-client exceeded its {timeout:?} bound and was killed\n{}",
        run.describe()
    );
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF";

    #[test]
    fn parses_ready_line() {
        let r = parse_ready_line(&format!(
            "probe-server ready udp=0.0.0.0:8443 tcp=0.0.0.0:8443 pin={PIN}"
        ))
        .unwrap();
        assert_eq!(r.udp, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(r.tcp.port(), 8443);
        assert_eq!(r.pin, PIN);
        let v6 = parse_ready_line(&format!(
            "probe-server ready udp=[::]:1 tcp=[::1]:2 pin={PIN}\n"
        ))
        .unwrap();
        assert_eq!(v6.tcp.port(), 2);
    }

    #[test]
    fn rejects_bad_ready_lines() {
        for bad in [
            "probe-server ready udp=0.0.0.0:8443 tcp=0.0.0.0:8443".to_string(),
            format!("probe-server ready tcp=0.0.0.0:8443 udp=0.0.0.0:8443 pin={PIN}"),
            "probe-server ready udp=0.0.0.0:8443 tcp=0.0.0.0:8443 pin=sha256:xyz".to_string(),
            format!("probe-server ready udp=x tcp=0.0.0.0:8443 pin={PIN}"),
            format!("probe-server  ready udp=0.0.0.0:1 tcp=0.0.0.0:1 pin={PIN}"),
            format!("probe-server ready udp=0.0.0.0:1 tcp=0.0.0.0:1 pin={PIN} extra"),
        ] {
            assert!(parse_ready_line(&bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parses_report() {
        assert_eq!(parse_report(" {\"a\":1}\n").unwrap()["a"], 1);
        assert_eq!(parse_report("log line\n{\"a\":2}\n").unwrap()["a"], 2);
        assert!(parse_report("no json").is_none());
    }

    #[test]
    fn profile_dir_strips_deps() {
        let d = profile_dir();
        assert_ne!(d.file_name().unwrap(), "deps");
    }
}
