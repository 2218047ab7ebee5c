//! The HTTP API: the router, with the admin routes of [`crate::admin`]
//! merged in, and its middleware. One module per resource; the state the
//! handlers share is [`crate::state`].
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
pub mod operations;
pub mod token;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::{AppState, peer_address};

/// The longest error text of another layer that is kept when it is turned
/// into the JSON error shape.
const MAX_ERROR_TEXT: usize = 4096;

/// The whole HTTP API.
///
/// Request bodies are bounded (`Limits::max_body_bytes`, and
/// `max_batch_bytes` for evidence batches); the unauthenticated routes are
/// rate-limited per source address; every error answer, whichever layer
/// makes it, has the JSON error shape; every answer is counted in the
/// metrics by its route template.
pub fn router(state: AppState) -> Router {
    let limits = state.config.limits;
    let single_record = limits
        .max_body_bytes
        .max(limits.max_record_bytes.saturating_mul(2));
    let rate_limited = || from_fn_with_state(state.clone(), rate_limit);
    // The Compliance Framework's routes a runtime uses, and health.
    let compliance_framework = Router::new()
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route(
            "/api/auth/token",
            post(token::token).route_layer(rate_limited()),
        )
        .route("/api/agent/heartbeat", post(heartbeat::heartbeat))
        .route(
            "/api/evidence",
            post(evidence::create).layer(DefaultBodyLimit::max(single_record)),
        );
    // This control plane's extension: enrollment, rotation, configuration,
    // batches, the admin API and the web view; absent (404) in the
    // Compliance-Framework-only mode.
    let extension = Router::new()
        .route(
            "/v1/enroll",
            post(enroll::enroll).route_layer(rate_limited()),
        )
        .route("/v1/credentials/rotate", post(credentials::rotate))
        .route("/v1/config", get(config::get_config))
        .route(
            "/v1/evidence/batch",
            post(evidence::batch).layer(DefaultBodyLimit::max(limits.max_batch_bytes)),
        )
        .merge(crate::admin::router())
        .merge(crate::web::router());
    let routes = if state.config.compliance_framework_only {
        compliance_framework
    } else {
        compliance_framework.merge(extension)
    };
    routes
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .layer(map_response(json_errors))
        .layer(from_fn_with_state(state.clone(), record_request))
        .with_state(state)
}

/// Counts a request and its duration in the metrics, by the route template
/// it matched (the router has set it when a layer runs), never the raw path.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.http_request(
        &method,
        route.as_deref(),
        response.status(),
        started.elapsed(),
    );
    response
}

/// Refuses a request with 429 when its source has sent too many to the
/// unauthenticated routes.
async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(address) = peer_address(request.extensions())
        && let Err(wait) = state
            .guards
            .unauthenticated
            .check(address.ip(), Instant::now())
    {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        tracing::debug!(source = %address, seconds, "rate limited");
        return ApiError::too_many_requests(
            format!(
                "too many requests from {} to this endpoint; try again in {seconds} s",
                address.ip()
            ),
            seconds,
        )
        .into_response();
    }
    next.run(request).await
}

/// Gives an error answer of another layer (a body limit's 413, a
/// rejection's plain text) the JSON error shape, keeping its status and
/// headers.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    // The web view's pages are HTML, errors included.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if is_json || is_page {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let body = json!({ "errors": { "message": message } }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    /// Every route of [`super::router`] and the admin router, by path.
    const ROUTES: &[&str] = &[
        "/healthz",
        "/readyz",
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
        "/v1/admin/oscal/assessment-results",
        "/v1/admin/results",
        "/v1/admin/results/summary",
        "/v1/admin/streams/{uuid}",
    ];

    #[test]
    fn openapi_describes_every_route() {
        // Parsed, not searched as text: a description that is not valid
        // YAML makes the whole document unreadable to every OpenAPI tool.
        let spec = yaml_rust2::YamlLoader::load_from_str(include_str!("../../openapi.yaml"))
            .expect("openapi.yaml is valid YAML");
        let paths = &spec[0]["paths"];
        let module = include_str!("mod.rs");
        let module = module.split("#[cfg(test)]").next().unwrap();
        let sources = [module, include_str!("../admin.rs")].concat();
        for route in ROUTES {
            assert!(
                paths[*route].as_hash().is_some(),
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
