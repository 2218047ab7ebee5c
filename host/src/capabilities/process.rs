//! `assessment:plugin/process` (grant `commands`): allow-listed commands of
//! the running system, with a cleared environment, in their own process
//! group, with a timeout and capped output.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::bindings::latest::assessment::plugin::process::{self, CommandOutput};
use crate::bindings::latest::assessment::plugin::types::AccessError;

use super::PluginState;

/// `PATH` of commands run for plugins.
pub const COMMAND_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

impl process::Host for PluginState {
    async fn run_command(
        &mut self,
        command: String,
        args: Vec<String>,
    ) -> wasmtime::Result<Result<CommandOutput, AccessError>> {
        if let Err(refusal) = self.target.grants.check_command(&command) {
            return Ok(Err(self.refuse("run-command", refusal)));
        }
        let limits = &self.target.limits;
        let started = std::time::Instant::now();
        let ran = run_bounded(
            &command,
            &args,
            limits.command_timeout,
            limits.command_output_bytes,
        )
        .await;
        self.provenance
            .command(&command, &args, started.elapsed(), ran.as_ref());
        Ok(ran)
    }
}

async fn read_stream_capped(
    stream: Option<impl AsyncRead + Unpin>,
    max: u64,
) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(stream) = stream {
        stream.take(max + 1).read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// Kills a command's whole process group (the command and everything it
/// started that stayed in the group) unless disarmed: on a timeout, on too
/// much output, and when the host call is dropped with the job.
struct GroupKiller {
    pgid: Option<rustix::process::Pid>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // The leader is not reaped before this runs, so the group id
            // cannot have been reused by an unrelated process.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run an allow-listed command with no inherited environment, no stdin, a
/// timeout and capped output, in a process group of its own. The whole
/// group is killed when the command overruns, and when a child it started
/// keeps its output open past the timeout.
pub(crate) async fn run_bounded(
    command: &str,
    args: &[String],
    timeout: Duration,
    max: u64,
) -> Result<CommandOutput, AccessError> {
    let mut child = tokio::process::Command::new(command)
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                AccessError::NotFound(format!("{command} does not exist"))
            }
            _ => AccessError::Io(format!("cannot start {command}: {e}")),
        })?;
    let mut killer = GroupKiller {
        pgid: child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?)),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let deadline = tokio::time::Instant::now() + timeout;
    let reading = async {
        tokio::try_join!(
            read_stream_capped(stdout, max),
            read_stream_capped(stderr, max)
        )
        .map_err(|e| AccessError::Io(format!("{command}: {e}")))
    };
    // Both streams are read to their end (or the cap) before the leader is
    // reaped, so the group id stays reserved while it may be killed.
    let (out, err) = match tokio::time::timeout_at(deadline, reading).await {
        Err(_) => {
            killer.kill();
            return Err(AccessError::Io(format!(
                "{command} did not finish within {} and was killed with its process group",
                humantime::format_duration(timeout)
            )));
        }
        Ok(read) => read?,
    };
    if out.len() as u64 > max || err.len() as u64 > max {
        killer.kill();
        return Err(AccessError::TooLarge(format!(
            "{command} wrote more than {max} bytes and was killed with its process group"
        )));
    }
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Err(_) => {
            killer.kill();
            return Err(AccessError::Io(format!(
                "{command} closed its output but did not exit within {} and was killed with its process group",
                humantime::format_duration(timeout)
            )));
        }
        Ok(status) => status.map_err(|e| AccessError::Io(format!("{command}: {e}")))?,
    };
    // Reaped: the group id may be reused from now on, never kill it.
    killer.pgid = None;
    Ok(CommandOutput {
        exit_code: status.code(),
        stdout: out,
        stderr: err,
    })
}
