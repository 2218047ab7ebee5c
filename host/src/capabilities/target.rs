//! `assessment:plugin/target`: read-only access to the assessed system.
//!
//! Every call first asks the plugin's [`GrantSet`]. Files are reached only
//! through `cap-std` directories opened at the granted paths under the
//! assessment root, so neither `..` nor a symlink can lead outside a grant.
//! Commands run from an exact allow-list with a cleared environment, a
//! timeout and capped output.

use cap_std::fs::MetadataExt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::bindings::latest::assessment::plugin::target::{
    self, CommandOutput, DirEntry, EntryKind, FileStat, HostFacts,
};
use crate::bindings::latest::assessment::plugin::types::AccessError;
use crate::policy::{GrantSet, Limits, Refusal};

use super::{JobLabels, PluginState};

/// `PATH` of commands run for plugins.
const COMMAND_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Size cap of the small system files read for host facts.
const FACT_FILE_BYTES: u64 = 64 << 10;
/// Denials remembered per run (all are counted and logged).
const MAX_RECORDED_DENIALS: usize = 100;

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
    /// A granted path does not exist or cannot be opened.
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
}

enum GrantAccess {
    Dir(Dir),
    File { parent: Dir, name: String },
}

/// The assessed system as one plugin may see it.
pub struct TargetCtx {
    labels: Arc<JobLabels>,
    root: PathBuf,
    root_dir: Dir,
    grants: GrantSet,
    opened: Vec<(PathBuf, GrantAccess)>,
    limits: Limits,
    denials: Vec<String>,
    denial_count: u64,
}

