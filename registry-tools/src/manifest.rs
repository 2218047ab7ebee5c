//! The plugin manifest: what a release asset is (name, version, ABI), the
//! digest that binds it to its component, and the capabilities the plugin
//! declares. The minisign signature covers the manifest's exact bytes, and
//! through the digest the component.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::Verdict;

/// The manifest schema identifier.
pub const MANIFEST_SCHEMA: &str = "assessment-runtime/plugin-manifest@1";

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not valid JSON or not the schema.
    #[error("malformed plugin manifest: {0}")]
    Malformed(String),
    /// A field has an invalid value.
    #[error("invalid plugin manifest: {0}")]
    Invalid(String),
}

/// What a plugin may ask for (the capability model's declaration).
pub use capability_model::Capabilities;

/// The component a manifest describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRef {
    /// Release asset file name of the component.
    pub file: String,
    /// Lowercase hex SHA-256 of the component.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Where the plugin was built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Repository URL.
    #[serde(default)]
    pub repository: String,
    /// Commit the release was built from.
    #[serde(default)]
    pub commit: String,
}

/// The audit a release passed, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// `accepted`, or `flagged` when a person approved it (`reviewed`);
    /// never `rejected`.
    pub verdict: Verdict,
    /// A person approved the flagged release (the `plugin-review`
    /// environment of the release workflow).
    #[serde(default)]
    pub reviewed: bool,
    /// The release asset holding the audit report (`NAME-VERSION.audit.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// That report's SHA-256 (lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_sha256: Option<String>,
}

/// A plugin manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_SCHEMA`].
    pub schema: String,
    /// Plugin name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// The ABI it targets, e.g. `assessment:plugin@0.1.0`.
    pub abi: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// The component.
    pub component: ComponentRef,
    /// Declared capabilities.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Provenance.
    #[serde(default)]
    pub source: Source,
    /// The audit's verdict and report. Absent from manifests made before
    /// it was recorded; such manifests stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditRecord>,
    /// The tools that built the component and their versions (`rustc` →
    /// `rustc -V`'s output, `componentize-py`, `componentize-js`…). Absent
    /// from older manifests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub toolchain: BTreeMap<String, String>,
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Release asset names of a plugin version: (component, manifest, signature).
pub fn asset_names(name: &str, version: &str) -> (String, String, String) {
    let base = format!("{name}-{version}");
    (
        format!("{base}.wasm"),
        format!("{base}.manifest.json"),
        format!("{base}.manifest.json.minisig"),
    )
}

/// The release tag of a plugin version, e.g. `sshd-hardening/v1.2.3`.
pub fn release_tag(name: &str, version: &str) -> String {
    format!("{name}/v{version}")
}

impl Manifest {
    /// Parse and validate manifest bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The canonical bytes (what is signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |m: String| Err(ManifestError::Invalid(m));
        if self.schema != MANIFEST_SCHEMA {
            return invalid(format!(
                "schema {:?}, expected {MANIFEST_SCHEMA:?}",
                self.schema
            ));
        }
        if !valid_plugin_name(&self.name) {
            return invalid(format!(
                "name {:?}: lowercase letters, digits and `-`",
                self.name
            ));
        }
        if semver::Version::parse(&self.version).is_err() {
            return invalid(format!(
                "version {:?} is not a semantic version",
                self.version
            ));
        }
        if !is_sha256_hex(&self.component.sha256) {
            return invalid(format!(
                "component.sha256 {:?} is not a lowercase hex SHA-256",
                self.component.sha256
            ));
        }
        let (expected_file, _, _) = asset_names(&self.name, &self.version);
        if self.component.file != expected_file {
            return invalid(format!(
                "component.file {:?}, expected {expected_file:?}",
                self.component.file
            ));
        }
        for path in self
            .capabilities
            .read
            .iter()
            .chain(&self.capabilities.commands)
        {
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return invalid(format!(
                    "capability path {path:?} must be absolute without `..`"
                ));
            }
        }
        if let Some(audit) = &self.audit {
            match audit.verdict {
                Verdict::Accepted => {}
                Verdict::Flagged if audit.reviewed => {}
                Verdict::Flagged => {
                    return invalid(
                        "audit.verdict is flagged but not reviewed: a flagged release is signed only after review".to_string(),
                    );
                }
                Verdict::Rejected => {
                    return invalid(
                        "audit.verdict is rejected: a rejected component is never signed"
                            .to_string(),
                    );
                }
            }
            if audit
                .report_sha256
                .as_deref()
                .is_some_and(|d| !is_sha256_hex(d))
            {
                return invalid(format!(
                    "audit.report_sha256 {:?} is not a lowercase hex SHA-256",
                    audit.report_sha256
                ));
            }
        }
        Ok(())
    }
}

