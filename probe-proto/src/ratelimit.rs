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
/// nor cost more than O(1) per packet. IPv6 sources are keyed by their /64 (or a wider prefix,
/// see [`PerSource::v6_prefix`]), which one host or one customer usually holds whole. When the table is full, a newcomer takes the place of
/// an entry picked at random: no one can pin the table (a flood of fresh addresses only evicts
/// entries, and an evicted source comes back with a fresh allowance), and there is no shared
/// overflow bucket a flood could drain for everyone.
#[derive(Debug)]
pub struct PerSource {
    rate: f64,
    burst: f64,
    cap: usize,
    /// IPv6 sources are keyed by this prefix length (64 unless [`PerSource::v6_prefix`] says).
    v6_bits: u8,
    /// Key -> (its index in `keys`, its bucket); `keys` makes a random pick O(1).
    table: HashMap<IpAddr, (usize, Bucket)>,
    keys: Vec<IpAddr>,
    rng: u64,
}

/// The key a source is limited under: the address, or its /64 for IPv6.
pub fn source_key(ip: IpAddr) -> IpAddr {
    prefix_key(ip, 64)
}

/// The address, or for IPv6 its first `v6_bits` bits (the rest zeroed).
pub fn prefix_key(ip: IpAddr, v6_bits: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_bits.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

impl PerSource {
    pub fn new(rate_per_s: f64, burst: f64, cap: usize) -> Self {
        Self::with_seed(rate_per_s, burst, cap, 0x9E37_79B9_7F4A_7C15)
    }

    /// `seed`: from the shell's RNG, so an attacker cannot predict which entry goes next.
    pub fn with_seed(rate_per_s: f64, burst: f64, cap: usize, seed: u64) -> Self {
        Self {
            rate: rate_per_s,
            burst,
            cap: cap.max(1),
            v6_bits: 64,
            table: HashMap::new(),
            keys: Vec::new(),
            rng: seed | 1,
        }
    }

    /// Keys IPv6 sources by a prefix of `bits` instead of their /64.
    pub fn v6_prefix(mut self, bits: u8) -> Self {
        self.v6_bits = bits.min(128);
        self
    }

    pub fn allow(&mut self, ip: IpAddr, now_us: u64) -> bool {
        let key = prefix_key(ip, self.v6_bits);
        if let Some((_, b)) = self.table.get_mut(&key) {
            return b.take(now_us);
        }
        if self.keys.len() >= self.cap {
            self.evict_random();
        }
        let mut b = Bucket::new(self.rate, self.burst, now_us);
        let ok = b.take(now_us);
        self.table.insert(key, (self.keys.len(), b));
        self.keys.push(key);
        ok
    }

    fn evict_random(&mut self) {
        // xorshift64*: cheap, and good enough to make the victim unpredictable.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let i = (r % self.keys.len() as u64) as usize;
        let gone = self.keys.swap_remove(i);
        self.table.remove(&gone);
        if let Some(moved) = self.keys.get(i) {
            if let Some(e) = self.table.get_mut(moved) {
                e.0 = i;
            }
        }
    }

    /// Whether `ip` (its key: the address, or its IPv6 prefix) was let through or refused within `window_us` of `now_us`. Only
    /// meaningful for tables that spoofed packets cannot reach (TCP accepts, QUIC after Retry).
    pub fn seen_within(&self, ip: IpAddr, now_us: u64, window_us: u64) -> bool {
        self.table
            .get(&prefix_key(ip, self.v6_bits))
            .is_some_and(|(_, b)| now_us.saturating_sub(b.last_us) <= window_us)
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
    fn per_source_is_bounded_and_cannot_be_pinned() {
        let mut p = PerSource::new(1.0, 2.0, 64);
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0xC633_0000u32 | n));
        let victim = IpAddr::from([203, 0, 113, 9]);
        // A flood of fresh sources, each refreshed before its bucket would refill: the table
        // stays full and bounded, and every newcomer (the victim too) still gets its own
        // allowance; there is no overflow bucket to drain.
        for round in 0..10u64 {
            for n in 0..1000 {
                assert!(p.allow(ip(n), round * 100_000));
            }
            assert_eq!(p.len(), 64);
        }
        assert!(p.allow(victim, 1_000_000));
        assert!(p.allow(victim, 1_000_000), "burst 2");
        assert!(!p.allow(victim, 1_000_000), "then the rate");
        // Known sources keep their own limit when no flood evicts them.
        let mut q = PerSource::new(1.0, 1.0, 4);
        assert!(q.allow(ip(1), 0));
        assert!(!q.allow(ip(1), 0));
        // Every index stays consistent through evictions.
        for n in 0..200 {
            q.allow(ip(n), 0);
            assert!(q.keys.iter().enumerate().all(|(i, k)| q.table[k].0 == i));
        }
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

    #[test]
    fn a_wider_ipv6_prefix_shares_one_bucket() {
        let mut p = PerSource::new(1.0, 1.0, 16).v6_prefix(48);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:ff00::1".parse().unwrap();
        let c: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert!(p.allow(a, 0));
        assert!(!p.allow(b, 0), "another /64 of the same /48");
        assert!(p.allow(c, 0), "another /48");
        assert!(p.seen_within(b, 0, 0));
        assert_eq!(p.len(), 2);
        let v4 = IpAddr::from([198, 51, 100, 7]);
        assert_eq!(prefix_key(v4, 48), v4);
        assert_eq!(
            prefix_key(a, 0),
            IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
        );
        assert_eq!(prefix_key(a, 128), a);
    }
}
