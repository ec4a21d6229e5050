"""The client's token verification and one-request probes, over real HTTP (simulator)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ACCOUNT_A, ACCOUNT_B, ns
from prometheus_client.parser import text_string_to_metric_families

from do_exporter.analytics import (
    AccountUsage,
    AnalyticsError,
    Window,
    as_usage,
    build_request,
    decode_answer,
)
from do_exporter.cloudflare import (
    ACCOUNT_OWNED,
    INVALID_TOKEN,
    USER_OWNED,
    CloudflareAPIError,
    CloudflareClient,
    GraphQLAnswer,
    parse_token_status,
)
from do_exporter.simulator import Scenario, Simulator
from tests.support import SAFETY_TIMEOUT

MakeSim = Callable[..., Simulator]


def parse(answer: GraphQLAnswer) -> AccountUsage | AnalyticsError:
    """The client's decoded GraphQL answer, judged as the poller judges it."""
    return as_usage(decode_answer(answer.document, status=answer.status))

MakeClient = Callable[..., CloudflareClient]

USER = "user-token-0000000000000000000000000000a"
OWNED = "owned-token-000000000000000000000000000b"
OFF = "off-token-00000000000000000000000000000c"
OLD = "old-token-00000000000000000000000000000d"
NO_READ = "noread-token-000000000000000000000000000e"
NOW = 1_750_000_000.0


def _scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "seed": 3,
            "tokens": [
                {"value": USER, "expires_on": "2031-01-01T00:00:00Z"},
                {"value": OWNED, "owner": "account", "accounts": [ACCOUNT_B]},
                {"value": OFF, "status": "disabled"},
                {"value": OLD, "expires_on": "2025-01-01T00:00:00Z"},
                {"value": NO_READ, "permissions": ["account_analytics_read"]},
            ],
            "accounts": [
                {"id": ACCOUNT_A, "namespaces": [ns(1, 25), ns(2, 0)]},
                {"id": ACCOUNT_B, "namespaces": []},
            ],
        }
    )


@pytest.fixture
def sim(make_sim: MakeSim) -> Simulator:
    return make_sim(_scenario(), start_time=NOW)


def _verify_requests(sim: Simulator) -> dict[str, int]:
    stats: dict[str, Any] = sim.stats()
    return dict(stats["requests"].get("verify", {}))


def test_user_token_status_and_expiry(sim: Simulator, make_client: MakeClient) -> None:
    """A user token: one request to /user/tokens/verify, active, expiry as Unix time."""
    status = make_client(sim.api_url, USER).verify_token([ACCOUNT_A])
    assert status.status == "active" and status.owner == USER_OWNED
    assert status.expires_at == 1924992000.0
    assert _verify_requests(sim) == {"200": 1}


def test_account_owned_token_falls_back_to_the_account_endpoint(
    sim: Simulator, make_client: MakeClient
) -> None:
    """The user endpoint answers 401/1000; the owning account's endpoint knows the token."""
    client = make_client(sim.api_url, OWNED)
    status = client.verify_token([ACCOUNT_A, ACCOUNT_B])
    assert (status.status, status.owner, status.account_id) == ("active", ACCOUNT_OWNED, ACCOUNT_B)
    assert status.expires_at is None
    assert _verify_requests(sim) == {"401": 2, "200": 1}
    sim.reset_stats()
    again = client.verify_token([ACCOUNT_A, ACCOUNT_B], owner=ACCOUNT_OWNED)
    assert again == status
    assert _verify_requests(sim) == {"401": 1, "200": 1}  # account endpoints first


@pytest.mark.parametrize(("token", "expected"), [(OFF, "disabled"), (OLD, "expired")])
def test_disabled_and_expired_tokens(
    sim: Simulator, make_client: MakeClient, token: str, expected: str
) -> None:
    """Verify answers 200 with the status; the client reports it as is."""
    assert make_client(sim.api_url, token).verify_token().status == expected


