//! Results as people read them: the latest record of each evidence stream
//! (one check about one subject on one machine), kept in `evidence_latest`
//! as records arrive; filtered and paged listings of it, failing first; one
//! stream's history; a per-check summary across the fleet.
//!
//! Why a table and not only an index: "the latest record per stream" over
//! the `evidence` table is a `GROUP BY uuid` over every record ever kept,
//! however cheap each index probe; the fleet view would cost the whole
//! history on each page. `evidence_latest` has one row per stream, updated
//! in the transaction that stores the record, so the view costs the
//! streams shown.
//!
//! Cursors are opaque to clients (hex of the keyset position) and are
//! keyset positions, not offsets: a record arriving while someone pages
//! never shifts or repeats the rows of later pages.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Db;
use super::evidence::{EVIDENCE_SELECT, EvidenceRow, evidence_row, into_stored_evidence};
use crate::error::StoreError;
use crate::model::{NewEvidence, StoredEvidence, rfc3339};

/// Rows in a page of results when no limit is asked for.
pub const DEFAULT_RESULTS_PAGE: usize = 50;
/// The most rows in a page of results or of a stream's history.
pub const MAX_RESULTS_PAGE: usize = 500;
/// The most checks in the per-check summary (those failing on most
/// machines first).
pub const MAX_SUMMARY_CHECKS: usize = 1000;
/// The most references kept per latest record for the reference filter
/// (a record may carry more; the filter sees the first ones).
pub const MAX_INDEXED_REFERENCES: usize = 64;

/// The state of a record that fails its check.
pub(super) const FAILING_STATE: &str = "not-satisfied";

/// Which latest results to list; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultFilter {
    /// Only this status (`satisfied`, `not-satisfied`).
    pub status: Option<String>,
    /// Only this severity (`labels.severity`).
    pub severity: Option<String>,
    /// Only this plugin.
    pub plugin: Option<String>,
    /// Only this runtime (its id).
    pub runtime: Option<String>,
    /// Only records carrying this reference (a `reference` property, as
    /// the runtime writes them, e.g. `CIS 5.2.8`).
    pub reference: Option<String>,
    /// Rows in the page (default [`DEFAULT_RESULTS_PAGE`], at most
    /// [`MAX_RESULTS_PAGE`]).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// The latest record of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestResult {
    /// The stream (`evidence.uuid`).
    pub uuid: String,
    /// The runtime that reports it.
    pub runtime_id: String,
    /// That runtime's name.
    pub runtime_name: String,
    /// `labels.plugin`.
    pub plugin: Option<String>,
    /// `labels.check`.
    pub check: Option<String>,
    /// `status.state`.
    pub status: Option<String>,
    /// `labels.severity`.
    pub severity: Option<String>,
    /// `labels.subject`, when the check is about one subject.
    pub subject: Option<String>,
    /// The record's title, as the plugin wrote it (untrusted text).
    pub title: Option<String>,
    /// When it arrived (RFC 3339).
    pub received_at: String,
    /// Its idempotency key (to fetch the whole record).
    pub idempotency_key: String,
}

/// One page of latest results, failing first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsPage {
    /// The results: failing first, then by runtime and stream.
    pub results: Vec<LatestResult>,
    /// The cursor of the next page, or `None` on the last.
    pub next: Option<String>,
}

/// One page of a stream's history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamPage {
    /// The records, newest first.
    pub evidence: Vec<StoredEvidence>,
    /// The cursor of the next (older) page, or `None` on the last.
    pub next: Option<String>,
}

/// How one check fares across the fleet (from the latest records of
/// runtimes that are not revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// `labels.plugin`.
    pub plugin: Option<String>,
    /// `labels.check`.
    pub check: Option<String>,
    /// Machines where at least one stream of the check fails.
    pub failing_runtimes: u64,
    /// Machines reporting the check at all.
    pub runtimes: u64,
}

/// What a latest record is filtered and shown by, read from its body.
pub(super) struct Shown {
    pub(super) severity: Option<String>,
    pub(super) subject: Option<String>,
    pub(super) title: Option<String>,
    pub(super) references: Vec<String>,
}

