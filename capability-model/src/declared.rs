//! The capabilities of a plugin, as written: what it declares (in
//! `plugin.toml`, carried into its signed manifest), what the operator
//! grants it (`grants` in the agent configuration) and the most remote
//! configuration may grant (`[policy]`) all have this one shape. The host
//! never grants more than a signed plugin declares, and the audit refuses
//! a declaration the component cannot use.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::capability::Capability;

/// What a plugin may ask for; the operator's grants are intersected with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Absolute paths (and everything below) the plugin reads.
    #[serde(default)]
    pub read: BTreeSet<String>,
    /// Absolute program paths the plugin runs.
    #[serde(default)]
    pub commands: BTreeSet<String>,
    /// Environment variables the plugin reads.
    #[serde(default)]
    pub env: BTreeSet<String>,
    /// Whether the plugin reads host facts.
    #[serde(default)]
    pub host_facts: bool,
    /// Whether the plugin reads the installed packages.
    #[serde(default)]
    pub packages: bool,
}

impl Capabilities {
    /// Whether anything of `capability` is declared.
    pub fn declares(&self, capability: Capability) -> bool {
        match capability {
            Capability::Filesystem => !self.read.is_empty(),
            Capability::Process => !self.commands.is_empty(),
            Capability::Environment => !self.env.is_empty(),
            Capability::HostFacts | Capability::Packages => self.switch(capability),
        }
    }

    /// The value of a capability granted whole (see
    /// [`Capability::is_switch`]); `false` for the others.
    pub fn switch(&self, capability: Capability) -> bool {
        match capability {
            Capability::HostFacts => self.host_facts,
            Capability::Packages => self.packages,
            _ => false,
        }
    }

    /// The capabilities declared, in [`Capability::ALL`] order.
    pub fn declared(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.declares(*c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_per_capability_and_unknown_keys_are_refused() {
        let c: Capabilities =
            serde_json::from_str(r#"{"read":["/etc"],"host_facts":true}"#).unwrap();
        assert_eq!(
            c.declared(),
            vec![Capability::Filesystem, Capability::HostFacts]
        );
        assert!(serde_json::from_str::<Capabilities>(r#"{"network":true}"#).is_err());
        assert!(Capabilities::default().declared().is_empty());
    }
}
