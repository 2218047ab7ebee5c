//! The `assessment-runtime` command line: thin, everything it does is a
//! library call.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::Instrument;

use crate::agent_config::{AgentConfig, PluginOrigin};
use crate::loader::{self, Runtime};
use crate::scheduler;

/// Exit code when a plugin could not be run or failed.
pub const EXIT_JOB_FAILED: u8 = 1;
/// Exit code with `--fail-on-findings` when a check failed.
pub const EXIT_FINDINGS_FAILED: u8 = 2;
/// Exit code when the configuration or the host itself is unusable.
pub const EXIT_UNUSABLE: u8 = 3;
/// Exit code of `daemon --once` when results could not be delivered yet
/// (they stay in the outbox).
pub const EXIT_UNDELIVERED: u8 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "assessment-runtime",
    version,
    about = "Runs compliance and security assessment plugins as sandboxed WebAssembly components"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    /// An OSCAL 1.1.3 assessment-results document (docs/oscal.md).
    Oscal,
    /// One self-contained HTML page, failing checks first.
    Html,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the configured plugins and print their results.
    Run {
        /// The agent configuration file.
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
        /// Run every enabled plugin once, then exit.
        #[arg(long)]
        once: bool,
        /// Results format on stdout.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// Assess this directory tree instead of `runtime.assessment_root`.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Exit with code 2 when a check failed (default: only a plugin
        /// that could not run makes the exit code non-zero).
        #[arg(long)]
        fail_on_findings: bool,
    },
    /// Enroll this runtime with a control plane (once): the credentials are
    /// stored in `runtime.state_dir/credentials.json` (mode 0600).
    Enroll {
        /// The agent configuration file (for `runtime.state_dir`).
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
        /// The control plane's base URL (https://…).
        #[arg(long)]
        url: String,
        /// The one-time enrollment token an operator created.
        #[arg(long, env = "ASSESSMENT_RUNTIME_ENROLLMENT_TOKEN")]
        token: String,
        /// The name this runtime shows in the control plane (default: host name).
        #[arg(long)]
        name: Option<String>,
        /// The control plane's CA certificate (PEM, from
        /// `assessment-control-plane ca certificate`): the issuer this runtime
        /// trusts for the control plane (plus `[network] ca_bundle`, and the
        /// system's store with `control_plane_system_roots`).
        #[arg(long, value_name = "FILE", required_unless_present = "dev_plain_http")]
        ca_cert: Option<PathBuf>,
        /// Enroll over plain HTTP, without TLS: for a development control
        /// plane only (credentials cross the network in the clear).
        #[arg(long, conflicts_with = "ca_cert")]
        dev_plain_http: bool,
    },
    /// Replace this runtime's client secret and client certificate with new
    /// ones from the control plane (the old ones stop working once the new
    /// ones are in use).
    RotateCredentials {
        /// The agent configuration file (for `runtime.state_dir`).
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
    },
    /// Run continuously: configuration from the control plane, plugins on
    /// their schedules, results delivered, heartbeats; SIGTERM drains.
    Daemon {
        /// The agent configuration file.
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
        /// Run every plugin once, deliver the results, send a heartbeat and
        /// exit (exit code 1 when a plugin failed, 4 when results are still
        /// waiting in the outbox).
        #[arg(long)]
        once: bool,
    },
    /// Manage the local plugin store.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (roff) of the command and its subcommands
    /// into a directory (for packages).
    #[command(hide = true)]
    Man {
        /// Where the pages go (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check the configuration and every plugin (component, ABI, configuration
    /// keys, grants) without running any assessment.
    Validate {
        /// The agent configuration file.
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
        /// Validate grants against this directory tree instead of `runtime.assessment_root`.
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List the releases in the store.
    List {
        /// The agent configuration file.
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
    },
    /// Download and verify every configured registry plugin into the store,
    /// and compile it ahead of its first run.
    Fetch {
        /// The agent configuration file.
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
    },
    /// Verify every release in the store against the trusted keys and digests.
    Verify {
        /// The agent configuration file.
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
    },
    /// Remove releases, components and precompiled artifacts no configured
    /// plugin uses.
    Gc {
        /// The agent configuration file.
        #[arg(long, short, env = "ASSESSMENT_RUNTIME_CONFIG")]
        config: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = Arc::new(crate::logging::init(matches!(
        cli.log_format,
        LogFormat::Json
    )));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    let outcome = runtime.block_on(execute(cli.command, logging));
    // A blocking thread stuck in the kernel (a plugin's read of a hung
    // mount, long abandoned by its job) must not keep the process alive:
    // leave such threads behind instead of waiting for them.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

/// How long the process waits at exit for blocking threads to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn load(config: &Path, root: Option<PathBuf>) -> anyhow::Result<AgentConfig> {
    let mut agent =
        AgentConfig::load(config).with_context(|| "fix the configuration file and retry")?;
    if let Some(root) = root {
        anyhow::ensure!(
            root.is_absolute() || root.exists(),
            "--root {}: no such directory",
            root.display()
        );
        agent.assessment_root = std::fs::canonicalize(&root)
            .with_context(|| format!("--root {}: cannot resolve the directory", root.display()))?;
    }
    Ok(agent)
}

/// The command line's definition, for completions and manual pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

async fn execute(
    command: Command,
    logging: Arc<crate::logging::Logging>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Completions { shell } => {
            let mut cli = self::command();
            clap_complete::generate(
                shell,
                &mut cli,
                "assessment-runtime",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(self::command(), &dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            once,
            output,
            root,
            fail_on_findings,
        } => {
            anyhow::ensure!(
                once,
                "`run` runs every enabled plugin once and prints the results: add --once; to run plugins on their schedules and deliver results to a control plane, use `assessment-runtime daemon --config {}`",
                config.display()
            );
            let agent = load(&config, root)?;
            apply_log_level(&logging, &agent);
            let runtime = Arc::new(Runtime::new(&agent).context("cannot set up the runtime")?);
            let report = scheduler::run_once(&runtime, &agent).await;
            match output {
                Output::Table => print!("{}", report.to_table()),
                Output::Json => println!("{}", report.to_json()),
                Output::Oscal => {
                    let host = crate::daemon::host_name();
                    // The runtime's id (given in [control_plane], else
                    // enrolled), so that the document's streams are the
                    // evidence's; a runtime with neither is its host.
                    let runtime_id = match &agent.control_plane {
                        Some(settings) => settings.runtime_id.clone(),
                        None => crate::control_plane::Credentials::load(&agent.state_dir)
                            .map_or_else(|_| host.clone(), |c| c.runtime_id),
                    };
                    let assessor = crate::report::oscal::Assessor {
                        runtime_id: &runtime_id,
                        host: &host,
                    };
                    println!("{}", report.to_oscal(assessor));
                }
                Output::Html => print!("{}", report.to_html()),
            }
            Ok(if report.summary.jobs_failed > 0 {
                ExitCode::from(EXIT_JOB_FAILED)
            } else if fail_on_findings && report.summary.fail > 0 {
                ExitCode::from(EXIT_FINDINGS_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Validate { config, root } => {
            let agent = load(&config, root)?;
            apply_log_level(&logging, &agent);
            let runtime = Runtime::new(&agent).context("cannot set up the runtime")?;
            let mut failed = 0;
            for spec in agent.plugins.iter().filter(|p| p.enabled) {
                // Each instance is checked with its own configuration and grants.
                let prepared = loader::prepare(&runtime, spec, &agent.assessment_root)
                    .instrument(crate::loader::instance_span(spec))
                    .await;
                let instance = if spec.has_own_instance() {
                    format!(" as {}", spec.instance)
                } else {
                    String::new()
                };
                match prepared {
                    Ok(p) => println!(
                        "ok      {}{instance} ({} checks, {})",
                        p.id,
                        p.info.checks.len(),
                        p.path
                    ),
                    Err((_, e)) => {
                        failed += 1;
                        // The message may quote what a plugin described.
                        println!(
                            "FAILED  {}: {}",
                            spec.label(),
                            crate::guest_text::bounded(&e.message, 4 << 10)
                        );
                    }
                }
            }
            for spec in agent.plugins.iter().filter(|p| !p.enabled) {
                println!("off     {} (disabled)", spec.label());
            }
            Ok(if failed > 0 {
                ExitCode::from(EXIT_JOB_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Plugins { command } => plugins_command(command).await,
        Command::Enroll {
            config,
            url,
            token,
            name,
            ca_cert,
            dev_plain_http,
        } => {
            let agent = load(&config, None)?;
            let trust = match (ca_cert, dev_plain_http) {
                (Some(path), false) => crate::control_plane::client::Trust::CaCertificate(
                    std::fs::read_to_string(&path).with_context(|| {
                        format!("cannot read the CA certificate {}", path.display())
                    })?,
                ),
                _ => crate::control_plane::client::Trust::PlainHttp,
            };
            let name = name.unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map_or_else(|_| "runtime".to_string(), |h| h.trim().to_string())
            });
            let credentials =
                crate::control_plane::client::enroll(&url, &token, &name, trust, &agent.network)
                    .await
                    .context("enrollment failed")?;
            credentials
                .save(&agent.state_dir)
                .context("cannot store the credentials")?;
            println!(
                "enrolled as {} ({}); credentials stored in {}",
                credentials.runtime_id,
                name,
                crate::control_plane::Credentials::path(&agent.state_dir).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::RotateCredentials { config } => {
            use crate::control_plane::Credentials;
            use crate::control_plane::client::ControlPlaneClient;
            let agent = load(&config, None)?;
            if agent.control_plane.is_some() {
                anyhow::bail!(
                    "this runtime's credentials are given in [control_plane] of its configuration: rotate them where they were created (`assessment-control-plane runtimes create` again, or the Compliance Framework's own tools) and update the secret file or variable"
                );
            }
            let timeout = std::time::Duration::from_secs(30);
            let client = ControlPlaneClient::new(
                Credentials::load(&agent.state_dir)?,
                timeout,
                &agent.network,
            )?;
            client.rotate_and_save(&agent.state_dir).await?;
            println!(
                "rotated the credentials of runtime {}; the previous ones no longer work",
                client.runtime_id()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon { config, once: true } => {
            let agent = load(&config, None)?;
            apply_log_level(&logging, &agent);
            let outcome = crate::daemon::Daemon::start(agent).await?.once().await?;
            println!(
                "{} plugin(s) run, {} failed; {} finding(s) delivered; {} batch(es) waiting in the outbox",
                outcome.jobs, outcome.jobs_failed, outcome.delivered, outcome.pending
            );
            Ok(if outcome.jobs_failed > 0 {
                ExitCode::from(EXIT_JOB_FAILED)
            } else if outcome.pending > 0 {
                ExitCode::from(EXIT_UNDELIVERED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Daemon {
            config,
            once: false,
        } => {
            let agent = load(&config, None)?;
            apply_log_level(&logging, &agent);
            use tokio::signal::unix::{SignalKind, signal};
            // Listening before the daemon starts: a SIGHUP or SIGTERM that
            // arrives while it starts is not lost (nor kills the process).
            let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
            let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = tokio::signal::ctrl_c() => break,
                        _ = hangup.recv() => {
                            // Several hangups while one reload waits are one reload.
                            let _ = reload_tx.try_send(());
                        }
                    }
                }
                let _ = tx.send(true);
            });
            crate::daemon::Daemon::start(agent)
                .await?
                .with_logging(logging)
                .run(rx, reload_rx)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The configuration's log level, unless `ASSESSMENT_RUNTIME_LOG` set one.
fn apply_log_level(logging: &crate::logging::Logging, agent: &AgentConfig) {
    if let Err(e) = logging.apply(agent.service.log_level.as_deref()) {
        tracing::warn!("{e}");
    }
}

async fn plugins_command(command: PluginsCommand) -> anyhow::Result<ExitCode> {
    let (PluginsCommand::List { config }
    | PluginsCommand::Fetch { config }
    | PluginsCommand::Verify { config }
    | PluginsCommand::Gc { config }) = &command;
    let agent = load(config, None)?;
    let runtime = Runtime::new(&agent).context("cannot set up the runtime")?;
    let manager = &runtime.manager;
    let store = manager.store().with_context(|| {
        format!(
            "cannot open the plugin store in {}; set runtime.state_dir",
            agent.state_dir.display()
        )
    })?;
    // One entry per release: instances of one plugin share it (fetched
    // within the largest of their component limits).
    let mut configured: Vec<(String, String, String, u64)> = Vec::new();
    for p in &agent.plugins {
        let PluginOrigin::Registry { version, base_url } = &p.origin else {
            continue;
        };
        let same = configured
            .iter_mut()
            .find(|(n, v, u, _)| *n == p.name && v == version && u == base_url);
        match same {
            Some((_, _, _, max)) => *max = (*max).max(p.limits.component_bytes),
            None => configured.push((
                p.name.clone(),
                version.clone(),
                base_url.clone(),
                p.limits.component_bytes,
            )),
        }
    }
    let is_configured = |name: &str, version: &str| {
        configured
            .iter()
            .any(|(n, v, _, _)| n == name && v == version)
    };
    // A stored release was admitted under its plugin's limit when it was
    // downloaded; checking it again needs only the ceiling.
    let stored_max = crate::policy::ceilings::COMPONENT_MIB << 20;
    let mut failed = 0;
    match command {
        PluginsCommand::List { .. } => {
            for r in store.releases()? {
                let note = if is_configured(&r.name, &r.version) {
                    ""
                } else {
                    "  (not configured)"
                };
                println!("{}@{}{note}", r.name, r.version);
            }
        }
        PluginsCommand::Fetch { .. } => {
            for (name, version, base_url, max) in &configured {
                match manager.resolve(name, version, base_url, *max).await {
                    // Compiled now, so that the first run loads the
                    // precompiled artifact instead.
                    Ok(r) => match runtime
                        .engine
                        .compile_cached(r.file.bytes, &r.manifest.component.sha256, store)
                        .await
                    {
                        Ok(_) => println!("ok      {name}@{version} {} (compiled)", r.file.digest),
                        Err(e) => {
                            failed += 1;
                            println!("FAILED  {name}@{version}: {e}");
                        }
                    },
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {name}@{version}: {e}");
                    }
                }
            }
        }
        PluginsCommand::Verify { .. } => {
            for r in store.releases()? {
                let verified = manager.verify_stored(store, &r, stored_max).and_then(|v| {
                    let compiled = runtime
                        .engine
                        .verify_compiled(&v.manifest.component.sha256, store)
                        .map_err(crate::plugins::manager::ResolveError::Verify)?;
                    Ok((v, compiled))
                });
                match verified {
                    Ok((v, compiled)) => println!(
                        "ok      {}@{} {}{}",
                        r.name,
                        r.version,
                        v.file.digest,
                        if compiled {
                            " (precompiled artifact verified)"
                        } else {
                            ""
                        }
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {}@{}: {e}", r.name, r.version);
                    }
                }
            }
        }
        PluginsCommand::Gc { .. } => {
            let keep: Vec<(String, String)> = configured
                .iter()
                .map(|(n, v, _, _)| (n.clone(), v.clone()))
                .collect();
            // Only components of kept releases that still verify are kept,
            // and the compiled artifacts of the configured local components
            // as they are now.
            let mut referenced: Vec<String> = store
                .releases()?
                .iter()
                .filter(|r| is_configured(&r.name, &r.version))
                .filter_map(|r| manager.verify_stored(store, r, stored_max).ok())
                .map(|v| v.manifest.component.sha256)
                .collect();
            for p in &agent.plugins {
                if let PluginOrigin::Local { path } = &p.origin {
                    match crate::plugins::ComponentFile::read(path, p.limits.component_bytes) {
                        Ok(file) => {
                            referenced.push(file.digest.trim_start_matches("sha256:").to_string())
                        }
                        Err(e) => println!(
                            "note    {}: {e}; its compiled artifact, if any, is removed",
                            p.label()
                        ),
                    }
                }
            }
            let report = store.gc(&keep, &referenced, runtime.engine.fingerprint())?;
            for r in &report.releases {
                println!("removed release {r}");
            }
            for b in &report.blobs {
                println!("removed component sha256:{b}");
            }
            println!("removed {} other file(s)", report.other_files);
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(EXIT_JOB_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
