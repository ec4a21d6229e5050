"""One request to the Cloudflare API, with retries: the session, the deadlines, the byte
budget, redirects refused, errors counted and logged.

Where does a page get fetched? :meth:`Transport.request`, and nowhere else.

Bounds, whatever the API does (docs/reliability.md, "Deadlines"):

- each attempt (connect, request, response head and body together) ends by its deadline,
  ``request_deadline`` (default: twice the read timeout, at least 60 s): a watchdog shuts
  the socket of an attempt past it (:mod:`.watchdog`);
- all attempts of one request, with the waits between them, end within ``request_budget``
  (default: twice the attempt deadline); no retry starts that could not end by then;
- the bytes of every answer in flight, in the whole process, stay within one
  :class:`~.budget.ByteBudget` (:mod:`.body`).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import requests
import structlog
import urllib3

from .. import __version__
from ..apifacts import RATE_LIMIT_WINDOW
from ..observe import INVALID_RESPONSE, TRANSPORT, NullObserver, RequestObserver
from ..ratelimit import Cancelled, Lane, RateLimiter
from ..secrets import Secret
from .body import BodyTooLarge, Undecodable, read_body
from .budget import BudgetExhausted, ByteBudget, OverBudget
from .errors import RETRY_STATUSES, CloudflareAPIError, RetryPolicy
from .parsers import generic_decode_cost, parse_ratelimit, parse_retry_after
from .watchdog import Slot, Watchdog, attempt_slot, watch_session

log = structlog.get_logger("do_exporter.cloudflare")
_T = TypeVar("_T")

MAX_PAUSE = RATE_LIMIT_WINDOW  # longest shared pause: Cloudflare's rate-limit window
# A 10,000-object page is about 1 MB; no answer of ours comes near 32 MiB, before or after
# decompression. The cap is below the process budget: one answer never needs all of it.
MAX_BODY_BYTES = 32 * 1024 * 1024
MIN_REQUEST_DEADLINE = 60.0  # the default attempt deadline: 2x the read timeout, at least this
LOCATION_CHARS = 300  # how much of a redirect's Location header a log line keeps

# Every client of the process shares one budget unless given its own.
PROCESS_BUDGET = ByteBudget()


class DeadlineExceeded(Exception):
    """An attempt ran past its deadline (a transport error)."""


class Transport:
    """Sends requests for one credential's client, one at a time per calling thread."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        token: Secret,
        *,
        limiter: RateLimiter,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        observer: RequestObserver | None = None,
        cancel: threading.Event | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_body_bytes: int = MAX_BODY_BYTES,
        request_deadline: float | None = None,
        request_budget: float | None = None,
        byte_budget: ByteBudget | None = None,
    ) -> None:
        self._session = session
        self.base = base_url.rstrip("/")
        self._token = token
        self.limiter = limiter
        self._timeout = (connect_timeout, timeout)
        self._retry = retry or RetryPolicy()
        self.observer: RequestObserver = observer or NullObserver()
        self.cancel = cancel or threading.Event()
        self._rng = rng or random.Random()
        self._clock = clock
        self._budget = byte_budget or PROCESS_BUDGET
        self._max_body = min(max_body_bytes, self._budget.total // 2)
        # Bounds one attempt, headers and body: a server dripping a byte now and then never
        # trips the per-read timeout.
        self.deadline = (
            max(2 * timeout, MIN_REQUEST_DEADLINE) if request_deadline is None else request_deadline
        )
        self.budget = 2 * self.deadline if request_budget is None else request_budget
        self._proxies, self._verify = _environment(session, self.base)
        watch_session(session)
        self.requests = 0
        self.latency: float | None = None
        self._count_lock = threading.Lock()
        self._watchdog = Watchdog()

    def request(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, str | int],
        context: Mapping[str, str],
        parse: Callable[[int, bytes, str | None], _T],
        lane: Lane = Lane.FRESH,
        *,
        json_body: Mapping[str, Any] | None = None,
        limiter: RateLimiter | None = None,
        decode_cost: Callable[[bytes], int] = generic_decode_cost,
    ) -> _T:
        """``parse(status, body, cf_ray)`` of the first usable answer, retried as the policy
        says within the request budget; :class:`CloudflareAPIError` when none came.
        ``decode_cost(body)``: the bytes parsing builds, held in the byte budget."""
        limiter = limiter or self.limiter
        call = _Call(endpoint, self.base + path, params, json_body, context, parse, decode_cost)
        attempt = 0
        end: float | None = None
        while True:
            attempt += 1
            limiter.acquire(lane)
            with self._count_lock:
                self.requests += 1
            started = self._clock()
            end = started + self.budget if end is None else end
            try:
                return self._attempt(call, limiter, min(started + self.deadline, end), started)
            except CloudflareAPIError as error:
                # Its traceback and context hold the frames that read and parsed the body
                # (the body with them, outside the byte budget) for as long as the error
                # lives, which may be the rest of the poll: drop them.
                error.__traceback__ = error.__context__ = error.__cause__ = None
                self._failed(call, error, attempt, limiter, end)

    # -- one attempt ----------------------------------------------------------------------

    def _attempt(
        self, call: _Call[_T], limiter: RateLimiter, deadline: float, started: float
    ) -> _T:
        """One attempt: send, read under the deadline and the byte budget, parse."""
        endpoint = call.endpoint
        # The watchdog runs on the real clock: the deadline is converted to it.
        real_deadline = time.monotonic() + (deadline - self._clock())
        lease = self._budget.lease()
        try:
            with attempt_slot(self._watchdog, real_deadline) as slot:
                try:
                    response = self._send(call, deadline)
                    body = self._read(response, call, lease, real_deadline, slot)
                except Exception as exc:
                    cut = slot.cut.is_set()
                    raise self._attempt_error(endpoint, exc, cut, started) from None
            status = response.status_code
            elapsed = self._clock() - started
            self.observer.request_finished(endpoint, str(status), elapsed)
            self._note_latency(response, elapsed)
            cf_ray = response.headers.get("CF-Ray")
            self._note_ratelimit(response.headers, limiter)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if 300 <= status < 400:
                # Never followed: the token would go wherever the answer points.
                raise _Redirect(endpoint, status, cf_ray, response.headers.get("Location"))
            return _parse(call, status, body, cf_ray, retry_after)
        finally:
            lease.release()

    def _send(self, call: _Call[Any], deadline: float) -> requests.Response:
        left = max(deadline - self._clock(), 0.001)
        return self._session.request(
            "GET" if call.json_body is None else "POST",
            call.url,
            params=call.params,
            json=call.json_body,
            headers=self._headers(),
            timeout=(min(self._timeout[0], left), min(self._timeout[1], left)),
            stream=True,
            allow_redirects=False,
            proxies=self._proxies,
            verify=self._verify,
        )

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token.reveal()}",
            "Accept": "application/json",
            # Only what body.Inflater decodes (and caps); requests would add br/zstd when
            # the brotli or zstandard packages happen to be installed.
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"do-exporter/{__version__}",
        }

    def _read(
        self,
        response: requests.Response,
        call: _Call[Any],
        lease: Any,
        deadline: float,
        slot: Slot,
    ) -> bytes:
        """The body (see :func:`.body.read_body`). Only a body read to its end lets the
        connection go back to the pool; on any failure (and for a redirect, whose body is
        not read) the connection is closed."""
        if 300 <= response.status_code < 400:
            response.close()
            return b""
        try:
            body = read_body(
                response.raw,
                response.headers.get("Content-Encoding"),
                cap=self._max_body,
                lease=lease,
                deadline=deadline,
                cut=slot.cut,
                decode_cost=call.decode_cost,
            )
            if slot.cut.is_set():
                raise DeadlineExceeded()
        except BaseException as exc:
            response.close()  # a half-read connection cannot be reused
            if isinstance(exc, BodyTooLarge | Undecodable | OverBudget):
                raise _Unusable(str(exc), response) from None
            raise
        slot.detach()  # back in the pool, the connection is no longer this attempt's
        response.raw.release_conn()
        return body

    def _attempt_error(
        self, endpoint: str, exc: Exception, cut: bool, started: float
    ) -> CloudflareAPIError:
        """What a failed send or read is; the attempt is counted as finished."""
        if isinstance(exc, _Unusable):
            error = CloudflareAPIError(
                exc.args[0],
                endpoint=endpoint,
                kind=INVALID_RESPONSE,
                status=exc.status,
                cf_ray=exc.cf_ray,
            )
            self.observer.request_finished(endpoint, str(exc.status), self._clock() - started)
            return error
        if cut or isinstance(exc, DeadlineExceeded):
            reason = "deadline exceeded"
        elif isinstance(exc, BudgetExhausted):
            reason = f"memory budget: {exc}"
        elif isinstance(exc, requests.RequestException | urllib3.exceptions.HTTPError | OSError):
            reason = _transport_reason(exc)
        else:
            raise exc
        self.observer.request_finished(endpoint, TRANSPORT, self._clock() - started)
        return CloudflareAPIError(reason, endpoint=endpoint, kind=TRANSPORT)

    def _note_latency(self, response: requests.Response, elapsed: float) -> None:
        # Latency to the response head, as the server sees it: the time spent reading and
        # decoding the body is our own CPU (and GIL waits under load), which would make the
        # worker count inflate itself.
        head = _head_seconds(response, elapsed)
        with self._count_lock:
            last = self.latency
            self.latency = head if last is None else 0.8 * last + 0.2 * head

    # -- after a failed attempt ---------------------------------------------------------

    def _failed(
        self,
        call: _Call[Any],
        error: CloudflareAPIError,
        attempt: int,
        limiter: RateLimiter,
        end: float,
    ) -> None:
        """Count and log a failed attempt; return to retry, or raise."""
        for code in error.error_codes:
            self.observer.api_error(call.endpoint, code)
        delay = self._retry_delay(error, attempt, end)
        location = error.location if isinstance(error, _Redirect) else None
        log.warning(
            "API request failed",
            endpoint=call.endpoint,
            **call.context,
            **error.log_fields(),
            attempt=attempt,
            retry=delay is not None,
            retry_in=None if delay is None else round(delay, 3),
            **({} if location is None else {"location": location}),
        )
        if error.status == 429:
            # The token is blocked: every worker waits, retried or not, so nothing else
            # runs into the block. The pause is capped: Cloudflare blocks for at most its
            # 5-minute window, and a wild Retry-After must not stop us for days.
            wait = max(error.retry_after or 0.0, delay or 0.0) or self._retry.base
            limiter.pause(min(wait, MAX_PAUSE))
        if delay is None:
            raise error
        if error.status != 429 and self.cancel.wait(delay):
            raise Cancelled()

    def _retry_delay(self, error: CloudflareAPIError, attempt: int, end: float) -> float | None:
        retryable = error.kind == TRANSPORT or (
            error.status is not None and error.status in RETRY_STATUSES
        )
        if not retryable or attempt >= self._retry.attempts or self.cancel.is_set():
            return None
        delay = self._retry.backoff(attempt, self._rng)
        if error.retry_after is not None:
            if error.retry_after > self._retry.max_retry_after:
                return None  # not worth holding a poll for
            delay = max(delay, error.retry_after)
        if self._clock() + delay >= end:
            return None  # the request's budget would be spent before the retry starts
        return delay

    def _note_ratelimit(self, headers: Mapping[str, str], limiter: RateLimiter) -> None:
        remaining, reset = parse_ratelimit(headers)
        if remaining is None:
            return
        if limiter is self.limiter:  # the gauge is the REST budget's, never GraphQL's
            self.observer.ratelimit_remaining(remaining)
        # At or below the reserve left to the user's other tools (0 by default: the window
        # is spent), wait for the window to reset instead of starving them or earning a 429.
        held = limiter.observe(remaining, reset)
        if held > 0:
            log.warning(
                "holding API requests: the user's rate-limit budget is down to the reserve "
                "left for other tools",
                remaining=remaining,
                reserve=limiter.reserve,
                hold_seconds=round(held, 3),
            )


