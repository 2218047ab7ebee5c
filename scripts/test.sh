#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, the host's unit
# and CLI tests, the end-to-end tests (which build every guest plugin once
# to wasm32-wasip2 and run them through the real binary), and the plugins'
# own unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prerequisites.sh

echo "== formatting"
cargo fmt --all --check
cargo fmt --all --check --manifest-path plugins-examples/Cargo.toml

echo "== lints"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked --manifest-path plugins-examples/Cargo.toml --target wasm32-wasip2 \
    --target-dir target/guests --all-targets -- -D warnings

echo "== plugin unit tests (native)"
cargo test --locked --manifest-path plugins-examples/Cargo.toml --target-dir target/guests-native

echo "== host and end-to-end tests"
cargo test --locked --workspace
