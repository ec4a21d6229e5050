"""Build grafana/dashboards/do-exporter.json, the do-exporter dashboard for Grafana 10+.

The JSON is generated so that every panel is built the same way (datasource variable, units,
legends) and the queries stay readable here. Run `python grafana/build_dashboard.py` after a
change; tests/test_dashboard.py fails when the committed JSON differs from what this builds.

Edited the dashboard in Grafana instead? Export it "for sharing externally: off" and bring the
change back here, or the next build overwrites it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "do-exporter.json"

UID = "do-exporter-durable-objects"
DS = {"type": "prometheus", "uid": "${datasource}"}

P = "cloudflare_durable_objects_"
E = P + "exporter_"

# Selectors shared by the queries.
ACC = 'job=~"$job", account_id=~"$account_id"'
NS = ACC + ', namespace_name=~"$namespace_name"'
JOB = 'job=~"$job"'


def objects(metric: str = "objects") -> str:
    """One series per namespace, de-duplicated across exporter replicas."""
    return f"max by (account_id, namespace_id, namespace_name) ({P}{metric}{{{NS}}})"


# The namespace info, with use_sqlite turned into a readable `storage` label.
INFO = (
    "label_replace(label_replace("
    f"max by (account_id, namespace_id, class, script, use_sqlite) ({P}namespace_info{{{NS}}}), "
    '"storage", "SQLite", "use_sqlite", "true"), '
    '"storage", "key-value", "use_sqlite", "false")'
)


def with_info(expr: str) -> str:
    """Join class, script and storage backend onto a per-namespace expression."""
    return f"{expr} * on (account_id, namespace_id) group_left (class, script, storage) {INFO}"


class Layout:
    """Hands out ids and grid positions, left to right, top to bottom."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> dict[str, Any]:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel = {
            "type": "row",
            "id": self.new_id(),
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "panels": [],
        }
        self.y += 1
        return panel


def target(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if table:
        t["format"] = "table"
    return t


def stat(
    lay: Layout,
    title: str,
    expr: str,
    *,
    unit: str = "short",
    legend: str = "",
    description: str = "",
    w: int = 4,
    h: int = 4,
    mappings: list[Any] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
    no_value: str = "",
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "mappings": mappings or [],
        "thresholds": {
            "mode": "absolute",
            "steps": thresholds or [{"color": "green", "value": None}],
        },
        "color": {"mode": "thresholds"},
    }
    if unit == "percentunit":
        defaults["decimals"] = 1
    if decimals is not None:
        defaults["decimals"] = decimals
    if no_value:
        defaults["noValue"] = no_value
    return {
        "type": "stat",
        "id": lay.new_id(),
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": lay.place(w, h),
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def timeseries(
    lay: Layout,
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    description: str = "",
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    min_zero: bool = True,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
    }
    if min_zero:
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "id": lay.new_id(),
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": lay.place(w, h),
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def table(
    lay: Layout,
    title: str,
    targets: list[dict[str, Any]],
    columns: dict[str, str],
    *,
    units: dict[str, str],
    sort_by: str,
    description: str = "",
    w: int = 12,
    h: int = 10,
) -> dict[str, Any]:
    """A table of instant queries merged on their labels.

    `columns` renames the fields (a query's value is "Value #<refId>"); fields not named in it
    (Time, job, instance, use_sqlite, ...) are hidden.
    """
    shown = list(columns)
    return {
        "type": "table",
        "id": lay.new_id(),
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": lay.place(w, h),
        "targets": targets,
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "filterFieldsByName",
                "options": {"include": {"names": shown}},
            },
            {
                "id": "organize",
                "options": {
                    "excludeByName": {},
                    "indexByName": {name: i for i, name in enumerate(shown)},
                    "renameByName": columns,
                },
            },
            {"id": "sortBy", "options": {"sort": [{"field": columns[sort_by], "desc": True}]}},
        ],
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "filterable": True}},
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": columns[field]},
                    "properties": [{"id": "unit", "value": unit}],
                }
                for field, unit in units.items()
            ],
        },
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    }


