"""How answers look on the wire: v4 envelopes, Cloudflare-edge HTML pages, the Response."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

JSON = "application/json"
HTML = "text/html"

# Error codes the simulator answers with (see docs/simulator.md for the reasoning).
MISSING_AUTH = (9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
BAD_HEADERS = (6003, "Invalid request headers")
BAD_AUTH_FORMAT = (6111, "Invalid format for Authorization header")
AUTH_ERROR = (10000, "Authentication error")
INVALID_TOKEN = (1000, "Invalid API Token")
TOKEN_VALID = "This API Token is valid and active"  # verify's message for an active token
ACCOUNT_TOKEN_LIST = (1001, "List accounts endpoint does not support account owned tokens.")
NO_ROUTE = (7000, "No route for that URI")
METHOD_NOT_ALLOWED = (7001, "Method not allowed for this endpoint")
ACCOUNT_NOT_AUTHORISED = (
    7403,
    "The given account is not valid or is not authorized to access this service",
)
NAMESPACE_NOT_FOUND = (10066, "Durable Object namespace not found")
BAD_PARAMS = (6008, "Invalid request parameters")
PARAM_DETAIL = 11000
RATE_LIMITED = (971, "Please wait and consider throttling your request speed")
UNKNOWN_ERROR = (10013, "An unknown error has occurred")


@dataclass
class Response:
    """One answer: status, headers, body, how long to wait first and how to deliver it.

    ``action`` is ``send`` (normal), ``drop`` (headers and half the body, then close) or
    ``disconnect`` (close without a byte).
    """

    status: int
    body: bytes | bytearray
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    action: str = "send"


def error_body(code: int, message: str, chain: tuple[int, str] | None = None) -> bytes:
    """A ``success: false`` envelope with one error (and an optional ``error_chain``)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if chain is not None:
        error["error_chain"] = [{"code": chain[0], "message": chain[1]}]
    envelope = {"success": False, "errors": [error], "messages": [], "result": None}
    return json.dumps(envelope, separators=(",", ":")).encode()


def error(
    status: int,
    code_message: tuple[int, str],
    chain: tuple[int, str] | None = None,
) -> Response:
    """A JSON error answer."""
    return Response(status, error_body(code_message[0], code_message[1], chain))


def bad_param(detail: str) -> Response:
    """400 for a query parameter out of range or malformed (code 6008, chain 11000)."""
    return error(400, BAD_PARAMS, (PARAM_DETAIL, detail))


def success_envelope(
    result_info: dict[str, Any] | None,
    messages: list[dict[str, Any]] | None = None,
) -> tuple[bytes, bytes]:
    """The bytes before and after ``result`` in a ``success: true`` envelope."""
    head = '{"success":true,"errors":[],"messages":' + json.dumps(
        messages or [], separators=(",", ":")
    )
    tail = "}"
    if result_info is not None:
        tail = ',"result_info":' + json.dumps(result_info, separators=(",", ":")) + "}"
    return (head + ',"result":').encode(), tail.encode()


def html_page(status: int) -> bytes:
    """The bare HTML error page Cloudflare's edge sends for a failing origin (502, 503...)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    return (
        "<html>\r\n"
        f"<head><title>{title}</title></head>\r\n"
        "<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n"
        "<hr><center>cloudflare</center>\r\n"
        "</body>\r\n"
        "</html>\r\n"
    ).encode()


def no_route_for(path: str) -> Response:
    """400/7003: an account id in the path that is no Cloudflare id."""
    return error(
        400, (7003, f"Could not route to {path}, perhaps your object identifier is invalid?")
    )


def seconds_text(value: float) -> str:
    """Seconds as a header value: whole seconds, rounded up."""
    return str(int(value)) if float(value).is_integer() else str(math.ceil(value))
