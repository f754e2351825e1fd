//! Renders repsim run and suite results for people (HTML pages with a timeline, and Markdown)
//! and for CI (JUnit XML).
//!
//! Reports only read [`RunResult`]s: they never run a scenario, never know the CLI or scenario
//! files (the caller says how to replay a run through [`ReplayCommand`]), and never read the wall
//! clock or iterate a hash map: the same runs always render to the same bytes, so reports can be
//! snapshotted and diffed between builds.
//!
//! Runs are grouped by scenario in the order each scenario is first seen, and within a scenario
//! they keep the order given: the caller's order (catalog order, seed order) is the reader's.

pub mod html;
pub mod junit;
pub mod markdown;
mod timeline;
mod xml;

pub use sim;

use sim::result::{RunResult, Tallies};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// How a reader reproduces a run (the CLI supplies e.g. "cargo sim run minority-master --seed 7").
pub type ReplayCommand<'a> = &'a dyn Fn(&RunResult) -> String;

/// Writes `index.md` (markdown::suite) plus one `<scenario>-seed-<N>.md` (markdown::run) per
/// failing run into `dir` (created if missing), and `index.html` plus one
/// `<scenario>-seed-<N>.html` page (html::run_page) per run. Returns the Markdown index's path.
/// Errors name the path.
///
/// A scenario name is made safe for a file name (characters other than ASCII letters, digits,
/// `.`, `_` and `-` become `_`), and a name already taken (the same scenario and seed twice, or
/// two names that differ only in unsafe characters or in case) gets `-2`, `-3`, ... so no page
/// overwrites another. The index links every failure to its page.
pub fn write_report_dir(
    dir: &Path,
    title: &str,
    runs: &[RunResult],
    replay: ReplayCommand,
) -> io::Result<PathBuf> {
    let cells: Vec<html::Cell> = runs.iter().map(cell_of).collect();
    write_summary_dir(dir, title, &Tallies::of(runs), runs, &cells, replay)
}

/// The grid cell of a run.
pub fn cell_of(run: &RunResult) -> html::Cell {
    html::Cell {
        scenario: run.scenario.clone(),
        seed: run.seed,
        failed: is_failure(run),
        sim_ms: run.sim_ms,
        page: None,
    }
}

/// [`write_report_dir`] for runs that were added up as they finished (an exploration keeps
/// `tallies` of every run and lists only its failures, or with `--all` every run, in `listed`;
/// `cells` has every run's outcome for the HTML grid).
pub fn write_summary_dir(
    dir: &Path,
    title: &str,
    tallies: &Tallies,
    listed: &[RunResult],
    cells: &[html::Cell],
    replay: ReplayCommand,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(naming(dir))?;
    let pages = failure_page_names(listed);
    for (run, page) in listed.iter().zip(&pages) {
        if let Some(page) = page {
            write_file(&dir.join(page), &markdown::run(run, replay))?;
        }
    }
    let html_pages = page_names(listed, "html");
    let mut cells = cells.to_vec();
    for (run, page) in listed.iter().zip(&html_pages) {
        write_file(&dir.join(page), &html::run_page(run, replay))?;
        if let Some(cell) = cells
            .iter_mut()
            .find(|c| c.scenario == run.scenario && c.seed == run.seed)
        {
            cell.page = Some(page.clone());
        }
    }
    let by_cell: BTreeMap<(&str, u64), &RunResult> = listed
        .iter()
        .map(|r| ((r.scenario.as_str(), r.seed), r))
        .collect();
    // The caller knows how to replay; a run not listed is asked about through its identity.
    let replay_of = |c: &html::Cell| match by_cell.get(&(c.scenario.as_str(), c.seed)) {
        Some(run) => replay(run),
        None => replay(&RunResult {
            scenario: c.scenario.clone(),
            seed: c.seed,
            outcome: if c.failed {
                sim::result::RunOutcome::Fail
            } else {
                sim::result::RunOutcome::Pass
            },
            violations: Vec::new(),
            trace_hash: String::new(),
            sim_ms: c.sim_ms,
            counts: Default::default(),
            reached: Default::default(),
            trace: Vec::new(),
            sites: Vec::new(),
            history: Vec::new(),
        }),
    };
    write_file(
        &dir.join("index.html"),
        &html::index_page(title, tallies, &cells, &replay_of),
    )?;
    let index = dir.join("index.md");
    write_file(
        &index,
        &markdown::render_suite(title, tallies, listed, replay, &pages),
    )?;
    Ok(index)
}

