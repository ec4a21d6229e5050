"""``POST /graphql``: Cloudflare's GraphQL Analytics API for Durable Objects, simulated.

Queries are parsed, validated and executed with graphql-core against the schema Cloudflare
publishes (``schema.graphql``, a copy of ``shared/reference``), so a query Cloudflare would
reject is rejected here too, with Cloudflare-shaped errors (``errors[]`` with
``extensions.code`` in an HTTP 200, ``data`` null or partial).

Data is derived, never stored: the usage of a namespace in a minute is a pure function of
the seed, the ids, the minute and the namespace's :class:`Traffic` (scenario key
``analytics``; defaults give every namespace some traffic). Rules that mirror Cloudflare:

- the last ``lag`` seconds after a minute closes are incomplete (a minute's figures grow
  from 0 to their final value over that time, so early queries under-count);
- the adaptive dataset (invocations) is sampled: above 1,000 requests a minute only 1 in
  10 (above 100,000: 1 in 100) is kept and the figures are the kept ones times the interval;
  sampling is decided per minute, so sums add up the same however a range is split;
- node limits (``maxDuration``, ``notOlderThan``, ``maxPageSize``, ``maxNumberOfFields``) are
  enforced and served by ``settings``; a budget of 300 queries per 5 minutes per token.

:meth:`GraphQLEndpoint.truth` gives the exact complete sums a range should export.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import graphql
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLResolveInfo,
    InlineFragmentNode,
    SelectionSetNode,
)

from do_exporter.simulator.responses import Response
from do_exporter.simulator.traffic import Traffic, traffic_from_dict  # noqa: F401 (re-export)

if TYPE_CHECKING:
    from do_exporter.simulator.faults import Fault
    from do_exporter.simulator.scenario import NamespaceSpec, Scenario, TokenSpec

SCHEMA_FILE = "schema.graphql"
BUDGET = 300  # GraphQL queries per token per window (Cloudflare's default user quota)
BUDGET_WINDOW = 300.0
LAG = 120.0  # seconds after a minute closes before its figures are complete
MAX_DURATION = 259_200  # 3 days
NOT_OLDER_THAN = 2_678_400  # 31 days
MAX_PAGE_SIZE = 10_000
MAX_FIELDS = 30
MAX_BODY = 1024 * 1024
SAMPLE_FROM = 1_000  # requests a minute above which the adaptive dataset is sampled
GB_PER_OBJECT = 0.125  # 128 MB of memory per active object, as Cloudflare bills duration
STORAGE_PERIOD = 7 * 1440  # minutes: SQLite storage grows and is compacted weekly
_DAY = 86_400


def schema_sdl() -> str:
    """The schema the simulator serves (the copy packaged with it)."""
    return resources.files("do_exporter.simulator").joinpath(SCHEMA_FILE).read_text("utf-8")


@functools.cache
def shared_schema() -> graphql.GraphQLSchema:
    """The schema, built once per process and shared by every endpoint: its resolvers find
    the endpoint answering in ``info.context["endpoint"]`` (building it costs 0.1 s of CPU,
    and a test run starts hundreds of simulators)."""
    schema = graphql.build_schema(schema_sdl())
    viewer = schema.type_map["viewer"]
    account = schema.type_map["account"]
    assert isinstance(viewer, GraphQLObjectType) and isinstance(account, GraphQLObjectType)
    query = schema.query_type
    assert query is not None
    query.fields["viewer"].resolve = lambda _s, _i: {}
    viewer.fields["accounts"].resolve = lambda s, i, **kw: _endpoint(i)._accounts(s, i, **kw)
    viewer.fields["budget"].resolve = lambda _s, i: _endpoint(i).budget
    for name in _DATASETS:
        account.fields[name].resolve = _dataset_resolver(name)
    account.fields["settings"].resolve = lambda _s, i: dict.fromkeys(
        (*_DATASETS, "durableObjectsSubrequestsAdaptiveGroups"), _endpoint(i)._settings()
    )
    return schema


def _endpoint(info: GraphQLResolveInfo[Any]) -> GraphQLEndpoint:
    endpoint: GraphQLEndpoint = info.context["endpoint"]
    return endpoint


def _dataset_resolver(name: str) -> Callable[..., list[dict[str, Any]]]:
    dataset = _DATASETS[name]

    def resolve(
        source: Mapping[str, Any],
        info: GraphQLResolveInfo[Any],
        filter: Mapping[str, Any],
        limit: int,
        orderBy: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        return _endpoint(info)._groups(
            dataset, source["accountTag"], info, filter, limit, orderBy or (), info.context
        )

    return resolve


@functools.lru_cache(maxsize=512)
def _document(query: str) -> graphql.DocumentNode | tuple[str, str]:
    """``query`` parsed and validated against the shared schema (both pure functions of the
    text, so cached by it: the exporter sends the same few queries again and again); a
    rejected query gives its (message, code)."""
    try:
        document = graphql.parse(query)
    except GraphQLError as exc:
        return exc.message, "GRAPHQL_PARSE_FAILED"
    problems = graphql.validate(shared_schema(), document)
    if problems:
        return problems[0].message, "GRAPHQL_VALIDATION_FAILED"
    return document


@dataclass(frozen=True)
class _Model:
    """A namespace's traffic with every default resolved."""

    key: bytes
    sqlite: bool
    rpm: float
    traffic: Traffic
    websockets: int
    stored_bytes: int
    growth: float
    objects: int = 1


