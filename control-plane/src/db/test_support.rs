//! Fixtures the store's tests share: a fixed clock and an enrolled runtime.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::Db;
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

pub(super) fn enrolled(db: &mut Db, group: &str) -> Enrollment {
    let token = db.create_enrollment_token(group, HOUR, t0()).unwrap();
    db.enroll(&token.token, "web-1", t0(), no_certificate)
        .unwrap()
}
