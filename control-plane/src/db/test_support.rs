//! Fixtures the store's tests share: a fixed clock, an enrolled runtime,
//! and [`backend_tests!`], which runs each test against both backends.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::Backend;
use crate::ca::IssuedCertificate;
use crate::error::StoreError;
use crate::model::Enrollment;

pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const MINUTE: Duration = Duration::from_secs(60);

pub(super) fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap()
}

pub(super) fn later(seconds: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(seconds)
}

pub(super) fn no_certificate(_: &str) -> Result<Option<IssuedCertificate>, StoreError> {
    Ok(None)
}

pub(super) fn enrolled(db: &mut dyn Backend, group: &str) -> Enrollment {
    let token = db.create_enrollment_token(group, HOUR, t0()).unwrap();
    db.enroll(&token.token, "web-1", t0(), no_certificate)
        .unwrap()
}

/// A fresh PostgreSQL database of the shared test cluster, migrated, and a
/// connection to it.
pub(super) fn postgres_database() -> (test_postgres::TestDatabase, postgres::Client) {
    let database = test_postgres::TestDatabase::create();
    let mut client = database.connect();
    super::postgres::migrate(&mut client).unwrap();
    (database, client)
}

/// Defines each test (`fn name(db: &mut dyn Backend) { … }`) twice: in a
/// module `sqlite` against an in-memory SQLite database, and in a module
/// `postgres` against a fresh database of the test cluster.
macro_rules! backend_tests {
    ($($(#[$attribute:meta])* fn $name:ident($db:ident: &mut dyn Backend) $body:block)*) => {
        $($(#[$attribute])* fn $name($db: &mut dyn $crate::db::Backend) $body)*

        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let mut db = $crate::db::Db::open_in_memory().unwrap();
                    super::$name(&mut db);
                }
            )*
        }

        mod postgres {
            $(
                #[test]
                fn $name() {
                    let (_database, mut client) = $crate::db::test_support::postgres_database();
                    super::$name(&mut $crate::db::PgDb::new(&mut client));
                }
            )*
        }
    };
}
pub(super) use backend_tests;
