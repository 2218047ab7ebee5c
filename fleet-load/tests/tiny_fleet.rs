//! The generator at a tiny scale against the real control-plane binary:
//! what it reports must agree with what the control plane's database holds,
//! so that the tool cannot silently measure nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ADMIN_TOKEN: &str = "fleet-load-test-admin-token";
const RUNTIMES: usize = 20;

/// The control plane of this build: `FLEET_LOAD_CONTROL_PLANE`, else beside
/// the test executables' directory (built by `cargo build -p
/// assessment-control-plane`, or by a workspace build).
fn control_plane_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FLEET_LOAD_CONTROL_PLANE") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let bin = dir.join("assessment-control-plane");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p assessment-control-plane`), or set FLEET_LOAD_CONTROL_PLANE",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `assessment-control-plane --database DB ARGS`, its JSON output.
fn admin_json(database: &Path, args: &[&str]) -> Value {
    let out = Command::new(control_plane_bin())
        .arg("--database")
        .arg(database)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_figures_agree_with_the_control_planes_database() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("cp.db");
    let (port, metrics_port) = (free_port(), free_port());
    let _server = Killed(
        Command::new(control_plane_bin())
            .arg("--database")
            .arg(&database)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("ACP_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca = dir.path().join("ca/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(ca.exists() && std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok()) {
        assert!(Instant::now() < deadline, "the control plane did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let report_path = dir.path().join("report.json");
    let markdown_path = dir.path().join("report.md");
    // Heartbeats and polls every 0.2 s, a batch every 3 s: each runtime
    // sends about one batch in the run.
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-load"))
        .args(["--url", &format!("https://127.0.0.1:{port}")])
        .arg("--ca-cert")
        .arg(&ca)
        .args(["--metrics", &format!("http://127.0.0.1:{metrics_port}")])
        .args(["--runtimes", &RUNTIMES.to_string()])
        .args(["--duration", "4s", "--time-scale", "300"])
        .args(["--records-per-batch", "10", "--label", "tiny"])
        .arg("--json")
        .arg(&report_path)
        .arg("--markdown")
        .arg(&markdown_path)
        .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fleet-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();

    assert_eq!(report["runtimes_enrolled"], RUNTIMES, "{report:#}");
    for route in report["routes"].as_array().unwrap() {
        assert_eq!(route["errors"], serde_json::json!({}), "{route}");
    }
    let route_ok = |name: &str| {
        report["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|route| route["route"] == name)
            .map_or(0, |route| route["ok"].as_u64().unwrap())
    };
    assert_eq!(route_ok("POST /v1/enroll"), RUNTIMES as u64);
    assert_eq!(
        route_ok("POST /v1/admin/enrollment-tokens"),
        RUNTIMES as u64
    );
    assert!(route_ok("POST /api/auth/token") >= RUNTIMES as u64);
    assert!(route_ok("GET /v1/config") > 0);

    // Evidence: what the generator was told it stored is in the database,
    // once, and the control plane's counter agrees.
    let accepted = report["counts"]["records_accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{report:#}");
    assert_eq!(report["counts"]["records_failed"], 0);
    let stored = admin_json(&database, &["evidence", "list"]);
    let stored = stored.as_array().unwrap();
    assert_eq!(stored.len() as u64, accepted);
    let keys: BTreeSet<_> = stored
        .iter()
        .map(|r| r["idempotency_key"].as_str())
        .collect();
    assert_eq!(keys.len(), stored.len());
    assert_eq!(
        report["server_records_accepted"].as_f64(),
        Some(accepted as f64)
    );
    assert_eq!(
        route_ok("POST /v1/evidence/batch") * 10,
        accepted,
        "batches of 10"
    );

    // Heartbeats: each counted by the control plane; every runtime has one
    // and its own client certificate.
    let heartbeats = report["server_after"]["heartbeats"].as_f64().unwrap()
        - report["server_before"]["heartbeats"].as_f64().unwrap();
    assert_eq!(heartbeats, route_ok("POST /api/agent/heartbeat") as f64);
    let runtimes = admin_json(&database, &["runtimes", "list"]);
    let runtimes = runtimes.as_array().unwrap();
    assert_eq!(runtimes.len(), RUNTIMES);
    assert!(runtimes.iter().all(|r| r["last_heartbeat_at"].is_string()));
    let certificates: BTreeSet<_> = runtimes
        .iter()
        .map(|r| r["certificate_sha256"].as_str())
        .collect();
    assert_eq!(certificates.len(), RUNTIMES, "one certificate per runtime");

    assert!(
        report["database_bytes_per_million_records"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let markdown = std::fs::read_to_string(&markdown_path).unwrap();
    assert!(markdown.starts_with("### tiny"), "{markdown}");
    assert!(
        markdown.contains("| `POST /v1/evidence/batch` |"),
        "{markdown}"
    );
}
