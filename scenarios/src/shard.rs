//! Exploration split across processes and machines. `explore --shard K/N` runs one of N disjoint
//! slices of a seed range and writes a result file (JSON lines: a header saying what was run by
//! which build, then one line per seed); `merge` joins result files into one summary, refusing
//! files that do not belong together and saying which seeds no file covers.
//!
//! A run is a function of (scenario, seed, build), so a seed's line is the same whichever shard,
//! process or machine ran it: merging the shards of a range gives exactly what one `explore`
//! over the range gives (`scenarios/tests/shard_cli.rs` checks it on 2,000 seeds).

use crate::failure::Failure;
use serde::{Deserialize, Serialize};
use sim::check::Violation;
use sim::coverage::Coverage;
use sim::disk::StorageKind;
use sim::result::{Counts, RunOutcome, RunResult};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One of `count` slices of a seed range (`index` counts from 1, as people do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Which slice, 1..=count.
    pub index: u64,
    /// How many slices.
    pub count: u64,
}

impl Shard {
    /// The whole range as one slice.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Reads `K/N` with 1 <= K <= N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("expected a shard as K/N with 1 <= K <= N, not {text:?}");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            k.trim().parse::<u64>().map_err(|_| bad())?,
            n.trim().parse::<u64>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether `seed` of the range starting at `start` is this slice's. Seeds are dealt round
    /// robin from the range's start, so every slice gets a like share of early and late seeds,
    /// and a seed always lands in the same slice of the same range, whoever runs it.
    pub fn holds(&self, start: u64, seed: u64) -> bool {
        seed >= start && (seed - start) % self.count == self.index - 1
    }

    /// This slice's seeds of `range`, in order.
    pub fn seeds(self, range: Range<u64>) -> impl Iterator<Item = u64> {
        let start = range.start;
        range.filter(move |&seed| self.holds(start, seed))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One line of a result file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResultLine {
    /// The first line: what was run, by which build.
    Header(Header),
    /// One line per seed, in seed order.
    Run(RunLine),
}

/// What a result file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The build that ran the seeds ([`crate::failure::BUILD_ID`]).
    pub build: String,
    /// The scenario's name.
    pub scenario: String,
    /// The scenario's text: two files of one name but different texts do not merge.
    pub scenario_text: String,
    /// The storage the command line forced, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageKind>,
    /// The seed range the shards split (end excluded).
    pub seeds: Range<u64>,
    /// Which slice of it this file is.
    pub shard: Shard,
}

/// One seed's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunLine {
    /// The seed.
    pub seed: u64,
    /// Pass or fail.
    pub outcome: RunOutcome,
    /// The run's trace hash: equal for equal runs.
    pub trace_hash: String,
    /// Simulated milliseconds.
    pub sim_ms: u64,
    /// What happened, counted.
    pub counts: Counts,
    /// The behaviours it reached.
    pub reached: Coverage,
    /// The broken invariants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// For a failing run, its failure file's contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Box<Failure>>,
}

impl RunLine {
    /// The line of `result`, with the failure file a failing run saved.
    pub fn of(result: &RunResult, failure: Option<Failure>) -> RunLine {
        RunLine {
            seed: result.seed,
            outcome: result.outcome,
            trace_hash: result.trace_hash.clone(),
            sim_ms: result.sim_ms,
            counts: result.counts.clone(),
            reached: result.reached.clone(),
            violations: result.violations.clone(),
            failure: failure.map(Box::new),
        }
    }

