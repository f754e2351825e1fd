//! `repsim`: the simulation command line (run it as `cargo sim ...`).
//!
//! Every command prints how to replay what failed. Exit status: 0 when every run passed, 1 when
//! a run broke an invariant, 2 for bad input (a scenario file, a failure file, an argument).

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Deterministic simulation of a Berkeley-DB-style replication group: play scenarios with a
/// seed, explore seeds, replay and shrink failures, run the whole catalog.
#[derive(Parser, Debug)]
#[command(name = "repsim", version = scenarios::failure::BUILD_ID)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the scenarios of the catalog (or of DIR).
    List {
        /// Scenario directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one scenario with one seed.
    Run {
        /// A catalog name or a path to a .toml file.
        scenario: String,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        storage: StorageArg,
        /// Print the trace too.
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Run one scenario over a range of seeds; save every failure.
    Explore {
        /// A catalog name or a path to a .toml file.
        scenario: String,
        /// Seeds, as A..B (B excluded) or A..=B.
        #[arg(long, value_parser = parse_seeds)]
        seeds: SeedRange,
        /// Parallel runs (one simulation runtime per worker thread).
        #[arg(long, default_value_t = default_jobs())]
        jobs: usize,
        /// Stop at the first failure.
        #[arg(long)]
        stop_at_first: bool,
        /// Run only slice K of N of the seeds, dealt round robin from the range's start (a
        /// seed's run is the same whichever slice runs it); writes a result file for `merge`.
        #[arg(long, value_name = "K/N", value_parser = scenarios::shard::Shard::parse)]
        shard: Option<scenarios::shard::Shard>,
        /// Write each seed's result to FILE as JSON lines, for `merge` (default with `--shard`:
        /// `results/<scenario>-shard-K-of-N.jsonl`).
        #[arg(long, value_name = "FILE")]
        results: Option<PathBuf>,
        #[command(flatten)]
        storage: StorageArg,
        /// Where failure files go.
        #[arg(long, default_value = "failures")]
        failures: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Merge the result files of `explore --shard` (or `--results`) into one summary: counts,
    /// coverage, failures (saved as failure files) with their replay commands. Exits 1 when a
    /// seed failed or the files leave seeds of their range unrun.
    Merge {
        /// Result files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Merge files written by different builds (a seed may run differently on each).
        #[arg(long)]
        any_build: bool,
        /// Merge files of different scenarios.
        #[arg(long)]
        any_scenario: bool,
        /// Also write the merged runs as one result file (one scenario and range only).
        #[arg(long, value_name = "FILE")]
        results: Option<PathBuf>,
        /// Where failure files go.
        #[arg(long, default_value = "failures")]
        failures: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Replay a failure file exactly.
    Replay {
        /// The failure file.
        file: PathBuf,
        /// Print the trace too.
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Shrink a failure file's fault schedule while the same invariant still breaks.
    Shrink {
        /// The failure file.
        file: PathBuf,
        /// Where the smaller failure goes (default: next to it, with `.shrunk.json`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure failover: lose the master of a group with default timeouts once per seed, and
    /// print how long the group went without one (p50, p99, worst) and how often an election
    /// failed on the way.
    Failover {
        /// Group sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "3,5")]
        sites: Vec<usize>,
        /// How the master is lost: `crash` (connections break) or `pause` (it goes silent).
        #[arg(long, default_value = "crash", value_parser = parse_loss)]
        fault: LossArg,
        /// Seeds, as A..B (B excluded) or A..=B.
        #[arg(long, value_parser = parse_seeds, default_value = "1..201")]
        seeds: SeedRange,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print each run's trace from the fault to the new master (use with one seed).
        #[arg(long)]
        trace: bool,
    },
    /// Measure joins: a site joins a group through its master, another through a client, once
    /// per seed; print the time from start to StartupDone (p50, p99, worst) and how many joins
    /// reported anything besides BecameClient, NewMaster and StartupDone.
    Join {
        /// Seeds, as A..B (B excluded) or A..=B.
        #[arg(long, value_parser = parse_seeds, default_value = "1..201")]
        seeds: SeedRange,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run every scenario in the catalog (or DIR) on K seeds; fail on any violation.
    Suite {
        /// Scenario directory.
        dir: Option<PathBuf>,
        /// Seeds per scenario (1..=K).
        #[arg(long, default_value_t = 8)]
        seeds: u64,
        #[command(flatten)]
        storage: StorageArg,
        /// Parallel runs.
        #[arg(long, default_value_t = default_jobs())]
        jobs: usize,
        /// Where failure files go.
        #[arg(long, default_value = "failures")]
        failures: PathBuf,
        #[command(flatten)]
        out: Output,
    },
}

/// `--storage`, shared by the run commands.
#[derive(Args, Debug, Default)]
struct StorageArg {
    /// Run every site on this storage, whatever the scenario says: `memory` (the in-memory
    /// model) or `file` (the real FileStorage on a simulated filesystem). Failure files keep it.
    #[arg(long, value_name = "KIND", value_parser = parse_storage)]
    storage: Option<sim::disk::StorageKind>,
}

#[cfg_attr(not(madsim), allow(dead_code))]
impl StorageArg {
    /// `scenario` as the command line wants it run.
    fn apply(&self, scenario: scenarios::spec::Scenario) -> scenarios::spec::Scenario {
        match self.storage {
            Some(kind) => scenario.with_storage(kind),
            None => scenario,
        }
    }
}

fn parse_storage(text: &str) -> Result<sim::disk::StorageKind, String> {
    sim::disk::StorageKind::parse(text)
        .ok_or_else(|| format!("expected `memory` or `file`, not {text:?}"))
}

/// Output options shared by the run commands.
#[derive(Args, Debug, Default)]
struct Output {
    /// Print run results as JSON (one array) instead of text.
    #[arg(long)]
    json: bool,
    /// Write a Markdown report (index.md and a page per failure) into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Write JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// With --report: a page for every run, not only for the failures (keeps every run's trace
    /// until the end).
    #[arg(long, requires = "report")]
    all: bool,
}

/// `--fault` of `failover`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(madsim), allow(dead_code))]
struct LossArg(&'static str);

fn parse_loss(text: &str) -> Result<LossArg, String> {
    match text {
        "crash" => Ok(LossArg("crash")),
        "pause" => Ok(LossArg("pause")),
        _ => Err(format!("expected `crash` or `pause`, not {text:?}")),
    }
}

/// A range of seeds.
#[derive(Clone, Debug)]
#[cfg_attr(not(madsim), allow(dead_code))]
struct SeedRange(std::ops::Range<u64>);

fn parse_seeds(text: &str) -> Result<SeedRange, String> {
    let bad = || format!("expected seeds as A..B or A..=B, not {text:?}");
    let (a, b, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive { b + 1 } else { b };
    if end <= a {
        return Err(format!("the seed range {text:?} is empty"));
    }
    Ok(SeedRange(a..end))
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::dispatch(cli.command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("repsim: {message}");
            ExitCode::from(2)
        }
    }
}

/// The catalog directory of this source tree.
fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog")
}

/// Lists a scenario directory (no simulation needed, so every build has it).
pub(crate) fn list(dir: &Path, json: bool) -> Result<ExitCode, String> {
    let mut rows = Vec::new();
    for f in scenarios::spec::catalog_files(dir).map_err(|e| e.to_string())? {
        let s = scenarios::spec::Scenario::load(&f).map_err(|e| e.to_string())?;
        rows.push(s);
    }
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|s| serde_json::json!({ "name": s.name, "file": s.path, "summary": s.summary }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("json"));
    } else {
        let width = rows.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &rows {
            println!("{:width$}  {}", console::style(&s.name).bold(), s.summary);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `repsim merge` (no simulation needed, so every build has it).
pub(crate) fn merge(
    files: &[PathBuf],
    rules: scenarios::shard::MergeRules,
    results: Option<&Path>,
    failures_dir: &Path,
    out: &Output,
) -> Result<ExitCode, String> {
    use scenarios::shard::{ResultWriter, Shard};
    let merged = scenarios::shard::merge(files, rules).map_err(|e| e.to_string())?;
    let mut tallies = sim::result::Tallies::default();
    let mut failures = Vec::new();
    for ((scenario, _), line) in &merged.runs {
        let result = line.to_result(scenario);
        tallies.add(&result);
        if result.failed() {
            let path = match &line.failure {
                Some(failure) => {
                    let path = failures_dir.join(failure.file_name());
                    failure.save(&path).map_err(|e| e.to_string())?;
                    Some(path)
                }
                None => None,
            };
            failures.push((result, path));
        }
    }
    if let Some(path) = results {
        let (_, first) = merged.files.first().ok_or("no result file")?;
        if let Some((other, h)) = merged.files.iter().find(|(_, h)| {
            (&h.scenario, &h.scenario_text, h.storage, &h.seeds)
                != (
                    &first.scenario,
                    &first.scenario_text,
                    first.storage,
                    &first.seeds,
                )
        }) {
            return Err(format!(
                "--results writes one scenario's range, and {} holds {} seeds {}..{} where the                  first file holds {} seeds {}..{}",
                other.display(),
                h.scenario,
                h.seeds.start,
                h.seeds.end,
                first.scenario,
                first.seeds.start,
                first.seeds.end
            ));
        }
        let header = scenarios::shard::Header {
            shard: Shard::WHOLE,
            ..first.clone()
        };
        let mut writer = ResultWriter::create(path, &header)?;
        for line in merged.runs.values() {
            writer.run(line.clone())?;
        }
        writer.finish()?;
    }
    let title = format!("merge of {} result files", merged.files.len());
    if out.json {
        let runs: Vec<sim::result::RunResult> = merged
            .runs
            .iter()
            .map(|((scenario, _), line)| line.to_result(scenario))
            .collect();
        println!("{}", serde_json::to_string_pretty(&runs).expect("json"));
    } else {
        let (runs, failed) = (tallies.runs(), tallies.failed());
        let verdict = if failed == 0 {
            console::style("all passed".to_string()).green()
        } else {
            console::style(format!("{failed} failed")).red()
        };
        println!(
            "{runs} runs from {} files, {verdict}; {:.0} simulated s",
            merged.files.len(),
            tallies.sim_ms() as f64 / 1000.0
        );
        if tallies.0.len() == 1 {
            print_coverage(&tallies);
        }
        for gap in &merged.gaps {
            println!("{} {gap}", console::style("missing:").yellow());
        }
        for (r, path) in &failures {
            let replay = match path {
                Some(path) => format!("cargo sim replay {}", path.display()),
                None => format!("cargo sim run {} --seed {}", r.scenario, r.seed),
            };
            print_run(r, path.as_deref(), &replay);
        }
    }
    let listed: Vec<(sim::result::RunResult, PathBuf)> = failures
        .into_iter()
        .filter_map(|(r, path)| Some((r, path?)))
        .collect();
    let cells: Vec<reports::html::Cell> = merged
        .runs
        .iter()
        .map(|((scenario, _), line)| reports::cell_of(&line.to_result(scenario)))
        .collect();
    write_summary_reports(out, &title, &tallies, &listed, &[], &cells)?;
    Ok(if tallies.failed() > 0 || !merged.gaps.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The Markdown summary and JUnit XML of many runs, of which `failures` failed (with their
/// failure files).
///
/// `passed` are passing runs to give pages too (`--all`); `cells` is every run's outcome.
pub(crate) fn write_summary_reports(
    out: &Output,
    title: &str,
    tallies: &sim::result::Tallies,
    failures: &[(sim::result::RunResult, PathBuf)],
    passed: &[sim::result::RunResult],
    cells: &[reports::html::Cell],
) -> Result<(), String> {
    let listed: Vec<sim::result::RunResult> = failures
        .iter()
        .map(|(r, _)| r.clone())
        .chain(passed.iter().cloned())
        .collect();
    let replay_of = |r: &sim::result::RunResult| -> String {
        failures
            .iter()
            .find(|(f, _)| f.scenario == r.scenario && f.seed == r.seed)
            .map_or_else(
                || format!("cargo sim run {} --seed {}", r.scenario, r.seed),
                |(_, path)| format!("cargo sim replay {}", path.display()),
            )
    };
    if let Some(dir) = &out.report {
        let index = reports::write_summary_dir(dir, title, tallies, &listed, cells, &replay_of)
            .map_err(|e| e.to_string())?;
        if !out.json {
            println!("report: {}", index.display());
        }
    }
    if let Some(file) = &out.junit {
        let xml = reports::junit::summary(title, tallies, &listed, &replay_of);
        std::fs::write(file, xml).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// How many runs reached each behaviour; one that none reached is a hole in the swarm.
pub(crate) fn print_coverage(tallies: &sim::result::Tallies) {
    let runs = tallies.runs();
    println!("coverage (runs of {runs} that reached each behaviour):");
    for (name, what, reached) in tallies.coverage() {
        let count = format!("{reached:>7}");
        let count = if reached == 0 {
            console::style(count).yellow()
        } else {
            console::style(count)
        };
        println!("  {name:<26}{count}  {what}");
    }
}

/// Prints one run's line, its violations and, when it failed, how to replay it.
pub(crate) fn print_run(r: &sim::result::RunResult, failure_file: Option<&Path>, replay: &str) {
    use console::style;
    let verdict = if r.failed() {
        style("FAIL").red().bold()
    } else {
        style("PASS").green().bold()
    };
    println!(
        "{verdict} {} seed {}: {:.1} simulated s, {} elections, writes {} ok / {} failed / {} unknown, trace {}",
        r.scenario,
        r.seed,
        r.sim_ms as f64 / 1000.0,
        r.counts.elections,
        r.counts.writes_ok,
        r.counts.writes_failed,
        r.counts.writes_unknown,
        r.trace_hash
    );
    for v in &r.violations {
        let at = v.at_ms.map_or(String::new(), |ms| {
            format!(" at {:.3}s", ms as f64 / 1000.0)
        });
        let site = v.site.as_ref().map_or(String::new(), |s| {
            let addr = s.to_string();
            match r.site_name(&addr) {
                name if name == addr => format!(" on {addr}"),
                name => format!(" on {name} ({addr})"),
            }
        });
        println!(
            "  {} {}{site}{at}: {}",
            style("violation").red(),
            v.invariant,
            r.with_site_names(&v.detail)
        );
    }
    for line in r
        .trace
        .iter()
        .filter(|l| l.contains(" world expected violation "))
    {
        let shown = line
            .split_once(" world expected violation ")
            .map_or("", |(_, v)| v);
        println!(
            "  {} {}",
            style("expected violation").yellow(),
            r.with_site_names(shown)
        );
    }
    if r.failed() {
        if let Some(path) = failure_file {
            println!("  failure file: {}", path.display());
        }
        println!("  replay: {replay}");
    }
}

/// `merge` as both builds dispatch it.
fn merge_command(command: Command) -> Result<ExitCode, String> {
    let Command::Merge {
        files,
        any_build,
        any_scenario,
        results,
        failures,
        out,
    } = command
    else {
        unreachable!("called with merge only")
    };
    let rules = scenarios::shard::MergeRules {
        any_build,
        any_scenario,
    };
    merge(&files, rules, results.as_deref(), &failures, &out)
}

#[cfg(not(madsim))]
mod commands {
    use super::{catalog_dir, list, merge_command, Command};
    use std::process::ExitCode;

    /// Without `--cfg madsim` there is no simulator to run: say how to get one.
    pub fn dispatch(command: Command) -> Result<ExitCode, String> {
        match command {
            Command::List { dir, json } => list(&dir.unwrap_or_else(catalog_dir), json),
            merge @ Command::Merge { .. } => merge_command(merge),
            _ => Err("this build has no simulator: run repsim as `cargo sim ...` (it builds with --cfg madsim)".into()),
        }
    }
}

#[cfg(madsim)]
mod commands {
    use super::{
        catalog_dir, list, merge_command, print_coverage, print_run, write_summary_reports,
        Command, Output,
    };
    use console::style;
    use indicatif::{ProgressBar, ProgressStyle};
    use scenarios::failure::{Failure, BUILD_ID};
    use scenarios::run::{run, Played};
    use scenarios::shard::{Header, ResultWriter, RunLine, Shard};
    use scenarios::spec::{catalog_files, Scenario};
    use sim::check::Violation;
    use sim::result::{RunOutcome, RunResult, Tallies};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// `repsim failover`: one failover per seed and size, then the distribution.
    fn failover(
        sizes: &[usize],
        fault: super::LossArg,
        seeds: super::SeedRange,
        json: bool,
        trace: bool,
    ) -> Result<ExitCode, String> {
        use scenarios::failover::{measure, percentile, Loss};
        let loss = Loss::parse(fault.0).expect("validated by clap");
        let mut rows = Vec::new();
        for &sites in sizes {
            if sites < 2 {
                return Err(format!(
                    "--sites {sites}: a failover needs at least 2 sites"
                ));
            }
            let runs: Vec<_> = seeds.0.clone().map(|s| measure(sites, loss, s)).collect();
            if trace {
                for run in &runs {
                    println!("seed {}:\n{}", run.seed, run.trace.join("\n"));
                }
            }
            let mut ms: Vec<u64> = runs.iter().filter_map(|r| r.ms).collect();
            ms.sort_unstable();
            let never = runs.len() - ms.len();
            let with_failed = runs.iter().filter(|r| r.failed_elections > 0).count();
            rows.push(serde_json::json!({
                "sites": sites,
                "fault": fault.0,
                "seeds": runs.len(),
                "p50_ms": percentile(&ms, 50),
                "p99_ms": percentile(&ms, 99),
                "max_ms": ms.last(),
                "no_new_master": never,
                "failovers_with_a_failed_election": with_failed,
            }));
            if !json {
                let show = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
                println!(
                    "{sites} sites, master {}: p50 {}, p99 {}, worst {} over {} seeds; no new \
                     master in {never}; an election failed on the way in {with_failed} ({:.1}%)",
                    if loss == Loss::Crash {
                        "crashed"
                    } else {
                        "paused"
                    },
                    show(percentile(&ms, 50)),
                    show(percentile(&ms, 99)),
                    show(ms.last().copied()),
                    runs.len(),
                    100.0 * with_failed as f64 / runs.len().max(1) as f64,
                );
                let mut slowest: Vec<_> = runs.iter().collect();
                slowest.sort_by_key(|r| std::cmp::Reverse(r.ms.unwrap_or(u64::MAX)));
                let names: Vec<String> = slowest
                    .iter()
                    .take(3)
                    .map(|r| format!("{} ({})", r.seed, show(r.ms)))
                    .collect();
                println!("  slowest seeds: {}", names.join(", "));
            }
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `repsim join`: two joins per seed, then the distributions.
    fn join(seeds: super::SeedRange, json: bool) -> Result<ExitCode, String> {
        use scenarios::failover::{measure_joins, percentile};
        let runs: Vec<_> = seeds.0.clone().flat_map(measure_joins).collect();
        let mut rows = Vec::new();
        for via_master in [true, false] {
            let of: Vec<_> = runs.iter().filter(|j| j.via_master == via_master).collect();
            let mut ms: Vec<u64> = of.iter().filter_map(|j| j.ms).collect();
            ms.sort_unstable();
            let noisy = of.iter().filter(|j| !j.noise.is_empty()).count();
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for j in &of {
                for n in &j.noise {
                    *kinds.entry(n.as_str()).or_default() += 1;
                }
            }
            let via = if via_master { "the master" } else { "a client" };
            if !json {
                let show = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
                println!(
                    "join through {via}: p50 {}, p99 {}, worst {} over {} seeds; never joined {}; \
                     reported more than BecameClient, NewMaster, StartupDone in {noisy} {kinds:?}",
                    show(percentile(&ms, 50)),
                    show(percentile(&ms, 99)),
                    show(ms.last().copied()),
                    of.len(),
                    of.len() - ms.len(),
                );
            }
            rows.push(serde_json::json!({
                "via": via,
                "seeds": of.len(),
                "p50_ms": percentile(&ms, 50),
                "p99_ms": percentile(&ms, 99),
                "max_ms": ms.last(),
                "never_joined": of.len() - ms.len(),
                "noisy": noisy,
                "noise": kinds,
            }));
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        }
        Ok(ExitCode::SUCCESS)
    }

    pub fn dispatch(command: Command) -> Result<ExitCode, String> {
        match command {
            Command::List { dir, json } => list(&dir.unwrap_or_else(catalog_dir), json),
            merge @ Command::Merge { .. } => merge_command(merge),
            Command::Run {
                scenario,
                seed,
                storage,
                trace,
                out,
            } => {
                let scenario = storage.apply(resolve(&scenario)?);
                let played = run_caught(&scenario, seed, None);
                let failure_file = if played.result.failed() {
                    Some(save_failure(&scenario, &played, Path::new("failures"))?)
                } else {
                    None
                };
                if trace && !out.json {
                    print_trace(&played.result);
                }
                let title = format!("{} seed {seed}", scenario.name);
                finish(&out, played, failure_file, &title)
            }
            Command::Failover {
                sites,
                fault,
                seeds,
                json,
                trace,
            } => failover(&sites, fault, seeds, json, trace),
            Command::Join { seeds, json } => join(seeds, json),
            Command::Explore {
                scenario,
                seeds,
                jobs,
                stop_at_first,
                shard,
                results,
                storage,
                failures,
                out,
            } => {
                let scenario = storage.apply(resolve(&scenario)?);
                let range = seeds.0.clone();
                let whole = shard.is_none();
                let shard = shard.unwrap_or(Shard::WHOLE);
                let work: Vec<(usize, u64)> = shard.seeds(range.clone()).map(|s| (0, s)).collect();
                let mut title = format!(
                    "explore {} seeds {}..{}",
                    scenario.name, range.start, range.end
                );
                if !whole {
                    title.push_str(&format!(" shard {shard}"));
                }
                let results = results.or_else(|| {
                    (!whole).then(|| {
                        PathBuf::from(format!(
                            "results/{}-shard-{}-of-{}.jsonl",
                            scenario.name, shard.index, shard.count
                        ))
                    })
                });
                let writer = match &results {
                    Some(path) => {
                        let header = Header {
                            build: BUILD_ID.into(),
                            scenario: scenario.name.clone(),
                            scenario_text: std::fs::read_to_string(&scenario.path)
                                .map_err(|e| format!("{}: {e}", scenario.path.display()))?,
                            storage: scenario.storage_override,
                            seeds: range,
                            shard,
                        };
                        Some((ResultWriter::create(path, &header)?, path.clone()))
                    }
                    None => None,
                };
                let catalog = std::slice::from_ref(&scenario);
                sweep(
                    catalog,
                    &work,
                    jobs,
                    stop_at_first,
                    &failures,
                    &out,
                    &title,
                    writer,
                )
            }
            Command::Replay { file, trace, out } => {
                let failure = Failure::load(&file).map_err(|e| e.to_string())?;
                let scenario = failure
                    .load_scenario(&catalog_dir())
                    .map_err(|e| e.to_string())?;
                if failure.build != BUILD_ID && !out.json {
                    eprintln!(
                        "{} this failure was found by build {}, this is {BUILD_ID}: the replay may differ",
                        style("note:").yellow(),
                        failure.build
                    );
                }
                let played = run_caught(&scenario, failure.seed, Some(&failure.schedule));
                if trace && !out.json {
                    print_trace(&played.result);
                }
                let reproduced = played.result.trace_hash == failure.trace_hash;
                if !out.json {
                    println!(
                        "{}",
                        if reproduced {
                            "replay reproduced the failing run exactly (same trace hash)"
                                .to_string()
                        } else {
                            format!(
                                "replay gave trace {} where the failure had {}",
                                played.result.trace_hash, failure.trace_hash
                            )
                        }
                    );
                }
                let title = format!("replay {}", failure.scenario);
                finish(&out, played, Some(file), &title)
            }
            Command::Shrink { file, out } => shrink(&file, out),
            Command::Suite {
                dir,
                seeds,
                storage,
                jobs,
                failures,
                out,
            } => {
                let dir = dir.unwrap_or_else(catalog_dir);
                let files = catalog_files(&dir).map_err(|e| e.to_string())?;
                let mut catalog = Vec::new();
                for f in &files {
                    catalog.push(storage.apply(Scenario::load(f).map_err(|e| e.to_string())?));
                }
                let work: Vec<(usize, u64)> = (0..catalog.len())
                    .flat_map(|i| (1..=seeds).map(move |s| (i, s)))
                    .collect();
                let title = format!("suite {} on {seeds} seeds", dir.display());
                sweep(&catalog, &work, jobs, false, &failures, &out, &title, None)
            }
        }
    }

    /// A scenario by catalog name or path.
    fn resolve(name: &str) -> Result<Scenario, String> {
        let as_path = Path::new(name);
        let path = if as_path.extension().is_some_and(|x| x == "toml")
            || as_path.components().count() > 1
        {
            as_path.to_path_buf()
        } else {
            let path = catalog_dir().join(format!("{name}.toml"));
            if !path.exists() {
                let names: Vec<String> = catalog_files(&catalog_dir())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
                    .collect();
                return Err(format!(
                    "no scenario {name:?} in the catalog; there are: {}",
                    names.join(", ")
                ));
            }
            path
        };
        Scenario::load(&path).map_err(|e| e.to_string())
    }

    /// Runs a seed, turning a panic in the engine or the world into a failed run (the panic
    /// message is the violation), so one bad seed does not stop an exploration.
    fn run_caught(
        scenario: &Scenario,
        seed: u64,
        schedule: Option<&sim::faults::Schedule>,
    ) -> Played {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(scenario, seed, schedule)
        }));
        outcome.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            Played {
                result: RunResult {
                    scenario: scenario.name.clone(),
                    seed,
                    outcome: RunOutcome::Fail,
                    violations: vec![Violation {
                        invariant: "no_panic".into(),
                        site: None,
                        at_ms: None,
                        detail: message,
                    }],
                    trace_hash: String::new(),
                    sim_ms: 0,
                    counts: Default::default(),
                    reached: Default::default(),
                    trace: Vec::new(),
                    sites: Vec::new(),
                    history: Vec::new(),
                },
                schedule: schedule.cloned().unwrap_or_default(),
                summary: String::new(),
            }
        })
    }

    /// Runs `(scenario index, seed)` pairs on `jobs` worker threads (each simulation gets its own
    /// runtime on a thread started outside any simulation), with a progress bar, and hands each
    /// run to `sink` in the order of `work`, whatever the threads' timing. Only the runs that
    /// finished early wait for their turn, so memory does not grow with the number of runs.
    fn run_many(
        catalog: &[Scenario],
        work: &[(usize, u64)],
        jobs: usize,
        stop_at_first: bool,
        quiet: bool,
        sink: impl FnMut(usize, Played) + Send,
    ) {
        /// Runs that finished ahead of their turn, and the next turn.
        struct InOrder<F> {
            next: usize,
            early: BTreeMap<usize, Played>,
            sink: F,
        }
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(work.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} runs, {msg} [{elapsed_precise}, eta {eta}]",
            )
            .expect("template"),
        );
        bar.set_message("0 failed");
        let next = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let order = Mutex::new(InOrder {
            next: 0,
            early: BTreeMap::new(),
            sink,
        });
        // madsim prints a hint for every panicking run; the panic is reported as a violation.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1) {
                scope.spawn(|| loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(which, seed)) = work.get(i) else {
                        return;
                    };
                    let played = run_caught(&catalog[which], seed, None);
                    if played.result.failed() {
                        let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                        bar.set_message(format!("{n} failed"));
                        bar.println(format!(
                            "{} {} seed {seed}: {}",
                            style("FAIL").red().bold(),
                            played.result.scenario,
                            first_violation(&played.result)
                        ));
                        if stop_at_first {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    let mut order = order.lock().expect("order lock");
                    order.early.insert(i, played);
                    let InOrder { next, early, sink } = &mut *order;
                    while let Some(played) = early.remove(next) {
                        sink(work[*next].0, played);
                        *next += 1;
                    }
                    drop(order);
                    bar.inc(1);
                });
            }
        });
        std::panic::set_hook(hook);
        bar.finish_and_clear();
        // After a stop at the first failure, runs past a gap never got their turn.
        let InOrder {
            early, mut sink, ..
        } = order.into_inner().expect("order lock");
        for (i, played) in early {
            sink(work[i].0, played);
        }
    }

    /// Runs many seeds (`explore`, `suite`) in memory that does not grow with their number:
    /// every run is added to its scenario's tally, a failing one is saved to its failure file
    /// at once and kept (with its trace only when a report will draw it), a passing one is
    /// dropped. `--json` streams one result per run, in order, as a JSON array; `results` gets
    /// one line per run, in order, as `merge` reads them.
    #[allow(clippy::too_many_arguments)]
    fn sweep(
        catalog: &[Scenario],
        work: &[(usize, u64)],
        jobs: usize,
        stop_at_first: bool,
        failures_dir: &Path,
        out: &Output,
        title: &str,
        mut results: Option<(ResultWriter, PathBuf)>,
    ) -> Result<ExitCode, String> {
        let started = std::time::Instant::now();
        let mut tallies = Tallies::default();
        let mut failures: Vec<(RunResult, PathBuf)> = Vec::new();
        // With --all, the passing runs too (traces and all) for their pages.
        let mut passed: Vec<RunResult> = Vec::new();
        let mut cells: Vec<reports::html::Cell> = Vec::new();
        let mut save_error: Option<String> = None;
        let mut first_json = true;
        if out.json {
            println!("[");
        }
        run_many(
            catalog,
            work,
            jobs,
            stop_at_first,
            out.json,
            |which, played| {
                tallies.add(&played.result);
                cells.push(reports::cell_of(&played.result));
                if out.json {
                    let shown = RunResult {
                        trace: Vec::new(),
                        history: Vec::new(),
                        ..played.result.clone()
                    };
                    let sep = if std::mem::take(&mut first_json) {
                        ""
                    } else {
                        ","
                    };
                    println!("{sep}{}", serde_json::to_string(&shown).expect("json"));
                }
                let failure = played
                    .result
                    .failed()
                    .then(|| failure_of(&catalog[which], &played));
                if let Some((writer, _)) = results.as_mut() {
                    if let Err(e) = writer.run(RunLine::of(&played.result, failure.clone())) {
                        save_error.get_or_insert(e);
                    }
                }
                let Some(failure) = failure else {
                    if out.all {
                        passed.push(played.result);
                    }
                    return;
                };
                match save(&failure, failures_dir) {
                    Ok(path) => {
                        let mut result = played.result;
                        if out.report.is_none() {
                            result.trace = Vec::new();
                            result.history = Vec::new();
                        }
                        failures.push((result, path));
                    }
                    Err(e) => {
                        save_error.get_or_insert(e);
                    }
                }
            },
        );
        if out.json {
            println!("]");
        }
        if let Some(e) = save_error {
            return Err(e);
        }
        if let Some((writer, path)) = results {
            writer.finish()?;
            if !out.json {
                println!("results: {}", path.display());
            }
        }
        if !out.json {
            let (runs, failed) = (tallies.runs(), tallies.failed());
            let sim_s = tallies.sim_ms() as f64 / 1000.0;
            let wall = started.elapsed().as_secs_f64();
            let verdict = if failed == 0 {
                style("all passed".to_string()).green()
            } else {
                style(format!("{failed} failed")).red()
            };
            println!(
                "{runs} runs, {verdict}; {sim_s:.0} simulated s in {wall:.1} wall s ({:.0}x real time)",
                sim_s / wall.max(1e-9)
            );
            if catalog.len() == 1 {
                print_coverage(&tallies);
            }
            for (r, path) in &failures {
                print_run(
                    r,
                    Some(path),
                    &format!("cargo sim replay {}", path.display()),
                );
            }
        }
        write_summary_reports(out, title, &tallies, &failures, &passed, &cells)?;
        Ok(if tallies.failed() > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }

    fn first_violation(r: &RunResult) -> String {
        r.violations.first().map_or("failed".into(), |v| {
            format!("{}: {}", v.invariant, v.detail)
        })
    }

    /// Saves a failing run's failure file into `dir`; returns its path.
    fn save_failure(scenario: &Scenario, p: &Played, dir: &Path) -> Result<PathBuf, String> {
        save(&failure_of(scenario, p), dir)
    }

    /// Saves `failure` into `dir`; returns its path.
    fn save(failure: &Failure, dir: &Path) -> Result<PathBuf, String> {
        let path = dir.join(failure.file_name());
        failure.save(&path).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// The failure file of a failing run.
    fn failure_of(scenario: &Scenario, p: &Played) -> Failure {
        let mut invariants: Vec<String> = p
            .result
            .violations
            .iter()
            .map(|v| v.invariant.to_string())
            .collect();
        invariants.dedup();
        Failure {
            scenario: scenario.name.clone(),
            scenario_file: scenario.path.clone(),
            scenario_text: std::fs::read_to_string(&scenario.path).ok(),
            seed: p.result.seed,
            invariants,
            detail: first_violation(&p.result),
            trace_hash: p.result.trace_hash.clone(),
            build: BUILD_ID.into(),
            schedule: p.schedule.clone(),
            storage: scenario.storage_override,
        }
    }

    /// The trace as a person reads it: sites by the scenario's names (the run's header line,
    /// `started: ...`, still gives each one's address).
    fn print_trace(r: &RunResult) {
        for (name, addr) in r.sites.iter().map(|s| (&s.name, &s.addr)) {
            println!("{name} is {addr}");
        }
        for line in &r.trace {
            println!("{}", r.with_site_names(line));
        }
    }

    /// Prints one run (text, or JSON as an array of one), writes its reports, and picks the
    /// exit status.
    fn finish(
        out: &Output,
        played: Played,
        failure_file: Option<PathBuf>,
        title: &str,
    ) -> Result<ExitCode, String> {
        // A failure's replay command names its saved file; a passing run's names its seed.
        let replay_of = |r: &RunResult| -> String {
            match &failure_file {
                Some(path) => format!("cargo sim replay {}", path.display()),
                None => format!("cargo sim run {} --seed {}", r.scenario, r.seed),
            }
        };
        let result = played.result;
        if out.json {
            let shown = RunResult {
                trace: Vec::new(),
                history: Vec::new(),
                ..result.clone()
            };
            println!("{}", serde_json::to_string_pretty(&[shown]).expect("json"));
        } else {
            print_run(&result, failure_file.as_deref(), &replay_of(&result));
        }
        let results = std::slice::from_ref(&result);
        // The reports get the trace (the timeline of a failure).
        if let Some(dir) = &out.report {
            let index = reports::write_report_dir(dir, title, results, &replay_of)
                .map_err(|e| e.to_string())?;
            if !out.json {
                println!("report: {}", index.display());
            }
        }
        if let Some(file) = &out.junit {
            std::fs::write(file, reports::junit::suite(title, results, &replay_of))
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        Ok(if result.failed() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }

    fn shrink(file: &Path, out: Option<PathBuf>) -> Result<ExitCode, String> {
        let failure = Failure::load(file).map_err(|e| e.to_string())?;
        let scenario = failure
            .load_scenario(&catalog_dir())
            .map_err(|e| e.to_string())?;
        let events = failure.schedule.events.len();
        let bar = ProgressBar::new_spinner();
        bar.set_message(format!("shrinking {events} fault events"));
        let shrunk = scenarios::shrink::shrink(&scenario, &failure, |tries, left| {
            bar.set_message(format!("{tries} runs tried, {left} fault events left"));
            bar.tick();
        });
        bar.finish_and_clear();
        let Some(shrunk) = shrunk else {
            return Err(format!(
                "{}: the failure does not reproduce on this build ({BUILD_ID}), so there is nothing to shrink",
                file.display()
            ));
        };
        let out = out.unwrap_or_else(|| file.with_extension("shrunk.json"));
        shrunk.failure.save(&out).map_err(|e| e.to_string())?;
        println!(
            "shrunk {} to {} fault events (before the final repairs) in {} runs; still breaks {}: {}",
            shrunk.events_before, shrunk.events_after, shrunk.tries, shrunk.failure.invariants[0], shrunk.failure.detail
        );
        println!("schedule:\n{}", shrunk.failure.schedule);
        println!(
            "saved {}\nreplay: cargo sim replay {}",
            out.display(),
            out.display()
        );
        Ok(ExitCode::from(1))
    }
}
