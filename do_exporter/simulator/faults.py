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
``endless_cursor``        objects: never ends the walk; pages past the end hold new ids (their
                          cursors are refused once the fault is cleared)
========================  ==========================================================

A fault acts in one of three places, all here: before authentication (:func:`edge_answer`),
in the success envelope (:func:`success`), or on the answer once built (:func:`alter`).
:class:`FaultPlan` picks each request's fault and latency.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from do_exporter.simulator import responses as r
from do_exporter.simulator.responses import Response

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


class FaultPlan:
    """Which fault each request gets: injected ones first (first in, first out), then the
    scenario's rules (seeded, in bursts); plus every answer's latency and jitter."""

    def __init__(
        self,
        rules: Sequence[FaultRule],
        *,
        seed: int,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
    ) -> None:
        self._latency = latency_ms / 1000.0
        self._jitter_ms = jitter_ms
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._queue: list[QueuedFault] = []
        self._rules = [RuleState(rule) for rule in rules]
        self._fired: dict[str, int] = {}  # by kind, since the last reset

    def draw(self, endpoint: str, namespace_id: str | None) -> tuple[Fault | None, float]:
        """Pick this request's fault (queue first, then rules) and its delay, seeded."""
        with self._lock:
            delay = self._latency
            if self._jitter_ms:
                delay += self._rng.uniform(0.0, self._jitter_ms) / 1000.0
            chosen = self._from_queue(endpoint, namespace_id)
            if chosen is None:
                chosen = self._from_rules(endpoint, namespace_id)
            if chosen is not None:
                self._fired[chosen.kind] = self._fired.get(chosen.kind, 0) + 1
                if chosen.kind == "delay" and chosen.seconds is not None:
                    delay += chosen.seconds
        return chosen, delay

    def _from_queue(self, endpoint: str, namespace_id: str | None) -> Fault | None:
        for i, queued in enumerate(self._queue):
            if queued.fault.matches(endpoint, namespace_id):
                if queued.remaining is not None:
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        del self._queue[i]
                return queued.fault
        return None

    def _from_rules(self, endpoint: str, namespace_id: str | None) -> Fault | None:
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
            return state.rule.fault
        return None

    def inject(self, kind: str, params: dict[str, Any], count: int | None) -> None:
        """Queue a fault (:func:`make_fault`) for the next ``count`` matching requests
        (None: until cleared)."""
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        fault = make_fault(kind, params)
        with self._lock:
            self._queue.append(QueuedFault(fault, count))

    def clear(self) -> None:
        """Drop every queued fault and end any running burst (the rules stay)."""
        with self._lock:
            self._queue.clear()
            for state in self._rules:
                state.burst_left = 0

    def fired(self) -> dict[str, int]:
        """Faults fired by kind since the last :meth:`reset_counts`."""
        with self._lock:
            return dict(self._fired)

    def reset_counts(self) -> None:
        with self._lock:
            self._fired = {}


def edge_answer(fault: Fault) -> Response:
    """The answer of a fault that comes before authentication (:data:`PRE_AUTH`)."""
    if fault.kind == "disconnect":
        return Response(0, b"", action="disconnect")
    status = fault.status or 500
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        headers.append(("Retry-After", r.seconds_text(fault.retry_after)))
    if fault.kind == "html":
        headers.append(("Server", "cloudflare"))
        return Response(status, r.html_page(status), r.HTML, headers)
    default = r.RATE_LIMITED if status == 429 else r.UNKNOWN_ERROR
    code = fault.code if fault.code is not None else default[0]
    message = fault.message if fault.message is not None else default[1]
    return Response(status, r.error_body(code, message), r.JSON, headers)


def success(
    result: str | Callable[[bytes, bytes], bytearray],
    info: dict[str, Any] | None,
    fault: Fault | None,
    messages: list[dict[str, Any]] | None = None,
) -> Response:
    """A success envelope around ``result``, as ``fault`` may spoil it: JSON text, or a
    builder of a JSON list that is given the bytes to put before and after it (so a large
    page is copied once)."""
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


def alter(response: Response, fault: Fault) -> Response:
    """Transport-level faults that cut or spoil whatever answer was built."""
    if fault.kind == "truncated":
        response.body = response.body[: max(1, len(response.body) // 2)]
    elif fault.kind == "invalid_json":
        response.body = b'{"success":true,"result":[{"id":"' + b"\x00<html>oops"
    elif fault.kind == "drop":
        response.action = "drop"
    return response