    /// The run as the reports and tallies take it (without its trace, which is not kept).
    pub fn to_result(&self, scenario: &str) -> RunResult {
        RunResult {
            scenario: scenario.into(),
            seed: self.seed,
            outcome: self.outcome,
            violations: self.violations.clone(),
            trace_hash: self.trace_hash.clone(),
            sim_ms: self.sim_ms,
            counts: self.counts.clone(),
            reached: self.reached.clone(),
            trace: Vec::new(),
            sites: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Whether the run failed.
    pub fn failed(&self) -> bool {
        self.to_result("").failed()
    }
}

/// Writes a result file as the runs come in.
pub struct ResultWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl ResultWriter {
    /// Creates `path` (and its directory) and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<ResultWriter, String> {
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::File::create(path).map_err(io)?;
        let mut writer = ResultWriter {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
        };
        writer.line(&ResultLine::Header(header.clone()))?;
        Ok(writer)
    }

    /// Adds one seed's line.
    pub fn run(&mut self, line: RunLine) -> Result<(), String> {
        self.line(&ResultLine::Run(line))
    }

    fn line(&mut self, line: &ResultLine) -> Result<(), String> {
        let io = |e: std::io::Error| format!("{}: {e}", self.path.display());
        serde_json::to_writer(&mut self.out, line).map_err(|e| e.to_string())?;
        self.out.write_all(b"\n").map_err(io)
    }

    /// Flushes what is written.
    pub fn finish(mut self) -> Result<(), String> {
        self.out
            .flush()
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Why result files could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not what a result file holds.
    #[error("{path}:{line}: {message}")]
    Format {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What was expected.
        message: String,
    },
    /// Two files were written by different builds, whose runs of one seed may differ.
    #[error(
        "{a} was written by build {a_build} and {b} by build {b_build}: the same seed may run \
         differently on different builds (pass --any-build to merge them all the same)"
    )]
    MixedBuilds {
        /// One file.
        a: String,
        /// Its build.
        a_build: String,
        /// Another.
        b: String,
        /// Its build.
        b_build: String,
    },
    /// Two files ran different scenarios (or one name with different texts or storage).
    #[error(
        "{a} ran {a_scenario} and {b} ran {b_scenario}{how}: pass --any-scenario to merge \
         different scenarios"
    )]
    MixedScenarios {
        /// One file.
        a: String,
        /// Its scenario.
        a_scenario: String,
        /// Another.
        b: String,
        /// Its scenario.
        b_scenario: String,
        /// What differs when the names are the same.
        how: &'static str,
    },
    /// One seed of one scenario is in two files: the shards overlap.
    #[error("seed {seed} of {scenario} is in both {a} and {b}: the files overlap")]
    Overlap {
        /// The scenario.
        scenario: String,
        /// The seed.
        seed: u64,
        /// One file.
        a: String,
        /// Another.
        b: String,
    },
}

/// Result files joined.
#[derive(Debug, Default)]
pub struct Merged {
    /// Every file's header, in the order given.
    pub files: Vec<(PathBuf, Header)>,
    /// Every run, by scenario then seed.
    pub runs: BTreeMap<(String, u64), RunLine>,
    /// What the files do not cover of the ranges they were cut from, for people.
    pub gaps: Vec<String>,
}

/// What may differ between merged files.
#[derive(Clone, Copy, Debug, Default)]
pub struct MergeRules {
    /// Files of different builds merge.
    pub any_build: bool,
    /// Files of different scenarios merge.
    pub any_scenario: bool,
}

/// Reads one result file: its header and its runs.
pub fn read_result_file(path: &Path) -> Result<(Header, Vec<RunLine>), MergeError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| MergeError::Io {
        path: name.clone(),
        source,
    })?;
    let mut header = None;
    let mut runs = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| MergeError::Io {
            path: name.clone(),
            source,
        })?;
        let bad = |message: String| MergeError::Format {
            path: name.clone(),
            line: i + 1,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ResultLine = serde_json::from_str(&line).map_err(|e| {
            bad(format!(
                "expected a result line (JSON with \"kind\": \"header\" or \"run\"): {e}"
            ))
        })?;
        match (parsed, &header) {
            (ResultLine::Header(h), None) => header = Some(h),
            (ResultLine::Header(_), Some(_)) => {
                return Err(bad("a second header: one file holds one shard".into()))
            }
            (ResultLine::Run(_), None) => {
                return Err(bad(
                    "a run before the header: a result file starts with its header".into(),
                ))
            }
            (ResultLine::Run(run), Some(h)) => {
                if let Some(last) = runs.last().map(|r: &RunLine| r.seed) {
                    if run.seed <= last {
                        return Err(bad(format!(
                            "seed {} after seed {last}: runs are in seed order",
                            run.seed
                        )));
                    }
                }
                if !h.seeds.contains(&run.seed) || !h.shard.holds(h.seeds.start, run.seed) {
                    return Err(bad(format!(
                        "seed {} is not in shard {} of seeds {}..{}",
                        run.seed, h.shard, h.seeds.start, h.seeds.end
                    )));
                }
                runs.push(run);
            }
        }
    }
    let header = header.ok_or_else(|| MergeError::Format {
        path: name,
        line: 1,
        message: "empty: a result file starts with its header".into(),
    })?;
    Ok((header, runs))
}

