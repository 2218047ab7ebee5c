//! Fuzz target: `outbox_batch` of host/tests/hostile/entries.rs, shared with the
//! property tests of host/tests/hostile_input.rs.

#![no_main]

#[allow(dead_code)]
#[path = "../../../host/tests/hostile/entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::outbox_batch(data));
