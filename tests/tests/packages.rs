//! The Debian packages (issue 15): `scripts/package` builds callprobe-server and callprobe-client,
//! `dpkg -i` installs them on this machine, the installed binaries, man pages, completions, unit,
//! system user and state directory are checked, the installed pair runs against each other once,
//! and `dpkg --purge` must leave nothing behind.
//!
//! Needs root, cargo-deb, dpkg-dev, man-db and systemd's `systemctl`/`systemd-analyze` (`.ci/run`
//! installs them). It refuses to start when the packages or their files are already on the
//! machine, and a guard purges both packages however the test ends.

use probe_tests::probe::{parse_ready_line, probe_env};
use probe_tests::proc::{command, run_bounded, Finished, HELPER_TIMEOUT};
use probe_tests::{Proc, TempDir};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const PACKAGES: [&str; 2] = ["callprobe-server", "callprobe-client"];
const USER: &str = "callprobe";
const STATE_DIR: &str = "/var/lib/probe-server";
const UNIT: &str = "/usr/lib/systemd/system/probe-server.service";
const LIVE_UNIT: &str = "/usr/lib/systemd/system/probe-server-live.service";
/// Made by the maintainer scripts and deb-systemd-helper, so not in `dpkg -L`.
const EXTRA_PATHS: [&str; 5] = [
    STATE_DIR,
    "/etc/systemd/system/probe-server.service",
    "/etc/systemd/system/multi-user.target.wants/probe-server.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/probe-server.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-masked/probe-server.service",
];
/// One page per binary and subcommand.
const MAN_PAGES: [&str; 8] = [
    "probe-server",
    "probe-server-doctor",
    "probe-server-bundle",
    "probe-server-results",
    "probe-client",
    "probe-client-rtcd-api",
    "probe-client-compare",
    "probe-client-completions",
];
/// scripts/package runs a release build: minutes on a busy machine.
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn run(argv: &[&str]) -> Finished {
    let mut cmd = command(argv);
    probe_env(&mut cmd, &BTreeMap::new());
    run_bounded(cmd, argv.join(" "), HELPER_TIMEOUT)
}

fn run_ok(argv: &[&str]) -> Finished {
    let done = run(argv);
    assert!(done.success(), "{}", done.describe());
    done
}

/// `dpkg` with the given arguments; retries while another dpkg or apt holds the lock.
fn dpkg(args: &[&str]) -> Finished {
    let argv: Vec<&str> = std::iter::once("dpkg")
        .chain(args.iter().copied())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = run_bounded(command(&argv), argv.join(" "), Duration::from_secs(120));
        let locked = !done.success() && done.stderr.contains("lock");
        if !locked || Instant::now() > deadline {
            return done;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn installed(package: &str) -> bool {
    let done = run(&["dpkg-query", "-W", "-f", "${Status}", package]);
    done.success() && done.stdout.trim() == "install ok installed"
}

fn account_exists(db: &str, name: &str) -> bool {
    run(&["getent", db, name]).success()
}

/// Purges both packages when dropped, unless [`Purge::done`] was called after a checked purge.
struct Purge {
    armed: bool,
}

impl Purge {
    fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for Purge {
    fn drop(&mut self) {
        if self.armed {
            let done = dpkg(&["--purge", PACKAGES[0], PACKAGES[1]]);
            if !done.success() {
                eprintln!("cleanup purge failed: {}", done.describe());
            }
        }
    }
}

/// One test at a time on this machine may install the packages (other clones run this file too).
struct MachineLock {
    _file: std::fs::File,
}

impl MachineLock {
    fn take() -> MachineLock {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/probe-tests-packages.lock")
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(std::env::temp_dir().join("probe-tests-packages.lock"))
            })
            .expect("cannot open the package test lock file");
        // SAFETY: flock on a file descriptor this struct owns; released when it is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        MachineLock { _file: f }
    }
}

/// Builds both packages; returns (server .deb, client .deb).
fn build_packages() -> (PathBuf, PathBuf) {
    let target_dir = probe_tests::probe::profile_dir()
        .parent()
        .expect("profile dir has a parent")
        .to_path_buf();
    let script = probe_tests::workspace_root().join("scripts/package");
    let mut cmd = std::process::Command::new(&script);
    // The test checks the packaging (files, units, maintainer scripts, the installed pair),
    // not the optimizer: a cheaper release build (opt-level 1, no debug info, which --strip
    // drops anyway) keeps CI within its budget, 211 s instead of 317 s cold on two cores.
    // scripts/package itself builds with the workspace's release profile.
    cmd.current_dir(probe_tests::workspace_root())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0");
    let t0 = Instant::now();
    let done = run_bounded(cmd, "scripts/package", PACKAGE_TIMEOUT);
    assert!(done.success(), "{}", done.describe());
    eprintln!("scripts/package took {:?}", t0.elapsed());
    let debs: Vec<PathBuf> = done.stdout.lines().map(PathBuf::from).collect();
    let find = |name: &str| {
        let want = format!("{name}_{VERSION}-1_");
        let deb = debs
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&want))
            })
            .unwrap_or_else(|| {
                panic!("no {want}*.deb among the paths scripts/package printed: {debs:?}")
            })
            .clone();
        assert!(deb.is_file(), "{} missing", deb.display());
        assert!(
            deb.starts_with(target_dir.join("debian")),
            "{} is not in target/debian",
            deb.display()
        );
        deb
    };
    (find(PACKAGES[0]), find(PACKAGES[1]))
}

