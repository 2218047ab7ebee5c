//! The server's settings, validated before it starts.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::secrets::constant_time_eq;

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// Default lifetime of access tokens.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Default age after which a runtime's last heartbeat makes it stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3 * 60);
/// Default largest evidence record (its compact JSON). A runtime's largest
/// finding (4 KiB message and remediation, 64 evidence items of 8 KiB) is
/// about 540 KB of text and at most about 3.3 MB of JSON when every
/// character needs an escape: it must fit.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Default largest body of an evidence batch request.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Default largest body of any other request.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Default storage quota of one runtime: the bytes of its stored records.
pub const DEFAULT_RUNTIME_STORAGE_QUOTA: u64 = 4 * 1024 * 1024 * 1024;
/// Default burst of unauthenticated requests (enrollment, token) per source.
pub const DEFAULT_AUTH_BURST: u32 = 60;
/// Default sustained rate of unauthenticated requests per source, per minute.
pub const DEFAULT_AUTH_PER_MINUTE: u32 = 60;

/// Invalid server settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The admin token is missing or too short.
    #[error(
        "the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters; set --admin-token or ACP_ADMIN_TOKEN (for example to the output of `openssl rand -hex 32`)"
    )]
    AdminTokenTooShort,
    /// The access-token lifetime is out of range.
    #[error("--token-ttl must be between 1 second and 24 hours")]
    TokenTtl,
    /// The stale threshold is zero.
    #[error("--stale-after must be more than zero")]
    StaleAfter,
    /// A size or rate limit is out of range.
    #[error("{0}")]
    Limit(&'static str),
}

/// How much a client may send and store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest evidence record, as compact JSON (413 beyond).
    pub max_record_bytes: usize,
    /// The largest request body of `POST /v1/evidence/batch` (413 beyond).
    pub max_batch_bytes: usize,
    /// The largest request body of every other route (413 beyond).
    pub max_body_bytes: usize,
    /// The bytes of stored evidence records one runtime may have (507
    /// beyond).
    pub runtime_storage_quota: u64,
    /// Requests to the unauthenticated routes (enrollment, token) one
    /// source address may send at once before being slowed down (429).
    pub auth_burst: u32,
    /// Requests per minute one source address may send to them in the long
    /// run.
    pub auth_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            runtime_storage_quota: DEFAULT_RUNTIME_STORAGE_QUOTA,
            auth_burst: DEFAULT_AUTH_BURST,
            auth_per_minute: DEFAULT_AUTH_PER_MINUTE,
        }
    }
}

impl Limits {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_record_bytes < 1024 {
            return Err(ConfigError::Limit(
                "--max-record-bytes must be at least 1 KiB",
            ));
        }
        if self.max_batch_bytes < self.max_record_bytes {
            return Err(ConfigError::Limit(
                "--max-batch-bytes must be at least --max-record-bytes",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Limit(
                "--max-body-bytes must be at least 1 KiB",
            ));
        }
        if self.runtime_storage_quota == 0 {
            return Err(ConfigError::Limit(
                "--runtime-storage-quota must be more than zero",
            ));
        }
        if self.auth_burst == 0 || self.auth_per_minute == 0 {
            return Err(ConfigError::Limit(
                "--auth-burst and --auth-per-minute must be more than zero",
            ));
        }
        Ok(())
    }
}

/// What the HTTP server needs to know besides its database.
#[derive(Clone)]
pub struct ServerConfig {
    admin_token_hash: [u8; 32],
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// Age of the last heartbeat after which a runtime is stale.
    pub stale_after: Duration,
    /// Size, storage and rate limits.
    pub limits: Limits,
    /// Serve only the Compliance Framework routes a runtime uses (token,
    /// heartbeat, evidence) and health, nothing of `/v1`.
    pub compliance_framework_only: bool,
    /// The longest life of a web view session.
    pub session_ttl: Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("admin_token", &"<redacted>")
            .field("token_ttl", &self.token_ttl)
            .field("stale_after", &self.stale_after)
            .field("limits", &self.limits)
            .field("compliance_framework_only", &self.compliance_framework_only)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

impl ServerConfig {
    /// Validated settings.
    pub fn new(
        admin_token: &str,
        token_ttl: Duration,
        stale_after: Duration,
    ) -> Result<Self, ConfigError> {
        if admin_token.trim().len() < MIN_ADMIN_TOKEN_LEN {
            return Err(ConfigError::AdminTokenTooShort);
        }
        if token_ttl < Duration::from_secs(1) || token_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::TokenTtl);
        }
        if stale_after.is_zero() {
            return Err(ConfigError::StaleAfter);
        }
        Ok(Self {
            admin_token_hash: Sha256::digest(admin_token.as_bytes()).into(),
            token_ttl,
            stale_after,
            limits: Limits::default(),
            compliance_framework_only: false,
            session_ttl: crate::session::DEFAULT_SESSION_TTL,
        })
    }

    /// The same settings, serving only the Compliance Framework routes
    /// when `only` (`serve --compliance-framework-only`).
    pub fn with_compliance_framework_only(self, only: bool) -> Self {
        Self {
            compliance_framework_only: only,
            ..self
        }
    }

    /// The same settings with `limits` (validated).
    pub fn with_limits(self, limits: Limits) -> Result<Self, ConfigError> {
        limits.validate()?;
        Ok(Self { limits, ..self })
    }

    /// Whether `candidate` is the admin token (compared by hash, in
    /// constant time).
    pub fn is_admin_token(&self, candidate: &str) -> bool {
        let candidate: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        constant_time_eq(&candidate, &self.admin_token_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_checked() {
        let config =
            ServerConfig::new("0123456789abcdef", DEFAULT_TOKEN_TTL, DEFAULT_STALE_AFTER).unwrap();
        assert!(config.is_admin_token("0123456789abcdef"));
        assert!(!config.is_admin_token("0123456789abcdeF"));
        assert!(!config.is_admin_token(""));
        assert!(!format!("{config:?}").contains("0123"));
    }

    #[test]
    fn settings_are_validated() {
        assert_eq!(
            ServerConfig::new("short", DEFAULT_TOKEN_TTL, DEFAULT_STALE_AFTER).unwrap_err(),
            ConfigError::AdminTokenTooShort
        );
        let token = "0123456789abcdef";
        assert_eq!(
            ServerConfig::new(token, Duration::ZERO, DEFAULT_STALE_AFTER).unwrap_err(),
            ConfigError::TokenTtl
        );
        assert_eq!(
            ServerConfig::new(token, DEFAULT_TOKEN_TTL, Duration::ZERO).unwrap_err(),
            ConfigError::StaleAfter
        );
    }
}
