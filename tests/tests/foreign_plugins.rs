//! The example plugins written in Python (componentize-py) and JavaScript
//! (componentize-js), built by `scripts/build-foreign-plugins.sh` once per
//! run of this test binary, against their good and bad fixture trees,
//! through the real binary.
//!
//! They are also packaged and verified as a release: `plugin-registry
//! package` takes their name and version from `plugin.toml` (they have no
//! Cargo.toml) and checks them against what the component's `describe`
//! returns.
//!
//! Each `run --once` compiles the components again (a local plugin is not
//! cached), some 30 CPU-seconds each in a debug build: the scenarios share
//! cycles, both plugins side by side, to keep the number of runs small.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use assessment_e2e::{
    Agent, RunOutcome, evidence_value, output_text, registry_tool as registry, repo,
};
use serde_json::Value;
use sha2::Digest as _;

const LOGIN_DEFS_GRANT: &str = "grants = { read = [\"/etc/login.defs\"] }";
const ACCOUNTS_GRANT: &str =
    "grants = { read = [\"/etc/passwd\", \"/etc/group\", \"/etc/shadow\"] }";

/// A component built by the script (`login_defs` or `passwd_accounts`).
/// The first caller builds both (or finds them up to date); the others
/// wait for it, and a failed build fails every caller with its output.
fn foreign(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = repo().join("scripts/build-foreign-plugins.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if output.status.success() {
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    let path = repo()
        .join("target/guests-foreign")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn fixture(language: &str, plugin: &str, tree: &str) -> PathBuf {
    repo()
        .join("plugins-examples")
        .join(language)
        .join(plugin)
        .join("fixtures")
        .join(tree)
}

/// `(kind, id)` of a finding's subject; `None` for the system as a whole.
fn subject(finding: &Value) -> Option<(String, String)> {
    let s = finding.get("subject").filter(|s| !s.is_null())?;
    Some((
        s["kind"].as_str().unwrap().to_string(),
        s["id"].as_str().unwrap().to_string(),
    ))
}

/// `benchmark id` of each of a finding's references.
fn references(finding: &Value) -> Vec<String> {
    finding
        .get("references")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    assert!(
                        r.get("url").is_none_or(Value::is_null),
                        "no URL was given: {r}"
                    );
                    format!(
                        "{} {}",
                        r["benchmark"].as_str().unwrap(),
                        r["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The finding of `check` about `subject` (`None`: the whole system).
fn finding<'a>(
    out: &'a RunOutcome,
    plugin: &str,
    check: &str,
    about: Option<(&str, &str)>,
) -> &'a Value {
    let about = about.map(|(k, i)| (k.to_string(), i.to_string()));
    out.findings(plugin)
        .iter()
        .find(|f| f["check_id"] == check && subject(f) == about)
        .unwrap_or_else(|| {
            panic!(
                "no finding of {check} about {about:?} in {:#}",
                out.job(plugin)
            )
        })
}

fn status_of(out: &RunOutcome, plugin: &str, check: &str, about: Option<(&str, &str)>) -> String {
    finding(out, plugin, check, about)["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn completed(out: &RunOutcome, plugin: &str) {
    assert_eq!(out.code, 0, "{}", out.stderr);
    job_completed(out, plugin);
}

/// The job of `plugin` completed, whatever the other jobs of the cycle did.
fn job_completed(out: &RunOutcome, plugin: &str) {
    assert_eq!(
        out.error_kind(plugin),
        None,
        "{:#}\n{}",
        out.job(plugin),
        out.stderr
    );
}

/// An agent assessing a copy of the given fixture trees (`(language,
/// plugin, tree)`), merged into one root. The large components are
/// compiled once for all these tests: by the first run of each, as any
/// first run compiles; the others load its artifact, as any later run.
fn agent_with(trees: &[(&str, &str, &str)]) -> Agent {
    trees.iter().fold(
        Agent::new().sharing_compiled(),
        |agent, (language, plugin, tree)| agent.with_tree(&fixture(language, plugin, tree)),
    )
}

fn with_login_defs(agent: Agent, extra: &str) -> Agent {
    agent.plugin("login-defs", &foreign("login_defs"), extra)
}

fn with_accounts(agent: Agent, extra: &str) -> Agent {
    agent.plugin("passwd-accounts", &foreign("passwd_accounts"), extra)
}

/// The checks of login-defs: id, setting, CIS item.
const LOGIN_DEFS_CHECKS: [(&str, &str, &str); 5] = [
    ("login-defs-pass-max-days", "PASS_MAX_DAYS", "5.4.1.1"),
    ("login-defs-pass-min-days", "PASS_MIN_DAYS", "5.4.1.2"),
    ("login-defs-pass-warn-age", "PASS_WARN_AGE", "5.4.1.3"),
    ("login-defs-encrypt-method", "ENCRYPT_METHOD", "5.4.1.4"),
    ("login-defs-umask", "UMASK", "5.4.3.3"),
];

/// The finding of a login-defs check about its setting.
fn setting_finding<'a>(out: &'a RunOutcome, check: &str, key: &str) -> &'a Value {
    let id = format!("login.defs:{key}");
    finding(out, "login-defs", check, Some(("config-setting", &id)))
}

fn setting_status(out: &RunOutcome, check: &str, key: &str) -> String {
    setting_finding(out, check, key)["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The checks of passwd-accounts about each account.
const PER_USER: [&str; 4] = [
    "passwd-root-only-uid0",
    "passwd-shadowed-passwords",
    "shadow-no-empty-passwords",
    "passwd-groups-exist",
];

/// The checks of passwd-accounts about a whole file, with their reference.
const WHOLE_FILE: [(&str, &str); 7] = [
    ("passwd-no-duplicate-uids", "CIS Debian Linux 12 7.2.5"),
    ("group-no-duplicate-gids", "CIS Debian Linux 12 7.2.6"),
    ("passwd-no-duplicate-names", "CIS Debian Linux 12 7.2.7"),
    ("group-no-duplicate-names", "CIS Debian Linux 12 7.2.8"),
    (
        "passwd-no-legacy-plus",
        "CIS Distribution Independent Linux 6.2.2",
    ),
    (
        "shadow-no-legacy-plus",
        "CIS Distribution Independent Linux 6.2.3",
    ),
    (
        "group-no-legacy-plus",
        "CIS Distribution Independent Linux 6.2.4",
    ),
];

fn account_status(out: &RunOutcome, check: &str, user: &str) -> String {
    status_of(out, "passwd-accounts", check, Some(("user", user)))
}

#[test]
fn good_trees_pass_with_subjects_and_references() {
    let agent = agent_with(&[
        ("python", "login-defs", "good"),
        ("js", "passwd-accounts", "good"),
    ]);
    let agent = with_accounts(with_login_defs(agent, LOGIN_DEFS_GRANT), ACCOUNTS_GRANT);
    let out = agent.run();
    completed(&out, "login-defs");
    completed(&out, "passwd-accounts");

    // Python: one finding per setting, about the setting.
    let job = out.job("login-defs");
    assert_eq!(job["id"]["name"], "login-defs", "{job:#}");
    assert_eq!(job["id"]["version"], "0.1.0", "{job:#}");
    assert_eq!(out.findings("login-defs").len(), 5, "{job:#}");
    for (check, key, cis) in LOGIN_DEFS_CHECKS {
        let f = setting_finding(&out, check, key);
        assert_eq!(f["status"], "pass", "{f:#}");
        assert_eq!(
            references(f),
            [format!("CIS Debian Linux 12 {cis}")],
            "{f:#}"
        );
        let file = evidence_value(f, "file").unwrap();
        assert!(file.starts_with("/etc/login.defs:"), "{f:#}");
        assert!(evidence_value(f, "observed").is_some(), "{f:#}");
        assert!(evidence_value(f, "expected").is_some(), "{f:#}");
        assert!(
            f["remediation"].is_null(),
            "a pass needs no remediation: {f:#}"
        );
    }
    let max = setting_finding(&out, "login-defs-pass-max-days", "PASS_MAX_DAYS");
    assert_eq!(
        evidence_value(max, "file").as_deref(),
        Some("/etc/login.defs:32")
    );
    assert_eq!(evidence_value(max, "observed").as_deref(), Some("365"));

    // JavaScript: one finding per user and per-user check, one about the
    // shadow group, one per whole-file check.
    let job = out.job("passwd-accounts");
    assert_eq!(job["id"]["name"], "passwd-accounts", "{job:#}");
    let findings = out.findings("passwd-accounts");
    let not_passed: Vec<_> = findings.iter().filter(|f| f["status"] != "pass").collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
    let users = [
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "man",
        "mail",
        "www-data",
        "_apt",
        "nobody",
        "systemd-network",
        "messagebus",
        "sshd",
        "alice",
    ];
    assert_eq!(findings.len(), users.len() * PER_USER.len() + 1 + 7);
    for check in PER_USER {
        for user in users {
            assert_eq!(account_status(&out, check, user), "pass", "{check} {user}");
        }
    }
    let uid0 = finding(
        &out,
        "passwd-accounts",
        "passwd-root-only-uid0",
        Some(("user", "root")),
    );
    assert_eq!(references(uid0), ["CIS Debian Linux 12 5.4.2.1"]);
    assert_eq!(
        evidence_value(uid0, "file").as_deref(),
        Some("/etc/passwd:1")
    );
    let shadow_group = finding(
        &out,
        "passwd-accounts",
        "group-shadow-empty",
        Some(("group", "shadow")),
    );
    assert_eq!(references(shadow_group), ["CIS Debian Linux 12 7.2.4"]);
    for (check, reference) in WHOLE_FILE {
        let f = finding(&out, "passwd-accounts", check, None);
        assert_eq!(references(f), [reference], "{f:#}");
    }
}

#[test]
fn bad_trees_fail_with_evidence_and_remediation() {
    let agent = agent_with(&[
        ("python", "login-defs", "bad"),
        ("js", "passwd-accounts", "bad"),
    ]);
    let agent = with_accounts(with_login_defs(agent, LOGIN_DEFS_GRANT), ACCOUNTS_GRANT);
    let out = agent.run();
    assert_eq!(
        out.code, 0,
        "failed checks alone do not fail the run: {}",
        out.stderr
    );
    completed(&out, "login-defs");
    completed(&out, "passwd-accounts");

    // Python.
    for (check, key, _) in LOGIN_DEFS_CHECKS {
        let expected = if key == "PASS_WARN_AGE" {
            "pass"
        } else {
            "fail"
        };
        assert_eq!(setting_status(&out, check, key), expected, "{check}");
    }
    // The last definition wins: SHA512 on line 48, MD5 on line 49.
    let encrypt = setting_finding(&out, "login-defs-encrypt-method", "ENCRYPT_METHOD");
    assert_eq!(
        evidence_value(encrypt, "file").as_deref(),
        Some("/etc/login.defs:49"),
        "{encrypt:#}"
    );
    assert_eq!(evidence_value(encrypt, "observed").as_deref(), Some("MD5"));
    assert!(
        encrypt["remediation"]
            .as_str()
            .unwrap()
            .contains("ENCRYPT_METHOD YESCRYPT"),
        "{encrypt:#}"
    );
    let umask = setting_finding(&out, "login-defs-umask", "UMASK");
    assert_eq!(evidence_value(umask, "observed").as_deref(), Some("022"));
    assert_eq!(references(umask), ["CIS Debian Linux 12 5.4.3.3"]);

    // JavaScript: per user, only the accounts with a planted problem fail.
    let failing: [(&str, &[&str]); 4] = [
        ("passwd-root-only-uid0", &["toor"]),
        ("passwd-shadowed-passwords", &["carol"]),
        ("shadow-no-empty-passwords", &["bob", "dave"]),
        ("passwd-groups-exist", &["dave"]),
    ];
    for (check, users) in failing {
        for user in ["root", "daemon", "toor", "alice", "bob", "carol", "dave"] {
            let expected = if users.contains(&user) {
                "fail"
            } else {
                "pass"
            };
            assert_eq!(
                account_status(&out, check, user),
                expected,
                "{check} {user}"
            );
        }
    }
    let toor = finding(
        &out,
        "passwd-accounts",
        "passwd-root-only-uid0",
        Some(("user", "toor")),
    );
    assert_eq!(
        evidence_value(toor, "file").as_deref(),
        Some("/etc/passwd:5")
    );
    assert!(toor["remediation"].as_str().unwrap().contains("usermod"));
    // The password hash in /etc/passwd is never copied into the report.
    let carol = finding(
        &out,
        "passwd-accounts",
        "passwd-shadowed-passwords",
        Some(("user", "carol")),
    );
    assert!(!carol.to_string().contains("$6$"), "{carol:#}");
    assert_eq!(
        status_of(
            &out,
            "passwd-accounts",
            "group-shadow-empty",
            Some(("group", "shadow"))
        ),
        "fail"
    );
    for (check, _) in WHOLE_FILE {
        let expected = if check == "shadow-no-legacy-plus" {
            "pass"
        } else {
            "fail"
        };
        assert_eq!(
            status_of(&out, "passwd-accounts", check, None),
            expected,
            "{check}"
        );
    }
    let uids = finding(&out, "passwd-accounts", "passwd-no-duplicate-uids", None);
    assert!(
        evidence_value(uids, "UID 1000")
            .unwrap()
            .contains("alice (/etc/passwd:7), bob (/etc/passwd:8)"),
        "{uids:#}"
    );
    let names = finding(&out, "passwd-accounts", "passwd-no-duplicate-names", None);
    assert!(
        names["message"].as_str().unwrap().contains("alice"),
        "{names:#}"
    );
}

#[test]
fn configuration_is_read_through_the_config_interface_and_checked() {
    let agent = agent_with(&[
        ("python", "login-defs", "bad"),
        ("js", "passwd-accounts", "bad"),
    ]);
    let agent = with_login_defs(
        agent,
        &format!(
            "{LOGIN_DEFS_GRANT}\nconfig = {{ max_days = 99999, skip = [\"login-defs-umask\"] }}"
        ),
    );
    let agent = with_accounts(
        agent,
        &format!("{ACCOUNTS_GRANT}\nconfig = {{ skip = [\"passwd-no-such-check\"] }}"),
    );
    let out = agent.run();
    assert_eq!(out.code, 1, "a job failed: {}", out.stderr);
    job_completed(&out, "login-defs");
    let max = setting_finding(&out, "login-defs-pass-max-days", "PASS_MAX_DAYS");
    assert_eq!(max["status"], "pass", "{max:#}");
    assert_eq!(
        evidence_value(max, "expected").as_deref(),
        Some("between 1 and 99999 days")
    );
    assert_eq!(setting_status(&out, "login-defs-umask", "UMASK"), "skipped");

    // A `run-error` thrown from JavaScript is the job's error.
    assert_eq!(
        out.error_kind("passwd-accounts").as_deref(),
        Some("plugin-config"),
        "{:#}",
        out.job("passwd-accounts")
    );
    assert!(
        out.error_message("passwd-accounts")
            .contains("passwd-no-such-check"),
        "{:#}",
        out.job("passwd-accounts")
    );
}

#[test]
fn python_raises_an_invalid_configuration_as_a_run_error() {
    let agent = agent_with(&[("python", "login-defs", "good")]);
    let out = with_login_defs(
        agent,
        &format!("{LOGIN_DEFS_GRANT}\nconfig = {{ max_days = 0 }}"),
    )
    .run();
    assert_eq!(
        out.error_kind("login-defs").as_deref(),
        Some("plugin-config"),
        "{:#}",
        out.job("login-defs")
    );
    assert!(
        out.error_message("login-defs").contains("max_days"),
        "{:#}",
        out.job("login-defs")
    );
}

#[test]
fn a_missing_file_is_not_applicable_and_an_ungranted_one_an_error() {
    // No /etc/login.defs; /etc/shadow exists but is not granted. (The grant
    // is `/etc` for login-defs: the host refuses to run a plugin at all
    // when a granted path does not exist.)
    let agent = agent_with(&[("js", "passwd-accounts", "good")]);
    let agent = with_login_defs(agent, "grants = { read = [\"/etc\"] }");
    let agent = with_accounts(
        agent,
        "grants = { read = [\"/etc/passwd\", \"/etc/group\"] }",
    );
    let out = agent.run();
    completed(&out, "login-defs");
    completed(&out, "passwd-accounts");
    for (check, key, _) in LOGIN_DEFS_CHECKS {
        assert_eq!(
            setting_status(&out, check, key),
            "not-applicable",
            "{check}"
        );
    }
    for check in ["shadow-no-empty-passwords", "shadow-no-legacy-plus"] {
        let f = finding(&out, "passwd-accounts", check, None);
        assert_eq!(f["status"], "error", "{f:#}");
        assert!(
            f["message"].as_str().unwrap().contains("access denied"),
            "{f:#}"
        );
    }
    // What needs only /etc/passwd and /etc/group still has its verdicts.
    assert_eq!(
        account_status(&out, "passwd-root-only-uid0", "root"),
        "pass"
    );
    assert_eq!(
        status_of(&out, "passwd-accounts", "group-no-legacy-plus", None),
        "pass"
    );
    assert!(
        out.job("passwd-accounts")["denial_count"].as_u64().unwrap() > 0,
        "{:#}",
        out.job("passwd-accounts")
    );
}

#[test]
fn python_login_defs_denied_is_an_error_never_a_pass() {
    let agent = agent_with(&[("python", "login-defs", "good")]);
    std::fs::write(agent.root().join("etc/hostname"), "assessed\n").unwrap();
    let out = with_login_defs(agent, "grants = { read = [\"/etc/hostname\"] }").run();
    completed(&out, "login-defs");
    for (check, key, _) in LOGIN_DEFS_CHECKS {
        let f = setting_finding(&out, check, key);
        assert_eq!(f["status"], "error", "{f:#}");
        assert!(
            f["message"].as_str().unwrap().contains("access denied"),
            "{f:#}"
        );
    }
    assert!(
        out.job("login-defs")["denial_count"].as_u64().unwrap() > 0,
        "{:#}",
        out.job("login-defs")
    );
}

/// `plugin-registry package COMPONENT --plugin-dir DIR --tag TAG` into
/// `out`, signed with `secret_key`; the output and what `out` holds.
fn package(
    component: &Path,
    dir: &Path,
    tag: &str,
    secret_key: &Path,
    out: &Path,
) -> (Output, Vec<String>) {
    let output = registry(&[
        "package",
        component.to_str().unwrap(),
        "--plugin-dir",
        dir.to_str().unwrap(),
        "--tag",
        tag,
        "--out",
        out.to_str().unwrap(),
        "--secret-key",
        secret_key.to_str().unwrap(),
        "--repository",
        "https://example.invalid/plugins",
        "--commit",
        "0123abc",
    ]);
    let mut written: Vec<String> = std::fs::read_dir(out)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    written.sort();
    (output, written)
}

#[test]
fn python_and_javascript_plugins_package_from_plugin_toml_and_verify() {
    let work = tempfile::tempdir().unwrap();
    let secret_key = work.path().join("publisher.key");
    let public_key = work.path().join("publisher.pub");
    let out = registry(&[
        "keygen",
        "--unencrypted",
        "--secret-key",
        secret_key.to_str().unwrap(),
        "--public-key",
        public_key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));

    for (language, plugin, component, read) in [
        (
            "python",
            "login-defs",
            "login_defs",
            &["/etc/login.defs"][..],
        ),
        (
            "js",
            "passwd-accounts",
            "passwd_accounts",
            &["/etc/group", "/etc/passwd", "/etc/shadow"][..], // sorted
        ),
    ] {
        let dir = repo().join("plugins-examples").join(language).join(plugin);
        assert!(
            !dir.join("Cargo.toml").exists(),
            "{}: the point is a plugin without Cargo.toml",
            dir.display()
        );
        let component = foreign(component);
        let dist = work.path().join(format!("dist-{plugin}"));

        // plugin.toml's name and version, the tag and describe() agree.
        let (out, written) = package(
            &component,
            &dir,
            &format!("{plugin}/v0.1.0"),
            &secret_key,
            &dist,
        );
        let text = output_text(&out);
        assert!(out.status.success(), "{plugin}: {text}");
        assert!(
            text.contains(&format!(
                "describe(): {plugin} 0.1.0 (matches {})",
                dir.join("plugin.toml").display()
            )),
            "{text}"
        );
        let manifest_file = format!("{plugin}-0.1.0.manifest.json");
        assert_eq!(
            written,
            [
                format!("{plugin}-0.1.0.manifest.json"),
                format!("{plugin}-0.1.0.manifest.json.minisig"),
                format!("{plugin}-0.1.0.wasm"),
            ],
            "{text}"
        );

        // The signature verifies with the publisher's public key.
        let manifest_path = dist.join(&manifest_file);
        let out = registry(&[
            "verify",
            manifest_path.to_str().unwrap(),
            "--public-key",
            public_key.to_str().unwrap(),
        ]);
        let text = output_text(&out);
        assert!(out.status.success(), "{plugin}: {text}");
        assert!(
            text.contains(&format!("plugin:{plugin}@0.1.0")),
            "the trusted comment names the release: {text}"
        );

        // The manifest is the plugin's: plugin.toml's name, version and
        // capabilities, the component as built.
        let bytes = std::fs::read(&component).unwrap();
        assert_eq!(
            std::fs::read(dist.join(format!("{plugin}-0.1.0.wasm"))).unwrap(),
            bytes
        );
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        assert_eq!(manifest["name"], plugin, "{manifest:#}");
        assert_eq!(manifest["version"], "0.1.0", "{manifest:#}");
        assert_eq!(manifest["abi"], "assessment:plugin@0.2.0", "{manifest:#}");
        assert_eq!(
            manifest["component"]["sha256"],
            hex::encode(sha2::Sha256::digest(&bytes)),
            "{manifest:#}"
        );
        assert_eq!(
            manifest["capabilities"]["read"],
            serde_json::json!(read),
            "{manifest:#}"
        );
        assert_eq!(manifest["source"]["commit"], "0123abc", "{manifest:#}");
        // And the audit accepts the component against it.
        let out = registry(&[
            "audit",
            component.to_str().unwrap(),
            "--manifest",
            manifest_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{plugin}: {}", output_text(&out));
    }

    // A version bumped in plugin.toml (and the tag) but not in the plugin's
    // code: describe() still says 0.1.0, and nothing is signed.
    let bumped = work.path().join("passwd-accounts");
    std::fs::create_dir(&bumped).unwrap();
    let plugin_toml =
        std::fs::read_to_string(repo().join("plugins-examples/js/passwd-accounts/plugin.toml"))
            .unwrap();
    assert!(
        plugin_toml.contains("\nversion = \"0.1.0\"\n"),
        "{plugin_toml}"
    );
    std::fs::write(
        bumped.join("plugin.toml"),
        plugin_toml.replace("\nversion = \"0.1.0\"\n", "\nversion = \"0.2.0\"\n"),
    )
    .unwrap();
    let dist = work.path().join("dist-bumped");
    let (out, written) = package(
        &foreign("passwd_accounts"),
        &bumped,
        "passwd-accounts/v0.2.0",
        &secret_key,
        &dist,
    );
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "the component describes itself as version `0.1.0`, but {} says `0.2.0`",
            bumped.join("plugin.toml").display()
        )) && text.contains("make describe() report the version of plugin.toml and rebuild"),
        "{text}"
    );
    assert!(written.is_empty(), "nothing is written: {written:?}");
}
