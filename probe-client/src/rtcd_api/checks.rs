//! The Calls plugin's conversation with RTCD, step by step over one route: TCP (and TLS),
//! `GET /version`, `POST /login`, and the `/ws` WebSocket upgrade with the bearer token.

use probe_proto::http::{self, Url};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use super::conn::{self, OpenError, Route};
use super::report::{Check, Status};

/// What went wrong on a route, for the findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Unreachable(String),
    /// The TLS handshake failed (an untrusted certificate, most of the time).
    Tls(String),
    AuthFailed(String),
    WsFailed(String),
}

pub struct RouteRun {
    pub checks: Vec<Check>,
    pub failure: Option<Failure>,
    pub version: Option<String>,
}

pub struct Creds {
    pub client_id: String,
    pub auth_key: String,
}

struct Ctx<'a> {
    url: &'a Url,
    route: Route<'a>,
    tls: Option<Arc<rustls::ClientConfig>>,
    deadline: Instant,
    via: &'static str,
    checks: Vec<Check>,
}

impl Ctx<'_> {
    fn push(&mut self, id: &str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check::new(id, status, detail, self.via));
    }

    fn skip_rest(&mut self, ids: &[&str], why: &str) {
        for id in ids {
            self.push(id, Status::Skipped, format!("skipped: {why}"));
        }
    }

    fn headers<'h>(
        &self,
        extra: &[(&'h str, &'h str)],
        auth: &'h Option<String>,
    ) -> Vec<(&'h str, &'h str)> {
        let mut h = vec![(
            "User-Agent",
            concat!("probe-client/", env!("CARGO_PKG_VERSION")),
        )];
        if let Some(a) = auth {
            h.push(("Proxy-Authorization", a.as_str()));
        }
        h.extend_from_slice(extra);
        h
    }

    /// One request on a fresh connection.
    fn request(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(http::Response, Box<dyn conn::Stream>), String> {
        let mut opened = conn::open(self.url, self.route, self.tls.as_ref(), self.deadline)
            .map_err(|e| e.to_string())?;
        let auth = conn::proxy_auth(self.url, self.route);
        let headers = self.headers(extra, &auth);
        let req = http::request(
            method,
            &conn::target(self.url, self.route, path),
            &self.url.authority(),
            &headers,
            body,
        )
        .map_err(|e| e.to_string())?;
        let (resp, _) = conn::exchange(opened.stream.as_mut(), &req)?;
        Ok((resp, opened.stream))
    }
}

