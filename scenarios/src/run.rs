//! Plays a scenario on the simulated world with one seed: builds the group, merges the scripted
//! steps with the random fault schedule, runs the timeline, checks expectations and every
//! invariant, and packs it all into a [`RunResult`].
//!
//! Steps run one after another in simulated time. A step whose time has passed (because an
//! expectation before it waited) runs at once; an expectation with `within` waits up to that
//! long, one with `for` watches the condition for that long.

use crate::spec::{latency_range, swarm_names, Action, ExpectSpec, Membership, Scenario, Step};
use madsim::runtime::Runtime;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim::check::Violation;
use sim::disk::StorageKind;
use sim::faults::{Fault, FaultMix, Schedule};
use sim::replication::node::{Chances, NodeEvent};
use sim::replication::site::{Config, Event, Reply, Request, RequestError};
use sim::replication::types::SiteAddr;
use sim::result::{RunOutcome, RunResult};
use sim::world::{site_addr, Load, World, GROUP_SECRET};
use std::collections::BTreeMap;
use std::time::Duration;

/// The secret a rogue site holds instead of the group's.
const ROGUE_SECRET: &[u8] = b"not the group secret";

/// The default quiet time when a scenario names none and its faults end: long enough for the
/// liveness bound of the group's timeouts.
fn default_settle(timeouts: &sim::replication::site::Timeouts) -> u64 {
    World::liveness_bound_ms(timeouts)
}

/// One run's full record: the result, the fault schedule it used (for failure files), the
/// site names, and a compact summary for snapshots.
#[derive(Clone, Debug)]
pub struct Played {
    /// The result, as reports and `--json` show it.
    pub result: RunResult,
    /// The random fault schedule laid over the timeline (empty without `[faults]`).
    pub schedule: Schedule,
    /// A short, stable account of the run: roles over time, key events, final positions.
    pub summary: String,
}

/// The group a scenario runs with this seed (a swarm draws it).
#[derive(Clone, Debug)]
pub struct Group {
    /// Site names, in address order.
    pub names: Vec<String>,
    /// Per-site configuration.
    pub configs: Vec<Config>,
    /// Whether each site holds the group secret.
    pub rogue: Vec<bool>,
    /// When each site first starts (None: a step starts it).
    pub start_ms: Vec<Option<u64>>,
    /// The fault window and mix, if any.
    pub faults: Option<(u64, u64, FaultMix)>,
    /// A swarm also runs a steady load through its fault window.
    pub swarm_load: bool,
    /// What the sites store their data on.
    pub storage: StorageKind,
}

/// Builds the group for `seed` (a swarm draws it).
pub fn group_for(scenario: &Scenario, seed: u64) -> Group {
    let g = match (&scenario.group, &scenario.swarm) {
        (Some(g), _) => g,
        (None, Some(swarm)) => return draw_swarm(scenario, swarm, seed),
        (None, None) => unreachable!("a validated scenario has a group or a swarm"),
    };
    let (names, membership, policy, version, strict, timeouts, storage) = (
        g.sites.clone(),
        g.membership,
        g.ack_policy,
        g.protocol_version,
        g.two_site_strict,
        g.timeouts.clone(),
        g.storage,
    );
    let faults = scenario
        .faults
        .as_ref()
        .map(|f| (f.from.0, f.until.0, f.mix.clone().unwrap_or_default()));
    let swarm_load = false;
    let addrs: Vec<SiteAddr> = (1..=names.len()).map(site_addr).collect();
    let first_creator = names
        .iter()
        .position(|n| scenario.sites.get(n).and_then(|s| s.creator) == Some(true))
        .unwrap_or(0);
    let mut configs = Vec::new();
    let mut rogue = Vec::new();
    let mut start_ms = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let spec = scenario.sites.get(name).cloned().unwrap_or_default();
        let addr = addrs[i].clone();
        let mut cfg = match membership {
            Membership::Static => Config::new(addr, addrs.clone()),
            Membership::Database => {
                let creator = spec.creator.unwrap_or(i == first_creator);
                let helper = match &spec.helper {
                    Some(h) => Some(addrs[index_of(&names, h)].clone()),
                    None if creator => None,
                    None => Some(addrs[first_creator].clone()),
                };
                Config {
                    group_creator: creator,
                    helper,
                    ..Config::new(addr, [])
                }
            }
        };
        cfg.ack_policy = policy;
        cfg.protocol_version = spec.version.unwrap_or(version);
        cfg.two_site_strict = strict;
        cfg.timeouts = timeouts.clone();
        if let Some(p) = spec.priority {
            cfg.priority = p;
        }
        configs.push(cfg);
        rogue.push(spec.rogue);
        start_ms.push(match spec.start.as_deref() {
            Some("never") => None,
            Some(t) => Some(crate::spec::Millis::parse(t).map_or(0, |m| m.0)),
            None => Some(0),
        });
    }
    Group {
        names,
        configs,
        rogue,
        start_ms,
        faults,
        swarm_load,
        storage,
    }
}