impl TargetCtx {
    /// Open every read grant under `root`. Fails when a grant does not exist
    /// (or leaves the root through a symlink).
    pub fn open(
        labels: Arc<JobLabels>,
        root: &Path,
        grants: GrantSet,
        limits: Limits,
    ) -> Result<Self, GrantError> {
        let root_dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(|source| {
            GrantError::Root {
                root: root.to_path_buf(),
                source,
            }
        })?;
        let mut opened = Vec::with_capacity(grants.read.len());
        for path in &grants.read {
            let fail = |reason: String| GrantError::Path {
                path: path.clone(),
                root: root.to_path_buf(),
                reason,
            };
            let rel = relative(path);
            let meta = root_dir.metadata(&rel).map_err(|e| fail(io_reason(&e)))?;
            let access = if meta.is_dir() {
                GrantAccess::Dir(root_dir.open_dir(&rel).map_err(|e| fail(io_reason(&e)))?)
            } else {
                let parent = rel
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let name = rel
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| fail("not a file name".to_string()))?;
                GrantAccess::File {
                    parent: root_dir.open_dir(parent).map_err(|e| fail(io_reason(&e)))?,
                    name,
                }
            };
            opened.push((path.clone(), access));
        }
        Ok(TargetCtx {
            labels,
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

    /// Turn a policy refusal into the plugin's error, logging denials.
    fn refuse(&mut self, call: &str, refusal: Refusal) -> AccessError {
        match refusal {
            Refusal::Denied(why) => {
                tracing::warn!(
                    plugin = %self.labels.plugin,
                    version = %self.labels.version,
                    job = %self.labels.job_id,
                    call,
                    "denied: {why}"
                );
                self.denial_count += 1;
                if self.denials.len() < MAX_RECORDED_DENIALS {
                    self.denials.push(format!("{call}: {why}"));
                }
                AccessError::Denied(why)
            }
            Refusal::Invalid(why) => AccessError::Invalid(why),
        }
    }

    /// The directory and relative path through which `path` may be reached.
    fn resolve(&mut self, call: &str, path: &str) -> Result<(Dir, PathBuf, PathBuf), AccessError> {
        let (grant, request) = match self.grants.read_grant_for(path) {
            Ok((grant, request)) => (grant.to_path_buf(), request),
            Err(refusal) => return Err(self.refuse(call, refusal)),
        };
        let Some((_, access)) = self.opened.iter().find(|(p, _)| *p == grant) else {
            return Err(AccessError::Io(format!(
                "grant {} is not open",
                grant.display()
            )));
        };
        let rel = request
            .strip_prefix(&grant)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let (dir, rel) = match access {
            GrantAccess::Dir(dir) => (
                dir,
                if rel.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    rel
                },
            ),
            GrantAccess::File { parent, name } if rel.as_os_str().is_empty() => {
                (parent, PathBuf::from(name))
            }
            GrantAccess::File { .. } => {
                return Err(AccessError::NotFound(format!(
                    "{}: {} is a file",
                    request.display(),
                    grant.display()
                )));
            }
        };
        let dir = dir
            .try_clone()
            .map_err(|e| AccessError::Io(format!("{}: {e}", request.display())))?;
        Ok((dir, rel, request))
    }
}

fn relative(path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    }
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

fn access_error(path: &Path, e: &std::io::Error) -> AccessError {
    let p = path.display();
    if is_escape(e) {
        AccessError::Invalid(format!("{p} leads outside the granted path (symlink)"))
    } else {
        match e.kind() {
            std::io::ErrorKind::NotFound => AccessError::NotFound(format!("{p} does not exist")),
            std::io::ErrorKind::PermissionDenied => {
                AccessError::Io(format!("{p}: permission denied by the operating system"))
            }
            _ => AccessError::Io(format!("{p}: {e}")),
        }
    }
}

fn entry_kind(ft: cap_std::fs::FileType) -> EntryKind {
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

/// Run `work` with `dir` on a blocking thread: file I/O may be slow (a
/// network mount, a loaded disk) and must not stall other plugins.
async fn blocking<T: Send + 'static>(
    dir: Dir,
    work: impl FnOnce(Dir) -> Result<T, AccessError> + Send + 'static,
) -> Result<T, AccessError> {
    tokio::task::spawn_blocking(move || work(dir))
        .await
        .map_err(|e| AccessError::Io(format!("host task failed: {e}")))?
}

/// Read at most `max` bytes; `None` when the file is larger.
fn read_capped(mut reader: impl Read, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    reader.by_ref().take(max + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

async fn read_stream_capped(
    stream: Option<impl AsyncRead + Unpin>,
    max: u64,
) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(stream) = stream {
        stream.take(max + 1).read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

impl TargetCtx {
    /// Read a small system file relative to the root (for host facts).
    fn fact_file(&self, rel: &str) -> Option<String> {
        let file = self.root_dir.open(rel).ok()?;
        let bytes = read_capped(file, FACT_FILE_BYTES).ok()??;
        Some(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    fn host_facts(&self) -> HostFacts {
        let os_release = self
            .fact_file("etc/os-release")
            .or_else(|| self.fact_file("usr/lib/os-release"))
            .unwrap_or_default();
        let field = |key: &str| {
            os_release.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })
        };
        let hostname = self
            .fact_file("etc/hostname")
            .filter(|h| !h.is_empty())
            .or_else(|| {
                (self.root == Path::new("/"))
                    .then(|| self.fact_file("proc/sys/kernel/hostname"))
                    .flatten()
            })
            .unwrap_or_else(|| "unknown".to_string());
        HostFacts {
            hostname,
            os: field("PRETTY_NAME")
                .or_else(|| field("NAME"))
                .unwrap_or_else(|| "unknown".to_string()),
            os_id: field("ID").unwrap_or_else(|| "unknown".to_string()),
            os_version: field("VERSION_ID").unwrap_or_default(),
            arch: std::env::consts::ARCH.to_string(),
            kernel_release: self
                .fact_file("proc/sys/kernel/osrelease")
                .unwrap_or_default(),
        }
    }
}

impl target::Host for PluginState {
    async fn facts(&mut self) -> wasmtime::Result<Result<HostFacts, AccessError>> {
        let t = &mut self.target;
        if let Err(refusal) = t.grants.check_host_facts() {
            return Ok(Err(t.refuse("facts", refusal)));
        }
        Ok(Ok(t.host_facts()))
    }

    async fn read_file(&mut self, path: String) -> wasmtime::Result<Result<Vec<u8>, AccessError>> {
        let max = self.target.limits.max_file_bytes;
        let (dir, rel, request) = match self.target.resolve("read-file", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(dir, move |dir| {
            let file = dir.open(&rel).map_err(|e| access_error(&request, &e))?;
            let meta = file.metadata().map_err(|e| access_error(&request, &e))?;
            if meta.is_dir() {
                return Err(AccessError::Invalid(format!(
                    "{} is a directory",
                    request.display()
                )));
            }
            read_capped(file, max)
                .map_err(|e| access_error(&request, &e))?
                .ok_or_else(|| {
                    AccessError::TooLarge(format!(
                        "{} is larger than {max} bytes",
                        request.display()
                    ))
                })
        })
        .await)
    }

    async fn stat(&mut self, path: String) -> wasmtime::Result<Result<FileStat, AccessError>> {
        let (dir, rel, request) = match self.target.resolve("stat", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(dir, move |dir| {
            let meta = dir.metadata(&rel).map_err(|e| access_error(&request, &e))?;
            Ok(FileStat {
                kind: entry_kind(meta.file_type()),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: meta.len(),
                modified: meta.mtime(),
            })
        })
        .await)
    }

    async fn list_dir(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<DirEntry>, AccessError>> {
        let max = self.target.limits.max_dir_entries;
        let (dir, rel, request) = match self.target.resolve("list-dir", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(dir, move |dir| {
            let mut entries = Vec::new();
            for entry in dir.read_dir(&rel).map_err(|e| access_error(&request, &e))? {
                let entry = entry.map_err(|e| access_error(&request, &e))?;
                if entries.len() == max {
                    return Err(AccessError::TooLarge(format!(
                        "{} has more than {max} entries",
                        request.display()
                    )));
                }
                let kind = entry
                    .file_type()
                    .map(entry_kind)
                    .unwrap_or(EntryKind::Other);
                entries.push(DirEntry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    kind,
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await)
    }

    async fn run_command(
        &mut self,
        command: String,
        args: Vec<String>,
    ) -> wasmtime::Result<Result<CommandOutput, AccessError>> {
        if let Err(refusal) = self.target.grants.check_command(&command) {
            return Ok(Err(self.target.refuse("run-command", refusal)));
        }
        let limits = &self.target.limits;
        Ok(run_bounded(
            &command,
            &args,
            limits.command_timeout,
            limits.command_output_bytes,
        )
        .await)
    }

    async fn env_var(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, AccessError>> {
        if let Err(refusal) = self.target.grants.check_env(&name) {
            return Ok(Err(self.target.refuse("env-var", refusal)));
        }
        Ok(Ok(
            std::env::var_os(&name).map(|v| v.to_string_lossy().into_owned())
        ))
    }
}

/// Run an allow-listed command with no inherited environment, no stdin, a
/// timeout and capped output. The child is killed when it overruns.
async fn run_bounded(
    command: &str,
    args: &[String],
    timeout: Duration,
    max: u64,
) -> Result<CommandOutput, AccessError> {
    let mut child = tokio::process::Command::new(command)
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                AccessError::NotFound(format!("{command} does not exist"))
            }
            _ => AccessError::Io(format!("cannot start {command}: {e}")),
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let (out, err) = tokio::try_join!(
            read_stream_capped(stdout, max),
            read_stream_capped(stderr, max)
        )
        .map_err(|e| AccessError::Io(format!("{command}: {e}")))?;
        if out.len() as u64 > max || err.len() as u64 > max {
            let _ = child.start_kill();
            return Err(AccessError::TooLarge(format!(
                "{command} wrote more than {max} bytes"
            )));
        }
        let status = child
            .wait()
            .await
            .map_err(|e| AccessError::Io(format!("{command}: {e}")))?;
        Ok(CommandOutput {
            exit_code: status.code(),
            stdout: out,
            stderr: err,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(AccessError::Io(format!(
                "{command} did not finish within {} and was killed",
                humantime::format_duration(timeout)
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::tests_support::{labels, state_with_target};
    use target::Host;

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
        state_with_target(TargetCtx::open(labels(), root, g, limits).unwrap())
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

    #[tokio::test]
    async fn a_grant_that_does_not_exist_is_an_error() {
        let root = tree();
        let e = TargetCtx::open(
            labels(),
            root.path(),
            grants(&["/etc/nope"], &[], &[], false),
            Limits::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("/etc/nope"), "{e}");
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
            s.facts().await.unwrap(),
            Err(AccessError::Denied(_))
        ));
        let mut s = state(root.path(), grants(&[], &[], &[], true)).await;
        let f = s.facts().await.unwrap().unwrap();
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
