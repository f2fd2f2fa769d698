#!/usr/bin/env bash
# `just bench-orders`: the knee of the order path, Switchyard against a
# native baseline (issue 20). Two servers answer the same order API:
#   (a) orders-native, plain axum + sqlx, the same work per order without wasm,
#   (b) Switchyard serving switchyard.toml's reference app, its connectors
#       delivering to the provider simulator while the load runs.
# Each is loaded by the project's own generator (`loadtest baseline --target`:
# open model, orders only, a fresh Idempotency-Key per order) at rising
# rates, a bounded step each, until a step breaks p95 < 50 ms or < 0.1 %
# errors (5xx, failures, and requests the generator could not send in
# time); the knee is the last rate that held. Latency is measured from each
# request's intended start, so a server that falls behind is not flattered.
# Rounds interleave the servers, native first then Switchyard, each on a
# fresh database; figures are medians over rounds. Server CPU per request is
# user + system time of the server process over the knee's step (for
# Switchyard it includes delivering that step's outbox messages). For
# Switchyard, the outbox backlog (PENDING messages) is read from the admin
# API as each step's load ends: whether delivery keeps up. SQLite
# always; PostgreSQL too when DATABASE_URL is set (a fresh database per
# server and round, created and dropped with psql). Prints a Markdown table
# and writes it under loadtests/results/. Traffic stays on loopback; every
# process is stopped by the PID it got.
#
# Settings (environment): BENCH_RATES (requests/s, ascending: "200 300 400
# 500 600 800 1000 1500 2000 3000"), BENCH_STEP (8s per rate),
# BENCH_ROUNDS (2), BENCH_DATABASES ("sqlite", plus "postgres" when
# DATABASE_URL is set).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=loadtests/bench/lib.sh
source loadtests/bench/lib.sh
: "${CARGO_TARGET_DIR:=target}"
bin="$CARGO_TARGET_DIR/release"
for f in "$bin/switchyard" "$bin/orders-native" "$bin/loadtest" "$bin/provider-simulator" components/build/order-handler.wasm; do
    [ -e "$f" ] || { echo "missing $f: run 'just bench-orders', which builds it" >&2; exit 1; }
done

read -r -a rates <<<"${BENCH_RATES:-200 300 400 500 600 800 1000 1500 2000 3000}"
step="${BENCH_STEP:-8s}"
rounds="${BENCH_ROUNDS:-2}"
default_databases=sqlite
[ -n "${DATABASE_URL:-}" ] && default_databases="sqlite postgres"
read -r -a databases <<<"${BENCH_DATABASES:-$default_databases}"
for db in "${databases[@]}"; do
    if [ "$db" = postgres ]; then
        [ -n "${DATABASE_URL:-}" ] || { echo "postgres needs DATABASE_URL" >&2; exit 1; }
        command -v psql >/dev/null || { echo "postgres needs psql (Debian package postgresql-client)" >&2; exit 1; }
    fi
done
p95_limit_ms=50
error_limit=0.001

work=$(mktemp -d)
pid=""
simulator=""
pg_database=""
drop_pg_database() {
    if [ -n "$pg_database" ]; then
        psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $pg_database WITH (FORCE)" >/dev/null 2>&1 || true
        pg_database=""
    fi
}
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    if [ -n "$simulator" ]; then kill "$simulator" 2>/dev/null || true; fi
    drop_pg_database
    rm -rf "$work"
}
trap cleanup EXIT


# One simulator for the whole run: Switchyard's connectors deliver to it.
sim_port=$(free_port)
sim_control=$(free_port)
"$bin/provider-simulator" --listen "127.0.0.1:$sim_port" --control "127.0.0.1:$sim_control" >/dev/null 2>&1 &
simulator=$!

# The reference app, moved: absolute component paths, connectors to the simulator.
sed -e "s|\"components/build/|\"$PWD/components/build/|" -e "s|127.0.0.1:9090|127.0.0.1:$sim_port|g" \
    switchyard.toml > "$work/switchyard.toml"

# A fresh database for one server, its URL in $url.
fresh_database() { # $1 = sqlite|postgres, $2 = a name
    case "$1" in
        sqlite) url="sqlite://$work/$2.db" ;;
        postgres)
            pg_database="bench_orders_${2//-/_}_$$"
            psql -q "$DATABASE_URL" -c "CREATE DATABASE $pg_database" >/dev/null
            url="${DATABASE_URL%/*}/$pg_database" ;;
    esac
}

start() { # $1 = server, $2 = port, $3 = database url
    case "$1" in
        native) "$bin/orders-native" --listen "127.0.0.1:$2" --database-url "$3" >/dev/null 2>&1 & ;;
        switchyard)
            SWITCHYARD_ADMIN_TOKEN=bench "$bin/switchyard" serve --config "$work/switchyard.toml" \
                --listen "127.0.0.1:$2" --database-url "$3" >/dev/null 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 1 400); do
        if curl -s -o /dev/null "http://127.0.0.1:$2/orders/ord_0"; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { echo "$1 exited while starting" >&2; return 1; }
        sleep 0.05
    done
    echo "$1 did not answer on port $2" >&2
    return 1
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}


# PENDING outbox messages on Switchyard; "-" for the native server, which has no delivery.
backlog() { # $1 = server, $2 = port
    [ "$1" = switchyard ] || { echo -; return; }
    curl -sf -H "Authorization: Bearer bench" "http://127.0.0.1:$2/admin/outbox?limit=1" |
        python3 -c 'import json, sys; print(sum(c["count"] for c in json.load(sys.stdin)["counts"] if c["status"].upper() == "PENDING"))' ||
        echo "?"
}

