//! Per-site clocks for the simulator: madsim's clock is the global truth; each site sees it
//! through an offset (skew) and a rate error (drift) that the world can change while it runs.

use replication::node::Clock;
use replication::types::Time;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Time elapsed since this was made, on the runtime's clock. Inside madsim's runtime it reads
/// the runtime's time handle, taken once: `Instant::now()` goes through madsim's
/// `clock_gettime` override, which looks the runtime up and clones its handle on every read,
/// and the clock is read for every message a node handles and every line the trace records.
#[derive(Clone)]
pub struct Elapsed {
    start: tokio::time::Instant,
    /// The runtime's time handle and its reading at the start, when made inside the runtime.
    #[cfg(madsim)]
    runtime: Option<(madsim::time::TimeHandle, Duration)>,
}

impl Elapsed {
    /// Counting from now.
    pub fn start() -> Self {
        Elapsed {
            start: tokio::time::Instant::now(),
            #[cfg(madsim)]
            runtime: madsim::time::TimeHandle::try_current().map(|time| {
                let epoch = time.elapsed();
                (time, epoch)
            }),
        }
    }

    /// How long since [`Elapsed::start`].
    pub fn elapsed(&self) -> Duration {
        #[cfg(madsim)]
        if let Some((time, epoch)) = &self.runtime {
            return time.elapsed() - *epoch;
        }
        self.start.elapsed()
    }
}

impl std::fmt::Debug for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elapsed")
            .field("ms", &self.elapsed().as_millis())
            .finish()
    }
}

/// A clock that runs `drift_ppm` parts per million fast (or slow, if negative) and is off by
/// `skew_ms`. Never goes below zero.
#[derive(Debug)]
pub struct SkewedClock {
    base: Elapsed,
    skew_ms: AtomicI64,
    drift_ppm: AtomicI64,
}

impl SkewedClock {
    /// A clock that agrees with the simulation's.
    pub fn new() -> Self {
        SkewedClock {
            base: Elapsed::start(),
            skew_ms: AtomicI64::new(0),
            drift_ppm: AtomicI64::new(0),
        }
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

impl Default for SkewedClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> Time {
        let true_ms = self.base.elapsed().as_millis() as i64;
        let drift = true_ms.saturating_mul(self.drift_ppm.load(Ordering::Relaxed)) / 1_000_000;
        let seen = true_ms + drift + self.skew_ms.load(Ordering::Relaxed);
        Time(seen.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(madsim)]
    #[madsim::test]
    async fn elapsed_and_skewed_time_follow_the_simulated_clock() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let since = Elapsed::start();
        let clock = SkewedClock::new();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(since.elapsed().as_millis(), 1500);
        assert_eq!(clock.now().ms(), 1500);
        clock.set_skew_ms(-2000);
        assert_eq!(clock.now().ms(), 0, "never below zero");
        clock.set_skew_ms(40);
        clock.set_drift_ppm(1000);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(clock.now().ms(), 2000 + 2 + 40);
    }

    #[test]
    fn elapsed_outside_a_simulation_reads_the_real_clock() {
        let since = Elapsed::start();
        std::thread::sleep(Duration::from_millis(5));
        assert!(since.elapsed() >= Duration::from_millis(5));
    }
}
