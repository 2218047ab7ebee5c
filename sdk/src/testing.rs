//! A mock host for unit tests of plugins, without the agent.
//!
//! With the `testing` feature, on a native Unix target, the SDK's wrapper
//! modules ([`crate::fs`], [`crate::process`], [`crate::env`],
//! [`crate::host`], [`crate::packages`], [`crate::config`], [`crate::log`]
//! and [`crate::FindingBuilder::emit`]) call a thread-local mock instead of the
//! component's imports. [`MockHost`] sets it up for one run of a plugin:
//!
//! ```no_run
//! # use assessment_sdk::{Plugin, PluginInfo, RunError, RunSummary};
//! # struct SshdHardening;
//! # impl Plugin for SshdHardening {
//! #     fn describe() -> PluginInfo { unimplemented!() }
//! #     fn run() -> Result<RunSummary, RunError> { unimplemented!() }
//! # }
//! use assessment_sdk::Status;
//! use assessment_sdk::testing::MockHost;
//!
//! let run = MockHost::new()
//!     .root("fixtures/good")          // the assessed system: a directory tree
//!     .grant_read("/etc/ssh")         // what the operator grants
//!     .config("max_auth_tries", 3)    // the operator's configuration
//!     .run::<SshdHardening>();
//! run.assert_completed();
//! assert_eq!(run.status("sshd-permit-root-login"), Status::Pass);
//! assert_eq!(
//!     run.finding("sshd-max-auth-tries").evidence_value("configured"),
//!     Some("3")
//! );
//! ```
//!
//! Keep such tests out of the `wasm32-wasip2` build (the guest workspace's
//! `clippy --all-targets` compiles tests for it too):
//!
//! ```toml
//! [dev-dependencies]
//! assessment-sdk = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```
//! #[cfg(all(test, unix))]
//! mod tests {
//!     // use assessment_sdk::testing::MockHost; …
//! }
//! ```
//!
//! # What the mock enforces, like the host
//!
//! - **Files** are read under the root the test names, only inside
//!   [`MockHost::grant_read`] grants. A relative path, a `..` component or a
//!   path over 4096 bytes is [`AccessError::Invalid`]; a path outside every
//!   grant is [`AccessError::Denied`] (and recorded in
//!   [`MockRun::denials`]); a symlink that leaves its grant (absolute, or
//!   through `..`) is `Invalid`, and so is a grant that passes through a
//!   symlink; a missing path is [`AccessError::NotFound`]; a file above the
//!   file-size limit is [`AccessError::TooLarge`]; a directory or a device
//!   is not a file to read (`Invalid`). A read grant that does not exist
//!   under the root is `NotFound` for every call under it; one that passes
//!   through a symlink or a file fails the run before it starts
//!   ([`MockError::Grant`]), as the host refuses such a configuration.
//! - **Commands** must be absolute and granted; their output is what the
//!   test gave with [`MockHost::command`] (nothing is executed).
//! - **Environment variables**, **host facts** and **installed packages**
//!   are answered only when granted (the packages are the list the test
//!   gives, sorted by name, as the host returns them).
//! - **Configuration** is checked against the keys `describe` announced
//!   before `run` ([`MockError::Config`]), and `describe` itself is checked
//!   as the host checks it ([`MockError::Describe`]).
//! - **Findings** must name a check `describe` announced, respect the
//!   bounds of the WIT and be unique per (check, subject); a refused
//!   finding returns the same [`EmitError`] the host returns and is kept in
//!   [`MockRun::rejected`]. At most [`MockLimits::max_findings`] are
//!   accepted.
//!
//! What it does not do: run commands, enforce the memory and time limits,
//! or check which interfaces the component imports (`plugin-registry
//! audit` and an end-to-end run do).

mod fs;
pub(crate) mod imports;
mod session;
mod tree;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bindings::assessment::plugin::log::Level;
use crate::config::Value;
use crate::host::Facts;
use crate::packages::InstalledPackage;
use crate::process::CommandOutput;
use crate::{
    AccessError, EmitError, Finding, Plugin, PluginInfo, RunError, RunSummary, Status, SubjectKind,
};

pub use tree::FixtureTree;

/// Why the mock host would not run a plugin: what the host refuses before
/// `run` is called.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// `describe` returned something the host refuses (invalid name or
    /// version, duplicate check ids, too many references…).
    #[error("describe(): {0}")]
    Describe(String),
    /// The configuration sets a key `describe` did not announce, or a value
    /// of another kind.
    #[error("configuration: {0}")]
    Config(String),
    /// The assessment root cannot be used.
    #[error("assessment root {root}: {source}")]
    Root {
        /// The root as given to [`MockHost::root`].
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A grant is invalid, or a read grant does not resolve under the root
    /// (it passes through a symlink or a file).
    #[error("grant: {0}")]
    Grant(String),
    /// A mock run is already active on this thread.
    #[error("a MockHost run is already active on this thread")]
    Nested,
}

