#!/usr/bin/env bash
# The fleet benchmark: `fleet-load` (fleet-load/, see its README for the
# load model) simulates 10 000 runtimes, each with its own key and client
# certificate, against the real control plane over mutual TLS on loopback,
# on a fresh SQLite database. The section it writes replaces the one
# between the fleet-load markers in BENCHMARKS.md (appended when there is
# none); scripts/bench.sh keeps that section when it rewrites the rest.
#
# Arguments are passed on to fleet-load and override its defaults here,
# e.g. `scripts/fleet-bench.sh --runtimes 200 --duration 10s` for a quick
# check. Not part of the test suite: numbers depend on the machine; run it
# when the machine is quiet (the load average is recorded).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building (release: the control plane and fleet-load only)"
build_started=$(date +%s)
cargo build --locked --release -p assessment-control-plane -p assessment-fleet-load
build_seconds=$(($(date +%s) - build_started))

bin=target/release
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

admin_token="fleet-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ACP_ADMIN_TOKEN="$admin_token"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() {
    local port=$1
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "the control plane did not start listening on port $port" >&2
    exit 1
}

# CPU seconds (user + system) a running process has used.
cpu_seconds() {
    awk -v tck="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / tck }' "/proc/$1/stat"
}

load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# One run: REPLICAS control planes on DATABASE (an SQLite file or a
# postgres URL; replicas share it and one CA), the fleet spread over them;
# writes $work/NAME.md.
run_fleet() {
    local name=$1 label=$2 replicas=$3 database=$4
    shift 4
    local dir="$work/$name"
    mkdir -p "$dir"
    local urls=() servers=() i port metrics_port
    for i in $(seq "$replicas"); do
        port=$(free_port)
        metrics_port=$(free_port)
        "$bin/assessment-control-plane" --database "$database" --log-level warn serve \
            --ca-dir "$work/ca" --max-connections "$max_connections" \
            --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port" \
            2>"$dir/control-plane-$i.log" &
        servers+=("$!")
        pids+=("$!")
        wait_listening "$port"
        wait_listening "$metrics_port"
        urls+=(--url "https://127.0.0.1:$port" --metrics "http://127.0.0.1:$metrics_port")
    done
    local load_before cpu_before=()
    load_before=$(load_average)
    for i in "${servers[@]}"; do cpu_before+=("$(cpu_seconds "$i")"); done
    local started
    started=$(date +%s.%N)
    # The generator's own CPU time, from bash's `time`.
    local TIMEFORMAT='%U %S'
    { time "$bin/fleet-load" "${urls[@]}" --ca-cert "$work/ca/ca.pem" \
        --runtimes 10000 --duration 120s \
        --label "$label" --markdown "$dir/run.md" --json "$dir/run.json" "$@" \
        >"$dir/stdout.txt" 2>"$dir/stderr.txt"; } 2>"$dir/time.txt" || {
        cat "$dir/stderr.txt" >&2
        exit 1
    }
    local wall generator_cpu server_cpu=0 load_after on_disk=""
    wall=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
    generator_cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$dir/time.txt")
    for i in "${!servers[@]}"; do
        server_cpu=$(awk -v t="$server_cpu" -v a="${cpu_before[$i]}" -v b="$(cpu_seconds "${servers[$i]}")" \
            'BEGIN { printf "%.1f", t + b - a }')
    done
    load_after=$(load_average)
    if [ -f "$database" ]; then
        on_disk=$(du -cb "$database"* | tail -n1 | cut -f1)
        on_disk=$(awk -v b="$on_disk" 'BEGIN { printf "On disk after the run: %.1f MiB (the database file and its WAL). ", b / 1048576 }')
    fi
    for i in "${servers[@]}"; do kill "$i"; wait "$i" 2>/dev/null || true; done
    {
        cat "$dir/run.md"
        echo
        printf '%sCPU over the %s s run (enrollment included): control plane%s %s s, generator %s s, of %s cores. Load average (1, 5, 15 min) before: %s; after: %s.\n' \
            "$on_disk" "$wall" "$([ "$replicas" -gt 1 ] && echo "s together")" "$server_cpu" "$generator_cpu" "$(nproc)" \
            "$load_before" "$load_after"
        if grep -q 'failed' "$dir/stderr.txt"; then
            echo
            echo "First errors the generator printed:"
            echo
            echo '```text'
            grep 'failed' "$dir/stderr.txt" | head -n 5 | cut -c1-300
            echo '```'
        fi
    } >"$work/$name.md"
    cat "$work/$name.md"
}

# 10 000 runtimes at their default intervals keep about 3 300 connections
# open (333 activities a second, each connection idle for the server's
# 10 s keep-alive before it closes): past the default --max-connections
# (1024) the control plane stops accepting and runtimes time out
# connecting, so the fleet's control plane is given room (file
# descriptors permitting).
max_connections=16384
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((max_connections + 1024)) ]; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    max_connections=$(($(ulimit -n) - 1024))
fi

# Each backend at the model's own rate (1×) and compressed tenfold.
scales=(1 10)

for scale in "${scales[@]}"; do
    echo "== SQLite, one control plane, ${scale}x"
    rm -f "$work/sqlite.db"*
    run_fleet "sqlite-$scale" "SQLite, one control plane, time scale ${scale}×" 1 "$work/sqlite.db" \
        --time-scale "$scale" "$@"
done

