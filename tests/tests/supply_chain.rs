//! The plugin supply chain end to end: generate a key, audit, sign and
//! package a plugin with `plugin-registry`, serve the release layout from a
//! local HTTP server, and have the host fetch, verify, store and run it —
//! then the attacks, each refused with nothing stored or run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use assessment_e2e::http::{Reply, Request, Server};
use assessment_e2e::{Agent, RunOutcome, guest, registry_bin, registry_tool as tool, repo};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A publisher: a key pair and a directory of release assets.
struct Publisher {
    dir: tempfile::TempDir,
    public_key: String,
}

impl Publisher {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sk = dir.path().join("publisher.key");
        let pk = dir.path().join("publisher.pub");
        ok(tool(&[
            "keygen",
            "--unencrypted",
            "--secret-key",
            sk.to_str().unwrap(),
            "--public-key",
            pk.to_str().unwrap(),
        ]));
        let text = std::fs::read_to_string(&pk).unwrap();
        let public_key = text.lines().nth(1).unwrap().to_string();
        Publisher { dir, public_key }
    }

    fn dist(&self) -> PathBuf {
        self.dir.path().join("dist")
    }

    /// Audit, sign and package a guest component.
    fn package(&self, component: &Path, plugin_dir: &Path, version: &str) {
        let sk = self.dir.path().join("publisher.key");
        ok(tool(&[
            "package",
            component.to_str().unwrap(),
            "--plugin-dir",
            plugin_dir.to_str().unwrap(),
            "--version",
            version,
            "--out",
            self.dist().to_str().unwrap(),
            "--secret-key",
            sk.to_str().unwrap(),
            "--repository",
            "https://example.invalid/plugins",
            "--commit",
            "0123abc",
        ]));
    }

    fn asset(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dist().join(name)).unwrap()
    }
}

fn kernel_params_dir() -> PathBuf {
    repo().join("plugins-examples/kernel-params")
}

/// A registry serving the publisher's assets under `/releases/<tag>/<asset>`,
/// with `overrides` (path → reply) taking precedence.
fn registry(publisher: &Publisher, overrides: Vec<(String, Reply)>) -> Server {
    let dist = publisher.dist();
    let overrides = Arc::new(overrides);
    Server::start(move |req: &Request| {
        if let Some((_, reply)) = overrides.iter().find(|(p, _)| *p == req.target) {
            return reply.clone();
        }
        let Some(rest) = req.target.strip_prefix("/releases/") else {
            return Reply::not_found();
        };
        // `<name>/v<version>/<asset>`: the asset is the last segment.
        let asset = rest.rsplit('/').next().unwrap_or_default();
        match std::fs::read(dist.join(asset)) {
            Ok(bytes) => Reply::bytes(bytes),
            Err(_) => Reply::not_found(),
        }
    })
}

fn good_tree() -> PathBuf {
    kernel_params_dir().join("fixtures/good")
}

fn agent_for(publisher: &Publisher, server: &Server, version: &str) -> Agent {
    Agent::new()
        .with_tree(&good_tree())
        .runtime(&format!(
            "trusted_keys = [{:?}]\ndownload_timeout = \"2s\"\ndownload_retries = 1",
            publisher.public_key
        ))
        .policy("dev_plain_http_registries = true")
        .registry_plugin(
            "kernel-params",
            version,
            &format!("{}/releases", server.url()),
            "grants = { read = [\"/proc/sys\"] }",
        )
}

fn store_files(agent: &Agent, sub: &str) -> Vec<String> {
    let dir = agent.state_dir().join("plugins").join(sub);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn assert_refused(out: &RunOutcome, agent: &Agent, kind: &str, needles: &[&str]) {
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.error_kind("kernel-params").as_deref(),
        Some(kind),
        "{:#}",
        out.job("kernel-params")
    );
    let message = out.error_message("kernel-params");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert!(out.findings("kernel-params").is_empty(), "nothing ran");
    assert!(
        store_files(agent, "blobs/sha256").is_empty(),
        "nothing stored"
    );
    assert!(store_files(agent, "releases").is_empty(), "nothing stored");
}

