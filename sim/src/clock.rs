//! Per-site clocks for the simulator: madsim's clock is the global truth; each site sees it
//! through an offset (skew) and a rate error (drift) that the world can change while it runs.

use replication::node::{Clock, MonotonicClock};
use replication::types::Time;
use std::sync::atomic::{AtomicI64, Ordering};

/// A clock that runs `drift_ppm` parts per million fast (or slow, if negative) and is off by
/// `skew_ms`. Never goes below zero.
#[derive(Debug, Default)]
pub struct SkewedClock {
    base: MonotonicClock,
    skew_ms: AtomicI64,
    drift_ppm: AtomicI64,
}

impl SkewedClock {
    /// A clock that agrees with the simulation's.
    pub fn new() -> Self {
        SkewedClock::default()
    }

    /// Sets the offset.
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// Sets the rate error.
    pub fn set_drift_ppm(&self, drift_ppm: i64) {
        self.drift_ppm.store(drift_ppm, Ordering::Relaxed);
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> Time {
        let true_ms = self.base.now().ms() as i64;
        let drift = true_ms.saturating_mul(self.drift_ppm.load(Ordering::Relaxed)) / 1_000_000;
        let seen = true_ms + drift + self.skew_ms.load(Ordering::Relaxed);
        Time(seen.max(0) as u64)
    }
}
