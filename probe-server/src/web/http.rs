//! One HTTP connection of the browser test page: read one bounded request (parsed by
//! `probe_proto::web::request`), answer it, close. No keep-alive: the page makes a handful of
//! requests and the browser opens a connection for each, which keeps every connection's life
//! (and so its slot under `ConnLimits`) to one request and a deadline.
//!
//! Every answer forbids caching (the page carries a token in its URL), sniffing and framing,
//! and its Content-Security-Policy lets the page run only its own embedded scripts and styles:
//! no inline script, nothing from elsewhere.

use super::api;
use crate::shared::{ConnSlot, Shared};
use probe_proto::http::Parse;
use probe_proto::web::request::{self, Method, Request, RequestError, Route, TokenCheck};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The whole request must be in this long after the connection was taken.
pub const READ_WITHIN: Duration = Duration::from_secs(10);
/// The answer must be taken this long after it was ready (a client that never reads).
const WRITE_WITHIN: Duration = Duration::from_secs(10);

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

/// The page itself (served with the token check).
const PAGE: &str = include_str!("assets/index.html");

/// The page's static files, by path below `/`, with their types. No token: the same for
/// everyone, no secrets. A module needs a JavaScript type, which `nosniff` makes browsers check.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

/// An answer, before it is written.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub ctype: &'static str,
    pub body: Vec<u8>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    pub fn new(status: u16, ctype: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            ctype,
            body: body.into(),
            allow: None,
        }
    }

    /// One sentence for a person reading the page's address bar or curl.
    pub fn text(status: u16, sentence: &str) -> Self {
        Self::new(status, TEXT, format!("{sentence}\n"))
    }

    /// `{"error": sentence}`, for the page's API.
    pub fn error(status: u16, sentence: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": sentence }))
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status, JSON, body),
            Err(e) => Self::text(500, &format!("the answer could not be written: {e}")),
        }
    }

    /// The status line, headers and body (no body for HEAD).
    fn bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Security-Policy: {CSP}\r\n\
             X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.ctype,
            self.body.len(),
        );
        if let Some(allow) = self.allow {
            out.push_str(&format!("Allow: {allow}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Where an HTTP connection came from, besides its address.
#[derive(Clone, Copy)]
pub struct Via<'a> {
    pub client: SocketAddr,
    /// The connection's place under the TCP limits, which a request that passed the token
    /// check keeps.
    pub slot: Option<&'a ConnSlot>,
    /// It arrived on the probe's own TCP listener (not `--web ADDR`): a report may count it as
    /// TCP reaching the media port.
    pub on_probe_port: bool,
}

/// Serves one connection: one request, one answer, then the connection is closed.
pub async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    via: Via<'_>,
    shared: &Shared,
) {
    serve_conn_by(stream, via, shared, Instant::now() + READ_WITHIN).await
}

/// [`serve_conn`] with the request due `by`.
async fn serve_conn_by<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    via: Via<'_>,
    shared: &Shared,
    by: Instant,
) {
    let client = via.client;
    let (reply, head_only) = match read_request(&mut stream, client, by, shared).await {
        Ok(req) => {
            let head_only = req.method == Method::Head;
            (answer(&req, via, shared).await, head_only)
        }
        Err(Some(reply)) => (reply, false),
        Err(None) => return,
    };
    let write = async {
        stream.write_all(&reply.bytes(head_only)).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(WRITE_WITHIN, write).await {
        tracing::debug!(%client, "HTTP answer not sent: {e}");
    }
}

/// Reads until one whole request is in; `Err(Some)` is an answer saying why not, `Err(None)`
/// a connection that ended before sending anything worth answering. Everything is decided on
/// the head: a request without the token is refused, and one whose route takes no body is
/// answered, before any body is read; only an admitted body is buffered, up to its route's cap.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    client: SocketAddr,
    by: Instant,
    shared: &Shared,
) -> Result<Request, Option<Reply>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 16 * 1024];
    // Once the head is in: the request (body still empty) and where its body starts and ends,
    // from that one parse.
    let mut head: Option<(Request, usize, usize)> = None;
    loop {
        match head.take() {
            Some((mut req, start, end)) if buf.len() >= end => {
                req.body = buf[start..end].to_vec();
                return Ok(req);
            }
            h => head = h,
        }
        // Never more than the request: what follows it is not read.
        let want = head.as_ref().map_or(chunk.len(), |(_, _, end)| {
            (end - buf.len()).min(chunk.len())
        });
        let n = match tokio::time::timeout_at(by, stream.read(&mut chunk[..want])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(None),
            Ok(Ok(n)) => n,
            Err(_) => {
                let why = format!(
                    "the request did not arrive within {} s; try again.",
                    READ_WITHIN.as_secs()
                );
                return Err(Some(Reply::text(408, &why)));
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            match request::parse_head(&buf) {
                Ok(Parse::Incomplete) => {}
                Ok(Parse::Done(h, len)) => head = Some(admit_head(h, len, client, shared)?),
                Err(e) => return Err(Some(refused(&e))),
            }
        }
    }
}

