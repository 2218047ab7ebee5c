//! The control-plane loop end to end with the real binaries on loopback:
//! enroll, configuration from the control plane, runs on schedule, results
//! stored exactly once, live configuration changes, a malformed
//! configuration kept out, the control plane down and back, the runtime
//! SIGKILLed again and again, revoked and rotated credentials, mutual TLS
//! (a control plane with another CA is refused) and plain HTTP only behind
//! explicit flags.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use assessment_e2e::{free_port, guest, http_get, repo, runtime_bin, wait_for};
use base64::Engine as _;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Findings of one kernel-params run on the good fixture tree.
const FINDINGS_PER_RUN: usize = 19;

fn control_plane_bin() -> PathBuf {
    runtime_bin().with_file_name("assessment-control-plane")
}

/// A control plane process on a loopback port, with its database (and its
/// CA in `ca/` beside it).
struct ControlPlane {
    child: Option<Child>,
    port: u16,
    db: PathBuf,
    tls: bool,
}

impl ControlPlane {
    /// Serving mutual TLS, the default.
    fn start(db: &Path, port: u16) -> Self {
        Self::spawn(db, port, &[])
    }

    /// Serving plain HTTP (`--dev-plain-http`).
    fn start_plain(db: &Path, port: u16) -> Self {
        Self::spawn(db, port, &["--dev-plain-http"])
    }

