//! Small re-implementations of the Go standard-library parsers RTCD relies on
//! (`strconv`, `net.ParseIP`, `net.SplitHostPort`, the pure-Go resolver's name
//! check), so the probe accepts and rejects exactly what RTCD does and can
//! quote RTCD's error text.

use std::net::IpAddr;

/// Go's `strconv.Quote`, close enough for error messages.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn num_err(func: &str, s: &str, what: &str) -> String {
    format!("strconv.{func}: parsing {}: {what}", go_quote(s))
}

/// Go's `strconv.Atoi` on a 64-bit platform (base 10, optional sign, no
/// underscores), with Go's error text.
pub(crate) fn atoi(s: &str) -> Result<i64, String> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return Err(num_err("Atoi", s, "invalid syntax"));
    }
    let limit: u64 = if neg { 1 << 63 } else { (1 << 63) - 1 };
    let mut n: u64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return Err(num_err("Atoi", s, "invalid syntax"));
        }
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
        {
            Some(v) if v <= limit => v,
            _ => return Err(num_err("Atoi", s, "value out of range")),
        };
    }
    Ok(if neg {
        0i64.wrapping_sub_unsigned(n)
    } else {
        n as i64
    })
}

/// Go's `underscoreOK`: underscores only between digits (or after a base prefix).
fn underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let mut saw = b'^';
    let b = if !b.is_empty() && (b[0] == b'-' || b[0] == b'+') {
        &b[1..]
    } else {
        b
    };
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        let l = c.to_ascii_lowercase();
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&l)) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Go's `strconv.ParseUint(s, 0, bits)`; `func` names the Go function for errors.
fn parse_uint0(s: &str, bits: u32, func: &str, quoted: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err(num_err(func, quoted, "invalid syntax"));
    }
    let b = s.as_bytes();
    let (base, digits): (u64, &[u8]) = if b[0] == b'0' {
        match b.get(1).map(u8::to_ascii_lowercase) {
            Some(b'b') if b.len() >= 3 => (2, &b[2..]),
            Some(b'o') if b.len() >= 3 => (8, &b[2..]),
            Some(b'x') if b.len() >= 3 => (16, &b[2..]),
            _ => (8, &b[1..]),
        }
    } else {
        (10, b)
    };
    let max: u64 = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        if c == b'_' {
            underscores = true;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => u64::from(c - b'0'),
            b'a'..=b'z' => u64::from(c - b'a') + 10,
            b'A'..=b'Z' => u64::from(c - b'A') + 10,
            _ => 99,
        };
        if d >= base {
            return Err(num_err(func, quoted, "invalid syntax"));
        }
        n = match n.checked_mul(base).and_then(|n| n.checked_add(d)) {
            Some(v) if v <= max => v,
            _ => return Err(num_err(func, quoted, "value out of range")),
        };
    }
    if underscores && !underscore_ok(s) {
        return Err(num_err(func, quoted, "invalid syntax"));
    }
    Ok(n)
}

/// Go's `strconv.ParseInt(s, 0, 64)`, which envconfig uses for `int` fields.
pub(crate) fn parse_int0(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err(num_err("ParseInt", s, "invalid syntax"));
    }
    let (neg, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let un = parse_uint0(rest, 64, "ParseInt", s)?;
    let cutoff: u64 = 1 << 63;
    if (!neg && un >= cutoff) || (neg && un > cutoff) {
        return Err(num_err("ParseInt", s, "value out of range"));
    }
    Ok(if neg {
        0i64.wrapping_sub_unsigned(un)
    } else {
        un as i64
    })
}

/// Go's `strconv.ParseUint(s, 0, 16)`, which envconfig uses for `uint16` fields.
pub(crate) fn parse_uint16(s: &str) -> Result<u16, String> {
    parse_uint0(s, 16, "ParseUint", s).map(|v| v as u16)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(num_err("ParseBool", s, "invalid syntax")),
    }
}

/// Go's `net.ParseIP` followed by `To4()` where possible: an IPv4-mapped IPv6
/// literal is the IPv4 address for Go (and for pion), so it is for us too.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().map(canonical)
}

/// IPv4-mapped IPv6 becomes IPv4, as Go's `net.IP.String()` and `To4()` see it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The pure-Go resolver's `isDomainName`: what it refuses never reaches DNS
/// (RTCD binaries are static, so the pure-Go resolver is the one in use).
pub(crate) fn is_domain_name(s: &str) -> bool {
    if s == "." {
        return true;
    }
    let b = s.as_bytes();
    let l = b.len();
    if l == 0 || l > 254 || (l == 254 && b[l - 1] != b'.') {
        return false;
    }
    let mut last = b'.';
    let mut non_numeric = false;
    let mut partlen = 0;
    for &c in b {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                non_numeric = true;
                partlen += 1;
            }
            b'0'..=b'9' => partlen += 1,
            b'-' => {
                if last == b'.' {
                    return false;
                }
                partlen += 1;
                non_numeric = true;
            }
            b'.' => {
                if last == b'.' || last == b'-' || partlen > 63 || partlen == 0 {
                    return false;
                }
                partlen = 0;
            }
            _ => return false,
        }
        last = c;
    }
    last != b'-' && partlen <= 63 && non_numeric
}

