//! Output to a reader that went away (`… | head -1`, a closed terminal): the binaries end
//! quietly with the exit code a shell gives a program SIGPIPE ended (141), never a panic.

use std::process::{Command, Stdio};
use std::time::Duration;

/// probe-shell's `EXIT_READER_GONE`: 128 + SIGPIPE.
const READER_GONE: i32 = 141;

/// Runs `bin args` with stdout on a pipe whose reading end is already closed; (exit code,
/// stderr). Bounded: the commands used here end within seconds.
fn into_a_closed_pipe(bin: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < until, "{args:?} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_went_away_ends_the_run_quietly() {
    let bins = probe_tests::binaries();
    let tmp = probe_tests::TempDir::new("output");
    let report = tmp.path().join("report.json");
    let cases: Vec<(&std::path::Path, Vec<&str>)> = vec![
        // Nothing listens on the discard port: a report on stdout at once.
        (&bins.client, vec!["rtcd-api", "http://127.0.0.1:9"]),
        (
            &bins.client,
            vec!["rtcd-api", "http://127.0.0.1:9", "--json"],
        ),
        (&bins.server, vec!["doctor", "--sample", "1"]),
        (&bins.client, vec!["completions", "bash"]),
    ];
    for (bin, args) in cases {
        let (code, stderr) = into_a_closed_pipe(bin, &args);
        assert!(
            !stderr.contains("panicked"),
            "{args:?} panicked on a closed stdout:\n{stderr}"
        );
        assert_eq!(code, Some(READER_GONE), "{args:?}: {stderr}");
    }
    // The same output to a file that can be written is whole (the helper changes nothing else).
    let file = std::fs::File::create(&report).expect("create");
    let done = Command::new(&bins.client)
        .args(["rtcd-api", "http://127.0.0.1:9", "--json"])
        .stdout(file)
        .status()
        .expect("run");
    assert_eq!(done.code(), Some(1));
    let text = std::fs::read_to_string(&report).expect("read");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v.is_object(), "{text}");
}

/// Logs redirected to a file or pipe (`2> file`, nohup, `docker logs`) carry no colour codes,
/// without the operator having to set `NO_COLOR`.
#[test]
fn logs_off_a_terminal_are_plain_text() {
    let bins = probe_tests::binaries();
    let ns = probe_tests::Netns::new("output");
    let state = probe_tests::TempDir::new("output-state");
    let state_dir = state.path().display().to_string();
    let server = bins.server.display().to_string();
    let argv = [
        &server[..],
        "--listen",
        "127.0.0.1:8443",
        "--state-dir",
        &state_dir,
    ];
    let mut cmd = ns.argv_command(&argv);
    cmd.env_remove("NO_COLOR").env_remove("RUST_LOG");
    let mut p = probe_tests::Proc::spawn(cmd, "probe-server", Duration::from_secs(30))
        .expect("spawn probe-server");
    p.stderr_capture()
        .wait_for_line(Duration::from_secs(10), |l| l.contains("listening"))
        .unwrap_or_else(|e| panic!("no listening line ({e:?}): {}", p.stderr()));
    p.kill();
    let log = p.stderr();
    assert!(log.contains(" INFO "), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a redirected log:\n{log:?}"
    );
}

/// `--every` shorter than a run says so once (runs then follow back to back), and a loop in
/// which not one run could be carried out ends with exit code 2, not 1 (a failed path).
#[test]
fn every_says_when_runs_overrun_and_exits_2_when_none_ran() {
    let bins = probe_tests::binaries();
    let ns = probe_tests::Netns::new("output");
    let server = probe_tests::probe::start_server_with_state(
        &ns,
        "127.0.0.1:8443",
        &[] as &[&str],
        &std::collections::BTreeMap::new(),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client = bins.client.display().to_string();
    let args = [
        &client[..],
        "127.0.0.1",
        "--pin",
        server.pin(),
        "--every",
        "1s",
        "--count",
        "2",
        "--duration",
        "1",
        "--no-mtu",
        "--no-upload",
    ];
    let run = ns.try_exec(&args, Duration::from_secs(60));
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.describe());
    assert_eq!(
        run.stderr.matches("longer than --every").count(),
        1,
        "{}",
        run.describe()
    );
    let args = [
        &client[..],
        "no-such-host.invalid",
        "--every",
        "1s",
        "--count",
        "2",
    ];
    let run = ns.try_exec(&args, Duration::from_secs(30));
    assert_eq!(run.code(), Some(2), "{}", run.describe());
    assert_eq!(
        run.stderr.matches("could not be carried out").count(),
        2,
        "{}",
        run.describe()
    );
}

/// Ctrl-C in `--every` says at once that the loop ends after the current run (a run can last
/// minutes; silence reads as a hang), and a second Ctrl-C stops at once with 130.
#[test]
fn every_answers_ctrl_c_at_once_and_a_second_one_stops_now() {
    let bins = probe_tests::binaries();
    let ns = probe_tests::Netns::new("output-int");
    let server = probe_tests::probe::start_server_with_state(
        &ns,
        "127.0.0.1:8443",
        &[] as &[&str],
        &std::collections::BTreeMap::new(),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client = bins.client.display().to_string();
    let args = [
        &client[..],
        "127.0.0.1",
        "--pin",
        server.pin(),
        "--every",
        "60s",
        "--duration",
        "30",
        "--no-mtu",
        "--no-upload",
    ];
    let mut p = ns.spawn(&args, Duration::from_secs(60));
    // Well into the first run (its echo lasts 30 s).
    std::thread::sleep(Duration::from_secs(3));
    let int = |p: &probe_tests::proc::Proc| unsafe {
        libc::kill(p.pid() as libc::pid_t, libc::SIGINT);
    };
    int(&p);
    let said = p
        .stderr_capture()
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains("stopping after the run under way")
        });
    assert!(said.is_ok(), "no word after Ctrl-C: {}", p.stderr());
    assert!(
        p.try_status().is_none(),
        "the first Ctrl-C lets the run finish"
    );
    int(&p);
    let status = p.wait_timeout(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "a second Ctrl-C stops at once: {}",
        p.stderr()
    );
}
