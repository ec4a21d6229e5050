"""The metric contract: every family the exporter can expose, declared once.

Each :class:`Family` gives the name as exposed (``# TYPE`` line: counters end in ``_total``),
the help text, the type, the label names, the group a user can turn off
(:mod:`~do_exporter.metrics.groups`; ``None``: the exporter's own, always on), what one
series means (docs/metrics.md is checked against it) and how many series it costs per
``scope`` unit (for :func:`estimate_series`). Builders look a family up by attribute-free
name constants below (``contract.OBJECTS``) and hand rows to the renderer
(:mod:`~do_exporter.metrics.render`); the README and deploy tests read :data:`FAMILIES`.

Nothing here imports an HTTP client, a renderer or prometheus-client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .groups import GROUPS, HOT_OBJECTS, INVENTORY, LATENCY, STORAGE, USAGE, WEBSOCKETS

PREFIX = "cloudflare_durable_objects"
SELF = f"{PREFIX}_exporter"

ACCOUNT_LABELS = ("account_id",)
NS_LABELS = ("account_id", "namespace_id", "namespace_name")
INFO_LABELS = (*NS_LABELS, "class", "script", "use_sqlite")
OBJECT_LABELS = (*NS_LABELS, "object_id")
CREDENTIAL_LABELS = ("credential",)

# Values some labels take (each series of these exists from the start).
ENDPOINTS = ("accounts", "namespaces", "objects", "graphql", "verify")
TRANSPORT = "transport"  # api_errors_total / api_requests_total: no response came
INVALID_RESPONSE = "invalid_response"  # api_errors_total: an answer that could not be read
OTHER = "other"  # api_errors_total: an error code beyond MAX_ERROR_CODES distinct ones
MAX_ERROR_CODES = 64  # distinct error_code values per endpoint, the rest count as OTHER
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_STATUSES = ("active", "disabled", "expired", "invalid", "unknown")
POLL_RESULTS = ("success", "failure")
ANALYTICS_RESULTS = ("success", "failure", "denied")
WEBSOCKET_DIRECTIONS = ("inbound", "outbound")
FAILURE_REASONS = ("exceeded_cpu", "exceeded_memory", "fatal_internal")
QUANTILES = ("0.5", "0.9", "0.99", "0.999")
STATUSES_ESTIMATE = 3  # invocation statuses a namespace usually shows (Cloudflare names them)

# Scopes: what one unit of ``Family.per`` series is counted in.
PROCESS, CREDENTIAL, ACCOUNT, NAMESPACE, TOP = (
    "process",
    "credential",
    "account",
    "namespace",
    "top",
)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family of the contract."""

    name: str  # as in the # HELP / # TYPE lines
    help: str
    type: str  # counter | gauge | histogram | summary (info families: gauges named *_info)
    labels: tuple[str, ...]
    group: str | None
    meaning: str  # one series, for docs/metrics.md
    scope: str = NAMESPACE
    per: int = 1  # series per scope unit (per top-N slot for TOP)
    header: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        help_text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        header = f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.type}\n"
        object.__setattr__(self, "header", header)


def _f(name: str, help: str, type: str, labels: tuple[str, ...], group: str | None,
       meaning: str, scope: str = NAMESPACE, per: int = 1) -> Family:  # fmt: skip
    return Family(name, help, type, labels, group, meaning, scope, per)


_G, _C = "gauge", "counter"
_P, _E = PREFIX + "_", SELF + "_"

# ---- inventory (do_exporter/metrics/inventory.py) ------------------------------------
NAMESPACES = _f(
    _P + "namespaces", "Durable Objects namespaces in the account.", _G, ACCOUNT_LABELS,
    INVENTORY, "namespaces in the account", ACCOUNT)  # fmt: skip
SQLITE_NAMESPACES = _f(
    _P + "sqlite_namespaces", "Namespaces using the SQLite storage backend.", _G,
    ACCOUNT_LABELS, INVENTORY, "of those, with `use_sqlite: true`", ACCOUNT)  # fmt: skip