/// A page file name with extension `ext` for every run, none taken twice.
fn page_names(runs: &[RunResult], ext: &str) -> Vec<String> {
    let mut taken = BTreeSet::new();
    runs.iter()
        .map(|run| {
            let stem = format!("{}-seed-{}", file_safe(&run.scenario), run.seed);
            let mut name = format!("{stem}.{ext}");
            let mut n = 2;
            while !taken.insert(name.to_lowercase()) {
                name = format!("{stem}-{n}.{ext}");
                n += 1;
            }
            name
        })
        .collect()
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text).map_err(naming(path))
}

/// Wraps an I/O error so its message says which path it was about: `std::io::Error` alone
/// says "Permission denied" and leaves the user guessing where.
fn naming(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |error| io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// The page file name of each failing run (None for a passing one), parallel to `runs`.
fn failure_page_names(runs: &[RunResult]) -> Vec<Option<String>> {
    // Compared in lower case: on case-insensitive file systems "A" and "a" are one file.
    let mut taken = BTreeSet::new();
    runs.iter()
        .map(|run| {
            if !is_failure(run) {
                return None;
            }
            let stem = format!("{}-seed-{}", file_safe(&run.scenario), run.seed);
            let mut name = format!("{stem}.md");
            let mut n = 2;
            while !taken.insert(name.to_lowercase()) {
                name = format!("{stem}-{n}.md");
                n += 1;
            }
            Some(name)
        })
        .collect()
}

/// `name` with every character that is not safe in a file name on common systems replaced.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether a run counts as failed. A violation fails the run even if its outcome says pass:
/// the two fields are set together by the simulator, and if they ever disagree a report must not
/// hide a broken invariant behind a green line.
pub(crate) fn is_failure(run: &RunResult) -> bool {
    run.failed()
}

/// The runs of one scenario, in the order given.
pub(crate) struct ScenarioRuns<'a> {
    /// The scenario's name.
    pub(crate) scenario: &'a str,
    /// Its runs, each with its position in the input (to find what belongs to it, like its page).
    pub(crate) runs: Vec<(usize, &'a RunResult)>,
}

impl ScenarioRuns<'_> {
    /// How many of the runs failed.
    pub(crate) fn failed(&self) -> usize {
        self.runs.iter().filter(|(_, r)| is_failure(r)).count()
    }

    /// Simulated milliseconds over all the runs.
    pub(crate) fn sim_ms(&self) -> u64 {
        self.runs.iter().map(|(_, r)| r.sim_ms).sum()
    }
}

