//! What a plugin may be granted. Each capability is reached through one WIT
//! interface (in ABI 0.1.0, all of them through `target`), is declared in the
//! signed manifest under one key, and is granted by the operator under the
//! same key.

use std::fmt;

use crate::abi::AbiVersion;

/// One capability a plugin can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Read files of the assessed system (`read = ["/etc/ssh"]`).
    Filesystem,
    /// Run allow-listed commands (`commands = ["/usr/sbin/sysctl"]`).
    Process,
    /// Read environment variables of the agent (`env = ["HTTP_PROXY"]`).
    Environment,
    /// Basic facts about the assessed system (`host_facts = true`).
    HostFacts,
    /// The installed packages of the assessed system (`packages = true`).
    Packages,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 5] = [
        Capability::Filesystem,
        Capability::Process,
        Capability::Environment,
        Capability::HostFacts,
        Capability::Packages,
    ];

    /// Whether it is granted whole (`true`/`false`) rather than as a list
    /// of paths, programs or names.
    pub fn is_switch(self) -> bool {
        matches!(self, Capability::HostFacts | Capability::Packages)
    }

    /// The key of its grant in the agent configuration and of its
    /// declaration in `plugin.toml` and the manifest.
    pub fn grant_key(self) -> &'static str {
        match self {
            Capability::Filesystem => "read",
            Capability::Process => "commands",
            Capability::Environment => "env",
            Capability::HostFacts => "host_facts",
            Capability::Packages => "packages",
        }
    }

    /// The WIT interface (without package and version) it is reached
    /// through in `abi`; `None` where that version does not have it.
    pub fn interface(self, abi: AbiVersion) -> Option<&'static str> {
        match (abi, self) {
            (AbiVersion::V0_1, Capability::Packages) => None,
            (AbiVersion::V0_1, _) => Some("target"),
            (AbiVersion::V0_2, Capability::Filesystem) => Some("filesystem"),
            (AbiVersion::V0_2, Capability::Process) => Some("process"),
            (AbiVersion::V0_2, Capability::Environment) => Some("environment"),
            (AbiVersion::V0_2, Capability::HostFacts) => Some("host-facts"),
            (AbiVersion::V0_2, Capability::Packages) => Some("packages"),
        }
    }

    /// The fully qualified interface in `abi`, for messages: e.g.
    /// `assessment:plugin/process@0.2.0`, or a sentence when the version
    /// does not have it.
    pub fn interface_name(self, abi: AbiVersion) -> String {
        match self.interface(abi) {
            Some(interface) => abi.interface(interface),
            None => format!("an interface that {abi} does not have"),
        }
    }

    /// The capabilities that a component importing `interface` (in `abi`)
    /// can use.
    pub fn reached_through(interface: &str, abi: AbiVersion) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| c.interface(abi) == Some(interface))
            .collect()
    }

    /// Whether a component with these top-level `imports` (full names, e.g.
    /// `assessment:plugin/process@0.2.0`) can use this capability.
    pub fn usable_with(self, abi: AbiVersion, imports: &[String]) -> bool {
        let Some(wanted) = self.interface(abi) else {
            return false;
        };
        imports.iter().any(|import| {
            crate::abi::split_interface(import).is_some_and(|(interface, version)| {
                interface == wanted && AbiVersion::of(version) == Some(abi)
            })
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.grant_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_capability_has_its_own_interface_since_0_2() {
        for c in Capability::ALL {
            let interface = c.interface(AbiVersion::V0_2).unwrap();
            assert_eq!(
                Capability::reached_through(interface, AbiVersion::V0_2),
                vec![c]
            );
        }
        assert_eq!(
            Capability::reached_through("target", AbiVersion::V0_1),
            Capability::ALL[..4].to_vec(),
            "every capability 0.1.0 had"
        );
        assert_eq!(Capability::Packages.interface(AbiVersion::V0_1), None);
        assert!(!Capability::Packages.usable_with(
            AbiVersion::V0_1,
            &["assessment:plugin/target@0.1.0".to_string()]
        ));
        let imports = vec![
            AbiVersion::V0_2.interface("filesystem"),
            "wasi:cli/environment@0.2.0".to_string(),
        ];
        assert!(Capability::Filesystem.usable_with(AbiVersion::V0_2, &imports));
        assert!(!Capability::Process.usable_with(AbiVersion::V0_2, &imports));
        // `environment` of WASI is not the plugin ABI's.
        assert!(!Capability::Environment.usable_with(AbiVersion::V0_2, &imports));
        assert!(!Capability::Filesystem.usable_with(AbiVersion::V0_1, &imports));
    }
}
