//! Crash-safe files, shared by the plugin store, the results outbox and the
//! runtime's state files: a reader sees a whole file or none, whatever
//! crashes when.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Write `bytes` to `path` atomically with permissions `mode`: a temporary
/// file in `tmp_dir` (on the same file system), fsync, rename over `path`,
/// fsync of the directory. The temporary file is removed on failure.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tmp_dir.join(format!(
        "{name}.{}.{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Create `dir` and its missing parents, readable only by this user (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// fsync a directory, making a rename or removal in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The entry names of `dir`, sorted; none when it does not exist.
pub fn sorted_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = entries
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let path = dir.path().join("file");
        write_atomic(&tmp, &path, b"one", 0o600).unwrap();
        write_atomic(&tmp, &path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(sorted_names(&tmp).unwrap().is_empty());
        let missing_dir = dir.path().join("missing/file");
        assert!(write_atomic(&tmp, &missing_dir, b"x", 0o600).is_err());
        assert!(
            sorted_names(&tmp).unwrap().is_empty(),
            "the temporary file is removed on failure"
        );
        assert_eq!(sorted_names(dir.path()).unwrap(), vec!["file", "tmp"]);
        assert!(sorted_names(&dir.path().join("nope")).unwrap().is_empty());
    }
}