/// Go's `net.SplitHostPort`, with its error text (`address X: why`).
pub(crate) fn split_host_port(hp: &str) -> Result<(String, String), String> {
    let err = |why: &str| Err(format!("address {hp}: {why}"));
    let Some(i) = hp.rfind(':') else {
        return err("missing port in address");
    };
    let (host, j, k);
    if hp.starts_with('[') {
        let Some(end) = hp.find(']') else {
            return err("missing ']' in address");
        };
        if end + 1 == hp.len() {
            return err("missing port in address");
        }
        if end + 1 != i {
            if hp.as_bytes()[end + 1] == b':' {
                return err("too many colons in address");
            }
            return err("missing port in address");
        }
        host = &hp[1..end];
        (j, k) = (1, end + 1);
    } else {
        host = &hp[..i];
        if host.contains(':') {
            return err("too many colons in address");
        }
        (j, k) = (0, 0);
    }
    if hp[j..].contains('[') {
        return err("unexpected '[' in address");
    }
    if hp[k..].contains(']') {
        return err("unexpected ']' in address");
    }
    Ok((host.to_string(), hp[i + 1..].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_matches_go() {
        assert_eq!(atoi("8443"), Ok(8443));
        assert_eq!(atoi("+80"), Ok(80));
        assert_eq!(atoi("-5"), Ok(-5));
        assert_eq!(atoi("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(
            atoi(" 8443").unwrap_err(),
            "strconv.Atoi: parsing \" 8443\": invalid syntax"
        );
        assert_eq!(
            atoi("").unwrap_err(),
            "strconv.Atoi: parsing \"\": invalid syntax"
        );
        assert_eq!(
            atoi("9223372036854775808").unwrap_err(),
            "strconv.Atoi: parsing \"9223372036854775808\": value out of range"
        );
        assert!(atoi("8_443").is_err());
    }

    #[test]
    fn parse_int_base0_matches_go() {
        assert_eq!(parse_int0("0x20FB"), Ok(8443));
        assert_eq!(parse_int0("0o17"), Ok(15));
        assert_eq!(parse_int0("017"), Ok(15));
        assert_eq!(parse_int0("0b101"), Ok(5));
        assert_eq!(parse_int0("8_443"), Ok(8443));
        assert_eq!(parse_int0("0"), Ok(0));
        assert_eq!(parse_int0("-12"), Ok(-12));
        assert_eq!(
            parse_int0("08443").unwrap_err(),
            "strconv.ParseInt: parsing \"08443\": invalid syntax"
        );
        assert!(parse_int0("8__443").is_err());
        assert!(parse_int0("_8443").is_err());
        assert!(parse_int0("0x").is_err());
        assert!(parse_int0("").is_err());
        assert_eq!(parse_uint16("65535"), Ok(65535));
        assert_eq!(
            parse_uint16("65536").unwrap_err(),
            "strconv.ParseUint: parsing \"65536\": value out of range"
        );
        assert!(parse_uint16("-1").is_err());
    }

    #[test]
    fn bools_and_quotes() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert_eq!(
            parse_bool("yes").unwrap_err(),
            "strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
    }

    #[test]
    fn ip_and_names() {
        assert_eq!(parse_ip("::ffff:1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_ip("01.2.3.4"), None);
        assert_eq!(parse_ip(" 1.2.3.4"), None);
        assert!(is_domain_name("rtc.example.com"));
        assert!(is_domain_name("rtc.example.com."));
        assert!(
            !is_domain_name("1.2.3.4"),
            "all-numeric names are not names"
        );
        assert!(!is_domain_name(" rtc.example.com"));
        assert!(!is_domain_name("a..b"));
        assert!(!is_domain_name("-a.b"));
        assert!(!is_domain_name(""));
    }

    #[test]
    fn split_host_port_matches_go() {
        assert_eq!(
            split_host_port("stun.example.com:3478"),
            Ok(("stun.example.com".into(), "3478".into()))
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:3478"),
            Ok(("2001:db8::1".into(), "3478".into()))
        );
        assert_eq!(
            split_host_port("stun.example.com").unwrap_err(),
            "address stun.example.com: missing port in address"
        );
        assert_eq!(
            split_host_port("2001:db8::1").unwrap_err(),
            "address 2001:db8::1: too many colons in address"
        );
        assert!(split_host_port("[::1]").is_err());
        assert!(split_host_port("[::1]x:1").is_err());
    }
}