def top_set(expr: str) -> str:
    """The label sets of the top $topn namespaces by `expr`, to restrict other queries to."""
    return f"topk($topn, {expr})"


# ---- Usage analytics ---------------------------------------------------------------------
# The analytics counters lag real time by --analytics-delay and move in one step per poll
# (--interval, 300 s by default): a rate over $__rate_interval (a few scrapes) would swing
# between 0 and spikes, so rates are taken over USAGE_WINDOW, which always holds a few polls.
USAGE_WINDOW = "15m"
BY_NS = "account_id, namespace_id, namespace_name"

# Unit prices of the "Estimated cost" panels: textbox variables, defaults from Cloudflare's
# Workers Paid plan, Durable Objects pricing page (docs/deploy.md, "Estimated cost", names
# the source and date). name -> (label, default).
PRICES: dict[str, tuple[str, str]] = {
    "price_requests": ("$ per million requests", "0.15"),
    "price_gb_s": ("$ per million GB-s", "12.50"),
    "price_rows_read": ("$ per million rows read", "0.001"),
    "price_rows_written": ("$ per million rows written", "1.00"),
    "price_gb_month": ("$ per GB-month stored", "0.20"),
}
MONTH_S = 30 * 86400  # Cloudflare's GB-month: averaged over a 30-day billing period


def usage_rate(counter: str, by: str = BY_NS) -> str:
    """Per-second rate of an analytics counter per namespace, de-duplicated across replicas."""
    return f"max by ({by}) (rate({P}{counter}{{{NS}}}[{USAGE_WINDOW}]))"


def usage_increase(counter: str, window: str = "$__range", by: str = BY_NS) -> str:
    return f"max by ({by}) (increase({P}{counter}{{{NS}}}[{window}]))"


def cost_parts() -> dict[str, str]:
    """Estimated $ per namespace over the dashboard's time range, by billing component."""
    return {
        "requests": f"{usage_increase('requests_total')} / 1e6 * $price_requests",
        "duration": f"{usage_increase('duration_gigabyte_seconds_total')} / 1e6 * $price_gb_s",
        "rows read": f"{usage_increase('rows_read_total')} / 1e6 * $price_rows_read",
        "rows written": f"{usage_increase('rows_written_total')} / 1e6 * $price_rows_written",
        "storage": f"max by ({BY_NS}) (avg_over_time({P}stored_bytes{{{NS}}}[$__range])) / 1e9"
        f" * $__range_s / {MONTH_S} * $price_gb_month",
    }


def cost_total() -> str:
    """Sum of the components per namespace (a component a namespace lacks counts as 0)."""
    parts = " or ".join(
        f'label_replace({expr}, "component", "{name}", "", "")'
        for name, expr in cost_parts().items()
    )
    return f"sum by ({BY_NS}) ({parts})"


