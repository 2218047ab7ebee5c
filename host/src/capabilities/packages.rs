//! `assessment:plugin/packages` (grant `packages`): the installed packages
//! of the assessed system, read from the package manager's database under
//! the assessment root (dpkg's status file, apk's installed database).
//! Nothing is run, so an unpacked image is assessed like a live system.

use std::path::Path;

use cap_std::fs::Dir;
use capability_model::Capability;

use crate::bindings::latest::assessment::plugin::packages::{self, InstalledPackage};
use crate::bindings::latest::assessment::plugin::types::AccessError;

use super::PluginState;
use super::provenance::{DatabaseRead, FileFacts, sha256};
use super::target::{access_error, blocking, open_regular, read_capped};

/// Largest package database read (a Debian system with every package of
/// a desktop has a status file of a few megabytes).
const MAX_DATABASE_BYTES: u64 = 64 << 20;
/// Most packages returned.
const MAX_PACKAGES: usize = 100_000;

/// The databases read, in order, relative to the root.
const DPKG_STATUS: &str = "var/lib/dpkg/status";
const APK_INSTALLED: &str = "lib/apk/db/installed";
/// rpm databases, recognised to say that they are not read.
const RPM_DATABASES: [&str; 3] = [
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
];

impl packages::Host for PluginState {
    async fn installed(&mut self) -> wasmtime::Result<Result<Vec<InstalledPackage>, AccessError>> {
        if let Err(refusal) = self.target.grants.check_switch(Capability::Packages) {
            return Ok(Err(self.refuse("packages.installed", refusal)));
        }
        let (database, found) = match self.target.root_dir.try_clone() {
            Ok(dir) => blocking(dir, |root| {
                let mut database = None;
                let found = read_installed(&root, &mut database);
                Ok((database, found))
            })
            .await
            .unwrap_or_else(|e| (None, Err(e))),
            Err(e) => (None, Err(AccessError::Io(format!("assessment root: {e}")))),
        };
        self.provenance
            .packages("installed", database.as_ref(), found.as_ref().map(Vec::len));
        Ok(found)
    }
}

/// The installed packages; `database` is set to the database read, once
/// its bytes are.
fn read_installed(
    root: &Dir,
    database: &mut Option<DatabaseRead>,
) -> Result<Vec<InstalledPackage>, AccessError> {
    let mut read = |rel: &str| -> Result<Option<String>, AccessError> {
        let request = Path::new("/").join(rel);
        let file = match open_regular(root, Path::new(rel), &request, false) {
            Ok(file) => file,
            Err(AccessError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let facts = file
            .metadata()
            .map_err(|e| access_error(&request, &e))
            .map(|m| FileFacts::of(&m))?;
        let bytes = read_capped(file, MAX_DATABASE_BYTES)
            .map_err(|e| access_error(&request, &e))?
            .ok_or_else(|| {
                AccessError::TooLarge(format!(
                    "{} is larger than {} MiB",
                    request.display(),
                    MAX_DATABASE_BYTES >> 20
                ))
            })?;
        *database = Some(DatabaseRead {
            path: request,
            facts,
            sha256: sha256(&bytes),
        });
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let mut found = if let Some(text) = read(DPKG_STATUS)? {
        parse_dpkg_status(&text)
    } else if let Some(text) = read(APK_INSTALLED)? {
        parse_apk_installed(&text)
    } else if let Some(rpm) = RPM_DATABASES
        .iter()
        .find(|rel| root.symlink_metadata(rel).is_ok())
    {
        return Err(AccessError::Io(format!(
            "/{rpm} is an rpm database, which this host does not read yet"
        )));
    } else {
        return Err(AccessError::NotFound(format!(
            "no package database under the assessment root (/{DPKG_STATUS} or /{APK_INSTALLED})"
        )));
    };
    if found.len() > MAX_PACKAGES {
        return Err(AccessError::TooLarge(format!(
            "{} packages, more than {MAX_PACKAGES}",
            found.len()
        )));
    }
    found.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(a.architecture.cmp(&b.architecture))
    });
    Ok(found)
}

/// The installed packages of a dpkg status file: stanzas separated by
/// blank lines, whose `Status` ends in `installed` (not `config-files`,
/// `half-installed` or `not-installed`).
fn parse_dpkg_status(text: &str) -> Vec<InstalledPackage> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                Some(value.trim().to_string())
            })
        };
        let (Some(name), Some(status)) = (field("Package"), field("Status")) else {
            continue;
        };
        if status.split_whitespace().last() != Some("installed") {
            continue;
        }
        out.push(InstalledPackage {
            name,
            version: field("Version").unwrap_or_default(),
            architecture: field("Architecture").unwrap_or_default(),
            manager: "dpkg".to_string(),
        });
    }
    out
}

