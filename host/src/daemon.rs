//! The daemon: configuration from the control plane (last good kept), jobs
//! on their schedules, every finding into the durable outbox before the job
//! counts as done, delivery with backoff, heartbeats on their own interval,
//! client certificate renewal before expiry, and a drain on SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::agent_config::{AgentConfig, PluginSpec, Schedule};
use crate::capabilities::results::FindingStatus;
use crate::control_plane::client::{ControlPlaneClient, Heartbeat, renewal_due};
use crate::control_plane::{ConfigSync, Credentials, SyncOutcome};
use crate::executor::{self, JobReport};
use crate::guest_text::{bounded, caps};
use crate::loader::Runtime;
use crate::loader::{Loader, instance_span};
use crate::logging::Logging;
use crate::metrics::{self, FindingLabels, JobLabels, PluginLabels};
use crate::results::evidence::{RunContext, attach_provenance, instance_evidence_records};
use crate::results::outbox::Outbox;
use crate::scheduler::{ScheduledJob, run_schedules};
use crate::service::{Health, Notifier};
use capability_model::wire::heartbeat::{JobOutcome, JobStatus, OutboxDepth, PluginState};

/// Plugins without a schedule run this often in daemon mode.
pub const DEFAULT_SCHEDULE: Duration = Duration::from_secs(3600);
/// Request timeout towards the control plane.
const CONTROL_PLANE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the daemon checks whether its client certificate is due for
/// renewal (it also checks at start).
const RENEWAL_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// What the heartbeat reports, by configured instance (the plugin's name
/// unless `instance` is set, so a configuration without instances reports
/// as before).
#[derive(Debug, Default)]
struct Status {
    jobs: BTreeMap<String, JobStatus>,
    plugins: BTreeMap<String, PluginState>,
    errors: Vec<String>,
}

impl Status {
    /// Record how a job ended; `stored` is `Err` when its findings could
    /// not be put in the outbox (then the run did not complete, whatever
    /// the plugin did).
    fn record(&mut self, report: &JobReport, stored: Result<(), String>) {
        use crate::executor::JobErrorKind::*;
        let state = match &report.error {
            Some(e) if matches!(e.kind, Load | Fetch | Verify | Describe | Config | Grant) => {
                PluginState::Unavailable {
                    kind: e.kind,
                    reason: e.message.clone(),
                }
            }
            _ => PluginState::Ready,
        };
        self.plugins.insert(report.instance.clone(), state);
        let (outcome, reason) = match (&report.error, stored) {
            (_, Err(why)) => (
                JobOutcome::NotRecorded,
                Some(format!("failed to record its findings: {why}")),
            ),
            (None, Ok(())) => (JobOutcome::Completed, None),
            (Some(e), Ok(())) => (JobOutcome::Failed, Some(e.message.clone())),
        };
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for f in &report.findings {
            *statuses.entry(f.status.as_str().to_string()).or_default() += 1;
        }
        self.jobs.insert(
            report.instance.clone(),
            JobStatus {
                // The key says which plugin unless it is an instance of its own.
                plugin: (report.instance != report.plugin).then(|| report.plugin.clone()),
                job_id: report.job_id.clone(),
                started_at: report.started_at.clone(),
                duration_ms: report.duration_ms,
                outcome,
                error_kind: report.error.as_ref().map(|e| e.kind),
                reason,
                findings: report.findings.len(),
                statuses,
            },
        );
    }

    fn error(&mut self, message: String) {
        self.errors.push(message);
        let excess = self.errors.len().saturating_sub(20);
        self.errors.drain(..excess);
    }
}

/// The host name reported with evidence (and in `run --output oscal`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

struct Shared {
    outbox: Arc<Outbox>,
    status: Mutex<Status>,
    delivery: Notify,
    runtime_id: String,
    host: String,
}

/// `period` plus a random extra of up to a tenth of it, so that runtimes
/// started together do not poll the control plane in step.
fn with_jitter(period: Duration) -> Duration {
    let tenth = u64::try_from(period.as_millis() / 10).unwrap_or(u64::MAX);
    period + Duration::from_millis(fastrand::u64(0..=tenth))
}

