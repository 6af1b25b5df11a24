//! Token buckets: per session (echo rate), per source address (unauthenticated traffic) and
//! for the whole server (reply packets per second). Time is passed in, in microseconds.

use std::collections::HashMap;
use std::net::IpAddr;

/// A classic token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    last_us: u64,
    rate: f64,
    burst: f64,
}

impl Bucket {
    pub fn new(rate_per_s: f64, burst: f64, now_us: u64) -> Self {
        Self {
            tokens: burst,
            last_us: now_us,
            rate: rate_per_s,
            burst,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now_us: u64) -> bool {
        let dt = now_us.saturating_sub(self.last_us) as f64 / 1e6;
        self.last_us = self.last_us.max(now_us);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-source buckets with a bounded table, so a spoofed-source flood can neither grow memory
/// nor cost more than O(1) per packet. IPv6 sources are keyed by their /64, which one host
/// or one customer usually holds whole. When the table is full, idle entries are swept out
/// (at most every 100 ms, so the sweep is not paid per packet) and newcomers that find no room
/// share one overflow bucket: a flood of fresh addresses competes with itself, while sources
/// already in the table keep their own allowance.
#[derive(Debug)]
pub struct PerSource {
    rate: f64,
    burst: f64,
    cap: usize,
    table: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
    next_sweep_us: u64,
}

const SWEEP_EVERY_US: u64 = 100_000;

/// The key a source is limited under: the address, or its /64 for IPv6.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

impl PerSource {
    pub fn new(rate_per_s: f64, burst: f64, cap: usize) -> Self {
        Self {
            rate: rate_per_s,
            burst,
            cap,
            table: HashMap::new(),
            overflow: Bucket::new(rate_per_s, burst, 0),
            next_sweep_us: 0,
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now_us: u64) -> bool {
        let key = source_key(ip);
        if let Some(b) = self.table.get_mut(&key) {
            return b.take(now_us);
        }
        if self.table.len() >= self.cap && now_us >= self.next_sweep_us {
            // An entry whose bucket has refilled completely carries no state worth keeping.
            let full_after_us = (self.burst / self.rate * 1e6) as u64;
            self.table
                .retain(|_, b| now_us.saturating_sub(b.last_us) < full_after_us);
            self.next_sweep_us = now_us + SWEEP_EVERY_US;
        }
        if self.table.len() >= self.cap {
            return self.overflow.take(now_us);
        }
        let mut b = Bucket::new(self.rate, self.burst, now_us);
        let ok = b.take(now_us);
        self.table.insert(key, b);
        ok
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = Bucket::new(10.0, 3.0, 0);
        assert!(b.take(0) && b.take(0) && b.take(0));
        assert!(!b.take(0));
        assert!(!b.take(50_000), "half a token after 50 ms");
        assert!(b.take(100_000), "one token after 100 ms");
        // A clock that goes backwards never mints tokens.
        assert!(!b.take(10));
    }

    #[test]
    fn per_source_is_bounded() {
        let mut p = PerSource::new(1.0, 2.0, 2);
        let ip = |n: u8| IpAddr::from([198, 51, 100, n]);
        assert!(p.allow(ip(1), 0));
        assert!(p.allow(ip(2), 0));
        // The table is full of active sources: newcomers share the overflow bucket (burst 2).
        assert!(p.allow(ip(3), 0));
        assert!(p.allow(ip(4), 0));
        assert!(!p.allow(ip(5), 0), "the overflow bucket is empty");
        assert_eq!(p.len(), 2);
        // Known sources keep their own allowance whatever the newcomers do.
        assert!(p.allow(ip(1), 0));
        // After both refill (2 s), their entries can be evicted for a newcomer.
        assert!(p.allow(ip(6), 3_000_000));
        assert!(p.len() <= 2);
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let mut p = PerSource::new(1.0, 1.0, 16);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(p.allow(a, 0));
        assert!(!p.allow(b, 0), "same /64, same bucket");
        assert!(p.allow(c, 0), "another /64");
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert_eq!(source_key(mapped), IpAddr::from([198, 51, 100, 7]));
    }
}