/// Files (not directories) the installed packages own, from `dpkg -L`.
fn package_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in PACKAGES {
        let done = run_ok(&["dpkg", "-L", p]);
        for line in done.stdout.lines() {
            let path = Path::new(line.trim());
            if path.is_absolute() && path.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                files.push(path.to_path_buf());
            }
        }
    }
    files
}

fn check_binaries() {
    for bin in ["probe-server", "probe-client"] {
        let done = run_ok(&[&format!("/usr/bin/{bin}"), "--version"]);
        assert_eq!(done.stdout.trim(), format!("{bin} {VERSION}"));
    }
}

fn check_man_pages() {
    for page in MAN_PAGES {
        let done = run_ok(&["man", "-w", page]);
        assert_eq!(
            done.stdout.trim(),
            format!("/usr/share/man/man1/{page}.1.gz"),
            "man -w {page}"
        );
    }
    // The rendered page, without hyphenation and justification, lines joined.
    let mut cmd = command(&["man", "--nh", "--nj", "-P", "cat", "probe-client"]);
    cmd.env("MANWIDTH", "100");
    let page = run_bounded(cmd, "man probe-client", HELPER_TIMEOUT);
    assert!(page.success(), "{}", page.describe());
    let text = page.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "NAME probe-client - Tests the network path",
        "--pin <PIN> Refuse a server whose certificate does not have this SHA-256 pin",
        "May also be specified with the PROBE_PIN environment variable.",
        "SUBCOMMANDS probe-client-rtcd-api(1)",
        "probe-client-completions(1)",
    ] {
        assert!(
            text.contains(want),
            "man probe-client lacks {want:?}:\n{}",
            page.stdout
        );
    }
}