def panels() -> list[dict[str, Any]]:
    lay = Layout()
    out: list[dict[str, Any]] = []

    # ---- Overview -------------------------------------------------------------------
    out.append(lay.row("Overview"))
    out.append(
        stat(
            lay,
            "Accounts",
            f"count(max by (account_id) ({P}namespaces{{{ACC}}}))",
            description="Cloudflare accounts the exporter reads.",
        )
    )
    out.append(
        stat(
            lay,
            "Namespaces",
            f"sum(max by (account_id) ({P}namespaces{{{ACC}}}))",
            description="Durable Object namespaces in the selected accounts.",
        )
    )
    out.append(
        stat(
            lay,
            "SQLite-backed namespaces",
            f"sum(max by (account_id) ({P}sqlite_namespaces{{{ACC}}})) "
            f"/ sum(max by (account_id) ({P}namespaces{{{ACC}}}))",
            unit="percentunit",
            description="Share of namespaces that use the SQLite storage backend.",
        )
    )
    out.append(
        stat(
            lay,
            "Objects",
            f"sum({objects()})",
            description="Durable Objects in the selected namespaces (last complete count).",
        )
    )
    out.append(
        stat(
            lay,
            "Objects with stored data",
            f"sum({objects('objects_with_stored_data')})",
            description="Durable Objects that have stored data.",
        )
    )
    out.append(
        stat(
            lay,
            "Objects with stored data (share)",
            f"sum({objects('objects_with_stored_data')}) / sum({objects()})",
            unit="percentunit",
            description="Objects with stored data as a share of all objects.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Objects by account",
            [target(f"sum by (account_id) ({objects()})", "{{account_id}}")],
            description="Durable Objects per account, summed over the selected namespaces.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Objects with stored data by account",
            [
                target(
                    f"sum by (account_id) ({objects('objects_with_stored_data')})", "{{account_id}}"
                )
            ],
            description="Durable Objects with stored data per account.",
        )
    )

    # ---- Per namespace --------------------------------------------------------------
    legend = "{{namespace_name}} ({{account_id}})"
    out.append(lay.row("Per namespace"))
    out.append(
        timeseries(
            lay,
            "Objects",
            [target(objects(), legend)],
            description="Durable Objects per namespace.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Objects with stored data",
            [target(objects("objects_with_stored_data"), legend)],
            description="Durable Objects with stored data per namespace.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Growth per hour",
            [
                target(
                    f"max by (account_id, namespace_id, namespace_name) "
                    f"(delta({P}objects{{{NS}}}[1h]))",
                    legend,
                )
            ],
            description="Objects gained (or lost, below zero) over the hour before each point.",
            min_zero=False,
        )
    )
    out.append(
        timeseries(
            lay,
            "Growth per day",
            [
                target(
                    f"max by (account_id, namespace_id, namespace_name) "
                    f"(delta({P}objects{{{NS}}}[1d]))",
                    legend,
                )
            ],
            description="Objects gained (or lost, below zero) over the day before each point.",
            min_zero=False,
        )
    )
    by_objects = top_set(objects())
    out.append(
        table(
            lay,
            "Top $topn namespaces by objects",
            [
                target(with_info(by_objects), ref="A", instant=True, table=True),
                target(
                    f"{objects('objects_with_stored_data')} and {by_objects}",
                    ref="B",
                    instant=True,
                    table=True,
                ),
                target(
                    f"max by (account_id, namespace_id, namespace_name) "
                    f"(delta({P}objects{{{NS}}}[1d])) and {by_objects}",
                    ref="C",
                    instant=True,
                    table=True,
                ),
            ],
            {
                "namespace_name": "Namespace",
                "account_id": "Account",
                "class": "Class",
                "script": "Script",
                "storage": "Storage",
                "Value #A": "Objects",
                "Value #B": "With stored data",
                "Value #C": "Growth (1 day)",
            },
            units={"Value #A": "short", "Value #B": "short", "Value #C": "short"},
            sort_by="Value #A",
            description="The largest namespaces, with class, script and storage backend "
            "from cloudflare_durable_objects_namespace_info.",
        )
    )
    growth = f"max by (account_id, namespace_id, namespace_name) (delta({P}objects{{{NS}}}[1d]))"
    by_growth = top_set(growth)
    out.append(
        table(
            lay,
            "Top $topn namespaces by growth (1 day)",
            [
                target(with_info(by_growth), ref="A", instant=True, table=True),
                target(
                    f"max by (account_id, namespace_id, namespace_name) "
                    f"(delta({P}objects{{{NS}}}[1h])) and {by_growth}",
                    ref="B",
                    instant=True,
                    table=True,
                ),
                target(f"{objects()} and {by_growth}", ref="C", instant=True, table=True),
            ],
            {
                "namespace_name": "Namespace",
                "account_id": "Account",
                "class": "Class",
                "script": "Script",
                "storage": "Storage",
                "Value #A": "Growth (1 day)",
                "Value #B": "Growth (1 hour)",
                "Value #C": "Objects",
            },
            units={"Value #A": "short", "Value #B": "short", "Value #C": "short"},
            sort_by="Value #A",
            description="The fastest growing namespaces over the last day.",
        )
    )

    # ---- Usage (analytics) ----------------------------------------------------------
    out.extend(usage_panels(lay, legend))
    out.extend(hot_object_panels(lay, legend))

    # ---- Exporter health ------------------------------------------------------------
    out.append(lay.row("Exporter health"))
    ok_mapping = [
        {
            "type": "value",
            "options": {
                "0": {"text": "failing", "color": "red", "index": 0},
                "1": {"text": "OK", "color": "green", "index": 1},
            },
        }
    ]
    out.append(
        stat(
            lay,
            "Last poll",
            f"min by (account_id) ({E}last_poll_success{{{ACC}}})",
            legend="{{account_id}}",
            mappings=ok_mapping,
            w=4,
            thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
            description="Whether the last poll of each account succeeded.",
        )
    )
    out.append(
        stat(
            lay,
            "Data age",
            f"time() - max by (account_id) ({E}last_poll_timestamp_seconds{{{ACC}}})",
            legend="{{account_id}}",
            unit="s",
            w=4,
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 600},
                {"color": "red", "value": 900},
            ],
            description="Time since the last successful poll of each account ended. The "
            "DurableObjectsExporterDataStale alert fires above 900 s.",
        )
    )
    out.append(
        stat(
            lay,
            "Oldest namespace count",
            f"max by (account_id) (time() - {E}namespace_last_success_timestamp_seconds{{{ACC}}})",
            legend="{{account_id}}",
            unit="s",
            w=4,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 3600}],
            description="Age of the oldest complete namespace count in each account.",
        )
    )
    out.append(
        stat(
            lay,
            "Exporter version",
            f"count by (version) ({E}build_info{{{JOB}}})",
            legend="{{version}}",
            w=4,
            description="Running exporter versions and how many instances run each.",
        )
    )
    out.append(
        stat(
            lay,
            "Analytics data age",
            f"time() - max by (account_id) ({E}analytics_watermark_timestamp_seconds{{{ACC}}})",
            legend="{{account_id}}",
            unit="s",
            w=4,
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 900},
                {"color": "red", "value": 1200},
            ],
            description="How far behind the usage analytics are: time since the end of the "
            "last counted window (the watermark). 300 to about 660 s is normal with the "
            "defaults (--analytics-delay 300 s, --interval 300 s); the "
            "DurableObjectsAnalyticsStale alert fires above 1200 s.",
        )
    )
    out.append(
        stat(
            lay,
            "Analytics skipped",
            f"max by (account_id) (increase({E}analytics_skipped_seconds_total{{{ACC}}}"
            "[$__range]))",
            legend="{{account_id}}",
            unit="s",
            w=4,
            thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
            description="Seconds of analytics given up in the time range (older than the "
            "plan lets the exporter query after a long outage): usage in them is not counted.",
        )
    )
    out.extend(token_panels(lay))
    out.append(
        timeseries(
            lay,
            "Poll duration",
            [
                target(
                    f"max by (account_id) ({E}last_poll_duration_seconds{{{ACC}}})",
                    "{{account_id}}",
                    "A",
                ),
                target(
                    f"max by (job, instance) ({E}full_refresh_seconds{{{JOB}}})",
                    "full refresh {{instance}}",
                    "B",
                ),
            ],
            unit="s",
            description="How long the last poll of each account took and, where the exporter "
            "reports it, how long a refresh of every namespace takes.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Polls per hour by result",
            [
                target(
                    f"sum by (account_id, result) (increase({E}polls_total{{{ACC}}}[1h]))",
                    "{{account_id}} {{result}}",
                )
            ],
            description="Polls in the hour before each point, by result.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Analytics queries per hour by result",
            [
                target(
                    f"max by (account_id, result) "
                    f"(increase({E}analytics_queries_total{{{ACC}}}[1h]))",
                    "{{account_id}} {{result}}",
                )
            ],
            description="GraphQL analytics queries in the hour before each point, by result "
            "(`denied`: the token lacks Account Analytics Read).",
        )
    )
    out.append(
        timeseries(
            lay,
            "API requests by code",
            [
                target(
                    f"sum by (endpoint, code) (rate({E}api_requests_total{{{JOB}}}"
                    "[$__rate_interval]))",
                    "{{endpoint}} {{code}}",
                )
            ],
            unit="reqps",
            stack=True,
            description="Requests to the Cloudflare API per second, by endpoint and HTTP status "
            "(`transport`: no response).",
        )
    )
    out.append(
        timeseries(
            lay,
            "API errors by code",
            [
                target(
                    f"sum by (endpoint, error_code) (rate({E}api_errors_total{{{JOB}}}"
                    "[$__rate_interval]))",
                    "{{endpoint}} {{error_code}}",
                )
            ],
            unit="cps",
            stack=True,
            description="Cloudflare API errors per second, by endpoint and Cloudflare error "
            "code (`transport`, `invalid_response` for answers that were not the "
            "API's).",
        )
    )
    out.append(
        timeseries(
            lay,
            "Rate-limited requests (HTTP 429)",
            [
                target(
                    f"sum by (instance, endpoint) (increase({E}api_requests_total"
                    f'{{{JOB}, code="429"}}[5m]))',
                    "{{instance}} {{endpoint}}",
                )
            ],
            description="HTTP 429 answers in the 5 minutes before each point. Any 429 blocks "
            "the token's user for up to 5 minutes.",
        )
    )
    out.append(
        timeseries(
            lay,
            "API rate limit remaining",
            [
                target(
                    f"min by (credential) ({E}api_ratelimit_remaining{{{JOB}}})",
                    "{{credential}}",
                )
            ],
            description="Requests left to each credential's API user in Cloudflare's current "
            "rate limit window, from the Ratelimit response header (the lowest any exporter "
            "instance saw: replicas sharing a credential share its budget).",
        )
    )
    out.append(
        timeseries(
            lay,
            "API request duration",
            [
                target(
                    f"histogram_quantile(0.5, sum by (endpoint, le) "
                    f"(rate({E}api_request_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p50 {{endpoint}}",
                    "A",
                ),
                target(
                    f"histogram_quantile(0.95, sum by (endpoint, le) "
                    f"(rate({E}api_request_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p95 {{endpoint}}",
                    "B",
                ),
            ],
            unit="s",
            description="Latency of Cloudflare API requests, by endpoint.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Scrape target up",
            [target(f"up{{{JOB}}}", "{{instance}}")],
            description="Whether Prometheus can scrape each exporter (1) or not (0).",
        )
    )
    return out