NAMESPACE_INFO = _f(
    _P + "namespace_info", "Namespace metadata (always 1).", _G, INFO_LABELS, INVENTORY,
    "always 1; `use_sqlite` is `true`/`false`, `\"\"` when the API leaves the field out",
)  # fmt: skip
OBJECTS = _f(
    _P + "objects", "Durable Objects in the namespace (last complete count).", _G, NS_LABELS,
    INVENTORY, "Durable Objects in the namespace (last complete count)")  # fmt: skip
OBJECTS_WITH_STORED_DATA = _f(
    _P + "objects_with_stored_data",
    "Durable Objects in the namespace that have stored data (last complete count).", _G,
    NS_LABELS, INVENTORY, "of those, objects with `hasStoredData: true`")  # fmt: skip
LAST_POLL_SUCCESS = _f(
    _E + "last_poll_success",
    "Whether the last poll of the account read the namespace list and every count (1) or "
    "not (0).", _G, ACCOUNT_LABELS, None,
    "1 when the last poll read the account's namespace list and every count it attempted, "
    "else 0", ACCOUNT)  # fmt: skip
LAST_POLL_TIMESTAMP = _f(
    _E + "last_poll_timestamp_seconds",
    "Unix time at the end of the last successful poll of the account.", _G, ACCOUNT_LABELS,
    None, "Unix time at the end of the last successful poll", ACCOUNT)  # fmt: skip
LAST_POLL_DURATION = _f(
    _E + "last_poll_duration_seconds", "How long the last poll of the account took.", _G,
    ACCOUNT_LABELS, None, "how long the last poll of the account took", ACCOUNT)  # fmt: skip
POLLS = _f(
    _E + "polls_total", "Polls of the account, by result.", _C, ("account_id", "result"), None,
    "polls of the account, `result` `success`/`failure`", ACCOUNT, 2)  # fmt: skip
NAMESPACE_LAST_SUCCESS = _f(
    _E + "namespace_last_success_timestamp_seconds",
    "Unix time when the namespace's exported count was last complete.", _G,
    ("account_id", "namespace_id"), INVENTORY,
    "when the namespace's exported count was last complete: its age shows staleness")  # fmt: skip
FULL_REFRESH = _f(
    _E + "full_refresh_seconds",
    "Seconds the last full refresh of every namespace took (grows past the interval when the "
    "request budget cannot count everything in one interval).", _G, (), None,
    "time between the last two complete counts of the least often refreshed namespace",
    PROCESS)  # fmt: skip

# ---- usage analytics (built by do_exporter/analytics.py) -----------------------------
_SAMPLED = " (sampled dataset: an estimate)"


def _usage(name: str, help: str, group: str, meaning: str) -> Family:
    return _f(_P + name + "_total", help, _C, NS_LABELS, group, meaning)


REQUESTS = _usage("requests", "Requests to the namespace's Durable Objects" + _SAMPLED + ".",
                  USAGE, "requests" + _SAMPLED)  # fmt: skip
ERRORS = _usage("errors", "Requests that ended in an error" + _SAMPLED + ".", USAGE,
                "requests that ended in an error (sampled)")  # fmt: skip
WALL_TIME = _usage("wall_time_seconds", "Wall time of requests" + _SAMPLED + ".", USAGE,
                   "wall time of requests (sampled)")  # fmt: skip
RESPONSE_BODY_BYTES = _usage(
    "response_body_bytes", "Bytes of response bodies" + _SAMPLED + ".", USAGE,
    "response body bytes (sampled)")  # fmt: skip
CPU_TIME = _usage("cpu_time_seconds", "CPU time of the namespace's Durable Objects.", USAGE,
                  "CPU time")  # fmt: skip
ACTIVE_TIME = _usage(
    "active_time_seconds", "Active (billable wall-clock) time of the namespace's Durable "
    "Objects.", USAGE, "active (billable wall-clock) time")  # fmt: skip
DURATION = _usage("duration_gigabyte_seconds", "Billable duration, gigabyte-seconds (128 MB "
                  "per active object).", USAGE, "billable duration, GB-s")  # fmt: skip
ROWS_READ = _usage("rows_read", "SQLite rows read (SQLite-backed namespaces).", STORAGE,
                   "SQLite rows read")  # fmt: skip
ROWS_WRITTEN = _usage("rows_written", "SQLite rows written (SQLite-backed namespaces).",
                      STORAGE, "SQLite rows written")  # fmt: skip
