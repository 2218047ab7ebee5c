//! Bad plugins and bad configuration: one clear error naming the plugin and
//! the fix, the other plugins still run, non-zero exit only when something
//! failed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use assessment_e2e::{Agent, RunOutcome, guest, runtime_bin};

/// A run with a well-behaved probe next to the plugin under test.
fn with_good_neighbour(agent: Agent) -> RunOutcome {
    let out = agent
        .plugin(
            "probe",
            &guest("test_plugin_probe"),
            "config = { actions = [\"config:greeting\"] }",
        )
        .run();
    assert_eq!(
        out.error_kind("probe"),
        None,
        "the other plugin still runs: {:#}",
        out.report
    );
    assert_eq!(out.findings("probe").len(), 1);
    assert_eq!(
        out.code, 1,
        "something failed, so the exit code is non-zero"
    );
    out
}

fn assert_load_error(out: &RunOutcome, plugin: &str, kind: &str, needles: &[&str]) {
    assert_eq!(
        out.error_kind(plugin).as_deref(),
        Some(kind),
        "{:#}",
        out.job(plugin)
    );
    let message = out.error_message(plugin);
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert!(out.findings(plugin).is_empty());
}

#[test]
fn a_missing_component() {
    let agent = Agent::new();
    let missing = agent.dir().join("nope.wasm");
    let out = with_good_neighbour(agent.plugin("sshd-hardening", &missing, ""));
    assert_load_error(
        &out,
        "sshd-hardening",
        "load",
        &[
            "nope.wasm",
            "no such file",
            "cargo build --release --target wasm32-wasip2",
        ],
    );
}

#[test]
fn garbage_instead_of_a_component() {
    let agent = Agent::new();
    let path = agent.dir().join("garbage.wasm");
    std::fs::write(&path, b"this is not wasm").unwrap();
    let out = with_good_neighbour(agent.plugin("garbage", &path, ""));
    assert_load_error(
        &out,
        "garbage",
        "load",
        &["garbage.wasm", "not a WebAssembly file"],
    );
}

#[test]
fn a_truncated_component() {
    let agent = Agent::new();
    let path = agent.dir().join("truncated.wasm");
    let bytes = std::fs::read(guest("kernel_params")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = with_good_neighbour(agent.plugin("kernel-params", &path, ""));
    assert_load_error(
        &out,
        "kernel-params",
        "load",
        &["truncated.wasm", "malformed component"],
    );
}

#[test]
fn a_core_module_instead_of_a_component() {
    let agent = Agent::new();
    let path = agent.dir().join("core.wasm");
    // The smallest valid core module: magic and version.
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let out = with_good_neighbour(agent.plugin("core", &path, ""));
    assert_load_error(
        &out,
        "core",
        "load",
        &[
            "core.wasm",
            "core WebAssembly module, not a component",
            "wasm32-wasip2",
        ],
    );
}

#[test]
fn a_component_for_another_abi_version() {
    let out = with_good_neighbour(Agent::new().plugin(
        "future-abi",
        &guest("test_plugin_future_abi"),
        "",
    ));
    // The test plugin targets the latest version with its minor bumped.
    let latest = capability_model::abi::LATEST;
    let (major, rest) = latest.split_once('.').unwrap();
    let minor: u32 = rest.split('.').next().unwrap().parse().unwrap();
    let future = format!("assessment:plugin@{major}.{}.0", minor + 1);
    let supported = format!(
        "supports assessment:plugin {}",
        capability_model::AbiVersion::supported_list()
    );
    assert_load_error(
        &out,
        "future-abi",
        "load",
        &[&future, &supported, "rebuild the plugin"],
    );
}

#[test]
fn an_unknown_config_key() {
    let out = with_good_neighbour(Agent::new().plugin(
        "kernel-params",
        &guest("kernel_params"),
        "config = { alow = [\"x=1\"] }\ngrants = { read = [\"/\"] }",
    ));
    assert_load_error(
        &out,
        "kernel-params",
        "config",
        &[
            "kernel-params",
            "no configuration key `alow`",
            "accepted keys: allow, skip",
        ],
    );
}

#[test]
fn a_config_value_of_the_wrong_kind() {
    let out = with_good_neighbour(Agent::new().plugin(
        "kernel-params",
        &guest("kernel_params"),
        "config = { skip = \"net-ip-forward\" }",
    ));
    assert_load_error(
        &out,
        "kernel-params",
        "config",
        &["`skip` must be a list of strings"],
    );
}

#[test]
fn a_grant_to_a_path_that_does_not_exist_lets_the_plugin_say_its_checks_do_not_apply() {
    let out = Agent::new()
        .plugin(
            "kernel-params",
            &guest("kernel_params"),
            "grants = { read = [\"/proc/sys\"] }",
        )
        .run();
    assert_eq!(out.error_kind("kernel-params"), None, "{:#}", out.report);
    assert!(
        out.stderr
            .contains("read grant /proc/sys does not exist under the assessment root"),
        "{}",
        out.stderr
    );
    let statuses: Vec<_> = out
        .findings("kernel-params")
        .iter()
        .map(|f| f["status"].as_str().unwrap().to_string())
        .collect();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| s == "not-applicable"),
        "{statuses:?}"
    );
}

