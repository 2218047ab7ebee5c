//! The executor: one job of a prepared plugin (see `loader`): a store of
//! its own with the job's grants and limits, instantiate, `run`, collect
//! the findings, drop; every way a job can end becomes a [`JobReport`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tracing::Instrument;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::abi::PluginPre;
use crate::agent_config::PluginSpec;
use crate::bindings::latest::exports::assessment::plugin::plugin::RunError;
use capability_model::wire::Provenance;

use crate::capabilities::config::ConfigCtx;
use crate::capabilities::log::LogSink;
use crate::capabilities::results::{Finding, Reference, ResultsCtx};
use crate::capabilities::target::TargetCtx;
use crate::capabilities::{JobLabels, PluginState};
use crate::engine::PluginEngine;
use crate::guest_text::{bounded, caps};
use crate::loader::PreparedPlugin;
use crate::plugins::PluginId;
use crate::policy::{GrantSet, Limits};

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
    /// What the host served the plugin (files, directories, commands,
    /// environment names, package queries, denials), bounded; carried in
    /// the job's evidence too.
    pub provenance: Provenance,
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
            provenance: Provenance::new(),
        }
    }
}

pub(crate) fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn new_state(
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

pub(crate) type CallFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// Instantiate and call one export within the memory limit and the
/// deadline; traps become job errors.
pub(crate) async fn call_limited<T>(
    engine: &PluginEngine,
    pre: &PluginPre,
    state: PluginState,
    limits: &Limits,
    call: impl for<'a> FnOnce(&'a PluginPre, &'a mut Store<PluginState>) -> CallFuture<'a, T>,
) -> (Result<T, JobError>, PluginState) {
    // The epoch advances (deadline, yields) while this call runs.
    let _ticking = engine.running();
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
        provenance: Provenance::new(),
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
    report.provenance = state.provenance.take();
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
