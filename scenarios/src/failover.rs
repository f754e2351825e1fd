//! The failover benchmark: how long a group goes without a master when its master dies (crash:
//! its connections break at once) or goes silent (pause: its connections stay open and only the
//! heartbeat timeout can tell). One simulated group per seed, default timeouts, a steady load;
//! the figure is simulated time from the fault to the first `BecameMaster` of another site.
//! `repsim failover` prints the distribution over a range of seeds.
//!
//! The join benchmark: how long a new site takes from its start to `StartupDone`, joining
//! through the master and through a client, and what else it reported on the way (a clean join
//! reports `BecameClient`, `NewMaster`, `StartupDone` and nothing more). `repsim join`.

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
        let (found, failed_elections) = await_new_master(&world, &old, fault_ms).await;
        let found = found.map(|(_, at)| at);
        load.stop().await;
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

/// Waits, up to the run's limit, for a site other than `old` to become master at or after
/// `since`: which site and when (simulated milliseconds from the start), and how many elections
/// failed on the way.
async fn await_new_master(
    world: &World,
    old: &SiteAddr,
    since: u64,
) -> (Option<(SiteAddr, u64)>, u64) {
    let found = first_event(world, since, |e| {
        e.ms >= since
            && e.site != *old
            && matches!(e.event, NodeEvent::Site(Event::BecameMaster { .. }))
    })
    .await
    .map(|e| (e.site, e.ms));
    let end = found.as_ref().map_or(u64::MAX, |(_, at)| *at);
    let failed = world
        .events()
        .iter()
        .filter(|e| e.ms >= since && e.ms <= end)
        .filter(|e| matches!(e.event, NodeEvent::Site(Event::ElectionFailed { .. })))
        .count() as u64;
    (found, failed)
}

/// The first event `wanted` picks, looked for every simulated millisecond from `since` up to
/// the run's limit.
async fn first_event(
    world: &World,
    since: u64,
    wanted: impl Fn(&sim::check::Observed) -> bool,
) -> Option<sim::check::Observed> {
    while world.now_ms() < since + LIMIT_MS {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if let Some(e) = world.events().into_iter().find(|e| wanted(e)) {
            return Some(e);
        }
    }
    None
}

/// A group made as an operator makes one: the first site creates it, the others join through
/// it one at a time, each with its priority (`priorities`, creator first).
async fn joined_group(priorities: &[u32], seed: u64) -> (World, Vec<SiteAddr>) {
    use sim::replication::site::Config;
    use sim::world::{site_addr, GROUP_SECRET};
    let mut world = World::new();
    let addrs: Vec<SiteAddr> = (1..=priorities.len()).map(site_addr).collect();
    for (i, (addr, &priority)) in addrs.iter().zip(priorities).enumerate() {
        let mut cfg = if i == 0 {
            Config::group_creator(addr.clone())
        } else {
            Config::joining(addr.clone(), addrs[0].clone())
        };
        cfg.priority = priority;
        let site_seed = seed.wrapping_mul(31).wrapping_add(i as u64);
        world.add_site(i, cfg, GROUP_SECRET, site_seed);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (world, addrs)
}

/// One site's join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// The seed.
    pub seed: u64,
    /// Through the master (false: through a client).
    pub via_master: bool,
    /// Simulated milliseconds from the site's start to its `StartupDone`, if it came.
    pub ms: Option<u64>,
    /// What it reported on the way besides the clean sequence (`JoinFailure`,
    /// `MasterFailure`, a second `NewMaster`, ...), by name.
    pub noise: Vec<String>,
}

/// When the joiners start: the creator has long been master.
const JOIN_AT_MS: [u64; 2] = [2_000, 4_000];

