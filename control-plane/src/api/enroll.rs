//! `POST /v1/enroll`: a runtime spends an enrollment token and receives its
//! id and client secret.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;

use super::AppState;
use crate::error::ApiError;
use crate::model::Enrollment;

/// The enrollment request.
#[derive(Debug, Deserialize)]
pub struct EnrollRequest {
    /// The single-use enrollment token.
    pub token: String,
    /// The runtime's display name.
    pub name: String,
}

/// Enrolls a runtime: 201 with its credentials, 401 for an unknown, used or
/// expired token.
pub async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Enrollment>), ApiError> {
    let Json(request) = body?;
    let enrollment = state
        .store
        .call(move |db| db.enroll(&request.token, &request.name, Utc::now()))
        .await?;
    tracing::info!(runtime_id = %enrollment.runtime_id, group = %enrollment.group, "runtime enrolled");
    Ok((StatusCode::CREATED, Json(enrollment)))
}
