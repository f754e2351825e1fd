//! An arbitrary sequence of inputs into a group of three sites over memory storage: never a
//! panic, and the local rules of `replication::fuzzing::group` hold after every step (records
//! applied in order, no write accepted as a client, generations never going back).

#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::fuzzing::group::{run_script, GroupScript};

fuzz_target!(|script: GroupScript| {
    run_script(&script);
});
