"""Reading an HTTP/1.x request head, bounded: a pure function over the bytes received so far.

:func:`parse_head` is called each time more bytes of a head arrive. It answers ``None``
(incomplete, and still within the limits), a :class:`Request` (complete), or a
:class:`Refusal` (this can never become a request we serve: answer it and close). The
cheap checks (length, line count, the request line) run on every call, so a head that is
too large or malformed is refused as soon as that shows, not when it ends; the headers are
split only once the blank line has arrived.

HTTP/0.9 (``GET /path`` and a line end, no version) is complete at its first line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD = 16 * 1024  # bytes: request line and headers together (Go's and nginx's are larger;
# Prometheus sends ~300 bytes)
MAX_REQUEST_LINE = 8 * 1024  # bytes; longer gets 414
MAX_HEADERS = 64  # header lines; more gets 431

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str  # "HTTP/1.1", "HTTP/1.0" or "HTTP/0.9"
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    size: int  # bytes of the head, leading blank lines included
    keep_alive: bool  # the client may send another request on this connection

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: HTTPStatus
    reason: str


def parse_head(data: bytes) -> Request | Refusal | None:
    """The request at the start of ``data``, a refusal, or ``None`` while incomplete."""
    body = data.lstrip(b"\r\n")  # blank lines before a request are ignored (RFC 9112 2.2)
    skipped = len(data) - len(body)
    line_end = body.find(b"\n")
    if line_end < 0:
        if len(body) > MAX_REQUEST_LINE:
            return Refusal(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
        if len(data) > MAX_HEAD:
            return Refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        return None
    line = body[:line_end].removesuffix(b"\r")
    if len(line) > MAX_REQUEST_LINE:
        return Refusal(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
    parts = line.split(b" ")
    if len(parts) == 2 and parts[0] == b"GET" and _TARGET.fullmatch(parts[1]):
        target = parts[1].decode("ascii")
        return Request("GET", target, "HTTP/0.9", {}, skipped + line_end + 1, keep_alive=False)
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        return Refusal(HTTPStatus.BAD_REQUEST, "malformed request line")
    version = _VERSION.fullmatch(parts[2])
    if version is None or version[1] == b"0":
        return Refusal(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    if version[1] != b"1":
        return Refusal(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is served")
    ends = [i for i in (body.find(b"\n\r\n", line_end), body.find(b"\n\n", line_end)) if i >= 0]
    if not ends:
        if len(data) > MAX_HEAD:
            return Refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        if body.count(b"\n") > MAX_HEADERS + 1:
            return Refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
        return None
    end = min(ends)
    size = skipped + end + (3 if body.startswith(b"\n\r\n", end) else 2)
    if size > MAX_HEAD:
        return Refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
    lines = body[line_end + 1 : end].split(b"\n") if end > line_end else []
    if len(lines) > MAX_HEADERS:
        return Refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
    headers = _headers(lines)
    if isinstance(headers, Refusal):
        return headers
    minor = parts[2][-1:]
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if minor != b"0" else "keep-alive" in tokens
    length = headers.get("content-length", "0")
    if not length.isascii() or not length.isdigit():
        return Refusal(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
    if "transfer-encoding" in headers or length.strip("0"):
        keep_alive = False  # a request body is never read: answer, then close
    return Request(
        parts[0].decode("ascii"),
        parts[1].decode("ascii"),
        f"HTTP/1.{minor.decode()}" if minor == b"0" else "HTTP/1.1",
        headers,
        size,
        keep_alive,
    )


def _headers(lines: list[bytes]) -> dict[str, str] | Refusal:
    """The header fields of a head's lines (names lower-cased, repeats joined by ", ")."""
    headers: dict[str, str] = {}
    for raw in lines:
        field = raw.removesuffix(b"\r")
        name, colon, value = field.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return Refusal(HTTPStatus.BAD_REQUEST, "malformed header line")  # obs-fold too
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            return Refusal(HTTPStatus.BAD_REQUEST, "control character in a header")
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers
