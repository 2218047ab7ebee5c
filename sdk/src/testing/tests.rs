//! The mock host against small plugins defined here: grants, symlinks,
//! limits, configuration, findings and `describe` checks.

use std::cell::RefCell;

use super::*;
use crate::{
    BenchmarkRef, Check, PluginInfo, RunError, RunSummary, Severity, Status, SubjectKind,
    ValueKind, config, env, fs, host, log, process,
};

const FILE: Check = Check::new("probe-file", "A file is read", Severity::Low)
    .references(&[BenchmarkRef::new("Test", "1.1")]);

/// What the probe plugin does in `run`.
type Script = Box<dyn Fn() -> Result<RunSummary, RunError>>;

thread_local! {
    /// The probe's script, set by each test.
    static SCRIPT: RefCell<Option<Script>> = RefCell::new(None);
}

/// A plugin whose `run` is the closure the test installs.
struct Probe;

impl Plugin for Probe {
    fn describe() -> PluginInfo {
        PluginInfo::new("probe", "1.2.3-rc.1+build.5", "Test plugin")
            .check(&FILE)
            .config_option("limit", ValueKind::Integer, "a number")
            .config_option("ratio", ValueKind::Float, "a ratio")
            .config_option("names", ValueKind::TextList, "names")
    }

    fn run() -> Result<RunSummary, RunError> {
        SCRIPT.with(|s| (s.borrow().as_ref().expect("no script"))())
    }
}

fn with_script<T>(
    script: impl Fn() -> Result<RunSummary, RunError> + 'static,
    body: impl FnOnce() -> T,
) -> T {
    SCRIPT.with(|s| *s.borrow_mut() = Some(Box::new(script)));
    let out = body();
    SCRIPT.with(|s| *s.borrow_mut() = None);
    out
}

/// Run `script` as the probe's `run` on `host`, collecting what one call
/// returned.
fn probe<T: 'static>(host: MockHost, call: impl Fn() -> T + 'static) -> (T, MockRun) {
    let out: std::rc::Rc<RefCell<Option<T>>> = std::rc::Rc::new(RefCell::new(None));
    let sink = out.clone();
    let run = with_script(
        move || {
            *sink.borrow_mut() = Some(call());
            Ok(RunSummary::default())
        },
        || host.run::<Probe>(),
    );
    let value = out.borrow_mut().take().expect("the script ran");
    (value, run)
}

fn tree() -> FixtureTree {
    let t = FixtureTree::empty().unwrap();
    t.write("etc/ssh/sshd_config", "PermitRootLogin no\n")
        .unwrap();
    t.write("etc/ssh/sshd_config.d/10-a.conf", "LogLevel VERBOSE\n")
        .unwrap();
    t.write("etc/shadow", "root:*:1::::::\n").unwrap();
    t.write("etc/passwd", "root:x:0:0::/root:/bin/sh\n")
        .unwrap();
    t.write("etc/hostname", "fixture-host\n").unwrap();
    t.write(
        "etc/os-release",
        "PRETTY_NAME=\"Fixture 1\"\nID=fixture\nVERSION_ID=\"1.0\"\n",
    )
    .unwrap();
    t.write("big", vec![b'x'; 2048]).unwrap();
    t.symlink("etc/ssh/abs-link", "/etc/shadow").unwrap();
    t.symlink("etc/ssh/rel-link", "../shadow").unwrap();
    t.symlink("etc/ssh/inner-link", "sshd_config").unwrap();
    t.symlink("etc/ssh/dir-link", "sshd_config.d/../sshd_config.d")
        .unwrap();
    t.symlink("etc/ssh/loop", "loop").unwrap();
    t
}

fn host(t: &FixtureTree) -> MockHost {
    MockHost::new().root(t.path())
}

#[test]
fn reads_inside_grants_and_denies_the_rest() {
    let t = tree();
    let h = host(&t).grant_read("/etc/ssh").grant_read("/etc/passwd");
    let (r, run) = probe(h.clone(), || fs::read_to_string("/etc/ssh/sshd_config"));
    assert_eq!(r.unwrap(), "PermitRootLogin no\n");
    assert!(run.denials.is_empty());
    let (r, _) = probe(h.clone(), || fs::read_file("/etc/passwd"));
    assert!(r.is_ok());
    let (r, run) = probe(h.clone(), || fs::read_file("/etc/shadow"));
    assert!(
        matches!(r, Err(AccessError::Denied(m)) if m.contains("outside the plugin's read grants"))
    );
    assert_eq!(
        run.denials,
        ["read-file: /etc/shadow is outside the plugin's read grants"]
    );
    let (r, _) = probe(h.clone(), || fs::read_file("/etc/ssh/missing"));
    assert!(matches!(r, Err(AccessError::NotFound(_))), "{r:?}");
    let (r, _) = probe(h.clone(), || fs::read_file("/etc/ssh"));
    assert!(matches!(r, Err(AccessError::Invalid(m)) if m.contains("a directory")));
    let (r, _) = probe(h.clone(), || fs::read_optional("/etc/ssh/none"));
    assert_eq!(r.unwrap(), None);
    // A sibling whose name starts like a grant is not under it.
    let (r, _) = probe(h, || fs::read_file("/etc/passwd-"));
    assert!(matches!(r, Err(AccessError::Denied(_))), "{r:?}");
}

