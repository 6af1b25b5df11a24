//! The TURN check against Debian's coturn in the router namespace (routed topology: client
//! 198.51.100.2, coturn listening on 198.51.100.1 and relaying from 203.0.113.1, probe-server on
//! 203.0.113.2), with TLS from a test CA (`--turn-ca`) and a Mattermost stand-in
//! (`mm-standin`, a binary of this crate) in the server namespace.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use probe_tests::probe::{start_server_with_state, try_run_client_env, ClientRun, ServerHandle};
use probe_tests::{Chain, Proc, Role, TempDir, Topology};
use serde_json::Value;

const MM_STANDIN: &str = env!("CARGO_BIN_EXE_mm-standin");
const LIFETIME: Duration = Duration::from_secs(180);
const CLIENT_BOUND: Duration = Duration::from_secs(90);
const SECRET: &str = "north-wind";
const TURN_NAME: &str = "turn.calls.test";

/// One at a time: coturn, two probes and the echo timing share two cores with the rest.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A test CA and a certificate for `turn.calls.test` signed by it, written as PEM files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("turn-pki");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Calls probe test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![TURN_NAME.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let w = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        w("ca.pem", ca_cert.pem());
        w("turn.pem", leaf.pem());
        w("turn.key", leaf_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

struct Lab {
    t: Topology,
    server: ServerHandle,
    _turn: Proc,
    pki: Pki,
    _guard: std::sync::MutexGuard<'static, ()>,
}

/// The topology, probe-server, and coturn with REST credentials (`extra` appended to its argv).
fn lab(coturn_extra: &[&str]) -> Lab {
    let guard = serial();
    probe_tests::binaries();
    let t = Topology::routed();
    let pki = Pki::new();
    let server = start_server_with_state(
        &t.server,
        "0.0.0.0:8443",
        &[] as &[&str],
        &BTreeMap::new(),
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let listen = t.router_client_ip.to_string();
    let relay = t.router_public_ip.to_string();
    let (cert, key) = (pki.path("turn.pem"), pki.path("turn.key"));
    let mut argv = vec!["turnserver", "--listening-ip", &listen];
    // The relay address: the router's server-side address unless the test names another.
    if !coturn_extra.contains(&"--relay-ip") {
        argv.extend(["--relay-ip", &relay]);
    }
    argv.extend([
        "--listening-port",
        "3478",
        "--tls-listening-port",
        "5349",
        "--cert",
        &cert,
        "--pkey",
        &key,
        "--realm",
        "calls.test",
        "--use-auth-secret",
        "--static-auth-secret",
        SECRET,
        "--no-cli",
        "--no-dtls",
        "--log-file",
        "stdout",
        "--simple-log",
    ]);
    argv.extend_from_slice(coturn_extra);
    let turn = t.router.spawn(&argv, LIFETIME);
    for spec in [
        format!("udp:{listen}:3478"),
        format!("tcp:{listen}:3478"),
        format!("tcp:{listen}:5349"),
    ] {
        if let Err(e) = t.router.wait_listening(&spec, Duration::from_secs(10)) {
            panic!("coturn not listening on {spec}: {e}\n{}", turn.stdout());
        }
    }
    t.client.write_hosts(&[format!("{listen} {TURN_NAME}")]);
    Lab {
        t,
        server,
        _turn: turn,
        pki,
        _guard: guard,
    }
}

impl Lab {
    fn client(&self, extra: &[&str]) -> ClientRun {
        let mut args = vec![
            format!("{}:8443", self.t.server_ip),
            "--json".into(),
            "--site".into(),
            "turn".into(),
            "--pin".into(),
            self.server.pin().to_string(),
            "--duration".into(),
            "1".into(),
            "--no-upload".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let run = try_run_client_env(&self.t.client, &args, &BTreeMap::new(), CLIENT_BOUND);
        assert!(
            !run.timed_out,
            "client killed at its bound\n{}",
            run.describe()
        );
        run
    }
}

fn json(run: &ClientRun) -> &Value {
    run.json
        .as_ref()
        .unwrap_or_else(|| panic!("no JSON report\n{}", run.describe()))
}

fn finding<'a>(j: &'a Value, id: &str) -> Option<&'a Value> {
    j["findings"].as_array()?.iter().find(|f| f["id"] == id)
}

fn turn_errors(j: &Value) -> Vec<String> {
    j["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| f["id"].as_str().is_some_and(|i| i.starts_with("turn_")))
                .map(|f| format!("{} ({})", f["id"], f["severity"]))
                .collect()
        })
        .unwrap_or_default()
}

fn attempt<'a>(j: &'a Value, transport: &str) -> &'a Value {
    j["turn"]["attempts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["transport"] == transport))
        .unwrap_or_else(|| panic!("no {transport} attempt in {:#}", j["turn"]))
}

