#!/usr/bin/env bash
# Runs the reference app as a cluster on this machine, without containers:
# PostgreSQL (Debian's cluster, started the way .ci/run starts it), the
# provider simulator the connectors deliver to (127.0.0.1:9090, control on
# :9091), three replicas on 127.0.0.1:8181, :8182 and :8183 sharing the
# database switchyard_cluster, and HAProxy on 127.0.0.1:8080 in front of
# them, checking each replica's /health/ready (deploy/haproxy/haproxy.local.cfg;
# its stats page on 127.0.0.1:8404). It waits until HAProxy reports all three
# replicas up, prints the URLs, and stays in the foreground: Ctrl-C, or any of
# its processes exiting, stops exactly the processes it started, by PID
# (PostgreSQL too, if it was not running before).
#
# Usage: scripts/cluster.sh [--fresh] [--check]
#          run until Ctrl-C (`just cluster` builds first); --check instead
#          stops once /health answers through HAProxy; --fresh drops the
#          database switchyard_cluster first (a database migrated by another
#          build of the host refuses to start: "migration N was previously
#          applied but has been modified")
#        scripts/cluster.sh render-haproxy FILE
#          write the HAProxy config alone (lint-deploy checks it)
#
# Environment:
#   SWITCHYARD_BIN_DIR         where `switchyard` and `provider-simulator` are
#                              (default: $CARGO_TARGET_DIR/debug, else target/debug)
#   SWITCHYARD_COMPONENTS_DIR  the built components (default: components/build)
#   SWITCHYARD_ADMIN_TOKEN     the replicas' admin bearer token (default: a
#                              development token, printed)
#   SWITCHYARD_CLUSTER_DATABASE_URL
#                              a PostgreSQL database to use as it is: nothing is
#                              started or created (default: the local server's
#                              switchyard_cluster, created if missing)
#   SWITCHYARD_CLUSTER_STATE   generated configs and logs (default:
#                              $CARGO_TARGET_DIR/cluster, else target/cluster)
#   SWITCHYARD_CLUSTER_WAIT_S  how long the replicas may take to come up (default 120)
#
# The replicas get SWITCHYARD_REPLICA_ID replica-1..3 and SWITCHYARD_ADVERTISE
# their own address; the app is switchyard.toml's, copied into the state
# directory with absolute component paths (its paths are relative to the
# file), and --listen and --database-url override its [server] and
# [database]. Logs: one file per process in the state directory's logs/.

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

readonly REPLICAS=(replica-1 replica-2 replica-3)
readonly REPLICA_PORTS=(8181 8182 8183)
readonly LB_LISTEN=127.0.0.1:8080
readonly STATS_LISTEN=127.0.0.1:8404
# The reference config's connectors deliver here (switchyard.toml).
readonly SIMULATOR_LISTEN=127.0.0.1:9090
readonly SIMULATOR_CONTROL=127.0.0.1:9091
readonly DEV_ADMIN_TOKEN=dev-cluster-token
readonly CLUSTER_DATABASE=switchyard_cluster
# How long a stopped process may take to exit before it is killed: above the
# replicas' drain timeout ([server] drain_timeout_ms, 30 s by default).
readonly STOP_TIMEOUT_S=35

say() { echo "cluster: $*"; }
die() {
    echo "cluster: $*" >&2
    exit 1
}

# Writes deploy/haproxy/haproxy.local.cfg with its @NAME@ placeholders filled.
render_haproxy() {
    local out=$1 template="$repo/deploy/haproxy/haproxy.local.cfg"
    sed -e "s|@LISTEN@|$LB_LISTEN|" \
        -e "s|@STATS_LISTEN@|$STATS_LISTEN|" \
        -e "s|@REPLICA_1@|127.0.0.1:${REPLICA_PORTS[0]}|" \
        -e "s|@REPLICA_2@|127.0.0.1:${REPLICA_PORTS[1]}|" \
        -e "s|@REPLICA_3@|127.0.0.1:${REPLICA_PORTS[2]}|" \
        "$template" >"$out"
    if grep -q '@[A-Z_0-9]*@' "$out"; then
        die "$template has a placeholder this script does not fill: $(grep -o '@[A-Z_0-9]*@' "$out" | head -n 1)"
    fi
}

