//! Evidence from runtimes: `POST /api/evidence` (the Compliance Framework's
//! one-record endpoint, idempotent with an `Idempotency-Key` header) and
//! `POST /v1/evidence/batch` (idempotent batches).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Runtime;
use crate::error::{ApiError, StoreError};
use crate::model::{BatchOutcome, MAX_BATCH_RECORDS, NewEvidence, RuntimeIdentity};
use crate::relay::Held;
use crate::state::AppState;

/// The request header naming a record's idempotency key on
/// `POST /api/evidence` (the IETF httpapi draft's `Idempotency-Key`).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Stores one `EvidenceCreateRequest`: 201 `{"data": <stored record>}`; the
/// record is checked as in a batch (see [`batch`]). Its idempotency key is
/// the `Idempotency-Key` header when the request has one — the same key
/// with the same record again is stored once and answered 200 with the
/// stored record (409 with another record) — else a generated one, as a
/// Compliance Framework API stores every request.
pub async fn create(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let metrics = state.metrics.clone();
    let answer = store_one(runtime, state, &headers, body).await;
    match &answer {
        Ok((StatusCode::CREATED, _)) => metrics.evidence_stored(1, 0),
        Ok(_) => metrics.evidence_stored(0, 1),
        Err(error) => metrics.evidence_rejected(1, error.status),
    }
    answer
}

async fn store_one(
    runtime: RuntimeIdentity,
    state: AppState,
    headers: &HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::bad_request("the Idempotency-Key header must be ASCII text"))?
            .trim()
            .to_string(),
        None => Uuid::new_v4().to_string(),
    };
    let Json(body) = body?;
    let rules = state.record_rules(&runtime);
    let quota = state.config.limits.runtime_storage_quota;
    let record = NewEvidence::from_body(key.clone(), body, "body", rules)?;
    let held = hold(&state, runtime.id, std::slice::from_ref(&record)).await?;
    let stored = state
        .store
        .call(move |db| {
            let outcome =
                db.store_evidence(runtime.id, std::slice::from_ref(&record), quota, Utc::now())?;
            let stored = db.evidence(runtime.id, &key)?.ok_or_else(|| {
                StoreError::Inconsistent("the evidence just stored cannot be read back".to_string())
            })?;
            Ok((outcome, stored))
        })
        .await;
    let (outcome, stored) = settle(&state, held, stored).await?;
    let status = if outcome.accepted == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "data": stored }))))
}

/// Stores a batch `{"records": [{"idempotency_key", "evidence"}]}`: 200
/// `{"accepted", "duplicates"}`; otherwise nothing is stored and the answer
/// names the first refused record: 400 invalid (a uuid not canonical or
/// nil, among others), 422 naming another runtime (`subjects[].identifier`,
/// `labels.host`), 409 an idempotency key reused for another record or a
/// uuid of another runtime's records, 413 a record over the size limit or
/// more than 1000 records, 507 over the runtime's storage quota.
pub async fn batch(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<BatchOutcome>, ApiError> {
    let metrics = state.metrics.clone();
    // The records the request carries, once its body is read as records.
    let mut received = 0;
    let answer = store_batch(runtime, state, body, &mut received).await;
    match &answer {
        Ok(outcome) => metrics.evidence_stored(outcome.accepted, outcome.duplicates),
        Err(error) => metrics.evidence_rejected(received, error.status),
    }
    answer.map(Json)
}

async fn store_batch(
    runtime: RuntimeIdentity,
    state: AppState,
    body: Result<Json<Value>, JsonRejection>,
    received: &mut usize,
) -> Result<BatchOutcome, ApiError> {
    let Json(mut body) = body?;
    let Some(Value::Array(records)) = body.get_mut("records").map(Value::take) else {
        return Err(ApiError::bad_request(
            "the body must be {\"records\": [{\"idempotency_key\": ..., \"evidence\": {...}}]}",
        ));
    };
    *received = records.len();
    if records.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} records in one batch; send at most {MAX_BATCH_RECORDS}",
                records.len()
            ),
        ));
    }
    let rules = state.record_rules(&runtime);
    let quota = state.config.limits.runtime_storage_quota;
    let records = records
        .into_iter()
        .enumerate()
        .map(|(index, mut record)| {
            let at = format!("records[{index}]");
            let key = match record.get("idempotency_key") {
                Some(Value::String(key)) => key.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "{at}: idempotency_key is missing or not a string"
                    )));
                }
            };
            let Some(evidence) = record.get_mut("evidence").map(Value::take) else {
                return Err(ApiError::bad_request(format!("{at}: evidence is missing")));
            };
            Ok(NewEvidence::from_body(key, evidence, &at, rules)?)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let held = hold(&state, runtime.id, &records).await?;
    let outcome = state
        .store
        .call(move |db| db.store_evidence(runtime.id, &records, quota, Utc::now()))
        .await;
    let outcome = settle(&state, held, outcome).await?;
    tracing::debug!(runtime_id = %runtime.id, accepted = outcome.accepted, duplicates = outcome.duplicates, "evidence batch");
    Ok(outcome)
}

/// With a relay, puts `records` in its queue, held, before the store takes
/// them (see [`crate::relay`]): a crash after the store answered cannot
/// lose them for the upstream.
async fn hold(
    state: &AppState,
    runtime: Uuid,
    records: &[NewEvidence],
) -> Result<Option<Held>, ApiError> {
    let Some(queue) = state.relay.clone() else {
        return Ok(None);
    };
    let records = records.to_vec();
    let held = tokio::task::spawn_blocking(move || queue.hold(runtime, &records))
        .await
        .map_err(|e| relay_failure(e.to_string()))?
        .map_err(|e| relay_failure(e.to_string()))?;
    Ok(Some(held))
}

/// Releases the held records to the relay when the store took them, drops
/// them when it refused them; passes the store's answer on.
async fn settle<T>(
    state: &AppState,
    held: Option<Held>,
    stored: Result<T, StoreError>,
) -> Result<T, ApiError> {
    if let (Some(queue), Some(held)) = (state.relay.clone(), held) {
        let ok = stored.is_ok();
        let settled = tokio::task::spawn_blocking(move || {
            if ok {
                queue.release(held)
            } else {
                queue.drop_held(held)
            }
        })
        .await
        .map_err(|e| relay_failure(e.to_string()))?;
        // Stored but not released: the next start's recovery releases it;
        // the runtime is told to send it again meanwhile (a duplicate).
        settled.map_err(|e| relay_failure(e.to_string()))?;
    }
    Ok(stored?)
}

fn relay_failure(message: String) -> ApiError {
    tracing::error!("the relay queue failed: {message}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the relay queue is unavailable; send the evidence again later",
    )
}
