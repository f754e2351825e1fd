//! The simulated world for repsim: the engine's real node driver on madsim, with each site's
//! durable state on a disk that lives outside the node (so it survives a kill), a clock per site
//! that can be skewed, and a trace of everything that happened.
//!
//! The world itself needs madsim's runtime and only exists in the `--cfg madsim` build (run
//! through `cargo sim` / `cargo sim-test`); the disk and the clock build everywhere.
//! Nothing here may read the wall clock, use thread-local randomness, or iterate a hash map
//! where the order could reach the trace: a run is a function of its seed.

pub mod check;
pub mod clock;
pub mod coverage;
pub mod disk;
pub mod faults;
pub mod result;
// Only the world (simulated build) writes traces; the normal build compiles it for its tests.
#[cfg_attr(not(madsim), allow(dead_code))]
pub mod tracelog;
#[cfg(madsim)]
pub mod world;

pub use replication;

/// FNV-1a over the trace lines: the run's fingerprint for determinism checks.
pub fn trace_hash<'a>(lines: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for line in lines {
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
