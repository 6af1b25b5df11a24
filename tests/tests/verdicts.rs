//! The client's verdict when the run cannot test what it set out to: a token the server does not
//! hold, a wrong token, a server lost mid-run. Real binaries on loopback inside a namespace of
//! their own (as tests/tests/cli.rs), so the tests never collide on a port.

use probe_tests::probe::start_server_with_state;
use probe_tests::{binaries, Netns, ServerHandle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const LIFETIME: Duration = Duration::from_secs(60);
const LISTEN: &str = "127.0.0.1:8443";

fn server(ns: &Netns, extra: &[&str]) -> ServerHandle {
    start_server_with_state(ns, LISTEN, extra, &BTreeMap::new(), LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn argv(args: &[&str]) -> Vec<String> {
    let mut argv = vec![binaries().client.display().to_string(), LISTEN.to_string()];
    argv.extend(["--no-upload", "--no-mtu"].map(String::from));
    argv.extend(args.iter().map(|s| s.to_string()));
    argv
}

fn client(ns: &Netns, args: &[&str]) -> probe_tests::Finished {
    ns.try_exec(&argv(args), Duration::from_secs(30))
}

fn json(run: &probe_tests::Finished) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", run.describe()))
}

/// The finding with this id, if the report has it.
fn finding<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
}

fn text(f: &Value, field: &str) -> String {
    f[field].as_str().unwrap_or_default().to_string()
}

/// Only STUN answered (the server's control answers carry no MAC of the token given): the run
/// is not a pass, exits 1, and the advice is about the token, not QUIC or TLS inspection.
#[test]
fn a_token_the_server_does_not_hold_fails_and_names_the_token() {
    let ns = Netns::new("verdict");
    let h = server(&ns, &[]);
    let pin = h.pin().to_string();
    let args = ["--pin", &pin, "--token", "foo", "--duration", "0.5"];
    let run = client(&ns, &[&args[..], &["--json"]].concat());
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    let r = json(&run);
    assert_eq!(r["ok"], false, "{r:#}");
    assert_eq!(r["udp"]["reachable"], true, "STUN answered: {r:#}");
    assert!(r["udp"]["echo"].is_null() && r["ice"].is_null(), "{r:#}");
    let f = finding(&r, "control_failed").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(f["severity"], "error", "{f:#}");
    let fix = text(f, "fix");
    assert!(
        fix.contains("runs without --token or with another token")
            && fix.contains("run without --token, or ask the admin for the current one")
            && !fix.contains("QUIC"),
        "{fix}"
    );
    let human = client(&ns, &args);
    assert_eq!(human.code(), Some(1), "{}", human.describe());
    assert!(
        human.stdout.contains("ERROR    control_failed")
            && human
                .stdout
                .contains("Verdict: NOT TESTED — only STUN answered"),
        "{}",
        human.stdout
    );
    // The same server, without the token: a session, and a pass.
    let plain = client(&ns, &["--pin", &pin, "--duration", "0.5"]);
    assert_eq!(plain.code(), Some(0), "{}", plain.describe());
}

/// A token the server ignores: the client learns from the TLS handshake on the TCP port that
/// the silent server is the pinned probe-server, and says the token is wrong (exit 2, no
/// report: nothing was tested), never that the firewall blocks; without any token it says one
/// is needed.
#[test]
fn a_wrong_token_is_named_instead_of_the_firewall() {
    let ns = Netns::new("verdict");
    let h = server(&ns, &["--token", "right"]);
    let pin = h.pin().to_string();
    let base = ["--pin", &pin, "--duration", "0.5", "--json"];
    let wrong = client(&ns, &[&base[..], &["--token", "wrong"]].concat());
    assert_eq!(wrong.code(), Some(2), "{}", wrong.describe());
    assert!(
        wrong
            .stderr
            .contains("ignores probes signed with the token given: the token is wrong")
            && wrong.stderr.contains("ask the admin for the current token")
            && !wrong.stderr.contains("firewall")
            && wrong.stdout.is_empty(),
        "{}",
        wrong.describe()
    );
    let none = client(&ns, &base);
    assert_eq!(none.code(), Some(2), "{}", none.describe());
    assert!(
        none.stderr
            .contains("requires an access token: run again with --token")
            && !none.stderr.contains("token is wrong"),
        "{}",
        none.describe()
    );
    let right = client(&ns, &[&base[..], &["--token", "right"]].concat());
    assert_eq!(right.code(), Some(0), "{}", right.describe());
}

/// The server killed during the UDP echo: `server_lost`, and no ICE diagnosis of a path that was
/// never the problem.
#[test]
fn a_server_lost_mid_run_gets_no_ice_diagnosis() {
    let ns = Netns::new("verdict");
    let h = server(&ns, &[]);
    let pin = h.pin().to_string();
    let run = ns.spawn(
        &argv(&["--pin", &pin, "--duration", "5", "--json"]),
        Duration::from_secs(40),
    );
    // Stopped a second into the 5 s UDP echo: after the session opened (not at a fixed time,
    // which a loaded machine may reach before the welcome).
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !h.stderr().contains("session opened") {
        assert!(
            std::time::Instant::now() < until,
            "no session opened: {}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let server_out = h.stop();
    let done = run.finish(Duration::from_secs(30));
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let r = json(&done);
    let ids: Vec<&str> = r["findings"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ids.contains(&"server_lost"),
        "{ids:?}\n{}",
        server_out.describe()
    );
    // The ICE checks ran against a dead server (the report keeps them); only facts of the
    // server's configuration, such as the probe's port, may be reported.
    assert!(!r["ice"].is_null(), "{r:#}");
    assert!(
        ids.iter()
            .all(|id| !id.starts_with("ice_") || *id == "ice_probe_port"),
        "{ids:?}"
    );
    assert!(
        !done.stderr.contains("Err(\""),
        "errors are written as sentences: {}",
        done.stderr
    );
}
