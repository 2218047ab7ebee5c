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
    # wasm32-wasip2 for plugins; wasm32-wasip1 for `cargo component build`
    # (it componentizes a wasip1 module with its adapter).
    for target in wasm32-wasip2 wasm32-wasip1; do
        if ! grep -qx "$target" <<<"$installed_targets"; then
            rustup target add "$target"
        fi
    done
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

# The Python and JavaScript example plugins are built with componentize-py
# (in a venv) and componentize-js (npm): they need python3 with venv and
# node with npm. Installed from Debian's packages where missing.
missing=()
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "error: the Python and JavaScript plugins need ${missing[*]}; install them and retry" >&2
        exit 1
    fi
fi
