//! From configured plugins to jobs. `run_once` runs one assessment cycle:
//! every enabled plugin once, at most `max_concurrent_jobs` at a time, each
//! failure confined to its own job. `run_schedules` runs jobs on their
//! interval or cron schedules (with jitter, a concurrency limit, no
//! overlapping runs of one job, and a drain on shutdown) for the daemon.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::agent_config::{AgentConfig, Schedule};
use crate::executor::{self, JobError, JobErrorKind, JobReport};
use crate::loader::Runtime;
use crate::loader::{Loader, instance_span};
use crate::report::RunReport;

/// Prepare and run every enabled plugin once; the report lists the jobs in
/// configuration order.
pub async fn run_once(runtime: &Arc<Runtime>, config: &AgentConfig) -> RunReport {
    let started_at = SystemTime::now();
    let permits = Arc::new(Semaphore::new(config.max_concurrent_jobs));
    let specs: Vec<_> = config
        .plugins
        .iter()
        .filter(|p| p.enabled)
        .cloned()
        .collect();
    // The same path as the daemon's: load, then run.
    let loader = Arc::new(Loader::new(runtime.clone(), config.assessment_root.clone()));
    let mut jobs = JoinSet::new();
    for (index, spec) in specs.iter().cloned().enumerate() {
        let loader = loader.clone();
        let permits = permits.clone();
        let span = instance_span(&spec);
        jobs.spawn(
            async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = permits.acquire_owned().await.ok();
                let report = match loader.prepared(&spec).await {
                    Ok(prepared) => {
                        executor::run_job(&loader.runtime().engine, &prepared, loader.root()).await
                    }
                    Err((id, error)) => {
                        tracing::error!(plugin = %spec.name, "cannot run plugin: {}", error.message);
                        JobReport::not_run(&spec, id, error)
                    }
                };
                (index, report)
            }
            .instrument(span),
        );
    }
    let mut reports: Vec<Option<JobReport>> = vec![None; specs.len()];
    while let Some(joined) = jobs.join_next().await {
        match joined {
            Ok((index, report)) => reports[index] = Some(report),
            // A job task only ends abnormally if the host itself panicked.
            Err(e) => tracing::error!("a job task failed: {e}"),
        }
    }
    // Every enabled plugin appears in the report, even if its task died.
    let reports = reports
        .into_iter()
        .zip(&specs)
        .map(|(report, spec)| {
            report.unwrap_or_else(|| {
                JobReport::not_run(
                    spec,
                    None,
                    JobError::new(
                        JobErrorKind::Host,
                        "the host failed while running this plugin; see the log",
                    ),
                )
            })
        })
        .collect();
    RunReport::new(started_at, &config.assessment_root, reports)
}

/// When a schedule next fires after `now`, plus a random delay of up to
/// `jitter` (spreads the load of many runtimes on one control plane). Cron
/// expressions are read as wall-clock times in `time_zone`.
pub fn next_fire(
    schedule: &Schedule,
    now: chrono::DateTime<chrono::Utc>,
    time_zone: chrono_tz::Tz,
    jitter: Duration,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let base = match schedule {
        Schedule::Every(interval) => {
            now + chrono::Duration::from_std(*interval)
                .map_err(|e| format!("interval out of range: {e}"))?
        }
        Schedule::Cron(cron) => cron
            .find_next_occurrence(&now.with_timezone(&time_zone), false)
            .map_err(|e| format!("no next occurrence: {e}"))?
            .with_timezone(&chrono::Utc),
    };
    let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    let extra = if jitter_ms == 0 {
        0
    } else {
        fastrand::u64(0..jitter_ms)
    };
    Ok(base + chrono::Duration::milliseconds(i64::try_from(extra).unwrap_or(i64::MAX)))
}

/// A job the daemon runs on a schedule.
pub struct ScheduledJob {
    /// The job's name (the configured plugin's instance): runs of one name
    /// never overlap.
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Up to this much random delay is added to every run.
    pub jitter: Duration,
    /// The time zone of a cron schedule.
    pub time_zone: chrono_tz::Tz,
    /// One run.
    pub task: Arc<dyn Fn() -> BoxFuture + Send + Sync>,
}

