//! Basic facts about the assessed system (`assessment:plugin/host-facts`;
//! the operator grants them with `host_facts = true`).

use crate::AccessError;
use crate::imports::host_facts as raw;

pub use raw::Facts;

/// Host name, operating system, architecture and kernel release.
pub fn facts() -> Result<Facts, AccessError> {
    raw::get()
}
