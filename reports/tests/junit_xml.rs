//! The JUnit report read back: by a tiny checker of our own (tags balance, attribute values
//! unescape to what went in) and by a strict XML 1.0 parser (roxmltree), which rejects what CI
//! tools would choke on.

mod fixtures;

use fixtures::replay;
use reports::sim::result::RunResult;

/// An element's start tag: its name and attributes, values unescaped.
#[derive(Debug)]
struct StartTag {
    name: String,
    attrs: Vec<(String, String)>,
}

impl StartTag {
    fn attr(&self, key: &str) -> &str {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("<{}> has no {key}", self.name))
    }
}

/// Unescapes the five named entities and numeric references; panics on a bare `&`.
fn unescape(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').expect("an entity ends with ;") + at;
        let entity = &rest[at + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = entity.strip_prefix('#').expect("a known entity");
                char::from_u32(n.parse().expect("a decimal reference")).expect("a char")
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Reads every start tag and checks that end tags match them, that no `<` appears outside a
/// tag and no `>` or `&`-less text hides in attribute values.
fn start_tags(xml: &str) -> Vec<StartTag> {
    let mut tags = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        assert!(
            !rest[..lt].contains('>'),
            "a raw > in text: {:?}",
            &rest[..lt]
        );
        let gt = rest[lt..].find('>').expect("a tag ends") + lt;
        let tag = &rest[lt + 1..gt];
        rest = &rest[gt + 1..];
        assert!(!tag.contains('<'), "a raw < inside a tag: {tag:?}");
        if tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop().as_deref(), Some(name), "end tag matches");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attrs_text) = tag.split_once(' ').unwrap_or((tag, ""));
        let mut attrs = Vec::new();
        while let Some(eq) = attrs_text.find("=\"") {
            let key = attrs_text[..eq].trim().to_string();
            let value_end = attrs_text[eq + 2..].find('"').expect("a closing quote") + eq + 2;
            attrs.push((key, unescape(&attrs_text[eq + 2..value_end])));
            attrs_text = &attrs_text[value_end + 1..];
        }
        assert_eq!(attrs_text.trim(), "", "unparsed attribute text in <{name}>");
        if !self_closing {
            open.push(name.to_string());
        }
        tags.push(StartTag {
            name: name.to_string(),
            attrs,
        });
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    tags
}

fn named<'a>(tags: &'a [StartTag], name: &str) -> Vec<&'a StartTag> {
    tags.iter().filter(|t| t.name == name).collect()
}

#[test]
fn the_junit_report_reads_back_with_the_counts_that_went_in() {
    let runs = fixtures::suite();
    let xml = reports::junit::suite("Nightly <suite>", &runs, &replay);
    let tags = start_tags(&xml);

    let root = named(&tags, "testsuites");
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].attr("name"), "Nightly <suite>");
    assert_eq!(root[0].attr("tests"), "5");
    assert_eq!(root[0].attr("failures"), "3");

    assert_eq!(named(&tags, "testcase").len(), runs.len());
    let suites = named(&tags, "testsuite");
    let by_suite: Vec<_> = suites
        .iter()
        .map(|s| (s.attr("name"), s.attr("tests"), s.attr("failures")))
        .collect();
    assert_eq!(
        by_suite,
        [
            ("minority-master", "3", "1"),
            ("long-run", "1", "1"),
            ("odd <&> \"name\" 'x' | y", "1", "1"),
        ]
    );
    let failures = named(&tags, "failure");
    let messages: Vec<_> = failures.iter().map(|f| f.attr("message")).collect();
    // In suite order: minority-master (first seen) before long-run, though its failure came later.
    assert_eq!(
        messages[0],
        "one_master_per_generation: A and B were both master of generation 2"
    );
    assert_eq!(
        messages[1],
        "liveness: at 2/40 while the master 10.0.0.1:7000 is at 2/90"
    );
    // The detail's line break survives in the attribute; its control characters are shown.
    assert!(
        messages[2].starts_with("durable_writes_survive: write of \"k<1>&v\" | *lost*\nsecond"),
        "{:?}",
        messages[2]
    );
}

#[test]
fn a_strict_xml_parser_reads_the_report_and_sees_the_same_text() {
    let runs = fixtures::suite();
    let xml = reports::junit::suite("Nightly", &runs, &replay);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML 1.0");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), runs.len());
    let odd = cases
        .iter()
        .find(|c| c.attribute("classname") == Some(runs[4].scenario.as_str()))
        .expect("the odd scenario's case, by its exact name");
    let failure = odd
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("a failure");
    assert_eq!(failure.attribute("type"), Some("durable_writes_survive"));
    let body = failure.text().expect("a body");
    assert!(
        body.contains("durable_writes_survive at a|b:1, 1.500 s: write of \"k<1>&v\""),
        "{body}"
    );
    assert!(body.contains("\\u{1b}[31mred\\u{0} ]]> `tick`"), "{body}");
    assert!(
        body.ends_with(&format!("replay: {}", replay(&runs[4]))),
        "{body}"
    );
    let out = odd
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .expect("system-out");
    assert_eq!(out.text(), Some("trace hash 00000000000000ff"));
}

#[test]
fn control_characters_never_reach_the_xml() {
    let every_control: String = (0u32..0x20)
        .chain([0x7f, 0xfffe, 0xffff])
        .filter_map(char::from_u32)
        .collect();
    let mut run = fixtures::special_characters();
    run.scenario = format!("s{every_control}");
    run.trace_hash = every_control.clone();
    run.violations[0].detail = every_control.clone();
    let replay_with_controls = |_: &RunResult| every_control.clone();
    let xml = reports::junit::suite(&every_control, &[run], &replay_with_controls);
    let forbidden: Vec<char> = xml
        .chars()
        .filter(|&c| {
            (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
        })
        .collect();
    assert_eq!(forbidden, [], "forbidden characters in the XML");
    roxmltree::Document::parse(&xml).expect("well-formed XML 1.0");
}
