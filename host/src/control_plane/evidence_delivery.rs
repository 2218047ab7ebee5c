//! Evidence delivery to the server: in batches through this project's
//! extension `POST /v1/evidence/batch` where the server has it, else record
//! by record through the Compliance Framework's own `POST /api/evidence`.
//!
//! Discovery: the first delivery tries the batch endpoint. An answer of 404
//! or 405 to it means the server does not have the extension (a Compliance
//! Framework API, or the reference control plane in its
//! Compliance-Framework-only mode); that is said once in the log and
//! remembered for the life of the process, which delivers record by record
//! from then on. Any other answer means it has it. A restarted runtime
//! discovers again, so a server that gains (or loses) the extension is
//! followed at the next start.
//!
//! Exactly once, record by record: the outbox keeps a batch until every
//! record of it was answered 200 or 201, so nothing is lost. A record whose
//! answer was lost is sent again; each request carries the record's
//! idempotency key in an `Idempotency-Key` header (the IETF
//! httpapi draft's field), and a server that honours it — the reference
//! control plane — stores the record once. The Compliance Framework API's
//! published schema defines no idempotency for `POST /api/evidence` (the
//! evidence `uuid` names a stream of records, not one record), so such a
//! server may store a record sent again twice: at least once there, never
//! lost, and a duplicate is recognisable by its stream `uuid` with the same
//! `start`, `end` and job (the origin actor's `job` property). Within one
//! process, records already answered are not sent again when a later record
//! of their batch fails ([`Confirmed`]), so an outage in the middle of a
//! batch resends nothing that was stored.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::client::{ControlPlaneClient, error_text, retry_after};
use crate::results::evidence::{EvidenceBatch, EvidenceRecord};
use crate::results::outbox::{DeliveryError, EvidenceSink};

/// The header carrying a record's idempotency key on `POST /api/evidence`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// Keys of records answered by the server but whose outbox batch is not
/// removed yet, at most this many (then forgotten at once: a record sent
/// again is stored once by a server honouring its key).
const MAX_CONFIRMED: usize = 20_000;

const UNKNOWN: u8 = 0;
const PRESENT: u8 = 1;
const ABSENT: u8 = 2;

/// Whether the server serves the batch extension: unknown until the first
/// delivery, then fixed for the process's life.
#[derive(Debug, Default)]
pub struct BatchSupport {
    state: AtomicU8,
    /// Records answered one by one since their batch was taken from the
    /// outbox.
    confirmed: Mutex<Confirmed>,
}

impl BatchSupport {
    /// `Some(true)` when the server has the batch endpoint, `Some(false)`
    /// when it has not, `None` before the first delivery.
    pub fn known(&self) -> Option<bool> {
        match self.state.load(Ordering::Relaxed) {
            PRESENT => Some(true),
            ABSENT => Some(false),
            _ => None,
        }
    }
}

/// Idempotency keys of records the server stored, bounded.
#[derive(Debug)]
struct Confirmed {
    keys: HashSet<String>,
    max: usize,
}

impl Default for Confirmed {
    fn default() -> Self {
        Confirmed {
            keys: HashSet::new(),
            max: MAX_CONFIRMED,
        }
    }
}

impl Confirmed {
    fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    fn insert(&mut self, key: &str) {
        if self.keys.len() >= self.max {
            self.keys.clear();
        }
        self.keys.insert(key.to_string());
    }

    fn forget(&mut self, records: &[EvidenceRecord]) {
        for record in records {
            self.keys.remove(&record.idempotency_key);
        }
    }
}

/// How the server answered one evidence request.
fn classify(status: u16, response: &reqwest::Response) -> Option<Refusal> {
    match status {
        200 | 201 => None,
        // Refused for what was sent (malformed, too large, another
        // runtime's identity, a key reused for another record): set aside
        // for the operator. 429 and 507 (quota) stay transient.
        400 | 409 | 413 | 422 => Some(Refusal::Rejected),
        429 | 503 => Some(match retry_after(response) {
            Some(after) => Refusal::Throttled(after),
            None => Refusal::Transient,
        }),
        _ => Some(Refusal::Transient),
    }
}

enum Refusal {
    Rejected,
    Throttled(std::time::Duration),
    Transient,
}

