//! In-process benchmarks through the host library: per-job overhead of the
//! real executor against a bare instantiate + call of the same component
//! and against a process per job, throughput at several concurrencies with
//! the memory it takes, and the host-call path against the same file
//! accesses made natively.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use assessment_runtime::abi::PluginPre;
use assessment_runtime::agent_config::AgentConfig;
use assessment_runtime::capabilities::config::ConfigCtx;
use assessment_runtime::capabilities::log::LogSink;
use assessment_runtime::capabilities::results::{Reference, ResultsCtx};
use assessment_runtime::capabilities::target::TargetCtx;
use assessment_runtime::capabilities::{JobLabels, PluginState};
use assessment_runtime::engine::{Allocation, PluginEngine};
use assessment_runtime::executor;
use assessment_runtime::loader::Loader;
use assessment_runtime::loader::{PreparedPlugin, Runtime};
use assessment_runtime::policy::{GrantSet, Limits};
use wasmtime::Store;

use crate::stats::Samples;

/// A runtime with one plugin prepared by the real loader, against its own
/// assessment root and state directory.
pub struct Prepared {
    /// The runtime (engine and plugin store).
    pub runtime: Arc<Runtime>,
    /// The plugin, ready to run.
    pub plugin: Arc<PreparedPlugin>,
    /// The assessment root.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

/// Prepare `wasm` as plugin `name` with `extra` TOML in its `[[plugin]]`
/// table, assessing `root` (a new empty directory when `None`), on an
/// engine allocating as `allocation` says.
pub async fn prepare(
    name: &str,
    wasm: &Path,
    extra: &str,
    root: Option<&Path>,
    allocation: Allocation,
) -> anyhow::Result<Prepared> {
    let dir = tempfile::tempdir()?;
    let root = match root {
        Some(root) => root.to_path_buf(),
        None => {
            let root = dir.path().join("root");
            std::fs::create_dir(&root)?;
            root
        }
    };
    let text = format!(
        "[runtime]\nassessment_root = {:?}\nstate_dir = {:?}\n\n[[plugin]]\nname = {name:?}\npath = {:?}\n{extra}\n",
        root.display().to_string(),
        dir.path().join("state").display().to_string(),
        wasm.display().to_string(),
    );
    let config = AgentConfig::parse(&text, Path::new("bench.toml"), dir.path())
        .context("the benchmark's agent configuration")?;
    let runtime = Arc::new(Runtime::with_allocation(&config, allocation)?);
    if runtime.engine.allocation() != allocation {
        bail!("the engine could not allocate as asked ({allocation:?})");
    }
    let loader = Loader::new(runtime.clone(), root.clone());
    let spec = config.plugins.first().context("no plugin configured")?;
    let plugin = loader
        .prepared(spec)
        .await
        .map_err(|(_, e)| anyhow::anyhow!("cannot prepare {}: {}", wasm.display(), e.message))?;
    Ok(Prepared {
        runtime,
        plugin,
        root,
        _dir: dir,
    })
}

/// One job through the real executor (`executor::run_job`); the number of
/// findings.
pub async fn executor_job(prepared: &Prepared) -> anyhow::Result<usize> {
    let report =
        executor::run_job(&prepared.runtime.engine, &prepared.plugin, &prepared.root).await;
    if let Some(e) = report.error {
        bail!("the job failed: {}", e.message);
    }
    Ok(report.findings.len())
}

/// The floor: the same component on the same engine and linker, a fresh
/// store with the smallest state a plugin can run in, instantiate, call
/// `run`, take the findings. No limits, deadline, labels, span or report.
pub struct Bare {
    engine: PluginEngine,
    pre: PluginPre,
    known: BTreeMap<String, Vec<Reference>>,
    root: PathBuf,
    labels: Arc<JobLabels>,
}

impl Bare {
    /// The floor for `wasm`, compiled again on `engine`.
    pub async fn new(engine: &PluginEngine, wasm: &Path, root: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(wasm)?;
        let component = engine.compile(bytes).await?;
        let pre = engine.pre_instantiate(&component)?;
        let known = [("bench-one".to_string(), Vec::new())].into();
        Ok(Bare {
            engine: engine.clone(),
            pre,
            known,
            root: root.to_path_buf(),
            labels: Arc::new(JobLabels {
                plugin: "bench-probe".to_string(),
                version: "0.1.0".to_string(),
                digest: "bare".to_string(),
                job_id: "bare".to_string(),
            }),
        })
    }

