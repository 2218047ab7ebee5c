//! Enrollment tokens: created by the admin, spent once by a runtime to
//! enroll.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{Db, duration_millis};
use crate::ca::IssuedCertificate;
use crate::error::StoreError;
use crate::model::{
    Enrollment, NewEnrollmentToken, rfc3339, to_millis, validate_group, validate_runtime_name,
};
use crate::secrets::{hash_secret, random_token};

/// The longest lifetime of an enrollment token.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A new enrollment token for `group` valid for `ttl` (checked), with its
/// creation and expiry times in milliseconds.
pub(super) fn new_enrollment_token(
    group: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<(String, i64, i64), StoreError> {
    validate_group(group)?;
    if ttl < Duration::from_secs(1) || ttl > MAX_ENROLLMENT_TTL {
        return Err(StoreError::Invalid(format!(
            "invalid enrollment token lifetime {}: use 1 second to 30 days",
            humantime::format_duration(ttl)
        )));
    }
    let created = to_millis(now);
    Ok((
        random_token()?,
        created,
        created.saturating_add(duration_millis(ttl)),
    ))
}

impl Db {
    /// Creates a single-use enrollment token for `group`, valid for `ttl`.
    pub fn create_enrollment_token(
        &mut self,
        group: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewEnrollmentToken, StoreError> {
        let (token, created, expires) = new_enrollment_token(group, ttl, now)?;
        self.conn.execute(
            "INSERT INTO enrollment_tokens (token_hash, group_name, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![hash_secret(&token), group, created, expires],
        )?;
        Ok(NewEnrollmentToken {
            token,
            group: group.to_string(),
            expires_at: rfc3339(expires),
        })
    }

    /// Spends an enrollment token: creates a runtime named `name` in the
    /// token's group and returns its credentials. Once the token is found
    /// good, `certify` is called with the new runtime's id; the certificate
    /// it returns (if any) is the only one the runtime may connect with.
    pub fn enroll(
        &mut self,
        token: &str,
        name: &str,
        now: DateTime<Utc>,
        certify: impl FnOnce(&str) -> Result<Option<IssuedCertificate>, StoreError>,
    ) -> Result<Enrollment, StoreError> {
        validate_runtime_name(name)?;
        let now = to_millis(now);
        let runtime_id = Uuid::new_v4().to_string();
        let client_secret = random_token()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let group: Option<String> = tx
            .query_row(
                "UPDATE enrollment_tokens SET used_at = ?2, used_by = ?3
                 WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2
                 RETURNING group_name",
                params![hash_secret(token), now, runtime_id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(group) = group else {
            return Err(StoreError::InvalidEnrollmentToken);
        };
        let certificate = certify(&runtime_id)?;
        tx.execute(
            "INSERT INTO runtimes (id, name, group_name, secret_hash, enrolled_at, cert_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                runtime_id,
                name,
                group,
                hash_secret(&client_secret),
                now,
                certificate.as_ref().map(|c| &c.sha256)
            ],
        )?;
        if let Some(certificate) = &certificate {
            // Its expiry, for the fleet view.
            tx.execute(
                "INSERT INTO issued_certificates (sha256, not_after) VALUES (?1, ?2)
                 ON CONFLICT (sha256) DO UPDATE SET not_after = excluded.not_after",
                params![certificate.sha256, certificate.not_after_millis],
            )?;
        }
        tx.commit()?;
        Ok(Enrollment {
            runtime_id,
            client_secret,
            group,
            certificate: certificate.map(|c| c.pem),
            ca_certificate: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::*;

    backend_tests! {
        fn a_failed_certificate_spends_no_enrollment_token(db: &mut dyn Backend) {
            let token = db.create_enrollment_token("default", HOUR, t0()).unwrap();
            let refused = db.enroll(&token.token, "web-1", t0(), |_| {
                Err(StoreError::Invalid("bad CSR".to_string()))
            });
            assert!(matches!(refused, Err(StoreError::Invalid(_))));
            db.enroll(&token.token, "web-1", t0(), no_certificate)
                .unwrap();
        }

        fn enrollment_tokens_are_single_use_and_expire(db: &mut dyn Backend) {
            let token = db.create_enrollment_token("prod", HOUR, t0()).unwrap();
            assert_eq!(token.group, "prod");
            let enrollment = db
                .enroll(&token.token, "web-1", later(10), no_certificate)
                .unwrap();
            assert_eq!(enrollment.group, "prod");
            assert!(matches!(
                db.enroll(&token.token, "web-2", later(20), no_certificate),
                Err(StoreError::InvalidEnrollmentToken)
            ));
            let expiring = db.create_enrollment_token("prod", MINUTE, t0()).unwrap();
            assert!(matches!(
                db.enroll(&expiring.token, "web-3", later(60), no_certificate),
                Err(StoreError::InvalidEnrollmentToken)
            ));
            assert!(matches!(
                db.enroll("unknown", "web-4", t0(), no_certificate),
                Err(StoreError::InvalidEnrollmentToken)
            ));
            assert_eq!(db.list_runtimes(t0(), MINUTE).unwrap().len(), 1);
        }

        fn enrollment_input_is_validated(db: &mut dyn Backend) {
            assert!(matches!(
                db.create_enrollment_token("bad group", HOUR, t0()),
                Err(StoreError::Invalid(_))
            ));
            assert!(matches!(
                db.create_enrollment_token("g", Duration::ZERO, t0()),
                Err(StoreError::Invalid(_))
            ));
            assert!(matches!(
                db.create_enrollment_token("g", MAX_ENROLLMENT_TTL + MINUTE, t0()),
                Err(StoreError::Invalid(_))
            ));
            let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
            assert!(matches!(
                db.enroll(&token.token, "", t0(), no_certificate),
                Err(StoreError::Invalid(_))
            ));
            // A refused name does not spend the token.
            db.enroll(&token.token, "ok", t0(), no_certificate).unwrap();
        }
    }
}
