//! `assessment-bench`: measures the runtime side by side with its
//! baselines in one run and writes the tables of `BENCHMARKS.md`.
//! `scripts/bench.sh` builds what it needs (release) and runs it.
//!
//! Not a timed test: the numbers depend on the machine; what is compared
//! is ratios measured in the same run.

mod control_plane;
mod daemon;
mod ingest;
mod jobs;
mod outbox;
mod report;
mod start;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use assessment_runtime::engine::Allocation;

use crate::report::{Table, size, verdict};
use crate::stats::{Samples, human, ratio};

#[derive(Parser)]
#[command(
    about = "Benchmarks of the Assessment Runtime against bare wasmtime and process-per-plugin"
)]
struct Args {
    /// Directory of the release guest components (bench_probe.wasm).
    #[arg(long, default_value = "target/guests/wasm32-wasip2/release")]
    guests: PathBuf,
    /// The Python example plugin (componentize-py), for cold and warm start.
    #[arg(long, default_value = "target/guests-foreign/login_defs.wasm")]
    python: PathBuf,
    /// The repository (fixture trees).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Write the tables here.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Fewer iterations: checks that every benchmark runs, numbers are rough.
    #[arg(long)]
    quick: bool,
    /// Only run this many one-finding jobs through the executor, one after
    /// another, and exit: the workload `scripts/bench.sh` profiles with
    /// callgrind.
    #[arg(long, value_name = "JOBS")]
    profile_jobs: Option<usize>,
}