/// A run's future.
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the scheduler did, for the heartbeat and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Runs started.
    pub started: u64,
    /// Runs skipped because the previous run of the same job was still going.
    pub skipped_overlap: u64,
    /// Runs still in flight at shutdown that did not finish within the grace
    /// period and were cancelled.
    pub cancelled: u64,
}

/// Run `jobs` on their schedules until `shutdown` turns true: at most
/// `max_concurrent` runs at once, never two runs of one job at once (a run
/// that comes due while the previous one is still going is skipped and
/// counted). On shutdown no new run starts; runs in flight get `grace` to
/// finish and are then cancelled.
pub async fn run_schedules(
    jobs: Vec<ScheduledJob>,
    max_concurrent: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> SchedulerStats {
    use std::sync::atomic::{AtomicBool, Ordering};
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let stats = Arc::new(std::sync::Mutex::new(SchedulerStats::default()));
    let mut runs = JoinSet::new();
    let mut timers = JoinSet::new();
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let running: Vec<Arc<AtomicBool>> = jobs
        .iter()
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();

    // One timer per job: it only says "due"; starting runs is serialised
    // below, which is what makes the overlap check race-free.
    for (index, job) in jobs.iter().enumerate() {
        let schedule = job.schedule.clone();
        let (jitter, time_zone) = (job.jitter, job.time_zone);
        let due_tx = due_tx.clone();
        let name = job.name.clone();
        timers.spawn(async move {
            loop {
                let now = chrono::Utc::now();
                let delay = match next_fire(&schedule, now, time_zone, jitter) {
                    Ok(at) => (at - now).to_std().unwrap_or(Duration::ZERO),
                    Err(e) => {
                        tracing::error!(job = %name, "schedule stopped: {e}");
                        return;
                    }
                };
                tokio::time::sleep(delay).await;
                if due_tx.send(index).is_err() {
                    return;
                }
            }
        });
    }
    drop(due_tx);

    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some(index) = due_rx.recv() => {
                let job = &jobs[index];
                let flag = running[index].clone();
                if flag.swap(true, Ordering::SeqCst) {
                    tracing::warn!(job = %job.name, "the previous run is still going; skipping this one");
                    if let Ok(mut s) = stats.lock() { s.skipped_overlap += 1; }
                    continue;
                }
                if let Ok(mut s) = stats.lock() { s.started += 1; }
                let task = job.task.clone();
                let permits = permits.clone();
                runs.spawn(async move {
                    // The semaphore is never closed, so acquiring only waits.
                    let _permit = permits.acquire_owned().await.ok();
                    task().await;
                    flag.store(false, Ordering::SeqCst);
                });
            }
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
        }
    }
    timers.abort_all();
    let drained =
        tokio::time::timeout(grace, async { while runs.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let left = runs.len() as u64;
        tracing::warn!(
            runs = left,
            "shutdown grace period over; cancelling runs in flight"
        );
        runs.abort_all();
        while runs.join_next().await.is_some() {}
        if let Ok(mut s) = stats.lock() {
            s.cancelled += left;
        }
    }
    stats.lock().map(|s| s.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::UTC;
    use std::str::FromStr;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn next_fire_follows_intervals_cron_and_jitter() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:17:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let every = Schedule::Every(Duration::from_secs(3600));
        assert_eq!(
            next_fire(&every, now, UTC, Duration::ZERO)
                .unwrap()
                .to_rfc3339(),
            "2026-11-25T11:17:00+00:00"
        );
        let cron = Schedule::Cron(Box::new(croner::Cron::from_str("0 3 * * *").unwrap()));
        assert_eq!(
            next_fire(&cron, now, UTC, Duration::ZERO)
                .unwrap()
                .to_rfc3339(),
            "2026-11-26T03:00:00+00:00"
        );
        // 03:00 in Berlin is 02:00 UTC in winter; in New York (UTC-5),
        // 08:00 UTC, still today.
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            next_fire(&cron, now, berlin, Duration::ZERO)
                .unwrap()
                .to_rfc3339(),
            "2026-11-26T02:00:00+00:00"
        );
        let new_york: chrono_tz::Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            next_fire(&cron, now, new_york, Duration::ZERO)
                .unwrap()
                .to_rfc3339(),
            "2026-11-26T08:00:00+00:00"
        );
        // Summer time: 03:00 in Berlin is 01:00 UTC.
        let july = chrono::DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            next_fire(&cron, july, berlin, Duration::ZERO)
                .unwrap()
                .to_rfc3339(),
            "2026-07-02T01:00:00+00:00"
        );
        for _ in 0..50 {
            let t = next_fire(&every, now, UTC, Duration::from_secs(60)).unwrap();
            let extra = (t - now).num_seconds() - 3600;
            assert!((0..60).contains(&extra), "{extra}");
        }
    }

    fn job(
        name: &str,
        every: Duration,
        run_for: Duration,
        counter: Arc<AtomicU64>,
    ) -> ScheduledJob {
        ScheduledJob {
            name: name.to_string(),
            schedule: Schedule::Every(every),
            jitter: Duration::ZERO,
            time_zone: chrono_tz::UTC,
            task: Arc::new(move || {
                let counter = counter.clone();
                Box::pin(async move {
                    tokio::time::sleep(run_for).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                })
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_run_on_schedule_without_overlapping_and_drain_on_shutdown() {
        let fast = Arc::new(AtomicU64::new(0));
        let slow = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let scheduler = tokio::spawn(run_schedules(
            vec![
                job(
                    "fast",
                    Duration::from_secs(10),
                    Duration::from_secs(1),
                    fast.clone(),
                ),
                // Due every 10 s but takes 25 s: two of three runs overlap.
                job(
                    "slow",
                    Duration::from_secs(10),
                    Duration::from_secs(25),
                    slow.clone(),
                ),
            ],
            2,
            rx,
            Duration::from_secs(60),
        ));
        tokio::time::sleep(Duration::from_secs(95)).await;
        tx.send(true).unwrap();
        let stats = scheduler.await.unwrap();
        assert_eq!(fast.load(Ordering::SeqCst), 9, "runs at 10, 20, … 90 s");
        assert!(stats.skipped_overlap >= 4, "{stats:?}");
        assert_eq!(
            stats.cancelled, 0,
            "the slow run in flight finished within the grace period"
        );
        assert_eq!(slow.load(Ordering::SeqCst), stats.started - 9);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_beyond_the_grace_period_are_cancelled() {
        let done = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let scheduler = tokio::spawn(run_schedules(
            vec![job(
                "stuck",
                Duration::from_secs(5),
                Duration::from_secs(3600),
                done.clone(),
            )],
            1,
            rx,
            Duration::from_secs(10),
        ));
        tokio::time::sleep(Duration::from_secs(6)).await;
        tx.send(true).unwrap();
        let stats = scheduler.await.unwrap();
        assert_eq!((stats.started, stats.cancelled), (1, 1));
        assert_eq!(done.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_limit_holds() {
        let active = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let jobs = (0..4)
            .map(|i| {
                let active = active.clone();
                let peak = peak.clone();
                ScheduledJob {
                    name: format!("j{i}"),
                    schedule: Schedule::Every(Duration::from_secs(10)),
                    jitter: Duration::ZERO,
                    time_zone: UTC,
                    task: Arc::new(move || {
                        let active = active.clone();
                        let peak = peak.clone();
                        Box::pin(async move {
                            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            active.fetch_sub(1, Ordering::SeqCst);
                        })
                    }),
                }
            })
            .collect();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let scheduler = tokio::spawn(run_schedules(jobs, 2, rx, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_secs(35)).await;
        tx.send(true).unwrap();
        let stats = scheduler.await.unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(stats.started, 12);
    }
}
