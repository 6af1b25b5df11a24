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
