//! State shared by the server's tasks: the sans-IO core behind a mutex, the clock, the RNG.

use probe_proto::msg::IceOffer;
use probe_proto::session::Core;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

pub struct Shared {
    core: Mutex<Core>,
    quic_gate: Mutex<probe_proto::quic::InitialGate>,
    start: Instant,
    rng: SystemRandom,
    /// What RTCD would advertise, handed to every session; recomputed while running when the
    /// override is a hostname (RTCD resolves it on every call join).
    ice: RwLock<Option<IceOffer>>,
    /// Where uploaded reports go.
    pub results: crate::results::Sink,
    /// The browser test page's WebRTC peer, once started (none with `--no-web`, in live mode).
    web: std::sync::OnceLock<crate::web::peer::Peer>,
    /// The test page's own counters and what its reports need from earlier requests.
    pub web_state: crate::web::WebState,
}

impl Shared {
    pub fn new(core: Core, ice: Option<IceOffer>) -> Self {
        Self {
            core: Mutex::new(core),
            quic_gate: Mutex::new(probe_proto::quic::InitialGate::new(4096)),
            start: Instant::now(),
            rng: SystemRandom::new(),
            ice: RwLock::new(ice),
            results: crate::results::Sink::default(),
            web: std::sync::OnceLock::new(),
            web_state: crate::web::WebState::default(),
        }
    }

    /// The browser test page's peer, when this server runs one.
    pub fn web(&self) -> Option<&crate::web::peer::Peer> {
        self.web.get()
    }

    /// Turns the test page on (once, at start; a second peer is ignored).
    pub fn set_web(&self, peer: crate::web::peer::Peer) {
        let _ = self.web.set(peer);
    }

    /// Uploads go to `results` (a server built with `new` keeps none).
    pub fn with_results(mut self, results: crate::results::Sink) -> Self {
        self.results = results;
        self
    }

    /// The current offer (credentials are filled per session).
    pub fn ice(&self) -> Option<IceOffer> {
        self.ice.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_ice(&self, offer: IceOffer) {
        *self.ice.write().unwrap_or_else(|p| p.into_inner()) = Some(offer);
    }

    /// Microseconds on the server's monotonic clock (the echo timestamps' origin).
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock would be a bug; keep serving rather than cascade.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn quic_gate(&self) -> MutexGuard<'_, probe_proto::quic::InitialGate> {
        self.quic_gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn random<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng.fill(&mut b).expect("the OS random source works");
        b
    }
}

/// Turns a v4-mapped IPv6 peer (dual-stack `[::]` socket) into the IPv4 address users know.
pub fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Connections at once, in total and per source (IPv6 by /64), for one transport. A slot is
/// given back when its guard drops.
///
/// A slot that has not made progress yet (no session on it) is pending: when the total cap is
/// reached, a newcomer takes the place of the oldest pending connection of the source holding
/// the most pending ones. So a few addresses that connect and say nothing cannot keep others
/// out: they can only displace their own connections, never a client that has a session.
pub struct ConnLimits {
    total: usize,
    per_source: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    per_key: HashMap<IpAddr, usize>,
    total: usize,
    /// Pending slots by id (ids grow, so the smallest is the oldest).
    pending: std::collections::BTreeMap<u64, (IpAddr, Arc<Evict>)>,
    next_id: u64,
}

/// Shared between a slot and the table: set when the slot was given back (evicted or dropped).
#[derive(Default)]
struct Evict {
    notify: tokio::sync::Notify,
    released: AtomicBool,
}

pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    key: IpAddr,
    id: u64,
    evict: Arc<Evict>,
}

impl ConnLimits {
    pub fn new(total: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_source: per_source.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for a new connection from `ip`, or None at the per-source cap, or at the total
    /// cap with no pending connection to displace.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let key = probe_proto::ratelimit::source_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.per_key.get(&key).copied().unwrap_or(0) >= self.per_source {
            return None;
        }
        if held.total >= self.total {
            let victim = held.displaceable()?;
            held.release(victim);
        }
        *held.per_key.entry(key).or_default() += 1;
        held.total += 1;
        let id = held.next_id;
        held.next_id += 1;
        let evict = Arc::new(Evict::default());
        held.pending.insert(id, (key, evict.clone()));
        Some(ConnSlot {
            limits: self.clone(),
            key,
            id,
            evict,
        })
    }

    /// Connections held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Held {
    /// The oldest pending slot of the source with the most pending slots.
    fn displaceable(&self) -> Option<u64> {
        let mut count: HashMap<IpAddr, (usize, u64)> = HashMap::new();
        for (id, (key, _)) in &self.pending {
            let e = count.entry(*key).or_insert((0, *id));
            e.0 += 1;
        }
        let (_, (_, oldest)) = count
            .into_iter()
            .max_by_key(|(_, (n, oldest))| (*n, std::cmp::Reverse(*oldest)))?;
        Some(oldest)
    }

    /// Gives a slot back; the connection holding it is told to close.
    fn release(&mut self, id: u64) {
        if let Some((key, evict)) = self.pending.remove(&id) {
            evict.released.store(true, Ordering::Release);
            evict.notify.notify_one();
            self.forget(key);
        }
    }

    fn forget(&mut self, key: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&key);
            }
        }
    }
}

impl ConnSlot {
    /// The connection made progress (it serves a session): it can no longer be displaced.
    pub fn progressed(&self) {
        let mut held = self.limits.held.lock().unwrap_or_else(|p| p.into_inner());
        held.pending.remove(&self.id);
    }

    /// Resolves when a newcomer displaced this connection.
    pub async fn displaced(&self) {
        self.evict.notify.notified().await;
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if self.evict.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut held = self.limits.held.lock().unwrap_or_else(|p| p.into_inner());
        held.pending.remove(&self.id);
        held.forget(self.key);
    }
}

impl Shared {
    /// Whether the session a control channel opened is still alive (not expired).
    pub fn session_alive(&self, id: u64) -> bool {
        self.core().counters(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, n])
    }

    #[tokio::test]
    async fn pending_connections_of_the_biggest_holder_make_room() {
        let limits = ConnLimits::new(4, 3);
        let a: Vec<_> = (0..3)
            .map(|_| limits.acquire(ip(1)).expect("room"))
            .collect();
        assert!(limits.acquire(ip(1)).is_none(), "per-source cap");
        let b = limits.acquire(ip(2)).expect("room");
        b.progressed();
        // Full: a newcomer displaces the oldest pending slot of 198.51.100.1, never b.
        let c = limits.acquire(ip(3)).expect("displaces a pending slot");
        tokio::time::timeout(std::time::Duration::from_secs(1), a[0].displaced())
            .await
            .expect("the displaced connection is told");
        assert_eq!(limits.held(), 4);
        drop(a);
        assert_eq!(limits.held(), 2, "a displaced slot is not given back twice");
        c.progressed();
        let _d = limits.acquire(ip(4)).expect("room");
        let _e = limits.acquire(ip(5)).expect("room");
        let _f = limits.acquire(ip(6)).expect("displaces d");
        drop(b);
        assert_eq!(limits.held(), 3);
    }
}
