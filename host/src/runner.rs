//! One plugin, one job: prepare a configured plugin (read, check, compile,
//! describe, validate its configuration and grants), then run it with its
//! grants and limits, turning every way it can end into a [`JobReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use assessment_registry::manifest::valid_plugin_name;
use serde::Serialize;
use tracing::Instrument;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::abi::PluginPre;
use crate::agent_config::{AgentConfig, PluginOrigin, PluginSpec};
use crate::bindings::latest::exports::assessment::plugin::plugin::{PluginInfo, RunError};
use crate::capabilities::config::ConfigCtx;
use crate::capabilities::log::LogSink;
use crate::capabilities::results::{Finding, Reference, ResultsCtx};
use crate::capabilities::target::TargetCtx;
use crate::capabilities::{JobLabels, PluginState};
use crate::engine::{Allocation, PluginEngine};
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
/// Slack past the deadline before a run blocked in the host is abandoned
/// (a plugin executing wasm is interrupted at the deadline itself).
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// How a job ended badly: a wire type (the heartbeat reports it), defined
/// in the capability model and re-exported here where jobs fail.
pub use capability_model::wire::JobErrorKind;

/// Why a job failed, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobError {
    /// The category.
    pub kind: JobErrorKind,
    /// What happened and what to do.
    pub message: String,
}

impl JobError {
    /// An error of `kind`.
    pub fn new(kind: JobErrorKind, message: impl Into<String>) -> Self {
        JobError {
            kind,
            message: message.into(),
        }
    }
}

/// The outcome of one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The configured plugin name.
    pub plugin: String,
    /// The configured instance (the plugin name unless `instance` is set):
    /// what tells two runs of one plugin apart.
    pub instance: String,
    /// The component file run, or the release it comes from.
    pub path: String,
    /// Name, version and digest, once known.
    pub id: Option<PluginId>,
    /// The plugin ABI version the plugin was built for, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi: Option<&'static str>,
    /// Unique id of this job.
    pub job_id: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// `None` when the job completed.
    pub error: Option<JobError>,
    /// The plugin's note from its run summary.
    pub note: Option<String>,
    /// Accepted findings (kept when the job failed after emitting them).
    pub findings: Vec<Finding>,
    /// Denied calls (the first hundred).
    pub denials: Vec<String>,
    /// How many calls were denied.
    pub denial_count: u64,
    /// Log bytes dropped past the log budget.
    pub log_dropped_bytes: u64,
}

impl JobReport {
    /// Whether the job completed.
    pub fn completed(&self) -> bool {
        self.error.is_none()
    }

    /// A job that failed before the plugin ran.
    pub fn not_run(spec: &PluginSpec, id: Option<PluginId>, error: JobError) -> Self {
        JobReport {
            abi: None,
            plugin: spec.name.clone(),
            instance: spec.instance.clone(),
            path: spec.location(),
            id,
            job_id: new_job_id(),
            started_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            duration_ms: 0,
            error: Some(error),
            note: None,
            findings: Vec::new(),
            denials: Vec::new(),
            denial_count: 0,
            log_dropped_bytes: 0,
        }
    }
}

fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
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
        let downloader = Downloader::new(config.download_timeout, config.download_retries)?;
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
    pre: PluginPre,
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
            let file = tokio::task::spawn_blocking(move || ComponentFile::read(&path, max))
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

fn new_state(
    labels: &Arc<JobLabels>,
    config: ConfigCtx,
    grants: GrantSet,
    root: &Path,
    limits: &Limits,
    known_checks: BTreeMap<String, Vec<Reference>>,
) -> Result<PluginState, JobError> {
    let target = TargetCtx::open_for_run(root, grants, limits.clone()).map_err(|e| {
        JobError::new(
            JobErrorKind::Grant,
            format!("plugin `{}`: {e}", labels.plugin),
        )
    })?;
    let log = Arc::new(LogSink::new(labels.clone(), limits.log_bytes));
    Ok(PluginState::new(
        config,
        target,
        ResultsCtx::new(known_checks, limits.max_findings, limits.max_findings_bytes),
        log,
        limits.memory_bytes,
    ))
}

type CallFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// Instantiate and call one export within the memory limit and the
/// deadline; traps become job errors.
async fn call_limited<T>(
    engine: &PluginEngine,
    pre: &PluginPre,
    state: PluginState,
    limits: &Limits,
    call: impl for<'a> FnOnce(&'a PluginPre, &'a mut Store<PluginState>) -> CallFuture<'a, T>,
) -> (Result<T, JobError>, PluginState) {
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|state| &mut state.limiter);
    let deadline = Instant::now() + limits.timeout;
    // Yield to the executor every epoch tick so one plugin cannot hold a
    // worker thread; interrupt at the deadline.
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store.set_epoch_deadline(1);

    let outcome =
        tokio::time::timeout(limits.timeout + DEADLINE_GRACE, call(pre, &mut store)).await;
    let state = store.into_data();
    let result = match outcome {
        Err(_) => Err(deadline_error(limits)),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify_trap(&error, &state, limits)),
    };
    (result, state)
}

fn deadline_error(limits: &Limits) -> JobError {
    JobError::new(
        JobErrorKind::Deadline,
        format!(
            "the plugin did not finish within its deadline of {} and was stopped; raise `limits.timeout` if the assessment legitimately needs longer",
            humantime::format_duration(limits.timeout)
        ),
    )
}

