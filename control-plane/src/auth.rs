//! Who is calling: the admin (the configured admin token) or an enrolled
//! runtime (an access token from the token endpoint, over a connection with
//! the client certificate the runtime was issued when serving mutual TLS).
//! All are axum extractors that answer 401 when a credential is missing or
//! wrong.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;

use crate::error::ApiError;
use crate::guard::{AuthFailure, Principal};
use crate::model::RuntimeIdentity;
use crate::state::{AppState, peer_address};
use crate::tls::TlsPeer;

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The source address of the request, if the server recorded it (never
/// refuses).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer_address(&parts.extensions)))
    }
}

/// A request carrying the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = peer_address(&parts.extensions);
        let Some(token) = bearer_token(parts) else {
            state.authentication_failed(source, Principal::Admin, AuthFailure::NoBearerToken);
            return Err(ApiError::unauthorized(
                "missing bearer token: send Authorization: Bearer <admin token>",
            ));
        };
        if state.config.is_admin_token(token) {
            Ok(Admin)
        } else {
            state.authentication_failed(source, Principal::Admin, AuthFailure::WrongAdminToken);
            Err(ApiError::unauthorized("invalid admin token"))
        }
    }
}

/// The SHA-256 of the connection's client certificate: `Some` whenever the
/// server uses mutual TLS (a request without one is refused with 401),
/// `None` over plain HTTP.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Option<String>);

impl FromRequestParts<AppState> for ClientCertificate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.ca.is_none() {
            return Ok(ClientCertificate(None));
        }
        let presented = parts
            .extensions
            .get::<ConnectInfo<TlsPeer>>()
            .and_then(|ConnectInfo(peer)| peer.client_certificate.clone());
        match presented {
            Some(sha256) => Ok(ClientCertificate(Some(sha256))),
            None => {
                state.authentication_failed(
                    peer_address(&parts.extensions),
                    Principal::Runtime,
                    AuthFailure::NoClientCertificate,
                );
                Err(ApiError::unauthorized(
                    "this control plane uses mutual TLS: connect with the client certificate issued at enrollment",
                ))
            }
        }
    }
}

/// A request carrying a valid access token of a runtime that is not
/// revoked, over a connection with the certificate the token is bound to.
#[derive(Debug, Clone)]
pub struct Runtime(pub RuntimeIdentity);

impl FromRequestParts<AppState> for Runtime {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = peer_address(&parts.extensions);
        let Some(token) = bearer_token(parts) else {
            state.authentication_failed(source, Principal::Runtime, AuthFailure::NoBearerToken);
            return Err(ApiError::unauthorized(
                "missing bearer token: get one from /api/auth/token",
            ));
        };
        let token = token.to_string();
        let ClientCertificate(certificate) =
            ClientCertificate::from_request_parts(parts, state).await?;
        let identity = state
            .store
            .call(move |db| db.authenticate(&token, certificate.as_deref(), Utc::now()))
            .await?;
        identity.map(Runtime).ok_or_else(|| {
            state.authentication_failed(
                source,
                Principal::Runtime,
                AuthFailure::InvalidAccessToken,
            );
            ApiError::unauthorized(
                "the access token is unknown or expired, was issued for another client certificate, or the runtime is revoked",
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
