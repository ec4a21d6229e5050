"""End to end: simulator -> exporter -> a real Prometheus, with the dashboard and the rules.

Starts the Cloudflare API simulator (in this process), the exporter (a subprocess, the
shortest interval it allows: 10 s) and Prometheus (a subprocess scraping every second, on
loopback, with a temporary data directory), then:

- runs every PromQL query of the Grafana dashboard through Prometheus' HTTP API, its
  variables filled in as Grafana would (all values, then one account and one namespace),
  and fails on an error or on no data where data is expected;
- runs every alert expression of deploy/prometheus/alerts.yml, and every metric selector in
  them, the same way;
- grows a namespace in the simulator and waits for DurableObjectsPredictedOverThreshold to
  fire for that namespace, and for no other.

Prometheus loads a *test copy* of alerts.yml in which every range and offset is shortened
(an hour becomes 20 s, a day 40 s) and every `for:` is 2 s; expressions, thresholds and
labels are otherwise the real ones. The real windows (hours, a day) cannot pass in a test
that must finish in about a minute; the promtool unit tests (alerts_test.yml) prove the
real windows and `for:` durations on synthetic series instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_contract import ROOT, selectors

from do_exporter.simulator import Scenario, Simulator
from tests.ports import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="the `prometheus` server binary is not installed (Debian package `prometheus`; "
        ".ci/run installs it)",
    ),
]

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "do-exporter.json"
JOB = "do-exporter"

ACCOUNT_A = "a1" * 16
ACCOUNT_B = "b2" * 16
GROWER = "c3" * 16

# How the test copy of the rules shortens windows and offsets (see the module docstring).
SHORTER = {"1d": "40s", "6h": "30s", "1h": "20s", "30m": "20s", "15m": "20s"}
TEST_FOR = "2s"

# Queries that may rightly return nothing on a healthy, unthrottled stack: no 429 and no
# failed request happened, and `full_refresh_seconds` is optional in the contract.
# Absent when healthy: no 429, no failure, one refresh so far, a token that never expires.
MAY_BE_EMPTY = (
    'code="429"',
    'code!~"2..',
    "exporter_full_refresh_seconds",
    "exporter_token_expiry_timestamp_seconds",
)


def scenario() -> Scenario:
    def ns(idx: int, name: str, objects: int, **extra: Any) -> dict[str, Any]:
        return {
            "id": extra.pop("id", f"{idx:032x}"),
            "name": name,
            "class": name.split("_")[1],
            "script": name.split("_")[0],
            "use_sqlite": idx % 2 == 0,
            "objects": objects,
            "stored_data_ratio": 0.25,
            # A healthy stack: no limit failures, no storage growth (the usage alerts must
            # stay quiet in test_steady_healthy_stack_raises_no_alert).
            "analytics": {
                "exceeded_cpu_rate": 0,
                "exceeded_memory_rate": 0,
                "fatal_internal_rate": 0,
                "storage_growth_bytes_per_minute": 0,
            },
            **extra,
        }

    return Scenario.from_dict(
        {
            "seed": 11,
            "tokens": [{"value": "e2e-token-5d1c0a-0123456789abcdefghijklm", "accounts": "*"}],
            "accounts": [
                {
                    "id": ACCOUNT_A,
                    "name": "Account A",
                    "namespaces": [
                        ns(1, "shop_Cart", 23_000),
                        ns(2, "shop_Inventory", 1_200),
                        ns(3, "chat_Room", 900, id=GROWER),
                    ],
                },
                {
                    "id": ACCOUNT_B,
                    "name": "Account B",
                    "namespaces": [ns(4, "edge_Limiter", 15_000)],
                },
            ],
        }
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float, step: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bool(resp.status == 200)


@dataclass
class Stack:
    sim: Simulator
    prom_url: str
    exporter_url: str
    exporter_log: Path
    prom_log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prom_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:  # 400/422 carry the PromQL error
            body = json.load(err)
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in {"vector", "scalar"}, expr
        return data["result"] if data["resultType"] == "vector" else [data["result"]]

    def query_range(self, expr: str, seconds: int = 60) -> list[dict[str, Any]]:
        end = time.time()
        data = self.api("query_range", query=expr, start=str(end - seconds), end=str(end), step="2")
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return result

    def logs(self) -> str:
        return (
            f"--- exporter log (tail)\n{self.exporter_log.read_text()[-3000:]}\n"
            f"--- prometheus log (tail)\n{self.prom_log.read_text()[-3000:]}"
        )


def shorten(expr: str) -> str:
    def repl(m: re.Match[str]) -> str:
        return m.group(1) + SHORTER.get(m.group(2), m.group(2))

    return re.sub(r"(\[|\boffset\s+)(\d+[smhd])", repl, expr)


def test_rules(path: Path) -> None:
    data = yaml.safe_load(ALERTS.read_text())
    for group in data["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["expr"] = shorten(rule["expr"])
            if "for" in rule:
                rule["for"] = TEST_FOR
    path.write_text(yaml.safe_dump(data, sort_keys=False))


test_rules.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e-prometheus")
    sim = Simulator(scenario(), host="127.0.0.1", port=0)
    sim.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        exporter_port = free_port()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "DO_EXPORTER_"))
        }
        exporter_log = tmp / "exporter.log"
        with exporter_log.open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "do_exporter",
                        "--api-url",
                        sim.api_url,
                        "--api-token",
                        sim.token,
                        "--interval",
                        "10",
                        "--listen-address",
                        f"127.0.0.1:{exporter_port}",
                        "--log-format",
                        "json",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        exporter_url = f"http://127.0.0.1:{exporter_port}"

        test_rules(tmp / "alerts.test.yml")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "alerts.test.yml")],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
            ],
        }  # fmt: skip
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_port = free_port()
        prom_log = tmp / "prometheus.log"
        with prom_log.open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp / 'data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        st = Stack(sim, f"http://127.0.0.1:{prom_port}", exporter_url, exporter_log, prom_log)
        try:
            wait_for("the exporter's /readyz", lambda: http_ok(exporter_url + "/readyz"), 30)
            wait_for("Prometheus /-/ready", lambda: http_ok(st.prom_url + "/-/ready"), 30)
            # A few scrapes of a polled exporter, and two polls (rates and deltas need two).
            wait_for(
                "five scrapes and two polls",
                lambda: bool(
                    st.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 5')
                    and st.query(
                        "sum(cloudflare_durable_objects_exporter_polls_total"
                        '{result="success"}) >= 4'  # two polls of two accounts
                    )
                ),
                40,
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{st.logs()}") from None
        yield st
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sim.stop()


# ---- the dashboard ------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str, bool]]:
    """(panel title, expr, instant) for every query of every panel."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"], bool(target.get("instant"))))
    return out


