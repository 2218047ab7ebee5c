//! Everything lives in the database file and survives a restart.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Options, Server, all_evidence, evidence};

#[tokio::test]
async fn data_survives_a_restart() {
    let server = Server::start().await;
    let (id, secret) = server.enroll("prod", "web-1").await;
    let token = server.access_token(&id, &secret).await;
    let (revoked_id, revoked_secret) = server.enroll("prod", "web-2").await;
    let unused_token = server.enrollment_token("prod").await;
    let v1: Value = server
        .put("/v1/admin/config/prod")
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "runtime": { "heartbeat_interval": "1h" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let heartbeat = json!({ "uuid": id, "created_at": Utc::now().to_rfc3339() });
    let response = server
        .post("/api/agent/heartbeat")
        .bearer_auth(&token)
        .json(&heartbeat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let batch = json!({ "records": [{ "idempotency_key": "k1", "evidence": evidence("p", "c", "satisfied") }] });
    let response = server
        .post("/v1/evidence/batch")
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["accepted"], 1);
    let response = server
        .post(&format!("/v1/admin/runtimes/{revoked_id}/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let database = server.database.clone();
    let dir = server.stop().await;
    let server = Server::start_on(&database, Options::default()).await;

    // Access tokens, credentials, revocation, config, heartbeat and evidence
    // are all still there.
    let config = server
        .get("/v1/config")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), StatusCode::OK);
    assert_eq!(config.headers()["etag"], v1["etag"].as_str().unwrap());
    assert_eq!(
        config.json::<Value>().await.unwrap(),
        json!({ "runtime": { "heartbeat_interval": "1h" } })
    );
    let _ = server.access_token(&id, &secret).await;
    let refused = server.token_response(&revoked_id, &revoked_secret).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let runtimes = server.admin_get("/v1/admin/runtimes").await;
    assert_eq!(runtimes.as_array().unwrap().len(), 2);
    let web1 = runtimes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(web1["heartbeat"], heartbeat);
    let repeat = server
        .post("/v1/evidence/batch")
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(
        repeat.json::<Value>().await.unwrap(),
        json!({ "accepted": 0, "duplicates": 1 }),
        "idempotency keys are remembered"
    );
    assert_eq!(all_evidence(&server, "").await.len(), 1);
    let enrolled = server
        .post("/v1/enroll")
        .json(&json!({ "token": unused_token, "name": "web-3" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        enrolled.status(),
        StatusCode::CREATED,
        "unused tokens still work"
    );
    let v2: Value = server
        .put("/v1/admin/config/prod")
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "runtime": { "heartbeat_interval": "2h" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["version"], 2, "versions continue");
    server.stop().await;
    drop(dir);
}
