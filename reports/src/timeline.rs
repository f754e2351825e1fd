//! A run's timeline: its trace lines read as (time, who, what), with its violations placed among
//! them, and cut when the trace is too long to read. Knows nothing of any output format.
//!
//! A trace line is `<ms> <site-or-world> <event>` (see the simulator's trace log). A line that
//! does not start with a time is kept whole as the event, never dropped: the timeline is evidence.

use sim::check::Violation;

/// A trace of at most this many lines is shown whole.
pub(crate) const FULL_TRACE_MAX: usize = 80;
/// A cut trace keeps this many lines at its start and at its end (how the run began and ended).
pub(crate) const EDGE_LINES: usize = 10;
/// A cut trace keeps this many lines on either side of the first violation (what led to it).
pub(crate) const AROUND_VIOLATION: usize = 25;

/// One trace line, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceLine<'a> {
    /// Simulated milliseconds, if the line starts with them.
    pub(crate) ms: Option<u64>,
    /// The site or `world`; empty if the line has no time.
    pub(crate) who: &'a str,
    /// What happened.
    pub(crate) what: &'a str,
}

/// Reads a trace line.
pub(crate) fn parse(line: &str) -> TraceLine<'_> {
    let (time, rest) = line.split_once(' ').unwrap_or((line, ""));
    match time.parse() {
        Ok(ms) => {
            let (who, what) = rest.split_once(' ').unwrap_or((rest, ""));
            TraceLine {
                ms: Some(ms),
                who,
                what,
            }
        }
        Err(_) => TraceLine {
            ms: None,
            who: "",
            what: line,
        },
    }
}

/// One row of a timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Row<'a> {
    /// A trace line.
    Line(TraceLine<'a>),
    /// A violation, after the last line at or before its time.
    Violation(&'a Violation),
    /// This many consecutive trace lines were cut.
    LeftOut(usize),
}

/// A run's timeline, ready to render.
#[derive(Debug)]
pub(crate) struct Timeline<'a> {
    /// The rows in order.
    pub(crate) rows: Vec<Row<'a>>,
    /// Trace lines in the run.
    pub(crate) total: usize,
    /// Trace lines cut.
    pub(crate) left_out: usize,
    /// The time of the first violation that has one: the cut centres on it.
    pub(crate) first_violation_ms: Option<u64>,
}

