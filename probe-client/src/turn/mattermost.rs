//! The ICE servers and TURN credentials, fetched from Mattermost as the Calls web app does.
//!
//! Upstream (mattermost-plugin-calls): the web app reads the plugin's client config
//! (`webapp/src/actions.ts:120-128`, GET `/plugins/com.mattermost.calls/config`), takes
//! `ICEServersConfigs` (`webapp/src/selectors.ts:433-434`) and, when `NeedsTURNCredentials`
//! (`selectors.ts:442-443`; set in `server/configuration.go:525` when a static auth secret and
//! TURN servers without credentials are configured), GETs `/plugins/com.mattermost.calls/turn-credentials`
//! (`webapp/src/index.tsx:709-715`). A failure there is only logged: the call is joined without
//! TURN. The server side is `server/api.go:459-495` (403 "TURNStaticAuthSecret should be set",
//! 403 "No TURN server was configured", else a JSON array of `{urls, username, credential}`,
//! rtcd `service/rtc/config.go:175-179`). The client config drops TURN entries without
//! credentials (`server/configuration.go:764-781`).

use super::net;
use crate::rtcd_api::goproxy::{self, ProxyEnv};
use probe_proto::http::{self, Parse, Url};
use probe_proto::turn::EndpointResult;
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PLUGIN_PATH: &str = "/plugins/com.mattermost.calls";

/// One ICE server entry as the plugin serialises it (rtcd `ICEServerConfig`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct IceServer {
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

#[derive(Debug, Deserialize)]
struct ClientConfig {
    #[serde(rename = "ICEServersConfigs", default)]
    ice_servers: Option<Vec<IceServer>>,
    #[serde(rename = "NeedsTURNCredentials", default)]
    needs_turn_credentials: Option<bool>,
}

/// What the fetch gave: TURN servers with their credentials, the endpoint's outcome and the
/// clock offset to Mattermost (local minus Mattermost's `Date`, ms).
pub struct Fetched {
    pub servers: Vec<IceServer>,
    pub endpoint: EndpointResult,
    pub skew_ms: Option<i64>,
}

fn get(
    base: &Url,
    path: &str,
    token: &str,
    deadline: Instant,
) -> Result<(u16, String, Option<i64>), String> {
    let env = ProxyEnv::from_env(&|k| std::env::var(k).ok());
    let proxy = goproxy::proxy_for(&env, base).filter(|p| p.scheme == "http");
    let resolve = |host: &str, port: u16| -> Result<SocketAddr, String> {
        (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))
    };
    let server = resolve(&base.host, base.port)?;
    let proxy_addr = match &proxy {
        Some(p) => Some((p, resolve(&p.host, p.port)?)),
        None => None,
    };
    let tls = if base.https {
        Some((net::tls_config(None)?, base.host.as_str()))
    } else {
        None
    };
    // https: CONNECT through the proxy (as a browser does); http: absolute-form to the proxy.
    if let (false, Some((p, addr))) = (base.https, proxy_addr) {
        let opened =
            net::open_stream(addr, &base.authority(), None, None, deadline).map_err(open_text)?;
        return request(opened.stream, base, path, token, deadline, Some(p));
    }
    let opened = net::open_stream(server, &base.authority(), proxy_addr, tls, deadline)
        .map_err(open_text)?;
    request(opened.stream, base, path, token, deadline, None)
}

fn open_text(e: net::OpenError) -> String {
    match e {
        net::OpenError::Connect(s) | net::OpenError::Proxy(s) | net::OpenError::Tls(s) => s,
    }
}

fn request(
    mut stream: net::Stream,
    base: &Url,
    path: &str,
    token: &str,
    deadline: Instant,
    // Some: a plain http:// request to this proxy, in absolute form.
    proxy: Option<&goproxy::Proxy>,
) -> Result<(u16, String, Option<i64>), String> {
    let absolute = proxy.is_some();
    let bearer = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", bearer.as_str()),
        ("X-Requested-With", "XMLHttpRequest"),
        ("Accept", "application/json"),
        ("Connection", "close"),
    ];
    let proxy_auth = proxy.and_then(|p| {
        p.userinfo.as_ref().map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            http::basic_auth(user, pass)
        })
    });
    if let Some(a) = &proxy_auth {
        headers.push(("Proxy-Authorization", a.as_str()));
    }
    let target = if absolute {
        base.join(path)
    } else {
        format!("{}{path}", base.path)
    };
    let req = http::request("GET", &target, &base.authority(), &headers, b"")
        .map_err(|e| e.to_string())?;
    let resp = exchange(&mut stream, &req, deadline)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let skew = resp
        .head
        .header("date")
        .and_then(probe_proto::turn::rest::http_date_unix)
        // The Date header has whole seconds: an offset under a second is not measurable.
        .map(|t| now - t * 1000)
        .map(|ms| if ms.abs() < 1000 { 0 } else { ms });
    Ok((resp.head.status, resp.text(), skew))
}

/// Fetches the ICE servers and credentials; never fails: the endpoint result says what went
/// wrong.
pub fn fetch(mm_url: &str, token: &str, timeout: Duration) -> Fetched {
    let deadline = Instant::now() + timeout;
    match Url::parse(mm_url) {
        Ok(base) => fetch_from(&PluginApi {
            base,
            token,
            deadline,
        })
        .unwrap_or_else(|f| f),
        Err(e) => failed(mm_url.to_string(), None, e),
    }
}

