"""Scenarios: the accounts, namespaces, tokens, limits and faults a simulator serves.

A scenario is JSON (see ``docs/simulator.md``). :func:`load_scenario` reads a file,
:meth:`Scenario.from_dict` builds one from a dict, :func:`demo_scenario` is the built-in demo.
Every problem raises :class:`ScenarioError` with a one-line message that names the key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from do_exporter.simulator.faults import FaultRule, make_fault
from do_exporter.simulator.ids import derive_hex
from do_exporter.simulator.traffic import Traffic, traffic_from_dict

HEX32 = re.compile(r"^[0-9a-f]{32}$")
CURSOR_SHAPES = ("both", "cursor", "cursors", "both-different")
TOKEN_STATUSES = ("active", "disabled", "expired")
RATE_LIMIT_HEADERS = ("ratelimit", "x-ratelimit", "both", "none")
# Token permission groups the simulator knows (Cloudflare's names, snake_cased). Write implies
# read, as on the real API.
PERMISSIONS = ("workers_scripts_read", "workers_scripts_write", "account_analytics_read")
DEFAULT_PERMISSIONS = frozenset({"workers_scripts_read", "account_analytics_read"})
DEFAULT_BASE_PATH = "/client/v4"
DEFAULT_RATE_LIMIT_REQUESTS = 1200
DEFAULT_RATE_LIMIT_WINDOW = 300.0


class ScenarioError(ValueError):
    """A scenario that cannot be served; the message is one line naming the bad key."""


@dataclass(frozen=True)
class NamespaceSpec:
    """One Durable Object namespace; ``None`` fields are left out of the API's answer."""

    id: str
    name: str | None = None
    class_name: str | None = None
    script: str | None = None
    use_sqlite: bool | None = None
    objects: int = 0
    stored_data_ratio: float = 0.0
    growth_per_minute: float = 0.0
    analytics: Traffic | None = None  # usage served by POST /graphql (None: defaults)


@dataclass(frozen=True)
class AccountSpec:
    """One account and its namespaces."""

    id: str
    name: str
    namespaces: tuple[NamespaceSpec, ...] = ()


@dataclass(frozen=True)
class TokenSpec:
    """An API token: which accounts it reaches (None: all), who owns it, what it may do.

    ``permissions`` maps an account id, or ``"*"`` for every account the token reaches, to
    its permission groups. ``expires_on``/``not_before`` are the ISO 8601 texts the verify
    endpoints echo; ``expires_at``/``not_before_at`` the same instants as Unix time.
    """

    value: str
    id: str
    accounts: tuple[str, ...] | None = None
    status: str = "active"
    owner: str = "user"
    permissions: tuple[tuple[str, frozenset[str]], ...] = (("*", DEFAULT_PERMISSIONS),)
    expires_on: str | None = None
    not_before: str | None = None
    expires_at: float | None = None
    not_before_at: float | None = None

    def has_permission(self, account_id: str, permission: str) -> bool:
        """Whether the token holds ``permission`` on ``account_id`` (write implies read)."""
        if self.accounts is not None and account_id not in self.accounts:
            return False
        granted = dict(self.permissions)
        groups = granted.get(account_id, granted.get("*", frozenset()))
        if permission == "workers_scripts_read" and "workers_scripts_write" in groups:
            return True
        return permission in groups


@dataclass(frozen=True)
class RateLimitSpec:
    """A request budget: ``requests`` per fixed window of ``window_seconds``."""

    requests: int = DEFAULT_RATE_LIMIT_REQUESTS
    window_seconds: float = DEFAULT_RATE_LIMIT_WINDOW
    headers: str = "ratelimit"


@dataclass(frozen=True)
class UserSpec:
    """A Cloudflare user: its tokens share one budget, which its other clients also spend.

    ``other_clients_per_minute`` is how many requests the user's other tools (dashboard,
    scripts) send per minute, steadily, on the simulator's clock.
    """

    name: str
    tokens: tuple[str, ...]
    rate_limit: RateLimitSpec = RateLimitSpec()
    other_clients_per_minute: float = 0.0


