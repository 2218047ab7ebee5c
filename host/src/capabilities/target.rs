//! `assessment:plugin/target`: read-only access to the assessed system.
//!
//! Every call first asks the plugin's [`GrantSet`]. Files are reached only
//! through `cap-std` directories opened at the granted paths under the
//! assessment root, so neither `..` nor a symlink can lead outside a grant.
//! A grant means the path the operator wrote: a grant path that passes
//! through a symlink is refused, never followed. Only regular files are
//! read (opened without blocking and without becoming a controlling
//! terminal), and every file-system call runs on a bounded pool of blocking
//! threads with its own timeout, so a FIFO, a device or a hung mount
//! cannot hold a job past its deadline. Commands run from an exact
//! allow-list with a cleared environment, in their own process group, with
//! a timeout and capped output.

use cap_std::fs::{MetadataExt, OpenOptionsExt};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use tokio::sync::Semaphore;

use crate::bindings::latest::assessment::plugin::filesystem::EntryKind;
use crate::bindings::latest::assessment::plugin::types::AccessError;
use crate::guest_text::{bounded, caps};
use crate::policy::{GrantSet, Limits, Refusal};

use super::PluginState;

/// Denials remembered per run (all are counted and logged).
const MAX_RECORDED_DENIALS: usize = 100;
/// Blocking file-system calls in flight at once, over all plugins. A call
/// stuck in the kernel (a hung network mount) keeps its slot, so stuck
/// calls can never pile up into thousands of threads.
const FS_WORKERS: usize = 16;
/// Longest one file-system call may take before the plugin gets an error.
pub const FS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

static FS_SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(FS_WORKERS)));

/// A grant that does not resolve under the assessment root.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The assessment root cannot be opened.
    #[error(
        "assessment root {root}: {source}; set runtime.assessment_root to an existing directory"
    )]
    Root {
        /// The root.
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A granted path does not exist on the assessed system (not an error
    /// of the configuration: an image or a host may lack it; the plugin's
    /// calls under it get `not-found`).
    #[error("read grant {path} does not exist under the assessment root {root}")]
    Missing {
        /// The granted path.
        path: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// A granted path cannot be opened.
    #[error(
        "read grant {path} does not resolve under the assessment root {root}: {reason}; remove it from `grants.read` or fix the path"
    )]
    Path {
        /// The granted path.
        path: PathBuf,
        /// The root.
        root: PathBuf,
        /// Why.
        reason: String,
    },
    /// A granted path passes through a symlink.
    #[error(
        "read grant {path} passes through the symlink {link} -> {points_to} (under the assessment root {root}); a grant means the path written and never follows a symlink: grant the real path instead"
    )]
    Symlink {
        /// The granted path.
        path: PathBuf,
        /// The symlink, as a path under the root.
        link: PathBuf,
        /// What it points to.
        points_to: PathBuf,
        /// The root.
        root: PathBuf,
    },
}

enum GrantAccess {
    Dir(Dir),
    File { parent: Dir, name: String },
}

/// The assessed system as one plugin may see it.
pub struct TargetCtx {
    pub(super) root: PathBuf,
    pub(super) root_dir: Dir,
    pub(super) grants: GrantSet,
    /// Each read grant, opened, or why it cannot be used in this run.
    opened: Vec<(PathBuf, Result<GrantAccess, GrantError>)>,
    pub(super) limits: Limits,
    denials: Vec<String>,
    denial_count: u64,
}

impl TargetCtx {
    /// Open every read grant under `root`, as configuration is checked:
    /// fails when a grant passes through a symlink or cannot be opened. A
    /// grant that does not exist is not an error (the calls under it get
    /// `not-found`); [`TargetCtx::missing_grants`] names them.
    pub fn open(root: &Path, grants: GrantSet, limits: Limits) -> Result<Self, GrantError> {
        let mut ctx = Self::open_for_run(root, grants, limits)?;
        if let Some(i) = ctx.opened.iter().position(
            |(_, access)| matches!(access, Err(e) if !matches!(e, GrantError::Missing { .. })),
        ) && let (_, Err(error)) = ctx.opened.swap_remove(i)
        {
            return Err(error);
        }
        Ok(ctx)
    }

    /// The read grants that do not exist under the root.
    pub fn missing_grants(&self) -> Vec<&Path> {
        self.opened
            .iter()
            .filter(|(_, access)| matches!(access, Err(GrantError::Missing { .. })))
            .map(|(path, _)| path.as_path())
            .collect()
    }

