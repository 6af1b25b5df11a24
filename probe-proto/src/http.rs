//! Minimal HTTP/1.1, sans-IO: a request builder and an incremental response parser (heads by
//! httparse; bodies, chunking and bounds here), enough to talk to RTCD's API (`/version`,
//! `/metrics`, `/login`, the `/ws` upgrade) and to an HTTP proxy.
//! The sockets live in the binaries; this is pure code, property-tested never to panic.
//!
//! Bounded on purpose: a head over [`MAX_HEAD`] or a body over [`MAX_BODY`] is an error, so a
//! hostile or broken peer cannot make the probe allocate without limit.

use std::fmt;

/// Largest response head (status line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted (RTCD's `/metrics` is a few kilobytes).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The GUID RFC 6455 appends to `Sec-WebSocket-Key` for `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Head or body larger than the limits above.
    TooLarge(&'static str),
    /// Not HTTP/1.x, or a broken status line, header, length or chunk.
    Malformed(&'static str),
    /// A header name or value that would break the request framing (CR, LF, NUL, colon in a name).
    BadHeader(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::TooLarge(what) => write!(f, "HTTP {what} too large"),
            HttpError::Malformed(what) => write!(f, "malformed HTTP response: {what}"),
            HttpError::BadHeader(h) => write!(f, "header {h:?} cannot be sent in a request"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Builds one request. `target` is a path (`/version`) or, through a proxy, an absolute URL.
/// `Host` comes first; `Content-Length` is added when there is a body or the method is POST.
/// Header names and values are checked so that no input can inject a header or a request.
pub fn request(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<u8>, HttpError> {
    let bad_token =
        |s: &str| s.is_empty() || s.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b':');
    let bad_value = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    if bad_token(method) || target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::BadHeader(format!("{method} {target}")));
    }
    if bad_value(host) {
        return Err(HttpError::BadHeader(format!("Host: {host}")));
    }
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        if bad_token(name) || bad_value(value) {
            return Err(HttpError::BadHeader((*name).to_string()));
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    Ok(bytes)
}

/// Status line and headers of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    /// In order; names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (`Connection`, `Transfer-Encoding`) lists `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy), for messages and JSON.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Result of feeding the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// Need more bytes (or, for a body delimited by the connection closing, the close).
    Incomplete,
    /// Done; `usize` bytes of the input were used (after a 101, the rest is the new protocol's).
    Done(T, usize),
}

/// Parses the head; `Done(head, n)` where `n` is the head's length including the blank line.
/// httparse does the parsing (sans-IO, no allocation); this adds the size bound.
pub fn parse_head(buf: &[u8]) -> Result<Parse<Head>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut slots);
    let end = match r.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError::TooLarge("head"))
        }
        Ok(httparse::Status::Partial) => return Ok(Parse::Incomplete),
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(HttpError::Malformed(httparse_error(e))),
    };
    if end > MAX_HEAD {
        return Err(HttpError::TooLarge("head"));
    }
    let utf8 = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(|s| s.trim().to_string())
            .map_err(|_| HttpError::Malformed("head is not UTF-8"))
    };
    let headers = r
        .headers
        .iter()
        .map(|h| Ok((h.name.to_string(), utf8(h.value)?)))
        .collect::<Result<Vec<_>, HttpError>>()?;
    Ok(Parse::Done(
        Head {
            status: r.code.ok_or(HttpError::Malformed("bad status code"))?,
            reason: r.reason.unwrap_or_default().to_string(),
            headers,
        },
        end,
    ))
}

/// Headers a response may carry; RTCD and proxies send a handful.
const MAX_HEADERS: usize = 64;

fn httparse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Status => "bad status code",
        httparse::Error::Version => "not an HTTP/1.x status line",
        httparse::Error::HeaderName => "bad header name",
        httparse::Error::HeaderValue => "bad header value",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::NewLine | httparse::Error::Token => "malformed head",
    }
}