/// Iteration counts.
struct Plan {
    warmup: usize,
    per_job: usize,
    processes: usize,
    throughput_jobs: usize,
    cold: usize,
    warm: usize,
    python_cold: usize,
    outbox_jobs: usize,
    /// Scales the control-plane benchmarks' request counts.
    ingest_scale: usize,
    idle: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                warmup: 20,
                per_job: 200,
                processes: 20,
                throughput_jobs: 1_280,
                cold: 2,
                warm: 5,
                python_cold: 1,
                outbox_jobs: 2_000,
                ingest_scale: 1,
                idle: Duration::from_secs(10),
            }
        } else {
            Plan {
                warmup: 200,
                per_job: 5_000,
                processes: 500,
                throughput_jobs: 64_000,
                cold: 10,
                warm: 50,
                python_cold: 3,
                outbox_jobs: 20_000,
                ingest_scale: 4,
                idle: Duration::from_secs(60),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::new(args.quick);
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("the benchmark executable has no directory")?
        .to_path_buf();
    let runtime_bin = exe_dir.join("assessment-runtime");
    let native = exe_dir.join("native-probe");
    let wasm = args.guests.join("bench_probe.wasm");
    for needed in [&runtime_bin, &native, &wasm] {
        if !needed.exists() {
            bail!(
                "{} is missing: run scripts/bench.sh, which builds it",
                needed.display()
            );
        }
    }
    // Configurations are written in temporary directories: absolute paths.
    let wasm = std::fs::canonicalize(&wasm)?;
    let mut args = args;
    if let Ok(python) = std::fs::canonicalize(&args.python) {
        args.python = python;
    }
    args.repo = std::fs::canonicalize(&args.repo)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build of the benchmarks measures nothing useful; use --release"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(count) = args.profile_jobs {
        return rt.block_on(async {
            // Under valgrind the pool's address space cannot be reserved:
            // instances on demand (table 1 gives the pool's difference).
            let prepared =
                jobs::prepare("bench-probe", &wasm, "", None, Allocation::OnDemand).await?;
            let started = Instant::now();
            for _ in 0..count {
                jobs::executor_job(&prepared).await?;
            }
            eprintln!("{count} jobs in {}", human(started.elapsed()));
            Ok(())
        });
    }
    let started = Instant::now();
    let mut tables = Vec::new();
    let mut summary = Vec::new();

    eprintln!("== per-job overhead");
    tables.push(rt.block_on(per_job(&wasm, &native, &plan, &mut summary))?);
    eprintln!("== cold and warm start");
    tables.push(start_times(
        &runtime_bin,
        &wasm,
        &args,
        &plan,
        &mut summary,
    )?);
    eprintln!("== throughput");
    let (throughput, one_finding) = rt.block_on(throughput(&wasm, &plan, &mut summary))?;
    tables.push(throughput);
    eprintln!("== durable outbox");
    tables.push(outbox_table(&one_finding, &plan, &mut summary)?);
    let control_plane_bin = exe_dir.join("assessment-control-plane");
    eprintln!("== findings to the control plane");
    tables.push(delivery_table(
        &rt,
        &control_plane_bin,
        &one_finding,
        &plan,
    )?);
    eprintln!("== daemon footprint");
    tables.push(footprint(
        &control_plane_bin,
        &runtime_bin,
        &wasm,
        &plan,
        &mut summary,
    )?);
    eprintln!("== host-call path");
    tables.push(rt.block_on(host_calls(&wasm, &plan, &mut summary))?);
    eprintln!("== control plane ingest");
    tables.push(rt.block_on(ingest_table(
        &control_plane_bin,
        &one_finding,
        &plan,
        &mut summary,
    ))?);

    let document = document(&args, &summary, &tables, started.elapsed());
    std::fs::write(&args.out, document)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// A summary line: what, the target, the result, met or not.
type Summary = Vec<[String; 4]>;

/// The engine of every benchmark: the pool sized for 64 jobs at once, as
/// `runtime.max_concurrent_jobs = 64` would size it.
const POOLED: Allocation = Allocation::Pooling { concurrent: 66 };

async fn per_job(
    wasm: &Path,
    native: &Path,
    plan: &Plan,
    summary: &mut Summary,
) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "1. Per-job overhead",
        "One job of the one-finding plugin (`bench/plugin`, a Rust component). **Executor**: \
         `executor::run_job`, the path every scheduled and `run --once` job takes (state with the \
         job's grants and limits, store with memory limiter and deadline, instantiate, `run`, \
         findings validated and collected, report). **Bare wasmtime**: the same component, \
         engine and linker; a fresh store with the smallest state, instantiate, call `run`, take \
         the findings — the floor. **Process per plugin**: `native-probe`, the same logic as a \
         native program, spawned per job and reporting its finding as JSON over a pipe (no RPC \
         handshake, so a lower bound for go-plugin style designs). The executor and the floor \
         alternate job by job. Measured with the instance pool (the runtime's default) and with \
         allocation on demand; ratios are to bare wasmtime on the same engine.",
        &[
            "path",
            "allocation",
            "samples",
            "median",
            "p99",
            "ratio to bare (median)",
            "target",
            "result",
        ],
    );
    for (allocation, label) in [(POOLED, "pool"), (Allocation::OnDemand, "on demand")] {
        eprintln!("   {label}");
        let prepared = jobs::prepare("bench-probe", wasm, "", None, allocation).await?;
        let bare = jobs::Bare::new(&prepared.runtime.engine, wasm, &prepared.root).await?;
        let [executor, floor, process] = jobs::per_job(
            &prepared,
            &bare,
            native,
            plan.warmup,
            plan.per_job,
            plan.processes,
        )
        .await?;
        let (e, f, p) = (
            executor.median().as_secs_f64(),
            floor.median().as_secs_f64(),
            process.median().as_secs_f64(),
        );
        let row = |name: &str, s: &Samples, target: &str, result: String| {
            vec![
                name.to_string(),
                label.to_string(),
                s.len().to_string(),
                human(s.median()),
                human(s.p99()),
                ratio(s.median().as_secs_f64(), f),
                target.to_string(),
                result,
            ]
        };
        let overhead_met = e <= 1.5 * f;
        let process_met = p >= 50.0 * e;
        table.row(row("bare wasmtime", &floor, "", String::new()));
        table.row(row(
            "executor",
            &executor,
            "≤ 1.5× bare",
            verdict(overhead_met, &format!("{} of bare", ratio(e, f))),
        ));
        table.row(row(
            "process per plugin",
            &process,
            "≥ 50× executor",
            format!(
                "{} ({} of executor)",
                verdict(process_met, "too close"),
                ratio(p, e)
            ),
        ));
        if allocation == POOLED {
            summary.push([
                "per-job overhead vs bare wasmtime".into(),
                "≤ 1.5×".into(),
                ratio(e, f),
                verdict(overhead_met, ""),
            ]);
            summary.push([
                "process per plugin vs executor".into(),
                "≥ 50×".into(),
                ratio(p, e),
                verdict(process_met, ""),
            ]);
        }
    }
    Ok(table)
}

