//! The command line: `serve`, and admin commands that work directly on the
//! database (for operators and scripts).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::admin::DEFAULT_ENROLLMENT_TTL;
use crate::ca::{CA_CERT_FILE, CertificateAuthority};
use crate::config::{DEFAULT_STALE_AFTER, DEFAULT_TOKEN_TTL, Limits, ServerConfig};
use crate::db::postgres::DEFAULT_POOL_SIZE;
use crate::db::{
    Backend, Database, Db, MAX_RESULTS_PAGE, PgDb, ResultFilter, RetentionPolicy, Store,
};
use crate::housekeeping::run_retention;
use crate::model::{DEFAULT_GROUP, EvidenceFilter, MAX_PAGE_SIZE};
use crate::relay::{RelayQueue, Upstream};
use crate::server::{
    ConnectionLimits, OPERATIONS_MAX_CONNECTIONS, serve_operations, serve_with, shutdown_signal,
};
use crate::state::AppState;
use crate::tls::{server_config, server_config_without_client_certificates};

/// Reference control plane for Assessment Runtime.
#[derive(Debug, Parser)]
#[command(name = "assessment-control-plane", version, about)]
pub struct Cli {
    /// The database: an SQLite file (a path, or `sqlite:PATH`; created,
    /// with its schema, if missing), or a PostgreSQL URL
    /// (`postgres://USER@HOST/DB`, `postgresql:///DB?host=/run/postgresql`)
    /// whose schema is migrated on start. Replicas share a PostgreSQL
    /// database; prefer the environment variable for a URL with a password.
    /// TLS follows libpq's `sslmode` (`disable`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`), always verifying the server against
    /// `sslrootcert=PATH` or the system's roots.
    #[arg(
        long,
        global = true,
        env = "ACP_DATABASE",
        value_name = "PATH|URL",
        hide_env_values = true,
        value_parser = DatabaseParser
    )]
    pub database: Option<Database>,
    /// What is logged: a level (error, warn, info, debug, trace) or
    /// directives such as `info,assessment_control_plane=debug`. `RUST_LOG`,
    /// when set, takes precedence (as before this option existed).
    #[arg(
        long,
        global = true,
        env = "ACP_LOG_LEVEL",
        default_value = DEFAULT_LOG_LEVEL,
        value_parser = parse_log_filter
    )]
    pub log_level: String,
    /// The log format on stderr: `text`, or `json` (one object per line,
    /// the event's message and fields as top-level keys).
    #[arg(
        long,
        global = true,
        env = "ACP_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The log level when neither `--log-level` nor `RUST_LOG` sets one.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// Checks a log filter (the value of `--log-level`).
/// Reads `--database` without quoting it in its error, as clap's parsers
/// do: a URL may hold a password.
#[derive(Clone, Debug)]
struct DatabaseParser;

impl clap::builder::TypedValueParser for DatabaseParser {
    type Value = Database;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Database, clap::Error> {
        let arg = arg.map_or_else(|| "--database".to_string(), ToString::to_string);
        let invalid = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{arg}': {message}\n"),
            )
            .with_cmd(command)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("not UTF-8".to_string()))?;
        text.parse()
            .map_err(|e: crate::error::StoreError| invalid(e.to_string()))
    }
}

fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_string())
        .map_err(|e| {
            format!(
                "{e}; use a level (error, warn, info, debug, trace) or directives such as \"info,assessment_control_plane=debug\""
            )
        })
}

