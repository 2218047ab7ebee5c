//! Runtimes' credentials on PostgreSQL. A token grant locks the runtime's
//! row, so two replicas granting at once over a freshly rotated secret
//! promote it once, and a revocation is seen by the grant after it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgDb;
use crate::db::credentials::RuntimeCredentials;
use crate::db::duration_millis;
use crate::error::StoreError;
use crate::model::{IssuedToken, RuntimeIdentity, TokenType, to_millis};
use crate::secrets::{hash_secret, random_token};

impl PgDb<'_> {
    pub(super) fn issue_access_token(
        &mut self,
        client_id: &str,
        client_secret: &str,
        certificate: Option<&str>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, StoreError> {
        let Ok(id) = Uuid::parse_str(client_id) else {
            return Err(StoreError::InvalidClient);
        };
        let id = id.to_string();
        let now = to_millis(now);
        let mut tx = self.client.transaction()?;
        let row = tx.query_opt(
            "SELECT secret_hash, next_secret_hash, cert_sha256, next_cert_sha256, revoked_at
             FROM runtimes WHERE id = $1 FOR UPDATE",
            &[&id],
        )?;
        let Some(row) = row else {
            return Err(StoreError::InvalidClient);
        };
        let stored = RuntimeCredentials {
            secret_hash: row.try_get(0)?,
            next_secret_hash: row.try_get(1)?,
            cert_sha256: row.try_get(2)?,
            next_cert_sha256: row.try_get(3)?,
            revoked: row.try_get::<_, Option<i64>>(4)?.is_some(),
        };
        if stored.check(client_secret, certificate)? {
            tx.execute(
                "UPDATE runtimes SET secret_hash = next_secret_hash, next_secret_hash = NULL,
                     cert_sha256 = COALESCE(next_cert_sha256, cert_sha256), next_cert_sha256 = NULL
                 WHERE id = $1",
                &[&id],
            )?;
            // The old credentials' access tokens go with them.
            tx.execute("DELETE FROM access_tokens WHERE runtime_id = $1", &[&id])?;
        }
        tx.execute(
            "DELETE FROM access_tokens WHERE runtime_id = $1 AND expires_at <= $2",
            &[&id, &now],
        )?;
        let access_token = random_token()?;
        tx.execute(
            "INSERT INTO access_tokens (token_hash, runtime_id, expires_at, cert_sha256)
             VALUES ($1, $2, $3, $4)",
            &[
                &hash_secret(&access_token),
                &id,
                &now.saturating_add(duration_millis(ttl)),
                &certificate,
            ],
        )?;
        tx.commit()?;
        Ok(IssuedToken {
            access_token,
            token_type: TokenType::Bearer,
            expires_in: ttl.as_secs(),
        })
    }

    pub(super) fn authenticate(
        &mut self,
        access_token: &str,
        certificate: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<RuntimeIdentity>, StoreError> {
        let row = self.client.query_opt(
            "SELECT r.id, r.group_name, t.cert_sha256 FROM access_tokens t
             JOIN runtimes r ON r.id = t.runtime_id
             WHERE t.token_hash = $1 AND t.expires_at > $2 AND r.revoked_at IS NULL",
            &[&hash_secret(access_token), &to_millis(now)],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (id, group, bound): (String, String, Option<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if certificate.is_some() && bound.as_deref() != certificate {
            return Ok(None);
        }
        let id = Uuid::parse_str(&id).map_err(|e| {
            StoreError::Inconsistent(format!("stored runtime id {id:?} is not a UUID: {e}"))
        })?;
        Ok(Some(RuntimeIdentity { id, group }))
    }

    pub(super) fn rotate_secret(
        &mut self,
        runtime: Uuid,
        certificate: Option<&str>,
    ) -> Result<String, StoreError> {
        let secret = random_token()?;
        let updated = self.client.execute(
            "UPDATE runtimes SET next_secret_hash = $1, next_cert_sha256 = $3
             WHERE id = $2 AND revoked_at IS NULL",
            &[&hash_secret(&secret), &runtime.to_string(), &certificate],
        )?;
        if updated == 0 {
            return Err(StoreError::InvalidClient);
        }
        Ok(secret)
    }
}
