//! Heartbeats on PostgreSQL: each runtime's last one, kept whole.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::PgDb;
use crate::error::StoreError;
use crate::model::to_millis;

impl PgDb<'_> {
    pub(super) fn record_heartbeat(
        &mut self,
        runtime_id: Uuid,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let changed = self.client.execute(
            "UPDATE runtimes SET last_heartbeat_at = $2, last_heartbeat = $3 WHERE id = $1",
            &[
                &runtime_id.to_string(),
                &to_millis(now),
                &serde_json::to_string(body)?,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::RuntimeNotFound(runtime_id.to_string()));
        }
        Ok(())
    }
}