/// Renews the client certificate (and secret) when it is in the last third
/// of its lifetime; a failure is logged and reported in the heartbeat, and
/// the current credentials stay in use.
async fn renew_certificate_if_due(client: &ControlPlaneClient, state_dir: &Path, shared: &Shared) {
    let report = |message: String| {
        tracing::warn!("{message}");
        if let Ok(mut status) = shared.status.lock() {
            status.error(message);
        }
    };
    let (not_before, not_after) = match client.certificate_validity() {
        None => return, // plain HTTP: no certificate
        Some(Ok(validity)) => validity,
        Some(Err(e)) => return report(format!("the stored client certificate is unreadable: {e}")),
    };
    if !renewal_due(not_before, not_after, SystemTime::now()) {
        return;
    }
    let expires = humantime::format_rfc3339_seconds(not_after);
    tracing::info!(%expires, "renewing the client certificate");
    match client.rotate_and_save(state_dir).await {
        Ok(()) => tracing::info!("client certificate renewed"),
        Err(e) => report(format!(
            "cannot renew the client certificate, which expires {expires}: {e}"
        )),
    }
}

/// Run one job and put its evidence in the outbox; every log line of it
/// names the instance when it is not the plugin's name.
async fn run_and_record(shared: Arc<Shared>, loader: Arc<Loader>, spec: PluginSpec) {
    let span = instance_span(&spec);
    run_and_record_inner(shared, loader, spec)
        .instrument(span)
        .await;
}

async fn run_and_record_inner(shared: Arc<Shared>, loader: Arc<Loader>, spec: PluginSpec) {
    let report = match loader.prepared(&spec).await {
        Ok(prepared) => executor::run_job(&loader.runtime().engine, &prepared, loader.root()).await,
        Err((id, error)) => {
            tracing::error!(plugin = %spec.name, "cannot run plugin: {}", error.message);
            JobReport::not_run(&spec, id, error)
        }
    };
    let mut stored = Ok(());
    if let (Some(id), false) = (&report.id, report.findings.is_empty()) {
        let end = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let ctx = RunContext {
            runtime_id: &shared.runtime_id,
            host: &shared.host,
            plugin: id,
            job_id: &report.job_id,
            start: &report.started_at,
            end: &end,
        };
        let mut records = instance_evidence_records(&ctx, &spec.instance, &report.findings);
        attach_provenance(&mut records, &report.job_id, &report.provenance);
        // Checks without a verdict are no evidence about their control; the
        // operator still hears of those that failed to reach one.
        for f in report
            .findings
            .iter()
            .filter(|f| f.status == FindingStatus::Error)
        {
            tracing::warn!(
                plugin = %spec.name,
                job = %report.job_id,
                check = %bounded(&f.check_id, caps::DESCRIBE_FIELD),
                subject = %f.subject.as_ref().map_or(String::new(), |s| bounded(&s.id, caps::DESCRIBE_FIELD)),
                "the check reached no verdict: {}",
                bounded(&f.message, caps::LOG_MESSAGE)
            );
        }
        stored = if records.is_empty() {
            Ok(())
        } else {
            // A push blocks on the disk (and may wait for another job's
            // write it joins): off the async workers.
            let outbox = shared.outbox.clone();
            tokio::task::spawn_blocking(move || outbox.push(&records))
                .await
                .map_err(|e| format!("the outbox task failed: {e}"))
                .and_then(|pushed| pushed.map_err(|e| e.to_string()))
        };
        match &stored {
            Ok(()) => shared.delivery.notify_one(),
            Err(e) => {
                tracing::error!(plugin = %spec.name, job = %report.job_id, "the findings of this run could not be recorded: {e}");
                if let Ok(mut s) = shared.status.lock() {
                    s.error(format!("{}: {e}", spec.instance));
                }
            }
        }
    }
    // Only now is the run's outcome durable: a kill before this line loses
    // nothing that was reported as recorded.
    if stored.is_ok() {
        tracing::info!(
            plugin = %spec.name,
            job = %report.job_id,
            findings = report.findings.len(),
            "run recorded: its findings are in the outbox"
        );
    }
    record_job_metrics(&report, &stored);
    if let Ok(mut s) = shared.status.lock() {
        s.record(&report, stored);
    }
}

