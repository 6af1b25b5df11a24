//! What the peer counted per session, live and for a while after it closed (so `POST /report`,
//! which comes after the page closed its peer connections, can still read them), the caps on
//! sessions, and the totals for metrics.

use super::{OpenError, PeerDrops, PeerLimits, PeerStats};
use probe_proto::msg::Transport;
use probe_proto::web::{Leg, ServerCounts};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long a closed session's counts stay readable: a page run is under a minute and posts
/// its report at the end.
pub const KEEP_CLOSED: Duration = Duration::from_secs(300);
/// Closed sessions kept at most (the oldest go first): bounds memory whatever the churn.
pub const MAX_CLOSED: usize = 1024;

struct Entry {
    counts: ServerCounts,
    /// Who opened it: only that source may take its counts for a report.
    client: IpAddr,
    live: bool,
    /// Its counts went into a report already (a report per session, not one per request).
    taken: bool,
}

#[derive(Default)]
pub struct Book {
    entries: HashMap<u64, Entry>,
    /// Closed sessions, oldest first.
    closed: VecDeque<(Instant, u64)>,
    stats: PeerStats,
    drops: PeerDrops,
    /// Offers queued for the task and not yet handled, per source (see [`Book::reserve`]).
    pending: HashMap<IpAddr, usize>,
}

/// The session id the page sees: the key in hex, fixed width.
pub fn session_id(key: u64) -> String {
    format!("{key:016x}")
}

fn parse_id(id: &str) -> Option<u64> {
    (id.len() == 16)
        .then(|| u64::from_str_radix(id, 16).ok())
        .flatten()
}

impl Book {
    /// Refuses a new session from `client` when a cap is reached (counted as refused). Offers
    /// still queued count as sessions, so a burst from one address is refused before it fills
    /// the queue every address shares.
    pub fn admit(&mut self, client: IpAddr, limits: &PeerLimits) -> Result<(), OpenError> {
        let live = self.entries.values().filter(|e| e.live);
        let (total, mine) = live.fold((0, 0), |(t, m), e| {
            (t + 1, m + usize::from(same_source(e.client, client)))
        });
        let queued_mine = self.pending.get(&source_key(client)).copied().unwrap_or(0);
        let (total, mine) = (
            total + self.pending.values().sum::<usize>(),
            mine + queued_mine,
        );
        let refusal = if total >= limits.max_sessions {
            Some(format!(
                "The server already runs {total} browser test sessions, its limit; try again in a minute."
            ))
        } else if mine >= limits.max_sessions_per_ip {
            Some(format!(
                "Your address already has {mine} browser test sessions open, the limit per address; try again in a minute."
            ))
        } else {
            None
        };
        match refusal {
            Some(s) => {
                self.stats.refused += 1;
                Err(OpenError::Busy(s))
            }
            None => Ok(()),
        }
    }

    /// Before an offer is queued: the caps as [`Book::admit`] judges them, and a place held
    /// for it until the task takes it ([`Book::unreserve`]).
    pub fn reserve(&mut self, client: IpAddr, limits: &PeerLimits) -> Result<(), OpenError> {
        self.admit(client, limits)?;
        *self.pending.entry(source_key(client)).or_default() += 1;
        Ok(())
    }