#[test]
fn a_grant_through_a_file_is_a_grant_error() {
    let agent = Agent::new();
    std::fs::create_dir_all(agent.root().join("etc")).unwrap();
    std::fs::write(
        agent.root().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\n",
    )
    .unwrap();
    let out = with_good_neighbour(agent.plugin(
        "kernel-params",
        &guest("kernel_params"),
        "grants = { read = [\"/etc/passwd/x\"] }",
    ));
    assert_load_error(
        &out,
        "kernel-params",
        "grant",
        &[
            "kernel-params",
            "/etc/passwd",
            "not a directory",
            "grants.read",
        ],
    );
}

#[test]
fn a_component_whose_name_differs_from_the_configuration() {
    let out =
        with_good_neighbour(Agent::new().plugin("sshd-hardening", &guest("kernel_params"), ""));
    assert_load_error(
        &out,
        "sshd-hardening",
        "describe",
        &[
            "describes itself as `kernel-params`",
            "the configuration names it `sshd-hardening`",
        ],
    );
}

#[test]
fn everything_fine_exits_zero() {
    let out = Agent::new()
        .plugin("probe", &guest("test_plugin_probe"), "")
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.report["schema"], "assessment-runtime/run-report@1");
    assert_eq!(out.report["summary"]["jobs"], 1);
    assert_eq!(out.report["summary"]["jobs_failed"], 0);
}

#[test]
fn disabled_plugins_do_not_run() {
    let agent = Agent::new();
    let missing = agent.dir().join("missing.wasm");
    let out = agent
        .plugin("off", &missing, "enabled = false")
        .plugin("probe", &guest("test_plugin_probe"), "")
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.report["jobs"].as_array().unwrap().len(), 1);
}

#[test]
fn a_broken_configuration_file_names_the_field_and_exits_3() {
    let agent = Agent::new().plugin(
        "probe",
        &guest("test_plugin_probe"),
        "grants = { reed = [\"/etc\"] }",
    );
    let out = agent.run();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `reed`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("agent.toml"), "{}", out.stderr);
}

#[test]
fn the_table_output_is_readable() {
    let agent = Agent::new().plugin(
        "probe",
        &guest("test_plugin_probe"),
        "config = { actions = [\"read-file:/etc/passwd\"] }",
    );
    let config = agent.write();
    let output = std::process::Command::new(runtime_bin())
        .args(["run", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("== probe 0.1.0 (sha256:"), "{table}");
    assert!(
        table.contains("ERROR    info      probe  [action 0] read-file:/etc/passwd"),
        "{table}"
    );
    assert!(table.contains("1 call(s) denied by policy"), "{table}");
    assert!(
        table.contains("   provenance: 0 file(s), 0 directory(ies), 0 command(s), 0 environment variable(s), 0 package query(ies), 1 denial(s)\n"),
        "{table}"
    );
    assert!(
        table.contains(
            "1 plugin(s), 0 failed to run; 1 finding(s): 0 pass, 0 fail, 1 error, 0 not applicable, 0 skipped"
        ),
        "{table}"
    );
}

#[test]
fn validate_checks_every_plugin_without_running() {
    let agent = Agent::new()
        .plugin("probe", &guest("test_plugin_probe"), "")
        .plugin("future-abi", &guest("test_plugin_future_abi"), "");
    let config = agent.write();
    let output = std::process::Command::new(runtime_bin())
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("ok      probe@0.1.0 (sha256:"), "{text}");
    assert!(text.contains("FAILED  future-abi: "), "{text}");
}
