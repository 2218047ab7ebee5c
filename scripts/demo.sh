#!/usr/bin/env bash
# The main job: the whole system on this machine with embedded defaults.
#
#  1. build the example plugins (wasm32-wasip2), the runtime, the registry
#     tools and the reference control plane;
#  2. generate a signing key, audit, sign and package the example plugins into
#     a local plugin registry (release layout) served on loopback;
#  3. start the reference control plane (SQLite) on loopback;
#  4. enroll a runtime, assign it the example plugins (signed releases from the
#     local registry, only the grants each needs that exist here);
#  5. run one cycle (`assessment-runtime daemon --once`): download and verify
#     the plugins, assess this machine, deliver the results;
#  6. show the results as the control plane stored them.
#
# Everything lives in target/demo/ and is recreated on every run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prerequisites.sh

echo "== building the example plugins, the runtime, the registry tools and the control plane" >&2
cargo build --locked --release --target wasm32-wasip2 \
    --manifest-path plugins-examples/Cargo.toml --target-dir target/guests \
    -p sshd-hardening -p file-permissions -p kernel-params -p package-hygiene
cargo build --locked -p assessment-runtime -p registry-tools -p assessment-control-plane

bin="$PWD/target/debug"
demo="$PWD/target/demo"
rm -rf "$demo"
mkdir -p "$demo/registry" "$demo/dist"
mkdir -m 700 "$demo/state"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
    for _ in $(seq 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: nothing listens on port $1" >&2
    return 1
}

echo "== signing the example plugins into a local registry" >&2
export PLUGIN_REGISTRY_PASSWORD="demo-password-$RANDOM$RANDOM"
"$bin/plugin-registry" keygen --secret-key "$demo/publisher.key" --public-key "$demo/publisher.pub" >/dev/null
public_key=$(sed -n 2p "$demo/publisher.pub")
for plugin in sshd-hardening file-permissions kernel-params package-hygiene; do
    "$bin/plugin-registry" package "target/guests/wasm32-wasip2/release/${plugin//-/_}.wasm" \
        --plugin-dir "plugins-examples/$plugin" --out "$demo/dist" --secret-key "$demo/publisher.key" \
        --repository "file://$PWD" --commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" >/dev/null
    version=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "$demo/dist/$plugin-"*.manifest.json)
    mkdir -p "$demo/registry/$plugin/v$version"
    mv "$demo/dist/$plugin-$version".* "$demo/registry/$plugin/v$version/"
done
registry_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$demo/registry" "$registry_port" >"$demo/registry.log" 2>&1 &
pids+=($!)
wait_for_port "$registry_port"

echo "== starting the reference control plane (mutual TLS, its own CA in $demo/ca)" >&2
export ACP_DATABASE="$demo/control-plane.sqlite"
export ACP_ADMIN_TOKEN="demo-admin-$RANDOM$RANDOM$RANDOM"
cp_port=$(free_port)
# The CA runtimes will trust (created now; `serve` uses the same one).
"$bin/assessment-control-plane" ca certificate >"$demo/control-plane-ca.pem"
"$bin/assessment-control-plane" serve --listen "127.0.0.1:$cp_port" >"$demo/control-plane.log" 2>&1 &
pids+=($!)
wait_for_port "$cp_port"

echo "== enrolling a runtime" >&2
cat >"$demo/agent.toml" <<EOF
# The runtime's local configuration: what is this machine's own. Plugins and
# their grants come from the control plane, within the ceiling below.
[runtime]
assessment_root = "/"
state_dir = "$demo/state"
# Only releases signed by this key run.
trusted_keys = ["$public_key"]

# What the control plane may grant at most: a compromised control plane
# cannot widen it (no commands, no environment variables, no unsigned
# plugins here).
[policy]
read = ["/etc", "/proc/sys"]
packages = true
# The demo's registry is served on loopback over plain HTTP.
dev_plain_http_registries = true
EOF
token=$("$bin/assessment-control-plane" enrollment-token create --group default 2>/dev/null)
"$bin/assessment-runtime" enroll --config "$demo/agent.toml" --url "https://localhost:$cp_port" \
    --ca-cert "$demo/control-plane-ca.pem" --token "$token"

echo "== assigning the example plugins" >&2
# A grant of a path this machine lacks is fine: the plugin's checks of it
# do not apply.
registry="http://127.0.0.1:$registry_port"
cat >"$demo/assignment.json" <<EOF
{
  "runtime": { "max_concurrent_jobs": 2 },
  "plugin": [
    { "name": "sshd-hardening", "version": "0.1.0", "source": { "url": "$registry" },
      "grants": { "read": ["/etc/ssh"] } },
    { "name": "file-permissions", "version": "0.1.0", "source": { "url": "$registry" },
      "grants": { "read": ["/etc"] } },
    { "name": "kernel-params", "version": "0.1.0", "source": { "url": "$registry" },
      "grants": { "read": ["/proc/sys"] } },
    { "name": "package-hygiene", "version": "0.1.0", "source": { "url": "$registry" },
      "grants": { "packages": true } }
  ]
}
EOF
"$bin/assessment-control-plane" config set --group default "$demo/assignment.json" >/dev/null

echo "== running one assessment cycle" >&2
set +e
ASSESSMENT_RUNTIME_LOG=${ASSESSMENT_RUNTIME_LOG:-warn} "$bin/assessment-runtime" daemon --once --config "$demo/agent.toml"
status=$?
set -e

echo
echo "== results as the control plane stored them ($ACP_DATABASE)"
"$bin/assessment-control-plane" evidence list >"$demo/evidence.json"
"$bin/assessment-control-plane" runtimes list >"$demo/runtimes.json"
python3 - "$demo/evidence.json" "$demo/runtimes.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
counts = {}
for r in rows:
    e = r["evidence"]
    labels = e["labels"]
    counts[labels["status"]] = counts.get(labels["status"], 0) + 1
    about = labels.get("subject", "")
    print(f"{r['plugin']:<17} {labels['status'].upper():<5} {labels['severity']:<9} {r['check']:<28} {about:<34} {e['description']}")
print()
print(f"{len(rows)} evidence record(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
for r in json.load(open(sys.argv[2])):
    print(f"runtime {r['name']} ({r['id']}): last heartbeat {r['last_heartbeat_at']}, stale: {r['stale']}")
    # Findings that are no evidence (no verdict, not applicable, disabled)
    # are counted in the heartbeat.
    for plugin, job in sorted((r.get("heartbeat") or {}).get("jobs", {}).items()):
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(job.get("statuses", {}).items()))
        print(f"  {plugin:<17} {job['outcome']}: {statuses}")
PY

echo
echo "== a configuration beyond the local policy is refused" >&2
# A compromised control plane grants a shell: the runtime refuses the whole
# document, keeps the last good configuration and says why.
python3 - "$demo/assignment.json" "$demo/hostile-assignment.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["plugin"][2]["grants"]["commands"] = ["/bin/sh"]
json.dump(doc, open(sys.argv[2], "w"))
PY
"$bin/assessment-control-plane" config set --group default "$demo/hostile-assignment.json" >/dev/null
ASSESSMENT_RUNTIME_LOG=error "$bin/assessment-runtime" daemon --once --config "$demo/agent.toml" \
    >"$demo/hostile-cycle.log" 2>&1 || true
if ! grep -o "refused the control plane's configuration.*" "$demo/hostile-cycle.log"; then
    echo "error: the runtime did not refuse a configuration beyond its policy; see $demo/hostile-cycle.log" >&2
    exit 1
fi
exit "$status"
