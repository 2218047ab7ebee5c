//! The plugin manager: from "plugin X version V from registry R" to a
//! verified component, downloading only when the store does not already
//! hold it. Nothing is stored, compiled or run before it is verified:
//! signature of the manifest by a trusted key, the manifest naming exactly
//! the plugin and version asked for (no substitution, no rollback), the
//! component's size and sha256 digest, and the audit.

use std::path::Path;
use std::sync::OnceLock;

use assessment_registry::manifest::{Manifest, asset_names, release_tag, sha256_hex};
use assessment_registry::minisign::{PublicKey, SignatureBox};
use capability_model::diff::Declaration;

use super::ComponentFile;
use super::fetch::{Downloader, FetchError};
use super::store::{PluginStore, StoreError, StoredRelease};

/// Largest manifest accepted.
const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Largest signature file accepted.
const MAX_SIGNATURE_BYTES: u64 = 4 << 10;

/// Why a plugin could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The download failed.
    #[error("download failed: {0}")]
    Fetch(#[from] FetchError),
    /// Verification failed; nothing was stored.
    #[error("verification failed: {0}")]
    Verify(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A verified plugin, ready to compile.
#[derive(Debug, Clone)]
pub struct ResolvedPlugin {
    /// The component (its path is the store's blob).
    pub file: ComponentFile,
    /// Its verified manifest.
    pub manifest: Manifest,
}

/// Resolves registry plugins through the store.
#[derive(Debug)]
pub struct PluginManager {
    state_dir: std::path::PathBuf,
    store: OnceLock<PluginStore>,
    downloader: Downloader,
    keys: Vec<PublicKey>,
}

impl PluginManager {
    /// A manager whose store lives in `state_dir/plugins` (created on first
    /// use), trusting `keys`.
    pub fn new(state_dir: &Path, downloader: Downloader, keys: Vec<PublicKey>) -> Self {
        PluginManager {
            state_dir: state_dir.to_path_buf(),
            store: OnceLock::new(),
            downloader,
            keys,
        }
    }

    /// The store, opened (and created) on first use.
    pub fn store(&self) -> Result<&PluginStore, StoreError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = PluginStore::open(&self.state_dir)?;
        Ok(self.store.get_or_init(|| store))
    }

    /// The verified plugin `name` `version`, from the store or downloaded
    /// from `base_url` (release layout: `{base_url}/{name}/v{version}/{asset}`).
    pub async fn resolve(
        &self,
        name: &str,
        version: &str,
        base_url: &str,
        max_bytes: u64,
    ) -> Result<ResolvedPlugin, ResolveError> {
        let store = self.store()?;
        let metrics = crate::metrics::global();
        if let Some(stored) = store.release(name, version)? {
            let started = std::time::Instant::now();
            let verified = self.verify_stored(store, &stored, max_bytes);
            metrics.supply_step("verify", verified.is_ok(), started.elapsed());
            match verified {
                Ok(resolved) => return Ok(resolved),
                Err(e) => tracing::warn!(
                    plugin = name,
                    version,
                    "the stored release does not verify, downloading it again: {e}"
                ),
            }
        }
        let started = std::time::Instant::now();
        let fetched = self.fetch(store, name, version, base_url, max_bytes).await;
        metrics.supply_step("fetch", fetched.is_ok(), started.elapsed());
        fetched
    }

    /// Re-verify a stored release against the current trusted keys.
    pub fn verify_stored(
        &self,
        store: &PluginStore,
        stored: &StoredRelease,
        max_bytes: u64,
    ) -> Result<ResolvedPlugin, ResolveError> {
        let manifest = self.verify_manifest(
            &stored.name,
            &stored.version,
            &stored.manifest,
            &stored.signature,
        )?;
        let path = store.blob_path(&manifest.component.sha256);
        let bytes = std::fs::read(&path)
            .map_err(|e| ResolveError::Verify(format!("{}: {e}", path.display())))?;
        let file = verify_component(&path, bytes, &manifest, max_bytes)?;
        Ok(ResolvedPlugin { file, manifest })
    }

    async fn fetch(
        &self,
        store: &PluginStore,
        name: &str,
        version: &str,
        base_url: &str,
        max_bytes: u64,
    ) -> Result<ResolvedPlugin, ResolveError> {
        let (_, manifest_asset, signature_asset) = asset_names(name, version);
        let base = format!(
            "{}/{}",
            base_url.trim_end_matches('/'),
            release_tag(name, version)
        );
        tracing::info!(plugin = name, version, from = %base, "downloading plugin");
        let manifest_bytes = self
            .downloader
            .get(&format!("{base}/{manifest_asset}"), MAX_MANIFEST_BYTES)
            .await?;
        let signature = self
            .downloader
            .get(&format!("{base}/{signature_asset}"), MAX_SIGNATURE_BYTES)
            .await?;
        let signature = String::from_utf8(signature)
            .map_err(|_| ResolveError::Verify("the signature file is not text".to_string()))?;
        let manifest = self.verify_manifest(name, version, &manifest_bytes, &signature)?;

        // Never accept more bytes than the signed manifest announces.
        if manifest.component.size > max_bytes {
            return Err(ResolveError::Verify(format!(
                "the signed manifest announces a component of {} bytes, more than the {max_bytes}-byte limit; raise `limits.component_mib` for this plugin if it is legitimately that large",
                manifest.component.size
            )));
        }
        let url = format!("{base}/{}", manifest.component.file);
        let bytes = self.downloader.get(&url, manifest.component.size).await?;
        let file = verify_component(Path::new(&url), bytes, &manifest, max_bytes)?;

        let _lock = store.write_lock()?;
        let path = store.put_blob(&manifest.component.sha256, &file.bytes)?;
        store.put_release(&StoredRelease {
            name: name.to_string(),
            version: version.to_string(),
            manifest: manifest_bytes,
            signature,
        })?;
        tracing::info!(plugin = name, version, digest = %file.digest, "plugin verified and stored");
        self.log_upgrade(store, &manifest, &file);
        Ok(ResolvedPlugin {
            file: ComponentFile { path, ..file },
            manifest,
        })
    }

    /// When `new` replaces an older stored version of its plugin (the
    /// highest one below it), log what it declares beyond that version
    /// (warn) and what it no longer declares (info): the capability diff a
    /// release is reviewed by, so that an operator sees on upgrade what the
    /// plugin may now ask for. The older release is verified again first;
    /// one that does not verify is not compared with.
    fn log_upgrade(&self, store: &PluginStore, new: &Manifest, file: &ComponentFile) {
        let Some((old, stored)) = previous_stored(store, &new.name, &new.version) else {
            return;
        };
        let declared = self
            .verify_manifest(
                &stored.name,
                &stored.version,
                &stored.manifest,
                &stored.signature,
            )
            .and_then(|manifest| stored_declaration(store, manifest));
        let old_declaration = match declared {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    plugin = %new.name,
                    old_version = %old,
                    new_version = %new.version,
                    "cannot tell what the new version declares beyond the stored one: {e}"
                );
                return;
            }
        };
        let new_declaration = Declaration {
            capabilities: new.capabilities.clone(),
            imports: file.imports.iter().cloned().collect(),
            component_size: Some(new.component.size),
        };
        let diff = capability_model::diff::diff(&old_declaration, &new_declaration);
        for change in &diff.widenings {
            tracing::warn!(
                plugin = %new.name,
                old_version = %old,
                new_version = %new.version,
                kind = %change.kind,
                old = change.old.as_deref(),
                new = change.new.as_deref(),
                "upgrade declares more than the version it replaces: {change} (in force only where the operator grants it)"
            );
        }
        for change in &diff.narrowings {
            tracing::info!(
                plugin = %new.name,
                old_version = %old,
                new_version = %new.version,
                kind = %change.kind,
                old = change.old.as_deref(),
                new = change.new.as_deref(),
                "upgrade declares less than the version it replaces: {change}"
            );
        }
    }

    fn verify_manifest(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
        signature: &str,
    ) -> Result<Manifest, ResolveError> {
        let verify = |m: String| ResolveError::Verify(m);
        let signature = SignatureBox::from_text(signature)
            .map_err(|e| verify(format!("manifest signature: {e}")))?;
        let key = signature
            .verify_any(&self.keys, bytes)
            .map_err(|e| verify(format!("manifest of {name} {version}: {e}; add the publisher's key to runtime.trusted_keys only if you trust it")))?;
        let manifest = Manifest::from_bytes(bytes).map_err(|e| verify(e.to_string()))?;
        if manifest.name != name {
            return Err(verify(format!(
                "the release of `{name}` {version} carries a manifest for plugin `{}`; refusing a substituted plugin",
                manifest.name
            )));
        }
        if manifest.version != version {
            return Err(verify(format!(
                "the release of `{name}` {version} carries a manifest for version {}; refusing a substitution or rollback",
                manifest.version
            )));
        }
        tracing::debug!(plugin = name, version, key = %key.key_id_hex(), "manifest signature verified");
        Ok(manifest)
    }
}

