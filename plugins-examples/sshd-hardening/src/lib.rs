//! SSH daemon hardening: CIS-benchmark-style checks of the effective
//! OpenSSH server configuration (`sshd_config` with its `Include`s and
//! `Match` blocks).
//!
//! Grants it needs: `read = ["/etc/ssh"]`.

mod sshd_config;

use assessment_sdk::{
    AccessError, BenchmarkRef, Check, Plugin, PluginInfo, RunError, RunSummary, Severity,
    SubjectKind, ValueKind, config, fs, register,
};

/// Item `id` of the CIS Debian Linux 12 benchmark.
const fn cis(id: &'static str) -> BenchmarkRef {
    BenchmarkRef::new("CIS Debian Linux 12", id)
}
use sshd_config::{Directive, Files, SshdConfig, parse_time};

const ROOT_LOGIN: Check = Check::new(
    "sshd-permit-root-login",
    "SSH root login is disabled",
    Severity::High,
)
.references(&[cis("5.2.10")])
.remediation("Set `PermitRootLogin no` in /etc/ssh/sshd_config and in every Match block.");
const EMPTY_PASSWORDS: Check = Check::new(
    "sshd-permit-empty-passwords",
    "SSH login with empty passwords is disabled",
    Severity::Critical,
)
.references(&[cis("5.2.11")])
.remediation("Set `PermitEmptyPasswords no` in /etc/ssh/sshd_config.");
const HOSTBASED: Check = Check::new(
    "sshd-hostbased-authentication",
    "SSH host-based authentication is disabled",
    Severity::Medium,
)
.references(&[cis("5.2.9")])
.remediation("Set `HostbasedAuthentication no` in /etc/ssh/sshd_config.");
const IGNORE_RHOSTS: Check = Check::new(
    "sshd-ignore-rhosts",
    "SSH ignores .rhosts files",
    Severity::Medium,
)
.references(&[cis("5.2.8")])
.remediation("Set `IgnoreRhosts yes` in /etc/ssh/sshd_config.");
const USER_ENVIRONMENT: Check = Check::new(
    "sshd-permit-user-environment",
    "SSH users cannot set environment options",
    Severity::Medium,
)
.references(&[cis("5.2.12")])
.remediation("Set `PermitUserEnvironment no` in /etc/ssh/sshd_config.");
const X11_FORWARDING: Check = Check::new(
    "sshd-x11-forwarding",
    "SSH X11 forwarding is disabled",
    Severity::Low,
)
.references(&[cis("5.2.12")])
.remediation("Set `X11Forwarding no` in /etc/ssh/sshd_config.");
const MAX_AUTH_TRIES: Check = Check::new(
    "sshd-max-auth-tries",
    "SSH MaxAuthTries is 4 or less",
    Severity::Medium,
)
.references(&[cis("5.2.18")])
.remediation("Set `MaxAuthTries 4` (or less) in /etc/ssh/sshd_config.");
const LOG_LEVEL: Check = Check::new(
    "sshd-log-level",
    "SSH LogLevel is INFO or VERBOSE",
    Severity::Low,
)
.references(&[cis("5.2.5")])
.remediation("Set `LogLevel VERBOSE` (or INFO) in /etc/ssh/sshd_config.");
const LOGIN_GRACE_TIME: Check = Check::new(
    "sshd-login-grace-time",
    "SSH LoginGraceTime is one minute or less",
    Severity::Low,
)
.references(&[cis("5.2.21")])
.remediation("Set `LoginGraceTime 60` in /etc/ssh/sshd_config.");
const CLIENT_ALIVE: Check = Check::new(
    "sshd-client-alive-interval",
    "SSH idle sessions are timed out",
    Severity::Low,
)
.references(&[cis("5.2.22")])
.remediation("Set `ClientAliveInterval 300` and `ClientAliveCountMax 3` in /etc/ssh/sshd_config.");
const WEAK_CIPHERS: Check = Check::new(
    "sshd-weak-ciphers",
    "SSH offers no weak ciphers",
    Severity::High,
)
.references(&[cis("5.2.13")])
.remediation("Remove CBC, 3DES, arcfour, blowfish and cast ciphers from `Ciphers`.");
const WEAK_MACS: Check = Check::new(
    "sshd-weak-macs",
    "SSH offers no weak MAC algorithms",
    Severity::High,
)
.references(&[cis("5.2.14")])
.remediation("Remove MD5, 96-bit and umac-64 MACs from `MACs`.");

