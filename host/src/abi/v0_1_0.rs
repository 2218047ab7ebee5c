//! `assessment:plugin@0.1.0`, frozen: its imports are implemented by
//! delegating to the latest capabilities, and its exports are converted to
//! the latest types, so that the rest of the host knows one ABI only.
//!
//! What 0.1.0 cannot say gets a fixed meaning: findings have no subject
//! (their streams are told apart by order, as 0.1.0 hosts did), `skipped`
//! stays `skipped`, a check's one `reference` string becomes one reference
//! (its last word the item id, the words before it the benchmark), and
//! `stat` does not report hard links.

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::latest::assessment::plugin as latest;
use crate::bindings::latest::exports::assessment::plugin::plugin as latest_exports;
use crate::bindings::v0_1_0::assessment::plugin::{config, log, results, target, types};
use crate::bindings::v0_1_0::exports::assessment::plugin::plugin as exports;
use crate::bindings::v0_1_0::{Assessment, AssessmentPre};
use crate::capabilities::PluginState;

pub use crate::bindings::v0_1_0::AssessmentPre as Pre;

/// Link the 0.1.0 imports.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    Assessment::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |state| state)
}

/// The 0.1.0 bindings of a component, if it targets 0.1.0.
pub fn pre(
    pre: wasmtime::component::InstancePre<PluginState>,
) -> wasmtime::Result<AssessmentPre<PluginState>> {
    AssessmentPre::new(pre)
}

impl types::Host for PluginState {}

fn access_error(e: latest::types::AccessError) -> types::AccessError {
    use latest::types::AccessError as L;
    match e {
        L::Denied(m) => types::AccessError::Denied(m),
        L::NotFound(m) => types::AccessError::NotFound(m),
        L::Invalid(m) => types::AccessError::Invalid(m),
        L::TooLarge(m) => types::AccessError::TooLarge(m),
        L::Io(m) => types::AccessError::Io(m),
    }
}

fn entry_kind(kind: latest::filesystem::EntryKind) -> target::EntryKind {
    use latest::filesystem::EntryKind as L;
    match kind {
        L::File => target::EntryKind::File,
        L::Directory => target::EntryKind::Directory,
        L::Symlink => target::EntryKind::Symlink,
        L::Other => target::EntryKind::Other,
    }
}

impl target::Host for PluginState {
    async fn facts(&mut self) -> wasmtime::Result<Result<target::HostFacts, types::AccessError>> {
        Ok(latest::host_facts::Host::get(self)
            .await?
            .map(|f| target::HostFacts {
                hostname: f.hostname,
                os: f.os,
                os_id: f.os_id,
                os_version: f.os_version,
                arch: f.arch,
                kernel_release: f.kernel_release,
            })
            .map_err(access_error))
    }

    async fn read_file(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<u8>, types::AccessError>> {
        Ok(latest::filesystem::Host::read_file(self, path)
            .await?
            .map_err(access_error))
    }

    async fn stat(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<target::FileStat, types::AccessError>> {
        Ok(latest::filesystem::Host::stat(self, path)
            .await?
            .map(|s| target::FileStat {
                kind: entry_kind(s.kind),
                mode: s.mode,
                uid: s.uid,
                gid: s.gid,
                size: s.size,
                modified: s.modified,
            })
            .map_err(access_error))
    }

    async fn list_dir(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<target::DirEntry>, types::AccessError>> {
        Ok(latest::filesystem::Host::list_dir(self, path)
            .await?
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|e| target::DirEntry {
                        name: e.name,
                        kind: entry_kind(e.kind),
                    })
                    .collect()
            })
            .map_err(access_error))
    }

    async fn run_command(
        &mut self,
        command: String,
        args: Vec<String>,
    ) -> wasmtime::Result<Result<target::CommandOutput, types::AccessError>> {
        Ok(latest::process::Host::run_command(self, command, args)
            .await?
            .map(|o| target::CommandOutput {
                exit_code: o.exit_code,
                stdout: o.stdout,
                stderr: o.stderr,
            })
            .map_err(access_error))
    }

    async fn env_var(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, types::AccessError>> {
        Ok(latest::environment::Host::env_var(self, name)
            .await?
            .map_err(access_error))
    }
}

impl config::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<config::Value>> {
        use latest::config::Value as L;
        Ok(latest::config::Host::get(self, key)
            .await?
            .map(|v| match v {
                L::Text(t) => config::Value::Text(t),
                L::Integer(i) => config::Value::Integer(i),
                L::Float(f) => config::Value::Float(f),
                L::Boolean(b) => config::Value::Boolean(b),
                L::TextList(l) => config::Value::TextList(l),
            }))
    }

