//! Plugins built for every supported ABI version run side by side: the
//! 0.1.0 binary fixtures (built from the commit that released 0.1.0, see
//! scripts/rebuild-abi-fixtures.sh) next to the same plugins built for the
//! latest version, and what 0.2.0 added (subjects, references,
//! not-applicable, hard-link counts, windowed reads, one interface per
//! capability).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::PathBuf;

use assessment_e2e::{Agent, guest, repo};
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn v0_1_0(name: &str) -> PathBuf {
    repo()
        .join("tests/fixtures/abi-0.1.0")
        .join(format!("{name}.wasm"))
}

use assessment_e2e::example_fixture as fixture;

fn verdicts(out: &assessment_e2e::RunOutcome, plugin: &str) -> Vec<(String, String)> {
    out.verdicts(plugin)
}

/// The fixtures are the bytes that were released, not something rebuilt.
#[test]
fn the_0_1_0_fixtures_are_the_released_bytes() {
    let dir = repo().join("tests/fixtures/abi-0.1.0");
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let mut checked = 0;
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(dir.join(name.trim_start_matches("./"))).unwrap();
        assert_eq!(sha256_hex(&bytes), sum, "{name} changed");
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn plugins_of_0_1_0_and_0_2_0_run_side_by_side_in_one_cycle() {
    let agent = Agent::new().with_tree(&fixture("sshd-hardening", "bad"));
    std::fs::create_dir_all(agent.root().join("proc/sys")).unwrap();
    let out = agent
        .plugin(
            "sshd-hardening",
            &v0_1_0("sshd_hardening"),
            "grants = { read = [\"/etc/ssh\"] }",
        )
        .plugin(
            "probe",
            &v0_1_0("test_plugin_probe"),
            "grants = { read = [\"/etc/ssh\"] }\nconfig = { actions = [\"stat:/etc/ssh/sshd_config\", \"read-file:/etc/shadow\", \"config:greeting\"], greeting = \"hello\" }",
        )
        .plugin(
            "kernel-params",
            &guest("kernel_params"),
            "grants = { read = [\"/proc/sys\"] }",
        )
        .plugin(
            "file-permissions",
            &guest("file_permissions"),
            "grants = { read = [\"/etc\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (plugin, abi) in [
        ("sshd-hardening", "0.1.0"),
        ("probe", "0.1.0"),
        ("kernel-params", capability_model::abi::LATEST),
        ("file-permissions", capability_model::abi::LATEST),
    ] {
        assert!(
            out.job(plugin)["error"].is_null(),
            "{plugin}: {}",
            out.job(plugin)
        );
        assert_eq!(out.job(plugin)["abi"], abi, "{plugin}");
    }
    // 0.1.0 capabilities behave as they did: a granted stat works, a read
    // outside the grants is denied, configuration is read.
    let probe = out.findings("probe");
    assert_eq!(probe[0]["status"], "pass", "{probe:?}");
    assert!(
        probe[0]["evidence"].to_string().contains("size="),
        "{probe:?}"
    );
    assert_eq!(probe[1]["status"], "error");
    assert!(probe[1]["evidence"].to_string().contains("denied"));
    assert!(probe[2]["evidence"].to_string().contains("hello"));
    // A 0.1.0 plugin's calls reach the same capabilities, so they are in
    // its provenance too: the stat (with the file's size) and the denial.
    let provenance = &out.job("probe")["provenance"];
    assert_eq!(provenance["files"][0]["call"], "stat");
    assert_eq!(provenance["files"][0]["path"], "/etc/ssh/sshd_config");
    assert!(provenance["files"][0]["size"].is_u64(), "{provenance}");
    assert_eq!(provenance["denials"][0]["call"], "read-file");
    // 0.1.0 findings have no subject; one `reference` string became one
    // reference.
    let root_login = out
        .findings("sshd-hardening")
        .iter()
        .find(|f| f["check_id"] == "sshd-permit-root-login")
        .unwrap();
    assert!(root_login["subject"].is_null());
    assert_eq!(root_login["status"], "fail");
    assert_eq!(root_login["references"][0]["benchmark"], "CIS");
    assert_eq!(root_login["references"][0]["id"], "5.2.10");
    // 0.2.0 plugins say what each verdict is about.
    let aslr = out
        .findings("kernel-params")
        .iter()
        .find(|f| f["check_id"] == "kernel-aslr")
        .unwrap();
    assert_eq!(aslr["status"], "not-applicable", "absent from the tree");
    assert_eq!(aslr["subject"]["kind"], "kernel-parameter");
    assert_eq!(aslr["subject"]["id"], "kernel.randomize_va_space");
}

#[test]
fn the_same_plugin_built_for_either_version_reaches_the_same_verdicts() {
    for tree in ["good", "bad"] {
        let run = |component: PathBuf| {
            Agent::new()
                .with_tree(&fixture("sshd-hardening", tree))
                .plugin(
                    "sshd-hardening",
                    &component,
                    "grants = { read = [\"/etc/ssh\"] }",
                )
                .run()
        };
        let old = run(v0_1_0("sshd_hardening"));
        let new = run(guest("sshd_hardening"));
        assert_eq!(
            verdicts(&old, "sshd-hardening"),
            verdicts(&new, "sshd-hardening"),
            "{tree}"
        );
        let new_root_login = &new.findings("sshd-hardening")[0];
        assert_eq!(new_root_login["subject"]["kind"], "config-setting");
        assert_eq!(
            new_root_login["references"][0]["benchmark"],
            "CIS Debian Linux 12"
        );
    }
    // Where no SSH server is installed, 0.1.0 could only say `skipped`.
    let empty = tempfile::tempdir().unwrap();
    let run = |component: PathBuf| {
        Agent::new()
            .with_tree(empty.path())
            .plugin("sshd-hardening", &component, "grants = { read = [\"/\"] }")
            .run()
    };
    let old = run(v0_1_0("sshd_hardening"));
    let new = run(guest("sshd_hardening"));
    assert!(
        verdicts(&old, "sshd-hardening")
            .iter()
            .all(|(_, s)| s == "skipped")
    );
    assert!(
        verdicts(&new, "sshd-hardening")
            .iter()
            .all(|(_, s)| s == "not-applicable")
    );
}

#[test]
fn a_capability_whose_interface_a_plugin_does_not_import_is_never_in_force() {
    // kernel-params imports only `filesystem`; the 0.1.0 probe has no
    // `packages` interface at all.
    let agent = Agent::new();
    std::fs::create_dir_all(agent.root().join("proc/sys")).unwrap();
    let out = agent
        .plugin(
            "kernel-params",
            &guest("kernel_params"),
            "grants = { read = [\"/proc/sys\"], commands = [\"/usr/sbin/sysctl\"], env = [\"LANG\"] }",
        )
        .plugin(
            "probe",
            &v0_1_0("test_plugin_probe"),
            "grants = { packages = true, host_facts = true }\nconfig = { actions = [\"host-facts:\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("not in force: commands (needs `assessment:plugin/process@")
            && out
                .stderr
                .contains("env (needs `assessment:plugin/environment@"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("packages (needs an interface that assessment:plugin@0.1.0 does not have)"),
        "{}",
        out.stderr
    );
    // What the plugin can use stays granted.
    assert_eq!(out.findings("probe")[0]["status"], "pass");
}

#[test]
fn stat_counts_hard_links_and_large_files_are_read_in_windows() {
    let agent = Agent::new();
    let etc = agent.root().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("big"), "0123456789".repeat(200_000)).unwrap();
    std::fs::write(etc.join("shadow"), "root:*:1::::::\n").unwrap();
    std::fs::hard_link(etc.join("shadow"), etc.join("shadow-copy")).unwrap();
    let out = agent
        .plugin(
            "probe",
            &guest("test_plugin_probe"),
            "grants = { read = [\"/etc\"] }\nlimits = { max_file_kib = 1024 }\nconfig = { actions = [\"stat:/etc/shadow\", \"stat:/etc/big\", \"read-file:/etc/big\", \"read-range:/etc/big 1999995 100\", \"read-range:/etc/big 0 1048577\", \"read-range:/etc/big 5000000 10\"] }",
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let f = out.findings("probe");
    let output = |i: usize| f[i]["evidence"].to_string();
    assert!(output(0).contains("links=2"), "{}", output(0));
    assert!(output(1).contains("links=1"), "{}", output(1));
    assert!(
        output(2).contains("too-large"),
        "the whole 2 MB file is over the limit"
    );
    assert_eq!(f[3]["status"], "pass");
    assert!(
        output(3).contains("\"56789\""),
        "the last five bytes: {}",
        output(3)
    );
    assert!(
        output(4).contains("too-large"),
        "a window over the limit: {}",
        output(4)
    );
    assert_eq!(f[5]["status"], "pass", "past the end: no bytes");
}
