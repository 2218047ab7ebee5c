//! The daemon's footprint: the real `assessment-runtime daemon`, enrolled
//! with the real reference control plane over mutual TLS on loopback, with
//! ten configured plugins; its resident memory once every plugin has run,
//! and its CPU time over a minute.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::control_plane::{Guard, Server, output};
use crate::jobs::{Memory, memory_of};

/// What the idle daemon cost.
pub struct Footprint {
    /// Resident and virtual size once the plugins are loaded (and, on a
    /// short schedule, have run).
    pub memory: Memory,
    /// CPU time over `window`, as a share of one core.
    pub cpu_percent: f64,
    /// The window.
    pub window: Duration,
}

/// Measure the daemon with `plugins` instances of `wasm`, each on the
/// schedule `every` (e.g. `20s`), over `window` after `settle` (long enough
/// for the plugins to be loaded, and to run once on a short schedule).
pub fn idle(
    runtime_bin: &Path,
    control_plane_bin: &Path,
    wasm: &Path,
    plugins: usize,
    every: &str,
    settle: Duration,
    window: Duration,
) -> anyhow::Result<Footprint> {
    let server = Server::start(control_plane_bin, &[])?;
    let dir = tempfile::tempdir()?;
    let token = server.enrollment_token()?;

    let root = dir.path().join("root");
    std::fs::create_dir(&root)?;
    let mut config = format!(
        "[runtime]\nassessment_root = {:?}\nstate_dir = {:?}\nmax_concurrent_jobs = 2\n",
        root.display().to_string(),
        dir.path().join("state").display().to_string()
    );
    for i in 0..plugins {
        config.push_str(&format!(
            "\n[[plugin]]\nname = \"bench-probe\"\ninstance = \"bench-{i}\"\npath = {:?}\nschedule = {{ every = \"{every}\" }}\n",
            wasm.display().to_string()
        ));
    }
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config)?;
    output(
        Command::new(runtime_bin)
            .args(["enroll", "--config"])
            .arg(&config_path)
            .args([
                "--url",
                &server.url(),
                "--token",
                &token,
                "--name",
                "bench",
                "--ca-cert",
            ])
            .arg(server.ca_certificate()),
    )?;

    let daemon = Guard(
        Command::new(runtime_bin)
            .args(["daemon", "--config"])
            .arg(&config_path)
            .env("ASSESSMENT_RUNTIME_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = daemon.0.id().to_string();
    std::thread::sleep(settle);
    let memory = memory_of(&pid).context("the daemon exited")?;
    let before = cpu_ticks(&pid)?;
    std::thread::sleep(window);
    let after = cpu_ticks(&pid)?;
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
    let cpu_seconds = (after - before) as f64 / 100.0;
    Ok(Footprint {
        memory,
        cpu_percent: cpu_seconds / window.as_secs_f64() * 100.0,
        window,
    })
}

/// utime + stime of process `pid`, in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("the daemon exited")?;
    // Fields after the command name (which is in parentheses and may hold
    // spaces): state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .context("short /proc stat")?
            .parse::<u64>()?)
    };
    Ok(field(14)? + field(15)?)
}
