//! The installed packages of the assessed system
//! (`assessment:plugin/packages`; the operator grants them with
//! `packages = true`). Read from the package database under the assessment
//! root (dpkg or apk), so an unpacked image is assessed like a live system.

use crate::AccessError;
use crate::imports::packages as raw;

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

/// Through the mock host: what a plugin calling [`installed`] and [`find`]
/// sees, granted or not.
#[cfg(all(test, feature = "testing", unix))]
mod tests {
    use crate::testing::{MockHost, package};
    use crate::{
        AccessError, BenchmarkRef, Check, Plugin, PluginInfo, RunError, RunSummary, Severity,
        Status, SubjectKind,
    };

    const TELNET: Check = Check::new(
        "pkg-no-telnet",
        "The telnet client is not installed",
        Severity::Medium,
    )
    .references(&[BenchmarkRef::new("CIS Debian Linux 12", "2.2.4")]);

    /// Reports the telnet package through `packages::installed` and
    /// `packages::find`.
    struct NoTelnet;

    impl Plugin for NoTelnet {
        fn describe() -> PluginInfo {
            PluginInfo::new("no-telnet", "0.1.0", "Test plugin").check(&TELNET)
        }

        fn run() -> Result<RunSummary, RunError> {
            let finding = match super::installed() {
                Ok(installed) => match super::find(&installed, "telnet") {
                    Some(p) => TELNET
                        .fail(format!("telnet {} is installed", p.version))
                        .evidence("manager", &p.manager)
                        .evidence("architecture", &p.architecture)
                        .evidence("installed", installed.len()),
                    None => TELNET
                        .pass("telnet is not installed")
                        .evidence("installed", installed.len()),
                },
                Err(AccessError::NotFound(m)) => {
                    TELNET.not_applicable(format!("no package database: {m}"))
                }
                Err(e) => TELNET.error(format!("cannot list packages: {}", e.explain())),
            };
            finding.subject(SubjectKind::Package, "telnet").emit()?;
            Ok(RunSummary::default())
        }
    }

    #[test]
    fn installed_packages_come_from_the_mock_host_when_granted() {
        let run = MockHost::new()
            .installed_packages([package("telnet", "0.17-44"), package("bash", "5.2")])
            .run::<NoTelnet>();
        run.assert_completed();
        let f = run.finding_for("pkg-no-telnet", "telnet");
        assert_eq!(f.status, Status::Fail);
        assert_eq!(f.message, "telnet 0.17-44 is installed");
        assert_eq!(f.evidence_value("manager"), Some("dpkg"));
        assert_eq!(f.evidence_value("installed"), Some("2"));
        assert!(run.denials.is_empty(), "{:?}", run.denials);

        let run = MockHost::new()
            .installed_packages([package("bash", "5.2")])
            .run::<NoTelnet>();
        assert_eq!(run.status("pkg-no-telnet"), Status::Pass);
        assert_eq!(
            run.finding("pkg-no-telnet").evidence_value("installed"),
            Some("1")
        );
    }

    #[test]
    fn packages_not_granted_are_denied_and_a_missing_database_is_not_found() {
        let run = MockHost::new().run::<NoTelnet>();
        run.assert_completed();
        let f = run.finding("pkg-no-telnet");
        assert_eq!(f.status, Status::Error);
        assert!(f.message.contains("grants.packages"), "{}", f.message);
        assert_eq!(run.denials.len(), 1, "{:?}", run.denials);
        assert!(
            run.denials[0].starts_with("packages.installed"),
            "{:?}",
            run.denials
        );

        let run = MockHost::new()
            .installed_packages_error(AccessError::NotFound("no dpkg status file".into()))
            .run::<NoTelnet>();
        assert_eq!(run.status("pkg-no-telnet"), Status::NotApplicable);
        assert!(run.denials.is_empty(), "{:?}", run.denials);
    }
}
