//! Configuration documents per group, and per runtime in force instead of
//! its group's, versioned with strong ETags of their canonical JSON.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use uuid::Uuid;

use super::Db;
use crate::canonical::{canonical_bytes, strong_etag};
use crate::error::StoreError;
use crate::model::{ConfigVersion, RuntimeIdentity, StoredConfig, to_millis, validate_group};
use capability_model::wire::config::RawConfig;
use capability_model::wire::from_json;

/// A configuration document's canonical text and strong ETag; it must be a
/// JSON object of the agent configuration's shape (the runtime checks the
/// values against its own policy when it applies it).
pub(super) fn canonical_document(document: &Value) -> Result<(String, String), StoreError> {
    if !document.is_object() {
        return Err(StoreError::Invalid(
            "the configuration document must be a JSON object".to_string(),
        ));
    }
    let raw = from_json::<RawConfig>(document)
        .map_err(|e| StoreError::Invalid(format!("invalid configuration document: {e}")))?;
    // Every runtime refuses a document that carries a policy (the ceiling
    // on remote configuration is its own file's) or another section of the
    // machine's own: better refused here than by the whole fleet.
    if let Some(section) = raw.machine_only_sections().first() {
        let what = match *section {
            "policy" => "the ceiling on remote configuration is",
            "service" => "the metrics listener and log level are",
            _ => "trust roots and proxies are",
        };
        return Err(StoreError::Invalid(format!(
            "invalid configuration document: {section}: {what} set only in each runtime's own agent.toml; remove `{section}`"
        )));
    }
    let bytes = canonical_bytes(document)?;
    let etag = strong_etag(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| {
        StoreError::Inconsistent(format!("the canonical document is not UTF-8: {e}"))
    })?;
    Ok((text, etag))
}