/// The host's limits that the mock enforces (the host's defaults unless
/// changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockLimits {
    /// Largest file `read-file` returns, and largest `read-range` window.
    pub max_file_bytes: u64,
    /// Most entries `list-dir` returns.
    pub max_dir_entries: usize,
    /// Most findings one run may emit.
    pub max_findings: u32,
    /// Most bytes of text all findings of one run may hold together.
    pub max_findings_bytes: u64,
    /// Largest canned command output per stream.
    pub command_output_bytes: u64,
}

impl Default for MockLimits {
    fn default() -> Self {
        MockLimits {
            max_file_bytes: 1 << 20,
            max_dir_entries: 10_000,
            max_findings: 1000,
            max_findings_bytes: 8 << 20,
            command_output_bytes: 1 << 20,
        }
    }
}

/// What a granted command answers, by arguments.
type CannedCommands = BTreeMap<String, Vec<(Vec<String>, Result<CommandOutput, AccessError>)>>;

/// Where host facts come from.
#[derive(Debug, Clone)]
enum FactsGrant {
    None,
    FromRoot,
    Given(Facts),
}

/// A configured mock host: the assessed tree, the grants, the canned
/// command outputs, the configuration and the limits. Build it with the
/// methods below, then [`MockHost::run`] a plugin (as often as needed).
#[derive(Debug, Clone)]
pub struct MockHost {
    root: Option<PathBuf>,
    read: Vec<String>,
    commands: CannedCommands,
    env: BTreeMap<String, Option<String>>,
    facts: FactsGrant,
    packages: Option<Result<Vec<InstalledPackage>, AccessError>>,
    config: BTreeMap<String, Value>,
    limits: MockLimits,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

impl MockHost {
    /// A host without a root, grants or configuration: every call into the
    /// system is denied.
    pub fn new() -> Self {
        MockHost {
            root: None,
            read: Vec::new(),
            commands: BTreeMap::new(),
            env: BTreeMap::new(),
            facts: FactsGrant::None,
            packages: None,
            config: BTreeMap::new(),
            limits: MockLimits::default(),
        }
    }

    /// Assess this directory tree: the plugin's `/etc/ssh` is
    /// `<dir>/etc/ssh`. A relative `dir` is relative to the current
    /// directory, which `cargo test` sets to the crate's directory (so
    /// `"fixtures/good"` works).
    pub fn root(mut self, dir: impl AsRef<Path>) -> Self {
        self.root = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Grant reading `path` (an absolute path of the assessed system) and
    /// everything below it, as the operator's `grants.read` does.
    pub fn grant_read(mut self, path: &str) -> Self {
        self.read.push(path.to_string());
        self
    }

    /// Grant running `program` (an absolute path). A call whose arguments
    /// have no canned output (see [`MockHost::command`]) returns
    /// [`AccessError::Io`] saying so.
    pub fn grant_command(mut self, program: &str) -> Self {
        self.commands.entry(program.to_string()).or_default();
        self
    }

    /// Grant `program` and answer `program args…` with `output`.
    pub fn command(mut self, program: &str, args: &[&str], output: CommandOutput) -> Self {
        self.canned(program, args, Ok(output));
        self
    }

    /// Grant `program` and answer `program args…` with exit code 0, this
    /// standard output and an empty standard error.
    pub fn command_stdout(self, program: &str, args: &[&str], stdout: &str) -> Self {
        self.command(
            program,
            args,
            CommandOutput {
                exit_code: Some(0),
                stdout: stdout.as_bytes().to_vec(),
                stderr: Vec::new(),
            },
        )
    }

    /// Grant `program` and answer `program args…` with an error (e.g.
    /// `AccessError::Io` for a command that timed out).
    pub fn command_error(mut self, program: &str, args: &[&str], error: AccessError) -> Self {
        self.canned(program, args, Err(error));
        self
    }

    fn canned(&mut self, program: &str, args: &[&str], answer: Result<CommandOutput, AccessError>) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let answers = self.commands.entry(program.to_string()).or_default();
        answers.retain(|(a, _)| *a != args);
        answers.push((args, answer));
    }

    /// Grant the environment variable `name` and give it `value`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_string(), Some(value.to_string()));
        self
    }

    /// Grant the environment variable `name`, unset.
    pub fn grant_env(mut self, name: &str) -> Self {
        self.env.insert(name.to_string(), None);
        self
    }

    /// Grant host facts, read from the root as the host reads them
    /// (`etc/hostname`, `etc/os-release`, `proc/sys/kernel/osrelease`).
    pub fn grant_host_facts(mut self) -> Self {
        self.facts = FactsGrant::FromRoot;
        self
    }