    /// The task took the offer (or it never reached the queue).
    pub fn unreserve(&mut self, client: IpAddr) {
        let key = source_key(client);
        if let Some(n) = self.pending.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(&key);
            }
        }
    }

    /// An offer refused because the queue was full: counted like a cap refusal.
    pub fn refused_busy(&mut self) {
        self.stats.refused += 1;
    }

    pub fn open(
        &mut self,
        key: u64,
        client: IpAddr,
        leg: Leg,
        candidates: Vec<(SocketAddr, Transport)>,
    ) {
        let counts = ServerCounts {
            session: session_id(key),
            leg: Some(leg),
            candidates,
            ..ServerCounts::default()
        };
        let entry = Entry {
            counts,
            client,
            live: true,
            taken: false,
        };
        self.entries.insert(key, entry);
        self.stats.opened += 1;
        self.stats.live += 1;
    }

    pub fn contains(&self, key: u64) -> bool {
        self.entries.contains_key(&key)
    }

    /// Whether the session still counts against the caps (false once closed or taken).
    pub fn is_live(&self, key: u64) -> bool {
        self.entries.get(&key).is_some_and(|e| e.live)
    }

    /// The live or recently closed session's counters.
    pub fn counts_mut(&mut self, key: u64) -> Option<&mut ServerCounts> {
        self.entries.get_mut(&key).map(|e| &mut e.counts)
    }

    pub fn stats_mut(&mut self) -> &mut PeerStats {
        &mut self.stats
    }

    pub fn stats(&self) -> PeerStats {
        self.stats
    }

    pub fn drops_mut(&mut self) -> &mut PeerDrops {
        &mut self.drops
    }

    pub fn drops(&self) -> PeerDrops {
        self.drops
    }

    /// The session ended: it no longer counts against the caps; its counts stay readable.
    pub fn close(&mut self, key: u64, now: Instant) {
        if let Some(e) = self.entries.get_mut(&key).filter(|e| e.live) {
            e.live = false;
            self.stats.live = self.stats.live.saturating_sub(1);
            self.closed.push_back((now, key));
        }
        self.expire(now);
    }

    /// Forgets closed sessions older than [`KEEP_CLOSED`] or beyond [`MAX_CLOSED`].
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.closed.front() {
            if self.closed.len() <= MAX_CLOSED && now.duration_since(at) < KEEP_CLOSED {
                break;
            }
            self.closed.pop_front();
            self.entries.remove(&key);
        }
    }

    /// The counts of the named sessions, in the order named; unknown ids are skipped.
    // Read-only (nothing taken): tests use it; `POST /report` uses `take_for_report`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn counts(&self, ids: &[String]) -> Vec<ServerCounts> {
        ids.iter()
            .filter_map(|id| self.entries.get(&parse_id(id)?))
            .map(|e| e.counts.clone())
            .collect()
    }

    /// The counts of the named sessions opened from `client`'s source and not taken yet, in
    /// the order named; marks them taken and closes the live ones (their cap slots come free
    /// now; the task ends their `Rtc` on its next tick). Another source's ids are skipped so
    /// a leaked id cannot end, or steal the counts of, someone else's run.
    pub fn take(&mut self, client: IpAddr, ids: &[String], now: Instant) -> Vec<ServerCounts> {
        let mut out = Vec::new();
        for id in ids {
            let Some(key) = parse_id(id) else { continue };
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if e.taken || !same_source(e.client, client) {
                continue;
            }
            e.taken = true;
            out.push(e.counts.clone());
            self.close(key, now);
        }
        out
    }
}

/// The key of a source for the per-address caps: the IPv4 address, or the IPv6 /64, as the
/// server's other per-source limits count it.
pub use probe_proto::ratelimit::source_key;

