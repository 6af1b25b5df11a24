//! The binaries' contract with the people who run them: exit codes, the one-sentence errors,
//! the ready line, signals, and what goes to stdout and stderr. Real binaries on loopback
//! inside a namespace of their own, so the tests never collide on a port.

use probe_tests::probe::start_server_with_state;
use probe_tests::{binaries, Netns, ServerHandle, TempDir};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const LIFETIME: Duration = Duration::from_secs(60);
const LISTEN: &str = "127.0.0.1:8443";

fn server(ns: &Netns, extra: &[&str]) -> ServerHandle {
    start_server_with_state(ns, LISTEN, extra, &BTreeMap::new(), LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn client(ns: &Netns, args: &[&str]) -> probe_tests::Finished {
    let mut argv = vec![binaries().client.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    ns.try_exec(&argv, Duration::from_secs(30))
}

fn server_cmd(ns: &Netns, args: &[&str]) -> probe_tests::Finished {
    let mut argv = vec![binaries().server.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    ns.try_exec(&argv, Duration::from_secs(15))
}

/// Log lines without colour codes, whatever the terminal settings.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn one_sentence(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
}

fn sigterm(h: &mut ServerHandle) -> (Option<std::process::ExitStatus>, Duration) {
    let pid = h.proc_mut().pid().to_string();
    let t0 = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let st = h.proc_mut().wait_timeout(Duration::from_secs(5));
    (st, t0.elapsed())
}

/// probe-server started on [`LISTEN`] while something else holds it.
fn server_on_a_taken_port(ns: &Netns) -> probe_tests::Finished {
    let state = TempDir::new("taken");
    server_cmd(
        ns,
        &[
            "--listen",
            LISTEN,
            "--state-dir",
            &state.path().display().to_string(),
        ],
    )
}

#[test]
fn port_taken_says_rtcd_and_exits_2() {
    let ns = Netns::new("cli");
    let _first = server(&ns, &[]);
    // The next port is taken too: the port suggested is one that is free.
    let _next = start_server_with_state(
        &ns,
        "127.0.0.1:8444",
        &[] as &[&str],
        &BTreeMap::new(),
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let done = server_on_a_taken_port(&ns);
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr
            .contains("--listen 127.0.0.1:8445 (free for UDP and TCP now)"),
        "{}",
        done.stderr
    );
    assert!(done.stdout.is_empty(), "no ready line: {}", done.stdout);
    assert!(
        done.stderr.contains("8443")
            && done.stderr.contains("already in use")
            && done.stderr.contains("RTCD")
    );
    // The holder is named: here a probe-server left running, which is not RTCD.
    assert!(
        done.stderr.contains("by probe-server (pid ") && done.stderr.contains("not RTCD"),
        "{}",
        done.stderr
    );
    one_sentence(&done.stderr);
}

/// RTCD (the stand-in, whose name says rtcd) on the port: the probe says it is RTCD's.
#[test]
fn port_held_by_rtcd_names_it() {
    let ns = Netns::new("cli");
    let standin = ns.spawn(
        &[env!("CARGO_BIN_EXE_rtcd-standin"), "serve"],
        Duration::from_secs(60),
    );
    standin
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("rtcd-standin ready")
        })
        .unwrap_or_else(|e| panic!("stand-in not ready ({e:?}): {}", standin.stderr()));
    let done = server_on_a_taken_port(&ns);
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr
            .contains("already in use by RTCD (rtcd-standin, pid "),
        "{}",
        done.stderr
    );
    one_sentence(&done.stderr);
}

