# Switchyard tasks. `just run` serves the reference app; `just test` runs
# everything CI checks.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build outputs of the host workspace; override to share a cache between clones.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")

# List the recipes.
default:
    @just --list

# Build every guest component into components/build/.
components:
    components/build.sh

# Build components and host, then serve the reference app on 127.0.0.1:8080 (SQLite),
# with the provider simulator its connectors deliver to on 127.0.0.1:9090.
run: components
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -p switchyard -p switchyard-loadtests --bins
    "$CARGO_TARGET_DIR/debug/provider-simulator" --log-format pretty &
    simulator=$!
    trap 'kill "$simulator" 2>/dev/null || true' EXIT
    echo "dashboard: http://127.0.0.1:8080/dashboard"
    "$CARGO_TARGET_DIR/debug/switchyard" serve --config switchyard.toml --log-format pretty --insecure-admin

# Three replicas of the reference app on one PostgreSQL (database switchyard_cluster)
# behind HAProxy on 127.0.0.1:8080: replicas on :8181-:8183, HAProxy stats on :8404,
# the provider simulator on :9090. Ctrl-C stops them; `just cluster --check` starts,
# asks /health through HAProxy and stops; --fresh drops the database first.
# See scripts/cluster.sh.
cluster *ARGS: components
    cargo build -p switchyard -p switchyard-loadtests --bins
    SWITCHYARD_BIN_DIR="$CARGO_TARGET_DIR/debug" scripts/cluster.sh {{ARGS}}

# Start only the provider simulator (deliveries on :9090, control on :9091).
simulator:
    cargo run -q -p switchyard-loadtests --bin provider-simulator -- --log-format pretty

# Local Prometheus scraping the host on 127.0.0.1:8080, with the alert rules.
monitoring:
    monitoring/run-prometheus.sh

# Validate switchyard.toml and every component it names, without serving.
check: components
    cargo run -q -p switchyard -- check --config switchyard.toml

# Everything CI checks: the deployment files, formatting, lints, the dependency policy
# (deny.toml), unit and integration tests, alert rules, and the smoke load test as a gate.
test: components monitoring-check
    just lint-deploy
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    # Licences, banned or duplicate crates, and sources against deny.toml.
    # Not advisories: their database comes from GitHub, which CI cannot
    # reach. Duplicate versions only warn; their inclusion graphs would fill
    # the log.
    cargo deny check --hide-inclusion-graph bans licenses sources
    cargo test --workspace
    # The smoke gate runs on the binaries `cargo test` just built (dev profile,
    # optimized dependencies): a release build of the same code would add a
    # third full compile to every CI run. Load figures come from `just loadtest`.
    "$CARGO_TARGET_DIR/debug/loadtest" smoke
    just test-browser
    docs/render/render.sh --self-test

# The dashboard in Debian's Chromium (playwright-core, axe-core; npm ci installs
# them from the lock file and never a browser), on the host `cargo test` built.
test-browser:
    cd host/tests/browser && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1

# List every prerequisite of run, test, bench and loadtest: found (version) or missing
# (with the command that installs it); fails when run or test lacks something.
doctor:
    scripts/doctor.sh

# Run a load scenario (default: smoke) against a fresh release host and simulator; see
# loadtests/README.md. Builds the order handler's fault builds too (for `canary`).
# `just loadtest scale` is the order workload through HAProxy against 1, 2 and 3 replicas on
# PostgreSQL (DATABASE_URL), and delivery with 50 ms per delivery (loadtests/bench/scale.sh).
loadtest *ARGS:
    components/build.sh --faults
    cargo build --release -p switchyard -p switchyard-loadtests --bins
    if [[ "{{ARGS}}" == scale ]]; then loadtests/bench/scale.sh; else "$CARGO_TARGET_DIR/release/loadtest" {{ARGS}}; fi

# Regenerate docs/report.md (and its charts in docs/report/) from the newest run of
# each scenario in loadtests/results/.
report:
    cargo run -q --release -p switchyard-loadtests --bin loadtest -- report --technical docs

# Render every Mermaid diagram in docs/ to SVG (docs/render/out/); fails on one that
# does not parse. Drives Debian's Chromium; npm never downloads a browser.
docs:
    docs/render/render.sh

# Compare the latest load-test runs (also written to loadtests/results/report.md).
loadtest-report:
    cargo run -q --release -p switchyard-loadtests --bin loadtest -- report

# Lint the deployment files offline: hadolint on the Dockerfile, kubernetes-validate
# --strict on deploy/kubernetes/, and the configs, manifests, docker-compose.yml and
# HAProxy configs against each other; installs its pinned tools on first use.
lint-deploy:
    scripts/lint-deploy.sh

# Validate the Prometheus config and run the alert-rule unit tests (promtool).
monitoring-check:
    promtool check config monitoring/prometheus/prometheus.yml
    cd monitoring/prometheus && promtool test rules alerts.test.yml
    python3 monitoring/check-dashboards.py --list > /dev/null

# Side by side on loopback with wrk: bare axum, Switchyard (wasi:http and typed hello,
# fuel and metrics on/off, instances reused) and `wasmtime serve` (fresh and reused) when on
# PATH; writes a Markdown table.
bench: components
    cargo build --release -p switchyard -p switchyard-loadtests --bin switchyard --bin hello-axum
    loadtests/bench/http-compare.sh

# Instantiate + call latency of the order handler and a trivial fixture.
bench-invoke: components
    cargo bench -p switchyard --bench invoke

# What compiling a new build of the order handler costs: cold, and with the
# incremental cache warm from the previous build (same code; the fault builds).
bench-compile: components
    components/build.sh --faults
    cargo bench -p switchyard --bench compile

# Outbox drain rate through a real connector to the simulator (SQLite; PostgreSQL too with DATABASE_URL).
bench-outbox: components
    cargo bench -p switchyard --bench outbox

# How long after a deploy's 200 every one of three replicas on PostgreSQL (DATABASE_URL)
# serves the new version: p50/p95/p99 over 50 deploys (loadtests/bench/converge.sh).
bench-cluster: components
    cargo build --release -p switchyard -p switchyard-loadtests --bins
    loadtests/bench/converge.sh

# Knee of the order path (p95 < 50 ms, < 0.1 % errors): Switchyard with delivery against orders-native, SQLite (and PostgreSQL with DATABASE_URL).
bench-orders: components
    cargo build --release -p switchyard -p switchyard-loadtests --bins
    loadtests/bench/orders-compare.sh

# GET /orders/{id} (wrk) beside orders at a fixed rate, GETs reading first or beginning as writers, same run.
bench-reads: components
    cargo build --release -p switchyard -p switchyard-loadtests --bin switchyard --bin loadtest
    loadtests/bench/reads.sh

# Requests/s of a trivial route with metrics on vs off, same run (needs wrk).
bench-metrics: components
    cargo build --release -p switchyard
    loadtests/bench/metrics-overhead.sh

# Fuzz targets (host/fuzz: config, upload, http, metrics) under libFuzzer, SECONDS each,
# from the committed corpus; prints iterations and findings. `just test` replays the corpus.
fuzz SECONDS="60" *TARGETS: components
    scripts/fuzz.sh {{SECONDS}} {{TARGETS}}

# Format the host workspace.
fmt:
    cargo fmt --all

# Lint the host workspace.
lint:
    cargo clippy --workspace --all-targets -- -D warnings
