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
    standin_with(ns, block, &[])
}

/// mm-standin with more of its flags (`--plugin-state`, `--license-sku`, `--dev-mode`).
fn standin_with(ns: &Netns, block: &str, extra: &[&str]) -> probe_tests::Proc {
    let mut argv = vec![
        MM_STANDIN,
        "--listen",
        "127.0.0.1:8065",
        "--token",
        "user-token",
        "--admin-token",
        "admin-token",
        "--calls-block",
        block,
    ];
    argv.extend_from_slice(extra);
    let p = ns.spawn(&argv, LIFETIME);
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

/// With `RTCDServiceURL` set, the API form asks for the licence and decides as the plugin does
/// (plugin server/activate.go:155 and server/enterprise/license.go:40-42): Professional or no
/// licence → the URL is ignored and the integrated server is what users reach (no
/// `calls_via_rtcd` for the client); Enterprise, or development mode → calls go to RTCD.
#[test]
fn rtcd_service_url_and_the_licence() {
    let block = r#"{"rtcdserviceurl":"http://rtcd.example.com:8045","icehostoverride":"192.0.2.77","iceserversconfigs":""}"#;
    let cases: &[(&str, &[&str], &str)] = &[
        ("unlicensed", &[], "is ignored: Mattermost has no licence (RTCD needs Enterprise)"),
        (
            "professional",
            &["--license-sku", "professional"],
            "is ignored: the licence is professional, not Enterprise",
        ),
        (
            "enterprise",
            &["--license-sku", "enterprise"],
            "calls go to RTCD at http://rtcd.example.com:8045, not to this integrated RTC server: the licence is enterprise",
        ),
        (
            "development mode",
            &["--dev-mode"],
            "EnableDeveloper and EnableTesting are both on (development mode)",
        ),
    ];
    for (name, extra, want) in cases {
        let ns = Netns::new("calls-lic");
        let mm = standin_with(&ns, block, extra);
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
        .unwrap_or_else(|e| panic!("{name}: {e}\n--- mm-standin ---\n{}", mm.stderr()));
        let _ = srv
            .proc_mut()
            .stderr_capture()
            .wait_for_line(Duration::from_secs(10), |l| l.contains("would advertise"));
        let log = srv.stderr();
        assert!(log.contains(want), "{name}: {want:?} not in:\n{log}");
        assert!(
            mm.stderr()
                .contains("GET /api/v4/license/client?format=old HTTP/1.1 authorized=true"),
            "{name}: {}",
            mm.stderr()
        );
    }
}

/// `doctor --mattermost URL --mm-token`: the settings from the API as the server reads them,
/// the plugin's status from `GET /api/v4/plugins/statuses` (a plugin that failed to start is an
/// error), no RTCD API port in the firewall check; `--mattermost-log` reads only the Calls
/// plugin's lines of Mattermost's log, in the plugin's words.
#[test]
fn doctor_with_mattermost_api_and_log() {
    let ns = Netns::new("calls-docapi");
    let dir = TempDir::new("calls-docapi");
    let block = r#"{"icehostoverride":"192.0.2.77","iceserversconfigs":""}"#;
    let _fake = fake_mattermost(&ns, &dir, &[]);
    let mm = standin_with(
        &ns,
        block,
        &[
            "--plugin-state",
            "3",
            "--plugin-error",
            "failed to start the RTC server",
        ],
    );
    let log = dir.path().join("mattermost.log");
    std::fs::write(
        &log,
        include_str!("../../probe-server/src/doctor/testdata/mattermost.log"),
    )
    .unwrap();
    let (done, v) = doctor_json(
        &ns,
        &[
            "--mattermost",
            "http://127.0.0.1:8065",
            "--mm-token",
            "admin-token",
            "--mattermost-log",
            &log.display().to_string(),
        ],
    );
    let plugin = check(&v, "calls_plugin");
    assert_eq!(plugin["status"], "fail", "{v}\n{}", done.describe());
    assert!(
        plugin["detail"]
            .as_str()
            .unwrap()
            .contains("Calls v1.11.0 failed to start: failed to start the RTC server"),
        "{plugin}"
    );
    assert!(
        finding_ids(&v)
            .iter()
            .any(|i| i == "calls_plugin_not_running"),
        "{v}"
    );
    assert!(
        mm.stderr()
            .contains("GET /api/v4/plugins/statuses HTTP/1.1 authorized=true admin=true"),
        "{}",
        mm.stderr()
    );
    // Settings from the API: the override is what the doctor computed with.
    let adv = check(&v, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(adv.contains("192.0.2.77"), "{adv}");
    // No RTCD API on a Mattermost host: its port is not a firewall target.
    let fw = check(&v, "host_firewall")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!fw.contains("8045"), "{fw}");
    // Mattermost's log: the plugin's 5 lines of 9, its STUN at start, in the plugin's words.
    let logs = check(&v, "logs")["detail"].as_str().unwrap().to_string();
    assert!(
        logs.contains("5 of 9 line(s) from the Calls plugin"),
        "{logs}"
    );
    assert!(
        logs.contains(
            "STUN at the RTC server's last start (2026-11-26 07:00:01.120 Z): 10.0.0.9 failed"
        ),
        "{logs}"
    );
    let text = v["findings"].to_string();
    assert!(!text.contains("[rtc] ice_host_override"), "{text}");

    // A plain user's token cannot read the configuration: one sentence, exit 2.
    let done = ns.try_exec(
        &[
            binaries().server.display().to_string(),
            "doctor".into(),
            "--mattermost".into(),
            "http://127.0.0.1:8065".into(),
            "--mm-token".into(),
            "user-token".into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr.contains("(403 on GET /api/v4/config)"),
        "{}",
        done.stderr
    );
    // Mattermost's log without the plugin's settings: one sentence, exit 2 (not ignored).
    let done = ns.try_exec(
        &[
            binaries().server.display().to_string(),
            "doctor".into(),
            "--mattermost-log".into(),
            log.display().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr
            .contains("--mattermost-log is for a Mattermost host without RTCD"),
        "{}",
        done.stderr
    );
}

/// A process named `mattermost` that holds no port (found by name only), with `env`.
fn named_mattermost(ns: &Netns, dir: &TempDir, env: &[(&str, &str)]) -> probe_tests::Proc {
    let exe = dir.path().join("mattermost");
    std::fs::copy("/usr/bin/sleep", &exe)
        .or_else(|_| std::fs::copy("/bin/sleep", &exe))
        .unwrap();
    let mut cmd = ns.command(&exe);
    cmd.arg("60").envs(env.iter().copied());
    let p = probe_tests::Proc::spawn(cmd, "mattermost (by name)", LIFETIME).unwrap();
    // `ip netns exec` has exec'd it once its comm is `mattermost`.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{}/comm", p.pid()))
        .map_or(true, |c| c.trim() != "mattermost")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mattermost did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// Two Mattermost hosts side by side (network namespaces, as containers or parallel tests):
/// the doctor in one reads that one's MM_CALLS_* variables, and in a third with none finds
/// none, instead of a neighbour's.
#[test]
fn mattermost_of_its_own_network_namespace() {
    let (a, b, c) = (
        Netns::new("calls-nsa"),
        Netns::new("calls-nsb"),
        Netns::new("calls-nsc"),
    );
    let (da, db) = (TempDir::new("calls-nsa"), TempDir::new("calls-nsb"));
    let _ma = named_mattermost(&a, &da, &[("MM_CALLS_ICE_HOST_OVERRIDE", "203.0.113.10")]);
    let _mb = named_mattermost(&b, &db, &[("MM_CALLS_ICE_HOST_OVERRIDE", "203.0.113.20")]);
    let cfg = da.path().join("config.json");
    std::fs::write(
        &cfg,
        config_with(r#"{"icehostoverride":"","iceserversconfigs":""}"#),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let (_, v) = doctor_json(&a, &["--calls-config", &cfg]);
    let config = v["config"].as_str().unwrap_or_default().to_string();
    assert!(config.contains("MM_CALLS_ICE_HOST_OVERRIDE"), "{config}");
    let adv = check(&v, "rtcd_config")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        adv.contains("203.0.113.10") && !adv.contains("203.0.113.20"),
        "{adv}"
    );
    let (_, v) = doctor_json(&c, &["--calls-config", &cfg]);
    let env = check(&v, "rtcd_env")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        env.contains("in other network namespaces not considered"),
        "{env}"
    );
    let config = v["config"].as_str().unwrap_or_default().to_string();
    assert!(!config.contains("MM_CALLS_ICE_HOST_OVERRIDE"), "{config}");
}
