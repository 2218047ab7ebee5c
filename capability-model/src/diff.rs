//! What one release of a plugin declares beyond another: the capability
//! diff a release is reviewed by (`plugin-registry capability-diff`) and the
//! host logs on upgrade.
//!
//! Every field of a declaration has its own order of "more":
//!
//! - `read`: a path grants everything below it (the host compares paths by
//!   component, lexically; there are no globs, a `*` is a name). A new path
//!   that no old path covers is a widening: brand new, or broader than the
//!   old paths it covers (`/etc/ssh` → `/etc`). An old path that no new path
//!   covers is a narrowing: gone, or narrowed to the new paths below it.
//! - `commands`: exact program paths (`/usr/sbin//sysctl` is `/usr/sbin/sysctl`):
//!   each new one widens, each dropped one narrows.
//! - `env`: exact variable names, likewise.
//! - `host_facts`, `packages`: switched on widens, off narrows.
//! - imports: the component's imported interfaces, by name and version line
//!   (`wasi:cli/environment@0.2.0` and `@0.2.9` are one interface; 0.1 and
//!   0.2 of the plugin ABI are two): a new one widens, a dropped one narrows.
//! - the component's size class (the smallest power of two MiB that holds
//!   it, what `limits.component_mib` must admit): larger widens, smaller
//!   narrows. Growth within a class is not reported.
//!
//! A manifest declares no memory or time limits (the operator sets those),
//! so a release cannot widen them.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::declared::Capabilities;

/// What one release declares, as the diff compares it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declaration {
    /// The capabilities its manifest declares.
    pub capabilities: Capabilities,
    /// The component's top-level imports, full names (e.g.
    /// `assessment:plugin/filesystem@0.2.0`).
    pub imports: BTreeSet<String>,
    /// The component's size in bytes; `None` when there is no component
    /// (the baseline of a first release).
    pub component_size: Option<u64>,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A path of `read`.
    Read,
    /// A program of `commands`.
    Commands,
    /// A variable of `env`.
    Env,
    /// `host_facts`.
    HostFacts,
    /// `packages`.
    Packages,
    /// An imported interface of the component.
    Import,
    /// The component's size class.
    SizeClass,
}

impl ChangeKind {
    /// The name in reports: the key in `plugin.toml` for a capability,
    /// `import`, `size_class`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Read => "read",
            ChangeKind::Commands => "commands",
            ChangeKind::Env => "env",
            ChangeKind::HostFacts => "host_facts",
            ChangeKind::Packages => "packages",
            ChangeKind::Import => "import",
            ChangeKind::SizeClass => "size_class",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One widening or narrowing: the old value and the new one, `None` where
/// there is none (a new path has no old one, a dropped command no new one).
/// Switches are `"false"`/`"true"`, size classes `"<n> MiB"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// Before.
    pub old: Option<String>,
    /// After.
    pub new: Option<String>,
}

impl Change {
    fn new(kind: ChangeKind, old: Option<&str>, new: Option<&str>) -> Self {
        Change {
            kind,
            old: old.map(str::to_string),
            new: new.map(str::to_string),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind;
        match (&self.old, &self.new) {
            (None, Some(new)) => write!(f, "{kind} {new} (new)"),
            (Some(old), None) => write!(f, "{kind} {old} (removed)"),
            (Some(old), Some(new)) => write!(f, "{kind} {old} → {new}"),
            (None, None) => write!(f, "{kind}"),
        }
    }
}

/// The widenings and narrowings of a new release against an old one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityDiff {
    /// What the new release may do that the old one could not.
    pub widenings: Vec<Change>,
    /// What the old release could do that the new one may not.
    pub narrowings: Vec<Change>,
}

impl CapabilityDiff {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.widenings.is_empty() && self.narrowings.is_empty()
    }

    /// The new release declares more than the old one somewhere.
    pub fn widened(&self) -> bool {
        !self.widenings.is_empty()
    }
}

