//! Whether Go's proxy rules pick a proxy for RTCD's URL: `http.ProxyFromEnvironment`
//! (golang.org/x/net/http/httpproxy), which both RTCD's HTTP client (rtcd service/client.go:116)
//! and gorilla/websocket's default dialer (v1.5.3 client.go:141-144) use. The plugin's dialer
//! then still connects to RTCD itself (plugin server/rtcd.go:680-687), so a proxy picked here
//! means the plugin speaks proxy to RTCD (Calls plugin issue #379).

use probe_proto::http::Url;
use std::net::IpAddr;

/// The proxy environment, read once (upper case wins over lower case, as in Go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `(variable name, value)`.
    pub http: Option<(String, String)>,
    pub https: Option<(String, String)>,
    pub no_proxy: Option<(String, String)>,
    /// `REQUEST_METHOD` is set: Go then ignores HTTP_PROXY for http URLs (CGI safety).
    pub cgi: bool,
}

impl ProxyEnv {
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Self {
        let any = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.is_empty()).map(|v| (n.to_string(), v)))
        };
        ProxyEnv {
            http: any(["HTTP_PROXY", "http_proxy"]),
            https: any(["HTTPS_PROXY", "https_proxy"]),
            no_proxy: any(["NO_PROXY", "no_proxy"]),
            cgi: get("REQUEST_METHOD").is_some_and(|v| !v.is_empty()),
        }
    }
}

/// A proxy the plugin would use for the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The variable that chose it (HTTP_PROXY, https_proxy…).
    pub var: String,
    /// As written in the variable.
    pub raw: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// `user:password` from the proxy URL, for Proxy-Authorization.
    pub userinfo: Option<String>,
}

/// Go's `parseProxy`: a value without a scheme is an http:// proxy.
fn parse_proxy(var: &str, raw: &str) -> Option<Proxy> {
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let (scheme, rest) = with_scheme.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let default_port = match scheme.as_str() {
        "https" => 443,
        "socks5" | "socks5h" => 1080,
        _ => 80,
    };
    let u = Url::parse(&format!("http://{hostport}")).ok()?;
    // Url::parse filled in 80 when the value names no port; the proxy's scheme decides that.
    let explicit_port = !hostport.ends_with(']') && hostport.contains(':');
    let port = if explicit_port { u.port } else { default_port };
    Some(Proxy {
        var: var.to_string(),
        raw: raw.to_string(),
        scheme,
        host: u.host,
        port,
        userinfo,
    })
}

/// The proxy Go would use for `url`, or `None` (no variable, NO_PROXY match, or loopback).
pub fn proxy_for(env: &ProxyEnv, url: &Url) -> Option<Proxy> {
    let (var, raw) = if url.https {
        env.https.as_ref()?
    } else {
        // Go refuses HTTP_PROXY in a CGI program; Mattermost is not one, but honour the rule.
        if env.cgi {
            return None;
        }
        env.http.as_ref()?
    };
    let proxy = parse_proxy(var, raw)?;
    use_proxy(
        env.no_proxy.as_ref().map_or("", |(_, v)| v.as_str()),
        &url.host,
        url.port,
    )
    .then_some(proxy)
}

/// Go's `useProxy`: false for localhost, loopback IPs, and NO_PROXY matches.
pub fn use_proxy(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    if host == "localhost" {
        return false;
    }
    let ip: Option<IpAddr> = host.parse().ok();
    if ip.is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    let port = port.to_string();
    for entry in no_proxy.split(',') {
        let p = entry.trim().to_ascii_lowercase();
        if p.is_empty() {
            continue;
        }
        if p == "*" {
            return false;
        }
        if let Some((net, len)) = p.split_once('/') {
            if let (Some(ip), Ok(net), Ok(len)) = (ip, net.parse::<IpAddr>(), len.parse::<u8>()) {
                if cidr_contains(net, len, ip) {
                    return false;
                }
            }
            continue;
        }
        let (phost, pport) = split_host_port(&p);
        if let Ok(pip) = phost.parse::<IpAddr>() {
            if ip == Some(pip) && pport.is_none_or(|pp| pp == port) {
                return false;
            }
            continue;
        }
        if phost.is_empty() {
            continue;
        }
        // `*.example.com` is `.example.com`; `example.com` also matches the name itself.
        let phost = phost.strip_prefix('*').unwrap_or(phost);
        let (suffix, match_host) = if phost.starts_with('.') {
            (phost.to_string(), false)
        } else {
            (format!(".{phost}"), true)
        };
        let hit = host.ends_with(&suffix) || (match_host && host == suffix[1..]);
        if hit && pport.is_none_or(|pp| pp == port) {
            return false;
        }
    }
    true
}

