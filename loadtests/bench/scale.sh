#!/usr/bin/env bash
# `just loadtest scale`: what more replicas buy. For each N in
# SCALE_REPLICAS, N replicas of the reference app share one PostgreSQL
# database (a fresh one per N, created and dropped with psql), started one
# after the other, each waited for on /health/ready, behind HAProxy
# (roundrobin, health-checked on /health/ready, a failed request retried on
# another replica). Two figures per N:
#   (a) order throughput: the knee through HAProxy, found as in
#       orders-compare.sh: the project's generator (`loadtest baseline
#       --target`: open model, orders only) at rising rates, a bounded step
#       each; the knee is the last rate with p95 < 50 ms and < 0.1 % errors
#       (5xx, failures, and requests the generator could not send in time).
#       Replica CPU per request is user + system time summed over all N
#       replica processes over the knee's step (it includes delivering that
#       step's outbox messages).
#   (b) delivery throughput when each delivery waits: the provider
#       simulator adds SCALE_LATENCY_MS to every delivery, so a dispatcher,
#       which runs `[outbox] concurrency` deliveries per connector at once,
#       is bound by waiting, not by CPU, and N replicas' dispatchers should
#       deliver up to N times as fast. SCALE_ORDERS orders are posted
#       through HAProxy (each accepted one queues an email, an SMS and a
#       webhook message; the generator's mix also sends some that are
#       refused, 404 or 409, which queue nothing) while a trigger the
#       script adds to this throwaway database makes every new outbox row
#       arrive leased to "bench-hold", so no dispatcher can claim it yet;
#       otherwise the order path, which shares the same cores, would bound
#       the figure instead. The script then drops the trigger, releases the
#       whole batch in one transaction with NOTIFY switchyard_outbox (which
#       wakes every replica's dispatchers at once), and waits (at most
#       SCALE_DRAIN_WAIT seconds) until GET /admin/outbox shows no PENDING
#       message. Delivered msg/s runs from the first delivery reaching the
#       simulator to the last one it accepted (its /received ledger, polled
#       every 10 ms). (b) runs before (a), while the outbox table holds only
#       the batch.
# Prints both tables in Markdown and writes them under loadtests/results/.
# Every process here (generator, HAProxy, replicas, simulator, PostgreSQL)
# shares this machine's cores: throughput bound by CPU cannot grow with
# replicas, only throughput bound by waiting can. Traffic stays on
# loopback; every process is stopped by the PID it got.
#
# Settings (environment): DATABASE_URL (required: a PostgreSQL server URL
# whose role may create databases), SCALE_REPLICAS ("1 2 3"), SCALE_RATES
# (requests/s, ascending: "100 200 300 400 500 600 800"), SCALE_STEP (8s
# per rate), SCALE_ORDERS (600), SCALE_POST_RATE (200 orders/s while the
# batch is posted), SCALE_LATENCY_MS (50), SCALE_DRAIN_WAIT (300 s),
# BENCH_PROFILE (release; debug works too), CARGO_TARGET_DIR (target),
# SWITCHYARD_COMPONENTS_DIR (components/build). Needs haproxy and psql on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=loadtests/bench/lib.sh
source loadtests/bench/lib.sh
bin=$(bench_bin_dir)
components=$(bench_components_dir) || { echo "no components directory: run 'just components'" >&2; exit 1; }
for f in "$bin/switchyard" "$bin/loadtest" "$bin/provider-simulator" "$components/order-handler.wasm"; do
    [ -e "$f" ] || { echo "missing $f: run 'just loadtest scale', which builds it" >&2; exit 1; }
