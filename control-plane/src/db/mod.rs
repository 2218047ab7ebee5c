//! The store: every read and write the HTTP API and the admin commands
//! share, behind one trait ([`Backend`], `backend.rs`) with two
//! implementations: SQLite, the embedded default, and PostgreSQL
//! (`postgres/`), which several replicas can share. `location.rs` reads the
//! `--database` argument that chooses between them.
//!
//! [`Store`] shares the backend between async tasks and runs each call on
//! tokio's blocking pool, never on the async runtime: with the one SQLite
//! connection locked, or with a PostgreSQL connection checked out of the
//! pool.
//!
//! [`Db`] is one synchronous SQLite connection (WAL mode, busy timeout).
//! This file holds it, its schema and its migrations (rusqlite_migration's,
//! counted by `PRAGMA user_version`); the reads and writes are `impl Db`
//! blocks, one file per aggregate:
//! `enrollment.rs` (enrollment tokens), `credentials.rs` (client secrets,
//! certificates, access tokens), `runtimes.rs` (the runtime list,
//! revocation), `configuration.rs`, `heartbeats.rs`, `evidence.rs`, `results.rs` (the
//! latest record per stream, results views, a stream's history) and
//! `retention.rs` (deleting old records by age).
//!
//! Secrets (enrollment tokens, client secrets, access tokens) are stored only
//! as SHA-256 hashes.

mod backend;
mod configuration;
mod credentials;
mod enrollment;
mod evidence;
mod fleet;
mod heartbeats;
mod location;
pub mod postgres;
mod results;
mod retention;
mod runtimes;
#[cfg(test)]
mod test_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use rusqlite_migration::{HookError, M, Migrations};

pub use backend::{Backend, Certify};
pub use location::Database;
pub use postgres::PgDb;

use crate::error::StoreError;
use crate::model::StoreStats;

pub use enrollment::MAX_ENROLLMENT_TTL;
pub use fleet::{
    ConfigInForce, EnrollmentTokenSummary, FleetDetails, MAX_LISTED_ENROLLMENT_TOKENS,
};
pub use results::{
    CheckSummary, DEFAULT_RESULTS_PAGE, LatestResult, MAX_RESULTS_PAGE, ResultFilter, ResultsPage,
    StreamPage,
};
pub use retention::{RETENTION_BATCH, RetentionOutcome, RetentionPolicy, RetentionTarget};

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, oldest first, applied by rusqlite_migration, which
/// counts those applied in `PRAGMA user_version` as this program's own
/// migrations did before it: a database of any earlier version goes on
/// from where it is. Never change or reorder one; add new ones at the end.
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
    // 6: results — the latest record of each stream (maintained as records
    // are stored; see results.rs for why a table), the references it
    // carries for the reference filter, the retention scan per runtime by
    // age, and the expiry of issued client certificates (the fleet view).
    // Filled from the records already stored.
    r#"
CREATE TABLE evidence_latest (
    runtime_id       TEXT NOT NULL REFERENCES runtimes(id),
    uuid             TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    idempotency_key  TEXT NOT NULL,
    plugin           TEXT,
    check_id         TEXT,
    status           TEXT,
    severity         TEXT,
    subject          TEXT,
    title            TEXT,
    failing          INTEGER NOT NULL,
    received_at      INTEGER NOT NULL,
    PRIMARY KEY (runtime_id, uuid)
);
CREATE INDEX evidence_latest_order ON evidence_latest(failing, runtime_id, uuid);
CREATE INDEX evidence_latest_uuid ON evidence_latest(uuid);
CREATE TABLE evidence_latest_refs (
    runtime_id  TEXT NOT NULL,
    uuid        TEXT NOT NULL,
    reference   TEXT NOT NULL,
    PRIMARY KEY (runtime_id, uuid, reference)
);
CREATE INDEX evidence_latest_refs_reference ON evidence_latest_refs(reference);
CREATE INDEX evidence_runtime_received ON evidence(runtime_id, received_at);
CREATE TABLE issued_certificates (
    sha256     TEXT PRIMARY KEY,
    not_after  INTEGER NOT NULL
);
INSERT INTO evidence_latest
    (runtime_id, uuid, seq, idempotency_key, plugin, check_id, status, severity, subject,
     title, failing, received_at)
SELECT e.runtime_id, e.uuid, e.seq, e.idempotency_key, e.plugin, e.check_id, e.status,
       json_extract(e.body, '$.labels.severity'), json_extract(e.body, '$.labels.subject'),
       json_extract(e.body, '$.title'),
       CASE WHEN e.status = 'not-satisfied' THEN 1 ELSE 0 END, e.received_at
