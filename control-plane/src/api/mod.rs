//! The HTTP API: the router and the state its handlers share. One module per
//! resource; the admin API is in [`crate::admin`].
//!
//! Operations from the Compliance Framework API keep its paths and shapes:
//! `POST /api/auth/token`, `POST /api/agent/heartbeat`, `POST /api/evidence`.
//! The `/v1` paths are this control plane's extension for runtimes
//! (enrollment, configuration, idempotent evidence batches) and admins.

pub mod config;
pub mod credentials;
pub mod enroll;
pub mod evidence;
pub mod heartbeat;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::ca::CertificateAuthority;
use crate::config::ServerConfig;
use crate::db::Store;
use crate::error::ApiError;

/// The largest evidence batch body accepted (1000 records of up to ~64 KiB).
pub const MAX_BATCH_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The server's settings.
    pub config: Arc<ServerConfig>,
    /// The CA when serving mutual TLS: runtimes then get client
    /// certificates at enrollment and must present them. `None` only for
    /// plain HTTP (development).
    pub ca: Option<Arc<CertificateAuthority>>,
}

impl AppState {
    /// State over `store` with `config`, for plain HTTP.
    pub fn new(store: Store, config: ServerConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            ca: None,
        }
    }

    /// The same state for mutual TLS with `ca`.
    pub fn with_ca(self, ca: Arc<CertificateAuthority>) -> Self {
        Self {
            ca: Some(ca),
            ..self
        }
    }

    /// The CA and the certificate signing request it is to sign: over
    /// mutual TLS the request must carry one (400 otherwise); over plain
    /// HTTP there is nothing to sign.
    pub fn csr_to_sign(
        &self,
        csr: Option<String>,
    ) -> Result<Option<(Arc<CertificateAuthority>, String)>, ApiError> {
        match (&self.ca, csr) {
            (Some(ca), Some(csr)) => Ok(Some((ca.clone(), csr))),
            (Some(_), None) => Err(ApiError::bad_request(
                "this control plane uses mutual TLS: send `csr`, a PEM certificate signing request for the runtime's key",
            )),
            (None, _) => Ok(None),
        }
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/enroll", post(enroll::enroll))
        .route("/api/auth/token", post(token::token))
        .route("/v1/credentials/rotate", post(credentials::rotate))
        .route("/v1/config", get(config::get_config))
        .route("/api/agent/heartbeat", post(heartbeat::heartbeat))
        .route("/api/evidence", post(evidence::create))
        .route(
            "/v1/evidence/batch",
            post(evidence::batch).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .merge(crate::admin::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// Every route of [`super::router`] and the admin router, by path.
    const ROUTES: &[&str] = &[
        "/healthz",
        "/v1/enroll",
        "/api/auth/token",
        "/v1/credentials/rotate",
        "/v1/config",
        "/api/agent/heartbeat",
        "/api/evidence",
        "/v1/evidence/batch",
        "/v1/admin/enrollment-tokens",
        "/v1/admin/runtimes",
        "/v1/admin/runtimes/{id}/revoke",
        "/v1/admin/runtimes/{id}/config",
        "/v1/admin/config/{group}",
        "/v1/admin/evidence",
    ];

    #[test]
    fn openapi_describes_every_route() {
        let spec = include_str!("../../openapi.yaml");
        let module = include_str!("mod.rs");
        let module = module.split("#[cfg(test)]").next().unwrap();
        let sources = [module, include_str!("../admin.rs")].concat();
        for route in ROUTES {
            assert!(
                spec.contains(&format!("\n  {route}:\n")),
                "openapi.yaml lacks {route}"
            );
        }
        let routed = sources.matches(".route(").count();
        assert_eq!(
            routed,
            ROUTES.len(),
            "a route was added: describe it in openapi.yaml and list it here"
        );
    }
}
