//! The packages, as an operator gets them: `scripts/package.sh` builds the
//! .deb and .rpm of the runtime and of the control plane from the binaries
//! the suite built; their files, modes and configuration files are checked;
//! the systemd units' exposure scores are those the operator guide states;
//! both .deb are installed with dpkg on this machine, the units verified by
//! `systemd-analyze`, and the operator guide's steps followed without
//! systemd (enroll in one command, start the runtime as its unit would,
//! metrics and the first results), then removed and purged, leaving only
//! what the guide says a removal leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use assessment_e2e::{free_port, guest, http_get, output_text, repo, runtime_bin, wait_for};

fn control_plane_bin() -> PathBuf {
    runtime_bin().with_file_name("assessment-control-plane")
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        output_text(&out)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packages of the suite's binaries, built by `scripts/package.sh` in a
/// directory of their own (kept while the value lives).
struct Packages {
    dir: tempfile::TempDir,
}

impl Packages {
    fn build() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The script packages `release/` of its target directory: the
        // suite's debug binaries stand in for release builds.
        let release = dir.path().join("release");
        std::fs::create_dir_all(&release).unwrap();
        for binary in [runtime_bin(), control_plane_bin()] {
            std::fs::copy(&binary, release.join(binary.file_name().unwrap())).unwrap();
        }
        run(Command::new(repo().join("scripts/package.sh"))
            .args(["--no-build", "--fast", "--target-dir"])
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("out"))
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_TARGET_DIR"));
        Packages { dir }
    }

    /// The one package file named `prefix…suffix`.
    fn file(&self, prefix: &str, suffix: &str) -> PathBuf {
        let found: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(prefix) && name.ends_with(suffix)
            })
            .collect();
        assert_eq!(found.len(), 1, "{prefix}*{suffix}: {found:?}");
        found[0].clone()
    }
}

/// `path mode` lines of a .deb's files (directories left out).
fn deb_files(deb: &Path) -> Vec<(String, String)> {
    let out = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    stdout(&out)
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let path = fields[5].trim_start_matches('.').to_string();
            (path, fields[0].to_string())
        })
        .collect()
}

fn assert_has(files: &[(String, String)], path: &str, mode: &str) {
    let found = files.iter().find(|(p, _)| p == path);
    assert_eq!(
        found.map(|(_, m)| m.as_str()),
        Some(mode),
        "{path} in {files:?}"
    );
}

// One test: building the packages takes a minute of CPU, once.
#[test]
fn the_packages_hold_what_they_should_install_run_as_the_unit_would_and_purge_clean() {
    let packages = Packages::build();
    assert_contents(&packages);
    install_follow_the_guide_and_purge(&packages);
}

