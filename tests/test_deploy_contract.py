"""The metric contract as the deploy files see it, and a PromQL metric-name reader.

tests/test_dashboard.py, tests/test_alerts.py and tests/test_e2e_prometheus.py import from
here; the tests below check the reader itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from do_exporter.metrics import contract

ROOT = Path(__file__).resolve().parent.parent

P = "cloudflare_durable_objects_"
E = P + "exporter_"

# The metric contract: name -> labels, read from do_exporter/metrics/contract.py (the one
# declaration every builder reads).
CONTRACT: dict[str, frozenset[str]] = {f.name: frozenset(f.labels) for f in contract.FAMILIES}
HISTOGRAMS = {f.name for f in contract.FAMILIES if f.type == "histogram"}
# Summaries: `quantile` on the quantile series only, `_sum` and `_count` without it.
SUMMARIES = {f.name for f in contract.FAMILIES if f.type == "summary"}
# Series Prometheus makes itself, which the rules and dashboard may use too.
PROMETHEUS_SERIES = {"up"}
# Metrics that may be missing from a healthy exporter's output (not every version or API
# answer produces them).
OPTIONAL = {
    E + "full_refresh_seconds",
    E + "api_ratelimit_remaining",
    # Verified by the daemon at start-up and hourly, never by --once.
    E + "token_expiry_timestamp_seconds",
    E + "token_status",
}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "atan2",
}  # fmt: skip
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range and subquery windows
    s = _GROUPING.sub(" ", s)  # by (...), on (...), group_left (...)
    s = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", s)
    names = set()
    for m in _IDENT.finditer(s):
        token = m.group(0)
        if token.lower() in _KEYWORDS or s[m.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def selectors(expr: str) -> list[str]:
    """Every `name{matchers}` or bare `name` vector selector in an expression, as written."""
    out = []
    for name in sorted(metric_names(expr)):
        for m in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])(\{{[^}}]*\}})?", expr):
            out.append(m.group(0))
    return out


def base_name(name: str) -> str:
    """A histogram's series name (`_bucket`, `_sum`, `_count`) mapped to the histogram."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS | SUMMARIES:
            return name[: -len(suffix)]
    return name


def unknown_metrics(expr: str) -> set[str]:
    """Names in `expr` that are neither in the contract nor Prometheus' own."""
    return {
        n for n in metric_names(expr) if base_name(n) not in CONTRACT and n not in PROMETHEUS_SERIES
    }


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    return {
        github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", markdown, re.M)
    }


# ---- tests of the helpers -------------------------------------------------------------


def test_metric_names_skips_functions_labels_and_keywords() -> None:
    """The reader finds selected metrics and nothing else."""
    expr = (
        'sum by (job, instance) (rate(foo_total{code!~"2..|429"}[5m])) '
        "/ on (job) group_left (version) bar_info offset 1d > 1e6 and baz"
        ' * label_replace(qux, "storage", "SQLite", "use_sqlite", "true")'
        " > $threshold"
    )
    assert metric_names(expr) == {"foo_total", "bar_info", "baz", "qux"}


def test_histogram_series_map_to_their_histogram() -> None:
    """`_bucket` series of a contract histogram count as the contract metric."""
    bucket = E + "api_request_duration_seconds_bucket"
    expr = f"histogram_quantile(0.9, sum by (le) (rate({bucket}[5m])))"
    assert unknown_metrics(expr) == set()
    assert unknown_metrics(f"{P}object") == {P + "object"}


def test_selectors_keep_their_matchers() -> None:
    """Selectors come back with their matchers, as written."""
    assert selectors('a{x="1"} + a offset 5m + b[5m]') == ['a{x="1"}', "a", "b"]


def test_github_anchor() -> None:
    """Headings turn into GitHub's anchors."""
    assert github_anchor("Alert: DurableObjectsFastGrowth") == "alert-durableobjectsfastgrowth"
    assert heading_anchors("# Deploy\n\n### Alert: `X`\n") == {"deploy", "alert-x"}


def test_exporter_exposes_exactly_the_contract() -> None:
    """`--once --demo` exposes every contract metric (optional ones aside) and no other.

    The dashboard and rules are checked against CONTRACT; this keeps CONTRACT honest.
    """

    run = subprocess.run(
        [sys.executable, "-m", "do_exporter", "--once", "--demo", "--log-level", "warning"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    exposed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", run.stdout, re.M))
    for name, kind in exposed.items():
        expected_kind = "histogram" if name in HISTOGRAMS else kind
        expected_kind = "summary" if name in SUMMARIES else expected_kind
        assert kind == expected_kind, name
    assert set(exposed) - set(CONTRACT) == set(), "exported but unknown to the dashboard tests"
    assert set(CONTRACT) - OPTIONAL - set(exposed) == set(), "in the contract but not exported"
    for line in run.stdout.splitlines():
        if line.startswith("#"):
            continue
        name = base_name(re.split(r"[{ ]", line, maxsplit=1)[0])
        seen = set(re.findall(r'(\w+)="', line)) - {"le"}
        if name != E + "full_refresh_seconds":  # labels not fixed by the contract yet
            labels = set(CONTRACT[name])
            if name in SUMMARIES and "quantile" not in seen:
                labels.discard("quantile")  # _sum, _count
            assert seen == labels, line


def test_promtool_check_metrics_finds_nothing() -> None:
    """`promtool check metrics` has no lint findings on the `--once --demo` exposition."""

    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    exposition = subprocess.run(
        [sys.executable, "-m", "do_exporter", "--once", "--demo", "--log-level", "warning"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
    ).stdout  # fmt: skip
    run = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    findings = [
        line
        for line in (run.stdout + run.stderr).splitlines()
        if line.strip() and not line.startswith(ACCEPTED_LINT)
    ]
    assert findings == [], run.stdout + run.stderr


# No lint finding is accepted any more (issue 18 renamed duration_gb_seconds_total).
ACCEPTED_LINT: tuple[str, ...] = ()
