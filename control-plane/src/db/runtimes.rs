//! Enrolled runtimes as administrators see them: the list, and revocation.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{TransactionBehavior, params};
use serde_json::Value;
use uuid::Uuid;

use super::{Db, duration_millis};
use crate::error::StoreError;
use crate::model::{RuntimeSummary, rfc3339, to_millis};

/// A row of the runtime list, as both backends select it.
pub(super) struct RuntimeRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) group: String,
    pub(super) enrolled_at: i64,
    pub(super) revoked_at: Option<i64>,
    pub(super) heartbeat_at: Option<i64>,
    pub(super) heartbeat: Option<String>,
    pub(super) certificate_sha256: Option<String>,
    pub(super) own_config: bool,
}

/// The columns of [`RuntimeRow`], in order.
pub(super) const RUNTIME_COLUMNS: &str = "id, name, group_name, enrolled_at, revoked_at, last_heartbeat_at, last_heartbeat,
                    cert_sha256, EXISTS (SELECT 1 FROM runtime_configs c WHERE c.runtime_id = r.id)";

impl RuntimeRow {
    /// The runtime as administrators see it at `now` (milliseconds).
    pub(super) fn summary(self, now: i64, stale_after: i64) -> Result<RuntimeSummary, StoreError> {
        Ok(RuntimeSummary {
            id: self.id,
            name: self.name,
            group: self.group,
            enrolled_at: rfc3339(self.enrolled_at),
            revoked: self.revoked_at.is_some(),
            revoked_at: self.revoked_at.map(rfc3339),
            last_heartbeat_at: self.heartbeat_at.map(rfc3339),
            stale: self
                .heartbeat_at
                .is_none_or(|at| now.saturating_sub(at) > stale_after),
            heartbeat: self
                .heartbeat
                .map(|text| serde_json::from_str::<Value>(&text))
                .transpose()?,
            certificate_sha256: self.certificate_sha256,
            own_config: self.own_config,
        })
    }
}

impl Db {
    /// Every runtime, oldest enrollment first; a runtime is stale when it
    /// never sent a heartbeat or its last one is older than `stale_after`.
    pub fn list_runtimes(
        &self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<Vec<RuntimeSummary>, StoreError> {
        let now = to_millis(now);
        let stale_after = duration_millis(stale_after);
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {RUNTIME_COLUMNS} FROM runtimes r ORDER BY enrolled_at, id"
        ))?;
        let rows = stmt.query_map([], |row| {
            Ok(RuntimeRow {
                id: row.get(0)?,
                name: row.get(1)?,
                group: row.get(2)?,
                enrolled_at: row.get(3)?,
                revoked_at: row.get(4)?,
                heartbeat_at: row.get(5)?,
                heartbeat: row.get(6)?,
                certificate_sha256: row.get(7)?,
                own_config: row.get(8)?,
            })
        })?;
        let mut runtimes = Vec::new();
        for row in rows {
            runtimes.push(row?.summary(now, stale_after)?);
        }
        Ok(runtimes)
    }

    /// How many runtimes are enrolled and not revoked, how many of those are
    /// stale (the rule of [`Db::list_runtimes`]) and how many are revoked:
    /// one aggregate query, for the metrics.
    pub fn runtime_counts(
        &self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<(u64, u64, u64), StoreError> {
        let counts: (i64, i64, i64) = self.conn.query_row(
            "SELECT COUNT(*) FILTER (WHERE revoked_at IS NULL),
                    COUNT(*) FILTER (WHERE revoked_at IS NULL
                                     AND (last_heartbeat_at IS NULL OR ?1 - last_heartbeat_at > ?2)),
                    COUNT(*) FILTER (WHERE revoked_at IS NOT NULL)
             FROM runtimes",
            params![to_millis(now), duration_millis(stale_after)],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok((count(counts.0), count(counts.1), count(counts.2)))
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
}