def test_unknown_token_is_invalid(sim: Simulator, make_client: MakeClient) -> None:
    """Neither endpoint knows a revoked token: status invalid, no exception."""
    sim.revoke_token(USER)
    assert make_client(sim.api_url, USER).verify_token([ACCOUNT_A]).status == INVALID_TOKEN


def test_a_failing_verify_endpoint_raises(sim: Simulator, make_client: MakeClient) -> None:
    """A 5xx after every retry is an error, not a verdict about the token."""
    sim.inject("status", endpoint="verify", status=503, count=None)
    with pytest.raises(CloudflareAPIError) as info:
        make_client(sim.api_url, USER).verify_token()
    assert info.value.status == 503


def test_parse_token_status_refuses_unknown_statuses_and_times() -> None:
    """An unknown status or an unreadable expiry is an invalid response, never "active"."""
    body = b'{"success":true,"errors":[],"messages":[],"result":{"status":"%s"%s}}'
    assert parse_token_status(200, body % (b"active", b"")).status == "active"
    for bad in (body % (b"weird", b""), body % (b"active", b',"expires_on":"soon"')):
        with pytest.raises(CloudflareAPIError) as info:
            parse_token_status(200, bad)
        assert info.value.kind == "invalid_response"


def test_probes_cost_one_request_each(sim: Simulator, make_client: MakeClient) -> None:
    """probe_namespaces reads per_page=1 (count and first namespace); probe_objects one page."""
    client = make_client(sim.api_url, USER)
    probe = client.probe_namespaces(ACCOUNT_A)
    assert probe.total == 2 and probe.first is not None
    page = client.probe_objects(ACCOUNT_A, probe.first.id)
    assert page.count == 10 and page.cursor
    assert client.probe_namespaces(ACCOUNT_B).first is None
    assert sim.stats()["requests_total"] == 3


def test_probe_without_workers_scripts_read(sim: Simulator, make_client: MakeClient) -> None:
    """A token without Workers Scripts Read gets Cloudflare's 403 / 10000."""
    with pytest.raises(CloudflareAPIError) as info:
        make_client(sim.api_url, NO_READ).probe_namespaces(ACCOUNT_A)
    assert (info.value.status, info.value.codes) == (403, (10000,))


def test_graphql_denied_is_an_answer(sim: Simulator, make_client: MakeClient) -> None:
    """Without Account Analytics Read GraphQL answers an error in a 200: permission_denied."""
    end = int(time.time()) // 60 * 60 - 300  # GraphQL reads the real clock
    window = Window(end - 60, end)
    body = build_request(ACCOUNT_A, window, page_size=1)
    denied = parse(make_client(sim.api_url, OFF.replace("off", "own")).graphql(ACCOUNT_A, body))
    assert isinstance(denied, AnalyticsError)  # unknown token: 401 (authn)
    sim_token_only_read = Scenario.from_dict(
        {
            "tokens": [{"value": USER, "permissions": ["workers_scripts_read"]}],
            "accounts": [{"id": ACCOUNT_A, "namespaces": [ns(1, 5)]}],
        }
    )
    with Simulator(sim_token_only_read, start_time=NOW) as other:
        answer = parse(make_client(other.api_url, USER).graphql(ACCOUNT_A, body))
    assert isinstance(answer, AnalyticsError) and answer.permission_denied
    assert answer.status == 200
    allowed = parse(make_client(sim.api_url, USER).graphql(ACCOUNT_A, body))
    assert not isinstance(allowed, AnalyticsError)


def test_once_verifies_the_token_first_so_its_output_has_the_token_families() -> None:
    """`--once` prints every family the daemon serves after one poll, the token health ones
    included: the token is verified before the poll, as the daemon does at start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "DO_"))}
    result = subprocess.run(
        [sys.executable, "-m", "do_exporter", "--once", "--demo"],
        capture_output=True, text=True, env=env, timeout=SAFETY_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(result.stdout)
        for s in family.samples
        if s.name == "cloudflare_durable_objects_exporter_token_status"
    }
    assert status["active"] == 1.0 and sum(status.values()) == 1.0
    assert "cloudflare_durable_objects_objects{" in result.stdout
