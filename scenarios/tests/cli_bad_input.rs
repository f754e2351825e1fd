//! Bad input at the command line: a malformed scenario file stops `repsim` with exit status 2
//! and an error naming the file, the line and what was expected; nothing else is printed as if
//! it had worked. (`list` needs no simulator, so this runs in every build.)

use std::process::Command;

fn repsim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_repsim"))
        .args(args)
        .output()
        .expect("repsim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_scenario_file_is_named_with_its_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "summary = \"x\"\n\n[group]\nsites = [\"A\", \"B\"]\n\n[[step]]\nat = \"1s\"\ncrash = \"Q\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = repsim(&["list", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{}:6: unknown site \"Q\"", file.display())),
        "{stderr}"
    );
}

#[test]
fn a_missing_scenario_directory_is_named_and_exits_2() {
    let (code, _, stderr) = repsim(&["list", "--dir", "/nonexistent/scenarios"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/scenarios"), "{stderr}");
}

#[test]
fn the_catalog_lists_as_json() {
    let (code, stdout, stderr) = repsim(&["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"random-faults") && names.len() >= 19,
        "{names:?}"
    );
}
