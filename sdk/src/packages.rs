//! The installed packages of the assessed system
//! (`assessment:plugin/packages`; the operator grants them with
//! `packages = true`). Read from the package database under the assessment
//! root (dpkg or apk), so an unpacked image is assessed like a live system.

use crate::AccessError;
use crate::bindings::assessment::plugin::packages as raw;

pub use raw::InstalledPackage;

/// Every installed package, sorted by name.
pub fn installed() -> Result<Vec<InstalledPackage>, AccessError> {
    raw::installed()
}

/// The installed package called `name`, if any, in a list from
/// [`installed`].
pub fn find<'a>(packages: &'a [InstalledPackage], name: &str) -> Option<&'a InstalledPackage> {
    packages.iter().find(|p| p.name == name)
}
