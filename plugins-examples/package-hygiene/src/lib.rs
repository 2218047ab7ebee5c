//! Package hygiene: legacy and insecure network services (telnet, rsh, NIS,
//! TFTP, inetd-style super-servers, talk) must not be installed. Reads the
//! package database (dpkg or apk) through the `packages` capability, so an
//! unpacked image is assessed like a running system.
//!
//! Grant it needs: `packages = true`.
//!
//! Each forbidden package is its own subject: a finding per package,
//! `pass` while it is not installed and `fail` with the installed version
//! once it is, so each package keeps one result stream.

use assessment_sdk::{
    AccessError, BenchmarkRef, Check, Plugin, PluginInfo, RunError, RunSummary, Severity,
    SubjectKind, ValueKind, config, packages, register,
};

/// The control every check implements: least functionality.
const LEAST_FUNCTIONALITY: &[BenchmarkRef] = &[BenchmarkRef::new("NIST SP 800-53 Rev. 5", "CM-7")
    .url("https://csrc.nist.gov/projects/cprt/catalog#/cprt/framework/version/SP_800_53_5_1_1/home?element=CM-7")];

/// One rule: a service and the packages that provide it.
struct Rule {
    check: Check,
    packages: &'static [&'static str],
}

const fn rule(
    id: &'static str,
    title: &'static str,
    severity: Severity,
    remediation: &'static str,
    packages: &'static [&'static str],
) -> Rule {
    Rule {
        check: Check::new(id, title, severity)
            .references(LEAST_FUNCTIONALITY)
            .remediation(remediation),
        packages,
    }
}

const RULES: [Rule; 6] = [
    rule(
        "pkg-telnet-server",
        "No telnet server is installed",
        Severity::High,
        "Remove the telnet server (`apt purge telnetd inetutils-telnetd`); use SSH instead.",
        &[
            "telnetd",
            "inetutils-telnetd",
            "telnetd-ssl",
            "telnet-server",
        ],
    ),
    rule(
        "pkg-rsh-server",
        "No rsh/rlogin server is installed",
        Severity::High,
        "Remove the rsh server (`apt purge rsh-server rsh-redone-server`); use SSH instead.",
        &["rsh-server", "rsh-redone-server"],
    ),
    rule(
        "pkg-nis",
        "NIS is not installed",
        Severity::Medium,
        "Remove NIS (`apt purge nis`); use a directory service over TLS.",
        &["nis", "ypserv"],
    ),
    rule(
        "pkg-tftp-server",
        "No TFTP server is installed",
        Severity::Medium,
        "Remove the TFTP server unless this host serves network boot.",
        &["tftpd", "tftpd-hpa", "atftpd", "tftp-server"],
    ),
    rule(
        "pkg-inetd",
        "No inetd-style super-server is installed",
        Severity::Medium,
        "Remove the super-server (`apt purge xinetd openbsd-inetd inetutils-inetd`).",
        &["xinetd", "openbsd-inetd", "inetutils-inetd"],
    ),
    rule(
        "pkg-talk-server",
        "No talk server is installed",
        Severity::Low,
        "Remove the talk server (`apt purge talkd inetutils-talkd`).",
        &["talkd", "inetutils-talkd"],
    ),
];

const SITE: Check = Check::new(
    "pkg-site-forbidden",
    "No package forbidden by site policy is installed",
    Severity::Medium,
)
.references(LEAST_FUNCTIONALITY)
.remediation("Remove the package, or take it off the plugin's `forbidden` list if it is approved.");

struct PackageHygiene;

impl Plugin for PackageHygiene {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "package-hygiene",
            env!("CARGO_PKG_VERSION"),
            "Checks that legacy and insecure network services are not installed",
        )
        .checks(RULES.iter().map(|r| &r.check))
        .check(&SITE)
        .config_option(
            "forbidden",
            ValueKind::TextList,
            "further package names that must not be installed (site policy)",
        )
        .config_option("skip", ValueKind::TextList, "check ids not to run")
    }

    fn run() -> Result<RunSummary, RunError> {
        let forbidden = config::string_list_or_empty("forbidden")?;
        let skip = config::string_list_or_empty("skip")?;
        let installed = match packages::installed() {
            Ok(installed) => installed,
            Err(e) => {
                // Without the package list no verdict is possible.
                let why = match &e {
                    AccessError::Denied(_) => {
                        "the package database is not granted (grant `packages = true`)".to_string()
                    }
                    other => format!("cannot read the package database: {}", other.explain()),
                };
                for check in RULES.iter().map(|r| &r.check).chain([&SITE]) {
                    check.error(why.clone()).emit()?;
                }
                return Ok(RunSummary::with_note(why));
            }
        };
        let rules = RULES
            .iter()
            .map(|r| {
                (
                    &r.check,
                    r.packages.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                )
            })
            .chain([(&SITE, forbidden)]);
        for (check, names) in rules {
            if skip.iter().any(|s| s == check.id) {
                check.skipped("disabled by configuration (`skip`)").emit()?;
                continue;
            }
            for name in names {
                let finding = match packages::find(&installed, &name) {
                    None => check.pass(format!("{name} is not installed")),
                    Some(p) => check
                        .fail(format!("{name} {} is installed", p.version))
                        .evidence("version", &p.version)
                        .evidence("architecture", &p.architecture)
                        .evidence("package-manager", &p.manager),
                };
                finding.subject(SubjectKind::Package, name).emit()?;
            }
        }
        Ok(RunSummary::with_note(format!(
            "{} installed packages examined",
            installed.len()
        )))
    }
}

register!(PackageHygiene);
