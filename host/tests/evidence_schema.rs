//! Every evidence payload the host builds validates against the Compliance
//! Framework API's own schema, strictly: no property the API does not define.
//!
//! The schema is the API's public `docs/swagger.json` at a pinned commit,
//! checked against its SHA-256 wherever it is read from: the file named by
//! `COMPLIANCE_FRAMEWORK_SWAGGER` (CI downloads it there), else
//! `target/reference/` in the repository, else the shared reference beside
//! the repository (`../shared/reference`). Without one the tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::time::Duration;

use assessment_runtime::capabilities::provenance::{DatabaseRead, FileFacts, ProvenanceLog};
use assessment_runtime::capabilities::results::{
    EvidenceItem, Finding, FindingSeverity, FindingStatus, FindingSubjectKind, Reference, Subject,
};
use assessment_runtime::plugins::PluginId;
use assessment_runtime::results::evidence::{RunContext, attach_provenance, evidence_records};
use capability_model::wire::Provenance;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where the API's document comes from: its repository, the commit and the
/// path in it, and the SHA-256 of that file.
const SWAGGER_URL: &str = "https://raw.githubusercontent.com/compliance-framework/api/8a6deb2d1c47da49be0c5ca0bdc29cdff31c00c1/docs/swagger.json";
const SWAGGER_SHA256: &str = "ff96c1ab6cad7ada09253a842019529e8d58fc44443548e6c6a4baa01f4fe770";
/// A file named here is the one read (no fallback when it is missing).
const SWAGGER_ENV: &str = "COMPLIANCE_FRAMEWORK_SWAGGER";
const SWAGGER_FILE: &str = "compliance-framework-api.swagger.json";

fn swagger_path() -> PathBuf {
    if let Some(path) = std::env::var_os(SWAGGER_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{SWAGGER_ENV} names {}, which is not a file",
            path.display()
        );
        return path;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        repo.join("target/reference").join(SWAGGER_FILE),
        repo.join("../shared/reference").join(SWAGGER_FILE),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the Compliance Framework API's schema is missing: tried {candidates:?}; \
                 set {SWAGGER_ENV} to it, or download it: \
                 curl -fsSL --create-dirs -o target/reference/{SWAGGER_FILE} {SWAGGER_URL}"
            )
        })
}

fn swagger() -> Value {
    read_pinned_swagger(&swagger_path())
}

/// The document at `path`, which must be the pinned one, byte for byte.
fn read_pinned_swagger(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let digest = hex::encode(Sha256::digest(&bytes));
    assert_eq!(
        digest,
        SWAGGER_SHA256,
        "{} is not the pinned document {SWAGGER_URL}",
        path.display()
    );
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn only_the_pinned_document_is_read() {
    let pinned = std::fs::read(swagger_path()).unwrap();
    assert_eq!(
        read_pinned_swagger(&swagger_path())["swagger"],
        "2.0",
        "the pinned document reads"
    );
    // One changed byte (a newer or edited document) is refused.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join(SWAGGER_FILE);
    let mut bytes = pinned;
    bytes.push(b'\n');
    std::fs::write(&changed, bytes).unwrap();
    let refused = std::panic::catch_unwind(|| read_pinned_swagger(&changed))
        .expect_err("a document other than the pinned one must be refused");
    let message = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("is not the pinned document"), "{message}");
}

