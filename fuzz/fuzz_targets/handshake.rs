//! Any bytes from a peer during the handshake: refused cleanly, refused for good, established
//! only by the proof of a holder of the secret, and no wrong proof is told apart from another.
//! The properties live in `replication::fuzzing::handshake`, shared with the proptest suite.

#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::fuzzing::handshake::{check_script, HandshakeScript};

fuzz_target!(|script: HandshakeScript| {
    check_script(&script);
});
