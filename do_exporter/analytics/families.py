"""Analytics states as metric families (pure: no I/O, no clock).

Names, help texts, types and labels are the contract's (``do_exporter/metrics/contract.py``,
:data:`~do_exporter.metrics.contract.ANALYTICS_FAMILIES`). :func:`family_rows` hands one
account's rows to the renderer (the seam ``metrics/usage.py`` uses): every analytics family
in contract order, each with its rows ``(label values, value)`` produced lazily, labels in
the family's order. :func:`families` builds prometheus-client objects from the same rows
(tests, ``describe()``, benchmarks comparing with ``generate_latest``).

Example (one account, one namespace; ``NS`` stands for its three labels)::

    cloudflare_durable_objects_requests_total{NS} 5230.0
    cloudflare_durable_objects_requests_by_status_total{...,status="success"} 5180.0
    cloudflare_durable_objects_request_wall_time_seconds{...,quantile="0.99"} 0.048
    cloudflare_durable_objects_hot_object_cpu_ratio{...,object_id="9f3e..."} 0.62
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from ..metrics import contract as c
from .query import QUANTILES
from .state import RESULTS, AnalyticsState

if TYPE_CHECKING:  # imported when objects are built (tests), not by the daemon (memory)
    from prometheus_client.metrics_core import Metric


class Named(Protocol):
    """A namespace as the inventory knows it (``model.Namespace`` fits)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str | None: ...


PREFIX = c.PREFIX
SELF = c.SELF
NS_LABELS = list(c.NS_LABELS)
OBJECT_LABELS = list(c.OBJECT_LABELS)

Row = tuple[Sequence[str], float]
# A summary's row: label values without ``quantile``, the quantiles (label, value), and
# ``(sum, count)`` when known.
SummaryRow = tuple[Sequence[str], Sequence[tuple[str, float]], tuple[float, float] | None]

# (contract family, NamespaceUsage attribute or property), in contract order
COUNTERS: tuple[tuple[c.Family, str], ...] = (
    (c.REQUESTS, "requests"), (c.ERRORS, "errors"), (c.WALL_TIME, "wall_time_seconds"),
    (c.RESPONSE_BODY_BYTES, "response_body_bytes"), (c.CPU_TIME, "cpu_time_seconds"),
    (c.ACTIVE_TIME, "active_time_seconds"), (c.DURATION, "duration_gb_s"),
    (c.ROWS_READ, "rows_read"), (c.ROWS_WRITTEN, "rows_written"),
    (c.STORAGE_READ_UNITS, "storage_read_units"),
    (c.STORAGE_WRITE_UNITS, "storage_write_units"), (c.STORAGE_DELETES, "storage_deletes"),
    (c.SUBREQUESTS, "subrequests"),
)  # fmt: skip
FAILURE_REASONS = (
    ("exceeded_cpu", "exceeded_cpu"),
    ("exceeded_memory", "exceeded_memory"),
    ("fatal_internal", "fatal_internal"),
)


class _Rows:
    """One account's rows, family by family (label values built on demand)."""

    def __init__(self, state: AnalyticsState, namespaces: Iterable[Named]) -> None:
        self.state = state
        self.names = {ns.id: ns.name or "" for ns in namespaces}
        self.counted = state.watermark is not None

    def labels(self, ns_id: str) -> tuple[str, str, str]:
        return (self.state.account_id, ns_id, self.names.get(ns_id, ""))

    def counter(self, attr: str) -> Iterator[Row]:
        counters = self.state.counters
        for ns_id in sorted(counters):
            yield self.labels(ns_id), float(getattr(counters[ns_id], attr))

    def by_status(self) -> Iterator[Row]:
        statuses = self.state.statuses
        for ns_id in sorted(statuses):
            ls = self.labels(ns_id)
            for status, count in sorted(statuses[ns_id].items()):
                yield (*ls, status), float(count)

    def ws_messages(self) -> Iterator[Row]:
        counters = self.state.counters
        for ns_id in sorted(counters):
            usage, ls = counters[ns_id], self.labels(ns_id)
            yield (*ls, "inbound"), float(usage.websocket_inbound)
            yield (*ls, "outbound"), float(usage.websocket_outbound)

    def failures(self) -> Iterator[Row]:
        counters = self.state.counters
        for ns_id in sorted(counters):
            usage, ls = counters[ns_id], self.labels(ns_id)
            for reason, attr in FAILURE_REASONS:
                yield (*ls, reason), float(getattr(usage, attr))

    def gauge(self, values: Mapping[str, int]) -> Iterator[Row]:
        for ns_id in sorted(values):
            yield self.labels(ns_id), float(values[ns_id])

    def wall_quantiles(self) -> Iterator[SummaryRow]:
        latency, counters = self.state.latency, self.state.counters
        for ns_id in sorted(latency):
            lat = latency[ns_id]
            qs = [(q, lat.quantiles[q] / 1e6) for q, _ in QUANTILES if q in lat.quantiles]
            usage = counters.get(ns_id)
            total = None if usage is None else (usage.wall_time_seconds, float(usage.requests))
            yield self.labels(ns_id), qs, total

    def wall_max(self) -> Iterator[Row]:
        latency = self.state.latency
        for ns_id in sorted(latency):
            yield self.labels(ns_id), latency[ns_id].max_us / 1e6

    def hot(self, which: str, scale: float) -> Iterator[Row]:
        hot = self.state.hot
        if hot.seconds <= 0:
            return
        for obj in getattr(hot, which):
            ns_id = obj.namespace_id
            yield (*self.labels(ns_id), obj.object_id), obj.value * scale / hot.seconds

    def account(self) -> Iterator[tuple[c.Family, Iterable[Row]]]:
        state, acc = self.state, (self.state.account_id,)
        counted = self.counted
        stored, mark, last = state.account_stored_bytes, state.watermark, state.last_success_at
        has_stored = counted and stored is not None
        yield c.ACCOUNT_STORED_BYTES, [(acc, float(stored))] if has_stored else []  # type: ignore[arg-type]
        yield c.ANALYTICS_WATERMARK, [(acc, float(mark))] if mark is not None else []
        yield c.ANALYTICS_LAST_SUCCESS, [(acc, last)] if counted and last is not None else []
        yield c.ANALYTICS_QUERIES, [((*acc, r), float(state.queries.get(r, 0))) for r in RESULTS]
        yield c.ANALYTICS_SKIPPED, [(acc, float(state.skipped_seconds))]
        yield c.ANALYTICS_DROPPED_ROWS, [(acc, float(state.dropped_rows))]


