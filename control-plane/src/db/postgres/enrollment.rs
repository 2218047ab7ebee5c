//! Enrollment tokens on PostgreSQL: the conditional `UPDATE` spends a token
//! once however many replicas race for it (the losers wait for the winner's
//! transaction, then find the token used).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgDb;
use crate::db::backend::Certify;
use crate::db::enrollment::new_enrollment_token;
use crate::error::StoreError;
use crate::model::{Enrollment, NewEnrollmentToken, rfc3339, to_millis, validate_runtime_name};
use crate::secrets::{hash_secret, random_token};

impl PgDb<'_> {
    pub(super) fn create_enrollment_token(
        &mut self,
        group: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewEnrollmentToken, StoreError> {
        let (token, created, expires) = new_enrollment_token(group, ttl, now)?;
        self.client.execute(
            "INSERT INTO enrollment_tokens (token_hash, group_name, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[&hash_secret(&token), &group, &created, &expires],
        )?;
        Ok(NewEnrollmentToken {
            token,
            group: group.to_string(),
            expires_at: rfc3339(expires),
        })
    }

    pub(super) fn enroll(
        &mut self,
        token: &str,
        name: &str,
        now: DateTime<Utc>,
        certify: Certify<'_>,
    ) -> Result<Enrollment, StoreError> {
        validate_runtime_name(name)?;
        let now = to_millis(now);
        let runtime_id = Uuid::new_v4().to_string();
        let client_secret = random_token()?;
        let mut tx = self.client.transaction()?;
        let row = tx.query_opt(
            "UPDATE enrollment_tokens SET used_at = $2, used_by = $3
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING group_name",
            &[&hash_secret(token), &now, &runtime_id],
        )?;
        let Some(row) = row else {
            return Err(StoreError::InvalidEnrollmentToken);
        };
        let group: String = row.try_get(0)?;
        // Dropping the transaction on an error rolls the token back.
        let certificate = certify(&runtime_id)?;
        tx.execute(
            "INSERT INTO runtimes (id, name, group_name, secret_hash, enrolled_at, cert_sha256)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &runtime_id,
                &name,
                &group,
                &hash_secret(&client_secret),
                &now,
                &certificate.as_ref().map(|c| c.sha256.as_str()),
            ],
        )?;
        if let Some(certificate) = &certificate {
            // Its expiry, for the fleet view.
            tx.execute(
                super::fleet::RECORD_CERTIFICATE,
                &[&certificate.sha256, &certificate.not_after_millis],
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
