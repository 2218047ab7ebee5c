//! The relay: evidence this control plane accepts is forwarded to an
//! upstream Compliance Framework API (`POST /api/auth/token` with client
//! credentials, then `POST /api/evidence` per record), at least once, in
//! the order it was accepted (so in order per stream, the evidence `uuid`),
//! from a durable queue of its own (an SQLite file given by
//! `--relay-queue`, not the main store), with retries and backoff.
//!
//! Nothing accepted is lost: a request's records enter the queue *held*
//! before the main store stores them, and are released when the store
//! answered; a request the store refused takes its held records out again.
//! A crash in between leaves held records, which the next start releases
//! if the main store has them (by runtime and idempotency key) and drops
//! otherwise (the runtime was not answered, so it sends them again).
//!
//! Each forwarded request carries an `Idempotency-Key` derived from the
//! runtime and the record's own key, so an upstream that honours it (this
//! control plane does) stores a record resent after a lost answer once;
//! one that does not (a Compliance Framework API) may store it twice —
//! at least once. A record resent by a runtime whose answer was lost is
//! queued again and forwarded again, with the same key. A record the
//! upstream refuses as invalid (400, 409, 413, 422) is set aside in the
//! queue's `rejected` table for the operator, never dropped; anything else
//! (network, 401, 429, 5xx) is retried with exponential backoff, the queue
//! waiting behind it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::db::Store;
use crate::model::NewEvidence;

/// Records forwarded per pass before the queue is read again.
const PAGE: usize = 100;
/// How often the queue is looked at when nothing wakes the forwarder.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A token is renewed when it has less than this left.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// Longest error text kept of an upstream answer.
const MAX_ERROR_TEXT: usize = 600;

/// A relay failure.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The queue file.
    #[error("relay queue {path}: {message}")]
    Queue {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The settings cannot be used.
    #[error("relay: {0}")]
    Setup(String),
}

/// Where the relay forwards to and as whom.
#[derive(Clone)]
pub struct Upstream {
    /// The upstream's base URL (without `/api`).
    pub url: String,
    /// The relay's `client_id` there.
    pub client_id: String,
    /// Its `client_secret` (never logged).
    pub client_secret: String,
    /// A CA certificate (PEM) the upstream's certificate comes from,
    /// trusted besides the system's roots.
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

/// The durable queue of records to forward.
#[derive(Debug)]
pub struct RelayQueue {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Rung when records are released.
    ready: Notify,
}

/// One queued record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    seq: i64,
    /// The runtime that sent it.
    pub runtime_id: String,
    /// Its idempotency key at this control plane.
    pub idempotency_key: String,
    /// The `EvidenceCreateRequest` as stored.
    pub body: String,
}

impl Queued {
    /// The `Idempotency-Key` sent upstream: one per record of one runtime,
    /// the same at every attempt.
    pub fn upstream_key(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.runtime_id.as_bytes());
        hash.update([0]);
        hash.update(self.idempotency_key.as_bytes());
        hex::encode(hash.finalize())
    }
}

/// The records of one request, held in the queue until the store answered.
#[derive(Debug, Default)]
#[must_use = "release or drop the held records once the store answered"]
pub struct Held {
    seqs: Vec<i64>,
}

