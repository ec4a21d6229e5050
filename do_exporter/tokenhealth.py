"""Token health: what the verify endpoints say about each credential's token, as state,
log lines and metrics.

The decisions are pure (:func:`next_health`, :func:`problem`); :func:`verify_credential` is
the one function that calls the API; :class:`TokenHealthMetrics` turns the latest states
into metric families on every scrape (a handful of series).

Example of what :class:`TokenHealthMetrics` produces (one credential)::

    # HELP cloudflare_durable_objects_exporter_token_expiry_timestamp_seconds When the credential's API token expires (Unix time; absent when it never expires).
    # TYPE cloudflare_durable_objects_exporter_token_expiry_timestamp_seconds gauge
    cloudflare_durable_objects_exporter_token_expiry_timestamp_seconds{credential="default"} 1.924992e+09
    # HELP cloudflare_durable_objects_exporter_token_status The credential's API token status as last verified: 1 for the current status, 0 for the others.
    # TYPE cloudflare_durable_objects_exporter_token_status gauge
    cloudflare_durable_objects_exporter_token_status{credential="default",status="active"} 1.0
    cloudflare_durable_objects_exporter_token_status{credential="default",status="disabled"} 0.0
    cloudflare_durable_objects_exporter_token_status{credential="default",status="expired"} 0.0
    cloudflare_durable_objects_exporter_token_status{credential="default",status="invalid"} 0.0
    cloudflare_durable_objects_exporter_token_status{credential="default",status="unknown"} 0.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .cloudflare import (
    INVALID_TOKEN,
    TOKEN_STATUSES,
    CloudflareAPIError,
    CloudflareClient,
    TokenStatus,
)
from .collector import SELF

# "unknown": never verified successfully (the API did not answer). A later failure to verify
# keeps the last verdict: one failed request must not flip an alert.
UNKNOWN = "unknown"
STATUSES = (*TOKEN_STATUSES, INVALID_TOKEN, UNKNOWN)
EXPIRY_WARNING = 14 * 86_400.0  # the DurableObjectsExporterTokenExpiringSoon threshold
VERIFY_EVERY_HOURS = 1

EXPIRY_METRIC = f"{SELF}_token_expiry_timestamp_seconds"
STATUS_METRIC = f"{SELF}_token_status"


@dataclass(frozen=True, slots=True)
class TokenHealth:
    """A credential's token as last verified: ``status`` is one of :data:`STATUSES`.

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


def next_health(
    previous: TokenHealth | None,
    credential: str,
    outcome: TokenStatus | CloudflareAPIError,
    now: float,
) -> TokenHealth:
    """The state after one verification (pure).

    ``outcome`` is the client's :class:`~.cloudflare.TokenStatus`, or the
    :class:`~.cloudflare.CloudflareAPIError` that verification raised: then the previous
    verdict stays (with the error noted), or ``unknown`` when there is none.
    """
    if isinstance(outcome, CloudflareAPIError):
        base = previous if previous is not None else TokenHealth(credential)
        return TokenHealth(
            credential,
            base.status,
            base.owner,
            base.expires_at,
            base.not_before,
            base.checked_at,
            error=str(outcome),
        )
    return TokenHealth(
        credential,
        outcome.status if outcome.status in STATUSES else UNKNOWN,
        outcome.owner,
        outcome.expires_at,
        outcome.not_before,
        checked_at=now,
    )


def when(t: float) -> str:
    """A Unix time as ``2031-01-01T00:00:00Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def problem(health: TokenHealth, now: float, *, warn_before: float = EXPIRY_WARNING) -> str | None:
    """One sentence for the log when the token needs attention, else None (pure)."""
    if health.error is not None and health.checked_at is None:
        return f"could not verify the API token: {health.error}"
    if health.status == INVALID_TOKEN:
        return (
            "the API token is not valid: Cloudflare does not know it (revoked or mistyped; an "
            "account-owned token is only found with its account id configured)"
        )
    if health.status in ("disabled", "expired"):
        return f"the API token is {health.status}: create or re-enable one and update the secret"
    if health.status == "active" and health.expires_at is not None:
        left = health.expires_at - now
        if left <= 0:
            return f"the API token expired at {when(health.expires_at)}"
        if left < warn_before:
            return (
                f"the API token expires at {when(health.expires_at)}, in "
                f"{left / 86_400:.1f} days: roll it before then"
            )
    if health.not_before is not None and health.not_before > now:
        return f"the API token is not valid before {when(health.not_before)}"
    return None


def verify_credential(
    client: CloudflareClient,
    credential: str,
    account_ids: Sequence[str],
    previous: TokenHealth | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> TokenHealth:
    """Verify one credential's token (the API's verify endpoints) and return its new state.

    The owner learnt before goes first, so an account-owned token does not cost a 401 on
    the user endpoint every hour.
    """
    owner = previous.owner if previous is not None else None
    try:
        outcome: TokenStatus | CloudflareAPIError = client.verify_token(account_ids, owner=owner)
    except CloudflareAPIError as exc:
        outcome = exc
    return next_health(previous, credential, outcome, clock())


class TokenHealthMetrics(Collector):
    """The latest :class:`TokenHealth` of each credential, as two gauge families.

    A family with no credential verified yet is left out of the scrape altogether.
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

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            states = sorted(self._states.values(), key=lambda h: h.credential)
        expiry, status = _families()
        for health in states:
            if health.expires_at is not None:
                expiry.add_metric([health.credential], health.expires_at)
            for name in STATUSES:
                status.add_metric([health.credential, name], 1.0 if name == health.status else 0.0)
        for family in (expiry, status):
            if family.samples:
                yield family

    def describe(self) -> Iterator[Metric]:
        return iter(_families())


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            EXPIRY_METRIC,
            "When the credential's API token expires (Unix time; absent when it never expires).",
            labels=["credential"],
        ),
        GaugeMetricFamily(
            STATUS_METRIC,
            "The credential's API token status as last verified: 1 for the current status, "
            "0 for the others.",
            labels=["credential", "status"],
        ),
    )