FROM evidence e
WHERE e.seq = (SELECT MAX(o.seq) FROM evidence o
               WHERE o.runtime_id = e.runtime_id AND o.uuid = e.uuid);
INSERT OR IGNORE INTO evidence_latest_refs (runtime_id, uuid, reference)
SELECT l.runtime_id, l.uuid, json_extract(p.value, '$.value')
FROM evidence_latest l JOIN evidence e ON e.seq = l.seq, json_each(e.body, '$.props') p
WHERE json_extract(p.value, '$.name') = 'reference'
  AND json_type(p.value, '$.value') = 'text';
"#,
];

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
        user_version(&self.conn)
    }

    /// Whether the database can serve: it answers a query on a table the
    /// API reads, and its schema is still the one this program knows (a
    /// newer control plane may have migrated it since it was opened).
    pub fn check_ready(&self) -> Result<(), StoreError> {
        let supported = supported_version();
        let found = self.schema_version()?;
        if found > supported {
            return Err(StoreError::SchemaTooNew { found, supported });
        }
        if found < supported {
            return Err(StoreError::Inconsistent(format!(
                "the schema version is {found}, not {supported}"
            )));
        }
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM runtimes)", [], |_| Ok(()))?;
        Ok(())
    }

    /// What the metrics read from the store at a scrape: runtime counts and
    /// the database's size (its page count times the page size, both kept in
    /// the file's header, so cheap).
    pub fn stats(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        stale_after: Duration,
    ) -> Result<StoreStats, StoreError> {
        let (runtimes, stale_runtimes, revoked_runtimes) = self.runtime_counts(now, stale_after)?;
        let database_bytes: i64 = self.conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |row| row.get(0),
        )?;
        Ok(StoreStats {
            runtimes,
            stale_runtimes,
            revoked_runtimes,
            database_bytes: u64::try_from(database_bytes).unwrap_or(0),
        })
    }
}

#[cfg(test)]
impl Db {
    fn execute_sql(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn query_texts(&mut self, sql: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        let mut texts = Vec::new();
        while let Some(row) = rows.next()? {
            texts.push(match row.get_ref(0)? {
                rusqlite::types::ValueRef::Null => String::new(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(x) => x.to_string(),
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                    String::from_utf8_lossy(t).into_owned()
                }
            });
        }
        Ok(texts)
    }
}

/// `duration` in the stored unit, milliseconds; saturating, so a huge TTL
/// means "never" rather than an overflow.
fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The schema version this program knows.
fn supported_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// How many times a migration is tried again after another connection
/// migrated the same file first.
const MIGRATION_ATTEMPTS: u32 = 3;

/// The migrations of `sqls`, each checking in its transaction that no
/// other connection applied it meanwhile.
fn migrations(sqls: &'static [&'static str]) -> Migrations<'static> {
    Migrations::new(
        sqls.iter()
            .enumerate()
            .map(|(index, sql)| {
                M::up_with_hook(sql, move |tx: &Transaction| not_applied_yet(tx, index))
            })
            .collect(),
    )
}

/// rusqlite_migration reads the version before its transaction begins: a
/// second process migrating the same file may commit in between. In the
/// transaction (which holds the write lock: see [`migrate`]), the version
/// is the committed one; past `index`, this migration was applied by the
/// other process, so the transaction is rolled back, before anything is
/// applied twice.
fn not_applied_yet(tx: &Transaction, index: usize) -> Result<(), HookError> {
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if usize::try_from(version).map_or(true, |version| version > index) {
        return Err(HookError::Hook(format!(
            "migration {} was applied meanwhile by another connection",
            index + 1
        )));
    }
    Ok(())
}

/// Brings the schema up to date, refusing a database of a newer version.
/// All pending migrations run in one transaction: a failure leaves the
/// database as it was.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_with(conn, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, sqls: &'static [&'static str]) -> Result<(), StoreError> {
    // rusqlite_migration's transaction begins as the connection's do:
    // IMMEDIATE takes the write lock at BEGIN, so a second writer waits
    // (busy timeout) rather than failing midway.
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    let result = migrate_to_latest(conn, sqls);
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
    result
}

fn migrate_to_latest(
    conn: &mut Connection,
    sqls: &'static [&'static str],
) -> Result<(), StoreError> {
    let migrations = migrations(sqls);
    let supported = i64::try_from(sqls.len()).unwrap_or(i64::MAX);
    let mut attempt = 1;
    loop {
        let found = user_version(conn)?;
        if found > supported {
            return Err(StoreError::SchemaTooNew { found, supported });
        }
        match migrations.to_latest(conn) {
            Ok(()) => return Ok(()),
            // Another connection migrated since `found` was read (our
            // transaction was rolled back): go on from where it left.
            Err(_) if attempt < MIGRATION_ATTEMPTS && user_version(conn)? != found => {
                attempt += 1;
            }
            Err(error) => return Err(migration_error(error)),
        }
    }
}

