//! What the PostgreSQL backend does not do yet: the web view's results
//! (the latest record per stream, histories, summaries), the fleet view's
//! certificate expiries and token list, and retention. They came to the
//! SQLite store while this backend was written; each refuses with
//! [`StoreError::Unsupported`] naming what to use instead, rather than
//! answering from tables this schema does not have.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::PgDb;
use crate::db::{
    CheckSummary, EnrollmentTokenSummary, FleetDetails, LatestResult, ResultFilter, ResultsPage,
    RetentionOutcome, RetentionPolicy, RetentionTarget, StreamPage,
};
use crate::error::StoreError;

fn unsupported<T>(what: &str) -> Result<T, StoreError> {
    Err(StoreError::Unsupported(format!(
        "{what} is not available on PostgreSQL yet: use an SQLite database for it"
    )))
}

impl PgDb<'_> {
    pub(super) fn latest_results(&mut self, _: &ResultFilter) -> Result<ResultsPage, StoreError> {
        unsupported("the latest results")
    }

    pub(super) fn stream_history(
        &mut self,
        _: &str,
        _: Option<usize>,
        _: Option<&str>,
    ) -> Result<StreamPage, StoreError> {
        unsupported("a stream's history")
    }

    pub(super) fn check_summary(&mut self) -> Result<Vec<CheckSummary>, StoreError> {
        unsupported("the per-check summary")
    }

    pub(super) fn result_facets(&mut self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        unsupported("the results' filters")
    }

    pub(super) fn latest_of_stream(&mut self, _: &str) -> Result<Option<LatestResult>, StoreError> {
        unsupported("a stream's latest result")
    }

    pub(super) fn fleet_details(&mut self) -> Result<HashMap<String, FleetDetails>, StoreError> {
        unsupported("the fleet view")
    }

    pub(super) fn record_certificate(&mut self, _: &str, _: i64) -> Result<(), StoreError> {
        unsupported("recording certificate expiries")
    }

    pub(super) fn list_enrollment_tokens(
        &mut self,
        _: DateTime<Utc>,
    ) -> Result<Vec<EnrollmentTokenSummary>, StoreError> {
        unsupported("the enrollment token list")
    }

    pub(super) fn retention_targets(
        &mut self,
        _: &RetentionPolicy,
        _: DateTime<Utc>,
    ) -> Result<Vec<RetentionTarget>, StoreError> {
        unsupported("evidence retention")
    }

    pub(super) fn delete_expired(
        &mut self,
        _: &RetentionTarget,
        _: usize,
    ) -> Result<RetentionOutcome, StoreError> {
        unsupported("evidence retention")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::postgres_database;

    #[test]
    fn what_is_not_ported_says_so() {
        let (_database, mut client) = postgres_database();
        let mut db = PgDb::new(&mut client);
        let error = db.check_summary().unwrap_err();
        assert!(
            matches!(&error, StoreError::Unsupported(m) if m.contains("SQLite")),
            "{error}"
        );
    }
}
