"""Reading GraphQL answers: validated once, at the edge.

Every id and text from an answer passes the same checks before it can reach a label: a
namespace id is 32 hex digits, an object id 64, a status one of :data:`STATUSES` (anything
else is ``other``). A row that fails is dropped and counted (``AccountUsage.dropped``),
never a crash and never a refused answer. Numbers must be finite, non-negative and below
2**63; a shape that is wrong (a dataset missing, a number that is not one) refuses the whole
answer, which is then never counted as a zero.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Collection, Mapping
from typing import Any, TypeGuard

from .answers import AccountUsage, AnalyticsError, HotObject, Latency, NamespaceUsage, frozen
from .query import (
    DATASETS,
    HOT_CPU,
    HOT_REQUESTS,
    INVOCATIONS,
    MAX_TOP_OBJECTS,
    PAGE_SIZE,
    PAGED,
    PERIODIC,
    QUANTILES,
    SQL_STORAGE,
    STATUS,
    STORAGE,
    status_limit,
)
from .windows import NodeLimits

MAX_BODY_BYTES = 32 * 1024 * 1024  # a one-page answer for 1,000 namespaces is ~1 MB
MAX_ID_LENGTH = 128  # longer than any id: refused before the pattern is even tried
MAX_VALUE = 2**63  # above this a "sum" is not a measurement but a broken answer
NAMESPACE_ID = re.compile(r"[0-9a-f]{32}")
OBJECT_ID = re.compile(r"[0-9a-f]{64}")
# Invocation statuses as Cloudflare names them (Workers' invocation statuses); any other
# value is exported as "other", so the label stays bounded whatever an answer says.
STATUSES = frozenset({
    "success", "clientDisconnected", "scriptThrewException", "exceededResources",
    "internalError", "responseStreamDisconnected", "canceled", "loadShed",
})  # fmt: skip
OTHER_STATUS = "other"
_STATUS_NAMES = {s: s for s in STATUSES}

# API field -> NamespaceUsage field, per dataset.
INVOCATION_SUMS = {
    "requests": "requests",
    "errors": "errors",
    "wallTime": "wall_time_us",
    "responseBodySize": "response_body_bytes",
}
PERIODIC_SUMS = {
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
FLOAT_FIELDS = frozenset({"duration_gb_s"})


def valid_namespace_id(value: Any) -> TypeGuard[str]:
    """A namespace id as Cloudflare writes it: 32 lower-case hex digits."""
    return isinstance(value, str) and len(value) == 32 and NAMESPACE_ID.fullmatch(value) is not None


def valid_object_id(value: Any) -> TypeGuard[str]:
    """A Durable Object id: 64 lower-case hex digits."""
    return isinstance(value, str) and len(value) == 64 and OBJECT_ID.fullmatch(value) is not None


def status_label(value: Any) -> str | None:
    """The ``status`` label for a value from an answer (None: not a string at all)."""
    if not isinstance(value, str):
        return None
    return _STATUS_NAMES.get(value, OTHER_STATUS)  # the one string of each name


def invalid(message: str, status: int | None = None) -> AnalyticsError:
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


def decode_answer(
    body: bytes | str | Mapping[str, Any], *, status: int = 200
) -> Mapping[str, Any] | AnalyticsError:
    """The decoded JSON document of a GraphQL answer, or why there is none.

    An error status makes an :class:`AnalyticsError` (``graphql`` when the body carries
    ``errors[]``, else ``http``); ``errors[]`` inside a 200 is left for the parsers.
    """
    doc: Mapping[str, Any]
    if isinstance(body, Mapping):
        doc = body
    elif not isinstance(body, bytes | str):  # a decoded document that is not an object
        return invalid("answer is not a JSON object", status)
    else:
        if len(body) > MAX_BODY_BYTES:
            return invalid(f"answer larger than {MAX_BODY_BYTES} bytes", status)
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            return invalid("answer is not JSON", status)
        if not isinstance(decoded, dict):
            return invalid("answer is not a JSON object", status)
        doc = decoded
    if status >= 400:
        errors = _graphql_errors(doc)
        if errors is not None:
            return AnalyticsError("graphql", "the answer carries errors", *errors, status=status)
        return AnalyticsError("http", f"HTTP {status} without GraphQL errors", status=status)
    return doc


def account_of(
    body: bytes | str | Mapping[str, Any], status: int = 200
) -> Mapping[str, Any] | AnalyticsError:
    """The one account object of a GraphQL answer, or why there is none."""
    doc = decode_answer(body, status=status)
    if isinstance(doc, AnalyticsError):
        return doc
    errors = _graphql_errors(doc)
    if errors is not None:
        codes, messages = errors
        return AnalyticsError(
            "graphql", "the answer carries errors", codes, messages, status=status
        )
    data = doc.get("data")
    viewer = data.get("viewer") if isinstance(data, dict) else None
    accounts = viewer.get("accounts") if isinstance(viewer, dict) else None
    if not isinstance(accounts, list) or len(accounts) != 1 or not isinstance(accounts[0], dict):
        return invalid("data.viewer.accounts is not a list of one account", status)
    account: Mapping[str, Any] = accounts[0]
    return account


def number(value: Any, *, integer: bool) -> int | float | None:
    """A sane measurement (finite, 0 <= value < 2**63), or None."""
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


Row = tuple[str, Mapping[str, Any]]


def _rows(
    account: Mapping[str, Any], alias: str, page_size: int
) -> tuple[list[Row], int, str | None] | AnalyticsError:
    """The rows of a paged alias with a valid namespace id, how many were dropped, and the
    last valid id when the page was full (more may follow)."""
    rows = account.get(alias)
    if not isinstance(rows, list):
        return invalid(f"{alias} ({DATASETS[alias]}) missing from the answer")
    if len(rows) > page_size:
        return invalid(f"{alias}: {len(rows)} rows for a page of {page_size}")
    out: list[Row] = []
    dropped = 0
    for row in rows:
        dims = row.get("dimensions") if isinstance(row, dict) else None
        ns_id = dims.get("namespaceId") if isinstance(dims, dict) else None
        if not valid_namespace_id(ns_id):
            dropped += 1
            continue
        out.append((sys.intern(ns_id), row))  # one string per namespace in every mapping
    full = len(rows) >= page_size
    if full and not out:
        return invalid(f"{alias}: a full page without one usable namespaceId")
    return out, dropped, (out[-1][0] if full else None)


def _sums(
    row: Mapping[str, Any],
    part: str,
    names: Mapping[str, str],
    alias: str,
    *,
    integer: bool | None = None,
) -> dict[str, int | float] | AnalyticsError:
    block = row.get(part)
    if not isinstance(block, dict):
        return invalid(f"{alias}: a row without {part}")
    out: dict[str, int | float] = {}
    for api_name, ours in names.items():
        whole = ours not in FLOAT_FIELDS if integer is None else integer
        value = number(block.get(api_name), integer=whole)
        if value is None:
            return invalid(f"{alias}: {part}.{api_name} is not a sane number")
        out[ours] = value
    return out


def parse_analytics(
    body: bytes | str | Mapping[str, Any],
    *,
    status: int = 200,
    page_size: int = PAGE_SIZE,
    require: Collection[str] = (),
    status_page_size: int | None = None,
) -> AccountUsage | AnalyticsError:
    """One page of the usage query's answer, or why it cannot be counted.

    ``errors[]`` makes the whole answer a failure, even in an HTTP 200 and even with partial
    ``data``. The base datasets must be present, and so must the aliases in ``require``
    (the optional ones the request asked for: ``status``, ``hotRequests``, ``hotCpu``); a
    dataset with more rows than asked for is refused. A dataset that filled its page means
    more namespaces follow: ``next_after`` is then the smallest of the last ids of the full
    datasets (rows seen twice are de-duplicated by :meth:`AccountUsage.merge`). The
    ``status`` alias has pages of ``status_page_size`` rows (default: :func:`status_limit`).
    """
    account = account_of(body, status)
    if isinstance(account, AnalyticsError):
        return account
    got = _paged(account, page_size, require)
    if isinstance(got, AnalyticsError):
        return got
    paged, dropped, last_ids = got
    usage = _usage(paged)
    websockets = _maxes(paged[PERIODIC], "activeWebsocketConnections", PERIODIC)
    stored = _maxes(paged[SQL_STORAGE], "storedBytes", SQL_STORAGE)
    latency = _latency(paged[INVOCATIONS])
    account_bytes = _account_storage(account)
    statuses = _statuses(account, status_page_size or status_limit(page_size))
    hot_req = _hot(account, HOT_REQUESTS, "requests")
    hot_cpu = _hot(account, HOT_CPU, "cpuTime")
    for part in (usage, websockets, stored, latency, account_bytes, statuses, hot_req, hot_cpu):
        if isinstance(part, AnalyticsError):
            return part
    # No error is left (the loop returned it); said again for the type checker:
    assert not isinstance(usage, AnalyticsError) and not isinstance(websockets, AnalyticsError)
    assert not isinstance(stored, AnalyticsError) and not isinstance(latency, AnalyticsError)
    assert not isinstance(account_bytes, AnalyticsError)
    assert not isinstance(statuses, AnalyticsError)
    assert not isinstance(hot_req, AnalyticsError) and not isinstance(hot_cpu, AnalyticsError)
    by_status, n, last = statuses
    dropped += n + hot_req[1] + hot_cpu[1]
    last_ids += [last] if last is not None else []
    return AccountUsage(
        usage=usage,
        websockets=websockets,
        stored_bytes=stored,
        account_stored_bytes=account_bytes,
        next_after=min(last_ids) if last_ids else None,
        latency=latency,
        statuses=by_status,
        hot_requests=hot_req[0],
        hot_cpu=hot_cpu[0],
        dropped=dropped,
    )


def _paged(
    account: Mapping[str, Any], page_size: int, require: Collection[str]
) -> tuple[dict[str, list[Row]], int, list[str]] | AnalyticsError:
    """The rows of the paged datasets, the rows dropped, and the last ids of full pages."""
    missing = [a for a in require if not isinstance(account.get(a), list)]
    if missing:
        return invalid(f"{missing[0]} ({DATASETS.get(missing[0], '?')}) missing from the answer")
    paged: dict[str, list[Row]] = {}
    dropped = 0
    last_ids: list[str] = []
    for alias in PAGED:
        got = _rows(account, alias, page_size)
        if isinstance(got, AnalyticsError):
            return got
        paged[alias], n, last = got
        dropped += n
        last_ids += [last] if last is not None else []
    return paged, dropped, last_ids


def _usage(paged: Mapping[str, list[Row]]) -> Mapping[str, NamespaceUsage] | AnalyticsError:
    usage: dict[str, dict[str, int | float]] = {}
    for alias, names in ((INVOCATIONS, INVOCATION_SUMS), (PERIODIC, PERIODIC_SUMS)):
        for ns_id, row in paged[alias]:
            sums = _sums(row, "sum", names, alias)
            if isinstance(sums, AnalyticsError):
                return sums
            usage.setdefault(ns_id, {}).update(sums)
    built = {ns: NamespaceUsage(**values) for ns, values in usage.items()}  # type: ignore[arg-type]
    return frozen(built)


def _maxes(rows: list[Row], api_name: str, alias: str) -> Mapping[str, int] | AnalyticsError:
    out: dict[str, int] = {}
    for ns_id, row in rows:
        got = _sums(row, "max", {api_name: "v"}, alias)
        if isinstance(got, AnalyticsError):
            return got
        out[ns_id] = int(got["v"])
    return frozen(out)


def _latency(rows: list[Row]) -> Mapping[str, Latency] | AnalyticsError:
    """Wall-time percentiles per namespace, when the rows carry them (the latency group)."""
    out: dict[str, Latency] = {}
    labels = {api: label for label, api in QUANTILES}
    for ns_id, row in rows:
        if "quantiles" not in row:
            continue
        values = _sums(row, "quantiles", labels, INVOCATIONS, integer=False)
        if isinstance(values, AnalyticsError):
            return values
        top = _sums(row, "max", {"wallTime": "max"}, INVOCATIONS, integer=False)
        if isinstance(top, AnalyticsError):
            return top
        out[ns_id] = Latency(frozen(values), float(top["max"]))
    return frozen(out)


def _statuses(
    account: Mapping[str, Any], page_size: int
) -> tuple[Mapping[str, Mapping[str, int]], int, str | None] | AnalyticsError:
    """Requests per namespace and status. A full page may have cut the last namespace's
    statuses short: its rows are left for the next page, which starts after the namespace
    before it."""
    if STATUS not in account:
        return frozen(), 0, None
    got = _rows(account, STATUS, page_size)
    if isinstance(got, AnalyticsError):
        return got
    rows, dropped, last = got
    if last is not None:
        rows = [r for r in rows if r[0] != last]
        if not rows:
            return invalid(f"{STATUS}: one namespace has more statuses than a page holds")
        last = rows[-1][0]
    out: dict[str, dict[str, int]] = {}
    for ns_id, row in rows:
        dims = row.get("dimensions")
        label = status_label(dims.get("status") if isinstance(dims, dict) else None)
        if label is None:
            dropped += 1
            continue
        sums = _sums(row, "sum", {"requests": "requests"}, STATUS)
        if isinstance(sums, AnalyticsError):
            return sums
        per = out.setdefault(ns_id, {})
        per[label] = per.get(label, 0) + int(sums["requests"])
    return frozen({ns: frozen(v) for ns, v in out.items()}), dropped, last


def _hot(
    account: Mapping[str, Any], alias: str, api_name: str
) -> tuple[tuple[HotObject, ...] | None, int] | AnalyticsError:
    """The busiest objects of an alias, in the order served (None: not asked for)."""
    rows = account.get(alias)
    if rows is None and alias not in account:
        return None, 0
    if not isinstance(rows, list) or len(rows) > MAX_TOP_OBJECTS:
        return invalid(f"{alias}: not a list of at most {MAX_TOP_OBJECTS} rows")
    out: list[HotObject] = []
    dropped = 0
    seen: set[tuple[str, str]] = set()
    for row in rows:
        dims = row.get("dimensions") if isinstance(row, dict) else None
        dims = dims if isinstance(dims, dict) else {}
        ns_id, obj = dims.get("namespaceId"), dims.get("objectId")
        if not valid_namespace_id(ns_id) or not valid_object_id(obj) or (ns_id, obj) in seen:
            dropped += 1
            continue
        sums = _sums(row, "sum", {api_name: "v"}, alias)
        if isinstance(sums, AnalyticsError):
            return sums
        seen.add((ns_id, obj))
        out.append(HotObject(sys.intern(ns_id), obj, int(sums["v"])))
    return tuple(out), dropped


def _account_storage(account: Mapping[str, Any]) -> int | AnalyticsError | None:
    rows = account.get(STORAGE)
    if not isinstance(rows, list) or len(rows) > 1:
        return invalid(f"{STORAGE} ({DATASETS[STORAGE]}) missing or more than one row")
    if not rows:
        return None
    row = rows[0]
    got = _sums(row if isinstance(row, dict) else {}, "max", {"storedBytes": "b"}, STORAGE)
    return got if isinstance(got, AnalyticsError) else int(got["b"])


_SETTINGS_DATASETS = (
    "durableObjectsInvocationsAdaptiveGroups",
    "durableObjectsPeriodicGroups",
    "durableObjectsSqlStorageGroups",
    "durableObjectsStorageGroups",
)


def parse_settings(
    body: bytes | str | Mapping[str, Any], *, status: int = 200
) -> NodeLimits | AnalyticsError:
    """The most restrictive limits of the four datasets, from the ``settings`` query."""
    account = account_of(body, status)
    if isinstance(account, AnalyticsError):
        return account
    settings = account.get("settings")
    if not isinstance(settings, dict):
        return invalid("settings missing from the answer")
    limits: list[NodeLimits] = []
    for dataset in _SETTINGS_DATASETS:
        node = settings.get(dataset)
        if not isinstance(node, dict):
            return invalid(f"settings.{dataset} missing")
        numbers = [number(node.get(k), integer=True) for k in ("maxDuration", "notOlderThan")]
        page = number(node.get("maxPageSize"), integer=True)
        if any(n is None for n in numbers) or page is None:
            return invalid(f"settings.{dataset}: limits are not sane numbers")
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

