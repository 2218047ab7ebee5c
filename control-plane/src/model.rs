//! The records the store reads and writes, their validation, and time
//! formatting. Timestamps are kept as milliseconds since the Unix epoch and
//! shown as RFC 3339 in UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::StoreError;

/// The group of runtimes an enrollment token enrolls into when none is named.
pub const DEFAULT_GROUP: &str = "default";
/// The most evidence records one batch may carry.
pub const MAX_BATCH_RECORDS: usize = 1000;
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// Milliseconds since the Unix epoch.
pub fn to_millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// RFC 3339 (UTC, milliseconds) of a millisecond timestamp.
pub fn rfc3339(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Checks a group name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_group(group: &str) -> Result<(), StoreError> {
    let valid = !group.is_empty()
        && group.len() <= 64
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid group {group:?}: use 1 to 64 characters of letters, digits, '.', '_' and '-'"
        )))
    }
}

/// Checks a runtime name: 1 to 128 characters, no control characters.
pub fn validate_runtime_name(name: &str) -> Result<(), StoreError> {
    let valid = !name.trim().is_empty()
        && name.chars().count() <= 128
        && !name.chars().any(char::is_control);
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid runtime name {name:?}: use 1 to 128 printable characters"
        )))
    }
}

/// A freshly created enrollment token (the only time the token is visible).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEnrollmentToken {
    /// The single-use token.
    pub token: String,
    /// The group the runtime will join.
    pub group: String,
    /// When the token stops working (RFC 3339).
    pub expires_at: String,
}

/// A new runtime's credentials (the only time the secret is visible).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The runtime's id: the `client_id` at the token endpoint.
    pub runtime_id: String,
    /// The runtime's `client_secret`.
    pub client_secret: String,
    /// The group the runtime joined.
    pub group: String,
    /// The runtime's client certificate (PEM), over mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The CA that issued it (PEM): the only one the runtime should trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
}

/// An access token issued at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

/// The runtime an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeIdentity {
    /// The runtime's id.
    pub id: Uuid,
    /// Its group.
    pub group: String,
}

/// One runtime as administrators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSummary {
    /// The runtime's id.
    pub id: String,
    /// The name it enrolled with.
    pub name: String,
    /// Its group.
    pub group: String,
    /// When it enrolled (RFC 3339).
    pub enrolled_at: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it was revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
    /// When its last heartbeat arrived (RFC 3339).
    pub last_heartbeat_at: Option<String>,
    /// No heartbeat ever, or the last one is older than the stale threshold.
    pub stale: bool,
    /// The last heartbeat body as sent.
    pub heartbeat: Option<Value>,
    /// The SHA-256 (hex) of its client certificate, if it enrolled over
    /// mutual TLS.
    pub certificate_sha256: Option<String>,
    /// Whether it has a configuration document of its own (in force
    /// instead of its group's).
    pub own_config: bool,
}

/// The result of assigning a configuration document to a group or to one
/// runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// The group (of the runtime, for a runtime's own document).
    pub group: String,
    /// The runtime, when the document is that runtime's own (it then
    /// replaces the group's document for that runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Increments with every assignment, from 1.
    pub version: i64,
    /// The quoted strong ETag of the canonical document.
    pub etag: String,
}

/// The configuration document in force for a group or runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConfig {
    /// Version and ETag.
    pub version: ConfigVersion,
    /// The canonical document bytes (JSON).
    pub document: String,
}

/// What a batch upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Records stored by this request.
    pub accepted: usize,
    /// Records whose idempotency key was already stored (not stored again).
    pub duplicates: usize,
}

/// A validated evidence record ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvidence {
    /// Unique per runtime; a second record with the same key is a duplicate.
    pub idempotency_key: String,
    /// `evidence.uuid`.
    pub uuid: String,
    /// `evidence.labels.plugin`.
    pub plugin: Option<String>,
    /// `evidence.labels.check`.
    pub check: Option<String>,
    /// `evidence.status.state`.
    pub status: Option<String>,
    /// The whole `EvidenceCreateRequest`.
    pub body: Value,
}