pub(super) fn shown(body: &Value) -> Shown {
    let label = |name: &str| {
        body.pointer(&format!("/labels/{name}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut references: Vec<String> = body
        .get("props")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("reference"))
        .filter_map(|p| p.get("value").and_then(Value::as_str).map(str::to_string))
        .take(MAX_INDEXED_REFERENCES)
        .collect();
    references.sort();
    references.dedup();
    Shown {
        severity: label("severity"),
        subject: label("subject"),
        title: body
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_string),
        references,
    }
}

/// Makes the record just stored as `seq` the latest of its stream, unless
/// a later one is already there (the upsert's `WHERE`).
pub(super) fn record_latest(
    tx: &Transaction<'_>,
    runtime_id: &str,
    record: &NewEvidence,
    seq: i64,
    received_at: i64,
) -> Result<(), StoreError> {
    let shown = shown(&record.body);
    let failing = i64::from(record.status.as_deref() == Some(FAILING_STATE));
    let changed = tx.execute(
        "INSERT INTO evidence_latest
             (runtime_id, uuid, seq, idempotency_key, plugin, check_id, status, severity,
              subject, title, failing, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (runtime_id, uuid) DO UPDATE SET
             seq = excluded.seq, idempotency_key = excluded.idempotency_key,
             plugin = excluded.plugin, check_id = excluded.check_id,
             status = excluded.status, severity = excluded.severity,
             subject = excluded.subject, title = excluded.title,
             failing = excluded.failing, received_at = excluded.received_at
         WHERE excluded.seq > evidence_latest.seq",
        params![
            runtime_id,
            record.uuid,
            seq,
            record.idempotency_key,
            record.plugin,
            record.check,
            record.status,
            shown.severity,
            shown.subject,
            shown.title,
            failing,
            received_at
        ],
    )?;
    if changed == 0 {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM evidence_latest_refs WHERE runtime_id = ?1 AND uuid = ?2",
        params![runtime_id, record.uuid],
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO evidence_latest_refs (runtime_id, uuid, reference) VALUES (?1, ?2, ?3)",
    )?;
    for reference in &shown.references {
        insert.execute(params![runtime_id, record.uuid, reference])?;
    }
    Ok(())
}

/// A page size within `1..=MAX_RESULTS_PAGE`, `default` when not given.
pub(super) fn page_size(limit: Option<usize>, default: usize) -> Result<usize, StoreError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=MAX_RESULTS_PAGE).contains(&limit) => Ok(limit),
        Some(limit) => Err(StoreError::Invalid(format!(
            "limit {limit} is out of range: ask for 1 to {MAX_RESULTS_PAGE} rows per page"
        ))),
    }
}

/// An opaque cursor: the hex of the keyset position's fields.
pub(super) fn encode_cursor(fields: &[&str]) -> String {
    hex::encode(fields.join("\n"))
}

pub(super) fn decode_cursor(cursor: &str, fields: usize) -> Result<Vec<String>, StoreError> {
    let invalid = || {
        StoreError::Invalid(format!(
            "{cursor:?} is not a cursor of this listing: pass the `next` of the previous page"
        ))
    };
    let text = hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let parts: Vec<String> = text.split('\n').map(str::to_string).collect();
    if parts.len() == fields {
        Ok(parts)
    } else {
        Err(invalid())
    }
}

/// The keyset position of a results cursor: (failing, runtime, uuid).
pub(super) fn results_cursor(
    filter: &ResultFilter,
) -> Result<Option<(i64, String, String)>, StoreError> {
    let Some(cursor) = filter.after.as_deref() else {
        return Ok(None);
    };
    let mut parts = decode_cursor(cursor, 3)?.into_iter();
    let failing = parts.next().unwrap_or_default();
    let failing: i64 = failing
        .parse()
        .ok()
        .filter(|f| matches!(f, 0 | 1))
        .ok_or_else(|| StoreError::Invalid(format!("{cursor:?} is not a cursor")))?;
    Ok(Some((
        failing,
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )))
}

/// A page of at most `limit` results out of `rows` (each with its
/// `failing`; fetched with one more than `limit`, to tell whether another
/// page follows).
pub(super) fn assemble_results<E>(
    rows: impl Iterator<Item = Result<(i64, LatestResult), E>>,
    limit: usize,
) -> Result<ResultsPage, StoreError>
where
    StoreError: From<E>,
{
    let mut results = Vec::new();
    let mut last_failing = 0i64;
    let mut more = false;
    for row in rows {
        if results.len() == limit {
            more = true;
            break;
        }
        let (failing, result) = row?;
        last_failing = failing;
        results.push(result);
    }
    let next = match (more, results.last()) {
        (true, Some(last)) => Some(encode_cursor(&[
            &last_failing.to_string(),
            &last.runtime_id,
            &last.uuid,
        ])),
        _ => None,
    };
    Ok(ResultsPage { results, next })
}

