"""The data the API serves: accounts, and each account's namespaces with their object counts.

A namespace's count is a function of the simulator's clock (a base plus growth since an
epoch), so it costs nothing to hold a huge namespace and a test moves its count by moving
the clock. Object ids are derived from the namespace's key (``ids.py``), never stored.
Everything mutable sits behind the :class:`Inventory`'s lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from do_exporter.simulator.ids import namespace_key, ratio_fraction, stored_count
from do_exporter.simulator.scenario import (
    AccountSpec,
    NamespaceSpec,
    ScenarioError,
    namespace_from_dict,
)


@dataclass
class LiveNamespace:
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


@dataclass(frozen=True)
class Walkable:
    """What an objects page needs of a namespace, read at one instant."""

    key: bytes
    ratio: Fraction
    count: int


class Inventory:
    """Accounts and their live namespaces, on the simulator's ``clock``.

    A removed account leaves the account list (its endpoints answer 7403); its namespaces
    stay in :meth:`specs`, which the GraphQL side reads.
    """

    def __init__(
        self, accounts: tuple[AccountSpec, ...], *, seed: int, clock: Callable[[], float]
    ) -> None:
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._accounts: dict[str, AccountSpec] = {a.id: a for a in accounts}
        self._namespaces: dict[str, dict[str, LiveNamespace]] = {
            a.id: {ns.id: self._live(a.id, ns, now) for ns in a.namespaces} for a in accounts
        }
        self._objects_served = 0

    # ---- accounts ---------------------------------------------------------------------
    def account_ids(self) -> list[str]:
        """Every account id, in scenario order (removed ones left out)."""
        with self._lock:
            return list(self._accounts)

    def has_account(self, account_id: str) -> bool:
        with self._lock:
            return account_id in self._accounts

    def accounts(self) -> list[AccountSpec]:
        with self._lock:
            return list(self._accounts.values())

    def remove_account(self, account_id: str) -> None:
        """Delete an account: it leaves ``GET /accounts`` and its endpoints answer 7403."""
        with self._lock:
            if self._accounts.pop(account_id, None) is None:
                raise KeyError("unknown account")

    # ---- namespaces -------------------------------------------------------------------
    def namespace_ids(self, account_id: str) -> list[str]:
        """The ids of the namespaces an account has now."""
        with self._lock:
            return list(self._account_namespaces(account_id))

    def namespace_items(self, account_id: str) -> list[dict[str, Any]]:
        """An account's namespaces as the list endpoint shows them."""
        with self._lock:
            return [ns.json() for ns in self._namespaces[account_id].values()]

    def specs(self, account_id: str) -> list[NamespaceSpec] | None:
        """An account's namespace specs (None for an account never seen): GraphQL's view."""
        with self._lock:
            live = self._namespaces.get(account_id)
            return None if live is None else [ns.spec for ns in live.values()]

    def walkable(self, account_id: str, namespace_id: str) -> Walkable | None:
        """The namespace's key, ratio and count now; None if it does not exist."""
        with self._lock:
            ns = self._namespaces[account_id].get(namespace_id)
            if ns is None:
                return None
            return Walkable(ns.key, ns.ratio, ns.count(self._clock()))

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
            existing[spec.id] = self._live(account_id, spec, self._clock())
            return spec.id

    def remove_namespace(self, account_id: str, namespace_id: str) -> None:
        """Delete a namespace: it leaves the list and its objects answer 10066."""
        with self._lock:
            self._namespace(account_id, namespace_id)
            del self._namespaces[account_id][namespace_id]

    # ---- objects served ---------------------------------------------------------------
    def served(self, objects: int) -> None:
        """Count objects sent in a page."""
        with self._lock:
            self._objects_served += objects

    def objects_served(self) -> int:
        with self._lock:
            return self._objects_served

    def reset_counts(self) -> None:
        with self._lock:
            self._objects_served = 0

    # ---- helpers ----------------------------------------------------------------------
    def _live(self, account_id: str, spec: NamespaceSpec, now: float) -> LiveNamespace:
        return LiveNamespace(
            spec=spec,
            key=namespace_key(self._seed, account_id, spec.id),
            ratio=ratio_fraction(spec.stored_data_ratio),
            base=spec.objects,
            growth_per_minute=spec.growth_per_minute,
            epoch=now,
        )

    def _account_namespaces(self, account_id: str) -> dict[str, LiveNamespace]:
        try:
            return self._namespaces[account_id]
        except KeyError:
            raise KeyError(f"unknown account {account_id}") from None

    def _namespace(self, account_id: str, namespace_id: str) -> LiveNamespace:
        try:
            return self._account_namespaces(account_id)[namespace_id]
        except KeyError:
            raise KeyError(f"unknown namespace {namespace_id} in account {account_id}") from None