def _model(seed: int, account_id: str, spec: NamespaceSpec) -> _Model:
    t = spec.analytics if spec.analytics is not None else Traffic()
    key = hashlib.blake2b(f"{seed}/{account_id}/{spec.id}".encode(), digest_size=16).digest()
    rpm = t.requests_per_minute
    if rpm is None:
        rpm = float(20 + min(spec.objects, 100_000) // 60 + key[0] % 40)
    sqlite = spec.use_sqlite is True
    ws = t.websocket_connections
    if ws is None:
        ws = key[1] % 8 if spec.class_name and "chat" in spec.class_name.lower() else 0
    stored = t.stored_bytes
    if stored is None:
        stored = spec.objects * 4096 if sqlite else 0
    growth = t.storage_growth_bytes_per_minute
    if growth is None:
        growth = max(0.0, spec.growth_per_minute) * 1024 if sqlite else 0.0
    return _Model(key, sqlite, rpm, t, ws, stored, growth, max(1, spec.objects))


def _noise(key: bytes, minute: int, salt: int) -> float:
    """A deterministic number in [0, 1) for (namespace, minute, salt)."""
    digest = hashlib.blake2b(
        minute.to_bytes(8, "big", signed=True) + bytes([salt]), key=key, digest_size=8
    ).digest()
    return int.from_bytes(digest) / 2**64


def _floor(x: float, noise: float) -> int:
    return max(0, math.floor(x + noise))


def _round_to(value: int, step: int) -> int:
    return ((2 * value + step) // (2 * step)) * step


@dataclass(frozen=True)
class Minute:
    """One namespace's complete figures for one minute, in the API's units and names."""

    invocations: Mapping[str, int]  # sampled, as served
    sample_interval: int
    periodic: Mapping[str, int | float]
    websockets: int
    stored_bytes: int | None
    exact_requests: int


@functools.lru_cache(maxsize=32_768)
def minute_usage(model: _Model, minute: int) -> Minute:
    """The figures of minute ``minute`` (Unix minutes) for one namespace (pure, so cached:
    a poll, its truth and the ranges of a test ask for the same minutes again and again)."""
    t = model.traffic
    phase = 2 * math.pi * (minute % 1440) / 1440
    shape = 1 + t.diurnal_amplitude * math.sin(phase)
    requests = _floor(model.rpm * shape * (0.9 + 0.2 * _noise(model.key, minute, 0)), 0.0)
    errors = min(requests, _floor(requests * t.error_rate, _noise(model.key, minute, 1)))
    step = 1 if requests < SAMPLE_FROM else 10 if requests < 100 * SAMPLE_FROM else 100
    served = _round_to(requests, step)
    served_errors = min(served, _round_to(errors, step))
    wall_us = round(t.wall_ms_per_request * 1000)
    invocations = {
        "requests": served,
        "errors": served_errors,
        "wallTime": served * wall_us,
        "responseBodySize": served * round(t.response_bytes_per_request),
    }
    ws = model.websockets
    if ws:
        ws = max(0, math.floor(ws * (0.75 + 0.5 * _noise(model.key, minute, 2))))
    inbound = _floor(ws * t.messages_per_connection_per_minute, _noise(model.key, minute, 3))
    active_us = requests * wall_us + ws * 60_000_000
    # GB-s in 1/1024 steps: sums of such floats stay exact however a range is split.
    duration = round(active_us / 1e6 * GB_PER_OBJECT * 1024) / 1024

    def per_request(rate: float, salt: int) -> int:
        return _floor(requests * rate, _noise(model.key, minute, salt))

    kv = not model.sqlite
    periodic: dict[str, int | float] = {
        "cpuTime": requests * round(t.cpu_ms_per_request * 1000),
        "activeTime": active_us,
        "duration": duration,
        "rowsRead": per_request(t.rows_read_per_request, 4) if model.sqlite else 0,
        "rowsWritten": per_request(t.rows_written_per_request, 5) if model.sqlite else 0,
        "storageReadUnits": per_request(1.5, 6) if kv else 0,
        "storageWriteUnits": per_request(0.5, 7) if kv else 0,
        "storageDeletes": per_request(0.05, 8) if kv else 0,
        "inboundWebsocketMsgCount": inbound,
        "outboundWebsocketMsgCount": 2 * inbound,
        "subrequests": per_request(t.subrequests_per_request, 9),
        "exceededCpuErrors": per_request(t.exceeded_cpu_rate, 10),
        "exceededMemoryErrors": per_request(t.exceeded_memory_rate, 11),
        "fatalInternalErrors": per_request(t.fatal_internal_rate, 12),
    }
    stored = None
    if model.sqlite:
        stored = model.stored_bytes + math.floor(model.growth * (minute % STORAGE_PERIOD))
    return Minute(invocations, step, periodic, ws, stored, requests)


def _partial(values: Mapping[str, int | float], fraction: float) -> dict[str, int | float]:
    if fraction >= 1:
        return dict(values)
    out: dict[str, int | float] = {}
    for k, v in values.items():
        if isinstance(v, int):
            out[k] = math.floor(v * fraction)
        else:
            out[k] = math.floor(v * fraction * 1024) / 1024
    return out


# ---------------------------------------------------------------------------------------
# Objects and statuses: a namespace's minute split exactly over its objects and statuses

ZIPF = (60, 30, 20, 15, 12, 10, 8, 7, 6, 6)  # the share of the k-th busiest object (60/k)
HOT_PERIOD = 60  # minutes: the busiest objects change rank every hour
_Q = "q:"  # the prefix of quantile values while groups are folded (max of the facts')
# Per-request wall time relative to the namespace's mean, at each percentile and at the max.
WALL_SHAPE = {"wallTimeP50": 0.6, "wallTimeP90": 1.8, "wallTimeP99": 4.0,
              "wallTimeP999": 8.0}  # fmt: skip
WALL_MAX = 12.0
_STATUS_ORDER = ("success", "scriptThrewException", "clientDisconnected")


def object_ids(model: _Model, minute: int) -> list[str]:
    """The namespace's objects in order of business this minute (64 hex each): a pool of
    ``n + 2`` objects whose ranks rotate every :data:`HOT_PERIOD` minutes."""
    n = _object_count(model)
    pool = [
        hashlib.blake2b(f"object/{i}".encode(), key=model.key, digest_size=32).hexdigest()
        for i in range(n + 2)
    ]
    shift = (minute // HOT_PERIOD) % len(pool)
    return [pool[(i + shift) % len(pool)] for i in range(n)]


def _object_count(model: _Model) -> int:
    if model.traffic.hot_objects is not None:
        return model.traffic.hot_objects
    return max(1, min(6, model.objects))


def _weights(n: int) -> list[int]:
    return [ZIPF[i] if i < len(ZIPF) else max(1, 60 // (i + 1)) for i in range(n)]


def _split_int(value: int, weights: Sequence[int]) -> list[int]:
    """``value`` in whole parts by ``weights``; the remainder goes to the first (exact)."""
    total = sum(weights)
    if total <= 0:
        return [value] + [0] * (len(weights) - 1)
    parts = [value * w // total for w in weights]
    parts[0] += value - sum(parts)
    return parts


def _split_values(
    values: Mapping[str, int | float], weights: Sequence[int]
) -> list[dict[str, int | float]]:
    out: list[dict[str, int | float]] = [{} for _ in weights]
    for k, v in values.items():
        if isinstance(v, int):
            parts: list[int | float] = list(_split_int(v, weights))
        else:  # GB-s in 1/1024 steps: split the steps
            parts = [p / 1024 for p in _split_int(round(v * 1024), weights)]
        for i, p in enumerate(parts):
            out[i][k] = p
    return out


def _status_weights(model: _Model, minute: int, values: Mapping[str, int | float]) -> list[int]:
    requests = int(values.get("requests", 0))
    errors = min(requests, int(values.get("errors", 0)))
    rate = model.traffic.client_disconnect_rate
    gone = min(requests - errors, _floor(requests * rate, _noise(model.key, minute, 13)))
    return [requests - errors - gone, errors, gone]


def split_usage(
    model: _Model, minute: int, values: Mapping[str, int | float], split: frozenset[str]
) -> list[tuple[dict[str, str], Mapping[str, int | float]]]:
    """One namespace's minute as rows of the asked grain: by object (Zipf-like shares of
    every figure), by status (requests by how they ended), or both; the rows add up exactly
    to ``values``."""
    rows: list[tuple[dict[str, str], Mapping[str, int | float]]] = [({}, values)]
    if "objectId" in split:
        ids = object_ids(model, minute)
        parts = _split_values(values, _weights(len(ids)))
        rows = [({"objectId": i}, p) for i, p in zip(ids, parts, strict=True)]
    if "status" in split:
        out: list[tuple[dict[str, str], Mapping[str, int | float]]] = []
        for extra, part in rows:
            weights = _status_weights(model, minute, part)
            for status, sub in zip(_STATUS_ORDER, _split_values(part, weights), strict=True):
                if "errors" in sub:  # errors are the failed statuses' requests
                    sub["errors"] = sub["requests"] if status != "success" else 0
                if sub.get("requests", 1):
                    out.append(({**extra, "status": status}, sub))
        rows = out
    return rows


def wall_quantiles(model: _Model) -> dict[str, float]:
    """The namespace's per-request wall-time percentiles and maximum (µs), as maxes to fold:
    one distribution whatever the minute, so a namespace's group is exact."""
    mean = round(model.traffic.wall_ms_per_request * 1000)
    out = {f"{_Q}{k}": float(round(mean * f)) for k, f in WALL_SHAPE.items()}
    out["wallTime"] = float(round(mean * WALL_MAX))
    return out


def _mentions(raw: Any, name: str) -> bool:
    """Whether a filter names the dimension ``name`` anywhere."""
    if isinstance(raw, Mapping):
        return any(_split(k)[0] == name or _mentions(v, name) for k, v in raw.items())
    if isinstance(raw, list):
        return any(_mentions(v, name) for v in raw)
    return False


# ---------------------------------------------------------------------------------------
# Errors in Cloudflare's shape


class _QueryError(GraphQLError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code, "timestamp": _now_text()})


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error_body(message: str, code: str, path: Sequence[str | int] | None = None) -> bytes:
    error: dict[str, Any] = {
        "message": message,
        "path": list(path) if path else None,
        "extensions": {"code": code, "timestamp": _now_text()},
    }
    return json.dumps({"data": None, "errors": [error]}, separators=(",", ":")).encode()


def _answer(status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, body, headers=headers or [])


# ---------------------------------------------------------------------------------------
# Times and filters


def _parse_time(value: Any) -> int:
    if not isinstance(value, str):
        raise _QueryError("error parsing args: a time must be a string", "bad_request")
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _QueryError(f"error parsing args: bad time {value!r}", "bad_request") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def _parse_date(value: Any) -> int:
    if not isinstance(value, str) or len(value) != 10:
        raise _QueryError(f"error parsing args: bad date {value!r}", "bad_request")
    return _parse_time(value + "T00:00:00Z")


def _time_text(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# dimension -> (truncation in seconds, kind)
_TIME_DIMS: dict[str, tuple[int, str]] = {
    "datetime": (60, "time"),
    "datetimeMinute": (60, "time"),
    "datetimeFiveMinutes": (300, "time"),
    "datetimeFifteenMinutes": (900, "time"),
    "datetimeHour": (3600, "time"),
    "datetimeSixHours": (21_600, "time"),
    "date": (_DAY, "date"),
}
_OPS = ("geq", "gt", "leq", "lt", "neq", "in", "notin")


def _split(key: str) -> tuple[str, str]:
    name, _, op = key.rpartition("_")
    if name and op in _OPS:
        return name, op
    return key, "eq"


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "eq":
        return bool(value == operand)
    if op == "neq":
        return bool(value != operand)
    if op == "gt":
        return bool(value > operand)
    if op == "geq":
        return bool(value >= operand)
    if op == "lt":
        return bool(value < operand)
    if op == "leq":
        return bool(value <= operand)
    if op == "in":
        return value in operand
    return value not in operand  # notin


@dataclass(frozen=True)
class _Filter:
    """A dataset filter: a predicate over (namespaceId, time) and the time range it spans."""

    clauses: tuple[tuple[str, str, Any], ...]
    children: tuple[tuple[str, tuple[_Filter, ...]], ...]
    lower: int | None
    upper: int | None

    def matches(self, row: Mapping[str, Any]) -> bool:
        for name, op, operand in self.clauses:
            if not _compare(row[name], op, operand):
                return False
        for kind, subs in self.children:
            results = (sub.matches(row) for sub in subs)
            if not (all(results) if kind == "AND" else any(results)):
                return False
        return True


def _compile(raw: Mapping[str, Any], allowed: frozenset[str]) -> _Filter:
    clauses: list[tuple[str, str, Any]] = []
    children: list[tuple[str, tuple[_Filter, ...]]] = []
    lower: int | None = None
    upper: int | None = None
    for key, value in raw.items():
        if key in ("AND", "OR"):
            subs = tuple(_compile(item, allowed) for item in value or ())
            children.append((key, subs))
            if key == "AND":
                for sub in subs:
                    lower = sub.lower if lower is None else max(lower, sub.lower or lower)
                    upper = sub.upper if upper is None else min(upper, sub.upper or upper)
            continue
        name, op = _split(key)
        if name not in allowed:
            raise _QueryError(f"the simulator cannot filter on {key}", "unsupported")
        if op in ("in", "notin") and value is None:
            continue
        if name in _TIME_DIMS:
            parse = _parse_date if _TIME_DIMS[name][1] == "date" else _parse_time
            operand: Any = [parse(v) for v in value] if op in ("in", "notin") else parse(value)
            if op in ("geq", "gt", "eq"):
                lower = operand if lower is None else max(lower, operand)
            if op in ("lt", "leq", "eq"):
                size = _TIME_DIMS[name][0] if op != "lt" else 0
                upper = operand + size if upper is None else min(upper, operand + size)
        else:
            operand = list(value) if op in ("in", "notin") else value
        clauses.append((name, op, operand))
    return _Filter(tuple(clauses), tuple(children), lower, upper)


# ---------------------------------------------------------------------------------------
# Selections


def _selected(
    selection_set: SelectionSetNode | None, info: GraphQLResolveInfo[Any]
) -> Iterator[FieldNode]:
    if selection_set is None:
        return
    for node in selection_set.selections:
        if isinstance(node, FieldNode):
            yield node
        elif isinstance(node, InlineFragmentNode):
            yield from _selected(node.selection_set, info)
        elif isinstance(node, FragmentSpreadNode):
            fragment = info.fragments[node.name.value]
            yield from _selected(fragment.selection_set, info)


def _leaf_count(selection_set: SelectionSetNode | None, info: GraphQLResolveInfo[Any]) -> int:
    count = 0
    for node in _selected(selection_set, info):
        count += _leaf_count(node.selection_set, info) if node.selection_set else 1
    return count


def _dimensions(info: GraphQLResolveInfo[Any]) -> list[str]:
    dims: list[str] = []
    for node in info.field_nodes:
        for child in _selected(node.selection_set, info):
            if child.name.value == "dimensions":
                dims.extend(d.name.value for d in _selected(child.selection_set, info))
    return list(dict.fromkeys(dims))


# ---------------------------------------------------------------------------------------
# The endpoint


@dataclass(frozen=True)
class _Dataset:
    name: str
    grain: int  # seconds per fact
    per_namespace: bool
    dims: frozenset[str]


_DATASETS = {
    d.name: d
    for d in (
        _Dataset(
            "durableObjectsInvocationsAdaptiveGroups", 60, True,
            frozenset({"namespaceId", "objectId", "status", *_TIME_DIMS}),
        ),
        _Dataset(
            "durableObjectsPeriodicGroups", 60, True,
            frozenset({"namespaceId", "objectId", *_TIME_DIMS} - {"datetime"}),
        ),
        _Dataset(
            "durableObjectsSqlStorageGroups", 60, True,
            frozenset({"namespaceId", "datetimeMinute", "datetimeHour", "date"}),
        ),
        _Dataset(
            "durableObjectsStorageGroups", 3600, False, frozenset({"datetimeHour", "date"})
        ),
    )
}  # fmt: skip


class GraphQLEndpoint:
    """Serves ``POST {base}/graphql`` for a :class:`Simulator` (thread-safe).

    ``authenticate`` maps request headers to a token (or an answer refusing the request);
    ``namespaces`` gives an account's live namespaces (None for an unknown account);
    ``clock`` is wall-clock Unix time (settable, for tests).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        authenticate: Callable[[Mapping[str, str]], tuple[TokenSpec | None, Response | None]],
        namespaces: Callable[[str], Sequence[NamespaceSpec] | None],
        seed: int,
        clock: Callable[[], float] = time.time,
        budget: int = BUDGET,
        budget_window: float = BUDGET_WINDOW,
        lag: float = LAG,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.lag = lag
        self._authenticate = authenticate
        self._namespaces = namespaces
        self._seed = seed
        self.budget = budget
        self.budget_window = budget_window
        # The node limits served by settings and enforced (settable, for tests).
        self.max_duration = MAX_DURATION
        self.not_older_than = NOT_OLDER_THAN
        self.max_page_size = MAX_PAGE_SIZE
        self._budgets: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str, NamespaceSpec], _Model] = {}
        self.schema = shared_schema()
        self.queries = 0

    # ---- answering --------------------------------------------------------------------
    def handle(
        self, method: str, headers: Mapping[str, str], body: bytes, fault: Fault | None = None
    ) -> Response:
        """Answer one request to ``/graphql``."""
        if method != "POST":
            return _answer(405, _error_body("use POST", "method_not_allowed"))
        token, denied = self._authenticate(headers)
        if denied is not None:
            return denied
        if token is None or token.status != "active":
            return _answer(401, _error_body("Unauthorized", "authn"))
        limited = self._spend(token.value)
        if limited is not None:
            return limited
        if fault is not None and fault.kind == "success_false":
            message = fault.message or "unable to execute query, please try again later"
            return _answer(200, _error_body(message, str(fault.code or "internal")))
        if len(body) > MAX_BODY:
            return _answer(200, _error_body("request too large", "bad_request"))
        try:
            request = json.loads(body or b"null")
        except ValueError:
            return _answer(200, _error_body("request body is not JSON", "bad_request"))
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            message = "a JSON object with a query is required"
            return _answer(200, _error_body(message, "bad_request"))
        variables = request.get("variables") or {}
        if not isinstance(variables, dict):
            return _answer(200, _error_body("variables must be an object", "bad_request"))
        return _answer(200, self.execute(request["query"], variables, token=token))

    def execute(
        self, query: str, variables: Mapping[str, Any], *, token: TokenSpec | None = None
    ) -> bytes:
        """Parse, validate and execute one query; the JSON answer (errors included)."""
        document = _document(query)
        if isinstance(document, tuple):
            return _error_body(*document)
        with self._lock:
            self.queries += 1
        result = graphql.execute_sync(
            self.schema,
            document,
            root_value={},
            context_value={"token": token, "now": self.clock(), "endpoint": self},
            variable_values=dict(variables),
        )
        out: dict[str, Any] = {"data": result.data, "errors": None}
        if result.errors:
            out["errors"] = [_cloudflare_error(e) for e in result.errors]
        return json.dumps(out, separators=(",", ":")).encode()

    def _spend(self, token: str) -> Response | None:
        with self._lock:
            now = self.clock()
            start, used = self._budgets.get(token, (now, 0))
            if now >= start + self.budget_window:
                start, used = now, 0
            if used >= self.budget:
                reset = max(1, math.ceil(start + self.budget_window - now))
                body = _error_body(
                    "rate limiter budget depleted, try again after 5 minutes", "budget"
                )
                return _answer(429, body, [("Retry-After", str(reset))])
            self._budgets[token] = (start, used + 1)
        return None

    # ---- truth ------------------------------------------------------------------------
    def truth(
        self, account_id: str, namespace_id: str, start: float, end: float, *, sampled: bool = True
    ) -> dict[str, int | float]:
        """The complete sums of minutes ``[start, end)`` for one namespace, by API field
        name (``requests``, ``cpuTime``, ...), plus ``activeWebsocketConnections`` (max) and
        ``storedBytes`` (max, SQLite namespaces). ``sampled``: requests as the adaptive
        dataset serves them (what the exporter can export), else the exact count."""
        model = self._model(account_id, namespace_id)
        totals: dict[str, int | float] = {}
        ws = 0
        stored: int | None = None
        for minute in range(math.ceil(start / 60), math.ceil(end / 60)):
            fig = minute_usage(model, minute)
            values = {**fig.invocations, **fig.periodic}
            if not sampled:
                values["requests"] = fig.exact_requests
            for k, v in values.items():
                totals[k] = totals.get(k, 0) + v
            ws = max(ws, fig.websockets)
            if fig.stored_bytes is not None:
                stored = max(stored or 0, fig.stored_bytes)
        totals["activeWebsocketConnections"] = ws
        if stored is not None:
            totals["storedBytes"] = stored
        return totals

    def _model(self, account_id: str, namespace_id: str) -> _Model:
        for spec in self._namespaces(account_id) or ():
            if spec.id == namespace_id:
                return self._model_of(account_id, spec)
        raise KeyError(f"unknown namespace {namespace_id} in account {account_id}")

    def _model_of(self, account_id: str, spec: NamespaceSpec) -> _Model:
        key = (account_id, spec.id, spec)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = _model(self._seed, account_id, spec)
            return model

    # ---- resolvers (installed once by shared_schema) --------------------------------
    def _settings(self) -> dict[str, Any]:
        return {
            **_SETTINGS,
            "maxDuration": self.max_duration,
            "maxPageSize": self.max_page_size,
            "notOlderThan": self.not_older_than,
        }

    def _accounts(
        self, _source: Any, info: GraphQLResolveInfo[Any], filter: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        account_id = (filter or {}).get("accountTag")
        token: TokenSpec | None = info.context["token"]
        known = account_id is not None and self._namespaces(account_id) is not None
        if not known or (token is not None and token.accounts is not None
                         and account_id not in token.accounts):  # fmt: skip
            raise _QueryError("not authorized for that account", "authz")
        if token is not None and not token.has_permission(
            str(account_id), "account_analytics_read"
        ):
            raise _QueryError("not authorized for that account", "authz")
        return [{"accountTag": account_id}]

    def _checked(
        self,
        dataset: _Dataset,
        info: GraphQLResolveInfo[Any],
        raw_filter: Mapping[str, Any],
        limit: Any,
        now: float,
    ) -> tuple[Any, float, list[str]]:
        """The query's filter, upper time bound and dimensions, checked as Cloudflare checks
        them (limit, fields, a time range within the dataset's limits, known dimensions)."""
        page = self.max_page_size
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= page:
            raise _QueryError(
                f"limit must be positive number and not greater than {page}", "bad_request"
            )
        fields_asked = sum(_leaf_count(node.selection_set, info) for node in info.field_nodes)
        if fields_asked > MAX_FIELDS:
            raise _QueryError(f"number of fields can't be more than {MAX_FIELDS}", "bad_request")
        flt = _compile(raw_filter, dataset.dims)
        if flt.lower is None:
            raise _QueryError("a time range filter (e.g. datetime_geq) is required", "bad_request")
        upper = flt.upper if flt.upper is not None else math.floor(now)
        if upper - flt.lower > self.max_duration:
            message = f"query time range is too large (max {self.max_duration}s)"
            raise _QueryError(message, "bad_request")
        if flt.lower < now - self.not_older_than:
            message = f"cannot request data older than {self.not_older_than}s"
            raise _QueryError(message, "bad_request")
        dims = _dimensions(info)
        unknown = [d for d in dims if d not in dataset.dims]
        if unknown:
            raise _QueryError(f"the simulator cannot group by {unknown[0]}", "unsupported")
        return flt, upper, dims

    def _groups(
        self,
        dataset: _Dataset,
        account_id: str,
        info: GraphQLResolveInfo[Any],
        raw_filter: Mapping[str, Any],
        limit: Any,
        order_by: Sequence[str],
        context: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        now: float = context["now"]
        flt, upper, dims = self._checked(dataset, info, raw_filter, limit, now)
        specs = self._namespaces(account_id) or ()
        split = frozenset(
            d for d in ("objectId", "status") if d in dims or _mentions(raw_filter, d)
        )
        groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        first = (flt.lower // dataset.grain) * dataset.grain
        last = min(upper, math.floor(now))
        for t in range(int(first), int(last), dataset.grain):
            if t + dataset.grain > now:
                break  # not even started closing
            fraction = min(1.0, max(0.0, (now - t - dataset.grain) / self.lag)) if self.lag else 1.0
            facts = self._facts(dataset, account_id, specs, t, fraction, split)
            for row, sums, maxes, interval in facts:
                if not flt.matches(row):
                    continue
                group_key = tuple(row[d] for d in dims)
                group = groups.get(group_key)
                if group is None:
                    group = groups[group_key] = {
                        "row": row, "sum": {}, "max": {}, "intervals": [],
                    }  # fmt: skip
                for k, v in sums.items():
                    group["sum"][k] = group["sum"].get(k, 0) + v
                for k, v in maxes.items():
                    group["max"][k] = max(group["max"].get(k, 0), v)
                group["intervals"].append(interval)
        rows = [_render(g, dims) for g in groups.values()]
        for item in reversed(order_by):
            field_name, _, direction = item.rpartition("_")
            rows.sort(key=_sort_key(field_name, dims), reverse=direction == "DESC")
        return rows[:limit]

    def _facts(
        self,
        dataset: _Dataset,
        account_id: str,
        specs: Sequence[NamespaceSpec],
        t: int,
        fraction: float,
        split: frozenset[str] = frozenset(),
    ) -> list[tuple[dict[str, Any], dict[str, int | float], dict[str, float], int]]:
        out: list[tuple[dict[str, Any], dict[str, int | float], dict[str, float], int]] = []
        if not dataset.per_namespace:  # account storage, one fact an hour
            total = 0
            for spec in specs:
                fig = minute_usage(self._model_of(account_id, spec), t // 60)
                total += fig.stored_bytes or 0
            if fraction > 0:
                out.append((_time_row(t), {}, {"storedBytes": total}, 1))
            return out
        minute = t // 60
        for spec in specs:
            model = self._model_of(account_id, spec)
            fig = minute_usage(model, minute)
            row = {**_time_row(t), "namespaceId": spec.id}
            if dataset.name == "durableObjectsInvocationsAdaptiveGroups":
                if fig.invocations["requests"] == 0 or fraction <= 0:
                    continue
                maxes = wall_quantiles(model)
                for extra, values in split_usage(model, minute, fig.invocations, split):
                    sums = _partial(values, fraction)
                    out.append(({**row, **extra}, sums, maxes, fig.sample_interval))
            elif dataset.name == "durableObjectsPeriodicGroups":
                if fraction <= 0:
                    continue
                ws: dict[str, float] = {"activeWebsocketConnections": fig.websockets}
                for extra, values in split_usage(model, minute, fig.periodic, split):
                    out.append(({**row, **extra}, _partial(values, fraction), ws, 1))
            elif fig.stored_bytes is not None and fraction > 0:
                out.append((row, {}, {"storedBytes": fig.stored_bytes}, 1))
        return out


_SETTINGS = {
    "enabled": True,
    "availableFields": [],
    "maxDuration": MAX_DURATION,
    "maxNumberOfFields": MAX_FIELDS,
    "maxPageSize": MAX_PAGE_SIZE,
    "notOlderThan": NOT_OLDER_THAN,
}


def _time_row(t: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, (size, _) in _TIME_DIMS.items():
        row[name] = (t // size) * size
    return row


def _render(group: Mapping[str, Any], dims: Sequence[str]) -> dict[str, Any]:
    row = group["row"]
    dimensions: dict[str, Any] = {}
    for d in dims:
        value = row[d]
        if d in _TIME_DIMS:
            value = _time_text(value)[:10] if d == "date" else _time_text(value)
        dimensions[d] = value
    intervals = group["intervals"]
    maxes = {k: v for k, v in group["max"].items() if not k.startswith(_Q)}
    quantiles = {k[len(_Q):]: v for k, v in group["max"].items() if k.startswith(_Q)}
    return {
        "dimensions": dimensions,
        "sum": group["sum"],
        "max": maxes,
        "quantiles": quantiles,
        "avg": {"sampleInterval": sum(intervals) / len(intervals) if intervals else 1.0},
        "_row": row,
    }


def _sort_key(field_name: str, dims: Sequence[str]) -> Callable[[Mapping[str, Any]], Any]:
    part, _, metric = field_name.partition("_")
    if part in ("sum", "max", "avg") and metric:
        return lambda r: r[part].get(metric, 0)
    if field_name in _TIME_DIMS or field_name in ("namespaceId", "objectId", "status"):
        return lambda r: r["_row"].get(field_name, "")
    raise _QueryError(f"the simulator cannot order by {field_name}", "unsupported")


def _cloudflare_error(error: GraphQLError) -> dict[str, Any]:
    extensions = dict(error.extensions or {})
    extensions.setdefault("code", "internal")
    extensions.setdefault("timestamp", _now_text())
    return {"message": error.message, "path": error.path, "extensions": extensions}