fn assert_contents(packages: &Packages) {
    let runtime = deb_files(&packages.file("assessment-runtime_", ".deb"));
    for (path, mode) in [
        ("/usr/bin/assessment-runtime", "-rwxr-xr-x"),
        ("/etc/assessment-runtime/agent.toml", "-rw-r--r--"),
        (
            "/usr/lib/systemd/system/assessment-runtime.service",
            "-rw-r--r--",
        ),
        ("/usr/share/man/man1/assessment-runtime.1.gz", "-rw-r--r--"),
        (
            "/usr/share/man/man1/assessment-runtime-daemon.1.gz",
            "-rw-r--r--",
        ),
        (
            "/usr/share/bash-completion/completions/assessment-runtime",
            "-rw-r--r--",
        ),
        (
            "/usr/share/zsh/vendor-completions/_assessment-runtime",
            "-rw-r--r--",
        ),
        (
            "/usr/share/fish/vendor_completions.d/assessment-runtime.fish",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/assessment-runtime/copyright", "-rw-r--r--"),
    ] {
        assert_has(&runtime, path, mode);
    }
    let control_plane = deb_files(&packages.file("assessment-control-plane_", ".deb"));
    for (path, mode) in [
        ("/usr/bin/assessment-control-plane", "-rwxr-xr-x"),
        ("/etc/assessment-control-plane/environment", "-rw-r--r--"),
        (
            "/usr/lib/systemd/system/assessment-control-plane.service",
            "-rw-r--r--",
        ),
        (
            "/usr/share/man/man1/assessment-control-plane.1.gz",
            "-rw-r--r--",
        ),
        (
            "/usr/share/bash-completion/completions/assessment-control-plane",
            "-rw-r--r--",
        ),
    ] {
        assert_has(&control_plane, path, mode);
    }
    // The configuration is a conffile: an upgrade keeps the operator's edits.
    let conffiles = run(Command::new("dpkg-deb")
        .args(["--info"])
        .arg(packages.file("assessment-runtime_", ".deb"))
        .arg("conffiles"));
    assert!(
        stdout(&conffiles).contains("/etc/assessment-runtime/agent.toml"),
        "{}",
        stdout(&conffiles)
    );
    // The packaged binary is the suite's, stripped.
    let extracted = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(packages.file("assessment-runtime_", ".deb"))
        .arg(extracted.path()));
    let packaged = extracted.path().join("usr/bin/assessment-runtime");
    let version = run(Command::new(&packaged).arg("--version"));
    assert!(stdout(&version).starts_with("assessment-runtime "));
    assert!(packaged.metadata().unwrap().len() < runtime_bin().metadata().unwrap().len());
    // The default configuration is valid as shipped.
    let validated = run(Command::new(&packaged)
        .arg("validate")
        .arg("--config")
        .arg(extracted.path().join("etc/assessment-runtime/agent.toml")));
    assert!(output_text(&validated).is_empty() || validated.status.success());

    // The .rpm: the same files with the same modes, the configuration
    // marked as such (read with rpm itself).
    for (rpm, expected) in [
        (
            packages.file("assessment-runtime-", ".rpm"),
            vec![
                ("/usr/bin/assessment-runtime", "0100755"),
                ("/etc/assessment-runtime/agent.toml", "0100644"),
                (
                    "/usr/lib/systemd/system/assessment-runtime.service",
                    "0100644",
                ),
                ("/usr/share/man/man1/assessment-runtime.1.gz", "0100644"),
            ],
        ),
        (
            packages.file("assessment-control-plane-", ".rpm"),
            vec![
                ("/usr/bin/assessment-control-plane", "0100755"),
                ("/etc/assessment-control-plane/environment", "0100644"),
            ],
        ),
    ] {
        // --dump: path size mtime digest mode owner group isconfig isdoc …
        let dump = stdout(&run(Command::new("rpm").args(["-qp", "--dump"]).arg(&rpm)));
        for (path, mode) in expected {
            let line = dump
                .lines()
                .find(|l| l.split(' ').next() == Some(path))
                .unwrap_or_else(|| panic!("{path} not in {}: {dump}", rpm.display()));
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields[4], mode, "{line}");
            assert_eq!(
                fields[7],
                if path.starts_with("/etc/") { "1" } else { "0" },
                "{line}"
            );
        }
        let scripts = stdout(&run(Command::new("rpm")
            .args(["-qp", "--scripts"])
            .arg(&rpm)));
        assert!(scripts.contains("postinstall scriptlet"), "{scripts}");
    }

    // SHA-256 sums of every package, checkable with sha256sum.
    run(Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(packages.dir.path().join("out")));
}