# PostgreSQL: a throwaway cluster of this script's own (Debian's packages;
# initdb refuses root, so as root it belongs to the postgres user), when
# the control plane takes a postgres URL.
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1 || true)
postgres_ran=""
if "$bin/assessment-control-plane" --help | grep -qi postgres && [ -n "$pg_bin" ]; then
    as_postgres() {
        if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
    }
    pg="$work/pg"
    mkdir -p "$pg"
    chmod 755 "$work" "$pg"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$pg"; fi
    as_postgres "$pg_bin/initdb" -D "$pg/data" -U postgres --auth=trust -E UTF8 --locale=C >"$work/initdb.log"
    as_postgres "$pg_bin/pg_ctl" start --wait -D "$pg/data" -l "$pg/server.log" \
        -o "-c listen_addresses='' -c unix_socket_directories='$pg' -c max_connections=200" >/dev/null
    stop_postgres() { as_postgres "$pg_bin/pg_ctl" stop -D "$pg/data" -m fast >/dev/null 2>&1 || true; }
    trap 'stop_postgres; cleanup' EXIT
    for replicas in 1 2; do
        for scale in "${scales[@]}"; do
            db="fleet_${replicas}_${scale}"
            as_postgres "$pg_bin/createdb" -h "$pg" -U postgres "$db"
            echo "== PostgreSQL, $replicas control plane(s), ${scale}x"
            run_fleet "pg-$replicas-$scale" \
                "PostgreSQL, $replicas control plane$([ "$replicas" -gt 1 ] && echo "s (replicas)"), time scale ${scale}×" \
                "$replicas" "postgresql:///$db?host=$pg&user=postgres" --time-scale "$scale" "$@"
        done
    done
    postgres_ran=yes
fi

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
section="$work/section.md"
{
    echo "<!-- fleet-load:begin (written by scripts/fleet-bench.sh; scripts/bench.sh keeps it) -->"
    echo "## 7. A fleet of runtimes on the control plane"
    echo
    echo "\`fleet-load\` (\`fleet-load/\`; its README gives the load model and why each choice) simulates runtimes against the real control plane (\`assessment-control-plane serve\`, release build) over mutual TLS on loopback. Each simulated runtime enrolls as the runtime does (an enrollment token from the admin API, its own key and CSR, \`/v1/enroll\`), so each has its own client certificate, and connects from its own loopback address. Then, in model time, each heartbeats every 60 s, polls its configuration every 60 s and delivers a batch of 25 evidence records (one job of one of four hourly plugins) every 15 minutes, taking client-credentials tokens as they expire; timers start at random offsets. The run compresses the model by the time scale, and a runtime keeps an idle connection for the server's 10 s keep-alive in model time, so each activity makes a new TLS handshake as a real runtime's does. Latency is send to answer read, handshake included. Records stored and the database's size come from the control plane's metrics before and after the run; the growth per million records is the database's growth over the run (runtimes and heartbeats included) divided by the records stored."
    echo
    echo "The control plane runs with \`--max-connections $max_connections\`: 10 000 runtimes at these intervals hold about 3 300 connections (each idle for the server's 10 s keep-alive before it closes), and with the default 1024 the control plane stops accepting and runtimes time out connecting (seen in a first run: token requests failed with connect timeouts)."
    echo
    echo "How to read it: at time scale 1× the fleet offers what 10 000 real runtimes would; a control plane that keeps up answers about as many requests per second as offered, and activities start nearly on time. At 10× the offer is ten times that: the achieved requests/s is then the most this control plane serves here, and the lateness grows through the run (activities due before the end still run, so the steady phase lasts longer than asked). \"transport\" errors are requests sent on a kept-alive connection just as the control plane closed it at its 10 s idle limit; real runtimes meet the same race (their client keeps idle connections for 90 s) and retry at their next interval."
    echo
    echo "The generator and the control plane share the machine's cores, so the figures are a floor for the control plane alone; the CPU each used is given."
    echo
    echo "- Machine: ${cpu_model:-unknown CPU}, $(nproc) cores, $(uname -sr)"
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD); the release build in this script took ${build_seconds} s (little when it was already built)"
    echo "- Command: \`scripts/fleet-bench.sh${*:+ $*}\` (10 000 runtimes, a 120 s steady phase after enrollment, at time scales ${scales[*]})"
    echo
    for scale in "${scales[@]}"; do cat "$work/sqlite-$scale.md"; echo; done
    if [ -n "$postgres_ran" ]; then
        echo "PostgreSQL ran in a throwaway cluster of the script's own (Debian's packages, default durability settings, a Unix socket), the control planes' pool at its default size."
        echo
        for replicas in 1 2; do
            for scale in "${scales[@]}"; do cat "$work/pg-$replicas-$scale.md"; echo; done
        done
    else
        echo "### PostgreSQL, one and two control planes"
        echo
        echo "Not measured: the control plane built here takes no PostgreSQL URL (or PostgreSQL's binaries are not installed). With both, this script also runs the fleet against one control plane and against two replicas sharing one database in a throwaway cluster (\`fleet-load --url A --url B --metrics MA --metrics MB\` spreads the runtimes over them)."
    fi
    echo "<!-- fleet-load:end -->"
} >"$section"

# Replace the old section (or append this one).
if grep -q '^<!-- fleet-load:begin' BENCHMARKS.md; then
    awk -v section="$section" '
        /^<!-- fleet-load:begin/ { while ((getline line < section) > 0) print line; skipping = 1; next }
        /^<!-- fleet-load:end -->/ { skipping = 0; next }
        !skipping { print }
    ' BENCHMARKS.md >"$work/BENCHMARKS.md"
else
    { cat BENCHMARKS.md; echo; cat "$section"; } >"$work/BENCHMARKS.md"
fi
cp "$work/BENCHMARKS.md" BENCHMARKS.md
echo "== BENCHMARKS.md: fleet section written"
