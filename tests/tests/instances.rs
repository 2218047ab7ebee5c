//! One plugin configured more than once (`instance`), through the real
//! binary: each instance runs with its own configuration and grants, and
//! its findings are reported apart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use assessment_e2e::{Agent, copy_tree, example_fixture, guest, output_text};

/// Checks the weak fixture fails, and those it passes.
const BAD_FAILS: [&str; 9] = [
    "sshd-permit-root-login",
    "sshd-permit-empty-passwords",
    "sshd-x11-forwarding",
    "sshd-max-auth-tries",
    "sshd-log-level",
    "sshd-login-grace-time",
    "sshd-client-alive-interval",
    "sshd-weak-ciphers",
    "sshd-weak-macs",
];
const BAD_PASSES: [&str; 3] = [
    "sshd-ignore-rhosts",
    "sshd-hostbased-authentication",
    "sshd-permit-user-environment",
];

/// The host's hardened sshd at /etc/ssh, and a weak one in a container's
/// tree at /srv/jail/etc/ssh, whose include is made to stay in that tree
/// (sshd resolves relative includes under /etc/ssh).
fn two_trees() -> Agent {
    let agent = Agent::new().with_tree(&example_fixture("sshd-hardening", "good"));
    let jail = agent.root().join("srv/jail");
    copy_tree(&example_fixture("sshd-hardening", "bad"), &jail);
    let main = jail.join("etc/ssh/sshd_config");
    let text = std::fs::read_to_string(&main).unwrap().replace(
        "Include sshd_config.d/*.conf",
        "Include /srv/jail/etc/ssh/sshd_config.d/*.conf",
    );
    std::fs::write(&main, text).unwrap();
    agent
}

#[test]
fn one_plugin_twice_with_two_trees_and_grants_reports_each_instance_apart() {
    let agent = two_trees()
        .plugin(
            "sshd-hardening",
            &guest("sshd_hardening"),
            "grants = { read = [\"/etc/ssh\"] }",
        )
        .plugin_instance(
            "sshd-hardening",
            "sshd-jail",
            &guest("sshd_hardening"),
            "config = { config_path = \"/srv/jail/etc/ssh/sshd_config\" }\n\
             grants = { read = [\"/srv/jail/etc/ssh\"] }",
        );
    let out = agent.run();
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Two jobs of one plugin, in configuration order, told apart by instance.
    let jobs = out.report["jobs"].as_array().unwrap();
    let keys: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j["plugin"].as_str().unwrap(),
                j["instance"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("sshd-hardening", "sshd-hardening"),
            ("sshd-hardening", "sshd-jail")
        ]
    );
    for job in jobs {
        assert!(job["error"].is_null(), "{job:#}");
        assert_eq!(job["id"]["name"], "sshd-hardening");
        assert_eq!(
            job["denial_count"], 0,
            "each read only its own grant: {job:#}"
        );
    }
    assert_ne!(jobs[0]["job_id"], jobs[1]["job_id"]);

    // The host's tree passes everything.
    let host = out.instance_verdicts("sshd-hardening");
    assert_eq!(host.len(), 12, "{host:?}");
    assert!(host.iter().all(|(_, s)| s == "pass"), "{host:?}");

    // The container's tree, with its own configuration and grant, fails
    // what the weak fixture fails.
    let jail = out.instance_verdicts("sshd-jail");
    assert_eq!(jail.len(), 12, "{jail:?}");
    let status = |check: &str| {
        jail.iter()
            .find(|(c, _)| c == check)
            .unwrap_or_else(|| panic!("no {check} in {jail:?}"))
            .1
            .clone()
    };
    for check in BAD_FAILS {
        assert_eq!(status(check), "fail", "{check}");
    }
    for check in BAD_PASSES {
        assert_eq!(status(check), "pass", "{check}");
    }
    // Its evidence comes from its own tree.
    let x11 = out.instance_job("sshd-jail")["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check_id"] == "sshd-x11-forwarding")
        .unwrap()
        .to_string();
    assert!(
        x11.contains("/srv/jail/etc/ssh/sshd_config.d/50-cloud-init.conf:1"),
        "{x11}"
    );

    let summary = &out.report["summary"];
    assert_eq!(summary["jobs"], 2);
    assert_eq!(summary["pass"], 12 + BAD_PASSES.len());
    assert_eq!(summary["fail"], BAD_FAILS.len());

    // The log names the instance that is not the plugin's name.
    assert!(out.stderr.contains("instance=sshd-jail"), "{}", out.stderr);

    // The table and `validate` tell the two apart.
    let table = agent.command(&["run", "--once"]);
    let text = output_text(&table);
    assert!(
        text.contains("== sshd-hardening ") && text.contains(" as sshd-jail: completed"),
        "{text}"
    );
    let validate = agent.command(&["validate"]);
    let text = String::from_utf8_lossy(&validate.stdout).into_owned();
    assert_eq!(
        validate.status.code(),
        Some(0),
        "{}",
        output_text(&validate)
    );
    let ok: Vec<_> = text.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(ok.len(), 2, "{text}");
    assert!(!ok[0].contains(" as "), "{text}");
    assert!(ok[1].contains(" as sshd-jail"), "{text}");
}

#[test]
fn a_repeated_instance_is_refused_naming_both_entries() {
    let out = Agent::new()
        .plugin_instance("sshd-hardening", "sshd-jail", &guest("sshd_hardening"), "")
        .plugin_instance("sshd-hardening", "sshd-jail", &guest("sshd_hardening"), "")
        .run();
    assert_eq!(out.code, 3, "an unusable configuration: {}", out.stderr);
    assert!(
        out.stderr.contains(
            "plugin[1].instance = \"sshd-jail\": plugin[0] (sshd-hardening as sshd-jail) already has the instance \"sshd-jail\""
        ),
        "{}",
        out.stderr
    );
}