/// Installs the process's logger on stderr: the filter of `RUST_LOG` when
/// it is set and valid, else `level`; JSON events are flattened (`message`
/// and the event's fields are top-level keys, `span` the innermost span).
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| tracing_subscriber::EnvFilter::builder().parse(value).ok())
        .or_else(|| tracing_subscriber::EnvFilter::builder().parse(level).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_LEVEL));
    // Colour codes only for a terminal: a log file or a journal gets plain
    // lines.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(Box<ServeArgs>),
    /// Enrollment tokens.
    #[command(subcommand)]
    EnrollmentToken(EnrollmentTokenCommand),
    /// Enrolled runtimes.
    #[command(subcommand)]
    Runtimes(RuntimesCommand),
    /// Configuration documents, per group or per runtime.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Stored evidence.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// The certificate authority that issues the server's and the runtimes'
    /// certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (roff) of the command and its subcommands
    /// into a directory (for packages).
    #[command(hide = true)]
    Man {
        /// Where the pages go (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Where the CA lives.
#[derive(Debug, Args)]
pub struct CaDirArgs {
    /// The CA directory (`ca.pem`, and `ca.key` readable only by its
    /// owner); created on first use. Default: `ca/` beside the database.
    #[arg(long, env = "ACP_CA_DIR", value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
}

/// `ca` commands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM) that runtimes must trust, creating
    /// the CA if there is none yet; its SHA-256 goes to stderr.
    Certificate(CaDirArgs),
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// The most PostgreSQL connections this process keeps open (requests
    /// beyond it wait for one); unused with SQLite, which has one.
    #[arg(long, env = "ACP_DATABASE_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE)]
    pub database_pool_size: u32,
    /// Also serve `/metrics` (Prometheus), `/healthz` and `/readyz` over
    /// plain HTTP on this address, e.g. `127.0.0.1:9465`; off by default.
    /// It shows counts, never evidence or secrets, but keep it off public
    /// networks.
    #[arg(long, env = "ACP_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The admin API's bearer token (at least 16 characters); prefer the
    /// environment variable, which other users cannot see in `ps`.
    #[arg(long, env = "ACP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Lifetime of access tokens.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// A runtime whose last heartbeat is older than this is stale.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub stale_after: Duration,
    /// Serve plain HTTP without TLS or client certificates: development
    /// only (credentials cross the network in the clear).
    #[arg(long)]
    pub dev_plain_http: bool,
    /// Serve as a Compliance Framework API does: only `/api/auth/token`,
    /// `/api/agent/heartbeat`, `/api/evidence` and health; nothing of `/v1`
    /// (no enrollment, configuration, batches or admin API: 404). Over TLS
    /// the server asks for no client certificate; runtimes use credentials
    /// from `runtimes create`.
    #[arg(long, env = "ACP_COMPLIANCE_FRAMEWORK_ONLY")]
    pub compliance_framework_only: bool,
    /// Relay the evidence this server accepts to an upstream Compliance
    /// Framework API (its base URL, `https://cf.example`): at least once,
    /// in order, from a queue of its own (`--relay-queue`), retried with
    /// backoff. Needs `--relay-queue`, `--relay-client-id` and a secret
    /// (`--relay-client-secret-file`, or `ACP_RELAY_CLIENT_SECRET`).
    #[arg(long, env = "ACP_RELAY_UPSTREAM", value_name = "URL")]
    pub relay_upstream: Option<String>,
    /// The relay's queue: an SQLite file of its own (created), not the
    /// main database.
    #[arg(long, env = "ACP_RELAY_QUEUE", value_name = "PATH")]
    pub relay_queue: Option<PathBuf>,
    /// The relay's `client_id` at the upstream's `/api/auth/token`.
    #[arg(long, env = "ACP_RELAY_CLIENT_ID", value_name = "ID")]
    pub relay_client_id: Option<String>,
    /// A file holding the relay's client secret (its first line); without
    /// it, the `ACP_RELAY_CLIENT_SECRET` environment variable.
    #[arg(long, env = "ACP_RELAY_CLIENT_SECRET_FILE", value_name = "PATH")]
    pub relay_client_secret_file: Option<PathBuf>,
    /// A CA certificate (PEM) the upstream's certificate comes from,
    /// trusted besides the system's roots.
    #[arg(long, env = "ACP_RELAY_CA", value_name = "PATH")]
    pub relay_ca: Option<PathBuf>,
    /// The names runtimes reach this server by (DNS names or IP
    /// addresses), put in its certificate.
    #[arg(
        long = "tls-name",
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub tls_names: Vec<String>,
    /// Lifetime of the client certificates issued to runtimes (they renew
    /// theirs in its last third).
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub client_cert_validity: Duration,
    /// The CA.
    #[command(flatten)]
    pub ca: CaDirArgs,
    /// The largest evidence record accepted, as compact JSON (bytes, or
    /// with a KiB, MiB or GiB suffix); larger ones get 413.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub max_record_bytes: u64,
    /// The largest body of an evidence batch request; larger get 413.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub max_batch_bytes: u64,
    /// The largest body of any other request; larger get 413.
    #[arg(long, default_value = "2MiB", value_parser = parse_size)]
    pub max_body_bytes: u64,
    /// The bytes of evidence records one runtime may store; records past
    /// it get 507.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub runtime_storage_quota: u64,
    /// Requests one source address may send at once to the unauthenticated
    /// routes (enrollment, token) before getting 429.
    #[arg(long, default_value_t = crate::config::DEFAULT_AUTH_BURST)]
    pub auth_burst: u32,
    /// Requests per minute one source address may send to them in the long run.
    #[arg(long, default_value_t = crate::config::DEFAULT_AUTH_PER_MINUTE)]
    pub auth_per_minute: u32,
    /// The most connections open at once; more wait until one closes.
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// The longest a client may take for its TLS handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// The longest a client may take to send a request's headers, and the
    /// longest a kept-alive connection may stay idle.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// The longest a request may take from its headers to its answer (408
    /// after that).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// The longest a connection may move no byte while the server waits
    /// on it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long evidence records are kept (e.g. `90d`), or `forever`.
    /// Older records are deleted by a background pass and their bytes
    /// given back to the runtime's quota; the latest record of each stream
    /// is always kept.
    #[arg(
        long,
        env = "ACP_EVIDENCE_RETENTION",
        default_value = "forever",
        value_parser = crate::housekeeping::parse_retention_flag
    )]
    pub evidence_retention: crate::housekeeping::RetentionAge,
    /// One runtime's own retention, instead of --evidence-retention:
    /// `RUNTIME_ID=AGE` (e.g. `<uuid>=30d` or `<uuid>=forever`); repeat for
    /// more runtimes.
    #[arg(
        long = "evidence-retention-for",
        value_name = "RUNTIME_ID=AGE",
        value_parser = crate::housekeeping::parse_runtime_retention
    )]
    pub evidence_retention_for: Vec<(uuid::Uuid, Option<Duration>)>,
    /// The longest life of a web view session (`/ui/`), however active
    /// (one unused for 30 minutes ends before).
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub ui_session_ttl: Duration,
    /// Time between two retention passes (the first runs at start).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
}

