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

use crate::ca::IssuedCertificate;
use crate::canonical::{canonical_bytes, strong_etag};
use crate::error::StoreError;
use crate::model::{
    BatchOutcome, ConfigVersion, DEFAULT_PAGE_SIZE, Enrollment, EvidenceFilter, EvidencePage,
    IssuedToken, MAX_PAGE_BYTES, MAX_PAGE_SIZE, NewEnrollmentToken, NewEvidence, RuntimeIdentity,
    RuntimeSummary, StoredConfig, StoredEvidence, evidence_sha256, rfc3339, to_millis,
    validate_group, validate_runtime_name,
};
use crate::secrets::{constant_time_eq, hash_secret, random_token};

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest lifetime of an enrollment token.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Schema migrations; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // 2: credential rotation — a pending secret, promoted on first use.
    r#"
ALTER TABLE runtimes ADD COLUMN next_secret_hash TEXT;
"#,
    // 3: mutual TLS — the SHA-256 of each runtime's client certificate (and
    // of the pending one during rotation); access tokens are bound to the
    // certificate they were issued over.
    r#"
ALTER TABLE runtimes ADD COLUMN cert_sha256 TEXT;
ALTER TABLE runtimes ADD COLUMN next_cert_sha256 TEXT;
ALTER TABLE access_tokens ADD COLUMN cert_sha256 TEXT;
"#,
    // 4: configuration per runtime, in force instead of its group's.
    r#"
CREATE TABLE runtime_configs (
    runtime_id  TEXT PRIMARY KEY REFERENCES runtimes(id),
    version     INTEGER NOT NULL,
    document    TEXT NOT NULL,
    etag        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
"#,
    // 5: hostile input — the hash of each record (a reused idempotency key
    // must come with the same record), the bytes each runtime stores (its
    // quota), evidence uuids looked up across runtimes, and listing pages
    // per runtime.
    r#"
ALTER TABLE evidence ADD COLUMN body_sha256 TEXT;
ALTER TABLE runtimes ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE runtimes SET stored_bytes = (
    SELECT COALESCE(SUM(length(CAST(body AS BLOB))), 0) FROM evidence e WHERE e.runtime_id = runtimes.id
);
CREATE INDEX evidence_uuid ON evidence(uuid, seq);
CREATE INDEX evidence_runtime_seq ON evidence(runtime_id, seq);
"#,
];

/// A configuration document's canonical text and strong ETag; it must be a
/// JSON object.
fn canonical_document(document: &Value) -> Result<(String, String), StoreError> {
    if !document.is_object() {
        return Err(StoreError::Invalid(
            "the configuration document must be a JSON object".to_string(),
        ));
    }
    let bytes = canonical_bytes(document)?;
    let etag = strong_etag(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| {
        StoreError::Inconsistent(format!("the canonical document is not UTF-8: {e}"))
    })?;
    Ok((text, etag))
}

/// Creates `path` empty with mode 0600 if it does not exist, so that the
/// database (and the WAL and shared-memory files SQLite gives the same
/// mode) is never readable by other users, whatever the umask.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Io(format!(
            "cannot create {}: {error}",
            path.display()
        ))),
    }
}

/// What the token endpoint checks of a runtime.
struct RuntimeCredentials {
    secret_hash: String,
    next_secret_hash: Option<String>,
    cert_sha256: Option<String>,
    next_cert_sha256: Option<String>,
    revoked: bool,
}

