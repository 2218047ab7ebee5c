//! Provenance: what the host served one plugin in one job — the files it
//! read or stat'ed, the directories it listed, the commands it ran, the
//! environment variable names it read, its package queries, and the calls
//! refused by policy. It is what the plugin's verdicts were based on, as the
//! host saw it: not what the plugin concluded from it.
//!
//! The runtime carries it in the run report and, as an OSCAL back-matter
//! resource, in every evidence record of the job; the control plane reads it
//! back. It is bounded (see [`bounds`]): past a bound an entry is dropped
//! and counted in [`Provenance::dropped`], and a field past its length is
//! cut with a visible `…[truncated N bytes]` marker.
//!
//! On reading, every field may be absent, as in the evidence it travels in.

use serde::{Deserialize, Serialize};

/// The schema identifier of the provenance document; bumped on any
/// incompatible change.
pub const PROVENANCE_SCHEMA: &str = "assessment-runtime/provenance@1";
/// The media type of the provenance document in an evidence back-matter
/// resource.
pub const PROVENANCE_MEDIA_TYPE: &str = "application/json";

/// The bounds of one job's provenance, sized so that an evidence record
/// with the largest finding and the fullest provenance still fits the
/// control plane's default record limit.
pub mod bounds {
    /// Entries of all kinds together, denials included.
    pub const MAX_ENTRIES: usize = 256;
    /// Bytes of the entries' compact JSON together (about 87 KiB once
    /// base64-encoded in an evidence record).
    pub const MAX_JSON_BYTES: usize = 64 << 10;
    /// Bytes of a path (a file, a directory, a program, a package
    /// database).
    pub const PATH: usize = 1024;
    /// Arguments of one command recorded; the rest are counted.
    pub const ARGS: usize = 32;
    /// Bytes of one argument.
    pub const ARG: usize = 256;
    /// Bytes of an environment variable's name.
    pub const ENV_NAME: usize = 256;
    /// Bytes of a denial's reason.
    pub const REASON: usize = 512;
}

/// One job's provenance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// [`PROVENANCE_SCHEMA`].
    pub schema: String,
    /// Files read (`read-file`, `read-range`) or stat'ed (`stat`), in call
    /// order.
    pub files: Vec<FileAccess>,
    /// Directories listed (`list-dir`).
    pub directories: Vec<DirectoryListing>,
    /// Commands run (`run-command`).
    pub commands: Vec<CommandRun>,
    /// Environment variables read (`env-var`): names, never values.
    pub environment: Vec<EnvironmentRead>,
    /// Package queries (`installed`).
    pub packages: Vec<PackageQuery>,
    /// Calls refused by policy.
    pub denials: Vec<DeniedCall>,
    /// Entries not recorded past the bounds, by kind.
    pub dropped: Dropped,
}

impl Provenance {
    /// An empty provenance of the current schema.
    pub fn new() -> Self {
        Provenance {
            schema: PROVENANCE_SCHEMA.to_string(),
            ..Provenance::default()
        }
    }

    /// Entries recorded, of all kinds.
    pub fn entries(&self) -> usize {
        self.files.len()
            + self.directories.len()
            + self.commands.len()
            + self.environment.len()
            + self.packages.len()
            + self.denials.len()
    }

    /// Whether nothing was recorded nor dropped.
    pub fn is_empty(&self) -> bool {
        self.entries() == 0 && self.dropped.total() == 0
    }
}

