"""What the executor is handed per credential: the planner's view of it and its client.

:class:`ApiClient` is the seam: the few methods of ``cloudflare.CloudflareClient`` the
executor calls, so tests hand in a fake client instead of patching; :func:`as_clock` takes
the clock it is handed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from .analytics import AnalyticsError, decode_answer
from .clock import Clock
from .cloudflare import CloudflareAPIError
from .model import Account, Namespace, ObjectCount
from .planner import Credential
from .ratelimit import Lane, RateLimiter


class ApiClient(Protocol):
    """What the executor needs of a Cloudflare client (``CloudflareClient``; tests: fakes)."""

    @property
    def latency(self) -> float | None: ...

    @property
    def requests_made(self) -> int: ...

    def list_accounts(self) -> Iterable[Account]: ...

    def list_namespaces(self, account_id: str) -> Iterable[Namespace]: ...

    def count_objects(
        self,
        account_id: str,
        namespace_id: str,
        progress: Callable[[int], None] | None = None,
        *,
        max_pages: int | None = None,
        lane: Callable[[int], Lane] | None = None,
    ) -> ObjectCount: ...

    def graphql(self, account_id: str, body: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Source:
    """One credential as the executor runs it: what the planner knows, and its client."""

    credential: Credential
    client: ApiClient
    limiter: RateLimiter | None = None  # to shape its BULK lane (None: no shaping)


class _UnixClock:
    """A bare ``() -> Unix time`` callable as a :class:`Clock` (older call sites)."""

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read

    def monotonic(self) -> float:
        return self._read()

    def time(self) -> float:
        return self._read()


def as_clock(clock: Clock | Callable[[], float]) -> Clock:
    """``clock`` as a :class:`Clock` (a bare callable reads Unix time)."""
    if hasattr(clock, "time"):
        return cast(Clock, clock)
    return _UnixClock(clock)


def graphql_sender(
    client: ApiClient, account_id: str
) -> Callable[[Mapping[str, Any]], Mapping[str, Any] | AnalyticsError]:
    """The analytics' ``send``: one GraphQL POST of the account through the client, its
    decoded document (or why there is none); a request that got no answer is an
    :class:`AnalyticsError` too, so the analytics decide about retrying."""

    def send(body: Mapping[str, Any]) -> Mapping[str, Any] | AnalyticsError:
        try:
            answer = client.graphql(account_id, body)
        except CloudflareAPIError as exc:
            return AnalyticsError(exc.kind, exc.args[0], codes=exc.error_codes, status=exc.status)
        return decode_answer(answer.document, status=answer.status)

    return send
