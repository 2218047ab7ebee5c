//! Logs on stderr: text for a terminal, or JSON with one event per line and
//! stable field names for a collector; the level comes from
//! `ASSESSMENT_RUNTIME_LOG`, else from `[service] log_level`, and a reload
//! of the configuration (SIGHUP) changes it without a restart.

use tracing_subscriber::EnvFilter;

/// The environment variable whose filter overrides the configuration's.
pub const LOG_ENV: &str = "ASSESSMENT_RUNTIME_LOG";
/// The filter when neither the environment nor the configuration sets one.
pub const DEFAULT_LEVEL: &str = "info";

/// Why a log level was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// The directives do not parse.
    #[error("invalid log level {level:?}: {message}")]
    Invalid {
        /// What was given.
        level: String,
        /// The parser's message.
        message: String,
    },
    /// The logger is gone (the process is ending).
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The installed logger's level control.
pub struct Logging {
    reload: Reload,
    /// The environment's filter, which wins over any configuration.
    from_env: Option<String>,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("from_env", &self.from_env)
            .finish_non_exhaustive()
    }
}

/// Install the process's logger (once, at start), at the environment's
/// level or `info` until a configuration says otherwise.
///
/// JSON events are flattened: `timestamp`, `level`, `target`, `message`
/// and the event's own fields are top-level keys, and `span` holds the
/// innermost span (e.g. `{"name":"instance","instance":"sshd-jail"}`).
pub fn init(json: bool) -> Logging {
    let from_env = std::env::var(LOG_ENV).ok().filter(|v| !v.trim().is_empty());
    let filter = from_env
        .as_deref()
        .and_then(|v| EnvFilter::builder().parse(v).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LEVEL));
    // Colour codes only for a terminal: a log file or a journal gets plain
    // lines (and a plugin's escaped text cannot mix with real sequences).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let reload: Reload = if json {
        let builder = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    };
    Logging { reload, from_env }
}

impl Logging {
    /// Apply the configuration's level (`None`: the default), unless the
    /// environment set one. Returns the filter in force.
    pub fn apply(&self, configured: Option<&str>) -> Result<String, LogLevelError> {
        if let Some(env) = &self.from_env {
            return Ok(env.clone());
        }
        let level = configured.unwrap_or(DEFAULT_LEVEL);
        let filter = EnvFilter::builder()
            .parse(level)
            .map_err(|e| LogLevelError::Invalid {
                level: level.to_string(),
                message: e.to_string(),
            })?;
        (self.reload)(filter).map_err(LogLevelError::Reload)?;
        Ok(level.to_string())
    }
}
