//! From configured plugins to jobs. `run_once` runs one assessment cycle:
//! every enabled plugin once, at most `max_concurrent_jobs` at a time, each
//! failure confined to its own job.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::agent_config::AgentConfig;
use crate::report::RunReport;
use crate::runner::{self, JobError, JobErrorKind, JobReport, Runtime};

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
    let mut jobs = JoinSet::new();
    for (index, spec) in specs.iter().cloned().enumerate() {
        let runtime = runtime.clone();
        let root = config.assessment_root.clone();
        let permits = permits.clone();
        jobs.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = permits.acquire_owned().await.ok();
            let report = match runner::prepare(&runtime, &spec, &root).await {
                Ok(prepared) => runner::run_job(&runtime.engine, &prepared, &root).await,
                Err((id, error)) => {
                    tracing::error!(plugin = %spec.name, "cannot run plugin: {}", error.message);
                    JobReport::not_run(&spec, id, error)
                }
            };
            (index, report)
        });
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