if [[ ${1:-} == render-haproxy ]]; then
    [[ $# -eq 2 ]] || die "usage: scripts/cluster.sh render-haproxy FILE"
    render_haproxy "$2"
    exit 0
fi
check_mode=0
fresh=0
for arg in "$@"; do
    case $arg in
        --check) check_mode=1 ;;
        --fresh) fresh=1 ;;
        *)
            echo "usage: scripts/cluster.sh [--fresh] [--check] | render-haproxy FILE" >&2
            exit 2
            ;;
    esac
done

target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin_dir=${SWITCHYARD_BIN_DIR:-$target_dir/debug}
components_dir=${SWITCHYARD_COMPONENTS_DIR:-$repo/components/build}
state=${SWITCHYARD_CLUSTER_STATE:-$target_dir/cluster}
wait_s=${SWITCHYARD_CLUSTER_WAIT_S:-120}
admin_token=${SWITCHYARD_ADMIN_TOKEN:-$DEV_ADMIN_TOKEN}
[[ $wait_s =~ ^[0-9]+$ ]] || die "SWITCHYARD_CLUSTER_WAIT_S must be a number of seconds, not '$wait_s'"

# --- preflight: everything is checked before anything starts ----------------

for binary in switchyard provider-simulator; do
    [[ -x $bin_dir/$binary ]] ||
        die "no $bin_dir/$binary; build it (cargo build -p switchyard -p switchyard-loadtests --bins) or set SWITCHYARD_BIN_DIR"
done
components_dir=$(cd "$components_dir" 2>/dev/null && pwd) ||
    die "no components directory ${SWITCHYARD_COMPONENTS_DIR:-components/build}; run components/build.sh or set SWITCHYARD_COMPONENTS_DIR"
