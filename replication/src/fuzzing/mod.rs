//! Harnesses shared by the cargo-fuzz targets in `fuzz/` and the property tests in
//! `tests/fuzz_properties.rs`. Each takes one input value, drives one part of the engine with it
//! and panics with a plain message the moment a property fails, so that what CI checks with
//! proptest is exactly what the fuzzer checks for hours.
//!
//! Inputs derive `arbitrary::Arbitrary` behind the `arbitrary` feature (the fuzz crate turns it
//! on); the property tests build the same values with proptest strategies. Nothing here reads a
//! clock or draws randomness: a failing input replays exactly.

pub mod frames;
pub mod group;
pub mod handshake;

/// A number near a value the target already has (its generation, its last LSN), or any value.
/// Inputs that land next to the target's state reach far deeper than uniformly random ones,
/// which a site mostly ignores as stale; `Any` keeps the extremes (0, `u64::MAX`) reachable.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Num {
    /// The base value moved by this much (saturating).
    Near(i8),
    /// Exactly this value.
    Any(u64),
}

impl Num {
    /// The value this stands for next to `base`.
    pub fn at(self, base: u64) -> u64 {
        match self {
            Num::Near(delta) => base.saturating_add_signed(i64::from(delta)),
            Num::Any(value) => value,
        }
    }
}