/// What `new` declares beyond `old`, and what it no longer declares. A
/// first release is `diff(&Declaration::default(), &new)`: everything it
/// declares is a widening.
pub fn diff(old: &Declaration, new: &Declaration) -> CapabilityDiff {
    let mut out = CapabilityDiff::default();
    read_paths(
        &old.capabilities.read,
        &new.capabilities.read,
        &mut out.widenings,
        &mut out.narrowings,
    );
    exact(
        ChangeKind::Commands,
        &normalised(&old.capabilities.commands),
        &normalised(&new.capabilities.commands),
        &mut out,
    );
    exact(
        ChangeKind::Env,
        &old.capabilities
            .env
            .iter()
            .map(|e| (e.clone(), e.clone()))
            .collect(),
        &new.capabilities
            .env
            .iter()
            .map(|e| (e.clone(), e.clone()))
            .collect(),
        &mut out,
    );
    for (kind, was, is) in [
        (
            ChangeKind::HostFacts,
            old.capabilities.host_facts,
            new.capabilities.host_facts,
        ),
        (
            ChangeKind::Packages,
            old.capabilities.packages,
            new.capabilities.packages,
        ),
    ] {
        let change = Change::new(kind, Some(&was.to_string()), Some(&is.to_string()));
        match (was, is) {
            (false, true) => out.widenings.push(change),
            (true, false) => out.narrowings.push(change),
            _ => {}
        }
    }
    exact(
        ChangeKind::Import,
        &old.imports
            .iter()
            .map(|i| (import_key(i), i.clone()))
            .collect(),
        &new.imports
            .iter()
            .map(|i| (import_key(i), i.clone()))
            .collect(),
        &mut out,
    );
    let class = |size: Option<u64>| size.map(size_class_mib);
    match (class(old.component_size), class(new.component_size)) {
        (was, Some(is)) if was.is_none_or(|was| is > was) => out.widenings.push(Change {
            kind: ChangeKind::SizeClass,
            old: was.map(mib),
            new: Some(mib(is)),
        }),
        (Some(was), is) if is.is_none_or(|is| is < was) => out.narrowings.push(Change {
            kind: ChangeKind::SizeClass,
            old: Some(mib(was)),
            new: is.map(mib),
        }),
        _ => {}
    }
    out
}

/// The smallest power of two MiB that holds `bytes` (at least 1 MiB).
pub fn size_class_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20).max(1).next_power_of_two()
}

fn mib(n: u64) -> String {
    format!("{n} MiB")
}

/// Whether read path `outer` grants `inner` (is it or above it). A path
/// that climbs (`..`) or is relative grants and is granted nothing here:
/// manifests refuse them, and a diff must not be fooled by one.
fn covers(outer: &str, inner: &str) -> bool {
    let plain = |p: &str| {
        p.starts_with('/')
            && !Path::new(p)
                .components()
                .any(|c| matches!(c, Component::ParentDir))
    };
    plain(outer) && plain(inner) && Path::new(inner).starts_with(outer)
}

fn read_paths(
    old: &BTreeSet<String>,
    new: &BTreeSet<String>,
    widenings: &mut Vec<Change>,
    narrowings: &mut Vec<Change>,
) {
    for n in new {
        if old.iter().any(|o| covers(o, n)) {
            continue;
        }
        // Broader than the old paths below it, or new altogether.
        let below: Vec<&String> = old.iter().filter(|o| covers(n, o)).collect();
        if below.is_empty() {
            widenings.push(Change::new(ChangeKind::Read, None, Some(n)));
        }
        for o in below {
            widenings.push(Change::new(ChangeKind::Read, Some(o), Some(n)));
        }
    }
    for o in old {
        if new.iter().any(|n| covers(n, o)) {
            continue;
        }
        let below: Vec<&String> = new.iter().filter(|n| covers(o, n)).collect();
        if below.is_empty() {
            narrowings.push(Change::new(ChangeKind::Read, Some(o), None));
        }
        for n in below {
            narrowings.push(Change::new(ChangeKind::Read, Some(o), Some(n)));
        }
    }
}

