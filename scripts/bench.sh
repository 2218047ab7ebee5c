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
exec target/release/assessment-bench \
    --guests target/guests/wasm32-wasip2/release \
    --python target/guests-foreign/login_defs.wasm \
    --out BENCHMARKS.md "$@"
