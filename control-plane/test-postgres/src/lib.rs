//! A throwaway PostgreSQL cluster for tests, shared by every test process
//! of a suite run, with a fresh database per test.
//!
//! The cluster lives in `$ACP_TEST_POSTGRES_DIR` (scripts/test.sh makes one
//! per run and stops the server at its end), else in
//! `$TMPDIR/assessment-test-postgres-v2-<uid>`: `cluster/` (the data
//! directory, also holding the Unix socket, trust authentication),
//! `server.log`, `port` (the port it listens on), `ca.pem` (the test CA
//! that issued the server's certificate) and `lock`, held while a process
//! creates or starts the cluster, so that the first test process does it
//! and the others find it running. fsync is off: a crash loses nothing a
//! test needs.
//!
//! Besides the socket, the server listens on a free TCP port of 127.0.0.1
//! with TLS on (`ssl = on`, a certificate for `localhost` and `127.0.0.1`
//! made with rcgen by the test CA), for the tests of TLS: there `host`
//! lines accept connections with or without TLS, except for the user
//! [`TLS_ONLY_USER`], who is let in only over TLS (`hostssl`).
//!
//! As root, initdb refuses to run: the cluster then belongs to the
//! `postgres` user that Debian's package creates, and its commands run
//! through `runuser`. Without PostgreSQL's binaries (under
//! `/usr/lib/postgresql/*/bin`, else on `PATH`) a test panics with how to
//! install them: these tests never skip.

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The superuser the tests connect as.
pub const SUPERUSER: &str = "postgres";

/// A superuser the server lets in over TCP only with TLS (`hostssl`; a
/// `hostnossl` line rejects it): what it can do, it did over TLS.
pub const TLS_ONLY_USER: &str = "tls_only";

/// The cluster's authentication rules: trust, and TLS for [`TLS_ONLY_USER`]
/// over TCP (rules apply in order, the first that matches decides).
const PG_HBA: &str = "local all all trust
hostssl all tls_only 127.0.0.1/32 trust
hostnossl all tls_only 127.0.0.1/32 reject
host all all 127.0.0.1/32 trust
";

/// How to get PostgreSQL's server binaries.
const INSTALL_HINT: &str = "PostgreSQL's server is needed by the control plane's PostgreSQL tests: install it with `sudo apt-get install postgresql` (scripts/test.sh does)";

/// The running cluster of this suite run.
#[derive(Debug)]
pub struct Cluster {
    /// The directory of the server's Unix socket.
    pub socket_dir: PathBuf,
    /// The server's port: its TCP port on 127.0.0.1, and the number in
    /// its socket's name.
    pub port: u16,
    /// The PEM certificate of the CA that issued the server's certificate
    /// (for `sslrootcert`).
    pub ca_certificate: PathBuf,
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

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL over the Unix socket, as the control plane takes it.
    pub fn url(&self) -> String {
        let cluster = cluster();
        format!(
            "postgresql:///{}?host={}&port={}&user={SUPERUSER}",
            self.name,
            cluster.socket_dir.display(),
            cluster.port
        )
    }

    /// The database's URL over TCP on 127.0.0.1 as `user`, with `query`
    /// (libpq's parameters, such as `sslmode=require`) after its `?`.
    pub fn tcp_url(&self, user: &str, query: &str) -> String {
        format!(
            "postgresql://{user}@127.0.0.1:{}/{}?{query}",
            cluster().port,
            self.name
        )
    }