impl Refusal {
    fn into_error(self, why: String) -> DeliveryError {
        match self {
            Refusal::Rejected => DeliveryError::Rejected(why),
            Refusal::Throttled(after) => DeliveryError::Throttled { after, why },
            Refusal::Transient => DeliveryError::Transient(why),
        }
    }
}

impl ControlPlaneClient {
    /// One batch request; `None` when the server has no batch endpoint
    /// (discovered on this, the first, delivery).
    async fn deliver_batch(&self, records: &[EvidenceRecord]) -> Option<Result<(), DeliveryError>> {
        let url = self.url("/v1/evidence/batch");
        let body = EvidenceBatch {
            records: records.into(),
        };
        let response = match self
            .send(|http, token| http.post(&url).bearer_auth(token).json(&body))
            .await
        {
            Ok(response) => response,
            Err(e) => return Some(Err(DeliveryError::Transient(e.to_string()))),
        };
        let status = response.status().as_u16();
        let discovering = self.batch.state.load(Ordering::Relaxed) == UNKNOWN;
        if discovering && matches!(status, 404 | 405) {
            self.batch.state.store(ABSENT, Ordering::Relaxed);
            tracing::info!(
                status,
                "the server has no evidence batch endpoint (POST /v1/evidence/batch): delivering record by record with POST /api/evidence for the life of this process"
            );
            return None;
        }
        if discovering && status < 500 && status != 401 && status != 429 {
            self.batch.state.store(PRESENT, Ordering::Relaxed);
        }
        Some(match classify(status, &response) {
            None => Ok(()),
            Some(refusal) => Err(refusal.into_error(error_text(response).await)),
        })
    }

    /// Each record with its own `POST /api/evidence`, in order; a record
    /// the server already stored in this process's life is not sent again.
    async fn deliver_each(&self, records: &[EvidenceRecord]) -> Result<(), DeliveryError> {
        let url = self.url("/api/evidence");
        for record in records {
            let key = record.idempotency_key.as_str();
            let done = match self.batch.confirmed.lock() {
                Ok(confirmed) => confirmed.contains(key),
                Err(poisoned) => poisoned.into_inner().contains(key),
            };
            if done {
                continue;
            }
            let response = self
                .send(|http, token| {
                    http.post(&url)
                        .bearer_auth(token)
                        .header(IDEMPOTENCY_KEY_HEADER, key)
                        .json(&record.evidence)
                })
                .await
                .map_err(|e| DeliveryError::Transient(e.to_string()))?;
            let status = response.status().as_u16();
            if let Some(refusal) = classify(status, &response) {
                let why = format!(
                    "record {key} (evidence {}): {}",
                    record.evidence.uuid,
                    error_text(response).await
                );
                return Err(refusal.into_error(why));
            }
            match self.batch.confirmed.lock() {
                Ok(mut confirmed) => confirmed.insert(key),
                Err(poisoned) => poisoned.into_inner().insert(key),
            }
        }
        // The whole part is stored: its keys are needed no more (the set
        // holds only the part in flight).
        match self.batch.confirmed.lock() {
            Ok(mut confirmed) => confirmed.forget(records),
            Err(poisoned) => poisoned.into_inner().forget(records),
        }
        Ok(())
    }
}

impl EvidenceSink for ControlPlaneClient {
    async fn deliver(&self, records: &[EvidenceRecord]) -> Result<(), DeliveryError> {
        if self.batch.known() != Some(false)
            && let Some(outcome) = self.deliver_batch(records).await
        {
            return outcome;
        }
        self.deliver_each(records).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> EvidenceRecord {
        EvidenceRecord {
            idempotency_key: key.to_string(),
            evidence: Default::default(),
        }
    }

    #[test]
    fn confirmed_keys_are_bounded_and_forgotten_with_their_part() {
        let mut confirmed = Confirmed {
            keys: HashSet::new(),
            max: 3,
        };
        for key in ["a", "b", "c"] {
            confirmed.insert(key);
        }
        assert!(confirmed.contains("a") && confirmed.contains("c"));
        // The bound: a fourth key forgets the others.
        confirmed.insert("d");
        assert!(!confirmed.contains("a") && confirmed.contains("d"));
        assert_eq!(confirmed.keys.len(), 1);
        confirmed.insert("e");
        confirmed.forget(&[record("d"), record("x")]);
        assert!(!confirmed.contains("d") && confirmed.contains("e"));
    }
}