@dataclass(frozen=True, slots=True)
class _Call(Generic[_T]):
    """What one request asks (the same for each of its attempts)."""

    endpoint: str
    url: str
    params: Mapping[str, str | int]
    json_body: Mapping[str, Any] | None
    context: Mapping[str, str]
    parse: Callable[[int, bytes, str | None], _T]
    decode_cost: Callable[[bytes], int]


class _Unusable(Exception):
    """A body we will not use (too large, undecodable), with its response's status."""

    def __init__(self, message: str, response: requests.Response) -> None:
        super().__init__(message)
        self.status = response.status_code
        self.cf_ray = response.headers.get("CF-Ray")


class _Redirect(CloudflareAPIError):
    """A 3xx answer: never followed; ``location`` is cut for the log line."""

    def __init__(self, endpoint: str, status: int, cf_ray: str | None, location: str | None):
        super().__init__(
            "redirect not followed", endpoint=endpoint, kind="http", status=status, cf_ray=cf_ray
        )
        self.location = (location or "")[:LOCATION_CHARS]


def _parse(
    call: _Call[_T], status: int, body: bytes, cf_ray: str | None, retry_after: float | None
) -> _T:
    try:
        result: _T = call.parse(status, body, cf_ray)
        return result
    except CloudflareAPIError as exc:
        exc.retry_after = retry_after
        raise
    except Exception as exc:
        # Whatever else a body makes a parser raise, it is a body we cannot use: it must
        # fail this request, never escape the client.
        raise CloudflareAPIError(
            f"unparseable response ({type(exc).__name__})",
            endpoint=call.endpoint,
            kind=INVALID_RESPONSE,
            status=status,
            cf_ray=cf_ray,
        ) from None