/// Builds the timeline of `trace`, placing `violations` and cutting a long trace to its edges and
/// the lines around the first violation.
pub(crate) fn build<'a>(trace: &'a [String], violations: &'a [Violation]) -> Timeline<'a> {
    let lines: Vec<TraceLine> = trace.iter().map(|l| parse(l)).collect();
    // A line without a time happened when the line before it did.
    let mut last_ms = 0;
    let line_ms: Vec<u64> = lines
        .iter()
        .map(|l| {
            last_ms = l.ms.unwrap_or(last_ms);
            last_ms
        })
        .collect();
    // A violation goes after the lines at or before its time: the event that broke the
    // invariant is usually the line stamped with the same millisecond.
    let after_lines = |at_ms: u64| line_ms.partition_point(|&ms| ms <= at_ms);
    let placed: Vec<(usize, &Violation)> = violations
        .iter()
        .filter_map(|v| v.at_ms.map(|at| (after_lines(at), v)))
        .collect();
    let first_violation_ms = violations.iter().filter_map(|v| v.at_ms).min();

    let mut keep = vec![lines.len() <= FULL_TRACE_MAX; lines.len()];
    let mut keep_range = |range: std::ops::Range<usize>| {
        let end = range.end.min(keep.len());
        keep[range.start.min(end)..end].fill(true);
    };
    keep_range(0..EDGE_LINES);
    keep_range(lines.len().saturating_sub(EDGE_LINES)..lines.len());
    if let Some(at) = first_violation_ms {
        let centre = after_lines(at);
        keep_range(centre.saturating_sub(AROUND_VIOLATION)..centre + AROUND_VIOLATION);
    }

    let violations_after = |count: usize| {
        placed
            .iter()
            .filter(move |(after, _)| *after == count)
            .map(|(_, v)| Row::Violation(v))
    };
    let mut rows: Vec<Row> = violations_after(0).collect();
    let mut skipped = 0;
    let mut left_out = 0;
    for (i, line) in lines.iter().enumerate() {
        if !keep[i] {
            skipped += 1;
            continue;
        }
        if skipped > 0 {
            rows.push(Row::LeftOut(skipped));
            left_out += skipped;
            skipped = 0;
        }
        rows.push(Row::Line(*line));
        // A violation placed after a cut line is not shown here; the violations list has it.
        rows.extend(violations_after(i + 1));
    }
    if skipped > 0 {
        rows.push(Row::LeftOut(skipped));
        left_out += skipped;
    }
    Timeline {
        rows,
        total: lines.len(),
        left_out,
        first_violation_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(invariant: &'static str, at_ms: Option<u64>) -> Violation {
        Violation {
            invariant: invariant.into(),
            site: None,
            at_ms,
            detail: String::new(),
        }
    }

    /// `n` lines, one per 10 ms, each naming its index.
    fn trace(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{} a:1 event {i}", i * 10))
            .collect()
    }

    /// The index of each shown line, `None` for a cut marker, `Some(usize::MAX)` for a violation.
    fn shape(timeline: &Timeline) -> Vec<Option<usize>> {
        timeline
            .rows
            .iter()
            .map(|row| match row {
                Row::Line(l) => Some(l.what.trim_start_matches("event ").parse().expect("index")),
                Row::Violation(_) => Some(usize::MAX),
                Row::LeftOut(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_line_is_read_as_time_who_and_what() {
        let line = parse("1234 10.0.0.1:7000 Site(BecameMaster { gen: 2 })");
        assert_eq!(line.ms, Some(1234));
        assert_eq!(line.who, "10.0.0.1:7000");
        assert_eq!(line.what, "Site(BecameMaster { gen: 2 })");
        let world = parse("5 world partition heals");
        assert_eq!((world.who, world.what), ("world", "partition heals"));
        let bare = parse("7 world");
        assert_eq!((bare.ms, bare.who, bare.what), (Some(7), "world", ""));
    }

    #[test]
    fn a_line_without_a_time_is_kept_whole() {
        let line = parse("panicked at site.rs: oops");
        assert_eq!(line.ms, None);
        assert_eq!(line.who, "");
        assert_eq!(line.what, "panicked at site.rs: oops");
        assert_eq!(parse("").what, "");
    }

    #[test]
    fn a_short_trace_is_shown_whole() {
        let lines = trace(FULL_TRACE_MAX);
        let timeline = build(&lines, &[]);
        assert_eq!(timeline.left_out, 0);
        assert_eq!(
            shape(&timeline),
            (0..FULL_TRACE_MAX).map(Some).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_long_trace_without_violation_keeps_its_edges() {
        let lines = trace(200);
        let timeline = build(&lines, &[]);
        let mut expected: Vec<_> = (0..EDGE_LINES).map(Some).collect();
        expected.push(None);
        expected.extend((200 - EDGE_LINES..200).map(Some));
        assert_eq!(shape(&timeline), expected);
        assert_eq!(timeline.left_out, 200 - 2 * EDGE_LINES);
        assert_eq!(
            timeline.rows[EDGE_LINES],
            Row::LeftOut(200 - 2 * EDGE_LINES)
        );
    }

    #[test]
    fn a_long_trace_keeps_the_lines_around_the_first_violation() {
        let lines = trace(500);
        // Line 100 is at 1000 ms; the later violation is listed first but happened later.
        let violations = [
            violation("late", Some(4000)),
            violation("first", Some(1000)),
        ];
        let timeline = build(&lines, &violations);
        let around = 101 - AROUND_VIOLATION..101 + AROUND_VIOLATION;
        let mut expected: Vec<_> = (0..EDGE_LINES).map(Some).collect();
        expected.push(None);
        expected.extend(around.clone().map(Some));
        // The violation sits right after the line stamped with its time.
        expected.insert(
            expected.iter().position(|&l| l == Some(100)).expect("100") + 1,
            Some(usize::MAX),
        );
        expected.push(None);
        expected.extend((500 - EDGE_LINES..500).map(Some));
        assert_eq!(shape(&timeline), expected);
        assert_eq!(timeline.first_violation_ms, Some(1000));
        assert_eq!(timeline.left_out, 500 - 2 * EDGE_LINES - around.len());
        assert!(timeline
            .rows
            .contains(&Row::LeftOut(around.start - EDGE_LINES)));
    }

    #[test]
    fn windows_that_overlap_merge() {
        let lines = trace(100);
        let violations = [violation("early", Some(50))];
        let timeline = build(&lines, &violations);
        let left_out: Vec<_> = timeline
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::LeftOut(n) => Some(*n),
                _ => None,
            })
            .collect();
        // Lines 0..31 (edge and window merged), then a single cut, then the last 10.
        assert_eq!(left_out, [100 - (6 + AROUND_VIOLATION) - EDGE_LINES]);
    }

    #[test]
    fn violations_outside_the_trace_go_to_its_ends_and_untimed_ones_nowhere() {
        let lines = ["10 a:1 event 0".to_string(), "20 a:1 event 1".to_string()];
        let violations = [
            violation("after", Some(99_999)),
            violation("untimed", None),
            violation("before", Some(5)),
        ];
        let timeline = build(&lines, &violations);
        assert_eq!(
            timeline.rows,
            [
                Row::Violation(&violations[2]),
                Row::Line(parse(&lines[0])),
                Row::Line(parse(&lines[1])),
                Row::Violation(&violations[0]),
            ]
        );
        let empty = build(&[], &violations);
        assert_eq!(
            empty.rows,
            [
                Row::Violation(&violations[0]),
                Row::Violation(&violations[2])
            ]
        );
    }
}