    /// Open every read grant under `root` for one run: a grant that has
    /// become unusable since the configuration was checked (removed, or
    /// replaced by a symlink) refuses the calls under it as `invalid` or
    /// `not-found` instead of failing the whole run.
    pub fn open_for_run(root: &Path, grants: GrantSet, limits: Limits) -> Result<Self, GrantError> {
        let root_dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(|source| {
            GrantError::Root {
                root: root.to_path_buf(),
                source,
            }
        })?;
        let opened = grants
            .read
            .iter()
            .map(|path| (path.clone(), open_grant(&root_dir, root, path)))
            .collect();
        Ok(TargetCtx {
            root: root.to_path_buf(),
            root_dir,
            grants,
            opened,
            limits,
            denials: Vec::new(),
            denial_count: 0,
        })
    }

    /// The denied calls of this run (the first hundred) and their count.
    pub fn denials(&self) -> (&[String], u64) {
        (&self.denials, self.denial_count)
    }

    /// Turn a policy refusal into the plugin's error, recording denials
    /// (their reasons bounded: they carry guest-chosen text).
    fn record(&mut self, call: &str, refusal: Refusal) -> AccessError {
        match refusal {
            Refusal::Denied(why) => {
                self.denial_count += 1;
                if self.denials.len() < MAX_RECORDED_DENIALS {
                    self.denials
                        .push(bounded(&format!("{call}: {why}"), caps::DENIAL));
                }
                AccessError::Denied(why)
            }
            Refusal::Invalid(why) => AccessError::Invalid(why),
            Refusal::NotFound(why) => AccessError::NotFound(why),
        }
    }

    /// The directory and relative path through which `path` may be reached.
    fn resolve(&self, path: &str) -> Result<Resolved, Refusal> {
        let (grant, request) = self.grants.read_grant_for(path)?;
        let grant = grant.to_path_buf();
        if self.root == Path::new("/") && is_agent_process(&request) {
            return Err(Refusal::Denied(format!(
                "{} is the agent's own process: never readable by a plugin, whatever the grants",
                request.display()
            )));
        }
        let Some((_, access)) = self.opened.iter().find(|(p, _)| *p == grant) else {
            return Err(Refusal::Invalid(format!(
                "grant {} is not open",
                grant.display()
            )));
        };
        let access = match access {
            Ok(access) => access,
            Err(GrantError::Missing { .. }) => {
                return Err(Refusal::NotFound(format!(
                    "{} does not exist (nor does its grant {})",
                    request.display(),
                    grant.display()
                )));
            }
            Err(why) => return Err(Refusal::Invalid(why.to_string())),
        };
        let rel = request
            .strip_prefix(&grant)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let (dir, rel, grant_file) = match access {
            GrantAccess::Dir(dir) => (
                dir,
                if rel.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    rel
                },
                false,
            ),
            GrantAccess::File { parent, name } if rel.as_os_str().is_empty() => {
                (parent, PathBuf::from(name), true)
            }
            GrantAccess::File { .. } => {
                return Err(Refusal::Invalid(format!(
                    "{}: {} is a file",
                    request.display(),
                    grant.display()
                )));
            }
        };
        let dir = dir
            .try_clone()
            .map_err(|e| Refusal::Invalid(format!("{}: {e}", request.display())))?;
        Ok(Resolved {
            dir,
            rel,
            request,
            grant_file,
        })
    }
}

/// Whether `path` (normalised, on the live system) is under `/proc/self`,
/// `/proc/thread-self` or `/proc/<pid of the agent>`: the agent's memory
/// maps, environment and open descriptors are not part of the assessed
/// system, even where `/proc` is granted.
fn is_agent_process(path: &Path) -> bool {
    let mut components = path.components().skip(1);
    if components.next() != Some(Component::Normal("proc".as_ref())) {
        return false;
    }
    let Some(Component::Normal(entry)) = components.next() else {
        return false;
    };
    entry == "self"
        || entry == "thread-self"
        || entry.to_str() == Some(&std::process::id().to_string())
}

/// Where one call may look.
pub(super) struct Resolved {
    pub(super) dir: Dir,
    pub(super) rel: PathBuf,
    /// The normalised path the plugin asked for.
    pub(super) request: PathBuf,
    /// `rel` is a granted file itself: it must not be a symlink either.
    pub(super) grant_file: bool,
}

