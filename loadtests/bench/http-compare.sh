#!/usr/bin/env bash
# `just bench`: requests/s and latency of a trivial "hello" served by
#   (a) a bare axum binary — the ceiling,
#   (b) Switchyard serving the standard wasi:http component hello-http,
#   (c) Switchyard serving the typed-handler fixture hello,
#   (d) `wasmtime serve` on the same hello-http, when `wasmtime` is on PATH,
#   (e) (b) and (d) with instance reuse, each keeping an instance for up to
#       128 requests ([components.NAME.reuse] and --max-instance-reuse-count),
#   (f) (b), (d) and (e) on hello-http-p3, the same hello as a wasi:http@0.3
#       component (an async `handler` export writing its body from a task),
#       and (g) both hosts letting one 0.3 instance serve up to 16 requests
#       at once ([components.NAME.reuse] max_concurrent and
#       --max-instance-concurrent-reuse-count). `wasmtime serve` is told the
#       same reuse settings as Switchyard in each row: left to itself it
#       reuses 0.3 instances, 16 requests at a time, even in the fresh row,
# plus (b) with fuel metering off, metrics off and per-request logs off
# (RUST_LOG=warn), and (b) with one dashboard open (a client reading
# /admin/stats/stream throughout), all in one run with
# the same load generator (wrk) and settings. Rounds interleave the servers,
# in an order that rotates, so drift on a shared machine hits each alike; each figure is the median
# over rounds. Besides req/s and latency, each run records the server
# process's CPU time per request (user + system), which a busy shared
# machine disturbs far less than req/s; the costs of fuel, metrics and logs
# are judged on it. Prints a Markdown table and writes it under
# loadtests/results/.
# Traffic stays on loopback; every server is stopped by the PID it got.
#
# Settings (environment): BENCH_DURATION (10s), BENCH_ROUNDS (5),
# BENCH_CONNECTIONS (16), BENCH_THREADS (1 wrk thread). BENCH_BASELINE names
# another switchyard binary (an earlier build, say) to measure beside this
# one: (b) and (c), and (b) with logs off, run on it too, in the same
# rounds, and the table adds the change from it, judged on per-round pairs.
# BENCH_VARIANTS (space-separated names from the list below) runs only
# those. `*-invocations` variants log the line each invocation writes at
# debug (RUST_LOG=info,invocation=debug); builds from before it moved to
# debug write it at info, so their plain variants do.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=loadtests/bench/lib.sh
source loadtests/bench/lib.sh
: "${CARGO_TARGET_DIR:=target}"
switchyard="$CARGO_TARGET_DIR/release/switchyard"
hello_axum="$CARGO_TARGET_DIR/release/hello-axum"
hello_http="$PWD/components/build/hello-http.wasm"
hello_http_p3="$PWD/components/build/hello-http-p3.wasm"
hello_typed="$PWD/components/build/hello.wasm"
command -v wrk >/dev/null || { echo "bench needs wrk (Debian package wrk)" >&2; exit 1; }
for f in "$switchyard" "$hello_axum" "$hello_http" "$hello_http_p3" "$hello_typed"; do
    [ -e "$f" ] || { echo "missing $f: run 'just bench', which builds it" >&2; exit 1; }
done

duration="${BENCH_DURATION:-10s}"
rounds="${BENCH_ROUNDS:-5}"
connections="${BENCH_CONNECTIONS:-16}"
threads="${BENCH_THREADS:-1}"
work=$(mktemp -d)
pid=""
watcher=""
cleanup() {
    if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null || true; fi
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

variants=(axum switchyard-http switchyard-typed switchyard-http-nofuel switchyard-http-nometrics switchyard-http-nolog)
variants+=(switchyard-http-invocations switchyard-http-dashboard switchyard-http-reuse)
variants+=(switchyard-p3 switchyard-p3-reuse switchyard-p3-shared)
baseline="${BENCH_BASELINE:-}"
if [ -n "$baseline" ]; then
    [ -x "$baseline" ] || { echo "BENCH_BASELINE=$baseline is not an executable" >&2; exit 1; }
    variants+=(baseline-http baseline-typed baseline-http-nolog baseline-http-invocations)
fi
if [ -n "${BENCH_VARIANTS:-}" ]; then
    read -r -a variants <<<"$BENCH_VARIANTS"
fi
wasmtime_version=""
if command -v wasmtime >/dev/null; then
    wasmtime_version=$(wasmtime --version)
    variants+=(wasmtime-serve wasmtime-serve-reuse wasmtime-serve-p3 wasmtime-serve-p3-reuse wasmtime-serve-p3-shared)
else
    echo "no wasmtime on PATH: skipping 'wasmtime serve'" \
        "(install it with: cargo install wasmtime-cli --version 48.0.8 --locked)" >&2
fi


# Requests one instance serves in the reuse variants, on both hosts, and
# how many at once in the shared ones.
reuse_count=128
shared_count=16

# The wasi:http component a variant serves: the 0.3 fixture for *-p3*.
http_component() { # $1 = variant
    case "$1" in *-p3*) echo "$hello_http_p3" ;; *) echo "$hello_http" ;; esac
}

