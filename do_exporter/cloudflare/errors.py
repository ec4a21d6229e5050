"""What a failed request is: :class:`CloudflareAPIError`, the retry policy, and the
bounded labels and log fields an error becomes.

An API answer may carry any number of error codes, any integers, with messages of any
length. What leaves this module is bounded: ``api_errors_total{error_code}`` takes a known
Cloudflare code (:data:`KNOWN_CODES`), ``other``, ``transport`` or ``invalid_response``;
an error keeps at most :data:`MAX_ERRORS` codes and messages of at most
:data:`MESSAGE_CHARS` characters, so its log line and ``str()`` stay short.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..observe import INVALID_RESPONSE, TRANSPORT

OTHER = "other"  # a Cloudflare error code not in KNOWN_CODES

# The Cloudflare v4 error codes the exporter, its docs or its simulator name: each is its
# own label value; every other code is counted as OTHER (the API chooses codes, so labels
# from them would be unbounded).
KNOWN_CODES = frozenset(
    {
        971,  # rate limited: please wait and consider throttling
        1000,  # verify: not a token of this endpoint (invalid token)
        1001,  # verify: invalid request headers
        6003,  # invalid request headers
        6008,  # invalid request body
        6111,  # invalid Authorization header
        7000,  # no route for that URI
        7001,  # method not allowed
        7003,  # could not route: invalid object identifier (account id)
        7403,  # the token may not access this account
        9106,  # missing authentication headers
        9109,  # unauthorized to access the requested resource
        10000,  # authentication error (token revoked, missing permission)
        10001,  # unable to authenticate request
        10013,  # an unknown error occurred (Workers API)
        10066,  # Durable Objects namespace not found
    }
)
MAX_ERRORS = 10  # codes and messages an error keeps (the first ones)
MESSAGE_CHARS = 200  # characters kept of each message
LOGGED_ERRORS = 3  # codes and messages a log line or str() shows


def error_code_label(code: int) -> str:
    """The ``error_code`` label for a Cloudflare error code (bounded: known or ``other``)."""
    return str(code) if code in KNOWN_CODES else OTHER


class CloudflareAPIError(Exception):
    """A request that did not give a usable answer, after any retries.

    ``kind`` is ``"api"`` (Cloudflare said no: see ``codes``/``messages``), ``"http"`` (an
    error status without a Cloudflare envelope, e.g. an HTML 502 from the edge),
    ``"transport"`` (no response, or none within the deadline) or ``"invalid_response"``
    (a body we cannot use). ``codes``/``messages`` hold at most :data:`MAX_ERRORS` entries.
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
        self.codes = codes[:MAX_ERRORS]
        self.messages = tuple(m[:MESSAGE_CHARS] for m in messages[:MAX_ERRORS])
        self.cf_ray = cf_ray[:100] if cf_ray else cf_ray
        self.retry_after = retry_after

    @property
    def not_found(self) -> bool:
        """The resource does not exist (HTTP 404 with a Cloudflare envelope)."""
        return self.kind == "api" and self.status == 404

    @property
    def error_codes(self) -> tuple[str, ...]:
        """Labels for ``api_errors_total``, each once: known codes, ``other``, else a kind."""
        if self.codes:
            return tuple(dict.fromkeys(error_code_label(code) for code in self.codes))
        return (TRANSPORT,) if self.kind == TRANSPORT else (INVALID_RESPONSE,)

    def log_fields(self) -> dict[str, object]:
        """The error's fields for a log line, bounded whatever the API sent."""
        return {
            "status": self.status,
            "error_kind": self.kind,
            "error_codes": list(self.codes[:LOGGED_ERRORS]),
            "error_messages": [m[:MESSAGE_CHARS] for m in self.messages[:LOGGED_ERRORS]],
            "error": self.args[0],
            "cf_ray": self.cf_ray,
        }

    def __str__(self) -> str:
        parts = [f"{self.endpoint}: {self.args[0]}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        shown = zip(self.codes[:LOGGED_ERRORS], self.messages, strict=False)
        parts.extend(f"code {code}: {msg}" for code, msg in shown)
        if len(self.codes) > LOGGED_ERRORS:
            parts.append(f"{len(self.codes) - LOGGED_ERRORS} more errors")
        if self.cf_ray:
            parts.append(f"cf-ray {self.cf_ray}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed requests are retried (transport errors, 408, 409, 429, 5xx).

    Delay before retry n (1-based) is ``base * 2**(n-1)`` capped at ``max_backoff``, with
    equal jitter (half fixed, half random), or ``Retry-After`` when the API sends a longer
    one. A ``Retry-After`` above ``max_retry_after`` is not waited for inside a poll. No
    retry starts once the request's overall budget (see the transport) is spent.
    """

    attempts: int = 4
    base: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        delay: float = min(self.max_backoff, self.base * 2 ** (retry - 1))
        return delay / 2 + rng.uniform(0, delay / 2)


# 501 (not implemented) and 505 (HTTP version not supported) never succeed on a retry.
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600)) - {501, 505}