/// The swarm's group for `seed`: size, policy, storage, per-site priorities, timers and the
/// fault mix, all drawn from one stream apart from the fault schedule's (so the two do not
/// correlate). Each draw comes after the ones older versions made, so what they drew stays.
fn draw_swarm(scenario: &Scenario, swarm: &crate::spec::SwarmSpec, seed: u64) -> Group {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ca1_ab1e_0000_0000);
    let size = swarm.sizes[pick(&mut rng, swarm.sizes.len())];
    let policy = swarm.policies[pick(&mut rng, swarm.policies.len())];
    // Each weight from 0 up to its bound (the scenario's [faults] mix, or 3).
    let bounds = scenario
        .faults
        .as_ref()
        .and_then(|f| f.mix.clone())
        .unwrap_or(FaultMix {
            crash: 3,
            partition: 3,
            network: 3,
            skew: 3,
            disk: 3,
            power: 3,
            pause: 3,
            links: 3,
            shuffle: 3,
            aimed: 3,
            ..FaultMix::NONE
        });
    let mut mix = FaultMix {
        crash: weight(&mut rng, bounds.crash),
        partition: weight(&mut rng, bounds.partition),
        network: weight(&mut rng, bounds.network),
        skew: weight(&mut rng, bounds.skew),
        disk: weight(&mut rng, bounds.disk),
        ..FaultMix::NONE
    };
    let storage = swarm.storage[pick(&mut rng, swarm.storage.len())];
    if storage == StorageKind::File {
        mix.power = weight(&mut rng, bounds.power);
    }
    mix.pause = weight(&mut rng, bounds.pause);
    mix.links = weight(&mut rng, bounds.links);
    if mix.total() == 0 {
        mix.crash = 1;
    }
    let strict = size != 2 || pick(&mut rng, 2) == 0;
    // Priorities with ties and zeros; at least one site may become master.
    let mut priorities: Vec<u32> = (0..size)
        .map(|_| [0, 50, 100, 100, 200][pick(&mut rng, 5)])
        .collect();
    if priorities.iter().all(|&p| p == 0) {
        priorities[pick(&mut rng, size)] = 100;
    }
    // Timers within sane ranges: a client waits several heartbeats before calling an election.
    let interval = [100, 200, 300][pick(&mut rng, 3)];
    let timeouts = sim::replication::site::Timeouts {
        heartbeat_interval_ms: interval,
        heartbeat_timeout_ms: interval * [4, 5, 8][pick(&mut rng, 3)],
        election_timeout_ms: [500, 1_000, 2_000][pick(&mut rng, 3)],
        election_jitter_ms: [100, 500, 1_000][pick(&mut rng, 3)],
        ack_ms: [500, 1_000, 2_000][pick(&mut rng, 3)],
        ..Default::default()
    };
    mix.switchover = weight(&mut rng, swarm.operations.switchover);
    mix.archive = weight(&mut rng, swarm.operations.archive);
    let membership = swarm.membership[pick(&mut rng, swarm.membership.len())];
    let (from, until) = scenario
        .faults
        .as_ref()
        .map_or((0, 20_000), |f| (f.from.0, f.until.0));
    let names = swarm_names(size);
    let addrs: Vec<SiteAddr> = (1..=size).map(site_addr).collect();
    let mut configs: Vec<Config> = addrs
        .iter()
        .zip(&priorities)
        .map(|(addr, &priority)| Config {
            ack_policy: policy,
            two_site_strict: strict,
            timeouts: timeouts.clone(),
            priority,
            ..Config::new(addr.clone(), addrs.clone())
        })
        .collect();
    let mut start_ms = vec![Some(0); size];
    if membership == Membership::Database {
        // One creator; every other site joins through a helper: the creator, or a site before it
        // in address order that joins itself (and may not have yet). Helpers so lead back to the
        // creator, as an operator would set them; some sites start before the creator does.
        mix.remove = weight(&mut rng, swarm.operations.remove);
        let creator = pick(&mut rng, size);
        // The first master: a priority-0 creator is refused (see the core).
        configs[creator].priority = configs[creator].priority.max(100);
        for (i, cfg) in configs.iter_mut().enumerate() {
            cfg.sites = Vec::new();
            cfg.group_creator = i == creator;
            cfg.helper = (i != creator).then(|| {
                let earlier: Vec<usize> = (0..i).filter(|&j| j != creator).collect();
                if earlier.is_empty() || pick(&mut rng, 2) == 0 {
                    addrs[creator].clone()
                } else {
                    addrs[earlier[pick(&mut rng, earlier.len())]].clone()
                }
            });
            start_ms[i] = Some(if i == creator {
                [0, 0, 1_000, 3_000][pick(&mut rng, 4)]
            } else {
                [0, 0, 500, 2_000, 5_000][pick(&mut rng, 5)]
            });
        }
    }
    mix.shuffle = weight(&mut rng, bounds.shuffle);
    mix.aimed = weight(&mut rng, bounds.aimed);
    if membership == Membership::Database {
        mix.rejoin = weight(&mut rng, swarm.operations.rejoin);
    } else if pick(&mut rng, 3) == 0 {
        // A legacy group part-way through an upgrade: some sites still speak version 1, and the
        // operator upgrades them one by one (the master writes the membership database once
        // every site speaks version 2).
        for cfg in &mut configs {
            if pick(&mut rng, 2) == 0 {
                cfg.protocol_version = 1;
            }
        }
        mix.upgrade = weight(&mut rng, swarm.operations.upgrade);
    }
    // One group in four runs with master leases, so the load's leased reads are served and
    // checked. Clock faults stay out of those runs: a clock that jumps or drifts past the bound
    // breaks what leases promise, which the clock-skew catalog scenarios show on purpose.
    if pick(&mut rng, 4) == 0 {
        for cfg in &mut configs {
            cfg.timeouts.lease_timeout_ms = interval * [3, 5][pick(&mut rng, 2)];
        }
        mix.skew = 0;
    }
    Group {
        names,
        configs,
        rogue: vec![false; size],
        start_ms,
        faults: Some((from, until, mix)),
        swarm_load: true,
        storage,
    }
}