done
[ -n "${DATABASE_URL:-}" ] || { echo "loadtest scale needs DATABASE_URL (a PostgreSQL server)" >&2; exit 1; }
command -v psql >/dev/null || { echo "loadtest scale needs psql (Debian package postgresql-client)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "loadtest scale needs haproxy (Debian package haproxy)" >&2; exit 1; }

read -r -a replica_counts <<<"${SCALE_REPLICAS:-1 2 3}"
read -r -a rates <<<"${SCALE_RATES:-100 200 300 400 500 600 800}"
step="${SCALE_STEP:-8s}"
orders="${SCALE_ORDERS:-600}"
post_rate="${SCALE_POST_RATE:-200}"
latency_ms="${SCALE_LATENCY_MS:-50}"
drain_wait="${SCALE_DRAIN_WAIT:-300}"
p95_limit_ms=50
error_limit=0.001

work=$(mktemp -d)
replica_pids=()
replica_ports=()
simulator=""
proxy=""
pg_database=""
cleanup() {
    if [ -n "$proxy" ]; then stop_pid "$proxy"; fi
    stop_replicas
    if [ -n "$simulator" ]; then stop_pid "$simulator"; fi
    if [ -n "$pg_database" ]; then pg_drop_database "$pg_database"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# HAProxy in front of the replicas on replica_ports; its stats socket lets
# the script see which servers it holds up.
haproxy_config() { # $1 = listen port
    local i
    cat <<CFG
global
    maxconn 8192
    stats socket $work/haproxy.sock mode 600 level user
defaults
    mode http
    retries 2
    option redispatch
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend orders
    bind 127.0.0.1:$1
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1
CFG
    for i in "${!replica_ports[@]}"; do
        echo "    server replica-$((i + 1)) 127.0.0.1:${replica_ports[$i]} check"
    done
}

# Servers HAProxy's backend holds UP.
haproxy_up() {
    python3 - "$work/haproxy.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(b"show stat\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
except OSError:
    print(0)
    sys.exit()
lines = data.decode().splitlines()
header = lines[0].lstrip("# ").split(",")
rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
print(sum(1 for r in rows if r["pxname"] == "replicas" and r["svname"] not in ("FRONTEND", "BACKEND") and r["status"] == "UP"))
PY
}

# Starts HAProxy on port $1 and waits until it holds every replica up and
# answers /health/ready.
start_proxy() { # $1 = port
    haproxy_config "$1" > "$work/haproxy.cfg"
    haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
    proxy=$!
    local deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$(haproxy_up)" = "${#replica_ports[@]}" ] &&
            [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health/ready")" = 200 ]; then
            return 0
        fi
        pid_alive "$proxy" || { echo "haproxy exited while starting" >&2; tail -n 20 "$work/haproxy.log" >&2; return 1; }
        sleep 0.1
    done
    echo "haproxy did not hold all ${#replica_ports[@]} replicas up within 30 s" >&2
    return 1
}

# PENDING outbox messages (in flight ones included: they stay PENDING until settled).
backlog() {
    curl -sf -m 5 -H "Authorization: Bearer bench" "http://127.0.0.1:${replica_ports[0]}/admin/outbox?limit=1" |
        python3 -c 'import json, sys; print(sum(c["count"] for c in json.load(sys.stdin)["counts"] if c["status"].upper() == "PENDING"))' ||
        echo "?"
}

# One step at one rate through HAProxy; prints "rps p50 p95 p99 error_rate requests cpu_us backlog" or fails.
step_at() { # $1 = proxy port, $2 = rate, $3 = results dir
    local before after pending
    before=$(cpu_ticks_total "${replica_pids[@]}")
    # Thresholds are judged below; these only keep the exit status quiet.
    "$bin/loadtest" baseline --target "http://127.0.0.1:$1" --rate "$2" --duration "$step" \
        --max-error-rate 1 --max-p99-ms 1e9 --results-dir "$3" >/dev/null 2>"$3.log" || true
    after=$(cpu_ticks_total "${replica_pids[@]}")
    pending=$(backlog)
    step_figures "$3" $((after - before)) "$pending"
}

# (a): steps up the rates; prints "knee rps p50 p95 p99 errors cpu backlog
# broke_at broke_p95 broke_errors" (the last two: figures of the step that broke).
knee() { # $1 = proxy port, $2 = replicas
    local knee_line="" broke="-" broke_figures="- -" out rate
    for rate in "${rates[@]}"; do
        out=$(step_at "$1" "$rate" "$work/lt-$2-$rate") || { broke="$rate(no summary)"; break; }
        read -r rps p50 p95 p99 errors _requests cpu pending <<<"$out"
        echo "  N=$2 at $rate/s: $rps req/s, p95 $p95 ms, errors $errors, $cpu µs replica CPU/request, outbox backlog $pending" >&2
        if python3 -c "import sys; sys.exit(0 if $p95 < $p95_limit_ms and $errors < $error_limit else 1)"; then
            knee_line="$rate $rps $p50 $p95 $p99 $errors $cpu $pending"
        else
            broke="$rate"
            broke_figures="$p95 $errors"
            break
        fi
    done
    [ -n "$knee_line" ] || knee_line="0 0 0 0 0 0 0 -"
    echo "$knee_line $broke $broke_figures"
}

simulator_control() { # $1 = control port, $2 = route, $3 = JSON body
    curl -sf -m 5 -X POST -H 'content-type: application/json' --data "$3" "http://127.0.0.1:$1$2" >/dev/null
}

# (b): posts the held batch, releases it, measures the drain; prints
# "messages delivered span_s msg_per_s cpu_us_per_msg until_clear_s busy_cores".
delivery() { # $1 = proxy port, $2 = replicas, $3 = database url, $4 = simulator control port
    psql -q -v ON_ERROR_STOP=1 "$3" >/dev/null <<'SQL' || return 1
CREATE FUNCTION bench_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.lease_owner := 'bench-hold';
    NEW.lease_until := 9000000000000000;
    RETURN NEW;
END $$;
CREATE TRIGGER bench_hold BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION bench_hold();
SQL
    local post_ms=$(( (orders * 1000 + post_rate - 1) / post_rate ))
    "$bin/loadtest" baseline --target "http://127.0.0.1:$1" --rate "$post_rate" --duration "${post_ms}ms" \
        --max-requests "$orders" --max-error-rate 1 --max-p99-ms 1e9 --results-dir "$work/post-$2" \
        >/dev/null 2>"$work/post-$2.log" || true
    local held
    held=$(psql -qtA "$3" -c "SELECT COUNT(*) FROM outbox WHERE status = 'PENDING' AND lease_owner = 'bench-hold'") || return 1
    local answers
    answers=$(python3 - "$work/post-$2" <<'PY'
import glob, json, os, sys
found = glob.glob(os.path.join(sys.argv[1], "*", "summary.json"))
s = json.load(open(found[0])) if found else {}
print(", ".join(f"{n} × {status}" for status, n in sorted(s.get("statuses", {}).items())) or "no summary")
PY
)
    echo "  N=$2: posted $orders orders (answers: $answers); $held outbox messages held;" \
        "releasing them with ${latency_ms} ms per delivery" >&2
    simulator_control "$4" /control/slow "{\"latency_ms\": $latency_ms}" || return 1
    TICKS_PER_SECOND=$(getconf CLK_TCK) python3 - "$3" "$4" "${replica_ports[0]}" "$held" "$drain_wait" "${replica_pids[@]}" <<'PY' || return 1
import http.client, json, os, subprocess, sys, time
db_url, control, admin, held, bound, *pids = sys.argv[1:]
held, bound = int(held), float(bound)

def cpu_ticks():
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total

sim = http.client.HTTPConnection("127.0.0.1", int(control), timeout=5)
def received():
    sim.request("GET", "/received")
    r = json.loads(sim.getresponse().read())
    return r["requests"], r["unique"]

adm = http.client.HTTPConnection("127.0.0.1", int(admin), timeout=10)
def pending():
    adm.request("GET", "/admin/outbox?limit=1", headers={"Authorization": "Bearer bench"})
    r = json.loads(adm.getresponse().read())
    return sum(c["count"] for c in r["counts"] if c["status"].upper() == "PENDING")

requests0, unique0 = received()
ticks0 = cpu_ticks()
released = time.monotonic()
subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", db_url], check=True, stdout=subprocess.DEVNULL, input=
    "BEGIN;\n"
    "DROP TRIGGER bench_hold ON outbox;\n"
    "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = 'bench-hold';\n"
    "NOTIFY switchyard_outbox, 'bench';\n"
    "COMMIT;\n", text=True)
first = last = clear = None
unique_seen = unique0
next_admin = time.monotonic()
while time.monotonic() - released < bound:
    now = time.monotonic()
    requests, unique = received()
    if first is None and requests > requests0:
        first = now
    if unique > unique_seen:
        unique_seen, last = unique, now
    if now >= next_admin:
        next_admin = now + 0.25
        if pending() == 0:
            clear = now
            break
    time.sleep(0.01)
ticks = cpu_ticks() - ticks0
delivered = unique_seen - unique0
if clear is None or first is None or last is None or last <= first:
    print(f"  delivery did not finish within {bound:.0f} s: {delivered} of {held} delivered", file=sys.stderr)
    print(f"{held} {delivered} - - - - -")
    sys.exit()
span = last - first
cpu_s = ticks / int(os.environ["TICKS_PER_SECOND"])
cpu_us = cpu_s * 1e6 / max(delivered, 1)
print(f"{held} {delivered} {span:.3f} {delivered / span:.1f} {cpu_us:.0f} {clear - released:.2f} {cpu_s / (clear - released):.2f}")
PY
    simulator_control "$4" /control/slow '{"latency_ms": 0}'
}

mkdir -p loadtests/results
samples="$work/samples"
# Other work on the machine moves every figure here; the report says how busy it was.
load_before=$(cut -d' ' -f1 /proc/loadavg)
for n in "${replica_counts[@]}"; do
    echo "N=$n replica(s)" >&2
    pg_database="bench_scale_${n}_$$"
    url=$(pg_create_database "$pg_database")
    sim_port=$(free_port)
    sim_control=$(free_port)
    "$bin/provider-simulator" --listen "127.0.0.1:$sim_port" --control "127.0.0.1:$sim_control" >"$work/simulator-$n.log" 2>&1 &
    simulator=$!
    reference_config "$components" "$sim_port" > "$work/switchyard-$n.toml"
    for i in $(seq 1 "$n"); do
        start_replica "$bin" "$work/switchyard-$n.toml" "$url" "replica-$i" "$work/replica-$n-$i.log"
    done
    proxy_port=$(free_port)
    start_proxy "$proxy_port"

    drained=$(delivery "$proxy_port" "$n" "$url" "$sim_control") || { echo "N=$n: the delivery measurement failed" >&2; exit 1; }
    read -r held delivered span msg_s msg_cpu clear busy <<<"$drained"
    echo "  N=$n delivery: $delivered of $held messages in $span s ($msg_s msg/s, $msg_cpu µs replica CPU/message," \
        "replicas busy $busy cores; no PENDING after $clear s)" >&2
    knee_line=$(knee "$proxy_port" "$n")
    echo "$n $knee_line $held $delivered $span $msg_s $msg_cpu $clear $busy" >> "$samples"

    stop_pid "$proxy"
    proxy=""
    stop_replicas
    stop_pid "$simulator"
    simulator=""
    pg_drop_database "$pg_database"
    pg_database=""
done

read -r concurrency connectors < <(python3 -c 'import tomllib
c = tomllib.load(open("switchyard.toml", "rb"))
print(c.get("outbox", {}).get("concurrency", 16), len(c.get("connectors", {})))')
report="loadtests/results/loadtest-scale-$(date -u +%Y%m%d-%H%M%S).md"
python3 - "$samples" "$step" "${rates[*]}" "$(nproc)" "${BENCH_PROFILE:-release}" "$orders" "$latency_ms" "$concurrency" "$connectors" "$load_before" <<'PY' | tee "$report"
import sys
path, step, rates, cores, profile, orders, latency_ms, concurrency, connectors, load_before = sys.argv[1:]
connectors = int(connectors)
rows = []
for line in open(path):
    f = line.split()
    rows.append({"n": int(f[0]), "knee": f[1:9], "broke": f[9], "broke_p95": f[10], "broke_errors": f[11],
                 "held": f[12], "delivered": f[13], "span": f[14], "msg_s": f[15], "msg_cpu": f[16], "clear": f[17], "busy": f[18]})
print(f"N replicas of the reference app on one PostgreSQL behind HAProxy (roundrobin), {cores} cores shared by "
      f"the load generator, HAProxy, the replicas, the provider simulator and PostgreSQL (1-minute load average "
      f"{load_before} when the run began); `{profile}` binaries.")
print()
print(f"(a) Order throughput through HAProxy: `loadtest baseline --target` (open model, orders only), rates {rates} "
      f"req/s, {step} per step, delivery on. Knee: the highest rate with p95 < 50 ms and < 0.1 % errors; figures at the knee.")
print()
print("| replicas | knee (req/s offered) | achieved req/s | p50 | p95 | p99 | errors | replica CPU per request (sum over replicas) | first rate that broke | outbox backlog after the knee's step |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
base_knee = None
for r in rows:
    knee, rps, p50, p95, p99, errors, cpu, backlog = r["knee"]
    broke = r["broke"]
    if r["broke_p95"] != "-":
        broke += f" (p95 {float(r['broke_p95']):,.1f} ms, {float(r['broke_errors']) * 100:.2f} % errors)"
    if float(knee) == 0:
        print(f"| {r['n']} | none: below {rates.split()[0]} | - | - | - | - | - | - | {broke} | - |")
        continue
    print(f"| {r['n']} | {float(knee):,.0f} | {float(rps):,.0f} | {float(p50):.1f} ms | {float(p95):.1f} ms | "
          f"{float(p99):.1f} ms | {float(errors) * 100:.2f} % | {float(cpu):,.0f} µs | {broke} | {backlog} |")
print()
print(f"(b) Delivery throughput with {latency_ms} ms added to every delivery by the simulator: {orders} orders "
      f"posted through HAProxy (3 messages per accepted order) with their outbox messages held, then released at once; msg/s from the first "
      f"delivery to the last. Each replica runs at most {concurrency} deliveries per connector at once, so "
      f"N replicas can wait on N times as many.")
print()
print("| replicas | messages | delivered | first → last delivery | delivered msg/s | × N=1 | replica CPU per message | replica cores busy (release → no PENDING) | until no PENDING |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
base = next((float(r["msg_s"]) for r in rows if r["n"] == 1 and r["msg_s"] != "-"), None)
for r in rows:
    if r["msg_s"] == "-":
        print(f"| {r['n']} | {r['held']} | {r['delivered']} | did not finish | - | - | - | - | - |")
        continue
    ratio = f"{float(r['msg_s']) / base:.2f}×" if base else "-"
    print(f"| {r['n']} | {r['held']} | {r['delivered']} | {float(r['span']):.2f} s | {float(r['msg_s']):,.0f} | "
          f"{ratio} | {float(r['msg_cpu']):,.0f} µs | {r['busy']} of {cores} | "
          f"{float(r['clear']):.2f} s |")
print()
ceiling = connectors * int(concurrency) * 1000 / float(latency_ms)
print(f"- Waiting alone would allow each replica at most {connectors} connectors × {concurrency} deliveries / "
      f"{latency_ms} ms = {ceiling:,.0f} msg/s (less in practice: a batch of `[outbox] batch_size` is settled "
      "together, after its slowest delivery), N times that for N replicas, until the cores run out.")
print(f"- {cores} cores: throughput bound by CPU (the order path, (a)) cannot grow with replicas here, since every "
      "replica takes its CPU from the same cores; more replicas only add coordination. Throughput bound by "
      "waiting (deliveries to a slow provider, (b)) can, up to what the cores allow.")
if any(float(r["knee"][0]) >= float(rates.split()[-1]) for r in rows):
    print(f"- some configuration held the highest rate tried ({float(rates.split()[-1]):,.0f} req/s): its knee is at least that; raise SCALE_RATES")
PY
echo "written to $report" >&2