#[test]
fn udp_tcp_and_tls_allocate_and_relay_echo_to_the_probe_server() {
    let lab = lab(&[]);
    let ca = lab.pki.path("ca.pem");
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478",
        "--turn",
        "turns:turn.calls.test:5349",
        "--turn-secret",
        SECRET,
        "--turn-ca",
        &ca,
    ]);
    let j = json(&run);
    let ctx = || format!("{:#}\n{}", j["turn"], run.describe());
    assert!(turn_errors(j).is_empty(), "{:?}\n{}", turn_errors(j), ctx());
    assert_eq!(run.code, Some(0), "{}", ctx());
    assert_eq!(j["turn"]["source"], "flags");
    assert_eq!(j["turn"]["ok"], true);
    assert_eq!(j["turn"]["credentials"]["kind"], "rest");
    assert!(j["turn"]["credentials"]["valid_for_s"].as_i64().unwrap() > 14_000);
    for transport in ["udp", "tcp", "tls"] {
        let a = attempt(j, transport);
        assert_eq!(a["reached"], "echoed", "{transport}: {}", ctx());
        assert!(
            a["relayed"].as_str().unwrap().starts_with("203.0.113.1:"),
            "{transport}: the relay address coturn hands out: {}",
            ctx()
        );
        assert_eq!(
            a["mapped"].as_str().unwrap().split(':').next(),
            Some("198.51.100.2")
        );
        let echo = &a["echo"];
        let sent = echo["sent"].as_u64().unwrap();
        assert!(sent >= 40, "{transport}: 1 s of 20 ms packets: {}", ctx());
        assert!(
            echo["received"].as_u64().unwrap() * 10 >= sent * 9,
            "{transport}: a clean path loses next to nothing: {}",
            ctx()
        );
        // Loss per direction comes from the server's relay counters.
        assert!(echo["loss_up_pct"].as_f64().unwrap() < 10.0, "{}", ctx());
        assert!(echo["loss_down_pct"].as_f64().unwrap() < 10.0, "{}", ctx());
        assert!(
            a["refreshes_ok"].as_u64().unwrap() >= 3,
            "{transport}: {}",
            ctx()
        );
        assert!(a["refresh_failures"].as_array().unwrap().is_empty());
        // A permission toward RTCD's advertised address (the server's own here).
        assert!(
            a["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["peer"] == "203.0.113.2" && p["rtcd"] == true && p["ok"] == true),
            "{}",
            ctx()
        );
    }
    let tls = attempt(j, "tls");
    assert!(
        tls["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "tls" && s["ok"] == true),
        "{}",
        ctx()
    );
    // The server really took echo from the relay's address only after the announcement.
    assert!(
        lab.server.stderr().contains("TURN relay announced"),
        "{}",
        lab.server.stderr()
    );
}

#[test]
fn human_report_has_a_turn_section() {
    let lab = lab(&[]);
    let mut args = vec![
        format!("{}:8443", lab.t.server_ip),
        "--pin".into(),
        lab.server.pin().to_string(),
        "--duration".into(),
        "1".into(),
        "--no-upload".into(),
        "--turn".into(),
        "turn:turn.calls.test:3478?transport=udp".into(),
        "--turn-secret".into(),
        SECRET.into(),
    ];
    args.extend(["--site".to_string(), "turn".to_string()]);
    let run = try_run_client_env(&lab.t.client, &args, &BTreeMap::new(), CLIENT_BOUND);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    for want in [
        "TURN (flags)",
        "rest credentials",
        "udp  turn:turn.calls.test:3478?transport=udp  198.51.100.1:3478",
        "relays to the probe server",
        "relayed 203.0.113.1:",
        "permission RTCD  203.0.113.2",
        "via relay   sent",
        "direct UDP  sent",
    ] {
        assert!(
            run.stdout.contains(want),
            "{want:?} missing\n{}",
            run.stdout
        );
    }
    println!("{}", run.stdout);
}

#[test]
fn private_relay_address_on_a_public_turn_server_is_turn_relay_private() {
    // coturn relays from a private address (no external-ip set): the classic NATed coturn.
    let lab = lab(&["--relay-ip", "172.31.9.1"]);
    lab.t
        .router
        .ip(&["addr", "add", "172.31.9.1/32", "dev", "lo"]);
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478?transport=udp",
        "--turn-secret",
        SECRET,
    ]);
    let j = json(&run);
    let a = attempt(j, "udp");
    assert!(
        a["relayed"].as_str().unwrap().starts_with("172.31.9.1:"),
        "{a:#}"
    );
    assert_eq!(a["relayed_private"], true);
    let f = finding(j, "turn_relay_private").unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert_eq!(f["severity"], "error");
    assert!(f["fix"].as_str().unwrap().contains("external-ip"), "{f}");
    assert_eq!(run.code, Some(1), "{}", run.describe());
}

