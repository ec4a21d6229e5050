"""The alerting rules: valid for promtool, unit-tested, documented, and on the contract."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_contract import ROOT, heading_anchors, unknown_metrics

from tests.support import SAFETY_TIMEOUT

PROM = ROOT / "deploy" / "prometheus"
ALERTS = PROM / "alerts.yml"
# The unit tests: alerts_test.yml, and the cases needing a day of history evaluated every
# 5 minutes (alerts_test_day.yml); one promtool run each, so workers run them side by side.
ALERTS_TESTS = (PROM / "alerts_test.yml", PROM / "alerts_test_day.yml")
DOCS = ROOT / "docs" / "alerts.md"  # the runbooks
RUNBOOK = "https://github.com/do-exporter/do-exporter/blob/main/docs/alerts.md#"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)",
)


def all_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def rules() -> list[dict[str, Any]]:
    """The alerting rules (recording rules aside)."""
    return [rule for rule in all_rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def anchor(alertname: str) -> str:
    return "alert-" + alertname.lower()


@needs_promtool
def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts alerts.yml with every lint enabled and fatal."""
    run = subprocess.run(
        ["promtool", "check", "rules", "--lint=all", "--lint-fatal", str(ALERTS)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
@pytest.mark.parametrize("unit_tests", ALERTS_TESTS, ids=lambda path: path.name)
def test_promtool_test_rules(unit_tests: Path) -> None:
    """The promtool unit tests of the alerts pass."""
    run = subprocess.run(
        ["promtool", "test", "rules", str(unit_tests)], capture_output=True, text=True,
        timeout=SAFETY_TIMEOUT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_shown_firing_and_quiet() -> None:
    """Each alert has a unit test where it fires and one where it stays quiet."""
    tests = [test for path in ALERTS_TESTS for test in yaml.safe_load(path.read_text())["tests"]]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = set(alert_names())
    assert names - fires == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert (fires | quiet) - names == set(), "tests of alerts that do not exist"


def test_alerts_only_use_exported_metrics() -> None:
    """Every metric an alert reads is one the exporter exports (or Prometheus' `up`)."""
    for rule in all_rules():
        assert unknown_metrics(rule["expr"]) - recorded() == set(), rule.get("alert")


def test_no_label_called_namespace() -> None:
    """Rules use namespace_id / namespace_name: `namespace` belongs to Kubernetes."""
    for rule in rules():
        text = yaml.safe_dump(rule)
        assert not re.search(r"\bnamespace\b(?!_)\s*[=!~]", rule["expr"]), rule["alert"]
        assert "$labels.namespace }}" not in text, rule["alert"]


def test_every_alert_is_annotated() -> None:
    """summary, description, a docs/alerts.md runbook anchor, a severity, a `for:` or reason."""
    names = alert_names()
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules():
        name = rule["alert"]
        assert re.fullmatch(r"DurableObjects[A-Z][A-Za-z]+", name), name
        ann = rule.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), name
        assert ann.get("runbook_url") == RUNBOOK + anchor(name), name
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name


def test_growth_and_health_alerts_are_there() -> None:
    """The issue's list: three growth alerts and the exporter health alerts."""
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    assert "predict_linear(" in exprs["DurableObjectsPredictedOverThreshold"]
    assert "objects_with_stored_data" in exprs["DurableObjectsStoredDataJump"]
    assert "[1d]" in exprs["DurableObjectsFastGrowth"]
    assert "up{" in exprs["DurableObjectsExporterDown"]
    assert "time() - " in exprs["DurableObjectsExporterDataStale"]
    assert 'code="429"' in exprs["DurableObjectsApiRateLimited"]
    assert "last_poll_success" in exprs["DurableObjectsExporterPollsFailing"]
    assert "api_requests_total" in exprs["DurableObjectsApiErrors"]


def test_usage_alerts_are_there() -> None:
    """Issue 9: error ratio, CPU/memory limits, SQLite storage growth, analytics staleness."""
    by_name = {rule["alert"]: rule for rule in rules()}
    ratio = by_name["DurableObjectsErrorRatioHigh"]["expr"]
    assert "errors_total[15m]" in ratio and "requests_total[15m])" in ratio
    assert re.search(r"and\s+rate\(\S+requests_total\[15m\]\) > ", ratio), "no request floor"
    limits = by_name["DurableObjectsLimitFailures"]["expr"]
    assert 'failures_total{reason=~"exceeded_cpu|exceeded_memory"}' in limits
    assert "deriv(" in by_name["DurableObjectsSqliteStorageGrowingFast"]["expr"]
    assert "watermark" in by_name["DurableObjectsAnalyticsStale"]["expr"]
    failing = by_name["DurableObjectsAnalyticsQueriesFailing"]["expr"]
    assert 'analytics_queries_total{result="failure"}' in failing


def test_usage_alerts_respect_the_analytics_cadence() -> None:
    """Analytics counters step once per poll, late: windows of 15m or more on them."""
    for rule in rules():
        for window in re.findall(r"_total(?:\{[^}]*\})?\[(\d+)([mhd])\]", rule["expr"]):
            minutes = int(window[0]) * {"m": 1, "h": 60, "d": 1440}[window[1]]
            assert minutes >= 15, rule["alert"]


def test_token_alerts_are_there() -> None:
    """Issue 11: a token expiring within 14 days, and one invalid, disabled or expired."""
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    expiring = exprs["DurableObjectsExporterTokenExpiringSoon"]
    assert "token_expiry_timestamp_seconds - time() < 14 * 86400" in expiring
    invalid = exprs["DurableObjectsExporterTokenInvalid"]
    assert 'token_status{status=~"invalid|disabled|expired"} == 1' in invalid


def test_docs_have_a_runbook_section_per_alert() -> None:
    """docs/alerts.md has a heading per alert whose anchor is the runbook URL's."""
    anchors = heading_anchors(DOCS.read_text())
    missing = [name for name in alert_names() if anchor(name) not in anchors]
    assert missing == []


def test_docs_state_every_for_duration() -> None:
    """docs/alerts.md names each alert's `for:` so users know the default they change."""
    text = DOCS.read_text()
    for rule in rules():
        section = text.split(f"### Alert: {rule['alert']}\n", 1)[1].split("\n### ", 1)[0]
        duration = rule.get("for", "0m")
        assert f"`for: {duration}`" in section, rule["alert"]