/// Count a finished job, its duration and its findings.
fn record_job_metrics(report: &JobReport, stored: &Result<(), String>) {
    let m = metrics::global();
    let (outcome, error_kind) = match (&report.error, stored) {
        (_, Err(_)) => ("not-recorded", ""),
        (None, Ok(())) => ("completed", ""),
        (Some(e), Ok(())) => ("failed", e.kind.as_str()),
    };
    m.jobs
        .get_or_create(&JobLabels {
            instance: report.instance.clone(),
            plugin: report.plugin.clone(),
            outcome,
            error_kind,
        })
        .inc();
    m.job_duration
        .get_or_create(&PluginLabels {
            plugin: report.plugin.clone(),
        })
        .observe(report.duration_ms as f64 / 1000.0);
    // Counted per (status, severity) first: one label lookup each, not one
    // per finding.
    let mut counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
    for f in &report.findings {
        *counts
            .entry((f.status.as_str(), f.severity.as_str()))
            .or_default() += 1;
    }
    for ((status, severity), n) in counts {
        m.findings
            .get_or_create(&FindingLabels {
                plugin: report.plugin.clone(),
                status,
                severity,
            })
            .inc_by(n);
    }
}

/// One delivery attempt of the outbox, measured.
async fn deliver_measured(
    outbox: &Outbox,
    client: &ControlPlaneClient,
) -> Result<crate::results::outbox::DeliveryReport, crate::results::outbox::OutboxError> {
    let m = metrics::global();
    let started = Instant::now();
    let delivered = outbox.deliver(client).await;
    m.delivery_duration.observe(started.elapsed().as_secs_f64());
    let ok = matches!(&delivered, Ok(report) if report.stopped_by.is_none());
    metrics::Metrics::result(&m.deliveries, if ok { "ok" } else { "error" });
    if let Ok(report) = &delivered {
        m.delivered_records.inc_by(report.records as u64);
    }
    delivered
}

/// The gauges read when metrics are scraped: the outbox's depth and the
/// client certificate's remaining lifetime.
fn refresh_gauges(outbox: &Outbox, client: &ControlPlaneClient) {
    let m = metrics::global();
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if let Ok(depth) = outbox.depth() {
        m.outbox_batches.set(gauge(depth.batches as u64));
        m.outbox_bytes.set(gauge(depth.bytes));
        m.outbox_rejected.set(gauge(depth.rejected as u64));
    }
    if let Some(Ok((_, not_after))) = client.certificate_validity() {
        m.certificate_expires(not_after);
    }
}

/// The schedules of one configuration generation; its jobs share one
/// loader, so each plugin is prepared once in the generation.
fn jobs_for(
    config: &AgentConfig,
    runtime: &Arc<Runtime>,
    shared: &Arc<Shared>,
) -> Vec<ScheduledJob> {
    let loader = Arc::new(Loader::new(runtime.clone(), config.assessment_root.clone()));
    config
        .plugins
        .iter()
        .filter(|p| p.enabled)
        .map(|spec| {
            let schedule = spec
                .schedule
                .clone()
                .unwrap_or(Schedule::Every(DEFAULT_SCHEDULE));
            let jitter = match &schedule {
                Schedule::Every(d) => (*d / 10).min(Duration::from_secs(60)),
                Schedule::Cron(_) => Duration::from_secs(30),
            };
            let (loader, shared, spec) = (loader.clone(), shared.clone(), spec.clone());
            ScheduledJob {
                name: spec.instance.clone(),
                schedule,
                jitter,
                time_zone: config.time_zone,
                task: Arc::new(move || {
                    Box::pin(run_and_record(shared.clone(), loader.clone(), spec.clone()))
                }),
            }
        })
        .collect()
}

/// Delivery retries: from half a second up to five minutes, forever (the
/// outbox keeps everything meanwhile).
fn new_delivery_backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(300))
        .without_max_times()
        .build()
}

/// The daemon's long-lived parts.
pub struct Daemon {
    started: Instant,
    state_dir: PathBuf,
    client: Arc<ControlPlaneClient>,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    sync: ConfigSync,
    heartbeat_every: Duration,
    poll_every: Duration,
    grace: Duration,
    logging: Option<Arc<Logging>>,
    notifier: Notifier,
    health: Arc<Health>,
}

