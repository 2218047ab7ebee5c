//! The mock host's files: a directory tree standing for the assessed
//! system, reached only through read grants, with the host's rules.
//!
//! Like the host (which opens each grant with `cap-std`), the mock walks a
//! path one component at a time from its grant: a symlink is followed only
//! while it stays inside the grant (an absolute target, or a `..` that
//! climbs out of the grant, is refused as `invalid`), and a grant itself
//! never passes through a symlink.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::MockError;
use crate::AccessError;
use crate::fs::{DirEntry, EntryKind, FileStat};
use crate::host::Facts;

/// Longest path the host accepts.
const MAX_PATH_BYTES: usize = 4096;
/// Symlinks followed in one resolution before it is called a loop (Linux's
/// limit).
const MAX_SYMLINKS: usize = 40;

/// How a read grant is reached on disk.
#[derive(Debug, Clone)]
enum Access {
    /// A directory: everything below it.
    Dir(PathBuf),
    /// A file: only itself, never followed if it is a symlink.
    File(PathBuf),
    /// Not on the assessed system: every call under it is `not-found`.
    Missing,
}

#[derive(Debug, Clone)]
struct Grant {
    /// Normalised absolute path on the assessed system.
    path: PathBuf,
    access: Access,
}

/// The files one plugin may see.
#[derive(Debug)]
pub(crate) struct MockFs {
    root: Option<PathBuf>,
    grants: Vec<Grant>,
}

/// Why a path cannot be used: a denial (recorded) or another error.
pub(crate) enum Refusal {
    Denied(String),
    Error(AccessError),
}

/// One step of a path being resolved.
enum Part {
    Parent,
    Normal(OsString),
}

/// The steps of a relative path (`.` dropped).
fn parts(path: &Path) -> VecDeque<Part> {
    path.components()
        .filter_map(|c| match c {
            Component::ParentDir => Some(Part::Parent),
            Component::Normal(name) => Some(Part::Normal(name.to_os_string())),
            _ => None,
        })
        .collect()
}

/// Where one call looks.
pub(crate) struct Resolved {
    /// The normalised path the plugin asked for.
    pub(crate) request: PathBuf,
    grant_dir: PathBuf,
    /// Below the grant directory (empty for the grant itself).
    rel: PathBuf,
    /// The request is a granted file itself.
    grant_file: bool,
}

/// `path` as an absolute path without `.` components; `..`, relative paths,
/// NUL bytes and paths over 4096 bytes are refused.
pub(crate) fn normalise_absolute(path: &str) -> Result<PathBuf, &'static str> {
    if !path.starts_with('/') {
        return Err("not an absolute path");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("longer than 4096 bytes (PATH_MAX)");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut out = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err("`..` is not allowed"),
            Component::Prefix(_) => return Err("not a Unix path"),
        }
    }
    Ok(out)
}

fn io_error(path: &Path, e: &std::io::Error) -> AccessError {
    let p = path.display();
    match e.kind() {
        std::io::ErrorKind::NotFound => AccessError::NotFound(format!("{p} does not exist")),
        std::io::ErrorKind::PermissionDenied => {
            AccessError::Io(format!("{p}: permission denied by the operating system"))
        }
        _ => AccessError::Io(format!("{p}: {e}")),
    }
}

fn escape(path: &Path) -> AccessError {
    AccessError::Invalid(format!(
        "{} leads outside the granted path (symlink)",
        path.display()
    ))
}

