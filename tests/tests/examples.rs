//! The example plugins against their good and bad fixture trees, through
//! the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use assessment_e2e::{Agent, apply_modes, current_ids, evidence_value, guest, repo};

use assessment_e2e::example_fixture as fixture;
use sha2::{Digest, Sha256};

fn statuses(out: &assessment_e2e::RunOutcome, plugin: &str) -> Vec<(String, String)> {
    out.verdicts(plugin)
}

#[test]
fn sshd_hardening_passes_a_hardened_config() {
    let out = Agent::new()
        .with_tree(&fixture("sshd-hardening", "good"))
        .plugin(
            "sshd-hardening",
            &guest("sshd_hardening"),
            "grants = { read = [\"/etc/ssh\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let all = statuses(&out, "sshd-hardening");
    assert_eq!(all.len(), 12);
    assert!(all.iter().all(|(_, s)| s == "pass"), "{all:?}");
    // The LogLevel comes from the included drop-in.
    let log_level = out
        .findings("sshd-hardening")
        .iter()
        .find(|f| f["check_id"] == "sshd-log-level")
        .unwrap();
    assert!(
        log_level["evidence"]
            .to_string()
            .contains("sshd_config.d/10-logging.conf:1"),
        "{log_level}"
    );
}

#[test]
fn sshd_hardening_fails_a_weak_config_with_evidence() {
    let agent = Agent::new()
        .with_tree(&fixture("sshd-hardening", "bad"))
        .plugin(
            "sshd-hardening",
            &guest("sshd_hardening"),
            "grants = { read = [\"/etc/ssh\"] }",
        );
    let out = agent.run();
    assert_eq!(
        out.code, 0,
        "failed checks alone do not fail the run: {}",
        out.stderr
    );
    for check in [
        "sshd-permit-root-login",
        "sshd-permit-empty-passwords",
        "sshd-x11-forwarding",
        "sshd-max-auth-tries",
        "sshd-log-level",
        "sshd-login-grace-time",
        "sshd-client-alive-interval",
        "sshd-weak-ciphers",
        "sshd-weak-macs",
    ] {
        assert_eq!(out.status("sshd-hardening", check), "fail", "{check}");
    }
    for check in [
        "sshd-ignore-rhosts",
        "sshd-hostbased-authentication",
        "sshd-permit-user-environment",
    ] {
        assert_eq!(out.status("sshd-hardening", check), "pass", "{check}");
    }
    let root = out
        .findings("sshd-hardening")
        .iter()
        .find(|f| f["check_id"] == "sshd-permit-root-login")
        .unwrap();
    let evidence = root["evidence"].to_string();
    assert!(
        evidence.contains("Match Address 10.0.0.0/8 sets permitrootlogin yes"),
        "{evidence}"
    );
    assert!(
        root["remediation"]
            .as_str()
            .unwrap()
            .contains("PermitRootLogin no")
    );
    // The drop-in is read before the main file: its X11Forwarding wins.
    let x11 = out
        .findings("sshd-hardening")
        .iter()
        .find(|f| f["check_id"] == "sshd-x11-forwarding")
        .unwrap();
    assert!(
        x11["evidence"].to_string().contains("50-cloud-init.conf:1"),
        "{x11}"
    );
    // The provenance: the files the host served (their size, mtime and the
    // digest of the bytes returned) and the drop-in directory listed.
    let provenance = &out.job("sshd-hardening")["provenance"];
    let tree = fixture("sshd-hardening", "bad");
    for rel in [
        "etc/ssh/sshd_config",
        "etc/ssh/sshd_config.d/50-cloud-init.conf",
    ] {
        let bytes = std::fs::read(tree.join(rel)).unwrap();
        let read = provenance["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["call"] == "read-file" && f["path"] == format!("/{rel}"))
            .unwrap_or_else(|| panic!("/{rel} is not in {provenance:#}"));
        assert_eq!(
            read["sha256"],
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
        );
        assert_eq!(read["size"], bytes.len());
        assert_eq!(read["bytes"], bytes.len());
        assert!(read["mtime"].as_str().unwrap().ends_with('Z'), "{read}");
    }
    let listed = provenance["directories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "/etc/ssh/sshd_config.d")
        .unwrap_or_else(|| panic!("{provenance:#}"));
    assert_eq!(listed["entries"], 1);
    assert_eq!(provenance["denials"], serde_json::json!([]));
    assert_eq!(provenance["commands"], serde_json::json!([]));
    assert_eq!(
        agent.run_with(&["--fail-on-findings"]).code,
        2,
        "--fail-on-findings turns failed checks into exit code 2"
    );
}

#[test]
fn sshd_hardening_does_not_apply_when_no_server_is_installed() {
    let out = Agent::new()
        .plugin(
            "sshd-hardening",
            &guest("sshd_hardening"),
            "grants = { read = [\"/\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        statuses(&out, "sshd-hardening")
            .iter()
            .all(|(_, s)| s == "not-applicable")
    );
}

#[test]
fn file_permissions_good_and_bad_trees() {
    let modes = repo().join("plugins-examples/file-permissions/fixtures/modes.toml");
    for (tree, expect_pass) in [("good", true), ("bad", false)] {
        let agent = Agent::new().with_tree(&fixture("file-permissions", tree));
        apply_modes(&modes, tree, agent.root());
        // Fixture files belong to whoever runs the tests.
        let (uid, gid) = current_ids(&agent.root().join("etc/passwd"));
        let out = agent
            .plugin(
                "file-permissions",
                &guest("file_permissions"),
                &format!("grants = {{ read = [\"/etc\"] }}\nconfig = {{ expected_uid = {uid}, expected_gid = {gid} }}"),
            )
            .run();
        assert_eq!(out.code, 0, "{}", out.stderr);
        let all = statuses(&out, "file-permissions");
        assert_eq!(all.len(), 10, "{all:?}");
        if expect_pass {
            assert!(all.iter().all(|(_, s)| s == "pass"), "{tree}: {all:?}");
        } else {
            for check in [
                "perm-etc-passwd",
                "perm-etc-group",
                "perm-etc-shadow",
                "perm-etc-gshadow",
                "perm-etc-crontab",
                "perm-sshd-config",
                "perm-ssh-host-private-keys",
            ] {
                assert_eq!(out.status("file-permissions", check), "fail", "{check}");
            }
            for check in [
                "perm-etc-passwd-backup",
                "perm-etc-group-backup",
                "perm-etc-shadow-backup",
            ] {
                assert_eq!(out.status("file-permissions", check), "pass", "{check}");
            }
        }
    }
}

#[test]
fn file_permissions_reports_wrong_owner() {
    let modes = repo().join("plugins-examples/file-permissions/fixtures/modes.toml");
    let agent = Agent::new().with_tree(&fixture("file-permissions", "good"));
    apply_modes(&modes, "good", agent.root());
    let (uid, gid) = current_ids(&agent.root().join("etc/passwd"));
    let out = agent
        .plugin(
            "file-permissions",
            &guest("file_permissions"),
            &format!("grants = {{ read = [\"/etc\"] }}\nconfig = {{ expected_uid = {}, expected_gid = {gid} }}", uid + 1),
        )
        .run();
    assert_eq!(out.status("file-permissions", "perm-etc-passwd"), "fail");
    let f = &out.findings("file-permissions")[0];
    assert!(f["message"].as_str().unwrap().contains("owner uid"), "{f}");
}

#[test]
fn file_permissions_without_grant_reports_errors_not_passes() {
    let out = Agent::new()
        .with_tree(&fixture("file-permissions", "good"))
        .plugin(
            "file-permissions",
            &guest("file_permissions"),
            "grants = { read = [\"/etc/passwd\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_ne!(out.status("file-permissions", "perm-etc-passwd"), "error");
    assert_eq!(
        out.status("file-permissions", "perm-etc-shadow"),
        "error",
        "a required file that is not granted is an error"
    );
    assert_eq!(
        out.status("file-permissions", "perm-etc-crontab"),
        "skipped",
        "an optional one is not assessed"
    );
    assert!(
        out.job("file-permissions")["denial_count"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn kernel_params_good_and_bad_trees() {
    let out = Agent::new()
        .with_tree(&fixture("kernel-params", "good"))
        .plugin(
            "kernel-params",
            &guest("kernel_params"),
            "grants = { read = [\"/proc/sys\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let all = statuses(&out, "kernel-params");
    assert_eq!(all.len(), 19);
    assert!(all.iter().all(|(_, s)| s == "pass"), "{all:?}");

    let out = Agent::new()
        .with_tree(&fixture("kernel-params", "bad"))
        .plugin(
            "kernel-params",
            &guest("kernel_params"),
            "grants = { read = [\"/proc/sys\"] }\nconfig = { allow = [\"net.ipv4.ip_forward=1\"], skip = [\"net-tcp-syncookies\"] }",
        )
        .run();
    let all = statuses(&out, "kernel-params");
    assert_eq!(out.status("kernel-params", "kernel-aslr"), "fail");
    assert_eq!(
        out.status("kernel-params", "net-ip-forward"),
        "pass",
        "allowed by configuration"
    );
    assert_eq!(out.status("kernel-params", "net-tcp-syncookies"), "skipped");
    assert_eq!(
        out.status("kernel-params", "kernel-ptrace-scope"),
        "not-applicable",
        "absent on this kernel"
    );
    assert_eq!(
        all.iter().filter(|(_, s)| s == "fail").count(),
        16,
        "{all:?}"
    );
}

/// (check, subject id, status) of every finding of `plugin`.
fn by_subject(out: &assessment_e2e::RunOutcome, plugin: &str) -> Vec<(String, String, String)> {
    out.findings(plugin)
        .iter()
        .map(|f| {
            (
                f["check_id"].as_str().unwrap().to_string(),
                f["subject"]["id"].as_str().unwrap_or("").to_string(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn package_hygiene_reads_the_package_database_through_its_own_capability() {
    let good = Agent::new()
        .with_tree(&fixture("package-hygiene", "good"))
        .plugin(
            "package-hygiene",
            &guest("package_hygiene"),
            "grants = { packages = true }",
        )
        .run();
    assert_eq!(good.code, 0, "{}", good.stderr);
    let all = by_subject(&good, "package-hygiene");
    assert_eq!(all.len(), 17, "{all:?}");
    assert!(all.iter().all(|(_, _, s)| s == "pass"), "{all:?}");
    // Removed with only its configuration files left: not installed.
    assert!(all.contains(&("pkg-telnet-server".into(), "telnetd".into(), "pass".into())));
    let first = &good.findings("package-hygiene")[0];
    assert_eq!(first["subject"]["kind"], "package");
    assert_eq!(first["references"][0]["benchmark"], "NIST SP 800-53 Rev. 5");
    assert_eq!(first["references"][0]["id"], "CM-7");

    let bad = Agent::new()
        .with_tree(&fixture("package-hygiene", "bad"))
        .plugin(
            "package-hygiene",
            &guest("package_hygiene"),
            "grants = { packages = true }\nconfig = { forbidden = [\"cups\", \"avahi-daemon\"] }",
        )
        .run();
    assert_eq!(bad.code, 0, "{}", bad.stderr);
    let failed: Vec<_> = by_subject(&bad, "package-hygiene")
        .into_iter()
        .filter(|(_, _, s)| s == "fail")
        .map(|(c, p, _)| (c, p))
        .collect();
    assert_eq!(
        failed,
        [
            (
                "pkg-telnet-server".to_string(),
                "inetutils-telnetd".to_string()
            ),
            ("pkg-nis".to_string(), "nis".to_string()),
            ("pkg-inetd".to_string(), "xinetd".to_string()),
            ("pkg-site-forbidden".to_string(), "cups".to_string()),
        ]
    );
    let nis = bad
        .findings("package-hygiene")
        .iter()
        .find(|f| f["subject"]["id"] == "nis")
        .unwrap();
    assert_eq!(evidence_value(nis, "version").as_deref(), Some("4.3"));
    assert_eq!(
        evidence_value(nis, "package-manager").as_deref(),
        Some("dpkg")
    );

    // Without the grant: every check says why it has no verdict.
    let denied = Agent::new()
        .with_tree(&fixture("package-hygiene", "bad"))
        .plugin("package-hygiene", &guest("package_hygiene"), "")
        .run();
    let all = by_subject(&denied, "package-hygiene");
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|(_, _, s)| s == "error"), "{all:?}");
    assert_eq!(denied.job("package-hygiene")["denial_count"], 1);
}