#[test]
fn relative_paths_and_dot_dot_are_invalid() {
    let t = tree();
    let h = host(&t).grant_read("/etc/ssh");
    for path in [
        "etc/ssh/sshd_config",
        "/etc/ssh/../shadow",
        "/etc/ssh/sshd_config.d/..",
        "",
    ] {
        let (r, run) = probe(h.clone(), move || fs::read_file(path));
        assert!(matches!(r, Err(AccessError::Invalid(_))), "{path}: {r:?}");
        assert!(run.denials.is_empty(), "invalid is not a denial");
    }
    let long = format!("/etc/ssh/{}", "a".repeat(4100));
    let (r, _) = probe(h.clone(), move || fs::stat(&long));
    assert!(matches!(r, Err(AccessError::Invalid(m)) if m.contains("4096")));
    // `.` components are harmless.
    let (r, _) = probe(h, || fs::read_file("/etc/./ssh/sshd_config"));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn symlinks_are_followed_only_inside_the_grant() {
    let t = tree();
    let h = host(&t).grant_read("/etc/ssh");
    let (r, _) = probe(h.clone(), || fs::read_to_string("/etc/ssh/inner-link"));
    assert_eq!(r.unwrap(), "PermitRootLogin no\n");
    let (r, _) = probe(h.clone(), || fs::list_dir("/etc/ssh/dir-link"));
    assert_eq!(r.unwrap()[0].name, "10-a.conf");
    for link in ["/etc/ssh/abs-link", "/etc/ssh/rel-link"] {
        let (r, _) = probe(h.clone(), move || fs::read_file(link));
        assert!(
            matches!(&r, Err(AccessError::Invalid(m)) if m.contains("outside the granted path")),
            "{link}: {r:?}"
        );
    }
    let (r, _) = probe(h.clone(), || fs::read_file("/etc/ssh/loop"));
    assert!(matches!(r, Err(AccessError::Invalid(m)) if m.contains("loop")));
    // Granting /etc makes ../shadow reachable, but an absolute target never is.
    let h = host(&t).grant_read("/etc");
    let (r, _) = probe(h.clone(), || fs::read_to_string("/etc/ssh/rel-link"));
    assert_eq!(r.unwrap(), "root:*:1::::::\n");
    let (r, _) = probe(h, || fs::read_file("/etc/ssh/abs-link"));
    assert!(matches!(r, Err(AccessError::Invalid(_))), "{r:?}");
}

#[test]
fn list_dir_reports_kinds_sorted_and_stat_follows_links() {
    let t = tree();
    let h = host(&t).grant_read("/etc/ssh");
    let (r, _) = probe(h.clone(), || fs::list_dir("/etc/ssh"));
    let entries: Vec<(String, EntryKindName)> = r
        .unwrap()
        .into_iter()
        .map(|e| (e.name, EntryKindName::of(e.kind)))
        .collect();
    assert_eq!(
        entries,
        [
            ("abs-link".to_string(), EntryKindName::Symlink),
            ("dir-link".to_string(), EntryKindName::Symlink),
            ("inner-link".to_string(), EntryKindName::Symlink),
            ("loop".to_string(), EntryKindName::Symlink),
            ("rel-link".to_string(), EntryKindName::Symlink),
            ("sshd_config".to_string(), EntryKindName::File),
            ("sshd_config.d".to_string(), EntryKindName::Directory),
        ]
    );
    t.set_mode("etc/ssh/sshd_config", 0o640).unwrap();
    let (r, _) = probe(h.clone(), || fs::stat("/etc/ssh/inner-link"));
    let st = r.unwrap();
    assert_eq!(EntryKindName::of(st.kind), EntryKindName::File);
    assert_eq!(st.mode, 0o640);
    assert_eq!(st.size, 19);
    assert_eq!(st.links, 1);
    let (r, _) = probe(h, || fs::exists("/etc/ssh/nothing"));
    assert!(!r.unwrap());
}

#[test]
fn file_grants_are_exact_and_never_follow_a_symlink() {
    let t = tree();
    t.write("etc/motd", "hello\n").unwrap();
    let h = host(&t).grant_read("/etc/passwd").grant_read("/etc/motd");
    let (r, _) = probe(h.clone(), || fs::list_dir("/etc/passwd"));
    assert!(matches!(r, Err(AccessError::Invalid(m)) if m.contains("granted file")));
    let (r, _) = probe(h.clone(), || fs::read_file("/etc/passwd/x"));
    assert!(matches!(r, Err(AccessError::Invalid(m)) if m.contains("is a file")));
    // A granted file replaced by a symlink during the run is not followed.
    let motd = t.path().join("etc/motd");
    let (r, _) = probe(h, move || {
        std::fs::remove_file(&motd).unwrap();
        std::os::unix::fs::symlink("passwd", &motd).unwrap();
        fs::read_file("/etc/motd")
    });
    assert!(matches!(r, Err(AccessError::Invalid(m)) if m.contains("is a symlink to passwd")));
}

#[test]
fn grants_must_resolve_under_the_root() {
    let t = tree();
    t.symlink("link-to-etc", "etc").unwrap();
    let refuse = |h: MockHost, needle: &str| {
        let err = with_script(|| Ok(RunSummary::default()), || h.try_run::<Probe>())
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, MockError::Grant(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    };
    refuse(host(&t).grant_read("/etc/passwd/x"), "not a directory");
    refuse(
        host(&t).grant_read("/link-to-etc/ssh"),
        "passes through the symlink",
    );
    refuse(host(&t).grant_read("etc"), "not an absolute path");
    refuse(
        MockHost::new().grant_read("/etc"),
        "need an assessment root",
    );
    refuse(
        MockHost::new().grant_command("echo"),
        "absolute program path",
    );
    refuse(
        MockHost::new().grant_env("A-B"),
        "environment variable name",
    );
    let missing = MockHost::new().root(t.path().join("nope"));
    let err = with_script(|| Ok(RunSummary::default()), || missing.try_run::<Probe>())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, MockError::Root { .. }), "{err}");
}

