//! The reference control plane under load, and the runtime's results on
//! their way to it: simulated runtimes (each enrolled with its own key and
//! client certificate) send evidence batches and heartbeats through the
//! runtime's own client over mutual TLS on loopback; and findings go
//! through the real outbox and its delivery to the control plane, timed
//! from emission to the control plane's confirmation. Every record sent is
//! counted back out of the control plane's store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use assessment_runtime::agent_config::NetworkSettings;
use assessment_runtime::capabilities::results::Finding;
use assessment_runtime::control_plane::client::{self, ControlPlaneClient, Heartbeat, Trust};
use assessment_runtime::plugins::PluginId;
use assessment_runtime::results::evidence::EvidenceRecord;
use assessment_runtime::results::outbox::{DeliveryError, EvidenceSink, Outbox};
use capability_model::wire::{OutboxDepth, PluginState};
use tokio::sync::Notify;

use crate::control_plane::Server;
use crate::outbox::{distinct_findings, job_records};
use crate::stats::Samples;

/// Requests against the control plane and how long they took.
pub struct Load {
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Evidence records (or heartbeats) the control plane confirmed.
    pub items: usize,
    /// Per request, send to answer.
    pub latency: Samples,
}

/// `count` runtimes enrolled with `server`, each with its own client
/// certificate, as `assessment-runtime enroll` makes them.
pub async fn enroll(server: &Server, count: usize) -> anyhow::Result<Vec<Arc<ControlPlaneClient>>> {
    let ca = std::fs::read_to_string(server.ca_certificate())
        .context("the control plane wrote no CA certificate")?;
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let token = server.enrollment_token()?;
        let credentials = client::enroll(
            &server.url(),
            &token,
            &format!("simulated-{i}"),
            Trust::CaCertificate(ca.clone()),
            &NetworkSettings::default(),
        )
        .await
        .with_context(|| format!("enrolling simulated runtime {i}"))?;
        clients.push(Arc::new(ControlPlaneClient::new(
            credentials,
            Duration::from_secs(120),
            &NetworkSettings::default(),
        )?));
    }
    Ok(clients)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Every client sends `requests` evidence batches of `per_request` records
/// (made beforehand, so only sending is timed), all clients at once.
pub async fn evidence(
    clients: &[Arc<ControlPlaneClient>],
    finding: &Finding,
    plugin: &PluginId,
    per_request: usize,
    requests: usize,
    round: usize,
) -> anyhow::Result<Load> {
    let findings = distinct_findings(finding, per_request);
    let mut work = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let batches: Vec<Vec<EvidenceRecord>> = (0..requests)
            .map(|r| {
                let job_id = format!("ingest-{round}-{c}-{r}");
                job_records(client.runtime_id(), plugin, &job_id, &findings)
            })
            .collect();
        work.push((client.clone(), batches));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, batches) in work {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(batches.len());
            let mut records = 0;
            for batch in &batches {
                let sent = Instant::now();
                client
                    .deliver(batch)
                    .await
                    .map_err(|e| anyhow::anyhow!("evidence batch refused: {e}"))?;
                latencies.push(sent.elapsed());
                records += batch.len();
            }
            anyhow::Ok((latencies, records))
        }));
    }
    let mut latencies = Vec::new();
    let mut items = 0;
    for task in tasks {
        let (l, r) = task.await??;
        latencies.extend(l);
        items += r;
    }
    Ok(Load {
        elapsed: started.elapsed(),
        items,
        latency: Samples::new(latencies),
    })
}

/// A heartbeat as a daemon with ten ready plugins sends it.
fn heartbeat(runtime_id: &str) -> Heartbeat {
    Heartbeat {
        uuid: runtime_id.to_string(),
        created_at: now_rfc3339(),
        runtime_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        uptime_seconds: Some(3600),
        plugins: (0..10)
            .map(|i| (format!("plugin-{i}"), PluginState::Ready))
            .collect(),
        jobs: Default::default(),
        outbox: Some(OutboxDepth::default()),
        errors: Vec::new(),
    }
}

/// Every client sends `per_client` heartbeats one after another, all
/// clients at once.
pub async fn heartbeats(
    clients: &[Arc<ControlPlaneClient>],
    per_client: usize,
) -> anyhow::Result<Load> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let beat = heartbeat(client.runtime_id());
                let sent = Instant::now();
                client
                    .heartbeat(&beat)
                    .await
                    .map_err(|e| anyhow::anyhow!("heartbeat refused: {e}"))?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Load {
        elapsed: started.elapsed(),
        items: latencies.len(),
        latency: Samples::new(latencies),
    })
}