const CHECKS: [&Check; 12] = [
    &ROOT_LOGIN,
    &EMPTY_PASSWORDS,
    &HOSTBASED,
    &IGNORE_RHOSTS,
    &USER_ENVIRONMENT,
    &X11_FORWARDING,
    &MAX_AUTH_TRIES,
    &LOG_LEVEL,
    &LOGIN_GRACE_TIME,
    &CLIENT_ALIVE,
    &WEAK_CIPHERS,
    &WEAK_MACS,
];

const WEAK_CIPHER_NAMES: &[&str] = &[
    "3des-cbc",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "arcfour",
    "arcfour128",
    "arcfour256",
    "blowfish-cbc",
    "cast128-cbc",
    "rijndael-cbc@lysator.liu.se",
];
const WEAK_MAC_NAMES: &[&str] = &[
    "hmac-md5",
    "hmac-md5-96",
    "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com",
    "hmac-sha1-96",
    "hmac-sha1-96-etm@openssh.com",
    "hmac-ripemd160",
    "umac-64@openssh.com",
    "umac-64-etm@openssh.com",
];

struct SshdHardening;

impl Plugin for SshdHardening {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "sshd-hardening",
            env!("CARGO_PKG_VERSION"),
            "Checks the effective OpenSSH server configuration against CIS benchmark items",
        )
        .checks(CHECKS)
        .config_option(
            "config_path",
            ValueKind::Text,
            "sshd_config to assess (default /etc/ssh/sshd_config)",
        )
        .config_option(
            "max_auth_tries",
            ValueKind::Integer,
            "highest acceptable MaxAuthTries (default 4)",
        )
        .config_option(
            "max_client_alive_interval",
            ValueKind::Integer,
            "highest acceptable ClientAliveInterval in seconds (default 900)",
        )
        .config_option("skip", ValueKind::TextList, "check ids not to run")
    }

    fn run() -> Result<RunSummary, RunError> {
        let path = config::string_or("config_path", "/etc/ssh/sshd_config")?;
        let max_tries = config::integer_or("max_auth_tries", 4)?;
        let max_alive = config::integer_or("max_client_alive_interval", 900)?;
        let skip = config::string_list_or_empty("skip")?;

        let parsed = match sshd_config::parse(&HostFiles, &path) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                for check in CHECKS {
                    check
                        .not_applicable(format!("{path} does not exist: no SSH server to assess"))
                        .emit()?;
                }
                return Ok(RunSummary::with_note(format!("{path} not found")));
            }
            Err(e) => {
                for check in CHECKS {
                    check
                        .error(format!("cannot read the SSH configuration: {e}"))
                        .emit()?;
                }
                return Ok(RunSummary::with_note(e));
            }
        };

        for check in CHECKS {
            if skip.iter().any(|s| s == check.id) {
                check.skipped("disabled by configuration (`skip`)").emit()?;
                continue;
            }
            let verdict = match check.id {
                "sshd-permit-root-login" => {
                    exact(&parsed, "PermitRootLogin", "prohibit-password", &["no"])
                }
                "sshd-permit-empty-passwords" => {
                    exact(&parsed, "PermitEmptyPasswords", "no", &["no"])
                }
                "sshd-hostbased-authentication" => {
                    exact(&parsed, "HostbasedAuthentication", "no", &["no"])
                }
                "sshd-ignore-rhosts" => exact(&parsed, "IgnoreRhosts", "yes", &["yes"]),
                "sshd-permit-user-environment" => {
                    exact(&parsed, "PermitUserEnvironment", "no", &["no"])
                }
                "sshd-x11-forwarding" => exact(&parsed, "X11Forwarding", "no", &["no"]),
                "sshd-log-level" => exact(&parsed, "LogLevel", "INFO", &["info", "verbose"]),
                "sshd-max-auth-tries" => judged(&parsed, "MaxAuthTries", "6", |v| {
                    v.parse::<i64>()
                        .ok()
                        .map(|n| (n <= max_tries, format!("at most {max_tries}")))
                }),
                "sshd-login-grace-time" => judged(&parsed, "LoginGraceTime", "120", |v| {
                    parse_time(v)
                        .map(|s| (s > 0 && s <= 60, "between 1 and 60 seconds".to_string()))
                }),
                "sshd-client-alive-interval" => judged(&parsed, "ClientAliveInterval", "0", |v| {
                    parse_time(v).map(|s| {
                        (
                            s > 0 && s as i64 <= max_alive,
                            format!("between 1 and {max_alive} seconds"),
                        )
                    })
                }),
                "sshd-weak-ciphers" => algorithms(&parsed, "Ciphers", WEAK_CIPHER_NAMES),
                "sshd-weak-macs" => algorithms(&parsed, "MACs", WEAK_MAC_NAMES),
                _ => continue,
            };
            let finding = check
                .verdict(verdict.ok, verdict.message)
                .subject(
                    SubjectKind::ConfigSetting,
                    format!("sshd_config:{}", verdict.keyword),
                )
                .evidence("configured", &verdict.observed)
                .evidence("source", &verdict.source)
                .evidence("expected", &verdict.expected);
            let finding = verdict.overrides.iter().fold(finding, |f, d| {
                f.evidence("match-override", describe_override(d))
            });
            finding.evidence("files", parsed.files.join(", ")).emit()?;
        }
        Ok(RunSummary::default())
    }
}

