//! The Calls plugin's conversation with one of RTCD's addresses: TCP (and TLS), `GET /version`
//! under the URL's path, the `/ws` WebSocket upgrade at the root with Basic
//! `clientID:authKey`, and — when a proxy variable applies — the `CONNECT` that
//! gorilla/websocket then sends to RTCD itself.

use probe_proto::http::{self, Url};
use probe_proto::semver::{self, PluginVerdict, Version};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::conn::{self, OpenError};
use super::goproxy::Proxy;
use super::report::{Check, Status};

/// What went wrong at an address, for the findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No TCP connection to the API's address.
    Unreachable(String),
    /// Connected, but `GET /version` got no HTTP answer (RTCD's ICE port, which closes on
    /// HTTP, or something that holds the connection).
    NoAnswer(String),
    /// An HTTP answer without RTCD's JSON: another service listens there.
    NotRtcd(String),
    /// Go's answer to plain HTTP on a TLS listener: RTCD's API serves TLS ([api.http.tls]).
    WantsTls(String),
    /// The TLS handshake failed (an untrusted certificate, most of the time).
    Tls(String),
    /// RTCD refused the credentials on `/ws`; with what `/login` says about them.
    AuthFailed {
        why: String,
        login: Option<String>,
    },
    WsFailed(String),
}

pub struct AddrRun {
    pub checks: Vec<Check>,
    pub failure: Option<Failure>,
    pub version: Option<String>,
    /// RTCD's answer to the CONNECT the plugin would send (when a proxy applies).
    pub proxy_connect: Option<String>,
    pub proxy_connect_ok: bool,
    /// The plugin's version check on what /version said.
    pub verdict: Option<PluginVerdict>,
}

impl AddrRun {
    pub fn crashed() -> Self {
        AddrRun {
            checks: Vec::new(),
            failure: Some(Failure::Unreachable("the check crashed".into())),
            version: None,
            proxy_connect: None,
            proxy_connect_ok: false,
            verdict: None,
        }
    }
}

pub struct Creds {
    pub client_id: String,
    pub auth_key: String,
}

/// Everything a run at one address needs.
pub struct Plan<'a> {
    pub url: &'a Url,
    pub addr: SocketAddr,
    pub creds: Option<&'a Creds>,
    /// The proxy Go would pick for the URL (the plugin then talks proxy to RTCD itself).
    pub proxy: Option<&'a Proxy>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub deadline: Instant,
    /// The plugin's min_rtcd_version.
    pub min: &'a Version,
}

struct Ctx<'a> {
    plan: &'a Plan<'a>,
    checks: Vec<Check>,
}

impl Ctx<'_> {
    fn push(&mut self, id: &str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check::new(
            id,
            status,
            detail,
            "direct",
            Some(self.plan.addr.ip().to_string()),
        ));
    }

    fn skip_rest(&mut self, ids: &[&str], why: &str) {
        for id in ids {
            self.push(id, Status::Skipped, format!("skipped: {why}"));
        }
    }

    /// One request on a fresh connection to the address.
    fn request(
        &self,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(http::Response, Box<dyn conn::Stream>), String> {
        let p = self.plan;
        let mut opened =
            conn::open(p.url, p.addr, p.tls.as_ref(), p.deadline).map_err(|e| e.to_string())?;
        let mut headers = vec![(
            "User-Agent",
            concat!("probe-client/", env!("CARGO_PKG_VERSION")),
        )];
        headers.extend_from_slice(extra);
        let req = http::request(method, target, &p.url.authority(), &headers, body)
            .map_err(|e| e.to_string())?;
        let (resp, _) = conn::exchange(opened.stream.as_mut(), &req)?;
        Ok((resp, opened.stream))
    }
}

/// The steps after TLS, skipped when the connection cannot be made.
const LATER: [&str; 2] = ["version", "ws_upgrade"];

