//! Installations without RTCD (issue 16): probe-server reading the Calls plugin's settings from
//! Mattermost's config.json (`--calls-config`) or from Mattermost's API (`--mattermost` +
//! `--mm-token`, against `mm-standin`). The network scenarios are `scenarios/calls_*.toml`.

use probe_tests::probe::start_server_with_state;
use probe_tests::{binaries, Netns, TempDir};
use std::collections::BTreeMap;
use std::time::Duration;

const MM_STANDIN: &str = env!("CARGO_BIN_EXE_mm-standin");
const LIFETIME: Duration = Duration::from_secs(60);
const LISTEN: &str = "127.0.0.1:8443";

fn server_cmd(ns: &Netns, args: &[&str]) -> probe_tests::Finished {
    let state = TempDir::new("calls-state");
    let mut argv = vec![
        binaries().server.display().to_string(),
        "--listen".into(),
        LISTEN.into(),
        "--state-dir".into(),
        state.path().display().to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    ns.try_exec(&argv, Duration::from_secs(20))
}

fn config_with(block: &str) -> String {
    format!(r#"{{"PluginSettings":{{"Plugins":{{"com.mattermost.calls":{block}}}}}}}"#)
}

/// Every refused configuration: exit 2 and one sentence that names the setting, with the
/// plugin's own words where the plugin refuses it.
#[test]
fn refused_settings_are_one_sentence_and_exit_2() {
    let ns = Netns::new("calls-cli");
    let dir = TempDir::new("calls-cli");
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("missing file", None, "cannot read Mattermost's configuration"),
        ("not JSON", Some("{"), "not JSON"),
        (
            "port override as text",
            Some(&config_with(r#"{"icehostportoverride":"30443"}"#)),
            "json: cannot unmarshal string into Go struct field configuration.ICEHostPortOverride of type int",
        ),
        (
            "hostname as UDP address",
            Some(&config_with(r#"{"udpserveraddress":"rtc.example.com"}"#)),
            "UDPServerAddress parsing failed",
        ),
        (
            "port override 0 (the plugin allows it, rtc does not)",
            Some(&config_with(r#"{"icehostportoverride":0,"iceserversconfigs":""}"#)),
            "invalid ICEHostPortOverride value",
        ),
        (
            "bad ICE server URL",
            Some(&config_with(r#"{"iceserversconfigs":"[{\"urls\":[\"http://x\"]}]"}"#)),
            "\"ICE Servers Configurations\"",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(format!("{}.json", name.replace(' ', "_")));
        if let Some(t) = text {
            std::fs::write(&path, t).unwrap();
        }
        let done = server_cmd(&ns, &["--calls-config", &path.display().to_string()]);
        assert_eq!(done.code(), Some(2), "{name}: {}", done.describe());
        let lines: Vec<&str> = done
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{name}: one sentence expected: {}",
            done.stderr
        );
        assert!(
            done.stderr.contains(want),
            "{name}: {want:?} not in {}",
            done.stderr
        );
    }
    // The two sources of settings exclude each other, as clap says.
    let rtcd = dir.path().join("rtcd.toml");
    std::fs::write(&rtcd, "").unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, config_with("{}")).unwrap();
    let done = server_cmd(
        &ns,
        &[
            "--calls-config",
            &p.display().to_string(),
            "--rtcd-config",
            &rtcd.display().to_string(),
        ],
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr.contains("cannot be used with"),
        "{}",
        done.stderr
    );
}

fn standin(ns: &Netns, block: &str) -> probe_tests::Proc {
    let p = ns.spawn(
        &[
            MM_STANDIN,
            "--listen",
            "127.0.0.1:8065",
            "--token",
            "user-token",
            "--admin-token",
            "admin-token",
            "--calls-block",
            block,
        ],
        LIFETIME,
    );
    p.stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("mm-standin ready")
        })
        .unwrap_or_else(|e| panic!("mm-standin not ready ({e:?}): {}", p.stderr()));
    p
}

/// The API form reads the plugin's block from `GET /api/v4/config` with an admin's token; the
/// secret settings the API hides are said to be hidden; 401 and 403 are one sentence each.
#[test]
fn api_form_reads_the_plugin_block() {
    let ns = Netns::new("calls-api");
    let block = r#"{"icehostoverride":"192.0.2.77","udpserverport":8443,"iceserversconfigs":"[{\"urls\":[\"stun:stun.example.com:3478\"]}]","turnstaticauthsecret":"s3cret"}"#;
    let mm = standin(&ns, block);
    let mut env = BTreeMap::new();
    env.insert(
        "PROBE_SERVER_MM_TOKEN".to_string(),
        "admin-token".to_string(),
    );
    let mut srv = start_server_with_state(
        &ns,
        LISTEN,
        &["--mattermost", "http://127.0.0.1:8065"],
        &env,
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}\n--- mm-standin ---\n{}", mm.stderr()));
    // The start log precedes the ready line, but its reader thread may lag behind stdout's.
    let _ = srv
        .proc_mut()
        .stderr_capture()
        .wait_for_line(Duration::from_secs(10), |l| l.contains("would advertise"));
    let log = srv.stderr();
    for want in [
        "Calls plugin settings from http://127.0.0.1:8065/api/v4/config",
        "hidden by the API (secret settings, assumed as the plugin's defaults): TURNStaticAuthSecret, ICEServersConfigs",
        "udp 192.0.2.77:8443 (Override)",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    assert!(
        mm.stderr()
            .contains("GET /api/v4/config HTTP/1.1 authorized=true admin=true"),
        "{}",
        mm.stderr()
    );
    drop(srv);

    for (token, status) in [("wrong", "401"), ("user-token", "403")] {
        let done = server_cmd(
            &ns,
            &["--mattermost", "http://127.0.0.1:8065", "--mm-token", token],
        );
        assert_eq!(done.code(), Some(2), "{}", done.describe());
        let lines: Vec<&str> = done
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{}", done.stderr);
        assert!(
            done.stderr
                .contains(&format!("({status} on GET /api/v4/config)")),
            "{}",
            done.stderr
        );
    }
    let done = server_cmd(&ns, &["--mattermost", "http://127.0.0.1:8065"]);
    assert_eq!(
        done.code(),
        Some(2),
        "--mattermost without a token: {}",
        done.describe()
    );
}

/// The client's verdicts name the plugin's System Console settings. Needs the client half of
/// the deployment marker: `IceReport::deployment` (probe-proto/src/report.rs), set from the
/// welcome's `IceFacts::deployment` in probe-client/src/ice/mod.rs, and the client's verdict
/// calling `ice_verdict::evaluate_for` with it (see issue 16's report).
#[test]
fn client_fix_names_the_system_console() {
    let run = probe_tests::run_named("calls_no_override");
    let json = run.json.expect("a report");
    let fix = json["findings"][0]["fix"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        fix.contains("System Console › Plugins › Calls › ICE and TURN › \"ICE Host Override\" to `203.0.113.10`"),
        "{fix}"
    );
    assert!(!fix.contains("RTCD_RTC_"), "{fix}");
}

/// A process named `mattermost` holding UDP and TCP 8443 in `ns`, as the Calls plugin's
/// integrated RTC server does, with `env` in its environment: a copy of probe-server.
fn fake_mattermost(ns: &Netns, dir: &TempDir, env: &[(&str, &str)]) -> probe_tests::Proc {
    let exe = dir.path().join("mattermost");
    std::fs::copy(&binaries().server, &exe).unwrap();
    let state = dir.path().join("mm-state");
    let argv = [
        exe.display().to_string(),
        "--listen".into(),
        LISTEN.into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    let mut cmd = ns.argv_command(&argv);
    cmd.envs(env.iter().copied());
    let p = probe_tests::Proc::spawn(cmd, "mattermost (fake plugin)", LIFETIME).unwrap();
    p.stdout_capture()
        .wait_for_line(Duration::from_secs(15), |l| {
            l.starts_with("probe-server ready")
        })
        .unwrap_or_else(|e| panic!("fake mattermost not ready ({e:?}): {}", p.stderr()));
    p
}

fn doctor_json(ns: &Netns, args: &[&str]) -> (probe_tests::Finished, serde_json::Value) {
    let mut argv = vec![
        binaries().server.display().to_string(),
        "doctor".into(),
        "--json".into(),
        "--sample".into(),
        "0.5".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let done = ns.try_exec(&argv, Duration::from_secs(30));
    let v = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("doctor JSON ({e}): {}", done.describe()));
    (done, v)
}

fn check<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {v}"))
}

fn finding_ids(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| f["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The doctor on a Mattermost host without RTCD: with `--calls-config` it reads the plugin's
/// settings and the Mattermost process's MM_CALLS_* variables, finds the plugin holding the
/// ICE ports, asks no RTCD API; without it, it says the port belongs to the Calls plugin and
/// never advises killing it.
#[test]
fn doctor_on_a_mattermost_host() {
    let ns = Netns::new("calls-doc");
    let dir = TempDir::new("calls-doc");
    let _mm = fake_mattermost(&ns, &dir, &[("MM_CALLS_ICE_HOST_OVERRIDE", "203.0.113.10")]);
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        config_with(r#"{"icehostoverride":"","iceserversconfigs":""}"#),
    )
    .unwrap();

    let (done, v) = doctor_json(&ns, &["--calls-config", &cfg.display().to_string()]);
    let ids = finding_ids(&v);
    assert!(
        !ids.iter()
            .any(|i| i == "rtcd_api_unreachable" || i == "rtcd_port_other_process"),
        "{ids:?}\n{}",
        done.describe()
    );
    assert_eq!(check(&v, "udp_port")["status"], "pass", "{v}");
    assert!(
        check(&v, "udp_port")["detail"]
            .as_str()
            .unwrap()
            .contains("held by mattermost"),
        "{v}"
    );
    assert_eq!(check(&v, "api_version")["status"], "skipped", "{v}");
    let env = check(&v, "rtcd_env")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        env.starts_with("MM_CALLS_* from the running Mattermost's environment (mattermost, pid "),
        "{env}"
    );
    let config = v["config"].as_str().unwrap_or_default();
    assert!(config.contains("+ MM_CALLS_ICE_HOST_OVERRIDE"), "{config}");
    // The override from the process's environment is what the doctor computed with.
    let adv = check(&v, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(adv.contains("203.0.113.10"), "{adv}");

    // Without --calls-config: RTCD's doctor, which must not call the plugin "another process".
    let (_, v) = doctor_json(&ns, &[]);
    let ids = finding_ids(&v);
    assert!(
        ids.iter().any(|i| i == "calls_plugin_holds_port"),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|i| i == "rtcd_port_other_process"),
        "{ids:?}"
    );
}