def _environment(session: requests.Session, url: str) -> tuple[dict[str, str], Any]:
    """Proxies and CA bundle for ``url``, resolved once from the environment the way
    requests would on every request (``HTTPS_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``). The session then stops looking them up per request (which was a
    tenth of the CPU of a page), and stops reading ``~/.netrc``, which could replace the
    bearer token with basic auth."""
    proxies = dict(session.proxies)
    verify = session.verify
    if session.trust_env:
        for scheme, proxy in requests.utils.get_environ_proxies(url).items():
            proxies.setdefault(scheme, proxy)
        if verify is True:
            env = os.environ
            verify = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
        session.trust_env = False
    return proxies, verify


def _head_seconds(response: requests.Response, total: float) -> float:
    """Seconds from sending the request to its response head (``total`` if unknown)."""
    elapsed = getattr(response, "elapsed", None)
    seconds = elapsed.total_seconds() if elapsed is not None else None
    if isinstance(seconds, float) and 0 < seconds <= total:
        return seconds
    return total


def _transport_reason(exc: BaseException) -> str:
    """A short reason without the URL (no secrets are in it, but it is long)."""
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (requests.ConnectTimeout, "connect timeout"),
        (requests.ReadTimeout, "read timeout"),
        (urllib3.exceptions.ReadTimeoutError, "read timeout"),
        (requests.exceptions.ChunkedEncodingError, "connection broken mid-response"),
        (urllib3.exceptions.ProtocolError, "connection broken mid-response"),
        (requests.exceptions.ContentDecodingError, "undecodable response body"),
        (urllib3.exceptions.DecodeError, "undecodable response body"),
        (requests.ConnectionError, "connection failed"),
        (OSError, "connection failed"),
    )
    for kind, reason in kinds:
        if isinstance(exc, kind):
            return reason
    return type(exc).__name__
