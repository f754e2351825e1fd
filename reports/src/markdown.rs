//! Markdown reports: a page per run and a summary per suite or exploration, written for a person
//! who has to decide what broke and replay it. GitHub-flavoured Markdown (tables).
//!
//! Text from a run (scenario names, violation details, trace events) may hold any character, so
//! every piece of it goes through `text` or `code` here; a raw `|` or line break would tear a
//! table apart and a raw `<` could hide the rest of a cell as HTML.

use crate::timeline::{self, Row, Timeline};
use crate::{is_failure, seconds, ReplayCommand};
use sim::check::Violation;
use sim::result::{RunResult, Tallies};
use std::fmt::Write;

/// Shown in a table cell where a value is absent (no site, no time).
const NONE: &str = "—";

/// One run: outcome, seed, trace hash, simulated time, counts, each violation (invariant, site, time, detail), the replay command, and a timeline: the trace lines (format `<ms> <site-or-world> <event>`) rendered as a table (time in seconds with ms, who, what); long traces are cut to the lines around the first violation time plus the first/last lines, saying how many were left out.
pub fn run(result: &RunResult, replay: ReplayCommand) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {}, seed {}: {}\n",
        code(&result.scenario, false),
        result.seed,
        outcome(result)
    );
    out.push_str("| Outcome | Seed | Trace hash | Simulated time |\n|---|---:|---|---:|\n");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} s |\n",
        outcome(result),
        result.seed,
        code(&result.trace_hash, true),
        seconds(result.sim_ms)
    );

    let c = &result.counts;
    out.push_str("## Counts\n\n");
    out.push_str(
        "| Events | Messages | Elections | Writes ok | Writes failed | Writes unknown |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|\n");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} |\n",
        c.events, c.messages, c.elections, c.writes_ok, c.writes_failed, c.writes_unknown
    );

    out.push_str("## Violations\n\n");
    if result.violations.is_empty() {
        out.push_str("None: every invariant held.\n\n");
    } else {
        out.push_str("| # | Invariant | Site | Time | Detail |\n|---:|---|---|---:|---|\n");
        for (i, v) in result.violations.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                i + 1,
                code(&v.invariant, true),
                site(result, v),
                time(v.at_ms),
                text(&result.with_site_names(&v.detail))
            );
        }
        out.push('\n');
    }

    out.push_str("## Replay\n\n");
    out.push_str(&code_block(&replay(result)));
    out.push('\n');

    out.push_str("## Timeline\n\n");
    push_timeline(
        &mut out,
        result,
        &timeline::build(&result.trace, &result.violations),
    );
    out
}

/// A suite/explore summary: title, totals (runs, passed, failed), a table per scenario (seeds run, passed, failed, elections/writes totals), and a list of failures each with its first violation and replay command.
///
/// The scenario table has one row per scenario, in the order each is first seen in `runs`, and
/// failures are listed in the same order, each scenario's in the order given (as in the JUnit
/// report), so a reader finds a scenario's failures where its row is.
pub fn suite(title: &str, runs: &[RunResult], replay: ReplayCommand) -> String {
    render_suite(title, &Tallies::of(runs), runs, replay, &[])
}

/// A summary from tallies (every run added up) and the runs listed one by one (the failures
/// of an exploration that kept nothing else): the same page as [`suite`] gives for all runs.
pub fn summary(
    title: &str,
    tallies: &Tallies,
    listed: &[RunResult],
    replay: ReplayCommand,
) -> String {
    render_suite(title, tallies, listed, replay, &[])
}