fn start_times(
    runtime_bin: &Path,
    wasm: &Path,
    args: &Args,
    plan: &Plan,
    summary: &mut Summary,
) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "2. Cold and warm start",
        "`assessment-runtime run --once --output json` of one plugin, from process start to \
         exit (the first finding comes before exit, so this bounds it from above). **Cold**: a \
         new state directory per run, so the component is compiled. **Warm**: one state \
         directory whose precompiled artifact (verified against its recorded digest) is loaded, \
         no compilation.",
        &[
            "plugin",
            "store",
            "samples",
            "median",
            "p99",
            "cold / warm",
            "target",
            "result",
        ],
    );
    let mut cases = vec![(
        start::StartCase {
            name: "bench-probe",
            wasm: wasm.to_path_buf(),
            extra: String::new(),
            tree: None,
        },
        plan.cold,
        "first finding < 50 ms",
        Duration::from_millis(50),
    )];
    if args.python.exists() {
        cases.push((
            start::StartCase {
                name: "login-defs",
                wasm: args.python.clone(),
                extra: "grants = { read = [\"/etc/login.defs\"] }".to_string(),
                tree: Some(
                    args.repo
                        .join("plugins-examples/python/login-defs/fixtures/good"),
                ),
            },
            plan.python_cold,
            "whole run < 100 ms",
            Duration::from_millis(100),
        ));
    } else {
        table.note(format!(
            "The Python plugin was not measured: {} is missing (scripts/build-foreign-plugins.sh builds it).",
            args.python.display()
        ));
    }
    for (case, cold_runs, target, limit) in cases {
        eprintln!("   {}", case.name);
        let (cold, warm) = start::cold_and_warm(runtime_bin, &case, cold_runs, plan.warm)?;
        let kind = if case.name == "bench-probe" {
            "Rust, 1 finding"
        } else {
            "Python (componentize-py)"
        };
        let cw = ratio(cold.median().as_secs_f64(), warm.median().as_secs_f64());
        table.row(vec![
            format!("{} ({kind})", case.name),
            "cold".into(),
            cold.len().to_string(),
            human(cold.median()),
            human(cold.p99()),
            String::new(),
            String::new(),
            String::new(),
        ]);
        let met = warm.median() < limit;
        table.row(vec![
            format!("{} ({kind})", case.name),
            "warm".into(),
            warm.len().to_string(),
            human(warm.median()),
            human(warm.p99()),
            cw.clone(),
            target.to_string(),
            verdict(
                met,
                &format!("{} over", human(warm.median().saturating_sub(limit))),
            ),
        ]);
        summary.push([
            format!("warm start, {}", case.name),
            target.to_string(),
            human(warm.median()),
            verdict(met, ""),
        ]);
    }
    Ok(table)
}

async fn throughput(
    wasm: &Path,
    plan: &Plan,
    summary: &mut Summary,
) -> anyhow::Result<(Table, OneFinding)> {
    let mut table = Table::new(
        "3. Throughput",
        "One-finding jobs through the executor with N of them in flight at once (tokio, one \
         worker thread per core), one prepared plugin. Memory is this process's peak during the \
         run: resident, and virtual (address space reserved, e.g. by the allocator's pools).",
        &[
            "allocation",
            "concurrency",
            "jobs",
            "elapsed",
            "jobs/s",
            "peak RSS",
            "peak virtual",
            "target",
            "result",
        ],
    );
    let baseline = jobs::memory_of("self").unwrap_or_default();
    let mut best = 0.0f64;
    let mut last = None;
    for (allocation, label, concurrency) in [
        (POOLED, "pool", 1usize),
        (POOLED, "pool", 2),
        (POOLED, "pool", 8),
        (POOLED, "pool", 64),
        (Allocation::OnDemand, "on demand", 1),
        (Allocation::OnDemand, "on demand", 64),
    ] {
        eprintln!("   {label}, concurrency {concurrency}");
        let prepared = jobs::prepare("bench-probe", wasm, "", None, allocation).await?;
        let (elapsed, memory) =
            jobs::throughput(&prepared, concurrency, plan.throughput_jobs).await?;
        let done = (plan.throughput_jobs / concurrency) * concurrency;
        let rate = done as f64 / elapsed.as_secs_f64();
        best = best.max(rate);
        table.row(vec![
            label.to_string(),
            concurrency.to_string(),
            done.to_string(),
            human(elapsed),
            format!("{rate:.0}"),
            size(memory.rss_kib),
            size(memory.virtual_kib),
            "≥ 10 000 jobs/s".into(),
            verdict(rate >= 10_000.0, &format!("{:.0}% of it", rate / 100.0)),
        ]);
        last = Some(prepared);
    }
    let prepared = last.context("no throughput run")?;
    table.note(format!(
        "Before the runs the process held {} resident and {} virtual. Virtual memory is \
         address space reserved, not used: each engine's pool here is sized for 64 jobs at once \
         (about 35 GiB per slot, mostly 4 GiB guard-backed memory slots); up to two engines were alive \
         during the pooled runs.",
        size(baseline.rss_kib),
        size(baseline.virtual_kib)
    ));
    summary.push([
        "one-finding jobs/s (best concurrency)".into(),
        "≥ 10 000".into(),
        format!("{best:.0}"),
        verdict(best >= 10_000.0, ""),
    ]);
    let report = one_finding(&prepared).await?;
    Ok((table, report))
}