/// A file read or stat'ed. `size` and `mtime` are the file's when it was
/// opened; `bytes` and `sha256` describe what the plugin was given (for a
/// `read-range`, the window from `offset`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileAccess {
    /// `read-file`, `read-range` or `stat`.
    pub call: String,
    /// The path asked for, normalised.
    pub path: String,
    /// The file's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The file's modification time (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    /// Where a `read-range` window started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Bytes returned to the plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// SHA-256 (`sha256:` and hex) of the bytes returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The error the plugin got (`not-found`, `too-large`, `invalid`,
    /// `io`), when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A directory listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectoryListing {
    /// The path asked for, normalised.
    pub path: String,
    /// Entries returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// SHA-256 of the names returned, each followed by a newline, in the
    /// order returned (sorted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The error the plugin got, when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A command run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandRun {
    /// The program, as allow-listed.
    pub program: String,
    /// Its arguments (the first [`bounds::ARGS`]).
    pub args: Vec<String>,
    /// Arguments not recorded past [`bounds::ARGS`].
    #[serde(skip_serializing_if = "is_zero")]
    pub args_dropped: u64,
    /// The exit code; absent when it was killed by a signal, or did not
    /// run or finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// SHA-256 of the standard output returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_sha256: Option<String>,
    /// SHA-256 of the standard error returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_sha256: Option<String>,
    /// The error the plugin got (it did not start, ran past its timeout,
    /// wrote too much), when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An environment variable read: its name and whether it was set, never
/// its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvironmentRead {
    /// The variable's name.
    pub name: String,
    /// Whether it was set.
    pub set: bool,
}

/// A query of the installed packages: the database read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PackageQuery {
    /// `installed`.
    pub call: String,
    /// The package database read (`/var/lib/dpkg/status`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The database's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The database's modification time (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    /// SHA-256 of the database's bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Packages returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<u64>,
    /// The error the plugin got, when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A call refused by policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeniedCall {
    /// The host function (`read-file`, `run-command`, …).
    pub call: String,
    /// Why, naming what was asked for.
    pub reason: String,
}

/// Entries not recorded past the bounds, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dropped {
    /// File accesses.
    pub files: u64,
    /// Directory listings.
    pub directories: u64,
    /// Commands.
    pub commands: u64,
    /// Environment reads.
    pub environment: u64,
    /// Package queries.
    pub packages: u64,
    /// Denials.
    pub denials: u64,
}

impl Dropped {
    /// Entries dropped, of all kinds.
    pub fn total(&self) -> u64 {
        self.files
            + self.directories
            + self.commands
            + self.environment
            + self.packages
            + self.denials
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provenance_round_trips_and_leaves_absent_options_out() {
        let mut p = Provenance::new();
        p.files.push(FileAccess {
            call: "read-file".into(),
            path: "/etc/ssh/sshd_config".into(),
            size: Some(19),
            mtime: Some("2026-11-25T10:00:00Z".into()),
            bytes: Some(19),
            sha256: Some("sha256:00".into()),
            ..FileAccess::default()
        });
        p.commands.push(CommandRun {
            program: "/usr/sbin/sshd".into(),
            args: vec!["-T".into()],
            exit_code: Some(0),
            duration_ms: 12,
            ..CommandRun::default()
        });
        p.environment.push(EnvironmentRead {
            name: "PATH".into(),
            set: true,
        });
        p.dropped.files = 3;
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["schema"], PROVENANCE_SCHEMA);
        assert!(json["files"][0].get("offset").is_none());
        assert!(json["files"][0].get("error").is_none());
        assert!(json["commands"][0].get("args_dropped").is_none());
        assert_eq!(json["dropped"]["files"], 3);
        assert_eq!(serde_json::from_value::<Provenance>(json).unwrap(), p);
        assert_eq!(p.entries(), 3);
        assert_eq!(p.dropped.total(), 3);
        assert!(!p.is_empty() && Provenance::new().is_empty());
    }

    #[test]
    fn fields_may_be_absent_but_not_of_another_type() {
        let read: Provenance =
            serde_json::from_value(json!({ "files": [{ "path": "/x" }] })).unwrap();
        assert_eq!(read.files[0].path, "/x");
        for bad in [
            json!({ "files": {} }),
            json!({ "commands": [{ "exit_code": "0" }] }),
            json!({ "environment": [{ "set": "yes" }] }),
        ] {
            assert!(
                serde_json::from_value::<Provenance>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
