//! The policy of one plugin: what it may reach ([`GrantSet`]) and the bounds
//! of one run ([`Limits`]). Both are validated when the configuration is
//! loaded, before any instance exists; every capability asks the grant set
//! before it touches anything.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use assessment_registry::manifest::Capabilities;
use capability_model::{AbiVersion, Capability};

use crate::guest_text::bounded;

/// Bytes of a refused path or name quoted back in a refusal.
const QUOTED_PATH: usize = 256;

/// A request the policy refuses, before any resource is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is well formed but not granted.
    #[error("{0}")]
    Denied(String),
    /// The request is malformed (relative path, `..`, bad name).
    #[error("{0}")]
    Invalid(String),
    /// The request is granted but what it names does not exist (a granted
    /// path missing from the assessed system).
    #[error("{0}")]
    NotFound(String),
}

/// What the operator granted to one plugin, validated and normalised from
/// its [`Capabilities`]. Nothing is granted by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSet {
    /// `host-facts.get`.
    pub host_facts: bool,
    /// `packages.list`.
    pub packages: bool,
    /// Paths of the assessed system (absolute, normalised) that may be read,
    /// with everything below them.
    pub read: Vec<PathBuf>,
    /// Absolute program paths that may be run.
    pub commands: BTreeSet<String>,
    /// Environment variables of the host process that may be read.
    pub env: BTreeSet<String>,
}

impl GrantSet {
    /// Validate and normalise grants as written (in the agent
    /// configuration or `[policy]`). `field` names the configuration field
    /// in errors (e.g. `plugin[0].grants`).
    pub fn from_capabilities(field: &str, written: &Capabilities) -> Result<Self, String> {
        let list =
            |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
        let mut grants = Self::from_config(
            field,
            written.host_facts,
            &list(&written.read),
            &list(&written.commands),
            &list(&written.env),
        )?;
        for capability in Capability::ALL.into_iter().filter(|c| c.is_switch()) {
            if let Some(on) = grants.switch_mut(capability) {
                *on = written.switch(capability);
            }
        }
        Ok(grants)
    }

    /// The value of a capability granted whole.
    pub fn switch(&self, capability: Capability) -> bool {
        match capability {
            Capability::HostFacts => self.host_facts,
            Capability::Packages => self.packages,
            _ => false,
        }
    }

    fn switch_mut(&mut self, capability: Capability) -> Option<&mut bool> {
        match capability {
            Capability::HostFacts => Some(&mut self.host_facts),
            Capability::Packages => Some(&mut self.packages),
            _ => None,
        }
    }

    /// Validate and normalise list grants and host facts. `field` names the
    /// configuration field in errors (e.g. `plugin[0].grants`).
    pub fn from_config(
        field: &str,
        host_facts: bool,
        read: &[String],
        commands: &[String],
        env: &[String],
    ) -> Result<Self, String> {
        let mut grants = GrantSet {
            host_facts,
            ..GrantSet::default()
        };
        for (i, path) in read.iter().enumerate() {
            let normalised = normalise_absolute(path).map_err(|e| {
                format!(
                    "{field}.read[{i}] = {path:?}: {e} (grant absolute paths such as \"/etc/ssh\")"
                )
            })?;
            grants.read.push(normalised);
        }
        for (i, command) in commands.iter().enumerate() {
            let normalised = normalise_absolute(command).map_err(|e| {
                format!("{field}.commands[{i}] = {command:?}: {e} (grant absolute program paths such as \"/usr/sbin/sysctl\")")
            })?;
            if normalised == Path::new("/") {
                return Err(format!("{field}.commands[{i}]: \"/\" is not a program"));
            }
            grants
                .commands
                .insert(normalised.to_string_lossy().into_owned());
        }
        for (i, name) in env.iter().enumerate() {
            if !valid_env_name(name) {
                return Err(format!(
                    "{field}.env[{i}] = {name:?}: an environment variable name is letters, digits and `_`, not starting with a digit"
                ));
            }
            grants.env.insert(name.clone());
        }
        grants.read.sort();
        grants.read.dedup();
        Ok(grants)
    }

