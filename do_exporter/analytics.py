"""Durable Objects usage analytics (Cloudflare's GraphQL Analytics API), as pure functions.

Nothing here does I/O or reads a clock: the poller sends what :func:`build_request` gives,
hands the answer to :func:`parse_analytics`, and folds the result into an immutable
:class:`AnalyticsState` with :func:`advance` (or :func:`record_failure`). :func:`families`
turns states into metric families. See ``docs/analytics.md`` for the query, the window rule,
the units and the limits.

The window rule, in one place (:func:`next_window`): a poll asks for the whole closed
minutes ``[watermark, floor_minute(now - delay))``; the first window is the last
``interval`` of closed minutes; the watermark moves only when a complete answer was applied,
so a failed poll is caught up by the next one. Minutes older than the plan allows
(``notOlderThan``), or beyond the widest range one query may ask (``maxDuration``), are given
up and counted as skipped seconds.

Example of what :func:`families` produces (one account, one namespace)::

    # HELP cloudflare_durable_objects_requests_total Requests to the namespace's Durable Objects (sampled dataset: an estimate).
    # TYPE cloudflare_durable_objects_requests_total counter
    cloudflare_durable_objects_requests_total{account_id="0123...",namespace_id="ab12...",namespace_name="counter"} 5230.0
    # HELP cloudflare_durable_objects_cpu_time_seconds_total CPU time of the namespace's Durable Objects.
    # TYPE cloudflare_durable_objects_cpu_time_seconds_total counter
    cloudflare_durable_objects_cpu_time_seconds_total{account_id="0123...",namespace_id="ab12...",namespace_name="counter"} 10.46
    # HELP cloudflare_durable_objects_websocket_messages_total WebSocket messages, by direction.
    # TYPE cloudflare_durable_objects_websocket_messages_total counter
    cloudflare_durable_objects_websocket_messages_total{account_id="0123...",direction="inbound",namespace_id="ab12...",namespace_name="counter"} 120.0
    # HELP cloudflare_durable_objects_stored_bytes SQLite storage of the namespace, bytes (latest window that reported it).
    # TYPE cloudflare_durable_objects_stored_bytes gauge
    cloudflare_durable_objects_stored_bytes{account_id="0123...",namespace_id="ab12...",namespace_name="counter"} 9.8e+07
    # HELP cloudflare_durable_objects_exporter_analytics_watermark_timestamp_seconds End of the last counted analytics window (Unix time).
    # TYPE cloudflare_durable_objects_exporter_analytics_watermark_timestamp_seconds gauge
    cloudflare_durable_objects_exporter_analytics_watermark_timestamp_seconds{account_id="0123..."} 1.7172e+09
    ...
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .model import Namespace

PREFIX = "cloudflare_durable_objects"
SELF = f"{PREFIX}_exporter"
NS_LABELS = ["account_id", "namespace_id", "namespace_name"]

MINUTE = 60
PAGE_SIZE = 1000  # rows per dataset per page: an account holds at most ~500 namespaces
MAX_PAGES = 20  # pagination guard (20,000 namespaces)
MAX_BODY_BYTES = 32 * 1024 * 1024  # a one-page answer for 1,000 namespaces is ~1 MB
MAX_ID_LENGTH = 128  # a namespace id is 32 hex characters
MAX_VALUE = 2**63  # above this a "sum" is not a measurement but a broken answer

# Query results, pre-created so each reads 0 from the start. "denied": the token lacks
# Account Analytics Read (the poller decides; it is not a failure of the account).
RESULTS = ("success", "failure", "denied")

# The aliases of the query, and the Cloudflare datasets they read.
INVOCATIONS = "invocations"
PERIODIC = "periodic"
SQL_STORAGE = "sqlStorage"
STORAGE = "storage"
DATASETS = {
    INVOCATIONS: "durableObjectsInvocationsAdaptiveGroups",
    PERIODIC: "durableObjectsPeriodicGroups",
    SQL_STORAGE: "durableObjectsSqlStorageGroups",
    STORAGE: "durableObjectsStorageGroups",
}
_PAGED = (INVOCATIONS, PERIODIC, SQL_STORAGE)

# One query per account per poll. Every dataset is an alias, grouped by namespaceId only,
# over the whole minutes [start, end). Pages: namespaceId ascending, after $after ("" first).
# The account-level storage is the latest hourly figure in the two hours up to $end.
QUERY = """\
query DurableObjectsUsage(
  $accountTag: string!
  $start: Time!
  $end: Time!
  $storageStart: Time!
  $after: string!
  $limit: uint64!
) {
  viewer {
    accounts(filter: {accountTag: $accountTag}) {
      invocations: durableObjectsInvocationsAdaptiveGroups(
        filter: {datetimeMinute_geq: $start, datetimeMinute_lt: $end, namespaceId_gt: $after}
        limit: $limit
        orderBy: [namespaceId_ASC]
      ) {
        dimensions { namespaceId }
        sum { requests errors wallTime responseBodySize }
      }
      periodic: durableObjectsPeriodicGroups(
        filter: {datetimeMinute_geq: $start, datetimeMinute_lt: $end, namespaceId_gt: $after}
        limit: $limit
        orderBy: [namespaceId_ASC]
      ) {
        dimensions { namespaceId }
        sum {
          cpuTime activeTime duration rowsRead rowsWritten
          storageReadUnits storageWriteUnits storageDeletes
          inboundWebsocketMsgCount outboundWebsocketMsgCount subrequests
          exceededCpuErrors exceededMemoryErrors fatalInternalErrors
        }
        max { activeWebsocketConnections }
      }
      sqlStorage: durableObjectsSqlStorageGroups(
        filter: {datetimeMinute_geq: $start, datetimeMinute_lt: $end, namespaceId_gt: $after}
        limit: $limit
        orderBy: [namespaceId_ASC]
      ) {
        dimensions { namespaceId }
        max { storedBytes }
      }
      storage: durableObjectsStorageGroups(
        filter: {datetimeHour_geq: $storageStart, datetimeHour_lt: $end}
        limit: 1
        orderBy: [datetimeHour_DESC]
      ) {
        dimensions { datetimeHour }
        max { storedBytes }
      }
    }
  }
}
"""

# The plan's limits for the datasets above (the most restrictive of them).
SETTINGS_QUERY = """\
query DurableObjectsLimits($accountTag: string!) {
  viewer {
    accounts(filter: {accountTag: $accountTag}) {
      settings {
        durableObjectsInvocationsAdaptiveGroups { ...limits }
        durableObjectsPeriodicGroups { ...limits }
        durableObjectsSqlStorageGroups { ...limits }
        durableObjectsStorageGroups { ...limits }
      }
    }
  }
}

