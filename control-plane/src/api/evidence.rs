//! Evidence from runtimes: `POST /api/evidence` (the Compliance Framework's
//! one-record endpoint) and `POST /v1/evidence/batch` (idempotent batches).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use crate::auth::Runtime;
use crate::error::{ApiError, StoreError};
use crate::model::{BatchOutcome, MAX_BATCH_RECORDS, NewEvidence};

/// Stores one `EvidenceCreateRequest` under a generated idempotency key:
/// 201 `{"data": <stored record>}`.
pub async fn create(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let key = Uuid::new_v4().to_string();
    let record = NewEvidence::from_body(key.clone(), body, "body")?;
    let stored = state
        .store
        .call(move |db| {
            db.store_evidence(runtime.id, std::slice::from_ref(&record), Utc::now())?;
            db.evidence(runtime.id, &key)?.ok_or_else(|| {
                StoreError::Inconsistent("the evidence just stored cannot be read back".to_string())
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "data": stored }))))
}

/// Stores a batch `{"records": [{"idempotency_key", "evidence"}]}`: 200
/// `{"accepted", "duplicates"}`; 413 for more than 1000 records; 400 naming
/// the first invalid record.
pub async fn batch(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<BatchOutcome>, ApiError> {
    let Json(mut body) = body?;
    let Some(Value::Array(records)) = body.get_mut("records").map(Value::take) else {
        return Err(ApiError::bad_request(
            "the body must be {\"records\": [{\"idempotency_key\": ..., \"evidence\": {...}}]}",
        ));
    };
    if records.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} records in one batch; send at most {MAX_BATCH_RECORDS}",
                records.len()
            ),
        ));
    }
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
            Ok(NewEvidence::from_body(key, evidence, &at)?)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let outcome = state
        .store
        .call(move |db| db.store_evidence(runtime.id, &records, Utc::now()))
        .await?;
    tracing::debug!(runtime_id = %runtime.id, accepted = outcome.accepted, duplicates = outcome.duplicates, "evidence batch");
    Ok(Json(outcome))
}
