//! The daemon's footprint: the real `assessment-runtime daemon`, enrolled
//! with the real reference control plane over mutual TLS on loopback, with
//! ten configured plugins; its resident memory once every plugin has run,
//! and its CPU time over a minute.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::jobs::{Memory, memory_of};

/// What the idle daemon cost.
pub struct Footprint {
    /// Resident and virtual size after every plugin ran once.
    pub memory: Memory,
    /// CPU time over `window`, as a share of one core.
    pub cpu_percent: f64,
    /// The window.
    pub window: Duration,
    /// Jobs the daemon ran meanwhile (each plugin on its schedule).
    pub schedule: &'static str,
}

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const SCHEDULE: &str = "20s";

/// Kills the process when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Measure the daemon with `plugins` instances of `wasm`, idle for `window`.
pub fn idle(
    runtime_bin: &Path,
    control_plane_bin: &Path,
    wasm: &Path,
    plugins: usize,
    window: Duration,
) -> anyhow::Result<Footprint> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("cp.db");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _control_plane = Guard(
        Command::new(control_plane_bin)
            .arg("--database")
            .arg(&db)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", control_plane_bin.display()))?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the control plane did not start listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = output(
        Command::new(control_plane_bin)
            .arg("--database")
            .arg(&db)
            .args(["enrollment-token", "create"]),
    )?;

    let root = dir.path().join("root");
    std::fs::create_dir(&root)?;
    let mut config = format!(
        "[runtime]\nassessment_root = {:?}\nstate_dir = {:?}\nmax_concurrent_jobs = 2\n",
        root.display().to_string(),
        dir.path().join("state").display().to_string()
    );
    for i in 0..plugins {
        config.push_str(&format!(
            "\n[[plugin]]\nname = \"bench-probe\"\ninstance = \"bench-{i}\"\npath = {:?}\nschedule = {{ every = \"{SCHEDULE}\" }}\n",
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
                &format!("https://localhost:{port}"),
                "--token",
                token.trim(),
                "--name",
                "bench",
                "--ca-cert",
            ])
            .arg(dir.path().join("ca/ca.pem")),
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
    // Every plugin runs once (its first fire is one interval after start,
    // plus jitter) before the memory is read.
    std::thread::sleep(Duration::from_secs(25));
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
        schedule: SCHEDULE,
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

fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command.output()?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            command.get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
