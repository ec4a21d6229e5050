#!/usr/bin/env bash
# Check the Prometheus side of do-exporter with promtool (Debian package `prometheus`):
#   - alerts.yml is valid (`promtool check rules`, no lint findings);
#   - alerts_test.yml and alerts_test_day.yml pass (`promtool test rules`: every alert fires
#     when it should and stays quiet when it should not);
#   - prometheus.yml, the example scrape config, is valid (`promtool check config`);
#   - the exporter's exposition (`--once --demo`) has no lint findings (`promtool check metrics`).
# Exits 0 when all four pass, else non-zero with promtool's findings.
#
# Usage: deploy/prometheus/check.sh   (from any folder)
# It needs promtool on PATH and do-exporter installed; it runs the first of:
#   $PYTHON -m do_exporter       when PYTHON is set (an interpreter with do-exporter installed);
#   <repository>/.venv/bin/python -m do_exporter   (the README's install);
#   do-exporter                  on PATH (pip install into any environment);
#   python3 -m do_exporter       when that python3 can import it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

die() { echo "check.sh: $*" >&2; exit 1; }

command -v promtool >/dev/null ||
  die "promtool not found on PATH (Debian/Ubuntu: apt-get install prometheus)"

if [ -n "${PYTHON:-}" ]; then
  "$PYTHON" -c 'import do_exporter' 2>/dev/null ||
    die "PYTHON=$PYTHON cannot import do_exporter (install it: $PYTHON -m pip install -e $root)"
  exporter=("$PYTHON" -m do_exporter)
elif [ -x "$root/.venv/bin/python" ] && "$root/.venv/bin/python" -c 'import do_exporter' 2>/dev/null; then
  exporter=("$root/.venv/bin/python" -m do_exporter)
elif command -v do-exporter >/dev/null; then
  exporter=(do-exporter)
elif command -v python3 >/dev/null && python3 -c 'import do_exporter' 2>/dev/null; then
  exporter=(python3 -m do_exporter)
else
  die "do-exporter is not installed: run the README's install
  (python3 -m venv .venv && .venv/bin/pip install -e .) in $root, or set PYTHON"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check rules"
promtool check rules --lint=all --lint-fatal "$here/alerts.yml"

echo "== promtool test rules"
promtool test rules "$here/alerts_test.yml" "$here/alerts_test_day.yml"

echo "== promtool check config (example scrape config)"
# The example names the rule file where the compose demo mounts it; point it at ours.
sed "s#/etc/prometheus/rules/alerts.yml#$here/alerts.yml#" "$here/prometheus.yml" > "$tmp/prometheus.yml"
promtool check config --lint=all --lint-fatal "$tmp/prometheus.yml"

echo "== promtool check metrics (${exporter[*]} --once --demo)"
(cd "$root" && "${exporter[@]}" --once --demo --log-level warning) > "$tmp/metrics.prom"
# promtool prints lint findings and exits non-zero when it finds any.
promtool check metrics < "$tmp/metrics.prom"
echo "metrics: $(grep -vc '^#' "$tmp/metrics.prom") samples, no lint findings"
echo "check.sh: all checks passed"
