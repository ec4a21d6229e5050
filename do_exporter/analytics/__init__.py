"""Durable Objects usage analytics (Cloudflare's GraphQL Analytics API).

One concept per module; nothing but :mod:`.fetch` asks anything of the outside, and it only
through the ``send`` callable it is given:

- :mod:`.windows`: which whole minutes a poll asks for (the window rule), the plan's limits;
- :mod:`.query`: the GraphQL text (one usage query per account, its aliases; ``settings``);
- :mod:`.answers`: what an answer holds (data types);
- :mod:`.parse`: reading answers, with every id and text validated at the edge;
- :mod:`.state`: the immutable per-account state and the pure fold of answers into it;
- :mod:`.families`: states as metric families;
- :mod:`.fetch`: the pages, the ``settings`` query and the retries of one account's query.

See ``docs/analytics.md`` for the query, the window rule, the units and the limits. The
names below are the ones other modules import.
"""

from .answers import AccountUsage, AnalyticsError, HotObject, Latency, NamespaceUsage
from .families import NS_LABELS, PREFIX, SELF, empty_families, families, family_rows
from .fetch import LimitsBook, Retry, as_usage, fetch_limits, fetch_usage
from .parse import (
    FLOAT_FIELDS as _FLOAT_FIELDS,
)
from .parse import (
    INVOCATION_SUMS as _INVOCATION_SUMS,
)
from .parse import (
    MAX_BODY_BYTES,
    MAX_ID_LENGTH,
    MAX_VALUE,
    STATUSES,
    decode_answer,
    parse_analytics,
    parse_settings,
    valid_namespace_id,
    valid_object_id,
)
from .parse import (
    PERIODIC_SUMS as _PERIODIC_SUMS,
)
from .query import (
    DATASETS,
    DEFAULT_TOP_OBJECTS,
    INVOCATIONS,
    MAX_PAGES,
    MAX_TOP_OBJECTS,
    PAGE_SIZE,
    PERIODIC,
    QUERY,
    SETTINGS_QUERY,
    SQL_STORAGE,
    STORAGE,
    build_query,
    build_request,
    settings_request,
)
from .state import (
    RESULTS,
    AnalyticsState,
    HotObjects,
    advance,
    forget,
    known_namespaces,
    record_failure,
    skip,
)
from .windows import (
    DEFAULT_LIMITS,
    MINUTE,
    NodeLimits,
    Window,
    ceil_minute,
    floor_minute,
    next_window,
)

__all__ = [
    "DATASETS",
    "DEFAULT_LIMITS",
    "DEFAULT_TOP_OBJECTS",
    "INVOCATIONS",
    "MAX_BODY_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PAGES",
    "MAX_TOP_OBJECTS",
    "MAX_VALUE",
    "MINUTE",
    "NS_LABELS",
    "PAGE_SIZE",
    "PERIODIC",
    "PREFIX",
    "QUERY",
    "RESULTS",
    "SELF",
    "SETTINGS_QUERY",
    "SQL_STORAGE",
    "STATUSES",
    "STORAGE",
    "_FLOAT_FIELDS",
    "_INVOCATION_SUMS",
    "_PERIODIC_SUMS",
    "AccountUsage",
    "AnalyticsError",
    "AnalyticsState",
    "HotObject",
    "HotObjects",
    "Latency",
    "LimitsBook",
    "NamespaceUsage",
    "NodeLimits",
    "Retry",
    "Window",
    "advance",
    "as_usage",
    "build_query",
    "build_request",
    "ceil_minute",
    "decode_answer",
    "empty_families",
    "families",
    "family_rows",
    "fetch_limits",
    "fetch_usage",
    "floor_minute",
    "forget",
    "known_namespaces",
    "next_window",
    "parse_analytics",
    "parse_settings",
    "record_failure",
    "settings_request",
    "skip",
    "valid_namespace_id",
    "valid_object_id",
]  # fmt: skip
