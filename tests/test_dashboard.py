"""The Grafana dashboard and its provisioning: structure, variables, queries, sync."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from typing import Any

import yaml
from test_deploy_contract import (
    CONTRACT,
    ROOT,
    E,
    P,
    metric_names,
    selectors,
    unknown_metrics,
)

GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "do-exporter.json"
DS = {"type": "prometheus", "uid": "${datasource}"}

PER_ACCOUNT = {name for name, labels in CONTRACT.items() if "account_id" in labels}
PER_NAMESPACE = {name for name, labels in CONTRACT.items() if "namespace_name" in labels}
COUNTERS = {name for name in CONTRACT if name.endswith("_total")}
RENAMED = {P + "active_websocket_connections", P + "duration_gb_seconds_total"}
PRICES = ["price_requests", "price_gb_s", "price_rows_read", "price_rows_written",
          "price_gb_month"]  # fmt: skip


def board() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dash: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(dash):
        for target in panel.get("targets", []):
            yield panel, target


def variables(dash: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dash["templating"]["list"]}


def test_committed_json_is_what_the_builder_builds() -> None:
    """grafana/dashboards/do-exporter.json is up to date with grafana/build_dashboard.py."""
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text() == module.render(), "run: python grafana/build_dashboard.py"


def test_dashboard_is_provisionable() -> None:
    """Stable uid, id null, no export placeholders that break file provisioning."""
    dash = board()
    text = DASHBOARD.read_text()
    assert dash["id"] is None
    assert dash["uid"] == "do-exporter-durable-objects"
    assert dash["schemaVersion"] >= 36  # Grafana 9.x+, 10 writes 38/39
    assert "__inputs" not in dash and "__requires" not in dash
    assert "${DS_" not in text
    assert not re.search(r"\b[0-9a-f]{32}\b", text), "an account or namespace id is hard-coded"


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    """The `datasource` variable (type datasource, prometheus) feeds every panel and query."""
    dash = board()
    var = variables(dash)["datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    for panel in panels(dash):
        if panel["type"] != "row":
            assert panel["datasource"] == DS, panel["title"]
    for panel, target in targets(dash):
        assert target["datasource"] == DS, panel["title"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == DS, v["name"]


def test_variables_chain_job_account_namespace() -> None:
    """job -> account_id -> namespace_name, each query filtered by the ones before it."""
    vs = variables(board())
    assert list(vs) == ["datasource", "job", "account_id", "namespace_name", "topn", *PRICES]
    assert "$job" not in vs["job"]["definition"]
    assert '$job"' in vs["account_id"]["definition"]
    assert '$job"' in vs["namespace_name"]["definition"]
    assert '$account_id"' in vs["namespace_name"]["definition"]
    for name in ("job", "account_id", "namespace_name"):
        v = vs[name]
        assert v["definition"] == v["query"]["query"]
        assert re.fullmatch(r"label_values\((.+), " + name + r"\)", v["definition"]), name
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*", name


def test_rows_cover_the_issue() -> None:
    """Overview, per-namespace and exporter-health rows with the panels the issue lists."""
    dash = board()
    rows: dict[str, list[str]] = {}
    current = ""
    for panel in dash["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            rows[current] = []
        else:
            rows[current].append(panel["title"])
    assert list(rows) == [
        "Overview", "Per namespace", "Usage (analytics)", "Hot objects", "Exporter health"
    ]  # fmt: skip
    overview = " ".join(rows["Overview"])
    for word in ("Accounts", "Namespaces", "SQLite", "Objects", "stored data"):
        assert word in overview
    per_ns = " ".join(rows["Per namespace"])
    for word in ("Objects", "stored data", "Growth per hour", "Growth per day",
                 "by objects", "by growth"):  # fmt: skip
        assert word in per_ns
    usage = " ".join(rows["Usage (analytics)"])
    for word in ("Requests per second", "Error ratio", "CPU seconds", "GB-s", "rows read",
                 "written", "SQLite storage", "Storage by account",
                 "Busiest object's WebSocket connections",
                 "WebSocket messages", "Failures by reason", "Estimated cost"):  # fmt: skip
        assert word in usage
    hot = " ".join(rows["Hot objects"])
    for word in ("Busiest objects", "wall time", "by status"):
        assert word in hot
    health = " ".join(rows["Exporter health"])
    for word in ("poll", "Data age", "Poll duration", "API requests by code",
                 "API errors by code", "429", "Analytics data age", "Token status",
                 "Token days to expiry", "rate limit remaining"):  # fmt: skip
        assert word in health


def test_top_tables_join_namespace_info() -> None:
    """The top-N tables show class, script and storage backend from namespace_info."""
    tables = [p for p in panels(board()) if p["type"] == "table" and "Top" in p["title"]]
    assert len(tables) == 2
    for table in tables:
        first = table["targets"][0]["expr"]
        assert "topk($topn" in first and P + "namespace_info" in first
        assert "group_left (class, script, storage)" in first
        organize = next(t for t in table["transformations"] if t["id"] == "organize")
        shown = set(organize["options"]["renameByName"].values())
        assert {"Class", "Script", "Storage", "Namespace", "Account"} <= shown
        assert all(t.get("format") == "table" and t["instant"] for t in table["targets"])


def test_units_and_legends_are_set() -> None:
    """Graphs and stats have a unit; every graph query has a legend with labels."""
    for panel in panels(board()):
        if panel["type"] in {"timeseries", "stat"}:
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        if panel["type"] == "timeseries":
            for target in panel["targets"]:
                assert "{{" in target["legendFormat"], panel["title"]


def test_queries_only_use_exported_metrics() -> None:
    """Every metric a query or variable reads is in the exporter's contract (or `up`)."""
    dash = board()
    exprs = [t["expr"] for _, t in targets(dash)]
    exprs += [
        re.sub(r"^label_values\((.+), \w+\)$", r"\1", v["definition"])
        for v in dash["templating"]["list"]
        if v["type"] == "query"
    ]
    for expr in exprs:
        assert unknown_metrics(expr) == set(), expr
    used = set().union(*(metric_names(e) for e in exprs))
    assert {P + "objects", P + "objects_with_stored_data", P + "namespace_info"} <= used
    assert used & RENAMED == set(), "a panel reads a family under its old name"


