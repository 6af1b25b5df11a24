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

/// Per-source-address buckets with a bounded table, so a spoofed-source flood cannot grow
/// memory: when full, idle entries are evicted, and if none is idle the newcomer is refused.
#[derive(Debug)]
pub struct PerSource {
    rate: f64,
    burst: f64,
    cap: usize,
    table: HashMap<IpAddr, Bucket>,
}

impl PerSource {
    pub fn new(rate_per_s: f64, burst: f64, cap: usize) -> Self {
        Self {
            rate: rate_per_s,
            burst,
            cap,
            table: HashMap::new(),
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now_us: u64) -> bool {
        if !self.table.contains_key(&ip) && self.table.len() >= self.cap {
            // An entry whose bucket has refilled completely carries no state worth keeping.
            let full_after_us = (self.burst / self.rate * 1e6) as u64;
            self.table
                .retain(|_, b| now_us.saturating_sub(b.last_us) < full_after_us);
            if self.table.len() >= self.cap {
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.table
            .entry(ip)
            .or_insert_with(|| Bucket::new(rate, burst, now_us))
            .take(now_us)
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
        assert!(!p.allow(ip(3), 0), "table full of active sources");
        assert_eq!(p.len(), 2);
        // After both refill (2 s), their entries can be evicted for a newcomer.
        assert!(p.allow(ip(3), 3_000_000));
        assert!(p.len() <= 2);
    }
}