    /// Grant host facts with these values.
    pub fn host_facts(mut self, facts: Facts) -> Self {
        self.facts = FactsGrant::Given(facts);
        self
    }

    /// Grant the installed packages and list these (the host returns them
    /// sorted by name) to [`crate::packages::installed`]. See [`package`]
    /// for a short way to write one.
    pub fn installed_packages(
        mut self,
        packages: impl IntoIterator<Item = InstalledPackage>,
    ) -> Self {
        let mut packages: Vec<InstalledPackage> = packages.into_iter().collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        self.packages = Some(Ok(packages));
        self
    }

    /// Grant the installed packages and answer with an error (e.g.
    /// `AccessError::NotFound` for a root without a package database).
    pub fn installed_packages_error(mut self, error: AccessError) -> Self {
        self.packages = Some(Err(error));
        self
    }

    /// Set a configuration value: `.config("max_auth_tries", 3)`,
    /// `.config("skip", ["sshd-log-level"])`, `.config("path", "/etc/x")`.
    pub fn config(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.config.insert(key.to_string(), value.into());
        self
    }

    /// Replace the limits.
    pub fn limits(mut self, limits: MockLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Set the file-size limit (1 MiB by default).
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_file_bytes = bytes;
        self
    }

    /// Set the finding limit (1000 by default).
    pub fn max_findings(mut self, findings: u32) -> Self {
        self.limits.max_findings = findings;
        self
    }

    /// Describe, validate and run plugin `P` once, as the host does.
    ///
    /// # Panics
    ///
    /// When the host would refuse to run it (see [`MockHost::try_run`]),
    /// with the reason.
    pub fn run<P: Plugin>(&self) -> MockRun {
        self.try_run::<P>()
            .unwrap_or_else(|e| panic!("the mock host refuses to run the plugin: {e}"))
    }

    /// Describe, validate and run plugin `P` once: `describe` on an
    /// instance without grants, then the checks of its answer, of the
    /// configuration and of the grants, then `run`. A panic of the plugin
    /// is not caught (it fails the test, as a trap fails the job).
    pub fn try_run<P: Plugin>(&self) -> Result<MockRun, MockError> {
        let info = try_describe::<P>()?;
        session::validate_config(&info, &self.config).map_err(MockError::Config)?;
        let state = session::Session::for_run(self, &info)?;
        let guard = session::Active::enter(state)?;
        let result = P::run();
        let state = guard.finish();
        Ok(MockRun {
            info,
            result,
            findings: state.results.findings,
            rejected: state.results.rejected,
            logs: state.logs,
            denials: state.denials,
            limit_reached: state.results.limit_reached,
        })
    }
}

/// Call `describe` of plugin `P` the way the host does (on an instance
/// without grants or configuration) and check its answer.
///
/// # Panics
///
/// When the host would refuse the answer, with the reason.
pub fn describe<P: Plugin>() -> PluginInfo {
    try_describe::<P>().unwrap_or_else(|e| panic!("{e}"))
}

/// Call `describe` of plugin `P` on an instance without grants or
/// configuration and check its answer as the host does: a plugin name,
/// a semantic version, unique non-empty check ids of at most 128 bytes, at
/// most 16 references per check, at most 10 000 checks and 256 KiB.
pub fn try_describe<P: Plugin>() -> Result<PluginInfo, MockError> {
    let guard = session::Active::enter(session::Session::for_describe())?;
    let info = P::describe();
    drop(guard);
    session::validate_describe(&info).map_err(MockError::Describe)?;
    Ok(info)
}

/// A finding the host refused, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The finding as emitted.
    pub finding: Finding,
    /// What `emit` returned.
    pub error: EmitError,
}

/// A message the plugin logged.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
}

/// The outcome of one mock run.
#[derive(Debug, Clone)]
pub struct MockRun {
    /// What `describe` returned.
    pub info: PluginInfo,
    /// What `run` returned.
    pub result: Result<RunSummary, RunError>,
    /// The accepted findings, in the order they were emitted.
    pub findings: Vec<Finding>,
    /// The findings the host refused.
    pub rejected: Vec<Rejected>,
    /// What the plugin logged.
    pub logs: Vec<LogLine>,
    /// The denied calls, as `call: reason` (e.g. `read-file: /etc/shadow is
    /// outside the plugin's read grants`).
    pub denials: Vec<String>,
    /// The plugin emitted more findings (or bytes of findings) than the
    /// limits allow: the host reports such a run as failed.
    pub limit_reached: bool,
}

