//! Messages for the operator's log, tagged by the host with the plugin and
//! the job. The host caps the volume per run; anything past the budget is
//! dropped (never an error for the plugin).

use crate::imports::log::{self as raw, Level};

/// Log at debug level.
pub fn debug(message: &str) {
    raw::write(Level::Debug, message);
}

/// Log at info level.
pub fn info(message: &str) {
    raw::write(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    raw::write(Level::Warn, message);
}

/// Log at error level.
pub fn error(message: &str) {
    raw::write(Level::Error, message);
}