/// A size in bytes: a number, optionally followed by `B`, `KiB`, `MiB` or
/// `GiB` (also `K`, `M`, `G`, which mean the same powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size: use a number of bytes, or 256KiB, 32MiB, 1GiB")
    })?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `enrollment-token` commands.
#[derive(Debug, Subcommand)]
pub enum EnrollmentTokenCommand {
    /// Create a single-use enrollment token and print it.
    Create {
        /// The group the enrolled runtime joins.
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// `runtimes` commands.
#[derive(Debug, Subcommand)]
pub enum RuntimesCommand {
    /// Print every runtime as JSON.
    List {
        /// A runtime whose last heartbeat is older than this is stale.
        #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
        stale_after: Duration,
    },
    /// Create a runtime and its credentials without enrollment, for a
    /// runtime given them in its `[control_plane]` settings (no client
    /// certificate: for `serve --compliance-framework-only` or plain HTTP).
    /// Prints `{"runtime_id", "name", "group"}` and, without
    /// `--secret-file`, `client_secret`.
    Create {
        /// The runtime's name (its machine's host name).
        #[arg(long)]
        name: String,
        /// The group it joins.
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        /// Write the client secret to this new file (mode 0600) instead of
        /// printing it.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
    /// Revoke a runtime: its tokens stop working and it cannot get new ones.
    Revoke {
        /// The runtime's id.
        id: String,
    },
}

/// `config` commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Assign a configuration document (a JSON object in FILE) to a group,
    /// or to one runtime (in force for it instead of its group's).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["group", "runtime"])))]
    Set {
        /// The group.
        #[arg(long)]
        group: Option<String>,
        /// The runtime's id.
        #[arg(long)]
        runtime: Option<String>,
        /// The JSON document.
        file: PathBuf,
    },
    /// Remove a runtime's own configuration: its group's applies again.
    Unset {
        /// The runtime's id.
        #[arg(long)]
        runtime: String,
    },
}

/// `evidence` commands.
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Print stored evidence as JSON, in the order it arrived.
    List {
        /// Only this runtime's records.
        #[arg(long)]
        runtime: Option<String>,
        /// Only this plugin's records.
        #[arg(long)]
        plugin: Option<String>,
        /// Only this check's records.
        #[arg(long)]
        check: Option<String>,
    },
    /// Print the latest record of each evidence stream as an OSCAL 1.1.3
    /// assessment-results document, one result per runtime (as
    /// `GET /v1/admin/oscal/assessment-results`).
    Oscal {
        /// Only this runtime's records (default every runtime's).
        #[arg(long)]
        runtime: Option<String>,
    },
    /// Print the latest record of each stream (one check about one subject
    /// on one machine) as JSON, failing first.
    Latest {
        /// Only this status (`satisfied`, `not-satisfied`).
        #[arg(long)]
        status: Option<String>,
        /// Only this severity.
        #[arg(long)]
        severity: Option<String>,
        /// Only this plugin.
        #[arg(long)]
        plugin: Option<String>,
        /// Only this runtime (its id).
        #[arg(long)]
        runtime: Option<String>,
        /// Only records carrying this reference, e.g. `CIS 5.2.8`.
        #[arg(long)]
        reference: Option<String>,
    },
}

/// Runs a command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(
                shell,
                &mut command,
                "assessment-control-plane",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))
        }
        Command::Serve(args) => run_serve(cli.database, *args),
        Command::EnrollmentToken(EnrollmentTokenCommand::Create { group, ttl }) => {
            with_backend(cli.database, |db| {
                let token = db.create_enrollment_token(&group, ttl, Utc::now())?;
                eprintln!(
                    "enrollment token for group {:?}, single use, valid until {}:",
                    token.group, token.expires_at
                );
                print_line(&token.token)
            })
        }
        Command::Runtimes(RuntimesCommand::List { stale_after }) => {
            with_backend(cli.database, |db| {
                print_json(&db.list_runtimes(Utc::now(), stale_after)?)
            })
        }
        Command::Runtimes(RuntimesCommand::Create {
            name,
            group,
            secret_file,
        }) => {
            let created = with_backend(cli.database, |db| {
                Ok(crate::runtime_credentials::create(
                    db,
                    &name,
                    &group,
                    Utc::now(),
                )?)
            })?;
            let mut shown = serde_json::json!({
                "runtime_id": created.runtime_id,
                "name": name,
                "group": created.group,
            });
            match secret_file {
                Some(path) => {
                    crate::runtime_credentials::write_secret(&path, &created.client_secret)?;
                    eprintln!(
                        "runtime {} created; its client secret is in {}",
                        created.runtime_id,
                        path.display()
                    );
                }
                None => shown["client_secret"] = created.client_secret.into(),
            }
            print_json(&shown)
        }
        Command::Runtimes(RuntimesCommand::Revoke { id }) => with_backend(cli.database, |db| {
            db.revoke_runtime(&id, Utc::now())?;
            eprintln!("runtime {id} revoked");
            Ok(())
        }),
        Command::Config(ConfigCommand::Set {
            group,
            runtime,
            file,
        }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let document: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            with_backend(cli.database, |db| {
                let version = match (group, runtime) {
                    (_, Some(runtime)) => db.set_runtime_config(&runtime, &document, Utc::now())?,
                    (Some(group), None) => db.set_config(&group, &document, Utc::now())?,
                    (None, None) => bail!("--group or --runtime is required"),
                };
                print_json(&version)
            })
        }
        Command::Config(ConfigCommand::Unset { runtime }) => with_backend(cli.database, |db| {
            if db.clear_runtime_config(&runtime)? {
                eprintln!("runtime {runtime} now uses its group's configuration");
                Ok(())
            } else {
                bail!("the runtime {runtime} has no configuration of its own")
            }
        }),
        Command::Ca(CaCommand::Certificate(args)) => {
            let dir = ca_dir(cli.database.as_ref(), args)?;
            let ca = load_ca(&dir)?;
            eprintln!(
                "CA certificate {} (SHA-256 {})",
                dir.join(CA_CERT_FILE).display(),
                ca.sha256()
            );
            let mut out = std::io::stdout().lock();
            write!(out, "{}", ca.certificate_pem()).context("cannot write to stdout")
        }
        Command::Evidence(EvidenceCommand::List {
            runtime,
            plugin,
            check,
        }) => {
            let filter = EvidenceFilter {
                runtime,
                plugin,
                check,
                limit: Some(MAX_PAGE_SIZE),
                after: None,
            };
            with_backend(cli.database, |db| print_evidence(db, filter))
        }
        Command::Evidence(EvidenceCommand::Oscal { runtime }) => with_backend(cli.database, |db| {
            print_json(&crate::oscal_export::assessment_results(
                db,
                runtime.as_deref(),
            )?)
        }),
        Command::Evidence(EvidenceCommand::Latest {
            status,
            severity,
            plugin,
            runtime,
            reference,
        }) => {
            let filter = ResultFilter {
                status,
                severity,
                plugin,
                runtime,
                reference,
                limit: Some(MAX_RESULTS_PAGE),
                after: None,
            };
            with_backend(cli.database, |db| print_latest(db, filter))
        }
    }
}