impl MockRun {
    /// Whether the host would report the run as completed: `run` returned
    /// `Ok` and no finding limit was reached.
    pub fn completed(&self) -> bool {
        self.result.is_ok() && !self.limit_reached
    }

    /// Panic unless the run completed without refused findings; the run's
    /// summary otherwise.
    pub fn assert_completed(&self) -> &RunSummary {
        if let Some(r) = self.rejected.first() {
            panic!(
                "the host refused {} finding(s); the first, of {:?}: {}",
                self.rejected.len(),
                r.finding.check_id,
                r.error.explain()
            );
        }
        match &self.result {
            Ok(_) if self.limit_reached => panic!("the run reached the finding limit"),
            Ok(summary) => summary,
            Err(RunError::InvalidConfig(m)) => panic!("the run failed: invalid configuration: {m}"),
            Err(RunError::Failed(m)) => panic!("the run failed: {m}"),
        }
    }

    /// Every finding of check `check_id`.
    pub fn findings_of(&self, check_id: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.check_id == check_id)
            .collect()
    }

    /// The only finding of check `check_id`.
    ///
    /// # Panics
    ///
    /// When the check has no finding or several (then use
    /// [`MockRun::finding_for`]).
    pub fn finding(&self, check_id: &str) -> &Finding {
        match self.findings_of(check_id).as_slice() {
            [one] => one,
            [] => panic!(
                "no finding of check {check_id:?}; the run emitted: {}",
                self.summary_line()
            ),
            several => panic!(
                "check {check_id:?} has {} findings (subjects {:?}): use finding_for",
                several.len(),
                several
                    .iter()
                    .map(|f| f.subject.as_ref().map(|s| s.id.as_str()))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// The finding of check `check_id` about the subject `subject_id`, if
    /// any.
    pub fn find(&self, check_id: &str, subject_id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| {
            f.check_id == check_id && f.subject.as_ref().is_some_and(|s| s.id == subject_id)
        })
    }

    /// The finding of check `check_id` about the subject `subject_id`.
    ///
    /// # Panics
    ///
    /// When there is none.
    pub fn finding_for(&self, check_id: &str, subject_id: &str) -> &Finding {
        self.find(check_id, subject_id).unwrap_or_else(|| {
            panic!(
                "no finding of check {check_id:?} about {subject_id:?}; the run emitted: {}",
                self.summary_line()
            )
        })
    }

    /// The status of the only finding of check `check_id` (see
    /// [`MockRun::finding`]).
    pub fn status(&self, check_id: &str) -> Status {
        self.finding(check_id).status
    }

    /// The ids of the checks with at least one finding of `status`, in
    /// emission order, without repeats.
    pub fn checks_with(&self, status: Status) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for f in self.findings.iter().filter(|f| f.status == status) {
            if !ids.contains(&f.check_id.as_str()) {
                ids.push(&f.check_id);
            }
        }
        ids
    }

    /// Whether every finding has `status` (and there is at least one).
    pub fn all(&self, status: Status) -> bool {
        !self.findings.is_empty() && self.findings.iter().all(|f| f.status == status)
    }

    /// The subject of a finding as `kind:id` (`-` for none), for messages.
    pub fn subject_label(finding: &Finding) -> String {
        finding.subject.as_ref().map_or("-".to_string(), |s| {
            format!("{}:{}", subject_kind_name(s.kind), s.id)
        })
    }

    /// One line per finding: `check subject status`, for assertion messages.
    pub fn summary_line(&self) -> String {
        if self.findings.is_empty() {
            return "no findings".to_string();
        }
        self.findings
            .iter()
            .map(|f| {
                format!(
                    "{} {} {}",
                    f.check_id,
                    Self::subject_label(f),
                    status_name(f.status)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A dpkg package for [`MockHost::installed_packages`]: `package("telnet",
/// "0.17-44")` (architecture `amd64`).
pub fn package(name: &str, version: &str) -> InstalledPackage {
    InstalledPackage {
        name: name.to_string(),
        version: version.to_string(),
        architecture: "amd64".to_string(),
        manager: "dpkg".to_string(),
    }
}

/// The WIT name of a status (`not-applicable`).
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::Error => "error",
        Status::NotApplicable => "not-applicable",
        Status::Skipped => "skipped",
    }
}

/// The WIT name of a subject kind (`kernel-parameter`).
pub fn subject_kind_name(kind: SubjectKind) -> &'static str {
    match kind {
        SubjectKind::File => "file",
        SubjectKind::Directory => "directory",
        SubjectKind::User => "user",
        SubjectKind::Group => "group",
        SubjectKind::Package => "package",
        SubjectKind::Service => "service",
        SubjectKind::KernelParameter => "kernel-parameter",
        SubjectKind::ConfigSetting => "config-setting",
        SubjectKind::Other => "other",
    }
}
