#!/usr/bin/env bash
# `just bench-cluster`: how fast a deploy reaches every replica. Three
# replicas of the reference app share one PostgreSQL database (a fresh one,
# created and dropped with psql); the generated config also serves the
# `hello` fixture on GET /hello. The script then deploys `hello`
# CONVERGE_DEPLOYS times, each a distinct build (the fixture with a wasm
# custom section appended, as loadtests/src/variant.rs makes them: same
# code, a new digest, so every replica compiles it), deploy i through
# replica i mod 3 (PUT /admin/components/hello with curl). For each deploy
# it measures the time from the deploy's 200 answer until all three replicas
# answer GET /hello with `x-switchyard-version` equal to the version that
# answer names, polling the three over keep-alive connections every
# CONVERGE_POLL_MS (each deploy bounded to 30 s; one that does not converge
# counts as a failure). Goal: every replica serves the new version within
# 500 ms (p99) of the deploy's 200. Prints a Markdown table and writes it
# under loadtests/results/. Traffic stays on loopback; every process is
# stopped by the PID it got.
#
# Settings (environment): DATABASE_URL (required: a PostgreSQL server URL
# whose role may create databases), CONVERGE_DEPLOYS (50),
# CONVERGE_POLL_MS (2), BENCH_PROFILE (release; debug works too),
# CARGO_TARGET_DIR (target), SWITCHYARD_COMPONENTS_DIR (components/build).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=loadtests/bench/lib.sh
source loadtests/bench/lib.sh
bin=$(bench_bin_dir)
components=$(bench_components_dir) || { echo "no components directory: run 'just components'" >&2; exit 1; }
for f in "$bin/switchyard" "$bin/provider-simulator" "$components/order-handler.wasm" "$components/hello.wasm"; do
    [ -e "$f" ] || { echo "missing $f: run 'just bench-cluster', which builds it" >&2; exit 1; }
done
[ -n "${DATABASE_URL:-}" ] || { echo "bench-cluster needs DATABASE_URL (a PostgreSQL server)" >&2; exit 1; }
command -v psql >/dev/null || { echo "bench-cluster needs psql (Debian package postgresql-client)" >&2; exit 1; }

deploys="${CONVERGE_DEPLOYS:-50}"
poll_ms="${CONVERGE_POLL_MS:-2}"
replicas=3
goal_ms=500