impl PluginState {
    /// Refuse a call: log a denial (charged to the run's log budget) and
    /// record it.
    pub(super) fn refuse(&mut self, call: &str, refusal: Refusal) -> AccessError {
        if let Refusal::Denied(why) = &refusal {
            self.log.denied(call, why);
            self.provenance.denial(call, why);
            // `call` is the host function's name: a bounded label.
            crate::metrics::global()
                .denials
                .get_or_create(&crate::metrics::DenialLabels {
                    plugin: self.log.plugin().to_string(),
                    capability: call.to_string(),
                })
                .inc();
        }
        self.target.record(call, refusal)
    }
}

/// Open the grant `path` under `root_dir` one component at a time, never
/// following a symlink, and check that each directory opened is the one
/// inspected (so a symlink swapped in between is caught too).
fn open_grant(root_dir: &Dir, root: &Path, path: &Path) -> Result<GrantAccess, GrantError> {
    let fail = |reason: String| GrantError::Path {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
        reason,
    };
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut current = root_dir.try_clone().map_err(|e| fail(io_reason(&e)))?;
    let mut walked = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        walked.push(name);
        let meta = current.symlink_metadata(name).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                GrantError::Missing {
                    path: path.to_path_buf(),
                    root: root.to_path_buf(),
                }
            } else {
                fail(io_reason(&e))
            }
        })?;
        if meta.file_type().is_symlink() {
            let points_to = current
                .read_link_contents(name)
                .unwrap_or_else(|_| PathBuf::from("?"));
            return Err(GrantError::Symlink {
                path: path.to_path_buf(),
                link: walked,
                points_to,
                root: root.to_path_buf(),
            });
        }
        let last = i + 1 == names.len();
        if last && !meta.is_dir() {
            return Ok(GrantAccess::File {
                parent: current,
                name: name.to_string_lossy().into_owned(),
            });
        }
        if !meta.is_dir() {
            return Err(fail(format!("{} is not a directory", walked.display())));
        }
        let next = current.open_dir(name).map_err(|e| fail(io_reason(&e)))?;
        let opened = next.dir_metadata().map_err(|e| fail(io_reason(&e)))?;
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            return Err(fail(format!(
                "{} changed while it was being opened",
                walked.display()
            )));
        }
        current = next;
    }
    Ok(GrantAccess::Dir(current))
}

/// cap-std reports a path that would leave its directory as this error.
fn is_escape(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
        && e.to_string().contains("outside of the filesystem")
}

fn io_reason(e: &std::io::Error) -> String {
    if is_escape(e) {
        "it leads outside the assessment root through a symlink".to_string()
    } else if e.kind() == std::io::ErrorKind::NotFound {
        "no such file or directory".to_string()
    } else {
        e.to_string()
    }
}

pub(super) fn access_error(path: &Path, e: &std::io::Error) -> AccessError {
    let p = path.display();
    if is_escape(e) {
        return AccessError::Invalid(format!("{p} leads outside the granted path (symlink)"));
    }
    match e.raw_os_error() {
        Some(libc::ELOOP) => {
            return AccessError::Invalid(format!(
                "{p} is a symlink loop or a symlink that may not be followed"
            ));
        }
        Some(libc::ENAMETOOLONG) => {
            return AccessError::Invalid(format!("{p}: the path is too long"));
        }
        Some(libc::ENXIO) => {
            return AccessError::Invalid(format!(
                "{p} is not a regular file (a socket or a device without a driver)"
            ));
        }
        _ => {}
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => AccessError::NotFound(format!("{p} does not exist")),
        std::io::ErrorKind::PermissionDenied => {
            AccessError::Io(format!("{p}: permission denied by the operating system"))
        }
        _ => AccessError::Io(format!("{p}: {e}")),
    }
}