/// A finding and the plugin that emitted it, for the outbox benchmark.
struct OneFinding {
    finding: assessment_runtime::capabilities::results::Finding,
    plugin: assessment_runtime::plugins::PluginId,
}

async fn one_finding(prepared: &jobs::Prepared) -> anyhow::Result<OneFinding> {
    let report = assessment_runtime::executor::run_job(
        &prepared.runtime.engine,
        &prepared.plugin,
        &prepared.root,
    )
    .await;
    let finding = report
        .findings
        .into_iter()
        .next()
        .context("the plugin emitted no finding")?;
    Ok(OneFinding {
        finding,
        plugin: prepared.plugin.id.clone(),
    })
}

fn outbox_table(one: &OneFinding, plan: &Plan, summary: &mut Summary) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "3b. Durable findings into the outbox",
        "Jobs on several threads turn their findings into evidence records and push them into \
         the real outbox (`results::outbox`); a push returns once its records are durable \
         (written, fsynced, renamed, directory fsynced). Every record is read back afterwards: \
         none lost, none twice. Latency is per job, from its findings to its records being \
         durable.",
        &[
            "threads",
            "findings/job",
            "records",
            "batch files",
            "findings/s",
            "p50 latency",
            "p99 latency",
            "target",
            "result",
        ],
    );
    let mut best = 0.0f64;
    for (threads, per_job) in [(1usize, 1usize), (8, 1), (64, 1), (256, 1), (8, 100)] {
        // Each push waits for a write to reach the disk: a few hundred
        // jobs per thread are enough for a steady rate.
        let jobs = plan.outbox_jobs.min(threads * 500) / per_job.min(20);
        eprintln!("   {threads} threads, {per_job} findings per job");
        let run = outbox::run(&one.finding, &one.plugin, threads, jobs, per_job)?;
        let rate = run.records as f64 / run.elapsed.as_secs_f64();
        best = best.max(rate);
        table.row(vec![
            threads.to_string(),
            per_job.to_string(),
            run.records.to_string(),
            run.batches.to_string(),
            format!("{rate:.0}"),
            human(run.latency.median()),
            human(run.latency.p99()),
            "≥ 20 000 findings/s".into(),
            verdict(rate >= 20_000.0, &format!("{:.0}% of it", rate / 200.0)),
        ]);
    }
    summary.push([
        "durable findings/s into the outbox".into(),
        "≥ 20 000".into(),
        format!("{best:.0}"),
        verdict(best >= 20_000.0, ""),
    ]);
    Ok(table)
}

/// Arguments of the control plane when many runtimes enroll from one
/// address: its per-source limit of unauthenticated requests (enrollment,
/// tokens) raised for the benchmark's setup.
const MANY_RUNTIMES: &[&str] = &["--auth-burst", "10000", "--auth-per-minute", "100000"];

/// Whether `bin` is missing; if so the table says so.
fn missing(table: &mut Table, bin: &Path) -> bool {
    if bin.exists() {
        return false;
    }
    table.note(format!(
        "Not measured: {} is missing (scripts/bench.sh builds it).",
        bin.display()
    ));
    true
}

