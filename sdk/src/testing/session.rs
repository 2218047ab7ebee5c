//! The state of one mock run (or `describe` call), held in a thread-local
//! while the plugin's code runs, and the host's checks of `describe`, the
//! configuration and findings.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::fs::MockFs;
use super::{CannedCommands, FactsGrant, LogLine, MockError, MockHost, MockLimits, Rejected};
use crate::config::Value;
use crate::host::Facts;
use crate::process::CommandOutput;
use crate::{AccessError, EmitError, Finding, PluginInfo, SubjectKind, ValueKind};

thread_local! {
    static ACTIVE: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Bounds of one finding, as the WIT documents them.
mod bounds {
    pub const TITLE: usize = 256;
    pub const TEXT: usize = 4096;
    pub const EVIDENCE_ITEMS: usize = 64;
    pub const EVIDENCE_KEY: usize = 128;
    pub const EVIDENCE_VALUE: usize = 8192;
    pub const SUBJECT_ID: usize = 1024;
}

/// Bounds of a `describe` answer, as the host checks them.
const MAX_CHECKS: usize = 10_000;
const MAX_REFERENCES: usize = 16;
const MAX_DESCRIBE_BYTES: usize = 256 << 10;
const MAX_CHECK_ID: usize = 128;

/// The findings of one run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    known: BTreeSet<String>,
    emitted: BTreeSet<(String, Option<(SubjectKind, String)>)>,
    used_bytes: u64,
    pub(crate) findings: Vec<Finding>,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) limit_reached: bool,
}

/// Everything the mock host answers from during one call of the plugin.
#[derive(Debug)]
pub(crate) struct Session {
    fs: MockFs,
    commands: CannedCommands,
    env: BTreeMap<String, Option<String>>,
    facts: Option<Facts>,
    packages: Option<Result<Vec<crate::packages::InstalledPackage>, AccessError>>,
    config: BTreeMap<String, Value>,
    limits: MockLimits,
    pub(crate) results: Results,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) denials: Vec<String>,
}

impl Session {
    /// What `describe` runs with: no grants, no configuration.
    pub(crate) fn for_describe() -> Self {
        Session {
            fs: MockFs::none(),
            commands: BTreeMap::new(),
            env: BTreeMap::new(),
            facts: None,
            packages: None,
            config: BTreeMap::new(),
            limits: MockLimits::default(),
            results: Results::default(),
            logs: Vec::new(),
            denials: Vec::new(),
        }
    }

    /// What `run` runs with, after the grants were checked as the host
    /// checks an agent configuration.
    pub(crate) fn for_run(host: &MockHost, info: &PluginInfo) -> Result<Self, MockError> {
        for program in host.commands.keys() {
            if program.is_empty() || !program.starts_with('/') {
                return Err(MockError::Grant(format!(
                    "command {program:?} is not an absolute program path"
                )));
            }
        }
        for name in host.env.keys() {
            if !valid_env_name(name) {
                return Err(MockError::Grant(format!(
                    "{name:?} is not an environment variable name"
                )));
            }
        }
        let fs = MockFs::open(host.root.as_deref(), &host.read)?;
        let facts = match &host.facts {
            FactsGrant::None => None,
            FactsGrant::Given(facts) => Some(facts.clone()),
            FactsGrant::FromRoot => Some(fs.facts_from_root()?),
        };
        Ok(Session {
            fs,
            commands: host.commands.clone(),
            env: host.env.clone(),
            facts,
            packages: host.packages.clone(),
            config: host.config.clone(),
            limits: host.limits.clone(),
            results: Results {
                known: info.checks.iter().map(|c| c.id.clone()).collect(),
                ..Results::default()
            },
            logs: Vec::new(),
            denials: Vec::new(),
        })
    }

    fn deny(&mut self, call: &str, why: String) -> AccessError {
        self.denials.push(format!("{call}: {why}"));
        AccessError::Denied(why)
    }

    // filesystem

    pub(crate) fn read_file(&mut self, path: &str) -> Result<Vec<u8>, AccessError> {
        let max = self.limits.max_file_bytes;
        let resolved = self.resolve("read-file", path)?;
        self.fs.read_file(&resolved, max)
    }