pub(super) fn entry_kind(ft: cap_std::fs::FileType) -> EntryKind {
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

/// What a file that is not regular is, for the refusal.
fn file_type_name(ft: cap_std::fs::FileType) -> &'static str {
    use cap_std::fs::FileTypeExt;
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

/// The metadata of `rel`; with `nofollow` (`rel` is a granted file
/// itself) a symlink is refused, never followed.
pub(super) fn granted_metadata(
    dir: &Dir,
    rel: &Path,
    request: &Path,
    nofollow: bool,
) -> Result<cap_std::fs::Metadata, AccessError> {
    let meta = if nofollow {
        dir.symlink_metadata(rel)
    } else {
        dir.metadata(rel)
    }
    .map_err(|e| access_error(request, &e))?;
    if nofollow && meta.file_type().is_symlink() {
        let points_to = dir
            .read_link_contents(rel)
            .unwrap_or_else(|_| PathBuf::from("?"));
        return Err(AccessError::Invalid(format!(
            "the granted file {} is a symlink to {}: a grant never follows a symlink; the operator must grant the real path",
            request.display(),
            points_to.display()
        )));
    }
    Ok(meta)
}

/// Open a regular file for reading. The type is checked before opening
/// (opening some devices has effects of its own) and again on the opened
/// descriptor; the open never blocks (a FIFO without a writer) and never
/// makes a terminal the agent's controlling terminal. `nofollow` refuses a
/// symlink as the last component (a granted file itself).
pub(super) fn open_regular(
    dir: &Dir,
    rel: &Path,
    request: &Path,
    nofollow: bool,
) -> Result<cap_std::fs::File, AccessError> {
    let meta = granted_metadata(dir, rel, request, nofollow)?;
    if !meta.is_file() {
        return Err(AccessError::Invalid(format!(
            "{} is {}: only regular files can be read",
            request.display(),
            file_type_name(meta.file_type())
        )));
    }
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(flags);
    let file = dir
        .open_with(rel, &options)
        .map_err(|e| access_error(request, &e))?;
    let opened = file.metadata().map_err(|e| access_error(request, &e))?;
    if !opened.is_file() {
        return Err(AccessError::Invalid(format!(
            "{} is {}: only regular files can be read",
            request.display(),
            file_type_name(opened.file_type())
        )));
    }
    Ok(file)
}

/// Run `work` with `dir` on the bounded pool of blocking threads, within
/// [`FS_CALL_TIMEOUT`]. A call that overruns gets an error at once; its
/// thread finishes (or stays stuck in the kernel) on its own, holding its
/// slot, and the job goes on.
pub(super) async fn blocking<T: Send + 'static>(
    dir: Dir,
    work: impl FnOnce(Dir) -> Result<T, AccessError> + Send + 'static,
) -> Result<T, AccessError> {
    blocking_within(FS_CALL_TIMEOUT, dir, work).await
}

pub(super) async fn blocking_within<T: Send + 'static>(
    timeout: Duration,
    dir: Dir,
    work: impl FnOnce(Dir) -> Result<T, AccessError> + Send + 'static,
) -> Result<T, AccessError> {
    let call = async {
        let permit = FS_SLOTS
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AccessError::Io(format!("host file-system pool closed: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            work(dir)
        })
        .await
        .map_err(|e| AccessError::Io(format!("host task failed: {e}")))?
    };
    tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
        Err(AccessError::Io(format!(
            "the file-system call did not finish within {} (a hung mount, or every host worker is stuck on one)",
            humantime::format_duration(timeout)
        )))
    })
}

