#!/usr/bin/env bash
# Rebuilds the binary fixtures of a frozen plugin ABI version from the commit
# that released it, so that the tests keep running plugins built exactly as
# third parties built them against that version.
#
#   scripts/rebuild-abi-fixtures.sh 0.1.0
#
# Output: tests/fixtures/abi-<version>/*.wasm (committed).
set -euo pipefail

version="${1:-}"
case "$version" in
  # The last commit whose plugins and SDK targeted assessment:plugin@0.1.0.
  0.1.0) commit=5a29d88d62e1ea42878eb1a8dffbb76b0dc48e1d ;;
  *) echo "usage: $0 0.1.0   (known frozen ABI versions: 0.1.0)" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/tests/fixtures/abi-$version"
work="$(mktemp -d)"
trap 'git -C "$repo" worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

rustup target add wasm32-wasip2 >/dev/null
git -C "$repo" worktree add --detach "$work/src" "$commit" >/dev/null
cargo build --locked --release --target wasm32-wasip2 \
  --manifest-path "$work/src/plugins-examples/Cargo.toml" \
  --target-dir "$work/target" \
  -p sshd-hardening -p file-permissions -p kernel-params -p test-plugin-probe

mkdir -p "$out"
for name in sshd_hardening file_permissions kernel_params test_plugin_probe; do
  cp "$work/target/wasm32-wasip2/release/$name.wasm" "$out/$name.wasm"
done
( cd "$out" && sha256sum ./*.wasm > SHA256SUMS )
echo "fixtures of assessment:plugin@$version written to $out"