impl Db {
    /// Assigns a configuration document (a JSON object) to `group`; the
    /// version goes up by one with every assignment.
    pub fn set_config(
        &mut self,
        group: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError> {
        validate_group(group)?;
        let (text, etag) = canonical_document(document)?;
        let version: i64 = self.conn.query_row(
            "INSERT INTO configs (group_name, version, document, etag, updated_at)
             VALUES (?1, 1, ?2, ?3, ?4)
             ON CONFLICT (group_name) DO UPDATE SET
                 version = version + 1, document = excluded.document,
                 etag = excluded.etag, updated_at = excluded.updated_at
             RETURNING version",
            params![group, text, etag, to_millis(now)],
            |row| row.get(0),
        )?;
        Ok(ConfigVersion {
            group: group.to_string(),
            runtime: None,
            version,
            etag,
        })
    }

    /// Assigns a configuration document (a JSON object) to the runtime
    /// `id` alone: it is served to that runtime instead of its group's
    /// until [`clear_runtime_config`](Self::clear_runtime_config).
    pub fn set_runtime_config(
        &mut self,
        id: &str,
        document: &Value,
        now: DateTime<Utc>,
    ) -> Result<ConfigVersion, StoreError> {
        let (text, etag) = canonical_document(document)?;
        let id = Uuid::parse_str(id)
            .map_err(|_| StoreError::RuntimeNotFound(id.to_string()))?
            .to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let group: Option<String> = tx
            .query_row(
                "SELECT group_name FROM runtimes WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(group) = group else {
            return Err(StoreError::RuntimeNotFound(id));
        };
        let version: i64 = tx.query_row(
            "INSERT INTO runtime_configs (runtime_id, version, document, etag, updated_at)
             VALUES (?1, 1, ?2, ?3, ?4)
             ON CONFLICT (runtime_id) DO UPDATE SET
                 version = version + 1, document = excluded.document,
                 etag = excluded.etag, updated_at = excluded.updated_at
             RETURNING version",
            params![id, text, etag, to_millis(now)],
            |row| row.get(0),
        )?;
        tx.commit()?;
        Ok(ConfigVersion {
            group,
            runtime: Some(id),
            version,
            etag,
        })
    }

    /// Removes the runtime's own document, so its group's applies again.
    /// Returns whether it had one.
    pub fn clear_runtime_config(&mut self, id: &str) -> Result<bool, StoreError> {
        let Ok(parsed) = Uuid::parse_str(id) else {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        };
        let parsed = parsed.to_string();
        let known: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM runtimes WHERE id = ?1)",
            params![parsed],
            |row| row.get(0),
        )?;
        if !known {
            return Err(StoreError::RuntimeNotFound(id.to_string()));
        }
        Ok(self.conn.execute(
            "DELETE FROM runtime_configs WHERE runtime_id = ?1",
            params![parsed],
        )? > 0)
    }

    /// The configuration in force for a runtime: its own document if it has
    /// one, otherwise its group's.
    pub fn config_for_runtime(
        &self,
        runtime: &RuntimeIdentity,
    ) -> Result<Option<StoredConfig>, StoreError> {
        let id = runtime.id.to_string();
        let own = self
            .conn
            .query_row(
                "SELECT version, etag, document FROM runtime_configs WHERE runtime_id = ?1",
                params![id],
                |row| {
                    Ok(StoredConfig {
                        version: ConfigVersion {
                            group: runtime.group.clone(),
                            runtime: Some(id.clone()),
                            version: row.get(0)?,
                            etag: row.get(1)?,
                        },
                        document: row.get(2)?,
                    })
                },
            )
            .optional()?;
        match own {
            Some(config) => Ok(Some(config)),
            None => self.config_for_group(&runtime.group),
        }
    }

    /// The configuration document assigned to `group`, if any.
    pub fn config_for_group(&self, group: &str) -> Result<Option<StoredConfig>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, etag, document FROM configs WHERE group_name = ?1",
                params![group],
                |row| {
                    Ok(StoredConfig {
                        version: ConfigVersion {
                            group: group.to_string(),
                            runtime: None,
                            version: row.get(0)?,
                            etag: row.get(1)?,
                        },
                        document: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::*;
    use crate::model::Enrollment;
    use serde_json::json;

    /// A document of the agent configuration's shape.
    fn jobs(n: u32) -> Value {
        json!({ "runtime": { "max_concurrent_jobs": n } })
    }

    backend_tests! {
        fn a_runtime_config_replaces_its_groups_until_cleared(db: &mut dyn Backend) {
            let a = enrolled(db, "prod");
            let b = enrolled(db, "prod");
            let identity = |e: &Enrollment| RuntimeIdentity {
                id: Uuid::parse_str(&e.runtime_id).unwrap(),
                group: e.group.clone(),
            };
            assert_eq!(db.config_for_runtime(&identity(&a)).unwrap(), None);
            let group = db.set_config("prod", &jobs(1), t0()).unwrap();
            let own = db
                .set_runtime_config(&a.runtime_id, &jobs(2), t0())
                .unwrap();
            assert_eq!(own.runtime.as_deref(), Some(a.runtime_id.as_str()));
            assert_eq!(own.group, "prod");
            assert_ne!(own.etag, group.etag);
            let served = db.config_for_runtime(&identity(&a)).unwrap().unwrap();
            assert_eq!(
                (served.document.as_str(), served.version),
                (r#"{"runtime":{"max_concurrent_jobs":2}}"#, own)
            );
            let other = db.config_for_runtime(&identity(&b)).unwrap().unwrap();
            assert_eq!(other.version, group, "the other runtime keeps the group's");
            let listed = db.list_runtimes(t0(), MINUTE).unwrap();
            let own_config = |id: &str| listed.iter().find(|r| r.id == id).unwrap().own_config;
            assert!(own_config(&a.runtime_id) && !own_config(&b.runtime_id));
            let again = db
                .set_runtime_config(&a.runtime_id, &jobs(3), t0())
                .unwrap();
            assert_eq!(again.version, 2);

            assert!(db.clear_runtime_config(&a.runtime_id).unwrap());
            assert!(!db.clear_runtime_config(&a.runtime_id).unwrap());
            let served = db.config_for_runtime(&identity(&a)).unwrap().unwrap();
            assert_eq!(served.version, group);

            let unknown = Uuid::new_v4().to_string();
            for result in [
                db.set_runtime_config(&unknown, &json!({}), t0())
                    .map(|_| ()),
                db.set_runtime_config("nope", &json!({}), t0()).map(|_| ()),
                db.clear_runtime_config(&unknown).map(|_| ()),
            ] {
                assert!(matches!(result, Err(StoreError::RuntimeNotFound(_))));
            }
            assert!(matches!(
                db.set_runtime_config(&a.runtime_id, &json!([1]), t0()),
                Err(StoreError::Invalid(_))
            ));
        }

        fn configs_are_versioned_with_content_etags(db: &mut dyn Backend) {
            assert_eq!(db.config_for_group("g").unwrap(), None);
            let v1 = db
                .set_config("g", &json!({"runtime": {}, "plugin": []}), t0())
                .unwrap();
            assert_eq!(v1.version, 1);
            let stored = db.config_for_group("g").unwrap().unwrap();
            assert_eq!(stored.document, r#"{"plugin":[],"runtime":{}}"#);
            assert_eq!(stored.version, v1);
            // Same content, new version, same ETag.
            let v2 = db
                .set_config("g", &json!({"plugin": [], "runtime": {}}), t0())
                .unwrap();
            assert_eq!((v2.version, &v2.etag), (2, &v1.etag));
            let v3 = db.set_config("g", &jobs(3), t0()).unwrap();
            assert_eq!(v3.version, 3);
            assert_ne!(v3.etag, v1.etag);
            // Groups are independent.
            assert_eq!(db.set_config("h", &json!({}), t0()).unwrap().version, 1);
            assert!(matches!(
                db.set_config("g", &json!([1]), t0()),
                Err(StoreError::Invalid(_))
            ));
            assert_eq!(
                db.config_for_group("g").unwrap().unwrap().version.version,
                3
            );
        }

        fn documents_of_another_shape_are_refused_naming_the_field(db: &mut dyn Backend) {
            let a = enrolled(db, "prod");
            for (document, field) in [
                (json!({ "interval": "1h" }), "interval"),
                (
                    json!({ "plugin": [{ "name": "p", "grants": { "network": true } }] }),
                    "plugin[0].grants.network",
                ),
                (
                    json!({ "plugin": [{ "name": "p", "limits": { "memory_mib": "lots" } }] }),
                    "plugin[0].limits.memory_mib",
                ),
                (json!({ "policy": { "read": ["/"] } }), "policy"),
            ] {
                for refused in [
                    db.set_config("prod", &document, t0()),
                    db.set_runtime_config(&a.runtime_id, &document, t0()),
                ] {
                    let Err(StoreError::Invalid(message)) = refused else {
                        panic!("{document} was not refused: {refused:?}");
                    };
                    assert!(
                        message.starts_with(&format!("invalid configuration document: {field}: ")),
                        "{message}"
                    );
                }
            }
            assert_eq!(db.config_for_group("prod").unwrap(), None, "nothing stored");
        }
    }
}
