//! Evidence records: idempotent batches per runtime, checked against other
//! runtimes' identities and the runtime's storage quota, and the paged
//! listing.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::Db;
use super::results::{decode_cursor, encode_cursor};
use crate::error::StoreError;
use crate::model::{
    BatchOutcome, DEFAULT_PAGE_SIZE, EvidenceFilter, EvidencePage, MAX_PAGE_BYTES, MAX_PAGE_SIZE,
    NewEvidence, StoredEvidence, evidence_sha256, rfc3339, to_millis,
};

impl Db {
    /// Stores a batch of evidence from one runtime in one transaction, or
    /// nothing if any record is refused. A record whose idempotency key that
    /// runtime already stored (earlier or in this batch) is a duplicate, not
    /// stored again, if it is the same record (by canonical hash); with
    /// another record it is a conflict. A record is also refused when its
    /// uuid was first stored by another runtime (conflict), when its
    /// `labels.host` is the enrolled name of another runtime and not this
    /// runtime's (identity), or when the runtime's stored records would
    /// exceed `quota` bytes.
    pub fn store_evidence(
        &mut self,
        runtime_id: Uuid,
        records: &[NewEvidence],
        quota: u64,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, StoreError> {
        let runtime_id = runtime_id.to_string();
        let now = to_millis(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let runtime: Option<(String, i64)> = tx
            .query_row(
                "SELECT name, stored_bytes FROM runtimes WHERE id = ?1",
                params![runtime_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((name, stored_bytes)) = runtime else {
            return Err(StoreError::RuntimeNotFound(runtime_id));
        };
        let mut outcome = BatchOutcome {
            accepted: 0,
            duplicates: 0,
        };
        let mut added: u64 = 0;
        {
            let mut host_of_another = tx.prepare(
                "SELECT EXISTS (SELECT 1 FROM runtimes
                                WHERE name = ?1 AND id != ?2 AND revoked_at IS NULL)",
            )?;
            // A uuid belongs to the runtime that stored it first.
            let mut uuid_owner =
                tx.prepare("SELECT runtime_id FROM evidence WHERE uuid = ?1 ORDER BY seq LIMIT 1")?;
            let mut insert = tx.prepare(
                "INSERT INTO evidence
                     (idempotency_key, runtime_id, uuid, plugin, check_id, status, body,
                      received_at, body_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (runtime_id, idempotency_key) DO NOTHING",
            )?;
            let mut stored = tx.prepare(
                "SELECT body_sha256, body FROM evidence
                 WHERE runtime_id = ?1 AND idempotency_key = ?2",
            )?;
            for record in records {
                if let Some(host) = record.host.as_deref().filter(|host| *host != name)
                    && host_of_another.query_row(params![host, runtime_id], |row| row.get(0))?
                {
                    return Err(identity_error(record, host, &name));
                }
                let owner: Option<String> = uuid_owner
                    .query_row(params![record.uuid], |row| row.get(0))
                    .optional()?;
                if owner.is_some_and(|owner| owner != runtime_id) {
                    return Err(uuid_conflict(record));
                }
                let inserted = insert.execute(params![
                    record.idempotency_key,
                    runtime_id,
                    record.uuid,
                    record.plugin,
                    record.check,
                    record.status,
                    record.text,
                    now,
                    record.body_sha256,
                ])?;
                if inserted == 1 {
                    let seq = tx.last_insert_rowid();
                    super::results::record_latest(&tx, &runtime_id, record, seq, now)?;
                    outcome.accepted += 1;
                    added = added.saturating_add(record.text.len() as u64);
                    continue;
                }
                let (hash, body): (Option<String>, String) = stored
                    .query_row(params![runtime_id, record.idempotency_key], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?;
                check_same_record(record, hash, &body)?;
                outcome.duplicates += 1;
            }
        }
        check_quota(stored_bytes, added, quota)?;
        tx.execute(
            "UPDATE runtimes SET stored_bytes = stored_bytes + ?2 WHERE id = ?1",
            params![runtime_id, i64::try_from(added).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    /// The bytes of evidence `runtime_id` stores (what its quota counts).
    pub fn stored_bytes(&self, runtime_id: Uuid) -> Result<u64, StoreError> {
        let bytes: Option<i64> = self
            .conn
            .query_row(
                "SELECT stored_bytes FROM runtimes WHERE id = ?1",
                params![runtime_id.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        bytes
            .map(|b| u64::try_from(b).unwrap_or(0))
            .ok_or_else(|| StoreError::RuntimeNotFound(runtime_id.to_string()))
    }

    /// One stored evidence record, by runtime and idempotency key.
    pub fn evidence(
        &self,
        runtime_id: Uuid,
        idempotency_key: &str,
    ) -> Result<Option<StoredEvidence>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("{EVIDENCE_SELECT} WHERE runtime_id = ?1 AND idempotency_key = ?2"),
                params![runtime_id.to_string(), idempotency_key],
                evidence_row,
            )
            .optional()?;
        row.map(|(_, row)| into_stored_evidence(row)).transpose()
    }

    /// One page of the stored evidence matching `filter`, in the order it
    /// arrived: at most `filter.limit` records (default
    /// [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`]) after the cursor
    /// `filter.after`, ending early past [`MAX_PAGE_BYTES`] of records.
    pub fn list_evidence(&self, filter: &EvidenceFilter) -> Result<EvidencePage, StoreError> {
        let (limit, after) = page_bounds(filter)?;
        let mut stmt = self.conn.prepare(&format!(
            "{EVIDENCE_SELECT}
             WHERE seq > ?4
               AND (?1 IS NULL OR runtime_id = ?1)
               AND (?2 IS NULL OR plugin = ?2)
               AND (?3 IS NULL OR check_id = ?3)
             ORDER BY seq
             LIMIT ?5"
        ))?;
        let runtime = runtime_filter(filter);
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = stmt.query(params![runtime, filter.plugin, filter.check, after, fetch])?;
        let rows = rows.mapped(|row| {
            let (seq, record) = evidence_row(row)?;
            Ok((encode_cursor(&[&seq.to_string()]), record))
        });
        assemble_page(rows, limit)
    }

    /// The latest record of each evidence stream (`uuid`) of one runtime, or
    /// of every runtime, by runtime then in the order they arrived (the
    /// OSCAL export), read through `evidence_latest` (one row per stream)
    /// rather than grouping every record ever kept. Bounded: past `max_records` records or `max_bytes` of
    /// them, [`StoreError::TooLarge`] says to export less.
    pub fn latest_evidence(
        &self,
        runtime: Option<&str>,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "{EVIDENCE_SELECT}
             WHERE seq IN (SELECT seq FROM evidence_latest
                           WHERE ?1 IS NULL OR runtime_id = ?1)
             ORDER BY runtime_id, seq"
        ))?;
        let rows = stmt.query(params![canonical_runtime(runtime)])?;
        collect_latest(rows.mapped(evidence_row), max_records, max_bytes)
    }
}

/// The size of a page and its cursor, checked.
pub(super) fn page_bounds(filter: &EvidenceFilter) -> Result<(usize, i64), StoreError> {
    let limit = page_limit(filter)?;
    // The cursor is the last record's `seq`, opaque to clients; a record
    // arriving while they page gets a later `seq`, so it never shifts the
    // pages still to come.
    let after = match filter.after.as_deref() {
        None => 0,
        Some(cursor) => cursor_number(cursor, &decode_cursor(cursor, 1)?[0])?,
    };
    Ok((limit, after))
}

/// The size of a page, checked.
pub(super) fn page_limit(filter: &EvidenceFilter) -> Result<usize, StoreError> {
    match filter.limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(limit) if (1..=MAX_PAGE_SIZE).contains(&limit) => Ok(limit),
        Some(limit) => Err(StoreError::Invalid(format!(
            "limit {limit} is out of range: ask for 1 to {MAX_PAGE_SIZE} records per page"
        ))),
    }
}

/// One number of an evidence cursor (`cursor` whole, for the error).
pub(super) fn cursor_number(cursor: &str, field: &str) -> Result<i64, StoreError> {
    field.parse().ok().filter(|c| *c >= 0).ok_or_else(|| {
        StoreError::Invalid(format!(
            "after {cursor:?} is not a cursor: pass the `next` of the previous page"
        ))
    })
}

/// The runtime filter as ids are stored (a UUID's canonical text).
pub(super) fn runtime_filter(filter: &EvidenceFilter) -> Option<String> {
    canonical_runtime(filter.runtime.as_deref())
}

/// A runtime id as ids are stored: a UUID's canonical text (other text is
/// kept, and matches nothing).
pub(super) fn canonical_runtime(runtime: Option<&str>) -> Option<String> {
    runtime.map(|id| Uuid::parse_str(id).map_or_else(|_| id.to_string(), |u| u.to_string()))
}

/// The latest records out of `rows`, refused past `max_records` records or
/// `max_bytes` of them.
pub(super) fn collect_latest<E>(
    rows: impl Iterator<Item = Result<(i64, EvidenceRow), E>>,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<StoredEvidence>, StoreError>
where
    StoreError: From<E>,
{
    let mut latest = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let (_, record) = row?;
        bytes = bytes.saturating_add(record.7.len());
        if latest.len() == max_records || bytes > max_bytes {
            return Err(StoreError::TooLarge(format!(
                "more than {max_records} evidence streams or {max_bytes} bytes of their latest records to export: export one runtime at a time (runtime=<id>)"
            )));
        }
        latest.push(into_stored_evidence(record)?);
    }
    Ok(latest)
}

/// A page of at most `limit` records out of `rows`, each with the cursor
/// of the page that would follow it (fetched with one more than `limit`,
/// to tell whether another page follows), ending early past
/// [`MAX_PAGE_BYTES`].
pub(super) fn assemble_page<E>(
    rows: impl Iterator<Item = Result<(String, EvidenceRow), E>>,
    limit: usize,
) -> Result<EvidencePage, StoreError>
where
    StoreError: From<E>,
{
    let mut evidence = Vec::new();
    let mut bytes = 0usize;
    let mut last_cursor = None;
    let mut more = false;
    for row in rows {
        if evidence.len() == limit || bytes >= MAX_PAGE_BYTES {
            more = true;
            break;
        }
        let (cursor, record) = row?;
        bytes = bytes.saturating_add(record.7.len());
        last_cursor = Some(cursor);
        evidence.push(into_stored_evidence(record)?);
    }
    Ok(EvidencePage {
        evidence,
        next: last_cursor.filter(|_| more),
    })
}

/// Why a record that claims another runtime's host name is refused.
pub(super) fn identity_error(record: &NewEvidence, host: &str, name: &str) -> StoreError {
    StoreError::Identity(format!(
        "{}: evidence.labels.host {host:?} is the name of another runtime; this runtime enrolled as {name:?} and reports only its own machine",
        record.at
    ))
}

/// Why a record with another runtime's stream uuid is refused.
pub(super) fn uuid_conflict(record: &NewEvidence) -> StoreError {
    StoreError::Conflict(format!(
        "{}: evidence.uuid {} belongs to records of another runtime; a runtime reports only its own evidence streams",
        record.at, record.uuid
    ))
}

/// Whether a stored record (its hash, else its body) is `record`: a reused
/// idempotency key must come with the same record.
pub(super) fn check_same_record(
    record: &NewEvidence,
    stored_hash: Option<String>,
    stored_body: &str,
) -> Result<(), StoreError> {
    let hash = match stored_hash {
        Some(hash) => hash,
        None => evidence_sha256(&serde_json::from_str(stored_body)?)?,
    };
    if hash != record.body_sha256 {
        return Err(StoreError::Conflict(format!(
            "{}: idempotency_key {:?} was already used for a different record; a key stands for one record",
            record.at, record.idempotency_key
        )));
    }
    Ok(())
}

/// Refuses a batch that would take the runtime past its quota.
pub(super) fn check_quota(stored_bytes: i64, added: u64, quota: u64) -> Result<(), StoreError> {
    let stored_bytes = u64::try_from(stored_bytes).unwrap_or(0);
    if added > 0 && stored_bytes.saturating_add(added) > quota {
        return Err(StoreError::QuotaExceeded(format!(
            "this runtime's storage quota is full: it stores {stored_bytes} bytes of evidence, these records need {added} more, and the quota is {quota} bytes; ask the operator to raise --runtime-storage-quota"
        )));
    }
    Ok(())
}

pub(super) const EVIDENCE_SELECT: &str = "SELECT idempotency_key, runtime_id, uuid, plugin, check_id, status, received_at, body, seq FROM evidence";

pub(super) type EvidenceRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    String,
);

pub(super) fn evidence_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, EvidenceRow)> {
    Ok((
        row.get(8)?,
        (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
        ),
    ))
}

pub(super) fn into_stored_evidence(row: EvidenceRow) -> Result<StoredEvidence, StoreError> {
    let (idempotency_key, runtime_id, uuid, plugin, check, status, received_at, body) = row;
    Ok(StoredEvidence {
        idempotency_key,
        runtime_id,
        uuid,
        plugin,
        check,
        status,
        received_at: rfc3339(received_at),
        evidence: serde_json::from_str(&body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::*;
    use crate::model::RecordRules;
    use serde_json::{Value, json};

    const QUOTA: u64 = 1 << 30;

    fn evidence_of(runtime: Uuid, key: &str, body: Value) -> NewEvidence {
        let rules = RecordRules {
            subjects_bound: true,
            runtime_id: runtime,
            max_record_bytes: 1 << 20,
        };
        NewEvidence::from_body(key.to_string(), body, "test", rules).unwrap()
    }

    fn evidence(runtime: Uuid, key: &str, plugin: &str) -> NewEvidence {
        evidence_of(
            runtime,
            key,
            json!({
                "uuid": Uuid::new_v4().to_string(),
                "labels": {"plugin": plugin, "check": "c1", "host": "web-1"},
                "status": {"state": "satisfied"},
                "subjects": [{"type": "InventoryItem", "identifier": runtime.to_string()}]
            }),
        )
    }

    backend_tests! {
        fn a_reused_idempotency_key_with_another_record_is_a_conflict(db: &mut dyn Backend) {
            let a = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let first = evidence(a, "k1", "p");
            db.store_evidence(a, std::slice::from_ref(&first), QUOTA, t0())
                .unwrap();
            // The same record again, with its keys in another order: a duplicate.
            let mut reordered = serde_json::Map::new();
            for (key, value) in first.body.as_object().unwrap().iter().rev() {
                reordered.insert(key.clone(), value.clone());
            }
            let same = evidence_of(a, "k1", Value::Object(reordered));
            assert_eq!(
                db.store_evidence(a, &[same], QUOTA, later(1)).unwrap(),
                BatchOutcome {
                    accepted: 0,
                    duplicates: 1
                }
            );
            // Another record under the same key, alone or after a new record.
            let other = evidence(a, "k1", "p");
            for batch in [vec![other.clone()], vec![evidence(a, "k2", "p"), other]] {
                let error = db.store_evidence(a, &batch, QUOTA, later(2)).unwrap_err();
                assert!(matches!(error, StoreError::Conflict(_)), "{error}");
                assert!(error.to_string().contains("\"k1\""), "{error}");
            }
            let page = db.list_evidence(&EvidenceFilter::default()).unwrap();
            assert_eq!(page.evidence.len(), 1, "nothing of a refused batch");
            // A row from before hashes were stored is compared by its body.
            db.execute_sql("UPDATE evidence SET body_sha256 = NULL")
                .unwrap();
            let again = evidence_of(a, "k1", first.body.clone());
            assert_eq!(
                db.store_evidence(a, &[again], QUOTA, later(3))
                    .unwrap()
                    .duplicates,
                1
            );
            let changed = evidence(a, "k1", "p");
            assert!(matches!(
                db.store_evidence(a, &[changed], QUOTA, later(3)),
                Err(StoreError::Conflict(_))
            ));
        }

        fn a_runtime_cannot_claim_another_runtimes_streams_or_host(db: &mut dyn Backend) {
            let a = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
            let b = db
                .enroll(&token.token, "db-1", t0(), no_certificate)
                .unwrap();
            let b = Uuid::parse_str(&b.runtime_id).unwrap();
            let of_a = evidence(a, "k1", "p");
            db.store_evidence(a, std::slice::from_ref(&of_a), QUOTA, t0())
                .unwrap();
            // B re-sends A's stream uuid under its own subject: refused.
            let mut body = of_a.body.clone();
            body["subjects"][0]["identifier"] = json!(b.to_string());
            body["labels"]["host"] = json!("db-1");
            let error = db
                .store_evidence(b, &[evidence_of(b, "k1", body)], QUOTA, t0())
                .unwrap_err();
            assert!(matches!(error, StoreError::Conflict(_)), "{error}");
            assert!(error.to_string().contains("evidence.uuid"), "{error}");
            // A may send its own stream again, as every run does, even where
            // another runtime's copy was stored before this check existed.
            db.execute_sql(&format!(
                "INSERT INTO evidence (idempotency_key, runtime_id, uuid, body, received_at)
                 VALUES ('forged', '{b}', '{}', '{{}}', 0)",
                of_a.uuid
            ))
            .unwrap();
            let mut rerun = of_a.body.clone();
            rerun["description"] = json!("second run");
            db.store_evidence(a, &[evidence_of(a, "k2", rerun)], QUOTA, later(1))
                .unwrap();
            // B says it is host "web-1", the name A enrolled with: refused.
            let error = db
                .store_evidence(b, &[evidence(b, "k9", "p")], QUOTA, t0())
                .unwrap_err();
            assert!(matches!(error, StoreError::Identity(_)), "{error}");
            assert!(error.to_string().contains("labels.host"), "{error}");
            // Its own name, or a host name no other runtime has, is fine.
            let mut own = evidence(b, "k9", "p").body;
            own["labels"]["host"] = json!("db-1");
            let mut renamed = evidence(b, "k10", "p").body;
            renamed["labels"]["host"] = json!("db-1.example");
            db.store_evidence(
                b,
                &[evidence_of(b, "k9", own), evidence_of(b, "k10", renamed)],
                QUOTA,
                t0(),
            )
            .unwrap();
            // Once A is revoked, its name is free.
            db.revoke_runtime(&a.to_string(), t0()).unwrap();
            db.store_evidence(b, &[evidence(b, "k11", "p")], QUOTA, t0())
                .unwrap();
        }

        fn each_runtime_has_a_storage_quota(db: &mut dyn Backend) {
            let a = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let b = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let first = evidence(a, "k1", "p");
            let size = first.text.len() as u64;
            let quota = size * 2 + size / 2;
            db.store_evidence(a, &[first.clone(), evidence(a, "k2", "p")], quota, t0())
                .unwrap();
            assert_eq!(db.stored_bytes(a).unwrap(), first.text.len() as u64 * 2);
            let error = db
                .store_evidence(a, &[evidence(a, "k3", "p")], quota, t0())
                .unwrap_err();
            assert!(matches!(error, StoreError::QuotaExceeded(_)), "{error}");
            assert!(error.to_string().contains("quota"), "{error}");
            // Duplicates take no room; other runtimes have their own quota.
            db.store_evidence(a, &[first], quota, t0()).unwrap();
            db.store_evidence(b, &[evidence(b, "k3", "p")], quota, t0())
                .unwrap();
            assert_eq!(
                db.list_evidence(&EvidenceFilter::default())
                    .unwrap()
                    .evidence
                    .len(),
                3
            );
        }

        fn the_evidence_listing_is_paged(db: &mut dyn Backend) {
            let a = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let records: Vec<_> = (0..7)
                .map(|i| evidence(a, &format!("k{i}"), if i % 2 == 0 { "even" } else { "odd" }))
                .collect();
            db.store_evidence(a, &records, QUOTA, t0()).unwrap();
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = db
                    .list_evidence(&EvidenceFilter {
                        plugin: Some("even".to_string()),
                        limit: Some(2),
                        after: after.clone(),
                        ..EvidenceFilter::default()
                    })
                    .unwrap();
                assert!(page.evidence.len() <= 2);
                seen.extend(page.evidence.into_iter().map(|e| e.idempotency_key));
                if seen.len() == 2 {
                    // Records arriving while a client pages come after it.
                    db.store_evidence(a, &[evidence(a, "k7", "even")], QUOTA, t0())
                        .unwrap();
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, ["k0", "k2", "k4", "k6", "k7"]);
            let default = db.list_evidence(&EvidenceFilter::default()).unwrap();
            assert_eq!((default.evidence.len(), default.next), (8, None));
            for bad in [
                EvidenceFilter {
                    limit: Some(0),
                    ..EvidenceFilter::default()
                },
                EvidenceFilter {
                    limit: Some(MAX_PAGE_SIZE + 1),
                    ..EvidenceFilter::default()
                },
                EvidenceFilter {
                    after: Some("x".to_string()),
                    ..EvidenceFilter::default()
                },
                // A bare sequence number, as cursors were before they were opaque.
                EvidenceFilter {
                    after: Some("5".to_string()),
                    ..EvidenceFilter::default()
                },
                EvidenceFilter {
                    after: Some(hex::encode("-1")),
                    ..EvidenceFilter::default()
                },
            ] {
                assert!(matches!(
                    db.list_evidence(&bad),
                    Err(StoreError::Invalid(_))
                ));
            }
        }

        fn evidence_is_idempotent_per_runtime(db: &mut dyn Backend) {
            let a = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let b = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let batch = [evidence(a, "k1", "p"), evidence(a, "k2", "q")];
            let batch = [batch[0].clone(), batch[1].clone(), batch[0].clone()];
            let outcome = db.store_evidence(a, &batch, QUOTA, t0()).unwrap();
            assert_eq!(
                outcome,
                BatchOutcome {
                    accepted: 2,
                    duplicates: 1
                }
            );
            let outcome = db.store_evidence(a, &batch, QUOTA, later(1)).unwrap();
            assert_eq!(
                outcome,
                BatchOutcome {
                    accepted: 0,
                    duplicates: 3
                }
            );
            // Another runtime's keys are its own.
            let outcome = db
                .store_evidence(b, &[evidence(b, "k1", "p")], QUOTA, later(2))
                .unwrap();
            assert_eq!(
                outcome,
                BatchOutcome {
                    accepted: 1,
                    duplicates: 0
                }
            );

            let all = db
                .list_evidence(&EvidenceFilter::default())
                .unwrap()
                .evidence;
            let keys: Vec<_> = all
                .iter()
                .map(|e| (e.runtime_id.clone(), e.idempotency_key.clone()))
                .collect();
            assert_eq!(
                keys,
                [
                    (a.to_string(), "k1".to_string()),
                    (a.to_string(), "k2".to_string()),
                    (b.to_string(), "k1".to_string())
                ]
            );
            assert_eq!(all[0].evidence, batch[0].body, "the first copy is kept");
            assert_eq!(all[0].plugin.as_deref(), Some("p"));
            assert_eq!(all[0].check.as_deref(), Some("c1"));
            assert_eq!(all[0].status.as_deref(), Some("satisfied"));

            let mut count = |runtime: Option<Uuid>, plugin: Option<&str>, check: Option<&str>| {
                db.list_evidence(&EvidenceFilter {
                    runtime: runtime.map(|r| r.to_string()),
                    plugin: plugin.map(str::to_string),
                    check: check.map(str::to_string),
                    ..EvidenceFilter::default()
                })
                .unwrap()
                .evidence
                .len()
            };
            assert_eq!(count(Some(a), None, None), 2);
            assert_eq!(count(Some(b), None, None), 1);
            assert_eq!(count(None, Some("q"), None), 1);
            assert_eq!(count(None, Some("p"), Some("c1")), 2);
            assert_eq!(count(None, None, Some("c2")), 0);
            assert_eq!(
                db.evidence(a, "k2").unwrap().unwrap().plugin.as_deref(),
                Some("q")
            );
            assert_eq!(db.evidence(b, "k2").unwrap(), None);
        }

        fn the_latest_record_of_each_stream_of_one_runtime_or_all_and_the_bound(db: &mut dyn Backend) {
            let a = Uuid::parse_str(&enrolled(db, "g").runtime_id).unwrap();
            let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
            let b = db
                .enroll(&token.token, "web-2", t0(), no_certificate)
                .unwrap();
            let b = Uuid::parse_str(&b.runtime_id).unwrap();
            let stream = |runtime: Uuid, key: &str, uuid: &str, host: &str| {
                evidence_of(
                    runtime,
                    key,
                    json!({
                        "uuid": uuid,
                        "labels": {"plugin": "p", "check": "c1", "host": host},
                        "status": {"state": "satisfied"},
                        "subjects": [{"type": "InventoryItem", "identifier": runtime.to_string()}]
                    }),
                )
            };
            let (x, y, z) = (
                Uuid::new_v4().to_string(),
                Uuid::new_v4().to_string(),
                Uuid::new_v4().to_string(),
            );
            for (runtime, key, uuid, host) in [
                (a, "k1", &x, "web-1"),
                (a, "k2", &y, "web-1"),
                (a, "k3", &x, "web-1"),
                (b, "k4", &z, "web-2"),
            ] {
                let record = stream(runtime, key, uuid, host);
                db.store_evidence(runtime, &[record], QUOTA, t0()).unwrap();
            }
            let keys = |records: Vec<StoredEvidence>| {
                records
                    .into_iter()
                    .map(|r| r.idempotency_key)
                    .collect::<Vec<_>>()
            };
            let all = keys(db.latest_evidence(None, 10, 1 << 20).unwrap());
            assert_eq!(all.len(), 3);
            assert!(all.contains(&"k3".to_string()) && !all.contains(&"k1".to_string()));
            let one = keys(
                db.latest_evidence(Some(&a.to_string()), 10, 1 << 20)
                    .unwrap(),
            );
            assert_eq!(one, ["k2", "k3"], "one runtime's streams, in arrival order");
            assert_eq!(
                keys(
                    db.latest_evidence(Some(&b.simple().to_string()), 10, 1 << 20)
                        .unwrap()
                ),
                ["k4"]
            );
            assert!(matches!(
                db.latest_evidence(None, 2, 1 << 20),
                Err(StoreError::TooLarge(m)) if m.contains("runtime=<id>")
            ));
            assert!(matches!(
                db.latest_evidence(Some(&a.to_string()), 10, 100),
                Err(StoreError::TooLarge(_))
            ));
            assert_eq!(
                db.latest_evidence(Some(&a.to_string()), 2, 1 << 20)
                    .unwrap()
                    .len(),
                2
            );
        }
    }
}
