//! `fleet-load`: simulates a fleet of runtimes against running control
//! planes over mutual TLS. Each simulated runtime enrolls (an enrollment
//! token from the admin API, a key and CSR made here, `/v1/enroll`), then
//! for `--duration` takes access tokens and sends heartbeats,
//! configuration polls and evidence batches at the rate of the load model
//! (see `model.rs` and the crate's README), compressed by `--time-scale`.
//! It prints (and writes, with `--markdown` and `--json`) requests/s,
//! latency per route, errors, records accepted, and from the control
//! planes' metrics the records they stored and their database's size.

mod evidence;
mod model;
mod report;
mod runtime;
mod scrape;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::model::{Activity, LoadModel, Schedule};
use crate::report::{Phase, Report, is_enrollment, peak_rss_bytes};
use crate::runtime::{Fleet, SimulatedRuntime, enrollment_token};

/// Simulates a fleet of runtimes against the reference control plane.
#[derive(Debug, Parser)]
// A later value of an option wins (scripts pass defaults, then the user's).
#[command(name = "fleet-load", version, about, args_override_self = true)]
struct Cli {
    /// A control plane's base URL, e.g. `https://127.0.0.1:8443`; repeat it
    /// for replicas sharing one database (runtime i talks to the i-th,
    /// modulo their number). Prefer the IP address: a name is resolved for
    /// every new connection, which costs the generator time.
    #[arg(long = "url", value_name = "URL", required = true)]
    urls: Vec<String>,
    /// The control plane's CA certificate (PEM), as printed by
    /// `assessment-control-plane ca certificate`.
    #[arg(long, value_name = "FILE")]
    ca_cert: PathBuf,
    /// The control plane's admin token (makes the enrollment tokens).
    #[arg(long, env = "ACP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// A control plane's metrics listener (`serve --metrics-listen`), e.g.
    /// `http://127.0.0.1:9465`, read before and after the run for the
    /// records it stored and the database's size; repeat it per replica.
    #[arg(long = "metrics", value_name = "URL")]
    metrics: Vec<String>,
    /// Runtimes to simulate.
    #[arg(long, default_value_t = 10_000)]
    runtimes: usize,
    /// Length of the steady phase (after enrollment), real time.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Model seconds per real second.
    #[arg(long, default_value_t = 10.0)]
    time_scale: f64,
    /// A runtime's heartbeat interval (model time; the daemon's default).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// A runtime's configuration poll interval (model time; `0s`: none).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    config_poll_interval: Duration,
    /// How often a runtime delivers a batch (model time): a job of one of
    /// its four plugins, each run hourly.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    batch_interval: Duration,
    /// Evidence records in a batch (1 to 1000).
    #[arg(long, default_value_t = 25)]
    records_per_batch: usize,
    /// How long the control plane keeps an idle connection (its
    /// `--header-read-timeout`): a runtime keeps its connection for this
    /// long in model time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    server_keep_alive: Duration,
    /// The most activities (heartbeat, poll, batch) in flight at once;
    /// activities past it wait, and their lateness is reported.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// The most enrollments in flight at once.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// How long one request may take.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Connect every runtime from 127.0.0.1 instead of an address of its
    /// own in 127.1.0.0/16 (for systems that do not route all of
    /// 127.0.0.0/8 to the loopback interface; the control plane's per-source
    /// rate limit on enrollment must then be raised).
    #[arg(long)]
    one_source_address: bool,
    /// Seed of the timers' offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The run's name in the report.
    #[arg(long, default_value = "fleet-load")]
    label: String,
    /// Write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the Markdown section here.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !(cli.time_scale.is_finite() && cli.time_scale > 0.0) {
        bail!("--time-scale must be a positive number");
    }
    if !(1..=1000).contains(&cli.records_per_batch) {
        bail!("--records-per-batch must be between 1 and 1000 (the control plane's batch limit)");
    }
    if cli.runtimes == 0 || cli.concurrency == 0 || cli.enroll_concurrency == 0 {
        bail!("--runtimes, --concurrency and --enroll-concurrency must be at least 1");
    }
    let model = LoadModel {
        time_scale: cli.time_scale,
        heartbeat_interval: cli.heartbeat_interval,
        config_poll_interval: Some(cli.config_poll_interval).filter(|d| !d.is_zero()),
        batch_interval: cli.batch_interval,
        records_per_batch: cli.records_per_batch,
        server_keep_alive: cli.server_keep_alive,
    };
    let ca = std::fs::read_to_string(&cli.ca_cert).with_context(|| {
        format!(
            "cannot read the CA certificate {}: write it with `assessment-control-plane ca certificate`",
            cli.ca_cert.display()
        )
    })?;
    let fleet = Arc::new(Fleet::new(
        &ca,
        cli.admin_token.clone(),
        cli.urls.clone(),
        cli.request_timeout,
        !cli.one_source_address,
        model,
    )?);
    let server_before = scrape::scrape(&cli.metrics).await?;

    eprintln!("fleet-load: enrolling {} runtimes", cli.runtimes);
    let (runtimes, enrollment_elapsed) =
        enroll(&fleet, cli.runtimes, cli.enroll_concurrency).await?;
    if runtimes.is_empty() {
        bail!("no runtime could enroll: see the errors above");
    }
    eprintln!(
        "fleet-load: {} runtimes enrolled in {:.1} s; steady phase for {} s at {}×",
        runtimes.len(),
        enrollment_elapsed.as_secs_f64(),
        cli.duration.as_secs_f64(),
        cli.time_scale
    );
    let enrolled = runtimes.len();
    let (steady_elapsed, unfinished) =
        steady(&fleet, runtimes, cli.duration, cli.concurrency, cli.seed).await;
    let server_after = scrape::scrape(&cli.metrics).await?;

    let routes = fleet.recorder.routes();
    let phase = |enrollment: bool, elapsed: Duration| {
        let (ok, errors) = routes
            .iter()
            .filter(|route| is_enrollment(route.route) == enrollment)
            .fold((0, 0), |(ok, errors), route| {
                (ok + route.ok, errors + route.error_count())
            });
        Phase {
            elapsed_s: elapsed.as_secs_f64(),
            requests_ok: ok,
            errors,
        }
    };
    let report = Report {
        label: cli.label.clone(),
        runtimes: cli.runtimes,
        runtimes_enrolled: enrolled,
        control_planes: cli.urls.len(),
        distinct_sources: !cli.one_source_address,
        concurrency: cli.concurrency,
        model,
        offered: model.offered(enrolled),
        duration_s: cli.duration.as_secs_f64(),
        enrollment: phase(true, enrollment_elapsed),
        steady: phase(false, steady_elapsed),
        routes: routes.clone(),
        lag: fleet.recorder.lag(),
        counts: fleet.recorder.counts(),
        unfinished_runtimes: unfinished,
        server_before,
        server_after,
        generator_peak_rss_bytes: peak_rss_bytes(),
    };
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = &cli.markdown {
        std::fs::write(path, &markdown)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Enrolls `count` runtimes, at most `concurrency` at once; those the
/// control plane refused are left out (their errors are recorded).
async fn enroll(
    fleet: &Arc<Fleet>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<SimulatedRuntime>, Duration)> {
    // The operator's side: one client, its connections kept alive.
    let admin = fleet.client(None, None, Duration::from_secs(90))?;
    let slots = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut runtimes = Vec::with_capacity(count);
    for index in 0..count {
        let slot = slots.clone().acquire_owned().await?;
        let fleet = fleet.clone();
        let admin = admin.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let Some(token) = enrollment_token(&fleet, &admin, fleet.url(index)).await else {
                return Ok(None);
            };
            SimulatedRuntime::enroll(&fleet, index, &token).await
        });
        while let Some(done) = tasks.try_join_next() {
            runtimes.extend(done??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        runtimes.extend(done??);
    }
    runtimes.sort_by_key(SimulatedRuntime::index);
    Ok((runtimes, started.elapsed()))
}

/// Runs every runtime's schedule for `duration`, at most `concurrency`
/// activities at once; activities due before the end run to completion.
/// Returns the time until the last one ended and how many runtimes were
/// still busy when the run was cut short (a request timeout after the end).
async fn steady(
    fleet: &Arc<Fleet>,
    runtimes: Vec<SimulatedRuntime>,
    duration: Duration,
    concurrency: usize,
    seed: u64,
) -> (Duration, usize) {
    let in_flight = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for mut runtime in runtimes {
        let fleet = fleet.clone();
        let in_flight = in_flight.clone();
        let mut rng = fastrand::Rng::with_seed(seed ^ (runtime.index() as u64).rotate_left(17));
        let mut schedule = Schedule::new(&fleet.model, &mut rng);
        tasks.spawn(async move {
            while let Some((at, activity)) = schedule.pop() {
                if at >= duration {
                    break;
                }
                tokio::time::sleep_until(start + at).await;
                let Ok(_slot) = in_flight.acquire().await else {
                    break;
                };
                fleet.recorder.started(start.elapsed().saturating_sub(at));
                match activity {
                    Activity::Heartbeat => runtime.heartbeat(&fleet).await,
                    Activity::ConfigPoll => runtime.poll_config(&fleet).await,
                    Activity::Batch => runtime.send_batch(&fleet).await,
                }
            }
        });
    }
    let deadline = start + duration + fleet.request_timeout * 2;
    let mut unfinished = 0;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                unfinished = tasks.len();
                tasks.abort_all();
                break;
            }
        }
    }
    (start.elapsed(), unfinished)
}
