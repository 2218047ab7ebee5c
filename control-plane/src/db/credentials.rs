//! Runtimes' credentials: client secrets (and their rotation), the client
//! certificates they are bound to, and the access tokens issued for them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{Db, duration_millis};
use crate::error::StoreError;
use crate::model::{IssuedToken, RuntimeIdentity, TokenType, to_millis};
use crate::secrets::{constant_time_eq, hash_secret, random_token};

/// What the token endpoint checks of a runtime.
pub(super) struct RuntimeCredentials {
    pub(super) secret_hash: String,
    pub(super) next_secret_hash: Option<String>,
    pub(super) cert_sha256: Option<String>,
    pub(super) next_cert_sha256: Option<String>,
    pub(super) revoked: bool,
}

impl RuntimeCredentials {
    /// Checks a client secret (and, over mutual TLS, the SHA-256 of the
    /// connection's certificate) against these credentials: `Ok(true)` when
    /// they are the rotated ones, used for the first time (they must then
    /// replace the current ones), `Ok(false)` for the current ones.
    pub(super) fn check(
        &self,
        client_secret: &str,
        certificate: Option<&str>,
    ) -> Result<bool, StoreError> {
        let presented = hash_secret(client_secret);
        // Over mutual TLS the certificate must be the one issued with the
        // secret; over plain HTTP there is none to check.
        let certificate_matches = |bound: Option<&str>| match certificate {
            None => true,
            Some(presented) => bound == Some(presented),
        };
        let current = constant_time_eq(self.secret_hash.as_bytes(), presented.as_bytes())
            && certificate_matches(self.cert_sha256.as_deref());
        // The first use of a rotated secret (with its certificate, if the
        // rotation issued one) makes them the only valid ones.
        let rotated = self
            .next_secret_hash
            .as_deref()
            .is_some_and(|next| constant_time_eq(next.as_bytes(), presented.as_bytes()))
            && certificate_matches(
                self.next_cert_sha256
                    .as_deref()
                    .or(self.cert_sha256.as_deref()),
            );
        if !(current || rotated) || self.revoked {
            return Err(StoreError::InvalidClient);
        }
        Ok(rotated)
    }
}

