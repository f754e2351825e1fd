//! The reports as a reader sees them. Review a changed snapshot as you would the report itself:
//! is everything a person needs to act on a failure there, and nothing broken by odd text?

mod fixtures;

use fixtures::replay;

#[test]
fn markdown_run_passing() {
    insta::assert_snapshot!(reports::markdown::run(&fixtures::passing(), &replay));
}

#[test]
fn markdown_run_failing_with_two_violations() {
    insta::assert_snapshot!(reports::markdown::run(
        &fixtures::failing_with_two_violations(),
        &replay
    ));
}

#[test]
fn markdown_run_with_special_characters() {
    insta::assert_snapshot!(reports::markdown::run(
        &fixtures::special_characters(),
        &replay
    ));
}

#[test]
fn markdown_run_with_a_long_trace_is_cut_around_the_first_violation() {
    insta::assert_snapshot!(reports::markdown::run(&fixtures::long_trace(), &replay));
}

#[test]
fn markdown_suite() {
    insta::assert_snapshot!(reports::markdown::suite(
        "Nightly suite",
        &fixtures::suite(),
        &replay
    ));
}

#[test]
fn junit_suite() {
    insta::assert_snapshot!(reports::junit::suite(
        "Nightly suite",
        &fixtures::suite(),
        &replay
    ));
}

#[test]
fn report_dir_index_links_each_failure_to_its_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let index = reports::write_report_dir(dir.path(), "Nightly suite", &fixtures::suite(), &replay)
        .expect("written");
    let text = std::fs::read_to_string(index).expect("index");
    insta::assert_snapshot!(text);
}

/// The timeline's SVG, one element per line: its structure (lanes, bands, marks, cuts, writes,
/// violations and where each sits), not its pixels.
#[test]
fn html_timeline_svg_of_a_failing_run() {
    let svg = reports::html::timeline_svg(&fixtures::failing_with_two_violations());
    insta::assert_snapshot!(svg.replace("><", ">\n<"));
}