fragment limits on Settings {
  enabled
  maxDuration
  notOlderThan
  maxPageSize
}
"""


# ---------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """A plan's limits for the analytics datasets (seconds, rows).

    The defaults are assumptions until ``settings`` is read (:func:`parse_settings`): one day
    per query and seven days back, well inside what Cloudflare documents for its examples.
    """

    max_duration: int = 86_400
    not_older_than: int = 7 * 86_400
    max_page_size: int = 10_000
    enabled: bool = True


DEFAULT_LIMITS = NodeLimits()


@dataclass(frozen=True, slots=True)
class Window:
    """Whole minutes ``[start, end)`` (Unix seconds); ``skipped`` seconds before ``start``
    were given up (older than the plan allows, or more than one query may span)."""

    start: int
    end: int
    skipped: int = 0

    @property
    def seconds(self) -> int:
        return self.end - self.start


def floor_minute(t: float) -> int:
    """The start of the minute holding ``t`` (Unix seconds)."""
    return math.floor(t / MINUTE) * MINUTE


def ceil_minute(t: float) -> int:
    return math.ceil(t / MINUTE) * MINUTE


def next_window(
    watermark: int | None,
    now: float,
    *,
    delay: float,
    interval: float,
    limits: NodeLimits = DEFAULT_LIMITS,
) -> Window | None:
    """The window a poll at ``now`` asks for, or None when no new minute has closed.

    ``end`` is ``floor_minute(now - delay)``. Without a watermark (the first poll) ``start``
    is ``end`` minus ``interval`` rounded up to whole minutes. With one, ``start`` is the
    watermark, moved forward (and the gap counted in ``skipped``) when it is older than
    ``notOlderThan`` allows (one minute of margin for the request's own travel) or when the
    window would be wider than ``maxDuration`` (the newest ``maxDuration`` is kept).
    """
    end = floor_minute(now - delay)
    if watermark is None:
        minutes = max(1, math.ceil(interval / MINUTE))
        start = end - minutes * MINUTE
    else:
        start = watermark
    if start >= end:
        return None
    skipped = 0
    oldest = ceil_minute(now - limits.not_older_than + MINUTE)
    widest = end - max(MINUTE, floor_minute(limits.max_duration))
    floor = max(oldest, widest)
    if start < floor:
        if watermark is not None:
            skipped = min(floor, end) - start
        start = floor
    if start >= end:
        return Window(end, end, skipped) if skipped else None
    return Window(start, end, skipped)


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_request(
    account_id: str, window: Window, *, after: str = "", page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    """The JSON body of ``POST /graphql`` for one page of one account's window."""
    storage_start = (window.end // 3600) * 3600 - 3600
    return {
        "query": QUERY,
        "variables": {
            "accountTag": account_id,
            "start": _iso(window.start),
            "end": _iso(window.end),
            "storageStart": _iso(storage_start),
            "after": after,
            "limit": page_size,
        },
    }


def settings_request(account_id: str) -> dict[str, Any]:
    """The JSON body of ``POST /graphql`` that reads the plan's limits."""
    return {"query": SETTINGS_QUERY, "variables": {"accountTag": account_id}}


# ---------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True, slots=True)
class NamespaceUsage:
    """Sums for one namespace over one or more windows, in the API's own units.

    Integers stay integers (µs, counts, bytes), so cumulative counters never drift; the
    ``*_seconds`` properties convert at the edge.
    """

    requests: int = 0
    errors: int = 0
    wall_time_us: int = 0
    response_body_bytes: int = 0
    cpu_time_us: int = 0
    active_time_us: int = 0
    duration_gb_s: float = 0.0
    rows_read: int = 0
    rows_written: int = 0
    storage_read_units: int = 0
    storage_write_units: int = 0
    storage_deletes: int = 0
    websocket_inbound: int = 0
    websocket_outbound: int = 0
    subrequests: int = 0
    exceeded_cpu: int = 0
    exceeded_memory: int = 0
    fatal_internal: int = 0

    def __add__(self, other: NamespaceUsage) -> NamespaceUsage:
        return NamespaceUsage(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(NamespaceUsage))
        )

    @property
    def wall_time_seconds(self) -> float:
        return self.wall_time_us / 1e6

    @property
    def cpu_time_seconds(self) -> float:
        return self.cpu_time_us / 1e6

    @property
    def active_time_seconds(self) -> float:
        return self.active_time_us / 1e6


# API field -> NamespaceUsage field, per dataset.
_INVOCATION_SUMS = {
    "requests": "requests",
    "errors": "errors",
    "wallTime": "wall_time_us",
    "responseBodySize": "response_body_bytes",
}
_PERIODIC_SUMS = {
    "cpuTime": "cpu_time_us",
    "activeTime": "active_time_us",
    "duration": "duration_gb_s",
    "rowsRead": "rows_read",
    "rowsWritten": "rows_written",
    "storageReadUnits": "storage_read_units",
    "storageWriteUnits": "storage_write_units",
    "storageDeletes": "storage_deletes",
    "inboundWebsocketMsgCount": "websocket_inbound",
    "outboundWebsocketMsgCount": "websocket_outbound",
    "subrequests": "subrequests",
    "exceededCpuErrors": "exceeded_cpu",
    "exceededMemoryErrors": "exceeded_memory",
    "fatalInternalErrors": "fatal_internal",
}
_FLOAT_FIELDS = frozenset({"duration_gb_s"})


def _frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True, slots=True)
class AccountUsage:
    """One complete answer (all its pages) for one account and one window.

    ``websockets`` is the max of active WebSocket connections per namespace in the window;
    ``stored_bytes`` the max SQLite storage per namespace; ``account_stored_bytes`` the
    account's latest hourly storage (None when the window reported none). ``next_after`` is
    the ``after`` of the next page, None when the answer is complete.
    """

    usage: Mapping[str, NamespaceUsage] = field(default_factory=_frozen)
    websockets: Mapping[str, int] = field(default_factory=_frozen)
    stored_bytes: Mapping[str, int] = field(default_factory=_frozen)
    account_stored_bytes: int | None = None
    next_after: str | None = None

    def merge(self, page: AccountUsage) -> AccountUsage:
        """This answer plus the next page (a namespace already seen keeps its first rows)."""

        def union(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any]:
            return _frozen({**b, **a})

        return AccountUsage(
            usage=union(self.usage, page.usage),
            websockets=union(self.websockets, page.websockets),
            stored_bytes=union(self.stored_bytes, page.stored_bytes),
            account_stored_bytes=(
                self.account_stored_bytes
                if self.account_stored_bytes is not None
                else page.account_stored_bytes
            ),
            next_after=page.next_after,
        )