/// A number below `n` from the swarm's stream.
fn pick(rng: &mut ChaCha8Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// A weight from 0 up to `bound`.
fn weight(rng: &mut ChaCha8Rng, bound: u32) -> u32 {
    pick(rng, bound as usize + 1) as u32
}

fn index_of(names: &[String], name: &str) -> usize {
    names
        .iter()
        .position(|n| n == name)
        .expect("validated scenarios name known sites")
}

/// What the timeline holds: a scripted step or a fault of the random schedule.
enum Item<'a> {
    Step(&'a Step),
    Fault(&'a Fault),
}

/// Runs `scenario` with `seed` in a fresh madsim runtime. With `schedule`, that fault schedule
/// replaces the one the seed would draw (replaying or shrinking a failure).
pub fn run(scenario: &Scenario, seed: u64, schedule: Option<&Schedule>) -> Played {
    let group = group_for(scenario, seed);
    let schedule = match (schedule, &group.faults) {
        (Some(s), _) => s.clone(),
        (None, Some((from, until, mix))) => {
            let mut s = Schedule::generate(seed, group.names.len(), until - from, mix);
            for e in &mut s.events {
                e.at_ms += from;
            }
            s
        }
        (None, None) => Schedule::default(),
    };
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let (result, summary) = runtime.block_on(play(scenario, seed, group, schedule.clone()));
    Played {
        result,
        schedule,
        summary,
    }
}

/// The run itself, inside the simulation.
async fn play(
    scenario: &Scenario,
    seed: u64,
    group: Group,
    schedule: Schedule,
) -> (RunResult, String) {
    let mut world = World::new();
    world.set_storage(group.storage);
    let addrs: Vec<SiteAddr> = group.configs.iter().map(|c| c.addr.clone()).collect();
    let name_of: BTreeMap<SiteAddr, String> = addrs
        .iter()
        .cloned()
        .zip(group.names.iter().cloned())
        .collect();
    let addr = |name: &str| addrs[index_of(&group.names, name)].clone();

    // The timeline: first starts, scripted steps and faults, by time (stable: at the same time
    // starts come first, then steps in file order, then faults).
    let start_steps: Vec<Step> = group
        .start_ms
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            t.map(|at| Step {
                at: crate::spec::Millis(at),
                action: Action::Start(vec![group.names[i].clone()]),
                line: 0,
            })
        })
        .collect();
    let mut timeline: Vec<(u64, u8, Item)> = Vec::new();
    timeline.extend(start_steps.iter().map(|s| (s.at.0, 0, Item::Step(s))));
    timeline.extend(scenario.steps.iter().map(|s| (s.at.0, 1, Item::Step(s))));
    timeline.extend(
        schedule
            .events
            .iter()
            .map(|e| (e.at_ms, 2, Item::Fault(&e.fault))),
    );
    timeline.sort_by_key(|(at, rank, _)| (*at, *rank));

    let mut failed: Vec<Violation> = Vec::new();
    let settle = scenario
        .settle
        .map_or_else(|| default_settle(&group.configs[0].timeouts), |m| m.0);
    // A run that goes on long past its last step is stuck (a wait on a site that never
    // answers): stop it and say so, rather than simulate forever.
    let last_at = timeline.last().map_or(0, |(at, _, _)| *at);
    let limit = Duration::from_millis(last_at + settle + 300_000);
    let played = tokio::time::timeout(
        limit,
        play_timeline(
            &mut world,
            &group,
            &addrs,
            &addr,
            &timeline,
            fault_end_of(&schedule),
            settle,
            &mut failed,
        ),
    )
    .await;
    if played.is_err() {
        failed.push(Violation {
            invariant: "run_finishes".into(),
            site: None,
            at_ms: Some(world.now_ms()),
            detail: format!(
                "the run was still going {} s after its last step",
                limit.as_secs()
            ),
        });
    }

    let mut result = world.result(&scenario.name, seed).await;
    result.sites = name_of
        .iter()
        .map(|(addr, name)| sim::result::SiteName {
            name: name.clone(),
            addr: addr.to_string(),
        })
        .collect();
    result.violations.extend(failed);
    result
        .violations
        .retain(|v| !scenario.skip.contains(&v.invariant));
    // Invariants broken on purpose: their violations are shown in the trace as expected, and
    // one that held is the failure.
    for name in &scenario.broken {
        let (expected, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut result.violations)
            .into_iter()
            .partition(|v| v.invariant == *name);
        result.violations = rest;
        if expected.is_empty() {
            result.violations.push(Violation {
                invariant: "expectation".into(),
                site: None,
                at_ms: Some(result.sim_ms),
                detail: format!("{name} was expected to break, and it held"),
            });
        }
        for v in expected {
            let site = v
                .site
                .as_ref()
                .map_or(String::new(), |s| format!(" on {s}"));
            result.trace.push(format!(
                "{} world expected violation {}{site}: {}",
                v.at_ms.unwrap_or(result.sim_ms),
                v.invariant,
                v.detail
            ));
        }
    }
    result.outcome = if result.violations.is_empty() {
        RunOutcome::Pass
    } else {
        RunOutcome::Fail
    };
    let summary = summarise(&world, &name_of).await;
    (result, summary)
}

