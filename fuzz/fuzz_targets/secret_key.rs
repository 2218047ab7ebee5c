//! Fuzz target: minisign secret key files, encrypted or not (also the
//! PLUGIN_REGISTRY_SECRET_KEY form). The entry function and its properties
//! are shared with the property tests of
//! registry-tools/tests/hostile_input.rs.

#![no_main]

#[allow(dead_code)]
#[path = "../../registry-tools/tests/hostile/entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::secret_key(data));
