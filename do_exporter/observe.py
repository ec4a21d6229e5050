"""What the Cloudflare client tells the rest of the exporter about its requests.

A neutral module: the client reports to a :class:`RequestObserver`, the exporter's own
metrics (``selfmetrics``) implement it, and neither imports the other.
"""

from __future__ import annotations

from typing import Protocol

# The error_code labels of failures without a Cloudflare code (declared here so that the
# metrics side can pre-create them without importing the client).
TRANSPORT = "transport"
INVALID_RESPONSE = "invalid_response"


class RequestObserver(Protocol):
    """Told about every HTTP attempt the client makes (for the exporter's own metrics).

    ``code`` and ``error_code`` are bounded label values: an HTTP status or ``transport``;
    a known Cloudflare error code, ``other``, ``transport`` or ``invalid_response``.
    """

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None: ...

    def api_error(self, endpoint: str, error_code: str) -> None: ...

    def ratelimit_remaining(self, remaining: int) -> None: ...

    def label_truncated(self) -> None: ...


class NullObserver:
    """Observes nothing (a client nobody reports on: ``--check``, tests)."""

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        pass

    def api_error(self, endpoint: str, error_code: str) -> None:
        pass

    def ratelimit_remaining(self, remaining: int) -> None:
        pass

    def label_truncated(self) -> None:
        pass
