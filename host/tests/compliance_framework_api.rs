//! The control-plane client against servers with and without this
//! project's extensions, on loopback: the batch endpoint is tried once and,
//! answered 404 or 405, never again in the client's life; records then go
//! one per `POST /api/evidence` with their `Idempotency-Key`, and a record
//! the server took is not sent again when a later one of its part fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::{Arc, Mutex};
use std::time::Duration;

use assessment_runtime::agent_config::NetworkSettings;
use assessment_runtime::control_plane::client::ControlPlaneClient;
use assessment_runtime::control_plane::settings::{ControlPlaneSettings, SecretSource};
use assessment_runtime::results::evidence::{EvidenceCreateRequest, EvidenceRecord};
use assessment_runtime::results::outbox::{DeliveryError, EvidenceSink};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request the server saw: method, path, `Idempotency-Key`.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// A plain-HTTP server on loopback answering the token endpoint, the batch
/// endpoint with `batch_status`, and `POST /api/evidence` with 201 except
/// the evidence requests numbered in `fail_evidence` (from 0), answered 503.
async fn server(batch_status: u16, fail_evidence: &'static [usize]) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let evidence_requests = Arc::new(Mutex::new(0usize));
        while let Ok((stream, _)) = listener.accept().await {
            let (log, evidence_requests) = (log.clone(), evidence_requests.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut request_line = String::new();
                stream.read_line(&mut request_line).await.unwrap();
                let (mut length, mut key) = (0, None);
                loop {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap();
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                    if name.eq_ignore_ascii_case("idempotency-key") {
                        key = Some(value.trim().to_string());
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                let mut parts = request_line.split(' ');
                let method = parts.next().unwrap().to_string();
                let path = parts.next().unwrap().to_string();
                log.lock()
                    .unwrap()
                    .push((method, path.clone(), key.clone()));
                let (status, answer) = match path.as_str() {
                    "/api/auth/token" => (
                        200,
                        r#"{"access_token":"t","token_type":"Bearer","expires_in":600}"#,
                    ),
                    "/v1/evidence/batch" => (batch_status, r#"{"accepted":1,"duplicates":0}"#),
                    "/api/evidence" => {
                        let mut n = evidence_requests.lock().unwrap();
                        *n += 1;
                        if fail_evidence.contains(&(*n - 1)) {
                            (503, r#"{"errors":{"message":"busy"}}"#)
                        } else {
                            (201, r#"{"data":{}}"#)
                        }
                    }
                    _ => (404, r#"{"errors":{"message":"no such endpoint"}}"#),
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let mut stream = stream.into_inner();
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, seen)
}

fn client(url: &str, dir: &tempfile::TempDir) -> ControlPlaneClient {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let settings = ControlPlaneSettings {
        url: url.to_string(),
        runtime_id: "7a1c9a52-9a0e-4c84-9f44-1f0a8f1e2b3c".to_string(),
        secret: SecretSource::File(secret),
        dev_plain_http: true,
    };
    ControlPlaneClient::configured(
        &settings,
        Duration::from_secs(10),
        &NetworkSettings::default(),
    )
    .unwrap()
}

fn records(keys: &[&str]) -> Vec<EvidenceRecord> {
    keys.iter()
        .map(|key| EvidenceRecord {
            idempotency_key: key.to_string(),
            evidence: EvidenceCreateRequest {
                uuid: "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90".to_string(),
                ..Default::default()
            },
        })
        .collect()
}

/// The requests to `path`, with their keys.
fn to(seen: &Seen, path: &str) -> Vec<Option<String>> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, p, _)| p == path)
        .map(|(_, _, key)| key.clone())
        .collect()
}

fn keys(list: &[&str]) -> Vec<Option<String>> {
    list.iter().map(|k| Some(k.to_string())).collect()
}

#[tokio::test]
async fn without_the_batch_extension_records_go_one_by_one_with_their_keys() {
    for missing in [404, 405] {
        // The second evidence request fails once.
        let (url, seen) = server(missing, &[1]).await;
        let dir = tempfile::tempdir().unwrap();
        let client = client(&url, &dir);

        let first = records(&["k1", "k2", "k3"]);
        let failed = client.deliver(&first).await.unwrap_err();
        assert!(
            matches!(failed, DeliveryError::Transient(ref why) if why.contains("k2")),
            "{failed:?}"
        );
        // Again: k1 was taken and is not sent again.
        client.deliver(&first).await.unwrap();
        client.deliver(&records(&["k4"])).await.unwrap();

        assert_eq!(
            to(&seen, "/v1/evidence/batch").len(),
            1,
            "discovered once ({missing})"
        );
        assert_eq!(
            to(&seen, "/api/evidence"),
            keys(&["k1", "k2", "k2", "k3", "k4"]),
            "{missing}"
        );
    }
}

#[tokio::test]
async fn with_the_batch_extension_records_go_in_batches() {
    let (url, seen) = server(200, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&url, &dir);
    client.deliver(&records(&["k1", "k2"])).await.unwrap();
    client.deliver(&records(&["k3"])).await.unwrap();
    assert_eq!(to(&seen, "/v1/evidence/batch").len(), 2);
    assert!(to(&seen, "/api/evidence").is_empty());
}

#[tokio::test]
async fn a_batch_refused_for_what_it_is_does_not_switch_to_records() {
    let (url, seen) = server(422, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&url, &dir);
    let refused = client.deliver(&records(&["k1"])).await.unwrap_err();
    assert!(matches!(refused, DeliveryError::Rejected(_)), "{refused:?}");
    assert!(to(&seen, "/api/evidence").is_empty());
    let _ = client.deliver(&records(&["k2"])).await;
    assert_eq!(to(&seen, "/v1/evidence/batch").len(), 2);
}
