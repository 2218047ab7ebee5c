//! Fixture trees the test may change: a copy of a fixture directory in a
//! fresh temporary directory, removed when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A private copy of a fixture tree (files, directories and symlinks), for
/// tests that set file modes (git does not keep them), add files or make
/// symlinks. Removed when dropped.
///
/// ```no_run
/// use assessment_sdk::testing::{FixtureTree, MockHost};
///
/// let tree = FixtureTree::copy("fixtures/good").unwrap();
/// tree.set_mode("etc/shadow", 0o640).unwrap();
/// let host = MockHost::new().root(tree.path()).grant_read("/etc");
/// ```
#[derive(Debug)]
pub struct FixtureTree {
    path: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl FixtureTree {
    /// A new, empty tree in the system's temporary directory.
    pub fn empty() -> std::io::Result<Self> {
        let base = std::env::temp_dir();
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!(
                "assessment-sdk-fixture-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            // `create_dir` fails when the name exists: never share a tree.
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(FixtureTree { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A copy of the directory `from` (relative paths are relative to the
    /// current directory: the crate's, under `cargo test`).
    pub fn copy(from: impl AsRef<Path>) -> std::io::Result<Self> {
        let tree = Self::empty()?;
        copy_dir(from.as_ref(), &tree.path)?;
        Ok(tree)
    }

    /// Where the tree is (give it to [`super::MockHost::root`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write a file at `rel` (an assessed-system path without the leading
    /// `/`, e.g. `etc/motd`), creating its directories.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
        let path = self.path.join(rel.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)
    }

    /// Set the permission bits of `rel`.
    pub fn set_mode(&self, rel: &str, mode: u32) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            self.path.join(rel.trim_start_matches('/')),
            std::fs::Permissions::from_mode(mode),
        )
    }

    /// Make `rel` a symlink to `target` (taken as is: `../x`, `/etc/x`).
    pub fn symlink(&self, rel: &str, target: &str) -> std::io::Result<()> {
        let path = self.path.join(rel.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, path)
    }
}

impl Drop for FixtureTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
