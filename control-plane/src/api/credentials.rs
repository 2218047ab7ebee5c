//! `POST /v1/credentials/rotate`: a runtime asks for a new client secret.
//! The current one stays valid until the new one is first used at the token
//! endpoint, so a runtime that dies before saving the new secret keeps
//! working with the old one.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use crate::auth::Runtime;
use crate::error::ApiError;

/// The new secret.
#[derive(Debug, Serialize)]
pub struct RotatedSecret {
    /// The new `client_secret`.
    pub client_secret: String,
}

/// Rotates the calling runtime's secret: 200 with the new one.
pub async fn rotate(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let client_secret = state
        .store
        .call(move |db| db.rotate_secret(runtime.id))
        .await?;
    Ok(Json(RotatedSecret { client_secret }))
}
