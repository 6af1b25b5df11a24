//! Media-shaped sending schedules: how often the client sends and in what sizes.

use crate::msg::Profile;
use std::time::Duration;

/// When and how much one transport's echo phase sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub profile: Profile,
    /// Time between bursts.
    pub tick: Duration,
    /// Packet sizes of one burst.
    pub burst: Vec<usize>,
    pub duration: Duration,
}

impl Schedule {
    /// The profile's shape, with the user's overrides: `interval_ms` between bursts, `size`
    /// bytes for every packet, `duration_s` seconds of sending.
    pub fn new(
        profile: Profile,
        interval_ms: Option<f64>,
        size: Option<u16>,
        duration_s: f64,
    ) -> Self {
        let (tick_ms, mut burst) = match profile {
            // Opus at 20 ms frames: ~160 bytes with RTP and SRTP overhead.
            Profile::Audio => (20.0, vec![160]),
            // ~1.5 Mbit/s at 30 frames/s: 6250 bytes a frame in 1200-byte packets.
            Profile::Video => (1000.0 / 30.0, vec![1200, 1200, 1200, 1200, 1200, 250]),
        };
        if let Some(size) = size {
            burst.iter_mut().for_each(|s| *s = size.into());
        }
        Self {
            profile,
            tick: Duration::from_secs_f64(interval_ms.unwrap_or(tick_ms) / 1000.0),
            burst,
            duration: Duration::from_secs_f64(duration_s),
        }
    }

    /// The average gap between packets, which the server checks against its minimum interval.
    pub fn mean_interval_us(&self) -> u32 {
        (self.tick.as_micros() as usize / self.burst.len().max(1)) as u32
    }

    pub fn max_size(&self) -> u16 {
        self.burst.iter().copied().max().unwrap_or(160) as u16
    }
}