    pub(crate) fn read_range(
        &mut self,
        path: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, AccessError> {
        let max = self.limits.max_file_bytes;
        let resolved = self.resolve("read-range", path)?;
        if length > max {
            return Err(AccessError::TooLarge(format!(
                "a window of {length} bytes of {} is larger than the {max}-byte limit; read it in smaller windows",
                resolved.request.display()
            )));
        }
        self.fs.read_range(&resolved, offset, length)
    }

    pub(crate) fn stat(&mut self, path: &str) -> Result<crate::fs::FileStat, AccessError> {
        let resolved = self.resolve("stat", path)?;
        self.fs.stat(&resolved)
    }

    pub(crate) fn list_dir(&mut self, path: &str) -> Result<Vec<crate::fs::DirEntry>, AccessError> {
        let max = self.limits.max_dir_entries;
        let resolved = self.resolve("list-dir", path)?;
        self.fs.list_dir(&resolved, max)
    }

    fn resolve(&mut self, call: &str, path: &str) -> Result<super::fs::Resolved, AccessError> {
        match self.fs.resolve(path) {
            Ok(resolved) => Ok(resolved),
            Err(super::fs::Refusal::Denied(why)) => Err(self.deny(call, why)),
            Err(super::fs::Refusal::Error(e)) => Err(e),
        }
    }

    // process

    pub(crate) fn run_command(
        &mut self,
        command: &str,
        args: &[String],
    ) -> Result<CommandOutput, AccessError> {
        if command.is_empty() {
            return Err(AccessError::Invalid("empty command".to_string()));
        }
        if !command.starts_with('/') {
            return Err(AccessError::Invalid(format!(
                "{command:?} is not an absolute program path"
            )));
        }
        let Some(answers) = self.commands.get(command) else {
            return Err(self.deny(
                "run-command",
                format!("command {command} is not in the plugin's command grants"),
            ));
        };
        let Some((_, answer)) = answers.iter().find(|(a, _)| a == args) else {
            return Err(AccessError::Io(format!(
                "cannot start {command}: the mock host has no output for arguments {args:?}; add `.command({command:?}, &[…], output)` to the MockHost"
            )));
        };
        let output = answer.clone()?;
        let max = self.limits.command_output_bytes;
        if output.stdout.len() as u64 > max || output.stderr.len() as u64 > max {
            return Err(AccessError::TooLarge(format!(
                "{command} wrote more than {max} bytes and was killed with its process group"
            )));
        }
        Ok(output)
    }

    // environment

    pub(crate) fn env_var(&mut self, name: &str) -> Result<Option<String>, AccessError> {
        if !valid_env_name(name) {
            return Err(AccessError::Invalid(format!(
                "{name:?} is not an environment variable name"
            )));
        }
        match self.env.get(name) {
            Some(value) => Ok(value.clone()),
            None => Err(self.deny(
                "env-var",
                format!("environment variable {name} is not in the plugin's env grants"),
            )),
        }
    }

    // host facts

    pub(crate) fn host_facts(&mut self) -> Result<Facts, AccessError> {
        match &self.facts {
            Some(facts) => Ok(facts.clone()),
            None => Err(self.deny(
                "host-facts.get",
                "host facts are not granted (grants.host_facts = false)".to_string(),
            )),
        }
    }

    // packages

    pub(crate) fn installed_packages(
        &mut self,
    ) -> Result<Vec<crate::packages::InstalledPackage>, AccessError> {
        match &self.packages {
            Some(answer) => answer.clone(),
            None => Err(self.deny(
                "packages.installed",
                "packages is not granted (grants.packages = false)".to_string(),
            )),
        }
    }

    // config

    pub(crate) fn config_get(&self, key: &str) -> Option<Value> {
        self.config.get(key).cloned()
    }

    pub(crate) fn config_keys(&self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }

    // log

    pub(crate) fn log(
        &mut self,
        level: crate::bindings::assessment::plugin::log::Level,
        message: &str,
    ) {
        self.logs.push(LogLine {
            level,
            message: message.to_string(),
        });
    }

    // results

    pub(crate) fn emit(&mut self, finding: &Finding) -> Result<(), EmitError> {
        let outcome = self.accept(finding);
        if let Err(error) = &outcome {
            self.results.rejected.push(Rejected {
                finding: finding.clone(),
                error: error.clone(),
            });
        }
        outcome
    }

    fn accept(&mut self, finding: &Finding) -> Result<(), EmitError> {
        let results = &mut self.results;
        if results.findings.len() >= self.limits.max_findings as usize {
            results.limit_reached = true;
            return Err(EmitError::LimitReached(self.limits.max_findings));
        }
        validate_finding(&results.known, finding).map_err(EmitError::Invalid)?;
        let pair = (
            finding.check_id.clone(),
            finding.subject.as_ref().map(|s| (s.kind, s.id.clone())),
        );
        if results.emitted.contains(&pair) {
            return Err(EmitError::Invalid(format!(
                "check {:?} was already reported for {}: one finding per check and subject per run",
                finding.check_id,
                finding
                    .subject
                    .as_ref()
                    .map_or("the system as a whole".to_string(), |s| format!(
                        "{} {:?}",
                        super::subject_kind_name(s.kind),
                        s.id
                    ))
            )));
        }
        let size = text_bytes(finding);
        if results.used_bytes.saturating_add(size) > self.limits.max_findings_bytes {
            results.limit_reached = true;
            return Err(EmitError::LimitReached(
                u32::try_from(results.findings.len()).unwrap_or(u32::MAX),
            ));
        }
        results.used_bytes += size;
        results.emitted.insert(pair);
        results.findings.push(finding.clone());
        Ok(())
    }
}

/// The session installed for the duration of a plugin call; dropping it
/// (also when the plugin panics) uninstalls it.
pub(crate) struct Active(());

impl Active {
    pub(crate) fn enter(session: Session) -> Result<Self, MockError> {
        ACTIVE.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_some() {
                return Err(MockError::Nested);
            }
            *slot = Some(session);
            Ok(Active(()))
        })
    }

    /// Uninstall the session and return it.
    pub(crate) fn finish(self) -> Session {
        let session = ACTIVE.with(|slot| slot.borrow_mut().take());
        std::mem::forget(self);
        // `enter` installed it and only `finish` or `drop` removes it.
        session.unwrap_or_else(|| unreachable!("the mock session disappeared during the run"))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        // Never panics: a failed borrow here would abort a panicking test.
        let _ = ACTIVE.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                slot.take();
            }
        });
    }
}