/// Object schemas that list their properties get `additionalProperties:
/// false`, so that a misspelt or invented field fails.
fn strict(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

fn validator(definition: &str) -> jsonschema::Validator {
    let mut definitions = swagger()["definitions"].clone();
    strict(&mut definitions);
    let schema = serde_json::json!({ "$ref": format!("#/definitions/{definition}"), "definitions": definitions });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .unwrap()
}

fn findings() -> Vec<Finding> {
    // Only verdicts become evidence; the others must not break anything.
    let statuses = [
        FindingStatus::Pass,
        FindingStatus::Fail,
        FindingStatus::Error,
        FindingStatus::NotApplicable,
        FindingStatus::Skipped,
        FindingStatus::Fail,
    ];
    statuses
        .iter()
        .enumerate()
        .map(|(i, status)| Finding {
            check_id: format!("check-{i}"),
            title: "A check".into(),
            status: *status,
            severity: FindingSeverity::Medium,
            // Subjects and references (with and without a link) on some.
            subject: (i % 2 == 1).then(|| Subject {
                kind: FindingSubjectKind::User,
                id: format!("user-{i}"),
            }),
            references: vec![
                Reference {
                    benchmark: "CIS Debian Linux 12".into(),
                    id: "7.2.2".into(),
                    url: (i > 2).then(|| "https://example.org/cis/7.2.2".to_string()),
                },
                Reference {
                    benchmark: String::new(),
                    id: "V-230221".into(),
                    url: None,
                },
            ],
            message: "observed".into(),
            evidence: vec![EvidenceItem {
                key: "path".into(),
                value: "/etc/passwd".into(),
            }],
            remediation: (i % 2 == 0).then(|| "fix".to_string()),
        })
        .collect()
}

fn provenance() -> Provenance {
    use assessment_runtime::bindings::latest::assessment::plugin::process::CommandOutput;
    use assessment_runtime::bindings::latest::assessment::plugin::types::AccessError;
    let facts = FileFacts {
        size: 19,
        mtime_secs: 1_764_064_800,
        mtime_nanos: 0,
    };
    let mut log = ProvenanceLog::default();
    log.file(
        "read-file",
        Path::new("/etc/ssh/sshd_config"),
        None,
        Some(facts),
        Some(b"PermitRootLogin no\n"),
        None,
    );
    log.file(
        "read-file",
        Path::new("/etc/nope"),
        None,
        None,
        None,
        Some(&AccessError::NotFound("gone".into())),
    );
    log.directory(Path::new("/etc/ssh"), Ok(&["sshd_config"]));
    let output = CommandOutput {
        exit_code: Some(0),
        stdout: b"0\n".to_vec(),
        stderr: Vec::new(),
    };
    log.command(
        "/usr/bin/id",
        &["-u".into()],
        Duration::from_millis(3),
        Ok(&output),
    );
    log.environment("PATH", true);
    let database = DatabaseRead {
        path: "/var/lib/dpkg/status".into(),
        facts,
        sha256: "sha256:00".into(),
    };
    log.packages("installed", Some(&database), Ok(1));
    log.denial("read-file", "/etc/shadow is not granted");
    log.take()
}

#[test]
fn evidence_payloads_validate_against_the_api_schema() {
    let validator = validator("handler.EvidenceCreateRequest");
    let plugin = PluginId {
        name: "p".into(),
        version: "1.0.0".into(),
        digest: "sha256:00".into(),
    };
    let ctx = RunContext {
        runtime_id: "7a1c9a52-9a0e-4c84-9f44-1f0a8f1e2b3c",
        host: "web-1",
        plugin: &plugin,
        job_id: "job",
        start: "2026-11-25T10:00:00Z",
        end: "2026-11-25T10:00:01Z",
    };
    let mut records = evidence_records(&ctx, &findings());
    assert_eq!(records.len(), 3, "pass and fail only");
    assert!(records.iter().any(|r| !r.evidence.links.is_empty()));
    // The job's provenance, every kind of entry in it, as a back-matter
    // resource of each record.
    attach_provenance(&mut records, "job", &provenance());
    assert!(records.iter().all(|r| r.evidence.back_matter.is_some()));
    for record in records {
        let payload = serde_json::to_value(&record.evidence).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&payload)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{payload:#}");
    }
}

#[test]
fn the_strict_schema_catches_an_invented_field() {
    let validator = validator("handler.EvidenceCreateRequest");
    let bad = serde_json::json!({ "uuid": "u", "title": "t", "statuss": { "state": "satisfied" } });
    assert!(!validator.is_valid(&bad));
    let bad = serde_json::json!({ "uuid": "u", "status": { "state": 1 } });
    assert!(!validator.is_valid(&bad));
}

/// The heartbeat is the API's `handler.HeartbeatCreateRequest` plus our
/// documented extension fields: the API's own fields must validate (with
/// their required ones present), the rest are the extension.
#[test]
fn heartbeat_payloads_validate_against_the_api_schema() {
    use assessment_runtime::control_plane::client::Heartbeat;
    use capability_model::wire::heartbeat::{OutboxDepth, PluginState};
    let heartbeat = Heartbeat {
        uuid: "7a1c9a52-9a0e-4c84-9f44-1f0a8f1e2b3c".into(),
        created_at: "2026-11-25T10:00:00.000Z".into(),
        runtime_version: Some("0.1.0".into()),
        uptime_seconds: Some(5),
        plugins: [("p".to_string(), PluginState::Ready)].into(),
        jobs: Default::default(),
        outbox: Some(OutboxDepth::default()),
        errors: vec![],
    };
    let mut payload = serde_json::to_value(&heartbeat).unwrap();
    let extension = [
        "runtime_version",
        "uptime_seconds",
        "plugins",
        "jobs",
        "outbox",
        "errors",
    ];
    let object = payload.as_object_mut().unwrap();
    for field in extension {
        assert!(
            object.remove(field).is_some(),
            "{field} is documented as an extension"
        );
    }
    let validator = validator("handler.HeartbeatCreateRequest");
    let errors: Vec<String> = validator
        .iter_errors(&payload)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        !validator.is_valid(&serde_json::json!({ "uuid": "x" })),
        "created_at is required"
    );
}
