"""Pure parsing: bytes and headers in, data or :class:`CloudflareAPIError` out.

Every function here is tested with canned bodies, no network. Text from the API is
validated once, here, at the edge: ids are 32 lowercase hex, names are valid Unicode
without lone surrogates and capped in length; an item that fails is dropped by the caller
(and counted), never passed on.
"""

from __future__ import annotations

import email.utils
import json
import math
import operator
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

import msgspec

from ..model import Namespace
from ..observe import INVALID_RESPONSE
from .errors import MAX_ERRORS, MESSAGE_CHARS, CloudflareAPIError

# Label values from the API (namespace name, class, script; account name) are cut to this
# many characters, the marker included, so one odd answer cannot bloat every scrape.
MAX_LABEL_VALUE = 1024
TRUNCATED_MARKER = "...[truncated]"
# Account and namespace ids as the API gives them; only these go into a request path.
_ID = re.compile(r"[0-9a-f]{32}")


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


@dataclass(frozen=True, slots=True)
class GraphQLAnswer:
    """A GraphQL answer the client did not retry: its status and decoded JSON document
    (an ``errors[]`` in a 200 among them; the analytics parser judges it)."""

    status: int
    document: Any


def decode_json(body: bytes) -> Any:
    """The JSON document of ``body``; ValueError (or a subclass) when it is not JSON.

    msgspec first (fast); the standard library when msgspec refuses, because msgspec refuses
    a whole document for one lone surrogate escape (``"\\ud800"``) that the item checks
    below drop on their own.
    """
    try:
        return msgspec.json.decode(body)
    except _DECODE_ERRORS:
        pass
    try:
        return json.loads(body)
    except (RecursionError, ValueError) as exc:
        raise ValueError("not JSON") from exc


def parse_envelope(endpoint: str, status: int, body: bytes, cf_ray: str | None = None) -> Envelope:
    """Decode a v4 envelope; raise :class:`CloudflareAPIError` unless it is a success."""
    try:
        doc = decode_json(body)
    except ValueError:
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
            code = as_int(item.get("code")) if isinstance(item, dict) else None
            if code is not None:
                # A 5,000-digit "code" would not even print (int to str refuses it).
                codes.append(code if -(2**31) <= code < 2**31 else -1)
                message = item.get("message", "")
                messages.append(message[:MESSAGE_CHARS] if isinstance(message, str) else "")
                if len(codes) >= MAX_ERRORS:
                    break  # the first ones tell; thousands would only bloat logs
    return tuple(codes), tuple(messages)


def result_list(endpoint: str, env: Envelope, status: int) -> list[dict[str, Any]]:
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


def valid_text(value: object) -> bool:
    """Whether ``value`` is a string fit for a label: no lone surrogate (it would not encode
    as UTF-8, and rendering the exposition would fail)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cap_label(value: str) -> tuple[str, bool]:
    """``value`` cut to :data:`MAX_LABEL_VALUE` characters (ending in
    :data:`TRUNCATED_MARKER` when cut), and whether it was cut."""
    if len(value) <= MAX_LABEL_VALUE:
        return value, False
    return value[: MAX_LABEL_VALUE - len(TRUNCATED_MARKER)] + TRUNCATED_MARKER, True


def parse_namespace(
    item: Mapping[str, Any], truncated: Callable[[], None] | None = None
) -> Namespace | None:
    """A namespace from one list item, or None when the item is unusable: its id is not 32
    lowercase hex, or a text field is not valid text (:func:`valid_text`).

    Text fields longer than :data:`MAX_LABEL_VALUE` are cut (see :func:`cap_label`);
    ``truncated`` is called once for each value cut. A field of another type (a number, a
    list) becomes None.
    """
    ns_id = item.get("id")
    if not is_api_id(ns_id):
        return None
    fields: dict[str, str | None] = {}
    for key in ("name", "class", "script"):
        value = item.get(key)
        if isinstance(value, str) and not valid_text(value):
            return None
        if not isinstance(value, str):
            fields[key] = None
            continue
        value, cut = cap_label(value)
        if cut and truncated is not None:
            truncated()
        fields[key] = value
    sqlite = item.get("use_sqlite")
    return Namespace(
        id=ns_id,
        name=fields["name"],
        class_name=fields["class"],
        script=fields["script"],
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


_STORED = operator.attrgetter("hasStoredData")
# Bytes of Python objects one JSON value may become when decoded generically (a dict, a
# list, a string), and one object of an objects page decoded by _OBJECTS_DECODER.
GENERIC_VALUE_COST = 64
OBJECT_COST = 48
# An objects page that the typed decoder refused is decoded generically for the precise
# error only up to this size: real error answers are small, and a generic decode of a large
# body costs up to 20x its size.
GENERIC_FALLBACK_BYTES = 1024 * 1024
OBJECTS_UNCOUNTED_BYTES = 2 * 1024 * 1024  # a 10,000-object page is about 1 MB


def generic_decode_cost(body: bytes) -> int:
    """An upper bound of the memory decoding ``body`` generically builds."""
    values = body.count(b",") + body.count(b"{") + body.count(b"[") + 1
    return values * GENERIC_VALUE_COST


def objects_decode_cost(body: bytes) -> int:
    """An upper bound of the memory :func:`parse_objects_page` builds (one struct per
    object; ids are never built as strings), counted only for pages larger than a real one
    can be (:data:`OBJECTS_UNCOUNTED_BYTES`): counting costs about as much CPU as decoding,
    and decoding holds the GIL, so at most one such page is decoded at a time anyway."""
    if len(body) <= OBJECTS_UNCOUNTED_BYTES:
        return 0
    return (body.count(b"{") + 1) * OBJECT_COST


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
        # Not the happy path: decode generically for the precise error (if small).
        if len(body) <= GENERIC_FALLBACK_BYTES:
            env = parse_envelope("objects", status, body, cf_ray)
            result_list("objects", env, status)
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
    with_data = list(map(_STORED, page.result)).count(True)  # C loops: ~3x a generator
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


def wrong_kind(error: CloudflareAPIError) -> bool:
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




def parse_graphql(status: int, body: bytes, cf_ray: str | None) -> GraphQLAnswer:
    """A GraphQL answer decoded; only statuses worth a retry (429, 5xx) and bodies that are
    not JSON raise. What the document says is :mod:`do_exporter.analytics`' to judge."""
    if status == 429 or status >= 500:
        raise CloudflareAPIError(
            "GraphQL request failed", endpoint="graphql", kind="http", status=status, cf_ray=cf_ray
        )
    try:
        document = decode_json(body)
    except ValueError:
        raise CloudflareAPIError(
            "answer is not JSON",
            endpoint="graphql",
            kind=INVALID_RESPONSE,
            status=status,
            cf_ray=cf_ray,
        ) from None
    return GraphQLAnswer(status, document)


def list_parser(
    endpoint: str,
) -> Callable[[int, bytes, str | None], tuple[Envelope, list[dict[str, Any]]]]:
    """A parser for one page of a page-number list: the envelope and its items."""

    def parse(
        status: int, body: bytes, cf_ray: str | None
    ) -> tuple[Envelope, list[dict[str, Any]]]:
        env = parse_envelope(endpoint, status, body, cf_ray)
        return env, result_list(endpoint, env, status)

    return parse


def as_int(value: Any) -> int | None:
    """``value`` if it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
