#!/usr/bin/env bash
# Builds the .deb and .rpm packages of the runtime and of the control
# plane, with their SHA-256 sums, into one directory:
#
#   scripts/package.sh [--target TRIPLE] [--target-dir DIR] [--out DIR]
#                      [--no-build] [--generator-dir DIR] [--fast]
#
# --no-build packages the binaries already in DIR/[TRIPLE/]release.
# Manual pages and shell completions are generated from the binaries
# themselves: from --generator-dir (binaries this machine can run) when
# packaging for another architecture. --fast compresses less (the suite's
# packages: larger files, the same contents). The release workflow signs the
# results with `registry-tools sign`; the suite runs this script on the
# binaries it built (tests/tests/packages.rs).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

target="" target_dir="${CARGO_TARGET_DIR:-target}" out="" build=1 generator_dir="" fast=0
while [ $# -gt 0 ]; do
    case "$1" in
    --target) target="$2"; shift 2 ;;
    --target-dir) target_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --generator-dir) generator_dir="$2"; shift 2 ;;
    --fast) fast=1; shift ;;
    *) echo "package.sh: unknown option $1 (see the comment at the top of the script)" >&2; exit 2 ;;
    esac
done
target_dir="$(mkdir -p "$target_dir" && cd "$target_dir" && pwd)"
bin_dir="$target_dir/${target:+$target/}release"
out="${out:-$target_dir/packages}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
generator_dir="${generator_dir:-$bin_dir}"
target_args=()
if [ -n "$target" ]; then target_args=(--target "$target"); fi
deb_args=() rpm_args=()
if [ "$fast" = 1 ]; then deb_args=(--fast --compress-system) rpm_args=(--payload-compress gzip); fi

if [ "$build" = 1 ]; then
    # One package per build: together, cargo would unify their features and
    # build wasmtime a second time.
    for package in assessment-runtime assessment-control-plane; do
        cargo build --release --locked -p "$package" "${target_args[@]}" --target-dir "$target_dir"
    done
fi

mapfile -t tools < <(scripts/install-packaging-tools.sh)
cargo_deb="${tools[0]}" cargo_rpm="${tools[1]}"

# Each crate's directory and its package (also its binary's name).
packages=(host:assessment-runtime control-plane:assessment-control-plane)

for entry in "${packages[@]}"; do
    binary="${entry#*:}"
    if [ ! -x "$bin_dir/$binary" ]; then
        echo "package.sh: $bin_dir/$binary is missing; build it or drop --no-build" >&2
        exit 1
    fi
    # Manual pages (gzip, without a timestamp: reproducible) and completions.
    generated="$bin_dir/generated/$binary"
    rm -rf "$generated"
    mkdir -p "$generated/man" "$generated/completions"
    "$generator_dir/$binary" man --dir "$generated/man"
    gzip -9n "$generated"/man/*.1
    "$generator_dir/$binary" completions bash >"$generated/completions/$binary"
    "$generator_dir/$binary" completions zsh >"$generated/completions/_$binary"
    "$generator_dir/$binary" completions fish >"$generated/completions/$binary.fish"
    # cargo-deb strips; cargo-generate-rpm packages the file as it is.
    strip_tool=strip
    if [ -n "$target" ] && command -v "${target%%-unknown-*}-linux-gnu-strip" >/dev/null 2>&1; then
        strip_tool="${target%%-unknown-*}-linux-gnu-strip"
    fi
    if command -v "$strip_tool" >/dev/null 2>&1; then
        "$strip_tool" --strip-unneeded -o "$generated/$binary.stripped" "$bin_dir/$binary"
    fi
done

for entry in "${packages[@]}"; do
    # cargo-deb finds the target directory as cargo does.
    CARGO_TARGET_DIR="$target_dir" "$cargo_deb" deb --no-build --locked -p "${entry#*:}" \
        "${target_args[@]}" "${deb_args[@]}" -o "$out/"
done
# cargo-generate-rpm takes the binary as it is in the release directory:
# a stripped copy is swapped in for it and the original put back.
for entry in "${packages[@]}"; do
    dir="${entry%%:*}" binary="${entry#*:}"
    stripped="$bin_dir/generated/$binary/$binary.stripped"
    if [ -f "$stripped" ]; then
        mv "$bin_dir/$binary" "$bin_dir/$binary.unstripped"
        cp "$stripped" "$bin_dir/$binary"
    fi
    status=0
    "$cargo_rpm" generate-rpm -p "$dir" "${target_args[@]}" "${rpm_args[@]}" --target-dir "$target_dir" -o "$out/" || status=$?
    if [ -f "$stripped" ]; then mv "$bin_dir/$binary.unstripped" "$bin_dir/$binary"; fi
    [ "$status" = 0 ] || exit "$status"
done

(cd "$out" && rm -f SHA256SUMS && sha256sum -- *.deb *.rpm >SHA256SUMS)
echo "packages in $out:"
(cd "$out" && ls -l -- *.deb *.rpm SHA256SUMS)
