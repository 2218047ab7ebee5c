//! Results over the admin API: the latest record per stream (failing
//! first, filtered, paged), one stream's history, the per-check summary.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Server, evidence_of, expect_error};

#[tokio::test]
async fn latest_results_streams_and_summary() {
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    let failing = evidence_of(&id, "sshd", "root-login", "not-satisfied");
    let passing = evidence_of(&id, "sshd", "protocol", "satisfied");
    let mut later = failing.clone();
    later["status"]["state"] = json!("satisfied");
    let batch = |records: Vec<(&str, &Value)>| {
        let records: Vec<Value> = records
            .into_iter()
            .map(|(key, e)| json!({"idempotency_key": key, "evidence": e}))
            .collect();
        json!({ "records": records })
    };
    let sent = server
        .post_json(
            "/v1/evidence/batch",
            &token,
            &batch(vec![("k1", &passing), ("k2", &failing)]),
        )
        .await;
    assert_eq!(sent.status(), StatusCode::OK);

    let page = server.admin_get("/v1/admin/results").await;
    let checks: Vec<&str> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["root-login", "protocol"], "failing first");
    let failing_only = server
        .admin_get("/v1/admin/results?status=not-satisfied&limit=1")
        .await;
    assert_eq!(failing_only["results"].as_array().unwrap().len(), 1);
    assert_eq!(failing_only["next"], Value::Null);
    let summary = server.admin_get("/v1/admin/results/summary").await;
    assert_eq!(summary[0]["check"], "root-login");
    assert_eq!(summary[0]["failing_runtimes"], 1);

    // The check passes on the next run: its stream's latest changes, its
    // history keeps both, newest first.
    let sent = server
        .post_json("/v1/evidence/batch", &token, &batch(vec![("k3", &later)]))
        .await;
    assert_eq!(sent.status(), StatusCode::OK);
    let summary = server.admin_get("/v1/admin/results/summary").await;
    assert!(
        summary
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["failing_runtimes"] == 0)
    );
    let stream = failing["uuid"].as_str().unwrap();
    let first = server
        .admin_get(&format!("/v1/admin/streams/{stream}?limit=1"))
        .await;
    assert_eq!(first["evidence"][0]["idempotency_key"], "k3");
    let next = first["next"].as_str().unwrap();
    let second = server
        .admin_get(&format!("/v1/admin/streams/{stream}?limit=1&before={next}"))
        .await;
    assert_eq!(second["evidence"][0]["idempotency_key"], "k2");
    assert_eq!(second["next"], Value::Null);

    for path in [
        "/v1/admin/results?limit=501",
        "/v1/admin/results?after=nonsense",
        "/v1/admin/results?colour=red",
        "/v1/admin/streams/x?limit=0",
    ] {
        let response = server
            .get(path)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST).await;
    }
    let response = server.get("/v1/admin/results").send().await.unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED).await;
}
