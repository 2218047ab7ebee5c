//! The plugin ABI: the WIT package `assessment:plugin` and the versions of
//! it this build supports. The latest version is read at build time from
//! `wit/world.wit`, the one place it is written.

use std::fmt;

/// The WIT package of the plugin ABI.
pub const ABI_PACKAGE: &str = "assessment:plugin";

/// The latest ABI version (the package line of `wit/world.wit`).
pub const LATEST: &str = env!("ASSESSMENT_ABI_LATEST");

/// A supported ABI version line. Versions in the same semver-compatible line
/// (same major, and same minor while the major is 0) are interchangeable, as
/// in the component model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbiVersion {
    /// `assessment:plugin@0.1.x`: one `target` interface for files,
    /// commands, environment and host facts. Frozen; supported at least
    /// until 1.0.0 is released and for one minor line after it.
    V0_1,
    /// `assessment:plugin@0.2.x`: one interface per capability, findings
    /// with subjects, checks with references.
    V0_2,
}

impl AbiVersion {
    /// Every supported version, oldest first.
    pub const ALL: [AbiVersion; 2] = [AbiVersion::V0_1, AbiVersion::V0_2];

    /// The newest supported version.
    pub const fn latest() -> AbiVersion {
        AbiVersion::V0_2
    }

    /// The exact version a host implements for this line.
    pub fn version(self) -> &'static str {
        match self {
            AbiVersion::V0_1 => "0.1.0",
            AbiVersion::V0_2 => LATEST,
        }
    }

    /// The supported line `found` (e.g. `0.1.3`) belongs to, if any.
    pub fn of(found: &str) -> Option<AbiVersion> {
        let found = semver::Version::parse(found).ok()?;
        AbiVersion::ALL.into_iter().find(|v| {
            semver::Version::parse(v.version()).is_ok_and(|ours| {
                found.major == ours.major && (ours.major != 0 || found.minor == ours.minor)
            })
        })
    }

    /// The versions a host supports, for messages: `0.1.0, 0.2.0`.
    pub fn supported_list() -> String {
        AbiVersion::ALL
            .iter()
            .map(|v| v.version())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The fully qualified name of `interface` in this version, e.g.
    /// `assessment:plugin/process@0.2.0`.
    pub fn interface(self, interface: &str) -> String {
        format!("{ABI_PACKAGE}/{interface}@{}", self.version())
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ABI_PACKAGE}@{}", self.version())
    }
}

/// `assessment:plugin/plugin@0.1.3` → `("plugin", "0.1.3")`; `None` for a
/// name outside the package.
pub fn split_interface(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(ABI_PACKAGE)?
        .strip_prefix('/')?
        .split_once('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_version_comes_from_the_wit_package_line() {
        let world = include_str!("../../wit/world.wit");
        assert!(world.contains(&format!("package {ABI_PACKAGE}@{LATEST};")));
        assert_eq!(AbiVersion::latest().version(), LATEST);
        // A new minor line needs its own variant, the previous WIT frozen in
        // wit/v<version>/ and an adapter in host/src/abi/ (docs/abi.md).
        assert!(
            LATEST.starts_with("0.2."),
            "wit/world.wit says {LATEST}: add an AbiVersion for it and freeze 0.2"
        );
    }

    #[test]
    fn versions_follow_component_model_semver() {
        assert_eq!(AbiVersion::of("0.1.0"), Some(AbiVersion::V0_1));
        assert_eq!(AbiVersion::of("0.1.7"), Some(AbiVersion::V0_1));
        assert_eq!(AbiVersion::of("0.2.0"), Some(AbiVersion::V0_2));
        assert_eq!(AbiVersion::of("0.2.4"), Some(AbiVersion::V0_2));
        assert_eq!(AbiVersion::of("0.3.0"), None);
        assert_eq!(AbiVersion::of("1.1.0"), None);
        assert_eq!(AbiVersion::of("banana"), None);
        assert_eq!(
            split_interface("assessment:plugin/target@0.1.0"),
            Some(("target", "0.1.0"))
        );
        assert_eq!(split_interface("other:plugin/plugin@0.1.0"), None);
        assert_eq!(
            AbiVersion::V0_2.interface("process"),
            format!("assessment:plugin/process@{LATEST}")
        );
        assert_eq!(AbiVersion::supported_list(), format!("0.1.0, {LATEST}"));
    }
}