/// Measures two joins with `seed`: B through the creator A (the master), then C through B.
pub fn measure_joins(seed: u64) -> [Join; 2] {
    use sim::replication::site::Config;
    use sim::world::{site_addr, GROUP_SECRET};
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let mut world = World::new();
        let (a, b, c) = (site_addr(1), site_addr(2), site_addr(3));
        world.add_site(0, Config::group_creator(a.clone()), GROUP_SECRET, seed);
        let joins = [(1, b, a.clone(), true), (2, c, site_addr(2), false)];
        let mut out = Vec::new();
        for (index, site, helper, via_master) in joins {
            let at = JOIN_AT_MS[index - 1];
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(world.now_ms()))).await;
            let started = world.now_ms();
            let cfg = Config::joining(site.clone(), helper);
            world.add_site(index, cfg, GROUP_SECRET, seed.wrapping_add(index as u64));
            let done = first_event(&world, started, |e| {
                e.site == site && matches!(e.event, NodeEvent::Site(Event::StartupDone { .. }))
            })
            .await
            .map(|e| e.ms);
            let clean = ["BecameClient", "NewMaster", "StartupDone"];
            let mut noise: Vec<String> = world
                .events()
                .iter()
                .filter(|e| e.site == site && matches!(e.event, NodeEvent::Site(_)))
                .map(|e| crate::run::event_name(&e.event))
                .collect();
            for want in clean {
                if let Some(i) = noise.iter().position(|n| n == want) {
                    noise.remove(i);
                }
            }
            out.push(Join {
                seed,
                via_master,
                ms: done.map(|at| at - started),
                noise,
            });
        }
        [out[0].clone(), out[1].clone()]
    })
}

/// One failover of a group with priorities: who won, and who should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranked {
    /// The seed.
    pub seed: u64,
    /// The first site to become master after the crash, and when (simulated milliseconds
    /// after it); none if none did within the run's limit.
    pub winner: Option<(SiteAddr, u64)>,
    /// The best-placed survivor: every log is the same, so the highest priority, then the
    /// lower address.
    pub expected: SiteAddr,
    /// Elections that ended without a master on the way.
    pub failed_elections: u64,
}

/// Priorities for [`measure_ranked`] in a group with a membership database, creator first: two
/// survivors tie at the top (the lower address should win); and the best survivor has the
/// highest address, below sites of lower priority (ranking by address would put it last).
pub const RANKED_PRIORITIES: [[u32; 5]; 2] = [[100, 50, 80, 80, 10], [100, 10, 20, 30, 80]];

/// How the ranked group is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formed {
    /// A creator, then each member joining through it: every site knows every priority.
    Joined,
    /// A static list of sites speaking the legacy protocol (no membership database): nobody
    /// knows the others' priorities before an election, so a lost master's survivors rank
    /// themselves by address (give them all the same priority).
    Legacy,
}

/// Measures one failover of a group whose sites have `priorities`: the master (in a joined
/// group the creator) crashes once the group is whole and quiet. As in Berkeley DB the
/// best-placed survivor should win (every log is the same, so the highest priority, then the
/// lower address), and in one round: it stands first, and the others grant it and listen.
pub fn measure_ranked(priorities: &[u32], formed: Formed, seed: u64) -> Ranked {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let (mut world, addrs) = match formed {
            Formed::Joined => joined_group(priorities, seed).await,
            Formed::Legacy => {
                let world = World::start(priorities.len(), seed, |i, cfg| {
                    cfg.priority = priorities[i];
                    cfg.protocol_version = 1;
                });
                let addrs = world.addrs();
                (world, addrs)
            }
        };
        let load = world.start_load(20);
        tokio::time::sleep(Duration::from_millis(
            FAULT_AT_MS.saturating_sub(world.now_ms()),
        ))
        .await;
        load.stop().await;
        // Quiet: every survivor holds the same log when the master goes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(old) = world.master().await else {
            return Ranked {
                seed,
                winner: None,
                expected: addrs[0].clone(),
                failed_elections: 0,
            };
        };
        let fault_ms = world.now_ms();
        world.crash(&old);
        let (found, failed_elections) = await_new_master(&world, &old, fault_ms).await;
        // Highest priority, then the lowest address (the first index among equals).
        let best = (0..priorities.len())
            .filter(|&i| addrs[i] != old)
            .max_by_key(|&i| (priorities[i], std::cmp::Reverse(i)))
            .expect("survivors");
        Ranked {
            seed,
            winner: found.map(|(site, at)| (site, at - fault_ms)),
            expected: addrs[best].clone(),
            failed_elections,
        }
    })
}

