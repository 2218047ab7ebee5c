//! The loader: each configured plugin is prepared (read or fetched and
//! verified, audited, compiled or loaded from its precompiled artifact,
//! linked, described, and its configuration and grants checked) once per
//! configuration generation, and the ready plugin is kept for every run of
//! that generation; the executor (`executor::run_job`) then only
//! instantiates, runs and collects. A new generation (a configuration
//! change) starts with a new loader, so a changed plugin or grant takes
//! effect with the configuration that brings it.
//!
//! Plugins are kept by instance: two instances of one plugin are prepared
//! each with its own configuration and grants (their component is read and
//! compiled once, the precompiled artifact being keyed by content).
//!
//! A failed preparation is not kept: the next run tries again, so a
//! registry that was down or a component being replaced recovers on its
//! own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assessment_registry::manifest::valid_plugin_name;

use crate::abi::PluginPre;
use crate::agent_config::{AgentConfig, PluginOrigin, PluginSpec};
use crate::bindings::latest::exports::assessment::plugin::plugin::PluginInfo;
use crate::capabilities::JobLabels;
use crate::capabilities::config::ConfigCtx;
use crate::capabilities::target::TargetCtx;
use crate::engine::{Allocation, PluginEngine};
use crate::executor::{JobError, JobErrorKind, call_limited, new_state};
use crate::guest_text::{bounded, caps};
use crate::plugins::fetch::Downloader;
use crate::plugins::manager::{PluginManager, ResolveError};
use crate::plugins::{ComponentFile, PluginId};
use crate::policy::{GrantSet, Limits};

/// `describe` must answer within this time (or the run timeout, if shorter).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `describe` answer, all its strings together: a plugin
/// announces its checks and options, not a data set.
pub const MAX_DESCRIBE_BYTES: usize = 256 << 10;
/// Checks one plugin may announce.
pub const MAX_CHECKS: usize = 10_000;
/// References one check may announce.
pub const MAX_REFERENCES: usize = 16;

/// The plugins of one configuration generation, prepared on first use.
pub struct Loader {
    runtime: Arc<Runtime>,
    root: PathBuf,
    /// By instance.
    ready: Mutex<HashMap<String, Arc<PreparedPlugin>>>,
}

/// The span of the jobs of `spec`: it adds the instance to every log line
/// of a job (the loader's, the runner's, the plugin's own) when the
/// instance is not the plugin's name; otherwise none, so that the log of a
/// configuration without instances is as it was.
pub fn instance_span(spec: &PluginSpec) -> tracing::Span {
    if spec.has_own_instance() {
        tracing::info_span!("instance", instance = %spec.instance)
    } else {
        tracing::Span::none()
    }
}

