//! Retention on PostgreSQL: each call deletes at most a batch of one
//! runtime's expired records, never the latest of a stream, and gives their
//! bytes back to its quota in the same transaction.
//!
//! The runtime's row is locked first, as its evidence batches lock it: a
//! batch and a deletion of the same runtime run one after another (a
//! resent record whose key is being deleted would otherwise wait on the
//! deletion while the deletion waits on the batch's lock), and two replicas
//! running retention at once give each record's bytes back once.

use chrono::{DateTime, Utc};

use super::PgDb;
use crate::db::duration_millis;
use crate::db::{RetentionOutcome, RetentionPolicy, RetentionTarget};
use crate::error::StoreError;
use crate::model::to_millis;

impl PgDb<'_> {
    pub(super) fn retention_targets(
        &mut self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<RetentionTarget>, StoreError> {
        if !policy.deletes_anything() {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query("SELECT id FROM runtimes ORDER BY id", &[])?;
        let mut targets = Vec::new();
        for row in rows {
            let runtime: String = row.try_get(0)?;
            if let Some(age) = policy.age_of(&runtime) {
                let cutoff = to_millis(now).saturating_sub(duration_millis(age));
                targets.push(RetentionTarget { runtime, cutoff });
            }
        }
        Ok(targets)
    }

    pub(super) fn delete_expired(
        &mut self,
        target: &RetentionTarget,
        batch: usize,
    ) -> Result<RetentionOutcome, StoreError> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut tx = self.client.transaction()?;
        let found = tx.query_opt(
            "SELECT 1 FROM runtimes WHERE id = $1 FOR UPDATE",
            &[&target.runtime],
        )?;
        if found.is_none() {
            return Ok(RetentionOutcome::default());
        }
        let row = tx.query_one(
            "WITH expired AS (
                 SELECT e.seq FROM evidence e
                 WHERE e.runtime_id = $1 AND e.received_at < $2
                   AND NOT EXISTS (SELECT 1 FROM evidence_latest l
                                   WHERE l.runtime_id = e.runtime_id AND l.uuid = e.uuid
                                     AND l.seq = e.seq)
                 ORDER BY e.received_at, e.seq
                 LIMIT $3
             ), deleted AS (
                 DELETE FROM evidence e USING expired x WHERE e.seq = x.seq
                 RETURNING octet_length(e.body) AS bytes
             )
             SELECT count(*), COALESCE(sum(bytes), 0)::bigint FROM deleted",
            &[&target.runtime, &target.cutoff, &batch],
        )?;
        let (deleted, freed): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if deleted == 0 {
            return Ok(RetentionOutcome::default());
        }
        // Never below zero, even if the counter was off before.
        tx.execute(
            "UPDATE runtimes
             SET stored_bytes = CASE WHEN stored_bytes > $2 THEN stored_bytes - $2 ELSE 0 END
             WHERE id = $1",
            &[&target.runtime, &freed],
        )?;
        tx.commit()?;
        Ok(RetentionOutcome {
            deleted: u64::try_from(deleted).unwrap_or(0),
            freed_bytes: u64::try_from(freed).unwrap_or(0),
        })
    }
}