/// A plugin name: lowercase letters, digits and `-`, starting with a letter,
/// at most 64 bytes.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA.to_string(),
            name: "sshd-hardening".into(),
            version: "1.2.3".into(),
            abi: "assessment:plugin@0.1.0".into(),
            description: "d".into(),
            component: ComponentRef {
                file: "sshd-hardening-1.2.3.wasm".into(),
                sha256: sha256_hex(b"component"),
                size: 9,
            },
            capabilities: Capabilities {
                read: ["/etc/ssh".to_string()].into(),
                ..Capabilities::default()
            },
            source: Source::default(),
            audit: None,
            toolchain: BTreeMap::new(),
        }
    }

    #[test]
    fn manifests_round_trip() {
        let m = sample();
        assert_eq!(Manifest::from_bytes(&m.to_bytes()).unwrap(), m);
    }

    /// A manifest written before the audit and the toolchain were recorded
    /// (the bytes `package` wrote then) still parses and stays byte-for-byte
    /// the same when written again: its signature still verifies.
    #[test]
    fn manifests_without_the_audit_record_still_parse() {
        let old = sample().to_bytes();
        let text = String::from_utf8(old.clone()).unwrap();
        assert!(!text.contains("\"audit\"") && !text.contains("\"toolchain\""));
        let parsed = Manifest::from_bytes(&old).unwrap();
        assert_eq!(parsed.audit, None);
        assert!(parsed.toolchain.is_empty());
        assert_eq!(parsed.to_bytes(), old);
    }

    #[test]
    fn the_audit_record_and_toolchain_round_trip_and_are_checked() {
        let mut m = sample();
        m.audit = Some(AuditRecord {
            verdict: Verdict::Flagged,
            reviewed: true,
            report: Some("sshd-hardening-1.2.3.audit.json".into()),
            report_sha256: Some(sha256_hex(b"report")),
        });
        m.toolchain
            .insert("rustc".into(), "rustc 1.95.0 (59807616e 2026-04-14)".into());
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"verdict\": \"flagged\""), "{text}");
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);

        type Mutation = fn(&mut AuditRecord);
        let cases: Vec<(Mutation, &str)> = vec![
            (|a| a.reviewed = false, "not reviewed"),
            (|a| a.verdict = Verdict::Rejected, "never signed"),
            (|a| a.report_sha256 = Some("XYZ".into()), "report_sha256"),
        ];
        for (mutate, needle) in cases {
            let mut bad = m.clone();
            mutate(bad.audit.as_mut().unwrap());
            let e = Manifest::from_bytes(&bad.to_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // Unknown fields are still refused, in the record too.
        let forged = text.replace("\"reviewed\": true", "\"reviewed\": true, \"by\": \"x\"");
        assert!(matches!(
            Manifest::from_bytes(forged.as_bytes()),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn invalid_manifests_are_refused() {
        type Mutation = fn(&mut Manifest);
        let cases: Vec<(Mutation, &str)> = vec![
            (|m| m.schema = "x".into(), "schema"),
            (|m| m.name = "Bad Name".into(), "name"),
            (|m| m.version = "one".into(), "version"),
            (|m| m.component.sha256 = "ABC".into(), "sha256"),
            (|m| m.component.file = "other.wasm".into(), "component.file"),
            (
                |m| {
                    m.capabilities.read.insert("etc".into());
                },
                "capability path",
            ),
        ];
        for (mutate, needle) in cases {
            let mut m = sample();
            mutate(&mut m);
            let e = Manifest::from_bytes(&m.to_bytes()).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(matches!(
            Manifest::from_bytes(b"{\"schema\": 1}"),
            Err(ManifestError::Malformed(_))
        ));
    }
}
