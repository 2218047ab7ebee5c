//! Fuzz target: the wire reader of `config_document` messages. The entry function
//! and its properties are shared with the property tests of
//! capability-model/tests/hostile_input.rs.

#![no_main]

#[allow(dead_code)]
#[path = "../../capability-model/tests/hostile/entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::config_document(data));