    /// The grants that are also declared in a plugin's signed manifest: a
    /// read grant narrows to the declared paths below it (or stays when it
    /// lies below a declared path); commands, variables and host facts must
    /// be both granted and declared. Returns what was granted but dropped.
    pub fn restrict_to(&self, declared: &Capabilities) -> (GrantSet, Vec<String>) {
        let mut effective = GrantSet::default();
        let mut dropped = Vec::new();
        let declared_read: Vec<PathBuf> = declared
            .read
            .iter()
            .filter_map(|d| normalise_absolute(d).ok())
            .collect();
        for grant in &self.read {
            let mut kept = false;
            for d in &declared_read {
                if d.starts_with(grant) {
                    effective.read.push(d.clone());
                    kept = true;
                } else if grant.starts_with(d) {
                    effective.read.push(grant.clone());
                    kept = true;
                }
            }
            if !kept {
                dropped.push(format!("read {}", grant.display()));
            }
        }
        effective.read.sort();
        effective.read.dedup();
        for c in &self.commands {
            if declared.commands.contains(c) {
                effective.commands.insert(c.clone());
            } else {
                dropped.push(format!("command {c}"));
            }
        }
        for e in &self.env {
            if declared.env.contains(e) {
                effective.env.insert(e.clone());
            } else {
                dropped.push(format!("env {e}"));
            }
        }
        for capability in Capability::ALL.into_iter().filter(|c| c.is_switch()) {
            let granted = self.switch(capability);
            if let Some(on) = effective.switch_mut(capability) {
                *on = granted && declared.switch(capability);
            }
            if granted && !declared.switch(capability) {
                dropped.push(capability.grant_key().to_string());
            }
        }
        (effective, dropped)
    }

    /// The grants of the capabilities a plugin can use: those whose WIT
    /// interface it imports. Returns what was granted but dropped (a
    /// capability the plugin cannot reach is never in force).
    pub fn usable_by(&self, abi: AbiVersion, imports: &[String]) -> (GrantSet, Vec<String>) {
        let mut usable = self.clone();
        let mut dropped = Vec::new();
        for capability in Capability::ALL {
            if capability.usable_with(abi, imports) {
                continue;
            }
            let needs = match capability.interface(abi) {
                Some(interface) => format!("`{}`", abi.interface(interface)),
                None => capability.interface_name(abi),
            };
            let had = match capability {
                Capability::Filesystem => !std::mem::take(&mut usable.read).is_empty(),
                Capability::Process => !std::mem::take(&mut usable.commands).is_empty(),
                Capability::Environment => !std::mem::take(&mut usable.env).is_empty(),
                Capability::HostFacts | Capability::Packages => {
                    usable.switch_mut(capability).is_some_and(std::mem::take)
                }
            };
            if had {
                dropped.push(format!("{capability} (needs {needs})"));
            }
        }
        (usable, dropped)
    }

    /// The read grant that covers `path` (the longest granted prefix), after
    /// normalising the request. `..` is refused outright: a plugin has no
    /// reason to climb, and refusing it keeps resolution purely lexical.
    pub fn read_grant_for(&self, path: &str) -> Result<(&Path, PathBuf), Refusal> {
        let request = normalise_absolute(path)
            .map_err(|e| Refusal::Invalid(format!("{:?}: {e}", bounded(path, QUOTED_PATH))))?;
        self.read
            .iter()
            .filter(|grant| request.starts_with(grant))
            .max_by_key(|grant| grant.components().count())
            .map(|grant| (grant.as_path(), request.clone()))
            .ok_or_else(|| {
                Refusal::Denied(format!(
                    "{} is outside the plugin's read grants",
                    request.display()
                ))
            })
    }

    /// Whether `command` may be run.
    pub fn check_command(&self, command: &str) -> Result<(), Refusal> {
        if command.is_empty() {
            return Err(Refusal::Invalid("empty command".to_string()));
        }
        if !command.starts_with('/') {
            return Err(Refusal::Invalid(format!(
                "{:?} is not an absolute program path",
                bounded(command, QUOTED_PATH)
            )));
        }
        if self.commands.contains(command) {
            Ok(())
        } else {
            Err(Refusal::Denied(format!(
                "command {} is not in the plugin's command grants",
                bounded(command, QUOTED_PATH)
            )))
        }
    }

