#!/usr/bin/env bash
# Check the Prometheus side of do-exporter with promtool (Debian package `prometheus`):
#   - alerts.yml is valid (`promtool check rules`, no lint findings);
#   - alerts_test.yml passes (`promtool test rules`: every alert fires when it should and
#     stays quiet when it should not);
#   - prometheus.yml, the example scrape config, is valid (`promtool check config`);
#   - the exporter's exposition (`--once --demo`) has no lint findings (`promtool check metrics`).
#
# Usage: deploy/prometheus/check.sh            (PYTHON=/path/to/python to pick the interpreter)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

command -v promtool >/dev/null || { echo "check.sh: promtool not found (apt-get install prometheus)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check rules"
promtool check rules --lint=all --lint-fatal "$here/alerts.yml"

echo "== promtool test rules"
promtool test rules "$here/alerts_test.yml"

echo "== promtool check config (example scrape config)"
# The example names the rule file where the compose demo mounts it; point it at ours.
sed "s#/etc/prometheus/rules/alerts.yml#$here/alerts.yml#" "$here/prometheus.yml" > "$tmp/prometheus.yml"
promtool check config --lint=all --lint-fatal "$tmp/prometheus.yml"

echo "== promtool check metrics (do-exporter --once --demo)"
(cd "$root" && "$python" -m do_exporter --once --demo --log-level warning) > "$tmp/metrics.prom"
promtool check metrics < "$tmp/metrics.prom"
echo "metrics: $(grep -vc '^#' "$tmp/metrics.prom") samples, no lint findings"