fn classify_trap(error: &wasmtime::Error, state: &PluginState, limits: &Limits) -> JobError {
    if state.limiter.hit {
        return JobError::new(
            JobErrorKind::MemoryLimit,
            format!(
                "the plugin exceeded its memory limit of {} MiB and was stopped; raise `limits.memory_mib` if the assessment legitimately needs more",
                limits.memory_bytes >> 20
            ),
        );
    }
    let what = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return deadline_error(limits),
        Some(Trap::StackOverflow) => "it overflowed its stack (unbounded recursion)".to_string(),
        Some(Trap::MemoryOutOfBounds) => {
            "it accessed memory out of bounds (an overflow of the stack it keeps in its linear memory, or a bug)".to_string()
        }
        Some(Trap::UnreachableCodeReached) => "it reached unreachable code (a panic)".to_string(),
        Some(trap) => trap.to_string(),
        // The text may carry names from the component's name section:
        // guest text, escaped and cut.
        None => bounded(&error.root_cause().to_string(), caps::RUN_ERROR),
    };
    // The wasm backtrace (guest function names) only at debug level.
    tracing::debug!(
        backtrace = %bounded(&format!("{error:#}"), caps::LOG_MESSAGE),
        "trap"
    );
    JobError::new(
        JobErrorKind::Trap,
        format!("the plugin trapped: {what}; a bug in the plugin (its stderr is in the log)"),
    )
}

/// Run a prepared plugin once against `root`.
pub async fn run_job(engine: &PluginEngine, prepared: &PreparedPlugin, root: &Path) -> JobReport {
    let job_id = new_job_id();
    let span = tracing::info_span!(
        "job",
        plugin = %prepared.id.name,
        version = %prepared.id.version,
        digest = %prepared.id.digest,
        job = %job_id
    );
    run_job_inner(engine, prepared, root, job_id)
        .instrument(span)
        .await
}

async fn run_job_inner(
    engine: &PluginEngine,
    prepared: &PreparedPlugin,
    root: &Path,
    job_id: String,
) -> JobReport {
    let spec = &prepared.spec;
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let labels = Arc::new(JobLabels {
        plugin: prepared.id.name.clone(),
        version: prepared.id.version.clone(),
        digest: prepared.id.digest.clone(),
        job_id: job_id.clone(),
    });
    let mut report = JobReport {
        plugin: spec.name.clone(),
        instance: spec.instance.clone(),
        path: prepared.path.clone(),
        id: Some(prepared.id.clone()),
        abi: Some(prepared.abi().version()),
        job_id,
        started_at,
        duration_ms: 0,
        error: None,
        note: None,
        findings: Vec::new(),
        denials: Vec::new(),
        denial_count: 0,
        log_dropped_bytes: 0,
    };
    let known: BTreeMap<String, Vec<Reference>> = prepared
        .info
        .checks
        .iter()
        .map(|c| {
            let references = c
                .references
                .iter()
                .map(|r| Reference {
                    benchmark: r.benchmark.clone(),
                    id: r.id.clone(),
                    url: r.url.clone(),
                })
                .collect();
            (c.id.clone(), references)
        })
        .collect();
    let mut state = match new_state(
        &labels,
        ConfigCtx::new(spec.config.clone()),
        prepared.grants.clone(),
        root,
        &spec.limits,
        known,
    ) {
        Ok(state) => state,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    state.results.allow_repeats = prepared.abi() == capability_model::AbiVersion::V0_1;
    tracing::info!("run started");
    let (outcome, mut state) = call_limited(
        engine,
        &prepared.pre,
        state,
        &spec.limits,
        |plugin, store| Box::pin(async move { plugin.run(store).await }),
    )
    .await;

    report.findings = state.results.take();
    let (denials, count) = state.target.denials();
    report.denials = denials.to_vec();
    report.denial_count = count;
    report.log_dropped_bytes = state.log.dropped_bytes();
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.error = if state.results.limit_reached {
        Some(JobError::new(
            JobErrorKind::FindingLimit,
            format!(
                "the plugin tried to emit more than {} findings or more than {} KiB of findings; the first {} are kept; raise `limits.max_findings` or `limits.max_findings_kib` if that many are legitimate",
                spec.limits.max_findings,
                spec.limits.max_findings_bytes >> 10,
                report.findings.len()
            ),
        ))
    } else {
        match outcome {
            Ok(Ok(summary)) => {
                report.note = summary.note.map(|n| bounded(&n, caps::RUN_ERROR));
                None
            }
            Ok(Err(RunError::InvalidConfig(m))) => Some(JobError::new(
                JobErrorKind::PluginConfig,
                format!(
                    "the plugin rejected its configuration: {}",
                    bounded(&m, caps::RUN_ERROR)
                ),
            )),
            Ok(Err(RunError::Failed(m))) => Some(JobError::new(
                JobErrorKind::PluginFailed,
                format!("the plugin failed: {}", bounded(&m, caps::RUN_ERROR)),
            )),
            Err(e) => Some(e),
        }
    };
    match &report.error {
        // Not yet recorded anywhere: the daemon logs `run recorded` once the
        // findings are durable in its outbox.
        None => tracing::info!(
            findings = report.findings.len(),
            duration_ms = report.duration_ms,
            "run finished"
        ),
        Some(e) => {
            tracing::error!(kind = ?e.kind, findings = report.findings.len(), "run failed: {}", e.message)
        }
    }
    report
}