    /// Whether environment variable `name` may be read.
    pub fn check_env(&self, name: &str) -> Result<(), Refusal> {
        if !valid_env_name(name) {
            return Err(Refusal::Invalid(format!(
                "{:?} is not an environment variable name",
                bounded(name, QUOTED_PATH)
            )));
        }
        if self.env.contains(name) {
            Ok(())
        } else {
            Err(Refusal::Denied(format!(
                "environment variable {} is not in the plugin's env grants",
                bounded(name, QUOTED_PATH)
            )))
        }
    }

    /// Whether a capability granted whole (host facts, packages) is
    /// granted.
    pub fn check_switch(&self, capability: Capability) -> Result<(), Refusal> {
        if self.switch(capability) {
            Ok(())
        } else {
            Err(Refusal::Denied(format!(
                "{capability} is not granted (grants.{capability} = false)"
            )))
        }
    }
}

/// The `[policy]` table of the runtime's own file: what configuration from
/// the control plane may do at most. A compromised control plane must not
/// turn the agent, which runs as root, into a remote shell: remote
/// configuration can narrow this ceiling, never widen it, and a document
/// that exceeds it is refused whole. Nothing is allowed by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPolicy {
    /// Remote configuration may add trusted publisher keys.
    pub remote_trusted_keys: bool,
    /// Remote configuration may configure unsigned `path` plugins.
    pub remote_path_plugins: bool,
    /// The most remote configuration may grant one plugin: read grants
    /// must lie below one of these paths; commands, variables and host
    /// facts must be in it.
    pub remote_grants: GrantSet,
    /// Registries may be reached over plain HTTP (development only).
    pub dev_plain_http_registries: bool,
}

impl LocalPolicy {
    /// What `grants` (of configuration field `field`) asks beyond the
    /// ceiling, one entry per excess.
    pub fn excess(&self, field: &str, grants: &GrantSet) -> Vec<String> {
        let ceiling = &self.remote_grants;
        let mut out = Vec::new();
        for capability in Capability::ALL.into_iter().filter(|c| c.is_switch()) {
            if grants.switch(capability) && !ceiling.switch(capability) {
                out.push(format!(
                    "{field}.{capability}: not allowed by policy.{capability}"
                ));
            }
        }
        for path in &grants.read {
            if !ceiling.read.iter().any(|allowed| path.starts_with(allowed)) {
                out.push(format!(
                    "{field}.read: {} is not below any path of policy.read",
                    path.display()
                ));
            }
        }
        for command in grants.commands.difference(&ceiling.commands) {
            out.push(format!(
                "{field}.commands: {command} is not in policy.commands"
            ));
        }
        for name in grants.env.difference(&ceiling.env) {
            out.push(format!("{field}.env: {name} is not in policy.env"));
        }
        out
    }
}

/// Longest path accepted, the kernel's `PATH_MAX`: a longer one cannot
/// name a file, and refusing it first keeps megabyte paths out of every
/// message and log line.
pub const MAX_PATH_BYTES: usize = 4096;

/// An absolute path without `.` components, repeated slashes or a trailing
/// slash; `..` is an error.
pub fn normalise_absolute(path: &str) -> Result<PathBuf, &'static str> {
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

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The bounds of one run of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, all memories of the instance together.
    pub memory_bytes: u64,
    /// Wall-clock time of one run (instantiation + `run`).
    pub timeout: Duration,
    /// Findings one run may emit.
    pub max_findings: u32,
    /// Bytes of text (titles, messages, evidence) all findings of one run
    /// may hold together.
    pub max_findings_bytes: u64,
    /// Bytes of log messages (and stdout/stderr) one run may write.
    pub log_bytes: u64,
    /// Largest file `read-file` returns.
    pub max_file_bytes: u64,
    /// Wall-clock time of one command.
    pub command_timeout: Duration,
    /// Bytes of stdout (and of stderr) one command may produce.
    pub command_output_bytes: u64,
    /// Entries `list-dir` returns at most.
    pub max_dir_entries: usize,
    /// Largest component accepted (refused before it is parsed).
    pub component_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            max_findings: 1000,
            max_findings_bytes: 8 << 20,
            log_bytes: 64 << 10,
            max_file_bytes: 1 << 20,
            command_timeout: Duration::from_secs(10),
            command_output_bytes: 1 << 20,
            max_dir_entries: 10_000,
            component_bytes: assessment_registry::audit::DEFAULT_MAX_BYTES,
        }
    }
}

