#!/usr/bin/env bash
# cargo-deb and cargo-generate-rpm at the versions the packages are built
# with: the ones on PATH if they are those versions, otherwise installed
# once into target/tools/packaging (debug builds sharing one target
# directory: packaging needs no speed, and CI saves minutes of CPU).
# Prints two lines: the path of cargo-deb, then of cargo-generate-rpm.
# Concurrent callers wait for one install.
set -euo pipefail

DEB_VERSION=3.8.0
RPM_VERSION=0.21.1

repo="$(cd "$(dirname "$0")/.." && pwd)"
root="$repo/target/tools/packaging"
mkdir -p "$root"

version_of() { "$1" "$2" --version 2>/dev/null | awk '{ print $NF }'; }

exec 9>"$root/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

find_or_install() { # crate version subcommand
    local crate=$1 version=$2 sub=$3 bin
    if bin="$(command -v "$crate")" && [ "$(version_of "$bin" "$sub")" = "$version" ]; then
        echo "$bin"
        return
    fi
    bin="$root/bin/$crate"
    if [ ! -x "$bin" ] || [ "$(version_of "$bin" "$sub")" != "$version" ]; then
        echo "install-packaging-tools: installing $crate $version into ${root#"$repo"/}" >&2
        env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS -u CARGO_TARGET_DIR -u RUSTFLAGS \
            -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
            CARGO_PROFILE_DEV_DEBUG=false \
            cargo install --locked --debug --quiet "$crate@$version" --root "$root" \
            --target-dir "$root/build" >&2
    fi
    echo "$bin"
}

find_or_install cargo-deb "$DEB_VERSION" deb
find_or_install cargo-generate-rpm "$RPM_VERSION" generate-rpm