/// A `POST /session` body is the browser's offer, 1–5 KiB with a data channel only.
const MAX_OFFER_BODY: usize = 32 * 1024;

/// Decides on a request from its head: refused (token, size), or the request (body empty)
/// with where its body starts and ends. Routes other than the two POSTs take no body, so their
/// request ends with the head and they are answered at once.
fn admit_head(
    h: request::HeadOnly,
    head_len: usize,
    client: SocketAddr,
    shared: &Shared,
) -> Result<(Request, usize, usize), Option<Reply>> {
    if let Some(no) = token_refusal(&h.request, client, shared) {
        return Err(Some(no));
    }
    let body_len = match h.request.route() {
        Route::Session(_) if h.body_len > MAX_OFFER_BODY => {
            let why = format!(
                "a session offer is at most {} KiB, and this one is larger; reload the page.",
                MAX_OFFER_BODY / 1024
            );
            return Err(Some(Reply::error(413, &why)));
        }
        // parse_head already refused a body over MAX_BODY.
        Route::Session(_) | Route::Report => h.body_len,
        _ => 0,
    };
    Ok((h.request, head_len, head_len + body_len))
}

fn refused(e: &RequestError) -> Reply {
    Reply::text(e.status().0, &format!("{e}."))
}

/// The request's token against the server's, when it has one.
fn token_check(shared: &Shared, req: &Request) -> TokenCheck {
    match shared.core().token().copied() {
        None => TokenCheck::Matches,
        Some(key) => request::check_token(&key, req.param("t")),
    }
}

const NO_TOKEN: &str = "this test page needs its link with the access token (…/?t=…); ask the \
                        admin for the link probe-server logged at start.";

const WRONG_TOKEN: &str = "this link's access token is not this server's: it was cut short or \
                           changed when it was shared (a token holding + / = goes into the link \
                           URL-encoded, as %2B %2F %3D), or probe-server now runs with another \
                           token; ask the admin for the link probe-server logged at start.";

/// The 403 for a request to the page or its API without the server's token: counted, and
/// logged at most once a minute, so an admin whose user reports a 403 sees why, and a flood
/// cannot fill the log.
fn token_refusal(req: &Request, client: SocketAddr, shared: &Shared) -> Option<Reply> {
    let route = req.route();
    let guarded = matches!(route, Route::Page | Route::Session(_) | Route::Report);
    let check = if guarded {
        token_check(shared, req)
    } else {
        TokenCheck::Matches
    };
    let why = match check {
        TokenCheck::Matches => return None,
        TokenCheck::Missing => NO_TOKEN,
        TokenCheck::Wrong => WRONG_TOKEN,
    };
    let state = &shared.web_state;
    super::WebState::bump(&state.token_refused);
    if state.may_log_refusal(std::time::Instant::now()) {
        let token = match check {
            TokenCheck::Missing => "missing",
            _ => "wrong",
        };
        tracing::info!(
            %client,
            token,
            refused_so_far = super::WebState::load(&state.token_refused),
            "test page refused a request without this server's access token (logged at most once a minute)"
        );
    }
    Some(match route {
        Route::Page => Reply::text(403, why),
        _ => Reply::error(403, why),
    })
}