# One step at one rate; prints "rps p50 p95 p99 error_rate requests cpu_us backlog" or fails.
step_at() { # $1 = port, $2 = rate, $3 = results dir, $4 = server
    local before after pending
    before=$(cpu_ticks "$pid")
    # Thresholds are judged below; these only keep the exit status quiet.
    "$bin/loadtest" baseline --target "http://127.0.0.1:$1" --rate "$2" --duration "$step" \
        --max-error-rate 1 --max-p99-ms 1e9 --results-dir "$3" >/dev/null 2>"$3.log" || true
    after=$(cpu_ticks "$pid")
    pending=$(backlog "$4" "$1")
    step_figures "$3" $((after - before)) "$pending"
}

# Steps one server up the rates; prints "db server round knee rps p50 p95 p99 errors cpu backlog broke_at".
knee() { # $1 = db, $2 = server, $3 = round
    local port knee_line="" broke="-" out
    port=$(free_port)
    fresh_database "$1" "$2-$3"
    start "$2" "$port" "$url"
    for rate in "${rates[@]}"; do
        out=$(step_at "$port" "$rate" "$work/lt-$1-$2-$3-$rate" "$2") || { broke="$rate(no summary)"; break; }
        read -r rps p50 p95 p99 errors _requests cpu pending <<<"$out"
        echo "  $2 at $rate/s: $rps req/s, p95 $p95 ms, errors $errors, $cpu µs CPU/request, outbox backlog $pending" >&2
        if python3 -c "import sys; sys.exit(0 if $p95 < $p95_limit_ms and $errors < $error_limit else 1)"; then
            knee_line="$rate $rps $p50 $p95 $p99 $errors $cpu $pending"
        else
            broke="$rate"
            break
        fi
    done
    stop
    [ "$1" = postgres ] && drop_pg_database
    [ -n "$knee_line" ] || knee_line="0 0 0 0 0 0 0 -"
    echo "$1 $2 $3 $knee_line $broke"
}

mkdir -p loadtests/results
samples="$work/samples"
for round in $(seq 1 "$rounds"); do
    for db in "${databases[@]}"; do
        for server in native switchyard; do
            echo "round $round/$rounds: $server on $db" >&2
            knee "$db" "$server" "$round" >> "$samples"
        done
    done
done

report="loadtests/results/bench-orders-$(date -u +%Y%m%d-%H%M%S).md"
python3 - "$samples" "$step" "$rounds" "$(nproc)" "${rates[*]}" <<'PY' | tee "$report"
import statistics, sys
from collections import defaultdict
path, step, rounds, cores, rates = sys.argv[1:]
runs = defaultdict(list)  # (db, server) → [(knee, rps, p50, p95, p99, errors, cpu, broke, backlog)]
for line in open(path):
    db, server, _round, *figures, backlog, broke = line.split()
    runs[(db, server)].append(tuple(float(f) for f in figures) + (broke, backlog))
def med(db, server, i):
    return statistics.median(r[i] for r in runs[(db, server)])
print(f"`loadtest baseline --target` (open model, orders only), rates {rates} req/s, {step} per step, "
      f"median of {rounds} rounds, {cores} cores shared by load generator, servers and simulator. "
      "Knee: the highest rate with p95 < 50 ms and < 0.1 % errors; figures at the knee.")
print()
print("| database | server | knee (req/s offered) | achieved req/s | p50 | p95 | p99 | server CPU per request | knees per round | first rate that broke | outbox backlog after the knee's step |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|---|---|")
top = float(rates.split()[-1])
names = {"native": "(a) orders-native (axum + sqlx)", "switchyard": "(b) Switchyard, reference app, delivery on"}
dbs = sorted({db for db, _ in runs}, key=lambda d: d != "sqlite")
for db in dbs:
    for server in ("native", "switchyard"):
        if (db, server) not in runs: continue
        rs = runs[(db, server)]
        print(f"| {db} | {names[server]} | {med(db, server, 0):,.0f} | {med(db, server, 1):,.0f} | "
              f"{med(db, server, 2):.1f} ms | {med(db, server, 3):.1f} ms | {med(db, server, 4):.1f} ms | "
              f"{med(db, server, 6):,.0f} µs | {', '.join(f'{r[0]:,.0f}' for r in rs)} | {', '.join(r[7] for r in rs)} | {', '.join(r[8] for r in rs)} |")
print()
for db in dbs:
    if (db, "native") not in runs or (db, "switchyard") not in runs: continue
    native, ours = med(db, "native", 0), med(db, "switchyard", 0)
    ratio = ours / native if native else 0.0
    cpu_ratio = med(db, "switchyard", 6) / med(db, "native", 6) if med(db, "native", 6) else 0.0
    # A native knee at the highest rate tried is only a lower bound, so the ratio is an upper one.
    verdict = "met" if ratio >= 0.5 else "NOT met"
    if native >= top and ratio >= 0.5:
        verdict = f"not decided (native held {top:,.0f} req/s, the highest rate tried: the ratio is at most this)"
    print(f"- {db}: Switchyard / native knee {ratio:.2f}× (CPU per request {cpu_ratio:.1f}× native's) "
          f"— goal ≥ 0.5×: {verdict}")
    if db == "sqlite":
        print(f"- sqlite: Switchyard's knee {ours:,.0f} req/s — goal ≥ 1,500 at p95 < 50 ms: "
              f"{'met' if ours >= 1500 else 'NOT met'} (stretch 3,000: {'met' if ours >= 3000 else 'NOT met'})")
if any(r[0] >= top for rs in runs.values() for r in rs):
    print(f"- some server held the highest rate tried ({top:,.0f} req/s): its knee is at least that; raise BENCH_RATES")
PY
echo "written to $report" >&2
