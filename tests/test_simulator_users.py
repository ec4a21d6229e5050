"""The request budget per user over real HTTP: shared by tokens, spent by other clients."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from do_exporter.simulator import Scenario, ScenarioError, Simulator
from do_exporter.simulator.budget import UserBudget
from tests.support import SAFETY_TIMEOUT, FakeClock, simulators

ACC = "0123456789abcdef0123456789abcdef"
NS = "11111111111111111111111111111111"
NS_PAGED = "22222222222222222222222222222222"  # 50 pages of the smallest size, 10
START_TIME = 1_900_000_000.0  # 2030-03-17T17:46:40Z, the simulator's Unix time at start


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    """Two tokens of user "ops", one lone token, a small and a 500,000-object namespace."""
    data: dict[str, Any] = {
        "seed": 3,
        "tokens": [{"value": "ops-exporter"}, {"value": "ops-terraform"}, {"value": "lone"}],
        "users": [{"name": "ops", "tokens": ["ops-exporter", "ops-terraform"]}],
        "accounts": [
            {
                "id": ACC,
                "namespaces": [{"id": NS, "objects": 30}, {"id": NS_PAGED, "objects": 500}],
            }
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(500.0)


@pytest.fixture
def make_sim(clock: FakeClock) -> Iterator[Callable[..., Simulator]]:
    yield from simulators(clock, scenario_dict, START_TIME)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(
    http: requests.Session, sim: Simulator, token: str, path: str = "", **params: Any
) -> requests.Response:
    url = f"{sim.api_url}/accounts/{ACC}/workers/durable_objects/namespaces{path}"
    return http.get(
        url, headers={"Authorization": f"Bearer {token}"}, params=params, timeout=SAFETY_TIMEOUT
    )


def r_and_t(response: requests.Response) -> tuple[int, int]:
    match = re.fullmatch(r'"default";r=(\d+);t=(\d+)', response.headers["Ratelimit"])
    assert match, response.headers["Ratelimit"]
    return int(match.group(1)), int(match.group(2))


def test_tokens_of_one_user_share_its_budget(
    make_sim: Callable[..., Simulator], http: requests.Session, clock: FakeClock
) -> None:
    """Two tokens of a user spend one budget of 4; a 429 blocks both; a lone token is apart."""
    sim = make_sim(users=[{"name": "ops", "tokens": ["ops-exporter", "ops-terraform"],
                           "rate_limit": {"requests": 4, "window_seconds": 60}}])  # fmt: skip
    seen = [r_and_t(get(http, sim, t)) for t in ("ops-exporter", "ops-terraform") * 2]
    assert [r for r, _ in seen] == [3, 2, 1, 0]
    clock.advance(10)
    for token in ("ops-exporter", "ops-terraform"):
        blocked = get(http, sim, token)
        assert blocked.status_code == 429
        assert blocked.json()["errors"][0]["code"] == 971
        assert blocked.headers["Retry-After"] == "50"
        assert blocked.headers["Ratelimit"] == '"default";r=0;t=50'
        assert blocked.headers["Ratelimit-Policy"] == '"default";q=4;w=60'
    lone = get(http, sim, "lone")
    assert lone.status_code == 200 and lone.headers["Ratelimit-Policy"] == '"default";q=1200;w=300'
    clock.advance(50)
    assert r_and_t(get(http, sim, "ops-terraform")) == (3, 60)
    ops = sim.stats()["users"]["ops"]
    assert (ops["http_requests"], ops["http_rate_limited"]) == (5, 2)
    assert sim.stats()["rate_limited"] == 2


def test_every_answer_with_a_known_token_carries_the_headers(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """Errors answered after auth (404, 403) carry Ratelimit too, as every REST answer does."""
    sim = make_sim()
    missing = get(http, sim, "ops-exporter", "/" + "5" * 32 + "/objects")
    assert missing.status_code == 404 and r_and_t(missing) == (1199, 300)
    assert missing.headers["Ratelimit-Policy"] == '"default";q=1200;w=300'


@pytest.mark.parametrize("style", ["x-ratelimit", "both", "none"])
def test_header_styles(
    make_sim: Callable[..., Simulator], http: requests.Session, clock: FakeClock, style: str
) -> None:
    """rate_limit.headers picks Ratelimit, the older X-RateLimit-* (Reset an RFC 1123 date on
    a 429), both, or none."""
    sim = make_sim(rate_limit={"requests": 1, "window_seconds": 60, "headers": style})
    ok = get(http, sim, "lone")
    clock.advance(15)
    blocked = get(http, sim, "lone")
    assert (ok.status_code, blocked.status_code) == (200, 429)
    assert blocked.headers["Retry-After"] == "45"
    assert ("Ratelimit" in ok.headers) == (style == "both")
    if style == "none":
        assert not any(h.lower().startswith(("ratelimit", "x-ratelimit")) for h in ok.headers)
        return
    assert ok.headers["X-RateLimit-Limit"] == "1" and ok.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" not in ok.headers
    reset = email.utils.parsedate_to_datetime(blocked.headers["X-RateLimit-Reset"])
    assert reset.timestamp() == START_TIME + 60


def test_other_clients_spend_the_budget_on_the_simulator_clock(
    make_sim: Callable[..., Simulator], http: requests.Session, clock: FakeClock
) -> None:
    """60 requests a minute from other clients: after 30 s, 30 are spent, and the header says so."""
    sim = make_sim(users=[{"name": "ops", "tokens": ["ops-exporter"],
                           "rate_limit": {"requests": 100, "window_seconds": 300},
                           "other_clients": {"requests_per_minute": 60}}])  # fmt: skip
    clock.advance(30)
    remaining, reset = r_and_t(get(http, sim, "ops-exporter"))
    # The others' first request opened the window at 1 s; theirs 30 plus this one are spent.
    assert (remaining, reset) == (69, 271)
    ops = sim.stats()["users"]["ops"]
    assert ops["other_clients_requests"] == 30 and ops["other_clients_rate_limited"] == 0
    assert ops["used"] == 31 and ops["remaining"] == 69 and ops["resets_in"] == 271


def test_other_clients_starve_when_the_exporter_spends_everything(
    make_sim: Callable[..., Simulator], http: requests.Session, clock: FakeClock
) -> None:
    """An exporter that takes the whole window leaves the other clients 429s until it resets."""
    sim = make_sim(users=[{"name": "ops", "tokens": ["ops-exporter"],
                           "rate_limit": {"requests": 10, "window_seconds": 60},
                           "other_clients": {"requests_per_minute": 6}}])  # fmt: skip
    for _ in range(10):
        assert get(http, sim, "ops-exporter").status_code == 200
    assert get(http, sim, "ops-exporter").status_code == 429
    clock.advance(59)  # others at 10, 20, ..., 50 s find the window spent
    ops = sim.stats()["users"]["ops"]
    assert (ops["other_clients_requests"], ops["other_clients_rate_limited"]) == (0, 5)
    assert (ops["http_requests"], ops["http_rate_limited"]) == (10, 1)
    clock.advance(5)  # the window ended at 60 s; the others' request at 60 s opened a new one
    ops = sim.stats()["users"]["ops"]
    assert (ops["other_clients_requests"], ops["other_clients_rate_limited"]) == (1, 5)
    assert ops["used"] == 1 and ops["resets_in"] == 56


def test_a_paced_walk_of_fifty_pages_starves_nobody(
    make_sim: Callable[..., Simulator], http: requests.Session, clock: FakeClock
) -> None:
    """The lead's check: 50 pages against a budget of 20 a minute, 6 of them taken by a steady
    trickle of other clients. Pacing by Ratelimit (wait t when r is at the reserve) counts
    every object, and stats() shows no 429 for anyone. (A page's size is no matter to the
    budget: the pages hold 10 objects.)"""
    sim = make_sim(users=[{"name": "ops", "tokens": ["ops-exporter"],
                           "rate_limit": {"requests": 20, "window_seconds": 60},
                           "other_clients": {"requests_per_minute": 6}}])  # fmt: skip
    reserve = 6  # what the others need in one window
    cursor, count, pages = "", 0, 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        response = get(http, sim, "ops-exporter", f"/{NS_PAGED}/objects", **params)
        assert response.status_code == 200, response.text
        pages += 1
        body = response.json()
        count += len(body["result"])
        cursor = body["result_info"]["cursors"]["after"]
        if not cursor:
            break
        remaining, reset = r_and_t(response)
        clock.advance(reset if remaining <= reserve else 0.5)
    assert (count, pages) == (500, 50)
    ops = sim.stats()["users"]["ops"]
    assert ops["http_rate_limited"] == 0 and ops["other_clients_rate_limited"] == 0
    assert ops["http_requests"] == 50 and ops["other_clients_requests"] > 0
    assert sim.stats()["rate_limited"] == 0


def test_reset_stats_keeps_the_window(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """reset_stats zeroes the user counters but not what the open window has used."""
    sim = make_sim()
    get(http, sim, "ops-exporter")
    sim.reset_stats()
    ops = sim.stats()["users"]["ops"]
    assert ops["http_requests"] == 0 and ops["used"] == 1
    lone = next(u for name, u in sim.stats()["users"].items() if name.startswith("token:"))
    assert lone["used"] == 0 and lone["resets_in"] is None


def test_budget_handles_a_clock_moved_by_days_in_one_step() -> None:
    """Other clients' requests are worked out per window, so a day at 1,000/min is cheap."""
    budget = UserBudget("u", 1200, 300.0, start=0.0, other_per_minute=1000)
    snapshot = budget.snapshot(86_400.0)
    assert snapshot["other_clients_requests"] == 288 * 1200
    sent = snapshot["other_clients_requests"] + snapshot["other_clients_rate_limited"]
    assert sent == 1_440_000
    assert not budget.charge(86_400.0).allowed


