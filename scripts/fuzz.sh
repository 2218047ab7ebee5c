#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS seconds each (default 60)
# and prints a table: target, seconds, executions, coverage, result.
#
#   scripts/fuzz.sh                     # every target
#   FUZZ_SECONDS=600 scripts/fuzz.sh manifest component
#
# Targets (see fuzz/README.md):
#   fuzz/          public_key signature secret_key manifest component
#                  evidence heartbeat config_document
#   fuzz/runtime/  agent_config remote_config state_files outbox_batch
#   fuzz/control-plane/  evidence_body
#
# It installs what it needs: cargo-fuzz (pinned, into target/tools/cargo-fuzz)
# and, where rustup can fetch one, a nightly toolchain (else it runs the
# stable one with RUSTC_BOOTSTRAP=1). Corpora are seeded with valid
# inputs made here (keys, a signature and a manifest from the registry
# tools; a component built from plugins-examples; the wire, configuration
# and record seeds of the property tests) and kept in fuzz/*/corpus/
# (ignored by git) so that later runs go on from
# there. A crash is saved under fuzz/*/artifacts/TARGET/ and makes the
# script exit 1.
#
# Fuzzing is not part of the test suite (scripts/test.sh): the same entry
# functions run there as bounded property tests on stable.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
seconds="${FUZZ_SECONDS:-60}"
say() { echo "fuzz: $*" >&2; }

registry_targets=(public_key signature secret_key manifest component evidence heartbeat config_document)
runtime_targets=(agent_config remote_config state_files outbox_batch)
control_plane_targets=(evidence_body)
all_targets=("${registry_targets[@]}" "${runtime_targets[@]}" "${control_plane_targets[@]}")
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

fuzz_dir_of() {
    local t
    for t in "${registry_targets[@]}"; do [ "$t" = "$1" ] && { echo fuzz; return; }; done
    for t in "${runtime_targets[@]}"; do [ "$t" = "$1" ] && { echo fuzz/runtime; return; }; done
    for t in "${control_plane_targets[@]}"; do [ "$t" = "$1" ] && { echo fuzz/control-plane; return; }; done
    say "no target $1 (targets: ${all_targets[*]})"
    exit 2
}
for t in "${targets[@]}"; do fuzz_dir_of "$t" >/dev/null; done

# The toolchain: libFuzzer's flags (-Zsanitizer, sanitizer coverage) are
# nightly's. A nightly toolchain is used when rustup has one or can fetch
# one; otherwise the stable toolchain with RUSTC_BOOTSTRAP=1, which accepts
# the same flags (machines that reach only crates.io cannot fetch nightly).
toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1 ||
    timeout 300 rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    say "no nightly toolchain: using $(rustc --version) with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi

# cargo-fuzz.
tools="$repo/target/tools/cargo-fuzz"
if [ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi
export PATH="$tools/bin:$PATH"

# The runtime's and the control plane's targets build them: the same
# dependency versions as the repository's lock file.
for dir in fuzz/runtime fuzz/control-plane; do
    if [ ! -f "$dir/Cargo.lock" ] || [ Cargo.lock -nt "$dir/Cargo.lock" ]; then
        cp Cargo.lock "$dir/Cargo.lock"
    fi
done

# Seeds: valid inputs, so that the fuzzer starts past the first checks.
seeds="$repo/target/fuzz-seeds"
if [ ! -f "$seeds/.done" ]; then
    say "making seed keys, a signature, a manifest and a component"
    rm -rf "$seeds"
    mkdir -p "$seeds"/{public_key,signature,secret_key,manifest,component}
    cargo build --locked --quiet -p registry-tools --bin plugin-registry
    cargo build --locked --quiet --release --target wasm32-wasip2 \
        --manifest-path plugins-examples/Cargo.toml --target-dir target/guests -p file-permissions
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    registry=target/debug/plugin-registry
    "$registry" keygen --unencrypted --secret-key "$work/plain.key" --public-key "$work/plain.pub" >/dev/null
    # The password the secret_key target tries (fuzz entries: PASSWORD).
    PLUGIN_REGISTRY_PASSWORD="correct horse battery staple" \
        "$registry" keygen --secret-key "$work/encrypted.key" --public-key "$work/encrypted.pub" >/dev/null
    cp "$work/plain.pub" "$seeds/public_key/file"
    tail -n 1 "$work/plain.pub" >"$seeds/public_key/line"
    cp "$work/plain.key" "$seeds/secret_key/plain"
    cp "$work/encrypted.key" "$seeds/secret_key/encrypted"
    PLUGIN_REGISTRY_SECRET_KEY="$(cat "$work/plain.key")" \
        "$registry" package target/guests/wasm32-wasip2/release/file_permissions.wasm \
        --plugin-dir plugins-examples/file-permissions --out "$work/dist" >/dev/null
    cp "$work"/dist/*.manifest.json "$seeds/manifest/"
    cp "$work"/dist/*.manifest.json.minisig "$seeds/signature/"
    cp "$work"/dist/*.wasm "$seeds/component/"
    touch "$seeds/.done"
fi
# The text seeds of the property tests, as they are now.
mkdir -p "$seeds"/{evidence,heartbeat,config_document,agent_config,remote_config,state_files,outbox_batch,evidence_body}
for m in evidence heartbeat config_document; do
    cp "capability-model/tests/hostile/seeds/$m.json" "$seeds/$m/"
done
cp capability-model/tests/hostile/seeds/config_document.json "$seeds/remote_config/"
cp host/tests/hostile/seeds/agent.toml "$seeds/agent_config/"
cp capability-model/tests/hostile/seeds/config_document.json "$seeds/state_files/"
cp control-plane/tests/hostile/seeds/record.json "$seeds/evidence_body/"
printf '[%s]\n' "$(tr -d '\n' <capability-model/tests/hostile/seeds/evidence.json)" >"$seeds/outbox_batch/batch.json"

# The largest input each target is given: components are larger than text.
max_len() {
    case "$1" in
        component) echo 262144 ;;
        *) echo 16384 ;;
    esac
}

summary="$(mktemp)"
failed=0
for target in "${targets[@]}"; do
    dir="$(fuzz_dir_of "$target")"
    corpus="$dir/corpus/$target"
    mkdir -p "$corpus"
    log="$repo/target/fuzz-$target.log"
    say "$target: $seconds s (log: $log)"
    # The registry tools' targets run under AddressSanitizer; the runtime's
    # and the control plane's without a sanitizer (instrumenting wasmtime,
    # SQLite and the HTTP stack for it costs much, and the parsers fuzzed
    # there are safe Rust).
    sanitizer=address
    [ "$dir" = fuzz ] || sanitizer=none
    status=0
    cargo "${toolchain[@]}" fuzz run --fuzz-dir "$dir" -O --sanitizer "$sanitizer" "$target" \
        "$corpus" "$seeds/$target" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1 || true)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)"
    if [ "$status" -eq 0 ]; then
        result="no crash"
    else
        failed=1
        result="FAILED (exit $status): $(grep -o 'artifacts/[^ ]*' "$log" | tail -n 1)"
    fi
    printf '| `%s` | %s | %s | %s | %s |\n' "$target" "$seconds" "${runs:-?}" "${cov:-?}" "$result" >>"$summary"
done

echo
echo "| Target | Seconds | Executions | Coverage (edges) | Result |"
echo "| --- | --- | --- | --- | --- |"
cat "$summary"
rm -f "$summary"
exit "$failed"
