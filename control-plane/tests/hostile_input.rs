//! Property tests of the control plane's reader of evidence records, on
//! raw bytes: arbitrary and mutated records never panic it. The same entry
//! function is the fuzz target `evidence_body` (`fuzz/control-plane/`,
//! cargo-fuzz on nightly). Generated JSON documents are tested beside the
//! reader (`src/model.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[allow(dead_code)]
#[path = "hostile/entries.rs"]
mod entries;

use proptest::prelude::*;

/// A record as the runtime sends it, addressed to [`entries::RUNTIME`];
/// scripts/fuzz.sh seeds the fuzz target with it too.
const RECORD: &str = include_str!("hostile/seeds/record.json");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_evidence_reader(data in prop::collection::vec(any::<u8>(), 0..256)) {
        entries::evidence_body(&data);
    }

    #[test]
    fn mutated_records_never_panic_the_evidence_reader(at in 0usize..1100, cut in 0usize..16, insert in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = RECORD.as_bytes().to_vec();
        let at = at.min(bytes.len());
        let end = (at + cut).min(bytes.len());
        bytes.splice(at..end, insert);
        entries::evidence_body(&bytes);
    }
}

#[test]
fn the_seed_record_is_accepted() {
    use assessment_control_plane::model::{NewEvidence, RecordRules};
    let record: serde_json::Value = serde_json::from_str(RECORD).unwrap();
    let rules = RecordRules {
        subjects_bound: true,
        runtime_id: entries::RUNTIME,
        max_record_bytes: 4 << 20,
    };
    NewEvidence::from_body(
        record["idempotency_key"].as_str().unwrap().to_string(),
        record["evidence"].clone(),
        "records[0]",
        rules,
    )
    .unwrap();
}
