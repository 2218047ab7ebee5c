//! Configuration documents on PostgreSQL: an upsert raises the version by
//! one whichever replica writes; the ETag is the canonical document's, so
//! every replica serves the same one.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::PgDb;
use crate::db::configuration::canonical_document;
use crate::error::StoreError;
use crate::model::{ConfigVersion, RuntimeIdentity, StoredConfig, to_millis, validate_group};

impl PgDb<'_> {
    pub(super) fn set_config(
        &mut self,
        group: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError> {
        validate_group(group)?;
        let (text, etag) = canonical_document(document)?;
        let version: i64 = self
            .client
            .query_one(
                "INSERT INTO configs AS c (group_name, version, document, etag, updated_at)
                 VALUES ($1, 1, $2, $3, $4)
                 ON CONFLICT (group_name) DO UPDATE SET
                     version = c.version + 1, document = excluded.document,
                     etag = excluded.etag, updated_at = excluded.updated_at
                 RETURNING version",
                &[&group, &text, &etag, &to_millis(now)],
            )?
            .try_get(0)?;
        Ok(ConfigVersion {
            group: group.to_string(),
            runtime: None,
            version,
            etag,
        })
    }

    pub(super) fn set_runtime_config(
        &mut self,
        id: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError> {
        let (text, etag) = canonical_document(document)?;
        let id = Uuid::parse_str(id)
            .map_err(|_| StoreError::RuntimeNotFound(id.to_string()))?
            .to_string();
        let mut tx = self.client.transaction()?;
        let row = tx.query_opt("SELECT group_name FROM runtimes WHERE id = $1", &[&id])?;
        let Some(row) = row else {
            return Err(StoreError::RuntimeNotFound(id));
        };
        let group: String = row.try_get(0)?;
        let version: i64 = tx
            .query_one(
                "INSERT INTO runtime_configs AS c (runtime_id, version, document, etag, updated_at)
                 VALUES ($1, 1, $2, $3, $4)
                 ON CONFLICT (runtime_id) DO UPDATE SET
                     version = c.version + 1, document = excluded.document,
                     etag = excluded.etag, updated_at = excluded.updated_at
                 RETURNING version",
                &[&id, &text, &etag, &to_millis(now)],
            )?
            .try_get(0)?;
        tx.commit()?;
        Ok(ConfigVersion {
            group,
            runtime: Some(id),
            version,
            etag,
        })
    }

    pub(super) fn clear_runtime_config(&mut self, id: &str) -> Result<bool, StoreError> {
        let Ok(parsed) = Uuid::parse_str(id) else {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        };
        let parsed = parsed.to_string();
        let known: bool = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM runtimes WHERE id = $1)",
                &[&parsed],
            )?
            .try_get(0)?;
        if !known {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        }
        Ok(self.client.execute(
            "DELETE FROM runtime_configs WHERE runtime_id = $1",
            &[&parsed],
        )? > 0)
    }

    pub(super) fn config_for_runtime(
        &mut self,
        runtime: &RuntimeIdentity,
    ) -> Result<Option<StoredConfig>, StoreError> {
        let id = runtime.id.to_string();
        let own = self.client.query_opt(
            "SELECT version, etag, document FROM runtime_configs WHERE runtime_id = $1",
            &[&id],
        )?;
        match own {
            Some(row) => Ok(Some(StoredConfig {
                version: ConfigVersion {
                    group: runtime.group.clone(),
                    runtime: Some(id),
                    version: row.try_get(0)?,
                    etag: row.try_get(1)?,
                },
                document: row.try_get(2)?,
            })),
            None => self.config_for_group(&runtime.group),
        }
    }

    pub(super) fn config_for_group(
        &mut self,
        group: &str,
    ) -> Result<Option<StoredConfig>, StoreError> {
        let row = self.client.query_opt(
            "SELECT version, etag, document FROM configs WHERE group_name = $1",
            &[&group],
        )?;
        row.map(|row| {
            Ok(StoredConfig {
                version: ConfigVersion {
                    group: group.to_string(),
                    runtime: None,
                    version: row.try_get(0)?,
                    etag: row.try_get(1)?,
                },
                document: row.try_get(2)?,
            })
        })
        .transpose()
    }
}
