//! Where the store keeps its data, from the `--database` argument: a
//! PostgreSQL URL (`postgres://` or `postgresql://`), else an SQLite file
//! (a path, or `sqlite:` followed by one).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::postgres::{PgSettings, describe};
use crate::error::StoreError;

/// The database the control plane uses.
#[derive(Clone)]
pub enum Database {
    /// An SQLite file (created, with its schema, if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every replica given the same URL.
    Postgres(Box<PgSettings>),
}

impl Database {
    /// The SQLite file, if the database is one (the CA lives beside it by
    /// default).
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

impl FromStr for Database {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        if text.trim().is_empty() {
            return Err(StoreError::Invalid(
                "the database is empty: give an SQLite file or a postgres:// URL".to_string(),
            ));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return PgSettings::from_url(text).map(|settings| Self::Postgres(Box::new(settings)));
        }
        // `sqlite://PATH` or `sqlite:PATH`; `sqlite:///abs` keeps its slash.
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        if path.is_empty() {
            return Err(StoreError::Invalid(format!(
                "{text:?} names no SQLite file: use sqlite:PATH or a path"
            )));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// Shows the database without a password: safe for logs and errors.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(settings) => f.write_str(&describe(settings.config())),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        for (text, path) in [
            ("cp.db", "cp.db"),
            ("/var/lib/acp/cp.db", "/var/lib/acp/cp.db"),
            ("sqlite:cp.db", "cp.db"),
            ("sqlite:///var/lib/cp.db", "/var/lib/cp.db"),
            ("sqlite://cp.db", "cp.db"),
        ] {
            let database: Database = text.parse().unwrap();
            assert_eq!(database.sqlite_path(), Some(Path::new(path)), "{text}");
        }
        for url in [
            "postgres://acp:s3cret@db.example:5433/acp",
            "postgresql://acp:s3cret@db.example:5433/acp?connect_timeout=5",
        ] {
            let database: Database = url.parse().unwrap();
            assert_eq!(database.sqlite_path(), None);
            let shown = format!("{database} {database:?}");
            assert!(shown.contains("acp@db.example/acp"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let socket: Database = "postgresql:///acp?host=/run/postgresql&user=acp"
            .parse()
            .unwrap();
        assert_eq!(socket.to_string(), "postgresql://acp@/run/postgresql/acp");
        for bad in [
            "",
            "sqlite:",
            "postgres://acp@db/acp?sslmode=bogus",
            "postgres://acp@db/acp?sslmode=allow",
        ] {
            assert!(bad.parse::<Database>().is_err(), "{bad}");
        }
    }
}