/// Measures a silent master's replacement when the clients' timers run a heartbeat apart: a
/// static group A (priority 200), B (50) and C (100), quiet once A is master and every log is
/// alike; A's messages to C are held up (a one-way clog) from half a heartbeat interval before
/// A goes silent (a pause), so in about half the seeds C misses A's last heartbeat. C, best
/// placed among the survivors, then declares A lost a heartbeat interval before B does and
/// stands; B, within the last interval of its timeout, no longer counts as hearing A (the
/// grace in `decide_vote`) and grants C. Refused, C would wait out its election's timeout and
/// the group would go two seconds or more without a master.
pub fn measure_pause_with_a_lagging_client(seed: u64) -> Ranked {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let priorities = [200, 50, 100];
        let mut world = World::start(3, seed, |i, cfg| cfg.priority = priorities[i]);
        let addrs = world.addrs();
        let (a, c) = (addrs[0].clone(), addrs[2].clone());
        let load = world.start_load(20);
        tokio::time::sleep(Duration::from_millis(
            FAULT_AT_MS.saturating_sub(world.now_ms()),
        ))
        .await;
        load.stop().await;
        // Quiet: every log alike, so rank alone decides.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let not_a = |winner: Option<(SiteAddr, u64)>| Ranked {
            seed,
            winner,
            expected: c.clone(),
            failed_elections: 0,
        };
        if world.master().await.as_ref() != Some(&a) {
            return not_a(None);
        }
        let interval = sim::replication::site::Timeouts::default().heartbeat_interval_ms;
        world.clog(&a, &c);
        tokio::time::sleep(Duration::from_millis(interval / 2)).await;
        let fault_ms = world.now_ms();
        world.pause(&a);
        let (found, failed_elections) = await_new_master(&world, &a, fault_ms).await;
        Ranked {
            failed_elections,
            ..not_a(found.map(|(site, at)| (site, at - fault_ms)))
        }
    })
}

/// Measures a group's first election: sites with `priorities` (a static list, logs all empty)
/// start together, and the first `BecameMaster` is timed from the start. The best-placed site
/// (the highest priority, then the lower address) has a slow election timer
/// ([`SLOW_ELECTION_TIMEOUT_MS`]), so another site always stands first. As in Berkeley DB the
/// best placed should still win, and soon: it refuses the first candidate and stands itself
/// a few tens of milliseconds later (`stand_soon`), and the first candidate steps aside for it.
/// If two sites stood at once and split the votes, the better placed learns from the refusals
/// that its round cannot be won and stands again at once, rather than wait out its timer.
pub fn measure_first_election(priorities: &[u32], seed: u64) -> Ranked {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let best = (0..priorities.len())
            .max_by_key(|&i| (priorities[i], std::cmp::Reverse(i)))
            .expect("sites");
        let world = World::start(priorities.len(), seed, |i, cfg| {
            cfg.priority = priorities[i];
            if i == best {
                cfg.timeouts.election_timeout_ms = SLOW_ELECTION_TIMEOUT_MS;
            }
        });
        let addrs = world.addrs();
        let nobody = SiteAddr::new("");
        let (found, failed_elections) = await_new_master(&world, &nobody, 0).await;
        Ranked {
            seed,
            winner: found,
            expected: addrs[best].clone(),
            failed_elections,
        }
    })
}

/// The best-placed site's election timeout in [`measure_first_election`]: well past every other
/// site's (1 s and up to 0.5 s of jitter by default).
pub const SLOW_ELECTION_TIMEOUT_MS: u64 = 5_000;

