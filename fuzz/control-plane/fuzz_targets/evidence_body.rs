//! Fuzz target: `evidence_body` of control-plane/tests/hostile/entries.rs,
//! shared with the property tests of control-plane/tests/hostile_input.rs.

#![no_main]

#[allow(dead_code)]
#[path = "../../../control-plane/tests/hostile/entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::evidence_body(data));