impl RelayQueue {
    /// Opens (creates) the queue file, private to its owner.
    pub fn open(path: &Path) -> Result<Self, RelayError> {
        let fail = |e: rusqlite::Error| RelayError::Queue {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if !path.exists() {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            if let Err(e) = options.open(path)
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(RelayError::Queue {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                });
            }
        }
        let conn = Connection::open(path).map_err(fail)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS queue (
                 seq              INTEGER PRIMARY KEY AUTOINCREMENT,
                 runtime_id       TEXT NOT NULL,
                 idempotency_key  TEXT NOT NULL,
                 body             TEXT NOT NULL,
                 held             INTEGER NOT NULL,
                 UNIQUE (runtime_id, idempotency_key)
             );
             CREATE TABLE IF NOT EXISTS rejected (
                 seq              INTEGER PRIMARY KEY,
                 runtime_id       TEXT NOT NULL,
                 idempotency_key  TEXT NOT NULL,
                 body             TEXT NOT NULL,
                 reason           TEXT NOT NULL
             );",
        )
        .map_err(fail)?;
        Ok(RelayQueue {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            ready: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self, e: rusqlite::Error) -> RelayError {
        RelayError::Queue {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Puts `records` of `runtime_id` in the queue, held (not forwarded)
    /// until [`release`](Self::release). A record already queued is not
    /// queued twice.
    pub fn hold(&self, runtime_id: Uuid, records: &[NewEvidence]) -> Result<Held, RelayError> {
        let runtime_id = runtime_id.to_string();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.fail(e))?;
        let mut seqs = Vec::new();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO queue (runtime_id, idempotency_key, body, held)
                     VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT (runtime_id, idempotency_key) DO NOTHING
                     RETURNING seq",
                )
                .map_err(|e| self.fail(e))?;
            for record in records {
                let seq: Option<i64> = insert
                    .query_row(
                        params![runtime_id, record.idempotency_key, record.text],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(|e| self.fail(e))?;
                seqs.extend(seq);
            }
        }
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(Held { seqs })
    }

    /// The store took the request: its held records may be forwarded.
    pub fn release(&self, held: Held) -> Result<(), RelayError> {
        self.settle(held, "UPDATE queue SET held = 0 WHERE seq = ?1")?;
        self.ready.notify_one();
        Ok(())
    }

    /// The store refused the request: its held records go.
    pub fn drop_held(&self, held: Held) -> Result<(), RelayError> {
        self.settle(held, "DELETE FROM queue WHERE seq = ?1 AND held = 1")
    }

    fn settle(&self, held: Held, sql: &str) -> Result<(), RelayError> {
        if held.seqs.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.fail(e))?;
        {
            let mut statement = tx.prepare(sql).map_err(|e| self.fail(e))?;
            for seq in &held.seqs {
                statement.execute(params![seq]).map_err(|e| self.fail(e))?;
            }
        }
        tx.commit().map_err(|e| self.fail(e))
    }

    /// After a crash: held records the main store has are released, the
    /// others dropped (their runtime was never answered and sends them
    /// again). Returns (released, dropped).
    pub async fn recover(&self, store: &Store) -> Result<(usize, usize), RelayError> {
        let held: Vec<(i64, String, String)> = {
            let conn = self.lock();
            let mut statement = conn
                .prepare("SELECT seq, runtime_id, idempotency_key FROM queue WHERE held = 1")
                .map_err(|e| self.fail(e))?;
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .and_then(Iterator::collect)
                .map_err(|e| self.fail(e))?
        };
        let (mut released, mut dropped) = (Held::default(), Held::default());
        for (seq, runtime_id, key) in held {
            let stored = match Uuid::parse_str(&runtime_id) {
                Ok(runtime) => store
                    .call(move |db| db.evidence(runtime, &key))
                    .await
                    .map_err(|e| RelayError::Setup(format!("cannot read the main store: {e}")))?
                    .is_some(),
                Err(_) => false,
            };
            if stored {
                released.seqs.push(seq);
            } else {
                dropped.seqs.push(seq);
            }
        }
        let counts = (released.seqs.len(), dropped.seqs.len());
        self.release(released)?;
        self.drop_held(dropped)?;
        Ok(counts)
    }

    /// The oldest released records, at most `limit`.
    fn next(&self, limit: usize) -> Result<Vec<Queued>, RelayError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare(
                "SELECT seq, runtime_id, idempotency_key, body FROM queue
                 WHERE held = 0 ORDER BY seq LIMIT ?1",
            )
            .map_err(|e| self.fail(e))?;
        statement
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok(Queued {
                    seq: row.get(0)?,
                    runtime_id: row.get(1)?,
                    idempotency_key: row.get(2)?,
                    body: row.get(3)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.fail(e))
    }

    /// The upstream stored `record`.
    fn forwarded(&self, record: &Queued) -> Result<(), RelayError> {
        self.lock()
            .execute("DELETE FROM queue WHERE seq = ?1", params![record.seq])
            .map(drop)
            .map_err(|e| self.fail(e))
    }

    /// The upstream refused `record` as invalid: kept aside, with why.
    fn reject(&self, record: &Queued, reason: &str) -> Result<(), RelayError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.fail(e))?;
        tx.execute(
            "INSERT OR REPLACE INTO rejected (seq, runtime_id, idempotency_key, body, reason)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.seq,
                record.runtime_id,
                record.idempotency_key,
                record.body,
                reason
            ],
        )
        .map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM queue WHERE seq = ?1", params![record.seq])
            .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    /// Records waiting (held or released) and set aside.
    pub fn depth(&self) -> Result<(usize, usize), RelayError> {
        let conn = self.lock();
        let count = |table: &str| -> Result<usize, RelayError> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(|e| self.fail(e))
        };
        Ok((count("queue")?, count("rejected")?))
    }
}

