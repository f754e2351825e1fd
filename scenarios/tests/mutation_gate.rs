//! What cargo-mutants runs against every mutant of the engine (see `.cargo/mutants.toml` and
//! `MUTANTS.md`): the simulator alone, judging the engine by what it does in the world. A mutant
//! is caught when any catalog scenario fails on seeds 1..=2, or `random-faults` fails on any of
//! seeds 1..=N (`MUTATION_SEEDS`, default 300).
//!
//! Ignored by default: it runs only when asked (`--include-ignored`), so `cargo sim-test` and CI
//! do not pay for it. Built only with `--cfg madsim`.
#![cfg(madsim)]

use scenarios::run::run;
use scenarios::spec::{catalog_files, Scenario};
use std::path::Path;

#[test]
#[ignore = "the mutation-testing gate: run with --include-ignored (cargo mutants does)"]
fn the_simulator_finds_nothing_wrong() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let catalog: Vec<Scenario> = catalog_files(&dir)
        .expect("the catalog directory")
        .iter()
        .map(|f| Scenario::load(f).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let seeds: u64 = std::env::var("MUTATION_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    for scenario in &catalog {
        let range = if scenario.name == "random-faults" {
            1..=seeds
        } else {
            1..=2
        };
        for seed in range {
            let played = run(scenario, seed, None);
            assert!(
                played.result.violations.is_empty(),
                "{} seed {seed}: {:?}",
                scenario.name,
                played.result.violations
            );
        }
    }
}