STORAGE_READ_UNITS = _usage(
    "storage_read_units", "Storage reads in 4 KB units (key-value-backed namespaces).",
    STORAGE, "key-value storage reads, 4 KB units")  # fmt: skip
STORAGE_WRITE_UNITS = _usage(
    "storage_write_units", "Storage writes in 4 KB units (key-value-backed namespaces).",
    STORAGE, "key-value storage writes, 4 KB units")  # fmt: skip
STORAGE_DELETES = _usage("storage_deletes", "Storage deletes (key-value-backed namespaces).",
                         STORAGE, "key-value storage deletes")  # fmt: skip
WEBSOCKET_MESSAGES = _f(
    _P + "websocket_messages_total", "WebSocket messages, by direction.", _C,
    (*NS_LABELS, "direction"), WEBSOCKETS,
    "WebSocket messages, `direction` `inbound`/`outbound`", per=2)  # fmt: skip
SUBREQUESTS = _usage("subrequests", "Subrequests made by the namespace's Durable Objects.",
                     USAGE, "subrequests")  # fmt: skip
FAILURES = _f(
    _P + "failures_total",
    "Invocations that failed on a limit or an internal error, by reason.", _C,
    (*NS_LABELS, "reason"), USAGE,
    "`reason`: `exceeded_cpu`, `exceeded_memory`, `fatal_internal`", per=3)  # fmt: skip
REQUESTS_BY_STATUS = _f(
    _P + "requests_by_status_total",
    "Requests by invocation status as Cloudflare names it (other: a status not known to the "
    "exporter; sampled dataset: an estimate).", _C, (*NS_LABELS, "status"), USAGE,
    "requests by invocation `status` (sampled)", per=STATUSES_ESTIMATE)  # fmt: skip
BUSIEST_OBJECT_WEBSOCKETS = _f(
    _P + "busiest_object_websocket_connections",
    "Peak active WebSocket connections of the namespace's busiest single object in the last "
    "window that reported the namespace (not a namespace total).", _G, NS_LABELS, WEBSOCKETS,
    "the busiest single object's peak active WebSocket connections in the last window "
    "(not a namespace total)")  # fmt: skip
STORED_BYTES = _f(
    _P + "stored_bytes",
    "SQLite storage of the namespace, bytes (latest window that reported it).", _G, NS_LABELS,
    STORAGE, "SQLite storage of the namespace, latest")  # fmt: skip
ACCOUNT_STORED_BYTES = _f(
    _P + "account_stored_bytes",
    "Durable Objects storage of the account, bytes (latest hourly figure).", _G,
    ACCOUNT_LABELS, STORAGE, "the account's Durable Objects storage, latest", ACCOUNT)  # fmt: skip
HOT_OBJECT_REQUESTS = _f(
    _P + "hot_object_requests_per_second",
    "Requests per second of one of the account's top-N objects by requests, over the last "
    "counted window.", _G, OBJECT_LABELS, HOT_OBJECTS,
    "one of the account's top-N objects by requests: its requests over the window divided "
    "by the window's seconds", TOP)  # fmt: skip
HOT_OBJECT_CPU = _f(
    _P + "hot_object_cpu_ratio",
    "CPU seconds per second of one of the account's top-N objects by CPU over the last "
    "counted window (1: its single thread saturated).", _G, OBJECT_LABELS, HOT_OBJECTS,
    "one of the account's top-N objects by CPU: its CPU seconds over the window divided by "
    "the window's seconds (1 = saturated)", TOP)  # fmt: skip
WALL_TIME_QUANTILES = _f(
    _P + "request_wall_time_seconds",
    "Wall time of the namespace's requests: percentiles over the last counted window; _sum "
    "and _count since the exporter started (sampled dataset: an estimate).", "summary",
    (*NS_LABELS, "quantile"), LATENCY,
    "Cloudflare's wall-time percentiles of the last counted window, `quantile` "
    "`0.5`/`0.9`/`0.99`/`0.999`; `_sum` and `_count` since the exporter started",
    per=len(QUANTILES) + 2)  # fmt: skip
WALL_TIME_MAX = _f(
    _P + "request_wall_time_max_seconds",
    "Wall time of the namespace's slowest request in the last counted window.", _G, NS_LABELS,
    LATENCY, "the slowest request's wall time in the last counted window")  # fmt: skip
