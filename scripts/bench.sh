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
# Two builds: together, the control plane's features of shared crates would
# make a different (and needless) build of wasmtime for the runtime.
cargo build --locked --release -p assessment-runtime -p assessment-bench
cargo build --locked --release -p assessment-control-plane
cargo build --locked --release --target wasm32-wasip2 \
    --manifest-path plugins-examples/Cargo.toml --target-dir target/guests -p bench-probe
# The Python plugin for cold and warm start (componentize-py).
scripts/build-foreign-plugins.sh

echo "== benchmarks"
# The fleet section is written by scripts/fleet-bench.sh: kept as it is.
fleet_section="$(sed -n '/^<!-- fleet-load:begin/,/^<!-- fleet-load:end -->/p' BENCHMARKS.md 2>/dev/null || true)"
target/release/assessment-bench \
    --guests target/guests/wasm32-wasip2/release \
    --python target/guests-foreign/login_defs.wasm \
    --out BENCHMARKS.md "$@"

# A profile of the hot path: 20 000 one-finding jobs through the executor
# under callgrind (instruction counts: repeatable whatever else the machine
# does; the one compilation of the small plugin that prepares them is in the
# profile too, a few per cent of it), the functions with the most
# instructions of their own appended to BENCHMARKS.md; the whole profile
# stays in target/bench/.
if command -v valgrind >/dev/null 2>&1 && command -v callgrind_annotate >/dev/null 2>&1; then
    echo "== profile (callgrind)"
    mkdir -p target/bench
    valgrind --tool=callgrind --callgrind-out-file=target/bench/callgrind.out \
        target/release/assessment-bench --guests target/guests/wasm32-wasip2/release \
        --profile-jobs 20000 2>target/bench/callgrind.log ||
        { tail -n 20 target/bench/callgrind.log >&2; exit 1; }
    callgrind_annotate --inclusive=no target/bench/callgrind.out >target/bench/callgrind.txt 2>/dev/null || true
    {
        echo "## Profile of the hot path"
        echo
        echo "20 000 one-finding jobs through the executor (instances on demand: valgrind"
        echo "cannot reserve the pool's address space) under"
        echo "\`valgrind --tool=callgrind\` (\`scripts/bench.sh\`; the whole profile is"
        echo "\`target/bench/callgrind.out\`): the 25 functions with the most instructions"
        echo "of their own."
        echo
        echo '```text'
        sed -n '/^Ir/,$p' target/bench/callgrind.txt | sed -n '1,30p' | cut -c1-160
        echo '```'
        total="$(grep -m1 'PROGRAM TOTALS' target/bench/callgrind.txt | tr -d ',' | awk '{ print $1 }')"
        echo
        echo "Instructions per job, everything counted (the one compilation of the small"
        echo "plugin included) / 20 000: $((total / 20000))."
    } >>BENCHMARKS.md
else
    echo "valgrind is not installed: no profile (apt-get install valgrind)" >&2
fi
if [ -n "$fleet_section" ]; then
    printf '\n%s\n' "$fleet_section" >>BENCHMARKS.md
fi