/// Parses a whole response from the bytes received so far. `eof`: the peer closed the
/// connection (ends a body that has neither length nor chunking). `head_request`: the response
/// answers a HEAD (no body whatever the headers say). 1xx, 204 and 304 have no body either.
pub fn parse_response(
    buf: &[u8],
    eof: bool,
    head_request: bool,
) -> Result<Parse<Response>, HttpError> {
    let (head, start) = match parse_head(buf)? {
        Parse::Incomplete => return Ok(Parse::Incomplete),
        Parse::Done(h, n) => (h, n),
    };
    let done =
        |head: Head, body: Vec<u8>, used: usize| Ok(Parse::Done(Response { head, body }, used));
    if head_request || head.status / 100 == 1 || head.status == 204 || head.status == 304 {
        return done(head, Vec::new(), start);
    }
    let rest = &buf[start..];
    if head.has_token("Transfer-Encoding", "chunked") {
        return match dechunk(rest)? {
            None => Ok(Parse::Incomplete),
            Some((body, used)) => done(head, body, start + used),
        };
    }
    if let Some(len) = head.header("Content-Length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        if rest.len() < len {
            return Ok(Parse::Incomplete);
        }
        return done(head, rest[..len].to_vec(), start + len);
    }
    if rest.len() > MAX_BODY {
        return Err(HttpError::TooLarge("body"));
    }
    if eof {
        let used = buf.len();
        return done(head, rest.to_vec(), used);
    }
    Ok(Parse::Incomplete)
}

/// Decodes a chunked body; `None` until the last chunk and the trailers are in.
fn dechunk(mut buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(buf, b"\r\n") else {
            if buf.len() > 1024 {
                return Err(HttpError::Malformed("chunk size line too long"));
            }
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&buf[..eol]).map_err(|_| HttpError::Malformed("bad chunk size"))?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        if hex.is_empty() || hex.len() > 8 {
            return Err(HttpError::Malformed("bad chunk size"));
        }
        let size =
            usize::from_str_radix(hex, 16).map_err(|_| HttpError::Malformed("bad chunk size"))?;
        buf = &buf[eol + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(buf, b"\r\n") else {
                    return Ok(None);
                };
                buf = &buf[eol + 2..];
                if eol == 0 {
                    return Ok(Some((body, total - buf.len())));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An `http://` or `https://` URL as far as the probe needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`""` for the root).
    pub path: String,
}

impl Url {
    /// Parses `http(s)://HOST[:PORT][/PATH]`; a missing scheme means `http`.
    pub fn parse(s: &str) -> Result<Url, String> {
        let s = s.trim();
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if s.contains("://") {
            return Err(format!("{s:?} is not an http:// or https:// URL"));
        } else {
            (false, s)
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("{s:?}: credentials in the URL are not supported"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = split_authority(s, authority)?;
        // The port is judged before the host here (TURN URIs judge the host first).
        let port = parse_port(s, port, default_port)?;
        if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == b'/' || b == b'\\') {
            return Err(format!("{s:?}: no host"));
        }
        let path = path
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        Ok(Url {
            https,
            host,
            port,
            path,
        })
    }

    /// `host:port` as the `Host` header and CONNECT want it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// The URL with `path` appended (`/version`), as a string.
    pub fn join(&self, path: &str) -> String {
        format!(
            "{}://{}{}{path}",
            if self.https { "https" } else { "http" },
            self.authority(),
            self.path
        )
    }

    /// The base URL, normalised.
    pub fn base(&self) -> String {
        self.join("")
    }
}

/// `host:port`, an IPv6 literal in brackets (RFC 3986 3.2.2).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Splits a URL's `host[:port]` (RFC 3986 3.2.2-3.2.3; TURN URIs use the same form, RFC 7065
/// 3.1): an IP literal in brackets with nothing but `:port` after `]`, else the text after the
/// last `:` is the port. Brackets are dropped; the host is not judged here, as `http(s)://`
/// and `turn(s):` URLs refuse different characters. `raw` is the whole URL, for the message.
pub(crate) fn split_authority<'a>(
    raw: &str,
    authority: &'a str,
) -> Result<(String, Option<&'a str>), String> {
    if let Some(r) = authority.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| format!("{raw:?}: unclosed '['"))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((h.to_string(), Some(p))),
            None if after.is_empty() => Ok((h.to_string(), None)),
            None => Err(format!("{raw:?}: junk after ']'")),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), Some(p)),
        None => (authority.to_string(), None),
    })
}

/// A URL's port: `default` when absent, else a decimal from 1 to 65535.
pub(crate) fn parse_port(raw: &str, port: Option<&str>, default: u16) -> Result<u16, String> {
    match port {
        None => Ok(default),
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{raw:?}: bad port {p:?}")),
    }
}

