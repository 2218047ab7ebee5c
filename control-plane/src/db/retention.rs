//! Retention: evidence records older than a runtime's retention age are
//! deleted, and the bytes they took are given back to its quota.
//!
//! The latest record of each stream is always kept, whatever its age: it
//! is what the results view and the per-check summary show, so a check that
//! runs rarely (or a machine that went quiet) still shows its last verdict
//! instead of vanishing. Only history goes.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{TransactionBehavior, params};
use uuid::Uuid;

use super::{Backend, Db, duration_millis};
use crate::error::StoreError;
use crate::model::to_millis;

/// Records deleted per transaction, so that retention never holds the
/// writer lock long enough to delay the runtimes' batches noticeably.
pub const RETENTION_BATCH: usize = 5000;

/// How long evidence is kept: a default, and overrides per runtime. `None`
/// keeps records forever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The age after which a record may go, for runtimes without an
    /// override.
    pub max_age: Option<Duration>,
    /// Per runtime: its own age (`None`: forever).
    pub per_runtime: HashMap<Uuid, Option<Duration>>,
}

impl RetentionPolicy {
    /// Whether this policy can ever delete anything.
    pub fn deletes_anything(&self) -> bool {
        self.max_age.is_some() || self.per_runtime.values().any(Option::is_some)
    }

    pub(super) fn age_of(&self, runtime: &str) -> Option<Duration> {
        match Uuid::parse_str(runtime)
            .ok()
            .and_then(|id| self.per_runtime.get(&id))
        {
            Some(age) => *age,
            None => self.max_age,
        }
    }
}

/// What one pass of retention did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Records deleted.
    pub deleted: u64,
    /// The bytes they took (given back to their runtimes' quotas).
    pub freed_bytes: u64,
}

/// One runtime's share of a retention pass: records of `runtime` that
/// arrived before `cutoff` (Unix milliseconds) may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionTarget {
    /// The runtime's id.
    pub runtime: String,
    /// Records that arrived before this may go.
    pub cutoff: i64,
}

