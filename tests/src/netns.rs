//! Network namespace guard.
//!
//! [`Netns::new`] runs `ip netns add` with a name unique to this process
//! (`ptest-{pid}-{counter}-{role}`), brings `lo` up and disables IPv6 (so
//! the only traffic is IPv4 in the documentation ranges the topology
//! assigns).  Dropping the guard kills every process still inside the
//! namespace, deletes it and removes `/etc/netns/NAME/`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::proc::{run_bounded, run_bounded_stdin, Finished, Proc, HELPER_TIMEOUT};

/// Prefix of every namespace the harness creates.
pub const PREFIX: &str = "ptest-";

/// Serialises `ip netns add/del` within this process (the first `add` on a
/// fresh machine sets up the /run/netns mount, which races).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace whose name contains `role` (letters, digits, `-`).
    pub fn new(role: &str) -> Netns {
        crate::require_root();
        cleanup_stale_once();
        assert!(
            !role.is_empty()
                && role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "bad namespace role {role:?}"
        );
        let name = format!("{PREFIX}{}-{role}", crate::unique_id());
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let done = run_bounded(
                crate::proc::command(&["ip", "netns", "add", &name]),
                format!("ip netns add {name}"),
                HELPER_TIMEOUT,
            );
            assert!(
                done.success(),
                "cannot create namespace: {}",
                done.describe()
            );
        }
        // From here on the guard owns it, so a failure below still cleans up.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "1");
        ns
    }

    /// The namespace name (as shown by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program` — add args, then spawn through
    /// [`Proc`] / [`run_bounded`] (which pipe output and bound the time).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `command(argv[0]).args(argv[1..])`.
    pub fn argv_command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        assert!(!argv.is_empty(), "empty argv");
        let mut cmd = self.command(argv[0].as_ref());
        cmd.args(&argv[1..]);
        cmd
    }

    /// Runs `argv` inside the namespace, bounded by `timeout`; never panics
    /// on a non-zero exit.
    pub fn try_exec<S: AsRef<OsStr>>(&self, argv: &[S], timeout: Duration) -> Finished {
        let label = self.label_for(argv);
        run_bounded(self.argv_command(argv), label, timeout)
    }

    /// Runs `argv` inside the namespace (bound [`HELPER_TIMEOUT`]) and panics
    /// with its output unless it exits 0.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Finished {
        let done = self.try_exec(argv, HELPER_TIMEOUT);
        assert!(done.success(), "command failed: {}", done.describe());
        done
    }

    /// Spawns a background process inside the namespace; it is killed after
    /// `lifetime` or when the returned handle drops.
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S], lifetime: Duration) -> Proc {
        let label = self.label_for(argv);
        Proc::spawn(self.argv_command(argv), label.clone(), lifetime)
            .unwrap_or_else(|e| panic!("cannot spawn {label}: {e}"))
    }

    fn label_for<S: AsRef<OsStr>>(&self, argv: &[S]) -> String {
        let words: Vec<String> = argv
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        format!("[{}] {}", self.name, words.join(" "))
    }

    /// `ip -n NAME args…`, checked.
    pub fn ip(&self, args: &[&str]) {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        let done = run_bounded(
            cmd,
            format!("ip -n {} {}", self.name, args.join(" ")),
            HELPER_TIMEOUT,
        );
        assert!(done.success(), "command failed: {}", done.describe());
    }

    /// `ip -n NAME -batch -` with one `ip` command per line, checked.
    pub fn ip_batch(&self, lines: &[String]) {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name, "-batch", "-"]);
        let script = lines.join("\n") + "\n";
        let done = run_bounded_stdin(
            cmd,
            format!("ip -n {} -batch -", self.name),
            HELPER_TIMEOUT,
            Some(script.clone().into_bytes()),
        );
        assert!(
            done.success(),
            "ip batch failed:\n{script}\n{}",
            done.describe()
        );
    }

    /// Sets a sysctl inside the namespace (writes `/proc/sys/…` through
    /// `sh`, so procps is not needed), checked.
    pub fn sysctl(&self, key: &str, value: &str) {
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'),
            "bad sysctl key {key:?}"
        );
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec(&[
            "sh",
            "-c",
            "printf '%s\\n' \"$1\" > \"$2\"",
            "sh",
            value,
            &path,
        ]);
    }

    /// Re-enables IPv6 (disabled by [`Netns::new`]).
    pub fn enable_ipv6(&self) {
        self.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
        self.sysctl("net.ipv6.conf.default.disable_ipv6", "0");
        self.sysctl("net.ipv6.conf.lo.disable_ipv6", "0");
    }

    /// `/etc/netns/NAME`: files here are bind-mounted over `/etc/FILE` for
    /// processes started with `ip netns exec` (only for files that exist in
    /// /etc, e.g. `hosts`, `resolv.conf`).
    pub fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Writes `/etc/netns/NAME/FILE`.  Affects processes started afterwards.
    pub fn write_etc_file(&self, file: &str, contents: &str) {
        assert!(
            !file.contains('/') && !file.is_empty(),
            "bad /etc file name {file:?}"
        );
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let path = dir.join(file);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Writes the namespace's hosts file: `localhost` plus `entries`
    /// (`"IP NAME [NAME…]"` lines).
    pub fn write_hosts<S: AsRef<str>>(&self, entries: &[S]) {
        let mut text = String::from("127.0.0.1\tlocalhost\n");
        for e in entries {
            let e = e.as_ref();
            assert!(!e.contains('\n'), "hosts entry with newline: {e:?}");
            text.push_str(e);
            text.push('\n');
        }
        self.write_etc_file("hosts", &text);
    }

    /// Points the resolver at 127.0.0.1 inside the namespace (nothing
    /// listens there), so a stray DNS lookup fails fast on `lo` instead of
    /// being addressed to the host's real resolver.  Names for tests go in
    /// [`Netns::write_hosts`].  No-op if the host has no /etc/resolv.conf.
    pub fn isolate_dns(&self) {
        if std::path::Path::new("/etc/resolv.conf").exists() {
            self.write_etc_file(
                "resolv.conf",
                "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            );
        }
    }

    /// Applies an nftables script inside the namespace (`nft -f -`), checked.
    pub fn nft(&self, script: &str) {
        let cmd = self.argv_command(&["nft", "-f", "-"]);
        let done = run_bounded_stdin(
            cmd,
            format!("[{}] nft -f -", self.name),
            HELPER_TIMEOUT,
            Some(script.as_bytes().to_vec()),
        );
        assert!(
            done.success(),
            "nft failed in {}:\n{script}\n{}",
            self.name,
            done.describe()
        );
    }

    /// `nft list ruleset` (for failure messages; never panics).
    pub fn ruleset(&self) -> String {
        let done = self.try_exec(&["nft", "list", "ruleset"], HELPER_TIMEOUT);
        if done.success() {
            done.stdout
        } else {
            format!("<nft list ruleset failed: {}>", done.stderr.trim())
        }
    }

    /// Pids of processes inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        ns_pids(&self.name)
    }

    /// Polls `ss` until something listens on `spec`: `"udp:PORT"`,
    /// `"tcp:PORT"`, `"udp:IP:PORT"` or `"tcp:IP:PORT"`.
    pub fn wait_listening(&self, spec: &str, timeout: Duration) -> Result<(), String> {
        let (proto, rest) = spec
            .split_once(':')
            .ok_or_else(|| format!("bad listen spec {spec:?} (want udp:PORT or tcp:IP:PORT)"))?;
        let flag = match proto {
            "udp" => "-Hlnu",
            "tcp" => "-Hlnt",
            _ => return Err(format!("bad protocol in listen spec {spec:?}")),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.try_exec(&["ss", flag], HELPER_TIMEOUT);
            let found = done.stdout.lines().any(|l| {
                let local = l.split_whitespace().nth(3).unwrap_or("");
                if rest.contains(':') {
                    local == rest
                } else {
                    local.rsplit_once(':').is_some_and(|(_, p)| p == rest)
                }
            });
            if found {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nothing listening on {spec} in {} after {timeout:?}; ss says:\n{}",
                    self.name, done.stdout
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

fn ns_pids(name: &str) -> Vec<u32> {
    let done = run_bounded(
        crate::proc::command(&["ip", "netns", "pids", name]),
        format!("ip netns pids {name}"),
        HELPER_TIMEOUT,
    );
    done.stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills what is left inside, deletes the namespace and its /etc/netns dir.
/// Never panics (it runs in Drop, possibly during unwinding).
fn delete_netns(name: &str) {
    let pids = ns_pids(name);
    if !pids.is_empty() {
        // The shell's builtin kill: no procps needed.
        let mut argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            "kill -KILL \"$@\"".to_string(),
            "sh".to_string(),
        ];
        argv.extend(pids.iter().map(u32::to_string));
        let _ = run_bounded(crate::proc::command(&argv), "kill", HELPER_TIMEOUT);
    }
    let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..5 {
        let done = run_bounded(
            crate::proc::command(&["ip", "netns", "del", name]),
            format!("ip netns del {name}"),
            HELPER_TIMEOUT,
        );
        if done.success() || !list().iter().any(|n| n == name) {
            break;
        }
        if attempt == 4 {
            eprintln!(
                "probe-tests: could not delete namespace {name}: {}",
                done.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let etc = PathBuf::from("/etc/netns").join(name);
    if etc.exists() {
        if let Err(e) = std::fs::remove_dir_all(&etc) {
            eprintln!("probe-tests: could not remove {}: {e}", etc.display());
        }
    }
}

/// Names from `ip netns list`.
pub fn list() -> Vec<String> {
    let done = run_bounded(
        crate::proc::command(&["ip", "netns", "list"]),
        "ip netns list",
        HELPER_TIMEOUT,
    );
    done.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether a namespace of that name exists.
pub fn exists(name: &str) -> bool {
    list().iter().any(|n| n == name)
}

/// Deletes `ptest-PID-…` namespaces left by harness processes that no
/// longer exist (e.g. a test binary that was SIGKILLed).  Namespaces of
/// live processes (parallel test binaries) are left alone.
pub fn cleanup_stale() {
    for name in list() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            eprintln!("probe-tests: removing stale namespace {name}");
            delete_netns(&name);
        }
    }
}

fn cleanup_stale_once() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(cleanup_stale);
}

/// Creates a veth pair with one end (`a_if`) directly in `a` and the other
/// (`b_if`) directly in `b`, both up.  Interface names only need to be
/// unique inside their namespace (max 15 bytes).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    for n in [a_if, b_if] {
        assert!(n.len() <= 15 && !n.is_empty(), "bad interface name {n:?}");
    }
    let mut cmd = Command::new("ip");
    cmd.args([
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    let done = run_bounded(
        cmd,
        format!("veth {a_if}@{} <-> {b_if}@{}", a.name(), b.name()),
        HELPER_TIMEOUT,
    );
    assert!(done.success(), "cannot create veth: {}", done.describe());
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Runs `f` on a thread that has joined `ns`'s network namespace: every socket it opens lives
/// there (and stays there when handed back to other threads).
pub fn spawn_in_ns<T, F>(ns: &Netns, f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new("/run/netns").join(ns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // SAFETY: setns only changes the calling thread's network namespace; the fd is open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        f()
    })
}

/// An IPv4 socket address as the C API takes it.
pub fn sockaddr_in(a: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP connection from a chosen local address (std cannot bind before connecting).
pub fn tcp_connect_from(
    src: std::net::Ipv4Addr,
    dst: std::net::SocketAddrV4,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor that the TcpStream owns (and closes) from the
    // moment it exists; the sockaddr structs outlive the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sockaddr_in(std::net::SocketAddrV4::new(src, 0));
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr_in(dst);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}
