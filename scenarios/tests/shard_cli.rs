//! Exploration in shards as a team runs it across machines: `explore --shard K/N` processes,
//! then `merge`. The shards of a range must add up to exactly what one `explore` over the range
//! gives (the same seeds, outcomes and trace hashes), failures must come back as replayable
//! failure files, and files that do not belong together must be refused.
//! Built only with `--cfg madsim` (`cargo sim-test`).
#![cfg(madsim)]

use std::path::Path;
use std::process::{Child, Stdio};

mod common;
use common::{command, outcome, run as repsim, ALWAYS_FAILS};

fn spawn(dir: &Path, args: &[&str]) -> Child {
    command(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("repsim starts")
}

#[test]
fn four_shards_merge_into_exactly_what_one_explore_gives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shards: Vec<Child> = (1..=4)
        .map(|k| {
            let shard = format!("{k}/4");
            spawn(
                dir.path(),
                &[
                    "explore",
                    "random-faults",
                    "--seeds",
                    "1..2001",
                    "--shard",
                    &shard,
                    "--jobs",
                    "1",
                ],
            )
        })
        .collect();
    for child in shards {
        let (code, stdout, stderr) = outcome(child.wait_with_output().unwrap());
        assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
        assert!(stdout.contains("500 runs"), "{stdout}");
    }
    let (code, stdout, stderr) = repsim(
        dir.path(),
        &[
            "explore",
            "random-faults",
            "--seeds",
            "1..2001",
            "--results",
            "single.jsonl",
            "--failures",
            "single-failures",
        ],
    );
    assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
    let files: Vec<String> = (1..=4)
        .map(|k| format!("results/random-faults-shard-{k}-of-4.jsonl"))
        .collect();
    let mut args = vec!["merge", "--results", "merged.jsonl"];
    args.extend(files.iter().map(String::as_str));
    let (merge_code, stdout, stderr) = repsim(dir.path(), &args);
    assert_eq!(
        merge_code, code,
        "merge and explore agree on the verdict: {stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("2000 runs from 4 files"), "{stdout}");
    assert!(stdout.contains("coverage (runs of 2000"), "{stdout}");
    assert!(!stdout.contains("missing:"), "{stdout}");
    let single = std::fs::read_to_string(dir.path().join("single.jsonl")).unwrap();
    let merged = std::fs::read_to_string(dir.path().join("merged.jsonl")).unwrap();
    assert_eq!(single.lines().count(), 2001, "a header and a line per seed");
    // Line by line, so a difference names its seed rather than printing two whole files.
    for (one, other) in single.lines().zip(merged.lines()) {
        assert_eq!(one, other, "the merge differs from the single explore");
    }
    assert_eq!(single.len(), merged.len());
}

#[test]
fn merged_failures_replay_and_files_that_do_not_belong_together_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fails.toml"), ALWAYS_FAILS).expect("scenario");
    for k in 1..=3 {
        let shard = format!("{k}/3");
        let (code, stdout, stderr) = repsim(
            dir.path(),
            &[
                "explore",
                "fails.toml",
                "--seeds",
                "1..8",
                "--shard",
                &shard,
            ],
        );
        assert_eq!(code, 1, "{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("results: results/fails-shard-{k}-of-3.jsonl")),
            "{stdout}"
        );
    }
    let file = |k: u64| format!("results/fails-shard-{k}-of-3.jsonl");
    let (code, stdout, stderr) = repsim(
        dir.path(),
        &[
            "merge",
            &file(1),
            &file(2),
            &file(3),
            "--failures",
            "merged",
            "--junit",
            "junit.xml",
        ],
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("7 runs from 3 files, 7 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("replay: cargo sim replay merged/fails-seed-5.json"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"7\""), "{junit}");
    let (code, stdout, _) = repsim(dir.path(), &["replay", "merged/fails-seed-5.json"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("reproduced the failing run exactly"),
        "{stdout}"
    );

    // A shard left out: its seeds are named missing, and the merge fails.
    let (code, stdout, _) = repsim(dir.path(), &["merge", &file(1), &file(3)]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("missing: fails seeds 1..8: no file for shard 2/3"),
        "{stdout}"
    );

    // A file from another build is refused, unless asked for.
    let other = dir.path().join("other-build.jsonl");
    let text = std::fs::read_to_string(dir.path().join(file(2))).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    header["build"] = "0.0.0+elsewhere".into();
    lines[0] = header.to_string();
    std::fs::write(&other, lines.join("\n")).unwrap();
    let other = other.to_str().unwrap();
    let (code, _, stderr) = repsim(dir.path(), &["merge", &file(1), other, &file(3)]);
    assert_eq!(code, 2, "bad input: {stderr}");
    assert!(
        stderr.contains("0.0.0+elsewhere") && stderr.contains("--any-build"),
        "{stderr}"
    );
    let (code, stdout, stderr) = repsim(
        dir.path(),
        &["merge", "--any-build", &file(1), other, &file(3)],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.starts_with("7 runs from 3 files"), "{stdout}");

    // The same shard twice overlaps; another scenario needs --any-scenario.
    let (code, _, stderr) = repsim(dir.path(), &["merge", &file(1), &file(1)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("overlap"), "{stderr}");
    let (code, _, _) = repsim(
        dir.path(),
        &[
            "explore",
            "random-faults",
            "--seeds",
            "1..3",
            "--results",
            "rf.jsonl",
        ],
    );
    assert_eq!(code, 0);
    let (code, _, stderr) = repsim(dir.path(), &["merge", &file(1), "rf.jsonl"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--any-scenario"), "{stderr}");
}
