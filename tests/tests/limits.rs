//! Every per-run bound, hit by the hostile test plugin, while a
//! well-behaved plugin in the same cycle still runs to completion.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use assessment_e2e::{Agent, assert_bystander_ran, guest, with_bystander};

fn hostile(agent: Agent, mode: &str, limits: &str) -> Agent {
    agent.plugin(
        "hostile",
        &guest("test_plugin_hostile"),
        &format!("config = {{ mode = {mode:?} }}\nlimits = {limits}"),
    )
}

#[test]
fn memory_limit_stops_the_plugin_and_not_the_others() {
    let out = with_bystander(hostile(Agent::new(), "memory-hog", "{ memory_mib = 16 }")).run();
    assert_eq!(out.code, 1, "a failed job makes the exit code non-zero");
    assert_eq!(
        out.error_kind("hostile").as_deref(),
        Some("memory-limit"),
        "{:#}",
        out.job("hostile")
    );
    assert!(
        out.error_message("hostile").contains("16 MiB"),
        "{}",
        out.error_message("hostile")
    );
    assert_bystander_ran(&out);
}

#[test]
fn deadline_stops_a_spinning_plugin() {
    let started = std::time::Instant::now();
    let out = with_bystander(hostile(Agent::new(), "spin", "{ timeout = \"1s\" }")).run();
    assert_eq!(out.code, 1);
    assert_eq!(
        out.error_kind("hostile").as_deref(),
        Some("deadline"),
        "{:#}",
        out.job("hostile")
    );
    assert!(out.error_message("hostile").contains("1s"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_bystander_ran(&out);
}

#[test]
fn finding_limit_keeps_the_first_findings() {
    let out = with_bystander(hostile(
        Agent::new(),
        "finding-flood",
        "{ max_findings = 25 }",
    ))
    .run();
    assert_eq!(out.error_kind("hostile").as_deref(), Some("finding-limit"));
    assert_eq!(out.findings("hostile").len(), 25);
    assert_bystander_ran(&out);
}

#[test]
fn log_budget_drops_excess_and_the_run_completes() {
    for mode in ["log-flood", "stdout-flood"] {
        let out = hostile(Agent::new(), mode, "{ log_kib = 4 }").run();
        assert_eq!(out.code, 0, "{mode}: {:#}", out.job("hostile"));
        assert_eq!(out.status("hostile", "hostile"), "pass", "{mode}");
        let dropped = out.job("hostile")["log_dropped_bytes"].as_u64().unwrap();
        assert!(dropped > 1_000_000, "{mode}: dropped {dropped}");
        assert!(out.stderr.contains("plugin log budget spent"), "{mode}");
        assert!(
            out.stderr.len() < 64 * 1024,
            "{mode}: stderr is {} bytes",
            out.stderr.len()
        );
    }
}

#[test]
fn panics_and_plugin_errors_are_reported_as_such() {
    for (mode, kind) in [
        ("panic", "trap"),
        ("fail", "plugin-failed"),
        ("invalid-config", "plugin-config"),
    ] {
        let out = with_bystander(hostile(Agent::new(), mode, "{}")).run();
        assert_eq!(out.code, 1, "{mode}");
        assert_eq!(
            out.error_kind("hostile").as_deref(),
            Some(kind),
            "{mode}: {:#}",
            out.job("hostile")
        );
        assert_bystander_ran(&out);
    }
    let out = hostile(Agent::new(), "panic", "{}").run();
    assert!(
        out.stderr.contains("hostile plugin panicked on purpose"),
        "the panic message reaches the log: {}",
        out.stderr
    );
}

#[test]
fn findings_for_unannounced_checks_are_refused() {
    let out = hostile(Agent::new(), "bad-check-id", "{}").run();
    assert_eq!(out.error_kind("hostile").as_deref(), Some("plugin-failed"));
    assert!(
        out.error_message("hostile").contains("not announced"),
        "{}",
        out.error_message("hostile")
    );
    assert!(out.findings("hostile").is_empty());
}

#[test]
fn a_component_over_its_size_limit_is_refused_unread_and_says_which_limit_to_raise() {
    let agent = Agent::new();
    let big = agent.dir().join("big.wasm");
    let mut bytes = std::fs::read(guest("test_plugin_probe")).unwrap();
    bytes.resize(3 << 20, 0);
    std::fs::write(&big, &bytes).unwrap();
    let out = with_bystander(agent.plugin("probe", &big, "limits = { component_mib = 2 }")).run();
    assert_eq!(out.error_kind("probe").as_deref(), Some("load"));
    let message = out.error_message("probe");
    assert!(
        message.contains("3145728 bytes is more than the 2097152-byte limit")
            && message.contains("raise `limits.component_mib`"),
        "{message}"
    );
    assert_bystander_ran(&out);
}

/// Where the system cannot reserve the instance pool (here an address-space
/// limit far below the pool's reservation), instances are allocated on
/// demand: one warning, and the plugins still run.
#[test]
fn a_pool_the_system_cannot_reserve_falls_back_to_allocation_on_demand() {
    let agent = Agent::new().plugin("bench-probe", &guest("bench_probe"), "");
    let config = agent.write();
    let run = |limit_kib: Option<u64>| {
        let ulimit = limit_kib.map_or(String::new(), |kib| format!("ulimit -v {kib}; "));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{ulimit}exec \"$0\" run --once --output json --config \"$1\""
            ))
            .arg(assessment_e2e::runtime_bin())
            .arg(&config)
            .env("ASSESSMENT_RUNTIME_LOG", "debug")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(
            report["jobs"][0]["findings"][0]["status"], "pass",
            "{report:#}\n{stderr}"
        );
        stderr
    };

    let unlimited = run(None);
    assert!(
        unlimited.contains("plugin instance pool reserved"),
        "{unlimited}"
    );
    assert!(!unlimited.contains("cannot reserve"), "{unlimited}");

    // 16 GiB of address space: enough for one plugin's memory, far from
    // the pool's (over 100 GiB for the default two jobs at once).
    let limited = run(Some(16 << 20));
    let warnings: Vec<&str> = limited
        .lines()
        .filter(|l| l.contains("cannot reserve the plugin instance pool"))
        .collect();
    assert_eq!(warnings.len(), 1, "{limited}");
    assert!(warnings[0].contains("WARN"), "{limited}");
    assert!(
        !limited.contains("plugin instance pool reserved"),
        "{limited}"
    );
}