[[ $components_dir != *[\"\\]* ]] || die "the components directory's path has a quote or backslash: $components_dir"
for tool in haproxy curl; do
    command -v "$tool" >/dev/null || die "$tool not found; on Debian: apt-get install $tool"
done

# A port already taken would make one process fail after the others started.
port_in_use() {
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}
for address in "$LB_LISTEN" "$STATS_LISTEN" "$SIMULATOR_LISTEN" "$SIMULATOR_CONTROL" \
    "${REPLICA_PORTS[@]/#/127.0.0.1:}"; do
    if port_in_use "$address"; then
        die "$address is already in use (another just run, just monitoring or cluster?)"
    fi
done

mkdir -p "$state/logs"
config="$state/switchyard.toml"
# switchyard.toml with its component paths made absolute; nothing else
# changes (--listen and --database-url override the rest).
while IFS= read -r line; do
    if [[ $line =~ ^path\ =\ \"components/build/([^\"]+)\"$ ]]; then
        printf 'path = "%s/%s"\n' "$components_dir" "${BASH_REMATCH[1]}"
    else
        printf '%s\n' "$line"
    fi
done <"$repo/switchyard.toml" >"$config"
while read -r path; do
    [[ $path == /* ]] || die "switchyard.toml names a component path this script cannot place: $path"
    [[ -f $path ]] || die "no component $path; run components/build.sh or set SWITCHYARD_COMPONENTS_DIR"
done < <(sed -nE 's/^path = "(.*\.wasm)"$/\1/p' "$config")
render_haproxy "$state/haproxy.cfg"
haproxy -c -q -f "$state/haproxy.cfg" || die "haproxy rejects $state/haproxy.cfg"

# --- stopping what was started ----------------------------------------------

pids=()
names=()
pg_pid=""
stop_all() {
    local status=$? i deadline
    # A second Ctrl-C (a terminal sends one to every process in the group,
    # and wrappers such as just or timeout forward theirs) must not cut the
    # stopping short and leave processes behind; it is bounded anyway.
    trap - EXIT
    trap '' INT TERM
    ((${#pids[@]})) && say "stopping ${names[*]} (at most ${STOP_TIMEOUT_S} s)"
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        while kill -0 "${pids[i]}" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if kill -0 "${pids[i]}" 2>/dev/null; then
            say "${names[i]} (pid ${pids[i]}) did not stop in ${STOP_TIMEOUT_S} s; killing it"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
        wait "${pids[i]}" 2>/dev/null || true
    done
    if [[ -n $pg_pid ]]; then
        # Fast shutdown of the server this script started, and only that one.
        say "stopping the PostgreSQL server it started (pid $pg_pid)"
        kill -INT "$pg_pid" 2>/dev/null || true
        deadline=$((SECONDS + STOP_TIMEOUT_S))
        while kill -0 "$pg_pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
    ((${#pids[@]})) && say "stopped; logs in $state/logs"
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: in the background, its output in logs/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$state/logs/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
}

# The last lines of every log, for when something did not come up.
show_logs() {
    local name
    for name in "${names[@]}"; do
        echo "--- $state/logs/$name.log (last 15 lines)" >&2
        tail -n 15 "$state/logs/$name.log" >&2 || true
    done
}

# Dies naming the first started process that has exited.
check_running() {
    local i
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            show_logs
            if grep -q 'previously applied but has been modified' "$state/logs/${names[i]}.log"; then
                say "the database was migrated by another build of the host; --fresh starts on an empty one"
            fi
            die "${names[i]} exited during start-up (log: $state/logs/${names[i]}.log)"
        fi
    done
}

# wait_for WHAT URL: until URL answers 2xx, within what is left of the wait.
wait_for() {
    local what=$1 url=$2
    while ! curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        check_running
        ((SECONDS < deadline)) || {
            show_logs
            die "$what did not answer $url within $wait_s s"
        }
        sleep 0.5
    done
}

# --- PostgreSQL -----------------------------------------------------------------

# run_as_postgres COMMAND...: as the server's superuser, like .ci/run.
run_as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then
        su postgres -c "$(printf '%q ' "$@")"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n -u postgres "$@"
    else
        die "creating the database needs root or sudo; or set SWITCHYARD_CLUSTER_DATABASE_URL to a database you own"
    fi
}

if [[ -n ${SWITCHYARD_CLUSTER_DATABASE_URL:-} ]]; then
    ((!fresh)) || die "--fresh drops only the local switchyard_cluster, not SWITCHYARD_CLUSTER_DATABASE_URL's database"
    database_url=$SWITCHYARD_CLUSTER_DATABASE_URL
    say "using the database of SWITCHYARD_CLUSTER_DATABASE_URL as it is"
else
    command -v pg_lsclusters >/dev/null && [[ -d /etc/postgresql ]] ||
        die "no local PostgreSQL (apt-get install postgresql), and SWITCHYARD_CLUSTER_DATABASE_URL is not set"
    pg_version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if ! pg_lsclusters -h | awk '$4 == "online"' | grep -q .; then
        say "starting PostgreSQL $pg_version (cluster main)"
        if [[ $(id -u) -eq 0 ]]; then
            pg_ctlcluster "$pg_version" main start
        else
            sudo -n pg_ctlcluster "$pg_version" main start || die "starting PostgreSQL needs root or sudo"
        fi
        data_dir=$(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" { print $6 }')
        pg_pid=$(head -n 1 "$data_dir/postmaster.pid" 2>/dev/null) || pg_pid=""
        [[ $pg_pid =~ ^[0-9]+$ ]] || pg_pid=""
    fi
    for _ in $(seq 1 30); do
        pg_isready -h 127.0.0.1 -q && break
        sleep 1
    done
    pg_isready -h 127.0.0.1 -q || die "PostgreSQL does not answer on 127.0.0.1:5432"
    if ((fresh)); then
        say "dropping the database $CLUSTER_DATABASE (--fresh)"
        run_as_postgres psql -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $CLUSTER_DATABASE WITH (FORCE)"
    fi
    # The role .ci/run creates, and the cluster's own database.
    run_as_postgres psql -q -v ON_ERROR_STOP=1 <<SQL
SELECT 'CREATE ROLE switchyard LOGIN PASSWORD ''switchyard'' CREATEDB'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchyard') \gexec
SELECT 'CREATE DATABASE $CLUSTER_DATABASE OWNER switchyard'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$CLUSTER_DATABASE') \gexec
SQL
    database_url="postgres://switchyard:switchyard@127.0.0.1:5432/$CLUSTER_DATABASE"
fi

# --- the processes ----------------------------------------------------------------

deadline=$((SECONDS + wait_s))
start provider-simulator "$bin_dir/provider-simulator" --listen "$SIMULATOR_LISTEN" \
    --control "$SIMULATOR_CONTROL" --log-format json
wait_for provider-simulator "http://$SIMULATOR_CONTROL/health"

# start_replica INDEX
start_replica() {
    local name=${REPLICAS[$1]} address="127.0.0.1:${REPLICA_PORTS[$1]}"
    start "$name" env SWITCHYARD_REPLICA_ID="$name" SWITCHYARD_ADVERTISE="$address" \
        SWITCHYARD_ADMIN_TOKEN="$admin_token" \
        "$bin_dir/switchyard" serve --config "$config" --listen "$address" \
        --database-url "$database_url" --log-format json
}
# The first replica alone: it runs the migrations on a new database, and a
# broken config shows in one log instead of three.
say "starting ${REPLICAS[0]} (migrations, component compilation)"
start_replica 0
wait_for "${REPLICAS[0]}" "http://127.0.0.1:${REPLICA_PORTS[0]}/health/live"
say "starting ${REPLICAS[*]:1}"
for ((i = 1; i < ${#REPLICAS[@]}; i++)); do
    start_replica "$i"
done
start haproxy haproxy -db -f "$state/haproxy.cfg"

# Until HAProxy's own checks (GET /health/ready) hold every replica UP.
replicas_up() {
    curl -fsS --max-time 2 "http://$STATS_LISTEN/;csv" 2>/dev/null |
        awk -F, '$1 == "replicas" && $2 ~ /^replica-/ && $18 == "UP" { n++ } END { print n + 0 }'
}
while (($(replicas_up) < ${#REPLICAS[@]})); do
    check_running
    ((SECONDS < deadline)) || {
        show_logs
        die "HAProxy did not report all ${#REPLICAS[@]} replicas up within $wait_s s (stats: http://$STATS_LISTEN/)"
    }
    sleep 0.5
done

cat <<EOF
cluster: all ${#REPLICAS[@]} replicas up behind HAProxy, on database ${database_url##*/}
  app (through HAProxy)   http://$LB_LISTEN   e.g. curl -s http://$LB_LISTEN/health
  HAProxy stats           http://$STATS_LISTEN/
  replicas                $(for p in "${REPLICA_PORTS[@]}"; do printf 'http://127.0.0.1:%s  ' "$p"; done)
  provider simulator      http://$SIMULATOR_CONTROL/received
  admin token             $admin_token   (curl -H "Authorization: Bearer $admin_token" …)
  configs and logs        $state
EOF

if ((check_mode)); then
    health=$(curl -fsS --max-time 5 "http://$LB_LISTEN/health") || {
        show_logs
        die "GET http://$LB_LISTEN/health through HAProxy failed"
    }
    say "GET /health through HAProxy: $health"
    exit 0
fi

say "Ctrl-C stops it"
# Until one of the processes exits (then the rest are stopped) or Ctrl-C.
set +e
wait -n "${pids[@]}"
set -e
for i in "${!pids[@]}"; do
    kill -0 "${pids[i]}" 2>/dev/null || say "${names[i]} exited (log: $state/logs/${names[i]}.log)"
done
exit 1