fn check_completions() {
    for bin in ["probe-server", "probe-client"] {
        let bash = format!("/usr/share/bash-completion/completions/{bin}");
        let zsh = std::fs::read_to_string(format!("/usr/share/zsh/vendor-completions/_{bin}"))
            .expect("zsh completion");
        assert!(zsh.starts_with(&format!("#compdef {bin}")), "{zsh:.200}");
        let fish =
            std::fs::read_to_string(format!("/usr/share/fish/vendor_completions.d/{bin}.fish"))
                .expect("fish completion");
        assert!(fish.contains(&format!("complete -c {bin} ")), "{fish:.200}");
        // The bash one completes for real: load it, ask for `BIN --vers`, expect --version.
        let script = format!(
            "source {bash}; spec=$(complete -p {bin}); fn=${{spec##*-F }}; fn=${{fn%% *}}; \
             COMP_WORDS=({bin} --vers); COMP_CWORD=1; COMP_LINE='{bin} --vers'; COMP_POINT=${{#COMP_LINE}}; \
             \"$fn\" {bin} --vers {bin}; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let done = run_ok(&["bash", "-c", &script]);
        assert_eq!(
            done.stdout.trim(),
            "--version",
            "bash completion of `{bin} --vers`"
        );
    }
    // What the package installs is what `probe-client completions` prints.
    for (shell, path) in [
        (
            "bash",
            "/usr/share/bash-completion/completions/probe-client",
        ),
        ("zsh", "/usr/share/zsh/vendor-completions/_probe-client"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/probe-client.fish",
        ),
    ] {
        let printed = run_ok(&["/usr/bin/probe-client", "completions", shell]);
        let file = std::fs::read_to_string(path).expect(path);
        assert!(
            printed.stdout == file,
            "probe-client completions {shell} differs from {path}"
        );
    }
}

fn check_unit_and_user() {
    let unit = std::fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("{UNIT}: {e}"));
    let lines: Vec<&str> = unit.lines().collect();
    for want in [
        "ExecStart=/usr/bin/probe-server",
        "User=callprobe",
        "Group=callprobe",
        "StateDirectory=probe-server",
        "Environment=PROBE_SERVER_STATE_DIR=/var/lib/probe-server",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&want), "{UNIT} lacks {want:?}:\n{unit}");
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("DynamicUser=")),
        "{UNIT} still has DynamicUser:\n{unit}"
    );
    run_ok(&["systemd-analyze", "verify", UNIT]);
    let live = std::fs::read_to_string(LIVE_UNIT).unwrap_or_else(|e| panic!("{LIVE_UNIT}: {e}"));
    for want in [
        "ExecStart=/usr/bin/probe-server live",
        "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW",
    ] {
        assert!(
            live.lines().any(|l| l == want),
            "{LIVE_UNIT} lacks {want:?}:\n{live}"
        );
    }
    run_ok(&["systemd-analyze", "verify", LIVE_UNIT]);
    let enabled = run(&["systemctl", "is-enabled", "probe-server-live.service"]);
    assert_eq!(enabled.stdout.trim(), "disabled", "{}", enabled.describe());
    // Installed, not enabled.
    let enabled = run(&["systemctl", "is-enabled", "probe-server.service"]);
    assert_eq!(enabled.stdout.trim(), "disabled", "{}", enabled.describe());
    assert!(
        !Path::new(EXTRA_PATHS[2]).exists(),
        "{} exists",
        EXTRA_PATHS[2]
    );

    let passwd = run_ok(&["getent", "passwd", USER]).stdout;
    let f: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(f.len(), 7, "{passwd}");
    let uid: u32 = f[2].parse().expect("uid");
    assert!(uid < 1000, "{USER} is not a system user: {passwd}");
    assert_eq!((f[5], f[6]), (STATE_DIR, "/usr/sbin/nologin"), "{passwd}");
    let group = run_ok(&["getent", "group", USER]).stdout;
    let gid: u32 = group
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("gid");
    assert_eq!(f[3].parse::<u32>().ok(), Some(gid), "{passwd} / {group}");
    let meta = std::fs::metadata(STATE_DIR).expect(STATE_DIR);
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner of {STATE_DIR}");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o700,
        "mode of {STATE_DIR}"
    );
}