/// Groups runs by scenario, in the order each scenario is first seen.
pub(crate) fn by_scenario(runs: &[RunResult]) -> Vec<ScenarioRuns<'_>> {
    let mut groups: Vec<ScenarioRuns> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (position, run) in runs.iter().enumerate() {
        let i = *index.entry(&run.scenario).or_insert_with(|| {
            groups.push(ScenarioRuns {
                scenario: &run.scenario,
                runs: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].runs.push((position, run));
    }
    groups
}

/// Milliseconds as seconds with three decimals ("12.345"): simulated time is whole
/// milliseconds, so this is exact.
pub(crate) fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Writes a character that no report should carry raw (a control character other than tab and
/// line breaks: XML 1.0 forbids most of them, and in Markdown they are invisible garbage or
/// terminal escapes) in a visible form, as Rust writes it: `\u{1b}`. Returns false for any other
/// character.
pub(crate) fn push_visible_control(out: &mut String, c: char) -> bool {
    let is_forbidden = (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{fffe}' | '\u{ffff}');
    if is_forbidden {
        out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
    }
    is_forbidden
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sim::check::Violation;
    use sim::result::{Counts, RunOutcome};

    /// A run with nothing in it but its identity and outcome.
    pub(crate) fn run(scenario: &str, seed: u64, outcome: RunOutcome) -> RunResult {
        let violations = match outcome {
            RunOutcome::Pass => Vec::new(),
            RunOutcome::Fail => vec![Violation {
                invariant: "liveness".into(),
                site: None,
                at_ms: None,
                detail: "stuck".into(),
            }],
        };
        RunResult {
            scenario: scenario.into(),
            seed,
            outcome,
            violations,
            trace_hash: format!("{seed:016x}"),
            sim_ms: 1000 * seed,
            counts: Counts::default(),
            reached: Default::default(),
            trace: Vec::new(),
            sites: Vec::new(),
            history: Vec::new(),
        }
    }

    #[test]
    fn runs_are_grouped_by_first_seen_scenario_and_keep_their_order() {
        let runs = [
            run("b", 3, RunOutcome::Pass),
            run("a", 1, RunOutcome::Pass),
            run("b", 1, RunOutcome::Fail),
            run("a", 2, RunOutcome::Pass),
        ];
        let groups = by_scenario(&runs);
        let names: Vec<_> = groups.iter().map(|g| g.scenario).collect();
        assert_eq!(names, ["b", "a"]);
        let seeds: Vec<_> = groups[0].runs.iter().map(|(_, r)| r.seed).collect();
        assert_eq!(seeds, [3, 1]);
        let positions: Vec<_> = groups[1].runs.iter().map(|(i, _)| *i).collect();
        assert_eq!(positions, [1, 3]);
        assert_eq!(groups[0].failed(), 1);
        assert_eq!(groups[1].failed(), 0);
        assert_eq!(groups[0].sim_ms(), 4000);
    }

    #[test]
    fn a_violation_fails_a_run_whatever_its_outcome_says() {
        let mut r = run("a", 1, RunOutcome::Pass);
        assert!(!is_failure(&r));
        r.violations = run("a", 1, RunOutcome::Fail).violations;
        assert!(is_failure(&r));
        assert!(is_failure(&run("a", 1, RunOutcome::Fail)));
    }

    #[test]
    fn seconds_keep_every_millisecond() {
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(7), "0.007");
        assert_eq!(seconds(12_345), "12.345");
        assert_eq!(seconds(60_000), "60.000");
    }

    #[test]
    fn page_names_are_file_safe_and_never_collide() {
        let runs = [
            run("a/b", 1, RunOutcome::Fail),
            run("a_b", 1, RunOutcome::Fail),
            run("A_B", 1, RunOutcome::Fail),
            run("ok", 2, RunOutcome::Pass),
            run("../up", 3, RunOutcome::Fail),
        ];
        let names = failure_page_names(&runs);
        assert_eq!(
            names,
            [
                Some("a_b-seed-1.md".to_string()),
                Some("a_b-seed-1-2.md".to_string()),
                Some("A_B-seed-1-3.md".to_string()),
                None,
                Some(".._up-seed-3.md".to_string()),
            ]
        );
    }

    #[test]
    fn forbidden_control_characters_become_visible_escapes() {
        let mut out = String::new();
        for c in "a\u{0}\u{1b}\t\n\u{7f}\u{ffff}é".chars() {
            if !push_visible_control(&mut out, c) {
                out.push(c);
            }
        }
        assert_eq!(out, "a\\u{0}\\u{1b}\t\n\\u{7f}\\u{ffff}é");
    }

    #[test]
    fn the_report_dir_has_indexes_a_markdown_page_per_failure_and_an_html_page_per_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("new").join("report");
        let runs = [
            run("a", 1, RunOutcome::Pass),
            run("a", 2, RunOutcome::Fail),
            run("b", 3, RunOutcome::Fail),
        ];
        let replay = |r: &RunResult| format!("replay {} {}", r.scenario, r.seed);
        let index = write_report_dir(&out, "Suite", &runs, &replay).expect("written");
        assert_eq!(index, out.join("index.md"));
        let mut files: Vec<_> = std::fs::read_dir(&out)
            .expect("listed")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "a-seed-1.html",
                "a-seed-2.html",
                "a-seed-2.md",
                "b-seed-3.html",
                "b-seed-3.md",
                "index.html",
                "index.md"
            ]
        );
        let index_text = std::fs::read_to_string(&index).expect("index");
        assert!(index_text.contains("(a-seed-2.md)"), "{index_text}");
        let page = std::fs::read_to_string(out.join("b-seed-3.md")).expect("page");
        assert!(page.contains("replay b 3"), "{page}");
        let grid = std::fs::read_to_string(out.join("index.html")).expect("html index");
        assert!(
            grid.contains(r#"<a href="a-seed-2.html">fail</a>"#),
            "{grid}"
        );
        assert!(
            grid.contains(r#"<a href="a-seed-1.html">pass</a>"#),
            "{grid}"
        );
        let page = std::fs::read_to_string(out.join("b-seed-3.html")).expect("html page");
        assert!(page.contains("replay b 3"), "{page}");
    }

    #[test]
    fn a_summary_of_tallies_and_failures_reads_like_the_suite_of_every_run() {
        let runs = [
            run("b", 1, RunOutcome::Fail),
            run("a", 2, RunOutcome::Pass),
            run("b", 3, RunOutcome::Pass),
            run("a", 4, RunOutcome::Fail),
        ];
        let failures: Vec<RunResult> = runs.iter().filter(|r| r.failed()).cloned().collect();
        let replay = |r: &RunResult| format!("replay {} {}", r.scenario, r.seed);
        assert_eq!(
            markdown::summary("S", &Tallies::of(&runs), &failures, &replay),
            markdown::suite("S", &runs, &replay)
        );
    }

    #[test]
    fn a_report_dir_error_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("file");
        let replay = |_: &RunResult| String::new();
        let error = write_report_dir(&file, "Suite", &[], &replay).expect_err("a file");
        assert!(
            error.to_string().contains(&file.display().to_string()),
            "{error}"
        );
    }
}
