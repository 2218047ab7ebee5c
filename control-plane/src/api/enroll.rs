//! `POST /v1/enroll`: a runtime spends an enrollment token and receives its
//! id and client secret, and over mutual TLS a client certificate signed
//! from its certificate signing request, with the CA to trust.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;

use crate::auth::Peer;
use crate::error::{ApiError, StoreError};
use crate::guard::{AuthFailure, Principal};
use crate::metrics::EnrollmentOutcome;
use crate::model::Enrollment;
use crate::state::AppState;

/// The enrollment request.
#[derive(Debug, Deserialize)]
pub struct EnrollRequest {
    /// The single-use enrollment token.
    pub token: String,
    /// The runtime's display name.
    pub name: String,
    /// A PEM certificate signing request for the runtime's key: required
    /// over mutual TLS, ignored over plain HTTP.
    #[serde(default)]
    pub csr: Option<String>,
}

/// Enrolls a runtime: 201 with its credentials, 400 for a missing or bad
/// CSR (the token is not spent), 401 for an unknown, used or expired token.
pub async fn enroll(
    State(state): State<AppState>,
    Peer(source): Peer,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Enrollment>), ApiError> {
    let metrics = state.metrics.clone();
    let answer = enroll_runtime(state, source, body).await;
    metrics.enrollment(if answer.is_ok() {
        EnrollmentOutcome::Succeeded
    } else {
        EnrollmentOutcome::Refused
    });
    answer
}

async fn enroll_runtime(
    state: AppState,
    source: Option<SocketAddr>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Enrollment>), ApiError> {
    let Json(request) = body?;
    // Checked before the token is looked at, so a missing CSR spends none.
    let to_sign = state.csr_to_sign(request.csr)?;
    let mut enrollment = state
        .store
        .call(move |db| {
            db.enroll(&request.token, &request.name, Utc::now(), |runtime_id| {
                to_sign
                    .map(|(ca, csr)| ca.issue_client_certificate(runtime_id, &csr))
                    .transpose()
                    .map_err(|e| StoreError::Invalid(e.to_string()))
            })
        })
        .await
        .inspect_err(|error| {
            if matches!(error, StoreError::InvalidEnrollmentToken) {
                state.authentication_failed(
                    source,
                    Principal::Enrollment,
                    AuthFailure::InvalidEnrollmentToken,
                );
            }
        })?;
    enrollment.ca_certificate = state.ca.map(|ca| ca.certificate_pem().to_string());
    tracing::info!(runtime_id = %enrollment.runtime_id, group = %enrollment.group, "runtime enrolled");
    Ok((StatusCode::CREATED, Json(enrollment)))
}
