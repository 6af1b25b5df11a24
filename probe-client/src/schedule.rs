//! Media-shaped sending schedules.

use crate::cli::{ProbeArgs, ProfileArg};
use probe_proto::msg::Profile;
use std::time::Duration;

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
    pub fn from_args(a: &ProbeArgs) -> Self {
        let (profile, tick_ms, mut burst) = match a.profile {
            // Opus at 20 ms frames: ~160 bytes with RTP and SRTP overhead.
            ProfileArg::Audio => (Profile::Audio, 20.0, vec![160]),
            // ~1.5 Mbit/s at 30 frames/s: 6250 bytes a frame in 1200-byte packets.
            ProfileArg::Video => (
                Profile::Video,
                1000.0 / 30.0,
                vec![1200, 1200, 1200, 1200, 1200, 250],
            ),
        };
        if let Some(size) = a.size {
            burst.iter_mut().for_each(|s| *s = size.into());
        }
        Self {
            profile,
            tick: Duration::from_secs_f64(a.interval.unwrap_or(tick_ms) / 1000.0),
            burst,
            duration: Duration::from_secs_f64(a.duration),
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
