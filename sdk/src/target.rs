//! Read-only access to the assessed system, through the host.
//!
//! Paths are absolute paths of the assessed system (the host maps them under
//! its assessment root). Each call succeeds only inside what the operator
//! granted; otherwise it returns [`AccessError::Denied`].

use crate::AccessError;
use crate::bindings::assessment::plugin::target as raw;

pub use raw::{CommandOutput, DirEntry, EntryKind, FileStat, HostFacts};

/// Facts about the assessed system (needs the `host_facts` grant).
pub fn host_facts() -> Result<HostFacts, AccessError> {
    raw::facts()
}

/// The content of a file.
pub fn read_file(path: &str) -> Result<Vec<u8>, AccessError> {
    raw::read_file(path)
}

/// The content of a file as text (invalid UTF-8 is replaced).
pub fn read_to_string(path: &str) -> Result<String, AccessError> {
    raw::read_file(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The content of a file as text, or `None` when it does not exist.
pub fn read_optional(path: &str) -> Result<Option<String>, AccessError> {
    match read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(AccessError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Metadata of a path.
pub fn stat(path: &str) -> Result<FileStat, AccessError> {
    raw::stat(path)
}

/// Whether a path exists (`false` when it does not; other errors as errors).
pub fn exists(path: &str) -> Result<bool, AccessError> {
    match raw::stat(path) {
        Ok(_) => Ok(true),
        Err(AccessError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The entries of a directory, sorted by name.
pub fn list_dir(path: &str) -> Result<Vec<DirEntry>, AccessError> {
    raw::list_dir(path)
}

/// Run an allow-listed command (absolute program path).
pub fn run_command(command: &str, args: &[&str]) -> Result<CommandOutput, AccessError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    raw::run_command(command, &args)
}

/// An allow-listed environment variable of the host process.
pub fn env_var(name: &str) -> Result<Option<String>, AccessError> {
    raw::env_var(name)
}

/// Permission bits as the usual octal string, e.g. `0640`.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_string_is_four_octal_digits_without_file_type_bits() {
        assert_eq!(mode_string(0o100640), "0640");
        assert_eq!(mode_string(0o4755), "4755");
        assert_eq!(mode_string(0o600), "0600");
    }
}