/// [`summary`], with each failure linked to its page: `pages[i]` is the file of `listed[i]`,
/// if it has one (a missing entry means no link).
pub(crate) fn render_suite(
    title: &str,
    tallies: &Tallies,
    listed: &[RunResult],
    replay: ReplayCommand,
    pages: &[Option<String>],
) -> String {
    let (runs, failed) = (tallies.runs(), tallies.failed());
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", text(title));
    let _ = writeln!(
        out,
        "**{} {}: {} passed, {} failed.**\n",
        runs,
        if runs == 1 { "run" } else { "runs" },
        runs - failed,
        failed
    );

    out.push_str("## Scenarios\n\n");
    if runs == 0 {
        out.push_str("No runs.\n\n");
    } else {
        out.push_str(
            "| Scenario | Seeds run | Passed | Failed | Elections | Writes ok | Writes failed | Writes unknown |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for t in &tallies.0 {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                code(&t.scenario, true),
                t.runs,
                t.runs - t.failed,
                t.failed,
                t.counts.elections,
                t.counts.writes_ok,
                t.counts.writes_failed,
                t.counts.writes_unknown,
            );
        }
        out.push('\n');
    }

    out.push_str("## Failures\n\n");
    if failed == 0 {
        out.push_str("None.\n");
    }
    // Failures in the order of the table's rows, each scenario's in the order given.
    let failures = tallies.0.iter().flat_map(|t| {
        listed
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.scenario == t.scenario && is_failure(r))
    });
    for (i, run) in failures {
        let _ = write!(out, "### {}, seed {}", code(&run.scenario, false), run.seed);
        if let Some(Some(page)) = pages.get(i) {
            // Page names are made file-safe by the caller: no character here needs escaping.
            let _ = write!(out, " ([details]({page}))");
        }
        out.push_str("\n\n");
        match run.violations.first() {
            Some(v) => {
                let _ = write!(out, "First violation: {}", code(&v.invariant, false));
                if let Some(site) = &v.site {
                    let _ = write!(out, " at {}", code(run.site_name(site.as_str()), false));
                }
                if let Some(ms) = v.at_ms {
                    let _ = write!(out, ", {} s", seconds(ms));
                }
                let _ = write!(out, ": {}", text(&run.with_site_names(&v.detail)));
                match run.violations.len() - 1 {
                    0 => out.push_str("\n\n"),
                    1 => out.push_str(" (and 1 more)\n\n"),
                    more => {
                        let _ = write!(out, " (and {more} more)\n\n");
                    }
                }
            }
            None => out.push_str("Failed without a recorded violation.\n\n"),
        }
        out.push_str(&code_block(&replay(run)));
        out.push('\n');
    }
    out
}

fn outcome(result: &RunResult) -> &'static str {
    if is_failure(result) {
        "**FAIL**"
    } else {
        "PASS"
    }
}

/// The violation's site as the scenario names it, with its address.
fn site(run: &RunResult, v: &Violation) -> String {
    v.site.as_ref().map_or_else(
        || NONE.to_string(),
        |s| {
            let name = run.site_name(s.as_str());
            if name == s.as_str() {
                code(name, true)
            } else {
                format!("{} ({})", code(name, true), code(s.as_str(), true))
            }
        },
    )
}

fn time(ms: Option<u64>) -> String {
    ms.map_or_else(|| NONE.to_string(), |ms| format!("{} s", seconds(ms)))
}

fn push_timeline(out: &mut String, run: &RunResult, timeline: &Timeline) {
    if timeline.total == 0 && timeline.rows.is_empty() {
        out.push_str("The trace is empty.\n");
        return;
    }
    if timeline.left_out == 0 {
        let _ = writeln!(out, "All {} trace lines.\n", timeline.total);
    } else {
        let _ = write!(
            out,
            "{} of {} trace lines shown, {} left out: the first and last {}",
            timeline.total - timeline.left_out,
            timeline.total,
            timeline.left_out,
            timeline::EDGE_LINES
        );
        match timeline.first_violation_ms {
            Some(ms) => {
                let _ = writeln!(
                    out,
                    ", and {} either side of the first violation ({} s).\n",
                    timeline::AROUND_VIOLATION,
                    seconds(ms)
                );
            }
            None => out.push_str(".\n\n"),
        }
    }
    out.push_str("| Time (s) | Who | What |\n|---:|---|---|\n");
    for row in &timeline.rows {
        let _ = match row {
            Row::Line(line) => writeln!(
                out,
                "| {} | {} | {} |",
                line.ms.map_or_else(String::new, seconds),
                code(run.site_name(line.who), true),
                code(&run.with_site_names(line.what), true)
            ),
            Row::Violation(v) => writeln!(
                out,
                "| {} | {} | **violation: {}** |",
                v.at_ms.map_or_else(String::new, seconds),
                site(run, v),
                code(&v.invariant, true)
            ),
            Row::LeftOut(n) => writeln!(
                out,
                "| … | | *{n} {} left out* |",
                if *n == 1 { "line" } else { "lines" }
            ),
        };
    }
}

