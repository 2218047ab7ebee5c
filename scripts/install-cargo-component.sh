#!/usr/bin/env bash
# cargo-component at the version the suite builds plugins with (the
# authoring tests): the one on PATH if it is that version, otherwise
# installed once into target/tools/cargo-component, as a debug build (the
# tests build two plugins with it; a release build would cost CI many
# minutes of CPU). Prints the binary's path. Concurrent callers (the suite
# starts it in the background, a test may ask at the same time) wait for
# one install.
set -euo pipefail

VERSION=0.21.1

repo="$(cd "$(dirname "$0")/.." && pwd)"
root="$repo/target/tools/cargo-component"
bin="$root/bin/cargo-component"
mkdir -p "$root"

pinned() { [ -x "$1" ] && [ "$("$1" --version 2>/dev/null)" = "cargo-component $VERSION" ]; }

if on_path="$(command -v cargo-component)" && pinned "$on_path"; then
    echo "$on_path"
    exit 0
fi

exec 9>"$root/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

if ! pinned "$bin"; then
    echo "install-cargo-component: installing cargo-component $VERSION into ${root#"$repo"/}" >&2
    # The settings of an outer build (e.g. the suite's lint wrapper) are not
    # for this one.
    # Without debug information: less work for the compiler and the
    # linker, in the suite's busiest first minutes.
    env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS -u CARGO_TARGET_DIR -u RUSTFLAGS \
        -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
        CARGO_PROFILE_DEV_DEBUG=false \
        cargo install --locked --debug --quiet "cargo-component@$VERSION" --root "$root" >&2
fi
echo "$bin"
