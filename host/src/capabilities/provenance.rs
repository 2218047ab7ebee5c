//! The provenance log of one job: what the host served the plugin, recorded
//! by the capability that served it (`filesystem`, `process`,
//! `environment`, `packages`) and by the one refusal path (`target`), and
//! carried as [`Provenance`] in the run report and the job's evidence.
//!
//! Bounded as [`bounds`] says: strings the plugin chose (paths, arguments,
//! reasons) are escaped and cut by [`bounded`]; past
//! [`bounds::MAX_ENTRIES`] entries or [`bounds::MAX_JSON_BYTES`] bytes an
//! entry is dropped and counted by kind.

use std::path::Path;
use std::time::Duration;

use capability_model::wire::provenance::{
    CommandRun, DeniedCall, DirectoryListing, EnvironmentRead, FileAccess, PackageQuery,
    Provenance, bounds,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bindings::latest::assessment::plugin::process::CommandOutput;
use crate::bindings::latest::assessment::plugin::types::AccessError;
use crate::guest_text::bounded;

/// One job's provenance as it is recorded.
#[derive(Debug)]
pub struct ProvenanceLog {
    recorded: Provenance,
    json_bytes: usize,
}

impl Default for ProvenanceLog {
    fn default() -> Self {
        ProvenanceLog {
            recorded: Provenance::new(),
            json_bytes: 0,
        }
    }
}

/// A file's size and modification time, as the host saw it when serving it.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts {
    /// Bytes.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime_secs: i64,
    /// Nanoseconds past `mtime_secs`.
    pub mtime_nanos: i64,
}

impl FileFacts {
    /// The facts of `meta`.
    pub fn of(meta: &cap_std::fs::Metadata) -> Self {
        use cap_std::fs::MetadataExt;
        FileFacts {
            size: meta.len(),
            mtime_secs: meta.mtime(),
            mtime_nanos: meta.mtime_nsec(),
        }
    }