fn same_source(a: IpAddr, b: IpAddr) -> bool {
    source_key(a) == source_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PeerLimits {
        PeerLimits {
            max_sessions: 3,
            max_sessions_per_ip: 2,
            session_lifetime: Duration::from_secs(60),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn queued_offers_count_against_the_caps_until_the_task_takes_them() {
        let (mut b, l) = (Book::default(), limits());
        let (a, other) = (ip("198.51.100.100"), ip("198.51.100.2"));
        // A burst from one address: its third offer is refused before it reaches the queue.
        b.reserve(a, &l).expect("first");
        b.reserve(a, &l).expect("second");
        assert!(matches!(b.reserve(a, &l), Err(OpenError::Busy(s)) if s.contains("per address")));
        // The total counts queued offers as well: one place left for everyone else.
        b.reserve(other, &l).expect("another address");
        assert!(b.reserve(ip("198.51.100.3"), &l).is_err());
        // The task takes one: it is judged once more (without its own reservation) and opened.
        b.unreserve(a);
        b.admit(a, &l).expect("its reservation held its place");
        b.open(1, a, Leg::Udp, Vec::new());
        assert!(
            b.reserve(a, &l).is_err(),
            "one queued and one live: at the cap"
        );
        b.unreserve(a);
        b.unreserve(other);
        b.unreserve(other); // an extra release never goes below zero
        b.reserve(a, &l).expect("the queued one left");
        b.refused_busy();
        assert_eq!(b.stats().refused, 4);
    }

    #[test]
    fn caps_per_address_and_in_total_then_frees_on_close() {
        let (mut b, l, now) = (Book::default(), limits(), Instant::now());
        let a = ip("192.0.2.1");
        for key in [1, 2] {
            b.admit(a, &l).expect("under the caps");
            b.open(key, a, Leg::Udp, Vec::new());
        }
        assert!(matches!(b.admit(a, &l), Err(OpenError::Busy(s)) if s.contains("per address")));
        // The same /64 is the same source; another address is not.
        let v6 = [ip("2001:db8::1"), ip("2001:db8::2"), ip("2001:db8:0:1::1")];
        b.admit(v6[0], &l).expect("another source");
        b.open(3, v6[0], Leg::Tcp, Vec::new());
        assert!(matches!(b.admit(v6[2], &l), Err(OpenError::Busy(s)) if s.contains("its limit")));
        b.close(1, now);
        b.admit(ip("::ffff:192.0.2.1"), &l)
            .expect("a slot came free");
        b.open(4, v6[1], Leg::Dialed, Vec::new());
        assert!(b.admit(v6[2], &l).is_err());
        assert_eq!(
            b.stats(),
            PeerStats {
                opened: 4,
                refused: 3,
                live: 3,
                ..PeerStats::default()
            }
        );
    }

    #[test]
    fn counts_outlive_the_session_for_a_while() {
        let (mut b, now) = (Book::default(), Instant::now());
        b.open(0xab, ip("192.0.2.1"), Leg::Udp, Vec::new());
        b.counts_mut(0xab).expect("live").audio_rx = 7;
        b.close(0xab, now);
        b.close(0xab, now); // twice is harmless
        let ids = vec!["00000000000000ab".to_string(), "ab".into(), "zz".into()];
        let got = b.counts(&ids);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].session.as_str(), got[0].audio_rx),
            ("00000000000000ab", 7)
        );
        assert_eq!(got[0].leg, Some(Leg::Udp));
        b.expire(now + KEEP_CLOSED);
        assert!(b.counts(&ids).is_empty());
        assert_eq!(b.stats().live, 0);
    }

    #[test]
    fn a_report_takes_its_own_sessions_once_and_frees_their_slots() {
        let (mut b, l, now) = (Book::default(), limits(), Instant::now());
        let (me, other) = (ip("2001:db8::1"), ip("192.0.2.9"));
        for key in [1, 2, 5] {
            b.open(key, me, Leg::Udp, Vec::new());
        }
        b.open(3, other, Leg::Udp, Vec::new());
        b.counts_mut(1).expect("live").audio_rx = 4;
        b.close(5, now);
        assert!(b.admit(me, &l).is_err(), "two live sessions: the cap");
        let ids: Vec<String> = [1, 5, 3, 2].map(session_id).into();
        // Another address of the same /64 is the same source; session 3 is someone else's.
        let got = b.take(ip("2001:db8::77"), &ids, now);
        let got: Vec<_> = got
            .iter()
            .map(|c| (c.session.clone(), c.audio_rx))
            .collect();
        assert_eq!(
            got,
            [(session_id(1), 4), (session_id(5), 0), (session_id(2), 0)]
        );
        assert!(!b.is_live(1) && !b.is_live(2) && b.is_live(3));
        b.admit(me, &l)
            .expect("the taken sessions' slots came free");
        assert!(b.take(me, &ids, now).is_empty(), "taken once");
        assert_eq!(b.take(other, &ids, now).len(), 1);
        // `counts` still reads them all, taken or not.
        assert_eq!(b.counts(&ids).len(), 4);
        assert_eq!(b.stats().live, 0);
    }

    #[test]
    fn closed_sessions_are_bounded() {
        let (mut b, now) = (Book::default(), Instant::now());
        for key in 0..(MAX_CLOSED as u64 + 10) {
            b.open(key, ip("192.0.2.1"), Leg::Udp, Vec::new());
            b.close(key, now);
        }
        assert_eq!(b.entries.len(), MAX_CLOSED);
        assert!(b.counts(&[session_id(0)]).is_empty());
        assert_eq!(b.counts(&[session_id(MAX_CLOSED as u64 + 9)]).len(), 1);
    }
}
