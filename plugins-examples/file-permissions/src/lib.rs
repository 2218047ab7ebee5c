//! File permissions: CIS-benchmark-style checks of the owner, group and
//! mode of sensitive system files (account databases, SSH daemon
//! configuration and host keys, the system crontab).
//!
//! Grants it needs: `read = ["/etc/passwd", "/etc/passwd-", "/etc/group",
//! "/etc/group-", "/etc/shadow", "/etc/shadow-", "/etc/gshadow",
//! "/etc/gshadow-", "/etc/crontab", "/etc/ssh"]` (or `["/etc"]`). A file
//! that is not granted gets an `error` finding naming the grant to add.

use assessment_sdk::{
    AccessError, BenchmarkRef, Check, FindingBuilder, Plugin, PluginInfo, RunError, RunSummary,
    Severity, SubjectKind, ValueKind, config, fs, register,
};

/// Item `id` of the CIS Debian Linux 12 benchmark.
const fn cis(id: &'static str) -> BenchmarkRef {
    BenchmarkRef::new("CIS Debian Linux 12", id)
}

/// One rule: a file (or a family of files), its strictest acceptable mode
/// and who must own it.
struct Rule {
    check: Check,
    path: &'static str,
    /// Bits that may be set; any other permission bit fails the check.
    max_mode: u32,
    /// The file's group may be root or one of the `shadow` groups.
    shadow_group: bool,
    /// A missing file is a failure (otherwise the check does not apply).
    required: bool,
}

const fn rule(
    id: &'static str,
    title: &'static str,
    references: &'static [BenchmarkRef],
    path: &'static str,
    max_mode: u32,
    shadow_group: bool,
    required: bool,
) -> Rule {
    Rule {
        check: Check::new(id, title, Severity::High).references(references),
        path,
        max_mode,
        shadow_group,
        required,
    }
}

const RULES: [Rule; 9] = [
    rule(
        "perm-etc-passwd",
        "/etc/passwd is 0644 or stricter, owned by root",
        &[cis("7.1.1")],
        "/etc/passwd",
        0o644,
        false,
        true,
    ),
    rule(
        "perm-etc-passwd-backup",
        "/etc/passwd- is 0644 or stricter, owned by root",
        &[cis("7.1.2")],
        "/etc/passwd-",
        0o644,
        false,
        false,
    ),
    rule(
        "perm-etc-group",
        "/etc/group is 0644 or stricter, owned by root",
        &[cis("7.1.3")],
        "/etc/group",
        0o644,
        false,
        true,
    ),
    rule(
        "perm-etc-group-backup",
        "/etc/group- is 0644 or stricter, owned by root",
        &[cis("7.1.4")],
        "/etc/group-",
        0o644,
        false,
        false,
    ),
    rule(
        "perm-etc-shadow",
        "/etc/shadow is 0640 or stricter, owned by root",
        &[cis("7.1.5")],
        "/etc/shadow",
        0o640,
        true,
        true,
    ),
    rule(
        "perm-etc-shadow-backup",
        "/etc/shadow- is 0640 or stricter, owned by root",
        &[cis("7.1.6")],
        "/etc/shadow-",
        0o640,
        true,
        false,
    ),
    rule(
        "perm-etc-gshadow",
        "/etc/gshadow is 0640 or stricter, owned by root",
        &[cis("7.1.7")],
        "/etc/gshadow",
        0o640,
        true,
        false,
    ),
    rule(
        "perm-etc-crontab",
        "/etc/crontab is 0600 or stricter, owned by root",
        &[cis("2.4.1.2")],
        "/etc/crontab",
        0o600,
        false,
        false,
    ),
    rule(
        "perm-sshd-config",
        "/etc/ssh/sshd_config is 0600 or stricter, owned by root",
        &[cis("5.1.1")],
        "/etc/ssh/sshd_config",
        0o600,
        false,
        false,
    ),
];

const HOST_KEYS: Check = Check::new(
    "perm-ssh-host-private-keys",
    "SSH host private keys are 0600 or stricter, owned by root",
    Severity::High,
)
.references(&[cis("5.1.2")]);

