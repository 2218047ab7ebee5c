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
    collect_latest, cursor_number, identity_error, into_stored_evidence, page_limit,
    runtime_filter, uuid_conflict,
};
use crate::db::results::{decode_cursor, encode_cursor};
use crate::error::StoreError;
use crate::model::{
    BatchOutcome, EvidenceFilter, EvidencePage, NewEvidence, StoredEvidence, to_millis,
};

/// The advisory lock (two-key form, held shared, so writers never wait on
/// each other) an evidence writer holds for its whole transaction: what
/// the listing finds in-flight writers by.
const WRITER_LOCK: (i32, i32) = (0x6163_705f, 0x6576_6964);

/// Marks this transaction as an evidence writer until it ends.
fn register_writer(tx: &mut postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1, $2)",
        &[&WRITER_LOCK.0, &WRITER_LOCK.1],
    )?;
    Ok(())
}

/// The listing's horizon: the smallest transaction id of an evidence writer
/// of this database still in flight (pg_locks has its 32-bit form, widened
/// here against the next id), else the first id not yet assigned.
const HORIZON: &str = "
    WITH next AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xid)
    SELECT LEAST(next.xid,
                 min(next.xid - ((next.xid - w.xid) % 4294967296 + 4294967296) % 4294967296))
    FROM next LEFT JOIN (
        SELECT t.transactionid::text::bigint AS xid
        FROM pg_locks a JOIN pg_locks t
          ON t.locktype = 'transactionid' AND t.virtualtransaction = a.virtualtransaction
         AND t.mode = 'ExclusiveLock' AND t.granted
        WHERE a.locktype = 'advisory' AND a.granted
          AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND a.classid = $1::integer::oid AND a.objid = $2::integer::oid AND a.objsubid = 2
    ) w ON true
    GROUP BY next.xid";

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
        // Before the transaction has an id (the row lock below gives it one):
        // a listing that does not see this writer yet sees only ids
        // assigned later.
        register_writer(&mut tx)?;
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

    /// One page of the evidence matching `filter`, in the order of the
    /// transactions that stored it (then of `seq`), read only up to the
    /// oldest evidence writer still in flight (see [`WRITER_LOCK`]): a
    /// record of a transaction that commits later always sorts after the
    /// pages already read.
    pub(super) fn list_evidence(
        &mut self,
        filter: &EvidenceFilter,
    ) -> Result<EvidencePage, StoreError> {
        let limit = page_limit(filter)?;
        let (after_txid, after_seq) = match filter.after.as_deref() {
            None => (0, 0),
            Some(cursor) => {
                let fields = decode_cursor(cursor, 2)?;
                (
                    cursor_number(cursor, &fields[0])?,
                    cursor_number(cursor, &fields[1])?,
                )
            }
        };
        // A statement of its own, so the listing's snapshot, taken after
        // it, sees every writer that finished before it looked.
        let horizon: i64 = self
            .client
            .query_one(HORIZON, &[&WRITER_LOCK.0, &WRITER_LOCK.1])?
            .try_get(0)?;
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.client.query(
            "SELECT idempotency_key, runtime_id, uuid, plugin, check_id, status, received_at,
                    body, seq, txid::text::bigint
             FROM evidence
             WHERE (txid, seq) > ($4::text::xid8, $5)
               AND txid < $6::text::xid8
               AND ($1::text IS NULL OR runtime_id = $1)
               AND ($2::text IS NULL OR plugin = $2)
               AND ($3::text IS NULL OR check_id = $3)
             ORDER BY txid, seq
             LIMIT $7",
            &[
                &runtime_filter(filter),
                &filter.plugin,
                &filter.check,
                &after_txid.to_string(),
                &after_seq,
                &horizon.to_string(),
                &fetch,
            ],
        )?;
        let rows = rows.iter().map(|row| {
            let (seq, record) = evidence_row(row)?;
            let txid: i64 = row.try_get(9)?;
            Ok::<_, StoreError>((
                encode_cursor(&[&txid.to_string(), &seq.to_string()]),
                record,
            ))
        });
        assemble_page(rows, limit)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Backend;
    use crate::db::test_support::*;
    use crate::model::RecordRules;
    use serde_json::json;

    const QUOTA: u64 = 1 << 30;

    fn record(runtime: Uuid, key: &str) -> NewEvidence {
        let body = json!({
            "uuid": Uuid::new_v4().to_string(),
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

    fn runtime(db: &mut dyn Backend) -> Uuid {
        Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap()
    }

    fn keys(page: &EvidencePage) -> Vec<String> {
        page.evidence
            .iter()
            .map(|e| e.idempotency_key.clone())
            .collect()
    }

    fn one_at_a_time(after: Option<String>) -> EvidenceFilter {
        EvidenceFilter {
            limit: Some(1),
            after,
            ..EvidenceFilter::default()
        }
    }

    #[test]
    fn a_record_committed_late_is_never_skipped_by_a_reader_paging_past_it() {
        let (database, mut client) = postgres_database();
        let mut db = PgDb::new(&mut client);
        let (a, b) = (runtime(&mut db), runtime(&mut db));
        // A writer in flight: its record inserted (its seq taken), not
        // committed, as store_evidence leaves it between two statements.
        let mut slow_client = database.connect();
        let mut slow = slow_client.transaction().unwrap();
        register_writer(&mut slow).unwrap();
        slow.execute(
            "SELECT 1 FROM runtimes WHERE id = $1 FOR UPDATE",
            &[&a.to_string()],
        )
        .unwrap();
        slow.execute(
            "INSERT INTO evidence (idempotency_key, runtime_id, uuid, body, received_at)
             VALUES ('slow', $1, $2, '{}', 0)",
            &[&a.to_string(), &Uuid::new_v4().to_string()],
        )
        .unwrap();
        // Another runtime's batch commits meanwhile, with later seqs.
        db.store_evidence(b, &[record(b, "fast-0"), record(b, "fast-1")], QUOTA, t0())
            .unwrap();
        // A reader pages one record at a time while the writer is in
        // flight, and goes on once it committed.
        let first = db.list_evidence(&one_at_a_time(None)).unwrap();
        assert_eq!(
            keys(&first),
            Vec::<String>::new(),
            "nothing past the writer"
        );
        slow.commit().unwrap();
        let mut seen = keys(&first);
        let mut after = first.next;
        while let Some(cursor) = after {
            let page = db.list_evidence(&one_at_a_time(Some(cursor))).unwrap();
            seen.extend(keys(&page));
            after = page.next;
        }
        let all = keys(&db.list_evidence(&EvidenceFilter::default()).unwrap());
        assert_eq!(all, ["slow", "fast-0", "fast-1"]);
        assert!(
            all.starts_with(&seen),
            "{seen:?} skipped a record of {all:?}"
        );
        // Paged from the start, every record, once.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = db.list_evidence(&one_at_a_time(after)).unwrap();
            paged.extend(keys(&page));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, all);
    }

    #[test]
    fn a_writer_of_another_database_does_not_hold_the_listing_back() {
        let (_database, mut client) = postgres_database();
        let (other, mut other_client) = postgres_database();
        let mut elsewhere = other_client.transaction().unwrap();
        register_writer(&mut elsewhere).unwrap();
        elsewhere
            .execute("SELECT pg_current_xact_id()", &[])
            .unwrap();
        let mut db = PgDb::new(&mut client);
        let a = runtime(&mut db);
        db.store_evidence(a, &[record(a, "k")], QUOTA, t0())
            .unwrap();
        let page = db.list_evidence(&EvidenceFilter::default()).unwrap();
        assert_eq!(keys(&page), ["k"]);
        elsewhere.rollback().unwrap();
        drop(other);
    }
}
