//! Any text as a scenario file: a scenario or an error naming the file, never a panic; and a
//! scenario that parses keeps what the runner relies on (steps in time order, each with its
//! line; a group or a swarm, not both). The proptest twin is `scenarios/tests/spec_fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        scenarios::spec::check_any_text(text);
    }
});
