//! The adversarial suite: hostile plugins and hostile assessed trees
//! against the real binary. For each attack: the agent stays up and exits
//! on time, a well-behaved plugin in the same cycle still delivers its
//! findings, memory stays bounded where that is the point, and the operator
//! gets one clear line. (The per-run bounds hit by the same hostile plugin,
//! memory, deadline, finding count, log and stdout floods, recursion and
//! panics, are in `limits.rs`; path escapes through `..` and symlinks
//! inside a grant in `capabilities.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use assessment_e2e::{
    Agent, RunOutcome, assert_bystander_ran, evidence_value, guest, with_bystander,
};
use serde_json::Value;

fn hostile(agent: Agent, mode: &str, extra: &str) -> Agent {
    agent.plugin(
        "hostile",
        &guest("test_plugin_hostile"),
        &format!("config = {{ mode = {mode:?} }}\n{extra}"),
    )
}

/// No line of the agent's log was written by the plugin: every forged
/// line start and escape sequence arrives escaped inside a real line.
fn assert_no_forged_lines(stderr: &str) {
    for line in stderr.lines() {
        assert!(
            !line.starts_with("2026-11-29T00:00:00Z"),
            "a plugin forged a log line: {line}"
        );
    }
    for sequence in ["\u{1b}[2J", "\u{1b}[2K", "\u{1b}[31m"] {
        assert!(
            !stderr.contains(sequence),
            "a plugin's escape sequence reached the log"
        );
    }
}

/// The operator gets exactly one error line for the failed job.
fn assert_one_error_line(stderr: &str, plugin: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(plugin))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
}

#[test]
fn a_flood_of_denied_calls_with_megabyte_paths_and_forged_lines_stays_bounded() {
    let agent = with_bystander(hostile(Agent::new(), "denial-flood", ""));
    let run = agent.run_measured(&[], &[]);
    let out = &run.outcome;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let job = out.job("hostile");
    assert_eq!(job["denial_count"], 20_000, "every denial is counted");
    assert_eq!(
        out.findings("hostile")[0]["message"],
        "1000 calls invalid, 20000 denied"
    );
    let denials = job["denials"].as_array().unwrap();
    assert!(denials.len() <= 100, "{}", denials.len());
    for d in denials {
        let d = d.as_str().unwrap();
        assert!(
            d.len() <= 600 && d.contains("truncated") && !d.contains('\n'),
            "{d}"
        );
    }
    // The provenance stays within its bounds: at most 256 entries, at most
    // 64 KiB of them, every path cut, and every call past them counted.
    let provenance = &job["provenance"];
    let listed = |kind: &str| provenance[kind].as_array().unwrap().len() as u64;
    let dropped = |kind: &str| provenance["dropped"][kind].as_u64().unwrap();
    assert_eq!(
        listed("files") + dropped("files"),
        1000,
        "the invalid reads"
    );
    assert_eq!(listed("denials") + dropped("denials"), 20_000);
    assert!(listed("files") + listed("denials") <= 256);
    assert!(dropped("denials") > 0, "the byte budget was reached");
    assert!(provenance.to_string().len() <= (64 << 10) + 1024);
    for f in provenance["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        assert!(path.len() <= 1100 && path.contains("truncated"), "{path}");
        assert_eq!(f["error"], "invalid");
    }
    // The denial log lines spend the run's log budget (64 KiB).
    assert!(
        out.stderr.len() < 256 << 10,
        "{} bytes of log",
        out.stderr.len()
    );
    assert_no_forged_lines(&out.stderr);
    assert!(
        run.peak_rss_kib < 400 << 10,
        "peak RSS {} MiB",
        run.peak_rss_kib >> 10
    );
    assert_bystander_ran(out);
}

