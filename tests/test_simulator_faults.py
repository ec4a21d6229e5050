"""Every fault the simulator can serve, queued with inject() or drawn from seeded rules."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from do_exporter.simulator import Scenario, ScenarioError, Simulator
from tests.support import SAFETY_TIMEOUT

ACC = "0123456789abcdef0123456789abcdef"
NS = "11111111111111111111111111111111"
NS_OTHER = "22222222222222222222222222222222"
TOKEN = "fault-token"


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "seed": 3,
        "tokens": [{"value": TOKEN}],
        "accounts": [
            {
                "id": ACC,
                "namespaces": [
                    {"id": NS, "objects": 95, "stored_data_ratio": 0.5},
                    {"id": NS_OTHER, "objects": 5},
                ],
            }
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        sim = Simulator(Scenario.from_dict(scenario_dict(**overrides))).start()
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


NAMESPACES = f"/accounts/{ACC}/workers/durable_objects/namespaces"
OBJECTS = f"{NAMESPACES}/{NS}/objects"
OBJECTS_OTHER = f"{NAMESPACES}/{NS_OTHER}/objects"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def get(
    http: requests.Session,
    sim: Simulator,
    path: str,
    timeout: float = SAFETY_TIMEOUT,
    **params: Any,
) -> requests.Response:
    return http.get(
        sim.api_url + path,
        headers={"Authorization": f"Bearer {TOKEN}"},
        params=params,
        timeout=timeout,
    )


def test_status_fault_429_with_retry_after_hits_the_next_n_requests(
    sim: Simulator, http: requests.Session
) -> None:
    """inject(status=429, retry_after=1, count=2): two 429/971 with Retry-After, then normal."""
    sim.inject("status", endpoint="objects", status=429, retry_after=1, count=2)
    for _ in range(2):
        response = get(http, sim, OBJECTS)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert response.json()["errors"][0]["code"] == 971
    assert get(http, sim, OBJECTS).status_code == 200
    assert sim.stats()["requests"]["objects"] == {"429": 2, "200": 1}
    assert sim.stats()["faults"] == {"status": 2}


def test_status_fault_defaults_and_custom_code(sim: Simulator, http: requests.Session) -> None:
    """A bare status fault is 500/10013; code and message can be chosen."""
    sim.inject("status")
    sim.inject("status", status=403, code=10000, message="Authentication error")
    default = get(http, sim, NAMESPACES)
    assert default.status_code == 500
    assert default.json()["errors"] == [{"code": 10013, "message": "An unknown error has occurred"}]
    custom = get(http, sim, NAMESPACES)
    assert custom.status_code == 403
    assert custom.json()["errors"] == [{"code": 10000, "message": "Authentication error"}]
    assert "Retry-After" not in custom.headers


@pytest.mark.parametrize(("status", "title"), [(502, "502 Bad Gateway"), (503, "503 Service")])
def test_html_fault_sends_an_edge_error_page(
    sim: Simulator, http: requests.Session, status: int, title: str
) -> None:
    """html: a text/html Cloudflare page, not JSON, with the requested status."""
    sim.inject("html", status=status, retry_after=30)
    response = get(http, sim, OBJECTS)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Retry-After"] == "30"
    assert title in response.text and "cloudflare" in response.text
    with pytest.raises(ValueError):
        response.json()


def test_html_fault_defaults_to_502(sim: Simulator, http: requests.Session) -> None:
    """html without a status is a 502."""
    sim.inject("html")
    assert get(http, sim, "/accounts").status_code == 502


def test_faults_come_before_authentication(sim: Simulator, http: requests.Session) -> None:
    """An edge fault answers even a request without a token, like the edge would."""
    sim.inject("html", status=503)
    response = http.get(sim.api_url + "/accounts", timeout=SAFETY_TIMEOUT)
    assert response.status_code == 503


def test_delay_beyond_the_read_timeout(sim: Simulator, http: requests.Session) -> None:
    """delay longer than the client's read timeout makes the client time out; then normal."""
    sim.inject("delay", seconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(http, sim, OBJECTS, timeout=0.3)
    assert get(http, sim, OBJECTS).status_code == 200


def test_delay_then_answers_normally(sim: Simulator, http: requests.Session) -> None:
    """delay within the timeout only slows the answer down (never less than the delay)."""
    sim.inject("delay", seconds=0.3)
    assert sim.handle("GET", sim.scenario.base_path + OBJECTS, AUTH).delay == 0.3
    sim.inject("delay", seconds=0.3)
    started = time.monotonic()
    response = get(http, sim, OBJECTS)
    assert response.status_code == 200 and len(response.json()["result"]) == 95
    assert time.monotonic() - started >= 0.3


def test_disconnect_closes_without_an_answer(sim: Simulator, http: requests.Session) -> None:
    """disconnect: the client sees a connection error; the stats say disconnect."""
    sim.inject("disconnect", endpoint="namespaces")
    with pytest.raises(requests.ConnectionError):
        get(http, sim, NAMESPACES)
    assert get(http, sim, NAMESPACES).status_code == 200
    assert sim.stats()["requests"]["namespaces"] == {"disconnect": 1, "200": 1}


def test_drop_cuts_the_connection_mid_body(sim: Simulator, http: requests.Session) -> None:
    """drop: headers promise the full body, half arrives, the connection closes."""
    sim.inject("drop", endpoint="objects")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        get(http, sim, OBJECTS)
    assert get(http, sim, OBJECTS).status_code == 200
    assert sim.stats()["requests"]["objects"] == {"drop": 1, "200": 1}


def test_truncated_json(sim: Simulator, http: requests.Session) -> None:
    """truncated: a 200 whose body is the first half of the real JSON answer."""
    full = get(http, sim, OBJECTS).content
    sim.inject("truncated")
    response = get(http, sim, OBJECTS)
    assert response.status_code == 200
    assert full.startswith(response.content) and 0 < len(response.content) < len(full)
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_invalid_json(sim: Simulator, http: requests.Session) -> None:
    """invalid_json: application/json that does not parse."""
    sim.inject("invalid_json", endpoint="namespaces")
    response = get(http, sim, NAMESPACES)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()


def test_success_false_with_http_200(sim: Simulator, http: requests.Session) -> None:
    """success_false: HTTP 200 but success false and an error code."""
    sim.inject("success_false", code=10001, message="temporarily unavailable")
    body = get(http, sim, OBJECTS).json()
    assert body["success"] is False
    assert body["errors"] == [{"code": 10001, "message": "temporarily unavailable"}]


def test_wrong_type_result(sim: Simulator, http: requests.Session) -> None:
    """wrong_type: result is an object where a list belongs."""
    sim.inject("wrong_type", endpoint="namespaces")
    body = get(http, sim, NAMESPACES).json()
    assert body["success"] is True and isinstance(body["result"], dict)


def test_wrong_type_on_verify_is_a_list(sim: Simulator, http: requests.Session) -> None:
    """wrong_type on verify: result is a list where an object belongs."""
    sim.inject("wrong_type", endpoint="verify")
    body = get(http, sim, "/user/tokens/verify").json()
    assert isinstance(body["result"], list) and body["result"][0]["status"] == "active"


def test_wrong_type_on_objects_wraps_the_page(sim: Simulator, http: requests.Session) -> None:
    """wrong_type on objects: the whole page sits in {"items": [...]}, result_info intact."""
    plain = get(http, sim, OBJECTS).json()
    sim.inject("wrong_type", endpoint="objects")
    body = get(http, sim, OBJECTS).json()
    assert body["result"] == {"items": plain["result"]}
    assert body["result_info"] == plain["result_info"]


def test_missing_result_info(sim: Simulator, http: requests.Session) -> None:
    """missing_result_info: the envelope without result_info."""
    sim.inject("missing_result_info", endpoint="objects")
    body = get(http, sim, OBJECTS).json()
    assert body["success"] is True and len(body["result"]) == 95
    assert "result_info" not in body


def test_repeat_cursor(sim: Simulator, http: requests.Session) -> None:
    """repeat_cursor: the next cursor is the one sent, or on page 1 leads back to page 1."""
    sim.inject("repeat_cursor", count=2)
    first = get(http, sim, OBJECTS, limit=10).json()
    back = first["result_info"]["cursor"]
    assert back and first["result_info"]["cursors"]["after"] == back
    again = get(http, sim, OBJECTS, limit=10, cursor=back).json()
    assert again["result"] == first["result"]
    assert again["result_info"]["cursor"] == back
    normal = get(http, sim, OBJECTS, limit=10, cursor=back).json()
    assert normal["result_info"]["cursor"] not in ("", back)


def test_endless_cursor_until_cleared(sim: Simulator, http: requests.Session) -> None:
    """endless_cursor: pages keep coming past the end with new ids until clear_faults();
    then a cursor the fault invented is refused (400), so a walk caught across the clearing
    fails instead of ending with the invented pages as if they were a complete count."""
    sim.inject("endless_cursor", endpoint="objects", count=None)
    seen: set[str] = set()
    cursor = ""
    for _ in range(15):
        body = get(http, sim, OBJECTS, limit=10, **({"cursor": cursor} if cursor else {})).json()
        assert len(body["result"]) == 10
        seen.update(o["id"] for o in body["result"])
        cursor = body["result_info"]["cursor"]
        assert cursor
    assert len(seen) == 150 > 95
    sim.clear_faults()
    assert get(http, sim, OBJECTS, limit=10, cursor=cursor).status_code == 400


def test_faults_are_scoped_by_endpoint_and_namespace(
    sim: Simulator, http: requests.Session
) -> None:
    """A fault for one namespace's objects leaves other endpoints and namespaces alone."""
    sim.inject("status", endpoint="objects", namespace_id=NS_OTHER, status=500, count=None)
    assert get(http, sim, NAMESPACES).status_code == 200
    assert get(http, sim, OBJECTS).status_code == 200
    assert get(http, sim, OBJECTS_OTHER).status_code == 500
    assert get(http, sim, OBJECTS_OTHER).status_code == 500
    sim.clear_faults()
    assert get(http, sim, OBJECTS_OTHER).status_code == 200


def test_queued_faults_are_first_in_first_out(sim: Simulator, http: requests.Session) -> None:
    """Two queued faults for the same endpoint apply in the order injected."""
    sim.inject("status", status=500)
    sim.inject("html", status=503)
    assert [get(http, sim, "/accounts").status_code for _ in range(3)] == [500, 503, 200]


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("meteor", {}),
        ("status", {"colour": "red"}),
        ("status", {"status": 99}),
        ("delay", {"seconds": -1}),
        ("status", {"endpoint": "zones"}),
    ],
)
def test_inject_rejects_unknown_faults_and_parameters(
    sim: Simulator, kind: str, params: dict[str, Any]
) -> None:
    """inject() raises ValueError for an unknown fault, parameter, value or endpoint."""
    with pytest.raises(ValueError):
        sim.inject(kind, **params)


