//! XML 1.0 escaping for the JUnit report. Everything that reaches the XML (scenario names, trace
//! hashes, violation details, replay commands) passes through here: a detail is engine output
//! and may hold any character, and one stray `<` or control character makes CI throw the whole
//! report away.

use crate::push_visible_control;

/// `text` escaped for element content.
pub(crate) fn text(text: &str) -> String {
    escape(text, false)
}

/// `text` escaped for an attribute value in double or single quotes.
pub(crate) fn attr(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, in_attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A parser turns a raw CR (or CR LF) into LF, and in an attribute it also turns tab
            // and LF into spaces: character references survive both.
            '\r' => out.push_str("&#13;"),
            '\n' if in_attribute => out.push_str("&#10;"),
            '\t' if in_attribute => out.push_str("&#9;"),
            c => {
                if !push_visible_control(&mut out, c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped_in_text_and_attributes() {
        let raw = r#"a & b < c > d "e" 'f'"#;
        let escaped = "a &amp; b &lt; c &gt; d &quot;e&quot; &apos;f&apos;";
        assert_eq!(text(raw), escaped);
        assert_eq!(attr(raw), escaped);
    }

    #[test]
    fn an_entity_in_the_input_is_escaped_not_passed_through() {
        assert_eq!(text("&amp;"), "&amp;amp;");
    }

    #[test]
    fn control_characters_forbidden_by_xml_are_removed() {
        let raw: String = (0u32..0x20)
            .chain([0x7f, 0xfffe, 0xffff])
            .filter_map(char::from_u32)
            .collect();
        for escaped in [text(&raw), attr(&raw)] {
            let forbidden = escaped.chars().find(|&c| {
                (c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
                    || matches!(c, '\u{fffe}' | '\u{ffff}')
            });
            assert_eq!(forbidden, None, "{escaped:?}");
            assert!(
                escaped.contains("\\u{1b}"),
                "shown, not dropped: {escaped:?}"
            );
        }
    }

    #[test]
    fn line_breaks_and_tabs_survive_attribute_normalisation() {
        assert_eq!(attr("a\tb\nc\r\nd"), "a&#9;b&#10;c&#13;&#10;d");
        assert_eq!(text("a\tb\nc\r\nd"), "a\tb\nc&#13;\nd");
    }

    #[test]
    fn other_characters_pass_through() {
        assert_eq!(text("site a:1 → b:1, ü, 日本"), "site a:1 → b:1, ü, 日本");
    }
}
