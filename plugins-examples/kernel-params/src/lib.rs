//! Kernel parameters: CIS-benchmark-style checks of network and
//! memory-protection sysctls, read from `/proc/sys`.
//!
//! Grants it needs: `read = ["/proc/sys"]`.

use assessment_sdk::{
    AccessError, BenchmarkRef, Check, Plugin, PluginInfo, RunError, RunSummary, Severity,
    SubjectKind, ValueKind, config, fs, register,
};

/// Item `id` of the CIS Debian Linux 12 benchmark.
const fn cis(id: &'static str) -> BenchmarkRef {
    BenchmarkRef::new("CIS Debian Linux 12", id)
}

/// What a parameter's value must be.
#[derive(Clone, Copy)]
enum Expect {
    Equals(i64),
    OneOf(&'static [i64]),
    AtLeast(i64),
}

impl Expect {
    fn accepts(self, value: i64) -> bool {
        match self {
            Expect::Equals(v) => value == v,
            Expect::OneOf(vs) => vs.contains(&value),
            Expect::AtLeast(v) => value >= v,
        }
    }

    fn describe(self) -> String {
        match self {
            Expect::Equals(v) => v.to_string(),
            Expect::OneOf(vs) => vs
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
            Expect::AtLeast(v) => format!("{v} or more"),
        }
    }
}

struct Param {
    check: Check,
    sysctl: &'static str,
    expect: Expect,
}

const fn param(
    id: &'static str,
    title: &'static str,
    references: &'static [BenchmarkRef],
    severity: Severity,
    sysctl: &'static str,
    expect: Expect,
) -> Param {
    Param {
        check: Check::new(id, title, severity).references(references),
        sysctl,
        expect,
    }
}

use Expect::*;
use Severity::{High, Low, Medium};

const PARAMS: [Param; 19] = [
    param(
        "kernel-aslr",
        "Address space layout randomisation is fully enabled",
        &[cis("1.5.3")],
        High,
        "kernel.randomize_va_space",
        Equals(2),
    ),
    param(
        "kernel-kptr-restrict",
        "Kernel pointers are hidden from unprivileged users",
        &[cis("1.5.2")],
        Medium,
        "kernel.kptr_restrict",
        OneOf(&[1, 2]),
    ),
    param(
        "kernel-dmesg-restrict",
        "The kernel log is restricted to privileged users",
        &[cis("1.5.1")],
        Low,
        "kernel.dmesg_restrict",
        Equals(1),
    ),
    param(
        "kernel-ptrace-scope",
        "ptrace is restricted (Yama)",
        &[cis("1.5.4")],
        Medium,
        "kernel.yama.ptrace_scope",
        AtLeast(1),
    ),
    param(
        "fs-suid-dumpable",
        "Core dumps of setuid programs are disabled",
        &[cis("1.5.5")],
        Medium,
        "fs.suid_dumpable",
        Equals(0),
    ),
    param(
        "fs-protected-hardlinks",
        "Hard link protection is enabled",
        &[cis("1.5.6")],
        Medium,
        "fs.protected_hardlinks",
        Equals(1),
    ),
    param(
        "fs-protected-symlinks",
        "Symlink protection is enabled",
        &[cis("1.5.6")],
        Medium,
        "fs.protected_symlinks",
        Equals(1),
    ),
    param(
        "net-ip-forward",
        "IPv4 forwarding is disabled",
        &[cis("3.3.1")],
        Medium,
        "net.ipv4.ip_forward",
        Equals(0),
    ),
    param(
        "net-send-redirects",
        "ICMP redirects are not sent",
        &[cis("3.3.2")],
        Medium,
        "net.ipv4.conf.all.send_redirects",
        Equals(0),
    ),
    param(
        "net-send-redirects-default",
        "ICMP redirects are not sent (default)",
        &[cis("3.3.2")],
        Medium,
        "net.ipv4.conf.default.send_redirects",
        Equals(0),
    ),
    param(
        "net-accept-redirects",
        "ICMP redirects are not accepted",
        &[cis("3.3.5")],
        Medium,
        "net.ipv4.conf.all.accept_redirects",
        Equals(0),
    ),
    param(
        "net-secure-redirects",
        "Secure ICMP redirects are not accepted",
        &[cis("3.3.6")],
        Medium,
        "net.ipv4.conf.all.secure_redirects",
        Equals(0),
    ),
    param(
        "net-accept-source-route",
        "Source-routed packets are not accepted",
        &[cis("3.3.8")],
        Medium,
        "net.ipv4.conf.all.accept_source_route",
        Equals(0),
    ),
    param(
        "net-log-martians",
        "Suspicious packets are logged",
        &[cis("3.3.9")],
        Low,
        "net.ipv4.conf.all.log_martians",
        Equals(1),
    ),
    param(
        "net-icmp-echo-ignore-broadcasts",
        "Broadcast ICMP requests are ignored",
        &[cis("3.3.4")],
        Low,
        "net.ipv4.icmp_echo_ignore_broadcasts",
        Equals(1),
    ),
    param(
        "net-icmp-ignore-bogus-errors",
        "Bogus ICMP responses are ignored",
        &[cis("3.3.3")],
        Low,
        "net.ipv4.icmp_ignore_bogus_error_responses",
        Equals(1),
    ),
    param(
        "net-rp-filter",
        "Reverse path filtering is enabled",
        &[cis("3.3.7")],
        Medium,
        "net.ipv4.conf.all.rp_filter",
        Equals(1),
    ),
    param(
        "net-tcp-syncookies",
        "TCP SYN cookies are enabled",
        &[cis("3.3.10")],
        Medium,
        "net.ipv4.tcp_syncookies",
        Equals(1),
    ),
    param(
        "net-ipv6-accept-ra",
        "IPv6 router advertisements are not accepted",
        &[cis("3.3.11")],
        Medium,
        "net.ipv6.conf.all.accept_ra",
        Equals(0),
    ),
];

struct KernelParams;

impl Plugin for KernelParams {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "kernel-params",
            env!("CARGO_PKG_VERSION"),
            "Checks kernel network and memory-protection parameters against CIS benchmark items",
        )
        .checks(PARAMS.iter().map(|p| &p.check))
        .config_option(
            "allow",
            ValueKind::TextList,
            "accepted values that differ from the benchmark, as `sysctl.name=value` (e.g. `net.ipv4.ip_forward=1` on a router)",
        )
        .config_option("skip", ValueKind::TextList, "check ids not to run")
    }

    fn run() -> Result<RunSummary, RunError> {
        let skip = config::string_list_or_empty("skip")?;
        let allow = parse_allow(&config::string_list_or_empty("allow")?)?;
        for p in &PARAMS {
            if skip.iter().any(|s| s == p.check.id) {
                p.check
                    .skipped("disabled by configuration (`skip`)")
                    .emit()?;
                continue;
            }
            let path = sysctl_path(p.sysctl);
            let raw = match fs::read_to_string(&path) {
                Ok(raw) => raw,
                Err(AccessError::NotFound(_)) => {
                    p.check
                        .not_applicable(format!("{} is not available on this kernel", p.sysctl))
                        .subject(SubjectKind::KernelParameter, p.sysctl)
                        .evidence("path", &path)
                        .emit()?;
                    continue;
                }
                Err(e) => {
                    p.check
                        .error(format!("cannot read {}: {}", p.sysctl, e.explain()))
                        .subject(SubjectKind::KernelParameter, p.sysctl)
                        .evidence("path", &path)
                        .emit()?;
                    continue;
                }
            };
            let Ok(value) = raw.trim().parse::<i64>() else {
                p.check
                    .error(format!(
                        "{} has a non-numeric value {:?}",
                        p.sysctl,
                        raw.trim()
                    ))
                    .subject(SubjectKind::KernelParameter, p.sysctl)
                    .evidence("path", &path)
                    .emit()?;
                continue;
            };
            let allowed = allow
                .iter()
                .any(|(name, v)| name == p.sysctl && *v == value);
            let ok = p.expect.accepts(value) || allowed;
            let mut message = format!("{} = {value}; expected {}", p.sysctl, p.expect.describe());
            if allowed && !p.expect.accepts(value) {
                message.push_str(" (accepted by the `allow` configuration)");
            }
            p.check
                .verdict(ok, message)
                .subject(SubjectKind::KernelParameter, p.sysctl)
                .evidence("sysctl", p.sysctl)
                .evidence("value", value)
                .evidence("expected", p.expect.describe())
                .remediation(format!(
                    "Set `{} = {}` in /etc/sysctl.d/60-hardening.conf and run `sysctl --system`.",
                    p.sysctl,
                    first_accepted(p.expect)
                ))
                .emit()?;
        }
        Ok(RunSummary::default())
    }
}