def test_inject_count_must_be_positive(sim: Simulator) -> None:
    """count=0 is refused (None means until cleared)."""
    with pytest.raises(ValueError):
        sim.inject("status", count=0)


# ---- scenario rules ---------------------------------------------------------------------------
def statuses(sim: Simulator, http: requests.Session, n: int) -> list[int]:
    return [get(http, sim, NAMESPACES).status_code for _ in range(n)]


def test_random_error_rate_is_seeded(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """Same scenario and seed give the same failures; the rate is roughly the one asked."""
    faults = {"rules": [{"fault": "status", "status": 500, "rate": 0.3}]}
    runs = [statuses(make_sim(faults=faults), http, 60) for _ in range(2)]
    assert runs[0] == runs[1]
    assert 5 <= runs[0].count(500) <= 35
    other = statuses(make_sim(faults=faults, seed=4), http, 60)
    assert other != runs[0]


def test_429_bursts_with_retry_after(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """A rule with burst 3 fails three requests in a row each time it fires."""
    faults = {
        "rules": [{"fault": "status", "status": 429, "retry_after": 2, "rate": 0.1, "burst": 3}]
    }
    bursty = make_sim(faults=faults)
    seen = statuses(bursty, http, 120)
    runs: list[int] = []
    length = 0
    for status in [*seen, 200]:
        if status == 429:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    assert runs, "the rule never fired in 120 requests"
    # Bursts may touch each other (a new one can start right after); never shorter than 3.
    assert all(run % 3 == 0 for run in runs)


def test_rules_are_scoped_to_an_endpoint(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """A rule for objects never touches namespaces."""
    scoped = make_sim(faults={"rules": [{"fault": "html", "endpoint": "objects", "rate": 1}]})
    assert statuses(scoped, http, 5) == [200] * 5
    assert get(http, scoped, OBJECTS).status_code == 502


def test_latency_and_jitter(make_sim: Callable[..., Simulator], http: requests.Session) -> None:
    """latency_ms plus up to jitter_ms (seeded) slows every answer."""
    slow = make_sim(faults={"latency_ms": 100, "jitter_ms": 50})
    delays = [slow.handle("GET", slow.scenario.base_path + NAMESPACES, AUTH).delay for _ in "abc"]
    assert all(0.1 <= delay <= 0.15 for delay in delays) and len(set(delays)) == 3
    started = time.monotonic()
    assert get(http, slow, NAMESPACES).status_code == 200
    assert time.monotonic() - started >= 0.1


def test_injected_faults_take_precedence_over_rules(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    """With a rule failing everything, an injected fault still wins its request."""
    failing = make_sim(faults={"rules": [{"fault": "status", "status": 500}]})
    failing.inject("html", status=503)
    assert statuses(failing, http, 2) == [503, 500]


@pytest.mark.parametrize(
    "rule",
    [
        {"status": 500},
        {"fault": "status", "rate": 2},
        {"fault": "status", "burst": 0},
        {"fault": "nope"},
        {"fault": "html", "seconds": 3},
    ],
)
def test_bad_rules_are_scenario_errors(rule: dict[str, Any]) -> None:
    """A malformed rule raises ScenarioError naming the rule."""
    with pytest.raises(ScenarioError, match=r"faults\.rules\[0\]"):
        Scenario.from_dict(scenario_dict(faults={"rules": [rule]}))