impl NewEvidence {
    /// Validates an `EvidenceCreateRequest` body; `at` names the record in
    /// error messages (`records[3]`, `body`).
    pub fn from_body(idempotency_key: String, body: Value, at: &str) -> Result<Self, StoreError> {
        if idempotency_key.is_empty() || idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(StoreError::Invalid(format!(
                "{at}: idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
            )));
        }
        let Value::Object(fields) = &body else {
            return Err(StoreError::Invalid(format!(
                "{at}: evidence must be a JSON object (an EvidenceCreateRequest)"
            )));
        };
        let uuid = match fields.get("uuid") {
            Some(Value::String(uuid)) => uuid,
            Some(_) => {
                return Err(StoreError::Invalid(format!(
                    "{at}: evidence.uuid must be a string"
                )));
            }
            None => {
                return Err(StoreError::Invalid(format!(
                    "{at}: evidence.uuid is missing"
                )));
            }
        };
        let uuid = Uuid::parse_str(uuid)
            .map_err(|_| {
                StoreError::Invalid(format!("{at}: evidence.uuid {uuid:?} is not a UUID"))
            })?
            .to_string();
        let text = |parent: &str, key: &str| {
            fields
                .get(parent)
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(Self {
            idempotency_key,
            uuid,
            plugin: text("labels", "plugin"),
            check: text("labels", "check"),
            status: text("status", "state"),
            body,
        })
    }
}

/// A stored evidence record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvidence {
    /// The record's idempotency key.
    pub idempotency_key: String,
    /// The runtime that sent it.
    pub runtime_id: String,
    /// `evidence.uuid`.
    pub uuid: String,
    /// `evidence.labels.plugin`.
    pub plugin: Option<String>,
    /// `evidence.labels.check`.
    pub check: Option<String>,
    /// `evidence.status.state`.
    pub status: Option<String>,
    /// When it arrived (RFC 3339).
    pub received_at: String,
    /// The `EvidenceCreateRequest` as sent.
    pub evidence: Value,
}

/// Which evidence to list; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceFilter {
    /// Only this runtime's records.
    pub runtime: Option<String>,
    /// Only this plugin's records.
    pub plugin: Option<String>,
    /// Only this check's records.
    pub check: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups() {
        validate_group("default").unwrap();
        validate_group("prod-eu.1_a").unwrap();
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_group(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        validate_runtime_name("web-1").unwrap();
        for bad in ["", "  ", "a\nb", &"x".repeat(129)] {
            assert!(validate_runtime_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn evidence_fields_are_extracted() {
        let body = json!({
            "uuid": "6F6B1E3C-4A0F-4D8E-9B1A-5C2E7D3F8A90",
            "labels": {"plugin": "sshd", "check": "root-login"},
            "status": {"state": "not-satisfied", "reason": "fail"}
        });
        let e = NewEvidence::from_body("k".into(), body.clone(), "records[0]").unwrap();
        assert_eq!(e.uuid, "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90");
        assert_eq!(e.plugin.as_deref(), Some("sshd"));
        assert_eq!(e.check.as_deref(), Some("root-login"));
        assert_eq!(e.status.as_deref(), Some("not-satisfied"));
        assert_eq!(e.body, body);
    }

    #[test]
    fn evidence_errors_name_the_record() {
        let err =
            NewEvidence::from_body("k".into(), json!({"title": "x"}), "records[7]").unwrap_err();
        assert_eq!(err.to_string(), "records[7]: evidence.uuid is missing");
        let err = NewEvidence::from_body(String::new(), json!({"uuid": Uuid::nil()}), "records[2]")
            .unwrap_err();
        assert!(err.to_string().starts_with("records[2]: idempotency_key"));
        let err = NewEvidence::from_body("k".into(), json!({"uuid": "nope"}), "body").unwrap_err();
        assert!(err.to_string().contains("not a UUID"));
        let err = NewEvidence::from_body("k".into(), json!([1]), "body").unwrap_err();
        assert!(err.to_string().contains("JSON object"));
    }

    #[test]
    fn rfc3339_formats_utc_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
