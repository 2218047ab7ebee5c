//! Evidence from a hostile runtime: identity fields that name another
//! runtime, uuids that are not canonical, reused idempotency keys, records
//! and bodies over the limits, and the storage quota.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Options, Server, all_evidence, evidence_of, expect_error};
use assessment_control_plane::config::Limits;

async fn send_batch(server: &Server, token: &str, records: Value) -> reqwest::Response {
    server
        .post("/v1/evidence/batch")
        .bearer_auth(token)
        .json(&json!({ "records": records }))
        .send()
        .await
        .unwrap()
}

async fn send_one(server: &Server, token: &str, evidence: &Value) -> reqwest::Response {
    server
        .post("/api/evidence")
        .bearer_auth(token)
        .json(evidence)
        .send()
        .await
        .unwrap()
}

/// Two runtimes, A ("web-1") and B ("db-1"): (id, access token) each.
async fn two_runtimes(server: &Server) -> ((String, String), (String, String)) {
    let (a, a_secret) = server.enroll("default", "web-1").await;
    let (b, b_secret) = server.enroll("default", "db-1").await;
    let a_token = server.access_token(&a, &a_secret).await;
    let b_token = server.access_token(&b, &b_secret).await;
    ((a, a_token), (b, b_token))
}

#[tokio::test]
async fn a_runtime_cannot_post_evidence_that_claims_another_runtime() {
    let server = Server::start().await;
    let ((a, a_token), (b, b_token)) = two_runtimes(&server).await;
    // A stores its stream.
    let of_a = evidence_of(&a, "sshd", "root-login", "satisfied");
    let stored = send_batch(
        &server,
        &a_token,
        json!([{ "idempotency_key": "a-1", "evidence": of_a }]),
    )
    .await;
    assert_eq!(stored.status(), StatusCode::OK);

    // B claims A's machine as subject, on both endpoints: 422 naming the field.
    let mut claims_subject = evidence_of(&b, "sshd", "root-login", "satisfied");
    claims_subject["subjects"][0]["identifier"] = json!(a);
    claims_subject["labels"]["host"] = json!("db-1");
    let refused = send_batch(
        &server,
        &b_token,
        json!([{ "idempotency_key": "b-1", "evidence": claims_subject }]),
    )
    .await;
    let message = expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        message.contains("records[0]: evidence.subjects[0].identifier"),
        "{message}"
    );
    let refused = send_one(&server, &b_token, &claims_subject).await;
    let message = expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        message.contains("body: evidence.subjects[0].identifier"),
        "{message}"
    );

    // B says it is host "web-1", the name A enrolled with: 422.
    let claims_host = evidence_of(&b, "sshd", "root-login", "satisfied");
    assert_eq!(claims_host["labels"]["host"], "web-1");
    let refused = send_batch(
        &server,
        &b_token,
        json!([{ "idempotency_key": "b-2", "evidence": claims_host }]),
    )
    .await;
    let message = expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(message.contains("evidence.labels.host"), "{message}");
    let refused = send_one(&server, &b_token, &claims_host).await;
    expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY).await;

    // B re-sends A's stream uuid as its own: 409, not stored under A's uuid.
    let mut steals_uuid = evidence_of(&b, "sshd", "root-login", "not-satisfied");
    steals_uuid["uuid"] = of_a["uuid"].clone();
    steals_uuid["labels"]["host"] = json!("db-1");
    let refused = send_batch(
        &server,
        &b_token,
        json!([{ "idempotency_key": "b-3", "evidence": steals_uuid }]),
    )
    .await;
    let message = expect_error(refused, StatusCode::CONFLICT).await;
    assert!(message.contains("records[0]: evidence.uuid"), "{message}");
    let refused = send_one(&server, &b_token, &steals_uuid).await;
    expect_error(refused, StatusCode::CONFLICT).await;

    // Nothing of B's was stored; A's record is intact.
    let stored = all_evidence(&server, "").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["runtime_id"], a.as_str());
    assert_eq!(stored[0]["evidence"], of_a);

    // B's own evidence, under its own name, is stored.
    let mut own = evidence_of(&b, "sshd", "root-login", "satisfied");
    own["labels"]["host"] = json!("db-1");
    let accepted = send_batch(
        &server,
        &b_token,
        json!([{ "idempotency_key": "b-4", "evidence": own }]),
    )
    .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_runtime_resends_its_own_streams_run_after_run() {
    let server = Server::start().await;
    let ((a, token), _) = two_runtimes(&server).await;
    // Several runs (and restarts) send the same stream uuids under new keys,
    // and redeliver earlier batches unchanged.
    let streams: Vec<Value> = (0..3)
        .map(|i| evidence_of(&a, "kernel", &format!("c{i}"), "satisfied"))
        .collect();
    let run = |job: usize| {
        json!(
            streams
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut e = e.clone();
                    e["description"] = json!(format!("run {job}"));
                    json!({ "idempotency_key": format!("job-{job}-{i}"), "evidence": e })
                })
                .collect::<Vec<_>>()
        )
    };
    for job in 0..3 {
        for _delivery in 0..2 {
            let response = send_batch(&server, &token, run(job)).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    assert_eq!(all_evidence(&server, "").await.len(), 9);
    server.stop().await;
}

#[tokio::test]
async fn evidence_uuids_must_be_canonical() {
    let server = Server::start().await;
    let ((a, token), _) = two_runtimes(&server).await;
    let uuid = uuid::Uuid::new_v4();
    for bad in [
        uuid.to_string().to_uppercase(),
        format!("{{{uuid}}}"),
        format!("urn:uuid:{uuid}"),
        uuid.simple().to_string(),
        uuid::Uuid::nil().to_string(),
    ] {
        let mut record = evidence_of(&a, "p", "c", "satisfied");
        record["uuid"] = json!(bad);
        let refused = send_batch(
            &server,
            &token,
            json!([{ "idempotency_key": "k", "evidence": record }]),
        )
        .await;
        let message = expect_error(refused, StatusCode::BAD_REQUEST).await;
        assert!(
            message.contains("records[0]: evidence.uuid"),
            "{bad}: {message}"
        );
        let refused = send_one(&server, &token, &record).await;
        let message = expect_error(refused, StatusCode::BAD_REQUEST).await;
        assert!(message.contains("body: evidence.uuid"), "{bad}: {message}");
    }
    assert!(all_evidence(&server, "").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_reused_idempotency_key_with_another_body_is_a_conflict() {
    let server = Server::start().await;
    let ((a, token), _) = two_runtimes(&server).await;
    let first = evidence_of(&a, "p", "c", "satisfied");
    let record = |e: &Value| json!([{ "idempotency_key": "key-1", "evidence": e }]);
    assert_eq!(
        send_batch(&server, &token, record(&first)).await.status(),
        StatusCode::OK
    );
    // The same record again: a duplicate.
    let again = send_batch(&server, &token, record(&first)).await;
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({ "accepted": 0, "duplicates": 1 })
    );
    // Another record under the same key: 409 naming the key.
    let mut changed = first.clone();
    changed["status"]["state"] = json!("not-satisfied");
    let refused = send_batch(&server, &token, record(&changed)).await;
    let message = expect_error(refused, StatusCode::CONFLICT).await;
    assert!(message.contains("idempotency_key \"key-1\""), "{message}");
    // Also within one batch.
    let other = evidence_of(&a, "p", "c2", "satisfied");
    let refused = send_batch(
        &server,
        &token,
        json!([
            { "idempotency_key": "key-2", "evidence": other },
            { "idempotency_key": "key-2", "evidence": first },
        ]),
    )
    .await;
    let message = expect_error(refused, StatusCode::CONFLICT).await;
    assert!(
        message.contains("records[1]: idempotency_key \"key-2\""),
        "{message}"
    );
    let stored = all_evidence(&server, "").await;
    assert_eq!(stored.len(), 1, "the first record only");
    assert_eq!(stored[0]["evidence"], first);
    server.stop().await;
}

fn small_limits() -> Options {
    Options {
        limits: Limits {
            max_record_bytes: 4 * 1024,
            max_batch_bytes: 64 * 1024,
            max_body_bytes: 16 * 1024,
            runtime_storage_quota: 12 * 1024,
            ..Limits::default()
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn records_and_bodies_over_the_limits_get_413_in_the_error_shape() {
    let server = Server::start_with(small_limits()).await;
    let ((a, token), _) = two_runtimes(&server).await;
    let mut big = evidence_of(&a, "p", "c", "satisfied");
    big["description"] = json!("x".repeat(5 * 1024));
    // One record over --max-record-bytes, in a batch and alone.
    let refused = send_batch(
        &server,
        &token,
        json!([{ "idempotency_key": "k", "evidence": big }]),
    )
    .await;
    let message = expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(message.contains("records[0]: the record is"), "{message}");
    let refused = send_one(&server, &token, &big).await;
    let message = expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(message.contains("body: the record is"), "{message}");
    // A batch body over --max-batch-bytes.
    let mut record = evidence_of(&a, "p", "c", "satisfied");
    record["description"] = json!("x".repeat(3 * 1024));
    let records: Vec<Value> = (0..30)
        .map(|i| json!({ "idempotency_key": format!("k{i}"), "evidence": record }))
        .collect();
    let refused = send_batch(&server, &token, json!(records)).await;
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    // A batch body over --max-body-bytes but within --max-batch-bytes is
    // read (and here refused only by the 12 KiB quota, after being read).
    let refused = send_batch(&server, &token, json!(records[..8])).await;
    expect_error(refused, StatusCode::INSUFFICIENT_STORAGE).await;
    // Bodies over --max-body-bytes on routes that read raw bytes, JSON or a form.
    let oversize = "x".repeat(20 * 1024);
    let refused = server
        .post("/v1/credentials/rotate")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"csr\": \"{oversize}\"}}"))
        .send()
        .await
        .unwrap();
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    let refused = server
        .post("/v1/admin/enrollment-tokens")
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .body(format!("{{\"group\": \"{oversize}\"}}"))
        .send()
        .await
        .unwrap();
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    let refused = server
        .post("/v1/enroll")
        .json(&json!({ "token": oversize, "name": "x" }))
        .send()
        .await
        .unwrap();
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    let refused = server
        .post("/api/auth/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &oversize),
        ])
        .send()
        .await
        .unwrap();
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(all_evidence(&server, "").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_content_type_gets_415_in_the_error_shape() {
    let server = Server::start().await;
    let ((_, token), _) = two_runtimes(&server).await;
    for path in [
        "/api/evidence",
        "/v1/evidence/batch",
        "/api/agent/heartbeat",
    ] {
        let refused = server
            .post(path)
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        expect_error(refused, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let refused = server.post("/v1/enroll").body("{}").send().await.unwrap();
    expect_error(refused, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let refused = server
        .post("/api/auth/token")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(refused, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    server.stop().await;
}

#[tokio::test]
async fn each_runtime_has_a_storage_quota() {
    let server = Server::start_with(small_limits()).await;
    let ((a, a_token), (b, b_token)) = two_runtimes(&server).await;
    let record = |id: &str, host: &str| {
        let mut e = evidence_of(id, "p", "c", "satisfied");
        e["labels"]["host"] = json!(host);
        e["description"] = json!("x".repeat(2 * 1024));
        e
    };
    let mut stored = 0;
    let quota_full = loop {
        let response = send_batch(
            &server,
            &a_token,
            json!([{ "idempotency_key": format!("k{stored}"), "evidence": record(&a, "web-1") }]),
        )
        .await;
        if response.status() != StatusCode::OK {
            break response;
        }
        stored += 1;
        assert!(stored < 10, "the quota never filled");
    };
    assert!(stored >= 3, "{stored} records fit in 12 KiB");
    let message = expect_error(quota_full, StatusCode::INSUFFICIENT_STORAGE).await;
    assert!(message.contains("quota"), "{message}");
    let refused = send_one(&server, &a_token, &record(&a, "web-1")).await;
    expect_error(refused, StatusCode::INSUFFICIENT_STORAGE).await;
    // Another runtime has its own quota.
    let response = send_batch(
        &server,
        &b_token,
        json!([{ "idempotency_key": "k", "evidence": record(&b, "db-1") }]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        all_evidence(&server, &format!("&runtime={a}")).await.len(),
        stored
    );
    server.stop().await;
}

#[tokio::test]
async fn the_admin_evidence_listing_is_paged() {
    let server = Server::start().await;
    let ((a, token), _) = two_runtimes(&server).await;
    let records: Vec<Value> = (0..25)
        .map(|i| json!({ "idempotency_key": format!("k{i:02}"), "evidence": evidence_of(&a, "p", &format!("c{i}"), "satisfied") }))
        .collect();
    assert_eq!(
        send_batch(&server, &token, json!(records)).await.status(),
        StatusCode::OK
    );

    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(after) => format!("/v1/admin/evidence?limit=10&after={after}"),
            None => "/v1/admin/evidence?limit=10".to_string(),
        };
        let page = server.admin_get(&path).await;
        pages += 1;
        let evidence = page["evidence"].as_array().unwrap();
        assert!(evidence.len() <= 10);
        keys.extend(
            evidence
                .iter()
                .map(|e| e["idempotency_key"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    assert_eq!(keys, expected, "every record once, in arrival order");
    // The default page is 100 records; limits out of range are refused.
    let page = server.admin_get("/v1/admin/evidence").await;
    assert_eq!(page["evidence"].as_array().unwrap().len(), 25);
    assert_eq!(page["next"], Value::Null);
    for bad in ["limit=0", "limit=1001", "after=abc", "limit=x"] {
        let refused = server
            .get(&format!("/v1/admin/evidence?{bad}"))
            .bearer_auth(crate::harness::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        expect_error(refused, StatusCode::BAD_REQUEST).await;
    }
    server.stop().await;
}