/// The control plane holds exactly `expected` records, each once.
fn stored_exactly(server: &control_plane::Server, expected: usize) -> anyhow::Result<usize> {
    let (stored, distinct) = server.stored_evidence()?;
    if stored != expected || distinct != expected {
        bail!(
            "the control plane stored {stored} records ({distinct} distinct), expected {expected}"
        );
    }
    Ok(stored)
}

fn delivery_table(
    rt: &tokio::runtime::Runtime,
    control_plane_bin: &Path,
    one: &OneFinding,
    plan: &Plan,
) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "3c. Findings delivered to the control plane",
        "The whole way of a finding: jobs on several threads push their findings into the real \
         outbox (durable, as in 3b) while a delivery loop like the daemon's, woken by each push, \
         sends the waiting batches through the runtime's client to the real reference control \
         plane (mutual TLS on loopback, SQLite) and removes them once it confirms. Latency is \
         per record, from its job's findings to the control plane's confirmation; the rate is \
         from the first push to the last confirmation. Every record is counted back out of the \
         control plane's database: none lost, none twice.",
        &[
            "threads",
            "findings/job",
            "records",
            "batches delivered",
            "findings/s",
            "p50 emit to stored",
            "p99 emit to stored",
            "stored by the control plane",
        ],
    );
    if missing(&mut table, control_plane_bin) {
        return Ok(table);
    }
    let server = control_plane::Server::start(control_plane_bin, MANY_RUNTIMES)?;
    let client = rt
        .block_on(ingest::enroll(&server, 1))?
        .pop()
        .context("no runtime enrolled")?;
    let mut expected = 0;
    let scale = plan.ingest_scale;
    for (threads, per_job, jobs) in [
        (1usize, 1usize, 50 * scale),
        (8, 1, 400 * scale),
        (8, 100, 20 * scale),
    ] {
        eprintln!("   {threads} threads, {per_job} findings per job");
        let run = ingest::outbox_to_control_plane(
            rt,
            client.clone(),
            &one.finding,
            &one.plugin,
            threads,
            jobs,
            per_job,
        )?;
        expected += run.records;
        let stored = stored_exactly(&server, expected)?;
        table.row(vec![
            threads.to_string(),
            per_job.to_string(),
            run.records.to_string(),
            run.batches.to_string(),
            format!("{:.0}", run.records as f64 / run.elapsed.as_secs_f64()),
            human(run.latency.median()),
            human(run.latency.p99()),
            format!("{stored} of {expected} (all)"),
        ]);
    }
    Ok(table)
}

async fn ingest_table(
    control_plane_bin: &Path,
    one: &OneFinding,
    plan: &Plan,
    summary: &mut Summary,
) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "6. Control plane ingest",
        "The reference control plane (`assessment-control-plane serve`, SQLite in WAL mode) \
         under many runtimes at once: each simulated runtime is enrolled with its own key and \
         client certificate and speaks mutual TLS on loopback through the runtime's own client \
         (`control_plane::client`), one connection each, every runtime sending its next request \
         when the last is answered. Evidence records are made before the clock starts; \
         heartbeats are those of a daemon with ten ready plugins. The clients share the \
         machine's two cores with the control plane, so these are lower bounds of what the \
         control plane alone would take. Every record is counted back out of its database.",
        &[
            "kind",
            "runtimes",
            "per request",
            "requests",
            "items stored",
            "elapsed",
            "items/s",
            "p50 request",
            "p99 request",
            "target",
            "result",
        ],
    );
    if missing(&mut table, control_plane_bin) {
        return Ok(table);
    }
    let server = control_plane::Server::start(control_plane_bin, MANY_RUNTIMES)?;
    let most = 64;
    let clients = ingest::enroll(&server, most).await?;
    let scale = plan.ingest_scale;
    let mut expected = 0;
    let mut best = 0.0f64;
    for (round, (runtimes, per_request, requests)) in [
        (1usize, 1usize, 50 * scale),
        (16, 1, 10 * scale),
        (1, 100, 5 * scale),
        (16, 100, scale),
        (64, 100, scale.div_ceil(2)),
        (64, 1000, 1),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("   evidence: {runtimes} runtimes, {per_request} records per request");
        let load = ingest::evidence(
            &clients[..runtimes],
            &one.finding,
            &one.plugin,
            per_request,
            requests,
            round,
        )
        .await?;
        expected += load.items;
        stored_exactly(&server, expected)?;
        let rate = load.items as f64 / load.elapsed.as_secs_f64();
        best = best.max(rate);
        table.row(vec![
            "evidence".into(),
            runtimes.to_string(),
            format!("{per_request} records"),
            load.latency.len().to_string(),
            load.items.to_string(),
            human(load.elapsed),
            format!("{rate:.0}"),
            human(load.latency.median()),
            human(load.latency.p99()),
            "≥ 5 000 records/s".into(),
            verdict(rate >= 5_000.0, &format!("{:.0}% of it", rate / 50.0)),
        ]);
    }
    for runtimes in [1usize, 16, 64] {
        eprintln!("   heartbeats: {runtimes} runtimes");
        let per_client = (200 * scale / runtimes).max(5);
        let load = ingest::heartbeats(&clients[..runtimes], per_client).await?;
        table.row(vec![
            "heartbeats".into(),
            runtimes.to_string(),
            "1 heartbeat".into(),
            load.latency.len().to_string(),
            load.items.to_string(),
            human(load.elapsed),
            format!("{:.0}", load.items as f64 / load.elapsed.as_secs_f64()),
            human(load.latency.median()),
            human(load.latency.p99()),
            String::new(),
            String::new(),
        ]);
    }
    table.note(
        "The runtime sends a job's records in one request (up to 1 000 records; its outbox \
         batches several jobs' records together): the rows of one record per request show the \
         cost of a request rather than of a record.",
    );
    summary.push([
        "control plane evidence records/s (SQLite)".into(),
        "≥ 5 000".into(),
        format!("{best:.0}"),
        verdict(best >= 5_000.0, ""),
    ]);
    Ok(table)
}

