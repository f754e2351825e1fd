//! What a run produced, in a form the reports and the CLI render (JSON among others).

use crate::check::Violation;
use crate::coverage::Coverage;
use serde::{Deserialize, Serialize};

/// Pass or fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every invariant held.
    Pass,
    /// At least one invariant broke.
    Fail,
}

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Node events recorded.
    pub events: u64,
    /// Messages sent by the sites still running at the end.
    pub messages: u64,
    /// Elections won.
    pub elections: u64,
    /// Writes acknowledged.
    pub writes_ok: u64,
    /// Writes refused.
    pub writes_failed: u64,
    /// Writes whose fate is unknown.
    pub writes_unknown: u64,
}

/// The result of one run of one scenario with one seed.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Pass or fail.
    pub outcome: RunOutcome,
    /// Every violation found (the first of each kind).
    pub violations: Vec<Violation>,
    /// Fingerprint of the trace (hex): equal for equal runs.
    pub trace_hash: String,
    /// Simulated milliseconds the run took.
    pub sim_ms: u64,
    /// What happened, counted.
    pub counts: Counts,
    /// The behaviours and faults the run reached, each with how often
    /// ([`BEHAVIOURS`](crate::coverage::BEHAVIOURS) says what each name means).
    pub reached: Coverage,
    /// The trace, one line per event (left out of JSON when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<String>,
    /// The scenario's name for each site, in address order (left out of JSON when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteName>,
    /// The client writes, invocation to completion, kept with the trace for reports (left out of
    /// JSON when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Write>,
}

/// A site as the scenario names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteName {
    /// The scenario's name (A, B, ...).
    pub name: String,
    /// Its address.
    pub addr: String,
}

/// One client write, as a report draws it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The site asked (its address).
    pub site: String,
    /// The key.
    pub key: String,
    /// When it was invoked (simulated ms).
    pub invoked_ms: u64,
    /// When it completed.
    pub completed_ms: u64,
    /// `ok`, `failed` or `unknown`.
    pub outcome: String,
}

impl RunResult {
    /// The scenario's name for the site at `addr`, or the address itself.
    pub fn site_name<'a>(&'a self, addr: &'a str) -> &'a str {
        self.sites
            .iter()
            .find(|s| s.addr == addr)
            .map_or(addr, |s| s.name.as_str())
    }

    /// `text` with every site address replaced by the scenario's name for it.
    pub fn with_site_names(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest addresses first, so 10.0.0.1:7000 never eats into 10.0.0.10:7000.
        let mut sites: Vec<&SiteName> = self.sites.iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.addr.len()));
        for site in sites {
            out = out.replace(&site.addr, &site.name);
        }
        out
    }
}

impl RunResult {
    /// Whether the run failed. A violation fails the run even if its outcome says pass: the two
    /// fields are set together by the simulator, and if they ever disagree no summary may hide a
    /// broken invariant behind a green line.
    pub fn failed(&self) -> bool {
        self.outcome == RunOutcome::Fail || !self.violations.is_empty()
    }
}

/// The runs of one scenario added up: what a summary of an exploration needs, kept in memory
/// that does not grow with the number of runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// The scenario's name.
    pub scenario: String,
    /// Runs added.
    pub runs: u64,
    /// Of which failed.
    pub failed: u64,
    /// Simulated milliseconds over all the runs.
    pub sim_ms: u64,
    /// Counts over all the runs.
    pub counts: Counts,
    /// For each behaviour, how many runs reached it.
    pub reached: Coverage,
}

impl Tally {
    /// Adds one run.
    pub fn add(&mut self, run: &RunResult) {
        debug_assert!(self.scenario.is_empty() || self.scenario == run.scenario);
        if self.scenario.is_empty() {
            self.scenario = run.scenario.clone();
        }
        self.runs += 1;
        self.failed += u64::from(run.failed());
        self.sim_ms += run.sim_ms;
        let (sum, c) = (&mut self.counts, &run.counts);
        sum.events += c.events;
        sum.messages += c.messages;
        sum.elections += c.elections;
        sum.writes_ok += c.writes_ok;
        sum.writes_failed += c.writes_failed;
        sum.writes_unknown += c.writes_unknown;
        for name in run.reached.keys() {
            *self.reached.entry(name.clone()).or_default() += 1;
        }
    }
}

/// Tallies of many runs, one per scenario in the order each scenario is first seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tallies(pub Vec<Tally>);

impl Tallies {
    /// Adds one run to its scenario's tally.
    pub fn add(&mut self, run: &RunResult) {
        match self.0.iter_mut().find(|t| t.scenario == run.scenario) {
            Some(tally) => tally.add(run),
            None => {
                let mut tally = Tally::default();
                tally.add(run);
                self.0.push(tally);
            }
        }
    }

    /// The tallies of `runs`.
    pub fn of(runs: &[RunResult]) -> Tallies {
        let mut tallies = Tallies::default();
        for run in runs {
            tallies.add(run);
        }
        tallies
    }

    /// Runs over every scenario.
    pub fn runs(&self) -> u64 {
        self.0.iter().map(|t| t.runs).sum()
    }

    /// Failed runs over every scenario.
    pub fn failed(&self) -> u64 {
        self.0.iter().map(|t| t.failed).sum()
    }

    /// Simulated milliseconds over every run.
    pub fn sim_ms(&self) -> u64 {
        self.0.iter().map(|t| t.sim_ms).sum()
    }

    /// For each behaviour of [`BEHAVIOURS`](crate::coverage::BEHAVIOURS), how many runs of any
    /// scenario reached it (zero for one none did), in that table's order.
    pub fn coverage(&self) -> Vec<(&'static str, &'static str, u64)> {
        crate::coverage::BEHAVIOURS
            .iter()
            .map(|&(name, what)| {
                let runs = self.0.iter().filter_map(|t| t.reached.get(name)).sum();
                (name, what, runs)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Violation;

    fn run(scenario: &str, elections: u64, failed: bool) -> RunResult {
        RunResult {
            scenario: scenario.into(),
            seed: 1,
            outcome: if failed {
                RunOutcome::Fail
            } else {
                RunOutcome::Pass
            },
            violations: Vec::new(),
            trace_hash: String::new(),
            sim_ms: 10,
            counts: Counts {
                elections,
                ..Counts::default()
            },
            reached: [("election_won".to_string(), elections)]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect(),
            trace: Vec::new(),
            sites: Vec::new(),
            history: Vec::new(),
        }
    }

    #[test]
    fn tallies_add_up_runs_per_scenario_in_first_seen_order() {
        let mut quiet_violation = run("a", 0, false);
        quiet_violation.violations.push(Violation {
            invariant: "liveness".into(),
            site: None,
            at_ms: None,
            detail: String::new(),
        });
        let runs = [
            run("b", 1, false),
            run("a", 2, true),
            run("b", 3, true),
            quiet_violation,
        ];
        let t = Tallies::of(&runs);
        let names: Vec<&str> = t.0.iter().map(|t| t.scenario.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(
            (t.0[0].runs, t.0[0].failed, t.0[0].counts.elections),
            (2, 1, 4)
        );
        assert_eq!((t.0[1].runs, t.0[1].failed, t.0[1].sim_ms), (2, 2, 20));
        assert_eq!((t.runs(), t.failed(), t.sim_ms()), (4, 3, 40));
        let won = t
            .coverage()
            .into_iter()
            .find(|(n, _, _)| *n == "election_won");
        assert_eq!(won.map(|(_, _, runs)| runs), Some(3), "runs, not elections");
    }
}