/// The highest stored version of `name` below `version`, with its release.
fn previous_stored(
    store: &PluginStore,
    name: &str,
    version: &str,
) -> Option<(semver::Version, StoredRelease)> {
    let new = semver::Version::parse(version).ok()?;
    let releases = match store.releases() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(plugin = name, "cannot list the stored releases: {e}");
            return None;
        }
    };
    releases
        .into_iter()
        .filter(|r| r.name == name)
        .filter_map(|r| Some((semver::Version::parse(&r.version).ok()?, r)))
        .filter(|(v, _)| *v < new)
        .max_by(|a, b| a.0.cmp(&b.0))
}

/// What a stored release (its manifest verified) declares, with the
/// imports of its stored component. The component was audited in full
/// when it was stored, and its digest is checked here, so only its
/// structure is read again.
fn stored_declaration(
    store: &PluginStore,
    manifest: Manifest,
) -> Result<Declaration, ResolveError> {
    let path = store.blob_path(&manifest.component.sha256);
    let bytes = std::fs::read(&path)
        .map_err(|e| ResolveError::Verify(format!("{}: {e}", path.display())))?;
    let digest = signed_digest(&path, &bytes, &manifest)?;
    let known = assessment_registry::audit::Known {
        sha256: Some(&digest),
        validated: true,
    };
    let report = assessment_registry::audit::audit_known(&bytes, None, u64::MAX, known);
    Ok(Declaration {
        capabilities: manifest.capabilities,
        imports: report.imports.into_iter().collect(),
        component_size: Some(manifest.component.size),
    })
}