    async fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        latest::config::Host::keys(self).await
    }
}

impl log::Host for PluginState {
    async fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        use latest::log::Level as L;
        let level = match level {
            log::Level::Trace => L::Trace,
            log::Level::Debug => L::Debug,
            log::Level::Info => L::Info,
            log::Level::Warn => L::Warn,
            log::Level::Error => L::Error,
        };
        latest::log::Host::write(self, level, message).await
    }
}

fn severity(s: types::Severity) -> latest::types::Severity {
    use latest::types::Severity as L;
    match s {
        types::Severity::Info => L::Info,
        types::Severity::Low => L::Low,
        types::Severity::Medium => L::Medium,
        types::Severity::High => L::High,
        types::Severity::Critical => L::Critical,
    }
}

impl results::Host for PluginState {
    async fn emit(
        &mut self,
        f: types::Finding,
    ) -> wasmtime::Result<Result<(), results::EmitError>> {
        use latest::types::Status as L;
        let finding = latest::types::Finding {
            check_id: f.check_id,
            title: f.title,
            status: match f.status {
                types::Status::Pass => L::Pass,
                types::Status::Fail => L::Fail,
                types::Status::Error => L::Error,
                types::Status::Skipped => L::Skipped,
            },
            severity: severity(f.severity),
            subject: None,
            message: f.message,
            evidence: f
                .evidence
                .into_iter()
                .map(|e| latest::types::Evidence {
                    key: e.key,
                    value: e.value,
                })
                .collect(),
            remediation: f.remediation,
        };
        Ok(self.results.accept(finding).map_err(|e| match e {
            latest::results::EmitError::Invalid(m) => results::EmitError::Invalid(m),
            latest::results::EmitError::LimitReached(n) => results::EmitError::LimitReached(n),
        }))
    }
}

/// A 0.1.0 reference string as a reference: `CIS Debian 12 5.2.10` is item
/// `5.2.10` of benchmark `CIS Debian 12`; one word is an item alone.
pub fn reference(text: String) -> latest::types::Reference {
    let text = text.trim();
    let (benchmark, id) = match text.rsplit_once(char::is_whitespace) {
        Some((benchmark, id)) => (benchmark.trim().to_string(), id.to_string()),
        None => (String::new(), text.to_string()),
    };
    latest::types::Reference {
        benchmark,
        id,
        url: None,
    }
}

/// `describe`'s answer in the latest types.
pub fn plugin_info(info: exports::PluginInfo) -> latest_exports::PluginInfo {
    use latest::types::ValueKind as L;
    latest_exports::PluginInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        checks: info
            .checks
            .into_iter()
            .map(|c| latest::types::CheckInfo {
                id: c.id,
                title: c.title,
                severity: severity(c.severity),
                references: c.reference.into_iter().map(reference).collect(),
            })
            .collect(),
        config: info
            .config
            .into_iter()
            .map(|o| latest::types::ConfigOption {
                name: o.name,
                kind: match o.kind {
                    types::ValueKind::Text => L::Text,
                    types::ValueKind::Integer => L::Integer,
                    types::ValueKind::Float => L::Float,
                    types::ValueKind::Boolean => L::Boolean,
                    types::ValueKind::TextList => L::TextList,
                },
                description: o.description,
            })
            .collect(),
    }
}

/// `run`'s answer in the latest types.
pub fn run_result(
    r: Result<exports::RunSummary, exports::RunError>,
) -> Result<latest_exports::RunSummary, latest_exports::RunError> {
    match r {
        Ok(s) => Ok(latest_exports::RunSummary { note: s.note }),
        Err(exports::RunError::InvalidConfig(m)) => Err(latest_exports::RunError::InvalidConfig(m)),
        Err(exports::RunError::Failed(m)) => Err(latest_exports::RunError::Failed(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_string_splits_into_benchmark_and_item() {
        let r = reference("CIS Debian 12 5.2.10".into());
        assert_eq!(
            (r.benchmark.as_str(), r.id.as_str()),
            ("CIS Debian 12", "5.2.10")
        );
        let r = reference(" 5.2.10 ".into());
        assert_eq!((r.benchmark.as_str(), r.id.as_str()), ("", "5.2.10"));
    }
}