@dataclass(frozen=True, slots=True)
class AnalyticsError:
    """An answer that cannot be counted: never a zero.

    ``kind``: ``graphql`` (``errors[]`` in the body, whatever the status and whatever
    partial ``data`` came with it), ``http`` (an error status without GraphQL errors) or
    ``invalid_response`` (not JSON, wrong shapes, absurd sizes). ``codes`` are the errors'
    ``extensions.code`` (``"unknown"`` when absent).
    """

    kind: str
    message: str
    codes: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    status: int | None = None

    @property
    def permission_denied(self) -> bool:
        """The token cannot read this account's analytics (Account Analytics Read missing)."""
        if self.status == 403 or "authz" in self.codes:
            return True
        return any(
            "not authorized" in m.lower() or "does not have access" in m.lower()
            for m in self.messages
        )

    @property
    def error_codes(self) -> tuple[str, ...]:
        """Labels for the exporter's error counter: the codes, else the kind."""
        return self.codes or (self.kind,)


def _invalid(message: str, status: int | None = None) -> AnalyticsError:
    return AnalyticsError("invalid_response", message, status=status)


def _graphql_errors(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    raw = doc.get("errors")
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        return ("unknown",), ("errors is not a list",)
    codes: list[str] = []
    messages: list[str] = []
    for item in raw[:20]:
        item = item if isinstance(item, dict) else {}
        ext = item.get("extensions")
        code = ext.get("code") if isinstance(ext, dict) else None
        codes.append(str(code)[:100] if isinstance(code, str | int) else "unknown")
        messages.append(str(item.get("message", ""))[:300])
    return tuple(codes), tuple(messages)


def _decode(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any] | AnalyticsError:
    if isinstance(body, Mapping):
        return body
    if len(body) > MAX_BODY_BYTES:
        return _invalid(f"answer larger than {MAX_BODY_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return _invalid("answer is not JSON")
    if not isinstance(doc, dict):
        return _invalid("answer is not a JSON object")
    return doc


def _account(
    body: bytes | str | Mapping[str, Any], status: int
) -> Mapping[str, Any] | AnalyticsError:
    """The one account object of a GraphQL answer, or why there is none."""
    doc = _decode(body)
    if isinstance(doc, AnalyticsError):
        return replace(doc, status=status)
    errors = _graphql_errors(doc)
    if errors is not None:
        codes, messages = errors
        return AnalyticsError(
            "graphql", "the answer carries errors", codes, messages, status=status
        )
    if status >= 400:
        return AnalyticsError("http", f"HTTP {status} without GraphQL errors", status=status)
    data = doc.get("data")
    viewer = data.get("viewer") if isinstance(data, dict) else None
    accounts = viewer.get("accounts") if isinstance(viewer, dict) else None
    if not isinstance(accounts, list) or len(accounts) != 1 or not isinstance(accounts[0], dict):
        return _invalid("data.viewer.accounts is not a list of one account", status)
    account: Mapping[str, Any] = accounts[0]
    return account


def _number(value: Any, *, integer: bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):  # 64-bit scalars may come as strings
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            return None
    if isinstance(value, float) and integer and value.is_integer():
        value = int(value)
    if integer and not isinstance(value, int):
        return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if not 0 <= value < MAX_VALUE:
        return None
    return value


def _rows(
    account: Mapping[str, Any], alias: str, page_size: int
) -> list[tuple[str, Mapping[str, Any]]] | AnalyticsError:
    rows = account.get(alias)
    if not isinstance(rows, list):
        return _invalid(f"{alias} ({DATASETS[alias]}) missing from the answer")
    if len(rows) > page_size:
        return _invalid(f"{alias}: {len(rows)} rows for a page of {page_size}")
    out: list[tuple[str, Mapping[str, Any]]] = []
    for row in rows:
        dims = row.get("dimensions") if isinstance(row, dict) else None
        ns_id = dims.get("namespaceId") if isinstance(dims, dict) else None
        if not isinstance(ns_id, str) or not 0 < len(ns_id) <= MAX_ID_LENGTH:
            return _invalid(f"{alias}: a row without a usable namespaceId")
        out.append((ns_id, row))
    return out


def _sums(
    row: Mapping[str, Any], part: str, names: Mapping[str, str], alias: str
) -> dict[str, int | float] | AnalyticsError:
    block = row.get(part)
    if not isinstance(block, dict):
        return _invalid(f"{alias}: a row without {part}")
    out: dict[str, int | float] = {}
    for api_name, ours in names.items():
        value = _number(block.get(api_name), integer=ours not in _FLOAT_FIELDS)
        if value is None:
            return _invalid(f"{alias}: {part}.{api_name} is not a sane number")
        out[ours] = value
    return out


def parse_analytics(
    body: bytes | str | Mapping[str, Any], *, status: int = 200, page_size: int = PAGE_SIZE
) -> AccountUsage | AnalyticsError:
    """One page of the usage query's answer, or why it cannot be counted.

    ``errors[]`` makes the whole answer a failure, even in an HTTP 200 and even with partial
    ``data``. Every dataset must be present; every number must be finite, non-negative and
    below 2**63; a dataset with more rows than asked for is refused. A dataset that filled
    its page means more namespaces follow: ``next_after`` is then the smallest of the last
    ids of the full datasets (rows seen twice are de-duplicated by :meth:`AccountUsage.merge`).
    """
    account = _account(body, status)
    if isinstance(account, AnalyticsError):
        return account
    paged: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for alias in _PAGED:
        rows = _rows(account, alias, page_size)
        if isinstance(rows, AnalyticsError):
            return rows
        paged[alias] = rows

    usage: dict[str, dict[str, int | float]] = {}
    for alias, part, names in (
        (INVOCATIONS, "sum", _INVOCATION_SUMS),
        (PERIODIC, "sum", _PERIODIC_SUMS),
    ):
        for ns_id, row in paged[alias]:
            sums = _sums(row, part, names, alias)
            if isinstance(sums, AnalyticsError):
                return sums
            usage.setdefault(ns_id, {}).update(sums)
    websockets: dict[str, int] = {}
    for ns_id, row in paged[PERIODIC]:
        got = _sums(row, "max", {"activeWebsocketConnections": "ws"}, PERIODIC)
        if isinstance(got, AnalyticsError):
            return got
        websockets[ns_id] = int(got["ws"])
    stored: dict[str, int] = {}
    for ns_id, row in paged[SQL_STORAGE]:
        got = _sums(row, "max", {"storedBytes": "bytes"}, SQL_STORAGE)
        if isinstance(got, AnalyticsError):
            return got
        stored[ns_id] = int(got["bytes"])

    account_bytes = _account_storage(account)
    if isinstance(account_bytes, AnalyticsError):
        return account_bytes
    full = [rows[-1][0] for rows in paged.values() if rows and len(rows) >= page_size]
    return AccountUsage(
        usage=_frozen({ns: NamespaceUsage(**values) for ns, values in usage.items()}),  # type: ignore[arg-type]
        websockets=_frozen(websockets),
        stored_bytes=_frozen(stored),
        account_stored_bytes=account_bytes,
        next_after=min(full) if full else None,
    )


def _account_storage(account: Mapping[str, Any]) -> int | AnalyticsError | None:
    rows = account.get(STORAGE)
    if not isinstance(rows, list) or len(rows) > 1:
        return _invalid(f"{STORAGE} ({DATASETS[STORAGE]}) missing or more than one row")
    if not rows:
        return None
    row = rows[0]
    got = _sums(row if isinstance(row, dict) else {}, "max", {"storedBytes": "b"}, STORAGE)
    return got if isinstance(got, AnalyticsError) else int(got["b"])


def parse_settings(
    body: bytes | str | Mapping[str, Any], *, status: int = 200
) -> NodeLimits | AnalyticsError:
    """The most restrictive limits of the four datasets, from :data:`SETTINGS_QUERY`."""
    account = _account(body, status)
    if isinstance(account, AnalyticsError):
        return account
    settings = account.get("settings")
    if not isinstance(settings, dict):
        return _invalid("settings missing from the answer")
    limits: list[NodeLimits] = []
    for dataset in DATASETS.values():
        node = settings.get(dataset)
        if not isinstance(node, dict):
            return _invalid(f"settings.{dataset} missing")
        numbers = [_number(node.get(k), integer=True) for k in ("maxDuration", "notOlderThan")]
        page = _number(node.get("maxPageSize"), integer=True)
        if any(n is None for n in numbers) or page is None:
            return _invalid(f"settings.{dataset}: limits are not sane numbers")
        limits.append(
            NodeLimits(
                max_duration=int(numbers[0] or 0),
                not_older_than=int(numbers[1] or 0),
                max_page_size=int(page),
                enabled=node.get("enabled") is True,
            )
        )
    return NodeLimits(
        max_duration=min(x.max_duration for x in limits),
        not_older_than=min(x.not_older_than for x in limits),
        max_page_size=min(x.max_page_size for x in limits),
        enabled=all(x.enabled for x in limits),
    )


# ---------------------------------------------------------------------------------------
# State


def _results() -> Mapping[str, int]:
    return _frozen(dict.fromkeys(RESULTS, 0))


@dataclass(frozen=True, slots=True)
class AnalyticsState:
    """What the exporter knows of one account's usage; replaced whole, never mutated.

    ``watermark``: end of the last counted window (None before the first). ``first_start``:
    start of the first counted window; counters hold exactly the sums over
    ``[first_start, watermark)`` less the ``skipped_seconds`` given up. Gauges are the last
    value a window reported for the namespace.
    """

    account_id: str
    watermark: int | None = None
    first_start: int | None = None
    counters: Mapping[str, NamespaceUsage] = field(default_factory=_frozen)
    websockets: Mapping[str, int] = field(default_factory=_frozen)
    stored_bytes: Mapping[str, int] = field(default_factory=_frozen)
    account_stored_bytes: int | None = None
    skipped_seconds: int = 0
    queries: Mapping[str, int] = field(default_factory=_results)
    last_success_at: float | None = None
    last_error: AnalyticsError | None = None


def _bump(queries: Mapping[str, int], result: str) -> Mapping[str, int]:
    return _frozen({**queries, result: queries.get(result, 0) + 1})


def advance(
    state: AnalyticsState, window: Window, usage: AccountUsage, *, now: float
) -> AnalyticsState:
    """Count one complete answer for ``window`` (pure).

    The window must start at the watermark (or, on the first poll, anywhere): a window that
    would overlap or leave a silent gap is a bug in the caller and raises ``ValueError``.
    """
    if usage.next_after is not None:
        raise ValueError("an incomplete answer (more pages follow) cannot be counted")
    if state.watermark is not None and window.start - window.skipped != state.watermark:
        raise ValueError(
            f"window [{window.start}, {window.end}) skipping {window.skipped}s does not "
            f"continue the watermark {state.watermark}"
        )
    counters = dict(state.counters)
    for ns_id, sums in usage.usage.items():
        before = counters.get(ns_id)
        counters[ns_id] = sums if before is None else before + sums
    return replace(
        state,
        watermark=window.end,
        first_start=window.start if state.first_start is None else state.first_start,
        counters=_frozen(counters),
        websockets=_frozen({**state.websockets, **usage.websockets}),
        stored_bytes=_frozen({**state.stored_bytes, **usage.stored_bytes}),
        account_stored_bytes=(
            usage.account_stored_bytes
            if usage.account_stored_bytes is not None
            else state.account_stored_bytes
        ),
        skipped_seconds=state.skipped_seconds + window.skipped,
        queries=_bump(state.queries, "success"),
        last_success_at=now,
        last_error=None,
    )


def skip(state: AnalyticsState, window: Window) -> AnalyticsState:
    """Give up ``window`` whole (nothing of it can be asked any more): it is counted as
    skipped and the watermark passes it."""
    if state.watermark is None:
        return state
    return replace(
        state,
        watermark=window.end,
        skipped_seconds=state.skipped_seconds + window.skipped + window.seconds,
    )


def record_failure(
    state: AnalyticsState, error: AnalyticsError | None = None, *, denied: bool = False
) -> AnalyticsState:
    """A query that gave no countable answer: counters, gauges and watermark stay."""
    return replace(
        state,
        queries=_bump(state.queries, "denied" if denied else "failure"),
        last_error=error,
    )


def forget(state: AnalyticsState, namespace_ids: Iterable[str]) -> AnalyticsState:
    """Drop the series of namespaces gone from the inventory."""
    gone = set(namespace_ids)
    if not gone:
        return state

    def keep(m: Mapping[str, Any]) -> Mapping[str, Any]:
        return _frozen({k: v for k, v in m.items() if k not in gone})

    return replace(
        state,
        counters=keep(state.counters),
        websockets=keep(state.websockets),
        stored_bytes=keep(state.stored_bytes),
    )


# ---------------------------------------------------------------------------------------
# Metric families

# (metric name without _total, help, NamespaceUsage attribute or property)
_COUNTERS: tuple[tuple[str, str, str], ...] = (
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
    ("duration_gb_seconds", "Billable duration, GB-seconds.", "duration_gb_s"),
    ("rows_read", "SQLite rows read (SQLite-backed namespaces).", "rows_read"),
    ("rows_written", "SQLite rows written (SQLite-backed namespaces).", "rows_written"),
    ("storage_read_units", "Storage reads in 4 KB units (key-value-backed namespaces).",
     "storage_read_units"),
    ("storage_write_units", "Storage writes in 4 KB units (key-value-backed namespaces).",
     "storage_write_units"),
    ("storage_deletes", "Storage deletes (key-value-backed namespaces).", "storage_deletes"),
    ("subrequests", "Subrequests made by the namespace's Durable Objects.", "subrequests"),
)  # fmt: skip
_FAILURE_REASONS = (
    ("exceeded_cpu", "exceeded_cpu"),
    ("exceeded_memory", "exceeded_memory"),
    ("fatal_internal", "fatal_internal"),
)


def empty_families() -> list[Metric]:
    """Every analytics family, without samples (for ``describe()``)."""
    return _build([], {})


def families(
    states: Iterable[AnalyticsState],
    namespaces: Mapping[str, Sequence[Namespace]] | None = None,
) -> list[Metric]:
    """The analytics families for some accounts' states (pure; no I/O, no clock).

    ``namespaces`` maps an account id to its namespace list, for ``namespace_name`` (``""``
    for a namespace the list does not hold). Counters appear once a window was counted; no
    ``_created`` samples.
    """
    return _build(list(states), namespaces or {})


def _build(
    states: list[AnalyticsState], namespaces: Mapping[str, Sequence[Namespace]]
) -> list[Metric]:
    counters = {
        name: CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=NS_LABELS)
        for name, doc, _ in _COUNTERS
    }
    ws_messages = CounterMetricFamily(
        f"{PREFIX}_websocket_messages",
        "WebSocket messages, by direction.",
        labels=[*NS_LABELS, "direction"],
    )
    failures = CounterMetricFamily(
        f"{PREFIX}_failures",
        "Invocations that failed on a limit or an internal error, by reason.",
        labels=[*NS_LABELS, "reason"],
    )
    g = GaugeMetricFamily
    ws = g(
        f"{PREFIX}_active_websocket_connections",
        "Max active WebSocket connections in the last window that reported the namespace.",
        labels=NS_LABELS,
    )
    stored = g(
        f"{PREFIX}_stored_bytes",
        "SQLite storage of the namespace, bytes (latest window that reported it).",
        labels=NS_LABELS,
    )
    account_stored = g(
        f"{PREFIX}_account_stored_bytes",
        "Durable Objects storage of the account, bytes (latest hourly figure).",
        labels=["account_id"],
    )
    watermark = g(
        f"{SELF}_analytics_watermark_timestamp_seconds",
        "End of the last counted analytics window (Unix time).",
        labels=["account_id"],
    )
    last_success = g(
        f"{SELF}_analytics_last_success_timestamp_seconds",
        "Unix time of the last analytics answer that was counted.",
        labels=["account_id"],
    )
    queries = CounterMetricFamily(
        f"{SELF}_analytics_queries",
        "Analytics queries of the account, by result (success|failure|denied).",
        labels=["account_id", "result"],
    )
    skipped = CounterMetricFamily(
        f"{SELF}_analytics_skipped_seconds",
        "Seconds of analytics given up as uncountable (older than the plan allows).",
        labels=["account_id"],
    )
    for state in states:
        acc = state.account_id
        names = {ns.id: ns.name or "" for ns in namespaces.get(acc, ())}
        for result in RESULTS:
            queries.add_metric([acc, result], float(state.queries.get(result, 0)))
        skipped.add_metric([acc], float(state.skipped_seconds))
        if state.watermark is None:
            continue
        watermark.add_metric([acc], float(state.watermark))
        if state.last_success_at is not None:
            last_success.add_metric([acc], state.last_success_at)
        if state.account_stored_bytes is not None:
            account_stored.add_metric([acc], float(state.account_stored_bytes))
        for ns_id in sorted(state.counters):
            usage = state.counters[ns_id]
            labels = [acc, ns_id, names.get(ns_id, "")]
            for name, _, attr in _COUNTERS:
                counters[name].add_metric(labels, float(getattr(usage, attr)))
            ws_messages.add_metric([*labels, "inbound"], float(usage.websocket_inbound))
            ws_messages.add_metric([*labels, "outbound"], float(usage.websocket_outbound))
            for reason, attr in _FAILURE_REASONS:
                failures.add_metric([*labels, reason], float(getattr(usage, attr)))
        for ns_id in sorted(state.websockets):
            ws.add_metric([acc, ns_id, names.get(ns_id, "")], float(state.websockets[ns_id]))
        for ns_id in sorted(state.stored_bytes):
            stored.add_metric([acc, ns_id, names.get(ns_id, "")], float(state.stored_bytes[ns_id]))
    return [
        *counters.values(),
        ws_messages,
        failures,
        ws,
        stored,
        account_stored,
        watermark,
        last_success,
        queries,
        skipped,
    ]