/// Upper bounds an operator may configure, so that a typo cannot disable a
/// limit.
pub mod ceilings {
    use std::time::Duration;

    /// Largest `component_mib`.
    pub const COMPONENT_MIB: u64 = 512;
    /// Largest `memory_mib`.
    pub const MEMORY_MIB: u64 = 4096;
    /// Longest `timeout`.
    pub const TIMEOUT: Duration = Duration::from_secs(3600);
    /// Largest `max_findings`.
    pub const MAX_FINDINGS: u32 = 100_000;
    /// Largest `max_findings_kib`.
    pub const MAX_FINDINGS_KIB: u64 = 256 * 1024;
    /// Largest `log_kib`.
    pub const LOG_KIB: u64 = 16 * 1024;
    /// Largest `max_file_kib`.
    pub const MAX_FILE_KIB: u64 = 64 * 1024;
    /// Longest `command_timeout`.
    pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
    /// Largest `command_output_kib`.
    pub const COMMAND_OUTPUT_KIB: u64 = 64 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(read: &[&str]) -> GrantSet {
        let read: Vec<String> = read.iter().map(|s| s.to_string()).collect();
        GrantSet::from_config(
            "plugin[0].grants",
            false,
            &read,
            &["/usr/bin/uname".to_string()],
            &["LANG".to_string()],
        )
        .unwrap()
    }

