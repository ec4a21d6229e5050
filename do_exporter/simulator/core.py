"""The simulator: state (accounts, namespaces, tokens, budgets, faults, stats) and answers.

:meth:`Simulator.handle` turns one request into a :class:`Response`; ``server.py`` only moves
bytes. Every piece of mutable state sits behind one lock; ids are hashed outside it.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from do_exporter.simulator import responses as r
from do_exporter.simulator.budget import Charge, UserBudget
from do_exporter.simulator.faults import (
    PRE_AUTH,
    Fault,
    QueuedFault,
    RuleState,
    make_fault,
)
from do_exporter.simulator.graphql import GraphQLEndpoint
from do_exporter.simulator.ids import (
    ID_HEX,
    RECORD,
    decode_cursor,
    encode_cursor,
    id_text,
    namespace_key,
    ratio_fraction,
    stored_count,
    stored_flags,
)
from do_exporter.simulator.responses import Response
from do_exporter.simulator.scenario import (
    HEX32,
    TOKEN_STATUSES,
    AccountSpec,
    NamespaceSpec,
    RateLimitSpec,
    Scenario,
    ScenarioError,
    TokenSpec,
    namespace_from_dict,
)
from do_exporter.simulator.server import SimulatorServer

ADMIN_PREFIX = "/__simulator/"
# An objects page is its ids' hex with a marker byte after each id: TRUE or FALSE (control
# bytes, in no id and no JSON text) becomes the text up to the next id.
_TRUE, _FALSE = b"\x01", b"\x02"
_OBJECTS_TRUE = b'","hasStoredData":true},{"id":"'
_OBJECTS_FALSE = b'","hasStoredData":false},{"id":"'
_FIRST_OBJECT = b'[{"id":"'  # as long as the ',{"id":"' that ends each separator
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("accounts", re.compile(r"^/accounts/?$")),
    ("namespaces", re.compile(r"^/accounts/([^/]+)/workers/durable_objects/namespaces/?$")),
    (
        "objects",
        re.compile(r"^/accounts/([^/]+)/workers/durable_objects/namespaces/([^/]+)/objects/?$"),
    ),
    ("verify", re.compile(r"^/user/tokens/verify/?$")),
    ("verify", re.compile(r"^/accounts/([^/]+)/tokens/verify/?$")),
)
# What token_can() accepts: a capability of the exporter, or a permission group's name.
_CAPABILITIES = {
    "workers_scripts": "workers_scripts_read",
    "namespaces": "workers_scripts_read",
    "objects": "workers_scripts_read",
    "analytics": "account_analytics_read",
    "workers_scripts_read": "workers_scripts_read",
    "account_analytics_read": "account_analytics_read",
}
# Where an objects page puts a stale cursor on its first page (cursor_shape both-different):
# cursor-shaped, but no namespace's cursor, so it answers 400/6008 if sent back.
_GARBAGE_CURSOR = "AAAAAHN0YWxlLWN1cnNvci1kby1ub3QtZm9sbG93LW1l"


@dataclass
class _Namespace:
    """A namespace at run time: its count is ``base`` plus growth since ``epoch``."""

    spec: NamespaceSpec
    key: bytes
    ratio: Fraction
    base: int
    growth_per_minute: float
    epoch: float

    def count(self, now: float) -> int:
        grown = math.floor(self.growth_per_minute * (now - self.epoch) / 60.0)
        return max(0, self.base + grown)

    def rebase(self, now: float, base: int) -> None:
        self.base = max(0, base)
        self.epoch = now

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.spec.id}
        for key, value in (
            ("name", self.spec.name),
            ("script", self.spec.script),
            ("class", self.spec.class_name),
            ("use_sqlite", self.spec.use_sqlite),
        ):
            if value is not None:
                out[key] = value
        return out


@dataclass
class _Stats:
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    objects_served: int = 0
    rate_limited: int = 0

    def snapshot(self) -> dict[str, Any]:
        total = sum(sum(by_status.values()) for by_status in self.requests.values())
        return {
            "requests_total": total,
            "requests": {e: dict(s) for e, s in self.requests.items()},
            "faults": dict(self.faults),
            "objects_served": self.objects_served,
            "rate_limited": self.rate_limited,
        }


class Simulator:
    """A fake Cloudflare API serving a :class:`Scenario` over real HTTP.

    ``clock`` (seconds, monotonic) drives growth, the request budgets, other clients and
    token expiry, so tests can move time; latency and delays use real time. ``start_time``
    is the Unix time the clock's value at construction stands for (default: now); token
    ``expires_on``/``not_before`` and ``X-RateLimit-Reset`` dates are read against it.
    Usable as a context manager (starts and stops).
    """

    def __init__(
        self,
        scenario: Scenario,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        start_time: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.port = port
        self._clock = clock
        self._seed = scenario.seed if seed is None else seed
        self._secret = f"cursor-secret-{self._seed}".encode()
        self._lock = threading.Lock()
        self._rng = random.Random(self._seed)
        self._stopping = threading.Event()
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None
        now = clock()
        self._clock_start = now
        self._unix_start = time.time() if start_time is None else start_time
        self._accounts: dict[str, AccountSpec] = {a.id: a for a in scenario.accounts}
        self._namespaces: dict[str, dict[str, _Namespace]] = {
            a.id: {ns.id: self._new_namespace(a.id, ns, now) for ns in a.namespaces}
            for a in scenario.accounts
        }
        self._tokens: dict[str, TokenSpec] = {t.value: t for t in scenario.tokens}
        self._budgets: dict[str, UserBudget] = {}  # by user name
        self._budget_of: dict[str, UserBudget] = {}  # by token value
        for user in scenario.users:
            per_minute = user.other_clients_per_minute
            budget = self._new_budget(user.name, user.rate_limit, now, per_minute)
            for value in user.tokens:
                self._budget_of[value] = budget
        for spec in scenario.tokens:
            if spec.value not in self._budget_of:  # a token of no listed user is its own user
                name = f"token:{spec.id}"
                self._budget_of[spec.value] = self._new_budget(name, scenario.rate_limit, now, 0)
        self._queue: list[QueuedFault] = []
        self._rules = [RuleState(rule) for rule in scenario.faults.rules]
        self._stats = _Stats()
        self.graphql = GraphQLEndpoint(
            scenario, authenticate=self._authenticate, namespaces=self._specs, seed=self._seed
        )

    # ---- life cycle -------------------------------------------------------------------
    def start(self) -> Simulator:
        """Listen and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._stopping.clear()
        self._server = SimulatorServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="do-exporter-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and wake sleeping answers."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_all()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:41234``; the admin API is under it."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:41234/client/v4``."""
        return self.url + self.scenario.base_path

    @property
    def token(self) -> str:
        """An active token, preferring user-owned ones that may list namespaces and objects
        on every account they reach (the first such in scenario order)."""
        with self._lock:
            active = [t for t in self._tokens.values() if self._usable(t)]
            if active:
                return min(active, key=lambda t: (t.owner != "user", not self._reads_all(t))).value
        raise RuntimeError("the scenario has no active token left")

    @property
    def account_ids(self) -> list[str]:
        """Every account id of the scenario, in scenario order."""
        return list(self._accounts)

    @property
    def stopping(self) -> threading.Event:
        """Set while stopping; delays wait on it so stop() never hangs."""
        return self._stopping

    # ---- control ----------------------------------------------------------------------
    def namespace_ids(self, account_id: str) -> list[str]:
        """The ids of the namespaces an account has now."""
        with self._lock:
            return list(self._account_namespaces(account_id))

    def expected(self, account_id: str, namespace_id: str) -> tuple[int, int]:
        """``(objects, with_stored_data)`` a full walk of the namespace returns right now."""
        with self._lock:
            ns = self._namespace(account_id, namespace_id)
            count = ns.count(self._clock())
            return count, stored_count(ns.ratio, count)

    def set_objects(self, account_id: str, namespace_id: str, count: int) -> None:
        """Set a namespace's object count now (growth continues from there)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._namespace(account_id, namespace_id).rebase(self._clock(), count)

    def add_objects(self, account_id: str, namespace_id: str, delta: int) -> None:
        """Add (or, negative, remove from the end) objects of a namespace."""
        with self._lock:
            ns = self._namespace(account_id, namespace_id)
            now = self._clock()
            ns.rebase(now, ns.count(now) + delta)

    def set_growth(self, account_id: str, namespace_id: str, per_minute: float) -> None:
        """Change how many objects a namespace gains per minute from now on."""
        with self._lock:
            ns = self._namespace(account_id, namespace_id)
            now = self._clock()
            ns.rebase(now, ns.count(now))
            ns.growth_per_minute = float(per_minute)

    def add_namespace(self, account_id: str, namespace: Mapping[str, Any]) -> str:
        """Add a namespace (scenario format) to an account; returns its id."""
        with self._lock:
            existing = self._account_namespaces(account_id)
            spec = namespace_from_dict(
                dict(namespace), "namespace", self._seed, account_id, len(existing) + 1000
            )
            if spec.id in existing:
                raise ScenarioError(f"namespace {spec.id} already exists")
            existing[spec.id] = self._new_namespace(account_id, spec, self._clock())
            return spec.id

    def remove_namespace(self, account_id: str, namespace_id: str) -> None:
        """Delete a namespace: it leaves the list and its objects answer 10066."""
        with self._lock:
            self._namespace(account_id, namespace_id)
            del self._namespaces[account_id][namespace_id]

    def remove_account(self, account_id: str) -> None:
        """Delete an account: it leaves ``GET /accounts`` and its endpoints answer 7403."""
        with self._lock:
            if self._accounts.pop(account_id, None) is None:
                raise KeyError("unknown account")

    def revoke_token(self, token: str) -> None:
        """Revoke a token: from now on it is unknown to every endpoint."""
        with self._lock:
            if self._tokens.pop(token, None) is None:
                raise KeyError("unknown token")

    def set_token_status(self, token: str, status: str) -> None:
        """Set a token's status (``active``, ``disabled`` or ``expired``) from now on."""
        if status not in TOKEN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TOKEN_STATUSES)}")
        with self._lock:
            spec = self._tokens.get(token)
            if spec is None:
                raise KeyError("unknown token")
            self._tokens[token] = dataclasses.replace(spec, status=status)

    def token_status(self, token: str) -> str | None:
        """``active``/``disabled``/``expired`` as the verify endpoints say it now; ``None``
        for a token the API does not know (never issued, or revoked)."""
        with self._lock:
            spec = self._tokens.get(token)
            return None if spec is None else self._status(spec)

    def token_can(self, token: str, account_id: str, capability: str) -> bool:
        """Whether ``token`` may use ``capability`` on ``account_id`` right now.

        ``capability`` is ``"analytics"`` (Account Analytics Read: GraphQL) or
        ``"workers_scripts"`` (Workers Scripts Read or Write: namespaces and objects), or a
        permission group's name. True only for a known, active token, inside its
        ``not_before``/``expires_on``, reaching an existing account with that permission.
        """
        permission = _CAPABILITIES.get(capability)
        if permission is None:
            raise ValueError(f"unknown capability {capability!r}")
        with self._lock:
            spec = self._tokens.get(token)
            return (
                spec is not None
                and self._usable(spec)
                and account_id in self._accounts
                and spec.has_permission(account_id, permission)
            )

    def unix_time(self) -> float:
        """The simulator's idea of the Unix time: ``start_time`` plus the clock's progress."""
        return self._unix_start + (self._clock() - self._clock_start)

    def inject(
        self,
        fault: str,
        *,
        endpoint: str = "*",
        count: int | None = 1,
        namespace_id: str | None = None,
        **params: Any,
    ) -> None:
        """Make the next ``count`` matching requests fail with ``fault`` (None: until cleared).

        ``endpoint`` is ``accounts|namespaces|objects|verify|other|*``. Queued faults are
        used first-in first-out and take precedence over the scenario's random rules.
        """
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        spec = make_fault(fault, {"endpoint": endpoint, "namespace_id": namespace_id, **params})
        with self._lock:
            self._queue.append(QueuedFault(spec, count))

    def clear_faults(self) -> None:
        """Drop every queued fault and end any running burst (scenario rules stay)."""
        with self._lock:
            self._queue.clear()
            for state in self._rules:
                state.burst_left = 0

    def stats(self) -> dict[str, Any]:
        """Requests served by endpoint and status (``disconnect``/``drop`` for cut answers),
        and under ``users`` each user's budget and who was refused (see docs/simulator.md)."""
        with self._lock:
            out = self._stats.snapshot()
            now = self._clock()
            out["users"] = {name: b.snapshot(now) for name, b in self._budgets.items()}
            return out

    def reset_stats(self) -> None:
        """Forget every count (the budgets' windows and what they have used stay)."""
        with self._lock:
            self._stats = _Stats()
            for budget in self._budgets.values():
                budget.reset_counters()

    def info(self) -> dict[str, Any]:
        """What the CLI prints on start: ``api_url``, ``token``, ``account_ids``."""
        return {"api_url": self.api_url, "token": self.token, "account_ids": self.account_ids}

    # ---- answering --------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        """Answer one request (``target`` is the path with its query string)."""
        split = urlsplit(target)
        path = split.path
        if path.startswith(ADMIN_PREFIX):
            return self._admin(method, path[len(ADMIN_PREFIX) :], split.query, body)
        if path == self.scenario.base_path + "/graphql":
            fault, delay = self._draw("graphql", None)
            if fault is not None and fault.kind in PRE_AUTH:
                response = self._fault_answer(fault)
            else:
                response = self.graphql.handle(method, headers, body, fault)
                if fault is not None:
                    response = self._alter(response, fault)
            response.delay += delay
            self._count("graphql", response)
            return response
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        endpoint, groups = self._route(path)
        namespace_id = groups[1] if endpoint == "objects" else None
        fault, delay = self._draw(endpoint, namespace_id)
        if fault is not None and fault.kind in PRE_AUTH:
            response = self._fault_answer(fault)
        else:
            response = self._answer(method, endpoint, groups, query, headers, fault)
            if fault is not None:
                response = self._alter(response, fault)
        response.delay += delay
        self._count(endpoint, response)
        return response

    def _route(self, path: str) -> tuple[str, tuple[str, ...]]:
        base = self.scenario.base_path
        if base and not (path == base or path.startswith(base + "/")):
            return "other", ()
        rest = path[len(base) :]
        for endpoint, pattern in _ROUTES:
            match = pattern.match(rest)
            if match:
                return endpoint, match.groups()
        return "other", ()

    def _draw(self, endpoint: str, namespace_id: str | None) -> tuple[Fault | None, float]:
        """Pick this request's fault (queue first, then rules) and its latency, seeded."""
        faults = self.scenario.faults
        with self._lock:
            delay = faults.latency_ms / 1000.0
            if faults.jitter_ms:
                delay += self._rng.uniform(0.0, faults.jitter_ms) / 1000.0
            chosen: Fault | None = None
            for i, queued in enumerate(self._queue):
                if queued.fault.matches(endpoint, namespace_id):
                    chosen = queued.fault
                    if queued.remaining is not None:
                        queued.remaining -= 1
                        if queued.remaining == 0:
                            del self._queue[i]
                    break
            if chosen is None:
                for state in self._rules:
                    if not state.rule.fault.matches(endpoint, namespace_id):
                        continue
                    if state.burst_left > 0:
                        state.burst_left -= 1
                    elif self._rng.random() < state.rule.rate:
                        state.burst_left = state.rule.burst - 1
                    else:
                        continue
                    state.fired += 1
                    chosen = state.rule.fault
                    break
            if chosen is not None:
                self._stats.faults[chosen.kind] = self._stats.faults.get(chosen.kind, 0) + 1
                if chosen.kind == "delay" and chosen.seconds is not None:
                    delay += chosen.seconds
        return chosen, delay

    def _fault_answer(self, fault: Fault) -> Response:
        if fault.kind == "disconnect":
            return Response(0, b"", action="disconnect")
        status = fault.status or 500
        headers: list[tuple[str, str]] = []
        if fault.retry_after is not None:
            headers.append(("Retry-After", _seconds(fault.retry_after)))
        if fault.kind == "html":
            headers.append(("Server", "cloudflare"))
            return Response(status, r.html_page(status), r.HTML, headers)
        default = r.RATE_LIMITED if status == 429 else r.UNKNOWN_ERROR
        code = fault.code if fault.code is not None else default[0]
        message = fault.message if fault.message is not None else default[1]
        return Response(status, r.error_body(code, message), r.JSON, headers)

    def _alter(self, response: Response, fault: Fault) -> Response:
        """Transport-level faults that cut or spoil whatever answer was built."""
        if fault.kind == "truncated":
            response.body = response.body[: max(1, len(response.body) // 2)]
        elif fault.kind == "invalid_json":
            response.body = b'{"success":true,"result":[{"id":"' + b"\x00<html>oops"
        elif fault.kind == "drop":
            response.action = "drop"
        return response

    def _answer(
        self,
        method: str,
        endpoint: str,
        groups: tuple[str, ...],
        query: dict[str, str],
        headers: Mapping[str, str],
        fault: Fault | None,
    ) -> Response:
        if endpoint == "other":
            return r.error(404, r.NO_ROUTE)
        if method != "GET":
            return r.error(405, r.METHOD_NOT_ALLOWED)
        token, denied = self._authenticate(headers)
        if denied is not None:
            return denied
        if token is None:  # well-formed but unknown, or revoked: nothing is charged
            if endpoint == "verify":
                return r.error(401, r.INVALID_TOKEN)
            return r.error(403, r.AUTH_ERROR)
        limited, rate_headers = self._spend(token.value)
        if limited is not None:
            return limited
        if endpoint == "verify":
            response = self._verify(token, groups, fault)
        elif endpoint == "accounts":
            response = self._list_accounts(token, query, fault)
        else:
            denied = self._check_account(token, groups[0], endpoint)
            if denied is not None:
                response = denied
            elif endpoint == "namespaces":
                response = self._list_namespaces(groups[0], query, fault)
            else:
                response = self._list_objects(groups[0], groups[1], query, fault)
        response.headers.extend(rate_headers)
        return response

    def _authenticate(self, headers: Mapping[str, str]) -> tuple[TokenSpec | None, Response | None]:
        value = _header(headers, "authorization")
        if value is None:
            return None, r.error(400, r.MISSING_AUTH)
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            return None, r.error(400, r.BAD_HEADERS, r.BAD_AUTH_FORMAT)
        with self._lock:
            spec = self._tokens.get(token)
        return spec, None

    def _spend(self, token: str) -> tuple[Response | None, list[tuple[str, str]]]:
        """Charge one request to the token's user's budget; a 429 once the window is spent."""
        with self._lock:
            budget = self._budget_of[token]
            charge = budget.charge(self._clock())
            headers = self._rate_headers(budget, charge)
            if charge.allowed:
                return None, headers
            self._stats.rate_limited += 1
        window = _seconds(budget.window_seconds)
        message = f"More than {budget.requests} requests per {window} seconds reached. "
        answer = r.error(429, (r.RATE_LIMITED[0], message + r.RATE_LIMITED[1]))
        answer.headers.append(("Retry-After", str(charge.reset)))
        answer.headers.extend(headers)
        return answer, []

    def _rate_headers(self, budget: UserBudget, charge: Charge) -> list[tuple[str, str]]:
        """The budget headers in the scenario's style (``rate_limit.headers``)."""
        style = self.scenario.rate_limit.headers
        headers: list[tuple[str, str]] = []
        if style in ("ratelimit", "both"):
            window = _seconds(budget.window_seconds)
            headers.append(("Ratelimit", f'"default";r={charge.remaining};t={charge.reset}'))
            headers.append(("Ratelimit-Policy", f'"default";q={budget.requests};w={window}'))
        if style in ("x-ratelimit", "both"):
            headers.append(("X-RateLimit-Limit", str(budget.requests)))
            headers.append(("X-RateLimit-Remaining", str(charge.remaining)))
            if not charge.allowed:
                reset_at = self.unix_time() + charge.reset
                headers.append(("X-RateLimit-Reset", email.utils.formatdate(reset_at, usegmt=True)))
        return headers

    def _verify(self, token: TokenSpec, groups: tuple[str, ...], fault: Fault | None) -> Response:
        if groups:  # /accounts/{id}/tokens/verify
            account_id = groups[0]
            if not HEX32.match(account_id):
                return _no_route_for(f"/accounts/{account_id}/tokens/verify")
            ok = token.owner == "account" and token.accounts == (account_id,)
        else:
            ok = token.owner == "user"
        if not ok:
            return r.error(401, r.INVALID_TOKEN)
        with self._lock:
            status = self._status(token)
        messages: list[dict[str, Any]] = []
        if status == "active":
            messages = [{"code": 10000, "message": r.TOKEN_VALID, "type": None}]
        result: dict[str, Any] = {"id": token.id, "status": status}
        if token.not_before is not None:
            result["not_before"] = token.not_before
        if token.expires_on is not None:
            result["expires_on"] = token.expires_on
        return self._success(json.dumps(result, separators=(",", ":")), None, fault, messages)

    def _check_account(self, token: TokenSpec, account_id: str, endpoint: str) -> Response | None:
        with self._lock:
            usable = self._usable(token)
        if not usable:
            return r.error(403, r.AUTH_ERROR)
        if not HEX32.match(account_id):
            suffix = "/workers/durable_objects/namespaces"
            return _no_route_for(f"/accounts/{account_id}{suffix}")
        if account_id not in self._accounts:
            return r.error(403, r.ACCOUNT_NOT_AUTHORISED)
        if not token.has_permission(account_id, "workers_scripts_read"):
            return r.error(403, r.AUTH_ERROR)  # not reached, or no Workers Scripts Read
        return None

    def _list_accounts(
        self, token: TokenSpec, query: dict[str, str], fault: Fault | None
    ) -> Response:
        with self._lock:
            usable = self._usable(token)
        if not usable:
            return r.error(403, r.AUTH_ERROR)
        if token.owner == "account":
            return r.error(400, r.ACCOUNT_TOKEN_LIST)
        page = _int_param(query, "page", 1, 1, 10**9)
        per_page = _int_param(query, "per_page", 20, 5, 50)
        if isinstance(page, Response):
            return page
        if isinstance(per_page, Response):
            return per_page
        visible = [
            {"id": a.id, "name": a.name, "type": "standard", "created_on": "2021-03-04T05:06:07Z"}
            for a in self._accounts.values()
            if token.accounts is None or a.id in token.accounts
        ]
        return self._page(visible, page, per_page, fault)

    def _list_namespaces(
        self, account_id: str, query: dict[str, str], fault: Fault | None
    ) -> Response:
        page = _int_param(query, "page", 1, 1, 10**9)
        per_page = _int_param(query, "per_page", 20, 1, 1000)
        if isinstance(page, Response):
            return page
        if isinstance(per_page, Response):
            return per_page
        with self._lock:
            items = [ns.json() for ns in self._namespaces[account_id].values()]
        if self.scenario.max_per_page is not None:
            per_page = min(per_page, self.scenario.max_per_page)
        return self._page(items, page, per_page, fault)

    def _page(
        self, items: list[dict[str, Any]], page: int, per_page: int, fault: Fault | None
    ) -> Response:
        chunk = items[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(items),
            "total_pages": math.ceil(len(items) / per_page),
        }
        return self._success(json.dumps(chunk, separators=(",", ":")), info, fault)

    def _success(
        self,
        result: str | Callable[[bytes, bytes], bytearray],
        info: dict[str, Any] | None,
        fault: Fault | None,
        messages: list[dict[str, Any]] | None = None,
    ) -> Response:
        """A success envelope around ``result``: JSON text, or a builder of a JSON list that
        is given the bytes to put before and after it (so a large page is copied once)."""
        kind = fault.kind if fault is not None else None
        if kind == "success_false":
            code = fault.code if fault is not None and fault.code is not None else 10013
            message = fault.message if fault is not None and fault.message else r.UNKNOWN_ERROR[1]
            return Response(200, r.error_body(code, message))
        if kind == "missing_result_info":
            info = None
        head, tail = r.success_envelope(info, messages)
        if kind == "wrong_type" and (callable(result) or result.startswith("[")):
            head, tail = head + b'{"items":', b"}" + tail
        elif kind == "wrong_type":
            head, tail = head + b"[", b"]" + tail
        if callable(result):
            return Response(200, result(head, tail))
        return Response(200, head + result.encode() + tail)

    def _list_objects(
        self, account_id: str, namespace_id: str, query: dict[str, str], fault: Fault | None
    ) -> Response:
        limit = _int_param(query, "limit", 1000, 10, 10000)
        if isinstance(limit, Response):
            return limit
        if self.scenario.max_limit is not None:
            limit = min(limit, self.scenario.max_limit)
        with self._lock:
            ns = self._namespaces[account_id].get(namespace_id)
            count = ns.count(self._clock()) if ns is not None else 0
        if ns is None:
            return r.error(404, r.NAMESPACE_NOT_FOUND)
        cursor = query.get("cursor", "")
        start = 0
        if cursor:
            decoded = decode_cursor(ns.key, self._secret, cursor)
            if decoded is None:
                return r.bad_param("cursor is not a valid cursor for this namespace")
            start = decoded
        endless = fault is not None and fault.kind == "endless_cursor"
        n = limit if endless else max(0, min(limit, count - start))
        next_index = start + n
        more = endless or next_index < count
        next_cursor = encode_cursor(ns.key, self._secret, next_index) if more else ""
        if fault is not None and fault.kind == "repeat_cursor":
            next_cursor = cursor or encode_cursor(ns.key, self._secret, 0)
        key, ratio = ns.key, ns.ratio
        info: dict[str, Any] = {"count": n, "per_page": limit}
        shape = self.scenario.cursor_shape
        if shape in ("both", "cursor"):
            info["cursor"] = next_cursor
        elif shape == "both-different":  # a stale cursor: this page's own, or garbage
            info["cursor"] = cursor or _GARBAGE_CURSOR
        if shape in ("both", "cursors", "both-different"):
            info["cursors"] = {"after": next_cursor}
        with self._lock:
            self._stats.objects_served += n
        return self._success(
            lambda head, tail: _objects_json(key, ratio, start, n, head, tail), info, fault
        )

    # ---- admin API --------------------------------------------------------------------
    def _admin(self, method: str, action: str, query_string: str, body: bytes) -> Response:
        try:
            return self._admin_action(method, action, query_string, body)
        except (KeyError, ValueError, TypeError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return _admin_json(400, {"ok": False, "error": str(text)})

    def _admin_action(self, method: str, action: str, query_string: str, body: bytes) -> Response:
        if method == "GET":
            query = {k: v[-1] for k, v in parse_qs(query_string).items()}
            if action == "stats":
                return _admin_json(200, self.stats())
            if action == "info":
                return _admin_json(200, self.info())
            if action == "expected":
                objects, stored = self.expected(query["account_id"], query["namespace_id"])
                return _admin_json(200, {"objects": objects, "with_stored_data": stored})
            return _admin_json(404, {"ok": False, "error": f"no admin endpoint GET {action}"})
        if method != "POST":
            return _admin_json(405, {"ok": False, "error": "use GET or POST"})
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        result: dict[str, Any] = {"ok": True}
        if action == "inject":
            params = dict(data)
            kind = params.pop("fault")
            self.inject(kind, **params)
        elif action == "clear_faults":
            self.clear_faults()
        elif action == "reset_stats":
            self.reset_stats()
        elif action == "objects":
            a, n = data["account_id"], data["namespace_id"]
            if "count" in data:
                self.set_objects(a, n, _admin_int(data["count"], "count"))
            if "add" in data:
                self.add_objects(a, n, _admin_int(data["add"], "add"))
            if "growth_per_minute" in data:
                self.set_growth(a, n, float(data["growth_per_minute"]))
            objects, stored = self.expected(a, n)
            result.update(objects=objects, with_stored_data=stored)
        elif action == "namespaces/add":
            result["id"] = self.add_namespace(data["account_id"], data["namespace"])
        elif action == "namespaces/delete":
            self.remove_namespace(data["account_id"], data["namespace_id"])
        elif action == "tokens/revoke":
            self.revoke_token(data["token"])
        elif action == "tokens/status":
            self.set_token_status(data["token"], data["status"])
        else:
            return _admin_json(404, {"ok": False, "error": f"no admin endpoint POST {action}"})
        return _admin_json(200, result)

    # ---- helpers ----------------------------------------------------------------------
    def _new_namespace(self, account_id: str, spec: NamespaceSpec, now: float) -> _Namespace:
        return _Namespace(
            spec=spec,
            key=namespace_key(self._seed, account_id, spec.id),
            ratio=ratio_fraction(spec.stored_data_ratio),
            base=spec.objects,
            growth_per_minute=spec.growth_per_minute,
            epoch=now,
        )

    def _new_budget(
        self, name: str, limit: RateLimitSpec, now: float, other_per_minute: float
    ) -> UserBudget:
        budget = UserBudget(
            name,
            limit.requests,
            limit.window_seconds,
            start=now,
            other_per_minute=other_per_minute,
        )
        self._budgets[name] = budget
        return budget

    def _reads_all(self, token: TokenSpec) -> bool:
        reached = token.accounts if token.accounts is not None else tuple(self._accounts)
        return all(token.has_permission(a, "workers_scripts_read") for a in reached)

    def _status(self, token: TokenSpec) -> str:
        """The token's status now: as set, or ``expired`` once ``expires_on`` has passed."""
        expires_at = token.expires_at
        if token.status == "active" and expires_at is not None and self.unix_time() >= expires_at:
            return "expired"
        return token.status

    def _usable(self, token: TokenSpec) -> bool:
        """Active, and past its ``not_before``: the list endpoints answer it."""
        if self._status(token) != "active":
            return False
        return token.not_before_at is None or self.unix_time() >= token.not_before_at

    def _specs(self, account_id: str) -> list[NamespaceSpec] | None:
        with self._lock:
            live = self._namespaces.get(account_id)
            return None if live is None else [ns.spec for ns in live.values()]

    def _account_namespaces(self, account_id: str) -> dict[str, _Namespace]:
        try:
            return self._namespaces[account_id]
        except KeyError:
            raise KeyError(f"unknown account {account_id}") from None

    def _namespace(self, account_id: str, namespace_id: str) -> _Namespace:
        try:
            return self._account_namespaces(account_id)[namespace_id]
        except KeyError:
            raise KeyError(f"unknown namespace {namespace_id} in account {account_id}") from None

    def _count(self, endpoint: str, response: Response) -> None:
        status = response.action if response.action != "send" else str(response.status)
        with self._lock:
            by_status = self._stats.requests.setdefault(endpoint, {})
            by_status[status] = by_status.get(status, 0) + 1


def _objects_json(
    key: bytes, ratio: Fraction, start: int, n: int, head: bytes = b"", tail: bytes = b""
) -> bytearray:
    """``head``, the ``result`` list of an objects page, then ``tail``.

    Each block's hex ids come with a free byte after every id (:func:`id_text`); one strided
    slice assignment sets those bytes to ``hasStoredData`` markers, and two single-byte
    ``replace`` calls expand the markers into the JSON between ids. A block (about 95 kB) is
    worked at a time and copied into the answer, allocated once at its exact size, so the
    answer is the only large buffer and the allocator keeps reusing it instead of faulting in
    fresh pages: about 1 ms for 10,000 objects.
    """
    if n == 0:
        return bytearray(head + b"[]" + tail)
    with_data = stored_count(ratio, start + n) - stored_count(ratio, start)
    size = len(head) + n * (ID_HEX + len(_OBJECTS_FALSE)) - with_data + len(b"]" + tail)
    body = bytearray(size + len(_FIRST_OBJECT))  # room for the last, cut, separator
    period = _markers(ratio)
    q = len(period)
    offset = start % q
    marks = (period * ((offset + n) // q + 1))[offset : offset + n]
    with memoryview(body) as view:
        view[: len(head) + len(_FIRST_OBJECT)] = head + _FIRST_OBJECT
        at = len(head) + len(_FIRST_OBJECT)
        done = 0
        for piece in id_text(key, start, n):
            ids = len(piece) // RECORD
            piece[ID_HEX::RECORD] = marks[done : done + ids]
            done += ids
            text = piece.replace(_TRUE, _OBJECTS_TRUE).replace(_FALSE, _OBJECTS_FALSE)
            view[at : at + len(text)] = text
            at += len(text)
        # The last separator opened an object that does not exist: end the list there.
        view[at - len(_FIRST_OBJECT) : size] = b"]" + tail
    del body[size:]
    return body


@functools.lru_cache(maxsize=256)
def _markers(ratio: Fraction) -> bytes:
    """One period of ``hasStoredData`` markers, one byte per object."""
    return b"".join(_TRUE if flag else _FALSE for flag in stored_flags(ratio, 0, ratio.denominator))


def _int_param(
    query: dict[str, str], name: str, default: int, low: int, high: int
) -> int | Response:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        return r.bad_param(f"{name} variable must be a number between {low} and {high}")
    return value


def _no_route_for(path: str) -> Response:
    return r.error(
        400, (7003, f"Could not route to {path}, perhaps your object identifier is invalid?")
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(math.ceil(value))


def _admin_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _admin_json(status: int, data: dict[str, Any]) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode())
