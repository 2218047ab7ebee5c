//! `assessment:plugin/log`, and the plugin's stdout and stderr: messages for
//! the operator, tagged with the job, within a per-run byte budget.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::bindings::latest::assessment::plugin::log::{self, Level};

use super::{JobLabels, PluginState};
use crate::guest_text::{bounded, caps};

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `log.write`.
    Log,
    /// The plugin's standard output.
    Stdout,
    /// The plugin's standard error.
    Stderr,
}

#[derive(Debug, Default)]
struct Usage {
    used: u64,
    dropped: u64,
    noticed: bool,
}

/// The log of one run: forwards to `tracing` until the budget is spent,
/// then drops (and says so once).
#[derive(Debug)]
pub struct LogSink {
    labels: Arc<JobLabels>,
    budget: u64,
    usage: Mutex<Usage>,
}

impl LogSink {
    /// A sink with `budget` bytes.
    pub fn new(labels: Arc<JobLabels>, budget: u64) -> Self {
        LogSink {
            labels,
            budget,
            usage: Mutex::new(Usage::default()),
        }
    }

    /// The plugin whose run this is.
    pub fn plugin(&self) -> &str {
        &self.labels.plugin
    }

    /// Bytes dropped because the budget was spent.
    pub fn dropped_bytes(&self) -> u64 {
        self.usage.lock().map_or(0, |u| u.dropped)
    }

    /// Take `size` bytes from the budget; once it is spent, count the bytes
    /// as dropped (and say so once) and return `false`.
    fn charge(&self, size: u64) -> bool {
        let Ok(mut usage) = self.usage.lock() else {
            return false;
        };
        if usage.used.saturating_add(size) > self.budget {
            usage.dropped = usage.dropped.saturating_add(size);
            if !usage.noticed {
                usage.noticed = true;
                tracing::warn!(
                    plugin = %self.labels.plugin,
                    version = %self.labels.version,
                    job = %self.labels.job_id,
                    budget_bytes = self.budget,
                    "plugin log budget spent; further messages and denial lines of this run are dropped (denials are still counted)"
                );
            }
            return false;
        }
        usage.used += size;
        true
    }

    /// Log a denied call, charged to the same budget as the plugin's own
    /// messages: its reason carries guest-chosen text (a path, a name).
    pub fn denied(&self, call: &str, why: &str) {
        let why = bounded(why, caps::DENIAL);
        if !self.charge(why.len() as u64) {
            return;
        }
        let l = &self.labels;
        tracing::warn!(plugin = %l.plugin, version = %l.version, job = %l.job_id, call, "denied: {why}");
    }

    /// Write one message.
    pub fn write(&self, level: Level, stream: Stream, message: &str) {
        if !self.charge(message.len() as u64) {
            return;
        }
        let message = bounded(message.trim_end_matches(['\n', '\r']), caps::LOG_MESSAGE);
        let stream = match stream {
            Stream::Log => "log",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let l = &self.labels;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "plugin", $level, plugin = %l.plugin, version = %l.version, job = %l.job_id, stream, "{message}")
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
    }
}

impl log::Host for PluginState {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.log.write(level, Stream::Log, &message);
        Ok(())
    }
}

/// The plugin's stdout or stderr as WASI sees it: every write goes to the
/// sink (accepted in full, so a plugin never blocks or fails on output).
#[derive(Clone)]
pub struct PluginOutput {
    sink: Arc<LogSink>,
    stream: Stream,
}

impl PluginOutput {
    /// An output stream into `sink`.
    pub fn new(sink: Arc<LogSink>, stream: Stream) -> Self {
        PluginOutput { sink, stream }
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for PluginOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let level = if self.stream == Stream::Stderr {
            Level::Warn
        } else {
            Level::Info
        };
        self.sink
            .write(level, self.stream, &String::from_utf8_lossy(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Arc<JobLabels> {
        Arc::new(JobLabels {
            plugin: "p".into(),
            version: "1".into(),
            digest: "sha256:00".into(),
            job_id: "j".into(),
        })
    }

    #[test]
    fn messages_past_the_budget_are_dropped_and_counted() {
        let sink = LogSink::new(labels(), 10);
        sink.write(Level::Info, Stream::Log, "12345");
        sink.write(Level::Info, Stream::Log, "12345");
        assert_eq!(sink.dropped_bytes(), 0);
        sink.write(Level::Info, Stream::Stdout, "1");
        sink.write(Level::Info, Stream::Log, "123");
        assert_eq!(sink.dropped_bytes(), 4);
    }

    #[test]
    fn denial_lines_spend_the_log_budget() {
        let sink = LogSink::new(labels(), 1000);
        for _ in 0..100 {
            sink.denied("read-file", &"/x".repeat(1 << 20));
        }
        // Each line is capped, and the budget stops them after a few.
        assert!(sink.dropped_bytes() > 0);
        assert!(sink.usage.lock().unwrap().used <= 1000);
    }
}