def family_rows(
    state: AnalyticsState, namespaces: Iterable[Named] = ()
) -> Iterator[tuple[c.Family, Iterable[Row] | Iterable[SummaryRow]]]:
    """Every analytics family of one account, in contract order, with its rows (lazy: a
    family's rows are made when they are iterated). ``namespaces``: the account's namespace
    list, for ``namespace_name`` (``""`` for a namespace it does not hold). The summary
    family's rows are :data:`SummaryRow` s. No usage rows before a counted window."""
    r = _Rows(state, namespaces)
    counted = r.counted
    none: tuple[Row, ...] = ()
    for family, attr in COUNTERS:
        yield family, r.counter(attr) if counted else none
    yield c.REQUESTS_BY_STATUS, r.by_status() if counted else none
    yield c.WEBSOCKET_MESSAGES, r.ws_messages() if counted else none
    yield c.FAILURES, r.failures() if counted else none
    yield c.BUSIEST_OBJECT_WEBSOCKETS, r.gauge(state.websockets) if counted else none
    yield c.STORED_BYTES, r.gauge(state.stored_bytes) if counted else none
    yield c.WALL_TIME_QUANTILES, r.wall_quantiles() if counted else none
    yield c.WALL_TIME_MAX, r.wall_max() if counted else none
    yield c.HOT_OBJECT_REQUESTS, r.hot("requests", 1.0) if counted else none
    yield c.HOT_OBJECT_CPU, r.hot("cpu", 1e-6) if counted else none
    yield from r.account()


# ---- prometheus-client objects (tests, describe(), comparisons with generate_latest) ----


def _metric(family: c.Family) -> Metric:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric

    labels = list(family.labels)
    if family.type == "counter":
        return CounterMetricFamily(family.name[: -len("_total")], family.help, labels=labels)
    if family.type == "gauge":
        return GaugeMetricFamily(family.name, family.help, labels=labels)
    return Metric(family.name, family.help, family.type)


def _adder(family: c.Family, metric: Metric) -> Callable[[object], None]:
    if family.type != "summary":
        add_metric = metric.add_metric  # type: ignore[attr-defined]
        return lambda row: add_metric(list(row[0]), row[1])  # type: ignore[index]

    def add(row: object) -> None:
        values, quantiles, total = cast(
            "tuple[Sequence[str], Iterable[tuple[str, float]], tuple[float, float] | None]", row
        )
        named = dict(zip(family.labels, values, strict=False))
        for label, value in quantiles:
            metric.add_sample(family.name, {**named, "quantile": label}, value)
        if total is not None:
            metric.add_sample(family.name + "_sum", named, total[0])
            metric.add_sample(family.name + "_count", named, total[1])

    return add


def empty_families() -> list[Metric]:
    """Every analytics family, without samples (for ``describe()``)."""
    return [_metric(f) for f in c.ANALYTICS_FAMILIES]


def families(
    states: Iterable[AnalyticsState],
    namespaces: Mapping[str, Sequence[Named]] | None = None,
) -> list[Metric]:
    """The analytics families for some accounts' states, as prometheus-client objects.

    ``namespaces`` maps an account id to its namespace list, for ``namespace_name`` (``""``
    for a namespace the list does not hold). Counters appear once a window was counted; no
    ``_created`` samples.
    """
    out = {f.name: _metric(f) for f in c.ANALYTICS_FAMILIES}
    adders = {f.name: _adder(f, out[f.name]) for f in c.ANALYTICS_FAMILIES}
    for state in states:
        for family, rows in family_rows(state, (namespaces or {}).get(state.account_id, ())):
            add = adders[family.name]
            for row in rows:
                add(row)
    return list(out.values())