/// Run `f` on the active session: what every mocked import does.
///
/// # Panics
///
/// Outside a mock run: without the mock, a native build has no host.
pub(crate) fn with<R>(call: &str, f: impl FnOnce(&mut Session) -> R) -> R {
    ACTIVE.with(|slot| {
        let mut slot = slot.borrow_mut();
        match slot.as_mut() {
            Some(session) => f(session),
            None => panic!(
                "assessment-sdk: `{call}` was called outside a mock run; in a native test, call the plugin through `MockHost::run` (feature `testing`)"
            ),
        }
    })
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn too_long(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        Err(format!("{field} is {} bytes, more than {max}", value.len()))
    } else {
        Ok(())
    }
}

fn validate_finding(known: &BTreeSet<String>, f: &Finding) -> Result<(), String> {
    if !known.contains(&f.check_id) {
        return Err(format!(
            "check id {:?} was not announced by describe()",
            f.check_id
        ));
    }
    if let Some(s) = &f.subject {
        if s.id.is_empty() {
            return Err("a subject's id is empty".to_string());
        }
        too_long("a subject's id", &s.id, bounds::SUBJECT_ID)?;
        if s.id.chars().any(char::is_control) {
            return Err(format!(
                "the subject id {:?} contains control characters",
                s.id
            ));
        }
    }
    too_long("title", &f.title, bounds::TITLE)?;
    too_long("message", &f.message, bounds::TEXT)?;
    if let Some(r) = &f.remediation {
        too_long("remediation", r, bounds::TEXT)?;
    }
    if f.evidence.len() > bounds::EVIDENCE_ITEMS {
        return Err(format!(
            "{} evidence items, more than {}",
            f.evidence.len(),
            bounds::EVIDENCE_ITEMS
        ));
    }
    for e in &f.evidence {
        too_long("an evidence key", &e.key, bounds::EVIDENCE_KEY)?;
        too_long(
            &format!("evidence {:?}", e.key),
            &e.value,
            bounds::EVIDENCE_VALUE,
        )?;
    }
    Ok(())
}

