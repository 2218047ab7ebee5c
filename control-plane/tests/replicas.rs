//! Two control-plane processes (replicas, the real binary) sharing one
//! PostgreSQL database, as operators scale out: an enrollment token is
//! spent once however the replicas race, evidence stays idempotent when
//! the same batch reaches both, both serve the same configuration ETags,
//! and a replica killed in the middle of a batch loses nothing (the client
//! sends the batch again to the other one). Retention and the results
//! views run on PostgreSQL as on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use test_postgres::TestDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_assessment-control-plane");
const ADMIN_TOKEN: &str = "replica-admin-token-0123456789";

/// One control-plane process serving plain HTTP on a loopback port.
struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    async fn start(database: &TestDatabase) -> Self {
        Self::start_with(database, &[]).await
    }

    /// A replica with more `serve` arguments.
    async fn start_with(database: &TestDatabase, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--dev-plain-http"])
            .args(["--database-pool-size", "4"])
            .args(args)
            .env("ACP_DATABASE", database.url())
            .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("control plane listening") {
                    let start = line.find("address=").unwrap() + "address=".len();
                    return line[start..].split_whitespace().next().unwrap().to_string();
                }
            }
            panic!("the replica exited before listening");
        })
        .await
        .expect("the replica listens within 30 s");
        // The log goes on being read, so the replica never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            url: format!("http://{address}"),
        }
    }

    /// Two replicas on one database.
    async fn pair(database: &TestDatabase) -> (Self, Self) {
        tokio::join!(Self::start(database), Self::start(database))
    }

    async fn enrollment_token(&self, http: &Client) -> String {
        let response = http
            .post(format!("{}/v1/admin/enrollment-tokens", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "group": "prod", "ttl_seconds": 600 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn enroll(&self, http: &Client, token: &str) -> reqwest::Result<reqwest::Response> {
        http.post(format!("{}/v1/enroll", self.url))
            .json(&json!({ "token": token, "name": "web-1" }))
            .send()
            .await
    }

    /// Enrolls a runtime and gets it an access token: (id, access token).
    async fn runtime(&self, http: &Client) -> (String, String) {
        let token = self.enrollment_token(http).await;
        let enrolled: Value = self
            .enroll(http, &token)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = enrolled["runtime_id"].as_str().unwrap().to_string();
        let response = http
            .post(format!("{}/api/auth/token", self.url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id.as_str()),
                ("client_secret", enrolled["client_secret"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let access = response.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        (id, access)
    }

    async fn send_batch(
        &self,
        http: &Client,
        access: &str,
        batch: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        http.post(format!("{}/v1/evidence/batch", self.url))
            .bearer_auth(access)
            .json(batch)
            .send()
            .await
    }

    /// Every stored record's (runtime, idempotency key), following pages.
    async fn stored_keys(&self, http: &Client) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/admin/evidence?limit=1000", self.url);
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let page: Value = http
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for record in page["evidence"].as_array().unwrap() {
                keys.push((
                    record["runtime_id"].as_str().unwrap().to_string(),
                    record["idempotency_key"].as_str().unwrap().to_string(),
                ));
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return keys,
            }
        }
    }
}

/// A batch of `count` records keyed `{prefix}-{i}` about the runtime `id`.
fn batch(id: &str, prefix: &str, count: usize) -> Value {
    let records: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "idempotency_key": format!("{prefix}-{i}"),
                "evidence": {
                    "uuid": uuid::Uuid::new_v4().to_string(),
                    "title": "sshd root login",
                    "description": "checked",
                    "start": "2027-01-15T08:00:00Z",
                    "end": "2027-01-15T08:00:01Z",
                    "labels": { "plugin": "sshd", "check": format!("c{i}"), "host": "web-1" },
                    "status": { "state": "satisfied", "reason": "pass" },
                    "subjects": [{ "type": "InventoryItem", "identifier": id, "description": "web-1" }],
                    "origins": [],
                    "props": []
                }
            })
        })
        .collect();
    json!({ "records": records })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enrollment_token_is_spent_once_and_etags_agree_across_replicas() {
    let database = TestDatabase::create();
    let (a, b) = Replica::pair(&database).await;
    let http = Client::new();

    // Each token raced by eight requests, half to each replica.
    for _ in 0..5 {
        let token = a.enrollment_token(&http).await;
        let mut attempts = tokio::task::JoinSet::new();
        for i in 0..8 {
            let url = if i % 2 == 0 { &a.url } else { &b.url };
            let request = http
                .post(format!("{url}/v1/enroll"))
                .json(&json!({ "token": token, "name": format!("web-{i}") }));
            attempts.spawn(async move { request.send().await.unwrap().status() });
        }
        let statuses: Vec<StatusCode> = attempts.join_all().await;
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        assert_eq!(created, 1, "{statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::CREATED || *s == StatusCode::UNAUTHORIZED),
            "{statuses:?}"
        );
    }
    // The admin command line sees the same runtimes through the URL.
    let output = Command::new(BIN)
        .args(["runtimes", "list"])
        .env("ACP_DATABASE", database.url())
        .env_remove("ACP_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let runtimes: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(runtimes.as_array().unwrap().len(), 5);

    // A configuration set through one replica is served by both, with one
    // ETag; a change through the other is seen by the first.
    let (_, access) = a.runtime(&http).await;
    let config = |replica: &Replica, etag: Option<String>| {
        let mut request = http
            .get(format!("{}/v1/config", replica.url))
            .bearer_auth(&access);
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };
    for (writer, reader, interval) in [(&a, &b, "1h"), (&b, &a, "2h")] {
        let response = http
            .put(format!("{}/v1/admin/config/prod", writer.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "runtime": { "heartbeat_interval": interval } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let from_writer = config(writer, None).await.unwrap();
        let from_reader = config(reader, None).await.unwrap();
        let etag = from_writer.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(from_reader.headers()["etag"].to_str().unwrap(), etag);
        let body: Value = from_reader.json().await.unwrap();
        assert_eq!(body["runtime"]["heartbeat_interval"], interval);
        let unchanged = config(reader, Some(etag)).await.unwrap();
        assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evidence_is_idempotent_across_replicas() {
    let database = TestDatabase::create();
    let (a, b) = Replica::pair(&database).await;
    let http = Client::new();
    let (id, access) = a.runtime(&http).await;

    // The same batch to both replicas at once, three times over.
    let records = batch(&id, "k", 100);
    for round in 0..3 {
        let (to_a, to_b) = tokio::join!(
            a.send_batch(&http, &access, &records),
            b.send_batch(&http, &access, &records)
        );
        let mut accepted = 0;
        let mut duplicates = 0;
        for response in [to_a.unwrap(), to_b.unwrap()] {
            assert_eq!(response.status(), StatusCode::OK);
            let outcome: Value = response.json().await.unwrap();
            accepted += outcome["accepted"].as_u64().unwrap();
            duplicates += outcome["duplicates"].as_u64().unwrap();
        }
        let expected_accepted = if round == 0 { 100 } else { 0 };
        assert_eq!(
            (accepted, duplicates),
            (expected_accepted, 200 - expected_accepted)
        );
    }
    assert_eq!(b.stored_keys(&http).await.len(), 100);
    // A key reused for another record is a conflict on either replica.
    let mut changed = batch(&id, "k", 1);
    changed["records"][0]["evidence"]["description"] = json!("another record");
    for replica in [&a, &b] {
        let response = replica.send_batch(&http, &access, &changed).await.unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_batch_loses_nothing() {
    let database = TestDatabase::create();
    let (mut a, b) = Replica::pair(&database).await;
    let http = Client::new();
    let (id, access) = b.runtime(&http).await;
    const BATCHES: usize = 30;
    const RECORDS: usize = 200;
    let batches: Vec<Value> = (0..BATCHES)
        .map(|n| batch(&id, &format!("b{n}"), RECORDS))
        .collect();

    // The client sends each batch to replica A until A dies under it, then
    // to B, sending again whatever A did not answer.
    let sender = {
        let (http, access, batches) = (http.clone(), access.clone(), batches.clone());
        let (a_url, b_url) = (a.url.clone(), b.url.clone());
        tokio::spawn(async move {
            let mut failed_over_at = None;
            for (n, batch) in batches.iter().enumerate() {
                let answered = if failed_over_at.is_none() {
                    http.post(format!("{a_url}/v1/evidence/batch"))
                        .bearer_auth(&access)
                        .json(batch)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status() == StatusCode::OK)
                } else {
                    None
                };
                if answered.is_some() {
                    continue;
                }
                failed_over_at.get_or_insert(n);
                let response = http
                    .post(format!("{b_url}/v1/evidence/batch"))
                    .bearer_auth(&access)
                    .json(batch)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK, "batch {n} on B");
            }
            failed_over_at
        })
    };
    // Killed while it stores: once some batches are in, so that one is on
    // its way.
    let config = database.config();
    let watcher = tokio::task::spawn_blocking(move || {
        let mut client = config.connect(postgres::NoTls).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let row = client
                .query_one("SELECT count(*) FROM evidence", &[])
                .unwrap();
            if row.get::<_, i64>(0) >= (2 * RECORDS) as i64 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    });
    assert!(
        watcher.await.unwrap(),
        "replica A stores two batches within 60 s"
    );
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let failed_over_at = sender.await.unwrap();
    assert!(
        failed_over_at.is_some_and(|n| n < BATCHES),
        "the kill came before the last batch: {failed_over_at:?}"
    );

    // Every record exactly once.
    let stored = b.stored_keys(&http).await;
    let unique: HashSet<_> = stored.iter().cloned().collect();
    assert_eq!(unique.len(), stored.len(), "no record twice");
    let expected: HashSet<_> = (0..BATCHES)
        .flat_map(|n| {
            let id = id.clone();
            (0..RECORDS).map(move |i| (id.clone(), format!("b{n}-{i}")))
        })
        .collect();
    assert_eq!(unique, expected);
    let config = database.config();
    let bytes: i64 = tokio::task::spawn_blocking(move || {
        let mut client = config.connect(postgres::NoTls).unwrap();
        client
            .query_one(
                "SELECT stored_bytes - (SELECT sum(octet_length(body)) FROM evidence)::bigint
                 FROM runtimes",
                &[],
            )
            .unwrap()
            .get(0)
    })
    .await
    .unwrap();
    assert_eq!(bytes, 0, "the quota counts each record once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_and_the_results_views_run_on_postgres() {
    let database = TestDatabase::create();
    let replica = Replica::start_with(
        &database,
        &["--evidence-retention", "1h", "--retention-interval", "1s"],
    )
    .await;
    let http = Client::new();
    let (id, access) = replica.runtime(&http).await;
    // Two runs of one stream, the first failing.
    let mut first = batch(&id, "run1", 1);
    first["records"][0]["evidence"]["status"]["state"] = json!("not-satisfied");
    let mut second = batch(&id, "run2", 1);
    second["records"][0]["evidence"]["uuid"] = first["records"][0]["evidence"]["uuid"].clone();
    for records in [&first, &second] {
        let response = replica.send_batch(&http, &access, records).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let admin = |path: &str| {
        http.get(format!("{}{path}", replica.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let results: Value = admin("/v1/admin/results")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let latest = &results["results"][0];
    assert_eq!(latest["idempotency_key"], "run2-0", "{results}");
    assert_eq!(latest["status"], "satisfied");
    let summary = admin("/v1/admin/results/summary").await.unwrap();
    assert_eq!(summary.status(), StatusCode::OK);

    // Both records two days old: the next pass deletes the first, keeps
    // the stream's latest, and gives the first's bytes back.
    let sql = |statement: &'static str| {
        let config = database.config();
        tokio::task::spawn_blocking(move || {
            let mut client = config.connect(postgres::NoTls).unwrap();
            let rows = client.query(statement, &[]).unwrap();
            rows.first().map(|row| row.get::<_, i64>(0))
        })
    };
    sql("UPDATE evidence SET received_at = received_at - 172800000")
        .await
        .unwrap();
    let stored_bytes = "SELECT stored_bytes FROM runtimes";
    let before = sql(stored_bytes).await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let keys = replica.stored_keys(&http).await;
        if keys.len() == 1 {
            assert_eq!(keys[0], (id.clone(), "run2-0".to_string()));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{keys:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = sql(stored_bytes).await.unwrap().unwrap();
    assert!(after > 0 && after < before, "{before} -> {after}");
}
