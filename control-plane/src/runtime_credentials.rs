//! Runtime credentials made by the administrator, for runtimes that are
//! given them in their configuration (`[control_plane]`) instead of
//! enrolling: the way a Compliance Framework API's agents get theirs.
//!
//! The runtime is created as enrollment creates one — a single-use
//! enrollment token of the runtime's group, spent at once, so the store
//! keeps one path for new runtimes and the token's row says who it made —
//! but without a client certificate: the runtime authenticates with its
//! client secret alone, which `serve --compliance-framework-only` and
//! plain HTTP accept (a control plane serving mutual TLS refuses it).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::Backend;
use crate::error::StoreError;
use crate::model::Enrollment;

/// How long the enrollment token spent at once lives.
const SPENT_AT_ONCE: Duration = Duration::from_secs(60);

/// Why a secret file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the client secret to {path}: {source}")]
pub struct SecretFileError {
    /// The file.
    pub path: String,
    /// Why (it exists already, the directory is missing, ...).
    pub source: std::io::Error,
}

/// Creates a runtime named `name` in `group` with a new client secret and
/// no client certificate.
pub fn create(
    db: &mut dyn Backend,
    name: &str,
    group: &str,
    now: DateTime<Utc>,
) -> Result<Enrollment, StoreError> {
    let token = db.create_enrollment_token(group, SPENT_AT_ONCE, now)?;
    db.enroll(&token.token, name, now, |_| Ok(None))
}

/// Writes `secret` and a newline to the new file `path`, readable only by
/// its owner; an existing file is never overwritten.
pub fn write_secret(path: &Path, secret: &str) -> Result<(), SecretFileError> {
    let fail = |source| SecretFileError {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    #[test]
    fn a_created_runtime_gets_a_token_with_its_secret_alone() {
        let mut db = Db::open_in_memory().unwrap();
        let now = Utc::now();
        let created = create(&mut db, "web-1", "prod", now).unwrap();
        assert_eq!(created.group, "prod");
        assert!(created.certificate.is_none());
        let ttl = Duration::from_secs(60);
        let token = db
            .issue_access_token(&created.runtime_id, &created.client_secret, None, ttl, now)
            .unwrap();
        let identity = db.authenticate(&token.access_token, None, now).unwrap();
        assert_eq!(identity.unwrap().group, "prod");
        assert!(matches!(
            db.issue_access_token(&created.runtime_id, "wrong", None, ttl, now),
            Err(StoreError::InvalidClient)
        ));
        // Names are checked as at enrollment.
        assert!(matches!(
            create(&mut db, "", "prod", now),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn the_secret_file_is_new_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_secret(&path, "s3cret").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = write_secret(&path, "other").unwrap_err();
        assert_eq!(again.source.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(!again.to_string().contains("other"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
    }
}