/// The web app's two requests; `Err` holds the failed endpoint's result.
fn fetch_from(api: &PluginApi) -> Result<Fetched, Fetched> {
    let config = api.get::<ClientConfig>("config", "not the plugin's config JSON")?;
    let mut servers: Vec<IceServer> = config
        .value
        .ice_servers
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.urls.iter().any(|u| u.starts_with("turn")) && !s.username.is_empty())
        .collect();
    if config.value.needs_turn_credentials != Some(true) {
        return Ok(fetched(
            config.url,
            config.status,
            servers,
            config.skew,
            "the Calls plugin hands out no TURN server (NeedsTURNCredentials is false and no TURN entry has credentials)",
        ));
    }
    let creds = api.get::<Vec<IceServer>>("turn-credentials", "not a list of ICE servers")?;
    servers.extend(creds.value);
    Ok(fetched(
        creds.url,
        creds.status,
        servers,
        creds.skew.or(config.skew),
        "the endpoint returned no TURN server",
    ))
}

/// The Calls plugin's API on one Mattermost server, for one fetch.
struct PluginApi<'a> {
    base: Url,
    token: &'a str,
    deadline: Instant,
}

/// A plugin endpoint's answer: its URL, the parsed value, the status and the clock offset.
struct Answer<T> {
    url: String,
    value: T,
    status: u16,
    skew: Option<i64>,
}

impl PluginApi<'_> {
    /// GET the plugin's `endpoint` and parse its JSON (`what`: what a body that does not parse
    /// is not); a failure is the endpoint's failed result.
    fn get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        what: &str,
    ) -> Result<Answer<T>, Fetched> {
        let path = format!("{PLUGIN_PATH}/{endpoint}");
        let url = self.base.join(&path);
        let (status, body, skew) = match get(&self.base, &path, self.token, self.deadline) {
            Ok(r) => r,
            Err(e) => return Err(failed(url, None, e)),
        };
        if status != 200 {
            let e = format!("HTTP {status}: {}", snippet(&body));
            return Err(failed(url, Some(status), e));
        }
        match serde_json::from_str(&body) {
            Ok(value) => Ok(Answer {
                url,
                value,
                status,
                skew,
            }),
            Err(e) => Err(failed(url, Some(status), format!("{what}: {e}"))),
        }
    }
}

fn failed(url: String, status: Option<u16>, error: String) -> Fetched {
    Fetched {
        servers: vec![],
        endpoint: EndpointResult {
            url,
            ok: false,
            status,
            error: Some(error),
            turn_urls: vec![],
        },
        skew_ms: None,
    }
}

/// The servers the endpoint at `url` gave; without a TURN URL among them, `none` is the error.
fn fetched(
    url: String,
    status: u16,
    servers: Vec<IceServer>,
    skew_ms: Option<i64>,
    none: &str,
) -> Fetched {
    let turn_urls = turn_urls(&servers);
    Fetched {
        endpoint: EndpointResult {
            url,
            ok: !turn_urls.is_empty(),
            status: Some(status),
            error: turn_urls.is_empty().then(|| none.to_string()),
            turn_urls,
        },
        servers,
        skew_ms,
    }
}

/// Sends `req` and reads one response (until the server closes, `Connection: close`).
fn exchange(
    stream: &mut net::Stream,
    req: &[u8],
    deadline: Instant,
) -> Result<http::Response, String> {
    let timeout = |d: Instant| {
        d.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "no answer before the deadline".to_string())
    };
    let _ = stream.tcp().set_write_timeout(Some(timeout(deadline)?));
    stream.write_all(req).map_err(|e| e.to_string())?;
    let _ = stream.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let _ = stream.tcp().set_read_timeout(Some(timeout(deadline)?));
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no answer before the deadline".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        buf.extend_from_slice(&chunk[..n]);
        match http::parse_response(&buf, n == 0, false) {
            Ok(Parse::Done(r, _)) => return Ok(r),
            Ok(Parse::Incomplete) if n == 0 => {
                return Err("the connection closed without a whole answer".into())
            }
            Ok(Parse::Incomplete) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn turn_urls(servers: &[IceServer]) -> Vec<String> {
    servers
        .iter()
        .flat_map(|s| s.urls.iter())
        .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
        .cloned()
        .collect()
}

fn snippet(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    one.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_json_shapes() {
        // server/configuration.go ClientConfig fields, as the web app reads them.
        let cfg: ClientConfig = serde_json::from_str(
            r#"{"AllowEnableCalls":true,"ICEServersConfigs":[{"urls":["stun:stun.example.test:3478"]},{"urls":["turn:turn.example.test:3478"],"username":"u","credential":"p"}],"NeedsTURNCredentials":true}"#,
        )
        .unwrap();
        assert_eq!(cfg.needs_turn_credentials, Some(true));
        assert_eq!(cfg.ice_servers.unwrap().len(), 2);
        // rtcd ICEServerConfig: username/credential omitted when empty.
        let v: Vec<IceServer> = serde_json::from_str(
            r#"[{"urls":["turn:turn.example.test:3478","turns:turn.example.test:443"],"username":"1795651200:alice","credential":"i3/F+lFh23G8auqgkwbOF2f+8/U="}]"#,
        )
        .unwrap();
        assert_eq!(
            turn_urls(&v),
            vec!["turn:turn.example.test:3478", "turns:turn.example.test:443"]
        );
        assert_eq!(v[0].username, "1795651200:alice");
    }
}