fn entry_kind(ft: std::fs::FileType) -> EntryKind {
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

fn file_type_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

impl MockFs {
    /// No root and no grants (what `describe` sees).
    pub(crate) fn none() -> Self {
        MockFs {
            root: None,
            grants: Vec::new(),
        }
    }

    /// Open every read grant under `root`, as the host does when it checks
    /// a configuration: a grant that passes through a symlink, or through a
    /// file, is an error; a grant that does not exist is not (the calls
    /// under it get `not-found`).
    pub(crate) fn open(root: Option<&Path>, read: &[String]) -> Result<Self, MockError> {
        let root = match root {
            None if read.is_empty() => return Ok(MockFs::none()),
            None => {
                return Err(MockError::Grant(
                    "read grants need an assessment root: call `.root(\"fixtures/…\")`".to_string(),
                ));
            }
            Some(root) => root.canonicalize().map_err(|source| MockError::Root {
                root: root.to_path_buf(),
                source,
            })?,
        };
        if !root.is_dir() {
            return Err(MockError::Root {
                source: std::io::Error::other("not a directory"),
                root,
            });
        }
        let mut grants = Vec::new();
        for written in read {
            let path = normalise_absolute(written)
                .map_err(|e| MockError::Grant(format!("read grant {written:?}: {e}")))?;
            let access = open_grant(&root, &path)?;
            grants.push(Grant { path, access });
        }
        Ok(MockFs {
            root: Some(root),
            grants,
        })
    }

    /// The grant and the place on disk through which `path` may be reached.
    pub(crate) fn resolve(&self, path: &str) -> Result<Resolved, Refusal> {
        let request = normalise_absolute(path)
            .map_err(|e| Refusal::Error(AccessError::Invalid(format!("{path:?}: {e}"))))?;
        let Some(grant) = self
            .grants
            .iter()
            .filter(|g| request.starts_with(&g.path))
            .max_by_key(|g| g.path.components().count())
        else {
            return Err(Refusal::Denied(format!(
                "{} is outside the plugin's read grants",
                request.display()
            )));
        };
        let rel = request
            .strip_prefix(&grant.path)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        match &grant.access {
            Access::Dir(dir) => Ok(Resolved {
                request,
                grant_dir: dir.clone(),
                rel,
                grant_file: false,
            }),
            Access::File(file) if rel.as_os_str().is_empty() => Ok(Resolved {
                request,
                grant_dir: file.parent().unwrap_or(Path::new("/")).to_path_buf(),
                rel: PathBuf::from(file.file_name().unwrap_or_default()),
                grant_file: true,
            }),
            Access::File(_) => Err(Refusal::Error(AccessError::Invalid(format!(
                "{}: {} is a file",
                request.display(),
                grant.path.display()
            )))),
            Access::Missing => Err(Refusal::Error(AccessError::NotFound(format!(
                "{} does not exist (nor does its grant {})",
                request.display(),
                grant.path.display()
            )))),
        }
    }

    /// The file on disk `r` names: symlinks followed inside the grant
    /// (never for a granted file itself).
    fn locate(&self, r: &Resolved) -> Result<PathBuf, AccessError> {
        if r.grant_file {
            let file = r.grant_dir.join(&r.rel);
            let meta = std::fs::symlink_metadata(&file).map_err(|e| io_error(&r.request, &e))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&file).unwrap_or_else(|_| PathBuf::from("?"));
                return Err(AccessError::Invalid(format!(
                    "the granted file {} is a symlink to {}: a grant never follows a symlink; the operator must grant the real path",
                    r.request.display(),
                    target.display()
                )));
            }
            return Ok(file);
        }
        let mut pending: VecDeque<Part> = parts(&r.rel);
        let mut inside: Vec<OsString> = Vec::new();
        let mut followed = 0;
        let here = |inside: &[OsString]| -> PathBuf {
            let mut p = r.grant_dir.clone();
            p.extend(inside);
            p
        };
        while let Some(part) = pending.pop_front() {
            let name = match part {
                Part::Parent => {
                    if inside.pop().is_none() {
                        return Err(escape(&r.request));
                    }
                    continue;
                }
                Part::Normal(name) => name,
            };
            let candidate = here(&inside).join(&name);
            let meta =
                std::fs::symlink_metadata(&candidate).map_err(|e| io_error(&r.request, &e))?;
            if meta.file_type().is_symlink() {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(AccessError::Invalid(format!(
                        "{} is a symlink loop or a symlink that may not be followed",
                        r.request.display()
                    )));
                }
                let target =
                    std::fs::read_link(&candidate).map_err(|e| io_error(&r.request, &e))?;
                if target.is_absolute() {
                    return Err(escape(&r.request));
                }
                // The target's components come first, then the rest.
                let mut expanded = parts(&target);
                expanded.extend(pending.drain(..));
                pending = expanded;
                continue;
            }
            if !pending.is_empty() && !meta.is_dir() {
                return Err(AccessError::Io(format!(
                    "{}: not a directory",
                    r.request.display()
                )));
            }
            inside.push(name);
        }
        Ok(here(&inside))
    }

    fn regular_file(&self, r: &Resolved) -> Result<(PathBuf, std::fs::Metadata), AccessError> {
        let path = self.locate(r)?;
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&r.request, &e))?;
        if !meta.is_file() {
            return Err(AccessError::Invalid(format!(
                "{} is {}: only regular files can be read",
                r.request.display(),
                file_type_name(meta.file_type())
            )));
        }
        Ok((path, meta))
    }

    pub(crate) fn read_file(&self, r: &Resolved, max: u64) -> Result<Vec<u8>, AccessError> {
        let (path, _) = self.regular_file(r)?;
        let file = std::fs::File::open(&path).map_err(|e| io_error(&r.request, &e))?;
        let mut buf = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| io_error(&r.request, &e))?;
        if buf.len() as u64 > max {
            return Err(AccessError::TooLarge(format!(
                "{} is larger than {max} bytes",
                r.request.display()
            )));
        }
        Ok(buf)
    }

    pub(crate) fn read_range(
        &self,
        r: &Resolved,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, AccessError> {
        let (path, _) = self.regular_file(r)?;
        let mut file = std::fs::File::open(&path).map_err(|e| io_error(&r.request, &e))?;
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.take(length).read_to_end(&mut buf))
            .map_err(|e| io_error(&r.request, &e))?;
        Ok(buf)
    }

    pub(crate) fn stat(&self, r: &Resolved) -> Result<FileStat, AccessError> {
        let path = self.locate(r)?;
        let meta = if r.grant_file {
            std::fs::symlink_metadata(&path)
        } else {
            std::fs::metadata(&path)
        }
        .map_err(|e| io_error(&r.request, &e))?;
        Ok(FileStat {
            kind: entry_kind(meta.file_type()),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            modified: meta.mtime(),
            links: meta.nlink(),
        })
    }

    pub(crate) fn list_dir(&self, r: &Resolved, max: usize) -> Result<Vec<DirEntry>, AccessError> {
        if r.grant_file {
            return Err(AccessError::Invalid(format!(
                "{} is a granted file, not a directory",
                r.request.display()
            )));
        }
        let path = self.locate(r)?;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| io_error(&r.request, &e))? {
            let entry = entry.map_err(|e| io_error(&r.request, &e))?;
            if entries.len() == max {
                return Err(AccessError::TooLarge(format!(
                    "{} has more than {max} entries",
                    r.request.display()
                )));
            }
            entries.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind: entry.file_type().map_or(EntryKind::Other, entry_kind),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Host facts as the host reads them from the assessment root.
    pub(crate) fn facts_from_root(&self) -> Result<Facts, MockError> {
        let Some(root) = &self.root else {
            return Err(MockError::Grant(
                "host facts are read from the assessment root: call `.root(\"fixtures/…\")`"
                    .to_string(),
            ));
        };
        let read = |rel: &str| {
            let path = root.join(rel);
            std::fs::metadata(&path)
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|_| std::fs::read(&path).ok())
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        };
        let os_release = read("etc/os-release")
            .or_else(|| read("usr/lib/os-release"))
            .unwrap_or_default();
        let field = |key: &str| {
            os_release.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })
        };
        Ok(Facts {
            hostname: read("etc/hostname")
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown".to_string()),
            os: field("PRETTY_NAME")
                .or_else(|| field("NAME"))
                .unwrap_or_else(|| "unknown".to_string()),
            os_id: field("ID").unwrap_or_else(|| "unknown".to_string()),
            os_version: field("VERSION_ID").unwrap_or_default(),
            arch: std::env::consts::ARCH.to_string(),
            kernel_release: read("proc/sys/kernel/osrelease").unwrap_or_default(),
        })
    }
}

/// Walk grant `path` under `root` one component at a time, never following
/// a symlink.
fn open_grant(root: &Path, path: &Path) -> Result<Access, MockError> {
    let fail = |reason: String| {
        MockError::Grant(format!(
            "read grant {} does not resolve under the assessment root {}: {reason}",
            path.display(),
            root.display()
        ))
    };
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut current = root.to_path_buf();
    let mut walked = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        walked.push(name);
        let next = current.join(name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Access::Missing),
            Err(e) => return Err(fail(e.to_string())),
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&next).unwrap_or_else(|_| PathBuf::from("?"));
            return Err(MockError::Grant(format!(
                "read grant {} passes through the symlink {} -> {} (under the assessment root {}); a grant means the path written and never follows a symlink: grant the real path instead",
                path.display(),
                walked.display(),
                target.display(),
                root.display()
            )));
        }
        let last = i + 1 == names.len();
        if last && !meta.is_dir() {
            return Ok(Access::File(next));
        }
        if !meta.is_dir() {
            return Err(fail(format!("{} is not a directory", walked.display())));
        }
        current = next;
    }
    Ok(Access::Dir(current))
}