#[test]
fn calls_under_a_grant_missing_from_the_tree_are_not_found() {
    let t = tree();
    let h = host(&t).grant_read("/opt/app").grant_read("/etc/ssh");
    let (r, run) = probe(h, || fs::read_file("/opt/app/config"));
    assert!(
        matches!(&r, Err(AccessError::NotFound(m)) if m.contains("nor does its grant /opt/app")),
        "{r:?}"
    );
    assert!(run.denials.is_empty(), "not a denial");
}

#[test]
fn files_above_the_limit_are_too_large_and_ranges_read_windows() {
    let t = tree();
    let h = host(&t).grant_read("/big").max_file_bytes(1024);
    let (r, _) = probe(h.clone(), || fs::read_file("/big"));
    assert!(matches!(r, Err(AccessError::TooLarge(m)) if m.contains("larger than 1024")));
    let (r, _) = probe(h.clone(), || fs::read_range("/big", 2000, 100));
    assert_eq!(r.unwrap().len(), 48);
    let (r, _) = probe(h.clone(), || fs::read_range("/big", 4000, 100));
    assert!(r.unwrap().is_empty());
    let (r, _) = probe(h, || fs::read_range("/big", 0, 1025));
    assert!(matches!(r, Err(AccessError::TooLarge(_))));
}

