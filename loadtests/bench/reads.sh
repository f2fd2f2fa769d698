#!/usr/bin/env bash
# `just bench-reads`: what reading first saves (issue 20's read-only units of
# work). Switchyard serves switchyard.toml's reference app (delivery off: the
# messages wait PENDING) while two wrk clients load it at once:
#   - readers: wrk, 16 connections of `GET /orders/{id}` for one order, each
#     sending its next request when the last is answered;
#   - writers: the project's generator (`loadtest baseline --target`: open
#     model, orders only) at a fixed rate, so a change in the orders'
#     latency shows what reading first does to writers;
# then, on the same server, `loadtest mixed` (orders, reads and restocks,
# 55 % reads, open model) at a fixed rate: the latency a realistic mix sees
# when neither side can take more than its share.
# Two variants of the same binary, in the same rounds: `[runtime]
# read_first = true` (a GET's unit of work begins as a read transaction) and
# `false` (every unit of work begins as a writer: on SQLite behind the
# one-permit write gate, on PostgreSQL with FOR UPDATE on every read).
# Rounds alternate which variant runs first. Each figure is the median over
# rounds; the change is the median of per-round pairs. Server CPU per request
# is user + system time of the server over all requests, GET and POST.
# SQLite always; PostgreSQL too when DATABASE_URL is set (a fresh database
# per run, created and dropped with psql). Prints a Markdown table and writes
# it under loadtests/results/. Traffic stays on loopback; every process is
# stopped by the PID it got.
#
# Settings (environment): BENCH_DURATION (10s), BENCH_ROUNDS (3),
# BENCH_ORDER_RATE (200 orders/s), BENCH_MIXED_RATE (600 requests/s),
# BENCH_DATABASES ("sqlite", plus
# "postgres" when DATABASE_URL is set).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=loadtests/bench/lib.sh
source loadtests/bench/lib.sh
: "${CARGO_TARGET_DIR:=target}"
switchyard="$CARGO_TARGET_DIR/release/switchyard"
loadtest="$CARGO_TARGET_DIR/release/loadtest"
for f in "$switchyard" "$loadtest"; do
    [ -x "$f" ] || { echo "missing $f: run 'just bench-reads', which builds it" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "bench-reads needs wrk (Debian package wrk)" >&2; exit 1; }
components=$(bench_components_dir) || { echo "no built components: run 'just components'" >&2; exit 1; }

duration="${BENCH_DURATION:-10s}"
rounds="${BENCH_ROUNDS:-3}"
order_rate="${BENCH_ORDER_RATE:-200}"
mixed_rate="${BENCH_MIXED_RATE:-600}"
default_databases=sqlite
[ -n "${DATABASE_URL:-}" ] && default_databases="sqlite postgres"
read -r -a databases <<<"${BENCH_DATABASES:-$default_databases}"
work=$(mktemp -d)
pid=""
pg_database=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    if [ -n "$pg_database" ]; then pg_drop_database "$pg_database" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The order whose GETs are measured.
order='{"customer":"Ada Lovelace","email":"ada@example.com","phone":"+44 20 7946 0000","items":[{"sku":"widget","qty":1}]}'