/// Standard base64 with padding (RFC 4648), for `Authorization: Basic` and WebSocket keys.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `Authorization` value for HTTP Basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// The `Sec-WebSocket-Accept` a server must answer to `Sec-WebSocket-Key: key` (RFC 6455 4.2.2).
pub fn ws_accept(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{WS_GUID}", key.trim()).as_bytes(),
    );
    base64(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done(r: Result<Parse<Response>, HttpError>) -> (Response, usize) {
        match r {
            Ok(Parse::Done(resp, n)) => (resp, n),
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn builds_requests_and_refuses_injection() {
        let r = request(
            "POST",
            "/login",
            "rtcd:8045",
            &[("Content-Type", "application/json")],
            b"{}",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /login HTTP/1.1\r\nHost: rtcd:8045\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let g = request("GET", "http://rtcd:8045/version", "rtcd:8045", &[], b"").unwrap();
        assert!(String::from_utf8(g)
            .unwrap()
            .starts_with("GET http://rtcd:8045/version HTTP/1.1\r\n"));
        assert!(request("GET", "/", "h", &[("X", "a\r\nEvil: 1")], b"").is_err());
        assert!(request("GET", "/", "h\r\n", &[], b"").is_err());
        assert!(request("GET", "/ x", "h", &[], b"").is_err());
        assert!(request("G T", "/", "h", &[], b"").is_err());
        assert!(request("GET", "/", "h", &[("Bad:Name", "v")], b"").is_err());
    }

    #[test]
    fn parses_content_length_chunked_and_close_delimited() {
        let (r, n) = done(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
            false,
            false,
        ));
        assert_eq!(
            (r.head.status, r.body.as_slice(), n),
            (200, &b"hello"[..], 43)
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n";
        let (r, n) = done(parse_response(chunked, false, false));
        assert_eq!(r.body, b"hello world");
        assert_eq!(n, chunked.len());
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\nabc", false, false),
            Ok(Parse::Incomplete)
        );
        let (r, _) = done(parse_response(b"HTTP/1.0 200 OK\r\n\r\nabc", true, false));
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn upgrade_leaves_the_rest() {
        let buf = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00";
        let (r, n) = done(parse_response(buf, false, false));
        assert_eq!(r.head.status, 101);
        assert!(r.head.has_token("connection", "upgrade"));
        assert_eq!(&buf[n..], b"\x81\x00");
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false, false).is_err());
        assert!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", false, false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", false, false).is_err());
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            parse_response(big.as_bytes(), false, false),
            Err(HttpError::TooLarge("body"))
        );
        // A head that never ends is cut off at the bound; garbage fails at once.
        let mut endless = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        endless.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse_head(&endless), Err(HttpError::TooLarge("head")));
        assert!(matches!(
            parse_head(&vec![b'a'; MAX_HEAD + 1]),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn base64_and_websocket_accept_match_the_rfcs() {
        // RFC 4648 section 10 vectors.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        // RFC 6455 section 1.3 example.
        assert_eq!(
            ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://rtcd.example.com:8045").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (false, "rtcd.example.com", 8045, "")
        );
        assert_eq!(u.join("/version"), "http://rtcd.example.com:8045/version");
        let u = Url::parse("https://[2001:db8::5]/rtcd/?x=1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "2001:db8::5", 443, "/rtcd")
        );
        assert_eq!(u.authority(), "[2001:db8::5]:443");
        assert_eq!(
            Url::parse("203.0.113.2:8045").unwrap().base(),
            "http://203.0.113.2:8045"
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u:p@h",
            "http://[::1",
            "http://a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn url_parse_never_panics(s in ".{0,64}") {
            let _ = Url::parse(&s);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), eof: bool, head: bool) {
            let _ = parse_response(&bytes, eof, head);
        }

        #[test]
        fn never_panics_after_a_valid_head(
            tail in proptest::collection::vec(any::<u8>(), 0..1024),
            chunked: bool,
            eof: bool,
        ) {
            let mut buf = if chunked {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n".to_vec()
            };
            buf.extend_from_slice(&tail);
            let _ = parse_response(&buf, eof, false);
        }

        /// Fed in any two pieces, a valid chunked response parses to the same body.
        #[test]
        fn incremental_parse_agrees(body in proptest::collection::vec(any::<u8>(), 0..600), split in 0usize..800, chunk in 1usize..64) {
            let mut buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for c in body.chunks(chunk) {
                buf.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                buf.extend_from_slice(c);
                buf.extend_from_slice(b"\r\n");
            }
            buf.extend_from_slice(b"0\r\n\r\n");
            let split = split.min(buf.len());
            if split < buf.len() {
                prop_assert_eq!(parse_response(&buf[..split], false, false), Ok(Parse::Incomplete));
            }
            let (r, n) = done(parse_response(&buf, false, false));
            prop_assert_eq!(r.body, body);
            prop_assert_eq!(n, buf.len());
        }
    }
}