/// When the fault schedule ends (0 without one).
fn fault_end_of(schedule: &Schedule) -> u64 {
    schedule.events.last().map_or(0, |e| e.at_ms)
}

/// Plays the timeline, keeps a swarm's load until its faults end, and lets the group settle.
/// Failed expectations go into `failed`.
#[allow(clippy::too_many_arguments)]
async fn play_timeline(
    world: &mut World,
    group: &Group,
    addrs: &[SiteAddr],
    addr: &dyn Fn(&str) -> SiteAddr,
    timeline: &[(u64, u8, Item<'_>)],
    fault_end: u64,
    settle: u64,
    failed: &mut Vec<Violation>,
) {
    let mut load: Option<Load> = None;
    for (at, _, item) in timeline {
        let now = world.now_ms();
        if *at > now {
            tokio::time::sleep(Duration::from_millis(at - now)).await;
        }
        match item {
            Item::Fault(fault) => world.apply(fault),
            Item::Step(step) => {
                if group.swarm_load && load.is_none() {
                    load = Some(world.start_load(50));
                }
                let outcome = perform(world, group, addrs, addr, step, &mut load).await;
                if let Err(detail) = outcome {
                    let detail = format!("line {}: {detail}", step.line);
                    world.note_scenario(&format!("expectation failed: {detail}"));
                    failed.push(Violation {
                        invariant: "expectation".into(),
                        site: None,
                        at_ms: Some(world.now_ms()),
                        detail,
                    });
                }
            }
        }
    }
    if group.swarm_load && load.is_none() {
        load = Some(world.start_load(50));
    }
    // A swarm keeps its load until the faults end.
    if group.swarm_load && world.now_ms() < fault_end {
        tokio::time::sleep(Duration::from_millis(fault_end - world.now_ms())).await;
    }
    if let Some(l) = load.take() {
        l.stop().await;
    }
    world.settle(settle).await;
}

/// What a request returned, named as scenario files name outcomes.
fn outcome_name(result: &Result<Reply, RequestError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RequestError::NotMaster { .. }) => "NotMaster",
        Err(RequestError::PermFailed { .. }) => "PermFailed",
        Err(RequestError::MasterLost { .. }) => "MasterLost",
        Err(RequestError::SwitchoverInProgress { .. }) => "SwitchoverInProgress",
        Err(RequestError::StepDownFailed { .. }) => "StepDownFailed",
        Err(RequestError::Unavail { .. }) => "Unavail",
        Err(RequestError::CannotRemoveMaster { .. }) => "CannotRemoveMaster",
        Err(RequestError::Invalid(_)) => "Invalid",
        Err(RequestError::NoLease { .. }) => "NoLease",
        Err(RequestError::HandleDead { .. }) => "HandleDead",
    }
}

