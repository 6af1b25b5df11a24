//! HTTP/1.1 requests of the browser test page, sans-IO (issue 17): an incremental, bounded
//! request parser (heads by httparse, as the response side in [`crate::http`]), the page's
//! route table, and the constant-time token check. The socket lives in `probe-server`.
//!
//! Bounded on purpose, since this faces the public probe port: a head over [`MAX_HEAD`] or a
//! body over [`MAX_BODY`] is refused before it is buffered whole, bodies are framed by
//! `Content-Length` only (no chunking, no upgrade), and every request answers one route.

use super::Leg;
use crate::http::Parse;
use std::fmt;
use std::net::IpAddr;

/// Largest request head (request line and headers): a browser sends well under 2 KiB.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body: an offer is a few KiB, the page's measurements some tens.
pub const MAX_BODY: usize = 256 * 1024;
/// Headers a request may carry; browsers send about 15.
const MAX_HEADERS: usize = 48;
/// Query parameters kept; the page sends at most a handful.
const MAX_PARAMS: usize = 16;
/// Longest embedded asset name taken from a path.
const MAX_ASSET_NAME: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// One whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without the query, as sent (routes are plain ASCII: not decoded).
    pub path: String,
    /// Query parameters, percent-decoded (`+` as a space), in order.
    pub query: Vec<(String, String)>,
    /// The `Host` header (`HOST[:PORT]`), as the browser named the server.
    pub host: Option<String>,
    pub body: Vec<u8>,
}

/// Why a request cannot be served; each maps to a status ([`RequestError::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    HeadTooLarge,
    BodyTooLarge,
    /// Not HTTP/1.x, or a broken request line, header, length or query.
    Malformed(&'static str),
    /// Framing this server does not do (chunked bodies, protocol upgrades).
    Unsupported(&'static str),
}

impl RequestError {
    /// The status line's code and reason for this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            RequestError::HeadTooLarge => (431, "Request Header Fields Too Large"),
            RequestError::BodyTooLarge => (413, "Content Too Large"),
            RequestError::Malformed(_) => (400, "Bad Request"),
            RequestError::Unsupported(_) => (501, "Not Implemented"),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::HeadTooLarge => {
                write!(f, "the request head is over {MAX_HEAD} bytes")
            }
            RequestError::BodyTooLarge => {
                write!(f, "the request body is over {MAX_BODY} bytes")
            }
            RequestError::Malformed(what) => write!(f, "malformed HTTP request: {what}"),
            RequestError::Unsupported(what) => write!(f, "this server does not accept {what}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Parses a whole request from the bytes received so far: `Done(request, used)` once the head
/// and its `Content-Length` body are in, `Incomplete` until then. Fails as soon as the bytes
/// so far are certain to be refused (a length over the bound fails before the body arrives).
pub fn parse_request(buf: &[u8]) -> Result<Parse<Request>, RequestError> {
    let (mut req, end, len) = match parse_head(buf)? {
        Parse::Done(HeadOnly { request, body_len }, end) => (request, end, body_len),
        Parse::Incomplete => return Ok(Parse::Incomplete),
    };
    if buf.len() - end < len {
        return Ok(Parse::Incomplete);
    }
    req.body = buf[end..end + len].to_vec();
    Ok(Parse::Done(req, end + len))
}

/// A request whose head is in: everything but the body (`body` is empty), and the body's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadOnly {
    pub request: Request,
    pub body_len: usize,
}

/// Parses the head only: `Done(head, n)` where `n` is the head's length, as soon as it is in,
/// so a server can refuse a request (a wrong token, say) before taking its body. The same
/// checks as [`parse_request`], bounds included.
pub fn parse_head(buf: &[u8]) -> Result<Parse<HeadOnly>, RequestError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut slots);
    let end = match r.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(RequestError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parse::Incomplete),
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err(RequestError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(RequestError::Malformed(httparse_error(e))),
    };
    let head = Head::from_headers(r.headers)?;
    if r.version == Some(1) && head.host.is_none() {
        // RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request without Host.
        return Err(RequestError::Malformed("no Host header"));
    }
    let body_len = head.content_length.unwrap_or(0);
    if body_len > MAX_BODY {
        return Err(RequestError::BodyTooLarge);
    }
    let (path, query) = split_target(r.path.unwrap_or_default())?;
    let request = Request {
        method: match r.method.unwrap_or_default() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            _ => Method::Other,
        },
        path: path.to_string(),
        query,
        host: head.host,
        body: Vec::new(),
    };
    Ok(Parse::Done(HeadOnly { request, body_len }, end))
}