#[test]
fn sigterm_stops_cleanly_within_a_second() {
    let ns = Netns::new("cli");
    let mut h = server(&ns, &[]);
    let run = client(
        &ns,
        &["127.0.0.1", "--duration", "0.5", "--json", "--pin", h.pin()],
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let (st, took) = sigterm(&mut h);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", h.stderr());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // A clean run leaves nothing dropped: every byte the client sent was understood. (QUIC
    // with a greased fixed bit once landed in the STUN range here.)
    let log = plain(&h.stderr());
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped"))
        .expect("a stopped line");
    assert!(stopped.contains("dropped=0 "), "{stopped}");
    assert!(stopped.contains("sessions_opened=1 "), "{stopped}");
}

#[test]
fn ready_line_and_pin_are_stable_across_restarts() {
    let ns = Netns::new("cli");
    let state = TempDir::new("state");
    let dir = state.path().display().to_string();
    let args = ["--listen", LISTEN, "--state-dir", dir.as_str()];
    let first =
        probe_tests::try_start_server(&ns, &args, Duration::from_secs(10), LIFETIME).unwrap();
    let pin = first.ready.pin.clone();
    assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
    assert_eq!(first.ready.udp.to_string(), LISTEN);
    assert_eq!(first.ready.tcp.to_string(), LISTEN);
    first.stop();
    let second =
        probe_tests::try_start_server(&ns, &args, Duration::from_secs(10), LIFETIME).unwrap();
    assert_eq!(second.ready.pin, pin);
}

#[test]
fn human_report_on_stdout_and_quiet_stderr_when_not_a_terminal() {
    let ns = Netns::new("cli");
    let h = server(&ns, &[]);
    let run = client(
        &ns,
        &[
            "127.0.0.1:8443",
            "--duration",
            "0.5",
            "--site",
            "lab",
            "--pin",
            h.pin(),
        ],
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert!(run.stdout.contains("Verdict: PASS"), "{}", run.stdout);
    assert!(run.stdout.contains("site lab"), "{}", run.stdout);
    assert!(
        run.stderr.is_empty(),
        "no progress line without a terminal: {:?}",
        run.stderr
    );
}

#[test]
fn a_closed_port_is_a_verdict_not_a_log_line() {
    // Nothing listens: the report says "refused", and no warning about an upload that had no
    // server to go to follows it.
    let ns = Netns::new("cli");
    let run = client(&ns, &["127.0.0.1:8449", "--duration", "0.5"]);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(run.stdout.contains("UDP  REFUSED"), "{}", run.stdout);
    assert!(run.stdout.contains("TCP  REFUSED"), "{}", run.stdout);
    assert!(
        run.stdout.contains("127.0.0.1:8449 refused UDP and TCP"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "{:?}", run.stderr);
}

#[test]
fn load_mode_says_why_sessions_were_refused() {
    // 12 sessions from one address against the default of 8 per address: the summary names
    // the limit the server gave, not only a count.
    let ns = Netns::new("cli");
    let h = server(&ns, &[]);
    let run = client(
        &ns,
        &[
            "127.0.0.1:8443",
            "--sessions",
            "12",
            "--duration",
            "3",
            "--pin",
            h.pin(),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("refused ") && l.contains("max-sessions-per-ip=8"))
        .unwrap_or_else(|| panic!("no reason line:\n{}", run.describe()));
    let n: usize = line["refused ".len()..]
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        run.stdout.contains(&format!("(of which refused {n})")),
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("WARN"),
        "one summary, no warning per session: {}",
        run.stderr
    );
    assert!(
        run.stdout.contains("run fewer --sessions"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_input_gets_one_sentence_and_exit_2() {
    let ns = Netns::new("cli");
    let h = server(&ns, &[]);
    let cases: &[(&[&str], &str)] = &[
        (&["127.0.0.1", "--no-udp", "--no-tcp"], "nothing to test"),
        (&["no-such-host.invalid"], "cannot resolve"),
        (&["127.0.0.1:99999"], "not a server address"),
        (
            &["127.0.0.1", "--pin", "sha256:abc"],
            "not a certificate pin",
        ),
        (&["127.0.0.1", "--token", " "], "token is empty"),
    ];
    for (args, says) in cases {
        let t0 = Instant::now();
        let run = client(&ns, args);
        assert_eq!(run.code(), Some(2), "{args:?}: {}", run.describe());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        one_sentence(&run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "{args:?} took {:?}",
            t0.elapsed()
        );
    }
    // A pin that is well-formed but not the server's: refuse to talk to it.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let run = client(&ns, &["127.0.0.1", "--pin", &wrong]);
    assert_eq!(run.code(), Some(2), "{}", run.describe());
    assert!(
        run.stderr.contains(h.pin()) && run.stderr.contains("pinned"),
        "{}",
        run.stderr
    );
    // clap's usage errors also exit 2.
    for args in [
        &["--duration", "abc", "127.0.0.1"][..],
        &[][..],
        &["127.0.0.1", "--profile", "4k"][..],
    ] {
        let run = client(&ns, args);
        assert_eq!(run.code(), Some(2), "{args:?}: {}", run.describe());
        one_sentence(&run.stderr);
        assert!(run.stderr.contains("--help"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn server_bad_input_exits_2() {
    let ns = Netns::new("cli");
    let state = TempDir::new("state");
    let dir = state.path().display().to_string();
    let missing = state.path().join("missing.toml").display().to_string();
    let bad = state.path().join("rtcd.toml");
    std::fs::write(&bad, "[rtc]\nice_port_udp = 70\n").unwrap();
    let bad = bad.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--listen",
                LISTEN,
                "--state-dir",
                &dir,
                "--rtcd-config",
                &missing,
            ],
            "cannot read RTCD's configuration",
        ),
        (
            &[
                "--listen",
                LISTEN,
                "--state-dir",
                &dir,
                "--rtcd-config",
                &bad,
            ],
            "invalid ICEPortUDP value: 70",
        ),
        (
            &["--listen", "203.0.113.99:8443", "--state-dir", &dir],
            "not on this host",
        ),
        (
            &["--listen", LISTEN, "--state-dir", &dir, "--token", ""],
            "token is empty",
        ),
        (
            &["live", "--web", "203.0.113.99:8080"],
            "cannot serve the test page on 203.0.113.99:8080: that address is not on this host",
        ),
        (
            &[
                "live",
                "--web",
                "127.0.0.1:0",
                "--store",
                "/proc/no-store/results.sqlite",
            ],
            "give --store a writable file",
        ),
        (
            &["doctor", "--rtcd-log", "/var/log/no-such-rtcd.log"],
            "--rtcd-log: cannot read /var/log/no-such-rtcd.log",
        ),
        (
            &["bundle", "--rtcd-log", "/var/log/no-such-rtcd.log"],
            "--rtcd-log: cannot read /var/log/no-such-rtcd.log",
        ),
    ];
    for (args, says) in cases {
        let done = server_cmd(&ns, args);
        assert_eq!(done.code(), Some(2), "{args:?}: {}", done.describe());
        assert!(done.stderr.contains(says), "{args:?}: {}", done.stderr);
        one_sentence(&done.stderr);
    }
    let done = server_cmd(&ns, &["--listen", "not-an-address"]);
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    one_sentence(&done.stderr);
    // RTCD's TCP port is known only once its configuration is read (which logs what it
    // read): the refusal is the last line.
    let store = format!("{dir}/r.sqlite");
    let done = server_cmd(&ns, &["live", "--web", "127.0.0.1:8443", "--store", &store]);
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    let last = done.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("--web cannot use port 8443: it is RTCD's TCP port"),
        "{}",
        done.describe()
    );
}

#[test]
fn ipv6_listen_serves_ipv6_and_ipv4_clients() {
    let ns = Netns::new("cli6");
    // The harness turns IPv6 off in its namespaces; this test needs it on loopback.
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
    ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "0");
    let h = start_server_with_state(&ns, "[::]:8443", &[] as &[&str], &BTreeMap::new(), LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.ready.udp.to_string(), "[::]:8443");
    for (server, mapped_prefix) in [("[::1]:8443", "[::1]:"), ("127.0.0.1:8443", "127.0.0.1:")] {
        let run = client(
            &ns,
            &[server, "--duration", "0.5", "--json", "--pin", h.pin()],
        );
        assert_eq!(run.code(), Some(0), "{server}: {}", run.describe());
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let mapped = report["udp"]["stun"]["mapped"].as_str().unwrap_or_default();
        // A v4 client of a dual-stack socket is shown as IPv4, not ::ffff:127.0.0.1.
        assert!(
            mapped.starts_with(mapped_prefix),
            "{server}: mapped {mapped}"
        );
        assert_eq!(report["tcp"]["reachable"], true, "{server}");
    }
}

/// The advertised UDP addresses in a client's JSON report.
fn advertised_udp(stdout: &str) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(stdout).unwrap_or_default();
    report["ice"]["advertised"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["protocol"] == "udp")
        .filter_map(|c| c["address"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_hostname_override_is_followed_while_running() {
    // RTCD resolves a hostname override on every call join; the probe must not keep a stale
    // answer for its whole life.
    let ns = Netns::new("cli");
    ns.write_hosts(&["203.0.113.10 calls.example.test"]);
    let h = server(
        &ns,
        &[
            "--ice-host-override",
            "calls.example.test",
            "--resolve-interval",
            "1",
        ],
    );
    let args = [
        "127.0.0.1",
        "--duration",
        "0.3",
        "--no-tcp",
        "--json",
        "--no-upload",
    ];
    let before = client(&ns, &args);
    assert_eq!(
        advertised_udp(&before.stdout),
        vec!["203.0.113.10"],
        "{}",
        before.describe()
    );
    ns.write_hosts(&["203.0.113.20 calls.example.test"]);
    std::thread::sleep(Duration::from_millis(2500));
    let after = client(&ns, &args);
    assert_eq!(
        advertised_udp(&after.stdout),
        vec!["203.0.113.20"],
        "{}",
        after.describe()
    );
    assert!(
        plain(&h.stderr()).contains("now resolves differently"),
        "{}",
        h.stderr()
    );
}

#[test]
fn replies_leave_from_the_address_the_client_dialed() {
    // The server binds 0.0.0.0; a client dialing another local address (a multi-homed host's
    // second address) must get its answers from that address, or its connected socket — and
    // any ICE agent — discards them.
    let ns = Netns::new("cli");
    let h = start_server_with_state(
        &ns,
        "0.0.0.0:8443",
        &[] as &[&str],
        &BTreeMap::new(),
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = client(
        &ns,
        &["127.0.0.2", "--duration", "0.5", "--json", "--pin", h.pin()],
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["udp"]["reachable"], true, "{}", run.stdout);
    assert!(
        report["udp"]["echo"]["received"].as_u64().unwrap_or(0) >= 20,
        "{}",
        run.stdout
    );
}

/// A unit's environment file with `X=` lines, or a serve-only variable, must not break a
/// command that does not use it; a bad value from the environment names its variable.
#[test]
fn environment_a_command_does_not_use_breaks_nothing() {
    let dir = TempDir::new("cli-env");
    let store = dir.path().join("none.sqlite");
    let run = |bin: &std::path::Path, env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        probe_tests::run_bounded(cmd, "env", Duration::from_secs(20))
    };
    let bins = binaries();
    let store_s = store.display().to_string();
    let done = run(
        &bins.server,
        &[
            ("PROBE_SERVER_METRICS", ""),
            ("PROBE_SERVER_LISTEN", "foo"),
            ("PROBE_SERVER_STATE_DIR", ""),
        ],
        &["results", "--store", &store_s],
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr.contains("no result store") && !done.stderr.contains("--metrics"),
        "{}",
        done.describe()
    );
    let done = run(
        &bins.server,
        &[("PROBE_SERVER_LISTEN", "foo")],
        &["--store", &store_s],
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr
            .contains("PROBE_SERVER_LISTEN in the environment: invalid value 'foo'"),
        "{}",
        done.describe()
    );
    // An empty token is refused as `--token ""` is: never read as "no token", which would
    // start an open server.
    let state = dir.path().join("state").display().to_string();
    let done = run(
        &bins.server,
        &[("PROBE_SERVER_TOKEN", "")],
        &["--listen", "127.0.0.1:0", "--state-dir", &state],
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr.contains("token") && !done.stdout.contains("ready"),
        "{}",
        done.describe()
    );
    // The client: an empty PROBE_SITE is unset, not an empty value.
    let done = run(
        &bins.client,
        &[("PROBE_SITE", "")],
        &["no-such-host.invalid"],
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(!done.stderr.contains("--site"), "{}", done.describe());
}