work=$(mktemp -d)
replica_pids=()
replica_ports=()
simulator=""
pg_database=""
cleanup() {
    stop_replicas
    if [ -n "$simulator" ]; then stop_pid "$simulator"; fi
    if [ -n "$pg_database" ]; then pg_drop_database "$pg_database"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The order handler's connectors need somewhere to deliver, or the
# replicas' dispatchers would only log failures.
sim_port=$(free_port)
sim_control=$(free_port)
"$bin/provider-simulator" --listen "127.0.0.1:$sim_port" --control "127.0.0.1:$sim_control" >"$work/simulator.log" 2>&1 &
simulator=$!

# The reference app, plus the hello fixture when switchyard.toml lacks it.
reference_config "$components" "$sim_port" > "$work/switchyard.toml"
if ! grep -q '^\[components\.hello\]' "$work/switchyard.toml"; then
    cat >> "$work/switchyard.toml" <<TOML

[components.hello]
path = "$components/hello.wasm"

[[routes]]
method = "GET"
path = "/hello"
component = "hello"
TOML
fi

pg_database="bench_converge_$$"
url=$(pg_create_database "$pg_database")
for i in $(seq 1 "$replicas"); do
    echo "starting replica-$i" >&2
    start_replica "$bin" "$work/switchyard.toml" "$url" "replica-$i" "$work/replica-$i.log"
done

samples="$work/samples"
# Other work on the machine moves every figure here; the report says how busy it was.
load_before=$(cut -d' ' -f1 /proc/loadavg)
echo "deploying hello $deploys times, deploy i through replica i mod $replicas" >&2
python3 - "$components/hello.wasm" "$work" "$deploys" "$poll_ms" "${replica_ports[@]}" > "$samples" <<'PY'
import http.client, json, os, subprocess, sys, time

wasm_path, work, deploys, poll_ms, *ports = sys.argv[1:]
deploys, poll = int(deploys), float(poll_ms) / 1000
original = open(wasm_path, "rb").read()
BOUND_S = 30.0

def leb128(value):
    """Unsigned LEB128: seven bits per byte, low first, high bit = more follows."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)

def with_custom_section(wasm, name, payload):
    """`wasm` with a custom section (id 0) appended: size, then name length, name, payload."""
    content = leb128(len(name)) + name + payload
    return wasm + b"\x00" + leb128(len(content)) + content

class Replica:
    """One keep-alive connection to a replica; reopened after any error."""
    def __init__(self, port):
        self.port = int(port)
        self.conn = None

    def version(self):
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.conn.request("GET", "/hello")
            response = self.conn.getresponse()
            response.read()
            return response.getheader("x-switchyard-version") if response.status == 200 else None
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None

replicas = [Replica(p) for p in ports]
# Every replica serves hello before the first deploy.
for r in replicas:
    deadline = time.monotonic() + BOUND_S
    while r.version() is None:
        if time.monotonic() > deadline:
            sys.exit(f"replica on port {r.port} does not serve GET /hello")
        time.sleep(0.05)

nonce = f"{os.getpid()}-{time.time_ns()}".encode()
for i in range(deploys):
    through = i % len(replicas)
    path = os.path.join(work, "hello-variant.wasm")
    with open(path, "wb") as f:
        f.write(with_custom_section(original, b"switchyard-bench", b"converge-" + nonce + b"-" + str(i).encode()))
    answer = os.path.join(work, "deploy.json")
    if os.path.exists(answer):
        os.remove(answer)
    started = time.monotonic()
    put = subprocess.run(
        ["curl", "-s", "-m", "60", "-o", answer, "-w", "%{http_code}",
         "-X", "PUT", "--data-binary", "@" + path, "-H", "Authorization: Bearer bench",
         f"http://127.0.0.1:{replicas[through].port}/admin/components/hello"],
        capture_output=True, text=True)
    answered = time.monotonic()
    put_ms = (answered - started) * 1000
    body = open(answer, "rb").read() if os.path.exists(answer) else b""
    if put.stdout != "200":
        print(f"  deploy {i + 1}: answered {put.stdout or 'nothing'}: {body[:200]!r}", file=sys.stderr)
        print(f"{i} {through} failed {put_ms:.1f} - -")
        continue
    report = json.loads(body)
    version = report["version"]
    waiting = set(range(len(replicas)))
    seen = {}
    deadline = answered + BOUND_S
    while waiting and time.monotonic() < deadline:
        for k in sorted(waiting):
            if replicas[k].version() == version:
                seen[k] = time.monotonic()
                waiting.discard(k)
        if waiting:
            time.sleep(poll)
    if waiting:
        print(f"  deploy {i + 1} ({version}) via replica-{through + 1}: replicas "
              f"{', '.join(f'replica-{k + 1}' for k in sorted(waiting))} not on it after {BOUND_S:.0f} s", file=sys.stderr)
        print(f"{i} {through} timeout {put_ms:.1f} {report.get('compile_ms', '-')} -")
        continue
    converge_ms = (max(seen.values()) - answered) * 1000
    # The slowest of the replicas that did not take the deploy: the fan-out.
    others_ms = max((seen[k] - answered) * 1000 for k in seen if k != through)
    print(f"  deploy {i + 1:>3} via replica-{through + 1}: {version}, answered in {put_ms:.0f} ms, "
          f"all replicas on it {converge_ms:.1f} ms after", file=sys.stderr)
    print(f"{i} {through} ok {put_ms:.1f} {report.get('compile_ms', '-')} {converge_ms:.2f} {others_ms:.2f}")
PY

mkdir -p loadtests/results
report="loadtests/results/bench-cluster-$(date -u +%Y%m%d-%H%M%S).md"
python3 - "$samples" "$deploys" "$poll_ms" "$(nproc)" "${BENCH_PROFILE:-release}" "$goal_ms" "$load_before" <<'PY' | tee "$report"
import math, statistics, sys
path, deploys, poll_ms, cores, profile, goal_ms, load_before = sys.argv[1:]
goal_ms = float(goal_ms)
rows = [line.split() for line in open(path)]
ok = [r for r in rows if r[2] == "ok"]
failed = [r for r in rows if r[2] != "ok"]
converge = sorted(float(r[5]) for r in ok)
put = sorted(float(r[3]) for r in rows)
def rank(values, p):
    """Nearest-rank percentile: the smallest value at or above p % of the samples."""
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)] if values else float("nan")
print(f"3 replicas of the reference app plus `hello` on one PostgreSQL, {len(rows)} deploys of `hello` "
      f"(each a distinct build), deploy i through replica i mod 3; convergence = from the deploy's 200 "
      f"until all 3 replicas answer GET /hello with its `x-switchyard-version`, polled every {poll_ms} ms "
      f"(each deploy bounded to 30 s). Percentiles are nearest-rank over the deploys; "
      f"{cores} cores (1-minute load average {load_before} when the deploys began), `{profile}` binaries.")
print()
print("| deploys | converged | p50 | p95 | p99 | max | deploy answered in (p50 / max) | goal: p99 ≤ 500 ms |")
print("|---:|---:|---:|---:|---:|---:|---:|---|")
p99 = rank(converge, 99) if not failed else float("inf")
met = bool(converge) and not failed and p99 <= goal_ms
print(f"| {len(rows)} | {len(ok)} | {rank(converge, 50):.0f} ms | {rank(converge, 95):.0f} ms | "
      f"{rank(converge, 99):.0f} ms | {max(converge, default=float('nan')):.0f} ms | "
      f"{statistics.median(put):.0f} / {max(put):.0f} ms | {'reached' if met else 'NOT reached'} |")
print()
if failed:
    print(f"- {len(failed)} deploy(s) failed or did not converge within 30 s: the goal is not reached.")
if converge:
    over = sum(1 for c in converge if c > goal_ms)
    print(f"- {over} of {len(converge)} converged deploys took longer than {goal_ms:.0f} ms.")
print(f"- Goal \"every replica serves the new version within 500 ms (p99) of the deploy's 200\": "
      f"{'reached' if met else 'NOT reached'}.")
PY
echo "written to $report" >&2
