//! Secrets stay secret: the real `probe-server bundle` run on a configuration, an RTCD
//! environment and a log into which 32 distinct secrets were planted, in every shape the
//! redaction knows (secret-named keys, URL and MySQL userinfo, libpq/shell/JSON quoting,
//! `Authorization:`/`Bearer`/`Basic`, long hex/base64 next to a secret-like name, and a config
//! secret repeated bare in a log line). Each secret is grepped for in every file of the
//! archive, and each planted line's marker must be there — so a line that never reached the
//! archive cannot pass for a redacted one. Also: the archive is 0600, written via a temporary
//! file and renamed, and a symlink planted at the output path is replaced, never followed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use probe_tests::netns::Netns;
use probe_tests::{Proc, TempDir};

const STANDIN: &str = env!("CARGO_BIN_EXE_rtcd-standin");
const LIFETIME: Duration = Duration::from_secs(120);

/// The RTCD host: one namespace with an address, the stand-in as RTCD.
fn rtcd_host() -> Netns {
    probe_tests::binaries();
    let ns = Netns::new("secrets");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0p", "up"]);
    ns
}

fn start_standin(ns: &Netns, env: &[(&str, String)]) -> Proc {
    let mut cmd = ns.argv_command(&[STANDIN, "serve", "--version", "v1.2.6"]);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let p = Proc::spawn(cmd, format!("[{}] rtcd-standin", ns.name()), LIFETIME)
        .expect("spawn the stand-in");
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

/// Secrets planted in RTCD's config file (TOML), with the key that must survive beside each.
const CONFIG_SECRETS: [(&str, &str); 13] = [
    ("admin_secret_key", "cfg-admin-secret-01Qa"),
    ("cert_key", "cfg-key-path-02Wb"),
    ("credential", "cfg-turn-credential-03Ec"),
    ("static_auth_secret", "cfg-static-auth-04Rd"),
    ("data_source", "cfg-db-url-pw-05Tf"),
    ("data_source", "cfg-db-qp-pw-06Yg"),
    ("smtp_password", "cfg-smtp-pw-07Uh"),
    ("webhook_url", "cfg-webhook-pw-08Ij"),
    ("notes", "cfg-bearer-09Okz"),
    ("api_token", "cfg-api-token-10Pl"),
    ("mysql_dsn", "cfg-mysql-pw-11As"),
    ("turn_url", "cfg-turn-inline-12Sd"),
    ("libpq", "cfg libpq quoted 13Df"),
];

/// Secrets planted in RTCD's environment, with the variable that must survive.
const ENV_SECRETS: [(&str, &str); 7] = [
    ("RTCD_API_SECURITY_ADMINSECRETKEY", "env-admin-secret-14Fg"),
    ("RTCD_STORE_DATASOURCE", "env-db-url-pw-15Gh"),
    ("RTCD_STORE_DATASOURCE", "env-db-qp-pw-16Hj"),
    ("RTCD_RTC_ICESERVERS", "env-turn-credential-17Jk"),
    ("RTCD_RTC_TURNSTATICAUTHSECRET", "env-static-auth-18Kl"),
    ("RTCD_LOGGER_WEBHOOKTOKEN", "env-logger-token-19Lz"),
    ("RTCD_LOGGER_NOTES", "env shell quoted 20Zx"),
];

/// Log lines (each matches one of the guide's patterns, so the bundle keeps it) with a marker
/// that must survive and the secret that must not.
const LOG_SECRETS: [(&str, &str); 12] = [
    ("L21", "log-url-pw-21Xc"),
    ("L22", "log libpq quoted 22Cv"),
    ("L23", "bG9nOmJhc2ljLTIzQnY="),
    ("L24", "log-bearer-24Vbn"),
    ("L25", "log-json-key-25Bn"),
    ("L26", "5f3a9c0e1d2b4a6f8e0c2d4b6a8f0e26"),
    ("L27", "log dq quoted 27Nm"),
    ("L28", "log-mysql-pw-28Mq"),
    ("L29", "bG9nLWJhc2U2NC1zZWNyZXQtMjk"),
    ("L30", "log shell quoted 30Qw"),
    ("L31", "log-https-pw-31We"),
    ("L32", "log-cookie-32Er"),
];

fn log_lines() -> Vec<String> {
    let s = |i: usize| LOG_SECRETS[i].1;
    vec![
        format!(
            "L21 connection error: dial postgres://rtcd:{}@db:5432/rtcd",
            s(0)
        ),
        format!(
            "L22 connection error: host=db password='{}' sslmode=disable",
            s(1)
        ),
        format!("L23 unauthorized request Authorization: Basic {}", s(2)),
        format!("L24 unauthorized request, authorization: Bearer {}", s(3)),
        format!(
            "{{\"level\":\"error\",\"msg\":\"L25 unauthorized\",\"api_key\":\"{}\"}}",
            s(4)
        ),
        format!("L26 failed to connect with token {} to the API", s(5)),
        format!("L27 failed to connect: PGPASSWORD=\"{}\" psql -h db", s(6)),
        format!(
            "L28 connection error: mysql rtcd:{}@tcp(203.0.113.30:3306)/rtcd",
            s(7)
        ),
        format!("L29 unauthorized: secret: {}", s(8)),
        format!("L30 connection error: export API_TOKEN='{}'", s(9)),
        format!(
            "L31 failed to connect https://admin:{}@rtcd.example.com:8045/version",
            s(10)
        ),
        format!("L32 unauthorized: Cookie: session={}", s(11)),
        // Secrets of the config and the environment, repeated bare: the net removes them.
        format!("L33 unauthorized: admin key was {}", CONFIG_SECRETS[0].1),
        format!("L34 connection error for {}", ENV_SECRETS[1].1),
    ]
}

fn config_text() -> String {
    let s = |i: usize| CONFIG_SECRETS[i].1;
    format!(
        r#"[api]
http.listen_address = ":8045"
http.tls.cert_key = "/etc/rtcd/{}.pem"
security.enable_admin = true
security.admin_secret_key = "{}"

[rtc]
ice_host_override = "203.0.113.2"
ice_servers = [{{ urls = ["turn:203.0.113.20:3478"], username = "calls", credential = "{}" }}]
turn.static_auth_secret = "{}"
turn.credentials_expiration_minutes = 1440

[store]
data_source = "postgres://rtcd:{}@203.0.113.30:5432/rtcd?sslmode=disable&password={}"

[extra]
smtp_password = "{}"
webhook_url = "https://hook:{}@hooks.example.com/x"
notes = "Authorization: Bearer {}"
api_token = "{}"
mysql_dsn = "rtcd:{}@tcp(203.0.113.30:3306)/rtcd"
turn_url = "turn:user:{}@203.0.113.20"
libpq = "host=db password='{}' sslmode=disable"
"#,
        s(1),
        s(0),
        s(2),
        s(3),
        s(4),
        s(5),
        s(6),
        s(7),
        s(8),
        s(9),
        s(10),
        s(11),
        s(12)
    )
}

fn env_vars() -> Vec<(&'static str, String)> {
    let s = |i: usize| ENV_SECRETS[i].1;
    vec![
        (ENV_SECRETS[0].0, s(0).to_string()),
        (
            ENV_SECRETS[1].0,
            format!("postgres://rtcd:{}@db/rtcd?password={}", s(1), s(2)),
        ),
        (
            ENV_SECRETS[3].0,
            format!(
                r#"[{{"urls":["turn:203.0.113.20:3478"],"username":"u","credential":"{}"}}]"#,
                s(3)
            ),
        ),
        (ENV_SECRETS[4].0, s(4).to_string()),
        (ENV_SECRETS[5].0, s(5).to_string()),
        (ENV_SECRETS[6].0, format!("password='{}' mode=x", s(6))),
    ]
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn bundle(ns: &Netns, dir: &Path, out: &Path) -> probe_tests::proc::Finished {
    let config = dir.join("rtcd.toml");
    std::fs::write(&config, config_text()).unwrap();
    let log = dir.join("rtcd.log");
    std::fs::write(&log, log_lines().join("\n") + "\n").unwrap();
    let store = dir.join("results.sqlite");
    let bins = probe_tests::binaries();
    let argv = [
        bins.server.to_str().unwrap(),
        "bundle",
        "-o",
        out.to_str().unwrap(),
        "--rtcd-config",
        config.to_str().unwrap(),
        "--rtcd-log",
        log.to_str().unwrap(),
        "--sample",
        "1",
        "--store",
        store.to_str().unwrap(),
    ];
    probe_tests::run_bounded(
        ns.argv_command(&argv),
        "probe-server bundle",
        Duration::from_secs(30),
    )
}

/// Every file of the archive, extracted by the system's tar, as text.
fn extract(dir: &Path, archive: &Path) -> Vec<(String, String)> {
    let x = dir.join("x");
    std::fs::create_dir(&x).unwrap();
    let untar = probe_tests::run_bounded(
        probe_tests::proc::command(&[
            "tar",
            "-xzf",
            archive.to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
        ]),
        "tar -xzf",
        Duration::from_secs(20),
    );
    assert!(untar.success(), "{}", untar.describe());
    let mut files = Vec::new();
    walk(&x, &mut files);
    files
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned(),
            )
        })
        .collect()
}

