//! Builds every guest crate (example plugins and test plugins) to
//! `wasm32-wasip2` components once per build of this crate, into
//! `target/guests`, and tells the tests where they are.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let repo = manifest_dir
        .parent()
        .unwrap_or(Path::new(".."))
        .to_path_buf();
    let guests = repo.join("plugins-examples/Cargo.toml");
    let target_dir = repo.join("target/guests");

    for watched in [
        "wit",
        "sdk/src",
        "sdk/Cargo.toml",
        "plugins-examples",
        "tests/test-plugins",
    ] {
        println!("cargo:rerun-if-changed={}", repo.join(watched).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&guests)
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and target settings are for the host, not
    // for the guests. Its lint wrapper (clippy-driver, as `cargo clippy` or
    // scripts/test.sh set it) is kept: the guests' own crates are then
    // linted as they are built, with the same `-D warnings`.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(var);
    }
    let linted = std::env::var_os("RUSTC_WORKSPACE_WRAPPER").is_some();
    let status = command.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) if linted => panic!(
            "building and linting the guest plugins failed ({s}): see the lints or errors above; is the wasm32-wasip2 target installed? run `rustup target add wasm32-wasip2`"
        ),
        Ok(s) => panic!(
            "building the guest plugins failed ({s}); is the wasm32-wasip2 target installed? run `rustup target add wasm32-wasip2`"
        ),
        Err(e) => panic!("cannot run cargo to build the guest plugins: {e}"),
    }
    println!(
        "cargo:rustc-env=GUEST_DIR={}",
        target_dir.join("wasm32-wasip2/release").display()
    );
    println!("cargo:rustc-env=REPO_DIR={}", repo.display());
}
