//! Heartbeats: each runtime's last one, kept whole.

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde_json::Value;
use uuid::Uuid;

use super::Db;
use crate::error::StoreError;
use crate::model::to_millis;

impl Db {
    /// Records a runtime's heartbeat body as its last heartbeat.
    pub fn record_heartbeat(
        &mut self,
        runtime_id: Uuid,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE runtimes SET last_heartbeat_at = ?2, last_heartbeat = ?3 WHERE id = ?1",
            params![
                runtime_id.to_string(),
                to_millis(now),
                serde_json::to_string(body)?
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::RuntimeNotFound(runtime_id.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::*;
    use serde_json::json;

    backend_tests! {
        fn heartbeats_and_staleness(db: &mut dyn Backend) {
            let e = enrolled(db, "g");
            let id = Uuid::parse_str(&e.runtime_id).unwrap();
            let runtime = &db.list_runtimes(t0(), MINUTE).unwrap()[0];
            assert!(runtime.stale, "never sent a heartbeat");
            assert_eq!(runtime.heartbeat, None);
            let body = json!({"uuid": e.runtime_id, "created_at": "2027-01-15T08:00:00Z", "jobs": [1]});
            db.record_heartbeat(id, &body, later(10)).unwrap();
            let runtime = &db.list_runtimes(later(70), MINUTE).unwrap()[0];
            assert!(!runtime.stale);
            assert_eq!(runtime.heartbeat.as_ref(), Some(&body));
            assert_eq!(
                runtime.last_heartbeat_at.as_deref(),
                Some("2027-01-15T08:00:10.000Z")
            );
            assert!(db.list_runtimes(later(71), MINUTE).unwrap()[0].stale);
            assert!(matches!(
                db.record_heartbeat(Uuid::new_v4(), &body, t0()),
                Err(StoreError::RuntimeNotFound(_))
            ));
        }
    }
}
