//! The simulated world for repsim: the engine on madsim with a faulty disk, skewed clocks, a
//! nemesis, a workload and invariant checkers. Not started yet: this crate only fixes its place
//! in the dependency order (`replication` <- `sim` <- `reports` <- `scenarios`).

pub use replication;
