//! Commands of the running system (`assessment:plugin/process`; the
//! operator allow-lists programs with `commands`).

use crate::AccessError;
use crate::imports::process as raw;

pub use raw::CommandOutput;

/// Run an allow-listed command (absolute program path) with an empty
/// environment, no stdin, a timeout and capped output.
pub fn run_command(command: &str, args: &[&str]) -> Result<CommandOutput, AccessError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    raw::run_command(command, &args)
}