fn required(database: Option<Database>) -> anyhow::Result<Database> {
    database.context(
        "--database PATH|URL (or ACP_DATABASE) is required: the SQLite file or the postgres:// URL to use",
    )
}

/// Runs an admin command on the database: one SQLite connection, or one
/// PostgreSQL connection (the schema migrated first, as `serve` does).
fn with_backend<T>(
    database: Option<Database>,
    command: impl FnOnce(&mut dyn Backend) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let database = required(database)?;
    match &database {
        Database::Sqlite(path) => {
            let mut db = Db::open(path)
                .with_context(|| format!("cannot open the database {}", path.display()))?;
            command(&mut db)
        }
        Database::Postgres(settings) => {
            let mut client = settings
                .connect()
                .and_then(|mut client| {
                    crate::db::postgres::migrate(&mut client)?;
                    Ok(client)
                })
                .with_context(|| format!("cannot open the database {database}"))?;
            command(&mut PgDb::new(&mut client))
        }
    }
}

/// The CA directory: `--ca-dir`, or `ca/` beside the database.
fn ca_dir(database: Option<&Database>, args: CaDirArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = args.ca_dir {
        return Ok(dir);
    }
    let database = database.and_then(Database::sqlite_path).context(
        "--ca-dir DIR is required (or an SQLite --database PATH: the CA lives beside the database file by default); replicas share one CA directory",
    )?;
    Ok(database
        .parent()
        .map_or_else(|| PathBuf::from("ca"), |parent| parent.join("ca")))
}

