//! The local plugin store: verified components by digest, the signed
//! manifest of each installed release, and precompiled artifacts.
//!
//! ```text
//! <state_dir>/plugins/
//!   blobs/sha256/<hex>.wasm                 components, content-addressed
//!   releases/<name>/<version>/manifest.json signed manifests, as downloaded
//!   releases/<name>/<version>/manifest.json.minisig
//!   compiled/<hex>-<engine>.cwasm           precompiled components
//!   tmp/                                    files being written
//!   lock                                    shared by writers, exclusive for gc
//! ```
//!
//! Every file is written to `tmp/`, fsynced and renamed into place, then the
//! directory is fsynced: a reader sees a whole file or none, whatever crashes.
//! Only verified content is ever written; the component goes in before the
//! release that refers to it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::durable;

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[error("plugin store {path}: {source}")]
pub struct StoreError {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError {
        path: path.to_path_buf(),
        source,
    }
}

/// An installed release as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRelease {
    /// Plugin name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The manifest bytes (verify before use).
    pub manifest: Vec<u8>,
    /// The minisign signature of the manifest.
    pub signature: String,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Releases removed, as `name@version`.
    pub releases: Vec<String>,
    /// Components removed (digests).
    pub blobs: Vec<String>,
    /// Precompiled artifacts and temporary files removed.
    pub other_files: usize,
}

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct PluginStore {
    root: PathBuf,
}

