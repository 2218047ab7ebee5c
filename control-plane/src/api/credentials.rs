//! `POST /v1/credentials/rotate`: a runtime asks for a new client secret
//! and, over mutual TLS, a new client certificate for a new key. The current
//! credentials stay valid until the new ones are first used at the token
//! endpoint, so a runtime that dies before saving them keeps working with
//! the old ones.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::auth::Runtime;
use crate::error::ApiError;
use crate::state::AppState;

/// The rotation request (an empty body is an empty request).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// A PEM certificate signing request for the runtime's new key:
    /// required over mutual TLS.
    #[serde(default)]
    pub csr: Option<String>,
}

/// The new credentials.
#[derive(Debug, Serialize)]
pub struct RotatedCredentials {
    /// The new `client_secret`.
    pub client_secret: String,
    /// The new client certificate (PEM), over mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// Rotates the calling runtime's credentials: 200 with the new ones, 400
/// for a missing or bad CSR.
pub async fn rotate(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<RotatedCredentials>, ApiError> {
    let request: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid rotation request: {e}")))?
    };
    let certificate = state
        .csr_to_sign(request.csr)?
        .map(|(ca, csr)| ca.issue_client_certificate(&runtime.id.to_string(), &csr))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let issued = certificate
        .as_ref()
        .map(|c| (c.sha256.clone(), c.not_after_millis));
    let client_secret = state
        .store
        .call(move |db| {
            let sha256 = issued.as_ref().map(|(sha256, _)| sha256.as_str());
            let secret = db.rotate_secret(runtime.id, sha256)?;
            // Its expiry, for the fleet view (shown once it is in use).
            if let Some((sha256, not_after)) = &issued {
                db.record_certificate(sha256, *not_after)?;
            }
            Ok(secret)
        })
        .await?;
    Ok(Json(RotatedCredentials {
        client_secret,
        certificate: certificate.map(|c| c.pem),
    }))
}