/// The `seq` a history page starts below (every record without a cursor).
pub(super) fn history_cursor(before: Option<&str>) -> Result<i64, StoreError> {
    match before {
        None => Ok(i64::MAX),
        Some(cursor) => decode_cursor(cursor, 1)?[0]
            .parse()
            .ok()
            .filter(|seq| *seq > 0)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "{cursor:?} is not a cursor of this listing: pass the `next` of the previous page"
                ))
            }),
    }
}

/// A page of a stream's history out of `rows`, newest first (fetched with
/// one more than `limit`).
pub(super) fn assemble_history<E>(
    rows: impl Iterator<Item = Result<(i64, EvidenceRow), E>>,
    limit: usize,
    before: i64,
) -> Result<StreamPage, StoreError>
where
    StoreError: From<E>,
{
    let mut evidence = Vec::new();
    let mut last_seq = before;
    let mut more = false;
    for row in rows {
        if evidence.len() == limit {
            more = true;
            break;
        }
        let (seq, record) = row?;
        last_seq = seq;
        evidence.push(into_stored_evidence(record)?);
    }
    Ok(StreamPage {
        evidence,
        next: more.then(|| encode_cursor(&[&last_seq.to_string()])),
    })
}

impl Db {
    /// One page of the latest record of each stream of runtimes that are
    /// not revoked, matching `filter`: failing first, then by runtime and
    /// stream.
    pub fn latest_results(&self, filter: &ResultFilter) -> Result<ResultsPage, StoreError> {
        let limit = page_size(filter.limit, DEFAULT_RESULTS_PAGE)?;
        let (after_failing, after_runtime, after_uuid) = match results_cursor(filter)? {
            None => (None, String::new(), String::new()),
            Some((failing, runtime, uuid)) => (Some(failing), runtime, uuid),
        };
        // Failing rows (failing = 1) come first: the keyset runs over
        // (1 - failing, runtime_id, uuid) ascending.
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.uuid, l.runtime_id, r.name, l.plugin, l.check_id, l.status, l.severity,
                    l.subject, l.title, l.received_at, l.idempotency_key, l.failing
             FROM evidence_latest l JOIN runtimes r ON r.id = l.runtime_id
             WHERE r.revoked_at IS NULL
               AND (?1 IS NULL OR l.status = ?1)
               AND (?2 IS NULL OR l.severity = ?2)
               AND (?3 IS NULL OR l.plugin = ?3)
               AND (?4 IS NULL OR l.runtime_id = ?4)
               AND (?5 IS NULL OR EXISTS (SELECT 1 FROM evidence_latest_refs f
                                          WHERE f.runtime_id = l.runtime_id AND f.uuid = l.uuid
                                            AND f.reference = ?5))
               AND (?6 IS NULL
                    OR 1 - l.failing > 1 - ?6
                    OR (1 - l.failing = 1 - ?6
                        AND (l.runtime_id > ?7 OR (l.runtime_id = ?7 AND l.uuid > ?8))))
             ORDER BY 1 - l.failing, l.runtime_id, l.uuid
             LIMIT ?9",
        )?;
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = stmt.query(params![
            filter.status,
            filter.severity,
            filter.plugin,
            filter.runtime,
            filter.reference,
            after_failing,
            after_runtime,
            after_uuid,
            fetch
        ])?;
        let rows = rows.mapped(|row| {
            Ok((
                row.get(11)?,
                LatestResult {
                    uuid: row.get(0)?,
                    runtime_id: row.get(1)?,
                    runtime_name: row.get(2)?,
                    plugin: row.get(3)?,
                    check: row.get(4)?,
                    status: row.get(5)?,
                    severity: row.get(6)?,
                    subject: row.get(7)?,
                    title: row.get(8)?,
                    received_at: rfc3339(row.get(9)?),
                    idempotency_key: row.get(10)?,
                },
            ))
        });
        assemble_results(rows, limit)
    }

    /// One page of the records of stream `uuid`, newest first: at most
    /// `limit` (default [`DEFAULT_RESULTS_PAGE`], at most
    /// [`MAX_RESULTS_PAGE`]) older than the cursor `before`.
    pub fn stream_history(
        &self,
        uuid: &str,
        limit: Option<usize>,
        before: Option<&str>,
    ) -> Result<StreamPage, StoreError> {
        let limit = page_size(limit, DEFAULT_RESULTS_PAGE)?;
        let before = history_cursor(before)?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "{EVIDENCE_SELECT} WHERE uuid = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        ))?;
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = stmt.query(params![uuid, before, fetch])?;
        assemble_history(rows.mapped(evidence_row), limit, before)
    }

    /// How each check fares across the runtimes that are not revoked: the
    /// checks failing on most machines first, at most
    /// [`MAX_SUMMARY_CHECKS`].
    pub fn check_summary(&self) -> Result<Vec<CheckSummary>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.plugin, l.check_id,
                    COUNT(DISTINCT CASE WHEN l.failing = 1 THEN l.runtime_id END),
                    COUNT(DISTINCT l.runtime_id)
             FROM evidence_latest l JOIN runtimes r ON r.id = l.runtime_id
             WHERE r.revoked_at IS NULL
             GROUP BY l.plugin, l.check_id
             ORDER BY 3 DESC, 4 DESC, l.plugin, l.check_id
             LIMIT ?1",
        )?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let rows = stmt.query_map(
            params![i64::try_from(MAX_SUMMARY_CHECKS).unwrap_or(i64::MAX)],
            |row| {
                Ok(CheckSummary {
                    plugin: row.get(0)?,
                    check: row.get(1)?,
                    failing_runtimes: count(row.get(2)?),
                    runtimes: count(row.get(3)?),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The distinct values the result filters offer (plugins, severities),
    /// for the web view's select boxes; bounded like the summary.
    pub fn result_facets(&self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let distinct = |column: &str| -> Result<Vec<String>, StoreError> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT DISTINCT {column} FROM evidence_latest WHERE {column} IS NOT NULL
                 ORDER BY 1 LIMIT {MAX_SUMMARY_CHECKS}"
            ))?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        Ok((distinct("plugin")?, distinct("severity")?))
    }

    /// The latest record of stream `uuid`, if it has one.
    pub fn latest_of_stream(&self, uuid: &str) -> Result<Option<LatestResult>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT l.uuid, l.runtime_id, r.name, l.plugin, l.check_id, l.status,
                        l.severity, l.subject, l.title, l.received_at, l.idempotency_key
                 FROM evidence_latest l JOIN runtimes r ON r.id = l.runtime_id
                 WHERE l.uuid = ?1
                 ORDER BY l.seq DESC LIMIT 1",
                params![uuid],
                |row| {
                    Ok(LatestResult {
                        uuid: row.get(0)?,
                        runtime_id: row.get(1)?,
                        runtime_name: row.get(2)?,
                        plugin: row.get(3)?,
                        check: row.get(4)?,
                        status: row.get(5)?,
                        severity: row.get(6)?,
                        subject: row.get(7)?,
                        title: row.get(8)?,
                        received_at: rfc3339(row.get(9)?),
                        idempotency_key: row.get(10)?,
                    })
                },
            )
            .optional()?;
        Ok(row)
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

    pub(crate) fn record(
        runtime: Uuid,
        key: &str,
        stream: &str,
        check: &str,
        failing: bool,
        references: &[&str],
    ) -> NewEvidence {
        let props: Vec<Value> = references
            .iter()
            .map(|r| json!({"name": "reference", "value": r}))
            .collect();
        let body = json!({
            "uuid": stream,
            "title": format!("{check} title"),
            "labels": {"plugin": "sshd", "check": check, "severity": if failing {"high"} else {"low"}},
            "status": {"state": if failing {"not-satisfied"} else {"satisfied"}},
            "subjects": [{"type": "InventoryItem", "identifier": runtime.to_string()}],
            "props": props
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

    fn stream() -> String {
        Uuid::new_v4().to_string()
    }

    fn keys(page: &ResultsPage) -> Vec<(String, Option<String>)> {
        page.results
            .iter()
            .map(|r| (r.runtime_name.clone(), r.status.clone()))
            .collect()
    }

    /// Stores two records of one stream (and one with more references
    /// than are indexed) before the results tables existed.
    fn older_records(db: &mut dyn Backend) -> (Uuid, String) {
        let a = runtime(db, "a");
        let s = stream();
        db.store_evidence(a, &[record(a, "1", &s, "c", true, &["CIS 1"])], QUOTA, t0())
            .unwrap();
        db.store_evidence(
            a,
            &[record(a, "2", &s, "c", false, &["CIS 2"])],
            QUOTA,
            later(1),
        )
        .unwrap();
        let many: Vec<String> = (0..MAX_INDEXED_REFERENCES + 1)
            .map(|i| format!("R{i:03}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        db.store_evidence(
            a,
            &[record(a, "3", &stream(), "d", true, &many)],
            QUOTA,
            t0(),
        )
        .unwrap();
        (a, s)
    }

    /// What the migration must have filled from [`older_records`].
    fn check_filled(db: &mut dyn Backend, a: Uuid, s: &str) {
        let page = db
            .latest_results(&ResultFilter {
                plugin: Some("sshd".to_string()),
                status: Some("satisfied".to_string()),
                ..ResultFilter::default()
            })
            .unwrap();
        assert_eq!(page.results.len(), 1);
        let latest = &page.results[0];
        assert_eq!(
            (latest.uuid.as_str(), latest.idempotency_key.as_str()),
            (s, "2")
        );
        assert_eq!(latest.severity.as_deref(), Some("low"));
        assert_eq!(latest.title.as_deref(), Some("c title"));
        assert_eq!(latest.runtime_id, a.to_string());
        let mut by_reference = |reference: &str| {
            db.latest_results(&ResultFilter {
                reference: Some(reference.to_string()),
                ..ResultFilter::default()
            })
            .unwrap()
            .results
            .len()
        };
        assert_eq!((by_reference("CIS 2"), by_reference("CIS 1")), (1, 0));
        let failing = db.latest_results(&ResultFilter::default()).unwrap();
        assert_eq!(failing.results[0].severity.as_deref(), Some("high"));
    }

    #[test]
    fn the_migration_fills_the_latest_records_of_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let (a, s) = {
            let mut db = Db::open(&path).unwrap();
            let (a, s) = older_records(&mut db);
            // Back to schema 5, as a control plane before this one left it.
            db.conn
                .execute_batch(
                    "DROP TABLE evidence_latest; DROP TABLE evidence_latest_refs;
                     DROP TABLE issued_certificates;
                     DROP INDEX evidence_runtime_received; PRAGMA user_version = 5;",
                )
                .unwrap();
            (a, s)
        };
        check_filled(&mut Db::open(&path).unwrap(), a, &s);
    }

    #[test]
    fn the_postgres_migration_fills_the_latest_records_of_an_older_database() {
        let (_database, mut client) = postgres_database();
        let (a, s) = older_records(&mut crate::db::PgDb::new(&mut client));
        // Back to schema 1, as a control plane before this one left it.
        client
            .batch_execute(
                "DROP TABLE evidence_latest; DROP TABLE evidence_latest_refs;
                 DROP TABLE issued_certificates; DROP INDEX evidence_runtime_received;
                 ALTER TABLE evidence DROP COLUMN txid;
                 DELETE FROM refinery_schema_history WHERE version >= 2;",
            )
            .unwrap();
        crate::db::postgres::migrate(&mut client).unwrap();
        let mut db = crate::db::PgDb::new(&mut client);
        check_filled(&mut db, a, &s);
        // As records stored since are, references past the bound are not
        // indexed (SQLite's migration 6 indexed them all).
        let indexed = db
            .query_texts("SELECT reference FROM evidence_latest_refs WHERE reference LIKE 'R%'")
            .unwrap();
        assert_eq!(indexed.len(), MAX_INDEXED_REFERENCES);
        assert!(!indexed.contains(&"R064".to_string()), "{indexed:?}");
    }

    backend_tests! {
        fn the_latest_record_of_each_stream_is_kept_failing_first(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let b = runtime(db, "b");
            let (sa, sb) = (stream(), stream());
            db.store_evidence(a, &[record(a, "1", &sa, "c1", true, &[])], QUOTA, t0())
                .unwrap();
            db.store_evidence(b, &[record(b, "1", &sb, "c1", true, &[])], QUOTA, t0())
                .unwrap();
            // A's stream passes on its next run; B's still fails.
            db.store_evidence(
                a,
                &[record(a, "2", &sa, "c1", false, &[])],
                QUOTA,
                later(60),
            )
            .unwrap();
            let page = db.latest_results(&ResultFilter::default()).unwrap();
            assert_eq!(
                keys(&page),
                [
                    ("b".to_string(), Some("not-satisfied".to_string())),
                    ("a".to_string(), Some("satisfied".to_string()))
                ]
            );
            assert_eq!(page.results[1].idempotency_key, "2");
            assert_eq!(page.results[1].title.as_deref(), Some("c1 title"));
            // A duplicate of the older record changes nothing.
            db.store_evidence(a, &[record(a, "1", &sa, "c1", true, &[])], QUOTA, later(90))
                .unwrap();
            let again = db.latest_results(&ResultFilter::default()).unwrap();
            assert_eq!(again, page);
            let summary = db.check_summary().unwrap();
            assert_eq!(
                (summary[0].failing_runtimes, summary[0].runtimes),
                (1, 2),
                "{summary:?}"
            );
            // A revoked runtime leaves the view and the summary.
            db.revoke_runtime(&b.to_string(), later(100)).unwrap();
            let page = db.latest_results(&ResultFilter::default()).unwrap();
            assert_eq!(
                keys(&page),
                [("a".to_string(), Some("satisfied".to_string()))]
            );
            assert_eq!(db.check_summary().unwrap()[0].failing_runtimes, 0);
        }

        fn results_are_filtered(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let b = runtime(db, "b");
            db.store_evidence(
                a,
                &[
                    record(a, "1", &stream(), "c1", true, &["CIS 5.2.8"]),
                    record(a, "2", &stream(), "c2", false, &["CIS 5.2.9", "NIST AC-2"]),
                ],
                QUOTA,
                t0(),
            )
            .unwrap();
            db.store_evidence(
                b,
                &[record(b, "1", &stream(), "c1", false, &[])],
                QUOTA,
                t0(),
            )
            .unwrap();
            let mut count = |filter: ResultFilter| db.latest_results(&filter).unwrap().results.len();
            assert_eq!(count(ResultFilter::default()), 3);
            let mut by = |f: fn(&mut ResultFilter, String), value: &str| {
                let mut filter = ResultFilter::default();
                f(&mut filter, value.to_string());
                count(filter)
            };
            assert_eq!(by(|f, v| f.status = Some(v), "not-satisfied"), 1);
            assert_eq!(by(|f, v| f.severity = Some(v), "low"), 2);
            assert_eq!(by(|f, v| f.plugin = Some(v), "sshd"), 3);
            assert_eq!(by(|f, v| f.plugin = Some(v), "other"), 0);
            assert_eq!(by(|f, v| f.runtime = Some(v), &b.to_string()), 1);
            assert_eq!(by(|f, v| f.reference = Some(v), "NIST AC-2"), 1);
            assert_eq!(
                by(|f, v| f.reference = Some(v), "CIS 5.2"),
                0,
                "exact match"
            );
            let (plugins, severities) = db.result_facets().unwrap();
            assert_eq!(
                (plugins, severities),
                (vec!["sshd".into()], vec!["high".into(), "low".into()])
            );
        }

        fn result_pages_are_stable_under_concurrent_inserts(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let records: Vec<_> = (0..7)
                .map(|i| record(a, &i.to_string(), &stream(), "c", i % 3 == 0, &[]))
                .collect();
            db.store_evidence(a, &records, QUOTA, t0()).unwrap();
            let mut seen = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = db
                    .latest_results(&ResultFilter {
                        limit: Some(2),
                        after: after.clone(),
                        ..ResultFilter::default()
                    })
                    .unwrap();
                assert!(page.results.len() <= 2);
                seen.extend(page.results.iter().map(|r| r.uuid.clone()));
                pages += 1;
                if pages == 2 {
                    // A new failing stream arrives while paging: it sorts before
                    // the cursor, so later pages neither repeat nor skip rows.
                    db.store_evidence(
                        a,
                        &[record(a, "new", &stream(), "c", true, &[])],
                        QUOTA,
                        later(1),
                    )
                    .unwrap();
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!((seen.len(), unique.len()), (7, 7), "{seen:?}");
            assert_eq!(pages, 4);
        }

        fn page_bounds_and_bad_cursors_are_refused(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let records: Vec<_> = (0..MAX_RESULTS_PAGE + 1)
                .map(|i| record(a, &i.to_string(), &stream(), "c", false, &[]))
                .collect();
            db.store_evidence(a, &records, QUOTA, t0()).unwrap();
            let mut page = |limit: Option<usize>| {
                db.latest_results(&ResultFilter {
                    limit,
                    ..ResultFilter::default()
                })
            };
            assert_eq!(page(None).unwrap().results.len(), DEFAULT_RESULTS_PAGE);
            let full = page(Some(MAX_RESULTS_PAGE)).unwrap();
            assert_eq!(full.results.len(), MAX_RESULTS_PAGE);
            assert!(full.next.is_some());
            for limit in [0, MAX_RESULTS_PAGE + 1] {
                assert!(matches!(page(Some(limit)), Err(StoreError::Invalid(_))));
            }
            for cursor in ["zz", "31", &hex::encode("2\nx\ny"), &hex::encode("1\nx")] {
                let result = db.latest_results(&ResultFilter {
                    after: Some(cursor.to_string()),
                    ..ResultFilter::default()
                });
                assert!(matches!(result, Err(StoreError::Invalid(_))), "{cursor}");
            }
            for cursor in [
                "zz",
                &hex::encode("0"),
                &hex::encode("x"),
                &hex::encode("1\n2"),
            ] {
                assert!(
                    matches!(
                        db.stream_history("x", None, Some(cursor)),
                        Err(StoreError::Invalid(_))
                    ),
                    "{cursor}"
                );
            }
            assert!(matches!(
                db.stream_history("x", Some(MAX_RESULTS_PAGE + 1), None),
                Err(StoreError::Invalid(_))
            ));
        }

        fn a_streams_history_is_paged_newest_first(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let s = stream();
            for i in 0..5 {
                db.store_evidence(
                    a,
                    &[record(a, &i.to_string(), &s, "c", i % 2 == 0, &[])],
                    QUOTA,
                    later(i64::from(i)),
                )
                .unwrap();
            }
            db.store_evidence(
                a,
                &[record(a, "other", &stream(), "c", true, &[])],
                QUOTA,
                t0(),
            )
            .unwrap();
            let mut seen = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let page = db.stream_history(&s, Some(2), before.as_deref()).unwrap();
                seen.extend(page.evidence.iter().map(|e| e.idempotency_key.clone()));
                match page.next {
                    Some(next) => before = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, ["4", "3", "2", "1", "0"]);
            let latest = db.latest_of_stream(&s).unwrap().unwrap();
            assert_eq!(latest.idempotency_key, "4");
            assert_eq!(db.latest_of_stream(&stream()).unwrap(), None);
        }

        fn references_past_the_bound_are_not_indexed(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let references: Vec<String> = (0..MAX_INDEXED_REFERENCES + 1)
                .map(|i| format!("R{i:03}"))
                .collect();
            let refs: Vec<&str> = references.iter().map(String::as_str).collect();
            db.store_evidence(
                a,
                &[record(a, "1", &stream(), "c", true, &refs)],
                QUOTA,
                t0(),
            )
            .unwrap();
            let indexed = db
                .query_texts("SELECT COUNT(*) FROM evidence_latest_refs")
                .unwrap();
            assert_eq!(indexed, [MAX_INDEXED_REFERENCES.to_string()]);
        }

        fn the_summary_and_the_facets_are_bounded(db: &mut dyn Backend) {
            let a = runtime(db, "a");
            let records: Vec<_> = (0..=MAX_SUMMARY_CHECKS)
                .map(|i| {
                    let mut r = record(
                        a,
                        &i.to_string(),
                        &stream(),
                        &format!("c{i:04}"),
                        i == 7,
                        &[],
                    );
                    r.plugin = Some(format!("p{i:04}"));
                    r
                })
                .collect();
            db.store_evidence(a, &records, QUOTA, t0()).unwrap();
            let summary = db.check_summary().unwrap();
            assert_eq!(summary.len(), MAX_SUMMARY_CHECKS);
            assert_eq!(summary[0].check.as_deref(), Some("c0007"), "failing first");
            let (plugins, _) = db.result_facets().unwrap();
            assert_eq!(plugins.len(), MAX_SUMMARY_CHECKS);
        }
    }
}
