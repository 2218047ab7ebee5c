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

/// Create `dir` as [`create_private_dir`] does, then refuse it unless it is
/// a real directory (not a symlink) owned by this process's user with no
/// access for group or others: whoever can write the agent's state can
/// plant precompiled code or forge results, so the agent must be the only
/// writer. A directory that already existed with looser modes is refused,
/// not silently changed.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    create_private_dir(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let euid = rustix::process::geteuid().as_raw();
    let problem = if meta.file_type().is_symlink() {
        Some("it is a symlink".to_string())
    } else if !meta.is_dir() {
        Some("it is not a directory".to_string())
    } else if meta.uid() != euid {
        Some(format!(
            "it is owned by uid {}, not by the agent's user (uid {euid})",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "its mode is {:04o}: group and others have access",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not private to the agent: {why}; only the agent's user may own and enter it (chown it to uid {euid} and chmod 0700)",
                dir.display()
            ),
        )),
    }
}

/// Remove the files in `tmp_dir` older than `older_than`: what a crashed
/// writer left behind. Younger files may belong to a writer still at work
/// (another agent command). Returns how many were removed.
pub fn remove_stale_temporaries(tmp_dir: &Path, older_than: std::time::Duration) -> usize {
    remove_stale_files(tmp_dir, older_than, |_| true)
}

/// Remove, from a directory where [`write_atomic`] keeps its temporary
/// files beside the real ones (the state directory), only the leftovers of
/// interrupted writes — names `<file>.<pid>.<uuid>` — older than
/// `older_than`. Returns how many were removed.
pub fn remove_stale_write_leftovers(dir: &Path, older_than: std::time::Duration) -> usize {
    remove_stale_files(dir, older_than, |name| {
        let mut parts = name.rsplitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(tail), Some(pid), Some(_)) => {
                uuid::Uuid::parse_str(tail).is_ok() && pid.parse::<u32>().is_ok()
            }
            _ => false,
        }
    })
}

/// Remove the regular files of `dir` whose name `matches` and that were
/// last modified at least `older_than` ago.
fn remove_stale_files(
    dir: &Path,
    older_than: std::time::Duration,
    matches: impl Fn(&str) -> bool,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !matches(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= older_than);
        if stale && meta.is_file() && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
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

    #[test]
    fn a_state_directory_open_to_others_or_symlinked_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("state");
        ensure_private_dir(&private).unwrap();
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = ensure_private_dir(&private).unwrap_err();
        assert!(e.to_string().contains("mode is 0755"), "{e}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let e = ensure_private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn only_stale_leftovers_of_atomic_writes_are_removed_from_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let age = |name: &str| {
            std::fs::write(dir.path().join(name), "x").unwrap();
            File::options()
                .write(true)
                .open(dir.path().join(name))
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        };
        age("credentials.json.4242.6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90");
        age("credentials.json");
        age("notes.txt.1.2");
        std::fs::write(
            dir.path()
                .join("config.last-good.json.7.2c9d47a1-83e6-4b5f-a0d4-19e86b7c3f21"),
            "fresh",
        )
        .unwrap();
        assert_eq!(
            remove_stale_write_leftovers(dir.path(), std::time::Duration::from_secs(600)),
            1
        );
        assert_eq!(sorted_names(dir.path()).unwrap().len(), 3);
        assert!(dir.path().join("credentials.json").exists());
    }

    #[test]
    fn stale_temporary_files_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::write(&old, "x").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        std::fs::write(dir.path().join("fresh"), "y").unwrap();
        assert_eq!(
            remove_stale_temporaries(dir.path(), std::time::Duration::from_secs(600)),
            1
        );
        assert_eq!(sorted_names(dir.path()).unwrap(), vec!["fresh"]);
    }
}