    /// The database's connection settings (the Unix socket).
    pub fn config(&self) -> postgres::Config {
        let cluster = cluster();
        let mut config = postgres::Config::new();
        config
            .host_path(&cluster.socket_dir)
            .port(cluster.port)
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
    let cluster = cluster();
    match socket_client(&cluster.socket_dir, cluster.port) {
        Ok(client) => client,
        Err(error) => panic!("cannot connect to the test cluster: {error:?}"),
    }
}

/// The superuser's connection to the `postgres` database over the socket.
fn socket_client(socket_dir: &Path, port: u16) -> Result<postgres::Client, postgres::Error> {
    postgres::Config::new()
        .host_path(socket_dir)
        .port(port)
        .user(SUPERUSER)
        .dbname("postgres")
        .connect(postgres::NoTls)
}

/// The directory of the suite run's cluster.
fn base_dir() -> PathBuf {
    match std::env::var_os("ACP_TEST_POSTGRES_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        // v2: with TCP and TLS (a cluster left by the older layout, socket
        // only, is not reused).
        _ => std::env::temp_dir().join(format!("assessment-test-postgres-v2-{}", uid())),
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
    let ca_certificate = base.join("ca.pem");
    let port_file = base.join("port");
    let mut status = as_owner(&bin, "pg_ctl");
    status.arg("status").arg("-D").arg(&data);
    let running = status.output().is_ok_and(|o| o.status.success());
    let port = if running {
        let text = fs::read_to_string(&port_file).unwrap_or_default();
        match text.trim().parse() {
            Ok(port) if ca_certificate.exists() => port,
            _ => {
                return Err(format!(
                    "the test cluster in {} runs without {} or {}: an older layout; stop it (pg_ctl stop -D {}) or remove {}",
                    base.display(),
                    port_file.display(),
                    ca_certificate.display(),
                    data.display(),
                    base.display()
                ));
            }
        }
    } else {
        // ca.pem is written last by init: without it, the cluster is
        // incomplete or of the older layout.
        if !data.join("PG_VERSION").exists() || !ca_certificate.exists() {
            init(&bin, &base, &data)?;
        }
        let port = start_server(&bin, &base, &data)?;
        fs::write(&port_file, port.to_string())
            .map_err(|e| format!("cannot write {}: {e}", port_file.display()))?;
        port
    };
    // Roles live in the cluster, not a database: made once, by whoever
    // finds the cluster without it.
    off_runtime(|| {
        socket_client(&data, port)
            .map_err(|e| format!("cannot connect to the test cluster: {e:?}"))?
            .batch_execute(&format!(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{TLS_ONLY_USER}') THEN
                         CREATE ROLE {TLS_ONLY_USER} LOGIN SUPERUSER;
                     END IF;
                 END $$"
            ))
            .map_err(|e| format!("cannot create the role {TLS_ONLY_USER}: {e:?}"))
    })?;
    drop(lock);
    Ok(Cluster {
        socket_dir: data,
        port,
        ca_certificate,
    })
}

/// Starts the server on a free port of 127.0.0.1 and returns it; tries
/// again with another port if one was taken meanwhile.
fn start_server(bin: &Path, base: &Path, data: &Path) -> Result<u16, String> {
    let mut failure = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let mut pg_ctl = as_owner(bin, "pg_ctl");
        pg_ctl
            .arg("start")
            .arg("--wait")
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(base.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' -c ssl=on -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
                data.display()
            ));
        match run(pg_ctl, "starting the test cluster (pg_ctl start)") {
            Ok(()) => return Ok(port),
            Err(e) => {
                let log = fs::read_to_string(base.join("server.log")).unwrap_or_default();
                failure = format!("{e}\nserver log:\n{log}");
            }
        }
    }
    Err(failure)
}

/// A TCP port of 127.0.0.1 free now (the system's choice).
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

fn init(bin: &Path, base: &Path, data: &Path) -> Result<(), String> {
    let _ = fs::remove_file(base.join("ca.pem"));
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
    run(initdb, "initdb")?;
    fs::write(data.join("pg_hba.conf"), PG_HBA)
        .map_err(|e| format!("cannot write the test cluster's pg_hba.conf: {e}"))?;
    write_certificates(base, data)
}

/// The test CA (`ca.pem` in `base`) and the server's certificate and key
/// (`server.crt`, `server.key` in `data`, where `ssl = on` looks for them).
fn write_certificates(base: &Path, data: &Path) -> Result<(), String> {
    let failed = |e: rcgen::Error| format!("cannot make the test cluster's certificates: {e}");
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Assessment Runtime test PostgreSQL CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(failed)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).map_err(failed)?;
    let write = |path: &Path, text: &str, mode: u32| {
        fs::write(path, text)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    // The server refuses a key others can read.
    let key_path = data.join("server.key");
    write(&key_path, &key.serialize_pem(), 0o600)?;
    let cert_path = data.join("server.crt");
    write(&cert_path, &cert.pem(), 0o644)?;
    if uid() == 0 {
        for path in [&key_path, &cert_path] {
            let mut chown = Command::new("chown");
            chown.arg("postgres:").arg(path);
            run(
                chown,
                "giving the server's certificate to the postgres user",
            )?;
        }
    }
    // Last: its presence marks a complete cluster.
    write(&base.join("ca.pem"), &ca_cert.pem(), 0o644)
}