/// `host:port`, `[v6]:port`, or a bare host (a bare IPv6 address has no port).
fn split_host_port(p: &str) -> (&str, Option<&str>) {
    if let Some(r) = p.strip_prefix('[') {
        if let Some((h, after)) = r.split_once(']') {
            return (h, after.strip_prefix(':'));
        }
    }
    if p.matches(':').count() == 1 {
        let (h, port) = p.split_once(':').unwrap_or((p, ""));
        return (h, Some(port));
    }
    (p, None)
}

fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// The NO_PROXY value that excludes `host`, keeping what is already there.
pub fn no_proxy_with(env: &ProxyEnv, host: &str) -> String {
    match &env.no_proxy {
        Some((_, v)) if !v.trim().is_empty() => {
            format!("{},{host}", v.trim().trim_end_matches(','))
        }
        _ => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_env(&|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn scheme_selects_the_variable_and_upper_case_wins() {
        let e = env(&[
            ("HTTP_PROXY", "198.51.100.1:3128"),
            ("http_proxy", "http://192.0.2.9:1"),
            ("https_proxy", "https://192.0.2.8"),
        ]);
        let p = proxy_for(&e, &url("http://203.0.113.2:8045")).unwrap();
        assert_eq!(
            (p.var.as_str(), p.scheme.as_str(), p.host.as_str(), p.port),
            ("HTTP_PROXY", "http", "198.51.100.1", 3128)
        );
        let p = proxy_for(&e, &url("https://203.0.113.2")).unwrap();
        assert_eq!(
            (p.var.as_str(), p.scheme.as_str(), p.port),
            ("https_proxy", "https", 443)
        );
        assert!(proxy_for(
            &env(&[("HTTPS_PROXY", "x:1")]),
            &url("http://203.0.113.2:8045")
        )
        .is_none());
        // CGI: HTTP_PROXY is not honoured for http URLs.
        assert!(proxy_for(
            &env(&[("HTTP_PROXY", "x:1"), ("REQUEST_METHOD", "GET")]),
            &url("http://h:1")
        )
        .is_none());
    }

    #[test]
    fn no_proxy_rules_match_go() {
        let cases = [
            ("203.0.113.2", "203.0.113.2", 8045, false),
            ("203.0.113.0/24", "203.0.113.2", 8045, false),
            ("203.0.113.2:9000", "203.0.113.2", 8045, true),
            ("203.0.113.2:8045", "203.0.113.2", 8045, false),
            ("example.com", "rtcd.example.com", 8045, false),
            ("example.com", "example.com", 8045, false),
            (".example.com", "example.com", 8045, true),
            ("*.example.com", "rtcd.example.com", 8045, false),
            ("ample.com", "example.com", 8045, true),
            ("*", "anything", 1, false),
            ("", "localhost", 1, false),
            ("", "127.0.0.5", 1, false),
            ("", "::1", 1, false),
            ("[2001:db8::1]:8045", "2001:db8::1", 8045, false),
            ("2001:db8::/32", "2001:db8::1", 8045, false),
            (" RTCD.Example.COM , other", "rtcd.example.com", 8045, false),
        ];
        for (np, host, port, want) in cases {
            assert_eq!(
                use_proxy(np, host, port),
                want,
                "NO_PROXY={np:?} host={host} port={port}"
            );
        }
    }

    #[test]
    fn proxy_credentials_and_no_proxy_suggestion() {
        let e = env(&[
            ("HTTP_PROXY", "http://user:pw@198.51.100.1:3128/"),
            ("NO_PROXY", "localhost,.corp,"),
        ]);
        let p = proxy_for(&e, &url("http://203.0.113.2:8045")).unwrap();
        assert_eq!(p.userinfo.as_deref(), Some("user:pw"));
        assert_eq!((p.host.as_str(), p.port), ("198.51.100.1", 3128));
        assert_eq!(
            no_proxy_with(&e, "203.0.113.2"),
            "localhost,.corp,203.0.113.2"
        );
        assert_eq!(no_proxy_with(&ProxyEnv::default(), "rtcd"), "rtcd");
    }
}
