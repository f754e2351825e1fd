//! The failover benchmark: how long a group goes without a master when its master dies (crash:
//! its connections break at once) or goes silent (pause: its connections stay open and only the
//! heartbeat timeout can tell). One simulated group per seed, default timeouts, a steady load;
//! the figure is simulated time from the fault to the first `BecameMaster` of another site.
//! `repsim failover` prints the distribution over a range of seeds.

use madsim::runtime::Runtime;
use sim::replication::node::NodeEvent;
use sim::replication::site::Event;
use sim::replication::types::SiteAddr;
use sim::world::World;
use std::time::Duration;

/// How the master is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Killed: its peers see their connections to it break.
    Crash,
    /// Frozen: connections stay open, nothing more comes through them.
    Pause,
}

impl Loss {
    /// Parses `crash` or `pause`.
    pub fn parse(text: &str) -> Option<Loss> {
        match text {
            "crash" => Some(Loss::Crash),
            "pause" => Some(Loss::Pause),
            _ => None,
        }
    }
}

/// One failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    /// The seed.
    pub seed: u64,
    /// Simulated milliseconds from the fault to a new master; none if none came within the
    /// run's limit.
    pub ms: Option<u64>,
    /// Elections that ended without a master on the way (split votes, refused pre-votes).
    pub failed_elections: u64,
    /// The trace from the fault to the new master.
    pub trace: Vec<String>,
}

/// When the master is lost, in simulated milliseconds from the start (the group has settled).
const FAULT_AT_MS: u64 = 5_000;

/// How long to wait for a new master before giving up on this seed.
const LIMIT_MS: u64 = 30_000;

/// Measures one failover of a `sites`-site group with `seed`.
pub fn measure(sites: usize, loss: Loss, seed: u64) -> Failover {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let mut world = World::start(sites, seed, |_, _| {});
        let Some(old) = world
            .wait_for_master(Duration::from_millis(FAULT_AT_MS))
            .await
        else {
            return Failover {
                seed,
                ms: None,
                failed_elections: 0,
                trace: world.trace(),
            };
        };
        let load = world.start_load(20);
        let now = world.now_ms();
        tokio::time::sleep(Duration::from_millis(FAULT_AT_MS.saturating_sub(now))).await;
        let fault_ms = world.now_ms();
        match loss {
            Loss::Crash => world.crash(&old),
            Loss::Pause => world.pause(&old),
        }
        let mut found = None;
        while found.is_none() && world.now_ms() < fault_ms + LIMIT_MS {
            tokio::time::sleep(Duration::from_millis(1)).await;
            found = new_master_since(&world.events(), &old, fault_ms);
        }
        load.stop().await;
        let failed_elections = world
            .events()
            .iter()
            .filter(|e| e.ms >= fault_ms && found.is_none_or(|at| e.ms <= at))
            .filter(|e| matches!(e.event, NodeEvent::Site(Event::ElectionFailed { .. })))
            .count() as u64;
        let end = found.unwrap_or(u64::MAX);
        let trace = world
            .trace()
            .into_iter()
            .filter(|line| {
                let ms = line.split(' ').next().and_then(|t| t.parse::<u64>().ok());
                ms.is_some_and(|ms| ms >= fault_ms && ms <= end)
            })
            .collect();
        Failover {
            seed,
            ms: found.map(|at| at - fault_ms),
            failed_elections,
            trace,
        }
    })
}

/// When a site other than `old` first became master at or after `since`.
fn new_master_since(events: &[sim::check::Observed], old: &SiteAddr, since: u64) -> Option<u64> {
    events
        .iter()
        .filter(|e| e.ms >= since && e.site != *old)
        .find(|e| matches!(e.event, NodeEvent::Site(Event::BecameMaster { .. })))
        .map(|e| e.ms)
}

/// The `p`th percentile (0 to 100) of sorted values, nearest rank.
pub fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&v, 50), Some(100));
        assert_eq!(percentile(&v, 99), Some(198));
        assert_eq!(percentile(&v, 100), Some(200));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn a_crashed_master_is_replaced_and_the_time_is_measured_from_the_crash() {
        let f = measure(3, Loss::Crash, 1);
        let ms = f.ms.expect("a new master");
        // No faster than a message round trip, no slower than the heartbeat timeout plus two
        // election rounds with their jitter (default timeouts).
        assert!((1..=6_000).contains(&ms), "{f:?}");
        assert_eq!(measure(3, Loss::Crash, 1), f, "deterministic");
    }
}
