//! What a run produced, in a form the reports and the CLI render (JSON among others).

use crate::check::Violation;
use serde::Serialize;

/// Pass or fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every invariant held.
    Pass,
    /// At least one invariant broke.
    Fail,
}

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// The trace, one line per event (left out of JSON when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<String>,
}