/// Program paths keyed by their lexical form (`//` and `.` dropped), so
/// that one program written two ways is not a change.
fn normalised(paths: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    paths
        .iter()
        .map(|p| {
            let path = Path::new(p);
            let key = if p.starts_with('/')
                && !path.components().any(|c| matches!(c, Component::ParentDir))
            {
                let parts: Vec<_> = path
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                        _ => None,
                    })
                    .collect();
                format!("/{}", parts.join("/"))
            } else {
                p.clone()
            };
            (key, p.clone())
        })
        .collect()
}

/// An import's identity: its name and semver-compatible version line
/// (`wasi:cli/stdin@0.2.3` → `wasi:cli/stdin@0.2`; `1.4.0` → `1`).
fn import_key(import: &str) -> String {
    let Some((name, version)) = import.rsplit_once('@') else {
        return import.to_string();
    };
    match semver::Version::parse(version) {
        Ok(v) if v.major == 0 => format!("{name}@0.{}", v.minor),
        Ok(v) => format!("{name}@{}", v.major),
        Err(_) => import.to_string(),
    }
}

/// Sets compared by key, each entry shown as written (`(key, shown)`).
fn exact(
    kind: ChangeKind,
    old: &BTreeSet<(String, String)>,
    new: &BTreeSet<(String, String)>,
    out: &mut CapabilityDiff,
) {
    let has = |set: &BTreeSet<(String, String)>, key: &str| set.iter().any(|(k, _)| k == key);
    let mut seen = BTreeSet::new();
    for (key, shown) in new {
        if !has(old, key) && seen.insert(key) {
            out.widenings.push(Change::new(kind, None, Some(shown)));
        }
    }
    let mut seen = BTreeSet::new();
    for (key, shown) in old {
        if !has(new, key) && seen.insert(key) {
            out.narrowings.push(Change::new(kind, Some(shown), None));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn declaring(read: &[&str]) -> Declaration {
        Declaration {
            capabilities: Capabilities {
                read: set(read),
                ..Capabilities::default()
            },
            imports: set(&["assessment:plugin/filesystem@0.2.0"]),
            component_size: Some(300_000),
        }
    }

    fn change(kind: ChangeKind, old: Option<&str>, new: Option<&str>) -> Change {
        Change::new(kind, old, new)
    }

    fn full() -> Declaration {
        Declaration {
            capabilities: Capabilities {
                read: set(&["/etc/ssh", "/proc/sys"]),
                commands: set(&["/usr/sbin/sysctl"]),
                env: set(&["PATH"]),
                host_facts: true,
                packages: true,
            },
            imports: set(&[
                "assessment:plugin/filesystem@0.2.0",
                "assessment:plugin/process@0.2.0",
                "wasi:cli/environment@0.2.0",
            ]),
            component_size: Some(3 << 20),
        }
    }

    #[test]
    fn identical_declarations_differ_in_nothing() {
        assert!(diff(&full(), &full()).is_empty());
        assert!(diff(&Declaration::default(), &Declaration::default()).is_empty());
        // The same paths and programs written another way, a compatible
        // version of an import, and growth within a size class.
        let mut respelled = full();
        respelled.capabilities.read = set(&["/etc/ssh/", "/proc//sys"]);
        respelled.capabilities.commands = set(&["/usr/sbin/./sysctl"]);
        respelled.imports = set(&[
            "assessment:plugin/filesystem@0.2.1",
            "assessment:plugin/process@0.2.0",
            "wasi:cli/environment@0.2.9",
        ]);
        respelled.component_size = Some((4 << 20) - 1);
        assert_eq!(diff(&full(), &respelled), CapabilityDiff::default());
    }

    #[test]
    fn a_new_path_widens_and_a_removed_one_narrows() {
        let d = diff(
            &declaring(&["/etc/ssh"]),
            &declaring(&["/etc/ssh", "/etc/pam.d"]),
        );
        assert_eq!(
            d.widenings,
            vec![change(ChangeKind::Read, None, Some("/etc/pam.d"))]
        );
        assert!(d.narrowings.is_empty());
        let d = diff(
            &declaring(&["/etc/ssh", "/etc/pam.d"]),
            &declaring(&["/etc/ssh"]),
        );
        assert!(d.widenings.is_empty());
        assert_eq!(
            d.narrowings,
            vec![change(ChangeKind::Read, Some("/etc/pam.d"), None)]
        );
        // A sibling sharing a prefix of characters is another path.
        let d = diff(&declaring(&["/etc/ssh"]), &declaring(&["/etc/sshd"]));
        assert_eq!(
            d.widenings,
            vec![change(ChangeKind::Read, None, Some("/etc/sshd"))]
        );
        assert_eq!(
            d.narrowings,
            vec![change(ChangeKind::Read, Some("/etc/ssh"), None)]
        );
    }

    #[test]
    fn a_parent_directory_is_broader_and_a_child_narrower() {
        let d = diff(
            &declaring(&["/etc/ssh", "/etc/pam.d", "/proc/sys"]),
            &declaring(&["/etc", "/proc/sys"]),
        );
        assert_eq!(
            d.widenings,
            vec![
                change(ChangeKind::Read, Some("/etc/pam.d"), Some("/etc")),
                change(ChangeKind::Read, Some("/etc/ssh"), Some("/etc")),
            ]
        );
        assert!(d.narrowings.is_empty(), "{d:?}");
        let d = diff(&declaring(&["/etc"]), &declaring(&["/etc/ssh/sshd_config"]));
        assert!(d.widenings.is_empty());
        assert_eq!(
            d.narrowings,
            vec![change(
                ChangeKind::Read,
                Some("/etc"),
                Some("/etc/ssh/sshd_config")
            )]
        );
        // `/` is everything.
        let d = diff(&declaring(&["/etc/ssh"]), &declaring(&["/"]));
        assert_eq!(
            d.widenings,
            vec![change(ChangeKind::Read, Some("/etc/ssh"), Some("/"))]
        );
    }

    #[test]
    fn a_glob_or_a_climbing_path_is_never_covered() {
        // No globs in the model: `*` is a name, and a path with it is new.
        let d = diff(&declaring(&["/etc/ssh"]), &declaring(&["/etc/*"]));
        assert_eq!(
            d.widenings,
            vec![change(ChangeKind::Read, None, Some("/etc/*"))]
        );
        // `..` would climb out of what it seems to be under.
        let d = diff(&declaring(&["/etc/ssh"]), &declaring(&["/etc/ssh/../.."]));
        assert_eq!(
            d.widenings,
            vec![change(ChangeKind::Read, None, Some("/etc/ssh/../.."))]
        );
    }

    #[test]
    fn commands_and_variables_are_exact() {
        let mut old = full();
        old.capabilities.commands = set(&["/usr/sbin/sysctl", "/usr/bin/dpkg"]);
        old.capabilities.env = set(&["PATH", "HOME"]);
        let mut new = full();
        new.capabilities.commands = set(&["/usr/sbin/sysctl", "/bin/sh"]);
        new.capabilities.env = set(&["PATH", "HTTP_PROXY"]);
        let d = diff(&old, &new);
        assert_eq!(
            d.widenings,
            vec![
                change(ChangeKind::Commands, None, Some("/bin/sh")),
                change(ChangeKind::Env, None, Some("HTTP_PROXY")),
            ]
        );
        assert_eq!(
            d.narrowings,
            vec![
                change(ChangeKind::Commands, Some("/usr/bin/dpkg"), None),
                change(ChangeKind::Env, Some("HOME"), None),
            ]
        );
        // A program in a directory that was a program before is not under it.
        old.capabilities.commands = set(&["/usr/bin"]);
        new.capabilities.commands = set(&["/usr/bin/dpkg"]);
        new.capabilities.env = old.capabilities.env.clone();
        assert_eq!(
            diff(&old, &new).widenings,
            vec![change(ChangeKind::Commands, None, Some("/usr/bin/dpkg"))]
        );
    }

    #[test]
    fn switches_widen_when_turned_on() {
        let mut old = full();
        old.capabilities.host_facts = false;
        let mut new = full();
        new.capabilities.packages = false;
        let d = diff(&old, &new);
        assert_eq!(
            d.widenings,
            vec![change(ChangeKind::HostFacts, Some("false"), Some("true"))]
        );
        assert_eq!(
            d.narrowings,
            vec![change(ChangeKind::Packages, Some("true"), Some("false"))]
        );
        assert!(d.widened());
    }

    #[test]
    fn a_new_interface_widens_and_a_new_version_line_is_a_new_interface() {
        let old = full();
        let mut new = full();
        new.imports.insert("wasi:sockets/tcp@0.2.0".to_string());
        new.imports.remove("assessment:plugin/process@0.2.0");
        let d = diff(&old, &new);
        assert_eq!(
            d.widenings,
            vec![change(
                ChangeKind::Import,
                None,
                Some("wasi:sockets/tcp@0.2.0")
            )]
        );
        assert_eq!(
            d.narrowings,
            vec![change(
                ChangeKind::Import,
                Some("assessment:plugin/process@0.2.0"),
                None
            )]
        );
        // 0.1 `target` to 0.2 `filesystem`: another contract.
        let mut v01 = full();
        v01.imports = set(&["assessment:plugin/target@0.1.0"]);
        let mut v02 = full();
        v02.imports = set(&["assessment:plugin/filesystem@0.2.0"]);
        let d = diff(&v01, &v02);
        assert_eq!(
            d.widenings,
            vec![change(
                ChangeKind::Import,
                None,
                Some("assessment:plugin/filesystem@0.2.0")
            )]
        );
        assert_eq!(
            d.narrowings,
            vec![change(
                ChangeKind::Import,
                Some("assessment:plugin/target@0.1.0"),
                None
            )]
        );
        assert_eq!(import_key("wasi:io/streams@1.4.0"), "wasi:io/streams@1");
        assert_eq!(import_key("unversioned"), "unversioned");
    }

    #[test]
    fn a_larger_size_class_widens() {
        assert_eq!(size_class_mib(0), 1);
        assert_eq!(size_class_mib(1 << 20), 1);
        assert_eq!(size_class_mib((1 << 20) + 1), 2);
        assert_eq!(size_class_mib(18_731_435), 32);
        let mut old = full();
        old.component_size = Some(600_000);
        let mut new = full();
        new.component_size = Some(18_731_435);
        let d = diff(&old, &new);
        assert_eq!(
            d.widenings,
            vec![change(ChangeKind::SizeClass, Some("1 MiB"), Some("32 MiB"))]
        );
        let d = diff(&new, &old);
        assert_eq!(
            d.narrowings,
            vec![change(ChangeKind::SizeClass, Some("32 MiB"), Some("1 MiB"))]
        );
        assert!(d.widenings.is_empty());
    }

    #[test]
    fn a_first_release_widens_by_everything_it_declares() {
        let d = diff(&Declaration::default(), &full());
        assert!(d.narrowings.is_empty());
        assert_eq!(
            d.widenings,
            vec![
                change(ChangeKind::Read, None, Some("/etc/ssh")),
                change(ChangeKind::Read, None, Some("/proc/sys")),
                change(ChangeKind::Commands, None, Some("/usr/sbin/sysctl")),
                change(ChangeKind::Env, None, Some("PATH")),
                change(ChangeKind::HostFacts, Some("false"), Some("true")),
                change(ChangeKind::Packages, Some("false"), Some("true")),
                change(
                    ChangeKind::Import,
                    None,
                    Some("assessment:plugin/filesystem@0.2.0")
                ),
                change(
                    ChangeKind::Import,
                    None,
                    Some("assessment:plugin/process@0.2.0")
                ),
                change(ChangeKind::Import, None, Some("wasi:cli/environment@0.2.0")),
                change(ChangeKind::SizeClass, None, Some("4 MiB")),
            ]
        );
        assert_eq!(
            d.widenings[0].to_string(),
            "read /etc/ssh (new)",
            "displayed for logs and reports"
        );
        assert_eq!(d.widenings[4].to_string(), "host_facts false → true");
        let json = serde_json::to_value(&d.widenings[9]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "size_class", "old": null, "new": "4 MiB"})
        );
    }
}