impl Loader {
    /// A loader for plugins run by `runtime` against the assessment `root`.
    pub fn new(runtime: Arc<Runtime>, root: PathBuf) -> Self {
        Loader {
            runtime,
            root,
            ready: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime the plugins run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The assessment root.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The plugin of `spec`, ready to run: prepared now on its first use in
    /// this generation, kept afterwards under its instance. Runs of one
    /// instance never overlap (the scheduler sees to it), so an instance is
    /// never prepared twice at once.
    pub async fn prepared(
        &self,
        spec: &PluginSpec,
    ) -> Result<Arc<PreparedPlugin>, (Option<PluginId>, JobError)> {
        if let Some(ready) = self.lookup(&spec.instance) {
            return Ok(ready);
        }
        let prepared = Arc::new(prepare(&self.runtime, spec, &self.root).await?);
        tracing::info!(
            plugin = %spec.name,
            version = %prepared.id.version,
            digest = %prepared.id.digest,
            "plugin loaded: ready to run until the configuration changes"
        );
        if let Ok(mut ready) = self.ready.lock() {
            ready.insert(spec.instance.clone(), prepared.clone());
        }
        Ok(prepared)
    }

    fn lookup(&self, instance: &str) -> Option<Arc<PreparedPlugin>> {
        self.ready.lock().ok()?.get(instance).cloned()
    }
}

/// What preparing and running plugins share: the engine and the plugin
/// manager (with its store).
pub struct Runtime {
    /// The wasmtime engine.
    pub engine: PluginEngine,
    /// Registry plugins and the store.
    pub manager: PluginManager,
}

impl Runtime {
    /// The engine (its instance pool sized for `max_concurrent_jobs`) and a
    /// manager configured by `config`. Refuses a state directory that is
    /// not private to the agent's user.
    pub fn new(config: &AgentConfig) -> anyhow::Result<Self> {
        Self::with_allocation(config, Allocation::for_jobs(config.max_concurrent_jobs))
    }

    /// [`Runtime::new`] with instances allocated as `allocation` says.
    pub fn with_allocation(config: &AgentConfig, allocation: Allocation) -> anyhow::Result<Self> {
        crate::durable::ensure_private_dir(&config.state_dir)
            .map_err(|e| anyhow::anyhow!("state directory (runtime.state_dir): {e}"))?;
        // Leftovers of writes a crash interrupted (credentials, the last
        // good configuration); ten minutes spares a write in progress.
        let removed = crate::durable::remove_stale_write_leftovers(
            &config.state_dir,
            std::time::Duration::from_secs(600),
        );
        if removed > 0 {
            tracing::info!(
                removed,
                "removed leftovers of interrupted writes from the state directory"
            );
        }
        let engine = PluginEngine::with_allocation(allocation)?;
        let downloader = Downloader::new(
            config.download_timeout,
            config.download_retries,
            &config.network,
        )?;
        Ok(Runtime {
            engine,
            manager: PluginManager::new(&config.state_dir, downloader, config.trusted_keys.clone()),
        })
    }
}

/// A plugin ready to run: compiled, linked, described and validated.
#[derive(Clone)]
pub struct PreparedPlugin {
    /// The configuration it runs with.
    pub spec: PluginSpec,
    /// The component file run.
    pub path: String,
    /// The grants in force: the configured ones, narrowed to what a signed
    /// manifest declares.
    pub grants: GrantSet,
    /// Who it is.
    pub id: PluginId,
    /// Its own description.
    pub info: PluginInfo,
    pub(crate) pre: PluginPre,
}

impl PreparedPlugin {
    /// The ABI version the plugin was built for.
    pub fn abi(&self) -> capability_model::AbiVersion {
        self.pre.abi()
    }
}

/// Read (or download and verify), check, compile and describe the plugin
/// of `spec`, then check its configuration and grants against it.
pub async fn prepare(
    runtime: &Runtime,
    spec: &PluginSpec,
    root: &Path,
) -> Result<PreparedPlugin, (Option<PluginId>, JobError)> {
    let engine = &runtime.engine;
    let load = |e: String| (None, JobError::new(JobErrorKind::Load, e));
    let (file, manifest) = match &spec.origin {
        PluginOrigin::Local { path } => {
            let path = path.clone();
            let max = spec.limits.component_bytes;
            // Bytes this host compiled before are not validated again.
            let compiled = runtime.manager.store().ok().cloned();
            let fingerprint = engine.fingerprint().to_string();
            let file = tokio::task::spawn_blocking(move || {
                ComponentFile::read_known(&path, max, |sha256| {
                    compiled.is_some_and(|store| store.has_compiled(sha256, &fingerprint))
                })
            })
            .await
            .map_err(|e| load(format!("host task failed: {e}")))?
            .map_err(|e| load(e.to_string()))?;
            (file, None)
        }
        PluginOrigin::Registry { version, base_url } => {
            let resolved = runtime
                .manager
                .resolve(&spec.name, version, base_url, spec.limits.component_bytes)
                .await
                .map_err(|e| {
                    let kind = match e {
                        ResolveError::Fetch(_) => JobErrorKind::Fetch,
                        ResolveError::Verify(_) => JobErrorKind::Verify,
                        ResolveError::Store(_) => JobErrorKind::Host,
                    };
                    (
                        None,
                        JobError::new(
                            kind,
                            format!(
                                "plugin `{}` {version} from {}: {e}",
                                spec.name,
                                spec.location()
                            ),
                        ),
                    )
                })?;
            (resolved.file, Some(resolved.manifest))
        }
    };
    let digest = file.digest.clone();
    let location = file.path.display().to_string();
    let component = match &manifest {
        Some(m) => {
            let store = runtime.manager.store().map_err(|e| load(e.to_string()))?;
            engine
                .compile_cached(file.bytes, &m.component.sha256, store)
                .await
        }
        // A local component is compiled once per content as well: its
        // artifact is keyed by the digest of the bytes just read, so an
        // edited file is compiled again and an unchanged one never.
        None => match runtime.manager.store() {
            Ok(store) => {
                let sha256 = digest.trim_start_matches("sha256:");
                engine.compile_cached(file.bytes, sha256, store).await
            }
            Err(e) => {
                tracing::warn!(
                    plugin = %spec.name,
                    "compiling without keeping the compiled component: {e}"
                );
                engine.compile(file.bytes).await
            }
        },
    }
    .map_err(|e| load(format!("{location}: {e}")))?;
    let pre = engine
        .pre_instantiate(&component)
        .map_err(|e| load(format!("{location}: {e}")))?;
    let grants = match &manifest {
        Some(m) => {
            let (effective, dropped) = spec.grants.restrict_to(&m.capabilities);
            if !dropped.is_empty() {
                tracing::warn!(
                    plugin = %spec.name,
                    "granted but not declared in the signed manifest, so not in force: {}",
                    dropped.join(", ")
                );
            }
            effective
        }
        None => spec.grants.clone(),
    };
    let (grants, unusable) = grants.usable_by(pre.abi(), &pre.imports);
    if !unusable.is_empty() {
        tracing::warn!(
            plugin = %spec.name,
            "granted, but the plugin does not import the interface that would use it, so not in force: {}",
            unusable.join(", ")
        );
    }

    let provisional = PluginId {
        name: spec.name.clone(),
        version: "unknown".to_string(),
        digest: digest.clone(),
    };
    let describe_limits = Limits {
        timeout: spec.limits.timeout.min(DESCRIBE_TIMEOUT),
        ..spec.limits.clone()
    };
    let labels = Arc::new(JobLabels {
        plugin: spec.name.clone(),
        version: "unknown".to_string(),
        digest: digest.clone(),
        job_id: "describe".to_string(),
    });
    // `describe` runs without any grant: it must not depend on the system.
    let state = new_state(
        &labels,
        ConfigCtx::default(),
        GrantSet::default(),
        Path::new("/"),
        &describe_limits,
        BTreeMap::new(),
    )
    .map_err(|e| (Some(provisional.clone()), e))?;
    let (outcome, _state) = call_limited(engine, &pre, state, &describe_limits, |plugin, store| {
        Box::pin(async move { plugin.describe(store).await })
    })
    .await;
    let info = outcome.map_err(|e| {
        (
            Some(provisional.clone()),
            JobError::new(
                JobErrorKind::Describe,
                format!("describe() failed: {}", e.message),
            ),
        )
    })?;

    let describe_bytes = describe_size(&info);
    if describe_bytes > MAX_DESCRIBE_BYTES || info.checks.len() > MAX_CHECKS {
        return Err((
            Some(provisional.clone()),
            JobError::new(
                JobErrorKind::Describe,
                format!(
                    "describe() returned {describe_bytes} bytes and {} checks, more than the {} KiB and {MAX_CHECKS} checks a plugin may announce",
                    info.checks.len(),
                    MAX_DESCRIBE_BYTES >> 10
                ),
            ),
        ));
    }
    if !valid_plugin_name(&info.name) {
        return Err((
            Some(provisional.clone()),
            JobError::new(
                JobErrorKind::Describe,
                format!(
                    "describe() names the plugin {:?}, not a plugin name (lowercase letters, digits and `-`, starting with a letter, at most 64 bytes)",
                    bounded(&info.name, caps::DESCRIBE_FIELD)
                ),
            ),
        ));
    }

    let id = PluginId {
        name: info.name.clone(),
        version: info.version.clone(),
        digest,
    };
    let describe_error = |message: String| {
        (
            Some(id.clone()),
            JobError::new(JobErrorKind::Describe, message),
        )
    };
    if info.name != spec.name {
        return Err(describe_error(format!(
            "{location} describes itself as `{}`, but the configuration names it `{}`; fix `name` or `path`",
            info.name, spec.name
        )));
    }
    if let Some(m) = manifest.as_ref().filter(|m| m.version != info.version) {
        return Err(describe_error(format!(
            "{location} describes itself as version {}, but its signed manifest says {}; the release is inconsistent",
            bounded(&info.version, caps::DESCRIBE_FIELD),
            m.version
        )));
    }
    if semver::Version::parse(&info.version).is_err() {
        return Err(describe_error(format!(
            "version {:?} is not a semantic version",
            bounded(&info.version, caps::DESCRIBE_FIELD)
        )));
    }
    let mut ids = BTreeSet::new();
    for check in &info.checks {
        if check.id.is_empty() || check.id.len() > 128 || !ids.insert(check.id.as_str()) {
            return Err(describe_error(format!(
                "check id {:?} is empty, too long or announced twice",
                bounded(&check.id, caps::DESCRIBE_FIELD)
            )));
        }
        if check.references.len() > MAX_REFERENCES {
            return Err(describe_error(format!(
                "check {:?} announces {} references, more than {MAX_REFERENCES}",
                bounded(&check.id, caps::DESCRIBE_FIELD),
                check.references.len()
            )));
        }
    }
    ConfigCtx::new(spec.config.clone())
        .validate(&spec.name, &info.config)
        .map_err(|e| (Some(id.clone()), JobError::new(JobErrorKind::Config, e)))?;
    let target = TargetCtx::open(root, grants.clone(), spec.limits.clone()).map_err(|e| {
        (
            Some(id.clone()),
            JobError::new(JobErrorKind::Grant, format!("plugin `{}`: {e}", spec.name)),
        )
    })?;
    for missing in target.missing_grants() {
        tracing::info!(
            plugin = %spec.name,
            "read grant {} does not exist under the assessment root {}; the plugin's calls under it get not-found",
            missing.display(),
            root.display()
        );
    }

    Ok(PreparedPlugin {
        spec: spec.clone(),
        path: location,
        grants,
        id,
        info,
        pre,
    })
}

/// The bytes of text in a `describe` answer.
fn describe_size(info: &PluginInfo) -> usize {
    let checks: usize = info
        .checks
        .iter()
        .map(|c| {
            let references: usize = c
                .references
                .iter()
                .map(|r| r.benchmark.len() + r.id.len() + r.url.as_ref().map_or(0, String::len) + 8)
                .sum();
            c.id.len() + c.title.len() + references + 8
        })
        .sum();
    let options: usize = info
        .config
        .iter()
        .map(|o| o.name.len() + o.description.len() + 8)
        .sum();
    info.name.len() + info.version.len() + info.description.len() + checks + options
}
