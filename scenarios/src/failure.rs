//! Failure files: the small JSON file a failing run leaves behind so that `replay` and `shrink`
//! can reproduce it exactly: the scenario, the seed, the fault schedule the run used, which
//! invariants broke, and the build that found it.

use crate::spec::Scenario;
use serde::{Deserialize, Serialize};
use sim::disk::StorageKind;
use sim::faults::Schedule;
use std::path::{Path, PathBuf};

/// The build that wrote a failure file: a run is a function of (scenario, seed, build).
pub const BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("REPSIM_GIT_COMMIT"));

/// A saved failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The scenario's name.
    pub scenario: String,
    /// The scenario file it was read from (where the run was found; it may not exist here).
    pub scenario_file: PathBuf,
    /// The scenario's text, so the failure replays in any checkout on any machine. Older
    /// files lack it: their scenario is found by its path, then by its name in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_text: Option<String>,
    /// The seed.
    pub seed: u64,
    /// The invariants that broke (a shrunk schedule must still break one of them).
    pub invariants: Vec<String>,
    /// The first violation's detail, for a reader.
    pub detail: String,
    /// The trace hash of the failing run (a replay on the same build gives it again).
    pub trace_hash: String,
    /// The build that found it.
    pub build: String,
    /// The fault schedule the run used.
    pub schedule: Schedule,
    /// The storage the command line forced on the scenario, if it did (`--storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageKind>,
}

/// Failure file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum FailureError {
    /// Unreadable or unwritable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a failure file.
    #[error("{path}:{line}: not a repsim failure file: {message}")]
    Format {
        /// The file.
        path: String,
        /// Where.
        line: usize,
        /// What was expected.
        message: String,
    },
}

impl Failure {
    /// The scenario the failing run played, with the storage the command line forced: from
    /// the text the file carries, or (an older file) from its path, or from `catalog` by name.
    pub fn load_scenario(&self, catalog: &Path) -> Result<Scenario, crate::spec::SpecError> {
        let scenario = match &self.scenario_text {
            Some(text) => Scenario::from_text(&self.scenario_file, text)?,
            None if self.scenario_file.exists() => Scenario::load(&self.scenario_file)?,
            None => {
                let by_name = catalog.join(format!("{}.toml", self.scenario));
                if by_name.exists() {
                    Scenario::load(&by_name)?
                } else {
                    // Neither: say what was tried.
                    return Err(crate::spec::SpecError {
                        file: self.scenario_file.display().to_string(),
                        line: 0,
                        message: format!(
                            "cannot read the scenario file, and the catalog has no {} either \
                             (this failure file predates failure files that carry their scenario)",
                            by_name.display()
                        ),
                    });
                }
            }
        };
        Ok(match self.storage {
            Some(kind) => scenario.with_storage(kind),
            None => scenario,
        })
    }

    /// Reads a failure file.
    pub fn load(path: &Path) -> Result<Failure, FailureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FailureError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| FailureError::Format {
            path: path.display().to_string(),
            line: e.line(),
            message: e.to_string(),
        })
    }

    /// Writes it (pretty JSON), creating the directory.
    pub fn save(&self, path: &Path) -> Result<(), FailureError> {
        let io = |source| FailureError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).expect("a failure serializes");
        std::fs::write(path, text + "\n").map_err(io)
    }

    /// The file name a failure gets in a failures directory.
    pub fn file_name(&self) -> String {
        format!("{}-seed-{}.json", self.scenario, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::faults::{FaultMix, Schedule};

    #[test]
    fn a_failure_round_trips_through_its_file() {
        let failure = Failure {
            scenario: "random-faults".into(),
            scenario_file: "scenarios/catalog/random-faults.toml".into(),
            scenario_text: Some("summary = \"s\"\n".into()),
            seed: 42,
            invariants: vec!["liveness".into()],
            detail: "no master".into(),
            trace_hash: "00ff".into(),
            build: BUILD_ID.into(),
            schedule: Schedule::generate(42, 3, 10_000, &FaultMix::default()),
            storage: Some(sim::disk::StorageKind::File),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(failure.file_name());
        failure.save(&path).unwrap();
        assert_eq!(Failure::load(&path).unwrap(), failure);
    }

    #[test]
    fn a_file_that_is_not_a_failure_is_refused_with_its_name_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\n  \"scenario\": \"x\",\n  \"sede\": 1\n}\n").unwrap();
        let err = Failure::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.json:3:"), "{err}");
        assert!(err.contains("sede"), "{err}");
    }
}
