//! `probe-client rtcd-api` against the RTCD stand-in (`rtcd-standin`), from a "Mattermost
//! host" namespace over a router: dialled as the Calls plugin dials (explicit port, every IPv4
//! address, `/ws` with Basic credentials, Masterminds version rules), the proxy variables'
//! real effect (a CONNECT to RTCD itself → 404, plugin issue #379), the proxy environment read
//! from a running `mattermost` process, and the stand-in's own answers byte for byte.
//!
//! Every test has its own namespaces. A fake `mattermost` process lives in its test's client
//! namespace only, and the client reads a Mattermost environment only from its own network
//! namespace, so tests running in parallel (or other test binaries on the host) never see it.

use std::time::Duration;

use probe_tests::netns::Netns;
use probe_tests::proc::Finished;
use probe_tests::{Proc, TempDir, Topology};
use serde_json::Value;

const STANDIN: &str = env!("CARGO_BIN_EXE_rtcd-standin");
const LIFETIME: Duration = Duration::from_secs(120);
const KEY: &str = "standin-auth-key-4242";
const CREDS: [&str; 4] = ["--client-id", "mattermost", "--auth-key", KEY];

fn start_standin(ns: &Netns, args: &[&str]) -> Proc {
    let mut argv = vec![STANDIN, "serve"];
    argv.extend_from_slice(args);
    let p = ns.spawn(&argv, LIFETIME);
    if let Err(e) = p
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("rtcd-standin ready")
        })
    {
        panic!("stand-in not ready ({e:?}): {}", p.stderr());
    }
    p
}

/// Routed topology with one stand-in on the server (203.0.113.2:8045).
fn api_topology(version: &str) -> (Topology, Proc) {
    probe_tests::binaries();
    let t = Topology::routed();
    let standin = start_standin(
        &t.server,
        &[
            "--client-id",
            "mattermost",
            "--auth-key",
            KEY,
            "--version",
            version,
        ],
    );
    (t, standin)
}

fn rtcd_api_url(t: &Topology, url: &str, args: &[&str], env: &[(&str, &str)]) -> (Finished, Value) {
    let bins = probe_tests::binaries();
    let mut argv = vec![bins.client.to_str().unwrap(), "rtcd-api", url, "--json"];
    argv.extend_from_slice(args);
    let mut cmd = t.client.argv_command(&argv);
    cmd.envs(env.iter().copied());
    // Keep the proxy and CA settings of the machine running the tests out of it.
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "PROBE_RTCD_AUTH_KEY",
    ] {
        if !env.iter().any(|(k, _)| *k == v) {
            cmd.env_remove(v);
        }
    }
    let done = probe_tests::run_bounded(cmd, "probe-client rtcd-api", Duration::from_secs(30));
    let json = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("rtcd-api JSON: {e}\n{}", done.describe()));
    (done, json)
}

fn rtcd_api(t: &Topology, args: &[&str], env: &[(&str, &str)]) -> (Finished, Value) {
    rtcd_api_url(t, &format!("http://{}:8045", t.server_ip), args, env)
}

fn ids(j: &Value) -> Vec<String> {
    let mut v: Vec<String> = j["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["id"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn finding<'a>(j: &'a Value, id: &str) -> &'a Value {
    j["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == id))
        .unwrap_or_else(|| panic!("no {id} finding: {j:#}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key}: {v:#}"))
}

/// The check `id` made against `address` (`None`: the URL-level checks).
fn check<'a>(j: &'a Value, id: &str, address: Option<&str>) -> &'a Value {
    j["checks"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|c| c["id"] == id && c["address"].as_str() == address)
        })
        .unwrap_or_else(|| panic!("no check {id} at {address:?}: {j:#}"))
}

/// Raw bytes to `ip:port` from `ns` (bash's /dev/tcp), and everything that comes back within
/// 3 s — to see the stand-in's answers exactly as a Go client would read them.
fn raw(ns: &Netns, ip: &str, port: u16, request: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{port} && printf '%s' \"$REQ\" >&3 && timeout 3 cat <&3; true"
    );
    let mut cmd = ns.argv_command(&["bash", "-c", &script]);
    cmd.env("REQ", request);
    let done = probe_tests::run_bounded(cmd, "raw request", Duration::from_secs(10));
    assert!(done.success(), "{}", done.describe());
    done.stdout
}

// ---- point 10: the stand-in answers as RTCD v1.2.6 does ----

