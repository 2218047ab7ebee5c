//! The operations listener: `/metrics` read with a Prometheus text parser
//! after real API traffic, and `/healthz` and `/readyz` on both listeners.

use assessment_control_plane::StoreError;
use prometheus_parse::{Scrape, Value as Sample};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{ADMIN_TOKEN, Options, Server, error_message, evidence_of};

fn with_metrics() -> Options {
    Options {
        metrics: true,
        ..Options::default()
    }
}

/// `GET /metrics` on the operations listener: its text, checked to be the
/// Prometheus text format.
async fn metrics_text(server: &Server) -> String {
    let url = format!("{}/metrics", server.metrics_url.as_ref().unwrap());
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap()
}

/// The value of the sample `metric` whose labels are exactly `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .filter_map(|s| match s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => Some(v),
            _ => None,
        })
        .collect();
    assert!(found.len() <= 1, "{metric} {labels:?}: {found:?}");
    found.first().copied()
}

#[tokio::test]
async fn metrics_count_what_the_api_did() {
    let server = Server::start_with(with_metrics()).await;
    let (id, token) = server.runtime("default").await;
    let (other, _) = server.enroll("default", "web-2").await;

    // Refusals: a wrong admin token, a spent enrollment token, a heartbeat
    // without a bearer token.
    let response = server
        .get("/v1/admin/runtimes")
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server
        .post("/v1/enroll")
        .json(&json!({ "token": "0".repeat(64), "name": "web-3" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let heartbeat = json!({ "uuid": id, "created_at": chrono::Utc::now().to_rfc3339() });
    let response = server
        .post("/api/agent/heartbeat")
        .json(&heartbeat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = server
        .post_json("/api/agent/heartbeat", &token, &heartbeat)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // Three records, then a replay of one with a new one, then a batch
    // refused whole for its second record.
    let records: Vec<Value> = (0..4)
        .map(|i| {
            json!({
                "idempotency_key": format!("key-{i}"),
                "evidence": evidence_of(&id, "sshd", &format!("check-{i}"), "satisfied"),
            })
        })
        .collect();
    let batches = [
        (json!({ "records": records[..3] }), 3, 0),
        (json!({ "records": [records[0], records[3]] }), 1, 1),
    ];
    for (batch, accepted, duplicates) in batches {
        let response = server.post_json("/v1/evidence/batch", &token, &batch).await;
        assert_eq!(response.status(), StatusCode::OK);
        let outcome: Value = response.json().await.unwrap();
        assert_eq!(
            outcome,
            json!({ "accepted": accepted, "duplicates": duplicates })
        );
    }
    let refused = json!({ "records": [
        { "idempotency_key": "key-5", "evidence": evidence_of(&id, "sshd", "check-5", "satisfied") },
        { "idempotency_key": "key-6" },
    ] });
    let response = server
        .post_json("/v1/evidence/batch", &token, &refused)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A route with a path parameter, and a path no route matches.
    let response = server
        .post(&format!("/v1/admin/runtimes/{other}/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let unknown = uuid::Uuid::new_v4().to_string();
    let response = server
        .get(&format!("/v1/nothing/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let text = metrics_text(&server).await;
    let scrape = parse(&text);
    let metric = |name: &str, labels: &[(&str, &str)]| {
        value(&scrape, &format!("assessment_control_plane_{name}"), labels)
    };

    assert_eq!(
        metric("evidence_records_total", &[("outcome", "accepted")]),
        Some(4.0),
        "each record sent once is stored once"
    );
    assert_eq!(
        metric("evidence_records_total", &[("outcome", "duplicate")]),
        Some(1.0)
    );
    assert_eq!(
        metric("evidence_records_total", &[("outcome", "rejected")]),
        Some(2.0),
        "a refused batch refuses all its records"
    );
    assert_eq!(
        metric("evidence_requests_rejected_total", &[("reason", "invalid")]),
        Some(1.0)
    );
    assert_eq!(metric("heartbeats_total", &[]), Some(1.0));
    assert_eq!(
        metric("enrollments_total", &[("outcome", "succeeded")]),
        Some(2.0)
    );
    assert_eq!(
        metric("enrollments_total", &[("outcome", "refused")]),
        Some(1.0)
    );
    for (principal, reason) in [
        ("admin", "wrong_admin_token"),
        ("enrollment", "invalid_enrollment_token"),
        ("runtime", "no_bearer_token"),
    ] {
        assert_eq!(
            metric(
                "authentication_failures_total",
                &[("principal", principal), ("reason", reason)]
            ),
            Some(1.0),
            "{principal} {reason}"
        );
    }

    let requests = |method: &str, route: &str, status: &str| {
        metric(
            "http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "/v1/evidence/batch", "200"), Some(2.0));
    assert_eq!(requests("POST", "/v1/evidence/batch", "400"), Some(1.0));
    assert_eq!(requests("POST", "/api/agent/heartbeat", "201"), Some(1.0));
    assert_eq!(requests("POST", "/api/agent/heartbeat", "401"), Some(1.0));
    assert_eq!(requests("POST", "/v1/enroll", "201"), Some(2.0));
    assert_eq!(requests("GET", "/v1/admin/runtimes", "401"), Some(1.0));
    assert_eq!(requests("GET", "unmatched", "404"), Some(1.0));
    assert_eq!(
        metric(
            "http_request_duration_seconds_count",
            &[("route", "/v1/evidence/batch")]
        ),
        Some(3.0)
    );
    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "assessment_control_plane_http_request_duration_seconds"
                && s.labels.get("route") == Some("/v1/evidence/batch")
        })
        .expect("the duration histogram of the batch route");
    let Sample::Histogram(buckets) = &histogram.value else {
        panic!("{histogram:?}");
    };
    assert!(buckets.len() > 10, "{buckets:?}");
    let last = buckets.last().unwrap();
    assert!(
        last.less_than.is_infinite() && last.count == 3.0,
        "{last:?}"
    );
    // prometheus-parse stops a label set at the first `}`, so the route
    // template with a parameter is checked on the exposition's line; the
    // raw paths (with a runtime id, a random segment) appear nowhere.
    assert!(
        text.contains(
            "assessment_control_plane_http_requests_total{method=\"POST\",route=\"/v1/admin/runtimes/{id}/revoke\",status=\"204\"} 1\n"
        ),
        "{text}"
    );
    assert!(!text.contains(&other) && !text.contains(&unknown) && !text.contains(&id));

    // Read from the store at the scrape.
    assert_eq!(metric("runtimes", &[]), Some(1.0), "web-2 is revoked");
    assert_eq!(metric("runtimes_stale", &[]), Some(0.0));
    assert_eq!(metric("runtimes_revoked", &[]), Some(1.0));
    assert_eq!(metric("database_up", &[]), Some(1.0));
    assert!(metric("database_size_bytes", &[]).unwrap() >= 4096.0);
    assert_eq!(
        metric("build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    assert!(
        !text.contains("ca_certificate_expiry_timestamp_seconds{"),
        "no CA over plain HTTP"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness_are_served_on_both_listeners_and_metrics_only_on_its_own() {
    let server = Server::start_tls_with(with_metrics()).await;
    let metrics_url = server.metrics_url.clone().unwrap();
    let plain = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        // The API port over TLS, without a client certificate.
        let response = server.get(path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.text().await.unwrap(), "ok");
        let response = plain
            .get(format!("{metrics_url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.text().await.unwrap(), "ok");
    }

    // No metrics on the API port, and no API on the metrics port.
    let response = server.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let _ = error_message(response).await;
    for path in ["/v1/admin/runtimes", "/v1/admin/evidence", "/v1/config"] {
        let response = plain
            .get(format!("{metrics_url}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // OpenMetrics when the scraper asks for it.
    let response = plain
        .get(format!("{metrics_url}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(response.text().await.unwrap().ends_with("# EOF\n"));

    // The CA's expiry, labelled with its fingerprint.
    let ca = pem::parse(server.ca_pem.as_ref().unwrap()).unwrap();
    let sha256 = hex::encode(Sha256::digest(ca.contents()));
    let (_, certificate) = x509_parser::parse_x509_certificate(ca.contents()).unwrap();
    let not_after = certificate.validity().not_after.timestamp() as f64;
    let scrape = parse(&metrics_text(&server).await);
    assert_eq!(
        value(
            &scrape,
            "assessment_control_plane_ca_certificate_expiry_timestamp_seconds",
            &[("sha256", &sha256)]
        ),
        Some(not_after)
    );
    server.stop().await;
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_unusable() {
    let server = Server::start_with(with_metrics()).await;
    let metrics_url = server.metrics_url.clone().unwrap();
    // A panic while holding the connection leaves it poisoned: every
    // database call fails from then on.
    let poisoned = server
        .store
        .call(|_| -> Result<(), StoreError> { panic!("a test poisons the database connection") })
        .await;
    assert!(poisoned.is_err());

    let response = reqwest::get(format!("{metrics_url}/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason = response.text().await.unwrap();
    assert!(
        reason.starts_with("not ready: the database failed"),
        "{reason}"
    );
    let response = server.get("/readyz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_message(response).await.starts_with("not ready"));

    // Still alive, and still scraped: the database is reported down.
    let response = server.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = reqwest::get(format!("{metrics_url}/healthz"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let scrape = parse(&metrics_text(&server).await);
    assert_eq!(
        value(&scrape, "assessment_control_plane_database_up", &[]),
        Some(0.0)
    );
    server.stop().await;
}