    /// `serve` with `extra` options.
    fn spawn(db: &Path, port: u16, extra: &[&str]) -> Self {
        let tls = !extra.contains(&"--dev-plain-http");
        let child = Command::new(control_plane_bin())
            .args(["--database"])
            .arg(db)
            .arg("serve")
            .args(extra)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--stale-after",
                "30s",
                "--token-ttl",
                "1m",
            ])
            .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the control plane did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ControlPlane {
            child: Some(child),
            port,
            db: db.to_path_buf(),
            tls,
        }
    }

    fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.port)
        } else {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    /// The CA certificate runtimes enroll with.
    fn ca_cert(&self) -> PathBuf {
        self.db.with_file_name("ca").join("ca.pem")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `assessment-control-plane --database DB ARGS`, stdout.
    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(control_plane_bin())
            .arg("--database")
            .arg(&self.db)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn evidence(&self) -> Vec<Value> {
        serde_json::from_str(&self.admin(&["evidence", "list"])).unwrap()
    }

    /// Assigns `document` to the group `default`.
    fn set_config(&self, dir: &Path, document: &Value) {
        self.assign(dir, &["--group", "default"], document);
    }

    /// Assigns `document` with `config set TARGET` (`--group G` or
    /// `--runtime ID`).
    fn assign(&self, dir: &Path, target: &[&str], document: &Value) {
        let file = dir.join("assigned.json");
        std::fs::write(&file, document.to_string()).unwrap();
        let mut args = vec!["config", "set"];
        args.extend_from_slice(target);
        args.push(file.to_str().unwrap());
        self.admin(&args);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A runtime: its directory, assessed root and local configuration.
struct Runtime {
    dir: tempfile::TempDir,
}

impl Runtime {
    fn new(intervals: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        assessment_e2e::copy_tree(
            &repo().join("plugins-examples/kernel-params/fixtures/good"),
            &root,
        );
        let config = format!(
            "[runtime]\nassessment_root = {:?}\nstate_dir = {:?}\n{intervals}\n\
             [policy]\nremote_path_plugins = true\nread = [\"/proc/sys\"]\n",
            root.display().to_string(),
            dir.path().join("state").display().to_string()
        );
        std::fs::write(dir.path().join("agent.toml"), config).unwrap();
        Runtime { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(runtime_bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.config())
            .env("ASSESSMENT_RUNTIME_LOG", "info");
        cmd
    }

    /// `enroll` with `token` and the control plane's URL, trusting `ca`
    /// (PEM file) or, without one, over plain HTTP.
    fn try_enroll(&self, url: &str, token: &str, ca: Option<&Path>) -> Output {
        let mut command = self.command(&[
            "enroll",
            "--url",
            url,
            "--token",
            token,
            "--name",
            "test-runtime",
        ]);
        match ca {
            Some(ca) => command.arg("--ca-cert").arg(ca),
            None => command.arg("--dev-plain-http"),
        };
        command.output().unwrap()
    }

    fn enroll(&self, cp: &ControlPlane) {
        let token = cp.admin(&["enrollment-token", "create"]).trim().to_string();
        let ca = cp.tls.then(|| cp.ca_cert());
        let out = self.try_enroll(&cp.url(), &token, ca.as_deref());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(self.state().join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn once(&self) -> Output {
        self.command(&["daemon", "--once"]).output().unwrap()
    }

    fn spawn_daemon(&self) -> Child {
        self.command(&["daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn pending(&self) -> usize {
        std::fs::read_dir(self.state().join("outbox/pending"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn assignment(extra_config: Value) -> Value {
    json!({
        "runtime": { "max_concurrent_jobs": 2 },
        "plugin": [{
            "name": "kernel-params",
            "path": guest("kernel_params").display().to_string(),
            "schedule": { "every": "1s" },
            "grants": { "read": ["/proc/sys"] },
            "config": extra_config,
        }]
    })
}

/// Daemon intervals short enough for tests.
const FAST_INTERVALS: &str =
    "heartbeat_interval = \"1s\"\nconfig_poll_interval = \"1s\"\nshutdown_grace = \"10s\"";

/// A control plane, and a runtime with `intervals` enrolled with it and
/// assigned kernel-params; the directory holds the control plane's state.
fn enrolled_and_assigned(intervals: &str) -> (tempfile::TempDir, ControlPlane, Runtime) {
    let state = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&state.path().join("cp.db"), free_port());
    let runtime = Runtime::new(intervals);
    runtime.enroll(&cp);
    cp.set_config(state.path(), &assignment(json!({})));
    (state, cp, runtime)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every stored job has exactly one record per finding: nothing lost,
/// nothing duplicated. Returns the number of jobs.
fn assert_complete_jobs(records: &[Value]) -> usize {
    assert_jobs_of(records, &[FINDINGS_PER_RUN])
}

/// Every stored job has one of `sizes` records, none duplicated.
fn assert_jobs_of(records: &[Value], sizes: &[usize]) -> usize {
    let mut per_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        let job = job_of(r);
        per_job
            .entry(job)
            .or_default()
            .push(r["idempotency_key"].as_str().unwrap().to_string());
    }
    for (job, keys) in &per_job {
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "job {job} has duplicated records");
        assert!(
            sizes.contains(&keys.len()),
            "job {job} is incomplete: {} records",
            keys.len()
        );
    }
    per_job.len()
}

#[test]
fn enroll_assign_run_once_and_results_are_stored_once_with_stable_streams() {
    let (_state, cp, runtime) = enrolled_and_assigned("");

    let out = runtime.once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("19 finding(s) delivered"));
    let first = cp.evidence();
    assert_eq!(first.len(), FINDINGS_PER_RUN);
    assert!(first.iter().all(|r| r["plugin"] == "kernel-params"));
    assert!(
        first
            .iter()
            .all(|r| r["evidence"]["status"]["state"] == "satisfied"),
        "{first:#?}"
    );
    assert_eq!(runtime.pending(), 0);
    // Every record carries its job's provenance, stored as sent: one
    // back-matter resource, linked, whose document names the files of
    // /proc/sys the host served, each with the digest of what it returned.
    let resource = &first[0]["evidence"]["back-matter"]["resources"][0];
    let uuid = resource["uuid"].as_str().unwrap();
    for r in &first {
        let links = r["evidence"]["links"].as_array().unwrap();
        assert!(
            links
                .iter()
                .any(|l| l["href"] == format!("#{uuid}") && l["rel"] == "provenance"),
            "{links:?}"
        );
        assert_eq!(r["evidence"]["back-matter"]["resources"][0]["uuid"], uuid);
    }
    assert_eq!(resource["base64"]["media-type"], "application/json");
    let document = base64::engine::general_purpose::STANDARD
        .decode(resource["base64"]["value"].as_str().unwrap())
        .unwrap();
    let provenance: Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(provenance["schema"], "assessment-runtime/provenance@1");
    let files = provenance["files"].as_array().unwrap();
    assert!(!files.is_empty(), "{provenance:#}");
    for f in files {
        assert!(f["path"].as_str().unwrap().starts_with("/proc/sys/"), "{f}");
        assert!(
            f["sha256"].as_str().is_some() || f["error"].is_string(),
            "{f}"
        );
    }
    let files_prop = resource["props"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "files")
        .unwrap();
    assert_eq!(files_prop["value"], files.len().to_string());

    let out = runtime.once();
    assert!(out.status.success());
    let both = cp.evidence();
    assert_eq!(assert_complete_jobs(&both), 2);
    let streams = |records: &[Value]| {
        let mut s: Vec<String> = records
            .iter()
            .map(|r| r["uuid"].as_str().unwrap().to_string())
            .collect();
        s.sort();
        s.dedup();
        s
    };
    assert_eq!(
        streams(&both),
        streams(&first),
        "the same checks on the same machine keep their evidence uuids"
    );
    // The control plane's OSCAL export (the same as
    // GET /v1/admin/oscal/assessment-results): the latest record of each
    // stream, valid against NIST's schema.
    let export = cp.admin(&["evidence", "oscal"]);
    assessment_e2e::oscal::assert_valid(&export);
    let export: Value = serde_json::from_str(&export).unwrap();
    let results = export["assessment-results"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "one runtime");
    let observations = results[0]["observations"].as_array().unwrap();
    assert_eq!(observations.len(), FINDINGS_PER_RUN);
    // The delivered records' provenance, in the export's back-matter.
    let resources = export["assessment-results"]["back-matter"]["resources"]
        .as_array()
        .unwrap();
    for o in observations {
        let href = o["relevant-evidence"][0]["href"].as_str().unwrap();
        assert!(
            resources
                .iter()
                .any(|r| format!("#{}", r["uuid"].as_str().unwrap()) == href),
            "{href}"
        );
    }
    // The provenance resources travel into the export's back-matter.
    let exported = export["assessment-results"]["back-matter"]["resources"].to_string();
    assert!(
        exported.contains("assessment-runtime/provenance@1"),
        "{exported}"
    );

    let runtimes: Value = serde_json::from_str(&cp.admin(&["runtimes", "list"])).unwrap();
    assert_eq!(runtimes[0]["name"], "test-runtime");
    assert!(runtimes[0]["last_heartbeat_at"].is_string(), "{runtimes:#}");
    let heartbeat = &runtimes[0]["heartbeat"];
    assert_eq!(
        heartbeat["plugins"]["kernel-params"], "ready",
        "{heartbeat:#}"
    );
    assert_eq!(heartbeat["outbox"]["batches"], 0, "{heartbeat:#}");
    assert!(
        heartbeat["jobs"]["kernel-params"]["outcome"] == "completed",
        "{heartbeat:#}"
    );
}

#[test]
fn the_daemon_runs_on_schedule_applies_changes_live_and_keeps_the_last_good_configuration() {
    let (state, cp, runtime) = enrolled_and_assigned(FAST_INTERVALS);
    let daemon = runtime.spawn_daemon();

    wait_for("two scheduled runs", Duration::from_secs(60), || {
        cp.evidence().len() >= 2 * FINDINGS_PER_RUN
    });

    // A live change, to this runtime's own configuration: skip one check.
    let credentials: Value =
        serde_json::from_slice(&std::fs::read(runtime.state().join("credentials.json")).unwrap())
            .unwrap();
    let own = ["--runtime", credentials["runtime_id"].as_str().unwrap()];
    cp.assign(
        state.path(),
        &own,
        &assignment(json!({ "skip": ["kernel-aslr"] })),
    );
    // A skipped check is no evidence: a job without it arrives, and the
    // heartbeat counts it as skipped.
    wait_for("the change applied", Duration::from_secs(60), || {
        let mut per_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in cp.evidence() {
            per_job
                .entry(job_of(&r))
                .or_default()
                .push(r["check"].as_str().unwrap().to_string());
        }
        per_job.values().any(|checks| {
            checks.len() == FINDINGS_PER_RUN - 1 && !checks.iter().any(|c| c == "kernel-aslr")
        })
    });
    wait_for("the skip in a heartbeat", Duration::from_secs(60), || {
        let runtimes: Value = serde_json::from_str(&cp.admin(&["runtimes", "list"])).unwrap();
        runtimes[0]["heartbeat"]["jobs"]["kernel-params"]["statuses"]["skipped"] == 1
    });

    // An invalid configuration (of the right shape: the control plane
    // refuses others) is not applied; the last good keeps running and the
    // heartbeat reports the error.
    let before = cp.evidence().len();
    cp.assign(
        state.path(),
        &own,
        &json!({ "plugin": [{ "name": "kernel-params" }] }),
    );
    wait_for("the error in a heartbeat", Duration::from_secs(60), || {
        let runtimes: Value = serde_json::from_str(&cp.admin(&["runtimes", "list"])).unwrap();
        runtimes[0]["heartbeat"]["errors"]
            .to_string()
            .contains("invalid configuration")
    });
    wait_for("runs to go on", Duration::from_secs(60), || {
        cp.evidence().len() >= before + 2 * FINDINGS_PER_RUN
    });

    // A compromised control plane grants a shell and a wider read: the
    // document exceeds the local policy and is refused whole; the last good
    // configuration keeps running and the heartbeat says why.
    let before = cp.evidence().len();
    let mut hostile = assignment(json!({}));
    hostile["plugin"][0]["grants"] = json!({ "read": ["/"], "commands": ["/bin/sh"] });
    cp.assign(state.path(), &own, &hostile);
    wait_for(
        "the refusal in a heartbeat",
        Duration::from_secs(60),
        || {
            let runtimes: Value = serde_json::from_str(&cp.admin(&["runtimes", "list"])).unwrap();
            let errors = runtimes[0]["heartbeat"]["errors"].to_string();
            errors.contains("exceeds the local policy") && errors.contains("/bin/sh")
        },
    );
    wait_for(
        "runs to go on under the last good configuration",
        Duration::from_secs(60),
        || cp.evidence().len() >= before + 2 * FINDINGS_PER_RUN,
    );

    sigterm(&daemon);
    let out = daemon.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(runtime.pending(), 0, "everything was delivered before exit");
    // Jobs before the skip have every check, those after it one less.
    assert!(assert_jobs_of(&cp.evidence(), &[FINDINGS_PER_RUN, FINDINGS_PER_RUN - 1]) >= 4);
    // The plugin was loaded (compiled or precompiled, described,
    // validated) once per configuration generation — the first and the
    // one with the skip; the refused documents made none — not once per
    // run.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let loads = stderr.matches("plugin loaded: ready to run").count();
    let runs = stderr.matches("run recorded").count();
    assert_eq!(loads, 2, "{stderr}");
    assert!(runs >= 8, "{runs} runs: {stderr}");
}

#[test]
fn results_wait_while_the_control_plane_is_down_and_arrive_when_it_returns() {
    let (_state, mut cp, runtime) = enrolled_and_assigned(FAST_INTERVALS);
    let (db, port) = (cp.db.clone(), cp.port);
    let daemon = runtime.spawn_daemon();
    wait_for("a first delivery", Duration::from_secs(60), || {
        !cp.evidence().is_empty()
    });

    cp.stop();
    wait_for(
        "results to pile up in the outbox",
        Duration::from_secs(60),
        || runtime.pending() >= 3,
    );

    let cp = ControlPlane::start(&db, port);
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        runtime.pending() == 0
    });
    sigterm(&daemon);
    assert!(daemon.wait_with_output().unwrap().status.success());
    assert_eq!(runtime.pending(), 0);
    assert!(assert_complete_jobs(&cp.evidence()) >= 4);
}

/// The job id of the evidence record `r`.
fn job_of(r: &Value) -> String {
    r["evidence"]["origins"][0]["actors"][0]["props"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "job")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_run_logged_as_recorded_survives_a_sigkill_right_after_the_line() {
    use std::io::BufRead;
    let (_state, mut cp, runtime) = enrolled_and_assigned(FAST_INTERVALS);
    // A first cycle fetches the configuration; then the control plane is
    // away, so only the outbox can hold the next runs.
    assert!(runtime.once().status.success());
    let port = cp.port;
    let db = cp.db.clone();
    cp.stop();
    let mut daemon = runtime.spawn_daemon();
    let stderr = daemon.stderr.take().unwrap();
    let mut job = None;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains("run recorded") {
            // SIGKILL at once: the line promises the findings are durable.
            daemon.kill().unwrap();
            job = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("job="))
                .map(|j| j.trim_matches('"').to_string());
            break;
        }
    }
    daemon.wait().unwrap();
    let job = job.expect("the daemon logged a recorded run");
    let cp = ControlPlane::start(&db, port);
    let daemon = runtime.spawn_daemon();
    wait_for(
        "the recorded run to arrive",
        Duration::from_secs(60),
        || cp.evidence().iter().filter(|r| job_of(r) == job).count() == FINDINGS_PER_RUN,
    );
    sigterm(&daemon);
    assert!(daemon.wait_with_output().unwrap().status.success());
    assert_complete_jobs(&cp.evidence());
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let (_state, cp, runtime) = enrolled_and_assigned(FAST_INTERVALS);
    for round in 0..20u64 {
        let mut daemon = runtime.spawn_daemon();
        // Kill somewhere in the first three seconds: during start-up, a
        // run, an outbox write or a delivery (a loaded machine needs about
        // a second and a half for a life's first recorded run).
        std::thread::sleep(Duration::from_millis(300 + (round * 7919) % 2700));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }
    // A last clean life drains whatever the kills left in the outbox (and
    // runs at least once more, so it is surely up before it is stopped).
    let before = cp.evidence().len();
    let daemon = runtime.spawn_daemon();
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        runtime.pending() == 0 && cp.evidence().len() >= before + FINDINGS_PER_RUN
    });
    sigterm(&daemon);
    assert!(daemon.wait_with_output().unwrap().status.success());
    assert_eq!(runtime.pending(), 0);
    let jobs = assert_complete_jobs(&cp.evidence());
    assert!(jobs >= 10, "only {jobs} jobs completed in 20 lives");
}

#[test]
fn revoked_credentials_are_refused_and_results_are_kept() {
    let (_state, cp, runtime) = enrolled_and_assigned("");
    assert!(runtime.once().status.success());

    let runtimes: Value = serde_json::from_str(&cp.admin(&["runtimes", "list"])).unwrap();
    let id = runtimes[0]["id"].as_str().unwrap().to_string();
    cp.admin(&["runtimes", "revoke", &id]);
    let out = runtime.once();
    assert_eq!(
        out.status.code(),
        Some(4),
        "results could not be delivered: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused this runtime's credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        runtime.pending(),
        1,
        "the undelivered results stay in the outbox"
    );
    assert_eq!(cp.evidence().len(), FINDINGS_PER_RUN);
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn credentials_rotate_and_the_old_ones_stop_working() {
    let (_state, cp, runtime) = enrolled_and_assigned("");
    let file = runtime.state().join("credentials.json");
    let read = || -> Value { serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap() };
    let before_bytes = std::fs::read(&file).unwrap();
    let before = read();
    assert!(before["tls"]["certificate"].is_string(), "{before:#}");

    let out = runtime.command(&["rotate-credentials"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = read();
    assert_eq!(after["runtime_id"], before["runtime_id"]);
    for field in [
        &["client_secret"][..],
        &["tls", "certificate"],
        &["tls", "private_key"],
    ] {
        let at = |v: &Value| field.iter().fold(v.clone(), |v, k| v[k].clone());
        assert_ne!(at(&after), at(&before), "{field:?} is new");
    }
    assert_eq!(
        after["tls"]["ca_certificate"],
        before["tls"]["ca_certificate"]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = runtime.once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cp.evidence().len(), FINDINGS_PER_RUN);

    // The old secret and certificate are refused now.
    std::fs::write(&file, before_bytes).unwrap();
    let out = runtime.once();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused this runtime's credentials"),
        "{}",
        stderr(&out)
    );
    assert_eq!(cp.evidence().len(), FINDINGS_PER_RUN);
}

#[test]
fn a_running_daemon_picks_up_credentials_rotated_by_the_command() {
    let (_state, cp, runtime) = enrolled_and_assigned(FAST_INTERVALS);
    let daemon = runtime.spawn_daemon();
    wait_for("a first delivery", Duration::from_secs(60), || {
        !cp.evidence().is_empty()
    });
    // The rotation retires the daemon's secret, certificate and tokens.
    let out = runtime.command(&["rotate-credentials"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after_rotation = cp.evidence().len();
    wait_for("deliveries to go on", Duration::from_secs(60), || {
        cp.evidence().len() >= after_rotation + 2 * FINDINGS_PER_RUN
    });
    sigterm(&daemon);
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using the credentials saved by another process"),
        "{}",
        stderr(&out)
    );
    assert_complete_jobs(&cp.evidence());
}

#[test]
fn the_daemon_renews_its_certificate_before_it_expires() {
    let state = tempfile::tempdir().unwrap();
    // One-minute certificates are due for renewal as soon as they are issued.
    let cp = ControlPlane::spawn(
        &state.path().join("cp.db"),
        free_port(),
        &["--client-cert-validity", "1m"],
    );
    cp.set_config(state.path(), &assignment(json!({})));
    let runtime = Runtime::new("");
    runtime.enroll(&cp);
    let certificate = || -> Value {
        let credentials: Value = serde_json::from_slice(
            &std::fs::read(runtime.state().join("credentials.json")).unwrap(),
        )
        .unwrap();
        credentials["tls"]["certificate"].clone()
    };
    let enrolled = certificate();

    let out = runtime.once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("client certificate renewed"),
        "{}",
        stderr(&out)
    );
    assert_ne!(certificate(), enrolled);
    assert_eq!(cp.evidence().len(), FINDINGS_PER_RUN);
}

#[test]
fn a_control_plane_with_another_ca_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&state.path().join("cp.db"), free_port());
    cp.set_config(state.path(), &assignment(json!({})));
    let runtime = Runtime::new("");
    let token = cp.admin(&["enrollment-token", "create"]).trim().to_string();

    // Enrolling with the wrong CA fails the handshake before the token is
    // sent; the same token then works with the right CA.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.pem");
    let out = Command::new(control_plane_bin())
        .args(["ca", "certificate", "--ca-dir"])
        .arg(other.path().join("ca"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&other_ca, &out.stdout).unwrap();
    let out = runtime.try_enroll(&cp.url(), &token, Some(&other_ca));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not from the CA this runtime trusts"),
        "{}",
        stderr(&out)
    );
    assert!(!runtime.state().join("credentials.json").exists());
    let out = runtime.try_enroll(&cp.url(), &token, Some(&cp.ca_cert()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(runtime.once().status.success());

    // A server with another CA on the same address (an impostor, or a
    // control plane whose CA was replaced) gets nothing: the results wait.
    let mut cp = cp;
    cp.stop();
    std::fs::rename(state.path().join("ca"), state.path().join("ca.replaced")).unwrap();
    let cp = ControlPlane::start(&cp.db.clone(), cp.port);
    let out = runtime.once();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("UnknownIssuer"), "{}", stderr(&out));
    assert_eq!(runtime.pending(), 1);
    assert_eq!(cp.evidence().len(), FINDINGS_PER_RUN);
}

#[test]
fn a_server_certificate_for_other_names_is_refused_with_a_hint() {
    let state = tempfile::tempdir().unwrap();
    let cp = ControlPlane::spawn(
        &state.path().join("cp.db"),
        free_port(),
        &["--tls-name", "cp.example"],
    );
    let runtime = Runtime::new("");
    let token = cp.admin(&["enrollment-token", "create"]).trim().to_string();
    let out = runtime.try_enroll(&cp.url(), &token, Some(&cp.ca_cert()));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tls-name"), "{}", stderr(&out));
}

#[test]
fn plain_http_needs_the_development_flag_on_both_sides() {
    let state = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_plain(&state.path().join("cp.db"), free_port());
    cp.set_config(state.path(), &assignment(json!({})));
    let runtime = Runtime::new("");
    let token = cp.admin(&["enrollment-token", "create"]).trim().to_string();

    // Neither a CA nor the flag: refused by the command line.
    let out = runtime
        .command(&["enroll", "--url", &cp.url(), "--token", &token])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ca-cert"), "{}", stderr(&out));
    // A CA with an http:// URL: refused before anything is sent.
    let pem = state.path().join("any.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = runtime.try_enroll(&cp.url(), &token, Some(&pem));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));

    let out = runtime.try_enroll(&cp.url(), &token, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let credentials: Value =
        serde_json::from_slice(&std::fs::read(runtime.state().join("credentials.json")).unwrap())
            .unwrap();
    assert!(credentials.get("tls").is_none());
    let out = runtime.once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cp.evidence().len(), FINDINGS_PER_RUN);
}

// --- network faults between the runtime and the control plane, injected
// for real by a TCP proxy on the byte stream ---

/// A control plane, a fault-injecting proxy in front of it, and a runtime
/// enrolled through the proxy and assigned kernel-params.
fn behind_a_proxy() -> (
    tempfile::TempDir,
    ControlPlane,
    assessment_e2e::proxy::Proxy,
    Runtime,
) {
    let state = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&state.path().join("cp.db"), free_port());
    let proxy =
        assessment_e2e::proxy::Proxy::start(format!("127.0.0.1:{}", cp.port).parse().unwrap());
    let runtime = Runtime::new(FAST_INTERVALS);
    let token = cp.admin(&["enrollment-token", "create"]).trim().to_string();
    let url = format!("https://localhost:{}", proxy.addr().port());
    let out = runtime.try_enroll(&url, &token, Some(&cp.ca_cert()));
    assert!(out.status.success(), "{}", stderr(&out));
    cp.set_config(state.path(), &assignment(json!({})));
    (state, cp, proxy, runtime)
}

/// Runs a daemon through the proxy: `fault` for a few seconds of runs,
/// heartbeats and deliveries, then a clean network until everything is
/// delivered. Every job arrives whole and exactly once.
fn survives(fault: assessment_e2e::proxy::Fault) {
    use assessment_e2e::proxy::Fault;
    let (_state, cp, proxy, runtime) = behind_a_proxy();
    // A first clean cycle: configuration and first results in.
    assert!(runtime.once().status.success());
    let before = cp.evidence().len();
    let daemon = runtime.spawn_daemon();
    proxy.set(fault);
    std::thread::sleep(Duration::from_secs(4));
    proxy.set(Fault::Pass);
    wait_for("runs after the fault", Duration::from_secs(90), || {
        cp.evidence().len() >= before + 2 * FINDINGS_PER_RUN
    });
    sigterm(&daemon);
    let out = daemon.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the last delivery before exit could not send waits for the next
    // start, which delivers it.
    assert!(runtime.once().status.success());
    assert_eq!(runtime.pending(), 0, "everything was delivered");
    assert!(assert_complete_jobs(&cp.evidence()) >= 3);
}

#[test]
fn slow_answers_from_the_control_plane_lose_and_duplicate_nothing() {
    survives(assessment_e2e::proxy::Fault::Delay(Duration::from_millis(
        1500,
    )));
}

#[test]
fn dropped_connections_lose_and_duplicate_nothing() {
    survives(assessment_e2e::proxy::Fault::Drop);
}

#[test]
fn answers_cut_short_after_the_control_plane_stored_the_batch_are_not_stored_twice() {
    // Requests reach the control plane, which stores the batch; its answer
    // is cut inside the TLS stream, so the runtime redelivers.
    survives(assessment_e2e::proxy::Fault::TruncateResponse(6000));
}

#[test]
fn answers_cut_during_the_handshake_lose_and_duplicate_nothing() {
    survives(assessment_e2e::proxy::Fault::TruncateResponse(300));
}

#[test]
fn reset_connections_lose_and_duplicate_nothing() {
    survives(assessment_e2e::proxy::Fault::Reset);
}

#[test]
fn corrupted_bytes_on_the_wire_lose_and_duplicate_nothing() {
    survives(assessment_e2e::proxy::Fault::Corrupt);
}

#[test]
fn a_control_plane_that_accepts_and_never_answers_loses_and_duplicates_nothing() {
    survives(assessment_e2e::proxy::Fault::Blackhole);
}

#[test]
fn a_full_disk_under_the_outbox_keeps_what_was_accepted_and_reports_what_was_not() {
    let (_state, mut cp, runtime) = enrolled_and_assigned(FAST_INTERVALS);
    assert!(runtime.once().status.success(), "configuration fetched");
    // 256 KiB for the outbox: room for a few runs' batches (each record
    // carries its job's provenance).
    let Some(_disk) = assessment_e2e::TmpfsMount::new(&runtime.state().join("outbox"), 256) else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs");
        return;
    };
    let (port, db) = (cp.port, cp.db.clone());
    cp.stop();
    let mut daemon = runtime.spawn_daemon();
    std::thread::sleep(Duration::from_secs(6));
    daemon.kill().unwrap();
    let out = daemon.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("the findings of this run could not be recorded"),
        "{log}"
    );
    let accepted = runtime.pending();
    assert!(accepted >= 1, "the first batches were accepted");
    let cp = ControlPlane::start(&db, port);
    // This cycle's own run may find the disk still full (and says so); its
    // delivery drains what was accepted before.
    runtime.once();
    wait_for("the outbox to drain", Duration::from_secs(60), || {
        runtime.pending() == 0
    });
    // Every accepted job arrived whole; nothing refused left a partial job.
    assert!(assert_complete_jobs(&cp.evidence()) > accepted);
}

/// The daemon's metrics, parsed as Prometheus parses them.
fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    // Chunked transfer: the exposition sits between chunk-size lines.
    let lines = body
        .lines()
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

/// The sum of the samples of `name` whose labels include `labels`.
fn sample_sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// systemd's side of `Type=notify`: a datagram socket the daemon writes
/// `READY=1`, `WATCHDOG=1`, … to.
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { socket, path }
    }

    /// Messages until one contains `line`, within `timeout`.
    fn wait_for(&self, line: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.lines().any(|l| l == line);
                seen.push(message);
                if found {
                    return seen;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {line} from the daemon; it sent {seen:?}"
            );
        }
    }
}

