//! The capability diff of a release, end to end: real `plugin-registry`
//! packages and publishes releases to a local release server (GitHub's
//! releases API and download layout), `capability-diff` compares a new
//! release with the latest published one, verified with the registry key;
//! and the real host, upgraded from one registry release to the next, logs
//! what the new version declares beyond the old one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assessment_e2e::http::{Reply, Server};
use assessment_e2e::release_server::ReleaseServer;
use assessment_e2e::{Agent, guest, output_text, registry_bin, registry_tool as tool, repo};
use serde_json::{Value, json};

const REPO: &str = "acme/plugins";

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A publisher: a key pair, and a directory of release assets per version.
struct Publisher {
    dir: tempfile::TempDir,
    public_key: String,
}

impl Publisher {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        ok(tool(&[
            "keygen",
            "--unencrypted",
            "--secret-key",
            dir.path().join("publisher.key").to_str().unwrap(),
            "--public-key",
            dir.path().join("publisher.pub").to_str().unwrap(),
        ]));
        let text = std::fs::read_to_string(dir.path().join("publisher.pub")).unwrap();
        let public_key = text.lines().nth(1).unwrap().to_string();
        Publisher { dir, public_key }
    }

    fn public_key_file(&self) -> PathBuf {
        self.dir.path().join("publisher.pub")
    }

    fn dist(&self, version: &str) -> PathBuf {
        self.dir.path().join("dist").join(version)
    }

    /// `package` (audit, describe, sign), then `publish` to `server`.
    fn release(&self, server: &ReleaseServer, component: &Path, plugin_dir: &Path, version: &str) {
        let out = self.dist(version);
        ok(tool(&[
            "package",
            component.to_str().unwrap(),
            "--plugin-dir",
            plugin_dir.to_str().unwrap(),
            "--tag",
            &format!("kernel-params/v{version}"),
            "--out",
            out.to_str().unwrap(),
            "--secret-key",
            self.dir.path().join("publisher.key").to_str().unwrap(),
        ]));
        let assets: Vec<String> = [".wasm", ".manifest.json", ".manifest.json.minisig"]
            .iter()
            .map(|ext| {
                out.join(format!("kernel-params-{version}{ext}"))
                    .display()
                    .to_string()
            })
            .collect();
        ok(Command::new(registry_bin())
            .arg("publish")
            .args(&assets)
            .args([
                "--repo",
                REPO,
                "--tag",
                &format!("kernel-params/v{version}"),
            ])
            .args(["--api-url", &server.url()])
            .env("GITHUB_TOKEN", "test-token")
            .output()
            .unwrap());
    }
}

/// The result of one `capability-diff`.
struct Diffed {
    code: i32,
    report: Option<Value>,
    markdown: Option<String>,
    stdout: String,
    stderr: String,
}

