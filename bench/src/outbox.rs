//! Durable findings per second: jobs on several threads turn their findings
//! into evidence records and push them into the real outbox (each push
//! returns once its records are on disk), then every record is read back
//! to prove none was lost or stored twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use assessment_runtime::capabilities::results::Finding;
use assessment_runtime::plugins::PluginId;
use assessment_runtime::results::evidence::{RunContext, evidence_records};
use assessment_runtime::results::outbox::Outbox;

use crate::stats::Samples;

/// What one outbox run measured.
pub struct OutboxRun {
    /// Wall time of all pushes.
    pub elapsed: Duration,
    /// Records stored.
    pub records: usize,
    /// Per job: from its findings to its records being durable.
    pub latency: Samples,
    /// Batch files written (fewer than jobs when fsyncs are shared).
    pub batches: usize,
}

/// `jobs` jobs of `per_job` copies of `finding` pushed from `threads`
/// threads into a new outbox.
pub fn run(
    finding: &Finding,
    plugin: &PluginId,
    threads: usize,
    jobs: usize,
    per_job: usize,
) -> anyhow::Result<OutboxRun> {
    let dir = tempfile::tempdir()?;
    let outbox = Arc::new(Outbox::open(dir.path(), 4 << 30)?);
    let findings: Arc<Vec<Finding>> = Arc::new(
        (0..per_job)
            .map(|i| {
                let mut f = finding.clone();
                // Distinct subjects keep the records distinct streams.
                f.message = format!("{} #{i}", f.message);
                f
            })
            .collect(),
    );
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..threads {
        let outbox = outbox.clone();
        let findings = findings.clone();
        let plugin = plugin.clone();
        let count = jobs / threads;
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<Vec<Duration>> {
                let mut latencies = Vec::with_capacity(count);
                for j in 0..count {
                    let job_id = format!("bench-{t}-{j}");
                    let now =
                        humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
                    let begun = Instant::now();
                    let ctx = RunContext {
                        runtime_id: "bench-runtime",
                        host: "bench-host",
                        plugin: &plugin,
                        job_id: &job_id,
                        start: &now,
                        end: &now,
                    };
                    let records = evidence_records(&ctx, &findings);
                    outbox.push(&records)?;
                    latencies.push(begun.elapsed());
                }
                Ok(latencies)
            },
        ));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(result) => latencies.extend(result?),
            Err(_) => bail!("a pushing thread panicked"),
        }
    }
    let elapsed = started.elapsed();

    // Every record is there exactly once.
    let pending = outbox.pending()?;
    let mut keys = BTreeSet::new();
    let mut stored = 0;
    for id in &pending {
        for record in outbox.read(id)? {
            stored += 1;
            keys.insert(record.idempotency_key);
        }
    }
    let expected = (jobs / threads) * threads * per_job;
    if stored != expected || keys.len() != expected {
        bail!(
            "the outbox holds {stored} records ({} distinct), expected {expected}",
            keys.len()
        );
    }
    Ok(OutboxRun {
        elapsed,
        records: stored,
        latency: Samples::new(latencies),
        batches: pending.len(),
    })
}
