"""Token health: the state rule, the log sentence and the metric families."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from do_exporter.app import Exporter
from do_exporter.cloudflare import CloudflareAPIError, TokenStatus
from do_exporter.config import Config, Credential, Secret
from do_exporter.metrics.contract import TOKEN_EXPIRY, TOKEN_STATUS
from do_exporter.metrics.selfmetrics import ExporterMetrics
from do_exporter.metrics.tokens import TokenHealthMetrics
from do_exporter.simulator import Simulator
from do_exporter.tokenhealth import (
    STATUSES,
    TokenHealth,
    next_health,
    problem,
)
from tests.conftest import ACCOUNT_A, ACCOUNT_B, TOKEN, ns, scenario
from tests.test_app import Running, run_exporter, wait_for

EXPIRY_METRIC = TOKEN_EXPIRY.name
STATUS_METRIC = TOKEN_STATUS.name

__all__ = ["run_exporter"]  # a fixture, used by name
MakeSim = Callable[..., Simulator]

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


Families = dict[str, list[tuple[dict[str, str], float]]]


def _families(collector: TokenHealthMetrics | ExporterMetrics) -> Families:
    registry = CollectorRegistry()
    registry.register(collector)
    return _families_from(generate_latest(registry).decode())


def _families_from(text: str) -> Families:
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


# ---- the daemon ------------------------------------------------------------------------


def _exporter(sim: Simulator, token: str = TOKEN) -> Exporter:
    config = Config(listen_host="127.0.0.1", listen_port=0, interval=10.0, api_timeout=5.0)
    return Exporter(config, Credential(
        "default", (ACCOUNT_A, ACCOUNT_B), token=Secret(token), api_url=sim.api_url
    ))


def test_start_up_verification_logs_one_line_per_problem(make_sim: MakeSim) -> None:
    """A token without Workers Scripts Read on one account: one error line for that
    account, the token itself active in the metrics, nothing raised."""
    sim = make_sim(
        scenario(
            {ACCOUNT_A: [ns(1, 5)], ACCOUNT_B: [ns(2, 5)]},
            tokens=[
                {
                    "value": TOKEN,
                    "expires_on": "2031-01-01T00:00:00Z",
                    "permissions": {ACCOUNT_A: ["workers_scripts_read"], "*": []},
                }
            ],
        )
    )
    exporter = _exporter(sim)
    with capture_logs() as logs:
        states = exporter.verify_tokens(capabilities=True)
    assert [(h.credential, h.status, h.expires_at) for h in states] == [
        ("default", "active", 1924992000.0)
    ]
    problems = [e for e in logs if e["log_level"] == "error"]
    assert len(problems) == 1 and problems[0]["account_id"] == ACCOUNT_B
    assert "Workers Scripts: Read" in problems[0]["event"]
    fams = _families(exporter.metrics)
    assert ({"credential": "default", "status": "active"}, 1.0) in fams[STATUS_METRIC]
    assert fams[EXPIRY_METRIC] == [({"credential": "default"}, 1924992000.0)]
    assert TOKEN not in repr(logs)


@pytest.mark.parametrize("status", ["disabled", "expired"])
def test_disabled_or_expired_token_is_one_error_and_a_metric(
    make_sim: MakeSim, status: str
) -> None:
    """Not active: one error line naming the status; token_status says so; no probing."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 5)], ACCOUNT_B: []}))
    sim.set_token_status(TOKEN, status)
    exporter = _exporter(sim)
    with capture_logs() as logs:
        exporter.verify_tokens(capabilities=True)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and status in errors[0]["event"]
    assert ({"credential": "default", "status": status}, 1.0) in _families(exporter.metrics)[
        STATUS_METRIC
    ]
    assert "namespaces" not in sim.stats()["requests"]


def test_daemon_verifies_at_start_and_keeps_serving(
    make_sim: MakeSim, run_exporter: Callable[..., Running]
) -> None:
    """The running daemon exports the token's status and expiry soon after start, and an
    unreachable verify endpoint does not stop it from polling."""
    sim = make_sim(
        scenario(
            {ACCOUNT_A: [ns(1, 5)]},
            tokens=[{"value": TOKEN, "expires_on": "2031-01-01T00:00:00Z"}],
        )
    )
    running = run_exporter(sim)
    wait_for(lambda: STATUS_METRIC in running.get("/metrics").text)
    fams = _families_from(running.get("/metrics").text)
    assert ({"credential": "default", "status": "active"}, 1.0) in fams[STATUS_METRIC]
    assert fams[EXPIRY_METRIC] == [({"credential": "default"}, 1924992000.0)]


def test_daemon_serves_when_verify_fails(
    make_sim: MakeSim, run_exporter: Callable[..., Running]
) -> None:
    """Verify answering 503: status unknown, one warning, and the poll still succeeds."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 5)]}))
    sim.inject("status", endpoint="verify", status=503, count=None)
    running = run_exporter(sim)
    wait_for(lambda: running.get("/readyz").status_code == 200)
    wait_for(lambda: STATUS_METRIC in running.get("/metrics").text)
    fams = _families_from(running.get("/metrics").text)
    assert ({"credential": "default", "status": "unknown"}, 1.0) in fams[STATUS_METRIC]
    assert EXPIRY_METRIC not in fams
