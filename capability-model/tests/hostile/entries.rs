//! One entry function per wire message that arrives from the other side,
//! shared by the property tests (`tests/hostile_input.rs`, on stable, in the
//! normal `cargo test`) and the fuzz targets (`fuzz/fuzz_targets/*.rs`,
//! cargo-fuzz on nightly), which include this file. Each takes raw bytes
//! as they come off the network and panics when a property is broken:
//!
//! - the reader returns (no panic, no stack exhaustion);
//! - a message that reads writes out to JSON that reads back to the same
//!   value (what the runtime stores in its outbox and sends again is what
//!   it accepted).

use capability_model::wire::{EvidenceRecord, Heartbeat, RawConfig, from_json};

/// Bytes as JSON, as the control plane and the runtime read a body; `None`
/// when they are not JSON (refused before any message type is involved).
fn json(data: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(data).ok()
}

/// The value read as a `T` and, when it reads, written out and read again.
fn round_trip<T>(value: &serde_json::Value)
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(message) = from_json::<T>(value) {
        let written = serde_json::to_value(&message).expect("an accepted message serializes");
        let again = from_json::<T>(&written)
            .unwrap_or_else(|e| panic!("{written} does not read back: {e}"));
        assert_eq!(again, message, "{written} reads back as another message");
    }
}

/// Evidence records (the outbox's batches, `POST /v1/evidence/batch`).
pub fn evidence(data: &[u8]) {
    if let Some(value) = json(data) {
        round_trip::<EvidenceRecord>(&value);
        round_trip::<Vec<EvidenceRecord>>(&value);
    }
}

/// Heartbeats (`POST /api/agent/heartbeat`).
pub fn heartbeat(data: &[u8]) {
    if let Some(value) = json(data) {
        round_trip::<Heartbeat>(&value);
    }
}

/// The configuration document, as the control plane serves it (JSON) and
/// as the agent configuration file holds it (TOML). Its shape only: the
/// runtime's own checks of the values are fuzzed in `fuzz/runtime`.
pub fn config_document(data: &[u8]) {
    if let Some(value) = json(data) {
        let _ = from_json::<RawConfig>(&value);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = toml::from_str::<RawConfig>(text);
    }
}