    #[test]
    fn the_local_policy_names_every_grant_beyond_it() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let policy = LocalPolicy {
            remote_grants: GrantSet::from_config(
                "policy",
                false,
                &s(&["/etc", "/proc/sys"]),
                &s(&["/usr/sbin/sysctl"]),
                &s(&["LANG"]),
            )
            .unwrap(),
            ..LocalPolicy::default()
        };
        let within = GrantSet::from_config(
            "g",
            false,
            &s(&["/etc/ssh", "/proc/sys"]),
            &s(&["/usr/sbin/sysctl"]),
            &s(&["LANG"]),
        )
        .unwrap();
        assert!(policy.excess("g", &within).is_empty());
        let beyond = GrantSet::from_config(
            "g",
            true,
            &s(&["/", "/etcetera", "/etc"]),
            &s(&["/bin/sh"]),
            &s(&["AWS_SECRET_ACCESS_KEY"]),
        )
        .unwrap();
        let excess = policy.excess("g", &beyond).join("\n");
        for expected in [
            "g.host_facts",
            "/ is not below",
            "/etcetera is not below",
            "/bin/sh is not in policy.commands",
            "AWS_SECRET_ACCESS_KEY is not in policy.env",
        ] {
            assert!(excess.contains(expected), "{expected}: {excess}");
        }
        assert!(!excess.contains("/etc is"), "{excess}");
        assert_eq!(LocalPolicy::default().excess("g", &within).len(), 4);
    }

    #[test]
    fn read_requests_are_resolved_against_the_longest_grant() {
        let g = grants(&["/etc", "/etc/ssh/", "/proc/sys"]);
        // (request, Ok((grant, normalised path)) or Err(refusal kind))
        type Case<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);
        let cases: &[Case] = &[
            ("/etc/passwd", Ok(("/etc", "/etc/passwd"))),
            (
                "/etc/ssh/sshd_config",
                Ok(("/etc/ssh", "/etc/ssh/sshd_config")),
            ),
            (
                "/etc//ssh/./sshd_config",
                Ok(("/etc/ssh", "/etc/ssh/sshd_config")),
            ),
            ("/etc", Ok(("/etc", "/etc"))),
            (
                "/proc/sys/kernel/osrelease",
                Ok(("/proc/sys", "/proc/sys/kernel/osrelease")),
            ),
            ("/etcetera/x", Err("denied")),
            ("/proc/self/environ", Err("denied")),
            ("/", Err("denied")),
            ("/etc/../root/.ssh", Err("invalid")),
            ("etc/passwd", Err("invalid")),
            ("", Err("invalid")),
        ];
        for (request, expected) in cases {
            let got = g.read_grant_for(request);
            match (expected, got) {
                (Ok((grant, path)), Ok((g, p))) => {
                    assert_eq!(
                        (g, p.as_path()),
                        (Path::new(grant), Path::new(path)),
                        "{request}"
                    )
                }
                (Err("denied"), Err(Refusal::Denied(_))) => {}
                (Err("invalid"), Err(Refusal::Invalid(_))) => {}
                (expected, got) => panic!("{request}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let g = GrantSet::default();
        assert!(matches!(
            g.read_grant_for("/etc/passwd"),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(
            g.check_command("/usr/bin/id"),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(g.check_env("HOME"), Err(Refusal::Denied(_))));
        assert!(matches!(
            g.check_switch(Capability::HostFacts),
            Err(Refusal::Denied(_))
        ));
    }

    #[test]
    fn commands_and_env_are_exact_allow_lists() {
        let g = grants(&[]);
        assert_eq!(g.check_command("/usr/bin/uname"), Ok(()));
        assert!(matches!(
            g.check_command("/usr/bin/uname2"),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(g.check_command("uname"), Err(Refusal::Invalid(_))));
        assert!(matches!(g.check_command(""), Err(Refusal::Invalid(_))));
        assert_eq!(g.check_env("LANG"), Ok(()));
        assert!(matches!(g.check_env("LANGUAGE"), Err(Refusal::Denied(_))));
        assert!(matches!(g.check_env("A=B"), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn grants_are_narrowed_to_what_the_manifest_declares() {
        let granted = GrantSet::from_config(
            "g",
            true,
            &["/etc".into(), "/proc/sys/net".into(), "/var/log".into()],
            &["/usr/bin/id".into(), "/usr/bin/uname".into()],
            &["LANG".into(), "HOME".into()],
        )
        .unwrap();
        let declared = Capabilities {
            read: [
                "/etc/ssh".to_string(),
                "/etc/passwd".to_string(),
                "/proc/sys".to_string(),
            ]
            .into(),
            commands: ["/usr/bin/uname".to_string()].into(),
            env: ["LANG".to_string()].into(),
            host_facts: false,
            packages: false,
        };
        let (effective, dropped) = granted.restrict_to(&declared);
        assert_eq!(
            effective.read,
            vec![
                PathBuf::from("/etc/passwd"),
                PathBuf::from("/etc/ssh"),
                PathBuf::from("/proc/sys/net")
            ]
        );
        assert_eq!(
            effective.commands.iter().collect::<Vec<_>>(),
            vec!["/usr/bin/uname"]
        );
        assert_eq!(effective.env.iter().collect::<Vec<_>>(), vec!["LANG"]);
        assert!(!effective.host_facts);
        assert_eq!(
            dropped,
            vec![
                "read /var/log",
                "command /usr/bin/id",
                "env HOME",
                "host_facts"
            ]
        );
        let (nothing, _) = GrantSet::default().restrict_to(&declared);
        assert_eq!(nothing, GrantSet::default(), "declaring is not granting");
    }

    #[test]
    fn bad_grants_name_the_field() {
        let e = GrantSet::from_config("plugin[2].grants", false, &["etc".into()], &[], &[])
            .unwrap_err();
        assert!(e.contains("plugin[2].grants.read[0]"), "{e}");
        let e = GrantSet::from_config("p", false, &["/etc/../root".into()], &[], &[]).unwrap_err();
        assert!(e.contains("`..`"), "{e}");
        let e = GrantSet::from_config("p", false, &[], &["sysctl".into()], &[]).unwrap_err();
        assert!(e.contains("p.commands[0]"), "{e}");
        let e = GrantSet::from_config("p", false, &[], &[], &["1X".into()]).unwrap_err();
        assert!(e.contains("p.env[0]"), "{e}");
    }
}