def test_queries_follow_the_variables() -> None:
    """Each selector filters by $job, and per-account metrics by $account_id too."""
    for panel, target in targets(board()):
        for sel in selectors(target["expr"]):
            assert 'job=~"$job"' in sel, (panel["title"], sel)
            name = sel.split("{", 1)[0]
            if name in PER_ACCOUNT:
                assert 'account_id=~"$account_id"' in sel, (panel["title"], sel)
            if name in PER_NAMESPACE:
                assert 'namespace_name=~"$namespace_name"' in sel, (panel["title"], sel)
        assert not re.search(r"\bnamespace\s*[=!]", target["expr"]), "label is namespace_id/_name"


def test_panels_do_not_overlap() -> None:
    """Grid positions fit the 24 columns and no two panels cover the same cell."""
    cells: dict[tuple[int, int], str] = {}
    ids = set()
    for panel in panels(board()):
        assert panel["id"] not in ids
        ids.add(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_provisioning_points_at_the_dashboard() -> None:
    """The provider path is where compose mounts grafana/dashboards; the datasource is there."""
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/do-exporter.yml").read_text())
    assert provider["apiVersion"] == 1
    (prov,) = provider["providers"]
    assert prov["type"] == "file"
    compose = yaml.safe_load((ROOT / "deploy/docker/docker-compose.yml").read_text())
    mounts = dict(
        v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith(".")
    )
    assert mounts["../../grafana/dashboards"] == prov["options"]["path"]
    assert mounts["../../grafana/provisioning"] == "/etc/grafana/provisioning"
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    env = compose["services"]["grafana"]["environment"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == prov["options"]["path"] + "/" + DASHBOARD.name


def test_counters_are_only_read_through_rate_or_increase() -> None:
    """A counter's raw value means nothing (it starts at the exporter's start)."""
    for panel, target in targets(board()):
        expr = target["expr"]
        for name in metric_names(expr) & COUNTERS:
            for m in re.finditer(rf"(?<![\w:]){name}(?![\w:])(\{{[^}}]*\}})?", expr):
                assert re.search(r"\b(rate|increase)\($", expr[: m.start()]), (panel["title"], name)
                assert expr[m.end()] == "[", (panel["title"], name)


def test_usage_rates_span_several_polls() -> None:
    """Analytics counters step once per poll: no $__rate_interval (a few scrapes) on them."""
    analytics = {n for n in COUNTERS if n in PER_NAMESPACE}
    for panel, target in targets(board()):
        expr = target["expr"]
        for name in metric_names(expr) & analytics:
            windows = re.findall(rf"{name}\{{[^}}]*\}}\[([^\]]+)\]", expr)
            assert windows, (panel["title"], name)
            for window in windows:
                assert window in {"15m", "1h", "$__range"}, (panel["title"], window)


def test_estimated_cost_uses_the_price_variables() -> None:
    """The cost panels read every price variable; the variables are editable, with defaults."""
    dash = board()
    vs = variables(dash)
    for name in PRICES:
        var = vs[name]
        assert var["type"] == "textbox", name
        assert float(var["query"]) > 0 and var["current"]["value"] == var["query"], name
        assert var["label"].startswith("$ per "), name
    cost = [p for p in panels(dash) if "Estimated cost" in p["title"]]
    assert {p["type"] for p in cost} == {"stat", "table"}
    for panel in cost:
        exprs = " ".join(t["expr"] for t in panel["targets"])
        for name in PRICES:
            assert f"${name}" in exprs, (panel["title"], name)
        assert "[$__range]" in exprs and "$__range_s" in exprs
        assert "estimate" in panel["description"].lower()


def test_analytics_freshness_in_exporter_health() -> None:
    """The exporter-health row shows how old the analytics watermark is."""
    (panel,) = [p for p in panels(board()) if p["title"] == "Analytics data age"]
    expr = panel["targets"][0]["expr"]
    assert expr.startswith("time() - ") and "analytics_watermark_timestamp_seconds" in expr
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_token_health_per_credential() -> None:
    """Exporter health shows each credential's token status and days to its expiry."""
    by_title = {p["title"]: p for p in panels(board())}
    status = by_title["Token status"]
    expr = status["targets"][0]["expr"]
    assert expr.startswith("max by (credential) (") and E + "token_status{" in expr
    assert status["targets"][0]["legendFormat"] == "{{credential}}"
    shown = {
        m["text"] for m in status["fieldConfig"]["defaults"]["mappings"][0]["options"].values()
    }
    assert shown == {"active", "unknown", "disabled", "expired", "invalid"}
    expiry = by_title["Token days to expiry"]
    expr = expiry["targets"][0]["expr"]
    assert "min by (credential) (" + E + "token_expiry_timestamp_seconds{" in expr
    assert expr.endswith("- time()) / 86400")
    assert expiry["targets"][0]["legendFormat"] == "{{credential}}"


def test_rate_limit_remaining_is_one_line_per_credential() -> None:
    """Credentials have separate budgets: the panel must not merge them into one line."""
    (panel,) = [p for p in panels(board()) if p["title"] == "API rate limit remaining"]
    (tgt,) = panel["targets"]
    assert tgt["expr"].startswith("min by (credential) (" + E + "api_ratelimit_remaining{")
    assert tgt["legendFormat"] == "{{credential}}"


def test_hot_objects_row() -> None:
    """Issue 18: the busiest objects table, wall-time percentiles, requests by status."""
    by_title = {p["title"]: p for p in panels(board())}
    busiest = by_title["Busiest objects"]
    exprs = [t["expr"] for t in busiest["targets"]]
    assert P + "hot_object_requests_per_second{" in exprs[0]
    assert P + "hot_object_cpu_ratio{" in exprs[1]
    assert all("object_id" in e and "topk($topn" in e for e in exprs)
    organize = next(t for t in busiest["transformations"] if t["id"] == "organize")
    assert set(organize["options"]["renameByName"].values()) == {
        "Namespace", "Object id", "Account", "Requests/s", "CPU ratio"
    }  # fmt: skip
    wall = " ".join(t["expr"] for t in by_title["Request wall time by namespace"]["targets"])
    assert P + "request_wall_time_seconds{" in wall and "quantile" in wall
    assert P + "request_wall_time_max_seconds{" in wall
    (status,) = by_title["Requests per second by status"]["targets"]
    assert "by (account_id, namespace_id, namespace_name, status)" in status["expr"]
    assert P + "requests_by_status_total{" in status["expr"]


def test_cost_caveat_counts_websocket_messages_as_requests() -> None:
    """Incoming WebSocket messages are in requests_total (billed 20:1), not left out."""
    for panel in panels(board()):
        if "Estimated cost" in panel["title"]:
            text = panel["description"]
            assert "already counted in requests" in text and "20:1" in text, panel["title"]