fn footprint(
    control_plane_bin: &Path,
    runtime_bin: &Path,
    wasm: &Path,
    plan: &Plan,
    summary: &mut Summary,
) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "4. Footprint of the daemon",
        "The release `assessment-runtime daemon`, enrolled with the reference control plane \
         (mutual TLS on loopback), with 10 configured plugins (instances of `bench-probe`), run \
         twice: every plugin on a 20 s schedule, memory read once every plugin has run \
         (loaded, compiled artifact in memory, instance pool reserved); and every plugin on an \
         hourly schedule, so that the window holds only what an idle daemon does (heartbeats \
         and configuration polls at their default intervals, timers). CPU is utime + stime \
         over the window. Memory at 64 concurrent jobs is in table 3.",
        &["measure", "value", "target", "result"],
    );
    if missing(&mut table, control_plane_bin) {
        return Ok(table);
    }
    // Every plugin runs once (its first fire is one interval after start,
    // plus jitter) before the memory is read.
    let busy = daemon::idle(
        runtime_bin,
        control_plane_bin,
        wasm,
        10,
        "20s",
        Duration::from_secs(25),
        plan.idle,
    )?;
    // Idle: no job falls in the window, only heartbeats and configuration
    // polls (their default intervals) and the scheduler's timers; the
    // window opens once the start (enrolled identity loaded, first token,
    // heartbeat and configuration poll) is over.
    let idle = daemon::idle(
        runtime_bin,
        control_plane_bin,
        wasm,
        10,
        "1h",
        Duration::from_secs(15),
        plan.idle,
    )?;
    let rss_mib = busy.memory.rss_kib as f64 / 1024.0;
    let rss_met = rss_mib < 40.0;
    let cpu_met = idle.cpu_percent < 0.5;
    table.row(vec![
        "resident memory, 10 plugins loaded".into(),
        format!("{rss_mib:.1} MiB"),
        "< 40 MB".into(),
        verdict(rss_met, &format!("{rss_mib:.1} MiB")),
    ]);
    table.row(vec![
        "virtual memory (reserved)".into(),
        size(busy.memory.virtual_kib),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "CPU over {}, idle (10 plugins every hour: no job in the window)",
            human(idle.window)
        ),
        format!("{:.2} %", idle.cpu_percent),
        "< 0.5 %".into(),
        verdict(cpu_met, &format!("{:.2} %", idle.cpu_percent)),
    ]);
    table.row(vec![
        format!(
            "CPU over {}, 10 plugins every 20 s (about {} jobs in the window)",
            human(busy.window),
            busy.window.as_secs() * 10 / 20
        ),
        format!("{:.2} %", busy.cpu_percent),
        String::new(),
        String::new(),
    ]);
    summary.push([
        "idle daemon RSS, 10 plugins".into(),
        "< 40 MB".into(),
        format!("{rss_mib:.1} MiB"),
        verdict(rss_met, ""),
    ]);
    summary.push([
        "idle daemon CPU".into(),
        "< 0.5 %".into(),
        format!("{:.2} %", idle.cpu_percent),
        verdict(cpu_met, ""),
    ]);
    Ok(table)
}