#[test]
fn commands_env_and_facts_answer_only_when_granted() {
    let t = tree();
    let h = host(&t)
        .command_stdout("/usr/bin/dpkg-query", &["-W", "openssh-server"], "1:9.2\n")
        .command_error(
            "/usr/bin/slow",
            &[],
            AccessError::Io("timed out".to_string()),
        )
        .env("LANG", "C.UTF-8")
        .grant_env("UNSET")
        .grant_host_facts();
    let (r, _) = probe(h.clone(), || {
        process::run_command("/usr/bin/dpkg-query", &["-W", "openssh-server"])
    });
    let out = r.unwrap();
    assert_eq!((out.exit_code, out.stdout), (Some(0), b"1:9.2\n".to_vec()));
    let (r, _) = probe(h.clone(), || {
        process::run_command("/usr/bin/dpkg-query", &["-l"])
    });
    assert!(matches!(r, Err(AccessError::Io(m)) if m.contains("no output for arguments")));
    let (r, _) = probe(h.clone(), || process::run_command("/usr/bin/slow", &[]));
    assert!(matches!(r, Err(AccessError::Io(m)) if m == "timed out"));
    let (r, run) = probe(h.clone(), || process::run_command("/bin/sh", &["-c", "id"]));
    assert!(matches!(r, Err(AccessError::Denied(_))));
    assert_eq!(run.denials.len(), 1);
    let (r, _) = probe(h.clone(), || process::run_command("sh", &[]));
    assert!(matches!(r, Err(AccessError::Invalid(_))));

    let (r, _) = probe(h.clone(), || {
        (
            env::var("LANG"),
            env::var("UNSET"),
            env::var("HOME"),
            env::var("1X"),
        )
    });
    assert_eq!(r.0.unwrap().as_deref(), Some("C.UTF-8"));
    assert_eq!(r.1.unwrap(), None);
    assert!(matches!(r.2, Err(AccessError::Denied(_))));
    assert!(matches!(r.3, Err(AccessError::Invalid(_))));

    let (r, _) = probe(h, host::facts);
    let facts = r.unwrap();
    assert_eq!(facts.hostname, "fixture-host");
    assert_eq!(
        (facts.os.as_str(), facts.os_id.as_str()),
        ("Fixture 1", "fixture")
    );
    assert_eq!(facts.os_version, "1.0");
    let (r, _) = probe(host(&t), host::facts);
    assert!(matches!(r, Err(AccessError::Denied(_))));
}

#[test]
fn installed_packages_answer_only_when_granted() {
    let h =
        MockHost::new().installed_packages([package("telnet", "0.17-44"), package("bash", "5.2")]);
    let (r, _) = probe(h, crate::imports::packages::installed);
    let names: Vec<String> = r.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        ["bash", "telnet"],
        "sorted by name, as the host returns them"
    );
    let h = MockHost::new().installed_packages_error(AccessError::NotFound("no database".into()));
    let (r, _) = probe(h, crate::imports::packages::installed);
    assert!(matches!(r, Err(AccessError::NotFound(_))));
    let (r, run) = probe(MockHost::new(), crate::imports::packages::installed);
    assert!(matches!(r, Err(AccessError::Denied(m)) if m.contains("grants.packages")));
    assert_eq!(run.denials.len(), 1);
}

