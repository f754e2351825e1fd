//! JUnit XML, the format CI systems read test results from: a run is a test case named by its
//! seed, a scenario is a test suite. Times are simulated seconds (the wall clock would make the
//! report differ between two identical runs), and there is no timestamp or host name for the
//! same reason.
//!
//! Every piece of run text goes through the `xml` module: the output must stay well-formed XML 1.0
//! whatever the engine wrote into a detail or a trace.

use crate::xml::{attr, text};
use crate::{by_scenario, is_failure, seconds, ReplayCommand};
use sim::result::{RunResult, Tallies, Tally};
use std::fmt::Write;

/// JUnit XML: one `<testsuites name=title>`, a `<testsuite>` per scenario (name, tests, failures, time in simulated seconds), a `<testcase name="seed N" classname=scenario time=sim seconds>` per run; a failing run gets `<failure message="invariant: detail" type="invariant">` with every violation and the replay command `</failure>`; `<system-out>` carries the trace hash. All text XML-escaped (`& < > " '` and control characters that XML 1.0 forbids must be removed or replaced).
///
/// Test suites come in the order each scenario is first seen in `runs`, test cases in the order
/// given. The failure's `message` and `type` come from the first violation (`type` is the
/// invariant's name, which CI tools group failures by). A forbidden control character is
/// replaced by a visible escape (`\u{1b}`), so the reader still sees that one was there.
pub fn suite(title: &str, runs: &[RunResult], replay: ReplayCommand) -> String {
    let failed = runs.iter().filter(|r| is_failure(r)).count();
    let total_ms: u64 = runs.iter().map(|r| r.sim_ms).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{}\">",
        attr(title),
        runs.len(),
        seconds(total_ms)
    );
    for group in by_scenario(runs) {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{}\">",
            attr(group.scenario),
            group.runs.len(),
            group.failed(),
            seconds(group.sim_ms())
        );
        for (_, run) in &group.runs {
            push_testcase(&mut out, run, replay);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// JUnit XML from tallies (every run added up) and the runs listed one by one (an
/// exploration's failures): a `<testsuite>` per tally, a `<testcase>` per listed run, and one
/// more test case per scenario standing for its passing seeds that were not listed
/// (`name="seeds passed: N"`), so that `tests` counts the cases written and CI shows the passes.
pub fn summary(
    title: &str,
    tallies: &Tallies,
    listed: &[RunResult],
    replay: ReplayCommand,
) -> String {
    let cases = |t: &Tally| -> (Vec<&RunResult>, u64) {
        let mine: Vec<&RunResult> = listed.iter().filter(|r| r.scenario == t.scenario).collect();
        let passed_unlisted = (t.runs - t.failed)
            .saturating_sub(mine.iter().filter(|r| !is_failure(r)).count() as u64);
        (mine, passed_unlisted)
    };
    let written = |t: &Tally| {
        let (mine, passed) = cases(t);
        mine.len() + usize::from(passed > 0)
    };
    let tests: usize = tallies.0.iter().map(written).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{}\" errors=\"0\" time=\"{}\">",
        attr(title),
        tallies.failed(),
        seconds(tallies.sim_ms())
    );
    for t in &tallies.0 {
        let (mine, passed) = cases(t);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{}\">",
            attr(&t.scenario),
            written(t),
            t.failed,
            seconds(t.sim_ms)
        );
        for run in mine {
            push_testcase(&mut out, run, replay);
        }
        if passed > 0 {
            let _ = writeln!(
                out,
                "    <testcase name=\"seeds passed: {passed}\" classname=\"{}\" time=\"0.000\"/>",
                attr(&t.scenario)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn push_testcase(out: &mut String, run: &RunResult, replay: ReplayCommand) {
    let _ = writeln!(
        out,
        "    <testcase name=\"seed {}\" classname=\"{}\" time=\"{}\">",
        run.seed,
        attr(&run.scenario),
        seconds(run.sim_ms)
    );
    if is_failure(run) {
        let (message, kind) = match run.violations.first() {
            Some(v) => (
                format!("{}: {}", v.invariant, run.with_site_names(&v.detail)),
                v.invariant.as_str(),
            ),
            None => ("failed without a recorded violation".to_string(), "unknown"),
        };
        let _ = write!(
            out,
            "      <failure message=\"{}\" type=\"{}\">",
            attr(&message),
            attr(kind)
        );
        for v in &run.violations {
            let mut line = v.invariant.to_string();
            if let Some(site) = &v.site {
                let _ = write!(line, " at {}", run.site_name(site.as_str()));
            }
            if let Some(ms) = v.at_ms {
                let _ = write!(line, ", {} s", seconds(ms));
            }
            let _ = writeln!(line, ": {}", run.with_site_names(&v.detail));
            out.push_str(&text(&line));
        }
        let _ = writeln!(
            out,
            "{}</failure>",
            text(&format!("replay: {}", replay(run)))
        );
    }
    let _ = writeln!(
        out,
        "      <system-out>trace hash {}</system-out>",
        text(&run.trace_hash)
    );
    out.push_str("    </testcase>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::run;
    use sim::result::RunOutcome;

    #[test]
    fn each_scenario_is_a_suite_and_each_run_a_case() {
        let runs = [
            run("b", 1, RunOutcome::Fail),
            run("a", 2, RunOutcome::Pass),
            run("b", 3, RunOutcome::Pass),
        ];
        let xml = suite("T", &runs, &|r| format!("replay {}", r.seed));
        let suites: Vec<_> = xml
            .lines()
            .filter(|l| l.trim_start().starts_with("<testsuite "))
            .collect();
        assert_eq!(suites.len(), 2, "{xml}");
        assert!(
            suites[0].contains("name=\"b\" tests=\"2\" failures=\"1\""),
            "{xml}"
        );
        assert!(suites[0].contains("time=\"4.000\""), "{xml}");
        assert!(
            suites[1].contains("name=\"a\" tests=\"1\" failures=\"0\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuites name=\"T\" tests=\"3\" failures=\"1\""),
            "{xml}"
        );
        assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
        assert!(
            xml.contains("message=\"liveness: stuck\" type=\"liveness\""),
            "{xml}"
        );
        assert!(xml.contains("replay: replay 1</failure>"), "{xml}");
        assert!(!xml.contains("replay 3"), "{xml}");
    }

    #[test]
    fn a_summary_lists_the_failures_and_one_case_for_the_passing_seeds() {
        let runs = [
            run("b", 1, RunOutcome::Fail),
            run("a", 2, RunOutcome::Pass),
            run("b", 3, RunOutcome::Pass),
            run("b", 4, RunOutcome::Pass),
        ];
        let tallies = Tallies::of(&runs);
        let failures: Vec<RunResult> = runs.iter().filter(|r| r.failed()).cloned().collect();
        let xml = summary("T", &tallies, &failures, &|r| format!("replay {}", r.seed));
        assert!(
            xml.contains("<testsuites name=\"T\" tests=\"3\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"b\" tests=\"2\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"seed 1\" classname=\"b\""),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"seeds passed: 2\" classname=\"b\""),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"seeds passed: 1\" classname=\"a\""),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
    }

    #[test]
    fn a_failing_run_without_violations_still_fails() {
        let mut broken = run("a", 1, RunOutcome::Fail);
        broken.violations.clear();
        let xml = suite("T", &[broken], &|_| "again".into());
        assert!(
            xml.contains("message=\"failed without a recorded violation\" type=\"unknown\">replay: again</failure>"),
            "{xml}"
        );
    }
}
