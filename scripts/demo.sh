#!/usr/bin/env bash
# The main job: build the example plugins (wasm32-wasip2 components) and the
# host, then assess this machine with them and print the results.
#
# The agent configuration is written to target/demo/agent.toml, granting each
# plugin only the paths it needs that exist here. Extra arguments go to
# `assessment-runtime run` (e.g. `--output json`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prerequisites.sh

echo "== building the example plugins" >&2
cargo build --locked --release --target wasm32-wasip2 \
    --manifest-path plugins-examples/Cargo.toml --target-dir target/guests \
    -p sshd-hardening -p file-permissions -p kernel-params
echo "== building assessment-runtime" >&2
cargo build --locked -p assessment-runtime

plugins="$PWD/target/guests/wasm32-wasip2/release"
mkdir -p target/demo
config=target/demo/agent.toml

# A TOML list of the paths among "$@" that exist on this machine.
existing() {
    local out="" p
    for p in "$@"; do
        [ -e "$p" ] && out="$out\"$p\", "
    done
    echo "[${out%, }]"
}

{
    echo "# Written by scripts/demo.sh for $(hostname 2>/dev/null || echo this machine)."
    echo "[runtime]"
    echo "assessment_root = \"/\""
    echo
    echo "[[plugin]]"
    echo "name = \"sshd-hardening\""
    echo "path = \"$plugins/sshd_hardening.wasm\""
    if [ -d /etc/ssh ]; then
        echo "grants = { read = [\"/etc/ssh\"] }"
    else
        echo "# /etc/ssh does not exist here: nothing to assess."
        echo "enabled = false"
    fi
    echo
    echo "[[plugin]]"
    echo "name = \"file-permissions\""
    echo "path = \"$plugins/file_permissions.wasm\""
    echo "grants = { read = $(existing /etc/passwd /etc/passwd- /etc/group /etc/group- /etc/shadow /etc/shadow- /etc/gshadow /etc/gshadow- /etc/crontab /etc/ssh) }"
    echo
    echo "[[plugin]]"
    echo "name = \"kernel-params\""
    echo "path = \"$plugins/kernel_params.wasm\""
    echo "grants = { read = [\"/proc/sys\"] }"
} > "$config"

echo "== assessing this machine with $config" >&2
exec target/debug/assessment-runtime run --once --config "$config" "$@"