/// Who must own the files: root (uid 0, gid 0) unless configured otherwise
/// (e.g. to assess an image unpacked by an unprivileged user).
struct Owners {
    uid: u32,
    gids: Vec<u32>,
    shadow_gids: Vec<u32>,
}

struct FilePermissions;

impl Plugin for FilePermissions {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "file-permissions",
            env!("CARGO_PKG_VERSION"),
            "Checks owner, group and mode of sensitive system files against CIS benchmark items",
        )
        .checks(RULES.iter().map(|r| &r.check))
        .check(&HOST_KEYS)
        .config_option(
            "expected_uid",
            ValueKind::Integer,
            "uid that must own the files (default 0)",
        )
        .config_option(
            "expected_gid",
            ValueKind::Integer,
            "gid that may own the files (default 0)",
        )
        .config_option(
            "shadow_groups",
            ValueKind::TextList,
            "group names that may own shadow files besides root (default [\"shadow\"])",
        )
        .config_option("skip", ValueKind::TextList, "check ids not to run")
    }

    fn run() -> Result<RunSummary, RunError> {
        let uid = id_option("expected_uid")?;
        let gid = id_option("expected_gid")?;
        let shadow_names =
            config::string_list("shadow_groups")?.unwrap_or_else(|| vec!["shadow".to_string()]);
        let skip = config::string_list_or_empty("skip")?;
        let owners = Owners {
            uid,
            gids: vec![gid],
            shadow_gids: group_ids(&shadow_names),
        };

        for rule in &RULES {
            if skip.iter().any(|s| s == rule.check.id) {
                rule.check
                    .skipped("disabled by configuration (`skip`)")
                    .emit()?;
                continue;
            }
            check_file(
                &rule.check,
                rule.path,
                rule.max_mode,
                rule.shadow_group,
                rule.required,
                &owners,
            )
            .emit()?;
        }

        if skip.iter().any(|s| s == HOST_KEYS.id) {
            HOST_KEYS
                .skipped("disabled by configuration (`skip`)")
                .emit()?;
        } else {
            check_host_keys(&owners)?;
        }
        Ok(RunSummary::default())
    }
}

register!(FilePermissions);

fn id_option(key: &str) -> Result<u32, RunError> {
    let value = config::integer_or(key, 0)?;
    u32::try_from(value)
        .map_err(|_| RunError::InvalidConfig(format!("`{key}` must be between 0 and {}", u32::MAX)))
}

/// The gids of the named groups, from the assessed system's /etc/group.
fn group_ids(names: &[String]) -> Vec<u32> {
    let Ok(text) = fs::read_to_string("/etc/group") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            names.iter().any(|n| n == name).then_some(gid)
        })
        .collect()
}