register!(SshdHardening);

struct Verdict {
    /// The sshd_config keyword judged.
    keyword: &'static str,
    ok: bool,
    message: String,
    observed: String,
    source: String,
    expected: String,
    /// Match-block lines that set the keyword to a failing value.
    overrides: Vec<Directive>,
}

/// The global value of `keyword` (or sshd's default), judged by `judge`,
/// and every Match block that overrides it with a failing value.
fn judged(
    parsed: &SshdConfig,
    keyword: &'static str,
    default: &str,
    judge: impl Fn(&str) -> Option<(bool, String)>,
) -> Verdict {
    let (observed, source) = match parsed.global(keyword) {
        Some(d) => (d.value.clone(), d.source.clone()),
        None => (default.to_string(), "OpenSSH default".to_string()),
    };
    let (global_ok, expected) = match judge(&observed) {
        Some(j) => j,
        None => (false, format!("a valid {keyword} value")),
    };
    let overrides: Vec<Directive> = parsed
        .in_match_blocks(keyword)
        .filter(|d| !judge(&d.value).is_some_and(|(ok, _)| ok))
        .cloned()
        .collect();
    let ok = global_ok && overrides.is_empty();
    let message = if !global_ok {
        format!("{keyword} is {observed} ({source}); expected {expected}")
    } else if !overrides.is_empty() {
        format!(
            "{keyword} is {observed} globally but {} Match block(s) override it",
            overrides.len()
        )
    } else {
        format!("{keyword} is {observed} ({source})")
    };
    Verdict {
        keyword,
        ok,
        message,
        observed,
        source,
        expected,
        overrides,
    }
}

fn exact(parsed: &SshdConfig, keyword: &'static str, default: &str, allowed: &[&str]) -> Verdict {
    let expected = allowed.join(" or ");
    judged(parsed, keyword, default, |v| {
        Some((
            allowed.iter().any(|a| a.eq_ignore_ascii_case(v)),
            expected.clone(),
        ))
    })
}

/// Algorithm lists: the defaults of current OpenSSH contain no weak
/// algorithm; a configured list fails when it names one (a `-` prefix removes
/// algorithms from the default and is always fine).
fn algorithms(parsed: &SshdConfig, keyword: &'static str, weak: &[&str]) -> Verdict {
    judged(parsed, keyword, "OpenSSH defaults", |v| {
        if v == "OpenSSH defaults" || v.starts_with('-') {
            return Some((true, "no weak algorithm".to_string()));
        }
        let list = v.trim_start_matches(['+', '^']);
        let bad: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|a| weak.iter().any(|w| w.eq_ignore_ascii_case(a)))
            .collect();
        Some((
            bad.is_empty(),
            if bad.is_empty() {
                "no weak algorithm".to_string()
            } else {
                format!("no weak algorithm (found {})", bad.join(", "))
            },
        ))
    })
}

fn describe_override(d: &Directive) -> String {
    format!(
        "Match {} sets {} {} ({})",
        d.match_block.as_deref().unwrap_or(""),
        d.keyword,
        d.value,
        d.source
    )
}

/// Reads configuration files through the host's `target` interface.
struct HostFiles;

impl Files for HostFiles {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        fs::read_optional(path).map_err(|e: AccessError| e.explain())
    }

    fn list(&self, dir: &str) -> Result<Option<Vec<String>>, String> {
        match fs::list_dir(dir) {
            Ok(entries) => Ok(Some(entries.into_iter().map(|e| e.name).collect())),
            Err(AccessError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.explain()),
        }
    }
}

/// The plugin through the SDK's mock host, on the fixture trees.
#[cfg(all(test, unix))]
mod mock_host_tests {
    use assessment_sdk::testing::{FixtureTree, MockHost};
    use assessment_sdk::{Status, SubjectKind};

    use super::{CHECKS, SshdHardening};

    fn host(tree: &str) -> MockHost {
        MockHost::new()
            .root(format!("fixtures/{tree}"))
            .grant_read("/etc/ssh")
    }

