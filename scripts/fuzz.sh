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
#
# It installs what it needs: a nightly toolchain (rustup) and cargo-fuzz
# (pinned, into target/tools/cargo-fuzz). Corpora are seeded with valid
# inputs made here (keys, a signature and a manifest from the registry
# tools; a component built from plugins-examples; the wire and
# configuration seeds of the property tests) and kept in fuzz/corpus/ and
# fuzz/runtime/corpus/ (ignored by git) so that later runs go on from
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
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${registry_targets[@]}" "${runtime_targets[@]}"); fi

fuzz_dir_of() {
    local t
    for t in "${registry_targets[@]}"; do [ "$t" = "$1" ] && { echo fuzz; return; }; done
    for t in "${runtime_targets[@]}"; do [ "$t" = "$1" ] && { echo fuzz/runtime; return; }; done
    say "no target $1 (targets: ${registry_targets[*]} ${runtime_targets[*]})"
    exit 2
}
for t in "${targets[@]}"; do fuzz_dir_of "$t" >/dev/null; done

# The toolchain and cargo-fuzz.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
tools="$repo/target/tools/cargo-fuzz"
if [ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi
export PATH="$tools/bin:$PATH"

# The runtime's targets build the runtime: the same dependency versions as
# the repository's lock file.
if [ ! -f fuzz/runtime/Cargo.lock ] || [ Cargo.lock -nt fuzz/runtime/Cargo.lock ]; then
    cp Cargo.lock fuzz/runtime/Cargo.lock
fi

# Seeds: valid inputs, so that the fuzzer starts past the first checks.
seeds="$repo/target/fuzz-seeds"
if [ ! -f "$seeds/.done" ]; then
    say "making seed inputs"
    rm -rf "$seeds"
    mkdir -p "$seeds"/{public_key,signature,secret_key,manifest,component,evidence,heartbeat,config_document,agent_config,remote_config,state_files,outbox_batch}
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
    for m in evidence heartbeat config_document; do
        cp "capability-model/tests/hostile/seeds/$m.json" "$seeds/$m/"
    done
    cp capability-model/tests/hostile/seeds/config_document.json "$seeds/remote_config/"
    cp host/tests/hostile/seeds/agent.toml "$seeds/agent_config/"
    cp capability-model/tests/hostile/seeds/config_document.json "$seeds/state_files/"
    printf '[%s]\n' "$(tr -d '\n' <capability-model/tests/hostile/seeds/evidence.json)" >"$seeds/outbox_batch/batch.json"
    touch "$seeds/.done"
fi

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
    # without a sanitizer (instrumenting wasmtime for it costs much and the
    # parsers fuzzed there are safe Rust).
    sanitizer=address
    [ "$dir" = fuzz/runtime ] && sanitizer=none
    status=0
    cargo +nightly fuzz run --fuzz-dir "$dir" -O --sanitizer "$sanitizer" "$target" \
        "$corpus" "$seeds/$target" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)"
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