#[test]
fn configuration_is_checked_against_describe() {
    let h = MockHost::new()
        .config("limit", 3)
        .config("ratio", 2)
        .config("names", ["a", "b"]);
    let (r, _) = probe(h, || {
        (
            config::integer("limit"),
            config::float("ratio"),
            config::string_list_or_empty("names"),
            config::keys(),
        )
    });
    assert_eq!(r.0.unwrap(), Some(3));
    assert_eq!(r.1.unwrap(), Some(2.0));
    assert_eq!(r.2.unwrap(), ["a", "b"]);
    assert_eq!(r.3, ["limit", "names", "ratio"]);

    for (h, needle) in [
        (
            MockHost::new().config("other", 1),
            "has no configuration key `other`",
        ),
        (
            MockHost::new().config("limit", "3"),
            "`limit` must be an integer",
        ),
    ] {
        let err = h.try_run::<Probe>().map(|_| ()).unwrap_err();
        assert!(matches!(err, MockError::Config(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn findings_are_validated_like_the_host() {
    let h = MockHost::new();
    let (results, run) = probe(h, || {
        vec![
            FILE.pass("ok").subject(SubjectKind::File, "/a").emit(),
            FILE.fail("again").subject(SubjectKind::File, "/a").emit(),
            FILE.fail("other subject")
                .subject(SubjectKind::File, "/b")
                .emit(),
            FILE.pass("whole system").emit(),
            Check::new("unknown", "x", Severity::Low).pass("x").emit(),
            FILE.pass("bad subject")
                .subject(SubjectKind::File, "a\nb")
                .emit(),
            FILE.pass("x".repeat(5000))
                .subject(SubjectKind::File, "/c")
                .emit(),
        ]
    });
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    for (i, needle) in [
        (1, "already reported for file \"/a\""),
        (4, "not announced by describe()"),
        (5, "control characters"),
        (6, "message is 5000 bytes"),
    ] {
        assert!(
            matches!(&results[i], Err(EmitError::Invalid(m)) if m.contains(needle)),
            "{i}: {:?}",
            results[i]
        );
    }
    assert_eq!(run.findings.len(), 3);
    assert_eq!(run.rejected.len(), 4);
    assert_eq!(run.finding_for("probe-file", "/b").status, Status::Fail);
    assert_eq!(run.find("probe-file", "/c").map(|f| f.status), None);
    assert_eq!(run.checks_with(Status::Fail), ["probe-file"]);
    assert!(run.completed(), "the plugin ignored the refusals");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run.assert_completed();
    }));
    assert!(panicked.is_err(), "refused findings fail assert_completed");
}

#[test]
fn the_finding_limit_is_enforced() {
    let h = MockHost::new().max_findings(2);
    let (results, run) = probe(h, || {
        (0..3)
            .map(|i| {
                FILE.pass("ok")
                    .subject(SubjectKind::Other, format!("s{i}"))
                    .emit()
            })
            .collect::<Vec<_>>()
    });
    assert!(matches!(results[2], Err(EmitError::LimitReached(2))));
    assert!(run.limit_reached && !run.completed());
    assert_eq!(run.findings.len(), 2);
}

#[test]
fn logs_results_and_run_errors_are_returned() {
    let run = with_script(
        || {
            log::warn("careful");
            FILE.error("cannot read").emit()?;
            Err(RunError::Failed("gave up".to_string()))
        },
        || MockHost::new().run::<Probe>(),
    );
    assert_eq!(run.logs.len(), 1);
    assert_eq!(run.logs[0].message, "careful");
    assert!(matches!(
        run.logs[0].level,
        crate::bindings::assessment::plugin::log::Level::Warn
    ));
    assert!(matches!(&run.result, Err(RunError::Failed(m)) if m == "gave up"));
    assert_eq!(run.status("probe-file"), Status::Error);
    assert!(!run.completed());
}

#[test]
fn describe_is_checked_and_runs_without_grants() {
    assert_eq!(describe::<Probe>().checks[0].references[0].id, "1.1");

    struct Bad<const N: usize>;
    impl<const N: usize> Plugin for Bad<N> {
        fn describe() -> PluginInfo {
            match N {
                0 => PluginInfo::new("Bad_Name", "1.0.0", ""),
                1 => PluginInfo::new("bad", "1.0", ""),
                2 => PluginInfo::new("bad", "1.0.0", "")
                    .check(&FILE)
                    .check(&FILE),
                3 => PluginInfo::new("bad", "01.0.0", ""),
                _ => {
                    // A describe that reads the system is denied.
                    let denied =
                        matches!(fs::read_file("/etc/passwd"), Err(AccessError::Denied(_)));
                    PluginInfo::new(if denied { "denied" } else { "read" }, "1.0.0", "")
                }
            }
        }
        fn run() -> Result<RunSummary, RunError> {
            Ok(RunSummary::default())
        }
    }
    for (err, needle) in [
        (try_describe::<Bad<0>>(), "not a plugin name"),
        (try_describe::<Bad<1>>(), "not a semantic version"),
        (try_describe::<Bad<2>>(), "announced twice"),
        (try_describe::<Bad<3>>(), "not a semantic version"),
    ] {
        let err = err.map(|_| ()).unwrap_err();
        assert!(matches!(err, MockError::Describe(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert_eq!(describe::<Bad<4>>().name, "denied");
}

#[test]
fn calls_outside_a_run_panic_with_advice() {
    let panicked = std::panic::catch_unwind(|| fs::read_file("/etc/passwd"));
    let message = panicked
        .unwrap_err()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(message.contains("MockHost::run"), "{message}");
}

#[test]
fn a_panicking_plugin_leaves_no_active_session() {
    let panicked = std::panic::catch_unwind(|| {
        with_script(|| panic!("plugin bug"), || MockHost::new().run::<Probe>())
    });
    assert!(panicked.is_err());
    SCRIPT.with(|s| *s.borrow_mut() = None);
    let run = with_script(
        || Ok(RunSummary::default()),
        || MockHost::new().run::<Probe>(),
    );
    assert!(run.completed());
}

#[test]
fn semantic_versions() {
    use super::session::is_semver;
    for ok in [
        "0.1.0",
        "1.2.3-alpha.1",
        "1.0.0+20130313144700",
        "1.0.0-0.3.7",
    ] {
        assert!(is_semver(ok), "{ok}");
    }
    for bad in ["1.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+", "1..0"] {
        assert!(!is_semver(bad), "{bad}");
    }
}

/// `EntryKind` without `Debug`-based comparisons.
#[derive(Debug, PartialEq, Eq)]
enum EntryKindName {
    File,
    Directory,
    Symlink,
    Other,
}

impl EntryKindName {
    fn of(kind: crate::fs::EntryKind) -> Self {
        match kind {
            crate::fs::EntryKind::File => Self::File,
            crate::fs::EntryKind::Directory => Self::Directory,
            crate::fs::EntryKind::Symlink => Self::Symlink,
            crate::fs::EntryKind::Other => Self::Other,
        }
    }
}
