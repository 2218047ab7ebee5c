//! The records the store reads and writes, their validation, and time
//! formatting. Timestamps are kept as milliseconds since the Unix epoch and
//! shown as RFC 3339 in UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::canonical::canonical_bytes;
use crate::error::StoreError;
use capability_model::wire::evidence::{EvidenceCreateRequest, Subject};
use capability_model::wire::from_json;
use sha2::{Digest, Sha256};

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

/// The kind of an access token (OAuth 2 `token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenType {
    /// `Bearer` (RFC 6750): the only kind issued.
    Bearer,
}

/// An access token issued at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: TokenType,
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

/// Counts the metrics read from the store at each scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Enrolled runtimes that are not revoked.
    pub runtimes: u64,
    /// Of those, the stale ones (as in [`RuntimeSummary::stale`]).
    pub stale_runtimes: u64,
    /// Revoked runtimes.
    pub revoked_runtimes: u64,
    /// The size of the database (its pages), in bytes.
    pub database_bytes: u64,
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
    /// Where the record was in the request (`records[3]`, `body`), for
    /// error messages.
    pub at: String,
    /// Unique per runtime; a second record with the same key is a duplicate
    /// if it is the same record, and a conflict otherwise.
    pub idempotency_key: String,
    /// `evidence.uuid`, canonical (lowercase, hyphenated).
    pub uuid: String,
    /// `evidence.labels.plugin`.
    pub plugin: Option<String>,
    /// `evidence.labels.check`.
    pub check: Option<String>,
    /// `evidence.status.state`.
    pub status: Option<String>,
    /// `evidence.labels.host`: the host name the runtime reports.
    pub host: Option<String>,
    /// The whole `EvidenceCreateRequest`, as sent (and stored so).
    pub body: Value,
    /// The compact JSON text stored.
    pub text: String,
    /// The SHA-256 (hex) of the canonical JSON of `body`: what a reused
    /// idempotency key is compared by.
    pub body_sha256: String,
}

/// Labels that name a runtime: if a record has them, they must name the
/// runtime that sends it.
pub const RUNTIME_LABELS: &[&str] = &["runtime", "runtime_id", "runtime-id"];

/// What an evidence record is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    /// The authenticated runtime sending it.
    pub runtime_id: Uuid,
    /// The largest record accepted, as compact JSON.
    pub max_record_bytes: usize,
    /// Subjects and runtime labels must name the sending runtime; off in
    /// the Compliance-Framework-only mode, where, as with a Compliance
    /// Framework API, a gateway or relay posts for many machines.
    pub subjects_bound: bool,
}

/// The SHA-256 (hex) of the canonical JSON of an evidence body.
pub fn evidence_sha256(body: &Value) -> Result<String, StoreError> {
    Ok(hex::encode(Sha256::digest(canonical_bytes(body)?)))
}

impl NewEvidence {
    /// Validates an `EvidenceCreateRequest` body sent by `rules.runtime_id`;
    /// `at` names the record in error messages (`records[3]`, `body`).
    ///
    /// The body must read as the wire type (fields the runtime sends have
    /// their type; others, from other Compliance Framework agents, are kept
    /// as sent); `uuid` must be a canonical (lowercase, hyphenated), non-nil UUID;
    /// every `subjects[].identifier` and any of [`RUNTIME_LABELS`] must be
    /// the sending runtime's id; the record's compact JSON must fit
    /// `rules.max_record_bytes`.
    pub fn from_body(
        idempotency_key: String,
        body: Value,
        at: &str,
        rules: RecordRules,
    ) -> Result<Self, StoreError> {
        if idempotency_key.is_empty() || idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(StoreError::Invalid(format!(
                "{at}: idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
            )));
        }
        if !body.is_object() {
            return Err(StoreError::Invalid(format!(
                "{at}: evidence must be a JSON object (an EvidenceCreateRequest)"
            )));
        }
        // PostgreSQL's text and jsonb cannot hold U+0000, and the runtime
        // escapes control characters in what plugins write: a NUL is
        // refused on every backend alike, rather than failing only on
        // PostgreSQL, and only when it is stored.
        if idempotency_key.contains('\0') {
            return Err(StoreError::Invalid(format!(
                "{at}: idempotency_key contains a NUL character (U+0000), which this control plane does not store"
            )));
        }
        if let Some(path) = nul_at(&body, "evidence") {
            return Err(StoreError::Invalid(format!(
                "{at}: {path} contains a NUL character (U+0000), which this control plane does not store"
            )));
        }
        let text = serde_json::to_string(&body)?;
        if text.len() > rules.max_record_bytes {
            return Err(StoreError::TooLarge(format!(
                "{at}: the record is {} bytes of JSON; this control plane accepts at most {} bytes per record",
                text.len(),
                rules.max_record_bytes
            )));
        }
        let evidence: EvidenceCreateRequest = from_json(&body).map_err(|e| {
            let field = match e.path.as_str() {
                "" => "evidence".to_string(),
                path => format!("evidence.{path}"),
            };
            StoreError::Invalid(format!("{at}: {field}: {}", e.message))
        })?;
        if evidence.uuid.is_empty() {
            return Err(StoreError::Invalid(format!(
                "{at}: evidence.uuid is missing"
            )));
        }
        let uuid = canonical_uuid(&evidence.uuid, at)?;
        let runtime = rules.runtime_id.to_string();
        if rules.subjects_bound {
            check_subjects(&evidence.subjects, &runtime, at)?;
        }
        for name in RUNTIME_LABELS.iter().filter(|_| rules.subjects_bound) {
            if let Some(value) = evidence.labels.get(*name)
                && *value != runtime
            {
                return Err(StoreError::Identity(format!(
                    "{at}: evidence.labels.{name} is {value:?}, but this runtime is {runtime}: a runtime reports only its own evidence"
                )));
            }
        }
        let EvidenceCreateRequest {
            mut labels, status, ..
        } = evidence;
        Ok(Self {
            at: at.to_string(),
            idempotency_key,
            uuid,
            plugin: labels.remove("plugin"),
            check: labels.remove("check"),
            // An absent status reads as an empty state.
            status: Some(status.state).filter(|state| !state.is_empty()),
            host: labels.remove("host"),
            body_sha256: evidence_sha256(&body)?,
            text,
            body,
        })
    }
}