#[test]
fn bundle_redacts_32_planted_secrets_from_config_env_and_logs() {
    let ns = rtcd_host();
    let _standin = start_standin(&ns, &env_vars());
    let dir = TempDir::new("secrets-bundle");
    let out = dir.path().join("support.tar.gz");
    let done = bundle(&ns, dir.path(), &out);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    let files = extract(dir.path(), &out);
    let file = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("{name} missing from the archive"))
    };

    let all: Vec<&str> = CONFIG_SECRETS
        .iter()
        .chain(&ENV_SECRETS)
        .chain(&LOG_SECRETS)
        .map(|(_, s)| *s)
        .collect();
    assert!(all.len() >= 30, "the corpus has {} secrets", all.len());
    let mut leaks = Vec::new();
    for secret in &all {
        for (name, text) in &files {
            if text.contains(secret) {
                leaks.push(format!("{secret} in {name}"));
            }
        }
        // Also inside what the bundle prints.
        if done.stdout.contains(secret) || done.stderr.contains(secret) {
            leaks.push(format!("{secret} on the bundle's output"));
        }
    }
    assert!(leaks.is_empty(), "leaked:\n{}", leaks.join("\n"));

    // Not vacuous: every planted place reached the archive, redacted.
    let cfg = file("rtcd-config.toml");
    for (key, _) in CONFIG_SECRETS {
        assert!(
            cfg.contains(key),
            "{key} missing from rtcd-config.toml:\n{cfg}"
        );
    }
    assert!(
        cfg.contains("REDACTED") && cfg.contains("203.0.113.2"),
        "{cfg}"
    );
    // Still TOML, and a lifetime is not a secret: support judges expired TURN credentials by it.
    let parsed: toml::Table = cfg.parse().unwrap_or_else(|e| panic!("{e}:\n{cfg}"));
    assert_eq!(
        parsed["rtc"]["turn"]["credentials_expiration_minutes"].as_integer(),
        Some(1440),
        "{cfg}"
    );
    let env = file("rtcd-env.txt");
    for (var, _) in ENV_SECRETS {
        assert!(env.contains(var), "{var} missing from rtcd-env.txt:\n{env}");
    }
    let log = file("rtcd-log-matches.txt");
    for line in log_lines() {
        let marker = &line[line.find('L').unwrap()..][..3];
        assert!(log.contains(marker), "log line {marker} missing:\n{log}");
    }
    assert!(
        log.contains("password='REDACTED'"),
        "a quoted password loses its whole value:\n{log}"
    );
}

