#!/usr/bin/env bash
# Builds the example plugins written in Python and JavaScript (with
# scripts/build-plugin.sh, as plugin-release.yml builds them) into
# WebAssembly components for the `assessment` world of
# `assessment:plugin@0.2.0` (the repository's wit/ directory):
#
#   plugins-examples/python/login-defs   → target/guests-foreign/login_defs.wasm
#   plugins-examples/js/passwd-accounts  → target/guests-foreign/passwd_accounts.wasm
#
# It installs its own toolchains, pinned, and keeps them:
#   - componentize-py (PyPI) in a virtual environment, target/tools/py;
#   - componentize-js (npm), as the plugin's package-lock.json pins it
#     (`npm ci`), in target/tools/js.
# A second run reuses them without asking a registry, and rebuilds a
# component only when its sources, the WIT or the tool changed. Components
# are written whole (a temporary file renamed), so a concurrent reader never
# sees half of one; concurrent runs wait for each other.
#
# Needs python3 (with venv) and node/npm (node 18 or later).
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
out="$repo/target/guests-foreign"
tools="$repo/target/tools"
mkdir -p "$out" "$tools"

# One run at a time (test binaries and a developer may start it together).
exec 9>"$out/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

say() { echo "build-foreign-plugins: $*" >&2; }

# A digest of files (their names and contents), to tell whether an output is
# up to date.
digest() {
    local f
    for f in "$@"; do
        printf '%s\n' "$f"
        cat "$f"
    done | sha256sum | cut -d' ' -f1
}

# `fresh OUTPUT STAMP`: OUTPUT exists and was built from inputs whose digest
# is STAMP.
fresh() {
    [ -s "$1" ] && [ -f "$1.inputs" ] && [ "$(cat "$1.inputs")" = "$2" ]
}

wit_files=(wit/*.wit)
js_dir=plugins-examples/js/passwd-accounts

# `check_imports COMPONENT`: it imports neither wasi:http nor a capability
# interface the examples do not declare in plugin.toml (process,
# environment, host-facts). jco, which componentize-js brings along,
# prints a component's world.
check_imports() {
    local world extra
    world="$("$jco" wit "$1")"
    extra="$(grep -E '^\s*import (wasi:http/|assessment:plugin/(process|environment|host-facts)@)' <<<"$world" || true)"
    if [ -n "$extra" ]; then
        say "$(basename "$1" .tmp) imports more than it may:"
        echo "$extra" >&2
        exit 1
    fi
}

# ---------------------------------------------------------------- npm
# componentize-js (and jco, used above) exactly as the JS plugin's
# package-lock.json pins them, installed in target/tools/js rather than in
# the plugin's node_modules: the guest build script watches
# plugins-examples/, and a node_modules there would be walked by every
# cargo build.
js_tools="$tools/js"
lock_digest="$(digest "$js_dir/package.json" "$js_dir/package-lock.json")"
if [ ! -f "$js_tools/node_modules/.installed-from" ] ||
    [ "$(cat "$js_tools/node_modules/.installed-from")" != "$lock_digest" ]; then
    say "installing componentize-js into ${js_tools#"$repo"/} (npm ci)"
    mkdir -p "$js_tools"
    cp "$js_dir/package.json" "$js_dir/package-lock.json" "$js_tools/"
    (cd "$js_tools" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$lock_digest" >"$js_tools/node_modules/.installed-from"
fi
componentize_js="$js_tools/node_modules/.bin/componentize-js"
jco="$js_tools/node_modules/.bin/jco"

# ---------------------------------------------------------------- Python
py_dir=plugins-examples/python/login-defs
py_out="$out/login_defs.wasm"
venv="$tools/py"
componentize_py="$venv/bin/componentize-py"

if ! "$componentize_py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
    say "installing componentize-py $COMPONENTIZE_PY_VERSION into ${venv#"$repo"/}"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

py_stamp="$(
    {
        echo "componentize-py $COMPONENTIZE_PY_VERSION"
        digest "${wit_files[@]}" "$py_dir"/wit/*.wit "$py_dir"/*.py
    } | sha256sum | cut -d' ' -f1
)"
if fresh "$py_out" "$py_stamp"; then
    say "login_defs.wasm is up to date"
else
    say "building login_defs.wasm (componentize-py)"
    started=$SECONDS
    # As plugin-release.yml builds a Python plugin: the plugin targets the
    # `assessment` world, intersected with the plugin's `imports` world so
    # that only the interfaces it uses are imported (see
    # docs/plugin-author-guide.md, "Python").
    PATH="$venv/bin:$PATH" scripts/build-plugin.sh --toolchain python \
        --plugin-dir "$py_dir" --out "$py_out.tmp" --wit "$repo/wit"
    rm -f "$py_out.tmp.toolchain"
    check_imports "$py_out.tmp"
    mv -f "$py_out.tmp" "$py_out"
    echo "$py_stamp" >"$py_out.inputs"
    say "login_defs.wasm: $(stat -c %s "$py_out") bytes in $((SECONDS - started)) s"
fi

# ---------------------------------------------------------------- JavaScript
js_out="$out/passwd_accounts.wasm"

js_stamp="$(
    {
        echo "$lock_digest"
        digest "${wit_files[@]}" "$js_dir"/wit/*.wit "$js_dir"/*.js
    } | sha256sum | cut -d' ' -f1
)"
if fresh "$js_out" "$js_stamp"; then
    say "passwd_accounts.wasm is up to date"
else
    say "building passwd_accounts.wasm (componentize-js)"
    started=$SECONDS
    # As plugin-release.yml builds a JavaScript plugin, with the
    # componentize-js installed above: the `imports` world (wit/world.wit,
    # with the repository's wit/ linked as wit/deps/assessment-plugin) names
    # only the interfaces it uses, and no `wasi:http`.
    COMPONENTIZE_JS="$componentize_js" scripts/build-plugin.sh --toolchain javascript \
        --plugin-dir "$js_dir" --out "$js_out.tmp" --wit "$repo/wit"
    rm -f "$js_out.tmp.toolchain"
    check_imports "$js_out.tmp"
    mv -f "$js_out.tmp" "$js_out"
    echo "$js_stamp" >"$js_out.inputs"
    say "passwd_accounts.wasm: $(stat -c %s "$js_out") bytes in $((SECONDS - started)) s"
fi

say "ok: $(stat -c '%n %s bytes' "$py_out" "$js_out" | sed "s|$out/||" | paste -sd ',' | sed 's/,/, /')"