/// What `Daemon::once` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleOutcome {
    /// Plugins run.
    pub jobs: usize,
    /// Plugins that failed.
    pub jobs_failed: usize,
    /// Findings delivered to the control plane.
    pub delivered: usize,
    /// Result batches still waiting in the outbox.
    pub pending: usize,
}

impl Daemon {
    /// Load the credentials, open the outbox and fetch the configuration
    /// (the last good one is used when the control plane is unreachable).
    pub async fn start(local: AgentConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let client = Arc::new(match &local.control_plane {
            // Credentials an administrator created, given in the file.
            Some(settings) => {
                ControlPlaneClient::configured(settings, CONTROL_PLANE_TIMEOUT, &local.network)
                    .context("cannot use the [control_plane] settings of the configuration")?
            }
            None => ControlPlaneClient::new(
                Credentials::load(&local.state_dir)?,
                CONTROL_PLANE_TIMEOUT,
                &local.network,
            )?
            .reloading_from(&local.state_dir),
        });
        let outbox = Arc::new(
            Outbox::open(&local.state_dir, local.outbox_max_bytes)
                .context("cannot open the results outbox")?,
        );
        let shared = Arc::new(Shared {
            outbox: outbox.clone(),
            status: Mutex::new(Status::default()),
            delivery: Notify::new(),
            runtime_id: client.runtime_id().to_string(),
            host: host_name(),
        });
        let (heartbeat_every, poll_every, grace) = (
            local.heartbeat_interval,
            local.config_poll_interval,
            local.shutdown_grace,
        );
        let state_dir = local.state_dir.clone();
        renew_certificate_if_due(&client, &state_dir, &shared).await;
        let mut sync = ConfigSync::new(local);
        if let Err(e) = sync.poll(&client).await {
            tracing::warn!(
                "control plane unreachable at start, running the last good configuration: {e}"
            );
        }
        Ok(Daemon {
            started: Instant::now(),
            state_dir,
            client,
            outbox,
            shared,
            sync,
            heartbeat_every,
            poll_every,
            grace,
            logging: None,
            notifier: Notifier::from_env(),
            health: Arc::new(Health::default()),
        })
    }

    /// Let configuration (at start and on reload) set the log level.
    pub fn with_logging(mut self, logging: Arc<Logging>) -> Self {
        self.logging = Some(logging);
        self
    }

