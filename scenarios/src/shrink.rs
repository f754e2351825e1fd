//! Shrinking a failure: drop fault events while the same invariant still breaks.
//!
//! The schedule's closing repairs (heal, a clean network, a restart of every site left down)
//! are not candidates for removal: without them a run would end broken for a reason of the
//! shrinker's making. After each removal they are recomputed, so a shrunk schedule still ends
//! with everything repaired.

use crate::failure::Failure;
use crate::run::{run, Played};
use crate::spec::Scenario;
use sim::faults::{Fault, FaultEvent, Schedule};
use std::collections::BTreeSet;

/// The faults before the final repairs, and when the repairs happen.
fn split_repairs(schedule: &Schedule) -> (Vec<FaultEvent>, u64) {
    let end = schedule.events.last().map_or(0, |e| e.at_ms);
    let body = schedule
        .events
        .iter()
        .filter(|e| e.at_ms < end)
        .cloned()
        .collect();
    (body, end)
}

/// `body` followed by the repairs it needs at `end`.
pub fn with_repairs(body: &[FaultEvent], end: u64) -> Schedule {
    let mut events = body.to_vec();
    let (mut down, mut paused) = (BTreeSet::new(), BTreeSet::new());
    for e in body {
        match e.fault {
            Fault::Crash { site } | Fault::TornCrash { site } => {
                down.insert(site);
            }
            Fault::Restart { site } => {
                down.remove(&site);
            }
            Fault::Pause { site } => {
                paused.insert(site);
            }
            Fault::Resume { site } => {
                paused.remove(&site);
            }
            _ => {}
        }
    }
    let repair = |fault| FaultEvent { at_ms: end, fault };
    events.push(repair(Fault::Heal));
    events.push(repair(Fault::Network {
        loss_per_mille: 0,
        latency_min_ms: 1,
        latency_max_ms: 10,
    }));
    events.extend(down.into_iter().map(|site| repair(Fault::Restart { site })));
    events.extend(
        paused
            .into_iter()
            .map(|site| repair(Fault::Resume { site })),
    );
    Schedule { events }
}

/// The outcome of a shrink.
pub struct Shrunk {
    /// The smaller failure.
    pub failure: Failure,
    /// Its run.
    pub played: Played,
    /// Runs tried.
    pub tries: usize,
    /// Fault events before and after (repairs not counted).
    pub events_before: usize,
    /// Fault events left.
    pub events_after: usize,
}

/// Whether a run breaks one of the failure's invariants.
fn breaks_same(played: &Played, failure: &Failure) -> bool {
    played
        .result
        .violations
        .iter()
        .any(|v| failure.invariants.contains(&v.invariant))
}

/// Removes fault events (halves, then quarters, ... then single events) while the run still
/// breaks one of the same invariants; `progress(tries, events_left)` is called after each run.
pub fn shrink(
    scenario: &Scenario,
    failure: &Failure,
    mut progress: impl FnMut(usize, usize),
) -> Option<Shrunk> {
    let (mut body, end) = split_repairs(&failure.schedule);
    let events_before = body.len();
    let mut tries = 0;
    // The failure must reproduce before anything is dropped.
    let mut best = run(scenario, failure.seed, Some(&with_repairs(&body, end)));
    tries += 1;
    if !breaks_same(&best, failure) {
        return None;
    }
    let mut chunk = body.len().div_ceil(2).max(1);
    while !body.is_empty() {
        let mut i = 0;
        while i < body.len() {
            let mut candidate = body.clone();
            candidate.drain(i..(i + chunk).min(body.len()));
            let played = run(scenario, failure.seed, Some(&with_repairs(&candidate, end)));
            tries += 1;
            if breaks_same(&played, failure) {
                body = candidate;
                best = played;
            } else {
                i += chunk;
            }
            progress(tries, body.len());
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    let first = best
        .result
        .violations
        .iter()
        .find(|v| failure.invariants.contains(&v.invariant))
        .expect("the kept run breaks the invariant");
    let shrunk = Failure {
        invariants: vec![first.invariant.to_string()],
        detail: first.detail.clone(),
        trace_hash: best.result.trace_hash.clone(),
        schedule: best.schedule.clone(),
        ..failure.clone()
    };
    Some(Shrunk {
        failure: shrunk,
        events_after: body.len(),
        played: best,
        tries,
        events_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_restart_every_site_left_down_and_heal() {
        let body = vec![
            FaultEvent {
                at_ms: 100,
                fault: Fault::Crash { site: 1 },
            },
            FaultEvent {
                at_ms: 200,
                fault: Fault::TornCrash { site: 2 },
            },
            FaultEvent {
                at_ms: 300,
                fault: Fault::Restart { site: 1 },
            },
        ];
        let s = with_repairs(&body, 1_000);
        let tail: Vec<&Fault> = s
            .events
            .iter()
            .filter(|e| e.at_ms == 1_000)
            .map(|e| &e.fault)
            .collect();
        assert!(tail.contains(&&Fault::Heal));
        assert!(tail.contains(&&Fault::Restart { site: 2 }));
        assert!(!tail.contains(&&Fault::Restart { site: 1 }));
        assert_eq!(split_repairs(&s).0, body);
    }
}
