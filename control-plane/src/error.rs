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
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// A thread panicked while holding the database connection.
    #[error("the database connection is unusable after an earlier panic")]
    Poisoned,
    /// The database holds something this program did not write.
    #[error("the database is inconsistent: {0}")]
    Inconsistent(String),
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
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
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
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
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
            StoreError::Sqlite(_)
            | StoreError::Json(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Random(_)
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