#[test]
fn fetch_verify_store_and_run_then_run_offline() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let manifest: serde_json::Value =
        serde_json::from_slice(&publisher.asset("kernel-params-0.1.0.manifest.json")).unwrap();
    assert_eq!(
        manifest["capabilities"]["read"],
        serde_json::json!(["/proc/sys"])
    );
    assert_eq!(manifest["source"]["commit"], "0123abc");

    let server = registry(&publisher, vec![]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");
    let job = out.job("kernel-params");
    let digest = manifest["component"]["sha256"].as_str().unwrap();
    assert_eq!(job["id"]["digest"], format!("sha256:{digest}"));
    assert!(
        job["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("blobs/sha256/{digest}.wasm")),
        "{job}"
    );
    assert_eq!(
        store_files(&agent, "blobs/sha256"),
        vec![format!("{digest}.wasm")]
    );
    let compiled_files = store_files(&agent, "compiled");
    assert_eq!(
        compiled_files.len(),
        2,
        "the compiled component is cached, with its recorded digest: {compiled_files:?}"
    );
    assert!(compiled_files[0].ends_with(".cwasm") && compiled_files[1].ends_with(".cwasm.sha256"));
    let requests = server.requests.lock().unwrap().len();
    assert_eq!(requests, 3, "manifest, signature, component");

    let compiled = agent
        .state_dir()
        .join("plugins/compiled")
        .join(&store_files(&agent, "compiled")[0]);
    let compiled_at = std::fs::metadata(&compiled).unwrap().modified().unwrap();

    // The registry goes away: the store serves the next run, and the
    // precompiled artifact spares the compilation.
    drop(server);
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");
    assert_eq!(
        std::fs::metadata(&compiled).unwrap().modified().unwrap(),
        compiled_at,
        "not recompiled"
    );

    // Operators' store commands.
    let listed = String::from_utf8_lossy(&agent.command(&["plugins", "list"]).stdout).into_owned();
    assert_eq!(listed.trim(), "kernel-params@0.1.0");
    let verified = agent.command(&["plugins", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
    assert!(
        String::from_utf8_lossy(&verified.stdout)
            .contains(&format!("ok      kernel-params@0.1.0 sha256:{digest}"))
    );

    // Native code planted in the precompiled artifact: `plugins verify`
    // reports it, and a run refuses to load it and recompiles.
    let mut planted = std::fs::read(&compiled).unwrap();
    let middle = planted.len() / 2;
    planted[middle] ^= 0xff;
    std::fs::write(&compiled, &planted).unwrap();
    let verified = agent.command(&["plugins", "verify"]);
    assert_eq!(verified.status.code(), Some(1), "{verified:?}");
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("does not match its recorded SHA-256"),
        "{verified:?}"
    );
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");
    assert!(
        out.stderr
            .contains("refusing a precompiled artifact and recompiling"),
        "{}",
        out.stderr
    );
    assert_ne!(
        std::fs::read(&compiled).unwrap(),
        planted,
        "recompiled and replaced"
    );
    assert!(agent.command(&["plugins", "verify"]).status.success());

    // A component altered in the store is detected by `plugins verify`.
    let blob = agent
        .state_dir()
        .join(format!("plugins/blobs/sha256/{digest}.wasm"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let verified = agent.command(&["plugins", "verify"]);
    assert_eq!(verified.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("does not match the signed manifest"),
        "{verified:?}"
    );
}

#[test]
fn concurrent_fetches_leave_one_consistent_store() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let server = registry(&publisher, vec![]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    let config = agent.write();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(assessment_e2e::runtime_bin())
                .args(["plugins", "fetch", "--config"])
                .arg(&config)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(store_files(&agent, "blobs/sha256").len(), 1);
    assert!(
        store_files(&agent, "tmp").is_empty(),
        "no temporary file is left behind"
    );
    let verified = agent.command(&["plugins", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
}

#[test]
fn gc_removes_what_is_no_longer_configured() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let server = registry(&publisher, vec![]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    let fetched = ok(agent.command(&["plugins", "fetch"]));
    assert!(fetched.contains("(compiled)"), "{fetched}");
    assert_eq!(store_files(&agent, "blobs/sha256").len(), 1);
    // Fetching compiled it ahead of its first run.
    assert_eq!(store_files(&agent, "compiled").len(), 2);
    // Still configured: nothing to collect.
    let kept = ok(agent.command(&["plugins", "gc"]));
    assert!(
        kept.contains("removed 0 other file(s)") && !kept.contains("removed release"),
        "{kept}"
    );
    assert_eq!(store_files(&agent, "blobs/sha256").len(), 1);
    // No longer configured: everything goes.
    let unconfigured = Agent::new()
        .runtime(&format!("trusted_keys = [{:?}]", publisher.public_key))
        .policy("dev_plain_http_registries = true");
    let config = unconfigured.write();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &unconfigured.state_dir().display().to_string(),
        &agent.state_dir().display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(assessment_e2e::runtime_bin())
        .args(["plugins", "gc", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let removed = ok(out);
    assert!(
        removed.contains("removed release kernel-params@0.1.0"),
        "{removed}"
    );
    assert!(store_files(&agent, "blobs/sha256").is_empty());
    assert!(store_files(&agent, "releases").is_empty());
}

#[test]
fn a_flipped_byte_in_the_component_is_refused() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let mut component = publisher.asset("kernel-params-0.1.0.wasm");
    component[100] ^= 0x01;
    let server = registry(
        &publisher,
        vec![(
            "/releases/kernel-params/v0.1.0/kernel-params-0.1.0.wasm".into(),
            Reply::bytes(component),
        )],
    );
    let agent = agent_for(&publisher, &server, "0.1.0");
    assert_refused(
        &agent.run(),
        &agent,
        "verify",
        &["does not match the signed manifest"],
    );
}

#[test]
fn a_manifest_signed_by_an_unknown_key_is_refused() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let impostor = Publisher::new();
    let server = registry(&publisher, vec![]);
    let agent = agent_for(&impostor, &server, "0.1.0");
    assert_refused(
        &agent.run(),
        &agent,
        "verify",
        &["not by the trusted key", "runtime.trusted_keys"],
    );
}

#[test]
fn an_older_version_served_in_place_of_the_configured_one_is_refused() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let base = "/releases/kernel-params/v0.2.0";
    let server = registry(
        &publisher,
        vec![
            (
                format!("{base}/kernel-params-0.2.0.manifest.json"),
                Reply::bytes(publisher.asset("kernel-params-0.1.0.manifest.json")),
            ),
            (
                format!("{base}/kernel-params-0.2.0.manifest.json.minisig"),
                Reply::bytes(publisher.asset("kernel-params-0.1.0.manifest.json.minisig")),
            ),
        ],
    );
    let agent = agent_for(&publisher, &server, "0.2.0");
    assert_refused(
        &agent.run(),
        &agent,
        "verify",
        &["carries a manifest for version 0.1.0", "rollback"],
    );
}

#[test]
fn a_manifest_naming_another_plugin_is_refused() {
    let publisher = Publisher::new();
    publisher.package(
        &guest("sshd_hardening"),
        &repo().join("plugins-examples/sshd-hardening"),
        "0.1.0",
    );
    let base = "/releases/kernel-params/v0.1.0";
    let server = registry(
        &publisher,
        vec![
            (
                format!("{base}/kernel-params-0.1.0.manifest.json"),
                Reply::bytes(publisher.asset("sshd-hardening-0.1.0.manifest.json")),
            ),
            (
                format!("{base}/kernel-params-0.1.0.manifest.json.minisig"),
                Reply::bytes(publisher.asset("sshd-hardening-0.1.0.manifest.json.minisig")),
            ),
        ],
    );
    let agent = agent_for(&publisher, &server, "0.1.0");
    assert_refused(
        &agent.run(),
        &agent,
        "verify",
        &["carries a manifest for plugin `sshd-hardening`"],
    );
}

#[test]
fn a_truncated_download_is_refused() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let component = publisher.asset("kernel-params-0.1.0.wasm");
    let half = component.len() / 2;
    let server = registry(
        &publisher,
        vec![(
            "/releases/kernel-params/v0.1.0/kernel-params-0.1.0.wasm".into(),
            Reply::Truncated(component, half),
        )],
    );
    let agent = agent_for(&publisher, &server, "0.1.0");
    assert_refused(&agent.run(), &agent, "fetch", &["kernel-params-0.1.0.wasm"]);
}

#[test]
fn a_server_that_hangs_times_out() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let server = registry(
        &publisher,
        vec![(
            "/releases/kernel-params/v0.1.0/kernel-params-0.1.0.manifest.json".into(),
            Reply::Hang,
        )],
    );
    let agent = agent_for(&publisher, &server, "0.1.0");
    let started = std::time::Instant::now();
    let out = agent.run();
    assert_refused(&out, &agent, "fetch", &["timed out"]);
    // 2 s timeout, one retry after a short backoff.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

const COMPONENT_PATH: &str = "/releases/kernel-params/v0.1.0/kernel-params-0.1.0.wasm";

#[test]
fn a_registry_streaming_an_endless_body_is_cut_at_the_signed_size() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let server = registry(&publisher, vec![(COMPONENT_PATH.into(), Reply::Endless)]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    let started = std::time::Instant::now();
    let out = agent.run();
    assert_refused(&out, &agent, "fetch", &["larger than"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_registry_trickling_its_body_times_out() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let component = publisher.asset("kernel-params-0.1.0.wasm");
    let server = registry(
        &publisher,
        vec![(
            COMPONENT_PATH.into(),
            Reply::Trickle(component, std::time::Duration::from_millis(100)),
        )],
    );
    let agent = agent_for(&publisher, &server, "0.1.0");
    let started = std::time::Instant::now();
    let out = agent.run();
    assert_refused(&out, &agent, "fetch", &["timed out"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_registry_announcing_a_wrong_length_is_refused() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let component = publisher.asset("kernel-params-0.1.0.wasm");
    // A length shorter than the body: the client takes what was announced,
    // which is not the signed component.
    let short = component.len() - 100;
    let server = registry(
        &publisher,
        vec![(COMPONENT_PATH.into(), Reply::WrongLength(component, short))],
    );
    let agent = agent_for(&publisher, &server, "0.1.0");
    let out = agent.run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let kind = out.error_kind("kernel-params").unwrap_or_default();
    assert!(
        kind == "verify" || kind == "fetch",
        "{:#}",
        out.job("kernel-params")
    );
    assert!(out.findings("kernel-params").is_empty());
    assert!(
        store_files(&agent, "blobs/sha256").is_empty(),
        "nothing stored"
    );
}

#[test]
fn a_registry_failing_with_500_then_recovering_is_retried() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let dist = publisher.dist();
    let failures = Arc::new(AtomicUsize::new(0));
    let server = {
        let failures = failures.clone();
        Server::start(move |req: &Request| {
            if req.target == COMPONENT_PATH && failures.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::Full(503, "text/plain", b"try later".to_vec());
            }
            let asset = req.target.rsplit('/').next().unwrap_or_default();
            match std::fs::read(dist.join(asset)) {
                Ok(bytes) => Reply::bytes(bytes),
                Err(_) => Reply::not_found(),
            }
        })
    };
    let agent = agent_for(&publisher, &server, "0.1.0");
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");
    assert!(
        failures.load(Ordering::SeqCst) >= 2,
        "retried after the 503"
    );
}

#[test]
fn a_registry_redirecting_within_the_development_registry_is_followed() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let server = registry(&publisher, vec![]);
    let redirector = {
        let target = server.url();
        Server::start(move |req: &Request| Reply::Redirect(format!("{target}{}", req.target)))
    };
    let agent = agent_for(&publisher, &redirector, "0.1.0");
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");
}

#[test]
fn a_full_disk_under_the_plugin_store_fails_the_plugin_clearly_and_stores_nothing() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let server = registry(&publisher, vec![]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    // Far smaller than the component.
    let Some(_disk) = assessment_e2e::TmpfsMount::new(&agent.state_dir().join("plugins"), 32)
    else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs");
        return;
    };
    let out = agent.run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.error_kind("kernel-params").as_deref(),
        Some("host"),
        "{:#}",
        out.job("kernel-params")
    );
    let message = out.error_message("kernel-params");
    assert!(message.contains("No space left"), "{message}");
    assert!(
        store_files(&agent, "releases").is_empty(),
        "no release without its component"
    );
    assert!(
        store_files(&agent, "tmp").is_empty(),
        "no partial file left"
    );
}

#[test]
fn an_oversized_asset_is_refused() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let mut component = publisher.asset("kernel-params-0.1.0.wasm");
    component.extend(std::iter::repeat_n(0u8, 1 << 20));
    let server = registry(
        &publisher,
        vec![(
            "/releases/kernel-params/v0.1.0/kernel-params-0.1.0.wasm".into(),
            Reply::bytes(component),
        )],
    );
    let agent = agent_for(&publisher, &server, "0.1.0");
    assert_refused(&agent.run(), &agent, "fetch", &["larger than"]);
}

#[test]
fn grants_are_narrowed_to_the_signed_declaration() {
    let publisher = Publisher::new();
    publisher.package(
        &guest("test_plugin_probe"),
        &repo().join("tests/test-plugins/probe"),
        "0.1.0",
    );
    let server = registry(&publisher, vec![]);
    let agent = Agent::new()
        .runtime(&format!("trusted_keys = [{:?}]", publisher.public_key))
        .policy("dev_plain_http_registries = true");
    std::fs::create_dir_all(agent.root().join("etc/ssh")).unwrap();
    std::fs::write(agent.root().join("etc/ssh/sshd_config"), "x\n").unwrap();
    std::fs::write(agent.root().join("etc/hostname"), "h\n").unwrap();
    let out = agent
        .registry_plugin(
            "probe",
            "0.1.0",
            &format!("{}/releases", server.url()),
            "config = { actions = [\"read-file:/etc/ssh/sshd_config\", \"read-file:/etc/hostname\", \"env-var:HOME\"] }\n\
             grants = { read = [\"/etc\"], env = [\"HOME\", \"PATH\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let statuses: Vec<String> = out
        .findings("probe")
        .iter()
        .map(|f| f["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        vec!["pass", "error", "error"],
        "{:#}",
        out.job("probe")
    );
    assert!(
        out.stderr
            .contains("granted but not declared in the signed manifest"),
        "{}",
        out.stderr
    );
}

#[test]
fn audit_reports_on_every_example_plugin_and_rejects_bad_components() {
    let dir = tempfile::tempdir().unwrap();
    for plugin in ["sshd_hardening", "file_permissions", "kernel_params"] {
        let json = dir.path().join(format!("{plugin}.json"));
        let text = dir.path().join(format!("{plugin}.txt"));
        ok(tool(&[
            "audit",
            guest(plugin).to_str().unwrap(),
            "--json-report",
            json.to_str().unwrap(),
            "--text-report",
            text.to_str().unwrap(),
        ]));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["verdict"], "accepted", "{plugin}: {report:#}");
        assert_eq!(report["abi_version"], capability_model::abi::LATEST);
        assert!(
            std::fs::read_to_string(&text)
                .unwrap()
                .contains("verdict: accepted")
        );
    }

    let rejected = |args: &[&str], rule: &str| {
        let out = tool(args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(&format!("REJECT {rule}:")), "{rule}: {text}");
    };
    let future = guest("test_plugin_future_abi");
    rejected(&["audit", future.to_str().unwrap()], "abi-version");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    rejected(&["audit", core.to_str().unwrap()], "component");
    let kp = guest("kernel_params");
    rejected(
        &["audit", kp.to_str().unwrap(), "--max-size", "1000"],
        "size",
    );

    // A tag whose version is not the crate's cannot be packaged.
    let publisher = Publisher::new();
    let sk = publisher.dir.path().join("publisher.key");
    let out = tool(&[
        "package",
        kp.to_str().unwrap(),
        "--plugin-dir",
        kernel_params_dir().to_str().unwrap(),
        "--version",
        "9.9.9",
        "--out",
        dir.path().join("dist").to_str().unwrap(),
        "--secret-key",
        sk.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the crate's version is 0.1.0, not 9.9.9"),
        "{out:?}"
    );

    // A plugin that reads the system but declares nothing cannot be packaged.
    let undeclared = dir.path().join("undeclared");
    std::fs::create_dir_all(&undeclared).unwrap();
    std::fs::write(
        undeclared.join("Cargo.toml"),
        "[package]\nname = \"probe\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let publisher = Publisher::new();
    let sk = publisher.dir.path().join("publisher.key");
    let out = tool(&[
        "package",
        guest("test_plugin_probe").to_str().unwrap(),
        "--plugin-dir",
        undeclared.to_str().unwrap(),
        "--out",
        dir.path().join("dist").to_str().unwrap(),
        "--secret-key",
        sk.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REJECT undeclared-capability"),
        "{out:?}"
    );
    assert!(
        !dir.path().join("dist/probe-0.1.0.manifest.json").exists(),
        "nothing is written for a rejected plugin"
    );
}

#[test]
fn publish_uploads_release_assets_and_never_overwrites() {
    let publisher = Publisher::new();
    publisher.package(&guest("kernel_params"), &kernel_params_dir(), "0.1.0");
    let uploaded = Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let created = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let server = {
        let uploaded = uploaded.clone();
        let created = created.clone();
        Server::start(move |req: &Request| {
            let auth_ok =
                req.headers.get("authorization").map(String::as_str) == Some("Bearer test-token");
            if !auth_ok {
                return Reply::json(401, serde_json::json!({"message": "Bad credentials"}));
            }
            let port = req.headers.get("host").cloned().unwrap_or_default();
            let assets: Vec<serde_json::Value> = uploaded
                .lock()
                .unwrap()
                .iter()
                .map(|(n, _)| serde_json::json!({ "name": n }))
                .collect();
            let release = serde_json::json!({
                "id": 1,
                "html_url": "https://github.com/acme/plugins/releases/tag/kernel-params/v0.1.0",
                "upload_url": format!("http://{port}/uploads/repos/acme/plugins/releases/1/assets{{?name,label}}"),
                "assets": assets,
            });
            match (req.method.as_str(), req.target.as_str()) {
                ("GET", "/repos/acme/plugins/releases/tags/kernel-params%2Fv0.1.0")
                    if assets.is_empty() =>
                {
                    Reply::not_found()
                }
                ("GET", "/repos/acme/plugins/releases/tags/kernel-params%2Fv0.1.0") => {
                    Reply::json(200, release)
                }
                ("POST", "/repos/acme/plugins/releases") => {
                    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                    created.lock().unwrap().push(body);
                    Reply::json(201, release)
                }
                ("POST", t)
                    if t.starts_with("/uploads/repos/acme/plugins/releases/1/assets?name=") =>
                {
                    let name = t.rsplit('=').next().unwrap().to_string();
                    uploaded.lock().unwrap().push((name, req.body.clone()));
                    Reply::json(201, serde_json::json!({}))
                }
                _ => Reply::not_found(),
            }
        })
    };
    let assets: Vec<String> = [
        "kernel-params-0.1.0.wasm",
        "kernel-params-0.1.0.manifest.json",
        "kernel-params-0.1.0.manifest.json.minisig",
    ]
    .iter()
    .map(|a| publisher.dist().join(a).display().to_string())
    .collect();
    // The capability diff's Markdown, as the release workflow passes it.
    let notes = publisher.dir.path().join("capability-diff.md");
    std::fs::write(&notes, "### Capabilities\n\n- read + /proc/sys\n").unwrap();
    let publish = |token: &str| {
        let mut cmd = Command::new(registry_bin());
        cmd.arg("publish")
            .args(&assets)
            .args([
                "--repo",
                "acme/plugins",
                "--tag",
                "kernel-params/v0.1.0",
                "--api-url",
                &server.url(),
                "--notes",
                notes.to_str().unwrap(),
            ])
            .env("GITHUB_TOKEN", token);
        cmd.output().unwrap()
    };
    assert!(!publish("wrong").status.success(), "bad credentials fail");
    let printed = ok(publish("test-token"));
    assert!(printed.contains("published 3 asset(s)"), "{printed}");
    {
        let created = created.lock().unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0]["tag_name"], "kernel-params/v0.1.0");
        assert_eq!(
            created[0]["body"],
            "### Capabilities\n\n- read + /proc/sys\n"
        );
    }
    {
        let uploaded = uploaded.lock().unwrap();
        assert_eq!(uploaded.len(), 3);
        assert_eq!(uploaded[0].0, "kernel-params-0.1.0.wasm");
        assert_eq!(uploaded[0].1, publisher.asset("kernel-params-0.1.0.wasm"));
        assert_eq!(
            uploaded[2].1,
            publisher.asset("kernel-params-0.1.0.manifest.json.minisig")
        );
    }
    let again = publish("test-token");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("immutable"),
        "{again:?}"
    );
}

#[test]
fn a_local_component_is_compiled_once_per_content() {
    // A plugin given by `path` is compiled on its first run only: later
    // runs load the precompiled artifact, keyed by the digest of the file's
    // bytes; an edited file is compiled again, and `plugins gc` keeps only
    // the artifact of the file as it is now.
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("kernel_params.wasm");
    std::fs::copy(guest("kernel_params"), &component).unwrap();
    let agent = Agent::new().plugin("kernel-params", &component, "");
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let compiled = store_files(&agent, "compiled");
    assert_eq!(compiled.len(), 2, "{compiled:?}");
    let digest = sha256_hex(&std::fs::read(&component).unwrap());
    assert!(
        compiled[0].starts_with(&format!("{digest}-")),
        "{compiled:?}"
    );
    let artifact = agent
        .state_dir()
        .join("plugins/compiled")
        .join(&compiled[0]);
    let compiled_at = std::fs::metadata(&artifact).unwrap().modified().unwrap();

    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::metadata(&artifact).unwrap().modified().unwrap(),
        compiled_at,
        "not recompiled"
    );
    // The artifact is what the second run loaded: a damaged one is noticed
    // and replaced.
    let mut damaged = std::fs::read(&artifact).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&artifact, &damaged).unwrap();
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("refusing a precompiled artifact and recompiling"),
        "{}",
        out.stderr
    );
    assert_ne!(std::fs::read(&artifact).unwrap(), damaged);

    // The file changes (here, to the 0.1.0 build): compiled again, under
    // its own digest.
    std::fs::copy(
        repo().join("tests/fixtures/abi-0.1.0/kernel_params.wasm"),
        &component,
    )
    .unwrap();
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let compiled = store_files(&agent, "compiled");
    assert_eq!(compiled.len(), 4, "{compiled:?}");
    let new_digest = sha256_hex(&std::fs::read(&component).unwrap());
    assert!(
        compiled
            .iter()
            .any(|f| f.starts_with(&format!("{new_digest}-"))),
        "{compiled:?}"
    );
    // Only the artifact of the file as configured now is kept.
    let collected = ok(agent.command(&["plugins", "gc"]));
    assert!(collected.contains("removed 2 other file(s)"), "{collected}");
    let compiled = store_files(&agent, "compiled");
    assert_eq!(compiled.len(), 2, "{compiled:?}");
    assert!(
        compiled[0].starts_with(&format!("{new_digest}-")),
        "{compiled:?}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The host verifies and runs manifests with the audit record and the
/// toolchain `package` now writes (a flagged release, reviewed, with its
/// signed audit report), and manifests made before they existed (without
/// either field), signed as they were then.
#[test]
fn manifests_with_and_without_the_audit_record_are_verified_and_run() {
    let publisher = Publisher::new();
    let component = guest("kernel_params");
    let sk = publisher.dir.path().join("publisher.key");
    // The audit job's report, flagged (a capability widening).
    let report = publisher.dir.path().join("audit.json");
    let out = tool(&[
        "audit",
        component.to_str().unwrap(),
        "--plugin-dir",
        kernel_params_dir().to_str().unwrap(),
        "--json-report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut flagged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    flagged["verdict"] = "flagged".into();
    flagged["findings"] = serde_json::json!([{ "rule": "capability-widening", "level": "warn", "message": "read + /proc/sys" }]);
    std::fs::write(&report, serde_json::to_vec_pretty(&flagged).unwrap()).unwrap();
    ok(tool(&[
        "package",
        component.to_str().unwrap(),
        "--plugin-dir",
        kernel_params_dir().to_str().unwrap(),
        "--out",
        publisher.dist().to_str().unwrap(),
        "--secret-key",
        sk.to_str().unwrap(),
        "--audit-report",
        report.to_str().unwrap(),
        "--reviewed",
        "--toolchain",
        "rustc=rustc 1.95.0 (59807616e 2026-04-14)",
    ]));
    let manifest_name = "kernel-params-0.1.0.manifest.json";
    let manifest: serde_json::Value =
        serde_json::from_slice(&publisher.asset(manifest_name)).unwrap();
    assert_eq!(manifest["audit"]["verdict"], "flagged");
    assert_eq!(manifest["audit"]["reviewed"], true);
    assert_eq!(
        manifest["toolchain"]["rustc"],
        "rustc 1.95.0 (59807616e 2026-04-14)"
    );

    let server = registry(&publisher, vec![]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");
    drop(server);

    // The same release as package wrote it before: no audit record, no
    // toolchain, signed by the same key.
    let mut old = manifest.clone();
    let object = old.as_object_mut().unwrap();
    object.remove("audit");
    object.remove("toolchain");
    let mut bytes = serde_json::to_vec_pretty(&old).unwrap();
    bytes.push(b'\n');
    std::fs::write(publisher.dist().join(manifest_name), &bytes).unwrap();
    ok(tool(&[
        "sign",
        publisher.dist().join(manifest_name).to_str().unwrap(),
        "--secret-key",
        sk.to_str().unwrap(),
    ]));
    let server = registry(&publisher, vec![]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "pass");

    // A manifest claiming a flagged release nobody reviewed is refused,
    // signature or not.
    let mut unreviewed = manifest.clone();
    unreviewed["audit"]["reviewed"] = false.into();
    let mut bytes = serde_json::to_vec_pretty(&unreviewed).unwrap();
    bytes.push(b'\n');
    std::fs::write(publisher.dist().join(manifest_name), &bytes).unwrap();
    ok(tool(&[
        "sign",
        publisher.dist().join(manifest_name).to_str().unwrap(),
        "--secret-key",
        sk.to_str().unwrap(),
    ]));
    let server = registry(&publisher, vec![]);
    let agent = agent_for(&publisher, &server, "0.1.0");
    let out = agent.run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_message("kernel-params").contains("not reviewed"),
        "{}",
        out.error_message("kernel-params")
    );
}
