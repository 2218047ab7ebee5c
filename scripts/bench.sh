#!/usr/bin/env bash
# Every benchmark, side by side with its baselines, written to
# BENCHMARKS.md: builds the runtime, the benchmark program and the
# benchmarks' plugin in release mode, and the Python example plugin, then
# runs `assessment-bench` (bench/). Arguments are passed on, e.g.
# `scripts/bench.sh --quick` for a short run that only checks everything
# works. Not part of the test suite: numbers depend on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prerequisites.sh

echo "== building (release)"
cargo build --locked --release -p assessment-runtime -p assessment-control-plane -p assessment-bench
cargo build --locked --release --target wasm32-wasip2 \
    --manifest-path plugins-examples/Cargo.toml --target-dir target/guests -p bench-probe
# The Python plugin for cold and warm start (componentize-py).
scripts/build-foreign-plugins.sh

echo "== benchmarks"
target/release/assessment-bench \
    --guests target/guests/wasm32-wasip2/release \
    --python target/guests-foreign/login_defs.wasm \
    --out BENCHMARKS.md "$@"

# A profile of the hot path: one-finding jobs through the executor under
# callgrind (instruction counts: repeatable whatever else the machine
# does), the functions with the most instructions of their own appended to
# BENCHMARKS.md; the whole profile stays in target/bench/.
if command -v valgrind >/dev/null 2>&1 && command -v callgrind_annotate >/dev/null 2>&1; then
    echo "== profile (callgrind)"
    mkdir -p target/bench
    # Counted only inside the executor (`executor::run_job`): not the
    # compilation that prepares the plugin.
    valgrind --tool=callgrind --callgrind-out-file=target/bench/callgrind.out \
        --toggle-collect='*executor::run_job*' \
        target/release/assessment-bench --guests target/guests/wasm32-wasip2/release \
        --profile-jobs 2000 2>target/bench/callgrind.log
    {
        echo "## Profile of the hot path"
        echo
        echo "2 000 one-finding jobs through the executor (instance pool) under"
        echo "\`valgrind --tool=callgrind\`, counted inside \`executor::run_job\` only; the 25"
        echo "functions with the most instructions of their own (\`callgrind_annotate\`;"
        echo "the whole profile: \`target/bench/callgrind.out\`, from \`scripts/bench.sh\`)."
        echo
        echo '```text'
        callgrind_annotate --inclusive=no target/bench/callgrind.out 2>/dev/null |
            sed -n '/^Ir/,$p' | head -n 30 | cut -c1-160
        echo '```'
    } >>BENCHMARKS.md
else
    echo "valgrind is not installed: no profile (apt-get install valgrind)" >&2
fi