/// `raw` as Markdown inline text that renders as exactly `raw`: every ASCII punctuation mark
/// that can start markup is backslash-escaped (which also keeps a `|` from ending a table cell),
/// line breaks become `<br>` (a raw one would end the table row or paragraph), and control
/// characters become visible escapes.
pub(crate) fn text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("<br>");
            }
            '\n' => out.push_str("<br>"),
            c => {
                if !crate::push_visible_control(&mut out, c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `raw` as a Markdown code span (for identifiers and engine output, which read best verbatim).
/// The fence is longer than any run of backticks inside. A code span cannot hold a line break,
/// so text with one falls back to [`text`]. In a table cell (`in_table`) a `|` must still be
/// escaped even inside a code span (GitHub's table rule); outside a table the escape would show.
pub(crate) fn code(raw: &str, in_table: bool) -> String {
    if raw.is_empty() {
        return String::new();
    }
    if raw.contains(['\n', '\r']) {
        return text(raw);
    }
    let mut visible = String::with_capacity(raw.len());
    for c in raw.chars() {
        if !crate::push_visible_control(&mut visible, c) {
            visible.push(c);
        }
    }
    let raw = visible.as_str();
    let fence = "`".repeat(longest_run(raw, '`') + 1);
    // A span that starts or ends with a backtick needs a space to keep it apart from the fence;
    // one that starts and ends with a space loses one at each end, so it gets them back.
    let pad = raw.starts_with('`')
        || raw.ends_with('`')
        || (raw.starts_with(' ') && raw.ends_with(' ') && raw.trim() != "");
    let pad = if pad { " " } else { "" };
    let body = if in_table {
        raw.replace('|', "\\|")
    } else {
        raw.to_string()
    };
    format!("{fence}{pad}{body}{pad}{fence}")
}

/// `raw` as a fenced code block (for commands a reader copies whole), with a fence longer than
/// any run of backticks inside.
pub(crate) fn code_block(raw: &str) -> String {
    let fence = "`".repeat((longest_run(raw, '`') + 1).max(3));
    let mut body = String::with_capacity(raw.len());
    for c in raw.chars() {
        if !crate::push_visible_control(&mut body, c) {
            body.push(c);
        }
    }
    let newline = if body.ends_with('\n') { "" } else { "\n" };
    format!("{fence}sh\n{body}{newline}{fence}\n")
}

fn longest_run(raw: &str, of: char) -> usize {
    let (mut longest, mut current) = (0, 0);
    for c in raw.chars() {
        current = if c == of { current + 1 } else { 0 };
        longest = longest.max(current);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::run as bare_run;
    use sim::replication::types::SiteAddr;
    use sim::result::RunOutcome;

    /// The cells of a GitHub table row, split the way GitHub splits them (at unescaped `|`).
    fn cells(row: &str) -> Vec<String> {
        let inner = row
            .strip_prefix('|')
            .and_then(|r| r.strip_suffix('|'))
            .expect("a table row starts and ends with |");
        let mut cells = vec![String::new()];
        let mut escaped = false;
        for c in inner.chars() {
            if c == '|' && !escaped {
                cells.push(String::new());
            } else {
                cells.last_mut().expect("a cell").push(c);
            }
            escaped = c == '\\' && !escaped;
        }
        cells.into_iter().map(|c| c.trim().to_string()).collect()
    }

    #[test]
    fn text_escapes_pipes_and_line_breaks() {
        assert_eq!(text("a|b"), "a\\|b");
        assert_eq!(
            text("one\ntwo\r\nthree\rfour"),
            "one<br>two<br>three<br>four"
        );
        assert_eq!(text("a\\|b"), "a\\\\\\|b");
    }

    #[test]
    fn text_escapes_markup() {
        assert_eq!(
            text("*x* _y_ `z` [l](u) <b> &amp; ~s~ #h"),
            "\\*x\\* \\_y\\_ \\`z\\` \\[l\\](u) \\<b\\> \\&amp; \\~s\\~ \\#h"
        );
        assert_eq!(text("plain words, 1.5 s: ok"), "plain words, 1.5 s: ok");
    }

    #[test]
    fn code_spans_outlast_the_backticks_inside() {
        assert_eq!(code("gen", false), "`gen`");
        assert_eq!(code("a`b", false), "``a`b``");
        assert_eq!(code("`x``", false), "``` `x`` ```");
        assert_eq!(code(" x ", false), "`  x  `");
        assert_eq!(code("", false), "");
    }

    #[test]
    fn code_spans_escape_pipes_only_in_tables() {
        assert_eq!(code("a|b", true), "`a\\|b`");
        assert_eq!(code("a|b", false), "`a|b`");
    }

    #[test]
    fn code_with_a_line_break_falls_back_to_text() {
        assert_eq!(code("a\nb|c", true), "a<br>b\\|c");
    }

    #[test]
    fn code_shows_control_characters_as_escapes() {
        assert_eq!(code("bell\u{7} tab\t", false), "`bell\\u{7} tab\t`");
    }

    #[test]
    fn code_blocks_outlast_the_backticks_inside() {
        assert_eq!(code_block("cargo sim"), "```sh\ncargo sim\n```\n");
        assert_eq!(code_block("a ```` b"), "`````sh\na ```` b\n`````\n");
    }

    #[test]
    fn a_hostile_detail_stays_in_its_cell() {
        let mut result = bare_run("s", 1, RunOutcome::Fail);
        result.violations[0].detail = "x | y\nz".into();
        result.violations[0].site = Some(SiteAddr::new("a|b:1"));
        let page = run(&result, &|_| String::new());
        let row = page
            .lines()
            .find(|l| l.starts_with("| 1 |"))
            .expect("the violation row");
        assert_eq!(
            cells(row),
            ["1", "`liveness`", "`a\\|b:1`", "—", "x \\| y<br>z"]
        );
    }

    #[test]
    fn a_hostile_trace_line_stays_in_its_row() {
        let mut result = bare_run("s", 1, RunOutcome::Pass);
        result.trace = vec!["12 a:1 x | y".into(), "13 b|c:1 p\nq".into()];
        let page = run(&result, &|_| String::new());
        let rows: Vec<_> = page
            .lines()
            .skip_while(|l| !l.starts_with("| Time (s)"))
            .skip(2)
            .collect();
        assert_eq!(rows.len(), 2, "{page}");
        assert_eq!(cells(rows[0]), ["0.012", "`a:1`", "`x \\| y`"]);
        assert_eq!(cells(rows[1]), ["0.013", "`b\\|c:1`", "p<br>q"]);
    }

    #[test]
    fn the_suite_counts_runs_and_lists_each_failure_with_its_replay() {
        let runs = [
            bare_run("a", 1, RunOutcome::Pass),
            bare_run("a", 2, RunOutcome::Fail),
            bare_run("b", 3, RunOutcome::Fail),
        ];
        let page = suite("T", &runs, &|r| format!("replay {}", r.seed));
        assert!(page.contains("**3 runs: 1 passed, 2 failed.**"), "{page}");
        assert!(page.contains("| `a` | 2 | 1 | 1 |"), "{page}");
        assert!(page.contains("| `b` | 1 | 0 | 1 |"), "{page}");
        assert!(page.contains("### `a`, seed 2\n"), "{page}");
        assert!(page.contains("```sh\nreplay 3\n```"), "{page}");
        assert!(
            !page.contains("replay 1"),
            "a passing run has no replay: {page}"
        );
    }

    #[test]
    fn failures_are_listed_by_scenario_like_the_table() {
        let runs = [
            bare_run("b", 1, RunOutcome::Fail),
            bare_run("a", 2, RunOutcome::Fail),
            bare_run("b", 3, RunOutcome::Fail),
        ];
        let page = suite("T", &runs, &|_| String::new());
        let headings: Vec<_> = page.lines().filter(|l| l.starts_with("### ")).collect();
        assert_eq!(
            headings,
            ["### `b`, seed 1", "### `b`, seed 3", "### `a`, seed 2"]
        );
    }

    #[test]
    fn a_failure_without_site_or_time_reads_without_gaps() {
        let runs = [bare_run("a", 1, RunOutcome::Fail)];
        let page = suite("T", &runs, &|_| String::new());
        assert!(
            page.contains("\nFirst violation: `liveness`: stuck\n"),
            "{page}"
        );
    }

    #[test]
    fn an_empty_suite_says_so() {
        let page = suite("T", &[], &|_| String::new());
        assert!(page.contains("**0 runs: 0 passed, 0 failed.**"), "{page}");
        assert!(page.contains("No runs."), "{page}");
        assert!(page.contains("## Failures\n\nNone."), "{page}");
    }
}