#[test]
fn deep_recursion_overflows_the_guest_stack_and_not_the_agent() {
    let out = with_bystander(hostile(Agent::new(), "deep-recursion", "")).run();
    assert_eq!(
        out.error_kind("hostile").as_deref(),
        Some("trap"),
        "{:#}",
        out.job("hostile")
    );
    let message = out.error_message("hostile");
    assert!(message.contains("stack"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    assert_one_error_line(&out.stderr, "hostile");
    assert_bystander_ran(&out);
}

#[test]
fn a_plugin_spinning_in_host_calls_is_stopped_at_its_deadline() {
    let agent = Agent::new();
    std::fs::create_dir_all(agent.root().join("etc")).unwrap();
    let agent = with_bystander(hostile(
        agent,
        "host-call-spin",
        "grants = { read = [\"/etc\"] }\nlimits = { timeout = \"1s\" }",
    ));
    let run = agent.run_measured(&[], &[]);
    let out = &run.outcome;
    assert_eq!(out.error_kind("hostile").as_deref(), Some("deadline"));
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    assert_one_error_line(&out.stderr, "hostile");
    assert_bystander_ran(out);
}

#[test]
fn findings_past_the_byte_budget_are_refused_and_the_first_kept() {
    let agent = with_bystander(hostile(
        Agent::new(),
        "huge-findings",
        "limits = { max_findings_kib = 2048 }",
    ));
    let run = agent.run_measured(&[], &[]);
    let out = &run.outcome;
    assert_eq!(out.error_kind("hostile").as_deref(), Some("finding-limit"));
    assert!(out.error_message("hostile").contains("2048 KiB"));
    // Each finding holds about 540 KB of text: three fit in 2 MiB.
    assert_eq!(out.findings("hostile").len(), 3);
    assert!(
        run.peak_rss_kib < 400 << 10,
        "peak RSS {} MiB",
        run.peak_rss_kib >> 10
    );
    assert_bystander_ran(out);
}

#[test]
fn probing_the_agents_environment_reads_nothing() {
    let agent = with_bystander(hostile(Agent::new(), "env-probe", ""));
    let run = agent.run_measured(&[], &[("SECRET_FOR_TEST", "hunter2")]);
    let out = &run.outcome;
    assert_eq!(out.error_kind("hostile"), None, "{}", out.stderr);
    assert_eq!(
        out.status("hostile", "hostile"),
        "pass",
        "{:#}",
        out.job("hostile")
    );
    assert!(!out.report.to_string().contains("hunter2"));
    assert_eq!(out.job("hostile")["denial_count"], 5);
    assert_bystander_ran(out);
}

#[test]
fn a_megabyte_run_error_with_forged_lines_is_escaped_and_cut() {
    let out = with_bystander(hostile(Agent::new(), "forged-error", "")).run();
    assert_eq!(out.error_kind("hostile").as_deref(), Some("plugin-failed"));
    let message = out.error_message("hostile");
    assert!(message.len() < 3 << 10, "{} bytes", message.len());
    assert!(message.contains("…[truncated"), "{message}");
    assert!(message.contains("\\n2026-11-29") && !message.contains('\n'));
    assert!(out.stderr.len() < 64 << 10, "{} bytes", out.stderr.len());
    assert_no_forged_lines(&out.stderr);
    assert_one_error_line(&out.stderr, "hostile");
    assert_bystander_ran(&out);
}

#[test]
fn log_messages_cannot_forge_lines_or_drive_the_terminal() {
    let out = with_bystander(hostile(Agent::new(), "forged-log", "")).run();
    assert_eq!(out.error_kind("hostile"), None);
    assert!(out.stderr.contains("first\\n2026-11-29"), "{}", out.stderr);
    assert_no_forged_lines(&out.stderr);
    assert_bystander_ran(&out);
}

#[test]
fn a_component_that_traps_in_describe_is_reported_and_the_others_run() {
    let out = with_bystander(Agent::new().plugin(
        "describe-trap",
        &guest("test_plugin_describe_trap"),
        "",
    ))
    .run();
    assert_eq!(out.error_kind("describe-trap").as_deref(), Some("describe"));
    assert!(
        out.error_message("describe-trap")
            .contains("describe() failed"),
        "{}",
        out.error_message("describe-trap")
    );
    assert_bystander_ran(&out);
}

#[test]
fn a_describe_answer_of_megabytes_is_refused_without_carrying_its_text() {
    let run = with_bystander(Agent::new().plugin(
        "describe-huge",
        &guest("test_plugin_describe_huge"),
        "",
    ))
    .run_measured(&[], &[]);
    let out = &run.outcome;
    assert_eq!(out.error_kind("describe-huge").as_deref(), Some("describe"));
    let message = out.error_message("describe-huge");
    assert!(message.contains("256 KiB"), "{message}");
    assert!(out.report.to_string().len() < 64 << 10);
    assert!(out.stderr.len() < 64 << 10);
    assert_no_forged_lines(&out.stderr);
    assert_bystander_ran(out);
}

#[test]
fn a_plugin_claiming_another_plugins_name_is_refused() {
    // The hostile component configured where sshd-hardening is expected
    // (e.g. a swapped file): it describes itself as `hostile`.
    let out = with_bystander(Agent::new().plugin(
        "sshd-hardening",
        &guest("test_plugin_hostile"),
        "config = { mode = \"well-behaved\" }",
    ))
    .run();
    assert_eq!(
        out.error_kind("sshd-hardening").as_deref(),
        Some("describe")
    );
    assert!(
        out.error_message("sshd-hardening")
            .contains("describes itself as `hostile`")
    );
    assert!(out.findings("sshd-hardening").is_empty());
    assert_bystander_ran(&out);
}

// --- hostile assessed trees, through the probe plugin ---

/// Run the probe with `actions` and `grants` over `agent`'s root.
fn probe(agent: Agent, actions: &[&str], grants: &str, extra: &[&str]) -> assessment_e2e::Measured {
    // TOML basic strings: Rust's `{:?}` quoting, with NUL written as TOML
    // spells it.
    let actions: Vec<String> = actions
        .iter()
        .map(|a| format!("{a:?}").replace("\\0", "\\u0000"))
        .collect();
    with_bystander(agent.plugin(
        "probe",
        &guest("test_plugin_probe"),
        &format!(
            "config = {{ actions = [{}] }}\ngrants = {grants}\nlimits = {{ command_timeout = \"1s\", command_output_kib = 64 }}",
            actions.join(", ")
        ),
    ))
    .run_measured(extra, &[])
}

/// The error kind (or `pass`) of each probe action, in order, with the
/// message or output.
fn probe_outcomes(out: &RunOutcome) -> Vec<(String, String)> {
    out.findings("probe")
        .iter()
        .map(|f| match evidence_value(f, "error-kind") {
            Some(kind) => (kind, evidence_value(f, "error").unwrap_or_default()),
            None => (
                "pass".to_string(),
                evidence_value(f, "output").unwrap_or_default(),
            ),
        })
        .collect()
}

/// `/home/alice/.ssh -> ../../secret` in the assessed tree.
fn tree_with_symlinked_grant(agent: &Agent) {
    let root = agent.root();
    std::fs::create_dir_all(root.join("secret")).unwrap();
    std::fs::write(root.join("secret/id_ed25519"), "PRIVATE KEY").unwrap();
    std::fs::create_dir_all(root.join("home/alice")).unwrap();
    std::os::unix::fs::symlink("../../secret", root.join("home/alice/.ssh")).unwrap();
}

fn assert_symlinked_grant_refused(out: &RunOutcome, link: &str) {
    assert_eq!(
        out.error_kind("probe").as_deref(),
        Some("grant"),
        "{:#}",
        out.job("probe")
    );
    let message = out.error_message("probe");
    assert!(
        message.contains(&format!("{link} -> ")) && message.contains("grant the real path"),
        "{message}"
    );
    assert!(!out.report.to_string().contains("PRIVATE KEY"));
    assert_bystander_ran(out);
}

#[test]
fn a_grant_through_a_symlink_in_an_assessed_tree_is_refused() {
    let agent = Agent::new();
    tree_with_symlinked_grant(&agent);
    let run = probe(
        agent,
        &[
            "read-file:/home/alice/.ssh/id_ed25519",
            "list-dir:/home/alice/.ssh",
        ],
        "{ read = [\"/home/alice/.ssh\"] }",
        &[],
    );
    assert_symlinked_grant_refused(&run.outcome, "/home/alice/.ssh");
}

#[test]
fn a_grant_through_a_symlink_on_the_real_root_is_refused() {
    let agent = Agent::new();
    tree_with_symlinked_grant(&agent);
    // The same tree, assessed as part of `/`: the grant names its real
    // location under the machine's root.
    let grant = agent.root().join("home/alice/.ssh");
    let grant = grant.display().to_string();
    let run = probe(
        agent,
        &[&format!("read-file:{grant}/id_ed25519")],
        &format!("{{ read = [{grant:?}] }}"),
        &["--root", "/"],
    );
    let out = &run.outcome;
    assert_eq!(
        out.error_kind("probe").as_deref(),
        Some("grant"),
        "{:#}",
        out.job("probe")
    );
    assert!(
        out.error_message("probe")
            .contains(&format!("{grant} -> ../../secret"))
    );
    assert!(!out.report.to_string().contains("PRIVATE KEY"));
}

#[test]
fn special_files_under_a_grant_are_refused_without_hanging() {
    let agent = Agent::new();
    let etc = agent.root().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(etc.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let _socket = std::os::unix::net::UnixListener::bind(etc.join("socket")).unwrap();
    std::os::unix::fs::symlink("loop-b", etc.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", etc.join("loop-b")).unwrap();
    let run = probe(
        agent,
        &[
            "read-file:/etc/fifo",
            "read-file:/etc/socket",
            "read-file:/etc/loop-a",
            "stat:/etc/fifo",
        ],
        "{ read = [\"/etc\"] }",
        &[],
    );
    let out = &run.outcome;
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    let outcomes = probe_outcomes(out);
    assert_eq!(outcomes[0].0, "invalid", "{outcomes:?}");
    assert!(outcomes[0].1.contains("a FIFO"), "{outcomes:?}");
    assert_eq!(outcomes[1].0, "invalid", "{outcomes:?}");
    assert!(outcomes[1].1.contains("a socket"), "{outcomes:?}");
    assert_eq!(outcomes[2].0, "invalid", "{outcomes:?}");
    assert_eq!(outcomes[3].0, "pass", "stat does not open: {outcomes:?}");
    assert_bystander_ran(out);
}

#[test]
fn device_nodes_are_never_opened() {
    let agent = Agent::new();
    let run = probe(
        agent,
        &[
            "read-file:/dev/zero",
            "read-file:/dev/urandom",
            "read-file:/dev/tty",
        ],
        "{ read = [\"/dev/zero\", \"/dev/urandom\", \"/dev/tty\"] }",
        &["--root", "/"],
    );
    let out = &run.outcome;
    let outcomes = probe_outcomes(out);
    assert_eq!(outcomes.len(), 3, "{:#}", out.job("probe"));
    for (kind, message) in &outcomes {
        assert_eq!(kind, "invalid", "{outcomes:?}");
        assert!(message.contains("character device"), "{outcomes:?}");
    }
}

#[test]
fn the_agents_own_process_is_not_reachable_through_proc() {
    let agent = Agent::new();
    let run = probe(
        agent,
        &[
            "read-file:/proc/self/environ",
            "read-file:/proc/thread-self/environ",
            "list-dir:/proc/self/fd",
            "read-file:/proc/sys/kernel/osrelease",
        ],
        "{ read = [\"/proc\"] }",
        &["--root", "/"],
    );
    let outcomes = probe_outcomes(&run.outcome);
    for outcome in &outcomes[..3] {
        assert_eq!(outcome.0, "denied", "{outcomes:?}");
    }
    assert_eq!(outcomes[3].0, "pass", "{outcomes:?}");
}

#[test]
fn long_paths_nul_bytes_and_non_utf8_names_are_handled_cleanly() {
    let agent = Agent::new();
    let etc = agent.root().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(
        etc.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        "latin-1 name",
    )
    .unwrap();
    let long = format!("read-file:/etc/{}", "a/".repeat(5000));
    let run = probe(
        agent,
        &[&long, "read-file:/etc/a\u{0}b", "list-dir:/etc"],
        "{ read = [\"/etc\"] }",
        &[],
    );
    let outcomes = probe_outcomes(&run.outcome);
    assert_eq!(outcomes.len(), 3, "{:#}", run.outcome.job("probe"));
    assert_eq!(outcomes[0].0, "invalid", "{outcomes:?}");
    assert_eq!(outcomes[1].0, "invalid", "{outcomes:?}");
    assert_eq!(outcomes[2], ("pass".to_string(), "caf\u{fffd}".to_string()));
    assert_bystander_ran(&run.outcome);
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn a_command_that_leaves_a_sleeping_grandchild_is_killed_with_its_group_on_time() {
    let agent = Agent::new();
    // Outside the agent's directory, which goes with the agent.
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("grandchild.pid");
    let forker = script(
        scratch.path(),
        "forker.sh",
        &format!("sleep 300 &\necho $! > {}\nwait", marker.display()),
    );
    let run = probe(
        agent,
        &[&format!("run-command:{forker}")],
        &format!("{{ commands = [{forker:?}] }}"),
        &[],
    );
    let outcomes = probe_outcomes(&run.outcome);
    assert_eq!(outcomes[0].0, "io", "{outcomes:?}");
    assert!(outcomes[0].1.contains("process group"), "{outcomes:?}");
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    let pid = std::fs::read_to_string(&marker).unwrap();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("State:\tZ"),
        "the grandchild survived: {status}"
    );
    assert_bystander_ran(&run.outcome);
}

#[test]
fn a_command_that_prints_gigabytes_is_cut_and_killed() {
    let run = probe(
        Agent::new(),
        &["run-command:/usr/bin/yes"],
        "{ commands = [\"/usr/bin/yes\"] }",
        &[],
    );
    let outcomes = probe_outcomes(&run.outcome);
    assert_eq!(outcomes[0].0, "too-large", "{outcomes:?}");
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    assert!(
        run.peak_rss_kib < 400 << 10,
        "peak RSS {} MiB",
        run.peak_rss_kib >> 10
    );
    assert_bystander_ran(&run.outcome);
}

/// The report of a hostile run is still a valid document.
#[test]
fn the_report_stays_valid_json_whatever_the_plugins_wrote() {
    let out = with_bystander(hostile(Agent::new(), "forged-error", "")).run();
    assert!(matches!(out.report, Value::Object(_)), "{}", out.stderr);
}