# The token's status as one number per credential, for a stat with a colour per status:
# token_status is 1 for the current status and 0 for the others, so the highest code wins.
TOKEN_CODES = {"unknown": 1, "disabled": 2, "expired": 3, "invalid": 4}  # active: 0


def token_panels(lay: Layout) -> list[dict[str, Any]]:
    """Exporter health: each credential's token status and the days left until it expires."""
    status = " or ".join(
        f'{E}token_status{{{JOB}, status="{name}"}} * {code}' for name, code in TOKEN_CODES.items()
    )
    colours = {"unknown": "orange", "disabled": "red", "expired": "red", "invalid": "red"}
    mapping = {"0": {"text": "active", "color": "green", "index": 0}} | {
        str(code): {"text": name, "color": colours[name], "index": code}
        for name, code in TOKEN_CODES.items()
    }
    return [
        stat(
            lay,
            "Token status",
            f"max by (credential) ({status})",
            legend="{{credential}}",
            mappings=[{"type": "value", "options": mapping}],
            w=6,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
            description="Each credential's API token as Cloudflare's verify endpoint last "
            "said (start-up, then hourly): active, disabled, expired, invalid (unknown to "
            "Cloudflare: revoked or mistyped) or unknown (not verified yet). The "
            "DurableObjectsExporterTokenInvalid alert fires on disabled, expired or invalid.",
        ),
        stat(
            lay,
            "Token days to expiry",
            f"(min by (credential) ({E}token_expiry_timestamp_seconds{{{JOB}}}) - time()) / 86400",
            legend="{{credential}}",
            unit="none",
            decimals=1,
            no_value="never expires",
            w=6,
            thresholds=[
                {"color": "red", "value": None},
                {"color": "orange", "value": 7},
                {"color": "green", "value": 14},
            ],
            description="Days until each credential's API token expires; a token without "
            "an expiry has no value. The DurableObjectsExporterTokenExpiringSoon alert fires "
            "under 14 days.",
        ),
    ]