/// Where in `value` (a path from `path`) a string or a key holds U+0000.
/// serde_json's nesting limit bounds the recursion.
fn nul_at(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| path.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| nul_at(item, &format!("{path}[{index}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(format!("a key of {path}"))
            } else {
                nul_at(item, &format!("{path}.{key}"))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// `uuid` if it is a canonical UUID (lowercase, hyphenated) other than nil.
fn canonical_uuid(uuid: &str, at: &str) -> Result<String, StoreError> {
    let parsed = Uuid::parse_str(uuid)
        .map_err(|_| StoreError::Invalid(format!("{at}: evidence.uuid {uuid:?} is not a UUID")))?;
    if parsed.is_nil() {
        return Err(StoreError::Invalid(format!(
            "{at}: evidence.uuid must not be the nil UUID"
        )));
    }
    let canonical = parsed.to_string();
    if canonical != uuid {
        return Err(StoreError::Invalid(format!(
            "{at}: evidence.uuid {uuid:?} is not in canonical form: send it lowercase and hyphenated, as {canonical:?} (no braces, no urn:uuid:, no simple form)"
        )));
    }
    Ok(canonical)
}

/// Every subject of a record must be the sending runtime's machine.
fn check_subjects(subjects: &[Subject], runtime: &str, at: &str) -> Result<(), StoreError> {
    for (index, subject) in subjects.iter().enumerate() {
        if subject.identifier != runtime {
            // An absent identifier reads as empty.
            let found = match subject.identifier.as_str() {
                "" => "missing".to_string(),
                other => format!("{other:?}"),
            };
            return Err(StoreError::Identity(format!(
                "{at}: evidence.subjects[{index}].identifier is {found}, but it must be this runtime's id {runtime}: a runtime reports only on its own machine"
            )));
        }
    }
    Ok(())
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
    /// The most records in the page (default [`DEFAULT_PAGE_SIZE`], at most
    /// [`MAX_PAGE_SIZE`]).
    pub limit: Option<usize>,
    /// Only records after this cursor: the `next` of the previous page.
    pub after: Option<String>,
}

/// Records in a page of the evidence listing when `limit` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most records in a page of the evidence listing.
pub const MAX_PAGE_SIZE: usize = 1000;
/// A page ends early once its records add up to this many bytes of JSON
/// (a page always has at least one record, if there is one).
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// One page of the evidence listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidencePage {
    /// The records, in the order they arrived.
    pub evidence: Vec<StoredEvidence>,
    /// The cursor of the next page (pass it as `after`), or `None` when
    /// this page is the last.
    pub next: Option<String>,
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
    fn issued_tokens_keep_their_json_shape() {
        let issued = IssuedToken {
            access_token: "t".to_string(),
            token_type: TokenType::Bearer,
            expires_in: 300,
        };
        let wire = json!({ "access_token": "t", "token_type": "Bearer", "expires_in": 300 });
        assert_eq!(serde_json::to_value(&issued).unwrap(), wire);
        assert_eq!(serde_json::from_value::<IssuedToken>(wire).unwrap(), issued);
    }

    const RUNTIME: Uuid = Uuid::from_u128(0x0b9e_0000_4000_8000_0000_0000_0000_0001);

    fn rules() -> RecordRules {
        RecordRules {
            subjects_bound: true,
            runtime_id: RUNTIME,
            max_record_bytes: 4096,
        }
    }

    fn from_body(key: &str, body: Value, at: &str) -> Result<NewEvidence, StoreError> {
        NewEvidence::from_body(key.to_string(), body, at, rules())
    }

    #[test]
    fn evidence_fields_are_extracted() {
        let body = json!({
            "uuid": "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90",
            "labels": {"plugin": "sshd", "check": "root-login", "host": "web-1"},
            "status": {"state": "not-satisfied", "reason": "fail"},
            "subjects": [{"type": "InventoryItem", "identifier": RUNTIME.to_string()}]
        });
        let e = from_body("k", body.clone(), "records[0]").unwrap();
        assert_eq!(e.uuid, "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90");
        assert_eq!(e.host.as_deref(), Some("web-1"));
        assert_eq!(e.text, serde_json::to_string(&body).unwrap());
        assert_eq!(e.plugin.as_deref(), Some("sshd"));
        assert_eq!(e.check.as_deref(), Some("root-login"));
        assert_eq!(e.status.as_deref(), Some("not-satisfied"));
        assert_eq!(e.body, body);
    }

    #[test]
    fn evidence_errors_name_the_record() {
        let err = from_body("k", json!({"title": "x"}), "records[7]").unwrap_err();
        assert_eq!(err.to_string(), "records[7]: evidence.uuid is missing");
        let err = from_body("", json!({"uuid": Uuid::new_v4()}), "records[2]").unwrap_err();
        assert!(err.to_string().starts_with("records[2]: idempotency_key"));
        let err = from_body("k", json!({"uuid": "nope"}), "body").unwrap_err();
        assert!(err.to_string().contains("not a UUID"));
        let err = from_body("k", json!([1]), "body").unwrap_err();
        assert!(err.to_string().contains("JSON object"));
    }

    #[test]
    fn evidence_fields_must_have_the_wire_types() {
        let uuid = Uuid::new_v4().to_string();
        for (body, field) in [
            (
                json!({ "uuid": 7 }),
                "records[2]: evidence.uuid: invalid type",
            ),
            (
                json!({ "uuid": uuid, "labels": { "plugin": 3 } }),
                "records[2]: evidence.labels.plugin: invalid type",
            ),
            (
                json!({ "uuid": uuid, "status": { "state": ["satisfied"] } }),
                "records[2]: evidence.status.state: invalid type",
            ),
            (
                json!({ "uuid": uuid, "origins": [{ "actors": [{ "props": [{ "name": 1 }] }] }] }),
                "records[2]: evidence.origins[0].actors[0].props[0].name",
            ),
        ] {
            let err = from_body("k", body.clone(), "records[2]").unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{body}: {err}");
            assert!(err.to_string().starts_with(field), "{body}: {err}");
        }
        // Fields the runtime does not send (other agents') are kept as sent.
        let other_agent =
            json!({ "uuid": uuid, "activities": [{ "title": "scan" }], "expires": "x" });
        let e = from_body("k", other_agent.clone(), "body").unwrap();
        assert_eq!(e.body, other_agent);
        assert_eq!((e.plugin, e.status), (None, None));
    }

    #[test]
    fn evidence_uuids_must_be_canonical_and_not_nil() {
        let id = "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90";
        for bad in [
            "6F6B1E3C-4A0F-4D8E-9B1A-5C2E7D3F8A90".to_string(),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.replace('-', ""),
            Uuid::nil().to_string(),
        ] {
            let err = from_body("k", json!({ "uuid": bad }), "records[1]").unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{bad}: {err}");
            assert!(
                err.to_string().starts_with("records[1]: evidence.uuid"),
                "{err}"
            );
        }
        from_body("k", json!({ "uuid": id }), "body").unwrap();
    }

    #[test]
    fn a_nul_character_anywhere_in_a_record_is_refused_and_named() {
        let uuid = "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90";
        for (body, path) in [
            (
                json!({"uuid": uuid, "labels": {"check": "root\u{0}login"}}),
                "evidence.labels.check",
            ),
            (json!({"uuid": uuid, "title": "a\u{0}"}), "evidence.title"),
            (
                json!({"uuid": uuid, "links": [{"href": "x"}, {"href": "\u{0}"}]}),
                "evidence.links[1].href",
            ),
            (
                json!({"uuid": uuid, "props": {"\u{0}": "v"}}),
                "a key of evidence.props",
            ),
        ] {
            let err = from_body("k", body, "records[4]").unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{err}");
            assert_eq!(
                err.to_string(),
                format!(
                    "records[4]: {path} contains a NUL character (U+0000), which this control plane does not store"
                )
            );
        }
        let err = from_body("k\u{0}", json!({"uuid": uuid}), "records[0]").unwrap_err();
        assert!(
            err.to_string().contains("idempotency_key contains a NUL"),
            "{err}"
        );
        // Other control characters are text PostgreSQL stores.
        from_body(
            "k",
            json!({"uuid": uuid, "title": "tab\tand\u{1b}"}),
            "body",
        )
        .unwrap();
    }

    #[test]
    fn evidence_must_name_only_the_sending_runtime() {
        let uuid = Uuid::new_v4().to_string();
        let other = Uuid::new_v4().to_string();
        for (body, field) in [
            (
                json!({"uuid": uuid, "subjects": [{"type": "InventoryItem", "identifier": other}]}),
                "evidence.subjects[0].identifier",
            ),
            (
                json!({"uuid": uuid, "subjects": [
                    {"type": "InventoryItem", "identifier": RUNTIME.to_string()},
                    {"type": "InventoryItem"}
                ]}),
                "evidence.subjects[1].identifier",
            ),
            (
                json!({"uuid": uuid, "labels": {"runtime_id": other}}),
                "evidence.labels.runtime_id",
            ),
        ] {
            let err = from_body("k", body, "records[0]").unwrap_err();
            assert!(matches!(err, StoreError::Identity(_)), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn oversize_records_are_refused() {
        let big = "x".repeat(5000);
        let err = from_body(
            "k",
            json!({"uuid": Uuid::new_v4().to_string(), "description": big}),
            "records[4]",
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(_)), "{err}");
        assert!(err.to_string().starts_with("records[4]: the record is"));
    }

    #[test]
    fn the_body_hash_ignores_key_order() {
        let a = from_body(
            "k",
            json!({"uuid": Uuid::nil().to_string().replace('0', "1"), "a": 1, "b": 2}),
            "x",
        );
        let b = from_body(
            "k",
            json!({"b": 2, "a": 1, "uuid": Uuid::nil().to_string().replace('0', "1")}),
            "x",
        );
        assert_eq!(a.unwrap().body_sha256, b.unwrap().body_sha256);
    }

    #[test]
    fn rfc3339_formats_utc_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON values built from an evidence record's own keys, so that
        /// generated bodies reach past the first level.
        fn body() -> impl Strategy<Value = Value> {
            let key = prop::sample::select(vec![
                "uuid",
                "title",
                "description",
                "start",
                "end",
                "labels",
                "status",
                "state",
                "reason",
                "subjects",
                "type",
                "identifier",
                "origins",
                "actors",
                "props",
                "name",
                "value",
                "runtime",
                "host",
                "remarks",
                "x",
            ]);
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "(?s).{0,16}".prop_map(Value::from),
                Just(Value::from(RUNTIME.to_string())),
                Just(Value::from("00000000-0000-0000-0000-000000000000")),
                Just(Value::from("2026-11-29T00:00:00Z")),
            ];
            leaf.prop_recursive(4, 64, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| {
                        Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                    }),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn arbitrary_evidence_bodies_never_panic_the_record_parser(
                key in "(?s).{0,80}",
                value in body(),
                at in "(?s).{0,30}",
            ) {
                if NewEvidence::from_body(key, value.clone(), &at, rules()).is_ok() {
                    // What is accepted hashes the same in canonical form.
                    let canonical = crate::canonical::canonicalize(&value);
                    prop_assert_eq!(evidence_sha256(&value).ok(), evidence_sha256(&canonical).ok());
                }
            }

            #[test]
            fn arbitrary_documents_canonicalise_to_a_fixed_point(value in body()) {
                let once = crate::canonical::canonicalize(&value);
                prop_assert_eq!(crate::canonical::canonicalize(&once), once);
            }

            #[test]
            fn arbitrary_if_none_match_headers_never_panic(header in "(?s).{0,64}") {
                let _ = crate::canonical::if_none_match_matches(&header, "\"abc\"");
            }

            #[test]
            fn arbitrary_names_and_groups_never_panic(text in "(?s).{0,140}") {
                let _ = validate_group(&text);
                let _ = validate_runtime_name(&text);
            }
        }
    }
}
