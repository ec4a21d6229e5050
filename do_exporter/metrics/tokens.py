"""Token health as metric families: each credential's token status and expiry.

:class:`TokenHealth` is the state (the decisions about it, and the one call to the API that
makes it, are in :mod:`do_exporter.tokenhealth`); :class:`TokenHealthMetrics` holds the
latest state of each credential and writes the two families (a handful of series).

Example (one credential)::

    # HELP cloudflare_durable_objects_exporter_token_expiry_timestamp_seconds When the credential's API token expires (Unix time; absent when it never expires).
    # TYPE cloudflare_durable_objects_exporter_token_expiry_timestamp_seconds gauge
    cloudflare_durable_objects_exporter_token_expiry_timestamp_seconds{credential="default"} 1.924992e+09
    # HELP cloudflare_durable_objects_exporter_token_status The credential's API token status as last verified: 1 for the current status, 0 for the others.
    # TYPE cloudflare_durable_objects_exporter_token_status gauge
    cloudflare_durable_objects_exporter_token_status{credential="default",status="active"} 1.0
    cloudflare_durable_objects_exporter_token_status{credential="default",status="disabled"} 0.0
    ...
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import contract as c
from .render import Row, family_lines

if TYPE_CHECKING:  # prometheus-client is imported only when a registry asks (memory)
    from prometheus_client.metrics_core import Metric

# "unknown": never verified successfully (the API did not answer). A later failure to verify
# keeps the last verdict: one failed request must not flip an alert.
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TokenHealth:
    """A credential's token as last verified: ``status`` is one of
    :data:`contract.TOKEN_STATUSES`.

    ``owner`` (``user``/``account``) and ``expires_at`` (Unix time, None: never) come from
    the last successful verification, made at ``checked_at`` (None: never).
    """

    credential: str
    status: str = UNKNOWN
    owner: str | None = None
    expires_at: float | None = None
    not_before: float | None = None
    checked_at: float | None = None
    error: str | None = None  # why the last verification failed (no verdict), if it did


class TokenHealthMetrics:
    """The latest :class:`TokenHealth` of each credential, as two gauge families.

    A family with no credential verified yet is left out of the exposition altogether.
    """

    def __init__(self) -> None:
        self._states: dict[str, TokenHealth] = {}
        self._lock = threading.Lock()

    def update(self, health: TokenHealth) -> None:
        with self._lock:
            self._states[health.credential] = health

    def get(self, credential: str) -> TokenHealth | None:
        with self._lock:
            return self._states.get(credential)

    def families(self) -> list[tuple[c.Family, str]]:
        """The families with samples, each with its sample lines."""
        with self._lock:
            states = sorted(self._states.values(), key=lambda h: h.credential)
        expiry: list[Row] = []
        status: list[Row] = []
        for health in states:
            if health.expires_at is not None:
                expiry.append(((health.credential,), health.expires_at))
            for name in c.TOKEN_STATUSES:
                status.append(((health.credential, name), 1.0 if name == health.status else 0.0))
        return [
            (family, family_lines(family, rows))
            for family, rows in ((c.TOKEN_EXPIRY, expiry), (c.TOKEN_STATUS, status))
            if rows
        ]

    def text(self) -> str:
        return "".join(f.header + body for f, body in self.families())

    # prometheus-client's Collector (tests read samples through a registry)
    def collect(self) -> Iterator[Metric]:
        from prometheus_client.parser import text_string_to_metric_families

        return iter(text_string_to_metric_families(self.text()))

    def describe(self) -> Iterator[Metric]:
        return iter(())
