//! Enrolled runtimes on PostgreSQL: the list, the counts, revocation.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgDb;
use crate::db::duration_millis;
use crate::db::runtimes::{RUNTIME_COLUMNS, RuntimeRow};
use crate::error::StoreError;
use crate::model::{RuntimeSummary, to_millis};

impl PgDb<'_> {
    pub(super) fn list_runtimes(
        &mut self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<Vec<RuntimeSummary>, StoreError> {
        let now = to_millis(now);
        let stale_after = duration_millis(stale_after);
        let rows = self.client.query(
            &format!("SELECT {RUNTIME_COLUMNS} FROM runtimes r ORDER BY enrolled_at, id"),
            &[],
        )?;
        rows.iter()
            .map(|row| {
                RuntimeRow {
                    id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    group: row.try_get(2)?,
                    enrolled_at: row.try_get(3)?,
                    revoked_at: row.try_get(4)?,
                    heartbeat_at: row.try_get(5)?,
                    heartbeat: row.try_get(6)?,
                    certificate_sha256: row.try_get(7)?,
                    own_config: row.try_get(8)?,
                }
                .summary(now, stale_after)
            })
            .collect()
    }

    pub(super) fn runtime_counts(
        &mut self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<(u64, u64, u64), StoreError> {
        let row = self.client.query_one(
            "SELECT COUNT(*) FILTER (WHERE revoked_at IS NULL),
                    COUNT(*) FILTER (WHERE revoked_at IS NULL
                                     AND (last_heartbeat_at IS NULL OR $1 - last_heartbeat_at > $2)),
                    COUNT(*) FILTER (WHERE revoked_at IS NOT NULL)
             FROM runtimes",
            &[&to_millis(now), &duration_millis(stale_after)],
        )?;
        let count = |index: usize| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<_, i64>(index)?).unwrap_or(0))
        };
        Ok((count(0)?, count(1)?, count(2)?))
    }

    pub(super) fn revoke_runtime(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Ok(parsed) = Uuid::parse_str(id) else {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        };
        let parsed = parsed.to_string();
        let mut tx = self.client.transaction()?;
        let changed = tx.execute(
            "UPDATE runtimes SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&parsed, &to_millis(now)],
        )?;
        if changed == 0 {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        }
        tx.execute(
            "DELETE FROM access_tokens WHERE runtime_id = $1",
            &[&parsed],
        )?;
        tx.commit()?;
        Ok(())
    }
}