ANALYTICS_DROPPED_ROWS = _f(
    _E + "analytics_dropped_rows_total",
    "Rows of analytics answers refused at the edge (malformed ids or text).", _C,
    ACCOUNT_LABELS, None, "analytics rows refused at the edge (malformed ids or text)",
    ACCOUNT)  # fmt: skip
ANALYTICS_WATERMARK = _f(
    _E + "analytics_watermark_timestamp_seconds",
    "End of the last counted analytics window (Unix time).", _G, ACCOUNT_LABELS, None,
    "end of the last counted usage window (Unix time)", ACCOUNT)  # fmt: skip
ANALYTICS_LAST_SUCCESS = _f(
    _E + "analytics_last_success_timestamp_seconds",
    "Unix time of the last analytics answer that was counted.", _G, ACCOUNT_LABELS, None,
    "when a usage query last succeeded", ACCOUNT)  # fmt: skip
ANALYTICS_QUERIES = _f(
    _E + "analytics_queries_total",
    "Analytics queries of the account, by result (success|failure|denied).", _C,
    ("account_id", "result"), None,
    "usage (GraphQL) queries, `result` `success`/`failure`/`denied`", ACCOUNT, 3)  # fmt: skip
ANALYTICS_SKIPPED = _f(
    _E + "analytics_skipped_seconds_total",
    "Seconds of analytics given up as uncountable (older than the plan allows).", _C,
    ACCOUNT_LABELS, None, "usage seconds given up (older than a query may reach)",
    ACCOUNT)  # fmt: skip

# ---- the exporter's own (do_exporter/metrics/selfmetrics.py, tokens.py) --------------
API_REQUESTS = _f(
    _E + "api_requests_total",
    "HTTP requests to the Cloudflare API, by endpoint and status code (code=transport when "
    "no response came).", _C, ("endpoint", "code"), None,
    "every HTTP attempt, retries included; `code` the HTTP status or `transport`", PROCESS,
    2 * len(ENDPOINTS))  # fmt: skip
API_DURATION = _f(
    _E + "api_request_duration_seconds", "Latency of Cloudflare API requests.", "histogram",
    ("endpoint",), None, "latency of API requests", PROCESS,
    len(ENDPOINTS) * (len(DURATION_BUCKETS) + 3))  # fmt: skip
API_ERRORS = _f(
    _E + "api_errors_total",
    "Failed Cloudflare API requests, by Cloudflare error code (or transport / "
    "invalid_response).", _C, ("endpoint", "error_code"), None,
    "failed attempts; `error_code` Cloudflare's code, `transport`, `invalid_response` or "
    "`other`; the first two exist at 0 from the start", PROCESS, 2 * len(ENDPOINTS))  # fmt: skip
LABELS_TRUNCATED = _f(
    _E + "label_values_truncated_total",
    "Label values from the API (namespace name, class, script; account name) cut to 1024 "
    "characters, ending in '...[truncated]'.", _C, (), None,
    "label values from the API cut to 1,024 characters, 0 from the start", PROCESS)  # fmt: skip
BUILD_INFO = _f(
    _E + "build_info", "do-exporter build information.", _G, ("version",), None,
    "always 1: the running version", PROCESS)  # fmt: skip
RATELIMIT_REMAINING = _f(
    _E + "api_ratelimit_remaining",
    "Requests left to the API user in Cloudflare's current rate-limit window, from the API's "
    "Ratelimit header (absent until the API has sent one).", _G, CREDENTIAL_LABELS, None,
    "requests left to the API user in Cloudflare's rate-limit window", CREDENTIAL)  # fmt: skip
RESERVE_WAIT = _f(
    _E + "api_reserve_wait_seconds_total",
    "Seconds every request of the credential was held because the user's budget was down to "
    "--api-reserve (left to the user's other tools).", _C, CREDENTIAL_LABELS, None,
    "seconds the credential's requests were held at `--api-reserve`", CREDENTIAL)  # fmt: skip
TOKEN_EXPIRY = _f(
    _E + "token_expiry_timestamp_seconds",
    "When the credential's API token expires (Unix time; absent when it never expires).", _G,
    CREDENTIAL_LABELS, None, "when the credential's token expires (Unix time)",
    CREDENTIAL)  # fmt: skip
