//! What the engine promises about time, held on every build: a crashed master is replaced within
//! 200 ms and a silent one within 2 s (issue 13's bounds, at p99), and in one round even when
//! a client missed the silent master's last heartbeat, split votes stay rare, the best-placed
//! survivor of a group with priorities is the one that wins, in one round, a more advanced log
//! wins over a higher priority (in one round too), a new group elects its best-placed site soon
//! even when another stands first, a site joins within half a second reporting only the clean
//! sequence, a restarted client is back within 150 ms without disturbing the others, and
//! messages lost on live connections cost a commit a round trip, not a timeout. Simulated time
//! does not jitter with the machine, so these bounds are exact for a given build, not flaky; a
//! change that slows an election or a join by a timeout shows here even when every safety check
//! still holds.
//!
//! The mutation gate runs these too (see `.cargo/mutants.toml`).
#![cfg(madsim)]

use scenarios::failover::{
    measure, measure_catch_up, measure_joins, measure_restart, percentile, Loss,
};

/// Seeds per group size and kind of loss: enough that a p99 is the worst of them.
const SEEDS: u64 = 20;

fn p99_and_failed(sites: usize, loss: Loss) -> (u64, u64) {
    let runs: Vec<_> = (1..=SEEDS).map(|seed| measure(sites, loss, seed)).collect();
    let mut ms: Vec<u64> = runs
        .iter()
        .map(|r| {
            r.ms.unwrap_or_else(|| {
                panic!("{sites} sites, {loss:?}: no new master, seed {}", r.seed)
            })
        })
        .collect();
    ms.sort_unstable();
    let failed = runs.iter().filter(|r| r.failed_elections > 0).count() as u64;
    (percentile(&ms, 99).expect("seeds"), failed)
}

#[test]
fn a_lost_master_is_replaced_within_the_promised_bounds_in_one_round_as_a_rule() {
    for sites in [3, 5] {
        for (loss, bound_ms) in [(Loss::Crash, 200), (Loss::Pause, 2_000)] {
            let (p99, failed) = p99_and_failed(sites, loss);
            assert!(
                p99 <= bound_ms,
                "{sites} sites, master {loss:?}: p99 {p99} ms, above {bound_ms} ms"
            );
            // Split votes and refused pre-votes cost a round each: at most one seed in ten.
            assert!(
                failed * 10 <= SEEDS,
                "{sites} sites, master {loss:?}: an election failed on the way in {failed} of \
                 {SEEDS} seeds"
            );
        }
    }
}

#[test]
fn a_site_joins_within_half_a_second_reporting_only_the_clean_sequence() {
    for seed in 1..=SEEDS {
        for join in measure_joins(seed) {
            let how = if join.via_master {
                "through the master"
            } else {
                "through a client"
            };
            let ms = join
                .ms
                .unwrap_or_else(|| panic!("seed {seed}: the join {how} never finished"));
            assert!(ms <= 500, "seed {seed}: the join {how} took {ms} ms");
            assert!(
                join.noise.is_empty(),
                "seed {seed}: the join {how} also reported {:?}",
                join.noise
            );
        }
    }
}

#[test]
fn the_best_placed_survivor_wins_a_failover_in_one_round() {
    use scenarios::failover::{measure_ranked, Formed, RANKED_PRIORITIES};
    let groups = RANKED_PRIORITIES
        .iter()
        .map(|p| (*p, Formed::Joined))
        .chain([([1; 5], Formed::Legacy)]);
    for (priorities, formed) in groups {
        for seed in 1..=SEEDS {
            let r = measure_ranked(&priorities, formed, seed);
            let (winner, ms) = r
                .winner
                .clone()
                .unwrap_or_else(|| panic!("{priorities:?} {formed:?}, seed {seed}: no new master"));
            assert_eq!(
                winner, r.expected,
                "{priorities:?} {formed:?}, seed {seed}: {r:?}"
            );
            assert_eq!(
                r.failed_elections, 0,
                "{priorities:?} {formed:?}, seed {seed}: {r:?}"
            );
            assert!(ms <= 200, "{priorities:?} {formed:?}, seed {seed}: {ms} ms");
        }
    }
}

#[test]
fn the_more_advanced_log_wins_over_a_higher_priority_in_one_round() {
    use scenarios::failover::{measure_advanced, ADVANCED_PRIORITIES};
    for priorities in ADVANCED_PRIORITIES {
        for seed in 1..=SEEDS {
            let r = measure_advanced(priorities, seed);
            let (winner, ms) = r
                .winner
                .clone()
                .unwrap_or_else(|| panic!("{priorities:?}, seed {seed}: no new master: {r:?}"));
            assert_eq!(winner, r.expected, "{priorities:?}, seed {seed}: {r:?}");
            assert_eq!(r.failed_elections, 0, "{priorities:?}, seed {seed}: {r:?}");
            // The site left behind hears of the crash only at its heartbeat timeout (about
            // 600 ms here); a round that waited out the election's timeout takes 2 s.
            assert!(ms <= 800, "{priorities:?}, seed {seed}: {ms} ms");
        }
    }
}