pub fn run(plan: &Plan) -> AddrRun {
    let mut cx = Ctx {
        plan,
        checks: Vec::new(),
    };
    let mut out = AddrRun {
        checks: Vec::new(),
        failure: None,
        version: None,
        proxy_connect: None,
        proxy_connect_ok: false,
        verdict: None,
    };
    if let Some(p) = plan.proxy {
        proxy_connect(&mut cx, p, &mut out);
    }
    // Each step records its own checks; one that fails has also recorded the later steps as
    // skipped, and its failure replaces whatever the proxy check left.
    let reached = tls_ready(&mut cx)
        .and_then(|()| connect(&mut cx))
        .and_then(|()| version(&mut cx, &mut out));
    match reached {
        Ok(()) => ws(&mut cx, &mut out),
        Err(f) => out.failure = Some(f),
    }
    out.checks = cx.checks;
    out
}

/// An https URL needs a TLS configuration; the caller builds it once, so when it is missing
/// building it again says why.
fn tls_ready(cx: &mut Ctx) -> Result<(), Failure> {
    if !cx.plan.url.https || cx.plan.tls.is_some() {
        return Ok(());
    }
    let e = match conn::tls_config() {
        Ok(_) => "no TLS configuration".to_string(),
        Err(e) => e,
    };
    cx.push("tls", Status::Fail, e.clone());
    cx.skip_rest(&LATER, "no TLS");
    Err(Failure::Tls(e))
}

/// TCP (and TLS), opened once on its own so that each step reports separately.
fn connect(cx: &mut Ctx) -> Result<(), Failure> {
    let plan = cx.plan;
    let url = plan.url;
    match conn::open(url, plan.addr, plan.tls.as_ref(), plan.deadline) {
        Ok(o) => {
            cx.push(
                "tcp_connect",
                Status::Pass,
                format!("connected to {} in {:.1} ms", plan.addr, o.connect_ms),
            );
            if let Some(v) = o.tls {
                cx.push(
                    "tls",
                    Status::Pass,
                    format!("{v}, certificate of {} trusted", url.host),
                );
            }
            Ok(())
        }
        Err(e) => {
            match &e {
                OpenError::Tls(t) => cx.push("tls", Status::Fail, t.clone()),
                OpenError::Connect(c) => {
                    cx.push("tcp_connect", Status::Fail, c.clone());
                    if url.https {
                        cx.skip_rest(&["tls"], "no connection");
                    }
                }
            }
            cx.skip_rest(&LATER, "no connection");
            Err(match e {
                OpenError::Tls(t) => Failure::Tls(t),
                OpenError::Connect(c) => Failure::Unreachable(c),
            })
        }
    }
}

/// Where the plugin's version check sends `GET /version`: under the URL's path (rtcd
/// service/client.go:404-430; httpURL is the URL itself, client.go:68-77). Through an http
/// proxy Go sends the absolute form — to RTCD itself here, which serves it.
fn version_target(url: &Url, proxied: bool) -> String {
    if proxied && !url.https {
        url.join("/version")
    } else {
        format!("{}/version", url.path)
    }
}

/// `GET /version` and the plugin's check of the `buildVersion` it answers.
fn version(cx: &mut Ctx, out: &mut AddrRun) -> Result<(), Failure> {
    let target = version_target(cx.plan.url, cx.plan.proxy.is_some());
    let r = match cx.request("GET", &target, &[("Connection", "close")], b"") {
        Ok((r, _)) => r,
        Err(e) => {
            cx.push("version", Status::Fail, format!("GET {target}: {e}"));
            cx.skip_rest(&["ws_upgrade"], "/version did not answer");
            return Err(Failure::NoAnswer(format!("GET {target}: {e}")));
        }
    };
    let v: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
    let build = v
        .as_ref()
        .and_then(|v| v.get("buildVersion"))
        .and_then(|x| x.as_str())
        .filter(|_| r.head.status == 200);
    let Some(ver) = build else {
        let why = format!(
            "GET {target} answered {} {} without RTCD's JSON",
            r.head.status, r.head.reason
        );
        cx.push("version", Status::Fail, why.clone());
        cx.skip_rest(&["ws_upgrade"], "not RTCD's API");
        // Go's net/http answers plain HTTP on a TLS listener with this 400 (server.go,
        // "Client sent an HTTP request to an HTTPS server."): RTCD's API with [api.http.tls].
        let tls_only = r.head.status == 400
            && String::from_utf8_lossy(&r.body).contains("HTTP request to an HTTPS server");
        return Err(if tls_only {
            Failure::WantsTls(why)
        } else {
            Failure::NotRtcd(why)
        });
    };
    let verdict = semver::plugin_verdict(cx.plan.min, ver);
    let (status, note) = version_note(&verdict);
    cx.push("version", status, format!("RTCD {ver}{note}"));
    out.version = Some(ver.to_string());
    out.verdict = Some(verdict);
    Ok(())
}

