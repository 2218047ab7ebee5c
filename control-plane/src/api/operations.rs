//! For operators and their tools: liveness (`/healthz`), readiness
//! (`/readyz`) and the metrics (`/metrics`).
//!
//! `/healthz` and `/readyz` are also served on the API listener, without
//! authentication, so that a load balancer can check the API port; they
//! say nothing secret. `/metrics` is served only by [`router`], on the
//! separate plain-HTTP listener of `--metrics-listen`, like node_exporter:
//! it holds counts and labels from closed sets, never evidence, tokens or
//! runtime ids.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;

use crate::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
use crate::state::AppState;

/// The longest the database may take to answer a readiness check or a
/// scrape's queries (it can be busy with a large evidence batch).
pub const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The operations listener's routes: `/metrics`, `/healthz`, `/readyz`;
/// anything else is 404.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz, /readyz",
            )
        })
        .with_state(state)
}

/// Liveness: 200 `ok` while the process serves requests.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 `ok` when the database answers a query with the schema
/// this program knows, 503 with the reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let check = state.store.call(|db| db.check_ready());
    let reason = match tokio::time::timeout(STORE_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => return (StatusCode::OK, "ok").into_response(),
        Ok(Err(error)) => format!("not ready: the database failed: {error}"),
        Err(_) => format!(
            "not ready: the database did not answer within {} s",
            STORE_CHECK_TIMEOUT.as_secs()
        ),
    };
    tracing::warn!(%reason, "readiness check failed");
    (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

/// The metrics, after reading the store's gauges: OpenMetrics when the
/// scraper accepts it (Prometheus asks for it first), else the Prometheus
/// text format.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let stale_after = state.config.stale_after;
    let stats = state
        .store
        .call(move |db| db.stats(Utc::now(), stale_after));
    let stats = match tokio::time::timeout(STORE_CHECK_TIMEOUT, stats).await {
        Ok(Ok(stats)) => Some(stats),
        Ok(Err(error)) => {
            tracing::warn!(%error, "metrics: the database failed");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: the database did not answer in time");
            None
        }
    };
    state.metrics.store_stats(stats);
    if let Some(queue) = state.relay.clone() {
        match tokio::task::spawn_blocking(move || queue.depth()).await {
            Ok(Ok((waiting, rejected))) => state.metrics.relay_depth(waiting, rejected),
            Ok(Err(error)) => tracing::warn!(%error, "metrics: the relay queue failed"),
            Err(error) => tracing::warn!(%error, "metrics: the relay queue task failed"),
        }
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    match state.metrics.encode(openmetrics) {
        Ok(text) => {
            let content_type = if openmetrics {
                OPENMETRICS_CONTENT_TYPE
            } else {
                PROMETHEUS_TEXT_CONTENT_TYPE
            };
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                text,
            )
                .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics",
            )
                .into_response()
        }
    }
}