@dataclass(frozen=True)
class FaultsSpec:
    """Latency on every answer (fixed + uniform jitter) and random fault rules."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rules: tuple[FaultRule, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """Everything a :class:`~do_exporter.simulator.Simulator` serves."""

    accounts: tuple[AccountSpec, ...]
    tokens: tuple[TokenSpec, ...]
    seed: int = 0
    base_path: str = DEFAULT_BASE_PATH
    cursor_shape: str = "both"
    max_per_page: int | None = None
    max_limit: int | None = None
    rate_limit: RateLimitSpec = RateLimitSpec()
    faults: FaultsSpec = FaultsSpec()
    users: tuple[UserSpec, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> Scenario:
        """Build and validate a scenario from parsed JSON; :class:`ScenarioError` if bad."""
        return _Parser().scenario(data)


def load_scenario(path: str | Path) -> Scenario:
    """Read a JSON scenario file; :class:`ScenarioError` (one line) if unreadable or bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    try:
        return Scenario.from_dict(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc


def demo_scenario() -> Scenario:
    """The built-in demo: a few accounts and namespaces, some sqlite-backed, some growing."""
    text = resources.files("do_exporter.simulator").joinpath("demo.json").read_text("utf-8")
    return Scenario.from_dict(json.loads(text))


class _Parser:
    """Validates a scenario dict key by key; errors name the JSON path."""

    def scenario(self, data: Any) -> Scenario:
        obj = self._object(data, "scenario")
        self._keys(
            obj,
            "scenario",
            {
                "seed", "base_path", "cursor_shape", "max_per_page", "max_limit",
                "rate_limit", "tokens", "accounts", "faults", "description", "users",
            },
        )  # fmt: skip
        seed = self._int(obj.get("seed", 0), "seed", 0, 2**63)
        base_path = obj.get("base_path", DEFAULT_BASE_PATH)
        if not isinstance(base_path, str) or not re.fullmatch(r"(/[A-Za-z0-9._~-]+)*", base_path):
            raise ScenarioError("base_path: must be empty or like /client/v4")
        shape = obj.get("cursor_shape", "both")
        if shape not in CURSOR_SHAPES:
            raise ScenarioError(f"cursor_shape: must be one of {', '.join(CURSOR_SHAPES)}")
        max_per_page = self._opt_int(obj.get("max_per_page"), "max_per_page", 1, 1000)
        max_limit = self._opt_int(obj.get("max_limit"), "max_limit", 1, 10000)
        accounts = self._accounts(obj.get("accounts"), seed)
        tokens = self._tokens(obj.get("tokens"), seed, {a.id for a in accounts})
        rate_limit = self._rate_limit(obj.get("rate_limit", {}), "rate_limit")
        users = self._users(obj.get("users", []), tokens, rate_limit)
        return Scenario(
            accounts=accounts,
            tokens=tokens,
            seed=seed,
            base_path=base_path,
            cursor_shape=shape,
            max_per_page=max_per_page,
            max_limit=max_limit,
            rate_limit=rate_limit,
            faults=self._faults(obj.get("faults", {})),
            users=users,
        )

    def _accounts(self, data: Any, seed: int) -> tuple[AccountSpec, ...]:
        if data is None:
            raise ScenarioError("accounts: required (a list of accounts)")
        items = self._list(data, "accounts")
        accounts: list[AccountSpec] = []
        seen: set[str] = set()
        for i, raw in enumerate(items):
            where = f"accounts[{i}]"
            obj = self._object(raw, where)
            self._keys(obj, where, {"id", "name", "namespaces"})
            account_id = self._hex_id(obj.get("id"), f"{where}.id", seed, "account", str(i))
            if account_id in seen:
                raise ScenarioError(f"{where}.id: duplicate account id {account_id}")
            seen.add(account_id)
            name = self._str(obj.get("name", f"Account {i + 1}"), f"{where}.name")
            namespaces = self._namespaces(obj.get("namespaces", []), where, seed, account_id)
            accounts.append(AccountSpec(id=account_id, name=name, namespaces=namespaces))
        return tuple(accounts)

    def _namespaces(
        self, data: Any, parent: str, seed: int, account_id: str
    ) -> tuple[NamespaceSpec, ...]:
        result: list[NamespaceSpec] = []
        seen: set[str] = set()
        for j, raw in enumerate(self._list(data, f"{parent}.namespaces")):
            result.append(
                namespace_from_dict(raw, f"{parent}.namespaces[{j}]", seed, account_id, j)
            )
            if result[-1].id in seen:
                raise ScenarioError(f"{parent}.namespaces[{j}].id: duplicate namespace id")
            seen.add(result[-1].id)
        return tuple(result)

    def _tokens(self, data: Any, seed: int, account_ids: set[str]) -> tuple[TokenSpec, ...]:
        if data is None:
            generated = derive_hex(seed, "token", length=40)
            return (TokenSpec(value=generated, id=derive_hex(seed, "token-id", generated)),)
        tokens: list[TokenSpec] = []
        for i, raw in enumerate(self._list(data, "tokens")):
            where = f"tokens[{i}]"
            obj = self._object(raw, where)
            self._keys(
                obj,
                where,
                {"value", "id", "accounts", "status", "owner", "permissions", "expires_on",
                 "not_before"},
            )  # fmt: skip
            value: Any = obj.get("value")
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", value):
                raise ScenarioError(f"{where}.value: must be 1-200 of [A-Za-z0-9_.-]")
            if any(t.value == value for t in tokens):
                raise ScenarioError(f"{where}.value: duplicate token")
            token_id = obj.get("id", derive_hex(seed, "token-id", value))
            if not isinstance(token_id, str) or not HEX32.match(token_id):
                raise ScenarioError(f"{where}.id: must be 32 lowercase hex characters")
            accounts_raw = obj.get("accounts", "*")
            accounts: tuple[str, ...] | None
            if accounts_raw == "*":
                accounts = None
            else:
                listed = self._list(accounts_raw, f"{where}.accounts")
                for a in listed:
                    if a not in account_ids:
                        raise ScenarioError(f"{where}.accounts: unknown account {a!r}")
                accounts = tuple(listed)
            status = obj.get("status", "active")
            if status not in TOKEN_STATUSES:
                raise ScenarioError(f"{where}.status: must be one of {', '.join(TOKEN_STATUSES)}")
            owner = obj.get("owner", "user")
            if owner not in ("user", "account"):
                raise ScenarioError(f"{where}.owner: must be user or account")
            if owner == "account" and (accounts is None or len(accounts) != 1):
                raise ScenarioError(f"{where}.accounts: an account-owned token lists one account")
            permissions = self._permissions(obj.get("permissions"), where, account_ids)
            expires_on, expires_at = self._instant(obj.get("expires_on"), f"{where}.expires_on")
            not_before, not_before_at = self._instant(obj.get("not_before"), f"{where}.not_before")
            tokens.append(
                TokenSpec(
                    value=value,
                    id=token_id,
                    accounts=accounts,
                    status=status,
                    owner=owner,
                    permissions=permissions,
                    expires_on=expires_on,
                    not_before=not_before,
                    expires_at=expires_at,
                    not_before_at=not_before_at,
                )
            )
        if not tokens:
            raise ScenarioError("tokens: must list at least one token (or be left out)")
        return tuple(tokens)

    def _permissions(
        self, data: Any, where: str, account_ids: set[str]
    ) -> tuple[tuple[str, frozenset[str]], ...]:
        """A list (the same groups on every account) or ``{account id or "*": [groups]}``."""
        if data is None:
            return (("*", DEFAULT_PERMISSIONS),)
        if isinstance(data, list):
            return (("*", self._groups(data, f"{where}.permissions")),)
        obj = self._object(data, f"{where}.permissions")
        result: list[tuple[str, frozenset[str]]] = []
        for account, groups in obj.items():
            if account != "*" and account not in account_ids:
                raise ScenarioError(f"{where}.permissions: unknown account {account!r}")
            result.append((account, self._groups(groups, f"{where}.permissions.{account}")))
        return tuple(result)

    def _groups(self, data: Any, where: str) -> frozenset[str]:
        groups = self._list(data, where)
        for group in groups:
            if group not in PERMISSIONS:
                raise ScenarioError(f"{where}: {group!r} is not one of {', '.join(PERMISSIONS)}")
        return frozenset(groups)

    def _instant(self, data: Any, where: str) -> tuple[str | None, float | None]:
        """An ISO 8601 date-time with a time zone, e.g. 2030-01-01T00:00:00Z."""
        if data is None:
            return None, None
        text = self._str(data, where)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise ScenarioError(f"{where}: must be an ISO 8601 time like 2030-01-01T00:00:00Z")
        return text, when.timestamp()

    def _rate_limit(
        self, data: Any, where: str, default: RateLimitSpec | None = None
    ) -> RateLimitSpec:
        base = default or RateLimitSpec()
        obj = self._object(data, where)
        allowed = {"requests", "window_seconds"} | ({"headers"} if default is None else set())
        self._keys(obj, where, allowed)
        requests = self._int(obj.get("requests", base.requests), f"{where}.requests", 1, 10**9)
        window = self._number(
            obj.get("window_seconds", base.window_seconds), f"{where}.window_seconds"
        )
        if window <= 0:
            raise ScenarioError(f"{where}.window_seconds: must be positive")
        headers = obj.get("headers", base.headers)
        if headers not in RATE_LIMIT_HEADERS:
            raise ScenarioError(f"{where}.headers: must be one of {', '.join(RATE_LIMIT_HEADERS)}")
        return RateLimitSpec(requests=requests, window_seconds=window, headers=headers)

    def _users(
        self, data: Any, tokens: tuple[TokenSpec, ...], rate_limit: RateLimitSpec
    ) -> tuple[UserSpec, ...]:
        known = {t.value for t in tokens}
        owner: dict[str, str] = {}
        users: list[UserSpec] = []
        for i, raw in enumerate(self._list(data, "users")):
            where = f"users[{i}]"
            obj = self._object(raw, where)
            self._keys(obj, where, {"name", "tokens", "rate_limit", "other_clients"})
            name = self._str(obj.get("name", f"user-{i + 1}"), f"{where}.name")
            if not name or any(u.name == name for u in users):
                raise ScenarioError(f"{where}.name: must be a unique, non-empty string")
            listed = self._list(obj.get("tokens", []), f"{where}.tokens")
            for value in listed:
                if value not in known:
                    raise ScenarioError(f"{where}.tokens: unknown token {value!r}")
                if value in owner:
                    raise ScenarioError(
                        f"{where}.tokens: token {value!r} already belongs to user {owner[value]!r}"
                    )
                owner[value] = name
            budget = self._rate_limit(obj.get("rate_limit", {}), f"{where}.rate_limit", rate_limit)
            others = self._object(obj.get("other_clients", {}), f"{where}.other_clients")
            self._keys(others, f"{where}.other_clients", {"requests_per_minute"})
            per_minute = self._number(
                others.get("requests_per_minute", 0), f"{where}.other_clients.requests_per_minute"
            )
            if per_minute > 10**6:
                raise ScenarioError(
                    f"{where}.other_clients.requests_per_minute: must be at most 1000000"
                )
            users.append(
                UserSpec(
                    name=name,
                    tokens=tuple(listed),
                    rate_limit=budget,
                    other_clients_per_minute=per_minute,
                )
            )
        return tuple(users)

    def _faults(self, data: Any) -> FaultsSpec:
        obj = self._object(data, "faults")
        self._keys(obj, "faults", {"latency_ms", "jitter_ms", "rules"})
        latency = self._number(obj.get("latency_ms", 0), "faults.latency_ms")
        jitter = self._number(obj.get("jitter_ms", 0), "faults.jitter_ms")
        rules: list[FaultRule] = []
        for i, raw in enumerate(self._list(obj.get("rules", []), "faults.rules")):
            rules.append(rule_from_dict(raw, f"faults.rules[{i}]"))
        return FaultsSpec(latency_ms=latency, jitter_ms=jitter, rules=tuple(rules))

    # Small typed readers.
    def _object(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ScenarioError(f"{where}: must be a JSON object")
        return value

    def _list(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise ScenarioError(f"{where}: must be a JSON list")
        return value

    def _keys(self, obj: dict[str, Any], where: str, allowed: set[str]) -> None:
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ScenarioError(f"{where}: unknown key {unknown[0]!r}")

    def _str(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ScenarioError(f"{where}: must be a string")
        return value

    def _int(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ScenarioError(f"{where}: must be an integer between {low} and {high}")
        return value

    def _opt_int(self, value: Any, where: str, low: int, high: int) -> int | None:
        return None if value is None else self._int(value, where, low, high)

    def _number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ScenarioError(f"{where}: must be a non-negative number")
        return float(value)

    def _hex_id(self, value: Any, where: str, seed: int, *parts: str) -> str:
        if value is None:
            return derive_hex(seed, *parts)
        if not isinstance(value, str) or not HEX32.match(value):
            raise ScenarioError(f"{where}: must be 32 lowercase hex characters")
        return value


def namespace_from_dict(
    data: Any, where: str, seed: int, account_id: str, index: int
) -> NamespaceSpec:
    """Validate one namespace entry (also used by the runtime ``add_namespace``)."""
    p = _Parser()
    obj = p._object(data, where)
    p._keys(
        obj,
        where,
        {"id", "name", "class", "script", "use_sqlite", "objects", "stored_data_ratio",
         "growth_per_minute", "analytics"},
    )  # fmt: skip
    ns_id = p._hex_id(obj.get("id"), f"{where}.id", seed, "namespace", account_id, str(index))
    optional: dict[str, str | None] = {}
    for key in ("name", "class", "script"):
        value = obj.get(key)
        optional[key] = None if value is None else p._str(value, f"{where}.{key}")
    use_sqlite = obj.get("use_sqlite")
    if use_sqlite is not None and not isinstance(use_sqlite, bool):
        raise ScenarioError(f"{where}.use_sqlite: must be true or false")
    objects = p._int(obj.get("objects", 0), f"{where}.objects", 0, 10**15)
    ratio = p._number(obj.get("stored_data_ratio", 0.0), f"{where}.stored_data_ratio")
    if ratio > 1:
        raise ScenarioError(f"{where}.stored_data_ratio: must be between 0 and 1")
    growth = obj.get("growth_per_minute", 0.0)
    if isinstance(growth, bool) or not isinstance(growth, int | float):
        raise ScenarioError(f"{where}.growth_per_minute: must be a number")
    try:
        analytics = traffic_from_dict(obj["analytics"]) if "analytics" in obj else None
    except ValueError as exc:
        raise ScenarioError(f"{where}.analytics: {exc}") from exc
    return NamespaceSpec(
        id=ns_id,
        name=optional["name"],
        class_name=optional["class"],
        script=optional["script"],
        use_sqlite=use_sqlite,
        objects=objects,
        stored_data_ratio=ratio,
        growth_per_minute=float(growth),
        analytics=analytics,
    )


def rule_from_dict(data: Any, where: str) -> FaultRule:
    """Validate one fault rule: ``{"fault": kind, "rate": p, "burst": n, ...params}``."""
    p = _Parser()
    obj = dict(p._object(data, where))
    kind = obj.pop("fault", None)
    if not isinstance(kind, str):
        raise ScenarioError(f"{where}.fault: required (the fault's name)")
    rate = p._number(obj.pop("rate", 1.0), f"{where}.rate")
    if rate > 1:
        raise ScenarioError(f"{where}.rate: must be between 0 and 1")
    burst = p._int(obj.pop("burst", 1), f"{where}.burst", 1, 10**6)
    try:
        fault = make_fault(kind, obj)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from exc
    return FaultRule(fault=fault, rate=rate, burst=burst)