HOT = "account_id, namespace_id, namespace_name, object_id"


def hot_object_panels(lay: Layout, legend: str) -> list[dict[str, Any]]:
    """The "Hot objects" row: the busiest objects, wall-time percentiles, requests by status."""
    out = [lay.row("Hot objects")]
    out.append(
        table(
            lay,
            "Busiest objects",
            [
                target(
                    f"topk($topn, max by ({HOT}) ({P}hot_object_requests_per_second{{{NS}}}))",
                    ref="A",
                    instant=True,
                    table=True,
                ),
                target(
                    f"topk($topn, max by ({HOT}) ({P}hot_object_cpu_ratio{{{NS}}}))",
                    ref="B",
                    instant=True,
                    table=True,
                ),
            ],
            {
                "namespace_name": "Namespace",
                "object_id": "Object id",
                "account_id": "Account",
                "Value #A": "Requests/s",
                "Value #B": "CPU ratio",
            },
            units={"Value #A": "reqps", "Value #B": "percentunit"},
            sort_by="Value #A",
            w=24,
            description="The objects with the most requests and the most CPU time in the "
            "last counted window (the top N per account the exporter keeps, --top-objects). "
            "Requests/s is the object's requests over the window divided by its length; the "
            "CPU ratio is its CPU seconds over the window divided by its length: the share "
            "of its single thread it kept busy (1 = saturated; the "
            "DurableObjectsObjectSaturated alert fires above 0.5). After a long catch-up "
            "window the figures are averages over that whole window.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Hottest object's CPU ratio by namespace",
            [target(f"max by ({BY_NS}) ({P}hot_object_cpu_ratio{{{NS}}})", legend)],
            unit="percentunit",
            description="The highest CPU ratio of any object of each namespace: how close "
            "its busiest object is to saturating its single thread (1 = saturated).",
        )
    )
    out.append(
        timeseries(
            lay,
            "Request wall time by namespace",
            [
                target(
                    f"max by ({BY_NS}, quantile) "
                    f'({P}request_wall_time_seconds{{{NS}, quantile=~"0.5|0.99"}})',
                    legend + " p{{quantile}}",
                    "A",
                ),
                target(
                    f"max by ({BY_NS}) ({P}request_wall_time_max_seconds{{{NS}}})",
                    legend + " max",
                    "B",
                ),
            ],
            unit="s",
            description="Cloudflare's wall-time percentiles (0.5 and 0.99 shown; 0.9 and "
            "0.999 are exported too) and the slowest request of each namespace over the last "
            "counted window. Quantiles cannot be averaged across windows: each point is one "
            "window's.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Requests per second by status",
            [
                target(
                    usage_rate("requests_by_status_total", by=BY_NS + ", status"),
                    legend + " {{status}}",
                )
            ],
            unit="reqps",
            stack=True,
            description="Requests to each namespace by invocation status as Cloudflare names "
            "it (success, clientDisconnected, scriptThrewException, ...): an error spike "
            "and clients going away look different here (a sampled estimate)."
            f" Averaged over {USAGE_WINDOW}: the counters move once per poll.",
        )
    )
    return out


