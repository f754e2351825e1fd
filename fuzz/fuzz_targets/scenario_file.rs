//! Any text as a scenario file: a scenario or an error naming the file, never a panic; and a
//! scenario that parses keeps what the runner relies on (steps in time order, each with its
//! line; a group or a swarm, not both). The proptest twin is `scenarios/tests/spec_fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scenarios::spec::Scenario;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Scenario::from_text(Path::new("fuzz.toml"), text) {
        Ok(s) => {
            assert!(s.steps.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(s.steps.iter().all(|step| step.line > 0));
            assert!(s.group.is_some() != s.swarm.is_some());
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.toml:"), "{e}"),
    }
});