/// The bytes of text a finding holds (what the per-run budget counts).
fn text_bytes(f: &Finding) -> u64 {
    let evidence: usize = f.evidence.iter().map(|e| e.key.len() + e.value.len()).sum();
    (f.check_id.len()
        + f.subject.as_ref().map_or(0, |s| s.id.len())
        + f.title.len()
        + f.message.len()
        + f.remediation.as_ref().map_or(0, String::len)
        + evidence) as u64
}

/// The host's checks of a `describe` answer.
pub(crate) fn validate_describe(info: &PluginInfo) -> Result<(), String> {
    let bytes = describe_size(info);
    if bytes > MAX_DESCRIBE_BYTES || info.checks.len() > MAX_CHECKS {
        return Err(format!(
            "returned {bytes} bytes and {} checks, more than the {} KiB and {MAX_CHECKS} checks a plugin may announce",
            info.checks.len(),
            MAX_DESCRIBE_BYTES >> 10
        ));
    }
    if !valid_plugin_name(&info.name) {
        return Err(format!(
            "names the plugin {:?}, not a plugin name (lowercase letters, digits and `-`, starting with a letter, at most 64 bytes)",
            info.name
        ));
    }
    if !is_semver(&info.version) {
        return Err(format!(
            "version {:?} is not a semantic version",
            info.version
        ));
    }
    let mut ids = BTreeSet::new();
    for check in &info.checks {
        if check.id.is_empty() || check.id.len() > MAX_CHECK_ID || !ids.insert(check.id.as_str()) {
            return Err(format!(
                "check id {:?} is empty, too long or announced twice",
                check.id
            ));
        }
        if check.references.len() > MAX_REFERENCES {
            return Err(format!(
                "check {:?} announces {} references, more than {MAX_REFERENCES}",
                check.id,
                check.references.len()
            ));
        }
    }
    Ok(())
}

fn describe_size(info: &PluginInfo) -> usize {
    let checks: usize = info
        .checks
        .iter()
        .map(|c| {
            let references: usize = c
                .references
                .iter()
                .map(|r| r.benchmark.len() + r.id.len() + r.url.as_ref().map_or(0, String::len) + 8)
                .sum();
            c.id.len() + c.title.len() + references + 8
        })
        .sum();
    let options: usize = info
        .config
        .iter()
        .map(|o| o.name.len() + o.description.len() + 8)
        .sum();
    info.name.len() + info.version.len() + info.description.len() + checks + options
}

/// A plugin name: lowercase letters, digits and `-`, starting with a
/// letter, at most 64 bytes.
pub(crate) fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `MAJOR.MINOR.PATCH[-PRE][+BUILD]` as semver.org defines it.
pub(crate) fn is_semver(version: &str) -> bool {
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let numeric = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let identifiers = |s: &str, strict_numbers: bool| {
        s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!strict_numbers || !id.bytes().all(|b| b.is_ascii_digit()) || numeric(id))
        })
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| identifiers(p, true))
        && build.is_none_or(|b| identifiers(b, false))
}

/// The host's check of the configuration against the announced options.
pub(crate) fn validate_config(
    info: &PluginInfo,
    values: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let plugin = &info.name;
    for (key, value) in values {
        let Some(option) = info.config.iter().find(|o| &o.name == key) else {
            let known: Vec<&str> = info.config.iter().map(|o| o.name.as_str()).collect();
            return Err(format!(
                "plugin `{plugin}` has no configuration key `{key}`; remove it from the plugin's `config` (accepted keys: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let fits = matches!(
            (option.kind, value),
            (ValueKind::Text, Value::Text(_))
                | (ValueKind::Integer, Value::Integer(_))
                | (ValueKind::Float, Value::Float(_) | Value::Integer(_))
                | (ValueKind::Boolean, Value::Boolean(_))
                | (ValueKind::TextList, Value::TextList(_))
        );
        if !fits {
            return Err(format!(
                "plugin `{plugin}` configuration key `{key}` must be {} ({})",
                match option.kind {
                    ValueKind::Text => "a string",
                    ValueKind::Integer => "an integer",
                    ValueKind::Float => "a number",
                    ValueKind::Boolean => "a boolean",
                    ValueKind::TextList => "a list of strings",
                },
                option.description
            ));
        }
    }
    Ok(())
}
