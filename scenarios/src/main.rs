//! `repsim`: the simulation command line (run it as `cargo sim ...`).

use clap::Parser;

/// Deterministic simulation of a Berkeley-DB-style replication group.
///
/// Scenario commands (list, run, explore, replay, shrink, suite) arrive with the scenario issue.
#[derive(Parser, Debug)]
#[command(name = "repsim", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
