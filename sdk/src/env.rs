//! Environment variables of the agent's process
//! (`assessment:plugin/environment`; the operator names them with `env`).

use crate::AccessError;
use crate::imports::environment as raw;

/// An allow-listed environment variable of the host process; `None` when
/// unset.
pub fn var(name: &str) -> Result<Option<String>, AccessError> {
    raw::env_var(name)
}