#[test]
fn the_daemon_as_a_service_notifies_systemd_serves_metrics_and_reloads_on_sighup() {
    use std::io::BufRead;
    let (_state, cp, runtime) = enrolled_and_assigned(FAST_INTERVALS);
    let metrics_port = free_port();
    let local = std::fs::read_to_string(runtime.config()).unwrap();
    let with_service = |level: &str| {
        format!(
            "{local}\n[service]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\nlog_level = \"{level}\"\n"
        )
    };
    // Only warnings at first: no line for each recorded run.
    std::fs::write(runtime.config(), with_service("warn")).unwrap();
    let notify = NotifySocket::new(runtime.dir.path());
    // As systemd starts the unit: the notification socket, a watchdog of
    // one second, no log filter in the environment, JSON logs.
    let mut daemon = runtime
        .command(&["--log-format", "json", "daemon"])
        .env_remove("ASSESSMENT_RUNTIME_LOG")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stderr = daemon.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line);
            }
        })
    };

    notify.wait_for("READY=1", Duration::from_secs(60));
    // The watchdog is petted every half second.
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    assert_eq!(http_get(metrics_port, "/healthz").unwrap().0, 200);
    assert_eq!(
        http_get(metrics_port, "/readyz"),
        Some((200, "ready\n".to_string()))
    );

    wait_for("runs delivered", Duration::from_secs(60), || {
        cp.evidence().len() >= 2 * FINDINGS_PER_RUN
    });
    let m = scrape(metrics_port);
    let completed = sample_sum(
        &m,
        "assessment_runtime_jobs_total",
        &[("plugin", "kernel-params"), ("outcome", "completed")],
    );
    assert!(completed >= 2.0, "{completed}");
    let findings = sample_sum(
        &m,
        "assessment_runtime_findings_total",
        &[("plugin", "kernel-params")],
    );
    assert!(
        findings >= completed * FINDINGS_PER_RUN as f64,
        "{findings} findings in {completed} runs"
    );
    assert!(
        sample_sum(
            &m,
            "assessment_runtime_findings_total",
            &[("status", "pass")]
        ) > 0.0
    );
    assert!(
        sample_sum(&m, "assessment_runtime_delivered_findings_total", &[])
            >= 2.0 * FINDINGS_PER_RUN as f64
    );
    assert!(
        sample_sum(
            &m,
            "assessment_runtime_deliveries_total",
            &[("result", "ok")]
        ) >= 1.0
    );
    assert!(
        sample_sum(
            &m,
            "assessment_runtime_heartbeats_total",
            &[("result", "ok")]
        ) >= 1.0
    );
    assert!(
        sample_sum(
            &m,
            "assessment_runtime_job_duration_seconds_count",
            &[("plugin", "kernel-params")]
        ) >= completed
    );
    assert_eq!(
        sample_sum(&m, "assessment_runtime_config_generation", &[]),
        1.0
    );
    assert!(
        sample_sum(
            &m,
            "assessment_runtime_config_last_sync_timestamp_seconds",
            &[]
        ) > 1.7e9
    );
    assert!(
        sample_sum(
            &m,
            "assessment_runtime_plugin_supply_total",
            &[("step", "compile"), ("result", "ok")]
        ) >= 1.0
    );
    let expiry = sample_sum(
        &m,
        "assessment_runtime_certificate_expiry_seconds",
        &[("certificate", "client")],
    );
    assert!(expiry > 3600.0, "{expiry}");
    assert!(
        m.samples
            .iter()
            .any(|s| s.metric == "assessment_runtime_outbox_batches"),
        "the outbox depth is exported"
    );
    let recorded = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("run recorded: its findings are in the outbox"))
            .count()
    };
    assert_eq!(recorded(&lines.lock().unwrap()), 0, "at level warn");

    // A broken file is refused on SIGHUP: the daemon keeps running what it ran.
    std::fs::write(
        runtime.config(),
        with_service("info") + "[runtime]\nmax_concurrent_jobs = 0\n",
    )
    .unwrap();
    let hangup = |child: &Child| {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hangup(&daemon);
    let seen = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(seen.iter().any(|m| m.contains("RELOADING=1")), "{seen:?}");
    wait_for("the refusal counted", Duration::from_secs(10), || {
        sample_sum(
            &scrape(metrics_port),
            "assessment_runtime_config_updates_total",
            &[("result", "refused")],
        ) == 1.0
    });
    assert!(daemon.try_wait().unwrap().is_none(), "still running");
    let before = cp.evidence().len();
    wait_for(
        "runs after a refused reload",
        Duration::from_secs(30),
        || cp.evidence().len() > before,
    );

    // A good file is applied: the log level changes without a restart.
    std::fs::write(runtime.config(), with_service("info")).unwrap();
    hangup(&daemon);
    wait_for("runs logged at level info", Duration::from_secs(30), || {
        recorded(&lines.lock().unwrap()) >= 1
    });
    let m = scrape(metrics_port);
    assert_eq!(
        sample_sum(
            &m,
            "assessment_runtime_config_updates_total",
            &[("result", "reloaded")]
        ),
        1.0
    );
    assert_eq!(
        sample_sum(&m, "assessment_runtime_config_generation", &[]),
        2.0
    );

    // SIGTERM: stopping, then a clean exit; the listener goes with it.
    sigterm(&daemon);
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    reader.join().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err());

    // JSON logs: one object per line with stable top-level keys.
    let lines = lines.lock().unwrap();
    let recorded: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["message"] == "run recorded: its findings are in the outbox")
        .collect();
    let event = &recorded[0];
    for key in ["timestamp", "level", "target", "plugin", "job", "findings"] {
        assert!(event.get(key).is_some(), "{key} in {event}");
    }
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["plugin"], "kernel-params");
}
