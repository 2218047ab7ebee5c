//! The mock host's side of each interface: the same functions, with the
//! same types, as the raw imports generated from the WIT. The wrapper
//! modules reach these through `crate::imports` in native `testing`
//! builds.

use super::session::with;

pub mod config {
    pub use crate::bindings::assessment::plugin::config::Value;

    pub fn get(key: &str) -> Option<Value> {
        super::with("config.get", |s| s.config_get(key))
    }

    pub fn keys() -> Vec<String> {
        super::with("config.keys", |s| s.config_keys())
    }
}

pub mod filesystem {
    use crate::AccessError;
    pub use crate::bindings::assessment::plugin::filesystem::{DirEntry, EntryKind, FileStat};

    pub fn read_file(path: &str) -> Result<Vec<u8>, AccessError> {
        super::with("read-file", |s| s.read_file(path))
    }

    pub fn read_range(path: &str, offset: u64, length: u64) -> Result<Vec<u8>, AccessError> {
        super::with("read-range", |s| s.read_range(path, offset, length))
    }

    pub fn stat(path: &str) -> Result<FileStat, AccessError> {
        super::with("stat", |s| s.stat(path))
    }

    pub fn list_dir(path: &str) -> Result<Vec<DirEntry>, AccessError> {
        super::with("list-dir", |s| s.list_dir(path))
    }
}

pub mod process {
    use crate::AccessError;
    pub use crate::bindings::assessment::plugin::process::CommandOutput;

    pub fn run_command(command: &str, args: &[String]) -> Result<CommandOutput, AccessError> {
        super::with("run-command", |s| s.run_command(command, args))
    }
}

pub mod environment {
    use crate::AccessError;

    pub fn env_var(name: &str) -> Result<Option<String>, AccessError> {
        super::with("env-var", |s| s.env_var(name))
    }
}

pub mod host_facts {
    use crate::AccessError;
    pub use crate::bindings::assessment::plugin::host_facts::Facts;

    pub fn get() -> Result<Facts, AccessError> {
        super::with("host-facts.get", |s| s.host_facts())
    }
}

pub mod packages {
    use crate::AccessError;
    pub use crate::bindings::assessment::plugin::packages::InstalledPackage;

    pub fn installed() -> Result<Vec<InstalledPackage>, AccessError> {
        super::with("packages.installed", |s| s.installed_packages())
    }
}

pub mod log {
    pub use crate::bindings::assessment::plugin::log::Level;

    pub fn write(level: Level, message: &str) {
        super::with("log.write", |s| s.log(level, message));
    }
}

pub mod results {
    use crate::{EmitError, Finding};

    pub fn emit(finding: &Finding) -> Result<(), EmitError> {
        super::with("results.emit", |s| s.emit(finding))
    }
}
