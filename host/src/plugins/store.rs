//! The local plugin store: verified components by digest, the signed
//! manifest of each installed release, and precompiled artifacts (of
//! registry components and of configured local ones).
//!
//! ```text
//! <state_dir>/plugins/
//!   blobs/sha256/<hex>.wasm                 components, content-addressed
//!   releases/<name>/<version>/manifest.json signed manifests, as downloaded
//!   releases/<name>/<version>/manifest.json.minisig
//!   compiled/<hex>-<engine>.cwasm           precompiled components (<hex>: the
//!                                           component's SHA-256)
//!   compiled/<hex>-<engine>.cwasm.sha256    the SHA-256 of each, as written
//!   tmp/                                    files being written
//!   lock                                    shared by writers, exclusive for gc
//! ```
//!
//! Every file is written to `tmp/`, fsynced and renamed into place, then the
//! directory is fsynced: a reader sees a whole file or none, whatever crashes.
//! Only verified content is ever written; the component goes in before the
//! release that refers to it.
//!
//! A precompiled artifact is native code that wasmtime loads without
//! checking it, so the store is refused unless it is private to the agent's
//! user (owned by it, mode 0700, no symlink), and an artifact is loaded
//! only when its bytes match the SHA-256 recorded by the process that
//! compiled it (written after the artifact, so a torn write is never used).

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

/// Why a precompiled artifact cannot be used (it is then recompiled).
#[derive(Debug, thiserror::Error)]
pub enum CompiledError {
    /// The artifact has no recorded digest (a crash between the two
    /// writes, or a file planted by someone else).
    #[error("{0} has no recorded SHA-256")]
    Unrecorded(PathBuf),
    /// The artifact's bytes differ from what was recorded.
    #[error("{path} does not match its recorded SHA-256 (recorded {recorded}, found {found})")]
    Mismatch {
        /// The artifact.
        path: PathBuf,
        /// What was recorded.
        recorded: String,
        /// What the file holds.
        found: String,
    },
    /// It cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Age after which a temporary file is a crashed writer's leftover.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct PluginStore {
    root: PathBuf,
}

