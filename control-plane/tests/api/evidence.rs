//! Evidence: idempotent batches, the batch limits, the one-record endpoint
//! and the admin listing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Server, all_evidence, error_message, evidence};

async fn send_batch(server: &Server, token: &str, body: &Value) -> reqwest::Response {
    server.post_json("/v1/evidence/batch", token, body).await
}

#[tokio::test]
async fn batches_are_idempotent() {
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    let records: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "idempotency_key": format!("key-{i}"),
                "evidence": evidence(if i < 3 { "sshd" } else { "kernel" }, &format!("check-{i}"), "satisfied"),
            })
        })
        .collect();
    // A record with its job's provenance as a back-matter resource, linked
    // (as the runtime sends it) is stored as sent.
    let mut records = records;
    records[0]["evidence"]["links"] =
        json!([{ "href": "#3e0c1b1a-5f2d-5b7e-9a43-6d1c2b8e4f70", "rel": "provenance" }]);
    records[0]["evidence"]["back-matter"] = json!({ "resources": [{
        "uuid": "3e0c1b1a-5f2d-5b7e-9a43-6d1c2b8e4f70",
        "title": "Provenance of the job's findings",
        "props": [{ "name": "files", "value": "1", "ns": "https://assessment-runtime.dev/ns/evidence" }],
        "base64": { "filename": "provenance.json", "media-type": "application/json", "value": "eyJmaWxlcyI6W119" }
    }] });
    let batch = json!({ "records": records });

    let first = send_batch(&server, &token, &batch).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({ "accepted": 5, "duplicates": 0 })
    );
    let second = send_batch(&server, &token, &batch).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(
        second.json::<Value>().await.unwrap(),
        json!({ "accepted": 0, "duplicates": 5 })
    );

    // Partly new: only the new record is stored.
    let mixed = json!({ "records": [records[0], { "idempotency_key": "key-5", "evidence": evidence("sshd", "check-5", "not-satisfied") }] });
    let third = send_batch(&server, &token, &mixed).await;
    assert_eq!(
        third.json::<Value>().await.unwrap(),
        json!({ "accepted": 1, "duplicates": 1 })
    );

    let stored = all_evidence(&server, "").await;
    let keys: Vec<&str> = stored
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["key-0", "key-1", "key-2", "key-3", "key-4", "key-5"],
        "each once, in arrival order"
    );
    let first_record = &stored[0];
    assert_eq!(first_record["runtime_id"], id.as_str());
    assert_eq!(first_record["uuid"], records[0]["evidence"]["uuid"]);
    assert_eq!(first_record["plugin"], "sshd");
    assert_eq!(first_record["check"], "check-0");
    assert_eq!(first_record["status"], "satisfied");
    assert_eq!(first_record["evidence"], records[0]["evidence"]);
    assert_eq!(
        first_record["evidence"]["back-matter"]["resources"][0]["base64"]["media-type"],
        "application/json"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(first_record["received_at"].as_str().unwrap()).is_ok()
    );

    let by_plugin = all_evidence(&server, "&plugin=kernel").await;
    assert_eq!(by_plugin.len(), 2);
    let by_check = all_evidence(&server, "&plugin=sshd&check=check-5").await;
    assert_eq!(by_check.len(), 1);
    assert_eq!(by_check[0]["status"], "not-satisfied");
    let by_runtime = all_evidence(&server, &format!("&runtime={id}")).await;
    assert_eq!(by_runtime.len(), 6);
    let other_runtime = server
        .admin_get(&format!(
            "/v1/admin/evidence?runtime={}",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(other_runtime, json!({ "evidence": [], "next": null }));
    let bad_filter = server
        .get("/v1/admin/evidence?colour=red")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_filter.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn oversize_batches_are_refused_with_413() {
    let server = Server::start().await;
    let (_, token) = server.runtime("default").await;
    let record = |i: usize| json!({ "idempotency_key": format!("k{i}"), "evidence": { "uuid": uuid::Uuid::new_v4().to_string() } });
    let at_limit = json!({ "records": (0..1000).map(record).collect::<Vec<_>>() });
    let response = send_batch(&server, &token, &at_limit).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["accepted"], 1000);

    let over = json!({ "records": (1000..2001).map(record).collect::<Vec<_>>() });
    let response = send_batch(&server, &token, &over).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_message(response).await.contains("at most 1000"));
    let stored = all_evidence(&server, "").await;
    assert_eq!(stored.len(), 1000, "nothing of the oversize batch");
    server.stop().await;
}

#[tokio::test]
async fn invalid_records_are_named_and_nothing_is_stored() {
    let server = Server::start().await;
    let (_, token) = server.runtime("default").await;
    let good = json!({ "idempotency_key": "good", "evidence": evidence("p", "c", "satisfied") });
    for (bad, expected) in [
        (
            json!({ "evidence": evidence("p", "c", "satisfied") }),
            "records[1]: idempotency_key",
        ),
        (
            json!({ "idempotency_key": "", "evidence": evidence("p", "c", "satisfied") }),
            "records[1]: idempotency_key",
        ),
        (
            json!({ "idempotency_key": "k", "evidence": { "title": "no uuid" } }),
            "records[1]: evidence.uuid",
        ),
        (
            json!({ "idempotency_key": "k" }),
            "records[1]: evidence is missing",
        ),
    ] {
        let response = send_batch(&server, &token, &json!({ "records": [good, bad] })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let message = error_message(response).await;
        assert!(message.contains(expected), "{message}");
    }
    let not_a_batch = send_batch(&server, &token, &json!([good])).await;
    assert_eq!(not_a_batch.status(), StatusCode::BAD_REQUEST);
    assert_eq!(all_evidence(&server, "").await, Vec::<Value>::new());

    let unauthenticated = server
        .post("/v1/evidence/batch")
        .json(&json!({ "records": [good] }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn single_evidence_endpoint_stores_with_a_generated_key() {
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    let body = evidence("sshd", "root-login", "not-satisfied");
    let response = server
        .post("/api/evidence")
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let data = &created["data"];
    assert_eq!(data["runtime_id"], id.as_str());
    assert_eq!(data["uuid"], body["uuid"]);
    assert_eq!(data["plugin"], "sshd");
    assert_eq!(data["check"], "root-login");
    assert_eq!(data["status"], "not-satisfied");
    assert_eq!(data["evidence"], body);
    assert!(uuid::Uuid::parse_str(data["idempotency_key"].as_str().unwrap()).is_ok());

    // Posting it again stores a second record (the CF endpoint is not idempotent).
    let again = server
        .post("/api/evidence")
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let stored = all_evidence(&server, "").await;
    assert_eq!(stored.len(), 2);

    let no_uuid = server
        .post("/api/evidence")
        .bearer_auth(&token)
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_uuid.status(), StatusCode::BAD_REQUEST);
    assert!(error_message(no_uuid).await.contains("uuid"));
    server.stop().await;
}