/// Answers a whole request whose token was checked on its head.
async fn answer(req: &Request, via: Via<'_>, shared: &Shared) -> Reply {
    let client = via.client;
    let route = req.route();
    if matches!(route, Route::Page | Route::Session(_) | Route::Report) {
        // A request with the token: no newcomer may displace this connection any more.
        if let Some(slot) = via.slot {
            slot.progressed();
        }
    }
    match route {
        Route::Page => Reply::new(200, HTML, PAGE),
        Route::Asset(name) => match ASSETS.iter().find(|(n, _, _)| *n == name) {
            Some((_, ctype, body)) => Reply::new(200, ctype, *body),
            None => Reply::text(404, "no such file on this test page."),
        },
        Route::Session(leg) => api::session(shared, client, req, leg).await,
        Route::Report => api::report(shared, client, req, via.on_probe_port).await,
        Route::BadQuery(why) => Reply::error(400, &format!("{why}.")),
        Route::NotFound => Reply::text(404, "no such page here; the test page is at /."),
        Route::MethodNotAllowed(allow) => Reply {
            allow: Some(allow),
            ..Reply::text(405, &format!("use {allow} here."))
        },
    }
}

/// `--web ADDR`: a listener for the page and its API only (HTTP from the first byte), with its
/// own connection limits. The page's WebRTC sessions still use the probe's UDP and TCP port.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    limits: Arc<crate::shared::ConnLimits>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("web listener accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = crate::shared::canonical(peer);
        let Some(slot) = limits.acquire(peer.ip()) else {
            shared.core().stats.drop_rate_limited += 1;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_conn(stream, Via { client: peer, slot: Some(&slot), on_probe_port: false }, &shared) => {}
                _ = slot.displaced() => shared.core().stats.conn_displaced += 1,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::web::request::{MAX_BODY, MAX_HEAD};

    /// Every file under assets/ is served (a module the page imports but the table lacks would
    /// fail only in a browser).
    #[test]
    fn every_asset_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/assets");
        let mut files = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("assets dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&dir).expect("below").to_string_lossy();
                    files.push(rel.replace('\\', "/"));
                }
            }
        }
        for f in files.iter().filter(|f| *f != "index.html") {
            assert!(
                ASSETS.iter().any(|(n, _, _)| n == f),
                "assets/{f} is not in ASSETS in web/http.rs"
            );
        }
        for (n, ctype, _) in ASSETS {
            assert!(
                files.iter().any(|f| f == n),
                "ASSETS names {n}, which is not a file"
            );
            let want = match n.rsplit('.').next() {
                Some("js" | "mjs") => "text/javascript",
                Some("css") => "text/css",
                Some("svg") => "image/svg+xml",
                _ => "",
            };
            assert!(ctype.starts_with(want) && !want.is_empty(), "{n}: {ctype}");
        }
    }

    fn shared(token: Option<&str>) -> Shared {
        let core = probe_proto::session::Core::with_token(
            probe_proto::session::Limits::default(),
            token.map(probe_proto::auth::token_key),
        );
        Shared::new(core, None)
    }

    /// The whole answer to `request` sent at once (or, with `wait`, after waiting that long).
    async fn ask(shared: &Shared, request: &[u8], by: Duration) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let peer: SocketAddr = "198.51.100.7:40000".parse().expect("literal");
        let via = Via {
            client: peer,
            slot: None,
            on_probe_port: true,
        };
        let serve = serve_conn_by(server, via, shared, Instant::now() + by);
        let talk = async {
            client.write_all(request).await.expect("write");
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read");
            String::from_utf8_lossy(&out).into_owned()
        };
        tokio::join!(serve, talk).1
    }

    fn get(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: 203.0.113.5:8443\r\n\r\n").into_bytes()
    }

    fn post(target: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {target} HTTP/1.1\r\nHost: 203.0.113.5:8443\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn the_page_and_its_api_need_the_token_and_the_assets_do_not() {
        let s = shared(Some("s3cret&x"));
        let secs = Duration::from_secs(5);
        let page = ask(&s, &get("/?t=s3cret%26x"), secs).await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("Content-Type: text/html") && page.ends_with(PAGE),
            "{page}"
        );
        // A link without its token, and one whose token was cut or changed, are told apart.
        for (target, why) in [
            ("/", NO_TOKEN),
            ("/?t=", NO_TOKEN),
            ("/?t=s3cret", WRONG_TOKEN),
            ("/?t=s3cret%26x%20", WRONG_TOKEN),
            ("/index.html?t=S3CRET%26x", WRONG_TOKEN),
        ] {
            let no = ask(&s, &get(target), secs).await;
            assert!(
                no.starts_with("HTTP/1.1 403 Forbidden\r\n"),
                "{target}: {no}"
            );
            assert!(no.ends_with(&format!("{why}\n")), "{target}: {no}");
        }
        let api = ask(&s, &post("/session?leg=udp&t=nope", "{}"), secs).await;
        assert!(
            api.starts_with("HTTP/1.1 403") && api.contains("{\"error\":"),
            "{api}"
        );
        let report = ask(&s, &post("/report", "{}"), secs).await;
        assert!(report.starts_with("HTTP/1.1 403"), "{report}");
        // Refused on its head: a body that never comes is not waited for.
        let head =
            format!("POST /report HTTP/1.1\r\nHost: h\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        let early = ask(&s, head.as_bytes(), Duration::from_millis(500)).await;
        assert!(early.starts_with("HTTP/1.1 403"), "{early}");
        let js = ask(&s, &get("/app.js"), secs).await;
        assert!(js.starts_with("HTTP/1.1 200 OK\r\n"), "{js}");
        assert!(js.contains("Content-Type: text/javascript"), "{js}");
        assert_eq!(
            crate::web::WebState::load(&s.web_state.token_refused),
            8,
            "every refusal is counted"
        );
        // Without a server token, no token is asked for.
        let open = ask(&shared(None), &get("/"), secs).await;
        assert!(open.starts_with("HTTP/1.1 200 OK\r\n"), "{open}");
    }

    #[tokio::test]
    async fn bad_requests_get_one_sentence_and_the_right_status() {
        let s = shared(None);
        let secs = Duration::from_secs(5);
        let status = |r: String| r.lines().next().unwrap_or_default().to_string();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (post("/report", "{\"legs\":"), "HTTP/1.1 400 Bad Request"),
            (
                post("/session?leg=udp", "not json"),
                "HTTP/1.1 400 Bad Request",
            ),
            (
                post("/session?leg=carrier-pigeon", "{}"),
                "HTTP/1.1 400 Bad Request",
            ),
            (
                b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (get("/etc/passwd"), "HTTP/1.1 404 Not Found"),
            (get("/../app.js"), "HTTP/1.1 404 Not Found"),
            (
                b"POST /report HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                "HTTP/1.1 501 Not Implemented",
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
                    "a".repeat(MAX_HEAD)
                )
                .into_bytes(),
                "HTTP/1.1 431 Request Header Fields Too Large",
            ),
            (
                format!(
                    "POST /report HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY + 1
                )
                .into_bytes(),
                "HTTP/1.1 413 Content Too Large",
            ),
            // The page's API without a computed offer (a bare test server) says so.
            (
                post(
                    "/report",
                    r#"{"gathering":{"complete":true,"ms":null,"candidates":[]},"legs":[]}"#,
                ),
                "HTTP/1.1 503 Service Unavailable",
            ),
            (
                post("/session?leg=tcp", r#"{"type":"offer","sdp":"v=0"}"#),
                "HTTP/1.1 503 Service Unavailable",
            ),
        ];
        for (req, want) in cases {
            let got = ask(&s, &req, secs).await;
            assert_eq!(status(got.clone()), want, "{got}");
            let body = got.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert!(!body.is_empty() && body.len() < 400, "{got}");
        }
        // DELETE on the page: 405 names what is allowed.
        let del = ask(&s, b"DELETE / HTTP/1.1\r\nHost: h\r\n\r\n", secs).await;
        assert!(del.contains("Allow: GET, HEAD\r\n"), "{del}");
        // HEAD: the headers of GET, no body.
        let head = ask(&s, b"HEAD /style.css HTTP/1.1\r\nHost: h\r\n\r\n", secs).await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    /// Only the two POSTs read a body: every other route is answered on its head, so a body
    /// that never comes (or a large one) is neither waited for nor buffered; an offer is capped.
    #[tokio::test]
    async fn only_the_api_posts_wait_for_a_body_and_an_offer_is_capped() {
        let s = shared(None);
        let quick = Duration::from_millis(500);
        let head = |target: &str, len: usize| {
            format!("POST {target} HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n")
        };
        for (target, want) in [
            ("/nope", "HTTP/1.1 405"),
            ("/.hidden", "HTTP/1.1 404"),
            ("/", "HTTP/1.1 405"),
            ("/app.js", "HTTP/1.1 405"),
            ("/session?leg=pigeon", "HTTP/1.1 400"),
        ] {
            let got = ask(&s, head(target, MAX_BODY).as_bytes(), quick).await;
            assert!(got.starts_with(want), "{target}: {got}");
        }
        let big = ask(
            &s,
            head("/session?leg=udp", MAX_OFFER_BODY + 1).as_bytes(),
            quick,
        )
        .await;
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        assert!(big.contains("at most 32 KiB"), "{big}");
        // The offer cap is the only one on /session; /report may carry up to MAX_BODY, and
        // its body is waited for.
        let fits = ask(
            &s,
            head("/session?leg=udp", MAX_OFFER_BODY).as_bytes(),
            quick,
        )
        .await;
        assert!(fits.starts_with("HTTP/1.1 408"), "{fits}");
        let report = ask(&s, head("/report", MAX_BODY).as_bytes(), quick).await;
        assert!(report.starts_with("HTTP/1.1 408"), "{report}");
    }

    #[tokio::test]
    async fn a_request_that_does_not_arrive_in_time_is_answered_408() {
        let s = shared(None);
        let slow = ask(&s, b"GET / HTTP/1.1\r\nHost:", Duration::from_millis(200)).await;
        assert!(
            slow.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{slow}"
        );
    }

    #[test]
    fn answers_carry_the_safety_headers() {
        let r = Reply {
            allow: Some("POST"),
            ..Reply::text(405, "use POST here.")
        };
        let text = String::from_utf8(r.bytes(false)).expect("utf-8");
        for want in [
            "HTTP/1.1 405 Method Not Allowed\r\n",
            "Cache-Control: no-store\r\n",
            "X-Content-Type-Options: nosniff\r\n",
            "Content-Security-Policy: default-src 'self'; script-src 'self';",
            "Allow: POST\r\n",
            "Connection: close\r\n",
            "Content-Length: 15\r\n",
            "\r\n\r\nuse POST here.\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
        assert!(!CSP.contains("unsafe"), "{CSP}");
        let head = String::from_utf8(r.bytes(true)).expect("utf-8");
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 15"));
    }
}
