//! Evidence on PostgreSQL. A batch locks its runtime's row first, so one
//! runtime's batches (the same batch sent to two replicas, say) run one
//! after another: the second finds the first's records as duplicates and
//! its quota counted. The stream uuids a batch carries are locked (advisory,
//! in one order) while their first owner is decided. Each record stored
//! becomes its stream's latest in the same transaction (`results.rs`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PgDb, sorted_uuids};
use crate::db::evidence::{
    EVIDENCE_SELECT, EvidenceRow, assemble_page, canonical_runtime, check_quota, check_same_record,
    collect_latest, identity_error, into_stored_evidence, page_bounds, runtime_filter,
    uuid_conflict,
};
use crate::error::StoreError;
use crate::model::{
    BatchOutcome, EvidenceFilter, EvidencePage, NewEvidence, StoredEvidence, to_millis,
};

pub(super) fn evidence_row(row: &postgres::Row) -> Result<(i64, EvidenceRow), StoreError> {
    Ok((
        row.try_get(8)?,
        (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
            row.try_get(7)?,
        ),
    ))
}

impl PgDb<'_> {
    pub(super) fn store_evidence(
        &mut self,
        runtime_id: Uuid,
        records: &[NewEvidence],
        quota: u64,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, StoreError> {
        let runtime_id = runtime_id.to_string();
        let now = to_millis(now);
        let mut tx = self.client.transaction()?;
        let runtime = tx.query_opt(
            "SELECT name, stored_bytes FROM runtimes WHERE id = $1 FOR UPDATE",
            &[&runtime_id],
        )?;
        let Some(runtime) = runtime else {
            return Err(StoreError::RuntimeNotFound(runtime_id));
        };
        let (name, stored_bytes): (String, i64) = (runtime.try_get(0)?, runtime.try_get(1)?);
        // hashtextextended: a uuid's 64-bit lock key.
        tx.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(u, 0)))
             FROM (SELECT u FROM unnest($1::text[]) AS u ORDER BY u) AS locked",
            &[&sorted_uuids(records)],
        )?;
        let host_of_another = tx.prepare(
            "SELECT EXISTS (SELECT 1 FROM runtimes
                            WHERE name = $1 AND id != $2 AND revoked_at IS NULL)",
        )?;
        // A uuid belongs to the runtime that stored it first.
        let uuid_owner =
            tx.prepare("SELECT runtime_id FROM evidence WHERE uuid = $1 ORDER BY seq LIMIT 1")?;
        let insert = tx.prepare(
            "INSERT INTO evidence
                 (idempotency_key, runtime_id, uuid, plugin, check_id, status, body,
                  received_at, body_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (runtime_id, idempotency_key) DO NOTHING
             RETURNING seq",
        )?;
        let stored = tx.prepare(
            "SELECT body_sha256, body FROM evidence
             WHERE runtime_id = $1 AND idempotency_key = $2",
        )?;
        let mut outcome = BatchOutcome {
            accepted: 0,
            duplicates: 0,
        };
        let mut added: u64 = 0;
        for record in records {
            if let Some(host) = record.host.as_deref().filter(|host| *host != name) {
                let taken: bool = tx
                    .query_one(&host_of_another, &[&host, &runtime_id])?
                    .try_get(0)?;
                if taken {
                    return Err(identity_error(record, host, &name));
                }
            }
            let owner: Option<String> = tx
                .query_opt(&uuid_owner, &[&record.uuid])?
                .map(|row| row.try_get(0))
                .transpose()?;
            if owner.is_some_and(|owner| owner != runtime_id) {
                return Err(uuid_conflict(record));
            }
            let inserted = tx.query_opt(
                &insert,
                &[
                    &record.idempotency_key,
                    &runtime_id,
                    &record.uuid,
                    &record.plugin,
                    &record.check,
                    &record.status,
                    &record.text,
                    &now,
                    &record.body_sha256,
                ],
            )?;
            if let Some(inserted) = inserted {
                let seq: i64 = inserted.try_get(0)?;
                super::results::record_latest(&mut tx, &runtime_id, record, seq, now)?;
                outcome.accepted += 1;
                added = added.saturating_add(record.text.len() as u64);
                continue;
            }
            let row = tx.query_one(&stored, &[&runtime_id, &record.idempotency_key])?;
            let body: String = row.try_get(1)?;
            check_same_record(record, row.try_get(0)?, &body)?;
            outcome.duplicates += 1;
        }
        check_quota(stored_bytes, added, quota)?;
        tx.execute(
            "UPDATE runtimes SET stored_bytes = stored_bytes + $2 WHERE id = $1",
            &[&runtime_id, &i64::try_from(added).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    pub(super) fn stored_bytes(&mut self, runtime_id: Uuid) -> Result<u64, StoreError> {
        let row = self.client.query_opt(
            "SELECT stored_bytes FROM runtimes WHERE id = $1",
            &[&runtime_id.to_string()],
        )?;
        match row {
            Some(row) => Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0)),
            None => Err(StoreError::RuntimeNotFound(runtime_id.to_string())),
        }
    }

    pub(super) fn evidence(
        &mut self,
        runtime_id: Uuid,
        idempotency_key: &str,
    ) -> Result<Option<StoredEvidence>, StoreError> {
        let row = self.client.query_opt(
            &format!("{EVIDENCE_SELECT} WHERE runtime_id = $1 AND idempotency_key = $2"),
            &[&runtime_id.to_string(), &idempotency_key],
        )?;
        row.map(|row| into_stored_evidence(evidence_row(&row)?.1))
            .transpose()
    }

    pub(super) fn list_evidence(
        &mut self,
        filter: &EvidenceFilter,
    ) -> Result<EvidencePage, StoreError> {
        let (limit, after) = page_bounds(filter)?;
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.client.query(
            &format!(
                "{EVIDENCE_SELECT}
                 WHERE seq > $4
                   AND ($1::text IS NULL OR runtime_id = $1)
                   AND ($2::text IS NULL OR plugin = $2)
                   AND ($3::text IS NULL OR check_id = $3)
                 ORDER BY seq
                 LIMIT $5"
            ),
            &[
                &runtime_filter(filter),
                &filter.plugin,
                &filter.check,
                &after,
                &fetch,
            ],
        )?;
        assemble_page(rows.iter().map(evidence_row), limit, after)
    }

    pub(super) fn latest_evidence(
        &mut self,
        runtime: Option<&str>,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let rows = self.client.query(
            &format!(
                "{EVIDENCE_SELECT}
                 WHERE seq IN (SELECT seq FROM evidence_latest
                               WHERE $1::text IS NULL OR runtime_id = $1)
                 ORDER BY runtime_id, seq"
            ),
            &[&canonical_runtime(runtime)],
        )?;
        collect_latest(rows.iter().map(evidence_row), max_records, max_bytes)
    }
}
