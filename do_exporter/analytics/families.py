"""Analytics states as Prometheus metric families (pure: no I/O, no clock).

The names, help texts and labels below are the contract that
``do_exporter/metrics/contract.py`` declares; once it is merged the builders read it.

Example (one account, one namespace; ``NS`` stands for its three labels)::

    cloudflare_durable_objects_requests_total{NS} 5230.0
    cloudflare_durable_objects_requests_by_status_total{...,status="success"} 5180.0
    cloudflare_durable_objects_request_wall_time_seconds{...,quantile="0.99"} 0.048
    cloudflare_durable_objects_hot_object_cpu_ratio{...,object_id="9f3e..."} 0.62
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .query import QUANTILES
from .state import RESULTS, AnalyticsState


class Named(Protocol):
    """A namespace as the inventory knows it (``model.Namespace`` fits)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str | None: ...


PREFIX = "cloudflare_durable_objects"
SELF = f"{PREFIX}_exporter"
NS_LABELS = ["account_id", "namespace_id", "namespace_name"]
OBJECT_LABELS = [*NS_LABELS, "object_id"]

# (metric name without _total, help, NamespaceUsage attribute or property)
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("requests", "Requests to the namespace's Durable Objects (sampled dataset: an estimate).",
     "requests"),
    ("errors", "Requests that ended in an error (sampled dataset: an estimate).", "errors"),
    ("wall_time_seconds", "Wall time of requests (sampled dataset: an estimate).",
     "wall_time_seconds"),
    ("response_body_bytes", "Bytes of response bodies (sampled dataset: an estimate).",
     "response_body_bytes"),
    ("cpu_time_seconds", "CPU time of the namespace's Durable Objects.", "cpu_time_seconds"),
    ("active_time_seconds", "Active (billable wall-clock) time of the namespace's Durable "
     "Objects.", "active_time_seconds"),
    ("duration_gigabyte_seconds", "Billable duration, gigabyte-seconds (128 MB per active "
     "object).", "duration_gb_s"),
    ("rows_read", "SQLite rows read (SQLite-backed namespaces).", "rows_read"),
    ("rows_written", "SQLite rows written (SQLite-backed namespaces).", "rows_written"),
    ("storage_read_units", "Storage reads in 4 KB units (key-value-backed namespaces).",
     "storage_read_units"),
    ("storage_write_units", "Storage writes in 4 KB units (key-value-backed namespaces).",
     "storage_write_units"),
    ("storage_deletes", "Storage deletes (key-value-backed namespaces).", "storage_deletes"),
    ("subrequests", "Subrequests made by the namespace's Durable Objects.", "subrequests"),
)  # fmt: skip
FAILURE_REASONS = (
    ("exceeded_cpu", "exceeded_cpu"),
    ("exceeded_memory", "exceeded_memory"),
    ("fatal_internal", "fatal_internal"),
)


def empty_families() -> list[Metric]:
    """Every analytics family, without samples (for ``describe()``)."""
    return _build([], {})


def families(
    states: Iterable[AnalyticsState],
    namespaces: Mapping[str, Sequence[Named]] | None = None,
) -> list[Metric]:
    """The analytics families for some accounts' states.

    ``namespaces`` maps an account id to its namespace list, for ``namespace_name`` (``""``
    for a namespace the list does not hold). Counters appear once a window was counted; no
    ``_created`` samples.
    """
    return _build(list(states), namespaces or {})


def _new() -> dict[str, Metric]:
    c, g = CounterMetricFamily, GaugeMetricFamily
    out: dict[str, Metric] = {
        name: c(f"{PREFIX}_{name}", doc, labels=NS_LABELS) for name, doc, _ in COUNTERS
    }
    out |= {
        "by_status": c(f"{PREFIX}_requests_by_status", "Requests by invocation status as "
                       "Cloudflare names it (other: a status not known to the exporter; "
                       "sampled dataset: an estimate).", labels=[*NS_LABELS, "status"]),
        "ws_messages": c(f"{PREFIX}_websocket_messages", "WebSocket messages, by direction.",
                         labels=[*NS_LABELS, "direction"]),
        "failures": c(f"{PREFIX}_failures", "Invocations that failed on a limit or an "
                      "internal error, by reason.", labels=[*NS_LABELS, "reason"]),
        "ws": g(f"{PREFIX}_busiest_object_websocket_connections", "Peak active WebSocket "
                "connections of the namespace's busiest single object in the last window that "
                "reported the namespace (not a namespace total).", labels=NS_LABELS),
        "stored": g(f"{PREFIX}_stored_bytes", "SQLite storage of the namespace, bytes (latest "
                    "window that reported it).", labels=NS_LABELS),
        "wall_q": Metric(f"{PREFIX}_request_wall_time_seconds", "Wall time of the "
                         "namespace's requests: percentiles over the last counted window; "
                         "_sum and _count since the exporter started (sampled dataset: an "
                         "estimate).", "summary"),
        "wall_max": g(f"{PREFIX}_request_wall_time_max_seconds", "Wall time of the "
                      "namespace's slowest request in the last counted window.",
                      labels=NS_LABELS),
        "hot_rps": g(f"{PREFIX}_hot_object_requests_per_second", "Requests per second of one "
                     "of the account's top-N objects by requests, over the last counted "
                     "window.", labels=OBJECT_LABELS),
        "hot_cpu": g(f"{PREFIX}_hot_object_cpu_ratio", "CPU seconds per second of one of the "
                     "account's top-N objects by CPU over the last counted window (1: its "
                     "single thread saturated).", labels=OBJECT_LABELS),
        "account_stored": g(f"{PREFIX}_account_stored_bytes", "Durable Objects storage of the "
                            "account, bytes (latest hourly figure).", labels=["account_id"]),
        "watermark": g(f"{SELF}_analytics_watermark_timestamp_seconds", "End of the last "
                       "counted analytics window (Unix time).", labels=["account_id"]),
        "last_success": g(f"{SELF}_analytics_last_success_timestamp_seconds", "Unix time of "
                          "the last analytics answer that was counted.", labels=["account_id"]),
        "queries": c(f"{SELF}_analytics_queries", "Analytics queries of the account, by result "
                     "(success|failure|denied).", labels=["account_id", "result"]),
        "skipped": c(f"{SELF}_analytics_skipped_seconds", "Seconds of analytics given up as "
                     "uncountable (older than the plan allows).", labels=["account_id"]),
        "dropped": c(f"{SELF}_analytics_dropped_rows", "Rows of analytics answers refused at "
                     "the edge (malformed ids or text).", labels=["account_id"]),
    }  # fmt: skip
    return out


