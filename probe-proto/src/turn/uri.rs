//! TURN URIs (RFC 7065): `turn:HOST[:PORT][?transport=udp|tcp]`, `turns:HOST[:PORT][?transport=tcp]`.

use super::TurnTransport;
use crate::http::{host_port, parse_port, split_authority};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUri {
    /// As given, for the report.
    pub raw: String,
    pub secure: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// The transports to test: `turn:` without `?transport=` is tried over UDP and TCP (what a
    /// browser may use), `turns:` over TLS.
    pub transports: Vec<TurnTransport>,
}

impl TurnUri {
    /// `host:port` with IPv6 in brackets.
    pub fn authority(&self) -> String {
        host_port(&self.host, self.port)
    }
}

pub fn parse(s: &str) -> Result<TurnUri, String> {
    let raw = s.trim();
    let (secure, rest) = if let Some(r) = raw.strip_prefix("turns:") {
        (true, r)
    } else if let Some(r) = raw.strip_prefix("turn:") {
        (false, r)
    } else if raw.starts_with("stun:") || raw.starts_with("stuns:") {
        return Err(format!("{raw:?} is a STUN URL, not TURN"));
    } else {
        return Err(format!("{raw:?} is not a turn: or turns: URL"));
    };
    // Some configurations carry "//" (turn://host); browsers refuse it, so does this.
    if rest.starts_with("//") {
        return Err(format!(
            "{raw:?}: a TURN URL has no \"//\" (write turn:HOST:PORT)"
        ));
    }
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let default_port = if secure { 5349 } else { 3478 };
    let (host, port) = split_authority(raw, hostport)?;
    // The host is judged before the port here (http(s) URLs judge the port first).
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == b'/' || b == b'@') {
        return Err(format!("{raw:?}: no host"));
    }
    let port = parse_port(raw, port, default_port)?;
    let transport = match query {
        None => None,
        Some(q) => {
            let v = q
                .split('&')
                .find_map(|kv| kv.strip_prefix("transport="))
                .ok_or_else(|| format!("{raw:?}: unknown query {q:?}"))?;
            match v.to_ascii_lowercase().as_str() {
                "udp" => Some(TurnTransport::Udp),
                "tcp" => Some(TurnTransport::Tcp),
                other => return Err(format!("{raw:?}: transport={other} (udp or tcp)")),
            }
        }
    };
    let transports = match (secure, transport) {
        (true, Some(TurnTransport::Udp)) => {
            return Err(format!(
                "{raw:?}: turns: with transport=udp is DTLS, which browsers do not use"
            ))
        }
        (true, _) => vec![TurnTransport::Tls],
        (false, Some(t)) => vec![t],
        (false, None) => vec![TurnTransport::Udp, TurnTransport::Tcp],
    };
    Ok(TurnUri {
        raw: raw.to_string(),
        secure,
        host,
        port,
        transports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7065_forms() {
        let u = parse("turn:turn.example.org").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.secure),
            ("turn.example.org", 3478, false)
        );
        assert_eq!(u.transports, vec![TurnTransport::Udp, TurnTransport::Tcp]);
        let u = parse("turn:203.0.113.1:3479?transport=tcp").unwrap();
        assert_eq!(
            (u.port, u.transports.clone()),
            (3479, vec![TurnTransport::Tcp])
        );
        let u = parse("turns:turn.example.org:443?transport=tcp").unwrap();
        assert_eq!(
            (u.port, u.transports.clone()),
            (443, vec![TurnTransport::Tls])
        );
        assert_eq!(parse("turns:h").unwrap().port, 5349);
        let u = parse("turn:[2001:db8::1]:3478?transport=udp").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.authority(), "[2001:db8::1]:3478");
        assert_eq!(u.transports, vec![TurnTransport::Udp]);
    }

    #[test]
    fn refusals_say_why() {
        for bad in [
            "stun:stun.example.org",
            "http://x",
            "turn:",
            "turn:h:0",
            "turn:h:99999",
            "turn://h:3478",
            "turn:h?transport=sctp",
            "turns:h?transport=udp",
            "turn:[::1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