#[test]
fn wrong_static_secret_is_turn_auth_failed() {
    let lab = lab(&[]);
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478?transport=udp",
        "--turn-secret",
        "south-wind",
    ]);
    let j = json(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let f = finding(j, "turn_auth_failed").unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert_eq!(f["severity"], "error");
    assert!(f["summary"].as_str().unwrap().contains("401"), "{f}");
    assert!(finding(j, "turn_credentials_expired").is_none());
    assert_eq!(attempt(j, "udp")["reached"], "nothing");
}

#[test]
fn expired_rest_credentials_are_turn_credentials_expired() {
    let lab = lab(&[]);
    // Right secret, expiry an hour ago: what a Mattermost host whose clock is behind issues.
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let c = probe_proto::turn::rest::credentials(SECRET, "alice", expiry);
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478?transport=tcp",
        "--turn-user",
        &c.username,
        "--turn-pass",
        &c.password,
    ]);
    let j = json(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let f = finding(j, "turn_credentials_expired").unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert_eq!(f["severity"], "error");
    assert!(
        finding(j, "turn_auth_failed").is_none(),
        "{:#}",
        j["findings"]
    );
    let valid = j["turn"]["credentials"]["valid_for_s"].as_i64().unwrap();
    assert!((-3700..=-3599).contains(&valid), "{valid}");
    // The same credentials a fresh expiry away pass: it is the expiry, not the secret.
    let fresh = probe_proto::turn::rest::credentials(SECRET, "alice", expiry + 7200);
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478?transport=tcp",
        "--turn-user",
        &fresh.username,
        "--turn-pass",
        &fresh.password,
    ]);
    assert_eq!(
        attempt(json(&run), "tcp")["reached"],
        "echoed",
        "{}",
        run.describe()
    );
}

#[test]
fn denied_peer_ip_covering_rtcd_is_turn_forbids_rtcd() {
    let lab = lab(&["--denied-peer-ip", "203.0.113.2"]);
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478?transport=udp",
        "--turn-secret",
        SECRET,
    ]);
    let j = json(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let f = finding(j, "turn_forbids_rtcd").unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert_eq!(f["severity"], "error");
    assert!(
        f["summary"].as_str().unwrap().contains("203.0.113.2"),
        "{f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("denied-peer-ip"), "{f}");
    let a = attempt(j, "udp");
    assert_eq!(a["reached"], "allocated", "{a:#}");
    let p = &a["permissions"][0];
    assert_eq!(
        (p["peer"].as_str(), p["code"].as_u64()),
        (Some("203.0.113.2"), Some(403)),
        "{a:#}"
    );
}

#[test]
fn udp_blocked_tls_open_is_turn_only_tls_and_quick() {
    let lab = lab(&[]);
    lab.t.add_rules(
        Role::Router,
        Chain::Input,
        &["udp dport 3478 drop", "tcp dport 3478 drop"],
    );
    let ca = lab.pki.path("ca.pem");
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478",
        "--turn",
        "turns:turn.calls.test:5349?transport=tcp",
        "--turn-secret",
        SECRET,
        "--turn-ca",
        &ca,
    ]);
    let j = json(&run);
    let f = finding(j, "turn_only_tls")
        .unwrap_or_else(|| panic!("{:#}\n{:#}", j["findings"], j["turn"]));
    assert_eq!(f["severity"], "info");
    assert!(
        finding(j, "turn_unreachable").is_none(),
        "{:#}",
        j["findings"]
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(attempt(j, "tls")["reached"], "echoed");
    for t in ["udp", "tcp"] {
        let a = attempt(j, t);
        assert_eq!(a["reached"], "nothing", "{a:#}");
        assert_eq!(a["cause"], "unreachable", "{a:#}");
    }
}

#[test]
fn fully_blocked_turn_server_gets_a_verdict_in_seconds() {
    let lab = lab(&[]);
    lab.t
        .add_rules(Role::Router, Chain::Input, &["ip daddr 198.51.100.1 drop"]);
    let ca = lab.pki.path("ca.pem");
    let base = lab.client(&[]);
    let run = lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478",
        "--turn",
        "turns:turn.calls.test:5349",
        "--turn-secret",
        SECRET,
        "--turn-ca",
        &ca,
    ]);
    let j = json(&run);
    let f = finding(j, "turn_unreachable").unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert_eq!(f["severity"], "error");
    assert_eq!(run.code, Some(1));
    let extra = run.elapsed.saturating_sub(base.elapsed);
    assert!(
        extra < Duration::from_secs(9),
        "the TURN check of three blocked attempts took {extra:?} more than a run without it"
    );
}

