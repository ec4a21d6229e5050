"""Tokens over real HTTP: permissions per account, status and expiry, the verify endpoints,
token_can() for the GraphQL endpoint, and the both-different cursor shape."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from do_exporter.simulator import Scenario, ScenarioError, Simulator
from tests.support import SAFETY_TIMEOUT, FakeClock, simulators

ACC_A = "0123456789abcdef0123456789abcdef"
ACC_B = "fedcba9876543210fedcba9876543210"
ACC_GHOST = "99999999999999999999999999999999"
NS_A = "11111111111111111111111111111111"
NS_B = "44444444444444444444444444444444"
START_TIME = 1_900_000_000.0  # 2030-03-17T17:46:40Z
EXPIRES = "2030-03-17T18:00:00Z"  # 800 s after the start


TOKENS: list[dict[str, Any]] = [
    {"value": "full"},
    {"value": "analytics-only", "permissions": ["account_analytics_read"]},
    {"value": "writer", "permissions": ["workers_scripts_write"]},
    {
        "value": "mixed",
        "permissions": {ACC_A: ["workers_scripts_read"], "*": ["account_analytics_read"]},
    },
    {"value": "owned", "owner": "account", "accounts": [ACC_A], "expires_on": EXPIRES,
     "not_before": "2030-01-01T00:00:00Z"},
    {"value": "expiring", "expires_on": EXPIRES},
    {"value": "later", "not_before": "2030-03-17T18:00:00+00:00"},
    {"value": "off", "status": "disabled"},
    {"value": "old", "status": "expired"},
]  # fmt: skip


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "seed": 5,
        "tokens": TOKENS,
        "accounts": [
            {"id": ACC_A, "namespaces": [{"id": NS_A, "objects": 25}]},
            {"id": ACC_B, "namespaces": [{"id": NS_B, "objects": 3}]},
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def make_sim(clock: FakeClock) -> Iterator[Callable[..., Simulator]]:
    yield from simulators(clock, scenario_dict, START_TIME)


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(
    http: requests.Session, sim: Simulator, path: str, token: str, **params: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return http.get(sim.api_url + path, headers=headers, params=params, timeout=SAFETY_TIMEOUT)


def ns_path(account: str) -> str:
    return f"/accounts/{account}/workers/durable_objects/namespaces"


def answer(response: requests.Response) -> tuple[int, int | None]:
    """(HTTP status, first error code or None)."""
    body = response.json()
    errors = body.get("errors") or [{}]
    return response.status_code, errors[0].get("code")


# ---- permissions -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "account", "expected"),
    [
        ("full", ACC_A, (200, None)),
        ("analytics-only", ACC_A, (403, 10000)),
        ("writer", ACC_B, (200, None)),
        ("mixed", ACC_A, (200, None)),
        ("mixed", ACC_B, (403, 10000)),
        ("analytics-only", ACC_GHOST, (403, 7403)),
    ],
)
def test_workers_scripts_permission_per_account(
    sim: Simulator, http: requests.Session, token: str, account: str, expected: tuple[int, int]
) -> None:
    """Namespaces and objects need Workers Scripts Read (or Write) there, else 403/10000."""
    assert answer(get(http, sim, ns_path(account), token)) == expected
    namespace = NS_A if account == ACC_A else NS_B
    assert answer(get(http, sim, f"{ns_path(account)}/{namespace}/objects", token)) == expected


def test_token_can_reports_capabilities_for_graphql(sim: Simulator) -> None:
    """token_can(token, account, "analytics"|"workers_scripts") follows the same rules."""
    assert sim.token_can("full", ACC_A, "analytics") and sim.token_can("full", ACC_B, "objects")
    assert sim.token_can("analytics-only", ACC_B, "analytics")
    assert not sim.token_can("analytics-only", ACC_B, "workers_scripts")
    assert not sim.token_can("writer", ACC_A, "analytics")
    assert sim.token_can("mixed", ACC_B, "analytics")
    assert not sim.token_can("mixed", ACC_B, "workers_scripts")
    assert sim.token_can("owned", ACC_A, "analytics") and not sim.token_can(
        "owned", ACC_B, "analytics"
    )
    assert not sim.token_can("off", ACC_A, "analytics") and not sim.token_can(
        "old", ACC_A, "analytics"
    )
    assert not sim.token_can("later", ACC_A, "analytics")
    assert not sim.token_can("never-issued", ACC_A, "analytics")
    assert not sim.token_can("full", ACC_GHOST, "analytics")
    with pytest.raises(ValueError):
        sim.token_can("full", ACC_A, "dns")


def test_accounts_list_still_shows_accounts_without_workers_permission(
    sim: Simulator, http: requests.Session
) -> None:
    """GET /accounts lists what the token reaches, whatever its permission groups there."""
    body = get(http, sim, "/accounts", "analytics-only").json()
    assert [a["id"] for a in body["result"]] == [ACC_A, ACC_B]


# ---- status and expiry -------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["off", "old", "later"])
def test_disabled_expired_and_not_yet_valid_tokens_get_10000(
    sim: Simulator, http: requests.Session, token: str
) -> None:
    """Disabled, expired and before-not_before tokens: 403/10000 on every list endpoint."""
    for path in ("/accounts", ns_path(ACC_A), f"{ns_path(ACC_A)}/{NS_A}/objects"):
        assert answer(get(http, sim, path, token)) == (403, 10000)


def test_expires_on_passes_on_the_simulator_clock(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    """At expires_on the token turns expired: verify says so and the lists answer 403/10000."""
    assert sim.unix_time() == START_TIME
    assert get(http, sim, ns_path(ACC_A), "expiring").status_code == 200
    clock.advance(799)
    assert get(http, sim, "/user/tokens/verify", "expiring").json()["result"]["status"] == "active"
    clock.advance(1)
    verify = get(http, sim, "/user/tokens/verify", "expiring").json()
    assert verify["result"] == {"id": verify["result"]["id"], "status": "expired",
                                "expires_on": EXPIRES}  # fmt: skip
    assert verify["messages"] == []
    assert answer(get(http, sim, ns_path(ACC_A), "expiring")) == (403, 10000)
    assert sim.token_status("expiring") == "expired"


def test_not_before_passes_on_the_simulator_clock(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    """Before not_before the token reads nothing; from then on it does."""
    assert get(http, sim, ns_path(ACC_A), "later").status_code == 403
    clock.advance(800)
    assert get(http, sim, ns_path(ACC_A), "later").status_code == 200
    assert sim.token_can("later", ACC_A, "analytics")


def test_set_token_status_at_runtime(sim: Simulator, http: requests.Session) -> None:
    """set_token_status and POST /__simulator/tokens/status disable and re-enable a token."""
    sim.set_token_status("full", "disabled")
    assert answer(get(http, sim, ns_path(ACC_A), "full")) == (403, 10000)
    assert get(http, sim, "/user/tokens/verify", "full").json()["result"]["status"] == "disabled"
    ok = http.post(sim.url + "/__simulator/tokens/status",
                   json={"token": "full", "status": "active"}, timeout=SAFETY_TIMEOUT)  # fmt: skip
    assert ok.json() == {"ok": True}
    assert get(http, sim, ns_path(ACC_A), "full").status_code == 200
    bad = http.post(sim.url + "/__simulator/tokens/status",
                    json={"token": "full", "status": "sleepy"}, timeout=SAFETY_TIMEOUT)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["ok"] is False
    with pytest.raises(KeyError):
        sim.set_token_status("never-issued", "active")
    assert sim.token_status("never-issued") is None


# ---- verify endpoints --------------------------------------------------------------------------
def test_user_verify_answers_like_cloudflare(sim: Simulator, http: requests.Session) -> None:
    """An active user token: 200, {id, status}, and the "valid and active" message 10000."""
    body = get(http, sim, "/user/tokens/verify", "full").json()
    assert body["success"] is True and body["errors"] == []
    assert set(body["result"]) == {"id", "status"} and body["result"]["status"] == "active"
    assert re.fullmatch(r"[0-9a-f]{32}", body["result"]["id"])
    assert body["messages"] == [
        {"code": 10000, "message": "This API Token is valid and active", "type": None}
    ]
    assert "result_info" not in body


def test_account_verify_echoes_dates_and_refuses_other_tokens(
    sim: Simulator, http: requests.Session
) -> None:
    """Account-owned: 200 with not_before/expires_on on its account; 401/1000 elsewhere."""
    owned = get(http, sim, f"/accounts/{ACC_A}/tokens/verify", "owned").json()["result"]
    assert owned["status"] == "active"
    assert (owned["expires_on"], owned["not_before"]) == (EXPIRES, "2030-01-01T00:00:00Z")
    assert answer(get(http, sim, "/user/tokens/verify", "owned")) == (401, 1000)
    assert answer(get(http, sim, f"/accounts/{ACC_B}/tokens/verify", "owned")) == (401, 1000)
    assert answer(get(http, sim, f"/accounts/{ACC_A}/tokens/verify", "full")) == (401, 1000)
    assert answer(get(http, sim, "/user/tokens/verify", "never-issued")) == (401, 1000)
    bad_id = get(http, sim, "/accounts/xyz/tokens/verify", "owned")
    assert answer(bad_id) == (400, 7003)


def test_verify_checks_no_permissions(sim: Simulator, http: requests.Session) -> None:
    """A token without Workers Scripts Read still verifies active: verify checks no scopes."""
    body = get(http, sim, "/user/tokens/verify", "analytics-only").json()
    assert body["result"]["status"] == "active"


# ---- cursor_shape both-different -----------------------------------------------------------------
def test_both_different_cursor_shape(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """cursors.after is the real next cursor; cursor is stale (the page's own, or garbage on the
    first page) and differs on every page, including the last."""
    sim = make_sim(cursor_shape="both-different")
    path = f"{ns_path(ACC_A)}/{NS_A}/objects"
    ids: list[str] = []
    after, pages, sent = "", 0, []
    while True:
        response = get(http, sim, path, "full", limit=10, **({"cursor": after} if after else {}))
        info = response.json()["result_info"]
        ids += [o["id"] for o in response.json()["result"]]
        assert info["cursor"] and info["cursor"] != info["cursors"]["after"]
        assert info["cursor"] == (after or info["cursor"])
        sent.append(info["cursor"])
        pages += 1
        after = info["cursors"]["after"]
        if not after:
            break
    assert pages == 3 and len(set(ids)) == 25 == sim.expected(ACC_A, NS_A)[0]
    # Following the first page's `cursor` is refused; a later page's repeats that page.
    assert answer(get(http, sim, path, "full", cursor=sent[0])) == (400, 6008)
    again = get(http, sim, path, "full", limit=10, cursor=sent[1]).json()
    assert again["result_info"]["cursor"] == sent[1]


# ---- scenario validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "where"),
    [
        ({"value": "t", "permissions": ["dns_read"]}, "tokens[0].permissions"),
        ({"value": "t", "permissions": {ACC_GHOST: []}}, "tokens[0].permissions"),
        ({"value": "t", "permissions": "all"}, "tokens[0].permissions"),
        ({"value": "t", "expires_on": "tomorrow"}, "tokens[0].expires_on"),
        ({"value": "t", "expires_on": "2030-01-01T00:00:00"}, "tokens[0].expires_on"),
        ({"value": "t", "not_before": 5}, "tokens[0].not_before"),
    ],
)
def test_bad_token_keys_name_the_key(token: dict[str, Any], where: str) -> None:
    """Bad permissions or dates raise ScenarioError naming the key."""
    with pytest.raises(ScenarioError, match=re.escape(where)):
        Scenario.from_dict(scenario_dict(tokens=[token]))


def test_tokens_default_to_both_permissions_everywhere() -> None:
    """A token without permissions holds Workers Scripts Read and Account Analytics Read."""
    (token,) = Scenario.from_dict(scenario_dict(tokens=[{"value": "t"}])).tokens
    assert token.has_permission(ACC_B, "workers_scripts_read")
    assert token.has_permission(ACC_B, "account_analytics_read")
    assert token.expires_on is None and token.not_before is None


def test_sim_token_prefers_a_token_that_reads_everything(
    make_sim: Callable[..., Simulator],
) -> None:
    """sim.token skips inactive, account-owned and permission-poor tokens when it can."""
    sim = make_sim(tokens=[TOKENS[1], TOKENS[4], TOKENS[7], TOKENS[2]])
    assert sim.token == "writer"