impl Db {
    /// The client-credentials grant: a new access token for the runtime
    /// `client_id` if `client_secret` is its secret, it is not revoked, and
    /// (over mutual TLS, when `certificate` is the SHA-256 of the
    /// connection's client certificate) the certificate is the runtime's.
    /// The token is bound to that certificate.
    pub fn issue_access_token(
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<RuntimeCredentials> = tx
            .query_row(
                "SELECT secret_hash, next_secret_hash, cert_sha256, next_cert_sha256, revoked_at
                 FROM runtimes WHERE id = ?1",
                params![id],
                |row| {
                    Ok(RuntimeCredentials {
                        secret_hash: row.get(0)?,
                        next_secret_hash: row.get(1)?,
                        cert_sha256: row.get(2)?,
                        next_cert_sha256: row.get(3)?,
                        revoked: row.get::<_, Option<i64>>(4)?.is_some(),
                    })
                },
            )
            .optional()?;
        let Some(stored) = row else {
            return Err(StoreError::InvalidClient);
        };
        let rotated = stored.check(client_secret, certificate)?;
        if rotated {
            tx.execute(
                "UPDATE runtimes SET secret_hash = next_secret_hash, next_secret_hash = NULL,
                     cert_sha256 = COALESCE(next_cert_sha256, cert_sha256), next_cert_sha256 = NULL
                 WHERE id = ?1",
                params![id],
            )?;
            // The old credentials' access tokens go with them.
            tx.execute(
                "DELETE FROM access_tokens WHERE runtime_id = ?1",
                params![id],
            )?;
        }
        tx.execute(
            "DELETE FROM access_tokens WHERE runtime_id = ?1 AND expires_at <= ?2",
            params![id, now],
        )?;
        let access_token = random_token()?;
        tx.execute(
            "INSERT INTO access_tokens (token_hash, runtime_id, expires_at, cert_sha256)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                hash_secret(&access_token),
                id,
                now.saturating_add(duration_millis(ttl)),
                certificate
            ],
        )?;
        tx.commit()?;
        Ok(IssuedToken {
            access_token,
            token_type: TokenType::Bearer,
            expires_in: ttl.as_secs(),
        })
    }

    /// The runtime an access token belongs to, if the token is known,
    /// unexpired, its runtime not revoked, and (over mutual TLS, when
    /// `certificate` is the SHA-256 of the connection's client certificate)
    /// the token was issued over that certificate.
    pub fn authenticate(
        &self,
        access_token: &str,
        certificate: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<RuntimeIdentity>, StoreError> {
        let row: Option<(String, String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT r.id, r.group_name, t.cert_sha256 FROM access_tokens t
                 JOIN runtimes r ON r.id = t.runtime_id
                 WHERE t.token_hash = ?1 AND t.expires_at > ?2 AND r.revoked_at IS NULL",
                params![hash_secret(access_token), to_millis(now)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((id, group, bound)) = row else {
            return Ok(None);
        };
        if certificate.is_some() && bound.as_deref() != certificate {
            return Ok(None);
        }
        let id = Uuid::parse_str(&id).map_err(|e| {
            StoreError::Inconsistent(format!("stored runtime id {id:?} is not a UUID: {e}"))
        })?;
        Ok(Some(RuntimeIdentity { id, group }))
    }

    /// Issues a new client secret for `runtime`, to go with the new client
    /// certificate `certificate` (SHA-256) if the rotation issued one. The
    /// current credentials stay valid until the new ones are first used at
    /// the token endpoint, so a runtime that crashes before saving them is
    /// not locked out.
    pub fn rotate_secret(
        &mut self,
        runtime: Uuid,
        certificate: Option<&str>,
    ) -> Result<String, StoreError> {
        let secret = random_token()?;
        let updated = self.conn.execute(
            "UPDATE runtimes SET next_secret_hash = ?1, next_cert_sha256 = ?3
             WHERE id = ?2 AND revoked_at IS NULL",
            params![hash_secret(&secret), runtime.to_string(), certificate],
        )?;
        if updated == 0 {
            return Err(StoreError::InvalidClient);
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::IssuedCertificate;
    use crate::db::test_support::*;

    fn certificate(sha256: &str) -> IssuedCertificate {
        IssuedCertificate {
            pem: format!("PEM of {sha256}"),
            sha256: sha256.to_string(),
            not_after_millis: 0,
        }
    }

    backend_tests! {
        fn secrets_are_stored_only_as_hashes(db: &mut dyn Backend) {
            let token = db.create_enrollment_token("g", HOUR, t0()).unwrap();
            let enrollment = db.enroll(&token.token, "n", t0(), no_certificate).unwrap();
            let access = db
                .issue_access_token(
                    &enrollment.runtime_id,
                    &enrollment.client_secret,
                    None,
                    MINUTE,
                    t0(),
                )
                .unwrap();
            let dump = db
                .query_texts(
                    "SELECT token_hash FROM enrollment_tokens
                     UNION ALL SELECT secret_hash FROM runtimes
                     UNION ALL SELECT token_hash FROM access_tokens",
                )
                .unwrap()
                .join("|");
            for secret in [
                &token.token,
                &enrollment.client_secret,
                &access.access_token,
            ] {
                assert!(!dump.contains(secret.as_str()));
                assert!(dump.contains(&hash_secret(secret)));
            }
        }

        fn rotated_secrets_replace_the_old_one_on_first_use(db: &mut dyn Backend) {
            let e = enrolled(db, "default");
            let id = e.runtime_id.clone();
            let runtime = Uuid::parse_str(&id).unwrap();
            let new = db.rotate_secret(runtime, None).unwrap();
            // Until the new secret is used, the old one still works.
            let old_token = db
                .issue_access_token(&id, &e.client_secret, None, HOUR, t0())
                .unwrap();
            let new_token = db.issue_access_token(&id, &new, None, HOUR, t0()).unwrap();
            // Its first use retires the old secret and its tokens.
            assert_eq!(
                db.authenticate(&old_token.access_token, None, t0())
                    .unwrap(),
                None
            );
            assert!(
                db.authenticate(&new_token.access_token, None, t0())
                    .unwrap()
                    .is_some()
            );
            assert!(matches!(
                db.issue_access_token(&id, &e.client_secret, None, HOUR, t0()),
                Err(StoreError::InvalidClient)
            ));
            db.issue_access_token(&id, &new, None, HOUR, t0()).unwrap();
            db.revoke_runtime(&id, t0()).unwrap();
            assert!(matches!(
                db.rotate_secret(runtime, None),
                Err(StoreError::InvalidClient)
            ));
        }

        fn tokens_are_bound_to_the_client_certificate(db: &mut dyn Backend) {
            let token = db.create_enrollment_token("default", HOUR, t0()).unwrap();
            let e = db
                .enroll(&token.token, "web-1", t0(), |_| {
                    Ok(Some(certificate("aaa")))
                })
                .unwrap();
            assert_eq!(e.certificate.as_deref(), Some("PEM of aaa"));
            let listed = db.list_runtimes(t0(), MINUTE).unwrap();
            assert_eq!(listed[0].certificate_sha256.as_deref(), Some("aaa"));
            let (id, secret) = (e.runtime_id.clone(), e.client_secret.clone());
            // The secret alone is not enough: it must come with the certificate.
            for wrong in ["bbb", ""] {
                assert!(matches!(
                    db.issue_access_token(&id, &secret, Some(wrong), HOUR, t0()),
                    Err(StoreError::InvalidClient)
                ));
            }
            let issued = db
                .issue_access_token(&id, &secret, Some("aaa"), HOUR, t0())
                .unwrap();
            assert!(
                db.authenticate(&issued.access_token, Some("aaa"), t0())
                    .unwrap()
                    .is_some()
            );
            // A token used over another certificate is refused.
            assert_eq!(
                db.authenticate(&issued.access_token, Some("bbb"), t0())
                    .unwrap(),
                None
            );

            // Rotation: the old pair works until the new pair is first used;
            // the new secret does not work with the old certificate.
            let runtime = Uuid::parse_str(&id).unwrap();
            let new = db.rotate_secret(runtime, Some("ccc")).unwrap();
            db.issue_access_token(&id, &secret, Some("aaa"), HOUR, t0())
                .unwrap();
            assert!(
                db.issue_access_token(&id, &new, Some("aaa"), HOUR, t0())
                    .is_err()
            );
            db.issue_access_token(&id, &new, Some("ccc"), HOUR, t0())
                .unwrap();
            assert!(
                db.issue_access_token(&id, &secret, Some("aaa"), HOUR, t0())
                    .is_err()
            );
            // Tokens of the old credentials stop working, over any certificate.
            for certificate in ["aaa", "ccc"] {
                assert_eq!(
                    db.authenticate(&issued.access_token, Some(certificate), t0())
                        .unwrap(),
                    None
                );
            }
        }

        fn access_tokens_authenticate_until_expiry_or_revocation(db: &mut dyn Backend) {
            let e = enrolled(db, "g");
            assert!(matches!(
                db.issue_access_token(&e.runtime_id, "wrong", None, MINUTE, t0()),
                Err(StoreError::InvalidClient)
            ));
            assert!(matches!(
                db.issue_access_token("not-a-uuid", &e.client_secret, None, MINUTE, t0()),
                Err(StoreError::InvalidClient)
            ));
            assert!(matches!(
                db.issue_access_token(
                    &Uuid::new_v4().to_string(),
                    &e.client_secret,
                    None,
                    MINUTE,
                    t0()
                ),
                Err(StoreError::InvalidClient)
            ));
            let token = db
                .issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, t0())
                .unwrap();
            assert_eq!(token.expires_in, 60);
            assert_eq!(token.token_type, TokenType::Bearer);
            let who = db
                .authenticate(&token.access_token, None, later(59))
                .unwrap()
                .unwrap();
            assert_eq!(who.id.to_string(), e.runtime_id);
            assert_eq!(who.group, "g");
            assert_eq!(
                db.authenticate(&token.access_token, None, later(60))
                    .unwrap(),
                None
            );
            assert_eq!(db.authenticate("unknown", None, t0()).unwrap(), None);

            let token = db
                .issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, t0())
                .unwrap();
            db.revoke_runtime(&e.runtime_id, later(1)).unwrap();
            assert_eq!(
                db.authenticate(&token.access_token, None, later(2))
                    .unwrap(),
                None
            );
            assert!(matches!(
                db.issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, later(3)),
                Err(StoreError::InvalidClient)
            ));
            let runtimes = db.list_runtimes(later(4), MINUTE).unwrap();
            assert!(runtimes[0].revoked);
            // Revoking again keeps the first time; unknown ids are reported.
            db.revoke_runtime(&e.runtime_id, later(100)).unwrap();
            assert_eq!(
                db.list_runtimes(later(4), MINUTE).unwrap()[0].revoked_at,
                runtimes[0].revoked_at
            );
            assert!(matches!(
                db.revoke_runtime(&Uuid::new_v4().to_string(), t0()),
                Err(StoreError::RuntimeNotFound(_))
            ));
        }

        fn expired_access_tokens_are_pruned_on_issue(db: &mut dyn Backend) {
            let e = enrolled(db, "g");
            for _ in 0..3 {
                db.issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, t0())
                    .unwrap();
            }
            db.issue_access_token(&e.runtime_id, &e.client_secret, None, MINUTE, later(120))
                .unwrap();
            let count = db
                .query_texts("SELECT CAST(count(*) AS TEXT) FROM access_tokens")
                .unwrap();
            assert_eq!(count, ["1"]);
        }
    }
}
