//! The one interface of the store, whatever holds the data: every read and
//! write the HTTP API and the admin commands share. SQLite ([`Db`]) and
//! PostgreSQL ([`PgDb`](super::postgres::PgDb)) implement it with the same
//! guarantees, shown by one set of tests run against both.
//!
//! Methods take the current time as an argument, so tests can move the
//! clock. They are synchronous: [`Store`](super::Store) runs them on the
//! blocking pool.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use std::collections::HashMap;

use super::{
    CheckSummary, Db, EnrollmentTokenSummary, FleetDetails, LatestResult, ResultFilter,
    ResultsPage, RetentionOutcome, RetentionPolicy, RetentionTarget, StreamPage,
};
use crate::ca::IssuedCertificate;
use crate::error::StoreError;
use crate::model::{
    BatchOutcome, ConfigVersion, Enrollment, EvidenceFilter, EvidencePage, IssuedToken,
    NewEnrollmentToken, NewEvidence, RuntimeIdentity, RuntimeSummary, StoreStats, StoredConfig,
    StoredEvidence,
};

/// Issues the certificate of a runtime being enrolled (its id given), or
/// none over plain HTTP.
pub type Certify<'a> = &'a mut dyn FnMut(&str) -> Result<Option<IssuedCertificate>, StoreError>;