def usage_panels(lay: Layout, legend: str) -> list[dict[str, Any]]:
    """The "Usage (analytics)" row: traffic, errors, compute, SQLite, storage, WebSockets, cost."""
    lag = (
        " From Cloudflare's GraphQL Analytics API: the counters lag by --analytics-delay "
        f"(300 s by default) and move once per poll, so rates are averaged over {USAGE_WINDOW}."
    )
    out = [lay.row("Usage (analytics)")]
    out.append(
        timeseries(
            lay,
            "Requests per second",
            [target(usage_rate("requests_total"), legend)],
            unit="reqps",
            description="Requests to each namespace's Durable Objects (Cloudflare samples "
            "this dataset: an estimate)." + lag,
        )
    )
    out.append(
        timeseries(
            lay,
            "Error ratio",
            [target(f"{usage_rate('errors_total')} / {usage_rate('requests_total')}", legend)],
            unit="percentunit",
            description="Share of each namespace's requests that ended in an error. The "
            "DurableObjectsErrorRatioHigh alert fires above 5% (at 0.1 requests/s or more)." + lag,
        )
    )
    out.append(
        timeseries(
            lay,
            "CPU seconds per second",
            [target(usage_rate("cpu_time_seconds_total"), legend)],
            description="CPU time of each namespace's Durable Objects per second of real time "
            "(1 = one CPU busy)." + lag,
        )
    )
    out.append(
        timeseries(
            lay,
            "Duration (GB-s per second)",
            [target(usage_rate("duration_gigabyte_seconds_total"), legend)],
            description="Billable duration in GB-seconds per second: wall-clock time of "
            "active objects x 128 MB." + lag,
        )
    )
    out.append(
        timeseries(
            lay,
            "SQLite rows read and written per second",
            [
                target(usage_rate("rows_read_total"), legend + " read", "A"),
                target(usage_rate("rows_written_total"), legend + " written", "B"),
            ],
            description="Rows read and written by SQLite-backed namespaces (key-value methods "
            "of SQLite-backed objects count as rows too)." + lag,
        )
    )
    out.append(
        timeseries(
            lay,
            "Failures by reason",
            [
                target(
                    usage_increase("failures_total", USAGE_WINDOW, by=BY_NS + ", reason"),
                    legend + " {{reason}}",
                )
            ],
            description=f"Invocations that failed on the CPU or memory limit or an internal "
            f"error, in the {USAGE_WINDOW} before each point. The DurableObjectsLimitFailures "
            "alert fires on any exceeded_cpu or exceeded_memory." + lag,
        )
    )
    out.append(
        timeseries(
            lay,
            "SQLite storage by namespace",
            [target(f"max by ({BY_NS}) ({P}stored_bytes{{{NS}}})", legend)],
            unit="decbytes",
            description="SQLite storage of each namespace (Cloudflare's latest per-minute "
            "figure). The DurableObjectsSqliteStorageGrowingFast alert watches its growth.",
        )
    )
    out.append(
        timeseries(
            lay,
            "Storage by account",
            [target(f"max by (account_id) ({P}account_stored_bytes{{{ACC}}})", "{{account_id}}")],
            unit="decbytes",
            description="Durable Objects storage of each account (Cloudflare's latest hourly "
            "figure).",
        )
    )
    out.append(
        timeseries(
            lay,
            "Busiest object's WebSocket connections",
            [target(f"max by ({BY_NS}) ({P}busiest_object_websocket_connections{{{NS}}})", legend)],
            description="The most WebSocket connections one object of each namespace held "
            "open at once during the last counted window: the busiest single object's peak, "
            "not the namespace's total (Cloudflare samples connections per object).",
        )
    )
    out.append(
        timeseries(
            lay,
            "WebSocket messages per second by direction",
            [
                target(
                    usage_rate("websocket_messages_total", by=BY_NS + ", direction"),
                    legend + " {{direction}}",
                )
            ],
            description="WebSocket messages received (inbound) and sent (outbound) by each "
            "namespace's objects." + lag,
        )
    )
    caveat = (
        " An estimate: list prices (the price variables at the top; Workers Paid defaults), "
        "before the plan's included allowances and the $5 minimum, requests as Cloudflare's "
        "sampled estimate. Incoming WebSocket messages to hibernating objects are already "
        "counted in requests, but priced here at the full request price (Cloudflare bills "
        "them at 20:1), so the estimate errs high for WebSocket-heavy namespaces; key-value "
        "storage operations are left out. Your invoice is the truth."
    )
    out.append(
        stat(
            lay,
            "Estimated cost (time range)",
            f"sum({cost_total()})",
            unit="currencyUSD",
            w=6,
            h=10,
            description="Estimated Durable Objects cost of the selected namespaces over the "
            "dashboard's time range: requests, duration (GB-s), SQLite rows read and written, "
            "and SQLite storage (GB-month)." + caveat,
        )
    )
    parts = cost_parts()
    refs = "BCDEF"
    out.append(
        table(
            lay,
            "Estimated cost by namespace (time range)",
            [target(cost_total(), ref="A", instant=True, table=True)]
            + [
                target(expr, ref=ref, instant=True, table=True)
                for ref, expr in zip(refs, parts.values(), strict=True)
            ],
            {
                "namespace_name": "Namespace",
                "account_id": "Account",
                "Value #A": "Total",
                **{
                    f"Value #{ref}": name.capitalize()
                    for ref, name in zip(refs, parts, strict=True)
                },
            },
            units={f"Value #{ref}": "currencyUSD" for ref in "A" + refs},
            sort_by="Value #A",
            w=18,
            description="The estimate per namespace and billing component over the "
            "dashboard's time range." + caveat,
        )
    )
    return out


