//! What the CLI tests share: running `repsim` and a scenario that always fails.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// A scenario that fails on every seed: it expects no master where one is elected at once.
pub const ALWAYS_FAILS: &str = r#"summary = "Expects no master for 3 s, which a healthy group never gives."

[group]
sites = ["A", "B", "C"]

[[step]]
at = "0s"
expect = { master = "none", for = "3s" }
"#;

/// `repsim ARGS`, to run in `dir`.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_repsim"));
    command.args(args).current_dir(dir);
    command
}

/// A finished run's exit code, stdout and stderr.
pub fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `repsim ARGS` in `dir`: exit code, stdout, stderr.
pub fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    outcome(command(dir, args).output().expect("repsim runs"))
}
