//! Every capability granted and denied, through the real binary, with the
//! probe test plugin reporting what each call returned.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use assessment_e2e::{Agent, RunOutcome, evidence_value, guest};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Run the probe with `actions` and `grants` against a small tree.
fn probe(actions: &[&str], grants: &str) -> RunOutcome {
    let agent = Agent::new();
    let root = agent.root();
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::create_dir_all(root.join("secret")).unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    std::fs::set_permissions(
        root.join("etc/ssh/sshd_config"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("etc/hostname"), "probe-host\n").unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "PRETTY_NAME=\"Probe OS 1\"\nID=probe\n",
    )
    .unwrap();
    std::fs::write(root.join("secret/key"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink("/secret/key", root.join("etc/ssh/abs-escape")).unwrap();
    std::os::unix::fs::symlink("../../secret/key", root.join("etc/ssh/rel-escape")).unwrap();
    let actions: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
    let out = agent
        .plugin(
            "probe",
            &guest("test_plugin_probe"),
            &format!(
                "config = {{ actions = [{}], greeting = \"hello\", count = 7 }}\ngrants = {grants}",
                actions.join(", ")
            ),
        )
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    out
}

/// (status, output-or-error-kind) per action, in order.
fn outcomes(out: &RunOutcome) -> Vec<(String, String)> {
    out.findings("probe")
        .iter()
        .map(|f| {
            let status = f["status"].as_str().unwrap().to_string();
            let detail = evidence_value(f, "output")
                .or_else(|| evidence_value(f, "error-kind"))
                .unwrap_or_default();
            (status, detail)
        })
        .collect()
}

fn pass(detail: &str) -> (String, String) {
    ("pass".to_string(), detail.to_string())
}

fn refused(kind: &str) -> (String, String) {
    ("error".to_string(), kind.to_string())
}

#[test]
fn files_are_readable_only_inside_read_grants() {
    let out = probe(
        &[
            "read-file:/etc/ssh/sshd_config",
            "read-file:/etc/hostname",
            "read-file:/secret/key",
            "stat:/secret/key",
            "list-dir:/secret",
            "list-dir:/etc/ssh",
            "read-file:/etc/ssh/nope",
        ],
        "{ read = [\"/etc/ssh\"] }",
    );
    let got = outcomes(&out);
    assert_eq!(got[0], pass("PermitRootLogin no\n"));
    assert_eq!(got[1], refused("denied"));
    assert_eq!(got[2], refused("denied"));
    assert_eq!(got[3], refused("denied"));
    assert_eq!(got[4], refused("denied"));
    assert_eq!(got[5], pass("abs-escape,rel-escape,sshd_config"));
    assert_eq!(got[6], refused("not-found"));
    assert_eq!(out.job("probe")["denial_count"], 4);
    // The provenance matches what the plugin did: the file read (the digest
    // of its bytes), the one not found, the listing, and the four denials.
    let provenance = &out.job("probe")["provenance"];
    let files: Vec<_> = provenance["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["call"].clone(), f["path"].clone(), f["error"].clone()))
        .collect();
    assert_eq!(
        files,
        [
            (
                json!("read-file"),
                json!("/etc/ssh/sshd_config"),
                Value::Null
            ),
            (
                json!("read-file"),
                json!("/etc/ssh/nope"),
                json!("not-found")
            ),
        ]
    );
    assert_eq!(
        provenance["files"][0]["sha256"],
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"PermitRootLogin no\n"))
        )
    );
    assert_eq!(provenance["files"][0]["bytes"], 19);
    assert_eq!(provenance["directories"][0]["path"], "/etc/ssh");
    assert_eq!(provenance["directories"][0]["entries"], 3);
    let denied: Vec<_> = provenance["denials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["call"].as_str().unwrap())
        .collect();
    assert_eq!(denied, ["read-file", "read-file", "stat", "list-dir"]);
    assert!(
        provenance["denials"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("/secret/key"),
        "{provenance:#}"
    );
    assert!(
        out.stderr
            .contains("denied: /secret/key is outside the plugin's read grants"),
        "{}",
        out.stderr
    );
}

#[test]
fn path_escapes_are_refused() {
    let out = probe(
        &[
            "read-file:/etc/ssh/../../secret/key",
            "read-file:/etc/ssh/abs-escape",
            "read-file:/etc/ssh/rel-escape",
            "read-file:etc/ssh/sshd_config",
            "stat:/etc/ssh/rel-escape",
        ],
        "{ read = [\"/etc/ssh\"] }",
    );
    for (i, got) in outcomes(&out).into_iter().enumerate() {
        assert_eq!(got, refused("invalid"), "action {i}");
    }
    let text = out.report.to_string();
    assert!(!text.contains("TOP SECRET"), "the secret leaked: {text}");
}

#[test]
fn stat_reports_modes() {
    let out = probe(&["stat:/etc/ssh/sshd_config"], "{ read = [\"/etc\"] }");
    let got = &outcomes(&out)[0];
    assert_eq!(got.0, "pass");
    assert!(
        got.1.contains("kind=EntryKind::File mode=0600") && got.1.contains("size=19"),
        "{got:?}"
    );
}

#[test]
fn host_facts_need_their_grant() {
    let out = probe(&["host-facts:"], "{ read = [] }");
    assert_eq!(outcomes(&out)[0], refused("denied"));
    let out = probe(&["host-facts:"], "{ host_facts = true }");
    let (status, detail) = &outcomes(&out)[0];
    assert_eq!(status, "pass");
    assert!(
        detail.contains("hostname=probe-host")
            && detail.contains("os=Probe OS 1")
            && detail.contains("os-id=probe"),
        "{detail}"
    );
}

#[test]
fn environment_variables_need_their_grant() {
    // The runtime's own environment has PATH and HOME; the plugin sees
    // only what is granted.
    let out = probe(
        &["env-var:PATH", "env-var:HOME", "env-var:NOT_SET_ANYWHERE"],
        "{ env = [\"PATH\", \"NOT_SET_ANYWHERE\"] }",
    );
    let got = outcomes(&out);
    assert_eq!(got[0].0, "pass");
    assert!(!got[0].1.is_empty());
    assert_eq!(got[1], refused("denied"));
    assert_eq!(got[2], pass("<unset>"));
    // The provenance names the variables read and whether they were set,
    // never their values.
    let provenance = &out.job("probe")["provenance"];
    assert_eq!(
        provenance["environment"],
        json!([{ "name": "PATH", "set": true }, { "name": "NOT_SET_ANYWHERE", "set": false }])
    );
    assert_eq!(provenance["denials"][0]["call"], "env-var");
    assert!(
        !provenance.to_string().contains(&got[0].1),
        "the value of PATH is not recorded: {provenance}"
    );
}

#[test]
fn commands_need_their_grant() {
    let out = probe(
        &[
            "run-command:/bin/echo granted",
            "run-command:/bin/cat /etc/passwd",
            "run-command:echo relative",
            "run-command:/nonexistent/tool",
        ],
        "{ commands = [\"/bin/echo\", \"/nonexistent/tool\"] }",
    );
    let got = outcomes(&out);
    assert_eq!(got[0], pass("exit=Some(0) stdout=granted"));
    assert_eq!(got[1], refused("denied"));
    assert_eq!(got[2], refused("invalid"));
    assert_eq!(got[3], refused("not-found"));
    // The provenance: the commands started (program, arguments, exit code)
    // and the one denied.
    let provenance = &out.job("probe")["provenance"];
    let commands = provenance["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 2, "{provenance:#}");
    assert_eq!(commands[0]["program"], "/bin/echo");
    assert_eq!(commands[0]["args"], json!(["granted"]));
    assert_eq!(commands[0]["exit_code"], 0);
    assert!(commands[0]["duration_ms"].is_u64());
    assert_eq!(
        commands[0]["stdout_sha256"],
        format!("sha256:{}", hex::encode(Sha256::digest(b"granted\n")))
    );
    assert_eq!(commands[1]["program"], "/nonexistent/tool");
    assert!(commands[1].get("exit_code").is_none());
    assert!(
        commands[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("not-found"),
        "{provenance:#}"
    );
    assert_eq!(provenance["denials"][0]["call"], "run-command");
    assert!(
        provenance["denials"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("/bin/cat"),
        "{provenance:#}"
    );
    assert_eq!(provenance["denials"].as_array().unwrap().len(), 1);
}

#[test]
fn config_values_reach_the_plugin_typed() {
    let out = probe(&["config:greeting", "config:count", "config:ratio"], "{}");
    let got = outcomes(&out);
    assert_eq!(got[0], pass("Some(Value::Text(\"hello\"))"));
    assert_eq!(got[1], pass("Some(Value::Integer(7))"));
    assert_eq!(got[2], pass("None"));
}

#[test]
fn nothing_is_reachable_without_grants() {
    let out = probe(
        &[
            "read-file:/etc/hostname",
            "list-dir:/",
            "stat:/etc",
            "host-facts:",
            "env-var:PATH",
            "run-command:/bin/echo x",
        ],
        "{}",
    );
    for (i, got) in outcomes(&out).into_iter().enumerate() {
        assert_eq!(got, refused("denied"), "action {i}");
    }
    let job: &Value = out.job("probe");
    assert_eq!(job["denial_count"], 6);
}

#[test]
fn no_ambient_authority_through_the_standard_library() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let written = tempfile::tempdir().unwrap();
    let target = written.path().join("planted");
    let connect = format!("std-connect:127.0.0.1:{port}");
    let write = format!("std-write:{}", target.display());
    // Every grant given: the standard library still reaches nothing.
    let out = probe(
        &[
            "std-read:/etc/passwd",
            "std-read:/etc/ssh/sshd_config",
            write.as_str(),
            "std-env:",
            connect.as_str(),
        ],
        "{ read = [\"/etc\"], env = [\"PATH\"], host_facts = true }",
    );
    for (i, got) in outcomes(&out).into_iter().enumerate() {
        assert_eq!(got, refused("io"), "action {i}");
    }
    assert!(!target.exists(), "the plugin wrote a file on the host");
    assert!(listener.accept().is_err(), "the plugin opened a connection");
}
