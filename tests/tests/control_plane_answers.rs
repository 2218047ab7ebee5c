//! A failing or hostile control plane, played by a scripted server on
//! loopback (plain HTTP, as a development control plane): how the real
//! runtime daemon takes 500s, 429s with `Retry-After`, malformed, endless
//! and bodiless answers. Nothing accepted is lost or delivered twice, the
//! runtime's memory stays bounded, and the heartbeat says what went wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assessment_e2e::http::{Reply, Request, Server};
use assessment_e2e::{guest, repo, runtime_bin, wait_sampling_rss};
use serde_json::{Value, json};

/// The configuration the fake control plane serves: kernel-params every
/// second.
fn assignment() -> Value {
    json!({
        "plugin": [{
            "name": "kernel-params",
            "path": guest("kernel_params").display().to_string(),
            "schedule": { "every": "1s" },
            "grants": { "read": ["/proc/sys"] },
        }]
    })
}

/// What the fake control plane answers, per route, given how many requests
/// that route has had before.
struct Script {
    config: Box<dyn Fn(usize) -> Reply + Send + Sync>,
    evidence: Box<dyn Fn(usize) -> Reply + Send + Sync>,
}

/// The fake control plane: requests with the time they arrived.
struct Fake {
    server: Server,
    arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Fake {
    fn start(script: Script) -> Self {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (config_count, evidence_count) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let server = {
            let arrivals = arrivals.clone();
            Server::start(move |req: &Request| {
                arrivals
                    .lock()
                    .unwrap()
                    .push((Instant::now(), format!("{} {}", req.method, req.target)));
                match (req.method.as_str(), req.target.as_str()) {
                    ("POST", "/api/auth/token") => Reply::json(
                        200,
                        json!({ "access_token": "t", "token_type": "Bearer", "expires_in": 300 }),
                    ),
                    ("GET", "/v1/config") => {
                        (script.config)(config_count.fetch_add(1, Ordering::SeqCst))
                    }
                    ("POST", "/api/agent/heartbeat") => Reply::json(201, json!({})),
                    ("POST", "/v1/evidence/batch") => {
                        (script.evidence)(evidence_count.fetch_add(1, Ordering::SeqCst))
                    }
                    _ => Reply::not_found(),
                }
            })
        };
        Fake { server, arrivals }
    }

    /// Requests to `route` (`"POST /v1/evidence/batch"`), with their bodies.
    fn bodies(&self, route: &str) -> Vec<Value> {
        self.server
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| format!("{} {}", r.method, r.target) == route)
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    fn arrivals(&self, route: &str) -> Vec<Instant> {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r == route)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// A runtime "enrolled" with `url` (its credentials written as enrollment
/// over plain HTTP writes them), assessing the kernel-params good tree.
struct Runtime {
    dir: tempfile::TempDir,
}

impl Runtime {
    fn new(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        assessment_e2e::copy_tree(
            &repo().join("plugins-examples/kernel-params/fixtures/good"),
            &root,
        );
        let state = dir.path().join("state");
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&state)
            .unwrap();
        let credentials = json!({
            "url": url,
            "runtime_id": "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90",
            "client_secret": "secret",
        });
        std::fs::write(state.join("credentials.json"), credentials.to_string()).unwrap();
        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "[runtime]\nassessment_root = {:?}\nstate_dir = {:?}\n\
                 heartbeat_interval = \"1s\"\nconfig_poll_interval = \"1s\"\nshutdown_grace = \"5s\"\n\
                 [policy]\nremote_path_plugins = true\nread = [\"/proc/sys\"]\n",
                root.display().to_string(),
                state.display().to_string()
            ),
        )
        .unwrap();
        Runtime { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(runtime_bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .env("ASSESSMENT_RUNTIME_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn_daemon(&self) -> Child {
        self.command(&["daemon"]).spawn().unwrap()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

fn stop(mut daemon: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stderr = String::new();
    use std::io::Read;
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve_assignment(_: usize) -> Reply {
    Reply::json(200, assignment())
}

/// Idempotency keys of the batches the control plane accepted (answered
/// 200 for), and of all batches sent.
fn keys(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .flat_map(|b| b["records"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            r["idempotency_key"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn pending(state: &Path) -> usize {
    std::fs::read_dir(state.join("outbox/pending"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_control_plane_answering_429_with_retry_after_is_left_alone_that_long() {
    let fake = Fake::start(Script {
        config: Box::new(serve_assignment),
        evidence: Box::new(|n| {
            if n == 0 {
                Reply::WithHeaders(
                    429,
                    vec!["retry-after: 4".into()],
                    br#"{"errors":{"message":"slow down"}}"#.to_vec(),
                )
            } else {
                Reply::json(200, json!({ "accepted": 1, "duplicates": 0 }))
            }
        }),
    });
    let runtime = Runtime::new(&fake.server.url());
    let daemon = runtime.spawn_daemon();
    wait_for("a second delivery", Duration::from_secs(60), || {
        fake.arrivals("POST /v1/evidence/batch").len() >= 2
    });
    let log = stop(daemon);
    let deliveries = fake.arrivals("POST /v1/evidence/batch");
    let waited = deliveries[1] - deliveries[0];
    assert!(
        waited >= Duration::from_millis(3900),
        "retried after {waited:?} although the control plane asked for 4 s\n{log}"
    );
}

#[test]
fn a_control_plane_failing_with_500_then_recovering_gets_every_record_once() {
    let accepted = Arc::new(Mutex::new(Vec::<usize>::new()));
    let fake = {
        let accepted = accepted.clone();
        Fake::start(Script {
            config: Box::new(serve_assignment),
            evidence: Box::new(move |n| {
                if n < 3 {
                    Reply::json(
                        500,
                        json!({ "errors": { "message": "database is locked" } }),
                    )
                } else {
                    accepted.lock().unwrap().push(n);
                    Reply::json(200, json!({}))
                }
            }),
        })
    };
    let runtime = Runtime::new(&fake.server.url());
    let daemon = runtime.spawn_daemon();
    wait_for("batches accepted", Duration::from_secs(90), || {
        accepted.lock().unwrap().len() >= 3
    });
    stop(daemon);
    // What was answered 200: every key once; what got 500 was sent again.
    let bodies = fake.bodies("POST /v1/evidence/batch");
    let ok: Vec<String> = accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|n| keys(&bodies[*n..=*n]))
        .collect();
    let unique: BTreeSet<&String> = ok.iter().collect();
    assert_eq!(unique.len(), ok.len(), "a record was accepted twice");
    let failed: BTreeSet<String> = keys(&bodies[..3]).into_iter().collect();
    assert!(
        failed.iter().all(|k| unique.contains(k)) || pending(&runtime.state()) > 0,
        "a record refused with 500 was dropped"
    );
}

#[test]
fn a_malformed_configuration_document_is_refused_and_reported() {
    let fake = Fake::start(Script {
        config: Box::new(|_| Reply::Full(200, "application/json", b"{\"plugin\": [".to_vec())),
        evidence: Box::new(|_| Reply::json(200, json!({}))),
    });
    let runtime = Runtime::new(&fake.server.url());
    let daemon = runtime.spawn_daemon();
    wait_for(
        "a heartbeat with the error",
        Duration::from_secs(30),
        || {
            fake.bodies("POST /api/agent/heartbeat").iter().any(|h| {
                h.to_string()
                    .contains("unexpected answer from the control plane")
            })
        },
    );
    stop(daemon);
    assert!(
        fake.bodies("POST /v1/evidence/batch").is_empty(),
        "nothing ran"
    );
}

#[test]
fn a_304_for_a_document_never_sent_changes_nothing() {
    let fake = Fake::start(Script {
        config: Box::new(|_| Reply::Full(304, "application/json", Vec::new())),
        evidence: Box::new(|_| Reply::json(200, json!({}))),
    });
    let runtime = Runtime::new(&fake.server.url());
    let out = runtime.command(&["daemon", "--once"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !fake.bodies("POST /api/agent/heartbeat").is_empty(),
        "still heard from"
    );
}

#[test]
fn an_endless_configuration_document_is_refused_without_exhausting_memory() {
    let fake = Fake::start(Script {
        config: Box::new(|_| Reply::Endless),
        evidence: Box::new(|_| Reply::json(200, json!({}))),
    });
    let runtime = Runtime::new(&fake.server.url());
    let mut child = runtime.command(&["daemon", "--once"]).spawn().unwrap();
    let (_code, peak_rss_kib) = wait_sampling_rss(&mut child);
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("larger than 4 MiB"), "{stderr}");
    assert!(
        peak_rss_kib < 200 << 10,
        "peak RSS {} MiB",
        peak_rss_kib >> 10
    );
    assert!(
        fake.bodies("POST /api/agent/heartbeat")
            .iter()
            .any(|h| h.to_string().contains("larger than 4 MiB")),
        "the heartbeat says why"
    );
}

#[test]
fn a_batch_refused_with_409_is_set_aside_and_the_queue_moves_on() {
    let fake = Fake::start(Script {
        config: Box::new(serve_assignment),
        evidence: Box::new(|n| {
            if n == 0 {
                Reply::json(
                    409,
                    json!({ "errors": { "message": "idempotency key reused with another record" } }),
                )
            } else {
                Reply::json(200, json!({}))
            }
        }),
    });
    let runtime = Runtime::new(&fake.server.url());
    let daemon = runtime.spawn_daemon();
    wait_for("later batches delivered", Duration::from_secs(60), || {
        fake.arrivals("POST /v1/evidence/batch").len() >= 3
    });
    stop(daemon);
    let rejected = std::fs::read_dir(runtime.state().join("outbox/rejected"))
        .unwrap()
        .count();
    assert_eq!(rejected, 1, "the refused batch is kept for the operator");
}

#[test]
fn a_refusal_leaves_the_heartbeat_once_the_control_plane_serves_what_is_in_force() {
    let fake = Fake::start(Script {
        config: Box::new(|n| {
            if n < 2 {
                Reply::Full(200, "application/json", b"{\"plugin\": [".to_vec())
            } else {
                Reply::Full(304, "application/json", Vec::new())
            }
        }),
        evidence: Box::new(|_| Reply::json(200, json!({}))),
    });
    let runtime = Runtime::new(&fake.server.url());
    let daemon = runtime.spawn_daemon();
    let reported = |h: &Value| h["errors"].to_string().contains("could not be read");
    wait_for(
        "a heartbeat with the error",
        Duration::from_secs(30),
        || {
            fake.bodies("POST /api/agent/heartbeat")
                .iter()
                .any(reported)
        },
    );
    wait_for(
        "a later heartbeat without it",
        Duration::from_secs(30),
        || {
            fake.bodies("POST /api/agent/heartbeat")
                .last()
                .is_some_and(|h| !reported(h) && fake.arrivals("GET /v1/config").len() > 2)
        },
    );
    stop(daemon);
}