    /// Whether the daemon is ready (what `/readyz` answers).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn apply_log_level(&self, level: Option<&str>) {
        if let Some(logging) = &self.logging {
            match logging.apply(level) {
                Ok(level) => tracing::debug!(%level, "log level"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// Reload the runtime's own file (SIGHUP): a file that does not load
    /// is refused and the configuration in force stays. Returns whether a
    /// new configuration is in force.
    fn reload_local(&mut self) -> bool {
        self.notifier.reloading();
        let old = self.sync.local();
        let path = old.source.clone();
        let m = metrics::global();
        let mut new = match AgentConfig::load(&path) {
            Ok(new) => new,
            Err(e) => {
                let message =
                    format!("configuration reload refused; the configuration in force stays: {e}");
                tracing::error!("{message}");
                if let Ok(mut status) = self.shared.status.lock() {
                    status.error(message);
                }
                metrics::Metrics::result(&m.config_updates, "refused");
                self.notifier
                    .ready("configuration reload refused; the previous one stays in force");
                return false;
            }
        };
        // What the running daemon was built on changes only at a restart.
        if new.state_dir != old.state_dir {
            tracing::warn!("runtime.state_dir changed: it takes effect at the next restart");
            new.state_dir = old.state_dir.clone();
        }
        if new.service.metrics_listen != old.service.metrics_listen {
            tracing::warn!("service.metrics_listen changed: it takes effect at the next restart");
            new.service.metrics_listen = old.service.metrics_listen;
        }
        if new.network != old.network {
            tracing::warn!("[network] changed: it takes effect at the next restart");
            new.network = old.network.clone();
        }
        if new.control_plane != old.control_plane {
            tracing::warn!("[control_plane] changed: it takes effect at the next restart");
            new.control_plane = old.control_plane.clone();
        }
        self.apply_log_level(new.service.log_level.as_deref());
        self.sync.replace_local(new);
        metrics::Metrics::result(&m.config_updates, "reloaded");
        tracing::info!(file = %path.display(), "reloaded the local configuration");
        true
    }

    fn heartbeat_body(&self, config: &AgentConfig) -> Heartbeat {
        let (jobs, mut plugins, mut errors) = match self.shared.status.lock() {
            Ok(status) => (
                status.jobs.clone(),
                status.plugins.clone(),
                status.errors.clone(),
            ),
            Err(_) => (
                BTreeMap::new(),
                BTreeMap::new(),
                vec!["status unavailable".to_string()],
            ),
        };
        // Configured instances that have not run yet are pending.
        for p in &config.plugins {
            let state = if p.enabled {
                PluginState::Pending
            } else {
                PluginState::Disabled
            };
            plugins.entry(p.instance.clone()).or_insert(state);
        }
        plugins.retain(|instance, _| config.plugins.iter().any(|p| &p.instance == instance));
        errors.extend(self.sync.last_error.clone());
        // The outbox's own depth, in the wire's type (null when unreadable).
        let outbox = self.outbox.depth().ok().map(|d| OutboxDepth {
            batches: d.batches,
            bytes: d.bytes,
            rejected: d.rejected,
        });
        Heartbeat {
            uuid: self.client.runtime_id().to_string(),
            created_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            runtime_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            uptime_seconds: Some(self.started.elapsed().as_secs()),
            plugins,
            jobs,
            outbox,
            errors,
        }
    }

    async fn send_heartbeat(&self, config: &AgentConfig) {
        let sent = self.client.heartbeat(&self.heartbeat_body(config)).await;
        let m = metrics::global();
        metrics::Metrics::result(&m.heartbeats, if sent.is_ok() { "ok" } else { "error" });
        if let Err(e) = sent {
            tracing::warn!("heartbeat failed: {e}");
        }
    }

    /// One cycle: run every enabled plugin once, deliver the results (a few
    /// attempts; what is not delivered stays in the outbox), send a heartbeat.
    pub async fn once(self) -> anyhow::Result<CycleOutcome> {
        use anyhow::Context;
        let config = self.sync.config();
        let runtime = Arc::new(Runtime::new(&config).context("cannot set up the runtime")?);
        let loader = Arc::new(Loader::new(runtime, config.assessment_root.clone()));
        let mut outcome = CycleOutcome::default();
        // As many jobs at once as the daemon runs on schedules.
        let permits = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_jobs));
        let mut jobs = tokio::task::JoinSet::new();
        for spec in config.plugins.iter().filter(|p| p.enabled) {
            let (shared, loader, spec) = (self.shared.clone(), loader.clone(), spec.clone());
            let permits = permits.clone();
            jobs.spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = permits.acquire_owned().await.ok();
                run_and_record(shared, loader, spec).await;
            });
            outcome.jobs += 1;
        }
        while let Some(joined) = jobs.join_next().await {
            if let Err(e) = joined {
                tracing::error!("a job task failed: {e}");
            }
        }
        outcome.jobs_failed = self
            .shared
            .status
            .lock()
            .map(|s| {
                s.jobs
                    .values()
                    .filter(|j| j.outcome != JobOutcome::Completed)
                    .count()
            })
            .unwrap_or(0);
        let mut backoff = new_delivery_backoff();
        for _ in 0..4 {
            let report = deliver_measured(&self.outbox, &self.client).await?;
            outcome.delivered += report.records;
            match &report.stopped_by {
                None => break,
                Some(why) => {
                    let wait = report.wait(backoff.next().unwrap_or(Duration::from_secs(5)));
                    tracing::warn!("result delivery failed, retrying in {wait:?}: {why}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.send_heartbeat(&config).await;
        outcome.pending = self.outbox.depth()?.batches;
        Ok(outcome)
    }

    /// Run until `shutdown` turns true; each message on `reload` reloads
    /// the runtime's own configuration file (SIGHUP).
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut reload: tokio::sync::mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let local = self.sync.local().clone();
        self.apply_log_level(local.service.log_level.as_deref());
        // The operations listener lives as long as the daemon; it is bound
        // before readiness is announced.
        let (stop_service, service_stopped) = watch::channel(false);
        if let Some(address) = local.service.metrics_listen {
            let listener = crate::service::bind(address).await?;
            tracing::info!(address = %listener.local_addr().unwrap_or(address), "serving /metrics, /healthz and /readyz");
            let (outbox, client) = (self.outbox.clone(), self.client.clone());
            let refresh: crate::service::Refresh =
                Arc::new(move || refresh_gauges(&outbox, &client));
            let health = self.health.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    crate::service::serve(listener, health, refresh, service_stopped).await
                {
                    tracing::error!("the metrics listener stopped: {e}");
                }
            });
        }
        // Petted from a task of its own: a delivery of a large backlog may
        // keep the main loop busy for minutes, and must not get the daemon
        // killed; what the watchdog catches is a runtime that stopped
        // running tasks (every worker blocked, a deadlock).
        let watchdog = self.notifier.watchdog_every().map(|every| {
            let notifier = self.notifier;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    notifier.watchdog();
                }
            })
        });
        let m = metrics::global();
        let mut heartbeat = tokio::time::interval(self.heartbeat_every);
        let mut next_poll = tokio::time::Instant::now() + with_jitter(self.poll_every);
        let mut renewal = tokio::time::interval(RENEWAL_CHECK_EVERY);
        renewal.reset();
        let mut delivery_backoff = new_delivery_backoff();
        let mut next_delivery = tokio::time::Instant::now();
        // After a failed delivery, new results do not bring the next
        // attempt before the backoff (or the control plane's Retry-After).
        let mut not_before = tokio::time::Instant::now();
        let (client, outbox) = (self.client.clone(), self.outbox.clone());

        'generations: loop {
            let config = self.sync.config();
            let runtime = Arc::new(Runtime::new(&config).context("cannot set up the runtime")?);
            let (stop_jobs, jobs_stopped) = watch::channel(false);
            let jobs = jobs_for(&config, &runtime, &self.shared);
            let scheduler = tokio::spawn(run_schedules(
                jobs,
                config.max_concurrent_jobs,
                jobs_stopped,
                self.grace,
            ));
            tracing::info!(plugins = config.plugins.len(), "daemon running");
            m.config_generation.inc();
            self.health.set_ready();
            self.notifier.ready(&format!(
                "running {} plugin(s)",
                config.plugins.iter().filter(|p| p.enabled).count()
            ));

            loop {
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            tracing::info!("shutting down: draining runs in flight");
                            self.health.set_stopping();
                            self.notifier.stopping();
                            let _ = stop_jobs.send(true);
                            let _ = scheduler.await;
                            // One last delivery attempt; what fails stays in the outbox.
                            if let Err(e) = deliver_measured(&outbox, &client).await {
                                tracing::warn!("final delivery: {e}");
                            }
                            break 'generations;
                        }
                    }
                    _ = tokio::time::sleep_until(next_poll) => {
                        next_poll = tokio::time::Instant::now() + with_jitter(self.poll_every);
                        let polled = self.sync.poll(&client).await;
                        if polled.is_ok() {
                            m.config_last_sync.set(
                                SystemTime::now()
                                    .duration_since(SystemTime::UNIX_EPOCH)
                                    .map_or(0.0, |d| d.as_secs_f64()),
                            );
                        }
                        match polled {
                            Ok(SyncOutcome::Applied(_)) => {
                                metrics::Metrics::result(&m.config_updates, "applied");
                                let _ = stop_jobs.send(true);
                                let _ = scheduler.await;
                                continue 'generations;
                            }
                            Ok(SyncOutcome::Unchanged) => {
                                metrics::Metrics::result(&m.config_updates, "unchanged");
                            }
                            Err(e) => {
                                metrics::Metrics::result(&m.config_updates, "error");
                                tracing::warn!("configuration poll failed: {e}");
                            }
                        }
                    }
                    Some(()) = reload.recv() => {
                        if self.reload_local() {
                            let _ = stop_jobs.send(true);
                            let _ = scheduler.await;
                            continue 'generations;
                        }
                    }
                    _ = heartbeat.tick() => self.send_heartbeat(&config).await,
                    _ = renewal.tick() => {
                        renew_certificate_if_due(&client, &self.state_dir, &self.shared).await;
                    }
                    _ = self.shared.delivery.notified() => {
                        next_delivery = next_delivery.min(tokio::time::Instant::now()).max(not_before);
                    }
                    _ = tokio::time::sleep_until(next_delivery) => {
                        match deliver_measured(&outbox, &client).await {
                            Ok(report) => {
                                if report.delivered > 0 {
                                    tracing::info!(batches = report.delivered, records = report.records, "results delivered");
                                }
                                match &report.stopped_by {
                                    Some(why) => {
                                        let wait = report.wait(delivery_backoff.next().unwrap_or(Duration::from_secs(300)));
                                        tracing::warn!("result delivery failed, retrying in {wait:?}: {why}");
                                        next_delivery = tokio::time::Instant::now() + wait;
                                        not_before = next_delivery;
                                    }
                                    None => {
                                        delivery_backoff = new_delivery_backoff();
                                        not_before = tokio::time::Instant::now();
                                        next_delivery = tokio::time::Instant::now() + Duration::from_secs(5);
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::error!("results outbox: {e}");
                                next_delivery = tokio::time::Instant::now() + Duration::from_secs(30);
                            }
                        }
                    }
                }
            }
        }
        let _ = stop_service.send(true);
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_spread_by_up_to_a_tenth_of_the_period() {
        let period = Duration::from_secs(60);
        let samples: Vec<Duration> = (0..200).map(|_| with_jitter(period)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= period && *d <= period + period / 10)
        );
        let mut distinct = samples.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 100, "spread, not one fixed delay");
        assert_eq!(with_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_run_whose_findings_the_outbox_refused_is_reported_as_not_recorded() {
        let report = JobReport {
            abi: None,
            plugin: "p".into(),
            instance: "p".into(),
            path: "p.wasm".into(),
            id: None,
            job_id: "j".into(),
            started_at: "now".into(),
            duration_ms: 1,
            error: None,
            note: None,
            findings: Vec::new(),
            denials: Vec::new(),
            denial_count: 0,
            log_dropped_bytes: 0,
            provenance: Default::default(),
        };
        let mut status = Status::default();
        status.record(&report, Ok(()));
        let json = |s: &Status| serde_json::to_value(&s.jobs["p"]).unwrap();
        assert_eq!(json(&status)["outcome"], "completed");
        assert!(json(&status).get("reason").is_none());
        status.record(&report, Err("the results outbox is full".into()));
        assert_eq!(status.jobs["p"].outcome, JobOutcome::NotRecorded);
        let reason = json(&status)["reason"].as_str().unwrap().to_string();
        assert!(
            reason.starts_with("failed to record its findings: the results outbox is full"),
            "{reason}"
        );
        assert_eq!(json(&status)["outcome"], "not-recorded");
        assert_eq!(
            serde_json::to_value(PluginState::Unavailable {
                kind: crate::executor::JobErrorKind::Verify,
                reason: "bad signature".into()
            })
            .unwrap(),
            "unavailable (verify): bad signature"
        );
    }

    #[test]
    fn instances_of_one_plugin_are_reported_each_under_its_own_key() {
        let report = |instance: &str, error: Option<crate::executor::JobError>| JobReport {
            abi: None,
            plugin: "sshd-hardening".into(),
            instance: instance.into(),
            path: "p.wasm".into(),
            id: None,
            job_id: format!("job-{instance}"),
            started_at: "now".into(),
            duration_ms: 1,
            error,
            note: None,
            findings: Vec::new(),
            denials: Vec::new(),
            denial_count: 0,
            log_dropped_bytes: 0,
            provenance: Default::default(),
        };
        let mut status = Status::default();
        status.record(&report("sshd-hardening", None), Ok(()));
        let grant = crate::executor::JobError::new(crate::executor::JobErrorKind::Grant, "no tree");
        status.record(&report("sshd-jail", Some(grant)), Ok(()));
        assert_eq!(status.plugins["sshd-hardening"], PluginState::Ready);
        assert!(matches!(
            status.plugins["sshd-jail"],
            PluginState::Unavailable { .. }
        ));
        assert_eq!(status.jobs["sshd-jail"].job_id, "job-sshd-jail");
        // The instance that is the plugin's name reports as without
        // instances; the other one says which plugin it is.
        let json = |key: &str| serde_json::to_value(&status.jobs[key]).unwrap();
        assert!(json("sshd-hardening").get("plugin").is_none());
        assert_eq!(json("sshd-jail")["plugin"], "sshd-hardening");
    }
}