/// The check's status and the note after `RTCD {version}`, from the plugin's verdict (plugin
/// server/rtcd.go:339-370, utils.go:132-148).
fn version_note(verdict: &PluginVerdict) -> (Status, &'static str) {
    match verdict {
        PluginVerdict::Accepted => (Status::Pass, ""),
        PluginVerdict::DevBuild => (
            Status::Pass,
            " (a dev build: the plugin skips its version check)",
        ),
        PluginVerdict::TooOld => (Status::Fail, " — below the plugin's minimum: refused"),
        PluginVerdict::Unparsable(_) => (
            Status::Fail,
            " — not a semantic version to the plugin: refused",
        ),
    }
}

/// How RTCD answered the `/ws` upgrade.
#[derive(Debug, PartialEq, Eq)]
enum WsAnswer {
    Upgraded,
    /// RTCD's refused login: its /ws handler returns without writing, so 200 with an empty
    /// body and no upgrade (rtcd service/ws/server.go:120-126, service/auth.go:18-60).
    AuthRefused,
    /// Anything else, and why the plugin's dial fails.
    Failed(String),
}

/// Judges the upgrade answer to `key` as gorilla/websocket's client does: only 101 with these
/// headers (v1.5.3 client.go:394-405).
fn ws_answer(r: &http::Response, key: &str) -> WsAnswer {
    let accept_ok = r.head.header("Sec-WebSocket-Accept") == Some(http::ws_accept(key).as_str());
    if r.head.status == 101
        && accept_ok
        && r.head.has_token("Upgrade", "websocket")
        && r.head.has_token("Connection", "upgrade")
    {
        return WsAnswer::Upgraded;
    }
    if r.head.status == 200 && r.body.is_empty() {
        return WsAnswer::AuthRefused;
    }
    WsAnswer::Failed(match r.head.status {
        101 => "101 but without a correct Sec-WebSocket-Accept/Upgrade/Connection: something between rewrote the handshake".to_string(),
        s => format!(
            "{s} {}: {} (gorilla/websocket fails the plugin's dial with \"bad handshake\")",
            r.head.reason,
            r.text().trim()
        ),
    })
}