# Writes a host config for hello-http (or hello) for the given variant.
switchyard_config() { # $1 = port, $2 = variant
    local fuel=true metrics=true reuse=""
    case "$2" in
        *-nofuel) fuel=false ;;
        *-nometrics) metrics=false ;;
        *-reuse) reuse="[components.hello-http.reuse]
max_requests = $reuse_count" ;;
        *-shared) reuse="[components.hello-http.reuse]
max_requests = $reuse_count
max_concurrent = $shared_count" ;;
    esac
    cat <<TOML
[server]
listen = "127.0.0.1:$1"
[database]
url = "sqlite://$work/$2.db"
[runtime]
fuel_metering = $fuel
[metrics]
enabled = $metrics
[components.hello-http]
path = "$(http_component "$2")"
world = "wasi-http"
$reuse
[components.hello]
path = "$hello_typed"
[[routes]]
method = "*"
path = "/{*path}"
component = "hello-http"
[[routes]]
method = "GET"
path = "/typed/hello"
component = "hello"
TOML
}

# Starts one server; prints the URL to load.
start() { # $1 = variant, $2 = port
    case "$1" in
        axum)
            "$hello_axum" --listen "127.0.0.1:$2" >/dev/null 2>&1 &
            pid=$!; url="http://127.0.0.1:$2/hello" ;;
        wasmtime-serve*)
            # Spelled out: its defaults for 0.3 are not those for 0.2.
            local reuse=(--max-instance-reuse-count 1 --max-instance-concurrent-reuse-count 1)
            case "$1" in
                *-reuse) reuse=(--max-instance-reuse-count "$reuse_count" --max-instance-concurrent-reuse-count 1) ;;
                *-shared) reuse=(--max-instance-reuse-count "$reuse_count" --max-instance-concurrent-reuse-count "$shared_count") ;;
            esac
            wasmtime serve -S cli "${reuse[@]}" --addr "127.0.0.1:$2" "$(http_component "$1")" >/dev/null 2>&1 &
            pid=$!; url="http://127.0.0.1:$2/hello" ;;
        switchyard-* | baseline-*)
            switchyard_config "$2" "$1" > "$work/$1.toml"
            local log=info binary=$switchyard
            case "$1" in *-nolog) log=warn ;; *-invocations) log=info,invocation=debug ;; esac
            case "$1" in baseline-*) binary=$baseline ;; esac
            SWITCHYARD_ADMIN_TOKEN=bench RUST_LOG=$log "$binary" serve --config "$work/$1.toml" >/dev/null 2>&1 &
            pid=$!
            case "$1" in
                *-typed) url="http://127.0.0.1:$2/typed/hello" ;;
                *) url="http://127.0.0.1:$2/hello" ;;
            esac ;;
    esac
    for _ in $(seq 1 200); do
        if curl -sf -o /dev/null "$url"; then
            case "$1" in
                *-dashboard)
                    # What an open dashboard asks for: the snapshot, then the stream.
                    curl -sf -o /dev/null -H "Authorization: Bearer bench" "http://127.0.0.1:$2/admin/stats"
                    curl -sfN -o /dev/null -H "Authorization: Bearer bench" "http://127.0.0.1:$2/admin/stats/stream" &
                    watcher=$! ;;
            esac
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "$1 exited while starting" >&2; return 1; }
        sleep 0.05
    done
    echo "$1 did not answer $url" >&2
    return 1
}

stop() {
    if [ -n "$watcher" ]; then
        kill "$watcher" 2>/dev/null || true
        wait "$watcher" 2>/dev/null || true
        watcher=""
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}


# One measurement: prints "variant round rps p50_us p99_us errors cpu_us_per_request".
measure() { # $1 = variant, $2 = round
    local port out before after
    port=$(free_port)
    start "$1" "$port"
    wrk -t"$threads" -c"$connections" -d2s "$url" >/dev/null # warm-up
    before=$(cpu_ticks "$pid")
    out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency "$url")
    after=$(cpu_ticks "$pid")
    stop
    WRK_OUTPUT="$out" CPU_TICKS=$((after - before)) TICKS_PER_SECOND=$(getconf CLK_TCK) python3 - "$1" "$2" <<'PY'