#[test]
fn bundle_is_0600_written_through_a_temporary_file_and_replaces_a_planted_symlink() {
    let ns = rtcd_host();
    let _standin = start_standin(&ns, &[]);
    let dir = TempDir::new("secrets-symlink");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "do not touch").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dir.path().join("support.tar.gz");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    let done = bundle(&ns, dir.path(), &out);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert!(meta.file_type().is_file(), "the output is a regular file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Nothing left behind: no temporary file beside the archive.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "temporary file left: {names:?}"
    );
    assert!(!extract(dir.path(), &out).is_empty());
}

/// The start log's copy-paste client command, once it is logged.
fn users_run_line(server: &probe_tests::ServerHandle) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let err = server.stderr();
        if let Some(l) = err.lines().find(|l| l.contains("users run: probe-client")) {
            return l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `users run:` line:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn token_from_env_or_file_never_appears_in_the_start_log() {
    use std::collections::BTreeMap;
    probe_tests::binaries();
    let ns = Netns::new("token-log");
    const TOKEN: &str = "env-token-never-logged-7Yq2";
    let env = BTreeMap::from([("PROBE_SERVER_TOKEN".to_string(), TOKEN.to_string())]);
    let server = probe_tests::probe::start_server_with_state(
        &ns,
        "127.0.0.1:8443",
        &[] as &[&str],
        &env,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let line = users_run_line(&server);
    assert!(
        line.contains("--token \"$PROBE_SERVER_TOKEN\""),
        "the command points at the variable: {line}"
    );
    let all = server.stderr() + &server.stdout();
    assert!(!all.contains(TOKEN), "the token was printed:\n{all}");
    drop(server);

    let dir = TempDir::new("token-file");
    let file = dir.path().join("probe.token");
    const FILE_TOKEN: &str = "file-token-never-logged-3Kx8";
    std::fs::write(&file, format!("{FILE_TOKEN}\n")).unwrap();
    let server = probe_tests::probe::start_server_with_state(
        &ns,
        "127.0.0.1:8443",
        &["--token-file", file.to_str().unwrap()],
        &BTreeMap::new(),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let line = users_run_line(&server);
    assert!(
        line.contains(&format!("--token \"$(head -n1 '{}')\"", file.display())),
        "the command points at the file: {line}"
    );
    let all = server.stderr() + &server.stdout();
    assert!(!all.contains(FILE_TOKEN), "the token was printed:\n{all}");
}
