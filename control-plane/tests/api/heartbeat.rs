//! Heartbeats: read as the wire type, stored whole, the stale flag, and the
//! runtime id check.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Options, Server, error_message};

#[tokio::test]
async fn heartbeats_are_stored_and_runtimes_go_stale() {
    let server = Server::start_with(Options {
        stale_after: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let (id, token) = server.runtime("default").await;

    let before = server.admin_get("/v1/admin/runtimes").await;
    assert_eq!(before[0]["stale"], true, "no heartbeat yet");
    assert_eq!(before[0]["last_heartbeat_at"], Value::Null);
    assert_eq!(before[0]["heartbeat"], Value::Null);

    let heartbeat = json!({
        "uuid": id,
        "created_at": Utc::now().to_rfc3339(),
        "runtime_version": "0.1.0",
        "uptime_seconds": 42,
        "plugins": {
            "sshd-hardening": "ready",
            "file-permissions": "unavailable (verify): bad signature"
        },
        "jobs": { "sshd-hardening": {
            "job_id": "j-1",
            "started_at": "2027-01-15T08:00:00.000Z",
            "duration_ms": 12,
            "outcome": "completed",
            "findings": 3,
            "statuses": { "pass": 2, "skipped": 1 }
        } },
        "outbox": { "batches": 3, "bytes": 4096, "rejected": 0 },
        "errors": ["registry unreachable"]
    });
    let response = server
        .post("/api/agent/heartbeat")
        .bearer_auth(&token)
        .json(&heartbeat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let fresh = server.admin_get("/v1/admin/runtimes").await;
    assert_eq!(fresh[0]["stale"], false);
    assert_eq!(fresh[0]["heartbeat"], heartbeat, "the whole body is kept");
    let at = chrono::DateTime::parse_from_rfc3339(fresh[0]["last_heartbeat_at"].as_str().unwrap())
        .unwrap();
    assert!((Utc::now() - at.with_timezone(&Utc)).num_seconds() < 5);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = server.admin_get("/v1/admin/runtimes").await;
    assert_eq!(stale[0]["stale"], true, "older than --stale-after");
    assert_eq!(stale[0]["heartbeat"], heartbeat);
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_are_validated() {
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    let (other_id, _) = server.runtime("default").await;
    let now = Utc::now().to_rfc3339();
    for (body, status) in [
        (
            json!({ "uuid": other_id, "created_at": now }),
            StatusCode::FORBIDDEN,
        ),
        (json!({ "uuid": id }), StatusCode::BAD_REQUEST),
        (json!({ "created_at": now }), StatusCode::BAD_REQUEST),
        (
            json!({ "uuid": id, "created_at": "yesterday" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "uuid": "web-1", "created_at": now }),
            StatusCode::BAD_REQUEST,
        ),
        (json!([id, now]), StatusCode::BAD_REQUEST),
    ] {
        let response = server
            .post("/api/agent/heartbeat")
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let _ = error_message(response).await;
    }
    let runtimes = server.admin_get("/v1/admin/runtimes").await;
    assert!(
        runtimes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["heartbeat"].is_null()),
        "nothing stored"
    );
    let unauthenticated = server
        .post("/api/agent/heartbeat")
        .json(&json!({ "uuid": id, "created_at": now }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn malformed_heartbeats_are_refused_naming_the_field() {
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    let now = Utc::now().to_rfc3339();
    let job = json!({
        "job_id": "j", "started_at": now, "duration_ms": 1, "outcome": "completed", "findings": 0
    });
    for (extension, field) in [
        (json!({ "plugins": { "p": "exploded" } }), "plugins.p"),
        (
            json!({ "plugins": { "p": "unavailable (meltdown): x" } }),
            "plugins.p",
        ),
        (json!({ "plugins": ["p"] }), "plugins"),
        (
            json!({ "jobs": { "p": {
                "job_id": "j", "started_at": now, "duration_ms": 1, "outcome": "exploded", "findings": 0
            } } }),
            "jobs.p.outcome",
        ),
        (json!({ "jobs": { "p": { "job_id": "j" } } }), "jobs.p"),
        (
            json!({ "outbox": { "batches": "three" } }),
            "outbox.batches",
        ),
        (json!({ "uptime_seconds": -1 }), "uptime_seconds"),
        (json!({ "errors": "none" }), "errors"),
    ] {
        let mut body = json!({ "uuid": id, "created_at": now, "jobs": { "p": job } });
        for (key, value) in extension.as_object().unwrap() {
            body[key] = value.clone();
        }
        let response = server
            .post("/api/agent/heartbeat")
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let message = error_message(response).await;
        assert!(
            message.starts_with(&format!("invalid heartbeat: {field}")),
            "{body}: {message}"
        );
    }
    let runtimes = server.admin_get("/v1/admin/runtimes").await;
    assert!(runtimes[0]["heartbeat"].is_null(), "nothing stored");

    // Fields this control plane does not know (a newer runtime's) are kept.
    let newer = json!({ "uuid": id, "created_at": now, "jobs": { "p": job }, "load": [0.5] });
    let response = server
        .post("/api/agent/heartbeat")
        .bearer_auth(&token)
        .json(&newer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let runtimes = server.admin_get("/v1/admin/runtimes").await;
    assert_eq!(runtimes[0]["heartbeat"], newer);
    server.stop().await;
}
