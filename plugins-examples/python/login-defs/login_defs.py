"""login-defs: CIS Debian Linux 12 checks of /etc/login.defs.

Password aging (PASS_MAX_DAYS, PASS_MIN_DAYS, PASS_WARN_AGE), the password
hashing algorithm (ENCRYPT_METHOD) and the default umask (UMASK), one finding
per check, each about one setting (subject kind `config-setting`, id
`login.defs:NAME`).

Grant it needs: `read = ["/etc/login.defs"]`.

Configuration: `max_days` (integer, default 365), the longest password
lifetime accepted; `skip` (text list), check ids not to run.

Built with componentize-py against the `assessment` world of
`assessment:plugin@0.2.0` (see scripts/build-foreign-plugins.sh).
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.plugin import (
    PluginInfo,
    RunError_Failed,
    RunError_InvalidConfig,
    RunSummary,
)
from wit_world.imports import config, filesystem, log, results
from wit_world.imports.results import EmitError_LimitReached
from wit_world.imports.types import (
    AccessError_Denied,
    AccessError_NotFound,
    CheckInfo,
    ConfigOption,
    Evidence,
    Finding,
    Reference,
    Severity,
    Status,
    Subject,
    SubjectKind,
    ValueKind,
)

NAME = "login-defs"
VERSION = "0.1.0"
PATH = "/etc/login.defs"
BENCHMARK = "CIS Debian Linux 12"
DEFAULT_MAX_DAYS = 365


@dataclass(frozen=True)
class Setting:
    """One line of login.defs: its value and where it was read."""

    value: str
    line: int


def parse(text: str) -> Dict[str, Setting]:
    """The settings of a login.defs file, as shadow-utils reads it: one
    `NAME value` per line, `#` comments, an optional pair of double quotes
    around the value, and the last definition of a name wins."""
    settings: Dict[str, Setting] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        value = parts[1].strip() if len(parts) > 1 else ""
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        settings[parts[0]] = Setting(value, number)
    return settings


def parse_int(value: str) -> Optional[int]:
    """A decimal integer as login.defs writes it, or None."""
    try:
        return int(value, 10)
    except ValueError:
        return None


def parse_octal(value: str) -> Optional[int]:
    """An octal mode such as `027`, or None."""
    if not value or any(c not in "01234567" for c in value) or len(value) > 4:
        return None
    return int(value, 8)


# A rule judges the observed value: (ok, what was observed, in words).
Rule = Callable[[str, int], Tuple[bool, str]]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    severity: Severity
    cis: str
    key: str
    # The expected value in words, given the configured max_days.
    expected: Callable[[int], str]
    rule: Rule
    remediation: Callable[[int], str]

    def info(self) -> CheckInfo:
        return CheckInfo(
            id=self.id,
            title=self.title,
            severity=self.severity,
            references=[Reference(benchmark=BENCHMARK, id=self.cis, url=None)],
        )

    def subject(self) -> Subject:
        return Subject(kind=SubjectKind.CONFIG_SETTING, id=f"login.defs:{self.key}")


def max_days_rule(value: str, max_days: int) -> Tuple[bool, str]:
    days = parse_int(value)
    if days is None:
        return False, f"{value!r} is not a number of days"
    if days <= 0:
        return False, f"{days} disables password expiry"
    return days <= max_days, f"{days} days"


def min_days_rule(value: str, _max_days: int) -> Tuple[bool, str]:
    days = parse_int(value)
    if days is None:
        return False, f"{value!r} is not a number of days"
    return days >= 1, f"{days} days"


def warn_age_rule(value: str, _max_days: int) -> Tuple[bool, str]:
    days = parse_int(value)
    if days is None:
        return False, f"{value!r} is not a number of days"
    return days >= 7, f"{days} days"


STRONG_HASHES = ("SHA512", "YESCRYPT")


def encrypt_method_rule(value: str, _max_days: int) -> Tuple[bool, str]:
    return value.upper() in STRONG_HASHES, value


def umask_rule(value: str, _max_days: int) -> Tuple[bool, str]:
    mask = parse_octal(value)
    if mask is None:
        return False, f"{value!r} is not an octal umask"
    # Stricter than 027: at least the group-write and every "other" bit off.
    return mask & 0o027 == 0o027, f"{mask:03o}"


CHECKS: List[Check] = [
    Check(
        id="login-defs-pass-max-days",
        title="Passwords expire",
        severity=Severity.MEDIUM,
        cis="5.4.1.1",
        key="PASS_MAX_DAYS",
        expected=lambda max_days: f"between 1 and {max_days} days",
        rule=max_days_rule,
        remediation=lambda max_days: (
            f"Set `PASS_MAX_DAYS {max_days}` in /etc/login.defs, and apply it to "
            f"existing users with `chage --maxdays {max_days} USER`."
        ),
    ),
    Check(
        id="login-defs-pass-min-days",
        title="Passwords cannot be changed again at once",
        severity=Severity.LOW,
        cis="5.4.1.2",
        key="PASS_MIN_DAYS",
        expected=lambda _: "1 day or more",
        rule=min_days_rule,
        remediation=lambda _: (
            "Set `PASS_MIN_DAYS 1` in /etc/login.defs, and apply it to existing "
            "users with `chage --mindays 1 USER`."
        ),
    ),
    Check(
        id="login-defs-pass-warn-age",
        title="Users are warned before their password expires",
        severity=Severity.LOW,
        cis="5.4.1.3",
        key="PASS_WARN_AGE",
        expected=lambda _: "7 days or more",
        rule=warn_age_rule,
        remediation=lambda _: (
            "Set `PASS_WARN_AGE 7` in /etc/login.defs, and apply it to existing "
            "users with `chage --warndays 7 USER`."
        ),
    ),
    Check(
        id="login-defs-encrypt-method",
        title="Passwords are hashed with a strong algorithm",
        severity=Severity.HIGH,
        cis="5.4.1.4",
        key="ENCRYPT_METHOD",
        expected=lambda _: " or ".join(STRONG_HASHES),
        rule=encrypt_method_rule,
        remediation=lambda _: (
            "Set `ENCRYPT_METHOD YESCRYPT` (or `SHA512`) in /etc/login.defs; "
            "existing hashes change when their users next change their password."
        ),
    ),
    Check(
        id="login-defs-umask",
        title="The default user umask is 027 or more restrictive",
        severity=Severity.MEDIUM,
        cis="5.4.3.3",
        key="UMASK",
        expected=lambda _: "027 or more restrictive (e.g. 077)",
        rule=umask_rule,
        remediation=lambda _: "Set `UMASK 027` (or `UMASK 077`) in /etc/login.defs.",
    ),
]

CHECK_IDS = [c.id for c in CHECKS]


def emit(
    check: Check,
    status: Status,
    message: str,
    evidence: List[Tuple[str, str]],
    remediation: Optional[str] = None,
) -> None:
    finding = Finding(
        check_id=check.id,
        title=check.title,
        status=status,
        severity=check.severity,
        subject=check.subject(),
        message=message,
        evidence=[Evidence(key=k, value=v) for k, v in evidence],
        remediation=remediation,
    )
    try:
        results.emit(finding)
    except Err as e:
        if isinstance(e.value, EmitError_LimitReached):
            raise Err(RunError_Failed(f"the host's finding limit ({e.value.value}) was reached"))
        raise Err(RunError_Failed(f"the host refused the finding of {check.id}: {e.value.value}"))


def config_max_days() -> int:
    value = config.get("max_days")
    if value is None:
        return DEFAULT_MAX_DAYS
    if not isinstance(value, config.Value_Integer):
        raise Err(RunError_InvalidConfig("max_days: must be an integer"))
    if not 1 <= value.value <= 99999:
        raise Err(
            RunError_InvalidConfig(f"max_days: must be between 1 and 99999, not {value.value}")
        )
    return value.value


def config_skip() -> List[str]:
    value = config.get("skip")
    if value is None:
        return []
    if not isinstance(value, config.Value_TextList):
        raise Err(RunError_InvalidConfig("skip: must be a list of check ids"))
    unknown = [s for s in value.value if s not in CHECK_IDS]
    if unknown:
        raise Err(
            RunError_InvalidConfig(
                f"skip: unknown check id {unknown[0]!r} (known: {', '.join(CHECK_IDS)})"
            )
        )
    return list(value.value)


def assess() -> RunSummary:
    max_days = config_max_days()
    skip = config_skip()
    active = [c for c in CHECKS if c.id not in skip]
    for check in CHECKS:
        if check.id in skip:
            emit(check, Status.SKIPPED, "disabled by configuration (`skip`)", [])

    try:
        text = filesystem.read_file(PATH).decode("utf-8", errors="replace")
    except Err as e:
        if isinstance(e.value, AccessError_NotFound):
            for check in active:
                emit(
                    check,
                    Status.NOT_APPLICABLE,
                    f"{PATH} does not exist: shadow-utils' login tools are not installed",
                    [("file", PATH)],
                )
            return RunSummary(note=f"{PATH} does not exist")
        kind = "access denied" if isinstance(e.value, AccessError_Denied) else "unreadable"
        for check in active:
            emit(
                check,
                Status.ERROR,
                f"cannot read {PATH} ({kind}): {e.value.value}",
                [("file", PATH)],
                f"Grant the plugin `read = [\"{PATH}\"]`."
                if isinstance(e.value, AccessError_Denied)
                else None,
            )
        return RunSummary(note=None)

    settings = parse(text)
    log.write(log.Level.DEBUG, f"{PATH}: {len(settings)} settings")
    for check in active:
        expected = check.expected(max_days)
        setting = settings.get(check.key)
        if setting is None:
            emit(
                check,
                Status.FAIL,
                f"{check.key} is not set in {PATH}; the built-in default applies; expected {expected}",
                [("file", PATH), ("observed", "(not set)"), ("expected", expected)],
                check.remediation(max_days),
            )
            continue
        ok, observed = check.rule(setting.value, max_days)
        emit(
            check,
            Status.PASS if ok else Status.FAIL,
            f"{check.key} is {observed}; expected {expected}",
            [
                ("file", f"{PATH}:{setting.line}"),
                ("observed", setting.value),
                ("expected", expected),
            ],
            None if ok else check.remediation(max_days),
        )
    return RunSummary(note=None)


class Plugin(exports.Plugin):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME,
            version=VERSION,
            description="Checks password aging, password hashing and the default umask "
            "in /etc/login.defs against CIS Debian Linux 12",
            checks=[c.info() for c in CHECKS],
            config=[
                ConfigOption(
                    name="max_days",
                    kind=ValueKind.INTEGER,
                    description=f"longest accepted PASS_MAX_DAYS (default {DEFAULT_MAX_DAYS})",
                ),
                ConfigOption(name="skip", kind=ValueKind.TEXT_LIST, description="check ids not to run"),
            ],
        )

    def run(self) -> RunSummary:
        try:
            return assess()
        except Err:
            raise
        except Exception as e:  # a bug: report it instead of trapping
            raise Err(RunError_Failed(f"{type(e).__name__}: {e}"))
