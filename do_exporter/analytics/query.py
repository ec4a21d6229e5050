"""The GraphQL text the exporter sends: one usage query per account per poll, and the
``settings`` query that reads the plan's limits.

Every dataset is an alias of the one query, over the whole minutes ``[start, end)``:

- ``invocations``, ``periodic``, ``sqlStorage``: grouped by ``namespaceId``, paged by
  ``namespaceId`` ascending after ``$after`` (``""`` first); the invocations alias carries
  the wall-time quantiles and maximum when the ``latency`` group is on;
- ``status``: requests grouped by ``(namespaceId, status)``, paged the same way;
- ``storage``: the account's latest hourly storage in the two hours up to ``$end``;
- ``hotRequests`` / ``hotCpu`` (first page only, ``top_objects`` > 0 and the
  ``hot_objects`` group on): the ``$top`` objects of the account with the most requests /
  the most CPU time over the window, grouped by ``(namespaceId, objectId)``.

So the top-N costs no extra request: the steady state is one request per account per poll
(plus the hourly ``settings`` query).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ..metrics.groups import GROUPS, HOT_OBJECTS, LATENCY, USAGE
from .windows import Window

PAGE_SIZE = 1000  # rows per dataset per page: an account holds at most ~500 namespaces
MAX_PAGES = 20  # pagination guard (20,000 namespaces)
DEFAULT_TOP_OBJECTS = 10
MAX_TOP_OBJECTS = 100
STATUS_ROWS = 10  # status rows a page allows per namespace (Cloudflare names fewer statuses)

# The aliases of the query, and the Cloudflare datasets they read.
INVOCATIONS = "invocations"
PERIODIC = "periodic"
SQL_STORAGE = "sqlStorage"
STORAGE = "storage"
STATUS = "status"
HOT_REQUESTS = "hotRequests"
HOT_CPU = "hotCpu"
DATASETS = {
    INVOCATIONS: "durableObjectsInvocationsAdaptiveGroups",
    PERIODIC: "durableObjectsPeriodicGroups",
    SQL_STORAGE: "durableObjectsSqlStorageGroups",
    STORAGE: "durableObjectsStorageGroups",
    STATUS: "durableObjectsInvocationsAdaptiveGroups",
    HOT_REQUESTS: "durableObjectsInvocationsAdaptiveGroups",
    HOT_CPU: "durableObjectsPeriodicGroups",
}
PAGED = (INVOCATIONS, PERIODIC, SQL_STORAGE)
QUANTILES = (("0.5", "wallTimeP50"), ("0.9", "wallTimeP90"), ("0.99", "wallTimeP99"),
             ("0.999", "wallTimeP999"))  # fmt: skip

_PAGE_FILTER = "{datetimeMinute_geq: $start, datetimeMinute_lt: $end, namespaceId_gt: $after}"
_WINDOW_FILTER = "{datetimeMinute_geq: $start, datetimeMinute_lt: $end}"
_LATENCY_FIELDS = """
        quantiles { wallTimeP50 wallTimeP90 wallTimeP99 wallTimeP999 }
        max { wallTime }"""


def _alias(alias: str, filt: str, limit: str, order: str, body: str) -> str:
    return f"""
      {alias}: {DATASETS[alias]}(
        filter: {filt}
        limit: {limit}
        orderBy: [{order}]
      ) {{{body}
      }}"""


@lru_cache(maxsize=32)
def _query(latency: bool, status: bool, hot: bool) -> str:
    top = ("\n  $statusLimit: uint64!" if status else "") + ("\n  $top: uint64!" if hot else "")
    parts = [
        _alias(INVOCATIONS, _PAGE_FILTER, "$limit", "namespaceId_ASC", """
        dimensions { namespaceId }
        sum { requests errors wallTime responseBodySize }"""
            + (_LATENCY_FIELDS if latency else "")),
        _alias(PERIODIC, _PAGE_FILTER, "$limit", "namespaceId_ASC", """
        dimensions { namespaceId }
        sum {
          cpuTime activeTime duration rowsRead rowsWritten
          storageReadUnits storageWriteUnits storageDeletes
          inboundWebsocketMsgCount outboundWebsocketMsgCount subrequests
          exceededCpuErrors exceededMemoryErrors fatalInternalErrors
        }
        max { activeWebsocketConnections }"""),
        _alias(SQL_STORAGE, _PAGE_FILTER, "$limit", "namespaceId_ASC", """
        dimensions { namespaceId }
        max { storedBytes }"""),
        _alias(STORAGE, "{datetimeHour_geq: $storageStart, datetimeHour_lt: $end}", "1",
               "datetimeHour_DESC", """
        dimensions { datetimeHour }
        max { storedBytes }"""),
    ]  # fmt: skip
    if status:
        parts.append(_alias(STATUS, _PAGE_FILTER, "$statusLimit", "namespaceId_ASC, status_ASC", """
        dimensions { namespaceId status }
        sum { requests }"""))  # fmt: skip
    if hot:
        by_requests = "sum_requests_DESC, objectId_ASC"
        parts.append(_alias(HOT_REQUESTS, _WINDOW_FILTER, "$top", by_requests, """
        dimensions { namespaceId objectId }
        sum { requests }"""))  # fmt: skip
        parts.append(_alias(HOT_CPU, _WINDOW_FILTER, "$top", "sum_cpuTime_DESC, objectId_ASC", """
        dimensions { namespaceId objectId }
        sum { cpuTime }"""))  # fmt: skip
    return f"""\
