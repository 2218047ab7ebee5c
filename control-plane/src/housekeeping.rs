//! The server's background work: the evidence retention pass, run at start
//! and then at a fixed interval while the server runs.

use std::time::Duration;

use chrono::Utc;

use crate::db::{RETENTION_BATCH, RetentionOutcome, RetentionPolicy, Store};
use crate::error::StoreError;

/// Default time between two retention passes.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// One retention pass now, on the blocking pool: one store call per
/// transaction of at most `batch` deletions, so the API's requests, which
/// share the store's one connection, get it between them.
pub async fn retention_pass(
    store: &Store,
    policy: RetentionPolicy,
    batch: usize,
) -> Result<RetentionOutcome, StoreError> {
    let targets = store
        .call(move |db| db.retention_targets(&policy, Utc::now()))
        .await?;
    let mut outcome = RetentionOutcome::default();
    for target in targets {
        loop {
            let target = target.clone();
            let step = store
                .call(move |db| db.delete_expired(&target, batch))
                .await?;
            outcome.deleted += step.deleted;
            outcome.freed_bytes += step.freed_bytes;
            if step.deleted < u64::try_from(batch.max(1)).unwrap_or(u64::MAX) {
                break;
            }
        }
    }
    Ok(outcome)
}

/// Runs a retention pass every `interval` (the first at once) until
/// `stop` completes; a failed pass is logged and retried at the next tick.
pub async fn run_retention(
    store: Store,
    policy: RetentionPolicy,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    if !policy.deletes_anything() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        match retention_pass(&store, policy.clone(), RETENTION_BATCH).await {
            Ok(outcome) if outcome.deleted > 0 => tracing::info!(
                deleted = outcome.deleted,
                freed_bytes = outcome.freed_bytes,
                "retention: old evidence records deleted"
            ),
            Ok(_) => tracing::debug!("retention: nothing to delete"),
            Err(error) => {
                tracing::warn!(%error, "retention pass failed; retrying at the next interval")
            }
        }
    }
}

/// A retention age as a flag's value: `None` keeps records forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionAge(pub Option<Duration>);

/// Parses `--evidence-retention` (see [`parse_retention_age`]).
pub fn parse_retention_flag(text: &str) -> Result<RetentionAge, String> {
    parse_retention_age(text).map(RetentionAge)
}

/// Parses a retention age: a duration (`90d`, at least a minute) or
/// `forever`.
pub fn parse_retention_age(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "forever" {
        return Ok(None);
    }
    let age = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}: use a duration such as 90d or 12h, or `forever`"))?;
    if age < Duration::from_secs(60) {
        return Err("a retention age must be at least 1m".to_string());
    }
    Ok(Some(age))
}

/// Parses one `--evidence-retention-for RUNTIME=AGE`.
pub fn parse_runtime_retention(text: &str) -> Result<(uuid::Uuid, Option<Duration>), String> {
    let (runtime, age) = text.split_once('=').ok_or_else(|| {
        format!("{text:?}: write RUNTIME_ID=AGE, e.g. <uuid>=30d or <uuid>=forever")
    })?;
    let runtime = uuid::Uuid::parse_str(runtime.trim())
        .map_err(|_| format!("{runtime:?} is not a runtime id (a UUID)"))?;
    Ok((runtime, parse_retention_age(age)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::model::{EvidenceFilter, NewEvidence, RecordRules};

    #[test]
    fn retention_flags_are_parsed() {
        assert_eq!(parse_retention_age("forever"), Ok(None));
        assert_eq!(
            parse_retention_age("90d"),
            Ok(Some(Duration::from_secs(90 * 86400)))
        );
        assert!(parse_retention_age("30s").is_err(), "below the bound");
        assert!(parse_retention_age("soon").is_err());
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            parse_runtime_retention(&format!("{id}=forever")),
            Ok((id, None))
        );
        assert!(parse_runtime_retention("x=1d").is_err());
        assert!(parse_runtime_retention(&id.to_string()).is_err());
    }

    #[tokio::test]
    async fn the_background_task_runs_a_pass_at_start_and_stops_when_told() {
        let mut db = Db::open_in_memory().unwrap();
        let token = db
            .create_enrollment_token("g", Duration::from_secs(3600), Utc::now())
            .unwrap();
        let e = db
            .enroll(&token.token, "a", Utc::now(), |_| Ok(None))
            .unwrap();
        let runtime = uuid::Uuid::parse_str(&e.runtime_id).unwrap();
        let old = Utc::now() - chrono::TimeDelta::days(10);
        let record = |key: &str, stream: &str| {
            let body = serde_json::json!({
                "uuid": stream,
                "status": {"state": "satisfied"},
                "subjects": [{"type": "InventoryItem", "identifier": runtime.to_string()}],
            });
            let rules = RecordRules {
                subjects_bound: true,
                runtime_id: runtime,
                max_record_bytes: 1 << 20,
            };
            NewEvidence::from_body(key.to_string(), body, "t", rules).unwrap()
        };
        let stream = uuid::Uuid::new_v4().to_string();
        db.store_evidence(runtime, &[record("old", &stream)], 1 << 30, old)
            .unwrap();
        db.store_evidence(runtime, &[record("new", &stream)], 1 << 30, Utc::now())
            .unwrap();
        let store = Store::new(db);
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(86400)),
            ..RetentionPolicy::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_retention(
            store.clone(),
            policy,
            Duration::from_secs(3600),
            async move {
                let _ = stopped.await;
            },
        ));
        let count = || async {
            store
                .call(|db| db.list_evidence(&EvidenceFilter::default()))
                .await
                .unwrap()
                .evidence
                .len()
        };
        for _ in 0..100 {
            if count().await == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(count().await, 1, "the first pass runs at start");
        stop.send(()).unwrap();
        task.await.unwrap();

        // A pass goes through the store a transaction at a time.
        let old = Utc::now() - chrono::TimeDelta::days(10);
        let records: Vec<_> = (0..5)
            .map(|i| record(&format!("old-{i}"), &stream))
            .collect();
        store
            .call(move |db| db.store_evidence(runtime, &records, 1 << 30, old))
            .await
            .unwrap();
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(86400)),
            ..RetentionPolicy::default()
        };
        let outcome = retention_pass(&store, policy, 2).await.unwrap();
        // The last to arrive is now the stream's latest, and stays.
        assert_eq!(outcome.deleted, 4);
        assert_eq!(count().await, 2);
    }
}