/// `capability-diff COMPONENT --plugin-dir DIR` against `api` (the API and
/// download server), with `key`.
fn capability_diff(component: &Path, plugin_dir: &Path, api: &str, key: &Path) -> Diffed {
    let dir = tempfile::tempdir().unwrap();
    let (json, md) = (dir.path().join("diff.json"), dir.path().join("diff.md"));
    let out = Command::new(registry_bin())
        .arg("capability-diff")
        .arg(component)
        .arg("--plugin-dir")
        .arg(plugin_dir)
        .args(["--repo", REPO, "--api-url", api, "--server-url", api])
        .arg("--public-key")
        .arg(key)
        .arg("--json-report")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap();
    Diffed {
        code: out.status.code().unwrap_or(-1),
        report: std::fs::read(&json)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap()),
        markdown: std::fs::read_to_string(&md).ok(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn kernel_params_dir() -> PathBuf {
    repo().join("plugins-examples/kernel-params")
}

/// A copy of kernel-params' plugin directory at `version`, declaring
/// `read` (what `package` and `capability-diff` read: Cargo.toml's name and
/// version, plugin.toml).
fn kernel_params_at(parent: &Path, version: &str, read: &[&str]) -> PathBuf {
    let dir = parent.join(format!("kernel-params-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"kernel-params\"\nversion = \"{version}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            "description = \"CIS-style checks of kernel parameters\"\n[capabilities]\nread = {read:?}\n"
        ),
    )
    .unwrap();
    dir
}

/// kernel-params' component, describing itself as `version` instead of
/// 0.1.0 (the crate's version is written once in its data), so that the
/// host and `package` accept it as that release.
fn kernel_params_component(parent: &Path, version: &str) -> PathBuf {
    let bytes = std::fs::read(guest("kernel_params")).unwrap();
    let (from, to) = (b"0.1.0".as_slice(), version.as_bytes());
    assert_eq!(
        to.len(),
        from.len(),
        "same length keeps the component valid"
    );
    let at: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the version is written once in the component");
    let mut patched = bytes;
    patched[at[0]..at[0] + to.len()].copy_from_slice(to);
    let path = parent.join(format!("kernel_params-{version}.wasm"));
    std::fs::write(&path, patched).unwrap();
    path
}

#[test]
fn a_widened_release_is_flagged_and_a_narrowed_one_is_noted() {
    let server = ReleaseServer::start(REPO);
    let publisher = Publisher::new();
    publisher.release(
        &server,
        &guest("kernel_params"),
        &kernel_params_dir(),
        "0.1.0",
    );
    // Releases that are not the baseline of 0.2.0: another plugin's, a
    // draft, a higher version and a lower one (none has assets: choosing
    // one would fail the download).
    server.add_release("sshd-hardening/v9.0.0", false, vec![]);
    server.add_release("kernel-params/v0.1.9", true, vec![]);
    server.add_release("kernel-params/v0.3.0", false, vec![]);
    server.add_release("kernel-params/v0.0.1", false, vec![]);
    let work = tempfile::tempdir().unwrap();
    let component = guest("kernel_params");
    let key = publisher.public_key_file();

    // Broader (/proc/sys → /proc) and a new path: widened, exit 3.
    let widened = kernel_params_at(work.path(), "0.2.0", &["/proc", "/etc/sysctl.d"]);
    let d = capability_diff(&component, &widened, &server.url(), &key);
    assert_eq!(d.code, 3, "{}{}", d.stdout, d.stderr);
    let report = d.report.unwrap();
    assert_eq!(report["schema"], "assessment-runtime/capability-diff@1");
    assert_eq!(report["plugin"], "kernel-params");
    assert_eq!(report["version"], "0.2.0");
    assert_eq!(report["previous_version"], "0.1.0");
    assert_eq!(report["previous_tag"], "kernel-params/v0.1.0");
    assert_eq!(report["verdict"], "widened");
    assert_eq!(report["flagged"], true);
    assert_eq!(
        report["widenings"],
        json!([
            {"kind": "read", "old": null, "new": "/etc/sysctl.d"},
            {"kind": "read", "old": "/proc/sys", "new": "/proc"},
        ])
    );
    assert_eq!(report["narrowings"], json!([]));
    let md = d.markdown.unwrap();
    assert!(
        md.starts_with("### Capabilities")
            && md.contains("**Widened** (flagged for review)")
            && md.contains("- `read`: `/proc/sys` → `/proc`")
            && md.contains("- `read`: `/etc/sysctl.d` (new)"),
        "{md}"
    );
    assert!(
        d.stdout
            .contains("kernel-params 0.2.0: widened against kernel-params 0.1.0")
            && d.stdout.contains("+ read /proc/sys → /proc")
            && d.stdout.contains("flagged for review"),
        "{}",
        d.stdout
    );

    // A path narrowed to one below it: narrowed, exit 0.
    let narrowed = kernel_params_at(work.path(), "0.2.1", &["/proc/sys/kernel"]);
    let d = capability_diff(&component, &narrowed, &server.url(), &key);
    assert_eq!(d.code, 0, "{}{}", d.stdout, d.stderr);
    let report = d.report.unwrap();
    assert_eq!(report["verdict"], "narrowed");
    assert_eq!(report["flagged"], false);
    assert_eq!(report["widenings"], json!([]));
    assert_eq!(
        report["narrowings"],
        json!([{"kind": "read", "old": "/proc/sys", "new": "/proc/sys/kernel"}])
    );
    assert!(d.markdown.unwrap().contains("**Narrowed**"));

    // The same declaration: unchanged, exit 0.
    let same = kernel_params_at(work.path(), "0.2.2", &["/proc/sys"]);
    let d = capability_diff(&component, &same, &server.url(), &key);
    assert_eq!(d.code, 0, "{}{}", d.stdout, d.stderr);
    assert_eq!(d.report.unwrap()["verdict"], "unchanged");

    // Only the baseline's assets were downloaded, as the host downloads them.
    let downloads: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .filter(|t| t.contains("/releases/download/"))
        .collect();
    assert!(
        downloads
            .iter()
            .all(|t| t.starts_with("/acme/plugins/releases/download/kernel-params/v0.1.0/")),
        "{downloads:?}"
    );
}

#[test]
fn a_tampered_previous_release_is_an_error() {
    let server = ReleaseServer::start(REPO);
    let publisher = Publisher::new();
    publisher.release(
        &server,
        &guest("kernel_params"),
        &kernel_params_dir(),
        "0.1.0",
    );
    let work = tempfile::tempdir().unwrap();
    let next = kernel_params_at(work.path(), "0.2.0", &["/proc/sys"]);
    let key = publisher.public_key_file();

    // Signed by another key: refused, whatever it declares.
    let stranger = Publisher::new();
    let d = capability_diff(
        &guest("kernel_params"),
        &next,
        &server.url(),
        &stranger.public_key_file(),
    );
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    assert!(d.report.is_none() && d.markdown.is_none(), "no report");
    assert!(
        d.stderr
            .contains("the previous release kernel-params/v0.1.0 does not verify"),
        "{}",
        d.stderr
    );

    // The manifest changed after signing (it declared less, so the new
    // release would look like no widening): refused.
    let name = "kernel-params-0.1.0.manifest.json";
    let signed = std::fs::read_to_string(publisher.dist("0.1.0").join(name)).unwrap();
    let forged = signed.replace("\"/proc/sys\"", "\"/\"");
    assert_ne!(forged, signed);
    server.replace_asset("kernel-params/v0.1.0", name, forged.into_bytes());
    let d = capability_diff(&guest("kernel_params"), &next, &server.url(), &key);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    assert!(d.report.is_none(), "no report for an unverified baseline");
    assert!(
        d.stderr.contains("does not verify with the registry key")
            && d.stderr.contains(&format!(
                "{}/acme/plugins/releases/download/kernel-params/v0.1.0/{name}",
                server.url()
            )),
        "{}",
        d.stderr
    );
}

#[test]
fn a_registry_without_a_release_of_the_plugin_is_a_first_release() {
    let server = ReleaseServer::start(REPO);
    server.add_release("sshd-hardening/v0.1.0", false, vec![]);
    let publisher = Publisher::new();
    let d = capability_diff(
        &guest("kernel_params"),
        &kernel_params_dir(),
        &server.url(),
        &publisher.public_key_file(),
    );
    assert_eq!(d.code, 3, "{}{}", d.stdout, d.stderr);
    let report = d.report.unwrap();
    assert_eq!(report["verdict"], "first-release");
    assert_eq!(report["flagged"], true);
    assert_eq!(report["previous_version"], Value::Null);
    let widenings = report["widenings"].as_array().unwrap();
    assert_eq!(
        widenings[0],
        json!({"kind": "read", "old": null, "new": "/proc/sys"})
    );
    assert!(
        widenings.contains(
            &json!({"kind": "import", "old": null, "new": "assessment:plugin/filesystem@0.2.0"})
        ),
        "{widenings:?}"
    );
    assert_eq!(
        widenings.last().unwrap(),
        &json!({"kind": "size_class", "old": null, "new": "1 MiB"})
    );
    assert!(
        d.markdown
            .unwrap()
            .contains("First release of `kernel-params`"),
        "markdown"
    );

    // After packaging, the manifest `package` wrote says the same.
    let out = publisher.dist("0.1.0");
    ok(tool(&[
        "package",
        guest("kernel_params").to_str().unwrap(),
        "--plugin-dir",
        kernel_params_dir().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--secret-key",
        publisher.dir.path().join("publisher.key").to_str().unwrap(),
    ]));
    let manifest = out.join("kernel-params-0.1.0.manifest.json");
    let with_manifest = |component: &Path| {
        Command::new(registry_bin())
            .arg("capability-diff")
            .arg(component)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--repo", REPO, "--api-url", &server.url()])
            .args(["--server-url", &server.url()])
            .arg("--public-key")
            .arg(publisher.public_key_file())
            .env_remove("GITHUB_TOKEN")
            .output()
            .unwrap()
    };
    let by_manifest = with_manifest(&guest("kernel_params"));
    assert_eq!(
        by_manifest.status.code(),
        Some(3),
        "{}",
        output_text(&by_manifest)
    );
    assert_eq!(String::from_utf8_lossy(&by_manifest.stdout), d.stdout);
    // Another component than the manifest's: refused.
    let work = tempfile::tempdir().unwrap();
    let other = with_manifest(&kernel_params_component(work.path(), "0.2.0"));
    assert_eq!(other.status.code(), Some(2), "{}", output_text(&other));
    assert!(
        output_text(&other).contains("pass the component it was written for"),
        "{}",
        output_text(&other)
    );
}

#[test]
fn network_errors_name_the_url_and_are_never_a_first_release() {
    let publisher = Publisher::new();
    let key = publisher.public_key_file();
    // A registry that fails (after retries).
    let failing = Server::start(|_| Reply::Full(500, "text/plain", b"boom".to_vec()));
    let d = capability_diff(
        &guest("kernel_params"),
        &kernel_params_dir(),
        &failing.url(),
        &key,
    );
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    assert!(d.report.is_none());
    assert!(
        d.stderr.contains(&format!(
            "{}/repos/acme/plugins/releases?per_page=100&page=1: HTTP 500",
            failing.url()
        )),
        "{}",
        d.stderr
    );
    assert_eq!(
        failing.requests.lock().unwrap().len(),
        3,
        "tried three times"
    );
    // No such repository: an error, not "no release".
    let missing = Server::start(|_| Reply::not_found());
    let d = capability_diff(
        &guest("kernel_params"),
        &kernel_params_dir(),
        &missing.url(),
        &key,
    );
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    assert!(d.stderr.contains("no such repository"), "{}", d.stderr);
    // Nothing listening.
    let closed = format!("http://127.0.0.1:{}", assessment_e2e::free_port());
    let d = capability_diff(&guest("kernel_params"), &kernel_params_dir(), &closed, &key);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    assert!(
        d.stderr
            .contains(&format!("{closed}/repos/acme/plugins/releases")),
        "{}",
        d.stderr
    );
    // A listed release whose manifest cannot be downloaded.
    let server = ReleaseServer::start(REPO);
    server.add_release("kernel-params/v0.0.9", false, vec![]);
    let d = capability_diff(
        &guest("kernel_params"),
        &kernel_params_dir(),
        &server.url(),
        &key,
    );
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    assert!(
        d.stderr
            .contains("kernel-params/v0.0.9/kernel-params-0.0.9.manifest.json: HTTP 404"),
        "{}",
        d.stderr
    );
}

/// The JSON log events on stderr that have `field` = `value`.
fn events_with(stderr: &str, field: &str, value: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[field] == value)
        .collect()
}

/// `run --once` of `config` with JSON logs.
fn run_json_logs(config: &Path) -> (i32, String) {
    let out = Command::new(assessment_e2e::runtime_bin())
        .args(["--log-format", "json", "run", "--once", "--output", "json"])
        .arg("--config")
        .arg(config)
        .env("ASSESSMENT_RUNTIME_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_host_logs_what_an_upgrade_declares_beyond_the_old_version() {
    let server = ReleaseServer::start(REPO);
    let publisher = Publisher::new();
    let work = tempfile::tempdir().unwrap();
    publisher.release(
        &server,
        &guest("kernel_params"),
        &kernel_params_dir(),
        "0.1.0",
    );
    // 0.2.0 declares a path more; 0.3.0 drops it again.
    publisher.release(
        &server,
        &kernel_params_component(work.path(), "0.2.0"),
        &kernel_params_at(work.path(), "0.2.0", &["/proc/sys", "/etc/sysctl.d"]),
        "0.2.0",
    );
    publisher.release(
        &server,
        &kernel_params_component(work.path(), "0.3.0"),
        &kernel_params_at(work.path(), "0.3.0", &["/proc/sys"]),
        "0.3.0",
    );
    let agent = Agent::new()
        .with_tree(&kernel_params_dir().join("fixtures/good"))
        .runtime(&format!("trusted_keys = [{:?}]", publisher.public_key))
        .policy("dev_plain_http_registries = true")
        .registry_plugin(
            "kernel-params",
            "0.1.0",
            &server.download_base(),
            "grants = { read = [\"/proc/sys\"] }",
        );
    let config = agent.write();
    let (code, stderr) = run_json_logs(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        events_with(&stderr, "kind", "read").is_empty(),
        "a first install is no upgrade: {stderr}"
    );

    let text = std::fs::read_to_string(&config).unwrap();
    let upgrade = |from: &str, to: &str| {
        let text = text.replace(
            &format!("version = \"{from}\""),
            &format!("version = \"{to}\""),
        );
        std::fs::write(&config, text).unwrap();
        let (code, stderr) = run_json_logs(&config);
        assert_eq!(code, 0, "{stderr}");
        stderr
    };
    let stderr = upgrade("0.1.0", "0.2.0");
    let widened = events_with(&stderr, "kind", "read");
    assert_eq!(widened.len(), 1, "{stderr}");
    let e = &widened[0];
    assert_eq!(e["level"], "WARN", "{e}");
    assert_eq!(e["plugin"], "kernel-params");
    assert_eq!(e["old_version"], "0.1.0");
    assert_eq!(e["new_version"], "0.2.0");
    assert_eq!(e["new"], "/etc/sysctl.d");
    assert!(e.get("old").is_none(), "a new path has no old one: {e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("read /etc/sysctl.d (new)"),
        "{e}"
    );

    let stderr = upgrade("0.1.0", "0.3.0");
    let narrowed = events_with(&stderr, "kind", "read");
    assert_eq!(narrowed.len(), 1, "{stderr}");
    let e = &narrowed[0];
    assert_eq!(e["level"], "INFO", "{e}");
    assert_eq!(
        (&e["old_version"], &e["new_version"]),
        (&json!("0.2.0"), &json!("0.3.0")),
        "compared with the highest stored version below it"
    );
    assert_eq!(e["old"], "/etc/sysctl.d");
    assert!(e.get("new").is_none(), "{e}");
}