/// Read at most `max` bytes; `None` when the file is larger.
pub(super) fn read_capped(mut reader: impl Read, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    reader.by_ref().take(max + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

/// Size cap of the small system files read for host facts.
const FACT_FILE_BYTES: u64 = 64 << 10;

/// Read a small system file relative to the root (for host facts).
pub(super) fn fact_file(root_dir: &Dir, rel: &str) -> Option<String> {
    let file = open_regular(root_dir, Path::new(rel), Path::new(rel), false).ok()?;
    let bytes = read_capped(file, FACT_FILE_BYTES).ok()??;
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}

impl PluginState {
    pub(super) fn resolve_or_refuse(
        &mut self,
        call: &str,
        path: &str,
    ) -> Result<Resolved, AccessError> {
        self.target
            .resolve(path)
            .map_err(|refusal| self.refuse(call, refusal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::latest::assessment::plugin::environment::Host as _;
    use crate::bindings::latest::assessment::plugin::filesystem::Host as _;
    use crate::bindings::latest::assessment::plugin::host_facts::Host as _;
    use crate::bindings::latest::assessment::plugin::process::Host as _;
    use crate::capabilities::process::{COMMAND_PATH, run_bounded};
    use crate::capabilities::tests_support::state_with_target;

    fn grants(read: &[&str], commands: &[&str], env: &[&str], facts: bool) -> GrantSet {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        GrantSet::from_config("t", facts, &s(read), &s(commands), &s(env)).unwrap()
    }

    fn tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir_all(p.join("etc/ssh/sshd_config.d")).unwrap();
        std::fs::write(p.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
        std::fs::write(p.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(p.join("etc/shadow"), "root:*:1::::::\n").unwrap();
        std::fs::write(p.join("etc/hostname"), "fixture-host\n").unwrap();
        std::fs::write(
            p.join("etc/os-release"),
            "NAME=\"Fixture\"\nID=fixture\nVERSION_ID=\"1.0\"\n",
        )
        .unwrap();
        std::fs::write(p.join("big"), vec![b'x'; 2048]).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", p.join("etc/ssh/abs-link")).unwrap();
        std::os::unix::fs::symlink("../shadow", p.join("etc/ssh/rel-link")).unwrap();
        std::os::unix::fs::symlink("sshd_config", p.join("etc/ssh/inner-link")).unwrap();
        root
    }

    async fn state(root: &Path, g: GrantSet) -> PluginState {
        let limits = Limits {
            max_file_bytes: 1024,
            max_dir_entries: 3,
            command_timeout: Duration::from_millis(500),
            command_output_bytes: 1000,
            ..Limits::default()
        };
        state_with_target(TargetCtx::open(root, g, limits).unwrap())
    }

    #[tokio::test]
    async fn reads_inside_grants_and_denies_the_rest() {
        let root = tree();
        let mut s = state(
            root.path(),
            grants(&["/etc/ssh", "/etc/passwd", "/big"], &[], &[], false),
        )
        .await;
        assert_eq!(
            s.read_file("/etc/ssh/sshd_config".into())
                .await
                .unwrap()
                .unwrap(),
            b"PermitRootLogin no\n"
        );
        assert!(s.read_file("/etc/passwd".into()).await.unwrap().is_ok());
        assert!(matches!(
            s.read_file("/etc/shadow".into()).await.unwrap(),
            Err(AccessError::Denied(_))
        ));
        assert!(matches!(
            s.read_file("/etc/group".into()).await.unwrap(),
            Err(AccessError::Denied(_))
        ));
        assert!(matches!(
            s.read_file("/etc/ssh/missing".into()).await.unwrap(),
            Err(AccessError::NotFound(_))
        ));
        assert!(matches!(
            s.read_file("/etc/ssh".into()).await.unwrap(),
            Err(AccessError::Invalid(_))
        ));
        assert!(matches!(
            s.read_file("/big".into()).await.unwrap(),
            Err(AccessError::TooLarge(_))
        ));
        assert_eq!(s.target.denials().1, 2);
        // Each denial is counted in the metrics, by plugin and host function.
        let counted = crate::metrics::global()
            .denials
            .get_or_create(&crate::metrics::DenialLabels {
                plugin: s.log.plugin().to_string(),
                capability: "read-file".to_string(),
            })
            .get();
        assert!(counted >= 2, "{counted}");
    }

    #[tokio::test]
    async fn provenance_records_what_each_call_served() {
        use crate::capabilities::provenance::sha256;
        let root = tree();
        let mut s = state(
            root.path(),
            grants(
                &["/etc"],
                &["/bin/sh"],
                &["PATH", "ASSESSMENT_PROVENANCE_UNSET"],
                false,
            ),
        )
        .await;
        let config = s
            .read_file("/etc/ssh/sshd_config".into())
            .await
            .unwrap()
            .unwrap();
        let window = s
            .read_range("/etc/passwd".into(), 5, 3)
            .await
            .unwrap()
            .unwrap();
        s.stat("/etc/shadow".into()).await.unwrap().unwrap();
        s.read_file("/etc/missing".into())
            .await
            .unwrap()
            .unwrap_err();
        s.read_file("/big".into()).await.unwrap().unwrap_err();
        s.list_dir("/etc/ssh/sshd_config.d".into())
            .await
            .unwrap()
            .unwrap();
        s.list_dir("/etc/ssh".into()).await.unwrap().unwrap_err();
        let out = s
            .run_command(
                "/bin/sh".into(),
                vec!["-c".into(), "echo hi; exit 3".into()],
            )
            .await
            .unwrap()
            .unwrap();
        s.run_command("/bin/ls".into(), vec![])
            .await
            .unwrap()
            .unwrap_err();
        s.env_var("PATH".into()).await.unwrap().unwrap();
        s.env_var("ASSESSMENT_PROVENANCE_UNSET".into())
            .await
            .unwrap()
            .unwrap();
        s.env_var("HOME".into()).await.unwrap().unwrap_err();
        let p = s.provenance.take();

        let mtime = |rel: &str| {
            let modified = std::fs::metadata(root.path().join(rel))
                .unwrap()
                .modified()
                .unwrap();
            chrono::DateTime::<chrono::Utc>::from(modified)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        let files: Vec<_> = p
            .files
            .iter()
            .map(|f| (f.call.as_str(), f.path.as_str(), f.error.as_deref()))
            .collect();
        assert_eq!(
            files,
            [
                ("read-file", "/etc/ssh/sshd_config", None),
                ("read-range", "/etc/passwd", None),
                ("stat", "/etc/shadow", None),
                ("read-file", "/etc/missing", Some("not-found")),
            ],
            "/big is outside the grants: a denial, not a file read"
        );
        let read = &p.files[0];
        assert_eq!(read.size, Some(config.len() as u64));
        assert_eq!(read.bytes, Some(config.len() as u64));
        assert_eq!(read.sha256, Some(sha256(&config)));
        assert_eq!(read.mtime, Some(mtime("etc/ssh/sshd_config")));
        let range = &p.files[1];
        assert_eq!((range.offset, range.bytes), (Some(5), Some(3)));
        assert_eq!(range.sha256, Some(sha256(&window)));
        assert_eq!(range.size, Some(26), "the whole file's size");
        let stat = &p.files[2];
        assert_eq!(stat.size, Some(15));
        assert_eq!(stat.mtime, Some(mtime("etc/shadow")));
        assert!(stat.sha256.is_none(), "nothing of its content was served");

        assert_eq!(p.directories.len(), 2);
        assert_eq!(p.directories[0].path, "/etc/ssh/sshd_config.d");
        assert_eq!(p.directories[0].entries, Some(0));
        assert_eq!(
            p.directories[1].error.as_deref(),
            Some("too-large"),
            "more entries than the limit"
        );

        assert_eq!(p.commands.len(), 1, "the refused command is a denial");
        let command = &p.commands[0];
        assert_eq!(command.program, "/bin/sh");
        assert_eq!(command.args, ["-c", "echo hi; exit 3"]);
        assert_eq!(command.exit_code, Some(3));
        assert_eq!(command.stdout_sha256, Some(sha256(&out.stdout)));
        assert!(command.duration_ms < 5000);

        let env: Vec<_> = p
            .environment
            .iter()
            .map(|e| (e.name.as_str(), e.set))
            .collect();
        assert_eq!(
            env,
            [("PATH", true), ("ASSESSMENT_PROVENANCE_UNSET", false)]
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains(&std::env::var("PATH").unwrap()),
            "no value of a variable is recorded"
        );

        let denials: Vec<_> = p.denials.iter().map(|d| d.call.as_str()).collect();
        assert_eq!(denials, ["read-file", "run-command", "env-var"]);
        assert!(p.denials[0].reason.contains("/big"), "{:?}", p.denials[0]);
        assert_eq!(p.dropped.total(), 0);
    }

    #[tokio::test]
    async fn escapes_are_refused() {
        let root = tree();
        let mut s = state(root.path(), grants(&["/etc/ssh"], &[], &[], false)).await;
        for path in [
            "/etc/ssh/../shadow",
            "/etc/ssh/rel-link",
            "/etc/ssh/abs-link",
            "etc/ssh/sshd_config",
        ] {
            let r = s.read_file(path.into()).await.unwrap();
            assert!(matches!(r, Err(AccessError::Invalid(_))), "{path}: {r:?}");
        }
        assert!(
            s.read_file("/etc/ssh/inner-link".into())
                .await
                .unwrap()
                .is_ok(),
            "a symlink inside the grant is fine"
        );
    }

    /// `/home/alice/.ssh -> ../../secret` and `/etc/motd -> shadow`: an
    /// image's symlinks that would redirect a grant.
    fn symlinked_tree() -> tempfile::TempDir {
        let root = tree();
        let p = root.path();
        std::fs::create_dir_all(p.join("secret")).unwrap();
        std::fs::write(p.join("secret/id_ed25519"), "PRIVATE KEY").unwrap();
        std::fs::create_dir_all(p.join("home/alice")).unwrap();
        std::os::unix::fs::symlink("../../secret", p.join("home/alice/.ssh")).unwrap();
        std::os::unix::fs::symlink("shadow", p.join("etc/motd")).unwrap();
        std::os::unix::fs::symlink("etc", p.join("etc-link")).unwrap();
        root
    }

    #[tokio::test]
    async fn a_grant_through_a_symlink_is_a_configuration_error_naming_it() {
        let root = symlinked_tree();
        for (grant, link, points_to) in [
            ("/home/alice/.ssh", "/home/alice/.ssh", "../../secret"),
            (
                "/home/alice/.ssh/id_ed25519",
                "/home/alice/.ssh",
                "../../secret",
            ),
            ("/etc/motd", "/etc/motd", "shadow"),
            ("/etc-link/ssh", "/etc-link", "etc"),
        ] {
            let e = TargetCtx::open(
                root.path(),
                grants(&[grant], &[], &[], false),
                Limits::default(),
            )
            .err()
            .unwrap_or_else(|| panic!("{grant} was accepted"));
            assert!(matches!(e, GrantError::Symlink { .. }), "{grant}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("{link} -> {points_to}"))
                    && text.contains("grant the real path"),
                "{grant}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn a_grant_that_became_a_symlink_refuses_its_calls_as_invalid() {
        let root = symlinked_tree();
        let target = TargetCtx::open_for_run(
            root.path(),
            grants(&["/home/alice/.ssh", "/etc/ssh"], &[], &[], false),
            Limits::default(),
        )
        .unwrap();
        let mut s = state_with_target(target);
        for call in ["read", "list", "stat"] {
            let r = match call {
                "read" => s
                    .read_file("/home/alice/.ssh/id_ed25519".into())
                    .await
                    .unwrap()
                    .map(|_| ()),
                "list" => s
                    .list_dir("/home/alice/.ssh".into())
                    .await
                    .unwrap()
                    .map(|_| ()),
                _ => s
                    .stat("/home/alice/.ssh/id_ed25519".into())
                    .await
                    .unwrap()
                    .map(|_| ()),
            };
            assert!(
                matches!(&r, Err(AccessError::Invalid(m)) if m.contains("symlink")),
                "{call}: {r:?}"
            );
        }
        // The other grant still works.
        assert!(
            s.read_file("/etc/ssh/sshd_config".into())
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_granted_file_replaced_by_a_symlink_after_the_check_is_not_followed() {
        let root = tree();
        let mut s = state(root.path(), grants(&["/etc/passwd"], &[], &[], false)).await;
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("shadow", root.path().join("etc/passwd")).unwrap();
        let r = s.read_file("/etc/passwd".into()).await.unwrap();
        assert!(
            matches!(&r, Err(AccessError::Invalid(m)) if m.contains("symlink")),
            "{r:?}"
        );
        let r = s.stat("/etc/passwd".into()).await.unwrap();
        assert!(
            matches!(&r, Err(AccessError::Invalid(m)) if m.contains("symlink")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn symlinks_inside_a_directory_grant_that_stay_inside_still_work() {
        let root = symlinked_tree();
        let mut s = state(root.path(), grants(&["/etc", "/secret"], &[], &[], false)).await;
        // /etc/motd -> shadow stays inside /etc.
        assert_eq!(
            s.read_file("/etc/motd".into()).await.unwrap().unwrap(),
            b"root:*:1::::::\n"
        );
        assert_eq!(
            s.read_file("/secret/id_ed25519".into())
                .await
                .unwrap()
                .unwrap(),
            b"PRIVATE KEY"
        );
    }

    #[tokio::test]
    async fn fifos_sockets_and_devices_are_refused_without_blocking() {
        let root = tree();
        let p = root.path();
        let status = std::process::Command::new("mkfifo")
            .arg(p.join("etc/fifo"))
            .status()
            .unwrap();
        assert!(status.success());
        let _listener = std::os::unix::net::UnixListener::bind(p.join("etc/socket")).unwrap();
        let mut s = state(p, grants(&["/etc"], &[], &[], false)).await;
        let started = std::time::Instant::now();
        for (path, kind) in [("/etc/fifo", "a FIFO"), ("/etc/socket", "a socket")] {
            let r = s.read_file(path.into()).await.unwrap();
            assert!(
                matches!(&r, Err(AccessError::Invalid(m)) if m.contains(kind)),
                "{path}: {r:?}"
            );
            // stat and list-dir do not open the file: they answer.
            assert_eq!(
                s.stat(path.into()).await.unwrap().unwrap().kind,
                EntryKind::Other
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // A real device, through the root `/`.
        let mut s = state(
            Path::new("/"),
            grants(&["/dev/null", "/dev/zero"], &[], &[], false),
        )
        .await;
        for path in ["/dev/null", "/dev/zero"] {
            let r = s.read_file(path.into()).await.unwrap();
            assert!(
                matches!(&r, Err(AccessError::Invalid(m)) if m.contains("character device")),
                "{path}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_file_system_call_that_hangs_gets_an_error_at_its_timeout() {
        let dir = Dir::open_ambient_dir("/", ambient_authority()).unwrap();
        let started = std::time::Instant::now();
        let r: Result<(), AccessError> = blocking_within(Duration::from_millis(200), dir, |_| {
            std::thread::sleep(Duration::from_secs(3));
            Ok(())
        })
        .await;
        assert!(
            matches!(&r, Err(AccessError::Io(m)) if m.contains("did not finish")),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_command_that_leaves_a_child_holding_its_output_is_killed_with_its_group() {
        let marker = tempfile::tempdir().unwrap();
        let pidfile = marker.path().join("grandchild.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let started = std::time::Instant::now();
        let r = run_bounded(
            "/bin/sh",
            &["-c".to_string(), script],
            Duration::from_millis(500),
            1000,
        )
        .await;
        assert!(
            matches!(&r, Err(AccessError::Io(m)) if m.contains("process group")),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (or a zombie about to be reaped by init).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.is_empty() || status.contains("State:\tZ") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {pid} still runs: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[tokio::test]
    async fn a_grant_that_does_not_exist_is_not_found_for_the_plugin() {
        let root = tree();
        let ctx = TargetCtx::open(
            root.path(),
            grants(&["/etc/nope", "/etc/ssh"], &[], &[], false),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(ctx.missing_grants(), [Path::new("/etc/nope")]);
        let mut s = state_with_target(ctx);
        let e = s
            .read_file("/etc/nope/x".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&e, AccessError::NotFound(m) if m.contains("/etc/nope")),
            "{e:?}"
        );
        assert!(s.target.denials().0.is_empty(), "not a denial");
        // A grant that is there but not a directory is still an error.
        let e = TargetCtx::open(
            root.path(),
            grants(&["/etc/passwd/x"], &[], &[], false),
            Limits::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[tokio::test]
    async fn stat_and_list_dir() {
        let root = tree();
        std::fs::set_permissions(
            root.path().join("etc/shadow"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let mut s = state(root.path(), grants(&["/etc"], &[], &[], false)).await;
        let st = s.stat("/etc/shadow".into()).await.unwrap().unwrap();
        assert_eq!(st.mode, 0o640);
        assert_eq!(st.kind, EntryKind::File);
        let names: Vec<String> = s
            .list_dir("/etc/ssh/sshd_config.d".into())
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.is_empty());
        // /etc/ssh has 4 entries, above the test limit of 3.
        assert!(matches!(
            s.list_dir("/etc/ssh".into()).await.unwrap(),
            Err(AccessError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn host_facts_come_from_the_root_when_granted() {
        let root = tree();
        let mut s = state(root.path(), grants(&[], &[], &[], false)).await;
        assert!(matches!(
            s.get().await.unwrap(),
            Err(AccessError::Denied(_))
        ));
        let mut s = state(root.path(), grants(&[], &[], &[], true)).await;
        let f = s.get().await.unwrap().unwrap();
        assert_eq!(
            (
                f.hostname.as_str(),
                f.os.as_str(),
                f.os_id.as_str(),
                f.os_version.as_str()
            ),
            ("fixture-host", "Fixture", "fixture", "1.0")
        );
    }

    #[tokio::test]
    async fn commands_are_allow_listed_bounded_and_run_without_environment() {
        let root = tree();
        let mut s = state(
            root.path(),
            grants(
                &[],
                &["/usr/bin/env", "/bin/sleep", "/usr/bin/yes"],
                &["PATH"],
                false,
            ),
        )
        .await;
        let out = s
            .run_command("/usr/bin/env".into(), vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("PATH={COMMAND_PATH}")
        );
        assert!(matches!(
            s.run_command("/bin/ls".into(), vec![]).await.unwrap(),
            Err(AccessError::Denied(_))
        ));
        assert!(
            matches!(s.run_command("/bin/sleep".into(), vec!["5".into()]).await.unwrap(), Err(AccessError::Io(m)) if m.contains("killed"))
        );
        assert!(matches!(
            s.run_command("/usr/bin/yes".into(), vec![]).await.unwrap(),
            Err(AccessError::TooLarge(_))
        ));
        assert!(s.env_var("PATH".into()).await.unwrap().unwrap().is_some());
        assert!(matches!(
            s.env_var("HOME".into()).await.unwrap(),
            Err(AccessError::Denied(_))
        ));
    }
}
