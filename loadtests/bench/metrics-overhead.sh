#!/usr/bin/env bash
# `just bench-metrics`: requests/s of a trivial fixture route with metrics
# recording on and off, in the same run, with the same load generator (wrk)
# and settings, alternating the two configurations to even out drift.
# Needs the release binaries and wrk; traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${CARGO_TARGET_DIR:=target}"
switchyard="$CARGO_TARGET_DIR/release/switchyard"
command -v wrk >/dev/null || { echo "bench-metrics needs wrk (Debian package wrk)" >&2; exit 1; }
[ -x "$switchyard" ] || { echo "build first: cargo build --release -p switchyard" >&2; exit 1; }

duration="${BENCH_DURATION:-10s}"
rounds="${BENCH_ROUNDS:-3}"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run() { # $1 = true|false
    cat > "$work/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[database]
url = "sqlite://$work/bench-$1.db"
[metrics]
enabled = $1
[components.hello]
path = "$PWD/components/build/hello.wasm"
[[routes]]
method = "GET"
path = "/hello"
component = "hello"
TOML
    RUST_LOG=error "$switchyard" serve --config "$work/switchyard.toml" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
    wrk -t1 -c16 -d2s "http://127.0.0.1:$port/hello" >/dev/null  # warm-up
    wrk -t1 -c16 -d"$duration" "http://127.0.0.1:$port/hello" | awk '/Requests\/sec/ {print $2}'
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

on=(); off=()
for _ in $(seq 1 "$rounds"); do
    on+=("$(run true)")
    off+=("$(run false)")
done
python3 - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]
off = [float(x) for x in sys.argv[2].split()]
m_on, m_off = statistics.median(on), statistics.median(off)
print("| metrics | runs (req/s) | median req/s |")
print("|---|---|---:|")
print(f"| on | {', '.join(f'{x:.0f}' for x in on)} | {m_on:.0f} |")
print(f"| off | {', '.join(f'{x:.0f}' for x in off)} | {m_off:.0f} |")
print(f"\ncost of metrics: {100 * (m_off - m_on) / m_off:.1f} % (goal: at most 3 %)")
PY
