//! `GET /v1/config`: the configuration document in force for the calling
//! runtime (its own if it has one, else its group's), with a strong ETag;
//! `If-None-Match` with the current ETag gives 304.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Runtime;
use crate::canonical::if_none_match_matches;
use crate::error::ApiError;
use crate::state::AppState;

/// The header carrying the configuration's version.
pub const CONFIG_VERSION_HEADER: HeaderName = HeaderName::from_static("x-config-version");

/// Serves the runtime's configuration: 200 with the document, 304 when
/// unchanged, 404 when neither the runtime nor its group has one.
pub async fn get_config(
    Runtime(runtime): Runtime,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = runtime.clone();
    let config = state
        .store
        .call(move |db| db.config_for_runtime(&identity))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no configuration is assigned to this runtime or its group {:?} yet",
                runtime.group
            ))
        })?;
    let etag = HeaderValue::from_str(&config.version.etag)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let version = HeaderValue::from(config.version.version);
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| if_none_match_matches(value, &config.version.etag));
    if unchanged {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (CONFIG_VERSION_HEADER, version)],
        )
            .into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            (CONFIG_VERSION_HEADER, version),
        ],
        config.document,
    )
        .into_response())
}