fn load_ca(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    CertificateAuthority::load_or_create(dir)
        .with_context(|| format!("cannot use the certificate authority in {}", dir.display()))
}

fn run_serve(database: Option<Database>, args: ServeArgs) -> anyhow::Result<()> {
    let relay = relay_settings(&args)?;
    let Some(admin_token) = args.admin_token else {
        bail!("an admin token is required: set ACP_ADMIN_TOKEN or pass --admin-token");
    };
    let size = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
    let config =
        ServerConfig::new(&admin_token, args.token_ttl, args.stale_after)?.with_limits(Limits {
            max_record_bytes: size(args.max_record_bytes),
            max_batch_bytes: size(args.max_batch_bytes),
            max_body_bytes: size(args.max_body_bytes),
            runtime_storage_quota: args.runtime_storage_quota,
            auth_burst: args.auth_burst,
            auth_per_minute: args.auth_per_minute,
        })?;
    let compliance_framework_only = args.compliance_framework_only;
    let mut config = config.with_compliance_framework_only(compliance_framework_only);
    let connection_limits = ConnectionLimits {
        max_connections: args.max_connections,
        handshake_timeout: args.handshake_timeout,
        header_read_timeout: args.header_read_timeout,
        request_timeout: args.request_timeout,
        idle_timeout: args.idle_timeout,
    };
    connection_limits.validate().map_err(anyhow::Error::msg)?;
    if args.client_cert_validity < Duration::from_secs(60) {
        bail!("--client-cert-validity must be at least 1m");
    }
    if args.ui_session_ttl < Duration::from_secs(60)
        || args.ui_session_ttl > Duration::from_secs(7 * 24 * 3600)
    {
        bail!("--ui-session-ttl must be between 1m and 7d");
    }
    config.session_ttl = args.ui_session_ttl;
    if args.retention_interval < Duration::from_secs(1) {
        bail!("--retention-interval must be at least 1s");
    }
    let retention = RetentionPolicy {
        max_age: args.evidence_retention.0,
        per_runtime: args.evidence_retention_for.iter().copied().collect(),
    };
    let tls = if args.dev_plain_http {
        None
    } else {
        if args.tls_names.iter().all(|name| name.trim().is_empty()) {
            bail!("--tls-name needs at least one name or address runtimes reach this server by");
        }
        let dir = ca_dir(database.as_ref(), args.ca)?;
        let ca = Arc::new(load_ca(&dir)?.with_client_validity(args.client_cert_validity));
        let server_config = if args.compliance_framework_only {
            server_config_without_client_certificates(ca.clone(), &args.tls_names)
        } else {
            server_config(ca.clone(), &args.tls_names)
        }
        .context("cannot set up TLS serving")?;
        tracing::info!(
            ca = %dir.join(CA_CERT_FILE).display(),
            ca_sha256 = %ca.sha256(),
            names = ?args.tls_names,
            "serving mutual TLS; runtimes enroll with this CA certificate"
        );
        Some((ca, server_config))
    };
    let database = required(database)?;
    let pool_size = args.database_pool_size;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = Store::open_database(&database, pool_size)
            .await
            .with_context(|| format!("cannot open the database {database}"))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr().context("no local address")?;
        let operations = match args.metrics_listen {
            Some(metrics) => Some(
                tokio::net::TcpListener::bind(metrics)
                    .await
                    .with_context(|| format!("cannot listen on {metrics} (--metrics-listen)"))?,
            ),
            None => None,
        };
        let mut state = AppState::new(store, config);
        let scheme = match tls {
            // Without client certificates there is none to check.
            Some((_, server_config)) if compliance_framework_only => Some(server_config),
            Some((ca, server_config)) => {
                state = state.with_ca(ca);
                Some(server_config)
            }
            None => {
                tracing::warn!("serving plain HTTP (--dev-plain-http): for local development only");
                None
            }
        };
        // One signal stops both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let stopping = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        let relay = match relay {
            Some((queue_path, upstream)) => {
                let queue = Arc::new(
                    RelayQueue::open(&queue_path)
                        .context("cannot open the relay queue (--relay-queue)")?,
                );
                let (released, dropped) = queue
                    .recover(&state.store)
                    .await
                    .context("cannot recover the relay queue")?;
                let (waiting, rejected) = queue.depth()?;
                tracing::info!(upstream = %upstream.url, queue = %queue_path.display(), waiting, rejected, released, dropped, "relaying accepted evidence upstream");
                state = state.with_relay(queue.clone());
                Some(tokio::spawn(crate::relay::run(queue, upstream, stopping())))
            }
            None => None,
        };
        let retention_task = tokio::spawn(run_retention(
            state.store.clone(),
            retention,
            args.retention_interval,
            stopping(),
        ));
        let operations = match operations {
            Some(listener) => {
                let metrics_address = listener.local_addr().context("no local address")?;
                tracing::info!(address = %metrics_address, "metrics listening (http): /metrics, /healthz, /readyz");
                let limits = ConnectionLimits {
                    max_connections: OPERATIONS_MAX_CONNECTIONS,
                    ..connection_limits
                };
                Some(tokio::spawn(serve_operations(
                    listener,
                    state.clone(),
                    limits,
                    stopping(),
                )))
            }
            None => None,
        };
        if compliance_framework_only {
            tracing::info!("serving only the Compliance Framework routes (/api/auth/token, /api/agent/heartbeat, /api/evidence) and health; /v1 is not served");
        }
        let kind = if scheme.is_some() { "https" } else { "http" };
        tracing::info!(%address, %database, "control plane listening ({kind})");
        serve_with(listener, scheme, state, connection_limits, stopping())
            .await
            .with_context(|| format!("the {} server failed", kind.to_uppercase()))?;
        if let Some(operations) = operations {
            operations
                .await
                .context("the metrics server panicked")?
                .context("the metrics server failed")?;
        }
        if let Some(relay) = relay {
            relay
                .await
                .context("the relay panicked")?
                .context("the relay failed")?;
        }
        retention_task.abort();
        tracing::info!("control plane stopped");
        Ok(())
    })
}

