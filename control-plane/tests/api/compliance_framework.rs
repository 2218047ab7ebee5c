//! The Compliance-Framework-only mode (`serve --compliance-framework-only`)
//! and the idempotent `POST /api/evidence` a runtime without the batch
//! extension delivers through.

use assessment_control_plane::runtime_credentials;
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Options, Server};

/// A runtime made by the admin command's code: (id, access token).
async fn created_runtime(server: &Server) -> (String, String) {
    let created = server
        .store
        .call(|db| runtime_credentials::create(db, "web-1", "default", Utc::now()))
        .await
        .unwrap();
    let token = server
        .access_token(&created.runtime_id, &created.client_secret)
        .await;
    (created.runtime_id, token)
}

fn record(title: &str) -> Value {
    json!({
        "uuid": "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90",
        "title": title,
        "status": { "state": "satisfied", "reason": "pass" },
    })
}

async fn stored(server: &Server) -> Vec<Value> {
    let listed = server.admin_get("/v1/admin/evidence").await;
    listed["evidence"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_idempotency_key_stores_a_record_once() {
    let server = Server::start().await;
    let (_, token) = created_runtime(&server).await;
    let post = |body: Value, key: &'static str| {
        server
            .post("/api/evidence")
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post(record("a"), "key-1").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["data"]["idempotency_key"], "key-1");

    // The answer was lost; the runtime sends the record again.
    let again = post(record("a"), "key-1").await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again["data"], first["data"],
        "the stored record is answered"
    );
    assert_eq!(stored(&server).await.len(), 1);

    // The key stands for one record.
    let other = post(record("b"), "key-1").await.unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let empty = post(record("c"), "").await.unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stored(&server).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_compliance_framework_only_mode_serves_nothing_of_v1() {
    let server = Server::start_with(Options {
        compliance_framework_only: true,
        ..Options::default()
    })
    .await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            server.get(path).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let (id, token) = created_runtime(&server).await;
    let heartbeat = json!({ "uuid": id, "created_at": "2026-11-30T10:00:00Z" });
    let answer = server
        .post_json("/api/agent/heartbeat", &token, &heartbeat)
        .await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let answer = server
        .post_json("/api/evidence", &token, &record("a"))
        .await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    // As with a Compliance Framework API, a gateway or relay posts for
    // other machines: subjects are not tied to the caller.
    let mut relayed = record("b");
    relayed["subjects"] = json!([{
        "type": "InventoryItem",
        "identifier": "0b9e0000-4000-8000-0000-0000000000ff",
    }]);
    let answer = server.post_json("/api/evidence", &token, &relayed).await;
    assert_eq!(answer.status(), StatusCode::CREATED);

    let not_served = [
        ("GET", "/v1/config", &token[..]),
        ("POST", "/v1/evidence/batch", &token[..]),
        ("POST", "/v1/enroll", ""),
        ("POST", "/v1/credentials/rotate", &token[..]),
        ("GET", "/v1/admin/runtimes", ADMIN_TOKEN),
        ("GET", "/v1/admin/evidence", ADMIN_TOKEN),
        ("POST", "/v1/admin/enrollment-tokens", ADMIN_TOKEN),
    ];
    for (method, path, bearer) in not_served {
        let request = match method {
            "GET" => server.get(path),
            _ => server.post(path).json(&json!({})),
        };
        let answer = request.bearer_auth(bearer).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    server.stop().await;
}
