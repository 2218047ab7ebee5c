//! The fleet view's reads on PostgreSQL: the configuration in force and
//! certificate expiry per runtime, and the enrollment tokens.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::PgDb;
use crate::db::{
    ConfigInForce, EnrollmentTokenSummary, FleetDetails, MAX_LISTED_ENROLLMENT_TOKENS,
};
use crate::error::StoreError;
use crate::model::{rfc3339, to_millis};

/// Records a certificate's expiry (at enrollment and at rotation).
pub(super) const RECORD_CERTIFICATE: &str =
    "INSERT INTO issued_certificates (sha256, not_after) VALUES ($1, $2)
     ON CONFLICT (sha256) DO UPDATE SET not_after = excluded.not_after";

/// A configuration's version and ETag from two columns of `row`, if set.
fn config_in_force(
    row: &postgres::Row,
    first: usize,
    own: bool,
) -> Result<Option<ConfigInForce>, StoreError> {
    let version: Option<i64> = row.try_get(first)?;
    let etag: Option<String> = row.try_get(first + 1)?;
    Ok(version
        .zip(etag)
        .map(|(version, etag)| ConfigInForce { own, version, etag }))
}

impl PgDb<'_> {
    pub(super) fn fleet_details(&mut self) -> Result<HashMap<String, FleetDetails>, StoreError> {
        let rows = self.client.query(
            "SELECT r.id, rc.version, rc.etag, c.version, c.etag, ic.not_after
             FROM runtimes r
             LEFT JOIN runtime_configs rc ON rc.runtime_id = r.id
             LEFT JOIN configs c ON c.group_name = r.group_name
             LEFT JOIN issued_certificates ic ON ic.sha256 = r.cert_sha256",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                let config = match config_in_force(row, 1, true)? {
                    Some(own) => Some(own),
                    None => config_in_force(row, 3, false)?,
                };
                Ok((
                    row.try_get::<_, String>(0)?,
                    FleetDetails {
                        config,
                        certificate_not_after: row.try_get::<_, Option<i64>>(5)?.map(rfc3339),
                    },
                ))
            })
            .collect()
    }

    pub(super) fn record_certificate(
        &mut self,
        sha256: &str,
        not_after: i64,
    ) -> Result<(), StoreError> {
        self.client
            .execute(RECORD_CERTIFICATE, &[&sha256, &not_after])?;
        Ok(())
    }

    pub(super) fn list_enrollment_tokens(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnrollmentTokenSummary>, StoreError> {
        let now = to_millis(now);
        let limit = i64::try_from(MAX_LISTED_ENROLLMENT_TOKENS).unwrap_or(i64::MAX);
        let rows = self.client.query(
            "SELECT token_hash, group_name, created_at, expires_at, used_at, used_by
             FROM enrollment_tokens ORDER BY created_at DESC, token_hash LIMIT $1",
            &[&limit],
        )?;
        rows.iter()
            .map(|row| {
                let hash: String = row.try_get(0)?;
                let expires_at: i64 = row.try_get(3)?;
                let used_at: Option<i64> = row.try_get(4)?;
                Ok(EnrollmentTokenSummary {
                    id: hash.chars().take(12).collect(),
                    group: row.try_get(1)?,
                    created_at: rfc3339(row.try_get(2)?),
                    expires_at: rfc3339(expires_at),
                    used_at: used_at.map(rfc3339),
                    used_by: row.try_get(5)?,
                    expired: used_at.is_none() && expires_at <= now,
                })
            })
            .collect()
    }
}