#[test]
fn standin_answers_as_rtcd() {
    let (t, _standin) = api_topology("v1.2.6");
    let ip = t.server_ip.to_string();
    // Refused /ws login: 200, empty body, no upgrade (rtcd service/ws/server.go:120-126).
    let wrong = probe_proto::http::basic_auth("mattermost", "nope");
    let r = raw(
        &t.client,
        &ip,
        8045,
        &format!("GET /ws HTTP/1.1\r\nHost: {ip}:8045\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: {wrong}\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.contains("Content-Length: 0\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    assert!(!r.to_ascii_lowercase().contains("upgrade"), "{r}");
    // No credentials at all: the same.
    let r = raw(
        &t.client,
        &ip,
        8045,
        &format!("GET /ws HTTP/1.1\r\nHost: {ip}:8045\r\n\r\n"),
    );
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    // /login errors: 400 JSON {"code","error"} (service/auth.go:189-219, audit.go:21-42).
    let login = |body: &str| {
        raw(
            &t.client,
            &ip,
            8045,
            &format!("POST /login HTTP/1.1\r\nHost: {ip}:8045\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        )
    };
    let r = login(r#"{"clientID":"mattermost","authKey":"nope"}"#);
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
    assert!(r.contains("Content-Type: application/json\r\n"), "{r}");
    assert!(
        r.ends_with(
            "\r\n\r\n{\"code\":\"400\",\"error\":\"login failed: authentication failed\"}\n"
        ),
        "{r}"
    );
    let r = login(r#"{"clientID":"someone","authKey":"nope"}"#);
    assert!(
        r.ends_with("{\"code\":\"400\",\"error\":\"login failed: authentication failed: error: not found\"}\n"),
        "{r}"
    );
    let r = login(&format!(r#"{{"clientID":"mattermost","authKey":"{KEY}"}}"#));
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.contains("{\"bearerToken\":\"") && r.ends_with("\",\"code\":\"200\"}\n"),
        "{r}"
    );
    // GET /login: http.NotFound (auth.go:190-192).
    let r = raw(
        &t.client,
        &ip,
        8045,
        &format!("GET /login HTTP/1.1\r\nHost: {ip}:8045\r\n\r\n"),
    );
    assert!(
        r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.ends_with("404 page not found\n"),
        "{r}"
    );
    // What gorilla/websocket writes to "the proxy" (proxy.go:50-57) — here RTCD itself: 404.
    let r = raw(
        &t.client,
        &ip,
        8045,
        &format!("CONNECT {ip}:8045 HTTP/1.1\r\nHost: {ip}:8045\r\nUser-Agent: Go-http-client/1.1\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\n404 page not found\n"), "{r}");
}

// ---- point 3: a refused /ws login, and no credentials ----

#[test]
fn refused_ws_login_is_auth_failed_and_no_credentials_is_skipped() {
    let (t, _standin) = api_topology("v1.2.6");
    let ip = t.server_ip.to_string();

    // Right pair: Basic on /ws, 101.
    let (done, j) = rtcd_api(&t, &CREDS, &[]);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert_eq!(
        (j["ok"].clone(), j["version"].clone()),
        (true.into(), "v1.2.6".into())
    );
    for id in ["tcp_connect", "version", "ws_upgrade"] {
        assert_eq!(check(&j, id, Some(&ip))["status"], "pass", "{id}: {j:#}");
    }
    assert!(ids(&j).is_empty(), "{j:#}");

    // Wrong key: RTCD answers /ws with 200 and nothing else — rtcd_api_auth_failed, and
    // /login says which half of the pair is wrong.
    let (done, j) = rtcd_api(
        &t,
        &["--client-id", "mattermost", "--auth-key", "not-the-key"],
        &[],
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(ids(&j), vec!["rtcd_api_auth_failed"], "{j:#}");
    let f = finding(&j, "rtcd_api_auth_failed");
    assert_eq!(f["severity"], "error");
    assert!(
        text(f, "summary").contains("200 with an empty body"),
        "{f:#}"
    );
    assert!(
        text(f, "summary").contains("the auth key is wrong"),
        "{f:#}"
    );
    assert!(text(f, "fix").contains("MM_CALLS_RTCD_AUTH_KEY"), "{f:#}");
    assert_eq!(check(&j, "ws_upgrade", Some(&ip))["status"], "fail");
    assert_eq!(check(&j, "login", Some(&ip))["status"], "fail");

    // Unknown client ID, from the URL's credentials.
    let (done, j) = rtcd_api_url(&t, &format!("http://stranger:{KEY}@{ip}:8045"), &[], &[]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let f = finding(&j, "rtcd_api_auth_failed");
    assert!(
        text(f, "summary").contains("does not know client ID stranger"),
        "{f:#}"
    );

    // No credentials: the WebSocket check is skipped, not failed, and the run passes.
    let (done, j) = rtcd_api(&t, &[], &[]);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert!(ids(&j).is_empty(), "{j:#}");
    let ws = check(&j, "ws_upgrade", Some(&ip));
    assert_eq!(ws["status"], "skipped", "{ws:#}");
}

// ---- point 1: dialled as the plugin dials ----

#[test]
fn url_without_port_is_refused_not_defaulted() {
    probe_tests::binaries();
    let t = Topology::routed();
    // Something RTCD-like on port 80: the old default would have passed.
    let _standin = start_standin(
        &t.server,
        &[
            "--api",
            "0.0.0.0:80",
            "--ice-port",
            "0",
            "--client-id",
            "mattermost",
            "--auth-key",
            KEY,
        ],
    );
    let url = format!("http://mattermost:{KEY}@{}/", t.server_ip);
    let (done, j) = rtcd_api_url(&t, &url, &[], &[]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(ids(&j), vec!["rtcd_url_no_port"], "{j:#}");
    let f = finding(&j, "rtcd_url_no_port");
    assert!(
        text(f, "fix").contains(&format!("http://{}:8045", t.server_ip)),
        "{f:#}"
    );
    assert_eq!(j["url"], format!("http://{}", t.server_ip));
    // No connection was attempted.
    assert_eq!(check(&j, "url", None)["status"], "fail");
    assert!(j["checks"].as_array().unwrap().len() == 1, "{j:#}");
    assert!(j["addresses"].as_array().unwrap().is_empty());
}

#[test]
fn every_a_record_gets_its_own_connection_and_version_check() {
    probe_tests::binaries();
    let t = Topology::routed();
    // Two RTCDs behind one name: .2 a prerelease of the minimum, .3 the minimum itself with
    // another key.
    t.server
        .ip(&["addr", "add", "203.0.113.3/24", "dev", "eth0"]);
    let _a = start_standin(
        &t.server,
        &[
            "--api",
            "203.0.113.2:8045",
            "--client-id",
            "mattermost",
            "--auth-key",
            KEY,
            "--version",
            "v1.2.5-rc1",
        ],
    );
    let _b = start_standin(
        &t.server,
        &[
            "--api",
            "203.0.113.3:8045",
            "--ice-port",
            "0",
            "--client-id",
            "mattermost",
            "--auth-key",
            "another-key",
            "--version",
            "v1.2.5",
        ],
    );
    t.client
        .write_hosts(&["203.0.113.2 rtcd.test", "203.0.113.3 rtcd.test"]);
    let (done, j) = rtcd_api_url(
        &t,
        "http://rtcd.test:8045",
        &[&CREDS[..], &["--min-rtcd-version", "v1.2.5"]].concat(),
        &[],
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let mut addrs: Vec<&str> = j["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    addrs.sort();
    assert_eq!(addrs, vec!["203.0.113.2", "203.0.113.3"], "{j:#}");
    // .2: the right key, but a prerelease sorts below its release (Masterminds semver).
    assert_eq!(
        check(&j, "ws_upgrade", Some("203.0.113.2"))["status"],
        "pass",
        "{j:#}"
    );
    assert_eq!(
        check(&j, "version", Some("203.0.113.2"))["status"],
        "fail",
        "{j:#}"
    );
    // .3: the version passes, the key does not.
    assert_eq!(
        check(&j, "version", Some("203.0.113.3"))["status"],
        "pass",
        "{j:#}"
    );
    assert_eq!(
        check(&j, "ws_upgrade", Some("203.0.113.3"))["status"],
        "fail",
        "{j:#}"
    );
    assert_eq!(
        ids(&j),
        vec!["rtcd_api_auth_failed", "rtcd_version_old"],
        "{j:#}"
    );
    let old = finding(&j, "rtcd_version_old");
    assert!(
        text(old, "summary").contains("at 203.0.113.2 (one of the 2 addresses of rtcd.test"),
        "{old:#}"
    );
    let auth = finding(&j, "rtcd_api_auth_failed");
    assert!(text(auth, "summary").contains("at 203.0.113.3"), "{auth:#}");
    assert_eq!(j["min_rtcd_version"], "v1.2.5");
}

#[test]
fn unparsable_version_is_refused() {
    let (t, _standin) = api_topology("custom-build");
    let (done, j) = rtcd_api(&t, &CREDS, &[]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(ids(&j), vec!["rtcd_version_invalid"], "{j:#}");
}

// ---- point 2: proxy truth ----

/// With HTTP_PROXY applying to an http:// URL the plugin still dials RTCD's own address and
/// sends it the CONNECT; nothing listens at the "proxy" — it is never contacted.
#[test]
fn http_proxy_makes_the_plugin_send_connect_to_rtcd() {
    let (t, _standin) = api_topology("v1.2.6");
    let ip = t.server_ip.to_string();
    let env = [
        ("HTTP_PROXY", "http://198.51.100.1:3128"),
        ("NO_PROXY", "localhost,.internal"),
    ];
    let (done, j) = rtcd_api(&t, &[&CREDS[..], &["--proxy-env", "self"]].concat(), &env);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(ids(&j), vec!["proxy_in_path"], "{j:#}");
    let f = finding(&j, "proxy_in_path");
    assert_eq!(f["severity"], "error");
    let summary = text(f, "summary");
    assert!(summary.contains("fails with \"Not Found\""), "{summary}");
    assert!(summary.contains("RTCD answered 404 Not Found"), "{summary}");
    assert!(!summary.contains("both routes work"), "{summary}");
    assert!(
        text(f, "fix").contains("NO_PROXY=localhost,.internal,203.0.113.2"),
        "{f:#}"
    );
    let c = check(&j, "proxy_connect", Some(&ip));
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(
        text(c, "detail").contains(&format!("`CONNECT {ip}:8045`")),
        "{c:#}"
    );
    // Without the variable everything works: /version (absolute form, as Go sends it to the
    // "proxy") and the WebSocket directly.
    assert_eq!(check(&j, "version", Some(&ip))["status"], "pass");
    assert_eq!(check(&j, "ws_upgrade", Some(&ip))["status"], "pass");
    assert_eq!(j["proxy"]["via_proxy_ok"], false);
    assert_eq!(j["proxy"]["direct_ok"], true);
    assert_eq!(j["proxy_env"]["source"], "self");

    // With the suggested NO_PROXY the plugin's requests are plain again.
    let no_proxy = j["proxy"]["no_proxy"].as_str().unwrap().to_string();
    let (done, j) = rtcd_api(
        &t,
        &[&CREDS[..], &["--proxy-env", "self"]].concat(),
        &[
            ("HTTP_PROXY", "http://198.51.100.1:3128"),
            ("NO_PROXY", &no_proxy),
        ],
    );
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert!(j["proxy"].is_null() && ids(&j).is_empty(), "{j:#}");
    // HTTPS_PROXY does not apply to an http:// URL (nor to its ws:// WebSocket).
    let (done, j) = rtcd_api(
        &t,
        &[&CREDS[..], &["--proxy-env", "self"]].concat(),
        &[("HTTPS_PROXY", "http://198.51.100.1:3128")],
    );
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert!(j["proxy"].is_null(), "{j:#}");
}

/// https:// with HTTPS_PROXY: the CONNECT lands, in plaintext, on RTCD's TLS port, which closes
/// the connection (Go's TLS server answers only what looks like GET/HEAD/POST/PUT/OPTIONS).
#[test]
fn https_proxy_fails_even_version() {
    probe_tests::binaries();
    let t = Topology::routed();
    let dir = TempDir::new("tls-proxy");
    let cert = dir.path().join("rtcd-cert.pem");
    let cert = cert.to_str().unwrap();
    let ip = t.server_ip.to_string();
    let _standin = start_standin(
        &t.server,
        &[
            "--client-id",
            "mattermost",
            "--auth-key",
            KEY,
            "--tls-cert-out",
            cert,
            "--tls-name",
            &ip,
        ],
    );
    let url = format!("https://{ip}:8045");
    let (done, j) = rtcd_api_url(
        &t,
        &url,
        &[&CREDS[..], &["--proxy-env", "self"]].concat(),
        &[
            ("SSL_CERT_FILE", cert),
            ("https_proxy", "198.51.100.1:3128"),
        ],
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(ids(&j), vec!["proxy_in_path"], "{j:#}");
    let f = finding(&j, "proxy_in_path");
    assert!(text(f, "summary").contains("even GET /version"), "{f:#}");
    assert!(
        text(f, "summary").starts_with("https_proxy=198.51.100.1:3128"),
        "{f:#}"
    );
    assert!(text(f, "fix").contains(&format!("NO_PROXY={ip} ")), "{f:#}");
    let c = check(&j, "proxy_connect", Some(&ip));
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(text(c, "detail").contains("closed"), "{c:#}");
    // Directly, TLS and the WebSocket work.
    assert_eq!(check(&j, "tls", Some(&ip))["status"], "pass");
    assert_eq!(check(&j, "ws_upgrade", Some(&ip))["status"], "pass");
}

/// The real /proc path: a process named `mattermost` in this namespace carries the proxy
/// variables; rtcd-api (whose own environment has none) reads them from /proc/PID/environ.
#[test]
fn proxy_variables_are_read_from_the_mattermost_process() {
    let (t, _standin) = api_topology("v1.2.6");
    let dir = TempDir::new("fake-mattermost");
    let fake = dir.path().join("mattermost");
    std::fs::copy("/usr/bin/sleep", &fake).expect("copy sleep");
    let mut cmd = t.client.argv_command(&[fake.to_str().unwrap(), "60"]);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HTTP_PROXY", "http://198.51.100.1:3128")
        .env("no_proxy", "localhost");
    let mm = Proc::spawn(cmd, "fake mattermost", LIFETIME).expect("spawn fake mattermost");
    // Wait until the exec happened (comm is the new name).
    let comm = format!("/proc/{}/comm", mm.pid());
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "mattermost") {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "fake mattermost did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (done, j) = rtcd_api(&t, &CREDS, &[]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert_eq!(j["proxy_env"]["source"], "mattermost", "{j:#}");
    assert_eq!(j["proxy_env"]["pid"], mm.pid(), "{j:#}");
    let f = finding(&j, "proxy_in_path");
    assert!(
        text(f, "summary").contains(&format!(
            "in the environment of the running Mattermost server (pid {})",
            mm.pid()
        )),
        "{f:#}"
    );
    assert!(
        text(f, "fix").contains("NO_PROXY=localhost,203.0.113.2"),
        "{f:#}"
    );

    // `--proxy-env self` ignores it; this tool's own environment has no proxy.
    let (done, j) = rtcd_api(&t, &[&CREDS[..], &["--proxy-env", "self"]].concat(), &[]);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert_eq!(j["proxy_env"]["source"], "self");
    assert!(j["proxy"].is_null(), "{j:#}");
    drop(mm);
}

/// The plugin's URL names a port where RTCD's API is not: its ICE port (RTCD closes HTTP
/// there) or another HTTP service. The fix says which, instead of "open the firewall".
#[test]
fn a_port_that_is_not_rtcds_api_is_named_so() {
    let (t, _standin) = api_topology("v1.2.6");
    let ice = format!("http://{}:8443", t.server_ip);
    let (done, j) = rtcd_api_url(&t, &ice, &CREDS, &[]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let f = finding(&j, "rtcd_api_unreachable");
    assert!(
        text(f, "summary").contains("connects, but RTCD's API does not answer"),
        "{f:#}"
    );
    assert!(
        text(f, "fix").contains("8045") && !text(f, "fix").contains("firewalls"),
        "{f:#}"
    );
    // probe-server's TCP port answers HTTP (its test page): another service.
    let _probe = probe_tests::probe::start_server_with_state(
        &t.server,
        "0.0.0.0:9443",
        &[] as &[&str],
        &std::collections::BTreeMap::new(),
        LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let other = format!("http://{}:9443", t.server_ip);
    let (done, j) = rtcd_api_url(&t, &other, &CREDS, &[]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let f = finding(&j, "rtcd_api_unreachable");
    assert!(
        text(f, "summary").contains("another service answers"),
        "{f:#}"
    );
    assert!(text(f, "fix").contains("8045"), "{f:#}");
}

/// RTCD's API with TLS on ([api.http.tls]) asked in plain HTTP: Go answers 400 "Client sent an
/// HTTP request to an HTTPS server."; the fix is the https URL, not another service.
#[test]
fn plain_http_to_rtcds_tls_api_asks_for_https() {
    probe_tests::binaries();
    let t = Topology::routed();
    let dir = TempDir::new("rtcd-api-tls");
    let cert = dir.path().join("cert.pem").display().to_string();
    let _standin = start_standin(
        &t.server,
        &[&CREDS[..], &["--tls-cert-out", &cert]].concat(),
    );
    let url = format!("http://{}:8045", t.server_ip);
    let (done, j) = rtcd_api_url(&t, &url, &CREDS, &[]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let f = finding(&j, "rtcd_api_unreachable");
    assert!(text(f, "summary").contains("serves TLS"), "{f:#}");
    assert!(
        text(f, "fix").contains(&format!("https://{}:8045", t.server_ip)),
        "{f:#}"
    );
}
