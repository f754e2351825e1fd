//! `repsim explore` as a user runs it: passing and failing seeds, with `--json`, `--junit`,
//! `--report` and the failure files, all from what explore keeps (tallies and failures).
//! Built only with `--cfg madsim` (`cargo sim-test`).
#![cfg(madsim)]

use std::path::Path;

mod common;
use common::ALWAYS_FAILS;

fn repsim(dir: &Path, args: &[&str]) -> (i32, String) {
    let (code, stdout, _) = common::run(dir, args);
    (code, stdout)
}

#[test]
fn explore_streams_json_and_keeps_every_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fails.toml"), ALWAYS_FAILS).expect("scenario");
    let (code, stdout) = repsim(
        dir.path(),
        &[
            "explore",
            "fails.toml",
            "--seeds",
            "1..5",
            "--jobs",
            "2",
            "--json",
            "--junit",
            "junit.xml",
            "--report",
            "report",
        ],
    );
    assert_eq!(code, 1, "{stdout}");
    let runs: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON array");
    let seeds: Vec<u64> = runs
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["seed"].as_u64().expect("a seed"))
        .collect();
    assert_eq!(
        seeds,
        [1, 2, 3, 4],
        "in seed order, whatever the threads did"
    );
    assert!(runs[0]["outcome"] == "fail" && runs[0].get("trace").is_none());
    for seed in 1..5 {
        assert!(dir
            .path()
            .join(format!("failures/fails-seed-{seed}.json"))
            .exists());
    }
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).expect("junit");
    assert!(junit.contains("tests=\"4\" failures=\"4\""), "{junit}");
    let index = std::fs::read_to_string(dir.path().join("report/index.md")).expect("index");
    assert!(index.contains("**4 runs: 0 passed, 4 failed.**"), "{index}");
    assert!(dir.path().join("report/fails-seed-3.md").exists());
}

#[test]
fn a_passing_explore_adds_its_seeds_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stdout) = repsim(
        dir.path(),
        &[
            "explore",
            "random-faults",
            "--seeds",
            "1..4",
            "--junit",
            "junit.xml",
        ],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("3 runs, all passed"), "{stdout}");
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).expect("junit");
    assert!(junit.contains("name=\"seeds passed: 3\""), "{junit}");
    assert!(!dir.path().join("failures").exists());
}

#[test]
fn storage_on_the_command_line_reaches_the_sites_and_the_failure_file_and_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fails.toml"), ALWAYS_FAILS).expect("scenario");
    let (code, stdout) = repsim(
        dir.path(),
        &[
            "run",
            "fails.toml",
            "--seed",
            "3",
            "--storage",
            "file",
            "--trace",
        ],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("world sites store on file"), "{stdout}");
    let file = dir.path().join("failures/fails-seed-3.json");
    let failure: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("failure file")).unwrap();
    assert_eq!(failure["storage"], "file", "{failure}");
    let (code, stdout) = repsim(dir.path(), &["replay", file.to_str().unwrap(), "--trace"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("reproduced the failing run exactly"),
        "{stdout}"
    );
    assert!(stdout.contains("world sites store on file"), "{stdout}");

    let (code, _) = repsim(dir.path(), &["run", "fails.toml", "--storage", "disk"]);
    assert_eq!(code, 2, "an unknown storage is a usage error");
}

#[test]
fn a_failure_file_replays_in_another_checkout_without_its_scenario_file() {
    // Found "in CI": a scenario file that exists only there.
    let ci = tempfile::tempdir().expect("temp dir");
    std::fs::write(ci.path().join("fails.toml"), ALWAYS_FAILS).expect("scenario");
    let (code, stdout) = repsim(ci.path(), &["run", "fails.toml", "--seed", "2"]);
    assert_eq!(code, 1, "{stdout}");
    // Downloaded elsewhere: another directory, another working directory, no scenario file.
    let laptop = tempfile::tempdir().expect("temp dir");
    let moved = laptop.path().join("downloads/fails-seed-2.json");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(ci.path().join("failures/fails-seed-2.json"), &moved).unwrap();
    drop(ci);
    let (code, stdout) = repsim(laptop.path(), &["replay", moved.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("reproduced the failing run exactly"),
        "{stdout}"
    );
    // An old failure file (path only) whose path is gone still finds its catalog scenario.
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&moved).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("scenario_text");
    old["scenario"] = "random-faults".into();
    old["scenario_file"] = "/nowhere/random-faults.toml".into();
    let old_file = laptop.path().join("old.json");
    std::fs::write(&old_file, old.to_string()).unwrap();
    let (code, stdout) = repsim(laptop.path(), &["replay", old_file.to_str().unwrap()]);
    assert!(code == 0 || code == 1, "it ran: {stdout}");
    assert!(stdout.contains("random-faults"), "{stdout}");
}