pub fn run(
    url: &Url,
    route: Route,
    creds: Option<&Creds>,
    deadline: Instant,
    via: &'static str,
) -> RouteRun {
    let mut cx = Ctx {
        url,
        route,
        tls: None,
        deadline,
        via,
        checks: Vec::new(),
    };
    let mut out = RouteRun {
        checks: Vec::new(),
        failure: None,
        version: None,
    };
    let later = ["version", "login", "ws_upgrade"];
    if url.https {
        match conn::tls_config() {
            Ok(c) => cx.tls = Some(c),
            Err(e) => {
                cx.push("tls", Status::Fail, e.clone());
                cx.skip_rest(&later, "no TLS");
                out.failure = Some(Failure::Tls(e));
                out.checks = cx.checks;
                return out;
            }
        }
    }

    // TCP (and TLS): opened once on its own so that each step reports separately.
    let target = match route {
        Route::Direct => format!("{} directly", url.authority()),
        Route::Proxy(p) => format!("the proxy {} ({}={})", p.authority(), p.var, p.raw),
    };
    match conn::open(url, route, cx.tls.as_ref(), deadline) {
        Ok(o) => {
            cx.push(
                "tcp_connect",
                Status::Pass,
                format!("connected to {target} in {:.1} ms", o.connect_ms),
            );
            if let Some(v) = o.tls {
                cx.push(
                    "tls",
                    Status::Pass,
                    format!("{v}, certificate of {} trusted", url.host),
                );
            }
        }
        Err(e) => {
            let id = match e {
                OpenError::Tls(_) => "tls",
                _ => "tcp_connect",
            };
            if !matches!(e, OpenError::Tls(_)) && url.https {
                cx.push(id, Status::Fail, format!("{target}: {e}"));
                cx.skip_rest(&["tls"], "no connection");
            } else {
                cx.push(id, Status::Fail, format!("{target}: {e}"));
            }
            cx.skip_rest(&later, "no connection");
            out.failure = Some(match e {
                OpenError::Tls(t) => Failure::Tls(t),
                other => Failure::Unreachable(other.to_string()),
            });
            out.checks = cx.checks;
            return out;
        }
    }

    // GET /version: what the guide's curl step shows.
    match cx.request("GET", "/version", &[("Connection", "close")], b"") {
        Err(e) => {
            cx.push("version", Status::Fail, format!("GET /version: {e}"));
            cx.skip_rest(&["login", "ws_upgrade"], "/version did not answer");
            out.failure = Some(Failure::Unreachable(format!("GET /version: {e}")));
            out.checks = cx.checks;
            return out;
        }
        Ok((r, _)) => {
            let v: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
            match v
                .as_ref()
                .and_then(|v| v.get("buildVersion"))
                .and_then(|x| x.as_str())
            {
                Some(ver) if r.head.status == 200 => {
                    cx.push("version", Status::Pass, format!("RTCD {ver}"));
                    out.version = Some(ver.to_string());
                }
                _ => {
                    let why = format!(
                        "GET /version answered {} {} without RTCD's JSON",
                        r.head.status, r.head.reason
                    );
                    cx.push("version", Status::Fail, why.clone());
                    cx.skip_rest(&["login", "ws_upgrade"], "not RTCD's API");
                    out.failure = Some(Failure::Unreachable(why));
                    out.checks = cx.checks;
                    return out;
                }
            }
        }
    }

    // POST /login → bearer token.
    let mut bearer = None;
    match creds {
        None => cx.push(
            "login",
            Status::Skipped,
            "skipped: no --client-id/--auth-key (the ones in the Calls plugin's RTCD service URL)",
        ),
        Some(c) => {
            let body =
                serde_json::json!({"clientID": c.client_id, "authKey": c.auth_key}).to_string();
            match cx.request(
                "POST",
                "/login",
                &[
                    ("Content-Type", "application/json"),
                    ("Connection", "close"),
                ],
                body.as_bytes(),
            ) {
                Err(e) => {
                    cx.push("login", Status::Fail, format!("POST /login: {e}"));
                    out.failure = Some(Failure::Unreachable(format!("POST /login: {e}")));
                }
                Ok((r, _)) => {
                    let token = serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| {
                            v.get("bearerToken")
                                .and_then(|t| t.as_str())
                                .map(str::to_string)
                        });
                    match (r.head.status, token) {
                        (200, Some(t)) => {
                            cx.push(
                                "login",
                                Status::Pass,
                                format!("client {} logged in, bearer token received", c.client_id),
                            );
                            bearer = Some(t);
                        }
                        (status, _) => {
                            let text = r.text();
                            let why = format!(
                                "POST /login answered {status} {}: {}",
                                r.head.reason,
                                text.trim()
                            );
                            cx.push("login", Status::Fail, why.clone());
                            out.failure = Some(if (400..500).contains(&status) {
                                Failure::AuthFailed(why)
                            } else {
                                Failure::Unreachable(why)
                            });
                        }
                    }
                }
            }
        }
    }

    ws(&mut cx, creds, bearer.as_deref(), &mut out);
    out.checks = cx.checks;
    out
}

/// The `/ws` upgrade as the plugin makes it: Bearer token (or Basic credentials when login
/// gave none), and a Sec-WebSocket-Accept that must match the key.
fn ws(cx: &mut Ctx, creds: Option<&Creds>, bearer: Option<&str>, out: &mut RouteRun) {
    let mut key = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
    let key = http::base64(&key);
    let auth = match (bearer, creds) {
        (Some(t), _) => Some(format!("Bearer {t}")),
        (None, Some(c)) => Some(http::basic_auth(&c.client_id, &c.auth_key)),
        (None, None) => None,
    };
    let mut headers = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", key.as_str()),
    ];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
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
    let accept_ok = r.head.header("Sec-WebSocket-Accept") == Some(http::ws_accept(&key).as_str());
    if r.head.status == 101 && accept_ok {
        // A masked close frame (code 1000): leave RTCD's side clean.
        let _ = stream.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
        cx.push(
            "ws_upgrade",
            Status::Pass,
            "101 Switching Protocols, Sec-WebSocket-Accept correct",
        );
        return;
    }
    if auth.is_none() && r.head.status == 401 {
        cx.push(
            "ws_upgrade",
            Status::Skipped,
            "skipped: /ws answered 401 without credentials, as RTCD does; give --client-id/--auth-key to test the upgrade",
        );
        return;
    }
    let why = match r.head.status {
        101 => "101 but a wrong Sec-WebSocket-Accept: something between rewrote the handshake"
            .to_string(),
        400 => format!(
            "400 {}: {} — the Upgrade/Connection headers did not reach RTCD (a proxy strips them)",
            r.head.reason,
            r.text().trim()
        ),
        s => format!("{s} {}: {}", r.head.reason, r.text().trim()),
    };
    cx.push(
        "ws_upgrade",
        Status::Fail,
        format!("GET /ws (upgrade): {why}"),
    );
    out.failure.get_or_insert(Failure::WsFailed(why));
}
