//! Results on PostgreSQL: the latest record of each stream in
//! `evidence_latest`, kept in the transaction that stores the record (see
//! `db/results.rs` for why a table), and the views read from it.
//!
//! Replicas may store records of one stream at once; the upsert keeps the
//! row of the highest `seq` whatever order the transactions reach it in
//! (its `WHERE`), and PostgreSQL's `ON CONFLICT` waits for a concurrent
//! writer of the same row and then applies that condition to its version.

use postgres::Transaction;

use super::PgDb;
use super::evidence::evidence_row;
use crate::db::evidence::EVIDENCE_SELECT;
use crate::db::results::{
    FAILING_STATE, MAX_SUMMARY_CHECKS, assemble_history, assemble_results, history_cursor,
    page_size, results_cursor, shown,
};
use crate::db::{
    CheckSummary, DEFAULT_RESULTS_PAGE, LatestResult, ResultFilter, ResultsPage, StreamPage,
};
use crate::error::StoreError;
use crate::model::{NewEvidence, rfc3339};

/// Makes the record just stored as `seq` the latest of its stream, unless
/// a later one is already there (the upsert's `WHERE`).
pub(super) fn record_latest(
    tx: &mut Transaction<'_>,
    runtime_id: &str,
    record: &NewEvidence,
    seq: i64,
    received_at: i64,
) -> Result<(), StoreError> {
    let shown = shown(&record.body);
    let failing = i32::from(record.status.as_deref() == Some(FAILING_STATE));
    let changed = tx.execute(
        "INSERT INTO evidence_latest
             (runtime_id, uuid, seq, idempotency_key, plugin, check_id, status, severity,
              subject, title, failing, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (runtime_id, uuid) DO UPDATE SET
             seq = excluded.seq, idempotency_key = excluded.idempotency_key,
             plugin = excluded.plugin, check_id = excluded.check_id,
             status = excluded.status, severity = excluded.severity,
             subject = excluded.subject, title = excluded.title,
             failing = excluded.failing, received_at = excluded.received_at
         WHERE excluded.seq > evidence_latest.seq",
        &[
            &runtime_id,
            &record.uuid,
            &seq,
            &record.idempotency_key,
            &record.plugin,
            &record.check,
            &record.status,
            &shown.severity,
            &shown.subject,
            &shown.title,
            &failing,
            &received_at,
        ],
    )?;
    if changed == 0 {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM evidence_latest_refs WHERE runtime_id = $1 AND uuid = $2",
        &[&runtime_id, &record.uuid],
    )?;
    if !shown.references.is_empty() {
        tx.execute(
            "INSERT INTO evidence_latest_refs (runtime_id, uuid, reference)
             SELECT $1, $2, unnest($3::text[])",
            &[&runtime_id, &record.uuid, &shown.references],
        )?;
    }
    Ok(())
}

const LATEST_SELECT: &str = "SELECT l.uuid, l.runtime_id, r.name, l.plugin, l.check_id, l.status,
            l.severity, l.subject, l.title, l.received_at, l.idempotency_key, l.failing
     FROM evidence_latest l JOIN runtimes r ON r.id = l.runtime_id";

fn latest_row(row: &postgres::Row) -> Result<(i64, LatestResult), StoreError> {
    Ok((
        i64::from(row.try_get::<_, i32>(11)?),
        LatestResult {
            uuid: row.try_get(0)?,
            runtime_id: row.try_get(1)?,
            runtime_name: row.try_get(2)?,
            plugin: row.try_get(3)?,
            check: row.try_get(4)?,
            status: row.try_get(5)?,
            severity: row.try_get(6)?,
            subject: row.try_get(7)?,
            title: row.try_get(8)?,
            received_at: rfc3339(row.try_get(9)?),
            idempotency_key: row.try_get(10)?,
        },
    ))
}

impl PgDb<'_> {
    pub(super) fn latest_results(
        &mut self,
        filter: &ResultFilter,
    ) -> Result<ResultsPage, StoreError> {
        let limit = page_size(filter.limit, DEFAULT_RESULTS_PAGE)?;
        // The keyset runs over (1 - failing, runtime_id, uuid), failing
        // first; without a cursor, from before the first row (-1).
        let (after_order, after_runtime, after_uuid) = match results_cursor(filter)? {
            None => (-1, String::new(), String::new()),
            Some((failing, runtime, uuid)) => (1 - i32::from(failing == 1), runtime, uuid),
        };
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.client.query(
            &format!(
                "{LATEST_SELECT}
                 WHERE r.revoked_at IS NULL
                   AND ($1::text IS NULL OR l.status = $1)
                   AND ($2::text IS NULL OR l.severity = $2)
                   AND ($3::text IS NULL OR l.plugin = $3)
                   AND ($4::text IS NULL OR l.runtime_id = $4)
                   AND ($5::text IS NULL OR EXISTS (
                        SELECT 1 FROM evidence_latest_refs f
                        WHERE f.runtime_id = l.runtime_id AND f.uuid = l.uuid
                          AND f.reference = $5))
                   AND (1 - l.failing, l.runtime_id, l.uuid) > ($6::integer, $7::text, $8::text)
                 ORDER BY 1 - l.failing, l.runtime_id, l.uuid
                 LIMIT $9"
            ),
            &[
                &filter.status,
                &filter.severity,
                &filter.plugin,
                &filter.runtime,
                &filter.reference,
                &after_order,
                &after_runtime,
                &after_uuid,
                &fetch,
            ],
        )?;
        assemble_results(rows.iter().map(latest_row), limit)
    }

    pub(super) fn stream_history(
        &mut self,
        uuid: &str,
        limit: Option<usize>,
        before: Option<&str>,
    ) -> Result<StreamPage, StoreError> {
        let limit = page_size(limit, DEFAULT_RESULTS_PAGE)?;
        let before = history_cursor(before)?;
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.client.query(
            &format!("{EVIDENCE_SELECT} WHERE uuid = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"),
            &[&uuid, &before, &fetch],
        )?;
        assemble_history(rows.iter().map(evidence_row), limit, before)
    }

    pub(super) fn check_summary(&mut self) -> Result<Vec<CheckSummary>, StoreError> {
        // NULLS FIRST: SQLite's order, so both backends list alike.
        let rows = self.client.query(
            "SELECT l.plugin, l.check_id,
                    COUNT(DISTINCT CASE WHEN l.failing = 1 THEN l.runtime_id END),
                    COUNT(DISTINCT l.runtime_id)
             FROM evidence_latest l JOIN runtimes r ON r.id = l.runtime_id
             WHERE r.revoked_at IS NULL
             GROUP BY l.plugin, l.check_id
             ORDER BY 3 DESC, 4 DESC, l.plugin NULLS FIRST, l.check_id NULLS FIRST
             LIMIT $1",
            &[&i64::try_from(MAX_SUMMARY_CHECKS).unwrap_or(i64::MAX)],
        )?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        rows.iter()
            .map(|row| {
                Ok(CheckSummary {
                    plugin: row.try_get(0)?,
                    check: row.try_get(1)?,
                    failing_runtimes: count(row.try_get(2)?),
                    runtimes: count(row.try_get(3)?),
                })
            })
            .collect()
    }

    pub(super) fn result_facets(&mut self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let mut distinct = |column: &str| -> Result<Vec<String>, StoreError> {
            let rows = self.client.query(
                &format!(
                    "SELECT DISTINCT {column} FROM evidence_latest WHERE {column} IS NOT NULL
                     ORDER BY 1 LIMIT {MAX_SUMMARY_CHECKS}"
                ),
                &[],
            )?;
            rows.iter()
                .map(|row| Ok(row.try_get::<_, String>(0)?))
                .collect::<Result<_, StoreError>>()
        };
        Ok((distinct("plugin")?, distinct("severity")?))
    }

    pub(super) fn latest_of_stream(
        &mut self,
        uuid: &str,
    ) -> Result<Option<LatestResult>, StoreError> {
        let row = self.client.query_opt(
            &format!("{LATEST_SELECT} WHERE l.uuid = $1 ORDER BY l.seq DESC LIMIT 1"),
            &[&uuid],
        )?;
        row.map(|row| latest_row(&row).map(|(_, result)| result))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Backend;
    use crate::db::test_support::*;
    use crate::model::RecordRules;
    use serde_json::json;
    use uuid::Uuid;

    const QUOTA: u64 = 1 << 30;

    fn record(runtime: Uuid, key: &str, stream: &str, failing: bool) -> NewEvidence {
        let body = json!({
            "uuid": stream,
            "title": key,
            "labels": {"plugin": "p", "check": "c"},
            "status": {"state": if failing {"not-satisfied"} else {"satisfied"}},
            "subjects": [{"type": "InventoryItem", "identifier": runtime.to_string()}],
            "props": [{"name": "reference", "value": key}]
        });
        let rules = RecordRules {
            subjects_bound: true,
            runtime_id: runtime,
            max_record_bytes: 1 << 20,
        };
        NewEvidence::from_body(key.to_string(), body, "test", rules).unwrap()
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_latest() {
        let (_database, mut client) = postgres_database();
        let a = Uuid::parse_str(&enrolled(&mut PgDb::new(&mut client), "g").runtime_id).unwrap();
        let s = Uuid::new_v4().to_string();
        let (newer, older) = (record(a, "newer", &s, true), record(a, "older", &s, false));
        let mut tx = client.transaction().unwrap();
        // A transaction that took its seq earlier but reaches the row later.
        record_latest(&mut tx, &a.to_string(), &newer, 20, 0).unwrap();
        record_latest(&mut tx, &a.to_string(), &older, 10, 0).unwrap();
        tx.commit().unwrap();
        let mut db = PgDb::new(&mut client);
        let latest = db.latest_of_stream(&s).unwrap().unwrap();
        assert_eq!(latest.idempotency_key, "newer");
        let refs = db
            .query_texts("SELECT reference FROM evidence_latest_refs")
            .unwrap();
        assert_eq!(refs, ["newer"]);
    }

    #[test]
    fn concurrent_writers_of_one_stream_leave_the_newest_record_latest() {
        let database = test_postgres::TestDatabase::create();
        let mut client = database.connect();
        crate::db::postgres::migrate(&mut client).unwrap();
        let runtimes: Vec<Uuid> = (0..2)
            .map(|_| {
                Uuid::parse_str(&enrolled(&mut PgDb::new(&mut client), "g").runtime_id).unwrap()
            })
            .collect();
        // Three streams per runtime (a stream belongs to one runtime).
        let streams: Vec<Vec<String>> = (0..2)
            .map(|_| (0..3).map(|_| Uuid::new_v4().to_string()).collect())
            .collect();
        // Four writers (replicas' connections) per runtime, each sending
        // batches that touch every stream of the runtime.
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let mut client = database.connect();
                let runtime = runtimes[writer % 2];
                let streams = streams[writer % 2].clone();
                std::thread::spawn(move || {
                    let mut db = PgDb::new(&mut client);
                    for batch in 0..10 {
                        let records: Vec<_> = streams
                            .iter()
                            .enumerate()
                            .map(|(i, stream)| {
                                let key = format!("w{writer}-b{batch}-s{i}");
                                record(runtime, &key, stream, batch % 2 == 0)
                            })
                            .collect();
                        (&mut db as &mut dyn Backend)
                            .store_evidence(runtime, &records, QUOTA, t0())
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let mut db = PgDb::new(&mut client);
        let wrong = db
            .query_texts(
                "SELECT l.uuid FROM evidence_latest l
                 WHERE l.seq <> (SELECT max(e.seq) FROM evidence e
                                 WHERE e.runtime_id = l.runtime_id AND e.uuid = l.uuid)
                    OR l.idempotency_key <> (SELECT e.idempotency_key FROM evidence e
                                             WHERE e.seq = l.seq)
                    OR NOT EXISTS (SELECT 1 FROM evidence_latest_refs f
                                   WHERE f.runtime_id = l.runtime_id AND f.uuid = l.uuid
                                     AND f.reference = l.idempotency_key)",
            )
            .unwrap();
        assert!(wrong.is_empty(), "{wrong:?}");
        let counts = db
            .query_texts(
                "SELECT (SELECT count(*) FROM evidence_latest) || ' '
                     || (SELECT count(*) FROM evidence_latest_refs) || ' '
                     || (SELECT count(*) FROM evidence)",
            )
            .unwrap();
        assert_eq!(counts, ["6 6 240"]);
    }
}
