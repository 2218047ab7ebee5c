//! The messages the runtime and the control plane exchange; both sides use
//! these types unchanged:
//!
//! - [`evidence`]: findings as Compliance Framework evidence, in batches
//!   with idempotency keys;
//! - [`heartbeat`]: the runtime's state (plugins, last jobs, outbox);
//! - [`oscal`]: evidence records as an OSCAL assessment-results document
//!   (the runtime's `run --output oscal`, the control plane's export);
//! - [`config`]: the configuration document (the agent configuration's
//!   schema, also served by the control plane as JSON);
//! - [`provenance`]: what the host served a plugin in one job, carried in
//!   the run report and in the job's evidence.
//!
//! [`from_json`] reads any of them from JSON with an error that names the
//! field.

pub mod config;
pub mod evidence;
pub mod heartbeat;
pub mod oscal;
pub mod provenance;

use std::fmt;

pub use config::RawConfig;
pub use evidence::{EvidenceBatch, EvidenceCreateRequest, EvidenceRecord};
pub use heartbeat::{Heartbeat, JobErrorKind, JobOutcome, JobStatus, OutboxDepth, PluginState};
pub use provenance::Provenance;

/// A message that does not have its type's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WireError {
    /// Where, as `plugin[0].grants`; empty for the message as a whole.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// `value` read as a `T`; the error names the field that does not fit.
pub fn from_json<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, WireError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        // The path of the message as a whole is written ".".
        let path = e.path().to_string();
        WireError {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}
