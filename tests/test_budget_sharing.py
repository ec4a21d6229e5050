"""The user's budget is shared: the exporter leaves --api-reserve to other tools, and several
credentials each poll their own accounts within their own budget (real HTTP, simulator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from do_exporter.app import Exporter
from do_exporter.config import Config, Credential, Secret
from do_exporter.model import Snapshot
from do_exporter.poller import Poller
from do_exporter.ratelimit import RateLimiter
from do_exporter.simulator import Scenario, Simulator
from tests.conftest import ACCOUNT_A, ACCOUNT_B, TOKEN, ns

ACCOUNT_C = "c" * 32
OTHER_TOKEN = "other-user-token-0123456789abcdef01234567"


def shared_user_scenario(objects: int = 400_000, **user: Any) -> Scenario:
    """One namespace of 400,000 objects (40 pages); the user's budget is 20 a second, and
    the user's other tools spend 4 of it in every window, evenly."""
    return Scenario.from_dict(
        {
            "seed": 5,
            "tokens": [{"value": TOKEN, "accounts": "*"}],
            "users": [
                {
                    "name": "ops",
                    "tokens": [TOKEN],
                    "rate_limit": {"requests": 20, "window_seconds": 1},
                    "other_clients": {"requests_per_minute": 240},
                    **user,
                }
            ],
            "accounts": [{"id": ACCOUNT_A, "namespaces": [ns(1, objects)]}],
        }
    )


def walk_sharing_the_budget(
    make_sim: Callable[..., Simulator],
    make_client: Callable[..., Any],
    reserve: int,
    scenario: Scenario | None = None,
) -> tuple[Snapshot, dict[str, Any]]:
    sim = make_sim(scenario or shared_user_scenario())
    limiter = RateLimiter(100_000, reserve=reserve)
    poller = Poller(make_client(sim.api_url, limiter=limiter), account_ids=(ACCOUNT_A,))
    snap = poller.poll(Snapshot())
    user: dict[str, Any] = sim.stats()["users"]["ops"]
    return snap, user | {"held": limiter.reserve_held_seconds()}


def test_the_reserve_leaves_the_other_tools_their_share(
    make_sim: Callable[..., Simulator], make_client: Callable[..., Any]
) -> None:
    """A walk bigger than the user's window, next to other tools: no one gets a 429."""
    snap, user = walk_sharing_the_budget(make_sim, make_client, reserve=6)
    account = snap.account(ACCOUNT_A)
    assert account is not None and account.last_poll_success
    assert account.counts[f"{1:032x}"].objects == 400_000  # the count completed
    assert user["http_rate_limited"] == 0  # the exporter never ran into the block
    assert user["other_clients_rate_limited"] == 0  # and never starved the other tools
    assert user["other_clients_requests"] > 0 and user["held"] > 0


def test_without_a_reserve_the_other_tools_starve(
    make_sim: Callable[..., Simulator], make_client: Callable[..., Any]
) -> None:
    """A walk spending down to 0: the other tools (or the exporter) meet 429s.

    The user's budget is 6 a second here, 4 of them the other tools': more than 2 requests a
    second trips it, which the walk does even on a loaded machine (at 20 a second, a walk
    starved of CPU may never spend the budget, and nobody would starve).
    """
    scenario = shared_user_scenario(100_000, rate_limit={"requests": 6, "window_seconds": 1})
    _, user = walk_sharing_the_budget(make_sim, make_client, reserve=0, scenario=scenario)
    assert user["other_clients_rate_limited"] + user["http_rate_limited"] > 0


def two_users_scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "seed": 6,
            "tokens": [
                {"value": TOKEN, "accounts": [ACCOUNT_A, ACCOUNT_B]},
                {"value": OTHER_TOKEN, "accounts": [ACCOUNT_B, ACCOUNT_C]},
            ],
            "users": [
                {"name": "one", "tokens": [TOKEN]},
                {"name": "two", "tokens": [OTHER_TOKEN]},
            ],
            "accounts": [
                {"id": ACCOUNT_A, "namespaces": [ns(1, 10)]},
                {"id": ACCOUNT_B, "namespaces": [ns(2, 20)]},
                {"id": ACCOUNT_C, "namespaces": [ns(3, 30)]},
            ],
        }
    )


def test_several_credentials_poll_their_accounts_once_each(
    make_sim: Callable[..., Simulator],
) -> None:
    """Two tokens of two users, both discovering: every account once, each in its budget."""
    sim = make_sim(two_users_scenario())
    config = Config(listen_host="127.0.0.1", listen_port=0, interval=60)
    exporter = Exporter(
        config,
        [
            Credential("one", token=Secret(TOKEN), api_rate_limit=500, api_url=sim.api_url),
            Credential("two", token=Secret(OTHER_TOKEN), api_reserve=0, api_url=sim.api_url),
        ],
    )
    try:
        snap = exporter.poll_once()
    finally:
        exporter.session.close()
    assert snap.complete
    owners = {a.account_id: a.credential for a in snap.accounts}
    # B is reached by both: whichever discovery answered first polls it, and only it.
    assert owners[ACCOUNT_A] == "one" and owners[ACCOUNT_C] == "two"
    assert owners[ACCOUNT_B] in ("one", "two")
    for account_id, objects in ((ACCOUNT_A, 10), (ACCOUNT_B, 20), (ACCOUNT_C, 30)):
        account = snap.account(account_id)
        assert account is not None and sum(c.objects for c in account.counts.values()) == objects
    users = sim.stats()["users"]
    # Each: GET /accounts, then a list and a walk per account it polls; B only once.
    b_by_one = owners[ACCOUNT_B] == "one"
    assert users["one"]["http_requests"] == 1 + 2 * (2 if b_by_one else 1)
    assert users["two"]["http_requests"] == 1 + 2 * (1 if b_by_one else 2)
    assert sim.stats()["requests"]["namespaces"]["200"] == 3
    # The next poll keeps each account with the credential that polled it.
    again = Exporter(config, exporter.targets)
    try:
        again.store.publish(snap)
        assert {a.account_id: a.credential for a in again.poll_once().accounts} == owners
    finally:
        again.session.close()
    assert exporter.limiters["one"].requests == 500
    assert exporter.limiters["two"].reserve == 0
    text = exporter.exposition().decode()
    assert 'api_reserve_wait_seconds_total{credential="one"} 0.0' in text
    assert 'api_reserve_wait_seconds_total{credential="two"} 0.0' in text
    assert TOKEN not in text and OTHER_TOKEN not in text