/// Priorities for [`measure_advanced`], creator first: the site left behind (the second) ranks
/// below the creator in the first layout and above every site in the second.
pub const ADVANCED_PRIORITIES: [[u32; 3]; 2] = [[100, 90, 10], [10, 100, 50]];

/// Measures one failover where priority and log disagree: a joined group A (the creator and
/// master), B and C with `priorities` (B above C). Under a steady load, A's messages to B are
/// held up (a one-way clog, shorter than the heartbeat timeout) while C keeps acknowledging,
/// then A crashes: C holds records B never got. As in Berkeley DB the more advanced log wins
/// over the higher priority: C must become master. And in one round: C stands at once (its
/// connection to A broke) but B, hearing nothing of the crash through the clog, refuses it for
/// a master it still counts as alive; at its heartbeat timeout B stands, C refuses it for its
/// shorter log and asks it again, and B grants. (Before C asked again, its round waited out
/// the election's timeout and failed: about 2 s without a master.)
pub fn measure_advanced(priorities: [u32; 3], seed: u64) -> Ranked {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let (mut world, addrs) = joined_group(&priorities, seed).await;
        let load = world.start_load(20);
        tokio::time::sleep(Duration::from_millis(
            FAULT_AT_MS.saturating_sub(world.now_ms()),
        ))
        .await;
        let (a, b, c) = (&addrs[0], &addrs[1], &addrs[2]);
        world.clog(a, b);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fault_ms = world.now_ms();
        world.crash(a);
        load.stop().await;
        let (found, failed_elections) = await_new_master(&world, a, fault_ms).await;
        Ranked {
            seed,
            winner: found.map(|(site, at)| (site, at - fault_ms)),
            expected: c.clone(),
            failed_elections,
        }
    })
}

/// Measures how soon a restarted client is back: a three-site group under a steady load, one
/// client crashed and restarted a second later; simulated milliseconds from the restart to its
/// `StartupDone` (none if it did not come within the run's limit). The master greets every new
/// connection with a heartbeat, so the client learns its master at once instead of at the next
/// heartbeat (up to 200 ms later). Records travel 16 to a message here (`log_batch_records`),
/// so the client, some 60 records behind, asks batch after batch, each as soon as the last
/// arrived rather than on the next heartbeat (the load stops before the restart, so no new
/// record reveals a gap in between). And nobody else is disturbed: the broken connections to a
/// client are no evidence against the master.
pub fn measure_restart(seed: u64) -> Restart {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let mut world = World::start(3, seed, |_, cfg| cfg.log_batch_records = 16);
        let never = Restart {
            ms: None,
            disturbed: Vec::new(),
        };
        let Some(master) = world
            .wait_for_master(Duration::from_millis(FAULT_AT_MS))
            .await
        else {
            return never;
        };
        let load = world.start_load(20);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let Some(client) = world.addrs().into_iter().find(|a| *a != master) else {
            return never;
        };
        let crashed = world.now_ms();
        world.crash(&client);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        // Quiet before the restart: no new record can reveal a gap, so only the client's own
        // requests bring it up to date.
        load.stop().await;
        let restarted = world.now_ms();
        world.restart(&client);
        let done = first_event(&world, restarted, |e| {
            e.ms >= restarted
                && e.site == client
                && matches!(e.event, NodeEvent::Site(Event::StartupDone { .. }))
        })
        .await;
        let end = done.as_ref().map_or(u64::MAX, |e| e.ms);
        let disturbed = world
            .events()
            .into_iter()
            .filter(|e| e.ms >= crashed && e.ms <= end && e.site != client)
            .filter(|e| {
                matches!(
                    e.event,
                    NodeEvent::Site(
                        Event::MasterFailure { .. }
                            | Event::ElectionFailed { .. }
                            | Event::Voted { .. }
                            | Event::BecameMaster { .. }
                            | Event::BecameClient { .. }
                            | Event::NewMaster { .. }
                    )
                )
            })
            .map(|e| (e.site, format!("{:?}", e.event)))
            .collect();
        Restart {
            ms: done.map(|e| e.ms - restarted),
            disturbed,
        }
    })
}