/// The overall exposure level `systemd-analyze security` gives `unit`.
fn exposure(unit: &Path) -> String {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    line.split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

/// The systemd version `systemd-analyze` belongs to.
fn systemd_version() -> String {
    let out = run(Command::new("systemd-analyze").arg("--version"));
    stdout(&out)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_units_exposure_scores_are_those_the_operator_guide_states() {
    let guide = std::fs::read_to_string(repo().join("docs/operator-guide.md")).unwrap();
    let version = systemd_version();
    for (unit, name) in [
        (
            "packaging/runtime/assessment-runtime.service",
            "assessment-runtime.service",
        ),
        (
            "packaging/control-plane/assessment-control-plane.service",
            "assessment-control-plane.service",
        ),
    ] {
        let score: f64 = exposure(&repo().join(unit)).parse().unwrap();
        // "`systemd-analyze security NAME`: **2.4** (OK; systemd 252)"
        let prefix = format!("`systemd-analyze security {name}`: **");
        let stated = guide
            .split(&prefix)
            .nth(1)
            .unwrap_or_else(|| panic!("docs/operator-guide.md states no score for {name}"));
        let (stated_score, rest) = stated.split_once("**").unwrap();
        let stated_score: f64 = stated_score.parse().unwrap();
        let stated_version = rest
            .split("systemd ")
            .nth(1)
            .and_then(|v| v.split(')').next())
            .unwrap_or_else(|| panic!("the guide names no systemd version for {name}"));
        if stated_version == version {
            assert_eq!(
                score, stated_score,
                "{name}: systemd {version} scores {score}; update docs/operator-guide.md"
            );
        } else {
            // Other systemd versions weigh settings differently; the unit
            // must not be much more exposed there.
            eprintln!(
                "note: systemd {version} scores {name} {score} (the guide: {stated_score} with systemd {stated_version})"
            );
            assert!(score <= stated_score + 1.0, "{name}: {score}");
        }
    }
}

/// Root, or a password-free sudo: what installing a package needs.
fn privileged(program: &str) -> Option<Command> {
    let root = stdout(&Command::new("id").arg("-u").output().unwrap()).trim() == "0";
    if root {
        return Some(Command::new(program));
    }
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    sudo.then(|| {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    })
}

/// Files a package installed (`dpkg -L`), directories left out.
fn installed_files(package: &str) -> Vec<PathBuf> {
    let out = run(Command::new("dpkg").args(["-L", package]));
    stdout(&out)
        .lines()
        .map(PathBuf::from)
        .filter(|p| !p.is_dir())
        .collect()
}

/// Removes the packages when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if let Some(mut dpkg) = privileged("dpkg") {
            let _ = dpkg
                .args(["--purge", "assessment-runtime", "assessment-control-plane"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn install_follow_the_guide_and_purge(packages: &Packages) {
    if privileged("dpkg").is_none() {
        eprintln!("SKIPPED: installing packages needs root or a password-free sudo");
        return;
    }
    for package in ["assessment-runtime", "assessment-control-plane"] {
        let present = Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}", package])
            .output()
            .unwrap();
        if stdout(&present).contains("installed") && !stdout(&present).contains("not-installed") {
            eprintln!(
                "SKIPPED: {package} is installed on this machine; the test does not replace it"
            );
            return;
        }
    }
    let _purge = Purge;
    run(privileged("dpkg")
        .unwrap()
        .arg("--install")
        .arg(packages.file("assessment-runtime_", ".deb"))
        .arg(packages.file("assessment-control-plane_", ".deb")));

    // Files, modes and the state directory.
    let runtime_files = installed_files("assessment-runtime");
    // As root: the state directories are root's alone (the suite may run
    // as a user with sudo).
    let mode = |p: &str| {
        let out = run(privileged("stat").unwrap().args(["-c", "%a", p]));
        u32::from_str_radix(stdout(&out).trim(), 8).unwrap()
    };
    assert_eq!(mode("/usr/bin/assessment-runtime"), 0o755);
    assert_eq!(mode("/etc/assessment-runtime/agent.toml"), 0o644);
    assert_eq!(mode("/var/lib/assessment-runtime"), 0o700);
    assert_eq!(mode("/var/lib/assessment-control-plane"), 0o700);
    assert_eq!(mode("/etc/assessment-control-plane/admin-token.env"), 0o600);
    // The units verify as installed (their binaries exist). The manual
    // pages are checked in the package: a minimised system's dpkg may be
    // told to leave them out.
    let man = "--man=no";
    for unit in [
        "assessment-runtime.service",
        "assessment-control-plane.service",
    ] {
        let out = Command::new("systemd-analyze")
            .args(["verify", man])
            .arg(Path::new("/usr/lib/systemd/system").join(unit))
            .output()
            .unwrap();
        assert!(out.status.success(), "{unit}: {}", output_text(&out));
    }
    // The default configuration validates.
    run(privileged("/usr/bin/assessment-runtime").unwrap().args([
        "validate",
        "--config",
        "/etc/assessment-runtime/agent.toml",
    ]));

    // The guide's steps. A control plane (the suite's binary, on its own
    // port and database) and an enrollment token.
    let cp_dir = tempfile::tempdir().unwrap();
    let cp_port = free_port();
    let db = cp_dir.path().join("cp.db");
    let mut cp = Command::new(control_plane_bin())
        .arg("--database")
        .arg(&db)
        .args(["serve", "--listen", &format!("127.0.0.1:{cp_port}")])
        .env("ACP_ADMIN_TOKEN", "test-admin-token-0123456789")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _cp_guard = KillOnDrop(&mut cp);
    wait_for("the control plane", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", cp_port)).is_ok()
    });
    let admin = |args: &[&str]| {
        stdout(&run(Command::new(control_plane_bin())
            .arg("--database")
            .arg(&db)
            .args(args)))
    };
    let token = admin(&["enrollment-token", "create"]).trim().to_string();
    // Step: a plugin and the metrics port in agent.toml.
    let metrics_port = free_port();
    let config = std::fs::read_to_string("/etc/assessment-runtime/agent.toml")
        .unwrap()
        .replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
        );
    let config = format!(
        "{config}\n[[plugin]]\nname = \"kernel-params\"\npath = {:?}\nschedule = {{ every = \"2s\" }}\ngrants = {{ read = [\"/proc/sys\"] }}\n",
        guest("kernel_params").display().to_string()
    );
    let mut tee = privileged("tee")
        .unwrap()
        .arg("/etc/assessment-runtime/agent.toml")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut tee.stdin.take().unwrap(), config.as_bytes()).unwrap();
    assert!(tee.wait().unwrap().success());
    // Step: enroll, one command.
    run(privileged("/usr/bin/assessment-runtime")
        .unwrap()
        .args(["enroll", "--config", "/etc/assessment-runtime/agent.toml"])
        .args(["--url", &format!("https://localhost:{cp_port}")])
        .arg("--ca-cert")
        .arg(cp_dir.path().join("ca/ca.pem"))
        .args(["--token", &token]));
    assert_eq!(mode("/var/lib/assessment-runtime/credentials.json"), 0o600);
    // Step: start the service, as its unit starts it (its ExecStart, a
    // notification socket for Type=notify).
    let unit =
        std::fs::read_to_string("/usr/lib/systemd/system/assessment-runtime.service").unwrap();
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .collect();
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // `env` passes the notification socket through sudo, and execs.
    let mut daemon = privileged("env")
        .unwrap()
        .args(["-u", "ASSESSMENT_RUNTIME_LOG"])
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .args(&exec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon_guard = KillOnDrop(&mut daemon);
    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).expect("READY=1 from the daemon");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // Step: metrics and the first results.
    assert_eq!(http_get(metrics_port, "/readyz").map(|(s, _)| s), Some(200));
    wait_for("the first results", Duration::from_secs(60), || {
        let list = admin(&["evidence", "list"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&list).is_ok_and(|l| !l.is_empty())
    });
    wait_for(
        "a completed run in the metrics",
        Duration::from_secs(30),
        || {
            http_get(metrics_port, "/metrics").is_some_and(|(_, body)| {
                body.lines().any(|l| {
                    l.starts_with("assessment_runtime_jobs_total{")
                        && l.contains("outcome=\"completed\"")
                })
            })
        },
    );
    // Stopped as systemd stops it: SIGTERM (relayed by sudo, if any).
    run(Command::new("kill").args(["-TERM", &daemon_guard.0.id().to_string()]));
    let stopped = Instant::now();
    while daemon_guard.0.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon_guard);

    // Removal keeps the configuration and the state (credentials, results
    // not yet delivered); purging removes them too.
    run(privileged("dpkg")
        .unwrap()
        .args(["--remove", "assessment-runtime"]));
    let left: Vec<&PathBuf> = runtime_files.iter().filter(|p| p.exists()).collect();
    assert_eq!(
        left,
        vec![&PathBuf::from("/etc/assessment-runtime/agent.toml")],
        "only the configuration stays after a removal"
    );
    assert!(
        privileged("test")
            .unwrap()
            .args(["-e", "/var/lib/assessment-runtime/credentials.json"])
            .status()
            .unwrap()
            .success(),
        "the credentials stay after a removal"
    );
    run(privileged("dpkg").unwrap().args([
        "--purge",
        "assessment-runtime",
        "assessment-control-plane",
    ]));
    for gone in [
        "/etc/assessment-runtime",
        "/var/lib/assessment-runtime",
        "/etc/assessment-control-plane",
        "/var/lib/assessment-control-plane",
        "/usr/bin/assessment-runtime",
        "/usr/bin/assessment-control-plane",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after a purge");
    }
    let user = Command::new("getent")
        .args(["passwd", "assessment-cp"])
        .output()
        .unwrap();
    assert!(!user.status.success(), "the control plane's user is left");
}