/// One connection to the control plane's database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if needed, readable only by its owner) the database
    /// file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
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
    /// token's group and returns its credentials. Once the token is found
    /// good, `certify` is called with the new runtime's id; the certificate
    /// it returns (if any) is the only one the runtime may connect with.
    pub fn enroll(
        &mut self,
        token: &str,
        name: &str,
        now: DateTime<Utc>,
        certify: impl FnOnce(&str) -> Result<Option<IssuedCertificate>, StoreError>,
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
        let certificate = certify(&runtime_id)?;
        tx.execute(
            "INSERT INTO runtimes (id, name, group_name, secret_hash, enrolled_at, cert_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                runtime_id,
                name,
                group,
                hash_secret(&client_secret),
                now,
                certificate.as_ref().map(|c| &c.sha256)
            ],
        )?;
        tx.commit()?;
        Ok(Enrollment {
            runtime_id,
            client_secret,
            group,
            certificate: certificate.map(|c| c.pem),
            ca_certificate: None,
        })
    }

    /// The client-credentials grant: a new access token for the runtime
    /// `client_id` if `client_secret` is its secret, it is not revoked, and
    /// (over mutual TLS, when `certificate` is the SHA-256 of the
    /// connection's client certificate) the certificate is the runtime's.
    /// The token is bound to that certificate.
    pub fn issue_access_token(
        &mut self,
        client_id: &str,
        client_secret: &str,
        certificate: Option<&str>,
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
        let row: Option<RuntimeCredentials> = tx
            .query_row(
                "SELECT secret_hash, next_secret_hash, cert_sha256, next_cert_sha256, revoked_at
                 FROM runtimes WHERE id = ?1",
                params![id],
                |row| {
                    Ok(RuntimeCredentials {
                        secret_hash: row.get(0)?,
                        next_secret_hash: row.get(1)?,
                        cert_sha256: row.get(2)?,
                        next_cert_sha256: row.get(3)?,
                        revoked: row.get::<_, Option<i64>>(4)?.is_some(),
                    })
                },
            )
            .optional()?;
        let Some(stored) = row else {
            return Err(StoreError::InvalidClient);
        };
        let presented = hash_secret(client_secret);
        // Over mutual TLS the certificate must be the one issued with the
        // secret; over plain HTTP there is none to check.
        let certificate_matches = |bound: Option<&str>| match certificate {
            None => true,
            Some(presented) => bound == Some(presented),
        };
        let current = constant_time_eq(stored.secret_hash.as_bytes(), presented.as_bytes())
            && certificate_matches(stored.cert_sha256.as_deref());
        // The first use of a rotated secret (with its certificate, if the
        // rotation issued one) makes them the only valid ones.
        let rotated = stored
            .next_secret_hash
            .as_deref()
            .is_some_and(|next| constant_time_eq(next.as_bytes(), presented.as_bytes()))
            && certificate_matches(
                stored
                    .next_cert_sha256
                    .as_deref()
                    .or(stored.cert_sha256.as_deref()),
            );
        if !(current || rotated) || stored.revoked {
            return Err(StoreError::InvalidClient);
        }
        if rotated {
            tx.execute(
                "UPDATE runtimes SET secret_hash = next_secret_hash, next_secret_hash = NULL,
                     cert_sha256 = COALESCE(next_cert_sha256, cert_sha256), next_cert_sha256 = NULL
                 WHERE id = ?1",
                params![id],
            )?;
            // The old credentials' access tokens go with them.
            tx.execute(
                "DELETE FROM access_tokens WHERE runtime_id = ?1",
                params![id],
            )?;
        }
        tx.execute(
            "DELETE FROM access_tokens WHERE runtime_id = ?1 AND expires_at <= ?2",
            params![id, now],
        )?;
        let access_token = random_token()?;
        tx.execute(
            "INSERT INTO access_tokens (token_hash, runtime_id, expires_at, cert_sha256)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                hash_secret(&access_token),
                id,
                now.saturating_add(duration_millis(ttl)),
                certificate
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
    /// unexpired, its runtime not revoked, and (over mutual TLS, when
    /// `certificate` is the SHA-256 of the connection's client certificate)
    /// the token was issued over that certificate.
    pub fn authenticate(
        &self,
        access_token: &str,
        certificate: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<RuntimeIdentity>, StoreError> {
        let row: Option<(String, String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT r.id, r.group_name, t.cert_sha256 FROM access_tokens t
                 JOIN runtimes r ON r.id = t.runtime_id
                 WHERE t.token_hash = ?1 AND t.expires_at > ?2 AND r.revoked_at IS NULL",
                params![hash_secret(access_token), to_millis(now)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((id, group, bound)) = row else {
            return Ok(None);
        };
        if certificate.is_some() && bound.as_deref() != certificate {
            return Ok(None);
        }
        let id = Uuid::parse_str(&id).map_err(|e| {
            StoreError::Inconsistent(format!("stored runtime id {id:?} is not a UUID: {e}"))
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
            "SELECT id, name, group_name, enrolled_at, revoked_at, last_heartbeat_at, last_heartbeat,
                    cert_sha256, EXISTS (SELECT 1 FROM runtime_configs c WHERE c.runtime_id = r.id)
             FROM runtimes r ORDER BY enrolled_at, id",
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
                row.get::<_, Option<String>>(7)?,
                row.get::<_, bool>(8)?,
            ))
        })?;
        let mut runtimes = Vec::new();
        for row in rows {
            let (
                id,
                name,
                group,
                enrolled_at,
                revoked_at,
                heartbeat_at,
                heartbeat,
                certificate_sha256,
                own_config,
            ) = row?;
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
                certificate_sha256,
                own_config,
            });
        }
        Ok(runtimes)
    }

    /// Issues a new client secret for `runtime`, to go with the new client
    /// certificate `certificate` (SHA-256) if the rotation issued one. The
    /// current credentials stay valid until the new ones are first used at
    /// the token endpoint, so a runtime that crashes before saving them is
    /// not locked out.
    pub fn rotate_secret(
        &mut self,
        runtime: Uuid,
        certificate: Option<&str>,
    ) -> Result<String, StoreError> {
        let secret = random_token()?;
        let updated = self.conn.execute(
            "UPDATE runtimes SET next_secret_hash = ?1, next_cert_sha256 = ?3
             WHERE id = ?2 AND revoked_at IS NULL",
            params![hash_secret(&secret), runtime.to_string(), certificate],
        )?;
        if updated == 0 {
            return Err(StoreError::InvalidClient);
        }
        Ok(secret)
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
        let (text, etag) = canonical_document(document)?;
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
            runtime: None,
            version,
            etag,
        })
    }

    /// Assigns a configuration document (a JSON object) to the runtime
    /// `id` alone: it is served to that runtime instead of its group's
    /// until [`clear_runtime_config`](Self::clear_runtime_config).
    pub fn set_runtime_config(
        &mut self,
        id: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError> {
        let (text, etag) = canonical_document(document)?;
        let id = Uuid::parse_str(id)
            .map_err(|_| StoreError::RuntimeNotFound(id.to_string()))?
            .to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let group: Option<String> = tx
            .query_row(
                "SELECT group_name FROM runtimes WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(group) = group else {
            return Err(StoreError::RuntimeNotFound(id));
        };
        let version: i64 = tx.query_row(
            "INSERT INTO runtime_configs (runtime_id, version, document, etag, updated_at)
             VALUES (?1, 1, ?2, ?3, ?4)
             ON CONFLICT (runtime_id) DO UPDATE SET
                 version = version + 1, document = excluded.document,
                 etag = excluded.etag, updated_at = excluded.updated_at
             RETURNING version",
            params![id, text, etag, to_millis(now)],
            |row| row.get(0),
        )?;
        tx.commit()?;
        Ok(ConfigVersion {
            group,
            runtime: Some(id),
            version,
            etag,
        })
    }

    /// Removes the runtime's own document, so its group's applies again.
    /// Returns whether it had one.
    pub fn clear_runtime_config(&mut self, id: &str) -> Result<bool, StoreError> {
        let Ok(parsed) = Uuid::parse_str(id) else {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        };
        let parsed = parsed.to_string();
        let known: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM runtimes WHERE id = ?1)",
            params![parsed],
            |row| row.get(0),
        )?;
        if !known {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        }
        Ok(self.conn.execute(
            "DELETE FROM runtime_configs WHERE runtime_id = ?1",
            params![parsed],
        )? > 0)
    }

    /// The configuration in force for a runtime: its own document if it has
    /// one, otherwise its group's.
    pub fn config_for_runtime(
        &self,
        runtime: &RuntimeIdentity,
    ) -> Result<Option<StoredConfig>, StoreError> {
        let id = runtime.id.to_string();
        let own = self
            .conn
            .query_row(
                "SELECT version, etag, document FROM runtime_configs WHERE runtime_id = ?1",
                params![id],
                |row| {
                    Ok(StoredConfig {
                        version: ConfigVersion {
                            group: runtime.group.clone(),
                            runtime: Some(id.clone()),
                            version: row.get(0)?,
                            etag: row.get(1)?,
                        },
                        document: row.get(2)?,
                    })
                },
            )
            .optional()?;
        match own {
            Some(config) => Ok(Some(config)),
            None => self.config_for_group(&runtime.group),
        }
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
                            runtime: None,
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

    /// Stores a batch of evidence from one runtime in one transaction, or
    /// nothing if any record is refused. A record whose idempotency key that
    /// runtime already stored (earlier or in this batch) is a duplicate, not
    /// stored again, if it is the same record (by canonical hash); with
    /// another record it is a conflict. A record is also refused when its
    /// uuid was first stored by another runtime (conflict), when its
    /// `labels.host` is the enrolled name of another runtime and not this
    /// runtime's (identity), or when the runtime's stored records would
    /// exceed `quota` bytes.
    pub fn store_evidence(
        &mut self,
        runtime_id: Uuid,
        records: &[NewEvidence],
        quota: u64,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, StoreError> {
        let runtime_id = runtime_id.to_string();
        let now = to_millis(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let runtime: Option<(String, i64)> = tx
            .query_row(
                "SELECT name, stored_bytes FROM runtimes WHERE id = ?1",
                params![runtime_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((name, stored_bytes)) = runtime else {
            return Err(StoreError::RuntimeNotFound(runtime_id));
        };
        let mut outcome = BatchOutcome {
            accepted: 0,
            duplicates: 0,
        };
        let mut added: u64 = 0;
        {
            let mut host_of_another = tx.prepare(
                "SELECT EXISTS (SELECT 1 FROM runtimes
                                WHERE name = ?1 AND id != ?2 AND revoked_at IS NULL)",
            )?;
            // A uuid belongs to the runtime that stored it first.
            let mut uuid_owner =
                tx.prepare("SELECT runtime_id FROM evidence WHERE uuid = ?1 ORDER BY seq LIMIT 1")?;
            let mut insert = tx.prepare(
                "INSERT INTO evidence
                     (idempotency_key, runtime_id, uuid, plugin, check_id, status, body,
                      received_at, body_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (runtime_id, idempotency_key) DO NOTHING",
            )?;
            let mut stored = tx.prepare(
                "SELECT body_sha256, body FROM evidence
                 WHERE runtime_id = ?1 AND idempotency_key = ?2",
            )?;
            for record in records {
                let at = &record.at;
                if let Some(host) = record.host.as_deref().filter(|host| *host != name)
                    && host_of_another.query_row(params![host, runtime_id], |row| row.get(0))?
                {
                    return Err(StoreError::Identity(format!(
                        "{at}: evidence.labels.host {host:?} is the name of another runtime; this runtime enrolled as {name:?} and reports only its own machine"
                    )));
                }
                let owner: Option<String> = uuid_owner
                    .query_row(params![record.uuid], |row| row.get(0))
                    .optional()?;
                if owner.is_some_and(|owner| owner != runtime_id) {
                    return Err(StoreError::Conflict(format!(
                        "{at}: evidence.uuid {} belongs to records of another runtime; a runtime reports only its own evidence streams",
                        record.uuid
                    )));
                }
                let inserted = insert.execute(params![
                    record.idempotency_key,
                    runtime_id,
                    record.uuid,
                    record.plugin,
                    record.check,
                    record.status,
                    record.text,
                    now,
                    record.body_sha256,
                ])?;
                if inserted == 1 {
                    outcome.accepted += 1;
                    added = added.saturating_add(record.text.len() as u64);
                    continue;
                }
                let (hash, body): (Option<String>, String) = stored
                    .query_row(params![runtime_id, record.idempotency_key], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?;
                let hash = match hash {
                    Some(hash) => hash,
                    None => evidence_sha256(&serde_json::from_str(&body)?)?,
                };
                if hash != record.body_sha256 {
                    return Err(StoreError::Conflict(format!(
                        "{at}: idempotency_key {:?} was already used for a different record; a key stands for one record",
                        record.idempotency_key
                    )));
                }
                outcome.duplicates += 1;
            }
        }
        let stored_bytes = u64::try_from(stored_bytes).unwrap_or(0);
        if added > 0 && stored_bytes.saturating_add(added) > quota {
            return Err(StoreError::QuotaExceeded(format!(
                "this runtime's storage quota is full: it stores {stored_bytes} bytes of evidence, these records need {added} more, and the quota is {quota} bytes; ask the operator to raise --runtime-storage-quota"
            )));
        }
        tx.execute(
            "UPDATE runtimes SET stored_bytes = stored_bytes + ?2 WHERE id = ?1",
            params![runtime_id, i64::try_from(added).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    /// The bytes of evidence `runtime_id` stores (what its quota counts).
    pub fn stored_bytes(&self, runtime_id: Uuid) -> Result<u64, StoreError> {
        let bytes: Option<i64> = self
            .conn
            .query_row(
                "SELECT stored_bytes FROM runtimes WHERE id = ?1",
                params![runtime_id.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        bytes
            .map(|b| u64::try_from(b).unwrap_or(0))
            .ok_or_else(|| StoreError::RuntimeNotFound(runtime_id.to_string()))
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
        row.map(|(_, row)| into_stored_evidence(row)).transpose()
    }

    /// One page of the stored evidence matching `filter`, in the order it
    /// arrived: at most `filter.limit` records (default
    /// [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`]) after the cursor
    /// `filter.after`, ending early past [`MAX_PAGE_BYTES`] of records.
    pub fn list_evidence(&self, filter: &EvidenceFilter) -> Result<EvidencePage, StoreError> {
        let limit = match filter.limit {
            None => DEFAULT_PAGE_SIZE,
            Some(limit) if (1..=MAX_PAGE_SIZE).contains(&limit) => limit,
            Some(limit) => {
                return Err(StoreError::Invalid(format!(
                    "limit {limit} is out of range: ask for 1 to {MAX_PAGE_SIZE} records per page"
                )));
            }
        };
        let after: i64 = match filter.after.as_deref() {
            None => 0,
            Some(cursor) => cursor.parse().ok().filter(|c| *c >= 0).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "after {cursor:?} is not a cursor: pass the `next` of the previous page"
                ))
            })?,
        };
        let mut stmt = self.conn.prepare(&format!(
            "{EVIDENCE_SELECT}
             WHERE seq > ?4
               AND (?1 IS NULL OR runtime_id = ?1)
               AND (?2 IS NULL OR plugin = ?2)
               AND (?3 IS NULL OR check_id = ?3)
             ORDER BY seq
             LIMIT ?5"
        ))?;
        let runtime = filter
            .runtime
            .as_deref()
            .map(|id| Uuid::parse_str(id).map_or_else(|_| id.to_string(), |u| u.to_string()));
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let mut rows = stmt.query(params![runtime, filter.plugin, filter.check, after, fetch])?;
        let mut evidence = Vec::new();
        let mut bytes = 0usize;
        let mut last_seq = after;
        let mut more = false;
        while let Some(row) = rows.next()? {
            if evidence.len() == limit || bytes >= MAX_PAGE_BYTES {
                more = true;
                break;
            }
            let (seq, record) = evidence_row(row)?;
            bytes = bytes.saturating_add(record.7.len());
            last_seq = seq;
            evidence.push(into_stored_evidence(record)?);
        }
        Ok(EvidencePage {
            evidence,
            next: more.then(|| last_seq.to_string()),
        })
    }
}

const EVIDENCE_SELECT: &str = "SELECT idempotency_key, runtime_id, uuid, plugin, check_id, status, received_at, body, seq FROM evidence";

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

fn evidence_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, EvidenceRow)> {
    Ok((
        row.get(8)?,
        (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RecordRules;
    use chrono::TimeDelta;
    use serde_json::json;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);

    fn t0() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn later(seconds: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(seconds)
    }

    fn no_certificate(_: &str) -> Result<Option<IssuedCertificate>, StoreError> {
        Ok(None)
    }

    fn certificate(sha256: &str) -> IssuedCertificate {
        IssuedCertificate {
            pem: format!("PEM of {sha256}"),
            sha256: sha256.to_string(),
        }
    }

    fn enrolled(db: &mut Db, group: &str) -> Enrollment {
        let token = db.create_enrollment_token(group, HOUR, t0()).unwrap();
        db.enroll(&token.token, "web-1", t0(), no_certificate)
            .unwrap()
    }

    const QUOTA: u64 = 1 << 30;

    fn evidence_of(runtime: Uuid, key: &str, body: Value) -> NewEvidence {
        let rules = RecordRules {
            runtime_id: runtime,
            max_record_bytes: 1 << 20,
        };
        NewEvidence::from_body(key.to_string(), body, "test", rules).unwrap()
    }

    fn evidence(runtime: Uuid, key: &str, plugin: &str) -> NewEvidence {
        evidence_of(
            runtime,
            key,
            json!({
                "uuid": Uuid::new_v4().to_string(),
                "labels": {"plugin": plugin, "check": "c1", "host": "web-1"},
                "status": {"state": "satisfied"},
                "subjects": [{"type": "InventoryItem", "identifier": runtime.to_string()}]
            }),
        )
    }

    #[test]
    fn the_database_file_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let mut db = Db::open(&path).unwrap();
        enrolled(&mut db, "g");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&path.with_file_name("cp.db-wal")), 0o600);
    }

    #[test]
    fn a_reused_idempotency_key_with_another_record_is_a_conflict() {
        let mut db = Db::open_in_memory().unwrap();
        let a = Uuid::parse_str(&enrolled(&mut db, "g").runtime_id).unwrap();
        let first = evidence(a, "k1", "p");
        db.store_evidence(a, std::slice::from_ref(&first), QUOTA, t0())
            .unwrap();
        // The same record again, with its keys in another order: a duplicate.
        let mut reordered = serde_json::Map::new();
        for (key, value) in first.body.as_object().unwrap().iter().rev() {
            reordered.insert(key.clone(), value.clone());
        }
        let same = evidence_of(a, "k1", Value::Object(reordered));
        assert_eq!(
            db.store_evidence(a, &[same], QUOTA, later(1)).unwrap(),
            BatchOutcome {
                accepted: 0,
                duplicates: 1
            }
        );
        // Another record under the same key, alone or after a new record.
        let other = evidence(a, "k1", "p");
        for batch in [vec![other.clone()], vec![evidence(a, "k2", "p"), other]] {
            let error = db.store_evidence(a, &batch, QUOTA, later(2)).unwrap_err();
            assert!(matches!(error, StoreError::Conflict(_)), "{error}");
            assert!(error.to_string().contains("\"k1\""), "{error}");
        }
        let page = db.list_evidence(&EvidenceFilter::default()).unwrap();
        assert_eq!(page.evidence.len(), 1, "nothing of a refused batch");
        // A row from before hashes were stored is compared by its body.
        db.conn
            .execute("UPDATE evidence SET body_sha256 = NULL", [])
            .unwrap();
        let again = evidence_of(a, "k1", first.body.clone());
        assert_eq!(
            db.store_evidence(a, &[again], QUOTA, later(3))
                .unwrap()
                .duplicates,
            1
        );
        let changed = evidence(a, "k1", "p");
        assert!(matches!(
            db.store_evidence(a, &[changed], QUOTA, later(3)),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn a_runtime_cannot_claim_another_runtimes_streams_or_host() {
        let mut db = Db::open_in_memory().unwrap();
        let a = Uuid::parse_str(&enrolled(&mut db, "g").runtime_id).unwrap();
        let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
        let b = db
            .enroll(&token.token, "db-1", t0(), no_certificate)
            .unwrap();
        let b = Uuid::parse_str(&b.runtime_id).unwrap();
        let of_a = evidence(a, "k1", "p");
        db.store_evidence(a, std::slice::from_ref(&of_a), QUOTA, t0())
            .unwrap();
        // B re-sends A's stream uuid under its own subject: refused.
        let mut body = of_a.body.clone();
        body["subjects"][0]["identifier"] = json!(b.to_string());
        body["labels"]["host"] = json!("db-1");
        let error = db
            .store_evidence(b, &[evidence_of(b, "k1", body)], QUOTA, t0())
            .unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        assert!(error.to_string().contains("evidence.uuid"), "{error}");
        // A may send its own stream again, as every run does, even where
        // another runtime's copy was stored before this check existed.
        db.conn
            .execute(
                "INSERT INTO evidence (idempotency_key, runtime_id, uuid, body, received_at)
                 VALUES ('forged', ?1, ?2, '{}', 0)",
                params![b.to_string(), of_a.uuid],
            )
            .unwrap();
        let mut rerun = of_a.body.clone();
        rerun["description"] = json!("second run");
        db.store_evidence(a, &[evidence_of(a, "k2", rerun)], QUOTA, later(1))
            .unwrap();
        // B says it is host "web-1", the name A enrolled with: refused.
        let error = db
            .store_evidence(b, &[evidence(b, "k9", "p")], QUOTA, t0())
            .unwrap_err();
        assert!(matches!(error, StoreError::Identity(_)), "{error}");
        assert!(error.to_string().contains("labels.host"), "{error}");
        // Its own name, or a host name no other runtime has, is fine.
        let mut own = evidence(b, "k9", "p").body;
        own["labels"]["host"] = json!("db-1");
        let mut renamed = evidence(b, "k10", "p").body;
        renamed["labels"]["host"] = json!("db-1.example");
        db.store_evidence(
            b,
            &[evidence_of(b, "k9", own), evidence_of(b, "k10", renamed)],
            QUOTA,
            t0(),
        )
        .unwrap();
        // Once A is revoked, its name is free.
        db.revoke_runtime(&a.to_string(), t0()).unwrap();
        db.store_evidence(b, &[evidence(b, "k11", "p")], QUOTA, t0())
            .unwrap();
    }

    #[test]
    fn each_runtime_has_a_storage_quota() {
        let mut db = Db::open_in_memory().unwrap();
        let a = Uuid::parse_str(&enrolled(&mut db, "g").runtime_id).unwrap();
        let b = Uuid::parse_str(&enrolled(&mut db, "g").runtime_id).unwrap();
        let first = evidence(a, "k1", "p");
        let size = first.text.len() as u64;
        let quota = size * 2 + size / 2;
        db.store_evidence(a, &[first.clone(), evidence(a, "k2", "p")], quota, t0())
            .unwrap();
        assert_eq!(db.stored_bytes(a).unwrap(), first.text.len() as u64 * 2);
        let error = db
            .store_evidence(a, &[evidence(a, "k3", "p")], quota, t0())
            .unwrap_err();
        assert!(matches!(error, StoreError::QuotaExceeded(_)), "{error}");
        assert!(error.to_string().contains("quota"), "{error}");
        // Duplicates take no room; other runtimes have their own quota.
        db.store_evidence(a, &[first], quota, t0()).unwrap();
        db.store_evidence(b, &[evidence(b, "k3", "p")], quota, t0())
            .unwrap();
        assert_eq!(
            db.list_evidence(&EvidenceFilter::default())
                .unwrap()
                .evidence
                .len(),
            3
        );
    }

    #[test]
    fn the_evidence_listing_is_paged() {
        let mut db = Db::open_in_memory().unwrap();
        let a = Uuid::parse_str(&enrolled(&mut db, "g").runtime_id).unwrap();
        let records: Vec<_> = (0..7)
            .map(|i| evidence(a, &format!("k{i}"), if i % 2 == 0 { "even" } else { "odd" }))
            .collect();
        db.store_evidence(a, &records, QUOTA, t0()).unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = db
                .list_evidence(&EvidenceFilter {
                    plugin: Some("even".to_string()),
                    limit: Some(2),
                    after: after.clone(),
                    ..EvidenceFilter::default()
                })
                .unwrap();
            assert!(page.evidence.len() <= 2);
            seen.extend(page.evidence.into_iter().map(|e| e.idempotency_key));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["k0", "k2", "k4", "k6"]);
        let default = db.list_evidence(&EvidenceFilter::default()).unwrap();
        assert_eq!((default.evidence.len(), default.next), (7, None));
        for bad in [
            EvidenceFilter {
                limit: Some(0),
                ..EvidenceFilter::default()
            },
            EvidenceFilter {
                limit: Some(MAX_PAGE_SIZE + 1),
                ..EvidenceFilter::default()
            },
            EvidenceFilter {
                after: Some("x".to_string()),
                ..EvidenceFilter::default()
            },
        ] {
            assert!(matches!(
                db.list_evidence(&bad),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[test]
    fn schema_is_migrated_once_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
        drop(db);
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        db.enroll(&token.token, "n", t0(), no_certificate).unwrap();
        let mode: String = db
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_first_version_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let e = enrolled(&mut db, "default");
        db.rotate_secret(Uuid::parse_str(&e.runtime_id).unwrap(), Some("aaa"))
            .unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let db = Db::open(&path).unwrap();
        db.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        assert!(matches!(
            Db::open(&path).unwrap_err(),
            StoreError::SchemaTooNew {
                found: 99,
                supported
            } if supported == MIGRATIONS.len() as i64
        ));
    }

    #[test]
    fn secrets_are_stored_only_as_hashes() {
        let mut db = Db::open_in_memory().unwrap();
        let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
        let enrollment = db.enroll(&token.token, "n", t0(), no_certificate).unwrap();
        let access = db
            .issue_access_token(
                &enrollment.runtime_id,
                &enrollment.client_secret,
                None,
                MINUTE,
                t0(),
            )
            .unwrap();
        let dump: String = db
            .conn
            .query_row(
                "SELECT group_concat(v, '|') FROM (
                     SELECT token_hash AS v FROM enrollment_tokens
                     UNION ALL SELECT secret_hash FROM runtimes
                     UNION ALL SELECT token_hash FROM access_tokens)",
                [],
                |row| row.get(0),
            )
            .unwrap();
        for secret in [
            &token.token,
            &enrollment.client_secret,
            &access.access_token,
        ] {
            assert!(!dump.contains(secret.as_str()));
            assert!(dump.contains(&hash_secret(secret)));
        }
    }

    #[test]
    fn rotated_secrets_replace_the_old_one_on_first_use() {
        let mut db = Db::open_in_memory().unwrap();
        let e = enrolled(&mut db, "default");
        let id = e.runtime_id.clone();
        let runtime = Uuid::parse_str(&id).unwrap();
        let new = db.rotate_secret(runtime, None).unwrap();
        // Until the new secret is used, the old one still works.
        let old_token = db
            .issue_access_token(&id, &e.client_secret, None, HOUR, t0())
            .unwrap();
        let new_token = db.issue_access_token(&id, &new, None, HOUR, t0()).unwrap();
        // Its first use retires the old secret and its tokens.
        assert_eq!(
            db.authenticate(&old_token.access_token, None, t0())
                .unwrap(),
            None
        );
        assert!(
            db.authenticate(&new_token.access_token, None, t0())
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            db.issue_access_token(&id, &e.client_secret, None, HOUR, t0()),
            Err(StoreError::InvalidClient)
        ));
        db.issue_access_token(&id, &new, None, HOUR, t0()).unwrap();
        db.revoke_runtime(&id, t0()).unwrap();
        assert!(matches!(
            db.rotate_secret(runtime, None),
            Err(StoreError::InvalidClient)
        ));
    }

    #[test]
    fn tokens_are_bound_to_the_client_certificate() {
        let mut db = Db::open_in_memory().unwrap();
        let token = db.create_enrollment_token("default", HOUR, t0()).unwrap();
        let e = db
            .enroll(&token.token, "web-1", t0(), |_| {
                Ok(Some(certificate("aaa")))
            })
            .unwrap();
        assert_eq!(e.certificate.as_deref(), Some("PEM of aaa"));
        let listed = db.list_runtimes(t0(), MINUTE).unwrap();
        assert_eq!(listed[0].certificate_sha256.as_deref(), Some("aaa"));
        let (id, secret) = (e.runtime_id.clone(), e.client_secret.clone());
        // The secret alone is not enough: it must come with the certificate.
        for wrong in ["bbb", ""] {
            assert!(matches!(
                db.issue_access_token(&id, &secret, Some(wrong), HOUR, t0()),
                Err(StoreError::InvalidClient)
            ));
        }
        let issued = db
            .issue_access_token(&id, &secret, Some("aaa"), HOUR, t0())
            .unwrap();
        assert!(
            db.authenticate(&issued.access_token, Some("aaa"), t0())
                .unwrap()
                .is_some()
        );
        // A token used over another certificate is refused.
        assert_eq!(
            db.authenticate(&issued.access_token, Some("bbb"), t0())
                .unwrap(),
            None
        );

        // Rotation: the old pair works until the new pair is first used;
        // the new secret does not work with the old certificate.
        let runtime = Uuid::parse_str(&id).unwrap();
        let new = db.rotate_secret(runtime, Some("ccc")).unwrap();
        db.issue_access_token(&id, &secret, Some("aaa"), HOUR, t0())
            .unwrap();
        assert!(
            db.issue_access_token(&id, &new, Some("aaa"), HOUR, t0())
                .is_err()
        );
        db.issue_access_token(&id, &new, Some("ccc"), HOUR, t0())
            .unwrap();
        assert!(
            db.issue_access_token(&id, &secret, Some("aaa"), HOUR, t0())
                .is_err()
        );
        // Tokens of the old credentials stop working, over any certificate.
        for certificate in ["aaa", "ccc"] {
            assert_eq!(
                db.authenticate(&issued.access_token, Some(certificate), t0())
                    .unwrap(),
                None
            );
        }
    }

    #[test]
    fn a_runtime_config_replaces_its_groups_until_cleared() {
        let mut db = Db::open_in_memory().unwrap();
        let a = enrolled(&mut db, "prod");
        let b = enrolled(&mut db, "prod");
        let identity = |e: &Enrollment| RuntimeIdentity {
            id: Uuid::parse_str(&e.runtime_id).unwrap(),
            group: e.group.clone(),
        };
        assert_eq!(db.config_for_runtime(&identity(&a)).unwrap(), None);
        let group = db.set_config("prod", &json!({ "x": 1 }), t0()).unwrap();
        let own = db
            .set_runtime_config(&a.runtime_id, &json!({ "x": 2 }), t0())
            .unwrap();
        assert_eq!(own.runtime.as_deref(), Some(a.runtime_id.as_str()));
        assert_eq!(own.group, "prod");
        assert_ne!(own.etag, group.etag);
        let served = db.config_for_runtime(&identity(&a)).unwrap().unwrap();
        assert_eq!(
            (served.document.as_str(), served.version),
            (r#"{"x":2}"#, own)
        );
        let other = db.config_for_runtime(&identity(&b)).unwrap().unwrap();
        assert_eq!(other.version, group, "the other runtime keeps the group's");
        let listed = db.list_runtimes(t0(), MINUTE).unwrap();
        let own_config = |id: &str| listed.iter().find(|r| r.id == id).unwrap().own_config;
        assert!(own_config(&a.runtime_id) && !own_config(&b.runtime_id));
        let again = db
            .set_runtime_config(&a.runtime_id, &json!({ "x": 3 }), t0())
            .unwrap();
        assert_eq!(again.version, 2);

        assert!(db.clear_runtime_config(&a.runtime_id).unwrap());
        assert!(!db.clear_runtime_config(&a.runtime_id).unwrap());
        let served = db.config_for_runtime(&identity(&a)).unwrap().unwrap();
        assert_eq!(served.version, group);

        let unknown = Uuid::new_v4().to_string();
        for result in [
            db.set_runtime_config(&unknown, &json!({}), t0())
                .map(|_| ()),
            db.set_runtime_config("nope", &json!({}), t0()).map(|_| ()),
            db.clear_runtime_config(&unknown).map(|_| ()),
        ] {
            assert!(matches!(result, Err(StoreError::RuntimeNotFound(_))));
        }
        assert!(matches!(
            db.set_runtime_config(&a.runtime_id, &json!([1]), t0()),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn a_failed_certificate_spends_no_enrollment_token() {
        let mut db = Db::open_in_memory().unwrap();
        let token = db.create_enrollment_token("default", HOUR, t0()).unwrap();
        let refused = db.enroll(&token.token, "web-1", t0(), |_| {
            Err(StoreError::Invalid("bad CSR".to_string()))
        });
        assert!(matches!(refused, Err(StoreError::Invalid(_))));
        db.enroll(&token.token, "web-1", t0(), no_certificate)
            .unwrap();
    }

    #[test]
    fn enrollment_tokens_are_single_use_and_expire() {
        let mut db = Db::open_in_memory().unwrap();
        let token = db.create_enrollment_token("prod", HOUR, t0()).unwrap();
        assert_eq!(token.group, "prod");
        let enrollment = db
            .enroll(&token.token, "web-1", later(10), no_certificate)
            .unwrap();
        assert_eq!(enrollment.group, "prod");
        assert!(matches!(
            db.enroll(&token.token, "web-2", later(20), no_certificate),
            Err(StoreError::InvalidEnrollmentToken)
        ));
        let expiring = db.create_enrollment_token("prod", MINUTE, t0()).unwrap();
        assert!(matches!(
            db.enroll(&expiring.token, "web-3", later(60), no_certificate),
            Err(StoreError::InvalidEnrollmentToken)
        ));
        assert!(matches!(
            db.enroll("unknown", "web-4", t0(), no_certificate),
            Err(StoreError::InvalidEnrollmentToken)
        ));
        assert_eq!(db.list_runtimes(t0(), MINUTE).unwrap().len(), 1);
    }

    #[test]
    fn enrollment_input_is_validated() {
        let mut db = Db::open_in_memory().unwrap();
        assert!(matches!(
            db.create_enrollment_token("bad group", HOUR, t0()),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            db.create_enrollment_token("g", Duration::ZERO, t0()),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            db.create_enrollment_token("g", MAX_ENROLLMENT_TTL + MINUTE, t0()),
            Err(StoreError::Invalid(_))
        ));
        let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
        assert!(matches!(
            db.enroll(&token.token, "", t0(), no_certificate),
            Err(StoreError::Invalid(_))
        ));
        // A refused name does not spend the token.
        db.enroll(&token.token, "ok", t0(), no_certificate).unwrap();
    }

    #[test]
    fn access_tokens_authenticate_until_expiry_or_revocation() {
        let mut db = Db::open_in_memory().unwrap();
        let e = enrolled(&mut db, "g");
        assert!(matches!(
            db.issue_access_token(&e.runtime_id, "wrong", None, MINUTE, t0()),
            Err(StoreError::InvalidClient)
        ));
        assert!(matches!(
            db.issue_access_token("not-a-uuid", &e.client_secret, None, MINUTE, t0()),
            Err(StoreError::InvalidClient)
        ));
        assert!(matches!(
            db.issue_access_token(
                &Uuid::new_v4().to_string(),
                &e.client_secret,
                None,
                MINUTE,
                t0()
            ),
            Err(StoreError::InvalidClient)
        ));
        let token = db
            .issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, t0())
            .unwrap();
        assert_eq!(token.expires_in, 60);
        assert_eq!(token.token_type, "Bearer");
        let who = db
            .authenticate(&token.access_token, None, later(59))
            .unwrap()
            .unwrap();
        assert_eq!(who.id.to_string(), e.runtime_id);
        assert_eq!(who.group, "g");
        assert_eq!(
            db.authenticate(&token.access_token, None, later(60))
                .unwrap(),
            None
        );
        assert_eq!(db.authenticate("unknown", None, t0()).unwrap(), None);

        let token = db
            .issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, t0())
            .unwrap();
        db.revoke_runtime(&e.runtime_id, later(1)).unwrap();
        assert_eq!(
            db.authenticate(&token.access_token, None, later(2))
                .unwrap(),
            None
        );
        assert!(matches!(
            db.issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, later(3)),
            Err(StoreError::InvalidClient)
        ));
        let runtimes = db.list_runtimes(later(4), MINUTE).unwrap();
        assert!(runtimes[0].revoked);
        // Revoking again keeps the first time; unknown ids are reported.
        db.revoke_runtime(&e.runtime_id, later(100)).unwrap();
        assert_eq!(
            db.list_runtimes(later(4), MINUTE).unwrap()[0].revoked_at,
            runtimes[0].revoked_at
        );
        assert!(matches!(
            db.revoke_runtime(&Uuid::new_v4().to_string(), t0()),
            Err(StoreError::RuntimeNotFound(_))
        ));
    }

    #[test]
    fn expired_access_tokens_are_pruned_on_issue() {
        let mut db = Db::open_in_memory().unwrap();
        let e = enrolled(&mut db, "g");
        for _ in 0..3 {
            db.issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, t0())
                .unwrap();
        }
        db.issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, later(120))
            .unwrap();
        let count: i64 = db
            .conn
            .query_row("SELECT count(*) FROM access_tokens", [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn configs_are_versioned_with_content_etags() {
        let mut db = Db::open_in_memory().unwrap();
        assert_eq!(db.config_for_group("g").unwrap(), None);
        let v1 = db.set_config("g", &json!({"b": 1, "a": 2}), t0()).unwrap();
        assert_eq!(v1.version, 1);
        let stored = db.config_for_group("g").unwrap().unwrap();
        assert_eq!(stored.document, r#"{"a":2,"b":1}"#);
        assert_eq!(stored.version, v1);
        // Same content, new version, same ETag.
        let v2 = db.set_config("g", &json!({"a": 2, "b": 1}), t0()).unwrap();
        assert_eq!((v2.version, &v2.etag), (2, &v1.etag));
        let v3 = db.set_config("g", &json!({"a": 3}), t0()).unwrap();
        assert_eq!(v3.version, 3);
        assert_ne!(v3.etag, v1.etag);
        // Groups are independent.
        assert_eq!(db.set_config("h", &json!({}), t0()).unwrap().version, 1);
        assert!(matches!(
            db.set_config("g", &json!([1]), t0()),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(
            db.config_for_group("g").unwrap().unwrap().version.version,
            3
        );
    }

    #[test]
    fn heartbeats_and_staleness() {
        let mut db = Db::open_in_memory().unwrap();
        let e = enrolled(&mut db, "g");
        let id = Uuid::parse_str(&e.runtime_id).unwrap();
        let runtime = &db.list_runtimes(t0(), MINUTE).unwrap()[0];
        assert!(runtime.stale, "never sent a heartbeat");
        assert_eq!(runtime.heartbeat, None);
        let body = json!({"uuid": e.runtime_id, "created_at": "2027-01-15T08:00:00Z", "jobs": [1]});
        db.record_heartbeat(id, &body, later(10)).unwrap();
        let runtime = &db.list_runtimes(later(70), MINUTE).unwrap()[0];
        assert!(!runtime.stale);
        assert_eq!(runtime.heartbeat.as_ref(), Some(&body));
        assert_eq!(
            runtime.last_heartbeat_at.as_deref(),
            Some("2027-01-15T08:00:10.000Z")
        );
        assert!(db.list_runtimes(later(71), MINUTE).unwrap()[0].stale);
        assert!(matches!(
            db.record_heartbeat(Uuid::new_v4(), &body, t0()),
            Err(StoreError::RuntimeNotFound(_))
        ));
    }

    #[test]
    fn evidence_is_idempotent_per_runtime() {
        let mut db = Db::open_in_memory().unwrap();
        let a = Uuid::parse_str(&enrolled(&mut db, "g").runtime_id).unwrap();
        let b = Uuid::parse_str(&enrolled(&mut db, "g").runtime_id).unwrap();
        let batch = [evidence(a, "k1", "p"), evidence(a, "k2", "q")];
        let batch = [batch[0].clone(), batch[1].clone(), batch[0].clone()];
        let outcome = db.store_evidence(a, &batch, QUOTA, t0()).unwrap();
        assert_eq!(
            outcome,
            BatchOutcome {
                accepted: 2,
                duplicates: 1
            }
        );
        let outcome = db.store_evidence(a, &batch, QUOTA, later(1)).unwrap();
        assert_eq!(
            outcome,
            BatchOutcome {
                accepted: 0,
                duplicates: 3
            }
        );
        // Another runtime's keys are its own.
        let outcome = db
            .store_evidence(b, &[evidence(b, "k1", "p")], QUOTA, later(2))
            .unwrap();
        assert_eq!(
            outcome,
            BatchOutcome {
                accepted: 1,
                duplicates: 0
            }
        );

        let all = db
            .list_evidence(&EvidenceFilter::default())
            .unwrap()
            .evidence;
        let keys: Vec<_> = all
            .iter()
            .map(|e| (e.runtime_id.clone(), e.idempotency_key.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                (a.to_string(), "k1".to_string()),
                (a.to_string(), "k2".to_string()),
                (b.to_string(), "k1".to_string())
            ]
        );
        assert_eq!(all[0].evidence, batch[0].body, "the first copy is kept");
        assert_eq!(all[0].plugin.as_deref(), Some("p"));
        assert_eq!(all[0].check.as_deref(), Some("c1"));
        assert_eq!(all[0].status.as_deref(), Some("satisfied"));

        let count = |runtime: Option<Uuid>, plugin: Option<&str>, check: Option<&str>| {
            db.list_evidence(&EvidenceFilter {
                runtime: runtime.map(|r| r.to_string()),
                plugin: plugin.map(str::to_string),
                check: check.map(str::to_string),
                ..EvidenceFilter::default()
            })
            .unwrap()
            .evidence
            .len()
        };
        assert_eq!(count(Some(a), None, None), 2);
        assert_eq!(count(Some(b), None, None), 1);
        assert_eq!(count(None, Some("q"), None), 1);
        assert_eq!(count(None, Some("p"), Some("c1")), 2);
        assert_eq!(count(None, None, Some("c2")), 0);
        assert_eq!(
            db.evidence(a, "k2").unwrap().unwrap().plugin.as_deref(),
            Some("q")
        );
        assert_eq!(db.evidence(b, "k2").unwrap(), None);
    }

    #[tokio::test]
    async fn store_runs_calls_on_the_blocking_pool() {
        let store = Store::new(Db::open_in_memory().unwrap());
        let token = store
            .call(|db| db.create_enrollment_token("g", HOUR, Utc::now()))
            .await
            .unwrap();
        let enrollment = store
            .call(move |db| db.enroll(&token.token, "n", Utc::now(), no_certificate))
            .await
            .unwrap();
        assert_eq!(enrollment.group, "g");
    }
}
