#!/usr/bin/env bash
# Runs the local `prometheus` binary (Debian: apt-get install prometheus)
# against a Switchyard host on 127.0.0.1:8080, with the alert rules loaded.
# Used by `just monitoring`; stop it with Ctrl-C.
#
# Environment:
#   PROMETHEUS_LISTEN  web address (default 127.0.0.1:9090)
#   PROMETHEUS_DATA    TSDB directory (default monitoring/.data/prometheus, git-ignored)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="$here/prometheus/prometheus.yml"
listen="${PROMETHEUS_LISTEN:-127.0.0.1:9090}"
data="${PROMETHEUS_DATA:-$here/.data/prometheus}"

if ! command -v prometheus >/dev/null; then
    echo "prometheus not found; on Debian/Ubuntu: sudo apt-get install prometheus" >&2
    exit 1
fi
# Fail before starting on a config or rule error, with promtool's message.
if command -v promtool >/dev/null; then
    promtool check config "$config" >/dev/null
fi
mkdir -p "$data"

cat <<EOF
Prometheus: http://$listen  (scrapes 127.0.0.1:8080 every 5s; alerts at http://$listen/alerts)
Data:       $data

Grafana dashboards (overview, components), either:
  - docker compose --profile observability up
    (Prometheus on :9090 and Grafana on http://127.0.0.1:3000; stop this one
    first, and serve the host on 0.0.0.0:8080 so containers reach it), or
  - a local Grafana with paths.provisioning = $here/grafana/provisioning,
    after setting the data source url there to http://$listen and the
    dashboards path to $here/grafana/dashboards.
Check that every panel has data: $here/check-dashboards.py --prometheus http://$listen
EOF

# exec: Ctrl-C and the caller's signals reach Prometheus itself.
exec prometheus \
    --config.file="$config" \
    --storage.tsdb.path="$data" \
    --storage.tsdb.retention.time=7d \
    --web.listen-address="$listen"
