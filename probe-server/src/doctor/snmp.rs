//! The host's UDP error counters, as `netstat -su` shows them: `/proc/net/snmp` (`Udp:` rows)
//! and `/proc/net/snmp6` (`Udp6*` lines). Both are per network namespace.

/// The counters the guide's `netstat -su | grep -E 'drop|error'` step looks at, IPv4 + IPv6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    /// Counter increase from `self` to `later` (a counter that went down, after a reset,
    /// counts as 0).
    pub fn delta(&self, later: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_errors: later.in_errors.saturating_sub(self.in_errors),
            rcvbuf_errors: later.rcvbuf_errors.saturating_sub(self.rcvbuf_errors),
            sndbuf_errors: later.sndbuf_errors.saturating_sub(self.sndbuf_errors),
        }
    }
}

/// `Udp:` header row then value row; the columns are found by name (their order and number
/// changed across kernels).
pub fn parse_snmp(text: &str) -> Option<UdpCounters> {
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = rows.next()?.split_whitespace().skip(1).collect();
    let values: Vec<&str> = rows.next()?.split_whitespace().skip(1).collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(UdpCounters {
        in_errors: get("InErrors"),
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
    })
}

/// `Udp6InErrors 0` lines.
pub fn parse_snmp6(text: &str) -> UdpCounters {
    let mut c = UdpCounters::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(value)) = (f.next(), f.next().and_then(|v| v.parse().ok())) else {
            continue;
        };
        match name {
            "Udp6InErrors" => c.in_errors = value,
            "Udp6RcvbufErrors" => c.rcvbuf_errors = value,
            "Udp6SndbufErrors" => c.sndbuf_errors = value,
            _ => {}
        }
    }
    c
}

/// IPv4 + IPv6 counters of this namespace; `snmp6` is absent when IPv6 is off.
pub fn read() -> Result<UdpCounters, String> {
    let v4 = std::fs::read_to_string("/proc/net/snmp")
        .map_err(|e| format!("cannot read /proc/net/snmp: {e}"))?;
    let v4 = parse_snmp(&v4).ok_or("/proc/net/snmp has no Udp: rows")?;
    let v6 = std::fs::read_to_string("/proc/net/snmp6")
        .map(|t| parse_snmp6(&t))
        .unwrap_or_default();
    Ok(UdpCounters {
        in_errors: v4.in_errors + v6.in_errors,
        rcvbuf_errors: v4.rcvbuf_errors + v6.rcvbuf_errors,
        sndbuf_errors: v4.sndbuf_errors + v6.sndbuf_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from Linux 6.18 (/proc/net/snmp, trimmed to the Udp rows and a neighbour).
    const SNMP: &str = "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 32 11 0 11 0 5684 3743 0 0 13 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1520 14 907 1535 905 3 2 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 11 0 11 0 0 0 0
";
    const SNMP6: &str = "Udp6InDatagrams                 \t10
Udp6NoPorts                     \t0
Udp6InErrors                    \t4
Udp6OutDatagrams                \t10
Udp6RcvbufErrors                \t4
Udp6SndbufErrors                \t1
UdpLite6InErrors                \t99
";

    #[test]
    fn reads_udp_not_udplite() {
        let c = parse_snmp(SNMP).unwrap();
        assert_eq!(
            c,
            UdpCounters {
                in_errors: 907,
                rcvbuf_errors: 905,
                sndbuf_errors: 3
            }
        );
        let c6 = parse_snmp6(SNMP6);
        assert_eq!(
            c6,
            UdpCounters {
                in_errors: 4,
                rcvbuf_errors: 4,
                sndbuf_errors: 1
            }
        );
        assert!(parse_snmp("Ip: x\nIp: 1\n").is_none());
    }

    #[test]
    fn delta_ignores_resets() {
        let a = UdpCounters {
            in_errors: 10,
            rcvbuf_errors: 5,
            sndbuf_errors: 0,
        };
        let b = UdpCounters {
            in_errors: 15,
            rcvbuf_errors: 1,
            sndbuf_errors: 2,
        };
        assert_eq!(
            a.delta(&b),
            UdpCounters {
                in_errors: 5,
                rcvbuf_errors: 0,
                sndbuf_errors: 2
            }
        );
        assert_eq!(a.delta(&a), UdpCounters::default());
    }

    #[test]
    fn reads_this_host() {
        read().unwrap();
    }
}
