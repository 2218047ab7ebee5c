#!/usr/bin/env bash
# Builds one plugin into a WebAssembly component, reproducibly: the same
# sources and toolchain give the same bytes wherever they are checked out.
# The reusable workflow .github/workflows/plugin-release.yml builds with it
# (from its checkout of this repository), and rebuilds with it in another
# directory to check that the audited component is reproducible; the suite
# does the same (tests/tests/reproducible.rs).
#
#   scripts/build-plugin.sh --toolchain rust|python|javascript \
#       --plugin-dir DIR --out FILE.wasm [--target-dir DIR] [--wit DIR]
#
# Run it from the root of the plugin's repository (DIR is relative to it).
# It writes FILE.wasm and FILE.wasm.toolchain, the versions of the tools
# that built it (NAME=VERSION lines, for `plugin-registry package
# --toolchain`).
#
# - rust: `cargo build --locked --release --target wasm32-wasip2` (the
#   toolchain is whatever rustup selects: the workflow installs a pinned
#   version), with the checkout and cargo's home remapped out of every path
#   the compiler records (`--remap-path-prefix`); the crate's Cargo.lock (or
#   its workspace's) must be committed.
# - python: componentize-py on PATH (the workflow installs a pinned
#   version); the plugin directory holds one module `<name>.py` (name with
#   `_`), and a world `imports` in wit/ naming what it imports.
# - javascript: componentize-js as the plugin's package-lock.json pins it
#   (`npm ci`), or the one COMPONENTIZE_JS names, installed from that lock
#   elsewhere (scripts/build-foreign-plugins.sh does, to keep node_modules
#   out of the source tree); the entry is `<name>.js`, the world `imports`
#   in wit/, with the plugin ABI's WIT under wit/deps/assessment-plugin
#   (linked to --wit when missing).
#
# SOURCE_DATE_EPOCH is passed through (the workflow sets it to the commit's
# time) for tools that record a time.
set -euo pipefail

toolchain="" plugin_dir="" out="" target_dir="" wit=""
while [ $# -gt 0 ]; do
    case "$1" in
    --toolchain) toolchain="$2" ;;
    --plugin-dir) plugin_dir="$2" ;;
    --out) out="$2" ;;
    --target-dir) target_dir="$2" ;;
    --wit) wit="$2" ;;
    *)
        echo "build-plugin: unknown argument $1" >&2
        exit 2
        ;;
    esac
    shift 2
done
if [ -z "$toolchain" ] || [ -z "$plugin_dir" ] || [ -z "$out" ]; then
    echo "usage: build-plugin.sh --toolchain rust|python|javascript --plugin-dir DIR --out FILE.wasm [--target-dir DIR] [--wit DIR]" >&2
    exit 2
fi

root="$PWD"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
versions="$out.toolchain"

# The plugin's name as plugin.toml gives it (Python, JavaScript).
plugin_name() {
    sed -n 's/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$plugin_dir/plugin.toml" | head -n 1
}

