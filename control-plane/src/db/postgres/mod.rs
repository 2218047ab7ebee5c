//! The PostgreSQL backend: several control-plane processes (replicas)
//! share one database, each with a pool of connections.
//!
//! Every guarantee of the SQLite store holds across processes, through the
//! database's own locks rather than one writer: an enrollment token is
//! spent by a conditional `UPDATE` (a racing replica waits for the first
//! and then finds it spent); a runtime's evidence batches, token grants and
//! rotations lock that runtime's row, so they run one after another
//! (idempotency, the same-record check and the quota see each other's
//! writes); a stream uuid is locked while its first owner is decided; a
//! stream's latest record is an upsert only a higher `seq` overwrites
//! (`results.rs`); retention locks the runtime's row before deleting its
//! records (`retention.rs`).
//!
//! Migrations are refinery's (`migrations/`, its history table), run by
//! the first process to start under an advisory lock. Connections, the
//! pool's and the admin commands', are made by [`PgSettings`]
//! (`connect.rs`: the URL read as libpq reads it, TLS with rustls). [`PgDb`] is one
//! connection checked out of the pool; its reads and writes are
//! `impl PgDb` blocks, one file per aggregate as for SQLite.

mod configuration;
mod connect;
mod credentials;
mod enrollment;
mod evidence;
mod fleet;
mod heartbeats;
mod results;
mod retention;
mod runtimes;

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::Client;
use r2d2_postgres::PostgresConnectionManager;
use refinery::{Migration, Runner};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::backend::delegate_backend;
use crate::error::StoreError;
use crate::model::{NewEvidence, StoreStats};

pub use connect::{PgSettings, RootCertificates};

/// The schema's migrations, oldest first: refinery's names (`V<n>__<what>`)
/// and their SQL.
const MIGRATIONS: &[(&str, &str)] = &[
    ("V1__schema", include_str!("migrations/V1__schema.sql")),
    ("V2__results", include_str!("migrations/V2__results.sql")),
    (
        "V3__evidence_commit_order",
        include_str!("migrations/V3__evidence_commit_order.sql"),
    ),
];

/// The table refinery records applied migrations in.
const HISTORY_TABLE: &str = "refinery_schema_history";

/// The advisory lock held while migrating, so that replicas starting
/// together migrate once (an arbitrary constant of this program).
const MIGRATION_LOCK: i64 = 0x6163_705f_6d69_6772;

/// How long a request waits for a free connection before failing.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default number of connections each process keeps at most.
pub const DEFAULT_POOL_SIZE: u32 = 16;

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        StoreError::Postgres(message(&error))
    }
}

/// What went wrong, with the causes: the client library's error alone says
/// only "db error", "error performing TLS handshake" or "invalid connection
/// string"; the server's message, the certificate's fault or the parameter
/// is in its sources.
fn message(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{error}: {}", db.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The URL's user, hosts and database, without its password: what logs and
/// errors show.
pub fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "postgresql://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// Connections to one PostgreSQL database, shared by async tasks.
pub type PgPool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;

/// Brings the schema up to date (once, whoever else starts at the same
/// time) and opens a pool of at most `size` connections, each with the
/// TLS of `settings`.
pub fn open_pool(settings: &PgSettings, size: u32) -> Result<PgPool, StoreError> {
    if size == 0 {
        return Err(StoreError::Invalid(
            "the database pool needs at least one connection".to_string(),
        ));
    }
    let tls = settings.tls_connector()?;
    let mut client = settings.config().connect(tls.clone())?;
    migrate(&mut client)?;
    drop(client);
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        // A broken connection shows itself on use and is then dropped; a
        // check before every checkout would cost a round trip per call.
        .test_on_check_out(false)
        .build(PostgresConnectionManager::new(
            settings.config().clone(),
            tls,
        ))
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// The schema version this program knows.
fn supported_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

fn runner() -> Result<Runner, StoreError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let mut runner = Runner::new(&migrations);
    runner.set_migration_table_name(HISTORY_TABLE);
    Ok(runner)
}

/// Applies the migrations the database lacks, under an advisory lock (the
/// session's: it goes with the connection, whatever happens).
pub fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = migrate_locked(client);
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
    result
}

fn migrate_locked(client: &mut Client) -> Result<(), StoreError> {
    let found = schema_version(client)?;
    let supported = supported_version();
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    runner()?
        .run(client)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(())
}

/// The newest migration applied, 0 before the first.
fn schema_version(client: &mut Client) -> Result<i64, StoreError> {
    let table: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&HISTORY_TABLE])?
        .try_get(0)?;
    if table.is_none() {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])?
        .try_get(0)?;
    Ok(version.map_or(0, i64::from))
}

/// One connection to the database, serving the store's calls.
pub struct PgDb<'a> {
    client: &'a mut Client,
}

impl<'a> PgDb<'a> {
    /// The store's reads and writes over `client` (whose schema is up to
    /// date: see [`migrate`]).
    pub fn new(client: &'a mut Client) -> Self {
        Self { client }
    }

    fn schema_version(&mut self) -> Result<i64, StoreError> {
        schema_version(self.client)
    }

    fn check_ready(&mut self) -> Result<(), StoreError> {
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
        self.client
            .query_one("SELECT EXISTS (SELECT 1 FROM runtimes)", &[])?;
        Ok(())
    }

    /// Runtime counts, and the database's size on disk (every table and
    /// index of it, as the server counts it).
    fn stats(
        &mut self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<StoreStats, StoreError> {
        let (runtimes, stale_runtimes, revoked_runtimes) = self.runtime_counts(now, stale_after)?;
        let database_bytes: i64 = self
            .client
            .query_one("SELECT pg_database_size(current_database())", &[])?
            .try_get(0)?;
        Ok(StoreStats {
            runtimes,
            stale_runtimes,
            revoked_runtimes,
            database_bytes: u64::try_from(database_bytes).unwrap_or(0),
        })
    }

    #[cfg(test)]
    fn execute_sql(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql)?)
    }

    #[cfg(test)]
    fn query_texts(&mut self, sql: &str) -> Result<Vec<String>, StoreError> {
        let mut texts = Vec::new();
        for message in self.client.simple_query(sql)? {
            if let postgres::SimpleQueryMessage::Row(row) = message {
                texts.push(row.try_get(0)?.unwrap_or_default().to_string());
            }
        }
        Ok(texts)
    }
}

delegate_backend!(PgDb<'_>);

/// A batch of records' stream uuids, each once, in one order: the order
/// their advisory locks are taken in, so two batches never wait on each
/// other in a cycle.
fn sorted_uuids(records: &[NewEvidence]) -> Vec<&str> {
    let mut uuids: Vec<&str> = records.iter().map(|r| r.uuid.as_str()).collect();
    uuids.sort_unstable();
    uuids.dedup();
    uuids
}
