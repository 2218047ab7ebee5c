//! Plugins as files: reading a component, its identity (name, version,
//! sha256 digest) and the ABI checks made before anything is compiled.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};

use crate::bindings::{ABI_PACKAGE, ABI_VERSION};

/// Components larger than this are refused before parsing.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

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
    /// The file is larger than [`MAX_COMPONENT_BYTES`].
    #[error(
        "{path}: {size} bytes is larger than the {MAX_COMPONENT_BYTES}-byte limit for a plugin component"
    )]
    TooLarge {
        /// The configured path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Not WebAssembly at all.
    #[error("{path}: not a WebAssembly file")]
    NotWasm {
        /// The configured path.
        path: PathBuf,
    },
    /// A core module, not a component.
    #[error(
        "{path}: is a core WebAssembly module, not a component; build plugins for `wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The configured path.
        path: PathBuf,
    },
    /// The component is malformed.
    #[error("{path}: malformed component: {message}")]
    Malformed {
        /// The configured path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The component does not export the plugin interface.
    #[error(
        "{path}: does not export `{ABI_PACKAGE}/plugin`; is it an Assessment Runtime plugin? (exports: {exports})"
    )]
    NotAPlugin {
        /// The configured path.
        path: PathBuf,
        /// What it exports instead.
        exports: String,
    },
    /// Built for a plugin ABI this host does not implement.
    #[error(
        "{path}: built for plugin ABI {ABI_PACKAGE}@{found}, this host supports {ABI_PACKAGE}@{ABI_VERSION}; rebuild the plugin with a matching assessment-sdk or upgrade the host"
    )]
    UnsupportedAbi {
        /// The configured path.
        path: PathBuf,
        /// The version the component targets.
        found: String,
    },
    /// Imports something the host does not provide.
    #[error("{path}: imports `{import}`, which this host does not provide to plugins")]
    UnsupportedImport {
        /// The configured path.
        path: PathBuf,
        /// The import.
        import: String,
    },
}

/// A component read from disk, checked for ABI compatibility, not compiled.
#[derive(Debug, Clone)]
pub struct ComponentFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// `sha256:` + hex digest of the bytes.
    pub digest: String,
    /// The imports of the component (interface names with versions).
    pub imports: Vec<String>,
}

/// Interfaces (without version) a plugin may import besides the plugin ABI:
/// what Rust's standard library for `wasm32-wasip2` links. They are linked
/// with nothing reachable (see `capabilities`).
const WASI_PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

impl ComponentFile {
    /// Read `path` and check, without compiling, that it is a component for
    /// this host's plugin ABI.
    pub fn read(path: &Path) -> Result<Self, PluginFileError> {
        let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => PluginFileError::Missing {
                path: path.to_path_buf(),
            },
            _ => PluginFileError::Read {
                path: path.to_path_buf(),
                source,
            },
        })?;
        if meta.len() > MAX_COMPONENT_BYTES {
            return Err(PluginFileError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| PluginFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, bytes)
    }

    /// Check `bytes` (named `path` in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, PluginFileError> {
        let path_buf = path.to_path_buf();
        if Parser::is_core_wasm(&bytes) {
            return Err(PluginFileError::CoreModule { path: path_buf });
        }
        if !Parser::is_component(&bytes) {
            return Err(PluginFileError::NotWasm { path: path_buf });
        }
        let (imports, exports) =
            top_level_names(&bytes).map_err(|message| PluginFileError::Malformed {
                path: path_buf.clone(),
                message,
            })?;
        check_abi(&path_buf, &imports, &exports)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Ok(ComponentFile {
            path: path_buf,
            bytes,
            digest,
            imports,
        })
    }
}

/// The import and export names of the outermost component.
fn top_level_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested modules and components have their own sections; only depth 0
    // is the plugin's interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// `assessment:plugin/plugin@0.1.3` → `Some("0.1.3")`.
fn abi_version_of(name: &str, interface: &str) -> Option<String> {
    let rest = name.strip_prefix(ABI_PACKAGE)?.strip_prefix('/')?;
    let (iface, version) = rest.split_once('@')?;
    (iface == interface || interface.is_empty()).then(|| version.to_string())
}

/// Versions in the same semver-compatible line (same major, and same minor
/// while the major is 0) are interchangeable, as in the component model.
fn compatible(found: &str) -> bool {
    let (Ok(found), Ok(ours)) = (
        semver::Version::parse(found),
        semver::Version::parse(ABI_VERSION),
    ) else {
        return false;
    };
    found.major == ours.major && (ours.major != 0 || found.minor == ours.minor)
}

fn check_abi(path: &Path, imports: &[String], exports: &[String]) -> Result<(), PluginFileError> {
    let Some(found) = exports.iter().find_map(|e| abi_version_of(e, "plugin")) else {
        return Err(PluginFileError::NotAPlugin {
            path: path.to_path_buf(),
            exports: if exports.is_empty() {
                "none".to_string()
            } else {
                exports.join(", ")
            },
        });
    };
    if !compatible(&found) {
        return Err(PluginFileError::UnsupportedAbi {
            path: path.to_path_buf(),
            found,
        });
    }
    for import in imports {
        let ok = match abi_version_of(import, "") {
            Some(version) => compatible(&version),
            None => WASI_PACKAGES.iter().any(|p| import.starts_with(p)) && import.contains("@0.2."),
        };
        if !ok {
            return Err(PluginFileError::UnsupportedImport {
                path: path.to_path_buf(),
                import: import.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_versions_follow_component_model_semver() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.1.0"));
        assert!(!compatible("banana"));
        assert_eq!(
            abi_version_of("assessment:plugin/plugin@0.1.0", "plugin").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            abi_version_of("assessment:plugin/target@0.1.0", "plugin"),
            None
        );
        assert_eq!(
            abi_version_of("assessment:plugin/target@0.1.0", "").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(abi_version_of("other:plugin/plugin@0.1.0", "plugin"), None);
    }

    #[test]
    fn imports_outside_the_abi_and_wasi_are_refused() {
        let exports = vec!["assessment:plugin/plugin@0.1.0".to_string()];
        let ok = vec![
            "assessment:plugin/target@0.1.0".to_string(),
            "wasi:cli/environment@0.2.6".to_string(),
        ];
        assert!(check_abi(Path::new("p"), &ok, &exports).is_ok());
        for bad in [
            "wasi:http/outgoing-handler@0.2.0",
            "evil:host/exec",
            "wasi:cli/environment@0.3.0",
        ] {
            let err = check_abi(Path::new("p"), &[bad.to_string()], &exports).unwrap_err();
            assert!(
                matches!(err, PluginFileError::UnsupportedImport { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn core_modules_and_garbage_are_told_apart() {
        let core = b"\0asm\x01\0\0\0".to_vec();
        assert!(matches!(
            ComponentFile::from_bytes(Path::new("m.wasm"), core),
            Err(PluginFileError::CoreModule { .. })
        ));
        assert!(matches!(
            ComponentFile::from_bytes(Path::new("t.wasm"), b"hello".to_vec()),
            Err(PluginFileError::NotWasm { .. })
        ));
    }
}