/// The `/ws` upgrade as the plugin makes it: always `/ws` at the root (rtcd
/// service/client.go:67-77 sets the path), `Authorization: Basic base64(clientID:authKey)`
/// (client.go:227-231, ws/client.go:67-72), never a `/login` first.
fn ws(cx: &mut Ctx, out: &mut AddrRun) {
    let Some(creds) = cx.plan.creds else {
        cx.push(
            "ws_upgrade",
            Status::Skipped,
            "skipped: no credentials (give --client-id/--auth-key, or the CLIENT_ID:AUTH_KEY@ of the plugin's RTCD service URL)",
        );
        return;
    };
    let mut key = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
    let key = http::base64(&key);
    let auth = http::basic_auth(&creds.client_id, &creds.auth_key);
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key.as_str()),
        ("Sec-WebSocket-Version", "13"),
        ("Authorization", auth.as_str()),
    ];
    let (r, mut stream) = match cx.request("GET", "/ws", &headers, b"") {
        Ok(x) => x,
        Err(e) => {
            cx.push(
                "ws_upgrade",
                Status::Fail,
                format!("GET /ws (upgrade): {e}"),
            );
            out.failure.get_or_insert(Failure::WsFailed(format!(
                "the upgrade request got no answer: {e}"
            )));
            return;
        }
    };
    match ws_answer(&r, &key) {
        WsAnswer::Upgraded => {
            // A masked close frame (code 1000): leave RTCD's side clean.
            let _ = stream.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
            cx.push(
                "ws_upgrade",
                Status::Pass,
                format!(
                    "101 Switching Protocols for client {}, Sec-WebSocket-Accept correct",
                    creds.client_id
                ),
            );
        }
        WsAnswer::AuthRefused => {
            let why = format!(
                "GET /ws answered 200 with an empty body and no upgrade: RTCD refused client {}'s Basic credentials",
                creds.client_id
            );
            cx.push("ws_upgrade", Status::Fail, why.clone());
            let login = login(cx, creds);
            out.failure
                .get_or_insert(Failure::AuthFailed { why, login });
        }
        WsAnswer::Failed(why) => {
            cx.push(
                "ws_upgrade",
                Status::Fail,
                format!("GET /ws (upgrade): {why}"),
            );
            out.failure.get_or_insert(Failure::WsFailed(why));
        }
    }
}

