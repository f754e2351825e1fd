//! The scenario parser never panics: any text gives a scenario or an error that names the file.
//! (The `scenario_file` fuzz target checks the same property with coverage guidance.)

use proptest::prelude::*;
use std::path::Path;

fn catalog_texts() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    scenarios::spec::catalog_files(&dir)
        .unwrap()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

fn check(text: &str) {
    scenarios::spec::check_any_text(text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn any_text_gives_a_scenario_or_an_error(text in ".{0,400}") {
        check(&text);
    }

    /// Catalog files with bytes cut out, duplicated or replaced: close to valid, so the
    /// validation after serde is exercised too.
    #[test]
    fn mutated_catalog_files_give_a_scenario_or_an_error(
        which in 0usize..64,
        edits in proptest::collection::vec((0usize..4096, 0usize..3, any::<char>()), 1..6),
    ) {
        let texts = catalog_texts();
        let mut text: Vec<char> = texts[which % texts.len()].chars().collect();
        for (at, kind, c) in edits {
            if text.is_empty() { break; }
            let at = at % text.len();
            match kind {
                0 => { text.remove(at); }
                1 => { text.insert(at, c); }
                _ => { text[at] = c; }
            }
        }
        check(&text.into_iter().collect::<String>());
    }
}