/// The failure without the migration's SQL (which rusqlite_migration's
/// message quotes whole).
fn migration_error(error: rusqlite_migration::Error) -> StoreError {
    StoreError::Migration(match error {
        rusqlite_migration::Error::RusqliteError { err, .. } => err.to_string(),
        rusqlite_migration::Error::Hook(message) => message,
        other => other.to_string(),
    })
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// The store shared by async tasks; every call runs on the blocking pool.
#[derive(Clone)]
pub struct Store {
    shared: Shared,
}

#[derive(Clone)]
enum Shared {
    /// The one SQLite connection, taken in turn.
    Sqlite(Arc<Mutex<Db>>),
    /// PostgreSQL connections, one checked out per call.
    Postgres(Arc<PoolOffRuntime>),
}

/// The pool, dropped on a thread of its own: closing a synchronous
/// connection blocks, which the async runtime's threads must not do (the
/// last handle may go with a task on one of them).
struct PoolOffRuntime(Option<postgres::PgPool>);

impl Drop for PoolOffRuntime {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.shared {
            Shared::Sqlite(_) => "Store(SQLite)",
            Shared::Postgres(_) => "Store(PostgreSQL)",
        })
    }
}

impl Store {
    /// Shares one SQLite connection.
    pub fn new(db: Db) -> Self {
        Self {
            shared: Shared::Sqlite(Arc::new(Mutex::new(db))),
        }
    }

    /// Shares a pool of PostgreSQL connections (see [`postgres::open_pool`]).
    pub fn postgres(pool: postgres::PgPool) -> Self {
        Self {
            shared: Shared::Postgres(Arc::new(PoolOffRuntime(Some(pool)))),
        }
    }

