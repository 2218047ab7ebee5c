//! `POST /api/agent/heartbeat`: the Compliance Framework heartbeat
//! (`handler.HeartbeatCreateRequest`: `uuid`, `created_at`) plus the
//! runtime's extension fields, read as the wire type
//! (`capability_model::wire::Heartbeat`) and stored whole, as sent, as its
//! last heartbeat.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use capability_model::wire::{Heartbeat, from_json};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::auth::Runtime;
use crate::error::ApiError;
use crate::state::AppState;

/// Records a heartbeat: 201; 400 for a malformed body (naming the field
/// that does not fit, e.g. `plugins.sshd`); 403 when `uuid` is not the
/// calling runtime's id.
pub async fn heartbeat(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(body) = body?;
    if !body.is_object() {
        return Err(ApiError::bad_request("the heartbeat must be a JSON object"));
    }
    let heartbeat: Heartbeat =
        from_json(&body).map_err(|e| ApiError::bad_request(format!("invalid heartbeat: {e}")))?;
    let uuid = Uuid::parse_str(&heartbeat.uuid)
        .map_err(|_| ApiError::bad_request(format!("uuid {:?} is not a UUID", heartbeat.uuid)))?;
    let created_at = heartbeat.created_at.as_str();
    DateTime::parse_from_rfc3339(created_at).map_err(|e| {
        ApiError::bad_request(format!("created_at {created_at:?} is not RFC 3339: {e}"))
    })?;
    if uuid != runtime.id {
        return Err(ApiError::forbidden(
            "uuid is not the id of the runtime this access token was issued to",
        ));
    }
    state
        .store
        .call(move |db| db.record_heartbeat(runtime.id, &body, Utc::now()))
        .await?;
    state.metrics.heartbeat();
    Ok(StatusCode::CREATED)
}
