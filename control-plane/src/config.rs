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
}

/// What the HTTP server needs to know besides its database.
#[derive(Clone)]
pub struct ServerConfig {
    admin_token_hash: [u8; 32],
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// Age of the last heartbeat after which a runtime is stale.
    pub stale_after: Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("admin_token", &"<redacted>")
            .field("token_ttl", &self.token_ttl)
            .field("stale_after", &self.stale_after)
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
        })
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
