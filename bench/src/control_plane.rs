//! The real reference control plane (`assessment-control-plane serve`),
//! started for a benchmark on a free loopback port with mutual TLS, its
//! database and CA in a temporary directory; killed when dropped.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Kills the process when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running control plane.
pub struct Server {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    _process: Guard,
}

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

impl Server {
    /// Start `bin` and wait until it listens. `extra` are more `serve`
    /// arguments (e.g. a higher rate limit for enrolling many runtimes
    /// from one address).
    pub fn start(bin: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let process = Guard(
            Command::new(bin)
                .arg("--database")
                .arg(dir.path().join("cp.db"))
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(extra)
                .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the control plane did not start listening on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Server {
            bin: bin.to_path_buf(),
            dir,
            port,
            _process: process,
        })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Its CA certificate (PEM file), the one runtimes trust.
    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// A new single-use enrollment token.
    pub fn enrollment_token(&self) -> anyhow::Result<String> {
        Ok(output(
            Command::new(&self.bin)
                .arg("--database")
                .arg(self.dir.path().join("cp.db"))
                .args(["enrollment-token", "create"]),
        )?
        .trim()
        .to_string())
    }

    /// The evidence the control plane has stored: how many records, and
    /// how many distinct idempotency keys among them.
    pub fn stored_evidence(&self) -> anyhow::Result<(usize, usize)> {
        let listed = output(
            Command::new(&self.bin)
                .arg("--database")
                .arg(self.dir.path().join("cp.db"))
                .args(["evidence", "list"]),
        )?;
        let records: Vec<serde_json::Value> =
            serde_json::from_str(&listed).context("unreadable `evidence list` output")?;
        let keys: BTreeSet<&str> = records
            .iter()
            .filter_map(|r| r.get("idempotency_key")?.as_str())
            .collect();
        Ok((records.len(), keys.len()))
    }
}

/// Run `command`, its standard output if it succeeds.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
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