# One run: prints "database variant round get_rps get_p50_us get_p99_us
# order_rps order_p50_ms order_p95_ms order_p99_ms errors cpu_us_per_request".
measure() { # $1 = database, $2 = variant (read-first | write-first), $3 = round
    local port url database_url read_first=true
    [ "$2" = write-first ] && read_first=false
    port=$(free_port)
    url="http://127.0.0.1:$port"
    case "$1" in
        sqlite) database_url="sqlite://$work/$2-$3.db" ;;
        postgres)
            pg_database="switchyard_reads_$$_$3"
            database_url=$(pg_create_database "$pg_database") ;;
    esac
    reference_config "$components" 9 \
        | sed -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" -e "s|^url = \"sqlite://switchyard.db\"|url = \"$database_url\"|" \
        > "$work/switchyard.toml"
    printf '\n[runtime]\nread_first = %s\n' "$read_first" >> "$work/switchyard.toml"
    sed -i 's/^\[outbox\]$/[outbox]\ndispatch = false/' "$work/switchyard.toml"
    SWITCHYARD_ADMIN_TOKEN=bench RUST_LOG=warn "$switchyard" serve --config "$work/switchyard.toml" >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null "$url/health/ready" && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "switchyard exited while starting" >&2; return 1; }
        sleep 0.05
    done
    curl -sf -o /dev/null -X PUT -H 'content-type: application/json' \
        -d '{"stock": 1000000000, "price_cents": 100}' "$url/inventory/widget"
    local id
    id=$(curl -sf -X POST -H 'content-type: application/json' -d "$order" \
        "$url/orders" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    wrk -t1 -c4 -d2s "$url/orders/$id" >/dev/null # warm-up
    local before after reads writes
    before=$(cpu_ticks "$pid")
    rm -rf "$work/orders"
    "$loadtest" baseline --target "$url" --rate "$order_rate" --duration "$duration" \
        --max-error-rate 1 --max-p99-ms 1e9 --results-dir "$work/orders" >/dev/null 2>"$work/orders.log" &
    writes=$!
    reads=$(wrk -t1 -c16 -d"$duration" --latency "$url/orders/$id")
    wait "$writes" || true
    after=$(cpu_ticks "$pid")
    # The realistic mix at a fixed rate, on the same server.
    local mixed_before mixed_after
    rm -rf "$work/mixed"
    mixed_before=$(cpu_ticks "$pid")
    "$loadtest" mixed --target "$url" --rate "$mixed_rate" --duration "$duration" \
        --max-error-rate 1 --max-p99-ms 1e9 --results-dir "$work/mixed" >/dev/null 2>"$work/mixed.log" || true
    mixed_after=$(cpu_ticks "$pid")
    CPU_TICKS=$((mixed_after - mixed_before)) TICKS_PER_SECOND=$(getconf CLK_TCK) \
        python3 - "$1" "$2" "$3" "$work/mixed" >> "$work/mixed-samples" <<'PY'
import glob, json, os, sys
s = json.load(open(glob.glob(os.path.join(sys.argv[4], "*", "summary.json"))[0]))
def p95(endpoint, status):
    found = [g["latency"]["p95_ms"] for g in s["groups"] if g["endpoint"] == endpoint and g["status"] == status]
    return found[0] if found else float("nan")
cpu_us = int(os.environ["CPU_TICKS"]) / int(os.environ["TICKS_PER_SECOND"]) * 1e6 / max(s["requests"], 1)
print(*sys.argv[1:4], s["achieved_rps"], s["latency"]["p95_ms"], s["latency"]["p99_ms"],
      p95("GET /orders/{id}", "200"), p95("POST /orders", "201"), s["errors"], cpu_us)
PY
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
    if [ "$1" = postgres ]; then pg_drop_database "$pg_database"; pg_database=""; fi
    READS="$reads" CPU_TICKS=$((after - before)) TICKS_PER_SECOND=$(getconf CLK_TCK) \
        python3 - "$1" "$2" "$3" "$work/orders" <<'PY'
import glob, json, os, re, sys
def parse(out):
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return requests, rps, errors
def us(v):
    n, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
reads = os.environ["READS"]
get_n, get_rps, get_errors = parse(reads)
p50 = us(re.search(r"^\s+50%\s+(\S+)", reads, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", reads, re.M).group(1))
orders = json.load(open(glob.glob(os.path.join(sys.argv[4], "*", "summary.json"))[0]))
latency = orders["latency"]
order_errors = round(orders["error_rate"] * orders["requests"])
cpu_us = int(os.environ["CPU_TICKS"]) / int(os.environ["TICKS_PER_SECOND"]) * 1e6 / max(get_n + orders["requests"], 1)
print(*sys.argv[1:4], get_rps, p50, p99, orders["achieved_rps"], latency["p50_ms"], latency["p95_ms"], latency["p99_ms"],
      get_errors + order_errors, cpu_us)
PY
}

mkdir -p loadtests/results
samples="$work/samples"
for round in $(seq 1 "$rounds"); do
    for db in "${databases[@]}"; do
        sequence=(read-first write-first)
        [ $((round % 2)) -eq 0 ] && sequence=(write-first read-first)
        for variant in "${sequence[@]}"; do
            echo "round $round/$rounds: $db, $variant" >&2
            measure "$db" "$variant" "$round" >> "$samples"
        done
    done
done

report="loadtests/results/bench-reads-$(date -u +%Y%m%d-%H%M%S).md"
python3 - "$samples" "$duration" "$rounds" "$(nproc)" "$order_rate" "$work/mixed-samples" "$mixed_rate" <<'PY' | tee "$report"
import statistics, sys
from collections import defaultdict
path, duration, rounds, cores, order_rate, mixed_path, mixed_rate = sys.argv[1:]
runs = defaultdict(list)
by_round = defaultdict(dict)
for line in open(path):
    db, variant, round_, get_rps, p50, p99, order_rps, o50, o95, o99, errors, cpu = line.split()
    row = (float(get_rps), float(p50), float(p99), float(order_rps), float(o50), float(o95), float(o99), int(errors), float(cpu))
    runs[(db, variant)].append(row)
    by_round[(db, variant)][round_] = row
print(f"wrk: 16 connections of GET /orders/{{id}}, and at once `loadtest baseline` posting orders at {order_rate}/s (open model); "
      f"{duration} per run, median of {rounds} rounds, {cores} cores shared by load generators and server.")
print()
print("| database | GET's unit of work | GET req/s | GET p50 | GET p99 | orders/s | order p50 | order p95 | order p99 | server CPU per request | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (db, variant), rs in sorted(runs.items()):
    m = [statistics.median(r[i] for r in rs) for i in range(9)]
    errors = sum(r[7] for r in rs)
    print(f"| {db} | {variant} | {m[0]:,.0f} | {m[1] / 1000:.2f} ms | {m[2] / 1000:.2f} ms | {m[3]:,.0f} | {m[4]:.2f} ms | {m[5]:.2f} ms | {m[6]:.2f} ms | {m[8]:.0f} µs | {errors} |")
print()
def changes(rounds_of):
    """Per database, the change (%) of column i reading first against
    beginning as a writer: the median of per-round pairs."""
    for db in sorted({db for db, _ in rounds_of}):
        new, old = rounds_of.get((db, "read-first"), {}), rounds_of.get((db, "write-first"), {})
        pairs = [(new[r], old[r]) for r in new if r in old]
        if pairs:
            yield db, lambda i, pairs=pairs: statistics.median(100 * (a[i] - b[i]) / b[i] for a, b in pairs)
for db, change in changes(by_round):
    print(f"- {db}, reading first against beginning as a writer (median of per-round pairs): GET req/s {change(0):+.1f} %, "
          f"GET p99 {change(2):+.1f} %, order p95 {change(5):+.1f} %, CPU per request {change(8):+.1f} %")
if any(r[7] for rs in runs.values() for r in rs):
    print("- **some requests failed**: see the errors column")
mixed = defaultdict(list)
mixed_rounds = defaultdict(dict)
for line in open(mixed_path):
    db, variant, round_, *values = line.split()
    row = tuple(float(v) for v in values)
    mixed[(db, variant)].append(row)
    mixed_rounds[(db, variant)][round_] = row
print()
print(f"`loadtest mixed` (55 % reads, 35 % orders, 10 % restocks; open model) at {mixed_rate} requests/s, {duration} per run, on the same servers:")
print()
print("| database | GET's unit of work | req/s | p95 | p99 | GET /orders/{id} p95 | POST /orders (201) p95 | server CPU per request | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for (db, variant), rs in sorted(mixed.items()):
    m = [statistics.median(r[i] for r in rs) for i in range(7)]
    print(f"| {db} | {variant} | {m[0]:,.0f} | {m[1]:.2f} ms | {m[2]:.2f} ms | {m[3]:.2f} ms | {m[4]:.2f} ms | {m[6]:.0f} µs | {sum(r[5] for r in rs):.0f} |")
print()
for db, change in changes(mixed_rounds):
    print(f"- {db}, mixed, reading first against beginning as a writer (median of per-round pairs): p95 {change(1):+.1f} %, "
          f"GET p95 {change(3):+.1f} %, order p95 {change(4):+.1f} %, CPU per request {change(6):+.1f} %")
PY
echo "written to $report" >&2