@pytest.mark.parametrize(
    ("users", "where"),
    [
        ([{"tokens": ["nobody"]}], "users[0].tokens"),
        ([{"tokens": ["lone"]}, {"tokens": ["lone"]}], "users[1].tokens"),
        ([{"name": "a"}, {"name": "a"}], "users[1].name"),
        ([{"other_clients": {"requests_per_minute": -1}}], "requests_per_minute"),
        ([{"other_clients": {"per_hour": 1}}], "users[0].other_clients"),
        ([{"rate_limit": {"headers": "none"}}], "users[0].rate_limit"),
        ([{"colour": "red"}], "users[0]"),
    ],
)
def test_bad_users_name_the_key(users: list[dict[str, Any]], where: str) -> None:
    """A bad users entry raises ScenarioError naming it."""
    with pytest.raises(ScenarioError, match=re.escape(where)):
        Scenario.from_dict(scenario_dict(users=users))


def test_users_inherit_the_scenario_budget() -> None:
    """A user without rate_limit gets the scenario's; other clients default to none."""
    scenario = Scenario.from_dict(
        scenario_dict(rate_limit={"requests": 50, "window_seconds": 10}, users=[{"name": "x"}])
    )
    (user,) = scenario.users
    assert (user.rate_limit.requests, user.rate_limit.window_seconds) == (50, 10.0)
    assert user.other_clients_per_minute == 0 and user.tokens == ()
