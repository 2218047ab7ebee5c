//! Files of the assessed system (`assessment:plugin/filesystem`; the
//! operator grants paths with `read`).
//!
//! Paths are absolute paths of the assessed system (the host maps them under
//! its assessment root). Each call succeeds only inside what the operator
//! granted; otherwise it returns [`AccessError::Denied`].

use crate::AccessError;
use crate::imports::filesystem as raw;

pub use raw::{DirEntry, EntryKind, FileStat};

/// The content of a regular file (up to the host's file-size limit, 1 MiB
/// by default; see [`read_range`] for larger files).
pub fn read_file(path: &str) -> Result<Vec<u8>, AccessError> {
    raw::read_file(path)
}

/// Up to `length` bytes of a regular file from byte `offset` (fewer at the
/// end of the file). Reads a file of any size one window at a time.
pub fn read_range(path: &str, offset: u64, length: u64) -> Result<Vec<u8>, AccessError> {
    raw::read_range(path, offset, length)
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

/// Metadata of a path. `links > 1` on a regular file means it may also be
/// reachable under another path.
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