/// `POST /login` with the same pair — the plugin never calls it, but its error tells an
/// unknown client ID ("…: error: not found") from a wrong key (rtcd service/auth.go:189-219,
/// auth/service.go:44-60, 109-121, store/store.go:11).
fn login(cx: &mut Ctx, c: &Creds) -> Option<String> {
    let body = serde_json::json!({"clientID": c.client_id, "authKey": c.auth_key}).to_string();
    let (r, _) = match cx.request(
        "POST",
        &format!("{}/login", cx.plan.url.path),
        &[
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    ) {
        Ok(x) => x,
        Err(e) => {
            cx.push("login", Status::Fail, format!("POST /login: {e}"));
            return None;
        }
    };
    let err = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    let meaning = match (r.head.status, err.as_deref()) {
        (200, _) => format!(
            "/login accepts client {} with this key, yet /ws refused it",
            c.client_id
        ),
        (_, Some(e)) if e.ends_with("not found") => format!(
            "RTCD does not know client ID {} (/login: \"{e}\")",
            c.client_id
        ),
        (_, Some(e)) if e.contains("authentication failed") => format!(
            "RTCD knows client ID {} but the auth key is wrong (/login: \"{e}\")",
            c.client_id
        ),
        (s, e) => format!(
            "/login answered {s} {}{}",
            r.head.reason,
            e.map(|e| format!(": \"{e}\"")).unwrap_or_default()
        ),
    };
    cx.push("login", Status::Fail, meaning.clone());
    Some(meaning)
}

/// What the plugin sends when Go's proxy rules pick `proxy` for RTCD's URL: its dialer still
/// connects to RTCD's own address (plugin server/rtcd.go:680-687), and over that connection
/// gorilla/websocket (v1.5.3 proxy.go:34-76) — or Go's transport, for https — writes the
/// proxy's `CONNECT host:port`. Sent here in plaintext to the address, as they send it.
fn proxy_connect(cx: &mut Ctx, p: &Proxy, out: &mut AddrRun) {
    let url = cx.plan.url;
    let what = format!(
        "with {}={} the plugin sends `CONNECT {}` to RTCD itself",
        p.var,
        p.raw,
        url.authority()
    );
    if p.scheme != "http" {
        let detail = format!(
            "{what}… in fact it speaks the {} proxy protocol to RTCD, which does not speak it: every request fails",
            p.scheme
        );
        cx.push("proxy_connect", Status::Fail, detail.clone());
        out.proxy_connect = Some(detail);
        return;
    }
    let answer = conn::open_plain(cx.plan.addr, cx.plan.deadline).and_then(|mut s| {
        // What Go's Request.Write emits for gorilla's connectReq (proxy.go:50-57).
        let req = http::request(
            "CONNECT",
            &url.authority(),
            &url.authority(),
            &[("User-Agent", "Go-http-client/1.1")],
            b"",
        )
        .map_err(|e| e.to_string())?;
        conn::exchange(s.as_mut(), &req).map(|(r, _)| r)
    });
    let (ok, detail) = match answer {
        Ok(r) if r.head.status == 200 => (
            true,
            format!("{what}: it answered 200 — not what RTCD answers; is this address RTCD?"),
        ),
        Ok(r) if !url.https => (
            false,
            format!(
                "{what}: RTCD answered {} {}, so the plugin's WebSocket dial fails with \"{}\" (Calls plugin issue #379)",
                r.head.status, r.head.reason, r.head.reason
            ),
        ),
        Ok(r) => (
            false,
            format!(
                "{what} on its TLS port: RTCD answered {} {}, so every request fails, GET /version included",
                r.head.status, r.head.reason
            ),
        ),
        Err(e) if url.https => (
            false,
            format!("{what} on its TLS port: {e}, so every request fails, GET /version included"),
        ),
        Err(e) => (
            false,
            format!("{what}: {e}, so the plugin's WebSocket dial fails"),
        ),
    };
    cx.push(
        "proxy_connect",
        if ok { Status::Pass } else { Status::Fail },
        detail.clone(),
    );
    out.proxy_connect = Some(detail);
    out.proxy_connect_ok = ok;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> http::Response {
        http::Response {
            head: http::Head {
                status,
                reason: match status {
                    101 => "Switching Protocols",
                    200 => "OK",
                    _ => "Unauthorized",
                }
                .to_string(),
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            },
            body: body.to_vec(),
        }
    }

    #[test]
    fn ws_answers_as_gorilla_and_rtcd_see_them() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = http::ws_accept(key);
        let upgraded = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept.as_str()),
        ];
        assert_eq!(
            ws_answer(&answer(101, &upgraded, b""), key),
            WsAnswer::Upgraded
        );
        // A proxy that rewrote the accept header: gorilla refuses it.
        let rewritten = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "x"),
        ];
        let WsAnswer::Failed(why) = ws_answer(&answer(101, &rewritten, b""), key) else {
            panic!("a wrong accept is a failure");
        };
        assert!(why.starts_with("101 but without a correct"), "{why}");
        assert_eq!(
            ws_answer(&answer(200, &[], b""), key),
            WsAnswer::AuthRefused
        );
        assert_eq!(
            ws_answer(&answer(401, &[], b" no \n"), key),
            WsAnswer::Failed(
                "401 Unauthorized: no (gorilla/websocket fails the plugin's dial with \"bad handshake\")"
                    .into()
            )
        );
    }

    #[test]
    fn version_notes_follow_the_plugin_verdict() {
        let min = Version::parse("0.11.0").unwrap();
        let note = |v: &str| version_note(&semver::plugin_verdict(&min, v));
        assert_eq!(note("0.11.0"), (Status::Pass, ""));
        assert_eq!(note("dev-abc").0, Status::Pass);
        assert_eq!(note("0.10.9").0, Status::Fail);
        assert_eq!(note("v.x").0, Status::Fail);
        assert!(note("v.x").1.contains("not a semantic version"));
    }

    #[test]
    fn version_target_is_absolute_only_through_a_plain_http_proxy() {
        let plain = Url::parse("http://rtcd.example:8045/base").unwrap();
        let tls = Url::parse("https://rtcd.example/base").unwrap();
        assert_eq!(version_target(&plain, false), "/base/version");
        assert_eq!(
            version_target(&plain, true),
            "http://rtcd.example:8045/base/version"
        );
        assert_eq!(version_target(&tls, true), "/base/version");
    }
}
