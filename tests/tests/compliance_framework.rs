//! The runtime against a server that speaks only the Compliance Framework
//! API: the reference control plane in its strict mode
//! (`serve --compliance-framework-only`: token, heartbeat, evidence and
//! health; `/v1` answers 404), over TLS without client certificates, with
//! the runtime's credentials created by the admin command and given in its
//! `[control_plane]` settings (no enrollment). The whole loop with the real
//! binaries and the kernel-params example plugin: token, heartbeats, every
//! finding stored once though it goes record by record, the server down and
//! back, the runtime killed mid-delivery and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assessment_e2e::{free_port, guest, repo, runtime_bin, wait_for};
use serde_json::Value;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Findings of one kernel-params run on the good fixture tree.
const FINDINGS_PER_RUN: usize = 19;

fn control_plane_bin() -> PathBuf {
    runtime_bin().with_file_name("assessment-control-plane")
}

/// A control plane process serving TLS on a loopback port, with its
/// database (and its CA in `ca/` beside it).
struct Server {
    child: Option<Child>,
    port: u16,
    db: PathBuf,
    extra: Vec<String>,
}

impl Server {
    fn start(db: &Path, extra: &[&str]) -> Self {
        let mut server = Server {
            child: None,
            port: free_port(),
            db: db.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// Starts it (again) on its port and database.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(control_plane_bin())
            .arg("--database")
            .arg(&self.db)
            .arg("serve")
            .args(&self.extra)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--token-ttl", "1m"])
            .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the control plane did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The CA certificate its server certificate comes from.
    fn ca_cert(&self) -> PathBuf {
        self.db.with_file_name("ca").join("ca.pem")
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

    /// Credentials for a new runtime: its id, and the file holding its
    /// secret (`dir/secret`).
    fn create_runtime(&self, dir: &Path) -> (String, PathBuf) {
        let secret = dir.join("secret");
        let created: Value = serde_json::from_str(&self.admin(&[
            "runtimes",
            "create",
            "--name",
            "cf-runtime",
            "--secret-file",
            secret.to_str().unwrap(),
        ]))
        .unwrap();
        assert!(created.get("client_secret").is_none(), "{created}");
        (created["runtime_id"].as_str().unwrap().to_string(), secret)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A runtime configured for `server` in its own file: the kernel-params
/// plugin every second, no enrollment.
struct Runtime {
    dir: tempfile::TempDir,
    lives: usize,
}

impl Runtime {
    fn new(server: &Server) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        assessment_e2e::copy_tree(
            &repo().join("plugins-examples/kernel-params/fixtures/good"),
            &root,
        );
        let (runtime_id, secret) = server.create_runtime(dir.path());
        let config = format!(
            "[runtime]\nassessment_root = {root:?}\nstate_dir = {state:?}\n\
             heartbeat_interval = \"1s\"\nconfig_poll_interval = \"1s\"\nshutdown_grace = \"10s\"\n\
             [network]\nca_bundle = {ca:?}\n\
             [control_plane]\nurl = {url:?}\nruntime_id = {runtime_id:?}\nclient_secret_file = {secret:?}\n\
             [[plugin]]\nname = \"kernel-params\"\npath = {plugin:?}\n\
             schedule = {{ every = \"1s\" }}\ngrants = {{ read = [\"/proc/sys\"] }}\n",
            root = root.display().to_string(),
            state = dir.path().join("state").display().to_string(),
            ca = server.ca_cert().display().to_string(),
            url = server.url(),
            secret = secret.display().to_string(),
            plugin = guest("kernel_params").display().to_string(),
        );
        std::fs::write(dir.path().join("agent.toml"), config).unwrap();
        Runtime { dir, lives: 0 }
    }

    /// A daemon whose log goes to `life-N.log`.
    fn spawn_daemon(&mut self) -> Child {
        self.lives += 1;
        let log = std::fs::File::create(self.log(self.lives)).unwrap();
        Command::new(runtime_bin())
            .args(["daemon", "--config"])
            .arg(self.dir.path().join("agent.toml"))
            .env("ASSESSMENT_RUNTIME_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self, life: usize) -> PathBuf {
        self.dir.path().join(format!("life-{life}.log"))
    }

    fn read_log(&self, life: usize) -> String {
        std::fs::read_to_string(self.log(life)).unwrap()
    }

    fn pending(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("state/outbox/pending"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn sigterm(child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the daemon did not stop cleanly");
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

/// Every stored job has exactly one record per finding, each under the
/// idempotency key the runtime gave it: nothing lost, nothing stored
/// twice. Returns the number of jobs.
fn assert_complete_jobs(records: &[Value]) -> usize {
    let mut per_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        per_job
            .entry(job_of(r))
            .or_default()
            .push(r["idempotency_key"].as_str().unwrap().to_string());
    }
    for (job, keys) in &per_job {
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "job {job} has duplicated records");
        assert_eq!(
            keys.len(),
            FINDINGS_PER_RUN,
            "job {job} has {} records: lost or stored twice",
            keys.len()
        );
    }
    per_job.len()
}

#[test]
fn the_whole_loop_runs_against_a_compliance_framework_only_server() {
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &state.path().join("cp.db"),
        &["--compliance-framework-only"],
    );
    let mut runtime = Runtime::new(&server);

    // Token, heartbeat, evidence record by record.
    let daemon = runtime.spawn_daemon();
    wait_for("two runs stored", Duration::from_secs(60), || {
        server.evidence().len() >= 2 * FINDINGS_PER_RUN
    });
    wait_for("a heartbeat", Duration::from_secs(30), || {
        let runtimes: Value = serde_json::from_str(&server.admin(&["runtimes", "list"])).unwrap();
        runtimes[0]["heartbeat"]["plugins"]["kernel-params"] == "ready"
    });
    let runtimes: Value = serde_json::from_str(&server.admin(&["runtimes", "list"])).unwrap();
    assert_eq!(runtimes[0]["name"], "cf-runtime");
    assert!(runtimes[0]["last_heartbeat_at"].is_string(), "{runtimes:#}");

    // The server goes away while findings queue, and comes back.
    server.stop();
    wait_for(
        "results to pile up in the outbox",
        Duration::from_secs(60),
        || runtime.pending() >= 3,
    );
    server.restart();
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        runtime.pending() == 0
    });
    sigterm(daemon);
    assert_eq!(runtime.pending(), 0);

    // The first life discovered the missing extensions once each, kept
    // the local plugins without a failure loop, and never posted a batch
    // that was stored.
    let log = runtime.read_log(1);
    assert_eq!(
        log.matches("no evidence batch endpoint").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("serves no configuration").count(), 1, "{log}");
    // Polls failed only while the server was away.
    assert!(
        log.lines()
            .filter(|l| l.contains("configuration poll failed"))
            .all(|l| l.contains("unreachable")),
        "{log}"
    );
    assert!(log.matches("run recorded").count() >= 5, "{log}");

    // Killed in the middle of runs and deliveries (answers lost), then
    // restarted: every record stored once.
    for round in 0..4u64 {
        let mut daemon = runtime.spawn_daemon();
        std::thread::sleep(Duration::from_millis(1200 + round * 600));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }
    let before = server.evidence().len();
    let daemon = runtime.spawn_daemon();
    wait_for("runs after the restart", Duration::from_secs(60), || {
        runtime.pending() == 0 && server.evidence().len() >= before + FINDINGS_PER_RUN
    });
    sigterm(daemon);
    let last = runtime.read_log(runtime.lives);
    assert_eq!(
        last.matches("no evidence batch endpoint").count(),
        1,
        "each life discovers once: {last}"
    );
    assert_eq!(runtime.pending(), 0);
    let jobs = assert_complete_jobs(&server.evidence());
    assert!(jobs >= 6, "only {jobs} jobs stored");
}

/// The Compliance Framework API's schema: the file named by
/// `COMPLIANCE_FRAMEWORK_SWAGGER`, else `target/reference/`, else the
/// shared reference beside the repository (as `host/tests/evidence_schema.rs`
/// finds it), checked against its pinned SHA-256.
fn swagger() -> Value {
    use sha2::{Digest, Sha256};
    const SHA256: &str = "ff96c1ab6cad7ada09253a842019529e8d58fc44443548e6c6a4baa01f4fe770";
    const FILE: &str = "compliance-framework-api.swagger.json";
    let path = match std::env::var_os("COMPLIANCE_FRAMEWORK_SWAGGER") {
        Some(path) => PathBuf::from(path),
        None => [
            repo().join("target/reference").join(FILE),
            repo().join("../shared/reference").join(FILE),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .expect("the Compliance Framework API's schema: set COMPLIANCE_FRAMEWORK_SWAGGER or see host/tests/evidence_schema.rs"),
    };
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        SHA256,
        "{}",
        path.display()
    );
    serde_json::from_slice(&bytes).unwrap()
}

/// A strict validator of `handler.EvidenceCreateRequest`: object schemas
/// that list their properties admit no other.
fn evidence_validator() -> jsonschema::Validator {
    fn strict(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                    map.insert("additionalProperties".into(), Value::Bool(false));
                }
                map.values_mut().for_each(strict);
            }
            Value::Array(items) => items.iter_mut().for_each(strict),
            _ => {}
        }
    }
    let mut definitions = swagger()["definitions"].clone();
    strict(&mut definitions);
    let schema = serde_json::json!({
        "$ref": "#/definitions/handler.EvidenceCreateRequest",
        "definitions": definitions,
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .unwrap()
}

/// The key the relay gives a record upstream.
fn upstream_key(runtime_id: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(runtime_id.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    hex::encode(hash.finalize())
}

#[test]
fn the_relay_forwards_every_record_once_in_order_through_outages_and_restarts() {
    let state = tempfile::tempdir().unwrap();
    let upstream_dir = state.path().join("upstream");
    let middle_dir = state.path().join("middle");
    std::fs::create_dir_all(&upstream_dir).unwrap();
    std::fs::create_dir_all(&middle_dir).unwrap();
    let mut upstream = Server::start(
        &upstream_dir.join("cp.db"),
        &["--compliance-framework-only"],
    );
    let (relay_id, relay_secret) = upstream.create_runtime(&upstream_dir);
    let queue = middle_dir.join("relay-queue.db");
    let mut middle = Server::start(
        &middle_dir.join("cp.db"),
        &[
            "--compliance-framework-only",
            "--relay-upstream",
            &upstream.url(),
            "--relay-queue",
            queue.to_str().unwrap(),
            "--relay-client-id",
            &relay_id,
            "--relay-client-secret-file",
            relay_secret.to_str().unwrap(),
            "--relay-ca",
            upstream.ca_cert().to_str().unwrap(),
        ],
    );
    let mut runtime = Runtime::new(&middle);
    let daemon = runtime.spawn_daemon();
    wait_for("two runs relayed", Duration::from_secs(60), || {
        upstream.evidence().len() >= 2 * FINDINGS_PER_RUN
    });

    // The upstream goes away: the relay's queue fills; the relay is killed
    // with records queued and starts again; then the upstream returns.
    upstream.stop();
    let relayed_before = middle.evidence().len();
    wait_for(
        "records queued for the upstream",
        Duration::from_secs(60),
        || middle.evidence().len() >= relayed_before + 3 * FINDINGS_PER_RUN,
    );
    middle.stop();
    middle.restart();
    wait_for("more records queued", Duration::from_secs(60), || {
        middle.evidence().len() >= relayed_before + 4 * FINDINGS_PER_RUN
    });
    upstream.restart();
    sigterm(daemon);
    let accepted = middle.evidence();
    wait_for(
        "the relay's queue to drain",
        Duration::from_secs(120),
        || upstream.evidence().len() >= accepted.len(),
    );
    assert_eq!(runtime.pending(), 0);
    std::thread::sleep(Duration::from_millis(500));
    let relayed = upstream.evidence();

    // Every accepted record arrived once, as accepted, under the key the
    // relay derives from its runtime and its own key.
    assert_eq!(relayed.len(), accepted.len(), "each record once");
    assert_complete_jobs(&accepted);
    let by_key: BTreeMap<String, &Value> = accepted
        .iter()
        .map(|r| {
            let key = upstream_key(
                r["runtime_id"].as_str().unwrap(),
                r["idempotency_key"].as_str().unwrap(),
            );
            (key, r)
        })
        .collect();
    for r in &relayed {
        let original = by_key
            .get(r["idempotency_key"].as_str().unwrap())
            .unwrap_or_else(|| panic!("a record the middle did not accept: {r:#}"));
        assert_eq!(r["evidence"], original["evidence"]);
        assert_eq!(r["runtime_id"].as_str().unwrap(), relay_id);
    }
    // In order per stream: each uuid's records arrive upstream in the
    // order the middle accepted them.
    let per_stream = |records: &[Value], key: &dyn Fn(&Value) -> String| {
        let mut streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in records {
            streams
                .entry(r["uuid"].as_str().unwrap().to_string())
                .or_default()
                .push(key(r));
        }
        streams
    };
    let accepted_order = per_stream(&accepted, &|r| {
        upstream_key(
            r["runtime_id"].as_str().unwrap(),
            r["idempotency_key"].as_str().unwrap(),
        )
    });
    let relayed_order = per_stream(&relayed, &|r| {
        r["idempotency_key"].as_str().unwrap().to_string()
    });
    assert_eq!(relayed_order, accepted_order);
    assert_eq!(
        accepted_order.len(),
        FINDINGS_PER_RUN,
        "one stream per check"
    );

    // Every forwarded payload is a valid EvidenceCreateRequest.
    let validator = evidence_validator();
    for r in &relayed {
        let errors: Vec<String> = validator
            .iter_errors(&r["evidence"])
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{:#}", r["evidence"]);
    }
}