/// The environment variable holding the relay's client secret when no
/// `--relay-client-secret-file` is given (never a command-line value, which
/// other users see in `ps`).
const RELAY_SECRET_ENV: &str = "ACP_RELAY_CLIENT_SECRET";

/// The relay's queue file and upstream, from `serve`'s options (`None`
/// without `--relay-upstream`); the secret is read from its file (or the
/// environment) now.
fn relay_settings(args: &ServeArgs) -> anyhow::Result<Option<(PathBuf, Upstream)>> {
    let Some(url) = &args.relay_upstream else {
        let given = args.relay_queue.is_some()
            || args.relay_client_id.is_some()
            || args.relay_client_secret_file.is_some()
            || args.relay_ca.is_some();
        if given {
            bail!("the --relay-* options need --relay-upstream URL");
        }
        return Ok(None);
    };
    let url = url.trim_end_matches('/').to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("--relay-upstream {url:?}: give the upstream's base URL, such as https://cf.example");
    }
    let queue = args
        .relay_queue
        .clone()
        .context("--relay-upstream needs --relay-queue PATH: the relay's own SQLite file")?;
    let client_id = args
        .relay_client_id
        .clone()
        .context("--relay-upstream needs --relay-client-id: the relay's client id upstream")?;
    let client_secret = match &args.relay_client_secret_file {
        Some(secret_file) => {
            let text = std::fs::read_to_string(secret_file).with_context(|| {
                format!(
                    "cannot read the relay's client secret from {}",
                    secret_file.display()
                )
            })?;
            text.lines().next().unwrap_or_default().trim().to_string()
        }
        None => std::env::var(RELAY_SECRET_ENV).with_context(|| {
            format!(
                "--relay-upstream needs the relay's client secret: --relay-client-secret-file FILE, or {RELAY_SECRET_ENV} in the environment"
            )
        })?,
    };
    if client_secret.trim().is_empty() {
        bail!("the relay's client secret is empty");
    }
    let client_secret = client_secret.trim().to_string();
    let ca_pem = match &args.relay_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --relay-ca {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Some((
        queue,
        Upstream {
            url,
            client_id,
            client_secret,
            ca_pem,
        },
    )))
}

