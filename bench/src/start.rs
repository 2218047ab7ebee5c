//! Cold and warm start of the real binary: `assessment-runtime run --once`
//! from process start to exit (which is after the first finding), with an
//! empty plugin store (the component is compiled) and with a warm one (its
//! precompiled artifact is loaded).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::stats::Samples;

/// A plugin to start.
pub struct StartCase {
    /// The configured name (the one the component describes itself with).
    pub name: &'static str,
    /// The component.
    pub wasm: PathBuf,
    /// The rest of its `[[plugin]]` table.
    pub extra: String,
    /// The tree it assesses (copied), if any.
    pub tree: Option<PathBuf>,
}

/// Cold (a new state directory per run) and warm (one state directory,
/// compiled by an untimed first run) runs of `case`.
pub fn cold_and_warm(
    runtime_bin: &Path,
    case: &StartCase,
    cold: usize,
    warm: usize,
) -> anyhow::Result<(Samples, Samples)> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    std::fs::create_dir(&root)?;
    if let Some(tree) = &case.tree {
        copy_tree(tree, &root)?;
    }
    let mut cold_times = Vec::with_capacity(cold);
    for i in 0..cold {
        let state = dir.path().join(format!("cold-{i}"));
        cold_times.push(run_once(runtime_bin, case, &root, &state)?);
        // The store of a cold run is not needed again.
        std::fs::remove_dir_all(&state)?;
    }
    let state = dir.path().join("warm");
    run_once(runtime_bin, case, &root, &state)?;
    let mut warm_times = Vec::with_capacity(warm);
    for _ in 0..warm {
        warm_times.push(run_once(runtime_bin, case, &root, &state)?);
    }
    Ok((Samples::new(cold_times), Samples::new(warm_times)))
}

/// One `run --once` with state directory `state`: its wall time. Fails
/// unless the plugin completed with at least one finding.
fn run_once(
    runtime_bin: &Path,
    case: &StartCase,
    root: &Path,
    state: &Path,
) -> anyhow::Result<Duration> {
    let config = state.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nassessment_root = {:?}\nstate_dir = {:?}\n\n[[plugin]]\nname = {:?}\npath = {:?}\n{}\n",
            root.display().to_string(),
            state.display().to_string(),
            case.name,
            case.wasm.display().to_string(),
            case.extra
        ),
    )?;
    let started = Instant::now();
    let out = Command::new(runtime_bin)
        .args(["run", "--once", "--output", "json", "--config"])
        .arg(&config)
        .env("ASSESSMENT_RUNTIME_LOG", "warn")
        .output()
        .with_context(|| format!("cannot run {}", runtime_bin.display()))?;
    let elapsed = started.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{} printed no JSON report: {}",
            runtime_bin.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let job = &report["jobs"][0];
    let findings = job["findings"].as_array().map_or(0, Vec::len);
    if !job["error"].is_null() || findings == 0 {
        bail!(
            "{} did not complete with findings: {job}; {}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