case "$toolchain" in
rust)
    cargo_home="${CARGO_HOME:-$HOME/.cargo}"
    target_dir="${target_dir:-$root/target}"
    mkdir -p "$target_dir"
    target_dir="$(cd "$target_dir" && pwd)"
    # Every path rustc records (panic locations, debug info) starts with the
    # checkout, cargo's home (the registry's sources), the target directory
    # (generated code) or the toolchain's own sources (already
    # /rustc/<commit>): the first three are remapped, as written and with
    # links resolved; the last match wins, so the target directory (which
    # may be inside the checkout) comes last. The flags go through a
    # wrapper, not RUSTFLAGS: cargo hashes RUSTFLAGS into every crate's
    # symbol names (-C metadata), and paths there would reorder the
    # component's functions from one checkout to another.
    # Cargo hashes the absolute path of a path dependency outside the
    # workspace's directory (plugins-examples/ depends on ../sdk) into its
    # symbol names (-C metadata), which reorders the component's functions
    # from one checkout to another: the build goes through one fixed path,
    # a link to the checkout (cargo does not resolve links in paths it is
    # given), one build at a time.
    build_root=/tmp/assessment-plugin-build
    mkdir -p "$build_root"
    exec 8>"$build_root/.lock"
    flock 8
    ln -sfn "$root" "$build_root/source"
    case "$plugin_dir" in
    /*) manifest="$plugin_dir/Cargo.toml" ;;
    *) manifest="$build_root/source/$plugin_dir/Cargo.toml" ;;
    esac
    flags=()
    for path in "$root" "$(cd "$root" && pwd -P)" "$build_root/source"; do flags+=("--remap-path-prefix=$path=/build"); done
    for path in "$(cd "$cargo_home" && pwd)" "$(cd "$cargo_home" && pwd -P)"; do flags+=("--remap-path-prefix=$path=/cargo"); done
    for path in "$target_dir" "$(cd "$target_dir" && pwd -P)"; do flags+=("--remap-path-prefix=$path=/target"); done
    wrapper="$(mktemp -d)"
    trap 'rm -rf "$wrapper"' EXIT
    printf '#!/usr/bin/env bash\nexec "$@" %s\n' "$(printf '%q ' "${flags[@]}")" >"$wrapper/rustc"
    chmod +x "$wrapper/rustc"
    export RUSTC_WRAPPER="$wrapper/rustc"
    unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WORKSPACE_WRAPPER
    export CARGO_INCREMENTAL=0
    cargo build --locked --release --target wasm32-wasip2 \
        --manifest-path "$manifest" --target-dir "$target_dir"
    # `path+file:///…/dir#name@1.2.3`, or `…/name#1.2.3` when the directory
    # is named after the crate.
    id="$(cargo pkgid --manifest-path "$manifest")"
    fragment="${id##*#}"
    case "$fragment" in
    *@*) crate="${fragment%@*}" ;;
    *)
        crate="${id%#*}"
        crate="${crate##*/}"
        ;;
    esac
    cp "$target_dir/wasm32-wasip2/release/${crate//-/_}.wasm" "$out"
    rm -f "$build_root/source"
    {
        echo "rustc=$(rustc -V)"
        echo "cargo=$(cargo -V)"
    } >"$versions"
    ;;
python)
    name="$(plugin_name)"
    world="$(sed -n 's/^package[[:space:]]*\([^;@]*\).*;.*/\1/p' "$plugin_dir"/wit/*.wit | head -n 1)"
    if [ -z "$wit" ] || [ -z "$name" ] || [ -z "$world" ]; then
        echo "build-plugin: python needs --wit, a name in plugin.toml and a WIT package in $plugin_dir/wit" >&2
        exit 2
    fi
    (
        cd "$plugin_dir"
        export PYTHONDONTWRITEBYTECODE=1
        componentize-py --quiet -d "$wit" -d wit -w assessment:plugin/assessment@0.2.0 \
            componentize -i "$world/imports" -p . "${name//-/_}" -o "$out"
    )
    {
        echo "componentize-py=$(componentize-py --version)"
        echo "python=$(python3 --version)"
    } >"$versions"
    ;;
javascript)
    name="$(plugin_name)"
    if [ -z "$name" ]; then
        echo "build-plugin: javascript needs a name in $plugin_dir/plugin.toml" >&2
        exit 2
    fi
    (
        cd "$plugin_dir"
        if [ ! -e wit/deps/assessment-plugin ]; then
            if [ -z "$wit" ]; then
                echo "build-plugin: $plugin_dir/wit/deps/assessment-plugin is missing; pass --wit" >&2
                exit 2
            fi
            mkdir -p wit/deps
            ln -s "$wit" wit/deps/assessment-plugin
        fi
        if [ -z "${COMPONENTIZE_JS:-}" ]; then
            npm ci --no-audit --no-fund --loglevel=error >&2
        fi
        # `--disable http fetch-event`: no `wasi:http` import (fetch() is gone).
        "${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}" "$name.js" --wit wit --world-name imports \
            --disable http fetch-event -o "$out"
    )
    # node_modules/.bin/componentize-js is a link into its package.
    package="$(cd "$plugin_dir" && realpath "${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}")"
    package="${package%/node_modules/@bytecodealliance/componentize-js/*}/node_modules/@bytecodealliance/componentize-js/package.json"
    {
        echo "componentize-js=$(node -p "require(process.argv[1]).version" "$package")"
        echo "node=$(node --version)"
    } >"$versions"
    ;;
*)
    echo "build-plugin: --toolchain is rust, python or javascript, not $toolchain" >&2
    exit 2
    ;;
esac
echo "build-plugin: $out ($(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1))" >&2