#[test]
fn turns_through_https_proxy_connect() {
    let lab = lab(&[]);
    // The client may not reach coturn's TLS port itself: only the proxy (in the server
    // namespace) may.
    lab.t.add_rules(
        Role::Router,
        Chain::Input,
        &["ip saddr 198.51.100.2 tcp dport 5349 drop"],
    );
    // The proxy resolves the TURN host itself, as proxies do.
    lab.t
        .server
        .write_hosts(&[format!("{} {TURN_NAME}", lab.t.router_client_ip)]);
    let proxy = lab.t.server.spawn(
        &[MM_STANDIN, "--connect-proxy", "--listen", "0.0.0.0:3128"],
        LIFETIME,
    );
    proxy
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("mm-standin ready")
        })
        .unwrap_or_else(|e| panic!("proxy not ready ({e:?}): {}", proxy.stderr()));
    let ca = lab.pki.path("ca.pem");
    let mut args = vec![
        format!("{}:8443", lab.t.server_ip),
        "--json".into(),
        "--site".into(),
        "turn".into(),
        "--pin".into(),
        lab.server.pin().to_string(),
        "--duration".into(),
        "1".into(),
        "--no-upload".into(),
    ];
    for a in [
        "--turn",
        "turns:turn.calls.test:5349",
        "--turn-secret",
        SECRET,
        "--turn-ca",
        &ca,
    ] {
        args.push(a.to_string());
    }
    let env = BTreeMap::from([(
        "HTTPS_PROXY".to_string(),
        format!("http://{}:3128", lab.t.server_ip),
    )]);
    let run = try_run_client_env(&lab.t.client, &args, &env, CLIENT_BOUND);
    let j = json(&run);
    let a = attempt(j, "tls");
    assert_eq!(
        a["reached"],
        "echoed",
        "{a:#}\n{}\n{}",
        run.describe(),
        proxy.stderr()
    );
    assert!(
        a["proxy"].as_str().unwrap().contains("HTTPS_PROXY"),
        "{a:#}"
    );
    assert!(
        proxy.stderr().contains("CONNECT turn.calls.test:5349"),
        "{}",
        proxy.stderr()
    );
    // coturn saw the proxy, not the client.
    assert!(
        a["mapped"].as_str().unwrap().starts_with("203.0.113.2:"),
        "{a:#}"
    );
    // NO_PROXY naming the TURN host: direct, and so blocked here.
    let mut env = env;
    env.insert("NO_PROXY".into(), TURN_NAME.into());
    let run = try_run_client_env(&lab.t.client, &args, &env, CLIENT_BOUND);
    let a = attempt(json(&run), "tls");
    assert!(a["proxy"].is_null(), "{a:#}");
    assert_eq!(a["cause"], "unreachable", "{a:#}");
}

#[test]
fn tls_without_the_test_ca_names_the_chain() {
    let lab = lab(&[]);
    let run = lab.client(&[
        "--turn",
        "turns:turn.calls.test:5349",
        "--turn-secret",
        SECRET,
    ]);
    let j = json(&run);
    let a = attempt(j, "tls");
    assert_eq!(a["cause"], "tls", "{a:#}");
    let e = a["error"].as_str().unwrap();
    // With system roots: UnknownIssuer; on a machine without any: the same advice.
    assert!(
        e.contains("UnknownIssuer") || e.contains("--turn-ca"),
        "{a:#}"
    );
    let f = finding(j, "turn_unreachable").unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert!(
        f["fix"].as_str().unwrap().contains("certificate chain"),
        "{f}"
    );
    // The right name on the wrong address: the certificate is for turn.calls.test only.
    let ca = lab.pki.path("ca.pem");
    let run = lab.client(&[
        "--turn",
        "turns:198.51.100.1:5349",
        "--turn-secret",
        SECRET,
        "--turn-ca",
        &ca,
    ]);
    let a = attempt(json(&run), "tls");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("not issued for this name"),
        "{a:#}"
    );
}

fn standin(lab: &Lab, extra: &[&str]) -> Proc {
    let mut argv = vec![
        MM_STANDIN,
        "--listen",
        "0.0.0.0:8065",
        "--token",
        "mm-token",
        "--secret",
        SECRET,
        "--turn",
        "turn:turn.calls.test:3478?transport=udp",
    ];
    argv.extend_from_slice(extra);
    let p = lab.t.server.spawn(&argv, LIFETIME);
    if let Err(e) = p
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("mm-standin ready")
        })
    {
        panic!("mm-standin not ready ({e:?}): {}", p.stderr());
    }
    p
}