    /// One instantiate + `run`; the number of findings.
    pub async fn call(&self) -> anyhow::Result<usize> {
        let limits = Limits::default();
        let target = TargetCtx::open_for_run(&self.root, GrantSet::default(), limits.clone())?;
        let state = PluginState::new(
            ConfigCtx::default(),
            target,
            ResultsCtx::new(
                self.known.clone(),
                limits.max_findings,
                limits.max_findings_bytes,
            ),
            Arc::new(LogSink::new(self.labels.clone(), limits.log_bytes)),
            limits.memory_bytes,
        );
        let mut store = Store::new(self.engine.engine(), state);
        // The engine interrupts on epochs; a deadline far away.
        store.set_epoch_deadline(1 << 40);
        match self.pre.run(&mut store).await? {
            Ok(_) => Ok(store.data_mut().results.take().len()),
            Err(e) => bail!("the plugin failed: {e:?}"),
        }
    }
}

/// One job as a process: spawn `native-probe` with `args`, read its
/// finding from the pipe.
pub fn process_job(native: &Path, args: &[String]) -> anyhow::Result<usize> {
    let out = Command::new(native)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", native.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", native.display(), out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let finding: serde_json::Value = serde_json::from_str(line.trim())?;
    if finding["check_id"] != "bench-one" {
        bail!("unexpected finding {finding}");
    }
    Ok(1)
}

/// Per-job times, in the same run: the executor, the bare floor and a
/// process per job. The executor and the floor alternate job by job (so
/// that drift of the machine affects both alike); a process job is timed
/// after every `iterations / processes` of them.
pub async fn per_job(
    prepared: &Prepared,
    bare: &Bare,
    native: &Path,
    warmup: usize,
    iterations: usize,
    processes: usize,
) -> anyhow::Result<[Samples; 3]> {
    let mut executor = Vec::with_capacity(iterations);
    let mut floor = Vec::with_capacity(iterations);
    let mut process = Vec::with_capacity(processes);
    let every = (iterations / processes.max(1)).max(1);
    for round in 0..warmup + iterations {
        let started = Instant::now();
        let findings = executor_job(prepared).await?;
        let executor_time = started.elapsed();
        expect_one("executor", findings)?;
        let started = Instant::now();
        let findings = bare.call().await?;
        let floor_time = started.elapsed();
        expect_one("bare", findings)?;
        if round < warmup {
            continue;
        }
        executor.push(executor_time);
        floor.push(floor_time);
        if (round - warmup).is_multiple_of(every) && process.len() < processes {
            let started = Instant::now();
            let findings = process_job(native, &[])?;
            process.push(started.elapsed());
            expect_one("process", findings)?;
        }
    }
    Ok([
        Samples::new(executor),
        Samples::new(floor),
        Samples::new(process),
    ])
}

fn expect_one(what: &str, findings: usize) -> anyhow::Result<()> {
    if findings != 1 {
        bail!("{what}: {findings} findings, expected 1");
    }
    Ok(())
}

/// `total` jobs through the executor with `concurrency` of them at a time:
/// the elapsed time and the peak resident and virtual memory of the
/// process meanwhile.
pub async fn throughput(
    prepared: &Prepared,
    concurrency: usize,
    total: usize,
) -> anyhow::Result<(Duration, Memory)> {
    let per_worker = total / concurrency;
    let sampler = MemorySampler::start();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let engine = prepared.runtime.engine.clone();
        let plugin = prepared.plugin.clone();
        let root = prepared.root.clone();
        workers.spawn(async move {
            for _ in 0..per_worker {
                let report = executor::run_job(&engine, &plugin, &root).await;
                if let Some(e) = report.error {
                    bail!("a job failed: {}", e.message);
                }
            }
            Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    Ok((elapsed, sampler.stop()))
}

/// Peak memory of this process over a stretch of time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Highest resident set size, KiB.
    pub rss_kib: u64,
    /// Highest virtual size (reserved address space), KiB.
    pub virtual_kib: u64,
}

struct MemorySampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Memory>,
}

impl MemorySampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = Memory::default();
            while !flag.load(Ordering::Relaxed) {
                if let Some(now) = memory_of("self") {
                    peak.rss_kib = peak.rss_kib.max(now.rss_kib);
                    peak.virtual_kib = peak.virtual_kib.max(now.virtual_kib);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        MemorySampler { stop, thread }
    }

    fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Resident and virtual size of process `pid` (`self` for this one).
pub fn memory_of(pid: &str) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        virtual_kib: field("VmSize:")?,
    })
}

/// Create `count` files of `size` bytes, `dir/f0` … , for the host-call
/// benchmark.
pub fn make_files(dir: &Path, count: u64, size: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let content = vec![b'x'; size];
    for i in 0..count {
        std::fs::write(dir.join(format!("f{i}")), &content)?;
    }
    Ok(())
}

/// The host-call benchmark's logic, natively in this process: stat and
/// read `dir/f0` … `dir/f{count-1}`; the bytes read.
pub fn native_files(dir: &Path, count: u64) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for i in 0..count {
        let path = dir.join(format!("f{i}"));
        let size = std::fs::metadata(&path)?.len();
        let content = std::fs::read(&path)?;
        if content.len() as u64 != size {
            bail!("{}: size changed", path.display());
        }
        bytes += size;
    }
    Ok(bytes)
}