/// Held while writing (shared) or collecting garbage (exclusive).
pub struct StoreLock(#[allow(dead_code)] File);

impl PluginStore {
    /// Open (and create, mode 0700) the store under `state_dir/plugins`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let root = state_dir.join("plugins");
        for dir in ["blobs/sha256", "releases", "compiled", "tmp"] {
            let path = root.join(dir);
            durable::create_private_dir(&path).map_err(io(&path))?;
        }
        Ok(PluginStore { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .map_err(io(&path))?;
        Ok(StoreLock(file))
    }

    /// Take the writers' (shared) lock.
    pub fn write_lock(&self) -> Result<StoreLock, StoreError> {
        self.lock(false)
    }

    /// Path of a component by lowercase hex digest.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(format!("{sha256}.wasm"))
    }

    /// Path of a precompiled artifact.
    pub fn compiled_path(&self, sha256: &str, engine: &str) -> PathBuf {
        self.root
            .join("compiled")
            .join(format!("{sha256}-{engine}.cwasm"))
    }

    fn release_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join("releases").join(name).join(version)
    }

    /// Write `bytes` to `path` atomically (see [`durable::write_atomic`]).
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        durable::write_atomic(&self.root.join("tmp"), path, bytes, 0o600).map_err(io(path))
    }

    /// Store a verified component.
    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(sha256);
        if !path.exists() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(path)
    }

    /// Record a verified release (after its component is stored).
    pub fn put_release(&self, release: &StoredRelease) -> Result<(), StoreError> {
        let dir = self.release_dir(&release.name, &release.version);
        durable::create_private_dir(&dir).map_err(io(&dir))?;
        self.write_atomic(
            &dir.join("manifest.json.minisig"),
            release.signature.as_bytes(),
        )?;
        self.write_atomic(&dir.join("manifest.json"), &release.manifest)
    }

    /// The stored release of `name` `version`, if complete.
    pub fn release(&self, name: &str, version: &str) -> Result<Option<StoredRelease>, StoreError> {
        let dir = self.release_dir(name, version);
        let manifest_path = dir.join("manifest.json");
        let manifest = match std::fs::read(&manifest_path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&manifest_path)(e)),
        };
        let sig_path = dir.join("manifest.json.minisig");
        let signature = std::fs::read_to_string(&sig_path).map_err(io(&sig_path))?;
        Ok(Some(StoredRelease {
            name: name.to_string(),
            version: version.to_string(),
            manifest,
            signature,
        }))
    }

    /// Every stored release.
    pub fn releases(&self) -> Result<Vec<StoredRelease>, StoreError> {
        let mut out = Vec::new();
        let releases = self.root.join("releases");
        for name in read_dir_names(&releases)? {
            for version in read_dir_names(&releases.join(&name))? {
                if let Some(r) = self.release(&name, &version)? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(out)
    }

    /// Remove releases not in `keep` (`(name, version)`), components no kept
    /// release refers to (`referenced` digests), precompiled artifacts of
    /// removed components or other engines (`engine`), and temporary files.
    pub fn gc(
        &self,
        keep: &[(String, String)],
        referenced: &[String],
        engine: &str,
    ) -> Result<GcReport, StoreError> {
        let _lock = self.lock(true)?;
        let mut report = GcReport::default();
        let releases = self.root.join("releases");
        for name in read_dir_names(&releases)? {
            for version in read_dir_names(&releases.join(&name))? {
                if !keep.iter().any(|(n, v)| *n == name && *v == version) {
                    let dir = releases.join(&name).join(&version);
                    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                    report.releases.push(format!("{name}@{version}"));
                }
            }
            let _ = std::fs::remove_dir(releases.join(&name));
        }
        let blobs = self.root.join("blobs/sha256");
        for file in read_dir_names(&blobs)? {
            let digest = file.trim_end_matches(".wasm").to_string();
            if !referenced.contains(&digest) {
                let path = blobs.join(&file);
                std::fs::remove_file(&path).map_err(io(&path))?;
                report.blobs.push(digest);
            }
        }
        let compiled = self.root.join("compiled");
        for file in read_dir_names(&compiled)? {
            let keep = referenced
                .iter()
                .any(|d| file == format!("{d}-{engine}.cwasm"));
            if !keep {
                let path = compiled.join(&file);
                std::fs::remove_file(&path).map_err(io(&path))?;
                report.other_files += 1;
            }
        }
        let tmp = self.root.join("tmp");
        for file in read_dir_names(&tmp)? {
            let path = tmp.join(&file);
            std::fs::remove_file(&path).map_err(io(&path))?;
            report.other_files += 1;
        }
        Ok(report)
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    durable::sorted_names(dir).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(name: &str, version: &str) -> StoredRelease {
        StoredRelease {
            name: name.into(),
            version: version.into(),
            manifest: format!("{name}@{version}").into_bytes(),
            signature: "sig".into(),
        }
    }

    #[test]
    fn releases_and_blobs_round_trip_and_gc_keeps_what_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        store.put_blob("aa", b"component a").unwrap();
        store.put_blob("bb", b"component b").unwrap();
        store.put_release(&release("a", "1.0.0")).unwrap();
        store.put_release(&release("b", "2.0.0")).unwrap();
        std::fs::write(store.compiled_path("aa", "e1"), b"x").unwrap();
        std::fs::write(store.compiled_path("aa", "old"), b"x").unwrap();
        std::fs::write(store.root().join("tmp/partial"), b"x").unwrap();
        assert_eq!(
            store.release("a", "1.0.0").unwrap(),
            Some(release("a", "1.0.0"))
        );
        assert_eq!(store.release("a", "9.9.9").unwrap(), None);
        assert_eq!(store.releases().unwrap().len(), 2);

        let report = store
            .gc(&[("a".into(), "1.0.0".into())], &["aa".into()], "e1")
            .unwrap();
        assert_eq!(report.releases, vec!["b@2.0.0"]);
        assert_eq!(report.blobs, vec!["bb"]);
        assert_eq!(report.other_files, 2);
        assert!(store.blob_path("aa").exists() && !store.blob_path("bb").exists());
        assert!(store.compiled_path("aa", "e1").exists());
        assert_eq!(store.releases().unwrap(), vec![release("a", "1.0.0")]);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        let path = store.blob_path("cc");
        store.write_atomic(&path, b"one").unwrap();
        store.write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
            0
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(store.root())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }
}