/// Compares a request's result with the outcome a step expects.
fn expect_outcome(
    what: &str,
    expected: &str,
    result: &Result<Reply, RequestError>,
) -> Result<(), String> {
    let got = outcome_name(result);
    if expected == "any" || expected == got {
        return Ok(());
    }
    let detail = match result {
        Ok(reply) => format!("{reply:?}"),
        Err(e) => e.to_string(),
    };
    Err(format!(
        "{what} returned {got} ({detail}), expected {expected}"
    ))
}

/// A request bounded in simulated time: a site that never answers counts as dead.
async fn request(world: &World, to: &SiteAddr, req: Request) -> Result<Reply, RequestError> {
    match tokio::time::timeout(Duration::from_secs(30), world.request(to, req)).await {
        Ok(r) => r,
        Err(_) => Err(RequestError::HandleDead {
            reason: format!("no answer from {to} within 30 s"),
        }),
    }
}

/// Carries out one step.
async fn perform(
    world: &mut World,
    group: &Group,
    addrs: &[SiteAddr],
    addr: &dyn Fn(&str) -> SiteAddr,
    step: &Step,
    load: &mut Option<Load>,
) -> Result<(), String> {
    let started = |world: &World, a: &SiteAddr| world.addrs().contains(a);
    match &step.action {
        Action::Start(names) => {
            for n in names {
                let i = index_of(&group.names, n);
                if started(world, &addrs[i]) {
                    return Err(format!("start {n}: it has already started"));
                }
                let secret = if group.rogue[i] {
                    ROGUE_SECRET
                } else {
                    GROUP_SECRET
                };
                let seed = world_seed(i);
                world.add_site(i, group.configs[i].clone(), secret, seed);
            }
        }
        Action::Crash(names)
        | Action::TornCrash(names)
        | Action::Restart(names)
        | Action::Pause(names)
        | Action::Resume(names)
        | Action::Corrupt(names) => {
            for n in names {
                let a = addr(n);
                if !started(world, &a) {
                    return Err(format!("{n} has not started"));
                }
                match &step.action {
                    Action::Crash(_) if world.is_up(&a) => world.crash(&a),
                    Action::TornCrash(_) if world.is_up(&a) => world.crash_tearing(&a),
                    Action::Restart(_) if !world.is_up(&a) => world.restart(&a),
                    Action::Pause(_) => world.pause(&a),
                    Action::Resume(_) => world.resume(&a),
                    Action::Corrupt(_) => world.corrupt(&a),
                    _ => {}
                }
            }
        }
        Action::Isolate(names) => {
            for n in names {
                let a = addr(n);
                let rest: Vec<SiteAddr> = world.addrs().into_iter().filter(|x| *x != a).collect();
                world.partition(&[a], &rest);
            }
        }
        Action::Partition(sides) => {
            world.heal();
            let mut sides: Vec<Vec<SiteAddr>> = sides
                .iter()
                .map(|side| side.iter().map(|n| addr(n)).collect())
                .collect();
            let named: Vec<SiteAddr> = sides.iter().flatten().cloned().collect();
            let rest: Vec<SiteAddr> = world
                .addrs()
                .into_iter()
                .filter(|a| !named.contains(a))
                .collect();
            if !rest.is_empty() {
                sides.push(rest);
            }
            let live: Vec<SiteAddr> = world.addrs();
            for (i, a) in sides.iter().enumerate() {
                for b in &sides[i + 1..] {
                    let a: Vec<SiteAddr> = a.iter().filter(|x| live.contains(x)).cloned().collect();
                    let b: Vec<SiteAddr> = b.iter().filter(|x| live.contains(x)).cloned().collect();
                    world.partition(&a, &b);
                }
            }
        }
        Action::Clog(c) => world.clog(&addr(&c.from), &addr(&c.to)),
        Action::Heal => world.heal(),
        Action::Network(n) => {
            let range = latency_range(n);
            world.set_network(
                n.loss,
                Duration::from_millis(range.start)..Duration::from_millis(range.end),
            );
            let per_mille = |chance: f64| (chance * 1_000.0).round() as u32;
            world.shuffle(Chances {
                duplicate: per_mille(n.duplicate),
                reorder: per_mille(n.reorder),
                drop: per_mille(n.drop),
            });
        }
        Action::Skew(s) => world.skew(&addr(&s.site), s.ms),
        Action::PowerCut(p) => world.cut_power(&addr(&p.site), p.after),
        Action::CrashAt(c) => {
            let site = c.site.as_deref().map(addr);
            world.arm_crash(site.as_ref(), c.moment);
        }
        Action::Drift(d) => world.drift(&addr(&d.site), d.ppm),
        Action::Write(w) => {
            let via = addr(&w.via);
            for i in 0..w.count {
                let key = format!("line{}-{i}", step.line);
                let result = world.commit(&via, &key, "scripted").await;
                expect_outcome(
                    &format!("write {} via {}", i + 1, w.via),
                    &w.expect,
                    &result,
                )?;
            }
        }
        Action::Load(l) => {
            if let Some(old) = load.take() {
                old.stop().await;
            }
            *load = Some(world.start_load(l.every.0));
        }
        Action::StopLoad => {
            if let Some(old) = load.take() {
                old.stop().await;
            }
        }
        Action::Remove(r) => {
            let result = request(
                world,
                &addr(&r.via),
                Request::RemoveSite {
                    site: addr(&r.site),
                },
            )
            .await;
            expect_outcome(
                &format!("remove {} via {}", r.site, r.via),
                &r.expect,
                &result,
            )?;
        }
        Action::StepDown(s) => {
            let result = request(world, &addr(&s.via), Request::StepDown { to: addr(&s.to) }).await;
            expect_outcome(
                &format!("step down {} to {}", s.via, s.to),
                &s.expect,
                &result,
            )?;
        }
        Action::Archive(a) => {
            let result = request(
                world,
                &addr(&a.via),
                Request::Archive {
                    keep_records: a.keep,
                },
            )
            .await;
            expect_outcome(&format!("archive via {}", a.via), &a.expect, &result)?;
        }
        Action::Upgrade(u) => {
            let a = addr(&u.site);
            if world.is_up(&a) {
                world.crash(&a);
            }
            world.reconfigure(&a, |cfg| cfg.protocol_version = u.version);
            world.restart(&a);
        }
        Action::Reconfigure(r) => {
            let a = addr(&r.site);
            let helper = r.helper.as_deref().map(addr);
            world.reconfigure(&a, |cfg| {
                if let Some(c) = r.creator {
                    cfg.group_creator = c;
                }
                if let Some(h) = helper {
                    cfg.helper = Some(h);
                }
                if let Some(p) = r.priority {
                    cfg.priority = p;
                }
            });
        }
        Action::Expect(e) => expect(world, e, addr).await?,
    }
    Ok(())
}