/// The SHA-256 of `bytes` (read from `path`), if it is the one `manifest`
/// signs.
fn signed_digest(path: &Path, bytes: &[u8], manifest: &Manifest) -> Result<String, ResolveError> {
    let digest = sha256_hex(bytes);
    if digest != manifest.component.sha256 {
        return Err(ResolveError::Verify(format!(
            "{}: sha256 {digest} does not match the signed manifest's {}",
            path.display(),
            manifest.component.sha256
        )));
    }
    Ok(digest)
}

/// Size, digest, then the full audit against the manifest.
fn verify_component(
    path: &Path,
    bytes: Vec<u8>,
    manifest: &Manifest,
    max_bytes: u64,
) -> Result<ComponentFile, ResolveError> {
    if bytes.len() as u64 != manifest.component.size {
        return Err(ResolveError::Verify(format!(
            "{}: {} bytes, the signed manifest says {}",
            path.display(),
            bytes.len(),
            manifest.component.size
        )));
    }
    let digest = signed_digest(path, &bytes, manifest)?;
    let known = assessment_registry::audit::Known {
        sha256: Some(&digest),
        validated: false,
    };
    ComponentFile::audited_known(path, bytes, Some(manifest), max_bytes, known)
        .map_err(|e| ResolveError::Verify(e.to_string()))
}