/// Merges result files under `rules`.
pub fn merge(paths: &[PathBuf], rules: MergeRules) -> Result<Merged, MergeError> {
    let mut merged = Merged::default();
    let mut from: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for path in paths {
        let (header, runs) = read_result_file(path)?;
        let shown = path.display().to_string();
        if let Some((first_path, first)) = merged.files.first() {
            let first_shown = first_path.display().to_string();
            if !rules.any_build && first.build != header.build {
                return Err(MergeError::MixedBuilds {
                    a: first_shown,
                    a_build: first.build.clone(),
                    b: shown,
                    b_build: header.build,
                });
            }
            let how = if first.scenario != header.scenario {
                Some("")
            } else if first.scenario_text != header.scenario_text {
                Some(" (the same name, different texts)")
            } else if first.storage != header.storage {
                Some(" (on different storage)")
            } else {
                None
            };
            if let (Some(how), false) = (how, rules.any_scenario) {
                return Err(MergeError::MixedScenarios {
                    a: first_shown,
                    a_scenario: first.scenario.clone(),
                    b: shown,
                    b_scenario: header.scenario,
                    how,
                });
            }
        }
        let file_index = merged.files.len();
        for run in runs {
            let key = (header.scenario.clone(), run.seed);
            if let Some(&other) = from.get(&key) {
                return Err(MergeError::Overlap {
                    scenario: key.0,
                    seed: key.1,
                    a: merged.files[other].0.display().to_string(),
                    b: shown,
                });
            }
            from.insert(key.clone(), file_index);
            merged.runs.insert(key, run);
        }
        merged.files.push((path.clone(), header));
    }
    merged.gaps = gaps(&merged);
    Ok(merged)
}

