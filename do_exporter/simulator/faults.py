"""Faults: what can go wrong with one answer, and where it applies.

A :class:`Fault` describes one way an answer goes wrong. Scenario rules fire them at random
(seeded) and in bursts; :meth:`Simulator.inject` queues them for the next matching requests.

Fault kinds and their parameters:

========================  ==========================================================
``status``                JSON error envelope; ``status`` (500), ``code``, ``message``,
                          ``retry_after`` (seconds, sets ``Retry-After``)
``html``                  Cloudflare-edge HTML error page, ``text/html``; ``status`` (502),
                          ``retry_after``
``delay``                 wait ``seconds`` (1.0) before answering, then answer normally
``disconnect``            close the connection without answering
``drop``                  send headers and half the body, then close the connection
``truncated``             200 with a JSON body cut in half (Content-Length matches)
``invalid_json``          200, ``application/json``, a body that is not JSON
``success_false``         HTTP 200 with ``success: false``; ``code`` (10013), ``message``
``wrong_type``            ``result`` of the wrong JSON type (an object instead of a list)
``missing_result_info``   the envelope without ``result_info``
``repeat_cursor``         objects: the next cursor is the one the request sent (or, on the
                          first page, one that leads back to the first page)
``endless_cursor``        objects: never ends the walk; pages past the end hold new ids
========================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = ("accounts", "namespaces", "objects", "verify", "graphql", "other")
SCOPES = (*ENDPOINTS, "*")

# Faults that replace the answer before authentication (an edge or transport failure).
PRE_AUTH = frozenset({"status", "html", "disconnect"})
# Faults that alter the answer the simulator would otherwise give.
POST = frozenset(
    {
        "drop",
        "truncated",
        "invalid_json",
        "success_false",
        "wrong_type",
        "missing_result_info",
        "repeat_cursor",
        "endless_cursor",
    }
)
KINDS: dict[str, frozenset[str]] = {
    "status": frozenset({"status", "code", "message", "retry_after"}),
    "html": frozenset({"status", "retry_after"}),
    "delay": frozenset({"seconds"}),
    "disconnect": frozenset(),
    "drop": frozenset(),
    "truncated": frozenset(),
    "invalid_json": frozenset(),
    "success_false": frozenset({"code", "message"}),
    "wrong_type": frozenset(),
    "missing_result_info": frozenset(),
    "repeat_cursor": frozenset(),
    "endless_cursor": frozenset(),
}


@dataclass(frozen=True)
class Fault:
    """One way an answer goes wrong, scoped to an endpoint (and optionally a namespace)."""

    kind: str
    endpoint: str = "*"
    namespace_id: str | None = None
    status: int | None = None
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None
    seconds: float | None = None

    def matches(self, endpoint: str, namespace_id: str | None) -> bool:
        """Whether this fault applies to a request for ``endpoint`` (and ``namespace_id``)."""
        if self.endpoint != "*" and self.endpoint != endpoint:
            return False
        return self.namespace_id is None or self.namespace_id == namespace_id


def make_fault(kind: str, params: dict[str, Any]) -> Fault:
    """Build and validate a :class:`Fault`; ``ValueError`` with a one-line reason if bad."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault {kind!r} (one of: {', '.join(sorted(KINDS))})")
    params = dict(params)
    endpoint = params.pop("endpoint", "*")
    if endpoint not in SCOPES:
        raise ValueError(f"endpoint must be one of {', '.join(SCOPES)}, not {endpoint!r}")
    namespace_id = params.pop("namespace_id", None)
    if namespace_id is not None and not isinstance(namespace_id, str):
        raise ValueError("namespace_id must be a string")
    unknown = set(params) - KINDS[kind]
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter {sorted(unknown)[0]!r}")
    status = _opt_int(params, "status", 100, 599)
    if kind == "status" and status is None:
        status = 500
    if kind == "html":
        status = 502 if status is None else status
    code = _opt_int(params, "code", 0, 10**9)
    message = params.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("message must be a string")
    retry_after = _opt_number(params, "retry_after")
    seconds = _opt_number(params, "seconds")
    if kind == "delay" and seconds is None:
        seconds = 1.0
    return Fault(
        kind=kind,
        endpoint=endpoint,
        namespace_id=namespace_id,
        status=status,
        code=code,
        message=message,
        retry_after=retry_after,
        seconds=seconds,
    )


def _opt_int(params: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high}")
    return value


def _opt_number(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)


@dataclass(frozen=True)
class FaultRule:
    """A scenario rule: ``fault`` fires with probability ``rate``, then ``burst`` times in a row."""

    fault: Fault
    rate: float = 1.0
    burst: int = 1


@dataclass
class QueuedFault:
    """An injected fault and how many more matching requests it will hit (None: forever)."""

    fault: Fault
    remaining: int | None


@dataclass
class RuleState:
    """How many more requests the current burst of a rule will hit."""

    rule: FaultRule
    burst_left: int = 0
    fired: int = field(default=0)
