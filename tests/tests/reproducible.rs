//! Reproducible plugin builds: the release signs the audited component, and
//! the audit job also rebuilds it elsewhere and requires the same digest.
//! Here the smallest example plugin is built as plugin-release.yml builds
//! it ("Build the component"), audited, and rebuilt by the workflow's
//! "Rebuild elsewhere and compare with the audited digest" step, as
//! written: from a source copy at another path, into another clean target
//! directory, with cargo's home at another path. Both components must have
//! the same SHA-256, and the step's `plugin-registry check-digest` passes.
//! Two release builds of a plugin and its dependencies: slow, so nextest
//! starts it early (.config/nextest.toml).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assessment_e2e::{output_text, registry_bin, repo};
use sha2::{Digest, Sha256};

/// The step named `name` of plugin-release.yml: its `run: |` script.
fn step_script(name: &str) -> String {
    let text =
        std::fs::read_to_string(repo().join(".github/workflows/plugin-release.yml")).unwrap();
    assessment_e2e::workflow::step_script(&text, name)
}

/// The guest workspace's tracked files (sources, Cargo.lock, the WIT the
/// SDK links to), copied to `to`: a clean checkout at another path.
fn copy_sources(to: &Path) {
    let out = Command::new("git")
        .current_dir(repo())
        .args([
            "ls-files",
            "-z",
            "sdk",
            "wit",
            "plugins-examples",
            "tests/test-plugins",
            "bench/plugin",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    for path in out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let rel = Path::new(std::str::from_utf8(path).unwrap());
        let from = repo().join(rel);
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let meta = std::fs::symlink_metadata(&from).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &dest).unwrap();
        } else if meta.is_file() {
            std::fs::copy(&from, &dest).unwrap();
        }
    }
}

/// A step's script run as GitHub runs it, in `dir`, with plugin-registry of
/// this build on the PATH and none of the variables cargo set for this test
/// (they would change the plugin's build).
fn run_step(script: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{}:{}",
        registry_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key.starts_with("RUSTDOC")
        {
            command.env_remove(&*key);
        }
    }
    command
        .env("PATH", path)
        // The crates the suite's own guest build downloaded.
        .env("CARGO_NET_OFFLINE", "true")
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", output_text(&out));
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Cargo's home at another path, sharing the downloaded crates (its
/// registry is a link to this one's): every path of a dependency's
/// sources differs, nothing is downloaded again.
fn other_cargo_home(at: &Path) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    std::fs::create_dir_all(at).unwrap();
    std::os::unix::fs::symlink(home.join("registry"), at.join("registry")).unwrap();
    for config in ["config.toml", "config"] {
        if home.join(config).is_file() {
            std::fs::copy(home.join(config), at.join(config)).unwrap();
        }
    }
    at.to_path_buf()
}

#[test]
fn a_plugin_rebuilt_elsewhere_has_the_audited_digest() {
    const PLUGIN: &str = "plugins-examples/package-hygiene";
    let checkout = tempfile::tempdir().unwrap();
    let source = checkout.path().join("work/plugins");
    copy_sources(&source);
    // The workflow's checkout of plugin-registry's repository.
    std::os::unix::fs::symlink(repo(), source.join(".plugin-registry-src")).unwrap();
    git(&source, &["init", "-q"]);
    std::fs::write(
        source.join(".git/info/exclude"),
        ".plugin-registry-src\naudited/\n",
    )
    .unwrap();
    git(&source, &["add", "-A"]);
    git(&source, &["commit", "-q", "-m", "sources"]);

    // Built as the audit job builds it.
    let runner = tempfile::tempdir().unwrap();
    let out = run_step(
        &step_script("Build the component"),
        &source,
        &[
            ("PLUGIN_DIR", PLUGIN),
            ("TOOLCHAIN", "rust"),
            ("RUNNER_TEMP", runner.path().to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let component = source.join("audited/component.wasm");
    let toolchain =
        std::fs::read_to_string(source.join("audited/component.wasm.toolchain")).unwrap();
    assert!(toolchain.starts_with("rustc=rustc 1."), "{toolchain}");
    let out = Command::new(registry_bin())
        .current_dir(&source)
        .args(["audit", "audited/component.wasm", "--plugin-dir", PLUGIN])
        .args(["--json-report", "audited/audit.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    // Rebuilt by the next step: the sources at another path (git archive),
    // another target directory, another cargo home.
    let elsewhere = tempfile::tempdir().unwrap();
    let runner_b = elsewhere.path().join("a/much/longer/runner-temp");
    let cargo_home = other_cargo_home(&elsewhere.path().join("cargo-home"));
    let out = run_step(
        &step_script("Rebuild elsewhere and compare with the audited digest"),
        &source,
        &[
            ("PLUGIN_DIR", PLUGIN),
            ("TOOLCHAIN", "rust"),
            ("TOOLS", repo().to_str().unwrap()),
            ("RUNNER_TEMP", runner_b.to_str().unwrap()),
            ("CARGO_HOME", cargo_home.to_str().unwrap()),
        ],
    );
    let text = output_text(&out);
    let rebuilt = runner_b.join("rebuild/component.wasm");
    assert!(rebuilt.is_file(), "{text}");
    assert_eq!(
        sha256(&rebuilt),
        sha256(&component),
        "the rebuild differs from the audited component: {text}"
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("the audited component"), "{text}");
    // Both really were built from scratch, apart.
    assert!(runner.path().join("target/wasm32-wasip2/release").is_dir());
    assert!(
        runner_b
            .join("rebuild/target/wasm32-wasip2/release")
            .is_dir()
    );

    // No path of the checkout is left in the component.
    let bytes = std::fs::read(&component).unwrap();
    let needle = source.to_string_lossy().into_owned();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "the checkout's path is in the component"
    );
}
