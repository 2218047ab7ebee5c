//! The `assessment-runtime` command line: thin, everything it does is a
//! library call.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::agent_config::AgentConfig;
use crate::engine::PluginEngine;
use crate::runner;
use crate::scheduler;

/// Exit code when a plugin could not be run or failed.
pub const EXIT_JOB_FAILED: u8 = 1;
/// Exit code with `--fail-on-findings` when a check failed.
pub const EXIT_FINDINGS_FAILED: u8 = 2;
/// Exit code when the configuration or the host itself is unusable.
pub const EXIT_UNUSABLE: u8 = 3;

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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ASSESSMENT_RUNTIME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

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

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            once,
            output,
            root,
            fail_on_findings,
        } => {
            anyhow::ensure!(
                once,
                "only single cycles are supported by `run`: add --once (the scheduling daemon is not available in this version)"
            );
            let agent = load(&config, root)?;
            let engine = PluginEngine::new().context("cannot set up the WebAssembly engine")?;
            let report = scheduler::run_once(&engine, &agent).await;
            match output {
                Output::Table => print!("{}", report.to_table()),
                Output::Json => println!("{}", report.to_json()),
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
            let engine = PluginEngine::new().context("cannot set up the WebAssembly engine")?;
            let mut failed = 0;
            for spec in agent.plugins.iter().filter(|p| p.enabled) {
                match runner::prepare(&engine, spec, &agent.assessment_root).await {
                    Ok(p) => println!(
                        "ok      {} ({} checks, {})",
                        p.id,
                        p.info.checks.len(),
                        spec.path.display()
                    ),
                    Err((_, e)) => {
                        failed += 1;
                        println!("FAILED  {}: {}", spec.name, e.message);
                    }
                }
            }
            for spec in agent.plugins.iter().filter(|p| !p.enabled) {
                println!("off     {} (disabled)", spec.name);
            }
            Ok(if failed > 0 {
                ExitCode::from(EXIT_JOB_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