/// Held while writing (shared) or collecting garbage (exclusive).
pub struct StoreLock(#[allow(dead_code)] File);

impl PluginStore {
    /// Open (and create, mode 0700) the store under `state_dir/plugins`.
    /// Refuses a store that is not private to the agent's user, and
    /// removes temporary files a crashed writer left behind.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let root = state_dir.join("plugins");
        durable::ensure_private_dir(&root).map_err(io(&root))?;
        for dir in ["blobs", "blobs/sha256", "releases", "compiled", "tmp"] {
            let path = root.join(dir);
            durable::ensure_private_dir(&path).map_err(io(&path))?;
        }
        let removed = durable::remove_stale_temporaries(&root.join("tmp"), STALE_TEMPORARY);
        if removed > 0 {
            tracing::info!(
                removed,
                "removed temporary files left by an interrupted write"
            );
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

    fn compiled_digest_path(&self, sha256: &str, engine: &str) -> PathBuf {
        let mut path = self.compiled_path(sha256, engine).into_os_string();
        path.push(".sha256");
        PathBuf::from(path)
    }

    /// Save a precompiled artifact of component `sha256` (a verified
    /// release's, or a configured local one's, digest of the bytes that
    /// were compiled), then the SHA-256 of the artifact itself.
    pub fn put_compiled(
        &self,
        sha256: &str,
        engine: &str,
        artifact: &[u8],
    ) -> Result<(), StoreError> {
        let path = self.compiled_path(sha256, engine);
        self.write_atomic(&path, artifact)?;
        let digest = assessment_registry::manifest::sha256_hex(artifact);
        self.write_atomic(
            &self.compiled_digest_path(sha256, engine),
            digest.as_bytes(),
        )
    }

    /// The precompiled artifact of component `sha256` for `engine`, read
    /// whole and checked against its recorded SHA-256; `None` when there
    /// is none.
    pub fn compiled(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, CompiledError> {
        let path = self.compiled_path(sha256, engine);
        let artifact = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e).into()),
        };
        let record_path = self.compiled_digest_path(sha256, engine);
        let recorded = match std::fs::read_to_string(&record_path) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CompiledError::Unrecorded(path));
            }
            Err(e) => return Err(io(&record_path)(e).into()),
        };
        let found = assessment_registry::manifest::sha256_hex(&artifact);
        if found != recorded {
            return Err(CompiledError::Mismatch {
                path,
                recorded: crate::guest_text::bounded(&recorded, 80),
                found,
            });
        }
        Ok(Some(artifact))
    }

    /// Whether a precompiled artifact of component `sha256` for `engine`
    /// was written (with its record): this host compiled these bytes, so
    /// wasmtime validated them. Its integrity is checked when it is read.
    pub fn has_compiled(&self, sha256: &str, engine: &str) -> bool {
        self.compiled_path(sha256, engine).is_file()
            && self.compiled_digest_path(sha256, engine).is_file()
    }

    /// Remove a precompiled artifact and its record.
    pub fn remove_compiled(&self, sha256: &str, engine: &str) {
        let _ = std::fs::remove_file(self.compiled_digest_path(sha256, engine));
        let _ = std::fs::remove_file(self.compiled_path(sha256, engine));
    }

    fn release_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join("releases").join(name).join(version)
    }

    /// Write `bytes` to `path` atomically (see [`durable::write_atomic`]).
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        durable::write_atomic(&self.root.join("tmp"), path, bytes, 0o600).map_err(io(path))
    }

    /// Store a verified component. A stored copy is kept only when its
    /// bytes still have that digest: a corrupted blob is replaced.
    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(sha256);
        let intact = std::fs::read(&path)
            .is_ok_and(|stored| assessment_registry::manifest::sha256_hex(&stored) == sha256);
        if !intact {
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
            let keep = referenced.iter().any(|d| {
                file == format!("{d}-{engine}.cwasm")
                    || file == format!("{d}-{engine}.cwasm.sha256")
            });
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
        store.put_compiled("aa", "e1", b"x").unwrap();
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
    fn a_precompiled_artifact_loads_only_when_it_matches_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        assert!(store.compiled("aa", "e1").unwrap().is_none());
        assert!(!store.has_compiled("aa", "e1"));
        store.put_compiled("aa", "e1", b"native code").unwrap();
        assert!(store.has_compiled("aa", "e1") && !store.has_compiled("aa", "e2"));
        assert_eq!(store.compiled("aa", "e1").unwrap().unwrap(), b"native code");
        // Someone who could write the store replaced the artifact.
        std::fs::write(store.compiled_path("aa", "e1"), b"planted code").unwrap();
        let e = store.compiled("aa", "e1").unwrap_err();
        assert!(matches!(e, CompiledError::Mismatch { .. }), "{e}");
        // An artifact without a record (planted, or a crash between the
        // two writes) is not used either.
        store.remove_compiled("aa", "e1");
        std::fs::write(store.compiled_path("aa", "e1"), b"planted code").unwrap();
        assert!(!store.has_compiled("aa", "e1"));
        assert!(matches!(
            store.compiled("aa", "e1").unwrap_err(),
            CompiledError::Unrecorded(_)
        ));
    }

    #[test]
    fn a_corrupted_blob_is_replaced_when_the_component_is_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        let bytes = b"component".as_slice();
        let sha = assessment_registry::manifest::sha256_hex(bytes);
        let path = store.put_blob(&sha, bytes).unwrap();
        std::fs::write(&path, b"componenT").unwrap();
        store.put_blob(&sha, bytes).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_store_that_others_can_enter_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        PluginStore::open(dir.path()).unwrap();
        let compiled = dir.path().join("plugins/compiled");
        std::fs::set_permissions(&compiled, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = PluginStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not private"), "{e}");
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