#[test]
fn credentials_from_the_mattermost_stand_in() {
    let lab = lab(&[]);
    let mm = standin(&lab, &[]);
    let url = format!("http://{}:8065", lab.t.server_ip);
    let run = lab.client(&["--mattermost", &url, "--mm-token", "mm-token"]);
    let j = json(&run);
    assert!(
        turn_errors(j).is_empty(),
        "{:?}\n{}\n{}",
        turn_errors(j),
        run.describe(),
        mm.stderr()
    );
    assert_eq!(j["turn"]["source"], "mattermost");
    assert_eq!(j["turn"]["endpoint"]["ok"], true, "{:#}", j["turn"]);
    assert_eq!(attempt(j, "udp")["reached"], "echoed", "{:#}", j["turn"]);
    // The plugin's REST username: expiry 240 min ahead, then the user.
    let valid = j["turn"]["credentials"]["valid_for_s"].as_i64().unwrap();
    assert!((14_000..=14_400).contains(&valid), "{valid}");
    assert!(mm
        .stderr()
        .contains("GET /plugins/com.mattermost.calls/turn-credentials"));
    // A wrong token: Mattermost's 401 on the config. The user's input, not the plugin's
    // settings: one sentence and exit 2, before the run, not a finding about TURN.
    let run = lab.client(&["--mattermost", &url, "--mm-token", "nope"]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.stderr
            .contains("Mattermost refused the token given with --mm-token (HTTP 401")
            && run.json.is_none(),
        "{}",
        run.describe()
    );
}

#[test]
fn failing_credentials_endpoint_is_turn_credentials_endpoint_failed() {
    let lab = lab(&[]);
    let _mm = standin(&lab, &["--fail-credentials"]);
    let url = format!("http://{}:8065", lab.t.server_ip);
    let run = lab.client(&["--mattermost", &url, "--mm-token", "mm-token"]);
    let j = json(&run);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let f = finding(j, "turn_credentials_endpoint_failed")
        .unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert_eq!(f["severity"], "error");
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.contains("403") && s.contains("TURNStaticAuthSecret should be set"),
        "{s}"
    );
    assert!(j["turn"]["attempts"].as_array().unwrap().is_empty());
}

#[test]
fn expired_credentials_from_mattermost() {
    let lab = lab(&[]);
    let _mm = standin(&lab, &["--expired"]);
    let url = format!("http://{}:8065", lab.t.server_ip);
    let run = lab.client(&["--mattermost", &url, "--mm-token", "mm-token"]);
    let j = json(&run);
    assert!(
        finding(j, "turn_credentials_expired").is_some(),
        "{:#}",
        j["findings"]
    );
    // The stand-in's Date header gives the clock reference.
    assert_eq!(j["turn"]["credentials"]["skew_reference"], "mattermost");
    assert_eq!(j["turn"]["credentials"]["clock_skew_ms"], 0);
}

// ---------------------------------------------------------------------------------------------
// The server side of the relay echo, on real sockets: announced over the control channel,
// answered only after the return-routability check, never for an unannounced source.

fn in_ns<T: Send + 'static>(ns: &probe_tests::Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new("/run/netns").join(ns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns only changes this thread's network namespace; the fd is open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The control channel as probe-client opens it on the TCP port: inside TLS.
struct Ctl {
    s: probe_tests::tls::ClientStream,
    dec: probe_proto::frame::Decoder,
}

impl Ctl {
    fn ask(&mut self, m: &probe_proto::msg::Control) -> probe_proto::msg::Control {
        use std::io::{Read, Write};
        self.s.write_all(&m.to_frame(None)).unwrap();
        self.s.flush().unwrap();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(p) = self.dec.next_frame().unwrap() {
                return probe_proto::msg::Control::from_payload(p, None).unwrap();
            }
            let n = self
                .s
                .read(&mut buf)
                .expect("an answer on the control channel");
            assert!(n > 0, "the server closed the control channel");
            self.dec.push(&buf[..n]);
        }
    }
}

/// Sends one echo request from `sock` (with `cookie` in its fill) and returns the reply.
fn echo_once(
    sock: &std::net::UdpSocket,
    key: &[u8; 32],
    session: u64,
    seq: u32,
    cookie: Option<[u8; 8]>,
) -> Option<Vec<u8>> {
    use probe_proto::session::RELAY_COOKIE_AT;
    let sk = probe_proto::echo::SessionKey::new(key);
    let mut buf = [0u8; 1200];
    let n = probe_proto::echo::encode_request(&sk, session, seq, 1, 160, &mut buf);
    if let Some(c) = cookie {
        buf[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8].copy_from_slice(&c);
    }
    sock.send(&buf[..n]).unwrap();
    let mut r = [0u8; 1500];
    match sock.recv(&mut r) {
        Ok(m) => {
            assert!(probe_proto::echo::decode_reply(&sk, &r[..m]).is_ok());
            Some(r[..m].to_vec())
        }
        Err(_) => None,
    }
}