/// Default lifetimes and limits, shown by `--help`, kept equal to the
/// constants.
const _: () = {
    assert!(DEFAULT_TOKEN_TTL.as_secs() == 15 * 60);
    assert!(DEFAULT_STALE_AFTER.as_secs() == 3 * 60);
    assert!(DEFAULT_ENROLLMENT_TTL.as_secs() == 3600);
    assert!(crate::config::DEFAULT_MAX_RECORD_BYTES == 4 << 20);
    assert!(crate::config::DEFAULT_MAX_BATCH_BYTES == 32 << 20);
    assert!(crate::config::DEFAULT_MAX_BODY_BYTES == 2 << 20);
    assert!(crate::config::DEFAULT_RUNTIME_STORAGE_QUOTA == 4 << 30);
    assert!(crate::server::DEFAULT_HANDSHAKE_TIMEOUT.as_secs() == 10);
    assert!(crate::server::DEFAULT_HEADER_READ_TIMEOUT.as_secs() == 10);
    assert!(crate::server::DEFAULT_REQUEST_TIMEOUT.as_secs() == 60);
    assert!(crate::server::DEFAULT_IDLE_TIMEOUT.as_secs() == 60);
    assert!(crate::housekeeping::DEFAULT_RETENTION_INTERVAL.as_secs() == 3600);
    assert!(crate::session::DEFAULT_SESSION_TTL.as_secs() == 8 * 3600);
};

fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("cannot write to stdout")
}

/// Prints every record matching `filter` as one JSON array, a page at a
/// time, so that memory stays bounded however many records there are.
fn print_evidence(db: &mut dyn Backend, mut filter: EvidenceFilter) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write!(out, "[")?;
    let mut first = true;
    loop {
        let page = db.list_evidence(&filter)?;
        for record in &page.evidence {
            out.write_all(if first { b"\n" } else { b",\n" })?;
            serde_json::to_writer_pretty(&mut out, record)?;
            first = false;
        }
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    writeln!(out, "{}]", if first { "" } else { "\n" })?;
    out.flush().context("cannot write to stdout")
}

/// Prints every latest result matching `filter` as one JSON array, a page
/// at a time (memory stays bounded).
fn print_latest(db: &mut dyn Backend, mut filter: ResultFilter) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write!(out, "[")?;
    let mut first = true;
    loop {
        let page = db.latest_results(&filter)?;
        for result in &page.results {
            out.write_all(if first { b"\n" } else { b",\n" })?;
            serde_json::to_writer_pretty(&mut out, result)?;
            first = false;
        }
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    writeln!(out, "{}]", if first { "" } else { "\n" })?;
    out.flush().context("cannot write to stdout")
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    print_line(&serde_json::to_string_pretty(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve`'s options from `args`.
    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(
            ["assessment-control-plane", "serve"]
                .iter()
                .chain(args)
                .copied(),
        )
        .unwrap();
        match cli.command {
            Command::Serve(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn relay_options_are_checked_and_the_secret_read_from_its_file() {
        assert!(relay_settings(&serve_args(&[])).unwrap().is_none());
        let refused =
            |args: &[&str]| format!("{:#}", relay_settings(&serve_args(args)).unwrap_err());
        assert!(refused(&["--relay-queue", "/q"]).contains("need --relay-upstream"));
        assert!(refused(&["--relay-upstream", "cf.example"]).contains("base URL"));
        assert!(refused(&["--relay-upstream", "https://cf"]).contains("--relay-queue"));
        let upstream = ["--relay-upstream", "https://cf/", "--relay-queue", "/q"];
        assert!(refused(&upstream).contains("--relay-client-id"));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\nignored\n").unwrap();
        let mut full = upstream.to_vec();
        full.extend(["--relay-client-id", "relay", "--relay-client-secret-file"]);
        full.push(secret.to_str().unwrap());
        let (queue, upstream) = relay_settings(&serve_args(&full)).unwrap().unwrap();
        assert_eq!(queue, PathBuf::from("/q"));
        assert_eq!(upstream.url, "https://cf");
        assert_eq!(upstream.client_secret, "s3cret");
        assert!(!format!("{upstream:?}").contains("s3cret"));
        std::fs::write(&secret, "\n").unwrap();
        assert!(refused(&full).contains("empty"));
        full.extend(["--relay-ca", "/nonexistent/ca.pem"]);
        std::fs::write(&secret, "s").unwrap();
        assert!(refused(&full).contains("--relay-ca"));
    }

    #[test]
    fn sizes_are_parsed() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