impl dyn Backend + '_ {
    /// Deletes, at `now`, every record older than its runtime's retention
    /// age that is not the latest of its stream, in transactions of at most
    /// `batch` records; returns what went.
    pub fn apply_retention(
        &mut self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<RetentionOutcome, StoreError> {
        let mut outcome = RetentionOutcome::default();
        for target in self.retention_targets(policy, now)? {
            loop {
                let step = self.delete_expired(&target, batch)?;
                outcome.deleted += step.deleted;
                outcome.freed_bytes += step.freed_bytes;
                if step.deleted < u64::try_from(batch.max(1)).unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
        Ok(outcome)
    }
}

impl Db {
    /// The runtimes a retention pass at `now` looks at, with their cutoffs
    /// (none whose retention is forever).
    pub fn retention_targets(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<RetentionTarget>, StoreError> {
        if !policy.deletes_anything() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare("SELECT id FROM runtimes ORDER BY id")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut targets = Vec::new();
        for runtime in rows {
            let runtime = runtime?;
            if let Some(age) = policy.age_of(&runtime) {
                let cutoff = to_millis(now).saturating_sub(duration_millis(age));
                targets.push(RetentionTarget { runtime, cutoff });
            }
        }
        Ok(targets)
    }

    /// One transaction of retention: at most `batch` of `target`'s expired
    /// records deleted, their bytes given back to its quota. Fewer than
    /// `batch` deleted means the runtime is done.
    pub fn delete_expired(
        &mut self,
        target: &RetentionTarget,
        batch: usize,
    ) -> Result<RetentionOutcome, StoreError> {
        let (runtime, cutoff) = (target.runtime.as_str(), target.cutoff);
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let expired: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT e.seq, length(CAST(e.body AS BLOB)) FROM evidence e
                 WHERE e.runtime_id = ?1 AND e.received_at < ?2
                   AND NOT EXISTS (SELECT 1 FROM evidence_latest l
                                   WHERE l.runtime_id = e.runtime_id AND l.uuid = e.uuid
                                     AND l.seq = e.seq)
                 ORDER BY e.received_at, e.seq
                 LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![runtime, cutoff, batch], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        if expired.is_empty() {
            return Ok(RetentionOutcome::default());
        }
        let mut freed: i64 = 0;
        {
            let mut delete = tx.prepare_cached("DELETE FROM evidence WHERE seq = ?1")?;
            for (seq, bytes) in &expired {
                delete.execute(params![seq])?;
                freed = freed.saturating_add(*bytes);
            }
        }
        // Never below zero, even if the counter was off before.
        tx.execute(
            "UPDATE runtimes
             SET stored_bytes = CASE WHEN stored_bytes > ?2 THEN stored_bytes - ?2 ELSE 0 END
             WHERE id = ?1",
            params![runtime, freed],
        )?;
        tx.commit()?;
        Ok(RetentionOutcome {
            deleted: u64::try_from(expired.len()).unwrap_or(0),
            freed_bytes: u64::try_from(freed).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::*;
    use crate::model::{EvidenceFilter, NewEvidence, RecordRules};
    use serde_json::json;

    const QUOTA: u64 = 1 << 30;
    const DAY: i64 = 24 * 3600;

    fn record(runtime: Uuid, key: &str, stream: &str) -> NewEvidence {
        let body = json!({
            "uuid": stream,
            "labels": {"plugin": "p", "check": "c"},
            "status": {"state": "satisfied"},
            "subjects": [{"type": "InventoryItem", "identifier": runtime.to_string()}],
        });
        let rules = RecordRules {
            subjects_bound: true,
            runtime_id: runtime,
            max_record_bytes: 1 << 20,
        };
        NewEvidence::from_body(key.to_string(), body, "test", rules).unwrap()
    }

    fn runtime(db: &mut dyn Backend, name: &str) -> Uuid {
        let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
        let e = db.enroll(&token.token, name, t0(), no_certificate).unwrap();
        Uuid::parse_str(&e.runtime_id).unwrap()
    }

    fn keys(db: &mut dyn Backend, runtime: Uuid) -> Vec<String> {
        db.list_evidence(&EvidenceFilter {
            runtime: Some(runtime.to_string()),
            ..EvidenceFilter::default()
        })
        .unwrap()
        .evidence
        .into_iter()
        .map(|e| e.idempotency_key)
        .collect()
    }

    backend_tests! {
        fn old_records_go_but_the_latest_of_each_stream_stays_and_quota_comes_back(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let (s1, s2) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
            // Day 0: s1 and s2; day 5: s1 again; day 20: s1 again.
            let day0 = [record(a, "s1-0", &s1), record(a, "s2-0", &s2)];
            db.store_evidence(a, &day0, QUOTA, t0()).unwrap();
            db.store_evidence(a, &[record(a, "s1-5", &s1)], QUOTA, later(5 * DAY))
                .unwrap();
            db.store_evidence(a, &[record(a, "s1-20", &s1)], QUOTA, later(20 * DAY))
                .unwrap();
            let before = db.stored_bytes(a).unwrap();
            let policy = RetentionPolicy {
                max_age: Some(Duration::from_secs(10 * DAY as u64)),
                ..RetentionPolicy::default()
            };
            let outcome = db
                .apply_retention(&policy, later(21 * DAY), RETENTION_BATCH)
                .unwrap();
            // s1-0 and s1-5 are older than 10 days and not latest; s2-0 is old
            // but the latest of s2.
            assert_eq!(keys(db, a), ["s2-0", "s1-20"]);
            assert_eq!(outcome.deleted, 2);
            let freed = (day0[0].text.len() + record(a, "s1-5", &s1).text.len()) as u64;
            assert_eq!(outcome.freed_bytes, freed);
            assert_eq!(db.stored_bytes(a).unwrap(), before - freed);
            // A counter that was off before never goes below zero.
            db.store_evidence(a, &[record(a, "s2-21", &s2)], QUOTA, later(21 * DAY))
                .unwrap();
            db.execute_sql("UPDATE runtimes SET stored_bytes = 1")
                .unwrap();
            let outcome = db
                .apply_retention(&policy, later(40 * DAY), RETENTION_BATCH)
                .unwrap();
            assert_eq!(outcome.deleted, 1, "s2-0 is no longer the latest");
            assert_eq!(db.stored_bytes(a).unwrap(), 0);
            // A second pass finds nothing.
            assert_eq!(
                db.apply_retention(&policy, later(40 * DAY), RETENTION_BATCH)
                    .unwrap(),
                RetentionOutcome::default()
            );
        }

        fn per_runtime_overrides_win_and_batches_are_bounded(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let b = runtime(db, "b");
            let c = runtime(db, "c");
            for runtime in [a, b, c] {
                let s = Uuid::new_v4().to_string();
                for day in 0..5i64 {
                    db.store_evidence(
                        runtime,
                        &[record(runtime, &day.to_string(), &s)],
                        QUOTA,
                        later(day * DAY),
                    )
                    .unwrap();
                }
            }
            let policy = RetentionPolicy {
                max_age: Some(Duration::from_secs(DAY as u64)),
                per_runtime: HashMap::from([(b, None), (c, Some(Duration::from_secs(3 * DAY as u64)))]),
            };
            assert!(policy.deletes_anything());
            // A batch of 1 takes a transaction per record and still finishes.
            let outcome = db.apply_retention(&policy, later(5 * DAY), 1).unwrap();
            assert_eq!(keys(db, a), ["4"], "default: older than a day goes");
            assert_eq!(keys(db, b), ["0", "1", "2", "3", "4"], "forever");
            assert_eq!(keys(db, c), ["2", "3", "4"], "its own three days");
            assert_eq!(outcome.deleted, 4 + 2);
            let keep_all = RetentionPolicy {
                per_runtime: HashMap::from([(a, None)]),
                ..RetentionPolicy::default()
            };
            assert!(!keep_all.deletes_anything());
        }
    }
}
