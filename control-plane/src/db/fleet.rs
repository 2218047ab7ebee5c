//! The fleet as the web view shows it: per runtime, the configuration in
//! force and its client certificate's expiry; the enrollment tokens.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::Db;
use crate::error::StoreError;
use crate::model::{rfc3339, to_millis};

/// The most enrollment tokens listed (newest first).
pub const MAX_LISTED_ENROLLMENT_TOKENS: usize = 200;

/// The configuration in force for one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigInForce {
    /// Whether it is the runtime's own document (else its group's).
    pub own: bool,
    /// Its version.
    pub version: i64,
    /// Its ETag.
    pub etag: String,
}

/// What the fleet view adds to a runtime's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetDetails {
    /// The configuration in force, if any.
    pub config: Option<ConfigInForce>,
    /// When its current client certificate expires (RFC 3339), when known.
    pub certificate_not_after: Option<String>,
}

/// An enrollment token as listed: never the token itself (only its hash is
/// stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrollmentTokenSummary {
    /// The first characters of the token's hash, to tell tokens apart.
    pub id: String,
    /// The group it enrolls into.
    pub group: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// When it was spent, if it was.
    pub used_at: Option<String>,
    /// The runtime it enrolled, if spent.
    pub used_by: Option<String>,
    /// Whether it expired unspent.
    pub expired: bool,
}

impl Db {
    /// Per runtime id: its configuration in force and certificate expiry.
    pub fn fleet_details(&self) -> Result<HashMap<String, FleetDetails>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT r.id, rc.version, rc.etag, c.version, c.etag, ic.not_after
             FROM runtimes r
             LEFT JOIN runtime_configs rc ON rc.runtime_id = r.id
             LEFT JOIN configs c ON c.group_name = r.group_name
             LEFT JOIN issued_certificates ic ON ic.sha256 = r.cert_sha256",
        )?;
        let rows = stmt.query_map([], |row| {
            let own = match (row.get::<_, Option<i64>>(1)?, row.get(2)?) {
                (Some(version), Some(etag)) => Some(ConfigInForce {
                    own: true,
                    version,
                    etag,
                }),
                _ => None,
            };
            let group = match (row.get::<_, Option<i64>>(3)?, row.get(4)?) {
                (Some(version), Some(etag)) => Some(ConfigInForce {
                    own: false,
                    version,
                    etag,
                }),
                _ => None,
            };
            Ok((
                row.get::<_, String>(0)?,
                FleetDetails {
                    config: own.or(group),
                    certificate_not_after: row.get::<_, Option<i64>>(5)?.map(rfc3339),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records when the client certificate `sha256` expires (Unix
    /// milliseconds), so that the fleet view can show it.
    pub fn record_certificate(&mut self, sha256: &str, not_after: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO issued_certificates (sha256, not_after) VALUES (?1, ?2)
             ON CONFLICT (sha256) DO UPDATE SET not_after = excluded.not_after",
            params![sha256, not_after],
        )?;
        Ok(())
    }

    /// The newest enrollment tokens, at most
    /// [`MAX_LISTED_ENROLLMENT_TOKENS`].
    pub fn list_enrollment_tokens(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnrollmentTokenSummary>, StoreError> {
        let now = to_millis(now);
        let mut stmt = self.conn.prepare(
            "SELECT token_hash, group_name, created_at, expires_at, used_at, used_by
             FROM enrollment_tokens ORDER BY created_at DESC, token_hash LIMIT ?1",
        )?;
        let limit = i64::try_from(MAX_LISTED_ENROLLMENT_TOKENS).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![limit], |row| {
            let hash: String = row.get(0)?;
            let expires_at: i64 = row.get(3)?;
            let used_at: Option<i64> = row.get(4)?;
            Ok(EnrollmentTokenSummary {
                id: hash.chars().take(12).collect(),
                group: row.get(1)?,
                created_at: rfc3339(row.get(2)?),
                expires_at: rfc3339(expires_at),
                used_at: used_at.map(rfc3339),
                used_by: row.get(5)?,
                expired: used_at.is_none() && expires_at <= now,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::*;
    use serde_json::json;

    backend_tests! {
        fn an_enrolled_runtimes_certificate_expiry_is_recorded(db: &mut dyn Backend) {
            let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
            let not_after = to_millis(later(7200));
            let enrolled = db
                .enroll(&token.token, "n", t0(), |_| {
                    Ok(Some(crate::ca::IssuedCertificate {
                        pem: String::new(),
                        sha256: "def".to_string(),
                        not_after_millis: not_after,
                    }))
                })
                .unwrap();
            let details = db.fleet_details().unwrap();
            assert_eq!(
                details[&enrolled.runtime_id].certificate_not_after,
                Some(rfc3339(not_after))
            );
        }

        fn fleet_details_show_the_configuration_in_force_and_certificate_expiry(db: &mut dyn Backend) {
            let a = enrolled(db, "g");
            let b = enrolled(db, "other");
            db.set_config("g", &json!({}), t0()).unwrap();
            db.set_runtime_config(&b.runtime_id, &json!({}), t0())
                .unwrap();
            db.set_runtime_config(&b.runtime_id, &json!({"runtime": {}}), t0())
                .unwrap();
            db.execute_sql(&format!(
                "UPDATE runtimes SET cert_sha256 = 'abc' WHERE id = '{}'",
                a.runtime_id
            ))
            .unwrap();
            db.record_certificate("abc", to_millis(later(3600)))
                .unwrap();
            let details = db.fleet_details().unwrap();
            let of_a = &details[&a.runtime_id];
            assert_eq!(
                of_a.config.as_ref().map(|c| (c.own, c.version)),
                Some((false, 1))
            );
            assert_eq!(
                of_a.certificate_not_after.as_deref(),
                Some(rfc3339(to_millis(later(3600))).as_str())
            );
            let of_b = &details[&b.runtime_id];
            assert_eq!(
                of_b.config.as_ref().map(|c| (c.own, c.version)),
                Some((true, 2))
            );
            assert_eq!(of_b.certificate_not_after, None);
        }

        fn enrollment_tokens_are_listed_without_the_token_newest_first_and_bounded(db: &mut dyn Backend) {
            let spent = db.create_enrollment_token("g", HOUR, t0()).unwrap();
            db.enroll(&spent.token, "n", t0(), no_certificate).unwrap();
            let fresh = db.create_enrollment_token("h", HOUR, later(1)).unwrap();
            let listed = db.list_enrollment_tokens(later(2)).unwrap();
            assert_eq!(listed.len(), 2);
            assert_eq!(listed[0].group, "h");
            assert!(listed[1].used_at.is_some() && !listed[1].expired);
            assert!(!format!("{listed:?}").contains(&fresh.token));
            assert!(db.list_enrollment_tokens(later(3601)).unwrap()[0].expired);
            for i in 0..MAX_LISTED_ENROLLMENT_TOKENS {
                db.create_enrollment_token("g", HOUR, later(10 + i as i64))
                    .unwrap();
            }
            assert_eq!(
                db.list_enrollment_tokens(later(10)).unwrap().len(),
                MAX_LISTED_ENROLLMENT_TOKENS
            );
        }
    }
}
