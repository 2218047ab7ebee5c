//! Test plugin: exercises one host capability per configured action and
//! reports the outcome as a finding, so the end-to-end tests can check what
//! was granted and what was denied.
//!
//! `actions` is a list of `kind:argument` strings:
//! `read-file:/path`, `read-range:/path offset length`, `stat:/path`,
//! `list-dir:/path`, `host-facts:`,
//! `env-var:NAME`, `run-command:/abs/program arg1 arg2`, `config:key`, and
//! attempts at ambient authority through Rust's standard library, which
//! must all fail: `std-read:/path`, `std-write:/path`, `std-env:`,
//! `std-connect:127.0.0.1:port`.
//! Each action emits one finding with check id `probe`: `pass` with the
//! result as evidence `output`, or `error` with evidence `error-kind`
//! (`denied`, `not-found`, `invalid`, `too-large`, `io`).

use assessment_sdk::{
    AccessError, Check, Plugin, PluginInfo, RunError, RunSummary, Severity, SubjectKind, ValueKind,
    config, env, fs, host, process, register,
};

const PROBE: Check = Check::new("probe", "Capability probe", Severity::Info);

struct Probe;

impl Plugin for Probe {
    fn describe() -> PluginInfo {
        PluginInfo::new("probe", "0.1.0", "Exercises host capabilities for tests")
            .check(&PROBE)
            .config_option("actions", ValueKind::TextList, "capability calls to make")
            .config_option(
                "greeting",
                ValueKind::Text,
                "a value read back by `config:greeting`",
            )
            .config_option(
                "count",
                ValueKind::Integer,
                "a value read back by `config:count`",
            )
            .config_option(
                "ratio",
                ValueKind::Float,
                "a value read back by `config:ratio`",
            )
            .config_option(
                "enabled",
                ValueKind::Boolean,
                "a value read back by `config:enabled`",
            )
    }

    fn run() -> Result<RunSummary, RunError> {
        for (index, action) in config::string_list_or_empty("actions")?
            .into_iter()
            .enumerate()
        {
            let (kind, arg) = action.split_once(':').unwrap_or((action.as_str(), ""));
            let outcome: Result<String, AccessError> = match kind {
                "read-file" => fs::read_to_string(arg),
                "stat" => fs::stat(arg).map(|s| {
                    format!(
                        "kind={:?} mode={} uid={} gid={} size={} links={}",
                        s.kind,
                        fs::mode_string(s.mode),
                        s.uid,
                        s.gid,
                        s.size,
                        s.links
                    )
                }),
                // `read-range:/path offset length`
                "read-range" => {
                    let mut parts = arg.split(' ');
                    let path = parts.next().unwrap_or_default();
                    let mut number = || {
                        parts
                            .next()
                            .and_then(|n| n.parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    let (offset, length) = (number(), number());
                    fs::read_range(path, offset, length)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                }
                "list-dir" => fs::list_dir(arg).map(|es| {
                    es.iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                }),
                "host-facts" => host::facts().map(|f| {
                    format!(
                        "hostname={} os={} os-id={} arch={} kernel={}",
                        f.hostname, f.os, f.os_id, f.arch, f.kernel_release
                    )
                }),
                "env-var" => env::var(arg).map(|v| v.unwrap_or_else(|| "<unset>".to_string())),
                "run-command" => {
                    let mut words = arg.split_whitespace();
                    let program = words.next().unwrap_or_default();
                    let args: Vec<&str> = words.collect();
                    process::run_command(program, &args).map(|o| {
                        format!(
                            "exit={:?} stdout={}",
                            o.exit_code,
                            String::from_utf8_lossy(&o.stdout).trim()
                        )
                    })
                }
                "config" => Ok(format!("{:?}", config::get(arg))),
                // Ambient authority: a plugin has none, so these fail and
                // report `io` with the standard library's error.
                "std-read" => {
                    std::fs::read_to_string(arg).map_err(|e| AccessError::Io(e.to_string()))
                }
                "std-write" => std::fs::write(arg, b"written by a plugin")
                    .map(|_| "written".to_string())
                    .map_err(|e| AccessError::Io(e.to_string())),
                "std-env" => {
                    let vars: Vec<String> = std::env::vars()
                        .map(|(k, _)| k)
                        .chain(std::env::args())
                        .collect();
                    if vars.is_empty() {
                        Err(AccessError::Io("empty".to_string()))
                    } else {
                        Ok(vars.join(","))
                    }
                }
                "std-connect" => std::net::TcpStream::connect(arg)
                    .map(|_| "connected".to_string())
                    .map_err(|e| AccessError::Io(e.to_string())),
                other => {
                    return Err(RunError::InvalidConfig(format!(
                        "unknown action kind `{other}`"
                    )));
                }
            };
            // Actions may be longer than a finding's message (the tests
            // send over-long paths): report their first kilobyte.
            let shown: String = action.chars().take(1000).collect();
            let finding = match outcome {
                Ok(output) => PROBE.pass(shown.clone()).evidence("output", output),
                Err(e) => {
                    let kind = match &e {
                        AccessError::Denied(_) => "denied",
                        AccessError::NotFound(_) => "not-found",
                        AccessError::Invalid(_) => "invalid",
                        AccessError::TooLarge(_) => "too-large",
                        AccessError::Io(_) => "io",
                    };
                    PROBE
                        .error(shown.clone())
                        .evidence("error-kind", kind)
                        .evidence("error", e.explain())
                }
            };
            // One finding per action: each action is its own subject.
            finding
                .subject(SubjectKind::Other, format!("action {index}"))
                .evidence("action", &shown)
                .emit()?;
        }
        Ok(RunSummary::with_note("probe done"))
    }
}

register!(Probe);
