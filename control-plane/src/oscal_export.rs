//! The stored evidence as one OSCAL assessment-results document
//! (`GET /v1/admin/oscal/assessment-results`, `evidence oscal`): the latest
//! record of each stream, one result per runtime, mapped by
//! `capability_model::wire::oscal` as the runtime's `run --output oscal`.
//!
//! Bounded: at most [`MAX_EXPORT_RECORDS`] streams and
//! [`MAX_EXPORT_BYTES`] of their records in one document; past either the
//! export is refused (413) with the advice to export one runtime at a time.

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use capability_model::wire::EvidenceRecord;
use capability_model::wire::oscal::{self, DocumentInput, ResultInput, span_of};

use crate::db::Backend;
use crate::error::StoreError;

/// The most streams one export holds.
pub const MAX_EXPORT_RECORDS: usize = 10_000;
/// The most bytes of stored records one export reads.
pub const MAX_EXPORT_BYTES: usize = 64 << 20;

/// One runtime's latest records, as the mapping reads them.
struct RuntimeRecords {
    runtime_id: String,
    host: String,
    records: Vec<EvidenceRecord>,
    unreadable: usize,
}

/// The document of the latest record of each stream of `runtime`, or of
/// every runtime.
pub fn assessment_results(
    db: &mut dyn Backend,
    runtime: Option<&str>,
) -> Result<Value, StoreError> {
    let stored = db.latest_evidence(runtime, MAX_EXPORT_RECORDS, MAX_EXPORT_BYTES)?;
    let mut runtimes: Vec<RuntimeRecords> = Vec::new();
    for record in stored {
        if runtimes
            .last()
            .is_none_or(|r| r.runtime_id != record.runtime_id)
        {
            runtimes.push(RuntimeRecords {
                runtime_id: record.runtime_id.clone(),
                host: String::new(),
                records: Vec::new(),
                unreadable: 0,
            });
        }
        let Some(current) = runtimes.last_mut() else {
            continue;
        };
        // Stored evidence was checked on arrival; a record of another
        // agent's shape that the mapping cannot read is counted, not lost
        // silently.
        match capability_model::wire::from_json(&record.evidence) {
            Ok(evidence) => {
                if current.host.is_empty() {
                    current.host = host_of(&evidence).unwrap_or_default();
                }
                current.records.push(EvidenceRecord {
                    idempotency_key: record.idempotency_key,
                    evidence,
                });
            }
            Err(_) => current.unreadable += 1,
        }
    }
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let title = match runtime {
        Some(id) => format!("Assessment results of runtime {id}"),
        None => "Assessment results of the fleet".to_string(),
    };
    let results = runtimes
        .iter()
        .map(|r| {
            let (start, end) = span_of(&r.records).unwrap_or((&now, &now));
            ResultInput {
                runtime_id: &r.runtime_id,
                host: if r.host.is_empty() {
                    &r.runtime_id
                } else {
                    &r.host
                },
                start,
                end,
                records: &r.records,
                remarks: (r.unreadable > 0).then(|| {
                    format!(
                        "{} stored record(s) of this runtime could not be read as evidence and are left out.",
                        r.unreadable
                    )
                }),
            }
        })
        .collect();
    let document = oscal::assessment_results(&DocumentInput {
        title,
        last_modified: &now,
        tool_version: env!("CARGO_PKG_VERSION"),
        results,
    });
    Ok(document.to_json())
}

/// The machine's host name: the `host` label, else the subject's
/// description.
fn host_of(evidence: &capability_model::wire::EvidenceCreateRequest) -> Option<String> {
    evidence
        .labels
        .get("host")
        .cloned()
        .or_else(|| evidence.subjects.iter().find_map(|s| s.description.clone()))
}