/// The node seed of site `i`: fixed per site, so a run depends only on the runtime's seed.
fn world_seed(i: usize) -> u64 {
    0x5eed_0000 + i as u64
}

/// Waits for, watches or checks an expectation.
async fn expect(
    world: &World,
    e: &ExpectSpec,
    addr: &dyn Fn(&str) -> SiteAddr,
) -> Result<(), String> {
    const POLL: Duration = Duration::from_millis(50);
    if let Some(window) = e.holds_for {
        let until = tokio::time::Instant::now() + Duration::from_millis(window.0);
        loop {
            holds(world, e, addr).await.map_err(|seen| {
                format!(
                    "{} for {window}, but at {} ms {seen}",
                    describe(e),
                    world.now_ms()
                )
            })?;
            if tokio::time::Instant::now() >= until {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(e.within.map_or(0, |w| w.0));
    loop {
        match holds(world, e, addr).await {
            Ok(()) => return Ok(()),
            Err(seen) if tokio::time::Instant::now() >= until => {
                let within = e.within.map_or(String::new(), |w| format!(" within {w}"));
                return Err(format!("{}{within}, but {seen}", describe(e)));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// The expectation in words.
fn describe(e: &ExpectSpec) -> String {
    if let Some(m) = &e.master {
        return format!("expected master {m}");
    }
    if let Some(ev) = &e.event {
        let site = e
            .site
            .as_deref()
            .map_or(String::new(), |s| format!(" on {s}"));
        let n = match (e.count, e.at_least) {
            (Some(c), _) => format!("exactly {c}"),
            (None, Some(a)) => format!("at least {a}"),
            (None, None) => "at least 1".into(),
        };
        return format!("expected {n} {ev}{site}");
    }
    if let Some(seq) = &e.sequence {
        let on = e
            .site
            .as_deref()
            .map_or(String::new(), |s| format!(" on {s}"));
        return format!("expected exactly the events {seq:?}{on}");
    }
    if let Some(m) = &e.members {
        return format!("expected members {m:?}");
    }
    "expected every running site in sync with the master".into()
}

/// The name of an event as scenario files write it: the variant's name.
pub fn event_name(event: &NodeEvent) -> String {
    let text = match event {
        NodeEvent::Site(e) => format!("{e:?}"),
        other => format!("{other:?}"),
    };
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// Whether the expectation holds now; if not, what was seen instead.
async fn holds(
    world: &World,
    e: &ExpectSpec,
    addr: &dyn Fn(&str) -> SiteAddr,
) -> Result<(), String> {
    let master = world.master().await;
    if let Some(want) = &e.master {
        return match (want.as_str(), &master) {
            ("none", None) | ("any", Some(_)) => Ok(()),
            ("none", Some(m)) => Err(format!("{m} is master")),
            (_, None) => Err("no site is master".into()),
            (name, Some(m)) if *m == addr(name) => Ok(()),
            (_, Some(m)) => Err(format!("{m} is master")),
        };
    }
    // The events an `event` or `sequence` expectation looks at: of its site, since its time.
    let site = e.site.as_deref().map(addr);
    let since = e.since.map_or(0, |s| s.0);
    let watched = || {
        world
            .events()
            .into_iter()
            .filter(|o| o.ms >= since && site.as_ref().is_none_or(|s| *s == o.site))
    };
    if let Some(want) = &e.sequence {
        let seen: Vec<String> = watched()
            .map(|o| event_name(&o.event))
            .filter(|name| want.contains(name))
            .collect();
        return if seen == *want {
            Ok(())
        } else {
            Err(format!("the events of those kinds were {seen:?}"))
        };
    }
    if let Some(name) = &e.event {
        let matching: Vec<NodeEvent> = watched()
            .filter(|o| event_name(&o.event) == *name)
            .filter(|o| {
                e.reason
                    .as_ref()
                    .is_none_or(|r| format!("{:?}", o.event).contains(r.as_str()))
            })
            .map(|o| o.event)
            .collect();
        let n = matching.len() as u64;
        if let Some(txns) = e.txns_at_least {
            let rolled: u64 = matching
                .iter()
                .map(|ev| match ev {
                    NodeEvent::Site(Event::RolledBack { txns, .. }) => txns.len() as u64,
                    _ => 0,
                })
                .sum();
            if rolled < txns {
                return Err(format!("{rolled} transactions were rolled back"));
            }
        }
        let ok = match (e.count, e.at_least) {
            (Some(c), _) => n == c,
            (None, Some(a)) => n >= a,
            (None, None) => n >= 1,
        };
        return if ok {
            Ok(())
        } else {
            Err(format!("{n} were seen"))
        };
    }
    let Some(master) = master else {
        return Err("no site is master".into());
    };
    if let Some(want) = &e.members {
        let mut want: Vec<SiteAddr> = want.iter().map(|n| addr(n)).collect();
        want.sort();
        let have = world.members(&master);
        return if have == want {
            Ok(())
        } else {
            Err(format!("the master {master} lists {have:?}"))
        };
    }
    // in_sync: every running member (a removed site may keep running, following no one)
    let reference = world.digest(&master).await;
    let members = world.members(&master);
    for a in world.addrs() {
        let member = members.is_empty() || members.contains(&a);
        if member && world.is_up(&a) && world.digest(&a).await != reference {
            return Err(format!("{a} differs from the master {master}"));
        }
    }
    Ok(())
}

/// A short account of the run for snapshots: who was master when, key events, final state.
/// Membership news is told once, as the master of the moment reports it, not once per site.
async fn summarise(world: &World, names: &BTreeMap<SiteAddr, String>) -> String {
    let name = |a: &SiteAddr| names.get(a).cloned().unwrap_or_else(|| a.to_string());
    let mut lines = Vec::new();
    let mut master: Option<SiteAddr> = None;
    for o in world.events() {
        let NodeEvent::Site(event) = &o.event else {
            continue;
        };
        let from_master = master.as_ref() == Some(&o.site);
        let what = match event {
            Event::BecameMaster { gen } => {
                master = Some(o.site.clone());
                format!("master of generation {gen}")
            }
            Event::BecameClient { .. } if from_master => {
                master = None;
                continue;
            }
            Event::RolledBack { txns, .. } => format!("rolled back {} transactions", txns.len()),
            Event::InitDone { .. } => "internal init done".into(),
            Event::SteppedDown { to } => format!("stepped down to {}", name(to)),
            Event::SiteAdded { site } if from_master => format!("added {}", name(site)),
            Event::SiteRemoved { site } if from_master => format!("removed {}", name(site)),
            Event::MembershipCreated { sites } if from_master => {
                format!("membership created with {} sites", sites.len())
            }
            Event::LocalSiteRemoved => "removed from the group".into(),
            Event::StorageFailed { .. } => "storage failed".into(),
            _ => continue,
        };
        lines.push(format!(
            "{:>7.1}s {} {what}",
            o.ms as f64 / 1000.0,
            name(&o.site)
        ));
    }
    lines.push("final:".into());
    for a in world.addrs() {
        let state = match world.digest(&a).await {
            Some((pos, _)) => format!("at {}/{}", pos.lsn, pos.gen),
            None => "down".into(),
        };
        lines.push(format!("  {} {state}", name(&a)));
    }
    lines.join("\n")
}