/// Kills a child process when dropped.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a Docker engine answers (the client alone is not enough).
fn docker_engine() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_container_images_build_where_a_docker_engine_runs() {
    if !docker_engine() {
        eprintln!(
            "SKIPPED: no Docker engine on this machine (`docker info` fails); the images of packaging/docker are built where one runs"
        );
        return;
    }
    for (dockerfile, binary, tag) in [
        (
            "packaging/docker/control-plane.Dockerfile",
            control_plane_bin(),
            "assessment-control-plane:suite",
        ),
        (
            "packaging/docker/runtime.Dockerfile",
            runtime_bin(),
            "assessment-runtime:suite",
        ),
    ] {
        // A context of the suite's binary alone: the Dockerfile's prebuilt
        // stage takes it instead of building from source.
        let context = tempfile::tempdir().unwrap();
        std::fs::create_dir(context.path().join("prebuilt")).unwrap();
        std::fs::copy(
            &binary,
            context
                .path()
                .join("prebuilt")
                .join(binary.file_name().unwrap()),
        )
        .unwrap();
        run(Command::new("docker")
            .args(["build", "--build-arg", "BINARIES=prebuilt", "-t", tag, "-f"])
            .arg(repo().join(dockerfile))
            .arg(context.path())
            .env("DOCKER_BUILDKIT", "1"));
        let inspect = stdout(&run(Command::new("docker").args([
            "image",
            "inspect",
            "--format",
            "{{json .Config.User}} {{json .Config.Entrypoint}}",
            tag,
        ])));
        assert!(
            !inspect.starts_with("\"\"") && !inspect.starts_with("\"root\""),
            "{inspect}"
        );
        assert!(
            inspect.contains(&binary.file_name().unwrap().to_string_lossy().into_owned()),
            "{inspect}"
        );
        let _ = Command::new("docker").args(["image", "rm", tag]).output();
    }
}
