//! The admin API under `/v1/admin`, authorized by the admin token:
//! enrollment tokens, runtimes (list, revoke), configuration per group or
//! per runtime, evidence and its OSCAL export.
//! per runtime, evidence, results (the latest record per stream, a
//! stream's history, the per-check summary).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Admin;
use crate::db::{CheckSummary, ResultFilter, ResultsPage, StreamPage};
use crate::error::ApiError;
use crate::model::{
    ConfigVersion, DEFAULT_GROUP, EvidenceFilter, EvidencePage, NewEnrollmentToken, RuntimeSummary,
};
use crate::state::AppState;

/// Default lifetime of an enrollment token.
pub const DEFAULT_ENROLLMENT_TTL: Duration = Duration::from_secs(3600);

/// The admin routes (state still to be supplied).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/enrollment-tokens", post(create_enrollment_token))
        .route("/v1/admin/runtimes", get(list_runtimes))
        .route("/v1/admin/runtimes/{id}/revoke", post(revoke_runtime))
        .route(
            "/v1/admin/runtimes/{id}/config",
            put(set_runtime_config).delete(clear_runtime_config),
        )
        .route("/v1/admin/config/{group}", put(set_config))
        .route("/v1/admin/evidence", get(list_evidence))
        .route(
            "/v1/admin/oscal/assessment-results",
            get(export_assessment_results),
        )
        .route("/v1/admin/results", get(latest_results))
        .route("/v1/admin/results/summary", get(check_summary))
        .route("/v1/admin/streams/{uuid}", get(stream_history))
}

/// Body of `POST /v1/admin/enrollment-tokens` (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// The group the runtime joins (default `default`).
    pub group: Option<String>,
    /// Lifetime in seconds (default 3600).
    pub ttl_seconds: Option<u64>,
}

/// Creates a single-use enrollment token: 201.
pub async fn create_enrollment_token(
    _: Admin,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<NewEnrollmentToken>), ApiError> {
    let request: CreateEnrollmentToken = if body.iter().all(u8::is_ascii_whitespace) {
        CreateEnrollmentToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    };
    let group = request.group.unwrap_or_else(|| DEFAULT_GROUP.to_string());
    let ttl = request
        .ttl_seconds
        .map_or(DEFAULT_ENROLLMENT_TTL, Duration::from_secs);
    let token = state
        .store
        .call(move |db| db.create_enrollment_token(&group, ttl, Utc::now()))
        .await?;
    tracing::info!(group = %token.group, expires_at = %token.expires_at, "enrollment token created");
    Ok((StatusCode::CREATED, Json(token)))
}

/// Lists every runtime with its heartbeat state: 200.
pub async fn list_runtimes(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<RuntimeSummary>>, ApiError> {
    let stale_after = state.config.stale_after;
    let runtimes = state
        .store
        .call(move |db| db.list_runtimes(Utc::now(), stale_after))
        .await?;
    Ok(Json(runtimes))
}

/// Revokes a runtime: 204; 404 for an unknown id.
pub async fn revoke_runtime(
    _: Admin,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    let logged = id.clone();
    state
        .store
        .call(move |db| db.revoke_runtime(&id, Utc::now()))
        .await?;
    tracing::info!(runtime_id = %logged, "runtime revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Assigns a configuration document (a JSON object) to a group: 200 with
/// the new version and ETag; 400 when the body is not a JSON object.
pub async fn set_config(
    _: Admin,
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<ConfigVersion>, ApiError> {
    let Path(group) = group?;
    let Json(document) = body?;
    let version = state
        .store
        .call(move |db| db.set_config(&group, &document, Utc::now()))
        .await?;
    tracing::info!(group = %version.group, version = version.version, etag = %version.etag, "configuration assigned");
    Ok(Json(version))
}

/// Assigns a configuration document (a JSON object) to one runtime, in
/// force instead of its group's: 200 with the new version and ETag; 400
/// when the body is not a JSON object; 404 for an unknown runtime.
pub async fn set_runtime_config(
    _: Admin,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<ConfigVersion>, ApiError> {
    let Path(id) = id?;
    let Json(document) = body?;
    let version = state
        .store
        .call(move |db| db.set_runtime_config(&id, &document, Utc::now()))
        .await?;
    tracing::info!(runtime_id = ?version.runtime, version = version.version, etag = %version.etag, "runtime configuration assigned");
    Ok(Json(version))
}

/// Removes a runtime's own configuration, so its group's applies again:
/// 204; 404 for an unknown runtime or one without its own configuration.
pub async fn clear_runtime_config(
    _: Admin,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    let logged = id.clone();
    let cleared = state
        .store
        .call(move |db| db.clear_runtime_config(&id))
        .await?;
    if !cleared {
        return Err(ApiError::not_found(format!(
            "the runtime {logged} has no configuration of its own"
        )));
    }
    tracing::info!(runtime_id = %logged, "runtime configuration removed; the group's applies");
    Ok(StatusCode::NO_CONTENT)
}

/// Lists stored evidence a page at a time, optionally filtered by runtime,
/// plugin and check: 200 `{"evidence": [...], "next": cursor or null}`, in
/// the order it arrived; pass `next` as `after` for the next page.
pub async fn list_evidence(
    _: Admin,
    State(state): State<AppState>,
    filter: Result<Query<EvidenceFilter>, QueryRejection>,
) -> Result<Json<EvidencePage>, ApiError> {
    let Query(filter) = filter?;
    let evidence = state
        .store
        .call(move |db| db.list_evidence(&filter))
        .await?;
    Ok(Json(evidence))
}

/// Which runtime's evidence to export; every runtime's without it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OscalExport {
    /// Only this runtime.
    pub runtime: Option<String>,
}

/// The latest record of each evidence stream as one OSCAL 1.1.3
/// assessment-results document, one result per runtime: 200; 413 past
/// [`crate::oscal_export::MAX_EXPORT_RECORDS`] streams or
/// [`crate::oscal_export::MAX_EXPORT_BYTES`] (export one runtime at a time).
pub async fn export_assessment_results(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<OscalExport>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let document = state
        .store
        .call(move |db| crate::oscal_export::assessment_results(db, query.runtime.as_deref()))
        .await?;
    Ok(Json(document))
}

/// Lists the latest record of each stream, failing first, a page at a
/// time, filtered by status, severity, plugin, runtime and reference: 200
/// `{"results": [...], "next": cursor or null}`.
pub async fn latest_results(
    _: Admin,
    State(state): State<AppState>,
    filter: Result<Query<ResultFilter>, QueryRejection>,
) -> Result<Json<ResultsPage>, ApiError> {
    let Query(filter) = filter?;
    let page = state
        .store
        .call(move |db| db.latest_results(&filter))
        .await?;
    Ok(Json(page))
}

/// How each check fares across the fleet: 200 with the checks failing on
/// most machines first.
pub async fn check_summary(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<CheckSummary>>, ApiError> {
    Ok(Json(state.store.call(|db| db.check_summary()).await?))
}

/// Query of `GET /v1/admin/streams/{uuid}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Records per page.
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub before: Option<String>,
}

/// One stream's records, newest first, a page at a time: 200
/// `{"evidence": [...], "next": cursor or null}`.
pub async fn stream_history(
    _: Admin,
    State(state): State<AppState>,
    uuid: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Json<StreamPage>, ApiError> {
    let Path(uuid) = uuid?;
    let Query(query) = query?;
    let page = state
        .store
        .call(move |db| db.stream_history(&uuid, query.limit, query.before.as_deref()))
        .await?;
    Ok(Json(page))
}
