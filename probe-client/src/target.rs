//! The SERVER argument: HOST, HOST:PORT, [IPv6]:PORT or a bare IPv6 address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 8443;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("`{s}` is not a server address; use HOST, HOST:PORT or [IPv6]:PORT");
        if s.is_empty() {
            return Err(bad());
        }
        // A link pasted from the test page or a browser: say what to give instead.
        if let Some((_, rest)) = s.split_once("://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            // The test page's link carries the token and may name another port (`--web`).
            let page = if s.contains("?t=") || s.contains("&t=") {
                " and the token with --token; that link is the browser test page's: open it in a browser"
            } else {
                ""
            };
            return Err(format!(
                "the server was given as a URL; give probe-client HOST or HOST:PORT (here `{host}`, or the port probe-server listens on){page}"
            ));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match tail {
                "" => DEFAULT_PORT,
                t => port(t.strip_prefix(':').ok_or_else(bad)?).ok_or_else(bad)?,
            };
            return Ok(Self {
                host: host.into(),
                port,
            });
        }
        if s.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(Self {
                host: s.into(),
                port: DEFAULT_PORT,
            });
        }
        match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => Ok(Self {
                host: h.into(),
                port: port(p).ok_or_else(bad)?,
            }),
            Some(_) => Err(bad()),
            None => Ok(Self {
                host: s.into(),
                port: DEFAULT_PORT,
            }),
        }
    }

    /// `HOST:PORT` for reports, bracketing IPv6 literals.
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves with a deadline; the first address wins, as a browser's first attempt would.
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        match tokio::time::timeout(Duration::from_secs(5), lookup).await {
            Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| {
                format!("the host name `{}` has no addresses; check the name or use an IP address", self.host)
            }),
            Ok(Err(e)) => Err(format!(
                "cannot resolve the host name `{}` ({e}); check the spelling and this machine's DNS, or use an IP address",
                self.host
            )),
            Err(_) => Err(format!(
                "resolving `{}` took more than 5 s; check this machine's DNS or use an IP address",
                self.host
            )),
        }
    }
}

fn port(s: &str) -> Option<u16> {
    s.parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_refused_with_what_to_give_instead() {
        let e = Target::parse("http://127.0.0.1:18443/?t=x").unwrap_err();
        assert!(e.contains("here `127.0.0.1:18443`"), "{e}");
        assert!(e.contains("--token") && e.contains("browser"), "{e}");
        let e = Target::parse("http://user:pw@host.example:8080/").unwrap_err();
        assert!(
            e.contains("here `host.example:8080`") && !e.contains("pw@"),
            "{e}"
        );
        let e = Target::parse("https://calls.example.com").unwrap_err();
        assert!(
            e.contains("given as a URL") && e.contains("`calls.example.com`"),
            "{e}"
        );
    }

    #[test]
    fn forms() {
        let t = |h: &str, p| Target {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            Target::parse("rtcd.example.com"),
            Ok(t("rtcd.example.com", 8443))
        );
        assert_eq!(Target::parse("203.0.113.5:443"), Ok(t("203.0.113.5", 443)));
        assert_eq!(
            Target::parse("[2001:db8::1]:9000"),
            Ok(t("2001:db8::1", 9000))
        );
        assert_eq!(Target::parse("[2001:db8::1]"), Ok(t("2001:db8::1", 8443)));
        assert_eq!(Target::parse("2001:db8::1"), Ok(t("2001:db8::1", 8443)));
        assert_eq!(t("2001:db8::1", 1).display(), "[2001:db8::1]:1");
        for bad in [
            "",
            "host:",
            "host:0",
            "host:99999",
            ":80",
            "[::1",
            "[nothost]:1",
            "[::1]x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
