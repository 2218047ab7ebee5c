//! The control plane's reader of evidence records, as one entry function
//! shared by the property tests (`tests/hostile_input.rs`, on stable, in
//! the normal `cargo test`) and the fuzz target `evidence_body`
//! (`fuzz/control-plane/`, cargo-fuzz on nightly), which include this file.
//! It takes a record's raw bytes as they come in a batch and panics when a
//! property breaks:
//!
//! - the reader returns (no panic, no stack exhaustion);
//! - what is accepted is identified by the same digest in canonical form,
//!   and canonical form is a fixed point (an idempotent replay is
//!   recognised however the runtime wrote its JSON).

use assessment_control_plane::canonical::canonicalize;
use assessment_control_plane::model::{NewEvidence, RecordRules, evidence_sha256};
use serde_json::Value;

/// The runtime that sends the records.
pub const RUNTIME: uuid::Uuid = uuid::Uuid::from_u128(0x6f6b_1e3c_4a0f_4d8e_9b1a_5c2e_7d3f_8a90);

/// One record of a batch: `{"idempotency_key": …, "evidence": …}` (a bare
/// evidence body is read with a fixed key).
pub fn evidence_body(data: &[u8]) {
    let Ok(record) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let key = match record.get("idempotency_key") {
        Some(Value::String(key)) => key.clone(),
        _ => "k".to_string(),
    };
    let body = record.get("evidence").cloned().unwrap_or(record);
    let rules = RecordRules {
        subjects_bound: true,
        runtime_id: RUNTIME,
        max_record_bytes: 4 << 20,
    };
    let accepted = NewEvidence::from_body(key, body.clone(), "records[0]", rules).is_ok();
    let canonical = canonicalize(&body);
    assert_eq!(
        canonicalize(&canonical),
        canonical,
        "canonical form is a fixed point"
    );
    if accepted {
        assert_eq!(
            evidence_sha256(&body).ok(),
            evidence_sha256(&canonical).ok(),
            "{body}"
        );
    }
}
