# Shared by the bench scripts (sourced, not run).

# A loopback port nothing listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# CPU time (user + system) the process has used, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# ---- Replicas on one PostgreSQL (scale.sh, converge.sh) ----

# Where the bench binaries are: $CARGO_TARGET_DIR/$BENCH_PROFILE (release
# unless BENCH_PROFILE names another profile, such as debug).
bench_bin_dir() {
    echo "${CARGO_TARGET_DIR:-target}/${BENCH_PROFILE:-release}"
}

# The built components as an absolute path: SWITCHYARD_COMPONENTS_DIR, or
# components/build/ of the repository. Fails when the directory is missing.
bench_components_dir() {
    (cd "${SWITCHYARD_COMPONENTS_DIR:-components/build}" 2>/dev/null && pwd)
}

# switchyard.toml's reference app, moved: absolute component paths (under
# $1), its connectors pointed at the provider simulator on port $2.
reference_config() { # $1 = components dir, $2 = simulator delivery port
    sed -e "s|\"components/build/|\"$1/|" -e "s|127.0.0.1:9090|127.0.0.1:$2|g" switchyard.toml
}

# Creates database $1 on the server DATABASE_URL names; prints its URL.
pg_create_database() { # $1 = database name
    psql -q "$DATABASE_URL" -c "CREATE DATABASE $1" >/dev/null || return 1
    echo "${DATABASE_URL%/*}/$1"
}

# Drops database $1, closing any connection still open to it.
pg_drop_database() { # $1 = database name
    psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true
}

# Whether PID $1 is still running (an exited, unreaped child does not count).
pid_alive() { # $1 = pid
    [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Stops PID $1: SIGTERM, then SIGKILL if it is still there after $2 seconds.
stop_pid() { # $1 = pid, $2 = grace seconds (default 15)
    local tenths=$(( ${2:-15} * 10 ))
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 "$tenths"); do
        pid_alive "$1" || break
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# CPU time (user + system) all the given PIDs have used together, in clock ticks.
cpu_ticks_total() { # $@ = pids
    local total=0 p
    for p in "$@"; do total=$((total + $(cpu_ticks "$p"))); done
    echo "$total"
}

# Waits until $1/health/ready answers 200: at most $3 seconds, and only
# while PID $2 runs (a log file $5, if given, is shown when it does not).
wait_ready() { # $1 = base URL, $2 = pid, $3 = seconds, $4 = name, $5 = log file
    local deadline=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$1/health/ready")" = 200 ]; then return 0; fi
        if ! pid_alive "$2"; then
            echo "$4 exited while starting" >&2
            [ -n "${5:-}" ] && tail -n 20 "$5" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$4 was not ready at $1 within $3 s" >&2
    [ -n "${5:-}" ] && tail -n 20 "$5" >&2
    return 1
}

# Starts one replica of config $2 on a free loopback port against database
# URL $3, with the admin token "bench", and waits (at most 180 s: a debug
# build compiles its components slowly) until it is ready. Appends its PID
# to replica_pids and its port to replica_ports.
start_replica() { # $1 = bin dir, $2 = config, $3 = database url, $4 = replica id, $5 = log file
    local port
    port=$(free_port)
    SWITCHYARD_ADMIN_TOKEN=bench "$1/switchyard" serve --config "$2" --listen "127.0.0.1:$port" \
        --database-url "$3" --replica-id "$4" --advertise "127.0.0.1:$port" >"$5" 2>&1 &
    replica_pids+=("$!")
    replica_ports+=("$port")
    wait_ready "http://127.0.0.1:$port" "$!" 180 "$4" "$5"
}

# Stops every replica start_replica started, by its PID, and forgets them.
stop_replicas() {
    local p
    for p in "${replica_pids[@]}"; do stop_pid "$p"; done
    replica_pids=()
    replica_ports=()
}

# The figures of one `loadtest baseline` step: "rps p50 p95 p99 error_rate
# requests cpu_us backlog", from its summary.json under DIR, with the server's
# CPU ticks over the step and its outbox backlog after it; fails without one.
step_figures() { # $1 = the step's results dir, $2 = CPU ticks, $3 = backlog
    PENDING=$3 CPU_TICKS=$2 TICKS_PER_SECOND=$(getconf CLK_TCK) python3 - "$1" <<'PY'
import glob, json, os, sys
found = glob.glob(os.path.join(sys.argv[1], "*", "summary.json"))
if not found:
    sys.exit(1)
s = json.load(open(found[0]))
l = s["latency"]
cpu_us = int(os.environ["CPU_TICKS"]) / int(os.environ["TICKS_PER_SECOND"]) * 1e6 / max(s["requests"], 1)
print(f'{s["achieved_rps"]:.1f} {l["p50_ms"]:.2f} {l["p95_ms"]:.2f} {l["p99_ms"]:.2f} {s["error_rate"]:.5f} {s["requests"]} {cpu_us:.0f} {os.environ["PENDING"]}')
PY
}