register!(KernelParams);

/// `net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`.
fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn first_accepted(expect: Expect) -> i64 {
    match expect {
        Equals(v) | AtLeast(v) => v,
        OneOf(vs) => vs.first().copied().unwrap_or_default(),
    }
}

fn parse_allow(entries: &[String]) -> Result<Vec<(String, i64)>, RunError> {
    entries
        .iter()
        .map(|entry| {
            let (name, value) = entry.split_once('=').ok_or_else(|| {
                RunError::InvalidConfig(format!(
                    "`allow` entry {entry:?} must look like `sysctl.name=value`"
                ))
            })?;
            let value = value.trim().parse::<i64>().map_err(|_| {
                RunError::InvalidConfig(format!(
                    "`allow` entry {entry:?}: the value must be an integer"
                ))
            })?;
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.rp_filter"),
            "/proc/sys/net/ipv4/conf/all/rp_filter"
        );
    }

    #[test]
    fn expectations() {
        assert!(Equals(2).accepts(2) && !Equals(2).accepts(1));
        assert!(OneOf(&[1, 2]).accepts(2) && !OneOf(&[1, 2]).accepts(0));
        assert!(AtLeast(1).accepts(3) && !AtLeast(1).accepts(0));
    }

    #[test]
    fn allow_entries_are_validated() {
        assert_eq!(
            parse_allow(&["net.ipv4.ip_forward=1".into()]).unwrap(),
            vec![("net.ipv4.ip_forward".to_string(), 1)]
        );
        assert!(parse_allow(&["net.ipv4.ip_forward".into()]).is_err());
        assert!(parse_allow(&["net.ipv4.ip_forward=yes".into()]).is_err());
    }

    #[test]
    fn check_ids_are_unique() {
        let mut ids: Vec<_> = PARAMS.iter().map(|p| p.check.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), PARAMS.len());
    }
}