/// What the head says about framing and the host.
struct Head {
    host: Option<String>,
    content_length: Option<usize>,
}

impl Head {
    fn from_headers(headers: &[httparse::Header<'_>]) -> Result<Head, RequestError> {
        let mut head = Head {
            host: None,
            content_length: None,
        };
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("transfer-encoding") {
                // RFC 9112 6.1: a transfer coding the server does not do is a 501.
                return Err(RequestError::Unsupported(
                    "a Transfer-Encoding (send Content-Length)",
                ));
            } else if name.eq_ignore_ascii_case("upgrade") {
                return Err(RequestError::Unsupported("a protocol upgrade"));
            } else if name.eq_ignore_ascii_case("content-length") {
                let n = content_length(h.value)?;
                // RFC 9112 6.3: differing lengths are an unrecoverable framing error.
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(RequestError::Malformed("conflicting Content-Length"));
                }
                head.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("host") {
                if head.host.is_some() {
                    // RFC 9112 3.2: more than one Host is a 400.
                    return Err(RequestError::Malformed("more than one Host header"));
                }
                let v = std::str::from_utf8(h.value)
                    .map_err(|_| RequestError::Malformed("Host is not UTF-8"))?;
                head.host = Some(v.trim().to_string());
            }
        }
        Ok(head)
    }
}

/// `Content-Length`: decimal digits only (no sign, no list), bounded before it can overflow.
fn content_length(v: &[u8]) -> Result<usize, RequestError> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::Malformed("bad Content-Length"));
    }
    let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn httparse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Version => "not HTTP/1.x",
        httparse::Error::HeaderName => "bad header name",
        httparse::Error::HeaderValue => "bad header value",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Token => "bad method or path",
        httparse::Error::NewLine | httparse::Error::Status => "malformed head",
    }
}

/// Decoded query parameters, in order.
type Params = Vec<(String, String)>;

