"""The Cloudflare API client: requests, retries, envelopes, pagination.

Where does a page get fetched? :meth:`CloudflareClient._request`, and nowhere else. Everything
that turns a response body into data is a pure function below it (``parse_*``), tested with
canned bodies.

The client knows nothing about Prometheus: it reports each request to a
:class:`RequestObserver` (the exporter's own metrics implement it).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, Protocol, TypeGuard, TypeVar

import msgspec
import requests
import structlog
import urllib3

from . import __version__
from .analytics import AnalyticsError, decode_answer
from .config import Secret
from .model import Account, Namespace, ObjectCount
from .ratelimit import Cancelled, Lane, RateLimiter

log = structlog.get_logger("do_exporter.cloudflare")
_T = TypeVar("_T")

NAMESPACES_PER_PAGE = 1000  # the API's maximum
ACCOUNTS_PER_PAGE = 50  # the API's maximum for /accounts
OBJECTS_PER_PAGE = 10_000  # the API's maximum
MAX_LIST_PAGES = 100  # namespaces: 100,000 at 1,000 a page (an account holds at most ~500)
MAX_ACCOUNT_PAGES = 2_000  # GET /accounts: 100,000 accounts at 50 a page
MAX_OBJECT_PAGES = 100_000  # cursor walk guard: 1 billion objects at 10,000 a page

MAX_PAUSE = 300.0  # longest shared pause: Cloudflare's rate-limit window
GRAPHQL_RATE_LIMIT = 250  # default GraphQL queries per 5 minutes: Cloudflare allows 300
# A 10,000-object page is about 1 MB; no answer of ours comes near 32 MiB, before or after
# decompression. Bodies are read 1 MiB at a time: few reads (one raw read costs ~40% less
# CPU than Response.content's 10 kB chunks, docs/benchmarks.md), little memory past the cap.
MAX_BODY_BYTES = 32 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024
MIN_REQUEST_DEADLINE = 60.0  # the default deadline: 2x the read timeout, at least this
LOCATION_CHARS = 300  # how much of a redirect's Location header a log line keeps
# 501 (not implemented) and 505 (HTTP version not supported) never succeed on a retry.
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600)) - {501, 505}

# Label values from the API (namespace name, class, script; account name) are cut to this
# many characters, the marker included, so one odd answer cannot bloat every scrape.
MAX_LABEL_VALUE = 1024
TRUNCATED_MARKER = "...[truncated]"
# Account and namespace ids as the API gives them; only these go into a request path.
_ID = re.compile(r"[0-9a-f]{32}")

# Error codes for api_errors_total when Cloudflare gave none.
TRANSPORT = "transport"
INVALID_RESPONSE = "invalid_response"


class RequestObserver(Protocol):
    """Told about every HTTP attempt the client makes (for the exporter's own metrics)."""

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None: ...

    def api_error(self, endpoint: str, error_code: str) -> None: ...

    def ratelimit_remaining(self, remaining: int) -> None: ...

    def label_truncated(self) -> None: ...


class _NullObserver:
    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        pass

    def api_error(self, endpoint: str, error_code: str) -> None:
        pass

    def ratelimit_remaining(self, remaining: int) -> None:
        pass

    def label_truncated(self) -> None:
        pass


class CloudflareAPIError(Exception):
    """A request that did not give a usable answer, after any retries.

    ``kind`` is ``"api"`` (Cloudflare said no: see ``codes``/``messages``), ``"http"`` (an
    error status without a Cloudflare envelope, e.g. an HTML 502 from the edge),
    ``"transport"`` (no response) or ``"invalid_response"`` (a body we cannot use).
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        kind: str,
        status: int | None = None,
        codes: tuple[int, ...] = (),
        messages: tuple[str, ...] = (),
        cf_ray: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.kind = kind
        self.status = status
        self.codes = codes
        self.messages = messages
        self.cf_ray = cf_ray
        self.retry_after = retry_after

    @property
    def not_found(self) -> bool:
        """The resource does not exist (HTTP 404 with a Cloudflare envelope)."""
        return self.kind == "api" and self.status == 404

    @property
    def error_codes(self) -> tuple[str, ...]:
        """Labels for ``api_errors_total``: Cloudflare's codes, else a kind."""
        if self.codes:
            return tuple(str(code) for code in self.codes)
        return (TRANSPORT,) if self.kind == TRANSPORT else (INVALID_RESPONSE,)

    def __str__(self) -> str:
        parts = [f"{self.endpoint}: {self.args[0]}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        parts.extend(
            f"code {code}: {msg}" for code, msg in zip(self.codes, self.messages, strict=False)
        )
        if self.cf_ray:
            parts.append(f"cf-ray {self.cf_ray}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed requests are retried (transport errors, 408, 409, 429, 5xx).

    Delay before retry n (1-based) is ``base * 2**(n-1)`` capped at ``max_backoff``, with
    equal jitter (half fixed, half random), or ``Retry-After`` when the API sends a longer
    one. A ``Retry-After`` above ``max_retry_after`` is not waited for inside a poll.
    """

    attempts: int = 4
    base: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        delay: float = min(self.max_backoff, self.base * 2 ** (retry - 1))
        return delay / 2 + rng.uniform(0, delay / 2)


# ---------------------------------------------------------------------------------------
# Pure parsing: bytes and headers in, data or CloudflareAPIError out.


# What decoding a body can raise: msgspec's errors, RecursionError for deeply nested JSON
# (msgspec recurses), ValueError (UnicodeDecodeError among them). All mean "unusable body".
_DECODE_ERRORS = (msgspec.MsgspecError, RecursionError, ValueError)


@dataclass(frozen=True, slots=True)
class Envelope:
    result: Any
    result_info: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class ObjectsPage:
    count: int
    with_stored_data: int
    cursor: str | None


def parse_envelope(endpoint: str, status: int, body: bytes, cf_ray: str | None = None) -> Envelope:
    """Decode a v4 envelope; raise :class:`CloudflareAPIError` unless it is a success."""
    try:
        doc = msgspec.json.decode(body)
    except _DECODE_ERRORS:
        doc = None
    if not isinstance(doc, dict):
        kind = "http" if status >= 400 else INVALID_RESPONSE
        what = "non-JSON error page" if status >= 400 else "response is not a JSON object"
        raise CloudflareAPIError(what, endpoint=endpoint, kind=kind, status=status, cf_ray=cf_ray)
    codes, messages = _errors(doc.get("errors"))
    if doc.get("success") is not True or status >= 400:
        if not codes and status < 400:
            raise CloudflareAPIError(
                "success is not true and no error given",
                endpoint=endpoint,
                kind=INVALID_RESPONSE,
                status=status,
                cf_ray=cf_ray,
            )
        kind = "api" if codes else "http"
        raise CloudflareAPIError(
            "request failed",
            endpoint=endpoint,
            kind=kind,
            status=status,
            codes=codes,
            messages=messages,
            cf_ray=cf_ray,
        )
    info = doc.get("result_info")
    if info is not None and not isinstance(info, dict):
        raise CloudflareAPIError(
            "result_info is not an object",
            endpoint=endpoint,
            kind=INVALID_RESPONSE,
            status=status,
            cf_ray=cf_ray,
        )
    return Envelope(result=doc.get("result"), result_info=info)


def _errors(raw: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    codes: list[int] = []
    messages: list[str] = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("code"), int):
                codes.append(item["code"])
                messages.append(str(item.get("message", ""))[:300])
    return tuple(codes), tuple(messages)


def _result_list(endpoint: str, env: Envelope, status: int) -> list[dict[str, Any]]:
    result = env.result
    if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
        raise CloudflareAPIError(
            "result is not a list of objects",
            endpoint=endpoint,
            kind=INVALID_RESPONSE,
            status=status,
        )
    return result


def is_api_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an account or namespace id as the API writes them (32 hex)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def cap_label(value: str) -> tuple[str, bool]:
    """``value`` cut to :data:`MAX_LABEL_VALUE` characters (ending in
    :data:`TRUNCATED_MARKER` when cut), and whether it was cut."""
    if len(value) <= MAX_LABEL_VALUE:
        return value, False
    return value[: MAX_LABEL_VALUE - len(TRUNCATED_MARKER)] + TRUNCATED_MARKER, True


def parse_namespace(
    item: Mapping[str, Any], truncated: Callable[[], None] | None = None
) -> Namespace | None:
    """A namespace from one list item, or None when its id is not 32 lowercase hex.

    Text fields longer than :data:`MAX_LABEL_VALUE` are cut (see :func:`cap_label`);
    ``truncated`` is called once for each value cut.
    """
    ns_id = item.get("id")
    if not is_api_id(ns_id):
        return None

    def text(key: str) -> str | None:
        value = item.get(key)
        if not isinstance(value, str):
            return None
        value, cut = cap_label(value)
        if cut and truncated is not None:
            truncated()
        return value

    sqlite = item.get("use_sqlite")
    return Namespace(
        id=ns_id,
        name=text("name"),
        class_name=text("class"),
        script=text("script"),
        use_sqlite=sqlite if isinstance(sqlite, bool) else None,
    )


class _Object(msgspec.Struct, gc=False):
    hasStoredData: bool | None = None  # the API's camelCase field name


class _Cursors(msgspec.Struct, gc=False):
    after: str | None = None


class _ObjectsInfo(msgspec.Struct, gc=False):
    cursor: str | None = None
    cursors: _Cursors | None = None


class _ObjectsEnvelope(msgspec.Struct, gc=False):
    success: bool | None = None
    result: list[_Object] | None = None
    result_info: _ObjectsInfo | None = None


# Decodes only the fields we count; object ids are scanned over, never built as strings.
# About 5x less CPU than json.loads on a 10,000-object page (docs/benchmarks.md).
_OBJECTS_DECODER = msgspec.json.Decoder(_ObjectsEnvelope)


def parse_objects_page(status: int, body: bytes, cf_ray: str | None = None) -> ObjectsPage:
    """Count one page of objects and find the next cursor.

    The next cursor is ``result_info.cursors.after`` (what Cloudflare's current SDKs read)
    when it is a non-empty string, else ``result_info.cursor`` (the spec, the seed,
    Cloudflare's emulator); when both are present and differ, ``cursors.after`` wins. A page
    without ``result_info`` cannot say whether more pages follow, so it is an invalid
    response, never a short count.
    """
    page: _ObjectsEnvelope | None = None
    if status < 400:
        try:
            page = _OBJECTS_DECODER.decode(body)
        except _DECODE_ERRORS:
            page = None
    if page is None or page.success is not True or page.result is None:
        # Not the happy path: decode generically for the precise error.
        env = parse_envelope("objects", status, body, cf_ray)
        _result_list("objects", env, status)
        raise CloudflareAPIError(
            "unexpected field types in the objects page",
            endpoint="objects",
            kind=INVALID_RESPONSE,
            status=status,
            cf_ray=cf_ray,
        )
    if page.result_info is None:
        raise CloudflareAPIError(
            "result_info missing: cannot tell whether more objects follow",
            endpoint="objects",
            kind=INVALID_RESPONSE,
            status=status,
            cf_ray=cf_ray,
        )
    with_data = sum(1 for item in page.result if item.hasStoredData is True)
    info = page.result_info
    cursor = (info.cursors.after if info.cursors else None) or info.cursor or None
    return ObjectsPage(len(page.result), with_data, cursor)


# What the verify endpoints say a token is. "invalid": neither endpoint knows it (revoked,
# mistyped, or an account-owned token checked without its account).
TOKEN_STATUSES = ("active", "disabled", "expired")
INVALID_TOKEN = "invalid"
USER_OWNED = "user"
ACCOUNT_OWNED = "account"
OBJECTS_PROBE_LIMIT = 10  # the API's smallest objects page


@dataclass(frozen=True, slots=True)
class TokenStatus:
    """What ``GET /user/tokens/verify`` (or the account one) said about the token.

    ``status``: one of :data:`TOKEN_STATUSES`, or :data:`INVALID_TOKEN`. ``owner``: which
    endpoint answered (:data:`USER_OWNED`, :data:`ACCOUNT_OWNED`; None when invalid);
    ``account_id``: the account of an account-owned token. ``expires_at`` and
    ``not_before`` are Unix times, None when the token has none. Never holds the token.
    """

    status: str
    owner: str | None = None
    expires_at: float | None = None
    not_before: float | None = None
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceProbe:
    """One ``per_page=1`` page of an account's namespaces: how many there are (None when
    the API does not say) and the first one (None when there is none)."""

    total: int | None
    first: Namespace | None


def parse_iso_time(value: object) -> float | None:
    """Unix time of an ISO 8601 text with a zone (``2031-01-01T00:00:00Z``), else None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def parse_token_status(
    status: int,
    body: bytes,
    cf_ray: str | None = None,
    *,
    owner: str = USER_OWNED,
    account_id: str | None = None,
) -> TokenStatus:
    """A verify endpoint's answer: ``result {id, status, expires_on?, not_before?}``."""
    env = parse_envelope("verify", status, body, cf_ray)
    result = env.result if isinstance(env.result, dict) else {}
    state = result.get("status")
    times = {key: parse_iso_time(result.get(key)) for key in ("expires_on", "not_before")}
    bad = [key for key, at in times.items() if result.get(key) is not None and at is None]
    if state not in TOKEN_STATUSES or bad:
        what = f"{bad[0]} is not an ISO 8601 time" if bad else "result.status is unknown"
        raise CloudflareAPIError(
            what, endpoint="verify", kind=INVALID_RESPONSE, status=status, cf_ray=cf_ray
        )
    return TokenStatus(
        status=str(state),
        owner=owner,
        expires_at=times["expires_on"],
        not_before=times["not_before"],
        account_id=account_id,
    )


def _wrong_kind(error: CloudflareAPIError) -> bool:
    """A verify endpoint's "not a token of mine" (HTTP 401 or code 1000)."""
    return error.kind == "api" and (error.status == 401 or 1000 in error.codes)


_RATELIMIT_R = re.compile(r"(?:^|[;,\s])r=([0-9]+)")
_RATELIMIT_T = re.compile(r"(?:^|[;,\s])t=([0-9]+)")
# ASCII digits only (str.isdigit() also takes a Latin-1 "²", which int() refuses), and at
# most 15 of them: int() refuses 4,300 digits, and a 400-digit count overflows a float.
_SMALL_INT = re.compile(r"[0-9]{1,15}")


def _small_int(text: str) -> int | None:
    return int(text) if _SMALL_INT.fullmatch(text) else None


def parse_ratelimit(headers: Mapping[str, str]) -> tuple[int | None, float | None]:
    """Requests remaining and seconds until the window resets, from either header style.

    ``Ratelimit: "default";r=50;t=30`` (current) or ``X-RateLimit-Remaining`` /
    ``X-RateLimit-Reset`` (older deployments; the reset as seconds, a Unix time or an HTTP
    date). Unknown parts are ``None``.
    """
    remaining: int | None = None
    reset: float | None = None
    value = headers.get("Ratelimit")
    if value:
        if m := _RATELIMIT_R.search(value):
            remaining = _small_int(m.group(1))
        if (m := _RATELIMIT_T.search(value)) and (seconds := _small_int(m.group(1))) is not None:
            reset = float(seconds)
    if remaining is None:
        remaining = _small_int(headers.get("X-RateLimit-Remaining", "").strip())
    if reset is None:
        text = headers.get("X-RateLimit-Reset", "").strip()
        raw = _small_int(text)
        if raw is not None:
            # Either seconds from now or a Unix time: a value far in the future is a time.
            reset = raw - time.time() if raw > 1e9 else float(raw)
        elif text:
            # Cloudflare documented this header as an HTTP date (RFC 1123) on 429 answers.
            reset = parse_retry_after(text[:64])
    return remaining, reset


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    cf_ray: str | None


class CloudflareClient:
    """Lists accounts, namespaces and objects, paced by a shared :class:`RateLimiter`."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        token: Secret,
        *,
        limiter: RateLimiter,
        graphql_limiter: RateLimiter | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        observer: RequestObserver | None = None,
        cancel: threading.Event | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_object_pages: int = MAX_OBJECT_PAGES,
        max_body_bytes: int = MAX_BODY_BYTES,
        request_deadline: float | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token = token
        self._limiter = limiter
        # Cloudflare's GraphQL budget (300 queries per 5 minutes per user) is its own.
        self._graphql_limiter = graphql_limiter or RateLimiter(
            GRAPHQL_RATE_LIMIT, 300.0, cancel=cancel
        )
        self._timeout = (connect_timeout, timeout)
        self._retry = retry or RetryPolicy()
        self._observer: RequestObserver = observer or _NullObserver()
        self._cancel = cancel or threading.Event()
        self._rng = rng or random.Random()
        self._clock = clock
        self._max_object_pages = max_object_pages
        self._max_body = max_body_bytes
        # Bounds one attempt, headers and body: a server dripping a byte now and then never
        # trips the per-read timeout.
        self._deadline = (
            max(2 * timeout, MIN_REQUEST_DEADLINE) if request_deadline is None else request_deadline
        )
        self._requests = 0
        self._latency: float | None = None
        self._count_lock = threading.Lock()
        self._watchdog = _Watchdog()

    def __repr__(self) -> str:
        return f"CloudflareClient(base_url={self._base!r}, token={self._token!r})"

    @property
    def requests_made(self) -> int:
        """HTTP attempts so far (for the poll summary log line)."""
        return self._requests

    @property
    def latency(self) -> float | None:
        """Moving average of the seconds an answered request took (None before the first)."""
        return self._latency

    # -- public API -----------------------------------------------------------------------

    def list_accounts(self) -> list[Account]:
        """Every account the token can read (``GET /accounts``), de-duplicated by id.

        Items whose id is not 32 lowercase hex are skipped (one warning, one
        ``invalid_response`` error counted per list); names are capped like label values.
        """
        accounts: list[Account] = []
        skipped = 0
        for item in self._pages("accounts", "/accounts", ACCOUNTS_PER_PAGE, MAX_ACCOUNT_PAGES, {}):
            acc_id = item.get("id")
            if not is_api_id(acc_id):
                skipped += 1
                continue
            name = item.get("name")
            name, cut = cap_label(name) if isinstance(name, str) else ("", False)
            if cut:
                self._observer.label_truncated()
            accounts.append(Account(acc_id, name))
        self._note_skipped("accounts", skipped, {})
        return accounts

    def list_namespaces(self, account_id: str) -> list[Namespace]:
        """Every Durable Objects namespace of an account, page by page, de-duplicated by id.

        Items whose id is missing or not 32 lowercase hex are skipped (one warning, one
        ``invalid_response`` error counted per list); text fields are capped at
        :data:`MAX_LABEL_VALUE` characters.
        """
        context = {"account_id": account_id}
        path = f"/accounts/{self._path_id('namespaces', account_id, context)}"
        path += "/workers/durable_objects/namespaces"
        result: list[Namespace] = []
        skipped = 0
        pages = self._pages("namespaces", path, NAMESPACES_PER_PAGE, MAX_LIST_PAGES, context)
        for item in pages:
            ns = parse_namespace(item, self._observer.label_truncated)
            if ns is None:
                skipped += 1
            else:
                result.append(ns)
        self._note_skipped("namespaces", skipped, context)
        return result

    def count_objects(
        self,
        account_id: str,
        namespace_id: str,
        progress: Callable[[int], None] | None = None,
        *,
        max_pages: int | None = None,
        lane: Callable[[int], Lane] | None = None,
    ) -> ObjectCount:
        """Walk every page of a namespace's objects, keeping only the counts.

        Memory stays flat: one page at a time (the loop guard keeps an 8-byte hash per
        page, about 8 MB at the page cap). A cursor seen before (a server that repeats
        itself) or more than ``max_object_pages`` pages ends the walk with an error rather
        than a loop or a partial count; ``max_pages`` lowers that bound for this walk (the
        poller derives it from the namespace's last known size). ``progress`` is called with
        the pages read so far; ``lane(pages read)`` says where the next page queues in the
        rate limiter (default: :attr:`Lane.FRESH`).
        """
        context = {"account_id": account_id, "namespace_id": namespace_id}
        path = (
            f"/accounts/{self._path_id('objects', account_id, context)}"
            "/workers/durable_objects/namespaces/"
            f"{self._path_id('objects', namespace_id, context)}/objects"
        )
        limit = (
            self._max_object_pages if max_pages is None else min(max_pages, self._max_object_pages)
        )
        objects = with_data = pages = 0
        cursor: str | None = None
        seen: set[int] = set()
        while True:
            params: dict[str, str | int] = {"limit": OBJECTS_PER_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self._request(
                "objects",
                path,
                params,
                context,
                parse_objects_page,
                lane(pages) if lane is not None else Lane.FRESH,
            )
            pages += 1
            objects += page.count
            with_data += page.with_stored_data
            if progress is not None:
                progress(pages)
            if page.cursor is None or page.count == 0:
                return ObjectCount(objects, with_data, pages)
            digest = int.from_bytes(hashlib.blake2b(page.cursor.encode(), digest_size=8).digest())
            if digest in seen:
                self._fail_walk("objects", "the API repeated a cursor (loop guard)", context)
            if pages >= limit:
                self._fail_walk("objects", f"more than {limit} pages (walk guard)", context)
            seen.add(digest)
            cursor = page.cursor

    def verify_token(
        self, account_ids: Sequence[str] = (), *, owner: str | None = None
    ) -> TokenStatus:
        """What the API says the token is: its status, owner and expiry (one or more
        ``verify`` requests; verify checks no permission).

        ``GET /user/tokens/verify`` first; it answers an account-owned token with HTTP 401 /
        code 1000, so then ``GET /accounts/{id}/tokens/verify`` for each of ``account_ids``
        until one knows it. ``owner=ACCOUNT_OWNED`` (known from an earlier answer) tries the
        account endpoints first. ``status`` is :data:`INVALID_TOKEN` when none knows it.
        Raises :class:`CloudflareAPIError` when an endpoint fails otherwise.
        """
        user: list[tuple[str, dict[str, str], str | None]] = [("/user/tokens/verify", {}, None)]
        accounts: list[tuple[str, dict[str, str], str | None]] = [
            (f"/accounts/{a}/tokens/verify", {"account_id": a}, a)
            for a in dict.fromkeys(account_ids)
            if is_api_id(a)
        ]
        order = accounts + user if owner == ACCOUNT_OWNED else user + accounts
        for path, context, account_id in order:
            kind = USER_OWNED if account_id is None else ACCOUNT_OWNED

            def parse(
                status: int,
                body: bytes,
                cf_ray: str | None,
                kind: str = kind,
                a: str | None = account_id,
            ) -> TokenStatus:
                return parse_token_status(status, body, cf_ray, owner=kind, account_id=a)

            try:
                return self._request("verify", path, {}, context, parse, Lane.CONTROL)
            except CloudflareAPIError as exc:
                if not _wrong_kind(exc):
                    raise
        return TokenStatus(INVALID_TOKEN)

    def probe_namespaces(self, account_id: str) -> NamespaceProbe:
        """One request: the first page of an account's namespaces with ``per_page=1``
        (whether the token may list them, how many there are, one to probe objects with)."""
        context = {"account_id": account_id}
        path = f"/accounts/{self._path_id('namespaces', account_id, context)}"
        path += "/workers/durable_objects/namespaces"
        params = {"page": 1, "per_page": 1}
        parse = _list_parser("namespaces")
        env, items = self._request("namespaces", path, params, context, parse, Lane.CONTROL)
        info = env.result_info or {}
        total = _int(info.get("total_count"))
        if total is None and _int(info.get("per_page")) == 1:
            total = _int(info.get("total_pages"))
        found = (parse_namespace(item, self._observer.label_truncated) for item in items)
        return NamespaceProbe(total, next((n for n in found if n is not None), None))

    def probe_objects(self, account_id: str, namespace_id: str) -> ObjectsPage:
        """One request: the smallest first page of a namespace's objects."""
        context = {"account_id": account_id, "namespace_id": namespace_id}
        path = (
            f"/accounts/{self._path_id('objects', account_id, context)}"
            "/workers/durable_objects/namespaces/"
            f"{self._path_id('objects', namespace_id, context)}/objects"
        )
        params = {"limit": OBJECTS_PROBE_LIMIT}
        return self._request("objects", path, params, context, parse_objects_page, Lane.CONTROL)

    def graphql(
        self, account_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any] | AnalyticsError:
        """One ``POST /graphql`` of an account (see :mod:`do_exporter.analytics`).

        Paced by the GraphQL limiter (Cloudflare's GraphQL budget is separate from the REST
        one); 429 and 5xx are retried like any request. An answer comes back as its decoded
        JSON document (errors in a 200 included, for the analytics parsers to read), or
        :class:`AnalyticsError` when it is not JSON or has an error status. Raises :class:`CloudflareAPIError` when
        no answer came (transport, retries exhausted).
        """
        context = {"account_id": account_id}
        return self._request(
            "graphql",
            "/graphql",
            {},
            context,
            _parse_graphql,
            Lane.CONTROL,
            json_body=body,
            limiter=self._graphql_limiter,
        )

    # -- pagination -----------------------------------------------------------------------

    def _pages(
        self,
        endpoint: str,
        path: str,
        per_page: int,
        max_pages: int,
        context: Mapping[str, str],
    ) -> Iterator[dict[str, Any]]:
        """Yield the items of a page-number list, de-duplicated by ``id``.

        Where the list ends is judged by position (items received, whatever their ids): at
        ``result_info.total_pages`` when the API gives it; without it, once
        ``result_info.total_count`` items were received; without either, on a short or
        empty page (short against the page size the server says it used, which may be
        smaller than the one asked for). De-duplication is separate: an id seen before, on
        this page or an earlier one, is dropped; items without a string id are passed on
        for the caller to judge. A page that is empty, or whose ids were all seen before,
        while more are announced (a server ignoring ``page``) is an error, not a short list;
        more than ``max_pages`` pages is an error too.
        """
        seen: set[str] = set()
        received = duplicates = 0
        page = 1
        parse = _list_parser(endpoint)
        while True:
            params = {"page": page, "per_page": per_page}
            env, items = self._request(endpoint, path, params, context, parse, Lane.CONTROL)
            fresh = with_id = 0
            for item in items:
                item_id = item.get("id")
                if isinstance(item_id, str):
                    with_id += 1
                    if item_id in seen:
                        duplicates += 1
                        continue
                    seen.add(item_id)
                    fresh += 1
                yield item
            received += len(items)
            info = env.result_info or {}
            total_pages = _int(info.get("total_pages"))
            total_count = _int(info.get("total_count"))
            page_size = _int(info.get("per_page")) or per_page
            if total_pages is not None:
                more = page < total_pages
            elif total_count is not None:
                more = received < total_count
            else:
                more = len(items) >= page_size
            if more and (not items or (with_id and not fresh)):
                # The API says there is more but repeats itself: a list we cannot trust.
                self._fail_walk(endpoint, f"page {page} repeated an earlier page", context)
            if not more or not items:
                break
            if page >= max_pages:
                self._fail_walk(endpoint, f"more than {max_pages} pages", context)
            page += 1
        if duplicates:
            log.warning("duplicate ids dropped", endpoint=endpoint, count=duplicates, **context)

    def _note_skipped(self, endpoint: str, skipped: int, context: Mapping[str, str]) -> None:
        if skipped:
            self._observer.api_error(endpoint, INVALID_RESPONSE)
            log.warning(
                "items without a valid id skipped", endpoint=endpoint, count=skipped, **context
            )

    def _path_id(self, endpoint: str, value: str, context: Mapping[str, str]) -> str:
        """``value`` if it is a 32-hex id fit for a request path, else an error (no request)."""
        if not is_api_id(value):
            self._fail_walk(endpoint, "not a 32-hex id; not put in a request path", context)
        return value

    def _fail_walk(self, endpoint: str, message: str, context: Mapping[str, str]) -> NoReturn:
        self._observer.api_error(endpoint, INVALID_RESPONSE)
        log.error("API pagination error", endpoint=endpoint, error=message, **context)
        raise CloudflareAPIError(message, endpoint=endpoint, kind=INVALID_RESPONSE)

    # -- one request, with retries -------------------------------------------------------

    def _request(
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
    ) -> _T:
        url = self._base + path
        limiter = limiter or self._limiter
        method = "GET" if json_body is None else "POST"
        headers = {
            "Authorization": f"Bearer {self._token.reveal()}",
            "Accept": "application/json",
            # Only what _Inflater decodes (and caps); requests would add br/zstd when the
            # brotli or zstandard packages happen to be installed.
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"do-exporter/{__version__}",
        }
        attempt = 0
        while True:
            attempt += 1
            limiter.acquire(lane)
            with self._count_lock:
                self._requests += 1
            started = self._clock()
            deadline = started + self._deadline
            error: CloudflareAPIError
            retry_after: float | None = None
            location: str | None = None
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers=headers,
                    timeout=self._attempt_timeout(deadline),
                    stream=True,
                    allow_redirects=False,
                )
                body = self._read_body(endpoint, response, deadline)
            except _DeadlineExceeded:
                self._observer.request_finished(endpoint, TRANSPORT, self._clock() - started)
                error = CloudflareAPIError("deadline exceeded", endpoint=endpoint, kind=TRANSPORT)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                self._observer.request_finished(endpoint, TRANSPORT, self._clock() - started)
                error = CloudflareAPIError(
                    _transport_reason(exc), endpoint=endpoint, kind=TRANSPORT
                )
            except CloudflareAPIError as exc:  # a body we will not use (too large, undecodable)
                self._observer.request_finished(endpoint, str(exc.status), self._clock() - started)
                error = exc
            else:
                elapsed = self._clock() - started
                status = response.status_code
                self._observer.request_finished(endpoint, str(status), elapsed)
                # Latency to the response head, as the server sees it: the time spent reading
                # and decoding the body is our own CPU (and GIL waits under load), which
                # would make the worker count inflate itself.
                head = _head_seconds(response, elapsed)
                with self._count_lock:
                    last = self._latency
                    self._latency = head if last is None else 0.8 * last + 0.2 * head
                cf_ray = response.headers.get("CF-Ray")
                self._note_ratelimit(response.headers, limiter)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if 300 <= status < 400:
                    # Never followed: the token would go wherever the answer points.
                    location = (response.headers.get("Location") or "")[:LOCATION_CHARS]
                    error = CloudflareAPIError(
                        "redirect not followed",
                        endpoint=endpoint,
                        kind="http",
                        status=status,
                        cf_ray=cf_ray,
                    )
                else:
                    try:
                        return parse(status, body, cf_ray)
                    except CloudflareAPIError as exc:
                        error = exc
                        error.retry_after = retry_after
                    except Exception as exc:
                        # Whatever else a body makes a parser raise, it is a body we cannot
                        # use: it must fail this request, never escape the client.
                        error = CloudflareAPIError(
                            f"unparseable response ({type(exc).__name__})",
                            endpoint=endpoint,
                            kind=INVALID_RESPONSE,
                            status=status,
                            cf_ray=cf_ray,
                        )
            for code in error.error_codes:
                self._observer.api_error(endpoint, code)
            delay = self._retry_delay(error, attempt)
            log.warning(
                "API request failed",
                endpoint=endpoint,
                **context,
                status=error.status,
                error_kind=error.kind,
                error_codes=list(error.codes),
                error_messages=list(error.messages),
                error=error.args[0],
                cf_ray=error.cf_ray,
                attempt=attempt,
                retry=delay is not None,
                retry_in=None if delay is None else round(delay, 3),
                **({} if location is None else {"location": location}),
            )
            if error.status == 429:
                # The token is blocked: every worker waits, retried or not, so nothing else
                # runs into the block. The pause is capped: Cloudflare blocks for at most
                # its 5-minute window, and a wild Retry-After must not stop us for days.
                wait = max(error.retry_after or 0.0, delay or 0.0) or self._retry.base
                limiter.pause(min(wait, MAX_PAUSE))
            if delay is None:
                raise error
            if error.status != 429 and self._cancel.wait(delay):
                raise Cancelled()

    def _attempt_timeout(self, deadline: float) -> tuple[float, float]:
        """Connect and per-read timeouts, neither beyond the attempt's deadline."""
        left = max(deadline - self._clock(), 0.001)
        return min(self._timeout[0], left), min(self._timeout[1], left)

    def _read_body(self, endpoint: str, response: requests.Response, deadline: float) -> bytes:
        """The body, at most ``max_body_bytes`` raw and inflated, by ``deadline``.

        Read :data:`READ_CHUNK_BYTES` at a time and inflated here (gzip, deflate) with a
        bound on every step's output, so neither an endless body nor a gzip bomb holds more
        than the cap plus one chunk. A timer cuts the socket at the deadline, so a server
        dripping a byte at a time cannot hold the read past it (before the headers are in,
        only each read is bounded, by the time left). Only a body read to its end
        lets the connection go back to the pool; on any failure (and for a redirect, whose
        body is not read) the connection is closed, unless urllib3 already took back one read
        to its end.
        """
        status = response.status_code
        if 300 <= status < 400:
            response.close()
            return b""
        cut = threading.Event()
        watch = self._watchdog.watch(deadline - self._clock(), response.raw, cut)
        try:
            body = self._read_capped(endpoint, response, cut)
            if cut.is_set():
                raise _DeadlineExceeded()
        except BaseException as exc:
            response.close()  # a half-read connection cannot be reused
            if cut.is_set() and not isinstance(exc, _DeadlineExceeded | CloudflareAPIError):
                raise _DeadlineExceeded() from exc
            raise
        finally:
            self._watchdog.release(watch)
        response.raw.release_conn()
        return body

    def _read_capped(
        self, endpoint: str, response: requests.Response, cut: threading.Event
    ) -> bytes:
        cap = self._max_body

        def unusable(message: str) -> CloudflareAPIError:
            return CloudflareAPIError(
                message,
                endpoint=endpoint,
                kind=INVALID_RESPONSE,
                status=response.status_code,
                cf_ray=response.headers.get("CF-Ray"),
            )

        try:
            inflater = _inflater(response.headers.get("Content-Encoding"))
        except ValueError as exc:
            raise unusable(str(exc)) from None
        chunks: list[bytes] = []
        raw_size = size = 0
        while not cut.is_set():
            chunk: bytes = response.raw.read(READ_CHUNK_BYTES, decode_content=False)
            if not chunk:
                break
            raw_size += len(chunk)
            if raw_size > cap:
                raise unusable(f"body over {cap} bytes")
            if inflater is not None:
                try:
                    chunk = inflater.feed(chunk, cap - size + 1)
                except zlib.error:
                    raise unusable("undecodable compressed body") from None
            size += len(chunk)
            if size > cap:
                raise unusable(f"body over {cap} bytes once decompressed")
            chunks.append(chunk)
        return b"".join(chunks)

    def _retry_delay(self, error: CloudflareAPIError, attempt: int) -> float | None:
        retryable = error.kind == TRANSPORT or (
            error.status is not None and error.status in RETRY_STATUSES
        )
        if not retryable or attempt >= self._retry.attempts or self._cancel.is_set():
            return None
        delay = self._retry.backoff(attempt, self._rng)
        if error.retry_after is not None:
            if error.retry_after > self._retry.max_retry_after:
                return None  # not worth holding a poll for
            delay = max(delay, error.retry_after)
        return delay

    def _note_ratelimit(self, headers: Mapping[str, str], limiter: RateLimiter) -> None:
        remaining, reset = parse_ratelimit(headers)
        if remaining is None:
            return
        if limiter is self._limiter:  # the gauge is the REST budget's, never GraphQL's
            self._observer.ratelimit_remaining(remaining)
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


def _parse_graphql(
    status: int, body: bytes, cf_ray: str | None
) -> Mapping[str, Any] | AnalyticsError:
    """A GraphQL answer; only statuses worth a retry (429, 5xx) raise, to be retried."""
    if status == 429 or status >= 500:
        raise CloudflareAPIError(
            "GraphQL request failed", endpoint="graphql", kind="http", status=status, cf_ray=cf_ray
        )
    return decode_answer(body, status=status)


def _list_parser(
    endpoint: str,
) -> Callable[[int, bytes, str | None], tuple[Envelope, list[dict[str, Any]]]]:
    """A parser for one page of a page-number list: the envelope and its items."""

    def parse(
        status: int, body: bytes, cf_ray: str | None
    ) -> tuple[Envelope, list[dict[str, Any]]]:
        env = parse_envelope(endpoint, status, body, cf_ray)
        return env, _result_list(endpoint, env, status)

    return parse


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Watchdog:
    """One thread, started on demand, that cuts the connections of attempts past their
    deadline (a timer thread per request would cost more CPU than reading a page does).

    Deadlines are on the real monotonic clock: a socket does not follow an injected one.
    The thread ends after :attr:`IDLE` seconds with nothing to watch.
    """

    IDLE = 10.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, Any, threading.Event]] = {}
        self._key = 0
        self._next = math.inf  # when the thread wakes next
        self._running = False

    def watch(self, seconds: float, raw: Any, cut: threading.Event) -> int:
        """Cut ``raw``'s connection (and set ``cut``) in ``seconds`` unless released."""
        when = time.monotonic() + max(seconds, 0.0)
        with self._cond:
            self._key += 1
            self._due[self._key] = (when, raw, cut)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="api-deadline", daemon=True).start()
            elif when < self._next:
                self._cond.notify()
            return self._key

    def release(self, key: int) -> None:
        with self._cond:
            self._due.pop(key, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key in [k for k, (when, _, _) in self._due.items() if when <= now]:
                    _, raw, cut = self._due.pop(key)
                    _cut_connection(raw, cut)  # a shutdown(2): quick, never blocks
                if not self._due:
                    self._next = now + self.IDLE
                    if not self._cond.wait(self.IDLE) and not self._due:
                        self._running = False
                        return
                    continue
                self._next = min(when for when, _, _ in self._due.values())
                self._cond.wait(self._next - now)


class _DeadlineExceeded(Exception):
    """An attempt ran past the client's request deadline (a transport error)."""


def _cut_connection(raw: Any, cut: threading.Event) -> None:
    """Shut the socket under a response being read (from the watchdog's thread)."""
    cut.set()
    shutdown = getattr(raw, "shutdown", None)  # urllib3 >= 2.3: wakes a blocked read
    if shutdown is not None:
        # Already closed or released (ValueError, RuntimeError): nothing left to cut.
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            shutdown()


class _Inflater:
    """gzip or deflate, inflated a bounded amount at a time (a bomb never fully inflates)."""

    def __init__(self, *, gzip: bool) -> None:
        self._gzip = gzip
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
        self._head = b""  # deflate: the first bytes, until zlib or raw format is known

    def feed(self, data: bytes, limit: int) -> bytes:
        """Inflate ``data``; at most ``limit`` bytes come out (``limit`` means "too much")."""
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            # "deflate" is meant to be zlib-wrapped (RFC 9110), but some servers send raw.
            head = self._head
            wrapped = head[0] & 0x0F == 8 and int.from_bytes(head[:2], "big") % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._head = head, b""
        out: list[bytes] = []
        while data and limit > 0:
            piece = self._obj.decompress(data, limit)
            out.append(piece)
            limit -= len(piece)
            if self._obj.eof:
                data = self._obj.unused_data
                if not (data and self._gzip):
                    break  # the end (bytes after a deflate stream are ignored)
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # next gzip member
            else:
                data = self._obj.unconsumed_tail  # left over only when limit was reached
        return b"".join(out)


def _inflater(content_encoding: str | None) -> _Inflater | None:
    """The decoder for a Content-Encoding; ValueError for one we did not ask for."""
    codings = [
        c
        for c in (part.strip().lower() for part in (content_encoding or "").split(","))
        if c and c != "identity"
    ]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater(gzip=codings[0] != "deflate")
    raise ValueError(f"unsupported Content-Encoding {(content_encoding or '')[:40]!r}")


def _head_seconds(response: requests.Response, total: float) -> float:
    """Seconds from sending the request to its response head (``total`` if unknown)."""
    elapsed = getattr(response, "elapsed", None)
    seconds = elapsed.total_seconds() if elapsed is not None else None
    if isinstance(seconds, float) and 0 < seconds <= total:
        return seconds
    return total


def _transport_reason(exc: Exception) -> str:
    """A short reason without the URL (no secrets are in it, but it is long)."""
    kinds: tuple[tuple[type[Exception], str], ...] = (
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
