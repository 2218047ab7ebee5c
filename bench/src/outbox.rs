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
use assessment_runtime::results::evidence::{EvidenceRecord, RunContext, evidence_records};
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
    let findings = Arc::new(distinct_findings(finding, per_job));
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
                    let begun = Instant::now();
                    let records = job_records("bench-runtime", &plugin, &job_id, &findings);
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

/// `count` copies of `finding` with distinct messages, so that their
/// records are distinct.
pub fn distinct_findings(finding: &Finding, count: usize) -> Vec<Finding> {
    (0..count)
        .map(|i| {
            let mut f = finding.clone();
            f.message = format!("{} #{i}", f.message);
            f
        })
        .collect()
}

/// The evidence records of job `job_id` of `runtime_id` that emitted
/// `findings` just now.
pub fn job_records(
    runtime_id: &str,
    plugin: &PluginId,
    job_id: &str,
    findings: &[Finding],
) -> Vec<EvidenceRecord> {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    evidence_records(
        &RunContext {
            runtime_id,
            host: "bench-host",
            plugin,
            job_id,
            start: &now,
            end: &now,
        },
        findings,
    )
}