    /// Opens the SQLite database file on the blocking pool.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_database(&Database::Sqlite(path.as_ref().to_path_buf()), 1).await
    }

    /// Opens the database on the blocking pool, its schema brought up to
    /// date; a PostgreSQL pool keeps at most `pool_size` connections.
    pub async fn open_database(database: &Database, pool_size: u32) -> Result<Self, StoreError> {
        let database = database.clone();
        tokio::task::spawn_blocking(move || match database {
            Database::Sqlite(path) => Db::open(&path).map(Self::new),
            Database::Postgres(settings) => {
                postgres::open_pool(&settings, pool_size).map(Self::postgres)
            }
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` with the backend on tokio's blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || match shared {
            Shared::Sqlite(db) => {
                let mut db = db.lock().map_err(|_| StoreError::Poisoned)?;
                f(&mut *db)
            }
            Shared::Postgres(pool) => {
                let pool = pool
                    .0
                    .as_ref()
                    .ok_or_else(|| StoreError::Pool("the connection pool is closed".to_string()))?;
                let mut client = pool.get().map_err(|e| StoreError::Pool(e.to_string()))?;
                f(&mut postgres::PgDb::new(&mut client))
            }
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::db::postgres::PgDb;
    use chrono::Utc;
    use uuid::Uuid;

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

    /// Migrates as this program did before rusqlite_migration, up to
    /// `version`: the same SQL, counted in `user_version`, in one
    /// transaction.
    fn migrate_as_before(conn: &mut Connection, version: usize) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        for (index, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .take(version)
            .skip(usize::try_from(found).unwrap())
        {
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", index + 1).unwrap();
        }
        tx.commit().unwrap();
    }

    /// A file left at version 3 by the earlier code, with rows of its
    /// schema: a token, a runtime, a group's configuration and evidence
    /// (two records of one stream, one of another).
    fn version_3_database(path: &Path) {
        let mut conn = wal_database(path);
        migrate_as_before(&mut conn, 3);
        conn.execute_batch(
            r#"
INSERT INTO enrollment_tokens VALUES ('tokenhash', 'prod', 1, 9999999999999, NULL, NULL);
INSERT INTO runtimes (id, name, group_name, secret_hash, enrolled_at, next_secret_hash, cert_sha256)
    VALUES ('00000000-0000-4000-8000-000000000001', 'web-1', 'prod', 'secrethash', 1, NULL, 'certhash');
INSERT INTO configs VALUES ('prod', 2, '{"runtime": {}, "plugin": []}', 'etag-2', 1);
INSERT INTO evidence (idempotency_key, runtime_id, uuid, plugin, check_id, status, body, received_at)
VALUES
    ('k1', '00000000-0000-4000-8000-000000000001', 'stream-a', 'p', 'c', 'satisfied',
     '{"title": "old a"}', 10),
    ('k2', '00000000-0000-4000-8000-000000000001', 'stream-a', 'p', 'c', 'not-satisfied',
     '{"title": "new a", "labels": {"severity": "high"}, "props": [{"name": "reference", "value": "CIS 1"}]}', 20),
    ('k3', '00000000-0000-4000-8000-000000000001', 'stream-b', 'p', 'd', 'satisfied',
     '{"title": "b"}', 30);
"#,
        )
        .unwrap();
        assert_eq!(
            conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
                .unwrap(),
            3
        );
    }

    /// A file in WAL mode, as every opener leaves it (the mode is kept in
    /// the file).
    fn wal_database(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .unwrap();
        conn
    }

    #[test]
    fn a_database_left_midway_by_the_earlier_migrations_is_migrated_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        version_3_database(&path);
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        db.check_ready().unwrap();
        let rows = |db: &mut Db, sql: &str| db.query_texts(sql).unwrap();
        assert_eq!(
            rows(
                &mut db,
                "SELECT group_name || ' ' || expires_at FROM enrollment_tokens"
            ),
            ["prod 9999999999999"]
        );
        assert_eq!(
            rows(&mut db, "SELECT name || ' ' || cert_sha256 FROM runtimes"),
            ["web-1 certhash"]
        );
        assert_eq!(
            rows(
                &mut db,
                "SELECT etag FROM configs WHERE group_name = 'prod'"
            ),
            ["etag-2"]
        );
        assert_eq!(
            rows(&mut db, "SELECT idempotency_key FROM evidence ORDER BY seq"),
            ["k1", "k2", "k3"]
        );
        // Migration 5 counted the bytes stored, 6 found each stream's latest.
        assert_eq!(
            rows(
                &mut db,
                "SELECT stored_bytes = (SELECT SUM(length(body)) FROM evidence) FROM runtimes"
            ),
            ["1"]
        );
        assert_eq!(
            rows(
                &mut db,
                "SELECT uuid || ' ' || idempotency_key || ' ' || COALESCE(severity, '-') FROM evidence_latest ORDER BY uuid"
            ),
            ["stream-a k2 high", "stream-b k3 -"]
        );
        let latest = db
            .latest_results(&ResultFilter {
                reference: Some("CIS 1".to_string()),
                ..ResultFilter::default()
            })
            .unwrap();
        assert_eq!(latest.results.len(), 1);
        assert_eq!(latest.results[0].title.as_deref(), Some("new a"));
        // And the runtime goes on working: its secret rotated (migration 2).
        db.rotate_secret(
            Uuid::parse_str("00000000-0000-4000-8000-000000000001").unwrap(),
            Some("aaa"),
        )
        .unwrap();
    }

    #[test]
    fn processes_opening_one_file_at_once_migrate_it_once() {
        for version in [0, 3] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cp.db");
            // Switching a new file to WAL mode at once can fail busy (a
            // race of its own, not the migrations'): the file is in WAL
            // mode already, as every opener leaves it.
            if version == 3 {
                version_3_database(&path);
            } else {
                wal_database(&path);
            }
            let start = Arc::new(std::sync::Barrier::new(4));
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Db::open(&path).map(|db| db.schema_version())
                    })
                })
                .collect();
            for opener in openers {
                assert_eq!(
                    opener.join().unwrap().unwrap().unwrap(),
                    MIGRATIONS.len() as i64,
                    "from version {version}"
                );
            }
            let mut db = Db::open(&path).unwrap();
            db.check_ready().unwrap();
            if version == 3 {
                let latest = db
                    .query_texts("SELECT uuid FROM evidence_latest ORDER BY uuid")
                    .unwrap();
                assert_eq!(latest, ["stream-a", "stream-b"]);
            }
        }
    }

    #[test]
    fn a_migration_another_connection_applied_meanwhile_is_not_applied_again() {
        // The second migration would do harm twice (no error shows it).
        const SQLS: &[&str] = &["CREATE TABLE t (x INTEGER)", "INSERT INTO t VALUES (1)"];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let mut first = wal_database(&path);
        migrate_with(&mut first, &SQLS[..1]).unwrap();
        // Another connection applies the second one, not yet committed.
        let tx = first
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        tx.execute_batch(SQLS[1]).unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        // This one reads version 1, then waits for the write lock.
        let racer = std::thread::spawn({
            let path = path.clone();
            move || {
                let mut conn = Connection::open(&path).unwrap();
                conn.busy_timeout(BUSY_TIMEOUT).unwrap();
                migrate_with(&mut conn, SQLS)
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        tx.commit().unwrap();
        racer.join().unwrap().unwrap();
        let rows: i64 = first
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(user_version(&first).unwrap(), 2);
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
    fn readiness_needs_the_known_schema() {
        let db = Db::open_in_memory().unwrap();
        db.check_ready().unwrap();
        db.conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            db.check_ready().unwrap_err(),
            StoreError::SchemaTooNew { found: 99, .. }
        ));
        db.conn.pragma_update(None, "user_version", 1).unwrap();
        assert!(matches!(
            db.check_ready().unwrap_err(),
            StoreError::Inconsistent(_)
        ));
    }

    #[test]
    fn postgres_readiness_needs_the_known_schema() {
        let (_database, mut client) = postgres_database();
        let mut db = PgDb::new(&mut client);
        db.check_ready().unwrap();
        assert_eq!(db.schema_version().unwrap(), 3);
        db.execute_sql("UPDATE refinery_schema_history SET version = 99 WHERE version = 3")
            .unwrap();
        assert!(matches!(
            db.check_ready().unwrap_err(),
            StoreError::SchemaTooNew { found: 99, .. }
        ));
        db.execute_sql("DELETE FROM refinery_schema_history")
            .unwrap();
        assert!(matches!(
            db.check_ready().unwrap_err(),
            StoreError::Inconsistent(_)
        ));
    }

    #[test]
    fn postgres_is_migrated_once_by_racing_replicas_and_newer_schemas_are_refused() {
        let database = test_postgres::TestDatabase::create();
        // Four processes starting at once: one migrates, the others wait
        // for it and find nothing left to do.
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let settings = database.config().into();
                std::thread::spawn(move || crate::db::postgres::open_pool(&settings, 2).map(|_| ()))
            })
            .collect();
        for racer in racers {
            racer.join().unwrap().unwrap();
        }
        let mut client = database.connect();
        let applied = PgDb::new(&mut client)
            .query_texts("SELECT CAST(count(*) AS TEXT) FROM refinery_schema_history")
            .unwrap();
        assert_eq!(applied, ["3"]);
        // A store written by a newer program is not touched.
        client
            .batch_execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
                 VALUES (99, 'future', 'now', '0')",
            )
            .unwrap();
        assert!(matches!(
            crate::db::postgres::open_pool(&database.config().into(), 1)
                .map(|_| ())
                .unwrap_err(),
            StoreError::SchemaTooNew {
                found: 99,
                supported: 3
            }
        ));
    }

    backend_tests! {
        fn stats_count_runtimes_as_the_list_does(db: &mut dyn Backend) {
            let fresh = enrolled(db, "g");
            let fresh = Uuid::parse_str(&fresh.runtime_id).unwrap();
            let _never = enrolled(db, "g");
            let revoked = enrolled(db, "g");
            db.record_heartbeat(fresh, &serde_json::json!({}), later(10))
                .unwrap();
            db.revoke_runtime(&revoked.runtime_id, later(20)).unwrap();
            let stats = db.stats(later(30), MINUTE).unwrap();
            assert_eq!(
                (stats.runtimes, stats.stale_runtimes, stats.revoked_runtimes),
                (2, 1, 1)
            );
            assert!(stats.database_bytes >= 4096, "{stats:?}");
            let listed = db.list_runtimes(later(30), MINUTE).unwrap();
            let stale = listed.iter().filter(|r| r.stale && !r.revoked).count();
            assert_eq!(stale as u64, stats.stale_runtimes);
            // Past the threshold the fresh one is stale too, as in the list.
            let stats = db.stats(later(71), MINUTE).unwrap();
            assert_eq!(stats.stale_runtimes, 2);
            assert!(db.list_runtimes(later(71), MINUTE).unwrap()[0].stale);
        }
    }

    #[tokio::test]
    async fn store_runs_calls_on_the_blocking_pool() {
        store_serves_calls(Store::new(Db::open_in_memory().unwrap())).await;
    }

    #[tokio::test]
    async fn a_postgres_store_serves_calls_from_its_pool() {
        let database = test_postgres::TestDatabase::create();
        let store =
            Store::open_database(&Database::Postgres(Box::new(database.config().into())), 2)
                .await
                .unwrap();
        store_serves_calls(store.clone()).await;
        // More calls at once than connections: they wait their turn.
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .call(|db| db.create_enrollment_token("g", HOUR, Utc::now()))
                        .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
    }

    async fn store_serves_calls(store: Store) {
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