    fn mtime(&self) -> Option<String> {
        let nanos = u32::try_from(self.mtime_nanos).ok()?;
        chrono::DateTime::from_timestamp(self.mtime_secs, nanos)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

/// A package database as it was read (hashed where it was read, so that
/// its bytes need not be kept).
#[derive(Debug, Clone)]
pub struct DatabaseRead {
    /// Its path on the assessed system.
    pub path: std::path::PathBuf,
    /// Its size and modification time.
    pub facts: FileFacts,
    /// [`sha256`] of its bytes.
    pub sha256: String,
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The kind of error the plugin got, as the WIT names it.
pub fn error_kind(error: &AccessError) -> &'static str {
    match error {
        AccessError::Denied(_) => "denied",
        AccessError::NotFound(_) => "not-found",
        AccessError::Invalid(_) => "invalid",
        AccessError::TooLarge(_) => "too-large",
        AccessError::Io(_) => "io",
    }
}

fn path_text(path: &Path) -> String {
    bounded(&path.to_string_lossy(), bounds::PATH)
}

impl ProvenanceLog {
    /// What was recorded so far.
    pub fn provenance(&self) -> &Provenance {
        &self.recorded
    }

    /// Take what was recorded, leaving an empty log.
    pub fn take(&mut self) -> Provenance {
        self.json_bytes = 0;
        std::mem::replace(&mut self.recorded, Provenance::new())
    }

    /// Keep the entry `make` builds if it fits the entry and byte bounds;
    /// otherwise count it as dropped (without building it once the log is
    /// full, so that a flood of calls costs little).
    fn admit<T: Serialize>(
        &mut self,
        make: impl FnOnce() -> T,
        list: impl FnOnce(&mut Provenance) -> (&mut Vec<T>, &mut u64),
    ) {
        let full = self.recorded.entries() >= bounds::MAX_ENTRIES
            || self.json_bytes >= bounds::MAX_JSON_BYTES;
        let entry = (!full).then(make);
        // Its compact JSON plus a separating comma.
        let size = entry.as_ref().map_or(usize::MAX, |e| {
            serde_json::to_vec(e).map_or(usize::MAX, |b| b.len() + 1)
        });
        let (entries, dropped) = list(&mut self.recorded);
        match entry {
            Some(entry) if self.json_bytes.saturating_add(size) <= bounds::MAX_JSON_BYTES => {
                entries.push(entry);
                self.json_bytes += size;
            }
            _ => *dropped += 1,
        }
    }

    /// A file read (`read-file`, `read-range`) or stat'ed (`stat`):
    /// `facts` of the file when it was reached, `returned` the bytes the
    /// plugin got from a read, `error` what it got instead.
    pub fn file(
        &mut self,
        call: &str,
        path: &Path,
        offset: Option<u64>,
        facts: Option<FileFacts>,
        returned: Option<&[u8]>,
        error: Option<&AccessError>,
    ) {
        let make = || FileAccess {
            call: call.to_string(),
            path: path_text(path),
            size: facts.map(|f| f.size),
            mtime: facts.and_then(|f| f.mtime()),
            offset,
            bytes: returned.map(|b| b.len() as u64),
            sha256: returned.map(sha256),
            error: error.map(|e| error_kind(e).to_string()),
        };
        self.admit(make, |p| (&mut p.files, &mut p.dropped.files));
    }

    /// A directory listed: the names returned, in order, or the error.
    pub fn directory(&mut self, path: &Path, names: Result<&[&str], &AccessError>) {
        let make = || match names {
            Ok(names) => {
                let mut digest = Sha256::new();
                for name in names {
                    digest.update(name.as_bytes());
                    digest.update(b"\n");
                }
                DirectoryListing {
                    path: path_text(path),
                    entries: Some(names.len() as u64),
                    sha256: Some(format!("sha256:{}", hex::encode(digest.finalize()))),
                    error: None,
                }
            }
            Err(e) => DirectoryListing {
                path: path_text(path),
                error: Some(error_kind(e).to_string()),
                ..DirectoryListing::default()
            },
        };
        self.admit(make, |p| (&mut p.directories, &mut p.dropped.directories));
    }

    /// A command run: its exit code and output (stdout, stderr), or the
    /// error the plugin got.
    pub fn command(
        &mut self,
        program: &str,
        args: &[String],
        duration: Duration,
        outcome: Result<&CommandOutput, &AccessError>,
    ) {
        let make = || {
            let kept = args.len().min(bounds::ARGS);
            let mut entry = CommandRun {
                program: bounded(program, bounds::PATH),
                args: args[..kept]
                    .iter()
                    .map(|a| bounded(a, bounds::ARG))
                    .collect(),
                args_dropped: (args.len() - kept) as u64,
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                ..CommandRun::default()
            };
            match outcome {
                Ok(output) => {
                    entry.exit_code = output.exit_code;
                    entry.stdout_sha256 = Some(sha256(&output.stdout));
                    entry.stderr_sha256 = Some(sha256(&output.stderr));
                }
                Err(e) => entry.error = Some(bounded(&error_text(e), bounds::REASON)),
            }
            entry
        };
        self.admit(make, |p| (&mut p.commands, &mut p.dropped.commands));
    }

    /// An environment variable read: its name and whether it was set.
    pub fn environment(&mut self, name: &str, set: bool) {
        let make = || EnvironmentRead {
            name: bounded(name, bounds::ENV_NAME),
            set,
        };
        self.admit(make, |p| (&mut p.environment, &mut p.dropped.environment));
    }

    /// A package query: the database read and the packages returned, or
    /// the error.
    pub fn packages(
        &mut self,
        call: &str,
        database: Option<&DatabaseRead>,
        outcome: Result<usize, &AccessError>,
    ) {
        let make = || PackageQuery {
            call: call.to_string(),
            database: database.map(|d| path_text(&d.path)),
            size: database.map(|d| d.facts.size),
            mtime: database.and_then(|d| d.facts.mtime()),
            sha256: database.map(|d| d.sha256.clone()),
            packages: outcome.as_ref().ok().map(|n| *n as u64),
            error: outcome.err().map(|e| error_kind(e).to_string()),
        };
        self.admit(make, |p| (&mut p.packages, &mut p.dropped.packages));
    }

    /// A call refused by policy.
    pub fn denial(&mut self, call: &str, reason: &str) {
        let make = || DeniedCall {
            call: call.to_string(),
            reason: bounded(reason, bounds::REASON),
        };
        self.admit(make, |p| (&mut p.denials, &mut p.dropped.denials));
    }
}

/// A command's error: its kind, and what happened (a timeout, too much
/// output), which the kind alone does not tell.
fn error_text(error: &AccessError) -> String {
    let (AccessError::Denied(m)
    | AccessError::NotFound(m)
    | AccessError::Invalid(m)
    | AccessError::TooLarge(m)
    | AccessError::Io(m)) = error;
    format!("{}: {m}", error_kind(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> FileFacts {
        FileFacts {
            size: 19,
            mtime_secs: 1_764_064_800,
            mtime_nanos: 500_000_000,
        }
    }

    #[test]
    fn files_carry_size_mtime_and_the_digest_of_what_was_returned() {
        let mut log = ProvenanceLog::default();
        log.file(
            "read-range",
            Path::new("/etc/ssh/sshd_config"),
            Some(5),
            Some(facts()),
            Some(b"Root"),
            None,
        );
        log.file(
            "read-file",
            Path::new("/etc/missing"),
            None,
            None,
            None,
            Some(&AccessError::NotFound("gone".into())),
        );
        let p = log.take();
        let f = &p.files[0];
        assert_eq!(f.size, Some(19));
        assert_eq!(f.mtime.as_deref(), Some("2025-11-25T10:00:00.500Z"));
        assert_eq!((f.offset, f.bytes), (Some(5), Some(4)));
        assert_eq!(f.sha256, Some(sha256(b"Root")));
        assert_eq!(p.files[1].error.as_deref(), Some("not-found"));
        assert!(p.files[1].sha256.is_none() && p.files[1].size.is_none());
        assert!(log.provenance().is_empty(), "taken");
    }

    #[test]
    fn a_digest_is_sha256_of_the_bytes() {
        // printf 'abc' | sha256sum
        assert_eq!(
            sha256(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_mtime_before_the_epoch_is_still_a_time() {
        let old = FileFacts {
            size: 0,
            mtime_secs: -86_400,
            mtime_nanos: 0,
        };
        assert_eq!(old.mtime().as_deref(), Some("1969-12-31T00:00:00Z"));
    }

    #[test]
    fn directories_commands_environment_packages_and_denials() {
        let mut log = ProvenanceLog::default();
        log.directory(Path::new("/etc/ssh"), Ok(&["a", "b"]));
        log.directory(
            Path::new("/etc/nope"),
            Err(&AccessError::NotFound("x".into())),
        );
        log.command(
            "/usr/bin/id",
            &["-u".to_string()],
            Duration::from_millis(7),
            Ok(&CommandOutput {
                exit_code: Some(0),
                stdout: b"0\n".to_vec(),
                stderr: Vec::new(),
            }),
        );
        log.command(
            "/bin/sleep",
            &["5".to_string()],
            Duration::from_millis(500),
            Err(&AccessError::Io("did not finish".into())),
        );
        log.environment("PATH", true);
        log.environment("UNSET", false);
        let database = DatabaseRead {
            path: "/var/lib/dpkg/status".into(),
            facts: facts(),
            sha256: sha256(b"Package: a\n"),
        };
        log.packages("installed", Some(&database), Ok(1));
        log.denial("read-file", "/etc/shadow is outside the read grants");
        let p = log.take();
        assert_eq!(p.directories[0].entries, Some(2));
        assert_eq!(p.directories[0].sha256, Some(sha256(b"a\nb\n")));
        assert_eq!(p.directories[1].error.as_deref(), Some("not-found"));
        assert_eq!(p.commands[0].exit_code, Some(0));
        assert_eq!(p.commands[0].duration_ms, 7);
        assert_eq!(p.commands[0].stdout_sha256, Some(sha256(b"0\n")));
        assert_eq!(p.commands[1].exit_code, None);
        assert_eq!(p.commands[1].error.as_deref(), Some("io: did not finish"));
        assert_eq!(
            p.environment
                .iter()
                .map(|e| (e.name.as_str(), e.set))
                .collect::<Vec<_>>(),
            [("PATH", true), ("UNSET", false)]
        );
        assert_eq!(p.packages[0].packages, Some(1));
        assert_eq!(
            p.packages[0].database.as_deref(),
            Some("/var/lib/dpkg/status")
        );
        assert_eq!(p.packages[0].sha256, Some(sha256(b"Package: a\n")));
        assert_eq!(p.denials[0].call, "read-file");
        assert_eq!(p.dropped.total(), 0);
    }

    #[test]
    fn past_the_entry_cap_entries_are_dropped_and_counted_by_kind() {
        let mut log = ProvenanceLog::default();
        for i in 0..bounds::MAX_ENTRIES {
            log.environment(&format!("V{i}"), false);
        }
        log.environment("ONE_MORE", true);
        log.denial("run-command", "not allow-listed");
        log.denial("run-command", "not allow-listed");
        let p = log.take();
        assert_eq!(p.entries(), bounds::MAX_ENTRIES);
        assert_eq!(p.dropped.environment, 1);
        assert_eq!(p.dropped.denials, 2);
        assert_eq!(p.dropped.total(), 3);
        assert!(!p.environment.iter().any(|e| e.name == "ONE_MORE"));
    }

    #[test]
    fn past_the_byte_budget_entries_are_dropped_and_the_json_stays_within_it() {
        let mut log = ProvenanceLog::default();
        let long = format!("/srv/{}", "p".repeat(bounds::PATH));
        let mut kept = 0;
        for _ in 0..bounds::MAX_ENTRIES {
            log.file("stat", Path::new(&long), None, Some(facts()), None, None);
            kept += 1;
            if log.provenance().dropped.files > 0 {
                break;
            }
        }
        let p = log.take();
        assert!(
            p.dropped.files > 0,
            "{kept} long entries fit the byte budget"
        );
        assert!(p.files.len() < bounds::MAX_ENTRIES, "the bytes bound first");
        let entries_json: usize = p
            .files
            .iter()
            .map(|f| serde_json::to_vec(f).unwrap().len() + 1)
            .sum();
        assert!(entries_json <= bounds::MAX_JSON_BYTES, "{entries_json}");
        // A short entry still fits where a long one did not.
        let mut log = ProvenanceLog::default();
        for _ in 0..p.files.len() {
            log.file("stat", Path::new(&long), None, Some(facts()), None, None);
        }
        log.environment("PATH", true);
        assert_eq!(log.provenance().environment.len(), 1);
    }

    #[test]
    fn fields_are_escaped_and_cut_at_their_caps() {
        let mut log = ProvenanceLog::default();
        let path = format!("/etc/{}", "x".repeat(2 * bounds::PATH));
        log.file("read-file", Path::new(&path), None, None, None, None);
        let mut args: Vec<String> = (0..bounds::ARGS + 5).map(|i| i.to_string()).collect();
        args[0] = "a".repeat(2 * bounds::ARG);
        args[1] = "line\nforged".to_string();
        log.command(
            &"/bin/p".repeat(400),
            &args,
            Duration::ZERO,
            Ok(&CommandOutput {
                exit_code: Some(1),
                stdout: Vec::new(),
                stderr: Vec::new(),
            }),
        );
        log.environment(&"N".repeat(2 * bounds::ENV_NAME), false);
        log.denial("env-var", &"r".repeat(2 * bounds::REASON));
        let p = log.take();
        let cut = |s: &str, cap: usize| s.len() <= cap + 32 && s.contains("…[truncated");
        assert!(cut(&p.files[0].path, bounds::PATH), "{}", p.files[0].path);
        let c = &p.commands[0];
        assert!(cut(&c.program, bounds::PATH));
        assert_eq!(c.args.len(), bounds::ARGS);
        assert_eq!(c.args_dropped, 5);
        assert!(cut(&c.args[0], bounds::ARG));
        assert_eq!(c.args[1], "line\\nforged", "no line can be forged");
        assert!(cut(&p.environment[0].name, bounds::ENV_NAME));
        assert!(cut(&p.denials[0].reason, bounds::REASON));
    }
}