/// The store's reads and writes (see the module documentation).
pub trait Backend: Send {
    /// The schema version of the database.
    fn schema_version(&mut self) -> Result<i64, StoreError>;
    /// Whether the database can serve: it answers a query on a table the
    /// API reads, and its schema is still the one this program knows (a
    /// newer control plane may have migrated it since it was opened).
    fn check_ready(&mut self) -> Result<(), StoreError>;
    /// What the metrics read from the store at a scrape: runtime counts and
    /// the database's size.
    fn stats(
        &mut self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<StoreStats, StoreError>;

    /// Creates a single-use enrollment token for `group`, valid for `ttl`.
    fn create_enrollment_token(
        &mut self,
        group: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewEnrollmentToken, StoreError>;
    /// Spends an enrollment token (once, however many callers race for
    /// it): creates a runtime named `name` in the token's group and
    /// returns its credentials. Once the token is found good, `certify` is
    /// called with the new runtime's id; the certificate it returns (if
    /// any) is the only one the runtime may connect with. If it fails, the
    /// token is not spent.
    fn enroll_certified(
        &mut self,
        token: &str,
        name: &str,
        now: DateTime<Utc>,
        certify: Certify<'_>,
    ) -> Result<Enrollment, StoreError>;

    /// The client-credentials grant: a new access token for the runtime
    /// `client_id` if `client_secret` is its secret, it is not revoked, and
    /// (over mutual TLS, when `certificate` is the SHA-256 of the
    /// connection's client certificate) the certificate is the runtime's.
    /// The token is bound to that certificate. The first use of a rotated
    /// secret makes it the only one.
    fn issue_access_token(
        &mut self,
        client_id: &str,
        client_secret: &str,
        certificate: Option<&str>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, StoreError>;
    /// The runtime an access token belongs to, if the token is known,
    /// unexpired, its runtime not revoked, and (over mutual TLS) it was
    /// issued over the certificate `certificate`.
    fn authenticate(
        &mut self,
        access_token: &str,
        certificate: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<RuntimeIdentity>, StoreError>;
    /// Issues a new client secret for `runtime`, to go with the new client
    /// certificate `certificate` (SHA-256) if the rotation issued one; the
    /// current credentials stay valid until the new ones are first used.
    fn rotate_secret(
        &mut self,
        runtime: Uuid,
        certificate: Option<&str>,
    ) -> Result<String, StoreError>;

    /// Every runtime, oldest enrollment first; a runtime is stale when it
    /// never sent a heartbeat or its last one is older than `stale_after`.
    fn list_runtimes(
        &mut self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<Vec<RuntimeSummary>, StoreError>;
    /// How many runtimes are enrolled and not revoked, how many of those
    /// are stale, and how many are revoked.
    fn runtime_counts(
        &mut self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<(u64, u64, u64), StoreError>;
    /// Revokes a runtime: its access tokens are deleted and it can get no
    /// new ones. Revoking twice keeps the first revocation time.
    fn revoke_runtime(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Assigns a configuration document to `group`; the version goes up by
    /// one with every assignment.
    fn set_config(
        &mut self,
        group: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError>;
    /// Assigns a configuration document to the runtime `id` alone.
    fn set_runtime_config(
        &mut self,
        id: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError>;
    /// Removes the runtime's own document; returns whether it had one.
    fn clear_runtime_config(&mut self, id: &str) -> Result<bool, StoreError>;
    /// The configuration in force for a runtime: its own, else its group's.
    fn config_for_runtime(
        &mut self,
        runtime: &RuntimeIdentity,
    ) -> Result<Option<StoredConfig>, StoreError>;
    /// The configuration document assigned to `group`, if any.
    fn config_for_group(&mut self, group: &str) -> Result<Option<StoredConfig>, StoreError>;

    /// Records a runtime's heartbeat body as its last heartbeat.
    fn record_heartbeat(
        &mut self,
        runtime_id: Uuid,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Stores a batch of evidence from one runtime atomically, idempotent
    /// on (runtime, idempotency key), within the runtime's `quota`.
    fn store_evidence(
        &mut self,
        runtime_id: Uuid,
        records: &[NewEvidence],
        quota: u64,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, StoreError>;
    /// The bytes of evidence `runtime_id` stores (what its quota counts).
    fn stored_bytes(&mut self, runtime_id: Uuid) -> Result<u64, StoreError>;
    /// One stored evidence record, by runtime and idempotency key.
    fn evidence(
        &mut self,
        runtime_id: Uuid,
        idempotency_key: &str,
    ) -> Result<Option<StoredEvidence>, StoreError>;
    /// One page of the stored evidence matching `filter`; a record that
    /// commits after a page was read never sorts before that page's cursor.
    fn list_evidence(&mut self, filter: &EvidenceFilter) -> Result<EvidencePage, StoreError>;
    /// The latest record of each evidence stream (`uuid`) of one runtime,
    /// or of every runtime, by runtime then in the order they arrived;
    /// past `max_records` records or `max_bytes` of them,
    /// [`StoreError::TooLarge`].
    fn latest_evidence(
        &mut self,
        runtime: Option<&str>,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError>;

    /// One page of the latest result of each stream matching `filter`,
    /// failing first (the web view and the admin API).
    fn latest_results(&mut self, filter: &ResultFilter) -> Result<ResultsPage, StoreError>;
    /// One page of a stream's history, newest first, before the cursor.
    fn stream_history(
        &mut self,
        uuid: &str,
        limit: Option<usize>,
        before: Option<&str>,
    ) -> Result<StreamPage, StoreError>;
    /// Per check, how many runtimes pass and fail it.
    fn check_summary(&mut self) -> Result<Vec<CheckSummary>, StoreError>;
    /// The plugins and severities the latest results carry (filter choices).
    fn result_facets(&mut self) -> Result<(Vec<String>, Vec<String>), StoreError>;
    /// The latest result of one stream.
    fn latest_of_stream(&mut self, uuid: &str) -> Result<Option<LatestResult>, StoreError>;
    /// What the fleet view shows of each runtime beyond the runtime list.
    fn fleet_details(&mut self) -> Result<HashMap<String, FleetDetails>, StoreError>;
    /// Records the expiry of an issued client certificate.
    fn record_certificate(&mut self, sha256: &str, not_after: i64) -> Result<(), StoreError>;
    /// The enrollment tokens, for the fleet view.
    fn list_enrollment_tokens(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnrollmentTokenSummary>, StoreError>;
    /// The runtimes a retention pass at `now` looks at, with their cutoffs.
    fn retention_targets(
        &mut self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<RetentionTarget>, StoreError>;
    /// One transaction of retention: at most `batch` of `target`'s expired
    /// records deleted, their bytes given back to its quota.
    fn delete_expired(
        &mut self,
        target: &RetentionTarget,
        batch: usize,
    ) -> Result<RetentionOutcome, StoreError>;

    /// Runs statements as they are (tests reach behind the API with it).
    #[cfg(test)]
    fn execute_sql(&mut self, sql: &str) -> Result<(), StoreError>;
    /// The first column of every row of a query, as text (for tests).
    #[cfg(test)]
    fn query_texts(&mut self, sql: &str) -> Result<Vec<String>, StoreError>;
}

impl dyn Backend + '_ {
    /// [`Backend::enroll_certified`] with a closure called at most once.
    pub fn enroll(
        &mut self,
        token: &str,
        name: &str,
        now: DateTime<Utc>,
        certify: impl FnOnce(&str) -> Result<Option<IssuedCertificate>, StoreError>,
    ) -> Result<Enrollment, StoreError> {
        let mut once = Some(certify);
        self.enroll_certified(token, name, now, &mut |runtime_id| match once.take() {
            Some(certify) => certify(runtime_id),
            None => Err(StoreError::Inconsistent(
                "a runtime's certificate was asked for twice".to_string(),
            )),
        })
    }
}

/// Implements [`Backend`] for a type whose inherent methods of the same
/// names do the work (each backend keeps one file per aggregate).
macro_rules! delegate_backend {
    ($type:ty) => {
        const _: () = {
            use chrono::{DateTime, Utc};
            use serde_json::Value;
            use std::collections::HashMap;
            use std::time::Duration;
            use uuid::Uuid;
            use $crate::db::backend::Certify;
            use $crate::db::{
                CheckSummary, EnrollmentTokenSummary, FleetDetails, LatestResult, ResultFilter,
                ResultsPage, RetentionOutcome, RetentionPolicy, RetentionTarget, StreamPage,
            };
            use $crate::error::StoreError;
            use $crate::model::{
                BatchOutcome, ConfigVersion, Enrollment, EvidenceFilter, EvidencePage, IssuedToken,
                NewEnrollmentToken, NewEvidence, RuntimeIdentity, RuntimeSummary, StoreStats,
                StoredConfig, StoredEvidence,
            };
            impl $crate::db::Backend for $type {
                fn schema_version(&mut self) -> Result<i64, StoreError> {
                    Self::schema_version(self)
                }
                fn check_ready(&mut self) -> Result<(), StoreError> {
                    Self::check_ready(self)
                }
                fn stats(
                    &mut self,
                    now: DateTime<Utc>,
                    stale_after: Duration,
                ) -> Result<StoreStats, StoreError> {
                    Self::stats(self, now, stale_after)
                }
                fn create_enrollment_token(
                    &mut self,
                    group: &str,
                    ttl: Duration,
                    now: DateTime<Utc>,
                ) -> Result<NewEnrollmentToken, StoreError> {
                    Self::create_enrollment_token(self, group, ttl, now)
                }
                fn enroll_certified(
                    &mut self,
                    token: &str,
                    name: &str,
                    now: DateTime<Utc>,
                    certify: Certify<'_>,
                ) -> Result<Enrollment, StoreError> {
                    Self::enroll(self, token, name, now, certify)
                }
                fn issue_access_token(
                    &mut self,
                    client_id: &str,
                    client_secret: &str,
                    certificate: Option<&str>,
                    ttl: Duration,
                    now: DateTime<Utc>,
                ) -> Result<IssuedToken, StoreError> {
                    Self::issue_access_token(self, client_id, client_secret, certificate, ttl, now)
                }
                fn authenticate(
                    &mut self,
                    access_token: &str,
                    certificate: Option<&str>,
                    now: DateTime<Utc>,
                ) -> Result<Option<RuntimeIdentity>, StoreError> {
                    Self::authenticate(self, access_token, certificate, now)
                }
                fn rotate_secret(
                    &mut self,
                    runtime: Uuid,
                    certificate: Option<&str>,
                ) -> Result<String, StoreError> {
                    Self::rotate_secret(self, runtime, certificate)
                }
                fn list_runtimes(
                    &mut self,
                    now: DateTime<Utc>,
                    stale_after: Duration,
                ) -> Result<Vec<RuntimeSummary>, StoreError> {
                    Self::list_runtimes(self, now, stale_after)
                }
                fn runtime_counts(
                    &mut self,
                    now: DateTime<Utc>,
                    stale_after: Duration,
                ) -> Result<(u64, u64, u64), StoreError> {
                    Self::runtime_counts(self, now, stale_after)
                }
                fn revoke_runtime(
                    &mut self,
                    id: &str,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    Self::revoke_runtime(self, id, now)
                }
                fn set_config(
                    &mut self,
                    group: &str,
                    document: &Value,
                    now: DateTime<Utc>,
                ) -> Result<ConfigVersion, StoreError> {
                    Self::set_config(self, group, document, now)
                }
                fn set_runtime_config(
                    &mut self,
                    id: &str,
                    document: &Value,
                    now: DateTime<Utc>,
                ) -> Result<ConfigVersion, StoreError> {
                    Self::set_runtime_config(self, id, document, now)
                }
                fn clear_runtime_config(&mut self, id: &str) -> Result<bool, StoreError> {
                    Self::clear_runtime_config(self, id)
                }
                fn config_for_runtime(
                    &mut self,
                    runtime: &RuntimeIdentity,
                ) -> Result<Option<StoredConfig>, StoreError> {
                    Self::config_for_runtime(self, runtime)
                }
                fn config_for_group(
                    &mut self,
                    group: &str,
                ) -> Result<Option<StoredConfig>, StoreError> {
                    Self::config_for_group(self, group)
                }
                fn record_heartbeat(
                    &mut self,
                    runtime_id: Uuid,
                    body: &Value,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    Self::record_heartbeat(self, runtime_id, body, now)
                }
                fn store_evidence(
                    &mut self,
                    runtime_id: Uuid,
                    records: &[NewEvidence],
                    quota: u64,
                    now: DateTime<Utc>,
                ) -> Result<BatchOutcome, StoreError> {
                    Self::store_evidence(self, runtime_id, records, quota, now)
                }
                fn stored_bytes(&mut self, runtime_id: Uuid) -> Result<u64, StoreError> {
                    Self::stored_bytes(self, runtime_id)
                }
                fn evidence(
                    &mut self,
                    runtime_id: Uuid,
                    idempotency_key: &str,
                ) -> Result<Option<StoredEvidence>, StoreError> {
                    Self::evidence(self, runtime_id, idempotency_key)
                }
                fn list_evidence(
                    &mut self,
                    filter: &EvidenceFilter,
                ) -> Result<EvidencePage, StoreError> {
                    Self::list_evidence(self, filter)
                }
                fn latest_evidence(
                    &mut self,
                    runtime: Option<&str>,
                    max_records: usize,
                    max_bytes: usize,
                ) -> Result<Vec<StoredEvidence>, StoreError> {
                    Self::latest_evidence(self, runtime, max_records, max_bytes)
                }
                fn latest_results(
                    &mut self,
                    filter: &ResultFilter,
                ) -> Result<ResultsPage, StoreError> {
                    Self::latest_results(self, filter)
                }
                fn stream_history(
                    &mut self,
                    uuid: &str,
                    limit: Option<usize>,
                    before: Option<&str>,
                ) -> Result<StreamPage, StoreError> {
                    Self::stream_history(self, uuid, limit, before)
                }
                fn check_summary(&mut self) -> Result<Vec<CheckSummary>, StoreError> {
                    Self::check_summary(self)
                }
                fn result_facets(&mut self) -> Result<(Vec<String>, Vec<String>), StoreError> {
                    Self::result_facets(self)
                }
                fn latest_of_stream(
                    &mut self,
                    uuid: &str,
                ) -> Result<Option<LatestResult>, StoreError> {
                    Self::latest_of_stream(self, uuid)
                }
                fn fleet_details(&mut self) -> Result<HashMap<String, FleetDetails>, StoreError> {
                    Self::fleet_details(self)
                }
                fn record_certificate(
                    &mut self,
                    sha256: &str,
                    not_after: i64,
                ) -> Result<(), StoreError> {
                    Self::record_certificate(self, sha256, not_after)
                }
                fn list_enrollment_tokens(
                    &mut self,
                    now: DateTime<Utc>,
                ) -> Result<Vec<EnrollmentTokenSummary>, StoreError> {
                    Self::list_enrollment_tokens(self, now)
                }
                fn retention_targets(
                    &mut self,
                    policy: &RetentionPolicy,
                    now: DateTime<Utc>,
                ) -> Result<Vec<RetentionTarget>, StoreError> {
                    Self::retention_targets(self, policy, now)
                }
                fn delete_expired(
                    &mut self,
                    target: &RetentionTarget,
                    batch: usize,
                ) -> Result<RetentionOutcome, StoreError> {
                    Self::delete_expired(self, target, batch)
                }
                #[cfg(test)]
                fn execute_sql(&mut self, sql: &str) -> Result<(), StoreError> {
                    Self::execute_sql(self, sql)
                }
                #[cfg(test)]
                fn query_texts(&mut self, sql: &str) -> Result<Vec<String>, StoreError> {
                    Self::query_texts(self, sql)
                }
            }
        };
    };
}
pub(super) use delegate_backend;

delegate_backend!(Db);