    #[test]
    fn a_hardened_config_passes_every_check() {
        let run = host("good").run::<SshdHardening>();
        run.assert_completed();
        assert_eq!(run.findings.len(), CHECKS.len());
        assert!(run.all(Status::Pass), "{}", run.summary_line());
        for f in &run.findings {
            let subject = f.subject.as_ref().expect("every verdict has a subject");
            assert!(matches!(subject.kind, SubjectKind::ConfigSetting));
            assert!(subject.id.starts_with("sshd_config:"), "{}", subject.id);
        }
        // The LogLevel comes from the included drop-in.
        let log_level = run.finding("sshd-log-level");
        assert_eq!(log_level.evidence_value("configured"), Some("VERBOSE"));
        assert_eq!(
            log_level.evidence_value("source"),
            Some("/etc/ssh/sshd_config.d/10-logging.conf:1")
        );
        assert_eq!(
            run.finding("sshd-permit-root-login")
                .subject
                .as_ref()
                .map(|s| s.id.as_str()),
            Some("sshd_config:PermitRootLogin")
        );
    }

    #[test]
    fn a_weak_config_fails_with_evidence_and_remediation() {
        let run = host("bad").run::<SshdHardening>();
        run.assert_completed();
        assert_eq!(
            run.checks_with(Status::Fail),
            [
                "sshd-permit-root-login",
                "sshd-permit-empty-passwords",
                "sshd-x11-forwarding",
                "sshd-max-auth-tries",
                "sshd-log-level",
                "sshd-login-grace-time",
                "sshd-client-alive-interval",
                "sshd-weak-ciphers",
                "sshd-weak-macs",
            ]
        );
        assert_eq!(
            run.checks_with(Status::Pass),
            [
                "sshd-hostbased-authentication",
                "sshd-ignore-rhosts",
                "sshd-permit-user-environment",
            ]
        );
        let root = run.finding("sshd-permit-root-login");
        assert_eq!(
            root.evidence_value("match-override"),
            Some("Match Address 10.0.0.0/8 sets permitrootlogin yes (/etc/ssh/sshd_config:12)")
        );
        assert!(
            root.remediation
                .as_deref()
                .is_some_and(|r| r.contains("PermitRootLogin no"))
        );
        // The drop-in is read before the main file: its X11Forwarding wins.
        assert_eq!(
            run.finding("sshd-x11-forwarding").evidence_value("source"),
            Some("/etc/ssh/sshd_config.d/50-cloud-init.conf:1")
        );
        assert_eq!(
            run.finding("sshd-weak-ciphers").evidence_value("expected"),
            Some("no weak algorithm (found aes256-cbc, 3des-cbc)")
        );
    }

    #[test]
    fn configuration_changes_thresholds_and_skips_checks() {
        let run = host("bad")
            .config("max_auth_tries", 6)
            .config("skip", ["sshd-weak-macs"])
            .run::<SshdHardening>();
        run.assert_completed();
        assert_eq!(run.status("sshd-max-auth-tries"), Status::Pass);
        assert_eq!(run.status("sshd-weak-macs"), Status::Skipped);
        let invalid = host("good")
            .config("max_auth_tries", "four")
            .try_run::<SshdHardening>();
        assert!(
            invalid
                .map(|_| ())
                .unwrap_err()
                .to_string()
                .contains("`max_auth_tries` must be an integer")
        );
    }

    #[test]
    fn without_a_server_no_check_applies() {
        let empty = FixtureTree::empty().unwrap();
        let run = MockHost::new()
            .root(empty.path())
            .grant_read("/")
            .run::<SshdHardening>();
        run.assert_completed();
        assert_eq!(run.findings.len(), CHECKS.len());
        assert!(run.all(Status::NotApplicable), "{}", run.summary_line());
    }

    #[test]
    fn without_the_grant_every_check_is_an_error_never_a_pass() {
        let run = MockHost::new().run::<SshdHardening>();
        assert!(run.all(Status::Error), "{}", run.summary_line());
        assert!(run.denials[0].starts_with("read-file: /etc/ssh/sshd_config is outside"));
    }

    #[test]
    fn an_include_escaping_the_grant_is_an_error() {
        let tree = FixtureTree::copy("fixtures/good").unwrap();
        tree.symlink("etc/ssh/sshd_config.d/20-escape.conf", "/etc/shadow")
            .unwrap();
        let run = MockHost::new()
            .root(tree.path())
            .grant_read("/etc/ssh")
            .run::<SshdHardening>();
        assert!(run.all(Status::Error), "{}", run.summary_line());
        assert!(
            run.finding("sshd-log-level")
                .message
                .contains("leads outside the granted path"),
            "{}",
            run.finding("sshd-log-level").message
        );
    }
}
