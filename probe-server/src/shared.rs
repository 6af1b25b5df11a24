//! State shared by the server's tasks: the sans-IO core behind a mutex, the clock, the RNG.

use probe_proto::msg::IceOffer;
use probe_proto::session::Core;
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::{Mutex, MutexGuard, RwLock};
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
        }
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
pub struct ConnLimits {
    total: usize,
    per_source: usize,
    held: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

pub struct ConnSlot {
    limits: std::sync::Arc<ConnLimits>,
    key: std::net::IpAddr,
}

impl ConnLimits {
    pub fn new(total: usize, per_source: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            total: total.max(1),
            per_source: per_source.max(1),
            held: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or None at either cap.
    pub fn acquire(self: &std::sync::Arc<Self>, ip: std::net::IpAddr) -> Option<ConnSlot> {
        let key = probe_proto::ratelimit::source_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = held.values().sum();
        let mine = held.get(&key).copied().unwrap_or(0);
        if total >= self.total || mine >= self.per_source {
            return None;
        }
        held.insert(key, mine + 1);
        Some(ConnSlot {
            limits: self.clone(),
            key,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut held = self.limits.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Shared {
    /// Whether the session a control channel opened is still alive (not expired).
    pub fn session_alive(&self, id: u64) -> bool {
        self.core().counters(id).is_some()
    }
}