/// Runs the installed server on 127.0.0.1 (a free port, a temporary state directory) and the
/// installed client against it with the pin from the ready line.
fn run_installed_pair() {
    let state = TempDir::new("package-state");
    let mut attempt = 0;
    let (mut server, port, pin) = loop {
        attempt += 1;
        let port = free_port();
        let mut cmd = command(&[
            "/usr/bin/probe-server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
            &state.path().display().to_string(),
            "--log",
            "warn",
        ]);
        probe_env(&mut cmd, &BTreeMap::new());
        let server = Proc::spawn(cmd, "installed probe-server", Duration::from_secs(120))
            .expect("spawn /usr/bin/probe-server");
        match server
            .stdout_capture()
            .wait_for_line(Duration::from_secs(10), |l| {
                l.starts_with("probe-server ready ")
            }) {
            Ok(line) => {
                let ready = parse_ready_line(&line).unwrap_or_else(|e| panic!("{e}"));
                break (server, port, ready.pin);
            }
            // Someone took the port between the probe and the bind: try another.
            Err(_) if attempt < 3 && server.stderr().contains("taken") => continue,
            Err(e) => panic!(
                "no ready line ({e:?}): {}",
                server.finish(HELPER_TIMEOUT).describe()
            ),
        }
    };
    let client = run_bounded(
        {
            let mut cmd = command(&[
                "/usr/bin/probe-client",
                &format!("127.0.0.1:{port}"),
                "--pin",
                &pin,
                "--site",
                "package-test",
                "--duration",
                "1",
                "--json",
            ]);
            probe_env(&mut cmd, &BTreeMap::new());
            cmd
        },
        "installed probe-client",
        Duration::from_secs(60),
    );
    assert!(
        client.success(),
        "{}\nserver: {}",
        client.describe(),
        server.stderr()
    );
    let report: serde_json::Value = serde_json::from_str(&client.stdout)
        .unwrap_or_else(|e| panic!("client JSON: {e}\n{}", client.stdout));
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["tool_version"], VERSION, "{report:#}");
    assert_eq!(report["server_pin"], pin.as_str(), "{report:#}");
    for t in ["udp", "tcp"] {
        assert_eq!(report[t]["reachable"], true, "{t}: {report:#}");
        let got = report[t]["echo"]["received"].as_u64().unwrap_or(0);
        assert!(got > 0, "{t}: no echo replies: {report:#}");
    }
    // SIGTERM: a clean stop, with the uploaded report in the store.
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) }, 0);
    let status = server.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "server stop: {status:?}: {}",
        server.stderr()
    );
    let results = run_ok(&[
        "/usr/bin/probe-server",
        "results",
        "--state-dir",
        &state.path().display().to_string(),
        "--log",
        "warn",
    ]);
    assert!(
        results
            .stdout
            .lines()
            .any(|l| l.starts_with("package-test ")),
        "{}",
        results.describe()
    );
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// What must be gone: the package files, the maintainer scripts' and deb-systemd-helper's work.
fn check_nothing_left(files: &[PathBuf]) {
    for p in PACKAGES {
        assert!(!installed(p), "{p} is still installed");
    }
    let doc_dirs = PACKAGES.map(|p| PathBuf::from(format!("/usr/share/doc/{p}")));
    let left: Vec<String> = files
        .iter()
        .chain(&doc_dirs)
        .map(|p| p.as_path())
        .chain(EXTRA_PATHS.iter().map(Path::new))
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(left.is_empty(), "left behind after dpkg --purge: {left:?}");
    for page in ["probe-server", "probe-client"] {
        assert!(
            !run(&["man", "-w", page]).success(),
            "man -w {page} still finds a page"
        );
    }
    assert!(!account_exists("passwd", USER), "user {USER} left behind");
    assert!(!account_exists("group", USER), "group {USER} left behind");
}

#[test]
fn packages_install_run_and_purge_cleanly() {
    probe_tests::require_root();
    let _lock = MachineLock::take();
    // Never touch an installation this test did not make.
    for p in PACKAGES {
        assert!(
            !installed(p),
            "{p} is already installed on this machine; remove it first: dpkg --purge {}",
            PACKAGES.join(" ")
        );
    }
    for path in [
        "/usr/bin/probe-server",
        "/usr/bin/probe-client",
        UNIT,
        LIVE_UNIT,
    ]
    .into_iter()
    .chain(EXTRA_PATHS)
    {
        assert!(
            Path::new(path).symlink_metadata().is_err(),
            "{path} exists before the install; this test would remove it"
        );
    }
    assert!(
        !account_exists("passwd", USER),
        "user {USER} exists before the install"
    );
    assert!(
        !account_exists("group", USER),
        "group {USER} exists before the install"
    );

    let (server_deb, client_deb) = build_packages();
    let t0 = Instant::now();
    let guard = Purge { armed: true };
    let install = dpkg(&[
        "-i",
        &server_deb.display().to_string(),
        &client_deb.display().to_string(),
    ]);
    assert!(install.success(), "{}", install.describe());
    for p in PACKAGES {
        assert!(installed(p), "{p} not installed");
    }
    let files = package_files();
    assert!(
        files.iter().any(|f| f == Path::new(UNIT)),
        "{UNIT} not in dpkg -L: {files:?}"
    );

    check_binaries();
    check_man_pages();
    check_completions();
    check_unit_and_user();
    run_installed_pair();

    let purge = dpkg(&["--purge", PACKAGES[0], PACKAGES[1]]);
    assert!(purge.success(), "{}", purge.describe());
    guard.done();
    check_nothing_left(&files);
    eprintln!("install, checks, run and purge took {:?}", t0.elapsed());
}