def fill(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("$" + name, values[name])
    assert "$" not in expr, expr
    return expr


ALL = {
    "job": JOB,
    "account_id": ".*",
    "namespace_name": ".*",
    "topn": "10",
    "__rate_interval": "15s",
    "__range": "1m",  # Grafana's time range, as the cost panels use it
    "__range_s": "60",
    # The cost panels' unit prices: the dashboard's defaults.
    **{
        v["name"]: str(v["query"])
        for v in json.loads(DASHBOARD.read_text())["templating"]["list"]
        if v["name"].startswith("price_")
    },
}


def test_variable_queries_find_values(stack: Stack) -> None:
    """job -> account_id -> namespace_name, asked as Grafana's label_values() asks them."""
    dash = json.loads(DASHBOARD.read_text())
    found: dict[str, set[str]] = {}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
        assert m, var["definition"]
        result = stack.query(f"count by ({m.group(2)}) ({fill(m.group(1), ALL)})")
        found[var["name"]] = {r["metric"][m.group(2)] for r in result}
    assert found["job"] == {JOB}
    assert found["account_id"] == {ACCOUNT_A, ACCOUNT_B}
    assert found["namespace_name"] == {"shop_Cart", "shop_Inventory", "chat_Room", "edge_Limiter"}


@pytest.mark.parametrize(
    "values",
    # shop_Inventory is SQLite-backed: its storage panels have data too.
    [ALL, {**ALL, "account_id": ACCOUNT_A, "namespace_name": "shop_Inventory"}],
    ids=["all", "one-account-one-namespace"],
)
def test_every_dashboard_query_runs_and_has_data(stack: Stack, values: dict[str, str]) -> None:
    """Each panel query runs without error and returns data unless it may rightly be empty."""
    empty = []
    for title, expr, instant in dashboard_queries():
        promql = fill(expr, values)
        result = stack.query(promql) if instant else stack.query_range(promql)
        if not result and not any(s in expr for s in MAY_BE_EMPTY):
            empty.append(f"{title}: {promql}")
    assert empty == [], "queries without data:\n" + "\n".join(empty)


def test_top_table_joins_namespace_info(stack: Stack) -> None:
    """The top-N table's first query carries class, script and storage backend labels."""
    (expr,) = [e for t, e, _ in dashboard_queries() if t.endswith("by objects")][:1]
    rows = stack.query(fill(expr, ALL))
    by_name = {r["metric"]["namespace_name"]: r for r in rows}
    cart = by_name["shop_Cart"]["metric"]
    assert (cart["class"], cart["script"], cart["storage"]) == ("Cart", "shop", "key-value")
    assert by_name["shop_Inventory"]["metric"]["storage"] == "SQLite"
    assert float(by_name["shop_Cart"]["value"][1]) == 23_000


# ---- the alerts -----------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [r for g in data["groups"] for r in g["rules"]]


def test_every_alert_expression_runs(stack: Stack) -> None:
    """The real alerts.yml expressions evaluate, and every series they select exists."""
    missing = []
    for rule in alert_rules():
        stack.query(rule["expr"])
        for sel in selectors(rule["expr"]):
            if sel.startswith("up{") or any(s in sel for s in MAY_BE_EMPTY):
                continue
            if not stack.query(sel):
                missing.append(f"{rule['alert']}: {sel}")
    assert missing == [], "selectors without data:\n" + "\n".join(missing)


def test_rules_load_and_evaluate_healthy(stack: Stack) -> None:
    """Prometheus loaded every rule of the test copy and evaluates each without error."""
    groups = stack.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {r.get("alert") or r["record"] for r in alert_rules()}
    wait_for(
        "every rule evaluated",
        lambda: all(r.get("lastEvaluation", "").startswith("2") for r in
                    (r for g in stack.api("rules")["groups"] for r in g["rules"])),
        10,
    )  # fmt: skip
    for rule in (r for g in stack.api("rules")["groups"] for r in g["rules"]):
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_steady_healthy_stack_raises_no_alert(stack: Stack) -> None:
    """Nothing grows and nothing fails: no alert is pending or firing."""
    assert stack.alerts() == []


def test_growth_alert_fires_when_a_namespace_grows(stack: Stack) -> None:
    """Growing one namespace makes DurableObjectsPredictedOverThreshold fire for it alone."""
    stack.sim.set_growth(ACCOUNT_A, GROWER, 6000)  # 100 objects/s: ~8.6M in a day

    def firing() -> list[dict[str, Any]]:
        return [
            a for a in stack.alerts()
            if a["labels"]["alertname"] == "DurableObjectsPredictedOverThreshold"
            and a["state"] == "firing"
        ]  # fmt: skip

    try:
        wait_for("DurableObjectsPredictedOverThreshold to fire", lambda: bool(firing()), 45)
    except AssertionError as err:
        raise AssertionError(f"{err}; alerts: {stack.alerts()}\n{stack.logs()}") from None
    (alert,) = firing()
    labels = alert["labels"]
    assert (labels["account_id"], labels["namespace_id"]) == (ACCOUNT_A, GROWER)
    assert labels["namespace_name"] == "chat_Room" and labels["severity"] == "warning"
    assert "chat_Room" in alert["annotations"]["summary"]
    assert alert["annotations"]["runbook_url"].endswith(
        "#alert-durableobjectspredictedoverthreshold"
    )
    health = {a["labels"]["alertname"] for a in stack.alerts()} & {
        r["alert"]
        for r in alert_rules()
        if "alert" in r and ("Exporter" in r["alert"] or "Api" in r["alert"])
    }
    assert health == set(), "health alerts on a healthy stack"


# ---- usage analytics -----------------------------------------------------------------------


def test_usage_counters_in_prometheus_equal_the_simulator_truth(stack: Stack) -> None:
    """What Prometheus stored for requests_total is the simulator's exact sum of the counted
    minutes: [first window start, watermark at that scrape), for every namespace; and where a
    minute closed during the test, the counter's rise between two watermarks equals the sum
    of exactly the minutes between them (what increase() is built on)."""
    e = "cloudflare_durable_objects_exporter_analytics_watermark_timestamp_seconds"
    at = str(time.time() - 2)  # one instant: counter and watermark from the same scrapes
    first = {
        r["metric"]["account_id"]: float(r["value"][1])
        for r in stack.api("query", query=f"min_over_time({e}[10m])", time=at)["result"]
    }
    now = {
        r["metric"]["account_id"]: float(r["value"][1])
        for r in stack.api("query", query=e, time=at)["result"]
    }
    assert set(first) == set(now) == {ACCOUNT_A, ACCOUNT_B}, stack.logs()
    series = stack.api("query", query="cloudflare_durable_objects_requests_total", time=at)
    served = {
        (r["metric"]["account_id"], r["metric"]["namespace_id"]): float(r["value"][1])
        for r in series["result"]
    }
    assert len(served) == 4  # every namespace of both accounts
    for (account, ns_id), value in served.items():
        # --interval 10: the first window is the one minute before the first watermark.
        truth = stack.sim.graphql.truth(account, ns_id, first[account] - 60, now[account])
        assert value == truth["requests"], (account, ns_id)
    # The counter's rise over the test equals the truth of the minutes it covers.
    rise = stack.api(
        "query",
        query="max_over_time(cloudflare_durable_objects_requests_total[10m])"
        " - min_over_time(cloudflare_durable_objects_requests_total[10m])",
        time=at,
    )["result"]
    for r in rise:
        account, ns_id = r["metric"]["account_id"], r["metric"]["namespace_id"]
        truth = stack.sim.graphql.truth(account, ns_id, first[account], now[account])
        assert float(r["value"][1]) == (truth["requests"] if now[account] > first[account] else 0)
