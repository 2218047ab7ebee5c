//! Helpers of the end-to-end tests: the guest components built by this
//! crate's build script, the `assessment-runtime` binary, fixture trees and
//! an agent-configuration builder that runs the binary and parses its JSON
//! report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod oscal;
pub mod proxy;
pub mod release_server;
pub mod workflow;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A guest component built by the build script, e.g. `sshd_hardening`.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("GUEST_DIR")).join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("REPO_DIR"))
}

/// The `assessment-runtime` binary of this build (next to the test
/// executables' directory), built by `cargo test --workspace`.
pub fn runtime_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let bin = dir.join("assessment-runtime");
    assert!(
        bin.exists(),
        "{} does not exist: run the tests with `cargo test --workspace` (or `cargo build -p assessment-runtime` first)",
        bin.display()
    );
    bin
}

/// The `plugin-registry` binary of this build.
pub fn registry_bin() -> PathBuf {
    let bin = runtime_bin().with_file_name("plugin-registry");
    assert!(
        bin.exists(),
        "{} does not exist: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// `plugin-registry` with `args`, without a key or password from the
/// environment (each test passes its own).
pub fn registry_tool(args: &[&str]) -> std::process::Output {
    Command::new(registry_bin())
        .args(args)
        .env_remove("PLUGIN_REGISTRY_PASSWORD")
        .env_remove("PLUGIN_REGISTRY_SECRET_KEY")
        .output()
        .unwrap()
}

/// What a command printed, stdout then stderr, for assertion messages.
pub fn output_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A fixture tree of a Rust example plugin:
/// `plugins-examples/<plugin>/fixtures/<tree>`.
pub fn example_fixture(plugin: &str, tree: &str) -> PathBuf {
    repo()
        .join("plugins-examples")
        .join(plugin)
        .join("fixtures")
        .join(tree)
}

/// Copy a directory tree (files, directories and symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The outcome of one `assessment-runtime run --once --output json`.
#[derive(Debug)]
pub struct RunOutcome {
    /// Process exit code.
    pub code: i32,
    /// The parsed JSON report (`Value::Null` when stdout was not JSON).
    pub report: Value,
    /// Everything written on stderr (logs).
    pub stderr: String,
}

impl RunOutcome {
    /// The job of plugin `name`.
    pub fn job(&self, name: &str) -> &Value {
        self.report["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("no jobs in report; stderr:\n{}", self.stderr))
            .iter()
            .find(|j| j["plugin"] == name)
            .unwrap_or_else(|| panic!("no job for {name} in {:#}", self.report))
    }

    /// The findings of plugin `name`.
    pub fn findings(&self, name: &str) -> &Vec<Value> {
        self.job(name)["findings"].as_array().unwrap()
    }

    /// (check id, status) of every finding of plugin `name`, in order.
    pub fn verdicts(&self, name: &str) -> Vec<(String, String)> {
        self.findings(name)
            .iter()
            .map(|f| {
                (
                    f["check_id"].as_str().unwrap().to_string(),
                    f["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The status of check `check` of plugin `name` (the first finding).
    pub fn status(&self, name: &str, check: &str) -> String {
        self.findings(name)
            .iter()
            .find(|f| f["check_id"] == check)
            .unwrap_or_else(|| panic!("no finding for {check} in {:#}", self.job(name)))["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The job of the configured `instance` (a plugin configured more
    /// than once has one job per instance).
    pub fn instance_job(&self, instance: &str) -> &Value {
        self.report["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("no jobs in report; stderr:\n{}", self.stderr))
            .iter()
            .find(|j| j["instance"] == instance)
            .unwrap_or_else(|| panic!("no job of instance {instance} in {:#}", self.report))
    }

    /// (check id, status) of every finding of the job of `instance`, in
    /// order.
    pub fn instance_verdicts(&self, instance: &str) -> Vec<(String, String)> {
        self.instance_job(instance)["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["check_id"].as_str().unwrap().to_string(),
                    f["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The error kind of plugin `name`'s job, `None` when it completed.
    pub fn error_kind(&self, name: &str) -> Option<String> {
        self.job(name)["error"]["kind"].as_str().map(str::to_string)
    }

    /// The error message of plugin `name`'s job.
    pub fn error_message(&self, name: &str) -> String {
        self.job(name)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// The value of evidence item `key` of a finding in a report.
pub fn evidence_value(finding: &Value, key: &str) -> Option<String> {
    finding["evidence"]
        .as_array()?
        .iter()
        .find(|e| e["key"] == key)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

/// Add a well-behaved plugin (kernel-params on a tree with ASLR on) to the
/// cycle: whatever a hostile plugin does, it must still deliver.
pub fn with_bystander(agent: Agent) -> Agent {
    let root = agent.root().to_path_buf();
    std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
    std::fs::write(root.join("proc/sys/kernel/randomize_va_space"), "2\n").unwrap();
    agent.plugin(
        "kernel-params",
        &guest("kernel_params"),
        "grants = { read = [\"/proc/sys\"] }",
    )
}

/// The bystander of [`with_bystander`] completed with its verdict.
pub fn assert_bystander_ran(out: &RunOutcome) {
    assert_eq!(
        out.error_kind("kernel-params"),
        None,
        "{:#}",
        out.job("kernel-params")
    );
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");
}

/// An agent configuration under construction, in its own directory.
pub struct Agent {
    dir: tempfile::TempDir,
    root: PathBuf,
    runtime: String,
    policy: String,
    plugins: Vec<String>,
    /// The components of the `path` plugins.
    local_components: Vec<PathBuf>,
    /// Whether precompiled artifacts are shared with other tests.
    sharing_compiled: bool,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent {
    /// An agent assessing an empty root.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        Agent {
            dir,
            root,
            runtime: String::new(),
            policy: String::new(),
            plugins: Vec::new(),
            local_components: Vec::new(),
            sharing_compiled: false,
        }
    }

    /// Share precompiled plugins with the other tests that ask for it, for
    /// large components whose compilation (a debug build of the runtime)
    /// would otherwise be most of each test: before a run, the agent's
    /// store receives the artifacts other runs compiled; the first run of
    /// a component compiles it while the others wait, and leaves its
    /// artifact for them. The runtime checks each artifact against its
    /// recorded digest as always; what is shared is keyed by component
    /// digest and engine fingerprint, as in any store.
    pub fn sharing_compiled(mut self) -> Self {
        self.sharing_compiled = true;
        self
    }

    /// The assessed root (a directory the test may fill).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The agent's state directory (its plugin store is `plugins/` in it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The agent's own directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Assess a copy of `tree` instead of the empty root.
    pub fn with_tree(self, tree: &Path) -> Self {
        copy_tree(tree, &self.root);
        self
    }

    /// Add lines to the `[runtime]` table (e.g. `trusted_keys = [...]`).
    pub fn runtime(mut self, lines: &str) -> Self {
        self.runtime.push_str(lines);
        self.runtime.push('\n');
        self
    }

    /// Add lines to the `[policy]` table (e.g. `dev_plain_http_registries =
    /// true` for the tests' loopback registries).
    pub fn policy(mut self, lines: &str) -> Self {
        self.policy.push_str(lines);
        self.policy.push('\n');
        self
    }

    /// Add a `[[plugin]]` entry for a registry release.
    pub fn registry_plugin(mut self, name: &str, version: &str, url: &str, extra: &str) -> Self {
        self.plugins.push(format!(
            "[[plugin]]\nname = {name:?}\nversion = {version:?}\nsource = {{ url = {url:?} }}\n{extra}\n"
        ));
        self
    }

    /// Add a `[[plugin]]` entry; `extra` is TOML for the rest of the table
    /// (e.g. `grants = { read = ["/etc"] }`).
    pub fn plugin(mut self, name: &str, path: &Path, extra: &str) -> Self {
        self.local_components.push(path.to_path_buf());
        self.plugins.push(format!(
            "[[plugin]]\nname = {name:?}\npath = {:?}\n{extra}\n",
            path.display().to_string()
        ));
        self
    }

    /// Add a `[[plugin]]` entry of plugin `name` as the configured
    /// `instance` (to configure one plugin more than once).
    pub fn plugin_instance(self, name: &str, instance: &str, path: &Path, extra: &str) -> Self {
        self.plugin(name, path, &format!("instance = {instance:?}\n{extra}"))
    }

    /// Write the configuration file and return its path.
    pub fn write(&self) -> PathBuf {
        let config = format!(
            "[runtime]\nassessment_root = {:?}\nmax_concurrent_jobs = 2\nstate_dir = {:?}\n{}\n[policy]\n{}\n{}",
            self.root.display().to_string(),
            self.state_dir().display().to_string(),
            self.runtime,
            self.policy,
            self.plugins.join("\n")
        );
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, config).unwrap();
        path
    }

    /// Run one cycle and parse the JSON report.
    pub fn run(&self) -> RunOutcome {
        self.run_with(&[])
    }

    /// Run one cycle with extra arguments.
    pub fn run_with(&self, extra: &[&str]) -> RunOutcome {
        let mut args = vec!["run", "--once", "--output", "json"];
        args.extend_from_slice(extra);
        let output = self.command(&args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        RunOutcome {
            code: output.status.code().unwrap_or(-1),
            report: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Wait for `child`, sampling its resident memory every 20 ms: its exit
/// code and the highest resident set size seen, in KiB.
pub fn wait_sampling_rss(child: &mut std::process::Child) -> (i32, u64) {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), peak_rss_kib);
        }
        let rss = std::fs::read_to_string(&status_path)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        peak_rss_kib = peak_rss_kib.max(rss);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A run of the binary watched from outside: its outcome, its peak
/// resident memory and how long it took.
#[derive(Debug)]
pub struct Measured {
    /// What `run --once` reported.
    pub outcome: RunOutcome,
    /// Highest resident set size seen, in KiB (sampled every 20 ms).
    pub peak_rss_kib: u64,
    /// Wall-clock time to exit.
    pub elapsed: std::time::Duration,
}

impl Agent {
    /// Run one cycle with extra arguments and environment, sampling the
    /// process's resident memory while it runs.
    pub fn run_measured(&self, extra: &[&str], env: &[(&str, &str)]) -> Measured {
        use std::io::Read;
        let config = self.write();
        let started = std::time::Instant::now();
        let mut child = Command::new(runtime_bin())
            .args(["run", "--once", "--output", "json"])
            .args(extra)
            .arg("--config")
            .arg(&config)
            .env("ASSESSMENT_RUNTIME_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).unwrap();
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stderr.read_to_end(&mut buf).unwrap();
            buf
        });
        let (code, peak_rss_kib) = wait_sampling_rss(&mut child);
        let elapsed = started.elapsed();
        let stdout = out_reader.join().unwrap();
        let stderr = err_reader.join().unwrap();
        Measured {
            outcome: RunOutcome {
                code,
                report: serde_json::from_slice(&stdout).unwrap_or(Value::Null),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            },
            peak_rss_kib,
            elapsed,
        }
    }

    /// Run `assessment-runtime ARGS --config <this agent's file>`.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        let config = self.write();
        let compiling = self.sharing_compiled.then(|| self.receive_compiled());
        let output = Command::new(runtime_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("ASSESSMENT_RUNTIME_LOG", "info")
            .output()
            .unwrap();
        if let Some(lock) = compiling.flatten() {
            self.share_compiled();
            drop(lock);
        }
        output
    }

    /// The agent's compiled-artifact directory, made as the runtime makes
    /// its store (private to the user).
    fn compiled_dir(&self) -> PathBuf {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.state_dir().join("plugins/compiled");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .unwrap();
        dir
    }

    /// Copy the shared artifacts into this agent's store. Returns the
    /// cache's lock, held while this run compiles a component no run has
    /// shared yet (other runs then wait for its artifact), or released.
    fn receive_compiled(&self) -> Option<std::fs::File> {
        let cache = compiled_cache();
        std::fs::create_dir_all(&cache).unwrap();
        let digests: Vec<String> = self
            .local_components
            .iter()
            .filter_map(|c| std::fs::read(c).ok())
            .map(|bytes| hex::encode(Sha256::digest(bytes)))
            .collect();
        let cached = |digest: &String| {
            std::fs::read_dir(&cache).unwrap().flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&format!("{digest}-")) && name.ends_with(".cwasm")
            })
        };
        let lock = std::fs::File::create(cache.join(".lock")).unwrap();
        lock.lock().unwrap();
        let missing = !digests.iter().all(cached);
        let dir = self.compiled_dir();
        for entry in std::fs::read_dir(&cache).unwrap().flatten() {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if digests.iter().any(|d| text.starts_with(&format!("{d}-"))) {
                std::fs::copy(entry.path(), dir.join(&name)).unwrap();
            }
        }
        missing.then_some(lock)
    }

    /// Leave this agent's new artifacts for the other runs.
    fn share_compiled(&self) {
        let cache = compiled_cache();
        for entry in std::fs::read_dir(self.compiled_dir()).unwrap().flatten() {
            let name = entry.file_name();
            if !cache.join(&name).exists() {
                // Whole or absent: written aside, then renamed.
                let partial = cache.join(format!(
                    ".{}.{}.partial",
                    name.to_string_lossy(),
                    std::process::id()
                ));
                std::fs::copy(entry.path(), &partial).unwrap();
                std::fs::rename(&partial, cache.join(&name)).unwrap();
            }
        }
    }
}

/// The precompiled artifacts shared by [`Agent::sharing_compiled`].
fn compiled_cache() -> PathBuf {
    repo().join("target/test-compiled")
}

/// Apply the modes of `[section]` of a `modes.toml` to files under `root`.
pub fn apply_modes(modes_file: &Path, section: &str, root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(modes_file).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    for (path, mode) in table[section].as_table().unwrap() {
        let mode = mode.as_integer().unwrap() as u32;
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// The current user's uid and gid (fixture files are owned by them).
pub fn current_ids(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

/// A small tmpfs mounted by the test (a full disk on demand), unmounted
/// when dropped. `None` where this process may not mount (not root, or a
/// container without the capability): the caller says SKIPPED.
pub struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    /// Mount `size_kib` KiB of tmpfs, mode 0700, at `path` (created).
    pub fn new(path: &Path, size_kib: u64) -> Option<Self> {
        // Private like the agent's state directory it usually sits in.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(path)
            .unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| TmpfsMount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A free TCP port on loopback (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Wait until `done`, checking every 200 ms; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `GET path` on a plain-HTTP listener on loopback: the status and the
/// body, `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_string()))
}
