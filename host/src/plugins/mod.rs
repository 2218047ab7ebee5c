//! Plugins as files: reading a component, its identity (name, version,
//! sha256 digest) and the audit (ABI, imports, constructs, size) made before
//! anything is compiled.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod fetch;
pub mod manager;
pub mod store;

use assessment_registry::audit::{Known, audit_known};
use assessment_registry::manifest::Manifest;
use assessment_registry::manifest::sha256_hex;

/// The size limit of a component when none is configured.
pub const DEFAULT_COMPONENT_BYTES: u64 = assessment_registry::audit::DEFAULT_MAX_BYTES;

/// What an operator raises for a component over its size limit.
const SIZE_HINT: &str = "raise `limits.component_mib` for this plugin (or in `[runtime.limits]`) if the component is legitimately that large";

/// The identity of a plugin build: what it says it is and what it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginId {
    /// Name, as the plugin describes itself.
    pub name: String,
    /// Version, as the plugin describes itself.
    pub version: String,
    /// `sha256:` + hex digest of the component bytes.
    pub digest: String,
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{} ({})",
            self.name,
            self.version,
            short_digest(&self.digest)
        )
    }
}

/// `sha256:0123456789ab` — enough to tell builds apart in logs.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// Why a plugin file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PluginFileError {
    /// No file at the configured path.
    #[error(
        "{path}: no such file; build the plugin (`cargo build --release --target wasm32-wasip2`) or fix `path`"
    )]
    Missing {
        /// The configured path.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The audit refused the component (not a component, malformed, another
    /// ABI, a forbidden import or construct, too large).
    #[error("{path}: {message}")]
    Rejected {
        /// The configured path.
        path: PathBuf,
        /// The audit rule.
        rule: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A component read from disk and audited, not compiled.
#[derive(Debug, Clone)]
pub struct ComponentFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// `sha256:` + hex digest of the bytes.
    pub digest: String,
    /// Its top-level imports, as the audit read them.
    pub imports: Vec<String>,
}

impl ComponentFile {
    /// Read `path` and audit it (without a manifest: a local development
    /// plugin); components over `max_bytes` are refused unread.
    pub fn read(path: &Path, max_bytes: u64) -> Result<Self, PluginFileError> {
        Self::read_known(path, max_bytes, |_| false)
    }

    /// [`ComponentFile::read`], where `compiled(sha256)` says whether this
    /// host already compiled the bytes of that digest (then wasmtime
    /// validated their function bodies, and the audit does not again).
    pub fn read_known(
        path: &Path,
        max_bytes: u64,
        compiled: impl FnOnce(&str) -> bool,
    ) -> Result<Self, PluginFileError> {
        let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => PluginFileError::Missing {
                path: path.to_path_buf(),
            },
            _ => PluginFileError::Read {
                path: path.to_path_buf(),
                source,
            },
        })?;
        if meta.len() > max_bytes {
            return Err(PluginFileError::Rejected {
                path: path.to_path_buf(),
                rule: "size",
                message: format!(
                    "{} bytes is more than the {max_bytes}-byte limit; {SIZE_HINT}",
                    meta.len()
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| PluginFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = sha256_hex(&bytes);
        let validated = compiled(&sha256);
        Self::audited_known(
            path,
            bytes,
            None,
            max_bytes,
            Known {
                sha256: Some(&sha256),
                validated,
            },
        )
    }

    /// Audit `bytes` (named `path` in errors), against `manifest` if given.
    pub fn audited(
        path: &Path,
        bytes: Vec<u8>,
        manifest: Option<&Manifest>,
        max_bytes: u64,
    ) -> Result<Self, PluginFileError> {
        Self::audited_known(path, bytes, manifest, max_bytes, Known::default())
    }

    /// [`ComponentFile::audited`], told what the caller already knows of
    /// `bytes` (see [`Known`]).
    pub fn audited_known(
        path: &Path,
        bytes: Vec<u8>,
        manifest: Option<&Manifest>,
        max_bytes: u64,
        known: Known<'_>,
    ) -> Result<Self, PluginFileError> {
        let report = audit_known(&bytes, manifest, max_bytes, known);
        if let Some(rejection) = report.first_rejection() {
            let mut message = rejection.message.clone();
            if rejection.rule == "size" {
                message = format!("{message}; {SIZE_HINT}");
            }
            return Err(PluginFileError::Rejected {
                path: path.to_path_buf(),
                rule: rejection.rule,
                message,
            });
        }
        Ok(ComponentFile {
            path: path.to_path_buf(),
            bytes,
            digest: format!("sha256:{}", report.sha256),
            imports: report.imports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_garbage_are_rejected_with_the_audit_message() {
        let core = ComponentFile::audited(
            Path::new("m.wasm"),
            b"\0asm\x01\0\0\0".to_vec(),
            None,
            DEFAULT_COMPONENT_BYTES,
        )
        .unwrap_err();
        assert!(
            matches!(
                &core,
                PluginFileError::Rejected {
                    rule: "component",
                    ..
                }
            ),
            "{core}"
        );
        assert!(
            core.to_string()
                .starts_with("m.wasm: a core WebAssembly module"),
            "{core}"
        );
        let garbage = ComponentFile::audited(
            Path::new("t.wasm"),
            b"hello".to_vec(),
            None,
            DEFAULT_COMPONENT_BYTES,
        )
        .unwrap_err();
        assert_eq!(garbage.to_string(), "t.wasm: not a WebAssembly file");
        let big = ComponentFile::audited(Path::new("b.wasm"), b"\0asm\x01\0\0\0".to_vec(), None, 4)
            .unwrap_err();
        assert!(
            big.to_string().contains("raise `limits.component_mib`"),
            "{big}"
        );
    }
}