import os, re, sys
out = os.environ["WRK_OUTPUT"]
requests = int(re.search(r"(\d+) requests in", out).group(1))
cpu_us = int(os.environ["CPU_TICKS"]) / int(os.environ["TICKS_PER_SECOND"]) * 1e6 / max(requests, 1)
def us(v):
    n, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
# Anything but a 2xx, and any socket error, is a failed request.
non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
print(sys.argv[1], sys.argv[2], rps, p50, p99, errors, cpu_us)
PY
}

mkdir -p loadtests/results
samples="$work/samples"
# Each round starts one variant later, so no variant always runs first or
# right after the same neighbour.
count=${#variants[@]}
for round in $(seq 1 "$rounds"); do
    for i in $(seq 0 $((count - 1))); do
        variant=${variants[$(((i + round - 1) % count))]}
        echo "round $round/$rounds: $variant" >&2
        measure "$variant" "$round" >> "$samples"
    done
done

report="loadtests/results/bench-$(date -u +%Y%m%d-%H%M%S).md"
python3 - "$samples" "$duration" "$rounds" "$connections" "$threads" "$wasmtime_version" "$(nproc)" "$reuse_count" <<'PY' | tee "$report"
import statistics, sys
from collections import defaultdict
path, duration, rounds, connections, threads, wasmtime_version, cores, reuse_count = sys.argv[1:]
runs = defaultdict(list)
by_round = defaultdict(dict)  # variant → round → (rps, cpu)
for line in open(path):
    name, round_, rps, p50, p99, errors, cpu = line.split()
    runs[name].append((float(rps), float(p50), float(p99), int(errors), float(cpu)))
    by_round[name][round_] = (float(rps), float(cpu))
med = {
    n: tuple(statistics.median(r[i] for r in rs) for i in range(3)) + (sum(r[3] for r in rs), statistics.median(r[4] for r in rs))
    for n, rs in runs.items()
}
labels = {
    "axum": "(a) bare axum hello",
    "switchyard-http": "(b) Switchyard, hello-http (wasi:http)",
    "switchyard-typed": "(c) Switchyard, hello (typed handler)",
    "wasmtime-serve": "(d) wasmtime serve, hello-http",
    "switchyard-http-reuse": "(e) Switchyard, hello-http, instances reused",
    "wasmtime-serve-reuse": "(e′) wasmtime serve, hello-http, instances reused",
    "switchyard-p3": "(f) Switchyard, hello-http-p3 (wasi:http@0.3)",
    "wasmtime-serve-p3": "(f′) wasmtime serve, hello-http-p3",
    "switchyard-p3-reuse": "(f) Switchyard, hello-http-p3, instances reused",
    "wasmtime-serve-p3-reuse": "(f′) wasmtime serve, hello-http-p3, instances reused",
    "switchyard-p3-shared": "(g) Switchyard, hello-http-p3, up to 16 requests at once per instance",
    "wasmtime-serve-p3-shared": "(g′) wasmtime serve, hello-http-p3, up to 16 requests at once per instance",
    "switchyard-http-nofuel": "(b) with fuel metering off",
    "switchyard-http-nometrics": "(b) with metrics off",
    "switchyard-http-nolog": "(b) with logs off (RUST_LOG=warn)",
    "switchyard-http-invocations": "(b) with a log line per invocation",
    "switchyard-http-dashboard": "(b) with one dashboard open",
    "baseline-http": "(b′) baseline build, hello-http",
    "baseline-typed": "(c′) baseline build, hello",
    "baseline-http-nolog": "(b′) baseline build, logs off",
    "baseline-http-invocations": "(b′) baseline build, a log line per invocation",
}
def ms(us): return f"{us / 1000:.2f} ms"
def ratio(n, base):
    return f"{med[n][0] / med[base][0]:.2f}×" if base in med else "–"
print(f"wrk, {threads} thread, {connections} connections, {duration} per run, median of {rounds} rounds, {cores} cores shared by load generator and server.")
if wasmtime_version: print(f"`{wasmtime_version}`.")
print()
# Each row is compared with wasmtime serve under the same reuse settings.
peer = {
    n: ("wasmtime-serve-p3" if "-p3" in n else "wasmtime-serve")
    + next((s for s in ("-reuse", "-shared") if n.endswith(s)), "")
    for n in labels
}
print("| server | req/s | p50 | p99 | vs (a) | vs wasmtime serve, same reuse | server CPU per request | errors | runs (req/s) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for n in labels:
    if n not in med: continue
    rps, p50, p99, errors, cpu = med[n]
    print(f"| {labels[n]} | {rps:,.0f} | {ms(p50)} | {ms(p99)} | {ratio(n, 'axum')} | {ratio(n, peer[n])} | {cpu:.0f} µs | {errors} | {', '.join(f'{r[0]:,.0f}' for r in runs[n])} |")
print()
# (ours, wasmtime serve's, what, goal against wasmtime serve, goal against axum)
for ours, theirs, what, vs_peer, vs_axum in (
    ("switchyard-http", "wasmtime-serve", "hello-http, a fresh instance per request", 2.5, 0.3),
    ("switchyard-http-reuse", "wasmtime-serve-reuse", f"hello-http, instances reused ({reuse_count} requests each)", 1.5, 0.5),
    # No goal is set for 0.3 yet: the figures are reported as they are.
    ("switchyard-p3", "wasmtime-serve-p3", "hello-http-p3, a fresh instance per request", None, None),
    ("switchyard-p3-reuse", "wasmtime-serve-p3-reuse", f"hello-http-p3, instances reused ({reuse_count} requests each)", None, None),
    ("switchyard-p3-shared", "wasmtime-serve-p3-shared", f"hello-http-p3, instances shared (up to 16 requests at once, {reuse_count} each)", None, None),
):
    b = med.get(ours)
    if not b: continue
    if theirs in med:
        d = med[theirs]
        ok = vs_peer is not None and b[0] >= vs_peer * d[0] and b[2] <= d[2]
        goal = "" if vs_peer is None else f" — goal ≥ {vs_peer}× with p99 no worse: {'met' if ok else 'NOT met'}"
        print(f"- {what}, vs wasmtime serve: {b[0] / d[0]:.2f}× the req/s, p99 {ms(b[2])} vs {ms(d[2])}, CPU per request {b[4]:.0f} vs {d[4]:.0f} µs{goal}")
    else:
        print(f"- {what}, vs wasmtime serve: not measured (no wasmtime on PATH)")
    if "axum" in med:
        a = med["axum"]
        goal = "" if vs_axum is None else f" — goal ≥ {vs_axum}×: {'met' if b[0] >= vs_axum * a[0] else 'NOT met'}"
        print(f"- {what}, vs bare axum: {b[0] / a[0]:.2f}×{goal}")
def cost(variant, base="switchyard-http"):
    """(% more server CPU per request, % fewer req/s) of `base` against a
    variant without something: the median over rounds of each round's pair,
    which a machine whose speed drifts between rounds disturbs far less than
    a ratio of medians."""
    pairs = [(by_round[base][r], w) for r, w in by_round[variant].items() if r in by_round[base]]
    cpu = statistics.median(100 * (with_[1] - without[1]) / without[1] for with_, without in pairs)
    rps = statistics.median(100 * (without[0] - with_[0]) / without[0] for with_, without in pairs)
    return cpu, rps
def both(*names):
    return all(n in by_round for n in names)
if both("switchyard-http", "switchyard-http-nofuel"):
    fuel_cpu, fuel_rps = cost("switchyard-http-nofuel")
    print(f"- cost of fuel metering (median of per-round pairs): {fuel_cpu:.1f} % CPU per request ({fuel_rps:.1f} % of req/s) — goal ≤ 5 %: {'met' if fuel_cpu <= 5 else 'NOT met'}")
# (with, without, what it costs, goal in % of req/s or None)
for base, variant, what, max_rps in (
    ("switchyard-http", "switchyard-http-nometrics", "metrics", None),
    ("switchyard-http", "switchyard-http-nolog", "the default logs", None),
    ("switchyard-http-invocations", "switchyard-http", "a log line per invocation", None),
    ("switchyard-http-dashboard", "switchyard-http", "one open dashboard", 1.0),
):
    if both(base, variant):
        cpu, rps = cost(variant, base)
        goal = "" if max_rps is None else f" — goal ≤ {max_rps:g} % of req/s: {'met' if rps <= max_rps else 'NOT met'}"
        print(f"- cost of {what}: {cpu:.1f} % CPU per request ({rps:.1f} % of req/s){goal}")
for current, old, what in (
    ("switchyard-http", "baseline-http", "hello-http, each build's default logs"),
    ("switchyard-http-invocations", "baseline-http-invocations", "hello-http, a log line per invocation"),
    ("switchyard-http-nolog", "baseline-http-nolog", "hello-http, logs off"),
    ("switchyard-typed", "baseline-typed", "typed hello, each build's default logs"),
):
    if both(current, old):
        cpu, rps = cost(old, current)
        print(f"- this build against the baseline, {what} (median of per-round pairs): {cpu:+.1f} % CPU per request, {-rps:+.1f} % req/s")
if any(m[3] for m in med.values()):
    print("- **some requests failed**: see the errors column")
PY
echo "written to $report" >&2
