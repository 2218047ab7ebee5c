//! Heartbeats: stored whole, the stale flag, and the runtime id check.

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
        "plugins": [{ "name": "sshd-hardening", "version": "0.1.0" }],
        "jobs": { "running": 1 },
        "outbox": { "pending": 3 },
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