/// The verdict for one file.
fn check_file(
    check: &Check,
    path: &str,
    max_mode: u32,
    shadow_group: bool,
    required: bool,
    owners: &Owners,
) -> FindingBuilder {
    let stat = match fs::stat(path) {
        Ok(stat) => stat,
        Err(AccessError::NotFound(_)) if !required => {
            return check
                .not_applicable(format!("{path} does not exist"))
                .subject(SubjectKind::File, path)
                .evidence("path", path);
        }
        Err(AccessError::NotFound(_)) => {
            return check
                .fail(format!("{path} does not exist"))
                .subject(SubjectKind::File, path)
                .evidence("path", path)
                .remediation(format!("Restore {path} from a backup or the base system."));
        }
        // An optional file the operator chose not to grant is not assessed;
        // a required one is an error, never a silent pass.
        Err(AccessError::Denied(_)) if !required => {
            return check
                .skipped(format!("{path} is not granted to this plugin"))
                .subject(SubjectKind::File, path)
                .evidence("path", path)
                .remediation(format!(
                    "Add {path} to the plugin's `read` grants to assess it."
                ));
        }
        Err(AccessError::Denied(_)) => {
            return check
                .error(format!("{path} is not readable by this plugin"))
                .subject(SubjectKind::File, path)
                .evidence("path", path)
                .remediation(format!(
                    "Grant read access to {path} in the plugin's `read` grants."
                ));
        }
        Err(e) => {
            return check
                .error(format!("cannot stat {path}: {}", e.explain()))
                .subject(SubjectKind::File, path)
                .evidence("path", path);
        }
    };
    let mode = stat.mode & 0o7777;
    let extra_bits = mode & !max_mode;
    let group_ok =
        owners.gids.contains(&stat.gid) || (shadow_group && owners.shadow_gids.contains(&stat.gid));
    let owner_ok = stat.uid == owners.uid;
    let mut problems = Vec::new();
    if extra_bits != 0 {
        problems.push(format!(
            "mode {} allows more than {}",
            fs::mode_string(mode),
            fs::mode_string(max_mode)
        ));
    }
    if !owner_ok {
        problems.push(format!("owner uid {} is not {}", stat.uid, owners.uid));
    }
    if !group_ok {
        problems.push(format!("group gid {} is not an allowed group", stat.gid));
    }
    let message = if problems.is_empty() {
        format!(
            "{path} has mode {} and owner {}:{}",
            fs::mode_string(mode),
            stat.uid,
            stat.gid
        )
    } else {
        format!("{path}: {}", problems.join("; "))
    };
    let finding = check
        .verdict(problems.is_empty(), message)
        .subject(SubjectKind::File, path)
        .evidence("path", path)
        .evidence("mode", fs::mode_string(mode))
        .evidence("max-mode", fs::mode_string(max_mode))
        .evidence("uid", stat.uid)
        .evidence("gid", stat.gid);
    if problems.is_empty() {
        finding
    } else {
        finding.remediation(format!(
            "chown {}:{} {path} && chmod u-x,go-wx{} {path}",
            owners.uid,
            owners.gids.first().copied().unwrap_or(0),
            if max_mode & 0o044 == 0 {
                ",go-r"
            } else if max_mode & 0o004 == 0 {
                ",o-r"
            } else {
                ""
            }
        ))
    }
}

/// One finding per `ssh_host_*_key` in /etc/ssh.
fn check_host_keys(owners: &Owners) -> Result<(), RunError> {
    let entries = match fs::list_dir("/etc/ssh") {
        Ok(entries) => entries,
        Err(AccessError::NotFound(_)) => {
            HOST_KEYS.not_applicable("/etc/ssh does not exist").emit()?;
            return Ok(());
        }
        Err(e) => {
            HOST_KEYS
                .error(format!("cannot list /etc/ssh: {}", e.explain()))
                .emit()?;
            return Ok(());
        }
    };
    let keys: Vec<String> = entries
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
        .collect();
    if keys.is_empty() {
        HOST_KEYS
            .not_applicable("no SSH host private key in /etc/ssh")
            .emit()?;
    }
    for name in keys {
        check_file(
            &HOST_KEYS,
            &format!("/etc/ssh/{name}"),
            0o600,
            false,
            true,
            owners,
        )
        .emit()?;
    }
    Ok(())
}

/// The plugin through the SDK's mock host, on copies of the fixture trees
/// with the modes of `fixtures/modes.toml` applied (git keeps no modes).
#[cfg(all(test, unix))]
mod mock_host_tests {
    use std::os::unix::fs::MetadataExt;

    use assessment_sdk::testing::{FixtureTree, MockHost};
    use assessment_sdk::{Status, SubjectKind};

    use super::FilePermissions;