async fn host_calls(wasm: &Path, plan: &Plan, summary: &mut Summary) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "5. Host-call path",
        "A job that stats and reads N files of 100 bytes (`/bench/f0` …) through the \
         `filesystem` capability, against the same stat and read made natively in this process \
         (no process spawn: the strictest baseline). Per file = median job time / N.",
        &[
            "N",
            "samples",
            "plugin median",
            "plugin p99",
            "native median",
            "per file, plugin",
            "per file, native",
            "ratio",
            "target",
            "result",
        ],
    );
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let files = root.join("bench");
    let sizes: &[(u64, usize)] = if plan.per_job < 1000 {
        &[(10, 20), (1_000, 3), (10_000, 1)]
    } else {
        &[(10, 300), (1_000, 30), (100_000, 3)]
    };
    let largest = sizes.iter().map(|(n, _)| *n).max().unwrap_or(0);
    jobs::make_files(&files, largest, 100)?;
    let mut worst = 0.0f64;
    for &(n, iterations) in sizes {
        eprintln!("   N = {n}");
        let extra = format!(
            "grants = {{ read = [\"/bench\"] }}\nconfig = {{ files = \"/bench\", count = {n} }}\nlimits = {{ timeout = \"10m\" }}"
        );
        let prepared = jobs::prepare("bench-probe", wasm, &extra, Some(&root), POOLED).await?;
        let mut plugin = Vec::new();
        let mut native = Vec::new();
        // One untimed round of each warms the page cache.
        for round in 0..=iterations {
            let started = Instant::now();
            jobs::executor_job(&prepared).await?;
            let p = started.elapsed();
            let started = Instant::now();
            jobs::native_files(&files, n)?;
            let q = started.elapsed();
            if round > 0 {
                plugin.push(p);
                native.push(q);
            }
        }
        let (plugin, native) = (Samples::new(plugin), Samples::new(native));
        let per = |s: &Samples| s.median().as_secs_f64() / n as f64;
        let r = per(&plugin) / per(&native);
        if n >= 1_000 {
            worst = worst.max(r);
        }
        table.row(vec![
            n.to_string(),
            plugin.len().to_string(),
            human(plugin.median()),
            human(plugin.p99()),
            human(native.median()),
            human(Duration::from_secs_f64(per(&plugin))),
            human(Duration::from_secs_f64(per(&native))),
            ratio(per(&plugin), per(&native)),
            if n >= 1_000 {
                "≤ 3× native".into()
            } else {
                "(job overhead dominates)".into()
            },
            if n >= 1_000 {
                verdict(r <= 3.0, &format!("{r:.1}×"))
            } else {
                String::new()
            },
        ]);
    }
    summary.push([
        "host-call path per file vs native".into(),
        "≤ 3×".into(),
        format!("{worst:.2}×"),
        verdict(worst <= 3.0, ""),
    ]);
    Ok(table)
}

fn document(args: &Args, summary: &Summary, tables: &[Table], took: Duration) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = command_line("uname", &["-sr"]);
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let mut out = format!(
        "# Benchmarks\n\n\
         Written by `scripts/bench.sh` (the `assessment-bench` program in `bench/`); do not edit \
         by hand. Each table compares the runtime with a baseline measured **in the same run** \
         on the same machine, so the ratios are what to read; the absolute times are this \
         machine's.\n\n\
         - Machine: {cpu}, {cores} cores, {kernel}\n\
         - Date: {date}; commit {commit}; took {}\n\
         - Command: `scripts/bench.sh{}` (release build)\n\n\
         ## Summary\n\n| measure | target | result | |\n|---|---|---|---|\n",
        human(took),
        if args.quick { " --quick" } else { "" },
    );
    for [what, target, result, met] in summary {
        out.push_str(&format!("| {what} | {target} | {result} | {met} |\n"));
    }
    out.push('\n');
    for table in tables {
        out.push_str(&table.markdown());
        out.push('\n');
    }
    out
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}
