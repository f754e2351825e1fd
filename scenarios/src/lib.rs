//! The repsim scenario layer: the scenario language ([`spec`]), the runner that plays a
//! scenario on the simulated world ([`run`], simulated build only), failure files and their
//! shrinking, and what the `repsim` command line needs around them.

#[cfg(madsim)]
pub mod failover;
pub mod failure;
#[cfg(madsim)]
pub mod run;
pub mod shard;
#[cfg(madsim)]
pub mod shrink;
pub mod spec;
