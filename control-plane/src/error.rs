//! Typed errors of the store, and the HTTP error body (the Compliance
//! Framework API's `api.Error`: `{"errors": {"message": "..."}}`).

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Postgres(String),
    /// No PostgreSQL connection could be had from the pool.
    #[error("no database connection is available: {0}")]
    Pool(String),
    /// The schema (SQLite or PostgreSQL) could not be migrated.
    #[error("the database schema could not be migrated: {0}")]
    Migration(String),
    /// A JSON column could not be read or written.
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    /// The database was written by a newer version of this program.
    #[error(
        "the database schema version is {found} but this program knows only up to {supported}; use a newer assessment-control-plane"
    )]
    SchemaTooNew {
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this program knows.
        supported: i64,
    },
    /// The enrollment token is unknown, already used or expired.
    #[error("the enrollment token is unknown, already used or expired")]
    InvalidEnrollmentToken,
    /// Wrong client credentials, or the runtime is revoked.
    #[error("invalid client credentials, or the runtime is revoked")]
    InvalidClient,
    /// No runtime has this id.
    #[error("no runtime has the id {0}")]
    RuntimeNotFound(String),
    /// The input is invalid; the message names the field and the fix.
    #[error("{0}")]
    Invalid(String),
    /// An evidence record claims another runtime's identity; the message
    /// names the field.
    #[error("{0}")]
    Identity(String),
    /// The input conflicts with what is stored (a reused idempotency key
    /// with another record, an evidence uuid of another runtime).
    #[error("{0}")]
    Conflict(String),
    /// A record is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The runtime's storage quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// A thread panicked while holding the database connection.
    #[error("the database connection is unusable after an earlier panic")]
    Poisoned,
    /// The database holds something this program did not write.
    #[error("the database is inconsistent: {0}")]
    Inconsistent(String),
    /// The database file could not be created.
    #[error("{0}")]
    Io(String),
    /// The blocking database task could not complete.
    #[error("the database task failed: {0}")]
    Task(String),
}

/// An HTTP error answer: a status and a message, rendered as
/// `{"errors": {"message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message for the client.
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 Too Many Requests, to be retried after `seconds`.
    pub fn too_many_requests(message: impl Into<String>, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({ "errors": { "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidEnrollmentToken | StoreError::InvalidClient => {
                Self::unauthorized(error.to_string())
            }
            StoreError::RuntimeNotFound(_) => Self::not_found(error.to_string()),
            StoreError::Invalid(message) => Self::bad_request(message),
            StoreError::Identity(message) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            StoreError::Conflict(message) => Self::new(StatusCode::CONFLICT, message),
            StoreError::TooLarge(message) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            StoreError::QuotaExceeded(message) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, message)
            }
            StoreError::Pool(_) => {
                tracing::error!(error = %error, "no database connection");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; try again",
                )
            }
            StoreError::Sqlite(_)
            | StoreError::Postgres(_)
            | StoreError::Migration(_)
            | StoreError::Json(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Random(_)
            | StoreError::Io(_)
            | StoreError::Inconsistent(_)
            | StoreError::Poisoned
            | StoreError::Task(_) => {
                tracing::error!(error = %error, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
            }
        }
    }
}

/// Client body errors are 400 (axum answers 422 for well-formed JSON of the
/// wrong shape); 413 and 415 keep their status.
fn client_status(status: StatusCode) -> StatusCode {
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(client_status(rejection.status()), rejection.body_text())
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        Self::new(client_status(rejection.status()), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(client_status(rejection.status()), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(client_status(rejection.status()), rejection.body_text())
    }
}