query DurableObjectsUsage(
  $accountTag: string!
  $start: Time!
  $end: Time!
  $storageStart: Time!
  $after: string!
  $limit: uint64!{top}
) {{
  viewer {{
    accounts(filter: {{accountTag: $accountTag}}) {{{"".join(parts)}
    }}
  }}
}}
"""


def aliases(
    *, top_objects: int = DEFAULT_TOP_OBJECTS, groups: Collection[str] = GROUPS, first: bool = True
) -> tuple[str, ...]:
    """The aliases a page of the query holds (what :func:`build_request` asks for)."""
    out = [*PAGED, STORAGE]
    if USAGE in groups:
        out.append(STATUS)
    if first and top_objects > 0 and HOT_OBJECTS in groups:
        out += [HOT_REQUESTS, HOT_CPU]
    return tuple(out)


def build_query(
    *, top_objects: int = DEFAULT_TOP_OBJECTS, groups: Collection[str] = GROUPS, first: bool = True
) -> str:
    """The query text for these options (cached: one text per shape)."""
    hot = first and top_objects > 0 and HOT_OBJECTS in groups
    return _query(LATENCY in groups, USAGE in groups, hot)


QUERY = build_query()  # the default shape: every group on, the top 10, a first page


def status_limit(page_size: int, max_page_size: int = 10_000) -> int:
    """Rows of the ``status`` alias per page: room for every status of ``page_size``
    namespaces, within the plan's page size."""
    return max(1, min(max_page_size, page_size * STATUS_ROWS))


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_request(
    account_id: str,
    window: Window,
    *,
    after: str = "",
    page_size: int = PAGE_SIZE,
    top_objects: int = DEFAULT_TOP_OBJECTS,
    groups: Collection[str] = GROUPS,
    max_page_size: int = 10_000,
    max_duration: int | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /graphql`` for one page of one account's window.

    The top-N aliases ride on the first page only (``after == ""``); ``top_objects`` is
    clamped to ``0..100`` (and the plan's page size) and 0 leaves them out.
    """
    top = max(0, min(MAX_TOP_OBJECTS, int(top_objects), max_page_size))
    first = after == ""
    storage_start = (window.end // 3600) * 3600 - 3600
    if max_duration is not None:  # the storage alias spans up to two hours: within the plan
        storage_start = max(storage_start, window.end - max_duration)
    variables: dict[str, Any] = {
        "accountTag": account_id,
        "start": _iso(window.start),
        "end": _iso(window.end),
        "storageStart": _iso(storage_start),
        "after": after,
        "limit": page_size,
    }
    if USAGE in groups:
        variables["statusLimit"] = status_limit(page_size, max_page_size)
    if first and top > 0 and HOT_OBJECTS in groups:
        variables["top"] = top
    return {
        "query": build_query(top_objects=top, groups=groups, first=first),
        "variables": variables,
    }


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


def settings_request(account_id: str) -> dict[str, Any]:
    """The JSON body of ``POST /graphql`` that reads the plan's limits."""
    return {"query": SETTINGS_QUERY, "variables": {"accountTag": account_id}}
