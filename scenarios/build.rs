//! Records the commit the binary was built from, so failure files name their build.

use std::process::Command;

fn main() {
    // A build without the repository (a container image) is told its commit instead.
    println!("cargo:rerun-if-env-changed=REPSIM_GIT_COMMIT");
    if let Ok(commit) = std::env::var("REPSIM_GIT_COMMIT") {
        println!("cargo:rustc-env=REPSIM_GIT_COMMIT={commit}");
        return;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=REPSIM_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit or a checkout), not on every file change.
    for path in ["../.git/HEAD", "../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