    /// A copy of `fixtures/<tree>` with the modes of `[<tree>]` in
    /// `fixtures/modes.toml` (lines `"path" = 0o644`).
    fn tree(name: &str) -> FixtureTree {
        let tree = FixtureTree::copy(format!("fixtures/{name}")).unwrap();
        let modes = std::fs::read_to_string("fixtures/modes.toml").unwrap();
        let mut section = "";
        for line in modes.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s;
                continue;
            }
            let (path, mode) = line.split_once(" = ").expect("`\"path\" = 0o644`");
            let mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8).expect("octal mode");
            if section == name {
                tree.set_mode(path.trim_matches('"'), mode).unwrap();
            }
        }
        tree
    }

    /// Fixture files belong to whoever runs the tests: expect them.
    fn host(tree: &FixtureTree) -> MockHost {
        let meta = std::fs::metadata(tree.path().join("etc/passwd")).unwrap();
        MockHost::new()
            .root(tree.path())
            .grant_read("/etc")
            .config("expected_uid", meta.uid())
            .config("expected_gid", meta.gid())
    }

    #[test]
    fn strict_modes_pass() {
        let tree = tree("good");
        let run = host(&tree).run::<FilePermissions>();
        run.assert_completed();
        assert_eq!(run.findings.len(), 10, "{}", run.summary_line());
        assert!(run.all(Status::Pass), "{}", run.summary_line());
        let key = run.finding_for(
            "perm-ssh-host-private-keys",
            "/etc/ssh/ssh_host_ed25519_key",
        );
        assert!(matches!(
            key.subject.as_ref().map(|s| s.kind),
            Some(SubjectKind::File)
        ));
        assert_eq!(key.evidence_value("mode"), Some("0600"));
    }

    #[test]
    fn loose_modes_fail_with_a_remediation() {
        let tree = tree("bad");
        let run = host(&tree).run::<FilePermissions>();
        run.assert_completed();
        assert_eq!(
            run.checks_with(Status::Fail),
            [
                "perm-etc-passwd",
                "perm-etc-group",
                "perm-etc-shadow",
                "perm-etc-gshadow",
                "perm-etc-crontab",
                "perm-sshd-config",
                "perm-ssh-host-private-keys",
            ]
        );
        assert_eq!(
            run.checks_with(Status::Pass),
            [
                "perm-etc-passwd-backup",
                "perm-etc-group-backup",
                "perm-etc-shadow-backup",
            ]
        );
        let shadow = run.finding("perm-etc-shadow");
        assert_eq!(
            shadow.message,
            "/etc/shadow: mode 0644 allows more than 0640"
        );
        assert!(
            shadow
                .remediation
                .as_deref()
                .is_some_and(|r| r.contains("chmod u-x,go-wx,o-r /etc/shadow")),
            "{:?}",
            shadow.remediation
        );
    }

    #[test]
    fn a_wrong_owner_fails() {
        let tree = tree("good");
        let meta = std::fs::metadata(tree.path().join("etc/passwd")).unwrap();
        let run = host(&tree)
            .config("expected_uid", meta.uid() + 1)
            .run::<FilePermissions>();
        assert_eq!(run.status("perm-etc-passwd"), Status::Fail);
        assert!(run.finding("perm-etc-passwd").message.contains("owner uid"));
    }

    #[test]
    fn a_missing_grant_is_an_error_for_required_files_and_skips_optional_ones() {
        let tree = tree("good");
        let run = MockHost::new()
            .root(tree.path())
            .grant_read("/etc/passwd")
            .run::<FilePermissions>();
        run.assert_completed();
        assert_ne!(run.status("perm-etc-passwd"), Status::Error);
        assert_eq!(run.status("perm-etc-shadow"), Status::Error);
        assert_eq!(run.status("perm-etc-crontab"), Status::Skipped);
        assert!(!run.denials.is_empty());
    }

    #[test]
    fn missing_optional_files_do_not_apply_and_missing_required_ones_fail() {
        let tree = tree("good");
        std::fs::remove_file(tree.path().join("etc/crontab")).unwrap();
        std::fs::remove_file(tree.path().join("etc/group")).unwrap();
        let run = host(&tree).run::<FilePermissions>();
        run.assert_completed();
        assert_eq!(run.status("perm-etc-crontab"), Status::NotApplicable);
        assert_eq!(run.status("perm-etc-group"), Status::Fail);
        assert_eq!(
            run.finding("perm-etc-group").message,
            "/etc/group does not exist"
        );
    }

    #[test]
    fn configured_ids_are_validated() {
        let tree = tree("good");
        let run = host(&tree)
            .config("expected_uid", -1)
            .run::<FilePermissions>();
        assert!(
            matches!(&run.result, Err(assessment_sdk::RunError::InvalidConfig(m)) if m.contains("expected_uid")),
            "{:?}",
            run.result
        );
    }
}
