#!/usr/bin/env bash
# Lists every prerequisite of `just run`, `just test`, `just bench`,
# `just loadtest` and `just cluster`: found (with its version) or missing
# (with the command that installs it). Installs nothing. Exits 1 when
# something `just run` or `just test` needs is missing; what only a benchmark
# or `just cluster` needs is reported but does not fail, nor does a tool that
# its recipe installs on demand (cargo-fuzz, the deployment linters).
#
# Usage: scripts/doctor.sh   (or `just doctor`)

set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

failed=0

# row STATUS NAME DETAIL USED-BY
row() {
    printf '  %-8s %-20s %-52s %s\n' "$1" "$2" "$3" "$4"
}

# needed_by USED-BY: true when a missing item should fail the check.
needed_by_run_or_test() {
    [[ " $1 " == *" run "* || " $1 " == *" test "* ]]
}

# check NAME USED-BY INSTALL COMMAND...: runs COMMAND for a version line.
check() {
    local name=$1 used_by=$2 install=$3
    shift 3
    local version
    if version=$("$@" 2>&1 | head -n 1) && [[ -n $version ]]; then
        row ok "$name" "${version:0:52}" "$used_by"
    else
        row MISSING "$name" "install: $install" "$used_by"
        if needed_by_run_or_test "$used_by"; then failed=1; fi
    fi
}

# has COMMAND: on PATH and runnable.
has() {
    command -v "$1" >/dev/null 2>&1
}

version_of() {
    has "$1" || return 1
    "$@"
}

# version_matching PATTERN COMMAND...: the first line of COMMAND's output that
# matches PATTERN, whatever its exit status (`wrk -v` exits 1; Debian's
# chromium wrapper may print a shell warning first).
version_matching() {
    local pattern=$1
    shift
    has "$1" || return 1
    { "$@" 2>&1 || true; } | grep -m1 -E "$pattern"
}

echo "Prerequisites (used by: run = just run, test = just test, bench = just bench*, loadtest = just loadtest, fuzz = just fuzz, cluster = just cluster, lint-deploy = just lint-deploy, part of test)"
check cargo "run test bench loadtest" "Rust via rustup (stable, 1.95 or newer)" version_of cargo --version
check rustc "run test bench loadtest" "Rust via rustup (stable, 1.95 or newer)" version_of rustc --version
check just "run test bench loadtest" "cargo install just --locked" version_of just --version
check rustfmt "test" "rustup component add rustfmt" version_of cargo fmt --version
check clippy "test" "rustup component add clippy" version_of cargo clippy --version
check cargo-deny "test" "cargo install cargo-deny --locked --version 0.20.2" version_of cargo-deny --version
check python3 "test" "apt-get install python3" version_of python3 --version
check promtool "test" "apt-get install prometheus" version_of promtool --version
check node "test" "apt-get install nodejs npm" version_of node --version
check npm "test" "apt-get install nodejs npm" version_of npm --version
check chromium "test" "apt-get install chromium" version_matching '^Chromium' chromium --version
check wrk "bench" "apt-get install wrk" version_matching '^wrk' wrk -v
check cargo-fuzz "fuzz" "cargo install cargo-fuzz --locked --version 0.13.2 (just fuzz does it)" version_of cargo fuzz --version
check "wasmtime (optional)" "bench" "cargo install wasmtime-cli --locked --version 48.0.8" version_of wasmtime --version
check haproxy "cluster lint-deploy" "apt-get install haproxy" version_matching '^HAProxy version' haproxy -v

# The deployment linters live in a virtualenv that `just lint-deploy` creates
# and fills from deploy/lint/requirements.txt on first use; missing ones fail
# nothing.
lint_venv="${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/tools}/deploy-lint"
check hadolint "lint-deploy" "pinned in deploy/lint/requirements.txt (just lint-deploy does it)" \
    version_of "$lint_venv/bin/hadolint" --version
check kubernetes-validate "lint-deploy" "pinned in deploy/lint/requirements.txt (just lint-deploy does it)" \
    version_of "$lint_venv/bin/kubernetes-validate" --version

# PostgreSQL: the integration tests run their PostgreSQL variants when
# DATABASE_URL names a server (.ci/run installs and starts one) and skip them
# otherwise, so a missing server is reported but fails nothing.
server=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1)
if [[ -n $server ]] && server_version=$("$server" --version 2>/dev/null); then
    row ok "PostgreSQL server" "$server_version" "test (optional)"
else
    row missing "PostgreSQL server" "install: apt-get install postgresql" "test (optional)"
fi
if [[ ${DATABASE_URL:-} == postgres://* || ${DATABASE_URL:-} == postgresql://* ]]; then
    row ok "DATABASE_URL" "PostgreSQL variants of the tests run" "test (optional)"
else
    row "not set" "DATABASE_URL" "PostgreSQL variants of the tests are skipped" "test (optional)"
fi

# The guest route and its tools: build.sh decides, so ask it rather than
# repeating its rules here.
echo
echo "Guest components (components/build.sh --tools, installing nothing):"
if guest=$(SWITCHYARD_NO_INSTALL=1 "$repo/components/build.sh" --tools 2>&1); then
    sed 's/^build.sh: /  ok       /' <<<"$guest"
else
    sed 's/^build.sh: /  MISSING  /' <<<"$guest"
    echo "  (just components installs the missing pieces itself when it runs as root with apt-get, or with cargo)"
    failed=1
fi

echo
if ((failed)); then
    echo "doctor: something just run or just test needs is missing (see MISSING above)"
    exit 1
fi
echo "doctor: everything just run and just test need is here"
