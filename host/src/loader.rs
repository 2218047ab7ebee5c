//! The loader: each configured plugin is prepared (read or fetched and
//! verified, audited, compiled or loaded from its precompiled artifact,
//! linked, described, and its configuration and grants checked) once per
//! configuration generation, and the ready plugin is kept for every run of
//! that generation; the executor (`runner::run_job`) then only
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::agent_config::PluginSpec;
use crate::plugins::PluginId;
use crate::runner::{self, JobError, PreparedPlugin, Runtime};

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
        let prepared = Arc::new(runner::prepare(&self.runtime, spec, &self.root).await?);
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