#[test]
fn relay_echo_only_from_an_announced_and_proven_relay() {
    use probe_proto::msg::{Control, Hello, Profile, PROTO_MAX, PROTO_MIN};
    use probe_proto::session::{RELAY_COOKIE_AT, RELAY_UNCONFIRMED_REPLIES};
    let _g = serial();
    probe_tests::binaries();
    let t = Topology::routed();
    let _server = start_server_with_state(
        &t.server,
        "0.0.0.0:8443",
        &[] as &[&str],
        &BTreeMap::new(),
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dst: std::net::SocketAddr = format!("{}:8443", t.server_ip).parse().unwrap();
    // The session's control channel, from the client.
    let mut ctl = in_ns(&t.client, move || {
        let s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Ctl {
            s: probe_tests::tls::connect(s).expect("TLS on the TCP port").0,
            dec: probe_proto::frame::Decoder::new(),
        }
    });
    let hello = Control::Hello(Hello {
        proto_min: PROTO_MIN,
        proto_max: PROTO_MAX,
        client_version: "turn-test".into(),
        site: "turn".into(),
        profile: Profile::Audio,
        interval_us: 20_000,
        size: 160,
        duration_ms: 5_000,
        pad: vec![0; 1100],
        time_ms: 0,
        nonce: [7; 16],
    });
    let w = match ctl.ask(&hello) {
        Control::Welcome(w) => w,
        other => panic!("{other:?}"),
    };
    assert!(w.proto >= 3, "this server speaks the relay messages");
    // Two sources in the router namespace: the "relay" (203.0.113.1) and a stranger
    // (198.51.100.1), neither of them the session's peer.
    let bind = |ip: std::net::Ipv4Addr| {
        in_ns(&t.router, move || {
            let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
            s.connect(dst).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
    };
    let relay = bind(t.router_public_ip);
    let stranger = bind(t.router_client_ip);
    let (key, id) = (w.key, w.session_id);
    assert_eq!(
        echo_once(&relay, &key, id, 0, None),
        None,
        "not announced: no reply"
    );
    let added = ctl.ask(&Control::RelayPeer {
        session_id: id,
        relayed: relay.local_addr().unwrap(),
        pad: vec![0; 128],
    });
    assert_eq!(
        added,
        Control::RelayAdded {
            accepted: true,
            reason: None
        }
    );
    assert_eq!(
        echo_once(&stranger, &key, id, 1, None),
        None,
        "unannounced source"
    );
    // Priming: a few replies carrying the cookie, then silence until it comes back.
    let mut cookie = [0u8; 8];
    for seq in 0..RELAY_UNCONFIRMED_REPLIES {
        let r = echo_once(&relay, &key, id, 10 + seq, None).expect("priming reply");
        cookie.copy_from_slice(&r[RELAY_COOKIE_AT..RELAY_COOKIE_AT + 8]);
    }
    assert_eq!(
        echo_once(&relay, &key, id, 20, None),
        None,
        "unproven relay goes quiet"
    );
    for seq in 100..110 {
        assert!(
            echo_once(&relay, &key, id, seq, Some(cookie)).is_some(),
            "proven relay"
        );
    }
    assert_eq!(
        echo_once(&stranger, &key, id, 200, Some(cookie)),
        None,
        "the cookie is not a licence for others"
    );
    match ctl.ask(&Control::RelayFinish {
        session_id: id,
        pad: vec![0; 128],
    }) {
        Control::RelayCounters(c) => {
            assert_eq!((c.udp_rx, c.udp_tx), (10, 10), "priming is not counted")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn incomplete_turn_flags_are_refused_before_any_io() {
    let client = &probe_tests::binaries().client;
    for (args, want) in [
        (
            vec!["192.0.2.1", "--turn", "turn:turn.calls.test"],
            "--turn needs --turn-user with --turn-pass, or --turn-secret",
        ),
        (
            vec![
                "192.0.2.1",
                "--turn",
                "stun:turn.calls.test",
                "--turn-secret",
                "s",
            ],
            "is a STUN URL, not TURN",
        ),
        (
            vec!["192.0.2.1", "--mattermost", "https://mm.calls.test"],
            "--mm-token",
        ),
    ] {
        let t = std::time::Instant::now();
        let out = std::process::Command::new(client)
            .args(&args)
            .env_remove("PROBE_MM_TOKEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "refused before any IO"
        );
    }
}

#[test]
fn a_refresh_that_fails_midway_is_reported() {
    let lab = lab(&[]);
    let bins = probe_tests::binaries();
    let argv = vec![
        bins.client.display().to_string(),
        format!("{}:8443", lab.t.server_ip),
        "--json".into(),
        "--site".into(),
        "turn".into(),
        "--pin".into(),
        lab.server.pin().to_string(),
        "--duration".into(),
        "4".into(),
        "--no-upload".into(),
        "--turn".into(),
        "turn:turn.calls.test:3478?transport=udp".into(),
        "--turn-secret".into(),
        SECRET.into(),
    ];
    let mut cmd = lab.t.client.argv_command(&argv);
    probe_tests::probe::probe_env(&mut cmd, &BTreeMap::new());
    let client = Proc::spawn(cmd, "probe-client (background)", CLIENT_BOUND).unwrap();
    // Once the relay is announced (allocation, permission and channel done), the TURN server
    // goes silent: the refresh halfway through the echo gets no answer.
    let t0 = std::time::Instant::now();
    while !lab.server.stderr().contains("TURN relay announced") {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "{}",
            lab.server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.t
        .add_rules(Role::Router, Chain::Input, &["udp dport 3478 drop"]);
    let done = client.finish(CLIENT_BOUND);
    let j: Value = probe_tests::probe::parse_report(&done.stdout)
        .unwrap_or_else(|| panic!("no report: {}\n{}", done.stdout, done.stderr));
    let a = attempt(&j, "udp");
    let failures = a["refresh_failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("Refresh: no response")),
        "{a:#}"
    );
    let f = finding(&j, "turn_allocation_failed").unwrap_or_else(|| panic!("{:#}", j["findings"]));
    assert_eq!(f["severity"], "warning");
    assert!(
        f["summary"].as_str().unwrap().contains("refresh failed"),
        "{f}"
    );
}

/// The MTU of the emulated narrow hop between client and TURN server.
const TURN_HOP_MTU: u16 = 1280;

/// A 1280-byte hop between client and coturn whose ICMP "fragmentation needed" never comes
/// back: coturn runs on the router itself, so there is no forwarding hop to narrow. DF packets
/// over 1280 bytes between the client and coturn's listening address die silently on arrival,
/// either way (the router's prerouting for the client's, the client's for coturn's), as such a
/// hop drops them; neither sender learns of it. Fragmentable ones pass whole, as they would in
/// fragments. Priority -500 sees packets before reassembly.
fn narrow_turn_hop(t: &Topology) {
    let (turn, len) = (t.router_client_ip, TURN_HOP_MTU);
    for (ns, dir) in [(&t.router, "daddr"), (&t.client, "saddr")] {
        ns.nft(&format!(
            "add table ip turn_mtu\n\
             add chain ip turn_mtu pre {{ type filter hook prerouting priority -500; policy accept; }}\n\
             add rule ip turn_mtu pre ip {dir} {turn} ip length > {len} ip frag-off & 0x4000 != 0 counter drop\n"
        ));
    }
}

fn turn_mtu_run(lab: &Lab) -> ClientRun {
    lab.client(&[
        "--turn",
        "turn:turn.calls.test:3478?transport=udp",
        "--turn-secret",
        SECRET,
    ])
}

/// `got` is within one step of the largest planned size that fits `truth`.
fn within_one_step(sizes: &[u64], got: &Value, truth: u64, what: &str, ctx: &str) {
    let got = got
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {got}\n{ctx}"));
    let i = sizes
        .iter()
        .position(|s| *s == got)
        .unwrap_or_else(|| panic!("{what} {got} is not a planned size\n{ctx}"));
    let want = sizes
        .iter()
        .rposition(|s| *s <= truth)
        .expect("a size fits");
    assert!(i.abs_diff(want) <= 1, "{what}: {got}, truth {truth}\n{ctx}");
}

#[test]
fn path_mtu_through_a_narrow_turn_path_is_large_packets_lost_naming_the_relay() {
    let lab = lab(&[]);
    narrow_turn_hop(&lab.t);
    let run = turn_mtu_run(&lab);
    let j = json(&run);
    let ctx = format!(
        "{:#}\n{}\n{}\n{}",
        j["mtu"],
        run.describe(),
        lab.t.router.ruleset(),
        lab.t.client.ruleset()
    );
    let m = &j["mtu"]["turn"];
    assert_eq!(m["transport"], "udp", "{ctx}");
    assert_eq!(m["framing"], "channel_data", "{ctx}");
    let overhead = m["overhead"].as_u64().expect("overhead");
    assert_eq!(overhead, 4, "ChannelData's header: {ctx}");
    let sizes: Vec<u64> = m["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // Probe-server payload that fits: the hop less IPv4 and UDP headers and ChannelData's.
    let truth = u64::from(TURN_HOP_MTU) - 28 - overhead;
    within_one_step(&sizes, &m["up"]["largest_df"], truth, "TURN up DF", &ctx);
    within_one_step(
        &sizes,
        &m["down"]["largest_df"],
        truth,
        "TURN down DF",
        &ctx,
    );
    assert_eq!(m["up"]["icmp"], false, "{ctx}");
    // Upstream the client's DF decides: fragmentable probes pass whole. (Downstream, coturn
    // sends with its own DF setting, whatever the probe asked of the server.)
    assert_eq!(m["up"]["largest_no_df"], *sizes.last().unwrap(), "{ctx}");
    // The direct path is clean: its figures are full size.
    let full = j["mtu"]["udp"]["sizes"].as_array().unwrap().last().cloned();
    assert_eq!(j["mtu"]["udp"]["up"]["largest_df"], full.unwrap(), "{ctx}");
    let f = finding(j, "large_packets_lost").unwrap_or_else(|| panic!("no finding\n{ctx}"));
    let summary = f["summary"].as_str().unwrap();
    assert!(summary.contains("Through the TURN relay"), "{summary}");
    assert!(summary.contains("through the TURN relay"), "{summary}");
    assert!(
        f["fix"].as_str().unwrap().contains("TURN over TCP or TLS"),
        "{f:#}"
    );
    for ns in [&lab.t.router, &lab.t.client] {
        let rules = ns.ruleset();
        let rule = rules
            .lines()
            .find(|l| l.contains("ip length > 1280"))
            .unwrap_or_else(|| panic!("no rule: {rules}"));
        assert!(
            !rule.contains("packets 0 "),
            "the rule dropped nothing: {rule}"
        );
    }
    // Unanswered probes run to the plan's 1.5 s deadline; the phase is bounded at 3 s.
    let ms = m["ms"].as_u64().expect("ms");
    assert!(
        (1400..=3200).contains(&ms),
        "the relay phase took {ms} ms\n{ctx}"
    );
}

#[test]
fn path_mtu_through_a_clean_turn_path_is_full_size_without_a_finding() {
    let lab = lab(&[]);
    let run = turn_mtu_run(&lab);
    let j = json(&run);
    let m = &j["mtu"]["turn"];
    let ctx = format!("{:#}\n{}", j["mtu"], run.describe());
    let full = m["sizes"].as_array().and_then(|s| s.last()).cloned();
    assert_eq!(
        full,
        Some(Value::from(1468)),
        "1500 less IPv4, UDP and ChannelData: {ctx}"
    );
    for way in ["up", "down"] {
        for key in ["largest_df", "largest_no_df"] {
            assert_eq!(Some(&m[way][key]), full.as_ref(), "{way} {key}: {ctx}");
        }
    }
    assert!(finding(j, "large_packets_lost").is_none(), "{ctx}");
    assert!(
        m["ms"].as_u64().expect("ms") < 1000,
        "nothing lost, nothing waited: {ctx}"
    );
    assert_eq!(run.code, Some(0), "{ctx}");
}

#[test]
fn human_report_shows_the_turn_mtu_line() {
    let lab = lab(&[]);
    narrow_turn_hop(&lab.t);
    let args = [
        format!("{}:8443", lab.t.server_ip),
        "--pin".into(),
        lab.server.pin().to_string(),
        "--duration".into(),
        "1".into(),
        "--no-upload".into(),
        "--site".into(),
        "turn".into(),
        "--turn".into(),
        "turn:turn.calls.test:3478?transport=udp".into(),
        "--turn-secret".into(),
        SECRET.into(),
    ];
    let run = try_run_client_env(&lab.t.client, &args, &BTreeMap::new(), CLIENT_BOUND);
    assert!(
        run.stdout.contains("TURN largest payload  up "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("channel data +4 B"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Through the TURN relay"),
        "{}",
        run.stdout
    );
    println!("{}", run.stdout);
}

/// Server-side TURN (a `turn:` entry and RTCD's `turn.static_auth_secret`) lowers a host
/// candidate error to a warning only when it allocates from RTCD's host, as RTCD's own relay
/// candidate needs: with the TURN server's secret the client is warned; with another secret
/// (coturn answers 401) the error stays, and probe-server says why at start.
#[test]
fn server_side_turn_counts_only_where_it_allocates() {
    let lab = lab(&[]);
    let turn = format!("turn:{}:3478", lab.t.router_client_ip);
    for (secret, severity, said) in [
        (SECRET, "warning", "allocated relay"),
        (
            "not-the-secret",
            "error",
            ":3478: 401 Unauthorized: check that turn.static_auth_secret",
        ),
    ] {
        let dir = TempDir::new("server-side-turn");
        let cfg = dir.path().join("rtcd.toml");
        std::fs::write(
            &cfg,
            format!(
                "[rtc]\nice_host_override = \"172.31.9.9\"\nice_servers = [\"{turn}\"]\nturn.static_auth_secret = \"{secret}\"\n"
            ),
        )
        .unwrap();
        let server = start_server_with_state(
            &lab.t.server,
            "0.0.0.0:8444",
            &["--rtcd-config", cfg.to_str().unwrap()],
            &BTreeMap::new(),
            LIFETIME,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let args = [
            format!("{}:8444", lab.t.server_ip),
            "--json".into(),
            "--pin".into(),
            server.pin().to_string(),
            "--duration".into(),
            "1".into(),
            "--no-upload".into(),
        ];
        let run = try_run_client_env(&lab.t.client, &args, &BTreeMap::new(), CLIENT_BOUND);
        let j = json(&run);
        let f = finding(j, "ice_host_override_wrong")
            .unwrap_or_else(|| panic!("{secret}: no ice_host_override_wrong\n{}", run.describe()));
        assert_eq!(f["severity"], severity, "{secret}: {f}\n{}", run.describe());
        assert!(
            server.stderr().contains(said),
            "{secret}: the server's log should say {said:?}:\n{}",
            server.stderr()
        );
    }
}