TOKEN_STATUS = _f(
    _E + "token_status",
    "The credential's API token status as last verified: 1 for the current status, 0 for "
    "the others.", _G, ("credential", "status"), None,
    "1 for the token's status as last verified, 0 for the others", CREDENTIAL,
    len(TOKEN_STATUSES))  # fmt: skip

INVENTORY_FAMILIES = (
    NAMESPACES, SQLITE_NAMESPACES, NAMESPACE_INFO, OBJECTS, OBJECTS_WITH_STORED_DATA,
    LAST_POLL_SUCCESS, LAST_POLL_TIMESTAMP, LAST_POLL_DURATION, POLLS, NAMESPACE_LAST_SUCCESS,
    FULL_REFRESH,
)  # fmt: skip
ANALYTICS_FAMILIES = (
    REQUESTS, ERRORS, WALL_TIME, RESPONSE_BODY_BYTES, CPU_TIME, ACTIVE_TIME, DURATION,
    ROWS_READ, ROWS_WRITTEN, STORAGE_READ_UNITS, STORAGE_WRITE_UNITS, STORAGE_DELETES,
    SUBREQUESTS, REQUESTS_BY_STATUS, WEBSOCKET_MESSAGES, FAILURES, BUSIEST_OBJECT_WEBSOCKETS,
    STORED_BYTES, WALL_TIME_QUANTILES, WALL_TIME_MAX, HOT_OBJECT_REQUESTS, HOT_OBJECT_CPU,
    ACCOUNT_STORED_BYTES, ANALYTICS_WATERMARK, ANALYTICS_LAST_SUCCESS, ANALYTICS_QUERIES,
    ANALYTICS_SKIPPED, ANALYTICS_DROPPED_ROWS,
)  # fmt: skip
SELF_FAMILIES = (
    API_REQUESTS, API_DURATION, API_ERRORS, LABELS_TRUNCATED, BUILD_INFO, RATELIMIT_REMAINING,
    RESERVE_WAIT,
)  # fmt: skip
TOKEN_FAMILIES = (TOKEN_EXPIRY, TOKEN_STATUS)

# Every family, in exposition order.
FAMILIES: tuple[Family, ...] = (
    *INVENTORY_FAMILIES, *ANALYTICS_FAMILIES, *SELF_FAMILIES, *TOKEN_FAMILIES,
)  # fmt: skip
BY_NAME: Mapping[str, Family] = {f.name: f for f in FAMILIES}
ALL_GROUPS: frozenset[str] = frozenset(GROUPS)


def family(name: str) -> Family | None:
    """The family exposed as ``name`` (a counter with or without ``_total``), or None."""
    return BY_NAME.get(name) or BY_NAME.get(name + "_total")


def enabled_family(f: Family, enabled: frozenset[str] = ALL_GROUPS) -> bool:
    """Whether ``f`` is exposed with these groups on (the exporter's own always are)."""
    return f.group is None or f.group in enabled


def estimate_series(
    *,
    accounts: int,
    namespaces: int,
    top_objects: int = 10,
    analytics: bool = True,
    credentials: int = 1,
    enabled: Iterable[str] = GROUPS,
) -> dict[str, int]:
    """Series each group costs (key ``"exporter"`` for the always-on own families), pure.

    ``namespaces`` is the total over all accounts. Analytics families count only with
    ``analytics``; an account's hot objects cost up to ``top_objects`` series per family.
    """
    on = frozenset(enabled)
    units = {PROCESS: 1, CREDENTIAL: credentials, ACCOUNT: accounts, NAMESPACE: namespaces,
             TOP: accounts * top_objects}  # fmt: skip
    analytic = frozenset(ANALYTICS_FAMILIES)
    out: dict[str, int] = {}
    for f in FAMILIES:
        if not enabled_family(f, on) or (f in analytic and not analytics):
            continue
        key = f.group or "exporter"
        out[key] = out.get(key, 0) + f.per * units[f.scope]
    return out


def series_per_namespace(group: str) -> int:
    """Series one namespace costs in ``group`` (docs/metrics.md; top objects aside)."""
    return sum(f.per for f in FAMILIES if f.group == group and f.scope == NAMESPACE)