#[test]
fn messages_lost_on_live_connections_cost_a_round_trip_not_a_timeout() {
    // 2% of frames dropped: on 20 seeds, about 200 lost messages.
    const DROP_PER_MILLE: u32 = 20;
    let mut latencies = Vec::new();
    let (mut failed, mut dropped) = (0, 0);
    for seed in 1..=SEEDS {
        let r = measure_catch_up(DROP_PER_MILLE, seed);
        assert!(!r.latencies.is_empty(), "seed {seed}: no master");
        latencies.extend(r.latencies);
        failed += r.failed;
        dropped += r.dropped;
    }
    latencies.sort_unstable();
    let p99 = percentile(&latencies, 99).expect("commits");
    assert!(
        dropped >= 100,
        "only {dropped} frames dropped: the fault did not happen"
    );
    // A lost last ack, never repeated, fails its commit after the ack timeout.
    assert_eq!(failed, 0, "commits failed though both clients held them");
    // A gap asked for only on the next heartbeat (200 ms) or a request's retry (300 ms) puts
    // the p99 near 300 ms; asked for at once, a lost record costs a round trip or two.
    assert!(
        p99 <= 100,
        "p99 commit latency {p99} ms with {dropped} frames dropped"
    );
}

#[test]
fn a_restarted_client_is_back_within_150_ms_and_disturbs_nobody() {
    let mut ms = Vec::new();
    for seed in 1..=SEEDS {
        let r = measure_restart(seed);
        ms.push(r.ms.unwrap_or_else(|| panic!("seed {seed}: never back in sync")));
        // The other sites' connections to the client broke and came back: no evidence against
        // the master, so no site reports it lost, votes or changes its role.
        assert!(r.disturbed.is_empty(), "seed {seed}: {:?}", r.disturbed);
    }
    ms.sort_unstable();
    let worst = *ms.last().expect("seeds");
    // Greeted by its master as soon as it connects, and asking for each next batch as soon as
    // one arrives, a client some 60 records behind is back in about 100 ms. Waiting for the
    // next heartbeat, for the master or for each batch, takes 200 to 400 ms.
    assert!(worst <= 150, "restart to StartupDone: {ms:?} ms");
}

#[test]
fn a_new_group_elects_its_best_placed_site_though_another_stands_first() {
    use scenarios::failover::{measure_first_election, SLOW_ELECTION_TIMEOUT_MS};
    // The bound below tells a prompt stand from the best placed's own slow timer.
    const _: () = assert!(SLOW_ELECTION_TIMEOUT_MS > 2_000);
    // The best placed first, last, in the middle and tied, and beside priority-0 sites.
    let layouts = [
        [100, 50, 80, 80, 10],
        [10, 20, 30, 40, 100],
        [100, 100, 100, 100, 100],
        [60, 60, 100, 0, 0],
    ];
    for priorities in layouts {
        for seed in 1..=SEEDS {
            let r = measure_first_election(&priorities, seed);
            let (winner, ms) = r
                .winner
                .clone()
                .unwrap_or_else(|| panic!("{priorities:?}, seed {seed}: no master: {r:?}"));
            assert_eq!(winner, r.expected, "{priorities:?}, seed {seed}: {r:?}");
            // The other sites' timers fire within 1.5 s; the best placed refuses the first to
            // stand and stands itself within 125 ms, and once more if two stood at once. (1.0
            // to 1.5 s measured.) Waiting for its own timer would take 5 s.
            assert!(
                ms <= 2_000,
                "{priorities:?}, seed {seed}: the first master after {ms} ms: {r:?}"
            );
        }
    }
}

#[test]
fn a_silent_master_is_replaced_in_one_round_when_a_client_missed_its_last_heartbeat() {
    for seed in 1..=SEEDS {
        let r = scenarios::failover::measure_pause_with_a_lagging_client(seed);
        let (winner, ms) = r
            .winner
            .clone()
            .unwrap_or_else(|| panic!("seed {seed}: no new master: {r:?}"));
        assert_eq!(winner, r.expected, "seed {seed}: {r:?}");
        assert_eq!(r.failed_elections, 0, "seed {seed}: {r:?}");
        // The heartbeat timeout (1 s) from the last heartbeat each client got, and a round
        // (843 to 1,040 ms measured); a refused first candidate costs its election's timeout.
        assert!(
            ms <= 1_200,
            "seed {seed}: a new master after {ms} ms: {r:?}"
        );
    }
}