/// How one forwarding attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Stored,
    /// Refused as invalid: set aside.
    Refused(String),
    /// Try again later.
    Failed(String),
}

/// The client of the upstream API.
struct UpstreamClient {
    upstream: Upstream,
    http: reqwest::Client,
    token: Option<(String, Instant)>,
}

impl UpstreamClient {
    fn new(upstream: Upstream) -> Result<Self, RelayError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!(
                "assessment-control-plane-relay/",
                env!("CARGO_PKG_VERSION")
            ))
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = &upstream.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                RelayError::Setup(format!("--relay-ca is not a PEM certificate: {e}"))
            })?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .build()
            .map_err(|e| RelayError::Setup(format!("cannot create the HTTP client: {e}")))?;
        Ok(UpstreamClient {
            upstream,
            http,
            token: None,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.upstream.url)
    }

    async fn token(&mut self) -> Result<String, String> {
        if let Some((token, expires)) = &self.token
            && expires.saturating_duration_since(Instant::now()) > TOKEN_MARGIN
        {
            return Ok(token.clone());
        }
        #[derive(serde::Deserialize)]
        struct Issued {
            access_token: String,
            #[serde(default)]
            expires_in: u64,
        }
        let response = self
            .http
            .post(self.url("/api/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.upstream.client_id.as_str()),
                ("client_secret", self.upstream.client_secret.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("token: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("token: {}", answer_text(response).await));
        }
        let issued: Issued = response
            .json()
            .await
            .map_err(|e| format!("token: unreadable answer: {e}"))?;
        // At most a day, whatever the upstream says.
        let lifetime = Duration::from_secs(issued.expires_in.min(86_400));
        self.token = Some((issued.access_token.clone(), Instant::now() + lifetime));
        Ok(issued.access_token)
    }

    async fn forward(&mut self, record: &Queued) -> Attempt {
        let key = record.upstream_key();
        for renewed in [false, true] {
            let token = match self.token().await {
                Ok(token) => token,
                Err(why) => return Attempt::Failed(why),
            };
            let response = self
                .http
                .post(self.url("/api/evidence"))
                .bearer_auth(token)
                .header("Idempotency-Key", &key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(record.body.clone())
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(e) => return Attempt::Failed(error_chain(&e)),
            };
            match response.status().as_u16() {
                200 | 201 => return Attempt::Stored,
                401 if !renewed => self.token = None,
                400 | 409 | 413 | 422 => return Attempt::Refused(answer_text(response).await),
                _ => return Attempt::Failed(answer_text(response).await),
            }
        }
        Attempt::Failed("the upstream refused a fresh access token (401)".to_string())
    }
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

async fn answer_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(MAX_ERROR_TEXT).collect();
    format!("HTTP {status}: {}", body.trim())
}

fn backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build()
}

/// Forwards released records in order until `stop` completes; a failure
/// waits (with backoff) and the same record is tried again. The queue
/// failing (its disk, say) is logged and retried the same way: the relay
/// does not stop while the server runs.
pub async fn run(
    queue: Arc<RelayQueue>,
    upstream: Upstream,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RelayError> {
    let mut client = UpstreamClient::new(upstream)?;
    let mut stop = std::pin::pin!(stop);
    let mut relay = Forwarding {
        delays: backoff(),
        failing: false,
    };
    loop {
        let wait = match relay.pass(&queue, &mut client).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!("the relay queue failed; retrying: {e}");
                relay.failing = true;
                relay.delays.next().unwrap_or(Duration::from_secs(30))
            }
        };
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = queue.ready.notified(), if !relay.failing => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The forwarder's state between passes.
struct Forwarding {
    delays: backon::ExponentialBackoff,
    /// The last attempt failed (said once in the log until one succeeds).
    failing: bool,
}

impl Forwarding {
    /// Forwards one page of released records in order, stopping at the
    /// first failure; returns how long to wait before the next pass.
    async fn pass(
        &mut self,
        queue: &RelayQueue,
        client: &mut UpstreamClient,
    ) -> Result<Duration, RelayError> {
        let page = queue.next(PAGE)?;
        if page.is_empty() {
            return Ok(IDLE_POLL);
        }
        for record in &page {
            match client.forward(record).await {
                Attempt::Stored => {
                    queue.forwarded(record)?;
                    if self.failing {
                        tracing::info!("the upstream takes evidence again");
                        self.failing = false;
                    }
                    self.delays = backoff();
                }
                Attempt::Refused(why) => {
                    tracing::error!(runtime_id = %record.runtime_id, key = %record.idempotency_key, "the upstream refused a record; it is kept in the relay queue's rejected table: {why}");
                    queue.reject(record, &why)?;
                }
                Attempt::Failed(why) => {
                    if self.failing {
                        tracing::debug!("forwarding upstream failed again: {why}");
                    } else {
                        tracing::warn!(
                            "cannot forward evidence upstream, retrying with backoff: {why}"
                        );
                        self.failing = true;
                    }
                    return Ok(self.delays.next().unwrap_or(Duration::from_secs(30)));
                }
            }
        }
        Ok(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RecordRules;

    fn record(key: &str) -> NewEvidence {
        let rules = RecordRules {
            runtime_id: RUNTIME,
            max_record_bytes: 1 << 20,
            subjects_bound: true,
        };
        let body =
            serde_json::json!({ "uuid": "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90", "title": key });
        NewEvidence::from_body(key.to_string(), body, "body", rules).unwrap()
    }

    const RUNTIME: Uuid = Uuid::from_u128(0x0b9e_0000_4000_8000_0000_0000_0000_0001);

    fn keys(queue: &RelayQueue) -> Vec<String> {
        queue
            .next(PAGE)
            .unwrap()
            .into_iter()
            .map(|q| q.idempotency_key)
            .collect()
    }

    #[test]
    fn held_records_are_forwarded_only_once_released_in_order_and_queued_once() {
        let dir = tempfile::tempdir().unwrap();
        let queue = RelayQueue::open(&dir.path().join("relay.db")).unwrap();
        let first = queue.hold(RUNTIME, &[record("a"), record("b")]).unwrap();
        assert!(keys(&queue).is_empty(), "held records wait");
        queue.release(first).unwrap();
        // A record sent again while queued is not queued twice.
        let again = queue.hold(RUNTIME, &[record("b"), record("c")]).unwrap();
        assert_eq!(again.seqs.len(), 1);
        queue.release(again).unwrap();
        assert_eq!(keys(&queue), ["a", "b", "c"]);
        // A refused request's records go; others stay.
        let refused = queue.hold(RUNTIME, &[record("d")]).unwrap();
        queue.drop_held(refused).unwrap();
        assert_eq!(queue.depth().unwrap(), (3, 0));
        let page = queue.next(PAGE).unwrap();
        queue.forwarded(&page[0]).unwrap();
        queue.reject(&page[1], "HTTP 422").unwrap();
        assert_eq!(keys(&queue), ["c"]);
        assert_eq!(queue.depth().unwrap(), (1, 1));
        drop(queue);
        // The queue survives a restart.
        let queue = RelayQueue::open(&dir.path().join("relay.db")).unwrap();
        assert_eq!(keys(&queue), ["c"]);
    }

    #[tokio::test]
    async fn recovery_releases_what_the_store_has_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cp.db")).await.unwrap();
        let created = store
            .call(|db| {
                crate::runtime_credentials::create(db, "web-1", "default", chrono::Utc::now())
            })
            .await
            .unwrap();
        let runtime = Uuid::parse_str(&created.runtime_id).unwrap();
        let queue = RelayQueue::open(&dir.path().join("relay.db")).unwrap();
        // Crashed after the store took "stored", before it was released;
        // and before the store took "unstored".
        let stored = vec![record("stored")];
        let _held = queue.hold(runtime, &stored).unwrap();
        let _held = queue.hold(runtime, &[record("unstored")]).unwrap();
        store
            .call(move |db| db.store_evidence(runtime, &stored, u64::MAX, chrono::Utc::now()))
            .await
            .unwrap();
        assert_eq!(queue.recover(&store).await.unwrap(), (1, 1));
        assert_eq!(keys(&queue), ["stored"]);
        assert_eq!(queue.depth().unwrap(), (1, 0));
    }

    #[test]
    fn upstream_keys_are_per_runtime_and_record_and_stable() {
        let queued = |runtime: &str, key: &str| Queued {
            seq: 1,
            runtime_id: runtime.to_string(),
            idempotency_key: key.to_string(),
            body: String::new(),
        };
        assert_eq!(
            queued("r", "k").upstream_key(),
            queued("r", "k").upstream_key()
        );
        assert_ne!(
            queued("r", "k").upstream_key(),
            queued("r2", "k").upstream_key()
        );
        assert_ne!(
            queued("r", "k1").upstream_key(),
            queued("r", "k").upstream_key()
        );
        assert_eq!(queued("r", "k").upstream_key().len(), 64);
    }
}
