"""Token health: what the verify endpoints say about each credential's token, as state and
log lines (the metric families are :mod:`do_exporter.metrics.tokens`).

The decisions are pure (:func:`next_health`, :func:`problem`); :func:`verify_credential` is
the one function that calls the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from .cloudflare import (
    INVALID_TOKEN,
    TOKEN_STATUSES,
    CloudflareAPIError,
    CloudflareClient,
    TokenStatus,
)
from .metrics.tokens import UNKNOWN as UNKNOWN
from .metrics.tokens import TokenHealth as TokenHealth

STATUSES = (*TOKEN_STATUSES, INVALID_TOKEN, UNKNOWN)
EXPIRY_WARNING = 14 * 86_400.0  # the DurableObjectsExporterTokenExpiringSoon threshold
VERIFY_EVERY_HOURS = 1


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
