//! Who is calling: the admin (the configured admin token) or an enrolled
//! runtime (an access token from the token endpoint). Both are axum
//! extractors that answer 401 when the bearer token is missing or wrong.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;

use crate::api::AppState;
use crate::error::ApiError;
use crate::model::RuntimeIdentity;

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A request carrying the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer_token(parts) else {
            return Err(ApiError::unauthorized(
                "missing bearer token: send Authorization: Bearer <admin token>",
            ));
        };
        if state.config.is_admin_token(token) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("invalid admin token"))
        }
    }
}

/// A request carrying a valid access token of a runtime that is not revoked.
#[derive(Debug, Clone)]
pub struct Runtime(pub RuntimeIdentity);

impl FromRequestParts<AppState> for Runtime {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer_token(parts) else {
            return Err(ApiError::unauthorized(
                "missing bearer token: get one from /api/auth/token",
            ));
        };
        let token = token.to_string();
        let identity = state
            .store
            .call(move |db| db.authenticate(&token, Utc::now()))
            .await?;
        identity.map(Runtime).ok_or_else(|| {
            ApiError::unauthorized(
                "the access token is unknown or expired, or the runtime is revoked",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(header: Option<&str>) -> Parts {
        let mut request = Request::builder();
        if let Some(value) = header {
            request = request.header(AUTHORIZATION, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_tokens_are_parsed() {
        assert_eq!(bearer_token(&parts(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(&parts(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer_token(&parts(Some("Basic abc"))), None);
        assert_eq!(bearer_token(&parts(Some("Bearer "))), None);
        assert_eq!(bearer_token(&parts(None)), None);
    }
}
