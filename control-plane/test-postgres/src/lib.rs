//! A throwaway PostgreSQL cluster for tests, shared by every test process
//! of a suite run, with a fresh database per test.
//!
//! The cluster lives in `$ACP_TEST_POSTGRES_DIR` (scripts/test.sh makes one
//! per run and stops the server at its end), else in
//! `$TMPDIR/assessment-test-postgres-<uid>`: `cluster/` (the data
//! directory, also holding the Unix socket that is the only way in: no TCP
//! port, trust authentication), `server.log`, and `lock`, held while a
//! process creates or starts the cluster, so that the first test process
//! does it and the others find it running. fsync is off: a crash loses
//! nothing a test needs.
//!
//! As root, initdb refuses to run: the cluster then belongs to the
//! `postgres` user that Debian's package creates, and its commands run
//! through `runuser`. Without PostgreSQL's binaries (under
//! `/usr/lib/postgresql/*/bin`, else on `PATH`) a test panics with how to
//! install them: these tests never skip.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser the tests connect as.
const SUPERUSER: &str = "postgres";

/// How to get PostgreSQL's server binaries.
const INSTALL_HINT: &str = "PostgreSQL's server is needed by the control plane's PostgreSQL tests: install it with `sudo apt-get install postgresql` (scripts/test.sh does)";

/// The running cluster of this suite run.
#[derive(Debug)]
pub struct Cluster {
    /// The directory of the server's Unix socket.
    pub socket_dir: PathBuf,
}

/// The cluster, created and started by the first caller of any test process.
///
/// # Panics
/// If PostgreSQL is not installed or the cluster cannot be started (the
/// message says why and what to do).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match start() {
        Ok(cluster) => cluster,
        Err(message) => panic!("{message}"),
    })
}

/// A database of its own for one test, dropped with it.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// Creates an empty database in the shared cluster.
    ///
    /// # Panics
    /// If the cluster cannot be had or the database created.
    pub fn create() -> Self {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "test_{}_{}_{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let create = format!("CREATE DATABASE {name}");
        if let Err(error) = off_runtime(|| admin_client().batch_execute(&create)) {
            panic!("cannot create the test database {name}: {error:?}");
        }
        Self { name }
    }

    /// The database's URL, as the control plane takes it.
    pub fn url(&self) -> String {
        format!(
            "postgresql:///{}?host={}&user={SUPERUSER}",
            self.name,
            cluster().socket_dir.display()
        )
    }

    /// The database's connection settings.
    pub fn config(&self) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host_path(&cluster().socket_dir)
            .user(SUPERUSER)
            .dbname(&self.name);
        config
    }

    /// A new connection to the database (the synchronous client: not for
    /// async code, which runs it on the blocking pool).
    ///
    /// # Panics
    /// If it cannot connect.
    pub fn connect(&self) -> postgres::Client {
        match self.config().connect(postgres::NoTls) {
            Ok(client) => client,
            Err(error) => panic!("cannot connect to {}: {error:?}", self.url()),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE: connections a test left open (a killed process's, a pool's)
        // do not keep it.
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = off_runtime(|| admin_client().batch_execute(&drop));
    }
}

/// Runs `work` on a thread of its own: the synchronous client runs an async
/// runtime of its own, which it cannot inside a test's.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn admin_client() -> postgres::Client {
    let mut config = postgres::Config::new();
    config
        .host_path(&cluster().socket_dir)
        .user(SUPERUSER)
        .dbname("postgres");
    match config.connect(postgres::NoTls) {
        Ok(client) => client,
        Err(error) => panic!("cannot connect to the test cluster: {error:?}"),
    }
}

/// The directory of the suite run's cluster.
fn base_dir() -> PathBuf {
    match std::env::var_os("ACP_TEST_POSTGRES_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir().join(format!("assessment-test-postgres-{}", uid())),
    }
}

/// The process's user id (the owner of /proc/self).
fn uid() -> u32 {
    fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// The directory of PostgreSQL's server binaries: the newest under
/// `/usr/lib/postgresql` (Debian's layout), else `initdb` on `PATH`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .ok_or_else(|| INSTALL_HINT.to_string())
}

/// A command of `bin`, run as the cluster's owner: `postgres` when this
/// process is root (initdb refuses root), else this process's user.
fn as_owner(bin: &Path, program: &str) -> Command {
    let program = bin.join(program);
    if uid() == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {what} ({command:?}): {e}; {INSTALL_HINT}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let base = base_dir();
    fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    // The owner (postgres, when root runs the tests) reaches its cluster
    // through this directory.
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot open up {}: {e}", base.display()))?;
    let lock = File::create(base.join("lock"))
        .map_err(|e| format!("cannot create the lock in {}: {e}", base.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", base.display()))?;
    let data = base.join("cluster");
    let mut status = as_owner(&bin, "pg_ctl");
    status.arg("status").arg("-D").arg(&data);
    let running = status.output().is_ok_and(|o| o.status.success());
    if !running {
        if !data.join("PG_VERSION").exists() {
            init(&bin, &base, &data)?;
        }
        let mut pg_ctl = as_owner(&bin, "pg_ctl");
        pg_ctl
            .arg("start")
            .arg("--wait")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(base.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses='' -c unix_socket_directories='{}' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
                data.display()
            ));
        run(pg_ctl, "starting the test cluster (pg_ctl start)").map_err(|e| {
            let log = fs::read_to_string(base.join("server.log")).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })?;
    }
    drop(lock);
    Ok(Cluster { socket_dir: data })
}

fn init(bin: &Path, base: &Path, data: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(data);
    fs::create_dir(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    if uid() == 0 {
        for path in [data, &base.join("lock")] {
            let mut chown = Command::new("chown");
            chown.arg("postgres:").arg(path);
            run(chown, "giving the test cluster to the postgres user")?;
        }
        // The log is written by pg_ctl as postgres.
        let log = base.join("server.log");
        let _ = File::create(&log);
        let mut chown = Command::new("chown");
        chown.arg("postgres:").arg(&log);
        run(chown, "giving the server log to the postgres user")?;
    }
    let mut initdb = as_owner(bin, "initdb");
    initdb.arg("-D").arg(data).args([
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    run(initdb, "initdb")
}