def query_var(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,  # on time range change
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "regex": "",
    }


def price_var(name: str, label: str, default: str) -> dict[str, Any]:
    """A textbox variable holding a unit price, editable on the dashboard."""
    return {
        "type": "textbox",
        "name": name,
        "label": label,
        "query": default,
        "current": {"selected": False, "text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
        "description": "Unit price for the Estimated cost panels (USD). Default: Cloudflare "
        "Workers Paid list price for Durable Objects; see docs/deploy.md (Estimated cost).",
        "hide": 0,
    }


def dashboard() -> dict[str, Any]:
    return {
        "id": None,
        "uid": UID,
        "title": "Cloudflare Durable Objects",
        "description": "Durable Objects namespaces, object counts and growth, usage "
        "analytics and an estimated cost, from do-exporter; and the exporter's own health.",
        "tags": ["cloudflare", "durable-objects", "do-exporter"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [
            {
                "title": "do-exporter",
                "type": "link",
                "url": "https://github.com/do-exporter/do-exporter",
                "targetBlank": True,
                "icon": "doc",
            }
        ],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                query_var("job", "Job", f"label_values({E}build_info, job)"),
                query_var(
                    "account_id",
                    "Account",
                    f'label_values({P}namespaces{{job=~"$job"}}, account_id)',
                ),
                query_var(
                    "namespace_name",
                    "Namespace",
                    f"label_values({P}namespace_info{{{ACC}}}, namespace_name)",
                ),
                {
                    "type": "custom",
                    "name": "topn",
                    "label": "Top N",
                    "query": "5,10,20,50",
                    "current": {"selected": True, "text": "10", "value": "10"},
                    "options": [
                        {"selected": n == "10", "text": n, "value": n}
                        for n in ("5", "10", "20", "50")
                    ],
                    "multi": False,
                    "includeAll": False,
                    "hide": 0,
                },
                *(price_var(name, label, default) for name, (label, default) in PRICES.items()),
            ]
        },
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