def _build(
    states: list[AnalyticsState], namespaces: Mapping[str, Sequence[Named]]
) -> list[Metric]:
    fams = _new()
    for state in states:
        names = {ns.id: ns.name or "" for ns in namespaces.get(state.account_id, ())}
        _account(fams, state)
        if state.watermark is not None:
            _namespaces(fams, state, names)
            _hot(fams, state, names)
    return list(fams.values())


def _account(fams: Mapping[str, Metric], state: AnalyticsState) -> None:
    acc = [state.account_id]
    add = {k: f.add_metric for k, f in fams.items() if k != "wall_q"}  # type: ignore[attr-defined]
    for result in RESULTS:
        add["queries"]([*acc, result], float(state.queries.get(result, 0)))
    add["skipped"](acc, float(state.skipped_seconds))
    add["dropped"](acc, float(state.dropped_rows))
    if state.watermark is None:
        return
    add["watermark"](acc, float(state.watermark))
    if state.last_success_at is not None:
        add["last_success"](acc, state.last_success_at)
    if state.account_stored_bytes is not None:
        add["account_stored"](acc, float(state.account_stored_bytes))


def _namespaces(
    fams: Mapping[str, Metric], state: AnalyticsState, names: Mapping[str, str]
) -> None:
    def labels(ns_id: str) -> list[str]:
        return [state.account_id, ns_id, names.get(ns_id, "")]

    add = {k: f.add_metric for k, f in fams.items() if k != "wall_q"}  # type: ignore[attr-defined]
    for ns_id in sorted(state.counters):
        usage, ls = state.counters[ns_id], labels(ns_id)
        for name, _, attr in COUNTERS:
            add[name](ls, float(getattr(usage, attr)))
        add["ws_messages"]([*ls, "inbound"], float(usage.websocket_inbound))
        add["ws_messages"]([*ls, "outbound"], float(usage.websocket_outbound))
        for reason, attr in FAILURE_REASONS:
            add["failures"]([*ls, reason], float(getattr(usage, attr)))
    for ns_id in sorted(state.statuses):
        for status, count in sorted(state.statuses[ns_id].items()):
            add["by_status"]([*labels(ns_id), status], float(count))
    for ns_id in sorted(state.websockets):
        add["ws"](labels(ns_id), float(state.websockets[ns_id]))
    for ns_id in sorted(state.stored_bytes):
        add["stored"](labels(ns_id), float(state.stored_bytes[ns_id]))
    wall = fams["wall_q"]
    for ns_id in sorted(state.latency):
        lat, named = state.latency[ns_id], dict(zip(NS_LABELS, labels(ns_id), strict=True))
        for label, _ in QUANTILES:
            if label in lat.quantiles:
                value = lat.quantiles[label] / 1e6
                wall.add_sample(wall.name, {**named, "quantile": label}, value)
        usage = state.counters.get(ns_id)
        if usage is not None:
            wall.add_sample(wall.name + "_sum", named, usage.wall_time_seconds)
            wall.add_sample(wall.name + "_count", named, float(usage.requests))
        add["wall_max"](labels(ns_id), lat.max_us / 1e6)


def _hot(fams: Mapping[str, Metric], state: AnalyticsState, names: Mapping[str, str]) -> None:
    hot = state.hot
    if hot.seconds <= 0:
        return
    for key, objs, scale in (("hot_rps", hot.requests, 1.0), ("hot_cpu", hot.cpu, 1e-6)):
        for obj in objs:
            labels = [state.account_id, obj.namespace_id, names.get(obj.namespace_id, ""),
                      obj.object_id]  # fmt: skip
            value = obj.value * scale / hot.seconds
            fams[key].add_metric(labels, value)  # type: ignore[attr-defined]