/// For every range the files were cut from, the shards no file holds and the files that hold
/// fewer seeds than their shard has (a run stopped early).
fn gaps(merged: &Merged) -> Vec<String> {
    let mut gaps = Vec::new();
    // (scenario, start, end, count) -> shards present
    let mut cuts: BTreeMap<(String, u64, u64, u64), Vec<u64>> = BTreeMap::new();
    for (path, h) in &merged.files {
        cuts.entry((
            h.scenario.clone(),
            h.seeds.start,
            h.seeds.end,
            h.shard.count,
        ))
        .or_default()
        .push(h.shard.index);
        let expected = h.shard.seeds(h.seeds.clone()).count();
        let held = h
            .shard
            .seeds(h.seeds.clone())
            .filter(|&s| merged.runs.contains_key(&(h.scenario.clone(), s)))
            .count();
        if held < expected {
            gaps.push(format!(
                "{}: shard {} of {} seeds {}..{} holds {held} of its {expected} seeds (the run \
                 stopped early?)",
                path.display(),
                h.shard,
                h.scenario,
                h.seeds.start,
                h.seeds.end
            ));
        }
    }
    for ((scenario, start, end, count), present) in cuts {
        let missing: Vec<String> = (1..=count)
            .filter(|k| !present.contains(k))
            .map(|k| format!("{k}/{count}"))
            .collect();
        if !missing.is_empty() {
            gaps.push(format!(
                "{scenario} seeds {start}..{end}: no file for shard {}",
                missing.join(", ")
            ));
        }
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_deal_every_seed_to_exactly_one() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "4", "a/b", "1/0", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let range = 7..107;
        let mut seen: Vec<u64> = (1..=4)
            .flat_map(|k| Shard { index: k, count: 4 }.seeds(range.clone()))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, range.clone().collect::<Vec<_>>());
        let sizes: Vec<usize> = (1..=3)
            .map(|k| Shard { index: k, count: 3 }.seeds(range.clone()).count())
            .collect();
        assert_eq!(sizes, [34, 33, 33], "as even as the range allows");
        assert!(Shard::WHOLE.seeds(range.clone()).eq(range));
    }

    fn header(scenario: &str, shard: Shard) -> Header {
        Header {
            build: "0.1.0+abc".into(),
            scenario: scenario.into(),
            scenario_text: "summary = \"x\"".into(),
            storage: None,
            seeds: 1..9,
            shard,
        }
    }

    fn run(seed: u64, outcome: RunOutcome) -> RunLine {
        RunLine {
            seed,
            outcome,
            trace_hash: format!("h{seed}"),
            sim_ms: 1000,
            counts: Counts::default(),
            reached: Coverage::new(),
            violations: Vec::new(),
            failure: None,
        }
    }

    fn write(dir: &Path, name: &str, header: &Header, seeds: &[u64]) -> PathBuf {
        let path = dir.join(name);
        let mut w = ResultWriter::create(&path, header).unwrap();
        for &seed in seeds {
            w.run(run(seed, RunOutcome::Pass)).unwrap();
        }
        w.finish().unwrap();
        path
    }

    fn shard(index: u64, count: u64) -> Shard {
        Shard { index, count }
    }

    #[test]
    fn shards_merge_into_every_seed_and_gaps_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", &header("s", shard(1, 3)), &[1, 4, 7]);
        let b = write(dir.path(), "b", &header("s", shard(2, 3)), &[2, 5, 8]);
        let c = write(dir.path(), "c", &header("s", shard(3, 3)), &[3, 6]);
        let merged = merge(&[a.clone(), b.clone(), c], MergeRules::default()).unwrap();
        assert_eq!(merged.runs.len(), 8);
        assert!(merged.gaps.is_empty(), "{:?}", merged.gaps);
        let c_short = write(dir.path(), "c2", &header("s", shard(3, 3)), &[3]);
        let merged = merge(&[a.clone(), b.clone(), c_short], MergeRules::default()).unwrap();
        assert_eq!(merged.gaps.len(), 1);
        assert!(
            merged.gaps[0].contains("holds 1 of its 2 seeds"),
            "{:?}",
            merged.gaps
        );
        let merged = merge(&[a.clone(), b], MergeRules::default()).unwrap();
        assert_eq!(merged.gaps, ["s seeds 1..9: no file for shard 3/3"]);
        // The same shard twice overlaps.
        let err = merge(&[a.clone(), a], MergeRules::default()).unwrap_err();
        assert!(matches!(err, MergeError::Overlap { seed: 1, .. }), "{err}");
    }

    #[test]
    fn files_of_other_builds_or_scenarios_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", &header("s", shard(1, 2)), &[1]);
        let mut other_build = header("s", shard(2, 2));
        other_build.build = "0.1.0+def".into();
        let b = write(dir.path(), "b", &other_build, &[2]);
        let err = merge(&[a.clone(), b.clone()], MergeRules::default()).unwrap_err();
        assert!(err.to_string().contains("--any-build"), "{err}");
        let rules = MergeRules {
            any_build: true,
            ..MergeRules::default()
        };
        assert_eq!(merge(&[a.clone(), b], rules).unwrap().runs.len(), 2);
        let mut edited = header("s", shard(2, 2));
        edited.scenario_text.push_str("\n# edited");
        let c = write(dir.path(), "c", &edited, &[2]);
        let err = merge(&[a.clone(), c.clone()], MergeRules::default()).unwrap_err();
        assert!(err.to_string().contains("different texts"), "{err}");
        let d = write(dir.path(), "d", &header("t", shard(1, 1)), &[1]);
        let err = merge(&[a.clone(), d.clone()], MergeRules::default()).unwrap_err();
        assert!(err.to_string().contains("--any-scenario"), "{err}");
        let rules = MergeRules {
            any_scenario: true,
            ..MergeRules::default()
        };
        // Seed 1 of two scenarios is two runs, not an overlap.
        assert_eq!(merge(&[a, d], rules).unwrap().runs.len(), 2);
    }

    #[test]
    fn a_damaged_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", &header("s", shard(1, 2)), &[1, 3]);
        let text = std::fs::read_to_string(&a).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "{\"kind\":\"run\",\"seed\":";
        std::fs::write(&a, lines.join("\n")).unwrap();
        let err = merge(&[a], MergeRules::default()).unwrap_err().to_string();
        assert!(err.contains("a:3: expected a result line"), "{err}");
        let b = dir.path().join("b");
        std::fs::write(&b, "").unwrap();
        let err = merge(&[b], MergeRules::default()).unwrap_err().to_string();
        assert!(err.contains("starts with its header"), "{err}");
        // A seed that is not the shard's: the file was not written by explore --shard.
        let c = write(dir.path(), "c", &header("s", shard(1, 2)), &[2]);
        let err = merge(&[c], MergeRules::default()).unwrap_err().to_string();
        assert!(err.contains("seed 2 is not in shard 1/2"), "{err}");
    }
}
