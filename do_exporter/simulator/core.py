"""The :class:`Simulator`: its parts put together, its life cycle and its public API.

Each concept has its module, and this one only wires them (nothing imports it back):

- ``data``: accounts and namespaces (:class:`Inventory`); ``pages``: the list answers;
- ``auth``: tokens, permissions, the verify endpoints (:class:`Tokens`);
- ``budget``: each user's request budget (:class:`Budgets`);
- ``faults``: which fault a request gets and how it spoils the answer (:class:`FaultPlan`);
- ``routing``: one request to one answer through those parts (:class:`Router`);
- ``admin``: the control methods over HTTP; ``server``: the bytes on the wire;
- ``graphql``: ``POST /graphql``, with its own budget.

See ``docs/simulator.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from do_exporter.simulator.admin import Admin
from do_exporter.simulator.auth import Tokens
from do_exporter.simulator.budget import Budgets
from do_exporter.simulator.data import Inventory
from do_exporter.simulator.faults import FaultPlan
from do_exporter.simulator.graphql import GraphQLEndpoint
from do_exporter.simulator.pages import Pages
from do_exporter.simulator.responses import Response
from do_exporter.simulator.routing import Router
from do_exporter.simulator.scenario import Scenario
from do_exporter.simulator.server import SimulatorServer


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
        seed = scenario.seed if seed is None else seed
        self._stopping = threading.Event()
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None
        now = clock()
        self._clock_start = now
        self._unix_start = time.time() if start_time is None else start_time
        self._inventory = Inventory(scenario.accounts, seed=seed, clock=clock)
        self._tokens = Tokens(scenario.tokens, unix_time=self.unix_time, inventory=self._inventory)
        self._budgets = Budgets(scenario, now)
        faults = scenario.faults
        self._faults = FaultPlan(
            faults.rules, seed=seed, latency_ms=faults.latency_ms, jitter_ms=faults.jitter_ms
        )
        self.graphql = GraphQLEndpoint(
            scenario,
            authenticate=self._tokens.authenticate,
            namespaces=self._inventory.specs,
            seed=seed,
        )
        self._router = Router(
            scenario.base_path,
            tokens=self._tokens,
            budgets=self._budgets,
            faults=self._faults,
            pages=Pages(scenario, self._inventory, seed=seed),
            graphql=self.graphql,
            admin=Admin(self),
            clock=clock,
            unix_time=self.unix_time,
        )

    # ---- life cycle -------------------------------------------------------------------
    def start(self) -> Simulator:
        """Listen and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._stopping.clear()
        self._server = SimulatorServer((self.host, self.port), self.handle, self._stopping)
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
        return self._tokens.preferred()

    @property
    def account_ids(self) -> list[str]:
        """Every account id of the scenario, in scenario order."""
        return self._inventory.account_ids()

    @property
    def stopping(self) -> threading.Event:
        """Set while stopping; delays wait on it so stop() never hangs."""
        return self._stopping

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        """Answer one request (``target`` is the path with its query string)."""
        return self._router.handle(method, target, headers, body)

    def unix_time(self) -> float:
        """The simulator's idea of the Unix time: ``start_time`` plus the clock's progress."""
        return self._unix_start + (self._clock() - self._clock_start)

    # ---- data -------------------------------------------------------------------------
    def namespace_ids(self, account_id: str) -> list[str]:
        """The ids of the namespaces an account has now."""
        return self._inventory.namespace_ids(account_id)

    def expected(self, account_id: str, namespace_id: str) -> tuple[int, int]:
        """``(objects, with_stored_data)`` a full walk of the namespace returns right now."""
        return self._inventory.expected(account_id, namespace_id)

    def set_objects(self, account_id: str, namespace_id: str, count: int) -> None:
        """Set a namespace's object count now (growth continues from there)."""
        self._inventory.set_objects(account_id, namespace_id, count)

    def add_objects(self, account_id: str, namespace_id: str, delta: int) -> None:
        """Add (or, negative, remove from the end) objects of a namespace."""
        self._inventory.add_objects(account_id, namespace_id, delta)

    def set_growth(self, account_id: str, namespace_id: str, per_minute: float) -> None:
        """Change how many objects a namespace gains per minute from now on."""
        self._inventory.set_growth(account_id, namespace_id, per_minute)

    def add_namespace(self, account_id: str, namespace: Mapping[str, Any]) -> str:
        """Add a namespace (scenario format) to an account; returns its id."""
        return self._inventory.add_namespace(account_id, namespace)

    def remove_namespace(self, account_id: str, namespace_id: str) -> None:
        """Delete a namespace: it leaves the list and its objects answer 10066."""
        self._inventory.remove_namespace(account_id, namespace_id)

    def remove_account(self, account_id: str) -> None:
        """Delete an account: it leaves ``GET /accounts`` and its endpoints answer 7403."""
        self._inventory.remove_account(account_id)

    # ---- tokens -----------------------------------------------------------------------
    def revoke_token(self, token: str) -> None:
        """Revoke a token: from now on it is unknown to every endpoint."""
        self._tokens.revoke(token)

    def set_token_status(self, token: str, status: str) -> None:
        """Set a token's status (``active``, ``disabled`` or ``expired``) from now on."""
        self._tokens.set_status(token, status)

    def token_status(self, token: str) -> str | None:
        """``active``/``disabled``/``expired`` as the verify endpoints say it now; ``None``
        for a token the API does not know (never issued, or revoked)."""
        return self._tokens.status_of(token)

    def token_can(self, token: str, account_id: str, capability: str) -> bool:
        """Whether ``token`` may use ``capability`` on ``account_id`` right now.

        ``capability`` is ``"analytics"`` (Account Analytics Read: GraphQL) or
        ``"workers_scripts"`` (Workers Scripts Read or Write: namespaces and objects), or a
        permission group's name. True only for a known, active token, inside its
        ``not_before``/``expires_on``, reaching an existing account with that permission.
        """
        return self._tokens.can(token, account_id, capability)

    # ---- faults -----------------------------------------------------------------------
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

        ``endpoint`` is ``accounts|namespaces|objects|verify|graphql|other|*``. Queued
        faults are used first-in first-out and take precedence over the scenario's rules.
        """
        scope = {"endpoint": endpoint, "namespace_id": namespace_id, **params}
        self._faults.inject(fault, scope, count)

    def clear_faults(self) -> None:
        """Drop every queued fault and end any running burst (scenario rules stay)."""
        self._faults.clear()

    # ---- stats ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Requests served by endpoint and status (``disconnect``/``drop`` for cut answers),
        and under ``users`` each user's budget and who was refused (see docs/simulator.md)."""
        requests = self._router.requests()
        return {
            "requests_total": sum(sum(by_status.values()) for by_status in requests.values()),
            "requests": requests,
            "faults": self._faults.fired(),
            "objects_served": self._inventory.objects_served(),
            "rate_limited": self._budgets.rate_limited,
            "users": self._budgets.snapshot(self._clock()),
        }

    def reset_stats(self) -> None:
        """Forget every count (the budgets' windows and what they have used stay)."""
        self._router.reset_counts()
        self._faults.reset_counts()
        self._inventory.reset_counts()
        self._budgets.reset_counters()

    def info(self) -> dict[str, Any]:
        """What the CLI prints on start: ``api_url``, ``token``, ``account_ids``."""
        return {"api_url": self.api_url, "token": self.token, "account_ids": self.account_ids}
