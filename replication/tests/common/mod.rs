//! What the property tests share.

use proptest::test_runner::Config as ProptestConfig;

/// A property's proptest configuration with `cases` cases. In the mutation build (`--cfg madsim`,
/// see MUTANTS.md) every run draws the same cases and saves none: a failure saved into the build
/// directory's copy of a regressions file would otherwise replay for every later mutant and fail
/// it whatever that mutant changed.
pub fn config(cases: u32) -> ProptestConfig {
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    #[cfg(madsim)]
    let config = ProptestConfig {
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
        ..config
    };
    config
}
