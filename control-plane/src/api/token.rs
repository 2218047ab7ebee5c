//! `POST /api/auth/token`: the Compliance Framework token endpoint. Runtimes
//! use the OAuth 2 client-credentials grant (`client_id` = runtime id,
//! `client_secret` from enrollment, over a connection with the runtime's
//! client certificate when serving mutual TLS); the password grant the Compliance
//! Framework also defines for users is not served here.

use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Form, Json};
use chrono::Utc;
use serde::Deserialize;

use crate::auth::{ClientCertificate, Peer};
use crate::error::{ApiError, StoreError};
use crate::guard::{AuthFailure, Principal};
use crate::state::AppState;

/// The form fields of a token request.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: String,
    /// The runtime id.
    pub client_id: Option<String>,
    /// The runtime's client secret.
    pub client_secret: Option<String>,
}

/// Issues an access token: 200, or 400 for an unsupported grant or missing
/// field, or 401 for wrong credentials, a client certificate that is not the
/// runtime's (over mutual TLS), or a revoked runtime.
pub async fn token(
    State(state): State<AppState>,
    Peer(source): Peer,
    ClientCertificate(certificate): ClientCertificate,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Form(request) = form?;
    if request.grant_type != "client_credentials" {
        return Err(ApiError::bad_request(format!(
            "unsupported grant_type {:?}: this control plane serves runtimes, which use client_credentials",
            request.grant_type
        )));
    }
    let (Some(client_id), Some(client_secret)) = (request.client_id, request.client_secret) else {
        return Err(ApiError::bad_request(
            "client_id and client_secret are required for the client_credentials grant",
        ));
    };
    let ttl = state.config.token_ttl;
    let issued = state
        .store
        .call(move |db| {
            db.issue_access_token(
                &client_id,
                &client_secret,
                certificate.as_deref(),
                ttl,
                Utc::now(),
            )
        })
        .await
        .inspect_err(|error| {
            if matches!(error, StoreError::InvalidClient) {
                state.authentication_failed(
                    source,
                    Principal::Runtime,
                    AuthFailure::InvalidClientCredentials,
                );
            }
        })?;
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(issued),
    ))
}