/// The packages of apk's installed database: stanzas of `X:value` lines
/// (`P` name, `V` version, `A` architecture).
fn parse_apk_installed(text: &str) -> Vec<InstalledPackage> {
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |key: &str| {
                stanza.lines().find_map(|line| {
                    line.strip_prefix(key)?
                        .strip_prefix(':')
                        .map(str::to_string)
                })
            };
            Some(InstalledPackage {
                name: field("P")?,
                version: field("V").unwrap_or_default(),
                architecture: field("A").unwrap_or_default(),
                manager: "apk".to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::latest::assessment::plugin::packages::Host as _;
    use crate::capabilities::target::TargetCtx;
    use crate::capabilities::tests_support::state_with_target;
    use crate::policy::{GrantSet, Limits};

    const STATUS: &str = "Package: openssh-server\nStatus: install ok installed\nPriority: optional\nVersion: 1:9.2p1-2+deb12u3\nArchitecture: amd64\nDescription: secure shell (SSH) server\n multi-line description\n\nPackage: telnetd\nStatus: deinstall ok config-files\nVersion: 0.17+2.4-2\nArchitecture: amd64\n\nPackage: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u5\nArchitecture: amd64\n";

    async fn list(root: &Path, granted: bool) -> Result<Vec<InstalledPackage>, AccessError> {
        let grants = GrantSet {
            packages: granted,
            ..GrantSet::default()
        };
        let mut state =
            state_with_target(TargetCtx::open(root, grants, Limits::default()).unwrap());
        state.installed().await.unwrap()
    }

    #[tokio::test]
    async fn installed_packages_come_from_the_dpkg_status_file_sorted() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(root.path().join(DPKG_STATUS), STATUS).unwrap();
        let found = list(root.path(), true).await.unwrap();
        let names: Vec<_> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["base-files", "openssh-server"],
            "config-files only is not installed"
        );
        assert_eq!(found[1].version, "1:9.2p1-2+deb12u3");
        assert_eq!(found[1].architecture, "amd64");
        assert_eq!(found[1].manager, "dpkg");
    }

    #[tokio::test]
    async fn provenance_names_the_database_read_and_the_packages_returned() {
        use crate::capabilities::provenance::sha256;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(root.path().join(DPKG_STATUS), STATUS).unwrap();
        let grants = GrantSet {
            packages: true,
            ..GrantSet::default()
        };
        let mut state =
            state_with_target(TargetCtx::open(root.path(), grants, Limits::default()).unwrap());
        state.installed().await.unwrap().unwrap();
        let query = &state.provenance.provenance().packages[0];
        assert_eq!(query.database.as_deref(), Some("/var/lib/dpkg/status"));
        assert_eq!(query.size, Some(STATUS.len() as u64));
        assert_eq!(query.sha256, Some(sha256(STATUS.as_bytes())));
        assert_eq!(query.packages, Some(2));
        assert!(query.mtime.is_some());

        let empty = tempfile::tempdir().unwrap();
        let mut state = state_with_target(
            TargetCtx::open(empty.path(), GrantSet::default(), Limits::default()).unwrap(),
        );
        state.installed().await.unwrap().unwrap_err();
        let p = state.provenance.take();
        assert!(p.packages.is_empty(), "refused: a denial, not a query");
        assert_eq!(p.denials[0].call, "packages.installed");
    }

    #[tokio::test]
    async fn apk_databases_are_read_and_rpm_ones_named() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("lib/apk/db")).unwrap();
        std::fs::write(
            root.path().join(APK_INSTALLED),
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n",
        )
        .unwrap();
        let found = list(root.path(), true).await.unwrap();
        assert_eq!(
            found
                .iter()
                .map(|p| (p.name.as_str(), p.manager.as_str()))
                .collect::<Vec<_>>(),
            [("busybox", "apk"), ("musl", "apk")]
        );

        let rpm = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rpm.path().join("var/lib/rpm")).unwrap();
        std::fs::write(rpm.path().join("var/lib/rpm/rpmdb.sqlite"), b"SQLite").unwrap();
        assert!(
            matches!(list(rpm.path(), true).await, Err(AccessError::Io(m)) if m.contains("rpm database"))
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            list(empty.path(), true).await,
            Err(AccessError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn without_the_grant_nothing_is_read() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(root.path().join(DPKG_STATUS), STATUS).unwrap();
        assert!(
            matches!(list(root.path(), false).await, Err(AccessError::Denied(m)) if m.contains("packages is not granted"))
        );
    }

    #[tokio::test]
    async fn a_database_replaced_by_a_fifo_or_a_symlink_out_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("status"), STATUS).unwrap();
        std::os::unix::fs::symlink(outside.path().join("status"), root.path().join(DPKG_STATUS))
            .unwrap();
        assert!(
            list(root.path(), true).await.is_err(),
            "an absolute symlink leaves the root"
        );
        std::fs::remove_file(root.path().join(DPKG_STATUS)).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.path().join(DPKG_STATUS))
            .status()
            .unwrap();
        assert!(made.success());
        assert!(
            matches!(list(root.path(), true).await, Err(AccessError::Invalid(m)) if m.contains("only regular files"))
        );
    }
}
