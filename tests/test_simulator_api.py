"""The simulator's endpoints over real HTTP: envelopes, pagination, auth, budget, stats, admin."""

from __future__ import annotations

import re
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from do_exporter.simulator import Scenario, ScenarioError, Simulator, demo_scenario
from tests.support import SAFETY_TIMEOUT, FakeClock

ACC_A = "0123456789abcdef0123456789abcdef"
ACC_B = "fedcba9876543210fedcba9876543210"
ACC_GHOST = "99999999999999999999999999999999"
NS_BIG = "11111111111111111111111111111111"
NS_SMALL = "22222222222222222222222222222222"
NS_EMPTY = "33333333333333333333333333333333"
NS_B = "44444444444444444444444444444444"
TOKEN = "token-all"
TOKEN_A = "token-only-a"
TOKEN_ACCOUNT = "token-owned-by-a"
TOKEN_DISABLED = "token-disabled"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    """A small scenario: two accounts, a 2,345-object namespace, four kinds of token."""
    data: dict[str, Any] = {
        "seed": 7,
        "tokens": [
            {"value": TOKEN},
            {"value": TOKEN_A, "accounts": [ACC_A]},
            {"value": TOKEN_ACCOUNT, "accounts": [ACC_A], "owner": "account"},
            {"value": TOKEN_DISABLED, "status": "disabled"},
        ],
        "accounts": [
            {
                "id": ACC_A,
                "name": "Alpha",
                "namespaces": [
                    {
                        "id": NS_BIG,
                        "name": "app_Big",
                        "class": "Big",
                        "script": "app",
                        "use_sqlite": True,
                        "objects": 2345,
                        "stored_data_ratio": 0.3,
                    },
                    {"id": NS_SMALL, "name": "app_Small", "objects": 7, "stored_data_ratio": 1},
                    {"id": NS_EMPTY, "name": "app_Empty", "use_sqlite": False},
                ],
            },
            {"id": ACC_B, "name": "Beta", "namespaces": [{"id": NS_B, "objects": 3}]},
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def make_sim(clock: FakeClock) -> Iterator[Callable[..., Simulator]]:
    """Start simulators from scenario overrides; stops them all at the end."""
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        sim = Simulator(Scenario.from_dict(scenario_dict(**overrides)), clock=clock).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(
    http: requests.Session, sim: Simulator, path: str, token: str | None = TOKEN, **params: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return http.get(sim.api_url + path, headers=headers, params=params, timeout=SAFETY_TIMEOUT)


def ns_path(account: str) -> str:
    return f"/accounts/{account}/workers/durable_objects/namespaces"


def obj_path(account: str, namespace: str) -> str:
    return f"{ns_path(account)}/{namespace}/objects"


def error_code(response: requests.Response) -> int:
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    code: int = body["errors"][0]["code"]
    return code


def walk_objects(
    http: requests.Session, sim: Simulator, account: str, namespace: str, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Follow cursors (``cursor`` first, then ``cursors.after``); returns objects and pages."""
    objects: list[dict[str, Any]] = []
    cursor = ""
    pages = 0
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = get(http, sim, obj_path(account, namespace), **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        objects.extend(body["result"])
        info = body["result_info"]
        cursor = info.get("cursor") or (info.get("cursors") or {}).get("after") or ""
        if not cursor:
            return objects, pages
        assert pages < 1000


# ---- envelopes and endpoints ------------------------------------------------------------
def test_accounts_lists_every_account_for_an_unrestricted_token(
    sim: Simulator, http: requests.Session
) -> None:
    """GET /accounts answers the v4 envelope with every account and page-number info."""
    response = get(http, sim, "/accounts")
    body = response.json()
    assert response.status_code == 200
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    assert [a["id"] for a in body["result"]] == [ACC_A, ACC_B]
    assert body["result"][0]["name"] == "Alpha"
    assert body["result_info"] == {
        "page": 1, "per_page": 20, "count": 2, "total_count": 2, "total_pages": 1,
    }  # fmt: skip


def test_accounts_paginates_and_hides_accounts_a_token_cannot_reach(
    sim: Simulator, http: requests.Session
) -> None:
    """per_page/page select a slice; a token limited to one account sees only that one."""
    second = get(http, sim, "/accounts", per_page=5, page=2).json()
    assert second["result"] == [] and second["result_info"]["total_pages"] == 1
    limited = get(http, sim, "/accounts", token=TOKEN_A).json()
    assert [a["id"] for a in limited["result"]] == [ACC_A]


def test_accounts_refuses_account_owned_tokens_and_bad_per_page(
    sim: Simulator, http: requests.Session
) -> None:
    """Account-owned tokens get 400/1001; per_page outside 5..50 gets 400/6008."""
    owned = get(http, sim, "/accounts", token=TOKEN_ACCOUNT)
    assert owned.status_code == 400 and error_code(owned) == 1001
    bad = get(http, sim, "/accounts", per_page=51)
    assert bad.status_code == 400 and error_code(bad) == 6008


def test_namespaces_fields_follow_the_api_and_omit_unknown_ones(
    sim: Simulator, http: requests.Session
) -> None:
    """Namespaces carry id, name, script, class, use_sqlite; fields left out are absent."""
    body = get(http, sim, ns_path(ACC_A)).json()
    big, small, empty = body["result"]
    assert big == {
        "id": NS_BIG, "name": "app_Big", "script": "app", "class": "Big", "use_sqlite": True,
    }  # fmt: skip
    assert small == {"id": NS_SMALL, "name": "app_Small"}
    assert empty["use_sqlite"] is False
    assert body["result_info"] == {
        "page": 1, "per_page": 20, "count": 3, "total_count": 3, "total_pages": 1,
    }  # fmt: skip


def test_namespaces_page_numbers_walk_every_namespace_once(
    sim: Simulator, http: requests.Session
) -> None:
    """per_page=2 gives pages of 2 and 1 with total_pages 2; page 3 is empty."""
    pages = [get(http, sim, ns_path(ACC_A), per_page=2, page=p).json() for p in (1, 2, 3)]
    assert [len(p["result"]) for p in pages] == [2, 1, 0]
    assert all(p["result_info"]["total_pages"] == 2 for p in pages)
    assert all(p["result_info"]["total_count"] == 3 for p in pages)
    ids = [ns["id"] for p in pages for ns in p["result"]]
    assert ids == [NS_BIG, NS_SMALL, NS_EMPTY]


def test_namespaces_cap_returns_fewer_than_asked_and_says_so(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """With max_per_page 1, per_page=1000 yields one per page and per_page 1 in result_info."""
    capped = make_sim(max_per_page=1)
    first = get(http, capped, ns_path(ACC_A), per_page=1000).json()
    assert len(first["result"]) == 1
    assert first["result_info"]["per_page"] == 1 and first["result_info"]["total_pages"] == 3
    ids = [
        get(http, capped, ns_path(ACC_A), per_page=1000, page=p).json()["result"][0]["id"]
        for p in (1, 2, 3)
    ]
    assert ids == [NS_BIG, NS_SMALL, NS_EMPTY]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 1001}, "per_page"),
        ({"per_page": "many"}, "per_page"),
        ({"page": 0}, "page"),
    ],
)
def test_namespaces_rejects_out_of_range_parameters(
    sim: Simulator, http: requests.Session, params: dict[str, Any], detail: str
) -> None:
    """Out-of-range page/per_page: 400, code 6008 with an error_chain naming the parameter."""
    response = get(http, sim, ns_path(ACC_A), **params)
    assert response.status_code == 400 and error_code(response) == 6008
    chain = response.json()["errors"][0]["error_chain"][0]
    assert chain["code"] == 11000 and detail in chain["message"]


@pytest.mark.parametrize("shape", ["both", "cursor", "cursors"])
@pytest.mark.parametrize(("limit", "max_limit", "pages"), [(1000, None, 3), (10000, 500, 5)])
def test_object_walk_returns_every_object_exactly_once(
    make_sim: Callable[..., Simulator],
    http: requests.Session,
    shape: str,
    limit: int,
    max_limit: int | None,
    pages: int,
) -> None:
    """Following cursors (either shape, capped or not) yields each object once, as expected()."""
    walker = make_sim(cursor_shape=shape, max_limit=max_limit)
    objects, walked = walk_objects(http, walker, ACC_A, NS_BIG, limit=limit)
    assert walked == pages
    ids = [o["id"] for o in objects]
    assert len(ids) == len(set(ids)) == 2345
    assert all(HEX64.match(i) for i in ids)
    stored = sum(1 for o in objects if o["hasStoredData"] is True)
    assert all(isinstance(o["hasStoredData"], bool) for o in objects)
    assert (len(ids), stored) == walker.expected(ACC_A, NS_BIG) == (2345, 2345 * 3 // 10)


@pytest.mark.parametrize("shape", ["both", "cursor", "cursors"])
def test_object_result_info_has_the_chosen_cursor_shape(
    make_sim: Callable[..., Simulator], http: requests.Session, shape: str
) -> None:
    """result_info carries cursor, cursors.after or both; the last page's cursor is empty."""
    walker = make_sim(cursor_shape=shape)
    first = get(http, walker, obj_path(ACC_A, NS_SMALL)).json()["result_info"]
    assert first["count"] == 7 and first["per_page"] == 1000
    assert ("cursor" in first) == (shape in ("both", "cursor"))
    assert ("cursors" in first) == (shape in ("both", "cursors"))
    assert first.get("cursor", "") == "" and first.get("cursors", {}).get("after", "") == ""
    middle = get(http, walker, obj_path(ACC_A, NS_BIG), limit=10).json()["result_info"]
    after = middle.get("cursor") or middle["cursors"]["after"]
    assert after != ""
    if shape == "both":
        assert middle["cursor"] == middle["cursors"]["after"]


def test_objects_default_limit_is_1000_and_bounds_are_10_to_10000(
    sim: Simulator, http: requests.Session
) -> None:
    """No limit gives 1,000 objects; limit 9 or 10001 gets 400/6008; limit 10 gives 10."""
    assert len(get(http, sim, obj_path(ACC_A, NS_BIG)).json()["result"]) == 1000
    assert len(get(http, sim, obj_path(ACC_A, NS_BIG), limit=10).json()["result"]) == 10
    for bad in (9, 10001, "ten"):
        response = get(http, sim, obj_path(ACC_A, NS_BIG), limit=bad)
        assert response.status_code == 400 and error_code(response) == 6008


def test_objects_rejects_malformed_and_foreign_cursors(
    sim: Simulator, http: requests.Session
) -> None:
    """A garbled cursor, or one minted for another namespace, gets 400/6008."""
    info = get(http, sim, obj_path(ACC_A, NS_BIG), limit=10).json()["result_info"]
    good = info["cursor"]
    for cursor in ("not-a-cursor", good[:-2] + ("AA" if good[-2:] != "AA" else "BB")):
        response = get(http, sim, obj_path(ACC_A, NS_BIG), cursor=cursor)
        assert response.status_code == 400 and error_code(response) == 6008
    foreign = get(http, sim, obj_path(ACC_A, NS_SMALL), cursor=good)
    assert foreign.status_code == 400 and error_code(foreign) == 6008


def test_empty_namespace_answers_an_empty_page(sim: Simulator, http: requests.Session) -> None:
    """A namespace with no objects answers result [] and an empty cursor."""
    body = get(http, sim, obj_path(ACC_A, NS_EMPTY)).json()
    assert body["result"] == [] and body["result_info"]["cursor"] == ""


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (obj_path(ACC_A, "55555555555555555555555555555555"), 404, 10066),
        (obj_path(ACC_A, "not-hex"), 404, 10066),
        (ns_path("not-an-account"), 400, 7003),
        (obj_path("xyz", NS_BIG), 400, 7003),
        (ns_path(ACC_GHOST), 403, 7403),
        ("/zones", 404, 7000),
        ("/accounts/" + ACC_A + "/workers/scripts", 404, 7000),
    ],
)
def test_error_answers_for_unknown_or_malformed_ids(
    sim: Simulator, http: requests.Session, path: str, status: int, code: int
) -> None:
    """Unknown namespace 404/10066, bad id 400/7003, unknown account 403/7403, no route 7000."""
    response = get(http, sim, path)
    assert (response.status_code, error_code(response)) == (status, code)
    if code == 7003:
        assert "Could not route to" in response.json()["errors"][0]["message"]


def test_non_get_methods_are_refused(sim: Simulator, http: requests.Session) -> None:
    """POST on a list endpoint answers 405 with code 7001."""
    response = http.post(
        sim.api_url + ns_path(ACC_A),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=SAFETY_TIMEOUT,
    )
    assert response.status_code == 405 and error_code(response) == 7001


def test_base_path_is_configurable(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """With base_path /api, the API lives there and the default path is no route."""
    custom = make_sim(base_path="/api")
    assert custom.api_url.endswith("/api")
    assert get(http, custom, "/accounts").status_code == 200
    old = http.get(custom.url + "/client/v4/accounts", timeout=SAFETY_TIMEOUT)
    assert old.status_code == 404 and error_code(old) == 7000


# ---- auth ---------------------------------------------------------------------------------
def test_missing_authorization_is_9106(sim: Simulator, http: requests.Session) -> None:
    """No Authorization header: 400 with code 9106."""
    response = get(http, sim, ns_path(ACC_A), token=None)
    assert response.status_code == 400 and error_code(response) == 9106


def test_malformed_authorization_is_6003_with_6111(sim: Simulator, http: requests.Session) -> None:
    """A non-Bearer Authorization header: 400/6003 whose chain says 6111."""
    response = http.get(
        sim.api_url + ns_path(ACC_A), headers={"Authorization": "Basic abc"}, timeout=SAFETY_TIMEOUT
    )
    assert response.status_code == 400 and error_code(response) == 6003
    assert response.json()["errors"][0]["error_chain"][0]["code"] == 6111


@pytest.mark.parametrize("path", ["/accounts", ns_path(ACC_A), obj_path(ACC_A, NS_BIG)])
def test_wrong_or_disabled_token_is_10000(
    sim: Simulator, http: requests.Session, path: str
) -> None:
    """An unknown or disabled token gets 403/10000 on every list endpoint."""
    for token in ("wrong-token", TOKEN_DISABLED):
        response = get(http, sim, path, token=token)
        assert response.status_code == 403 and error_code(response) == 10000


def test_token_limited_to_one_account_is_refused_elsewhere(
    sim: Simulator, http: requests.Session
) -> None:
    """A token scoped to account A reads A and gets 403/10000 on account B."""
    assert get(http, sim, ns_path(ACC_A), token=TOKEN_A).status_code == 200
    response = get(http, sim, obj_path(ACC_B, NS_B), token=TOKEN_A)
    assert response.status_code == 403 and error_code(response) == 10000


def test_revoking_a_token_at_runtime(sim: Simulator, http: requests.Session) -> None:
    """After revoke_token, the token gets 403/10000 and verify says 401/1000."""
    assert get(http, sim, ns_path(ACC_A), token=TOKEN_A).status_code == 200
    sim.revoke_token(TOKEN_A)
    response = get(http, sim, ns_path(ACC_A), token=TOKEN_A)
    assert response.status_code == 403 and error_code(response) == 10000
    verify = get(http, sim, "/user/tokens/verify", token=TOKEN_A)
    assert verify.status_code == 401 and error_code(verify) == 1000
    with pytest.raises(KeyError):
        sim.revoke_token(TOKEN_A)


def test_user_token_verify(sim: Simulator, http: requests.Session) -> None:
    """GET /user/tokens/verify answers {id, status: active} for a user token."""
    body = get(http, sim, "/user/tokens/verify").json()
    assert body["success"] is True
    assert body["result"]["status"] == "active"
    assert re.fullmatch(r"[0-9a-f]{32}", body["result"]["id"])
    disabled = get(http, sim, "/user/tokens/verify", token=TOKEN_DISABLED).json()
    assert disabled["result"]["status"] == "disabled"


def test_account_token_verify(sim: Simulator, http: requests.Session) -> None:
    """Account-owned tokens verify on /accounts/{id}/tokens/verify; the user endpoint says 1000."""
    owned = get(http, sim, f"/accounts/{ACC_A}/tokens/verify", token=TOKEN_ACCOUNT)
    assert owned.status_code == 200 and owned.json()["result"]["status"] == "active"
    user_endpoint = get(http, sim, "/user/tokens/verify", token=TOKEN_ACCOUNT)
    assert user_endpoint.status_code == 401 and error_code(user_endpoint) == 1000
    other = get(http, sim, f"/accounts/{ACC_B}/tokens/verify", token=TOKEN_ACCOUNT)
    assert other.status_code == 401 and error_code(other) == 1000
    user_token = get(http, sim, f"/accounts/{ACC_A}/tokens/verify")
    assert user_token.status_code == 401
    assert get(http, sim, ns_path(ACC_A), token=TOKEN_ACCOUNT).status_code == 200
    missing = get(http, sim, "/user/tokens/verify", token=None)
    assert missing.status_code == 400 and error_code(missing) == 9106


# ---- request budget -------------------------------------------------------------------------
def test_budget_answers_429_with_retry_after_then_recovers(
    make_sim: Callable[..., Simulator], http: requests.Session, clock: FakeClock
) -> None:
    """3 requests per 60 s: Ratelimit counts down, the 4th is 429/971, a new window is fine."""
    budgeted = make_sim(rate_limit={"requests": 3, "window_seconds": 60})
    remaining = []
    for _ in range(3):
        response = get(http, budgeted, ns_path(ACC_A))
        assert response.status_code == 200
        assert response.headers["Ratelimit-Policy"] == '"default";q=3;w=60'
        remaining.append(response.headers["Ratelimit"])
        clock.advance(1)
    assert remaining == ['"default";r=2;t=60', '"default";r=1;t=59', '"default";r=0;t=58']
    clock.advance(17)
    blocked = get(http, budgeted, ns_path(ACC_A))
    assert blocked.status_code == 429 and error_code(blocked) == 971
    assert blocked.headers["Retry-After"] == "40"
    assert "More than 3 requests per 60 seconds" in blocked.json()["errors"][0]["message"]
    assert get(http, budgeted, ns_path(ACC_A), token=TOKEN_A).status_code == 200
    assert get(http, budgeted, ns_path(ACC_A), token=None).status_code == 400
    clock.advance(40)
    assert get(http, budgeted, ns_path(ACC_A)).status_code == 200
    assert budgeted.stats()["rate_limited"] == 1


def test_default_budget_is_1200_per_5_minutes(sim: Simulator, http: requests.Session) -> None:
    """The real API's budget applies when the scenario says nothing."""
    response = get(http, sim, "/accounts")
    assert response.headers["Ratelimit-Policy"] == '"default";q=1200;w=300'
    assert response.headers["Ratelimit"] == '"default";r=1199;t=300'


# ---- growth and runtime control -----------------------------------------------------------
def test_growth_adds_objects_per_minute_of_the_injected_clock(
    make_sim: Callable[..., Simulator], http: requests.Session, clock: FakeClock
) -> None:
    """growth_per_minute 60: 30 s later the walk returns 30 more objects, as expected() says."""
    data = scenario_dict()
    data["accounts"][0]["namespaces"][1]["growth_per_minute"] = 60
    growing = make_sim(accounts=data["accounts"])
    assert growing.expected(ACC_A, NS_SMALL) == (7, 7)
    clock.advance(30)
    objects, _ = walk_objects(http, growing, ACC_A, NS_SMALL, limit=10)
    assert len({o["id"] for o in objects}) == 37
    assert growing.expected(ACC_A, NS_SMALL) == (37, 37)


def test_set_add_and_growth_controls(sim: Simulator, clock: FakeClock) -> None:
    """set_objects, add_objects (also negative) and set_growth change what expected() says."""
    sim.set_objects(ACC_A, NS_BIG, 100)
    assert sim.expected(ACC_A, NS_BIG) == (100, 30)
    sim.add_objects(ACC_A, NS_BIG, -40)
    assert sim.expected(ACC_A, NS_BIG) == (60, 18)
    sim.set_growth(ACC_A, NS_BIG, 120)
    clock.advance(60)
    assert sim.expected(ACC_A, NS_BIG)[0] == 180
    sim.set_growth(ACC_A, NS_BIG, -1000)
    clock.advance(60)
    assert sim.expected(ACC_A, NS_BIG) == (0, 0)
    with pytest.raises(KeyError):
        sim.expected(ACC_A, "00000000000000000000000000000000")


def test_removed_objects_disappear_from_the_end_of_the_walk(
    sim: Simulator, http: requests.Session
) -> None:
    """Shrinking a namespace keeps the first ids and drops the last ones."""
    before, _ = walk_objects(http, sim, ACC_A, NS_SMALL)
    sim.add_objects(ACC_A, NS_SMALL, -3)
    after, _ = walk_objects(http, sim, ACC_A, NS_SMALL)
    assert after == before[:4]


def test_add_and_remove_namespaces_at_runtime(sim: Simulator, http: requests.Session) -> None:
    """A new namespace shows in the list and serves objects; a removed one answers 10066."""
    new_id = sim.add_namespace(ACC_B, {"name": "late_Arrival", "objects": 12})
    listed = [ns["id"] for ns in get(http, sim, ns_path(ACC_B)).json()["result"]]
    assert listed == [NS_B, new_id]
    assert len(walk_objects(http, sim, ACC_B, new_id)[0]) == 12
    sim.remove_namespace(ACC_B, NS_B)
    assert [ns["id"] for ns in get(http, sim, ns_path(ACC_B)).json()["result"]] == [new_id]
    gone = get(http, sim, obj_path(ACC_B, NS_B))
    assert gone.status_code == 404 and error_code(gone) == 10066
    assert sim.namespace_ids(ACC_B) == [new_id]
    with pytest.raises(ScenarioError):
        sim.add_namespace(ACC_B, {"id": new_id})


# ---- ids ---------------------------------------------------------------------------------
def test_same_seed_same_ids_other_seed_other_ids(http: requests.Session) -> None:
    """Ids depend on the seed only: two simulators with one seed agree, another seed differs."""
    scenario = Scenario.from_dict(scenario_dict())
    pages = []
    for seed in (None, None, 8):
        with Simulator(scenario, seed=seed) as one:
            pages.append(get(http, one, obj_path(ACC_A, NS_BIG), limit=50).json()["result"])
    assert pages[0] == pages[1]
    assert {o["id"] for o in pages[0]}.isdisjoint({o["id"] for o in pages[2]})


def test_ten_million_objects_cost_nothing(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """A 10-million-object namespace stores no object: starting it and building a page of
    10,000 allocate a few times that one answer (ids are derived, never held)."""
    data = scenario_dict()
    data["accounts"][1]["namespaces"][0]["objects"] = 10_000_000
    tracemalloc.start()
    try:
        huge = make_sim(accounts=data["accounts"])
        response = huge.handle(
            "GET", huge.scenario.base_path + obj_path(ACC_B, NS_B) + "?limit=10000",
            {"Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 200
    assert huge.expected(ACC_B, NS_B) == (10_000_000, 0)
    # The page is ~1 MB and the peak ~3 MB; 10 million ids of 16 bytes would be 160 MB.
    assert len(response.body) < 1_000_000 and peak < 10_000_000
    first = get(http, huge, obj_path(ACC_B, NS_B), limit=10000).json()
    assert len(first["result"]) == 10000
    assert first["result_info"]["cursor"]


def test_concurrent_walks_each_see_every_object(sim: Simulator) -> None:
    """Four clients walking at once each get all 2,345 objects, and the stats add up."""
    results: list[int] = []
    errors: list[BaseException] = []

    def walker() -> None:
        try:
            with requests.Session() as own:
                objects, _ = walk_objects(own, sim, ACC_A, NS_BIG, limit=100)
                results.append(len({o["id"] for o in objects}))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=walker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and results == [2345] * 4
    assert sim.stats()["requests"]["objects"] == {"200": 4 * 24}


# ---- stats and admin API -------------------------------------------------------------------
def test_stats_count_requests_by_endpoint_and_status(
    sim: Simulator, http: requests.Session
) -> None:
    """stats() and GET /__simulator/stats agree and count by endpoint and status."""
    get(http, sim, "/accounts")
    get(http, sim, ns_path(ACC_A))
    get(http, sim, ns_path(ACC_A), token="nope")
    walk_objects(http, sim, ACC_A, NS_BIG)
    get(http, sim, "/user/tokens/verify")
    get(http, sim, "/nowhere")
    stats = sim.stats()
    assert stats["requests"] == {
        "accounts": {"200": 1},
        "namespaces": {"200": 1, "403": 1},
        "objects": {"200": 3},
        "verify": {"200": 1},
        "other": {"404": 1},
    }
    assert stats["requests_total"] == 8
    assert stats["objects_served"] == 2345
    assert http.get(sim.url + "/__simulator/stats", timeout=SAFETY_TIMEOUT).json() == stats
    sim.reset_stats()
    assert sim.stats()["requests_total"] == 0 and sim.stats()["requests"] == {}


def test_admin_api_drives_the_simulator_out_of_process(
    sim: Simulator, http: requests.Session
) -> None:
    """POST /__simulator/... injects faults, sets counts, deletes namespaces, revokes tokens."""
    admin = sim.url + "/__simulator/"
    ok = http.post(
        admin + "inject",
        json={"fault": "status", "status": 503, "count": 1},
        timeout=SAFETY_TIMEOUT,
    )
    assert ok.json() == {"ok": True}
    assert get(http, sim, "/accounts").status_code == 503
    assert get(http, sim, "/accounts").status_code == 200
    counts = http.post(
        admin + "objects",
        json={"account_id": ACC_A, "namespace_id": NS_BIG, "count": 50, "growth_per_minute": 0},
        timeout=SAFETY_TIMEOUT,
    ).json()
    assert counts == {"ok": True, "objects": 50, "with_stored_data": 15}
    expected = http.get(
        admin + "expected",
        params={"account_id": ACC_A, "namespace_id": NS_BIG},
        timeout=SAFETY_TIMEOUT,
    ).json()
    assert expected == {"objects": 50, "with_stored_data": 15}
    added = http.post(
        admin + "namespaces/add",
        json={"account_id": ACC_B, "namespace": {"objects": 2}},
        timeout=SAFETY_TIMEOUT,
    ).json()
    assert sim.expected(ACC_B, added["id"]) == (2, 0)
    http.post(admin + "namespaces/delete", json={"account_id": ACC_A, "namespace_id": NS_SMALL})
    assert NS_SMALL not in sim.namespace_ids(ACC_A)
    http.post(admin + "tokens/revoke", json={"token": TOKEN_A}, timeout=SAFETY_TIMEOUT)
    assert get(http, sim, ns_path(ACC_A), token=TOKEN_A).status_code == 403
    http.post(admin + "inject", json={"fault": "html", "count": None}, timeout=SAFETY_TIMEOUT)
    assert get(http, sim, "/accounts").status_code == 502
    http.post(admin + "clear_faults", timeout=SAFETY_TIMEOUT)
    assert get(http, sim, "/accounts").status_code == 200
    http.post(admin + "reset_stats", timeout=SAFETY_TIMEOUT)
    assert sim.stats()["requests_total"] == 0
    info = http.get(admin + "info", timeout=SAFETY_TIMEOUT).json()
    assert info == {"api_url": sim.api_url, "token": TOKEN, "account_ids": [ACC_A, ACC_B]}


@pytest.mark.parametrize(
    ("action", "payload", "status"),
    [
        ("inject", {"fault": "meteor"}, 400),
        ("inject", {"fault": "status", "colour": "red"}, 400),
        ("objects", {"account_id": ACC_A, "namespace_id": "nope", "count": 1}, 400),
        ("objects", {"account_id": ACC_A, "namespace_id": NS_BIG, "count": "x"}, 400),
        ("tokens/revoke", {"token": "never-existed"}, 400),
        ("teleport", {}, 404),
    ],
)
def test_admin_api_rejects_bad_requests(
    sim: Simulator, http: requests.Session, action: str, payload: dict[str, Any], status: int
) -> None:
    """Bad admin requests get a JSON error, never a crash, and change nothing."""
    response = http.post(sim.url + "/__simulator/" + action, json=payload, timeout=SAFETY_TIMEOUT)
    assert response.status_code == status
    assert response.json()["ok"] is False and response.json()["error"]
    assert get(http, sim, "/accounts").status_code == 200


def test_admin_requests_are_not_counted(sim: Simulator, http: requests.Session) -> None:
    """Only API requests show in the stats."""
    http.get(sim.url + "/__simulator/stats", timeout=SAFETY_TIMEOUT)
    http.post(sim.url + "/__simulator/clear_faults", timeout=SAFETY_TIMEOUT)
    assert sim.stats()["requests_total"] == 0


# ---- life cycle ------------------------------------------------------------------------------
def test_stop_closes_kept_alive_connections(http: requests.Session) -> None:
    """After stop(), even a kept-alive session cannot get an answer."""
    one = Simulator(demo_scenario()).start()
    url = one.api_url + "/accounts"
    headers = {"Authorization": f"Bearer {one.token}"}
    assert http.get(url, headers=headers, timeout=SAFETY_TIMEOUT).status_code == 200
    one.stop()
    with pytest.raises(requests.ConnectionError):
        http.get(url, headers=headers, timeout=SAFETY_TIMEOUT)
    with pytest.raises(RuntimeError):
        _ = one.api_url


def test_demo_scenario_shape() -> None:
    """The demo has several accounts, 32-hex ids, sqlite and non-sqlite, growing namespaces."""
    demo = demo_scenario()
    assert len(demo.accounts) >= 2
    namespaces = [ns for a in demo.accounts for ns in a.namespaces]
    assert all(re.fullmatch(r"[0-9a-f]{32}", x.id) for x in [*demo.accounts, *namespaces])
    assert {ns.use_sqlite for ns in namespaces} >= {True, False}
    assert any(ns.growth_per_minute > 0 for ns in namespaces)
    assert any(ns.growth_per_minute == 0 for ns in namespaces)
