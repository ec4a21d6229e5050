"""Tokens: who a request is, what its token may do, and the two verify endpoints.

A token is known (issued and not revoked), has a status (``active``, ``disabled``, or
``expired`` once ``expires_on`` has passed on the simulator's Unix time) and is *usable*
when active and past its ``not_before``. Permissions are per account
(:meth:`TokenSpec.has_permission`); the exporter's capabilities map onto them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from do_exporter.simulator import responses as r
from do_exporter.simulator.data import Inventory
from do_exporter.simulator.faults import Fault, success
from do_exporter.simulator.responses import Response
from do_exporter.simulator.scenario import HEX32, TOKEN_STATUSES, TokenSpec

# What Tokens.can() accepts: a capability of the exporter, or a permission group's name.
CAPABILITIES = {
    "workers_scripts": "workers_scripts_read",
    "namespaces": "workers_scripts_read",
    "objects": "workers_scripts_read",
    "analytics": "account_analytics_read",
    "workers_scripts_read": "workers_scripts_read",
    "account_analytics_read": "account_analytics_read",
}


class Tokens:
    """The scenario's tokens as they stand now (revocations and status changes applied).

    ``unix_time`` is the simulator's Unix time (expiry and ``not_before`` are read against
    it); ``inventory`` says which accounts exist now.
    """

    def __init__(
        self,
        tokens: Iterable[TokenSpec],
        *,
        unix_time: Callable[[], float],
        inventory: Inventory,
    ) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenSpec] = {t.value: t for t in tokens}
        self._unix_time = unix_time
        self._inventory = inventory

    # ---- who is asking ----------------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str]) -> tuple[TokenSpec | None, Response | None]:
        """The request's token (None if unknown or revoked), or the answer refusing a missing
        or malformed ``Authorization`` header."""
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

    def status(self, token: TokenSpec) -> str:
        """The token's status now: as set, or ``expired`` once ``expires_on`` has passed."""
        expires_at = token.expires_at
        if token.status == "active" and expires_at is not None and self._unix_time() >= expires_at:
            return "expired"
        return token.status

    def usable(self, token: TokenSpec) -> bool:
        """Active, and past its ``not_before``: the list endpoints answer it."""
        if self.status(token) != "active":
            return False
        return token.not_before_at is None or self._unix_time() >= token.not_before_at

    # ---- what it may do ---------------------------------------------------------------
    def check_account(self, token: TokenSpec, account_id: str) -> Response | None:
        """None if ``token`` may list ``account_id``'s namespaces and objects, else the
        answer refusing it (403 unusable or not permitted, 400 bad id, 403/7403 no account)."""
        if not self.usable(token):
            return r.error(403, r.AUTH_ERROR)
        if not HEX32.match(account_id):
            return r.no_route_for(f"/accounts/{account_id}/workers/durable_objects/namespaces")
        if not self._inventory.has_account(account_id):
            return r.error(403, r.ACCOUNT_NOT_AUTHORISED)
        if not token.has_permission(account_id, "workers_scripts_read"):
            return r.error(403, r.AUTH_ERROR)  # not reached, or no Workers Scripts Read
        return None

    def can(self, token: str, account_id: str, capability: str) -> bool:
        """Whether ``token`` may use ``capability`` on ``account_id`` right now (see
        :meth:`Simulator.token_can`)."""
        permission = CAPABILITIES.get(capability)
        if permission is None:
            raise ValueError(f"unknown capability {capability!r}")
        with self._lock:
            spec = self._tokens.get(token)
        return (
            spec is not None
            and self.usable(spec)
            and self._inventory.has_account(account_id)
            and spec.has_permission(account_id, permission)
        )

    def preferred(self) -> str:
        """An active token, preferring user-owned ones that may list namespaces and objects
        on every account they reach (the first such in scenario order)."""
        with self._lock:
            tokens = list(self._tokens.values())
        active = [t for t in tokens if self.usable(t)]
        if not active:
            raise RuntimeError("the scenario has no active token left")
        accounts = self._inventory.account_ids()
        return min(active, key=lambda t: (t.owner != "user", not _reads_all(t, accounts))).value

    # ---- control ----------------------------------------------------------------------
    def revoke(self, token: str) -> None:
        """From now on the token is unknown to every endpoint."""
        with self._lock:
            if self._tokens.pop(token, None) is None:
                raise KeyError("unknown token")

    def set_status(self, token: str, status: str) -> None:
        """Set a token's status (``active``, ``disabled`` or ``expired``) from now on."""
        if status not in TOKEN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TOKEN_STATUSES)}")
        with self._lock:
            spec = self._tokens.get(token)
            if spec is None:
                raise KeyError("unknown token")
            self._tokens[token] = dataclasses.replace(spec, status=status)

    def status_of(self, token: str) -> str | None:
        """The status the verify endpoints give ``token`` now; None for an unknown one."""
        with self._lock:
            spec = self._tokens.get(token)
        return None if spec is None else self.status(spec)

    # ---- the verify endpoints ---------------------------------------------------------
    def verify(self, token: TokenSpec, groups: tuple[str, ...], fault: Fault | None) -> Response:
        """``GET /user/tokens/verify`` (``groups`` empty) or
        ``GET /accounts/{id}/tokens/verify``: the token's id and status."""
        if groups:
            account_id = groups[0]
            if not HEX32.match(account_id):
                return r.no_route_for(f"/accounts/{account_id}/tokens/verify")
            ok = token.owner == "account" and token.accounts == (account_id,)
        else:
            ok = token.owner == "user"
        if not ok:
            return r.error(401, r.INVALID_TOKEN)
        status = self.status(token)
        messages: list[dict[str, Any]] = []
        if status == "active":
            messages = [{"code": 10000, "message": r.TOKEN_VALID, "type": None}]
        result: dict[str, Any] = {"id": token.id, "status": status}
        if token.not_before is not None:
            result["not_before"] = token.not_before
        if token.expires_on is not None:
            result["expires_on"] = token.expires_on
        return success(json.dumps(result, separators=(",", ":")), None, fault, messages)


def _reads_all(token: TokenSpec, account_ids: list[str]) -> bool:
    """Whether the token may list namespaces on every account it reaches."""
    reached = token.accounts if token.accounts is not None else tuple(account_ids)
    return all(token.has_permission(a, "workers_scripts_read") for a in reached)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