/// One run of [`measure_restart`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    /// Simulated milliseconds from the restart to the client's `StartupDone`; none if it did
    /// not come within the run's limit.
    pub ms: Option<u64>,
    /// What the other sites reported between the crash and that `StartupDone` about masters
    /// and elections (a lost master, a vote, a change of role): nothing, when all is well.
    pub disturbed: Vec<(SiteAddr, String)>,
}

/// One run of the catch-up measurement (see [`measure_catch_up`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUp {
    /// The seed.
    pub seed: u64,
    /// Each successful commit's latency, in simulated milliseconds.
    pub latencies: Vec<u64>,
    /// Commits that did not succeed.
    pub failed: u64,
    /// Frames the connections dropped.
    pub dropped: u64,
}

/// Concurrent writers in the catch-up measurement, and the commits each makes.
const CATCH_UP_WRITERS: usize = 4;
const CATCH_UP_COMMITS: usize = 40;

/// Measures how a group rides out messages lost on live connections: a three-site group under
/// the `all` policy (every commit waits for both clients), four writers committing with short
/// pauses while `drop_per_mille` of the frames are dropped with their connections up (as a
/// sender's full queue drops them). A client that sees a gap asks for the missing records at
/// once, so a lost record costs a commit a round trip or two; one that waited for the next
/// heartbeat or a request's retry would hold every commit behind the gap for up to 200 or
/// 300 ms. And a lost ack is repeated on the next heartbeat: a commit whose last ack was lost
/// would otherwise fail after the ack timeout, though both clients hold it.
pub fn measure_catch_up(drop_per_mille: u32, seed: u64) -> CatchUp {
    use sim::replication::node::Chances;
    use sim::replication::site::AckPolicy;
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let world = World::start(3, seed, |_, cfg| cfg.ack_policy = AckPolicy::All);
        let Some(master) = world
            .wait_for_master(Duration::from_millis(FAULT_AT_MS))
            .await
        else {
            return CatchUp {
                seed,
                latencies: Vec::new(),
                failed: (CATCH_UP_WRITERS * CATCH_UP_COMMITS) as u64,
                dropped: 0,
            };
        };
        // Both clients caught up before the frames start to drop.
        tokio::time::sleep(Duration::from_millis(500)).await;
        world.shuffle(Chances {
            drop: drop_per_mille,
            ..Chances::default()
        });
        let writer = |w: usize| {
            let (world, master) = (&world, &master);
            async move {
                let (mut latencies, mut failed) = (Vec::new(), 0);
                for i in 0..CATCH_UP_COMMITS {
                    let start = world.now_ms();
                    match world.commit(master, &format!("w{w}"), &i.to_string()).await {
                        Ok(_) => latencies.push(world.now_ms() - start),
                        Err(_) => failed += 1,
                    }
                    // A pause of 0 to 10 ms, different for each writer and commit: writers in
                    // step would share every batch, and then no later record reveals a gap.
                    let think = (w * 7 + i * 3) % 11;
                    tokio::time::sleep(Duration::from_millis(think as u64)).await;
                }
                (latencies, failed)
            }
        };
        let runs = tokio::join!(writer(0), writer(1), writer(2), writer(3));
        let dropped = world.frame_chaos().dropped();
        world.shuffle(Chances::default());
        let mut result = CatchUp {
            seed,
            latencies: Vec::new(),
            failed: 0,
            dropped,
        };
        for (latencies, failed) in [runs.0, runs.1, runs.2, runs.3] {
            result.latencies.extend(latencies);
            result.failed += failed;
        }
        result
    })
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
    fn a_join_is_measured_from_the_start_and_a_clean_one_reports_no_noise() {
        let [master, client] = measure_joins(1);
        for join in [&master, &client] {
            let ms = join.ms.expect("joined");
            assert!((1..=1_000).contains(&ms), "{join:?}");
            assert!(join.noise.is_empty(), "{join:?}");
        }
        assert!(master.via_master && !client.via_master);
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
