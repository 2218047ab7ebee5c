//! Property tests of the wire messages one side receives from the other:
//! arbitrary and mutated bytes never panic a reader, and what reads
//! round-trips. The same entry functions are the fuzz targets `evidence`,
//! `heartbeat` and `config_document` (`fuzz/`, cargo-fuzz on nightly).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[allow(dead_code)]
#[path = "hostile/entries.rs"]
mod entries;

use proptest::prelude::*;

/// A valid message of each kind, to mutate: random bytes rarely get past
/// the JSON reader. scripts/fuzz.sh seeds the fuzz targets with them too.
const EVIDENCE: &str = include_str!("hostile/seeds/evidence.json");
const HEARTBEAT: &str = include_str!("hostile/seeds/heartbeat.json");
const CONFIG: &str = include_str!("hostile/seeds/config_document.json");

/// `valid` with `cut` bytes from `at` replaced by `insert`.
fn mutate(valid: &str, at: usize, cut: usize, insert: &[u8]) -> Vec<u8> {
    let mut bytes = valid.as_bytes().to_vec();
    let at = at.min(bytes.len());
    let end = (at + cut).min(bytes.len());
    bytes.splice(at..end, insert.iter().copied());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_wire_readers(data in prop::collection::vec(any::<u8>(), 0..256)) {
        entries::evidence(&data);
        entries::heartbeat(&data);
        entries::config_document(&data);
    }

    #[test]
    fn mutated_evidence_never_panics_and_what_reads_round_trips(at in 0usize..800, cut in 0usize..16, insert in prop::collection::vec(any::<u8>(), 0..8)) {
        entries::evidence(&mutate(EVIDENCE, at, cut, &insert));
    }

    #[test]
    fn mutated_heartbeats_never_panic_and_what_reads_round_trips(at in 0usize..600, cut in 0usize..16, insert in "[\"{}\\[\\],:0-9a-z ()]{0,8}") {
        entries::heartbeat(&mutate(HEARTBEAT, at, cut, insert.as_bytes()));
    }

    #[test]
    fn mutated_configuration_documents_never_panic_the_reader(at in 0usize..500, cut in 0usize..16, insert in "[\"{}\\[\\],:0-9a-z/]{0,8}") {
        entries::config_document(&mutate(CONFIG, at, cut, insert.as_bytes()));
    }
}

#[test]
fn the_seed_messages_are_valid() {
    use capability_model::wire::{EvidenceRecord, Heartbeat, RawConfig, from_json};
    let read = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    from_json::<EvidenceRecord>(&read(EVIDENCE)).unwrap();
    from_json::<Heartbeat>(&read(HEARTBEAT)).unwrap();
    from_json::<RawConfig>(&read(CONFIG)).unwrap();
}

#[test]
fn deeply_nested_messages_are_refused_without_exhausting_the_stack() {
    let deep = "[".repeat(100_000);
    entries::evidence(deep.as_bytes());
    entries::heartbeat(deep.as_bytes());
    entries::config_document(deep.as_bytes());
}