/// An origin-form target (`/path?query`) into its path and decoded parameters.
fn split_target(target: &str) -> Result<(&str, Params), RequestError> {
    if !target.starts_with('/') {
        return Err(RequestError::Malformed("the target is not a path"));
    }
    let target = target.split('#').next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if params.len() == MAX_PARAMS {
            return Err(RequestError::Malformed("too many query parameters"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok((path, params))
}

/// `application/x-www-form-urlencoded` decoding of one name or value (WHATWG URL 5.1):
/// `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, RequestError> {
    let bad = RequestError::Malformed("bad percent-encoding in the query");
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(hex).ok_or(bad.clone())?;
                let lo = bytes.next().and_then(hex).ok_or(bad.clone())?;
                out.push(hi << 4 | lo);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| RequestError::Malformed("the query is not UTF-8"))
}

/// `s` as a query value: everything but unreserved characters (RFC 3986 2.3) percent-encoded.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`, `GET /index.html`: the page (token checked).
    Page,
    /// `GET /NAME`: an embedded static file (no token: the same for everyone, no secrets).
    Asset(String),
    /// `POST /session?leg=…`: an offer for one leg (token checked).
    Session(Leg),
    /// `POST /report`: the page's measurements (token checked).
    Report,
    /// A known path with a bad query; the sentence says what to fix.
    BadQuery(&'static str),
    NotFound,
    /// A known path with another method; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

impl Request {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The route this request asks for.
    pub fn route(&self) -> Route {
        let get = matches!(self.method, Method::Get | Method::Head);
        let post = self.method == Method::Post;
        match self.path.as_str() {
            "/" | "/index.html" if get => Route::Page,
            "/" | "/index.html" => Route::MethodNotAllowed("GET, HEAD"),
            "/session" if post => match self.param("leg") {
                Some("udp") => Route::Session(Leg::Udp),
                Some("tcp") => Route::Session(Leg::Tcp),
                Some("dialed") => Route::Session(Leg::Dialed),
                _ => Route::BadQuery("POST /session needs leg=udp, leg=tcp or leg=dialed"),
            },
            "/report" if post => Route::Report,
            "/session" | "/report" => Route::MethodNotAllowed("POST"),
            p => match p.strip_prefix('/').filter(|n| asset_name(n)) {
                Some(name) if get => Route::Asset(name.to_string()),
                Some(_) => Route::MethodNotAllowed("GET, HEAD"),
                None => Route::NotFound,
            },
        }
    }
}

/// A plain file name, possibly in plain subdirectories: no dot files, no `..`, no escapes.
fn asset_name(n: &str) -> bool {
    n.len() <= MAX_ASSET_NAME
        && n.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// A request's `?t=` against the server's access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Matches,
    /// No `t` at all, or an empty one: the link lost its query (pasted without it).
    Missing,
    /// Some other token: cut short, mangled in sharing (`+` unencoded reads as a space), or
    /// from a server that now runs with another token.
    Wrong,
}

/// Checks `given` against the server's access token, whose key ([`crate::auth::token_key`])
/// the server holds. Compares the derived keys in constant time: neither the token's bytes
/// nor its length leak through timing (only whether one was given at all).
pub fn check_token(key: &[u8; 32], given: Option<&str>) -> TokenCheck {
    let given = match given {
        None | Some("") => return TokenCheck::Missing,
        Some(g) => g,
    };
    let k = crate::auth::token_key(given);
    if k.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 {
        TokenCheck::Matches
    } else {
        TokenCheck::Wrong
    }
}

/// A `Host` header's host (brackets dropped) and port, if it has one.
pub fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = crate::http::split_authority(host, host).ok()?;
    let port = match port {
        None => None,
        Some(p) => Some(crate::http::parse_port(host, Some(p), 0).ok()?),
    };
    if name.is_empty() || name.bytes().any(|b| b <= b' ' || b"/\\@?#".contains(&b)) {
        return None;
    }
    Some((name, port))
}

/// A `Host` header's host as an IP literal (`203.0.113.5:8443`, `[2001:db8::1]`), if it is one.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    split_host(host)?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf) {
            Ok(Parse::Done(r, n)) => (r, n),
            other => panic!("not done: {other:?}"),
        }
    }

    fn get(target: &str) -> Request {
        done(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).0
    }

    #[test]
    fn parses_a_browser_post_with_its_body_and_query() {
        let body = br#"{"type":"offer","sdp":"v=0"}"#;
        let mut buf = format!(
            "POST /session?t=a%2Bb%20c+d&leg=udp HTTP/1.1\r\nHost: 203.0.113.5:8443\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        buf.extend_from_slice(body);
        // A browser may already have sent the next request: only this one's bytes are used.
        let used_want = buf.len();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (r, used) = done(&buf);
        assert_eq!(used, used_want);
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path, "/session");
        assert_eq!(r.param("t"), Some("a+b c d"));
        assert_eq!(r.param("leg"), Some("udp"));
        assert_eq!(r.host.as_deref(), Some("203.0.113.5:8443"));
        assert_eq!(r.body, body);
        assert_eq!(r.route(), Route::Session(Leg::Udp));
    }

    #[test]
    fn the_head_is_judged_before_the_body_arrives() {
        let buf = b"POST /report?t=x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhe";
        let Ok(Parse::Done(h, n)) = parse_head(buf) else {
            panic!("head not parsed");
        };
        assert_eq!((h.body_len, n), (5, buf.len() - 2));
        assert_eq!(
            (h.request.route(), h.request.param("t")),
            (Route::Report, Some("x"))
        );
        assert_eq!(parse_request(buf), Ok(Parse::Incomplete));
        assert_eq!(parse_head(&buf[..n - 1]), Ok(Parse::Incomplete));
    }

    #[test]
    fn waits_for_the_whole_head_and_body() {
        let buf = b"POST /report HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..buf.len() {
            assert_eq!(
                parse_request(&buf[..cut]),
                Ok(Parse::Incomplete),
                "cut {cut}"
            );
        }
        assert_eq!(done(buf).0.body, b"hello");
    }

    #[test]
    fn refuses_what_it_does_not_frame() {
        let err = |s: &str| match parse_request(s.as_bytes()) {
            Err(e) => e,
            other => panic!("{s:?} accepted: {other:?}"),
        };
        let chunked = "POST /report HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(err(chunked).status().0, 501);
        let upgrade = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(err(upgrade).status().0, 501);
        assert_eq!(err("GET / HTTP/1.1\r\n\r\n").status().0, 400);
        assert_eq!(
            err("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .status()
                .0,
            400
        );
        let two = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(err(two).status().0, 400);
        for bad in ["-1", "+1", "1,1", "", "99999999999999999999", "0x10"] {
            let s = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(err(&s).status().0, 400, "{bad:?}");
        }
        assert_eq!(
            err("GET http://x/ HTTP/1.1\r\nHost: h\r\n\r\n").status().0,
            400
        );
        assert_eq!(
            err("GET /?t=%zz HTTP/1.1\r\nHost: h\r\n\r\n").status().0,
            400
        );
        assert_eq!(
            err("GET /?t=%ff HTTP/1.1\r\nHost: h\r\n\r\n").status().0,
            400
        );
        assert_eq!(err("SSH-2.0-OpenSSH\r\n\r\n").status().0, 400);
        // HTTP/1.0 needs no Host.
        assert_eq!(done(b"GET / HTTP/1.0\r\n\r\n").0.route(), Route::Page);
    }

    #[test]
    fn bounds_are_enforced_before_the_bytes_are_all_in() {
        let big = format!(
            "POST /report HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            parse_request(big.as_bytes()),
            Err(RequestError::BodyTooLarge)
        );
        let max = format!("POST /report HTTP/1.1\r\nHost: h\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        assert_eq!(parse_request(max.as_bytes()), Ok(Parse::Incomplete));
        let mut long = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse_request(&long), Err(RequestError::HeadTooLarge));
        long.truncate(MAX_HEAD);
        assert_eq!(parse_request(&long), Ok(Parse::Incomplete));
    }

    #[test]
    fn routes() {
        let post = |t: &str| {
            done(format!("POST {t} HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").as_bytes()).0
        };
        assert_eq!(get("/?t=x&site=Berlin%20HQ").route(), Route::Page);
        assert_eq!(
            get("/?t=x&site=Berlin%20HQ").param("site"),
            Some("Berlin HQ")
        );
        assert_eq!(get("/index.html").route(), Route::Page);
        assert_eq!(get("/app.js").route(), Route::Asset("app.js".into()));
        assert_eq!(
            get("/lib/x-1.js").route(),
            Route::Asset("lib/x-1.js".into())
        );
        for bad in ["/../etc/passwd", "/.env", "/a//b", "/a%2f..", "/a/", "//"] {
            assert_eq!(get(bad).route(), Route::NotFound, "{bad}");
        }
        assert_eq!(post("/session?leg=tcp").route(), Route::Session(Leg::Tcp));
        assert_eq!(
            post("/session?leg=dialed&t=1").route(),
            Route::Session(Leg::Dialed)
        );
        assert!(matches!(
            post("/session?leg=quic").route(),
            Route::BadQuery(_)
        ));
        assert!(matches!(post("/session").route(), Route::BadQuery(_)));
        assert_eq!(post("/report?t=x").route(), Route::Report);
        assert_eq!(get("/report").route(), Route::MethodNotAllowed("POST"));
        assert_eq!(get("/session").route(), Route::MethodNotAllowed("POST"));
        assert_eq!(post("/").route(), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(
            post("/app.js").route(),
            Route::MethodNotAllowed("GET, HEAD")
        );
    }

    #[test]
    fn the_token_must_match_exactly() {
        let key = crate::auth::token_key("s3cret");
        assert_eq!(check_token(&key, Some("s3cret")), TokenCheck::Matches);
        for wrong in ["s3cre", "s3crett", "S3cret", "s3cret "] {
            assert_eq!(check_token(&key, Some(wrong)), TokenCheck::Wrong, "{wrong}");
        }
        assert_eq!(check_token(&key, None), TokenCheck::Missing);
        assert_eq!(check_token(&key, Some("")), TokenCheck::Missing);
        // A value with reserved characters survives the link's encoding.
        let odd = "a b+c&d=é%";
        let r = get(&format!("/?t={}", percent_encode(odd)));
        let odd_key = crate::auth::token_key(odd);
        assert_eq!(check_token(&odd_key, r.param("t")), TokenCheck::Matches);
        // An unencoded `+` arrives as a space: a wrong token, not a missing one.
        let r = get("/?t=a+b");
        let plus = crate::auth::token_key("a+b");
        assert_eq!(check_token(&plus, r.param("t")), TokenCheck::Wrong);
    }

    #[test]
    fn host_headers() {
        assert_eq!(
            host_ip("203.0.113.5:8443"),
            Some("203.0.113.5".parse().unwrap())
        );
        assert_eq!(host_ip("203.0.113.5"), Some("203.0.113.5".parse().unwrap()));
        assert_eq!(
            host_ip("[2001:db8::1]:8443"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(host_ip("probe.example.com:8443"), None);
        assert_eq!(
            split_host("probe.example.com:8443"),
            Some(("probe.example.com".into(), Some(8443)))
        );
        assert_eq!(
            split_host("probe.example.com"),
            Some(("probe.example.com".into(), None))
        );
        for bad in ["", ":80", "h:99999", "[::1", "a b", "h:0"] {
            assert_eq!(split_host(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(Parse::Done(r, used)) = parse_request(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert!(r.body.len() <= MAX_BODY);
                let _ = r.route();
                if let Some(h) = &r.host {
                    let _ = host_ip(h);
                }
            }
        }

        #[test]
        fn never_panics_after_a_valid_request_line(
            tail in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            let mut buf = b"POST /session?leg=udp&t=".to_vec();
            buf.extend_from_slice(&tail);
            let _ = parse_request(&buf);
        }

        /// Whatever the values, a request built with them parses back to them, and every
        /// strict prefix of it is incomplete.
        #[test]
        fn round_trips_and_waits(
            t in ".{0,40}",
            site in ".{0,40}",
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut buf = format!(
                "POST /report?t={}&site={} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                percent_encode(&t), percent_encode(&site), body.len()
            ).into_bytes();
            buf.extend_from_slice(&body);
            for cut in [0, 1, buf.len() / 2, buf.len() - 1] {
                prop_assert_eq!(parse_request(&buf[..cut]), Ok(Parse::Incomplete));
            }
            let (r, used) = done(&buf);
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(r.param("t"), Some(t.as_str()));
            prop_assert_eq!(r.param("site"), Some(site.as_str()));
            prop_assert_eq!(r.body, body);
        }
    }
}
