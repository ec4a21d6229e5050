"""Routing: one request in, one :class:`Response` out, through the simulator's parts.

The order is Cloudflare's as far as it shows from outside: the edge (a fault that replaces
the answer) before anything else; then the route, the method, the ``Authorization`` header,
the token, the user's budget (every known token's request is charged, refused or not),
and last what the token may see. The admin API (``/__simulator/...``) and ``/graphql`` are
routed here too; requests are counted by endpoint and status.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from do_exporter.simulator import responses as r
from do_exporter.simulator.auth import Tokens
from do_exporter.simulator.budget import Budgets
from do_exporter.simulator.faults import PRE_AUTH, Fault, FaultPlan, alter, edge_answer
from do_exporter.simulator.graphql import GraphQLEndpoint
from do_exporter.simulator.pages import Pages
from do_exporter.simulator.responses import Response
from do_exporter.simulator.scenario import TokenSpec

ADMIN_PREFIX = "/__simulator/"
ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("accounts", re.compile(r"^/accounts/?$")),
    ("namespaces", re.compile(r"^/accounts/([^/]+)/workers/durable_objects/namespaces/?$")),
    (
        "objects",
        re.compile(r"^/accounts/([^/]+)/workers/durable_objects/namespaces/([^/]+)/objects/?$"),
    ),
    ("verify", re.compile(r"^/user/tokens/verify/?$")),
    ("verify", re.compile(r"^/accounts/([^/]+)/tokens/verify/?$")),
)
# The admin API: (method, action, query string, body) -> answer.
AdminHandler = Callable[[str, str, str, bytes], Response]


def route(base_path: str, path: str) -> tuple[str, tuple[str, ...]]:
    """The endpoint a path names (``accounts|namespaces|objects|verify|graphql|other``) and
    the ids in it."""
    if path == base_path + "/graphql":
        return "graphql", ()
    if base_path and not (path == base_path or path.startswith(base_path + "/")):
        return "other", ()
    rest = path[len(base_path) :]
    for endpoint, pattern in ROUTES:
        match = pattern.match(rest)
        if match:
            return endpoint, match.groups()
    return "other", ()


class Router:
    """Answers requests with the simulator's parts; counts them by endpoint and status."""

    def __init__(
        self,
        base_path: str,
        *,
        tokens: Tokens,
        budgets: Budgets,
        faults: FaultPlan,
        pages: Pages,
        graphql: GraphQLEndpoint,
        admin: AdminHandler,
        clock: Callable[[], float],
        unix_time: Callable[[], float],
    ) -> None:
        self._base_path = base_path
        self._tokens = tokens
        self._budgets = budgets
        self._faults = faults
        self._pages = pages
        self._graphql = graphql
        self._admin = admin
        self._clock = clock
        self._unix_time = unix_time
        self._lock = threading.Lock()
        self._requests: dict[str, dict[str, int]] = {}

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        """Answer one request (``target`` is the path with its query string)."""
        split = urlsplit(target)
        path = split.path
        if path.startswith(ADMIN_PREFIX):
            return self._admin(method, path[len(ADMIN_PREFIX) :], split.query, body)
        endpoint, groups = route(self._base_path, path)
        namespace_id = groups[1] if endpoint == "objects" else None
        fault, delay = self._faults.draw(endpoint, namespace_id)
        if fault is not None and fault.kind in PRE_AUTH:
            response = edge_answer(fault)
        else:
            response = self._answer(method, endpoint, groups, split.query, headers, body, fault)
            if fault is not None:
                response = alter(response, fault)
        response.delay += delay
        self._count(endpoint, response)
        return response

    def _answer(
        self,
        method: str,
        endpoint: str,
        groups: tuple[str, ...],
        query_string: str,
        headers: Mapping[str, str],
        body: bytes,
        fault: Fault | None,
    ) -> Response:
        if endpoint == "graphql":
            return self._graphql.handle(method, headers, body, fault)
        if endpoint == "other":
            return r.error(404, r.NO_ROUTE)
        if method != "GET":
            return r.error(405, r.METHOD_NOT_ALLOWED)
        token, denied = self._tokens.authenticate(headers)
        if denied is not None:
            return denied
        if token is None:  # well-formed but unknown, or revoked: nothing is charged
            if endpoint == "verify":
                return r.error(401, r.INVALID_TOKEN)
            return r.error(403, r.AUTH_ERROR)
        limited, rate_headers = self._budgets.spend(token.value, self._clock(), self._unix_time())
        if limited is not None:
            return limited
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        response = self._endpoint(endpoint, token, groups, query, fault)
        response.headers.extend(rate_headers)
        return response

    def _endpoint(
        self,
        endpoint: str,
        token: TokenSpec,
        groups: tuple[str, ...],
        query: dict[str, str],
        fault: Fault | None,
    ) -> Response:
        """The answer of a REST endpoint to an authenticated, charged request."""
        if endpoint == "verify":
            return self._tokens.verify(token, groups, fault)
        if endpoint == "accounts":
            if not self._tokens.usable(token):
                return r.error(403, r.AUTH_ERROR)
            if token.owner == "account":
                return r.error(400, r.ACCOUNT_TOKEN_LIST)
            return self._pages.accounts(token.accounts, query, fault)
        denied = self._tokens.check_account(token, groups[0])
        if denied is not None:
            return denied
        if endpoint == "namespaces":
            return self._pages.namespaces(groups[0], query, fault)
        return self._pages.objects(groups[0], groups[1], query, fault)

    # ---- counts -----------------------------------------------------------------------
    def _count(self, endpoint: str, response: Response) -> None:
        status = response.action if response.action != "send" else str(response.status)
        with self._lock:
            by_status = self._requests.setdefault(endpoint, {})
            by_status[status] = by_status.get(status, 0) + 1

    def requests(self) -> dict[str, dict[str, int]]:
        """Requests answered by endpoint and status (``disconnect``/``drop`` for cut ones)."""
        with self._lock:
            return {endpoint: dict(s) for endpoint, s in self._requests.items()}

    def reset_counts(self) -> None:
        with self._lock:
            self._requests = {}