/// The runtime's client, noting when the control plane confirmed each
/// record (by idempotency key). Only observes: delivery is the client's.
struct TimedSink {
    client: Arc<ControlPlaneClient>,
    stored: Mutex<HashMap<String, Instant>>,
}

impl EvidenceSink for TimedSink {
    async fn deliver(&self, records: &[EvidenceRecord]) -> Result<(), DeliveryError> {
        self.client.deliver(records).await?;
        let now = Instant::now();
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        for record in records {
            stored.entry(record.idempotency_key.clone()).or_insert(now);
        }
        Ok(())
    }
}

/// Findings from emission to the control plane.
pub struct Delivered {
    /// From the first emission to the last confirmation.
    pub elapsed: Duration,
    /// Records confirmed.
    pub records: usize,
    /// Per record, from its job's findings to the control plane's
    /// confirmation.
    pub latency: Samples,
    /// Outbox batches delivered (a job's records, or several jobs' records
    /// committed together).
    pub batches: usize,
}

/// `jobs` jobs of `per_job` findings pushed from `threads` threads into a
/// new outbox of `client`'s runtime, which a delivery loop like the
/// daemon's (woken by each push) sends to the control plane meanwhile.
pub fn outbox_to_control_plane(
    rt: &tokio::runtime::Runtime,
    client: Arc<ControlPlaneClient>,
    finding: &Finding,
    plugin: &PluginId,
    threads: usize,
    jobs: usize,
    per_job: usize,
) -> anyhow::Result<Delivered> {
    // Job ids differ from run to run: a record with the key of another
    // one already stored is refused (409), as it should be.
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = tempfile::tempdir()?;
    let outbox = Arc::new(Outbox::open(dir.path(), 4 << 30)?);
    let findings = Arc::new(distinct_findings(finding, per_job));
    let wake = Arc::new(Notify::new());
    let done = Arc::new(AtomicBool::new(false));
    let runtime_id = client.runtime_id().to_string();
    let started = Instant::now();
    let mut producers = Vec::new();
    for t in 0..threads {
        let (outbox, findings, wake) = (outbox.clone(), findings.clone(), wake.clone());
        let (plugin, runtime_id) = (plugin.clone(), runtime_id.clone());
        let count = jobs / threads;
        producers.push(std::thread::spawn(
            move || -> anyhow::Result<HashMap<String, Instant>> {
                let mut emitted = HashMap::new();
                for j in 0..count {
                    let job_id = format!("delivered-{run}-{t}-{j}");
                    let at = Instant::now();
                    let records = job_records(&runtime_id, &plugin, &job_id, &findings);
                    outbox.push(&records)?;
                    wake.notify_one();
                    for record in records {
                        emitted.insert(record.idempotency_key, at);
                    }
                }
                Ok(emitted)
            },
        ));
    }
    let sink = TimedSink {
        client,
        stored: Mutex::new(HashMap::new()),
    };
    let (outbox_d, wake_d, done_d) = (outbox.clone(), wake.clone(), done.clone());
    let delivering = rt.spawn(async move {
        let mut batches = 0usize;
        loop {
            // Read before the pass: when it is set, every push is in.
            let finished = done_d.load(Ordering::Acquire);
            let report = outbox_d.deliver(&sink).await?;
            batches += report.delivered;
            if let Some(why) = report.stopped_by {
                bail!("delivery stopped: {why}");
            }
            if report.rejected > 0 {
                bail!("the control plane rejected {} batches", report.rejected);
            }
            if finished && outbox_d.pending()?.is_empty() {
                break;
            }
            if report.delivered == 0 {
                let _ = tokio::time::timeout(Duration::from_millis(50), wake_d.notified()).await;
            }
        }
        let stored = sink.stored.into_inner().unwrap_or_else(|p| p.into_inner());
        anyhow::Ok((stored, batches))
    });
    let mut emitted = HashMap::new();
    let mut failure = None;
    for producer in producers {
        match producer.join() {
            Ok(Ok(e)) => emitted.extend(e),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow::anyhow!("a pushing thread panicked")),
        }
    }
    done.store(true, Ordering::Release);
    wake.notify_one();
    let (stored, batches) = rt.block_on(delivering)??;
    if let Some(e) = failure {
        return Err(e);
    }
    let last = stored.values().max().copied().unwrap_or(started);
    let mut latencies = Vec::with_capacity(emitted.len());
    for (key, at) in &emitted {
        let confirmed = stored
            .get(key)
            .with_context(|| format!("record {key} was never confirmed by the control plane"))?;
        latencies.push(confirmed.saturating_duration_since(*at));
    }
    Ok(Delivered {
        elapsed: last.saturating_duration_since(started),
        records: emitted.len(),
        latency: Samples::new(latencies),
        batches,
    })
}
