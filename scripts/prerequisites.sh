#!/usr/bin/env bash
# Installs what building and testing need beyond a Rust toolchain: the
# wasm32-wasip2 target for plugins, rustfmt and clippy. Idempotent.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with rustup (https://rustup.rs) and retry" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    installed_targets=$(rustup target list --installed)
    if ! grep -qx wasm32-wasip2 <<<"$installed_targets"; then
        rustup target add wasm32-wasip2
    fi
    installed_components=$(rustup component list --installed)
    for component in rustfmt clippy; do
        if ! grep -q "^$component" <<<"$installed_components"; then
            rustup component add "$component"
        fi
    done
elif ! rustc --print target-list | grep -qx wasm32-wasip2; then
    echo "error: the wasm32-wasip2 target is needed for plugins; install it with rustup" >&2
    exit 1
fi
