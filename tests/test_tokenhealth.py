"""Token health: the state rule, the log sentence and the metric families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from do_exporter.cloudflare import CloudflareAPIError, TokenStatus
from do_exporter.selfmetrics import ExporterMetrics
from do_exporter.tokenhealth import (
    EXPIRY_METRIC,
    STATUS_METRIC,
    STATUSES,
    TokenHealth,
    TokenHealthMetrics,
    next_health,
    problem,
)

NOW = 1_750_000_000.0
DAY = 86_400.0


def _error() -> CloudflareAPIError:
    return CloudflareAPIError("connection failed", endpoint="verify", kind="transport")


def test_a_verdict_replaces_the_state() -> None:
    """A verify answer sets status, owner and expiry, and when it was checked."""
    health = next_health(None, "a", TokenStatus("active", "user", NOW + DAY), NOW)
    assert health == TokenHealth("a", "active", "user", NOW + DAY, None, NOW)


def test_a_failed_verification_keeps_the_last_verdict() -> None:
    """The API not answering is no verdict: the last one stays; before any, unknown."""
    assert next_health(None, "a", _error(), NOW).status == "unknown"
    before = next_health(None, "a", TokenStatus("expired", "user"), NOW)
    after = next_health(before, "a", _error(), NOW + 3600)
    assert (after.status, after.checked_at) == ("expired", NOW)
    assert after.error is not None and "connection failed" in after.error


def test_problem_sentences() -> None:
    """Invalid, disabled, expired, expiring within 14 days and unverified are problems."""

    def health(status: str, expires: float | None = None) -> TokenHealth:
        return TokenHealth("a", status, "user", expires, None, NOW)

    assert problem(health("active"), NOW) is None
    assert problem(health("active", NOW + 15 * DAY), NOW) is None
    soon = problem(health("active", NOW + 3 * DAY), NOW)
    assert soon is not None and "in 3.0 days" in soon
    for status in ("disabled", "expired"):
        text = problem(health(status), NOW)
        assert text is not None and status in text
    invalid = problem(health("invalid"), NOW)
    assert invalid is not None and "not valid" in invalid
    unverified = problem(next_health(None, "a", _error(), NOW), NOW)
    assert unverified is not None and "could not verify" in unverified


def _families(
    collector: TokenHealthMetrics | ExporterMetrics,
) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_metrics_absent_until_verified_then_a_state_set() -> None:
    """No series before a verification; then status is 1 for one status, 0 for the rest,
    and expiry exists only for a token that expires."""
    metrics = TokenHealthMetrics()
    assert _families(metrics) == {}
    metrics.update(TokenHealth("a", "active", "user", NOW + DAY, None, NOW))
    metrics.update(TokenHealth("b", "disabled", "account", None, None, NOW))
    fams = _families(metrics)
    assert fams[EXPIRY_METRIC] == [({"credential": "a"}, NOW + DAY)]
    status = {(lab["credential"], lab["status"]): v for lab, v in fams[STATUS_METRIC]}
    assert len(status) == 2 * len(STATUSES)
    assert {k for k, v in status.items() if v == 1.0} == {("a", "active"), ("b", "disabled")}


def test_exporter_metrics_carry_token_health() -> None:
    """The exporter's own metrics (every scrape) include the token families."""
    own = ExporterMetrics()
    assert STATUS_METRIC not in _families(own)
    own.token_health.update(TokenHealth("default", "expired", "user", NOW - DAY, None, NOW))
    fams = _families(own)
    assert fams[EXPIRY_METRIC] == [({"credential": "default"}, NOW - DAY)]
    assert ({"credential": "default", "status": "expired"}, 1.0) in fams[STATUS_METRIC]