/// The plugin through the SDK's mock host, on the fixture trees.
#[cfg(all(test, unix))]
mod mock_host_tests {
    use assessment_sdk::testing::{FixtureTree, MockHost};
    use assessment_sdk::{Status, SubjectKind};

    use super::{KernelParams, PARAMS};

    fn host(tree: &str) -> MockHost {
        MockHost::new()
            .root(format!("fixtures/{tree}"))
            .grant_read("/proc/sys")
    }

    #[test]
    fn a_hardened_kernel_passes_every_check() {
        let run = host("good").run::<KernelParams>();
        run.assert_completed();
        assert_eq!(run.findings.len(), PARAMS.len());
        assert!(run.all(Status::Pass), "{}", run.summary_line());
        let aslr = run.finding_for("kernel-aslr", "kernel.randomize_va_space");
        assert!(matches!(
            aslr.subject.as_ref().map(|s| s.kind),
            Some(SubjectKind::KernelParameter)
        ));
        assert_eq!(aslr.evidence_value("value"), Some("2"));
        assert_eq!(aslr.evidence_value("expected"), Some("2"));
    }

    #[test]
    fn a_weak_kernel_fails_and_missing_parameters_do_not_apply() {
        let run = host("bad").run::<KernelParams>();
        run.assert_completed();
        assert_eq!(run.findings.len(), PARAMS.len());
        assert_eq!(
            run.checks_with(Status::Fail).len(),
            18,
            "{}",
            run.summary_line()
        );
        assert_eq!(run.status("kernel-ptrace-scope"), Status::NotApplicable);
        let forward = run.finding("net-ip-forward");
        assert_eq!(forward.message, "net.ipv4.ip_forward = 1; expected 0");
        assert!(
            forward
                .remediation
                .as_deref()
                .is_some_and(|r| r.contains("net.ipv4.ip_forward = 0"))
        );
    }

    #[test]
    fn allowed_values_and_skips_come_from_the_configuration() {
        let run = host("bad")
            .config("allow", ["net.ipv4.ip_forward=1"])
            .config("skip", ["net-tcp-syncookies"])
            .run::<KernelParams>();
        run.assert_completed();
        assert_eq!(run.status("net-ip-forward"), Status::Pass);
        assert!(
            run.finding("net-ip-forward")
                .message
                .contains("accepted by the `allow`")
        );
        assert_eq!(run.status("net-tcp-syncookies"), Status::Skipped);
        assert_eq!(run.checks_with(Status::Fail).len(), 16);

        let run = host("bad")
            .config("allow", ["net.ipv4.ip_forward"])
            .run::<KernelParams>();
        assert!(
            matches!(&run.result, Err(assessment_sdk::RunError::InvalidConfig(m)) if m.contains("sysctl.name=value")),
            "{:?}",
            run.result
        );
        assert!(run.findings.is_empty());
    }

    #[test]
    fn unreadable_and_garbled_values_are_errors() {
        let tree = FixtureTree::copy("fixtures/good").unwrap();
        tree.write("proc/sys/kernel/randomize_va_space", "two\n")
            .unwrap();
        std::fs::remove_file(tree.path().join("proc/sys/kernel/dmesg_restrict")).unwrap();
        tree.symlink("proc/sys/kernel/dmesg_restrict", "/etc/shadow")
            .unwrap();
        let run = MockHost::new()
            .root(tree.path())
            .grant_read("/proc/sys")
            .run::<KernelParams>();
        run.assert_completed();
        assert_eq!(run.status("kernel-aslr"), Status::Error);
        assert!(
            run.finding("kernel-aslr")
                .message
                .contains("non-numeric value \"two\"")
        );
        assert_eq!(run.status("kernel-dmesg-restrict"), Status::Error);
        assert!(
            run.finding("kernel-dmesg-restrict")
                .message
                .contains("leads outside the granted path"),
            "{}",
            run.finding("kernel-dmesg-restrict").message
        );

        // Granted only the kernel subtree: the network checks are denied.
        let run = MockHost::new()
            .root(tree.path())
            .grant_read("/proc/sys/kernel")
            .run::<KernelParams>();
        assert_eq!(run.status("net-ip-forward"), Status::Error);
        assert!(run.finding("net-ip-forward").message.contains("denied"));
        assert_eq!(run.denials.len(), 15, "{:?}", run.denials);
    }
}
