//! The SQLite store: schema migrations and every read and write the HTTP API
//! and the admin commands share.
//!
//! [`Db`] is one synchronous connection (WAL mode, busy timeout) whose
//! methods take the current time as an argument, so tests can move the
//! clock. [`Store`] shares one `Db` between async tasks and runs each call on
//! tokio's blocking pool, never on the async runtime.
//!
//! Secrets (enrollment tokens, client secrets, access tokens) are stored only
//! as SHA-256 hashes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use uuid::Uuid;

use crate::canonical::{canonical_bytes, strong_etag};
use crate::error::StoreError;
use crate::model::{
    BatchOutcome, ConfigVersion, Enrollment, EvidenceFilter, IssuedToken, NewEnrollmentToken,
    NewEvidence, RuntimeIdentity, RuntimeSummary, StoredConfig, StoredEvidence, rfc3339, to_millis,
    validate_group, validate_runtime_name,
};
use crate::secrets::{constant_time_eq, hash_secret, random_token};

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest lifetime of an enrollment token.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Schema migrations; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE enrollment_tokens (
    token_hash  TEXT PRIMARY KEY,
    group_name  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT
);
CREATE TABLE runtimes (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    group_name         TEXT NOT NULL,
    secret_hash        TEXT NOT NULL,
    enrolled_at        INTEGER NOT NULL,
    revoked_at         INTEGER,
    last_heartbeat_at  INTEGER,
    last_heartbeat     TEXT
);
CREATE TABLE access_tokens (
    token_hash  TEXT PRIMARY KEY,
    runtime_id  TEXT NOT NULL REFERENCES runtimes(id),
    expires_at  INTEGER NOT NULL
);
CREATE INDEX access_tokens_runtime ON access_tokens(runtime_id);
CREATE TABLE configs (
    group_name  TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    document    TEXT NOT NULL,
    etag        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE evidence (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT NOT NULL,
    runtime_id       TEXT NOT NULL REFERENCES runtimes(id),
    uuid             TEXT NOT NULL,
    plugin           TEXT,
    check_id         TEXT,
    status           TEXT,
    body             TEXT NOT NULL,
    received_at      INTEGER NOT NULL,
    UNIQUE (runtime_id, idempotency_key)
);
CREATE INDEX evidence_received ON evidence(received_at, seq);
"#];

/// One connection to the control plane's database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if needed) the database file and brings its schema up
    /// to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A private in-memory database (for tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    /// Creates a single-use enrollment token for `group`, valid for `ttl`.
    pub fn create_enrollment_token(
        &mut self,
        group: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewEnrollmentToken, StoreError> {
        validate_group(group)?;
        if ttl < Duration::from_secs(1) || ttl > MAX_ENROLLMENT_TTL {
            return Err(StoreError::Invalid(format!(
                "invalid enrollment token lifetime {}: use 1 second to 30 days",
                humantime::format_duration(ttl)
            )));
        }
        let token = random_token()?;
        let created = to_millis(now);
        let expires = created.saturating_add(duration_millis(ttl));
        self.conn.execute(
            "INSERT INTO enrollment_tokens (token_hash, group_name, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![hash_secret(&token), group, created, expires],
        )?;
        Ok(NewEnrollmentToken {
            token,
            group: group.to_string(),
            expires_at: rfc3339(expires),
        })
    }

    /// Spends an enrollment token: creates a runtime named `name` in the
    /// token's group and returns its credentials.
    pub fn enroll(
        &mut self,
        token: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Enrollment, StoreError> {
        validate_runtime_name(name)?;
        let now = to_millis(now);
        let runtime_id = Uuid::new_v4().to_string();
        let client_secret = random_token()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let group: Option<String> = tx
            .query_row(
                "UPDATE enrollment_tokens SET used_at = ?2, used_by = ?3
                 WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2
                 RETURNING group_name",
                params![hash_secret(token), now, runtime_id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(group) = group else {
            return Err(StoreError::InvalidEnrollmentToken);
        };
        tx.execute(
            "INSERT INTO runtimes (id, name, group_name, secret_hash, enrolled_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![runtime_id, name, group, hash_secret(&client_secret), now],
        )?;
        tx.commit()?;
        Ok(Enrollment {
            runtime_id,
            client_secret,
            group,
        })
    }

    /// The client-credentials grant: a new access token for the runtime
    /// `client_id` if `client_secret` is its secret and it is not revoked.
    pub fn issue_access_token(
        &mut self,
        client_id: &str,
        client_secret: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, StoreError> {
        let Ok(id) = Uuid::parse_str(client_id) else {
            return Err(StoreError::InvalidClient);
        };
        let id = id.to_string();
        let now = to_millis(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT secret_hash, revoked_at FROM runtimes WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((secret_hash, revoked_at)) = row else {
            return Err(StoreError::InvalidClient);
        };
        let secret_matches = constant_time_eq(
            secret_hash.as_bytes(),
            hash_secret(client_secret).as_bytes(),
        );
        if !secret_matches || revoked_at.is_some() {
            return Err(StoreError::InvalidClient);
        }
        tx.execute(
            "DELETE FROM access_tokens WHERE runtime_id = ?1 AND expires_at <= ?2",
            params![id, now],
        )?;
        let access_token = random_token()?;
        tx.execute(
            "INSERT INTO access_tokens (token_hash, runtime_id, expires_at) VALUES (?1, ?2, ?3)",
            params![
                hash_secret(&access_token),
                id,
                now.saturating_add(duration_millis(ttl))
            ],
        )?;
        tx.commit()?;
        Ok(IssuedToken {
            access_token,
            token_type: "Bearer".to_string(),
            expires_in: ttl.as_secs(),
        })
    }

    /// The runtime an access token belongs to, if the token is known,
    /// unexpired and its runtime not revoked.
    pub fn authenticate(
        &self,
        access_token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RuntimeIdentity>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT r.id, r.group_name FROM access_tokens t
                 JOIN runtimes r ON r.id = t.runtime_id
                 WHERE t.token_hash = ?1 AND t.expires_at > ?2 AND r.revoked_at IS NULL",
                params![hash_secret(access_token), to_millis(now)],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((id, group)) = row else {
            return Ok(None);
        };
        let id = Uuid::parse_str(&id).map_err(|e| {
            StoreError::Invalid(format!("stored runtime id {id:?} is not a UUID: {e}"))
        })?;
        Ok(Some(RuntimeIdentity { id, group }))
    }

    /// Every runtime, oldest enrollment first; a runtime is stale when it
    /// never sent a heartbeat or its last one is older than `stale_after`.
    pub fn list_runtimes(
        &self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<Vec<RuntimeSummary>, StoreError> {
        let now = to_millis(now);
        let stale_after = duration_millis(stale_after);
        let mut stmt = self.conn.prepare(
            "SELECT id, name, group_name, enrolled_at, revoked_at, last_heartbeat_at, last_heartbeat
             FROM runtimes ORDER BY enrolled_at, id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, Option<i64>>(4)?,
                row.get::<_, Option<i64>>(5)?,
                row.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut runtimes = Vec::new();
        for row in rows {
            let (id, name, group, enrolled_at, revoked_at, heartbeat_at, heartbeat) = row?;
            runtimes.push(RuntimeSummary {
                id,
                name,
                group,
                enrolled_at: rfc3339(enrolled_at),
                revoked: revoked_at.is_some(),
                revoked_at: revoked_at.map(rfc3339),
                last_heartbeat_at: heartbeat_at.map(rfc3339),
                stale: heartbeat_at.is_none_or(|at| now.saturating_sub(at) > stale_after),
                heartbeat: heartbeat
                    .map(|text| serde_json::from_str::<Value>(&text))
                    .transpose()?,
            });
        }
        Ok(runtimes)
    }

    /// Revokes a runtime: its access tokens are deleted and it can get no
    /// new ones. Revoking twice keeps the first revocation time.
    pub fn revoke_runtime(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let Ok(parsed) = Uuid::parse_str(id) else {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        };
        let parsed = parsed.to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE runtimes SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![parsed, to_millis(now)],
        )?;
        if changed == 0 {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        }
        tx.execute(
            "DELETE FROM access_tokens WHERE runtime_id = ?1",
            params![parsed],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Assigns a configuration document (a JSON object) to `group`; the
    /// version goes up by one with every assignment.
    pub fn set_config(
        &mut self,
        group: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError> {
        validate_group(group)?;
        if !document.is_object() {
            return Err(StoreError::Invalid(
                "the configuration document must be a JSON object".to_string(),
            ));
        }
        let bytes = canonical_bytes(document)?;
        let etag = strong_etag(&bytes);
        let text = String::from_utf8(bytes).map_err(|e| {
            StoreError::Invalid(format!("the canonical document is not UTF-8: {e}"))
        })?;
        let version: i64 = self.conn.query_row(
            "INSERT INTO configs (group_name, version, document, etag, updated_at)
             VALUES (?1, 1, ?2, ?3, ?4)
             ON CONFLICT (group_name) DO UPDATE SET
                 version = version + 1, document = excluded.document,
                 etag = excluded.etag, updated_at = excluded.updated_at
             RETURNING version",
            params![group, text, etag, to_millis(now)],
            |row| row.get(0),
        )?;
        Ok(ConfigVersion {
            group: group.to_string(),
            version,
            etag,
        })
    }

    /// The configuration document assigned to `group`, if any.
    pub fn config_for_group(&self, group: &str) -> Result<Option<StoredConfig>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, etag, document FROM configs WHERE group_name = ?1",
                params![group],
                |row| {
                    Ok(StoredConfig {
                        version: ConfigVersion {
                            group: group.to_string(),
                            version: row.get(0)?,
                            etag: row.get(1)?,
                        },
                        document: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records a runtime's heartbeat body as its last heartbeat.
    pub fn record_heartbeat(
        &mut self,
        runtime_id: Uuid,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE runtimes SET last_heartbeat_at = ?2, last_heartbeat = ?3 WHERE id = ?1",
            params![
                runtime_id.to_string(),
                to_millis(now),
                serde_json::to_string(body)?
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::RuntimeNotFound(runtime_id.to_string()));
        }
        Ok(())
    }

    /// Stores a batch of evidence from one runtime in one transaction; a
    /// record whose idempotency key that runtime already stored (earlier or
    /// in this batch) is counted as a duplicate and not stored again.
    pub fn store_evidence(
        &mut self,
        runtime_id: Uuid,
        records: &[NewEvidence],
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, StoreError> {
        let runtime_id = runtime_id.to_string();
        let now = to_millis(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcome = BatchOutcome {
            accepted: 0,
            duplicates: 0,
        };
        {
            let mut insert = tx.prepare(
                "INSERT INTO evidence
                     (idempotency_key, runtime_id, uuid, plugin, check_id, status, body, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (runtime_id, idempotency_key) DO NOTHING",
            )?;
            for record in records {
                let inserted = insert.execute(params![
                    record.idempotency_key,
                    runtime_id,
                    record.uuid,
                    record.plugin,
                    record.check,
                    record.status,
                    serde_json::to_string(&record.body)?,
                    now,
                ])?;
                if inserted == 1 {
                    outcome.accepted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// One stored evidence record, by runtime and idempotency key.
    pub fn evidence(
        &self,
        runtime_id: Uuid,
        idempotency_key: &str,
    ) -> Result<Option<StoredEvidence>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("{EVIDENCE_SELECT} WHERE runtime_id = ?1 AND idempotency_key = ?2"),
                params![runtime_id.to_string(), idempotency_key],
                evidence_row,
            )
            .optional()?;
        row.map(into_stored_evidence).transpose()
    }

    /// Stored evidence matching `filter`, in the order it arrived.
    pub fn list_evidence(
        &self,
        filter: &EvidenceFilter,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "{EVIDENCE_SELECT}
             WHERE (?1 IS NULL OR runtime_id = ?1)
               AND (?2 IS NULL OR plugin = ?2)
               AND (?3 IS NULL OR check_id = ?3)
             ORDER BY received_at, seq"
        ))?;
        let runtime = filter
            .runtime
            .as_deref()
            .map(|id| Uuid::parse_str(id).map_or_else(|_| id.to_string(), |u| u.to_string()));
        let rows = stmt.query_map(params![runtime, filter.plugin, filter.check], evidence_row)?;
        rows.map(|row| into_stored_evidence(row?)).collect()
    }
}

const EVIDENCE_SELECT: &str = "SELECT idempotency_key, runtime_id, uuid, plugin, check_id, status, received_at, body FROM evidence";

type EvidenceRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    String,
);

fn evidence_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EvidenceRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn into_stored_evidence(row: EvidenceRow) -> Result<StoredEvidence, StoreError> {
    let (idempotency_key, runtime_id, uuid, plugin, check, status, received_at, body) = row;
    Ok(StoredEvidence {
        idempotency_key,
        runtime_id,
        uuid,
        plugin,
        check,
        status,
        received_at: rfc3339(received_at),
        evidence: serde_json::from_str(&body)?,
    })
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// One [`Db`] shared by async tasks; every call runs on the blocking pool.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Mutex<Db>>,
}

impl Store {
    /// Shares `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db: Arc::new(Mutex::new(db)),
        }
    }

    /// Opens the database file on the blocking pool.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = tokio::task::spawn_blocking(move || Db::open(&path))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self::new(db))
    }

    /// Runs `f` with the connection on tokio's blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let mut db = db.lock().map_err(|_| StoreError::Poisoned)?;
            f(&mut db)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}
