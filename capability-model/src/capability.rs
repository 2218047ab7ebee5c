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
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 4] = [
        Capability::Filesystem,
        Capability::Process,
        Capability::Environment,
        Capability::HostFacts,
    ];

    /// The key of its grant in the agent configuration and of its
    /// declaration in `plugin.toml` and the manifest.
    pub fn grant_key(self) -> &'static str {
        match self {
            Capability::Filesystem => "read",
            Capability::Process => "commands",
            Capability::Environment => "env",
            Capability::HostFacts => "host_facts",
        }
    }

    /// The WIT interface (without package and version) it is reached
    /// through in `abi`.
    pub fn interface(self, abi: AbiVersion) -> &'static str {
        match (abi, self) {
            (AbiVersion::V0_1, _) => "target",
            (AbiVersion::V0_2, Capability::Filesystem) => "filesystem",
            (AbiVersion::V0_2, Capability::Process) => "process",
            (AbiVersion::V0_2, Capability::Environment) => "environment",
            (AbiVersion::V0_2, Capability::HostFacts) => "host-facts",
        }
    }

    /// The capabilities that a component importing `interface` (in `abi`)
    /// can use.
    pub fn reached_through(interface: &str, abi: AbiVersion) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| c.interface(abi) == interface)
            .collect()
    }

    /// Whether a component with these top-level `imports` (full names, e.g.
    /// `assessment:plugin/process@0.2.0`) can use this capability.
    pub fn usable_with(self, abi: AbiVersion, imports: &[String]) -> bool {
        let wanted = self.interface(abi);
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
            assert_eq!(c.interface(AbiVersion::V0_1), "target");
            assert_eq!(
                Capability::reached_through(c.interface(AbiVersion::V0_2), AbiVersion::V0_2),
                vec![c]
            );
        }
        assert_eq!(
            Capability::reached_through("target", AbiVersion::V0_1),
            Capability::ALL.to_vec()
        );
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
