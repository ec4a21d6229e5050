"""Issue 18: the busiest objects, wall-time percentiles, requests by status, the plan's limits
and retries; issue 16: ids and text from GraphQL validated at the edge.

Canned answers, requests-mock, and the simulator over real HTTP. Time is moved by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest

from do_exporter import analytics as a
from do_exporter.analytics import (
    AccountUsage,
    AnalyticsError,
    AnalyticsState,
    LimitsBook,
    NodeLimits,
    Retry,
    Window,
)
from do_exporter.cloudflare import CloudflareClient
from do_exporter.metrics.groups import GROUPS, HOT_OBJECTS, LATENCY
from do_exporter.model import Namespace
from do_exporter.poller import graphql_sender
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, ns, scenario
from tests.test_analytics import _samples as registry_of

NS1, NS2, NS3 = f"{1:032x}", f"{2:032x}", f"{3:032x}"
T0 = 1_717_200_000
W = Window(T0, T0 + 300)
P = "cloudflare_durable_objects_"
INV = {"requests": 100, "errors": 3, "wallTime": 2_500_000, "responseBodySize": 4096}
PER = {
    "cpuTime": 1_500_000, "activeTime": 9_000_000, "duration": 1.125, "rowsRead": 40,
    "rowsWritten": 7, "storageReadUnits": 0, "storageWriteUnits": 0, "storageDeletes": 0,
    "inboundWebsocketMsgCount": 11, "outboundWebsocketMsgCount": 22, "subrequests": 5,
    "exceededCpuErrors": 1, "exceededMemoryErrors": 2, "fatalInternalErrors": 0,
}  # fmt: skip
Q = {"wallTimeP50": 1000.0, "wallTimeP90": 5000.0, "wallTimeP99": 20000.0, "wallTimeP999": 90000.0}


def obj(i: int) -> str:
    return f"{i:064x}"


def row(ns_id: Any, **parts: Any) -> dict[str, Any]:
    dims = parts.pop("dims", {})
    return {"dimensions": {"namespaceId": ns_id, **dims}, **parts}


def answer(**aliases: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "invocations": [row(NS1, sum=INV, quantiles=Q, max={"wallTime": 250000.0})],
        "periodic": [row(NS1, sum=PER, max={"activeWebsocketConnections": 4})],
        "sqlStorage": [],
        "storage": [],
        "status": [
            row(NS1, dims={"status": "success"}, sum={"requests": 90}),
            row(NS1, dims={"status": "scriptThrewException"}, sum={"requests": 7}),
            row(NS1, dims={"status": "someNewStatus"}, sum={"requests": 3}),
        ],
        "hotRequests": [
            row(NS1, dims={"objectId": obj(1)}, sum={"requests": 60}),
            row(NS1, dims={"objectId": obj(2)}, sum={"requests": 30}),
        ],
        "hotCpu": [row(NS1, dims={"objectId": obj(2)}, sum={"cpuTime": 240_000_000})],
    }
    account.update(aliases)
    return {"data": {"viewer": {"accounts": [account]}}, "errors": None}


def counted(doc: Mapping[str, Any], window: Window = W) -> AnalyticsState:
    usage = a.parse_analytics(doc)
    assert isinstance(usage, AccountUsage), usage
    return a.advance(AnalyticsState(ACCOUNT_A), window, usage, now=float(window.end))


# ---- the query ------------------------------------------------------------------------


def test_the_new_aliases_ride_in_the_one_query_and_follow_the_options() -> None:
    first = a.build_request(ACCOUNT_A, W)
    assert "hotRequests:" in first["query"] and "hotCpu:" in first["query"]
    assert "sum_requests_DESC" in first["query"] and "sum_cpuTime_DESC" in first["query"]
    assert "wallTimeP999" in first["query"] and "status:" in first["query"]
    assert first["variables"]["top"] == 10
    later = a.build_request(ACCOUNT_A, W, after=NS1)  # pages after the first: no top-N
    assert "hotRequests" not in later["query"] and "top" not in later["variables"]
    off = a.build_request(ACCOUNT_A, W, top_objects=0)
    assert "hotRequests" not in off["query"] and "top" not in off["variables"]
    groups = set(GROUPS) - {HOT_OBJECTS, LATENCY}
    lean = a.build_request(ACCOUNT_A, W, groups=groups)
    assert "hotRequests" not in lean["query"] and "quantiles" not in lean["query"]
    assert a.build_request(ACCOUNT_A, W, top_objects=500)["variables"]["top"] == 100


# ---- parsing and families -------------------------------------------------------------


def test_hot_objects_latency_and_status_are_exported_with_their_units() -> None:
    state = counted(answer())
    reg = registry_of(state, {ACCOUNT_A: [Namespace(NS1, name="chat_Room")]})
    labels = {"account_id": ACCOUNT_A, "namespace_id": NS1, "namespace_name": "chat_Room"}
    one = {**labels, "object_id": obj(1)}
    rps = reg.get_sample_value(P + "hot_object_requests_per_second", one)
    assert rps == 60 / 300
    cpu = reg.get_sample_value(P + "hot_object_cpu_ratio", {**labels, "object_id": obj(2)})
    assert cpu == 240 / 300  # 240 CPU seconds over 300 s: 80% of its thread
    assert reg.get_sample_value(P + "hot_object_cpu_ratio", {**labels, "object_id": obj(1)}) is None
    q99 = reg.get_sample_value(P + "request_wall_time_seconds", {**labels, "quantile": "0.99"})
    assert q99 == 0.02
    assert reg.get_sample_value(P + "request_wall_time_max_seconds", labels) == 0.25
    assert reg.get_sample_value(P + "request_wall_time_seconds_count", labels) == 100
    by_status = P + "requests_by_status_total"
    assert reg.get_sample_value(by_status, {**labels, "status": "success"}) == 90
    assert reg.get_sample_value(by_status, {**labels, "status": "other"}) == 3  # bounded


def test_an_object_leaving_the_top_loses_its_series_and_statuses_accumulate() -> None:
    state = counted(answer())
    later = answer(hotRequests=[row(NS1, dims={"objectId": obj(3)}, sum={"requests": 6})])
    usage = a.parse_analytics(later)
    assert isinstance(usage, AccountUsage)
    state = a.advance(state, Window(W.end, W.end + 60), usage, now=0.0)
    reg = registry_of(state, {})
    base = {"account_id": ACCOUNT_A, "namespace_id": NS1, "namespace_name": ""}
    name = P + "hot_object_requests_per_second"
    assert reg.get_sample_value(name, {**base, "object_id": obj(1)}) is None
    assert reg.get_sample_value(name, {**base, "object_id": obj(3)}) == 6 / 60
    success = {**base, "status": "success"}
    assert reg.get_sample_value(P + "requests_by_status_total", success) == 180


def test_bad_ids_and_text_are_dropped_and_counted_never_a_crash() -> None:
    """A lone surrogate or a malformed id in any alias: the row is dropped and counted, the
    rest is counted, and rendering works even without a namespace list (issue 16, item 3)."""
    raw = json.dumps(answer()).replace(NS1, "\\ud800", 1)  # the first invocations row
    doc = json.loads(raw)
    doc["data"]["viewer"]["accounts"][0]["periodic"].append(row("ABC" * 11, sum=PER, max={}))
    doc["data"]["viewer"]["accounts"][0]["hotRequests"] += [
        row(NS2, dims={"objectId": obj(0xABC).upper()}, sum={"requests": 1}),
        row(NS2, dims={"objectId": "\ud800" * 64}, sum={"requests": 1}),
        row(NS2, dims={"objectId": obj(5)[:-1]}, sum={"requests": 1}),
    ]
    doc["data"]["viewer"]["accounts"][0]["status"].append(
        row(NS2, dims={"status": 12}, sum={"requests": 1})
    )
    state = counted(doc)
    assert state.dropped_rows == 6
    assert NS1 in state.counters and "\ud800" not in state.counters
    text = generate_latest(registry_of(state, {}))  # no namespace list at all
    assert b"\\ud800" not in text and "\ud800".encode("utf-8", "surrogatepass") not in text
    dropped = f'{P}exporter_analytics_dropped_rows_total{{account_id="{ACCOUNT_A}"}} 6.0'
    assert dropped.encode() in text


def test_a_page_cut_inside_a_namespaces_statuses_leaves_them_to_the_next_page() -> None:
    statuses = [
        row(NS1, dims={"status": "success"}, sum={"requests": 5}),
        row(NS2, dims={"status": "success"}, sum={"requests": 5}),
        row(NS2, dims={"status": "canceled"}, sum={"requests": 1}),
    ]
    page = a.parse_analytics(answer(status=statuses), status_page_size=3)
    assert isinstance(page, AccountUsage)
    assert NS2 not in page.statuses and page.next_after == NS1


def test_an_asked_alias_missing_from_the_answer_refuses_it() -> None:
    doc = answer()
    del doc["data"]["viewer"]["accounts"][0]["hotCpu"]
    assert isinstance(a.parse_analytics(doc, require=["hotCpu"]), AnalyticsError)
    assert isinstance(a.parse_analytics(doc), AccountUsage)


# ---- the property: the exported top N is the true top N over the window ---------------

ROWS = st.lists(
    st.tuples(
        st.integers(0, 3),  # namespace
        st.integers(0, 30),  # object
        st.integers(0, 9),  # minute of the window
        st.integers(0, 10_000),  # requests
        st.integers(0, 10**9),  # CPU µs
    ),
    max_size=80,
)


def _unix(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _serve(rows: list[tuple[int, int, int, int, int]], body: Mapping[str, Any]) -> dict[str, Any]:
    """A tiny GraphQL stand-in: sums the object-level rows of the window asked for, orders
    by the sum descending (object id ascending on ties) and keeps ``$top``."""
    v = body["variables"]
    start, end = (_unix(v["start"]) - T0) // 60, (_unix(v["end"]) - T0) // 60
    top = v["top"]
    sums: dict[tuple[str, str], list[int]] = {}
    for n, o, m, req, cpu in rows:
        if not start <= m < end:
            continue
        key = (f"{n + 1:032x}", obj(o))
        acc = sums.setdefault(key, [0, 0])
        acc[0] += req
        acc[1] += cpu

    def ranked(i: int, field: str) -> list[dict[str, Any]]:
        order = sorted(sums.items(), key=lambda kv: (-kv[1][i], kv[0][1], kv[0][0]))
        return [row(k[0], dims={"objectId": k[1]}, sum={field: s[i]}) for k, s in order[:top]]

    return answer(
        invocations=[], periodic=[], status=[],
        hotRequests=ranked(0, "requests"), hotCpu=ranked(1, "cpuTime"),
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, top=st.integers(1, 12), minutes=st.integers(1, 10))
def test_property_exported_top_n_is_the_true_top_n(
    rows: list[tuple[int, int, int, int, int]], top: int, minutes: int
) -> None:
    window = Window(T0, T0 + 60 * minutes)
    usage = a.fetch_usage(lambda body: _serve(rows, body), ACCOUNT_A, window, top_objects=top)
    assert isinstance(usage, AccountUsage), usage
    state = a.advance(AnalyticsState(ACCOUNT_A), window, usage, now=0.0)
    exported: dict[str, dict[tuple[str, str], float]] = {"rps": {}, "cpu": {}}
    for fam in a.families([state]):
        key = {P + "hot_object_requests_per_second": "rps", P + "hot_object_cpu_ratio": "cpu"}
        if fam.name in key:
            for s in fam.samples:
                exported[key[fam.name]][(s.labels["namespace_id"], s.labels["object_id"])] = s.value
    truth: dict[tuple[str, str], list[int]] = {}
    for n, o, m, req, cpu in rows:
        if m >= minutes:
            continue  # outside the window asked
        acc = truth.setdefault((f"{n + 1:032x}", obj(o)), [0, 0])
        acc[0] += req
        acc[1] += cpu
    for name, i, scale in (("rps", 0, 1.0), ("cpu", 1, 1e-6)):
        values = sorted((v[i] for v in truth.values()), reverse=True)[:top]
        got = exported[name]
        assert len(got) == min(top, len(truth))
        assert sorted(got.values(), reverse=True) == [
            pytest_approx(v * scale / window.seconds) for v in values
        ]
        for key, value in got.items():  # each exported object has its own true value
            assert math.isclose(value, truth[key][i] * scale / window.seconds, rel_tol=1e-12)


def pytest_approx(x: float) -> Any:
    import pytest

    return pytest.approx(x, rel=1e-12)


# ---- limits and retries ---------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def _error(code: str, message: str = "") -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}


def test_a_transient_error_is_retried_with_backoff_within_the_deadline() -> None:
    clock = FakeTime()
    answers = [_error("timeout", "query timed out"), _error("internal"), answer()]
    sent: list[Any] = []

    def send(body: Mapping[str, Any]) -> Any:
        sent.append(body)
        return answers.pop(0)

    retry = Retry(now=lambda: clock.now, wait=clock.wait, deadline=clock.now + 60)
    assert isinstance(a.fetch_usage(send, ACCOUNT_A, W, retry=retry), AccountUsage)
    assert clock.waits == [1.0, 2.0] and len(sent) == 3
    # The deadline comes before the next backoff ends: the failure stands.
    clock2 = FakeTime()
    tight = Retry(now=lambda: clock2.now, wait=clock2.wait, deadline=clock2.now + 0.5)
    got = a.fetch_usage(lambda _b: _error("timeout"), ACCOUNT_A, W, retry=tight)
    assert isinstance(got, AnalyticsError) and clock2.waits == []


def test_a_refused_permission_or_query_is_never_retried() -> None:
    for doc in (_error("authz", "not authorized"), _error("bad_request", "limit too big")):
        calls = []

        def send(body: Mapping[str, Any], doc: Any = doc, calls: list[Any] = calls) -> Any:
            calls.append(body)
            return doc

        clock = FakeTime()
        retry = Retry(now=lambda clock=clock: clock.now, wait=clock.wait, deadline=None)
        assert isinstance(a.fetch_usage(send, ACCOUNT_A, W, retry=retry), AnalyticsError)
        assert len(calls) == 1
    assert not AnalyticsError("http", "busy", status=429).transient
    assert AnalyticsError("http", "bad gateway", status=502).transient


def test_limits_are_read_once_then_hourly_and_shape_pages() -> None:
    settings_doc = {
        "data": {"viewer": {"accounts": [{"settings": {
            d: {"enabled": True, "maxDuration": 3600, "notOlderThan": 86400, "maxPageSize": 2}
            for d in ("durableObjectsInvocationsAdaptiveGroups", "durableObjectsPeriodicGroups",
                      "durableObjectsSqlStorageGroups", "durableObjectsStorageGroups")
        }}]}}
    }  # fmt: skip
    asked: list[str] = []

    def send(body: Mapping[str, Any]) -> Any:
        asked.append(body["query"].split("(", 1)[0])
        return settings_doc

    book = LimitsBook()
    assert book.limits(ACCOUNT_A) == a.DEFAULT_LIMITS
    got = book.refresh(send, ACCOUNT_A, 0.0)
    assert got == NodeLimits(3600, 86400, 2, True)
    book.refresh(send, ACCOUNT_A, 3599.0)
    assert len(asked) == 1  # not again within the hour
    book.refresh(send, ACCOUNT_A, 3600.0)
    assert len(asked) == 2
    bodies: list[Mapping[str, Any]] = []

    def usage(body: Mapping[str, Any]) -> Any:
        bodies.append(body)
        return answer(status=[])

    a.fetch_usage(usage, ACCOUNT_A, W, limits=got)
    assert bodies[0]["variables"]["limit"] == 2 and bodies[0]["variables"]["statusLimit"] == 2
    failing = LimitsBook()
    refused = failing.refresh(lambda _b: _error("internal"), ACCOUNT_A, 0.0)
    assert isinstance(refused, AnalyticsError)
    assert failing.limits(ACCOUNT_A) == a.DEFAULT_LIMITS and failing.due(ACCOUNT_A, 1.0)


def test_with_requests_mock_through_the_client(
    requests_mock: Any, make_client: Callable[..., CloudflareClient]
) -> None:
    """The client hands back the decoded answer; a 5xx is the client's to retry, an error
    inside a 200 is the analytics' to retry; the second answer is counted."""
    base = "https://api.example.test/client/v4"
    requests_mock.post(
        base + "/graphql",
        [
            {"status_code": 502, "text": "bad gateway"},
            {"status_code": 200, "json": _error("timeout", "query timed out")},
            {"status_code": 200, "json": answer()},
        ],
    )
    client = make_client(base)
    clock = FakeTime()
    retry = Retry(now=lambda: clock.now, wait=clock.wait, deadline=clock.now + 30)
    usage = a.fetch_usage(graphql_sender(client, ACCOUNT_A), ACCOUNT_A, W, retry=retry)
    assert isinstance(usage, AccountUsage) and usage.hot_cpu is not None
    assert requests_mock.call_count == 3 and clock.waits == [1.0]
    sent = requests_mock.request_history[-1].json()
    assert sent["variables"]["top"] == 10 and "hotCpu" in sent["query"]


# ---- the simulator over real HTTP -----------------------------------------------------


def _post(sim: Simulator, body: Mapping[str, Any]) -> Any:
    from tests.conftest import TOKEN

    response = requests.post(
        sim.api_url + "/graphql",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    return a.decode_answer(response.content, status=response.status_code)


def test_simulator_object_rows_add_up_to_the_namespace_and_top_n_is_ordered(
    make_sim: Callable[..., Simulator],
) -> None:
    sim = make_sim(
        scenario({ACCOUNT_A: [
            ns(1, 500, analytics={"requests_per_minute": 900, "cpu_ms_per_request": 30}),
            ns(2, 40, analytics={"wall_ms_per_request": 400}),
            ns(3, 3),
        ]})
    )  # fmt: skip
    now = float(T0 + 7200)
    sim.graphql.clock = lambda: now
    window = Window(T0 + 7200 - 900, T0 + 7200 - 300)
    usage = a.fetch_usage(lambda b: _post(sim, b), ACCOUNT_A, window, top_objects=100)
    assert isinstance(usage, AccountUsage), usage
    assert usage.hot_requests and usage.hot_cpu
    values = [h.value for h in usage.hot_requests]
    assert values == sorted(values, reverse=True)
    per_ns: dict[str, int] = {}
    for h in usage.hot_requests:  # top 100 holds every object here: they add up exactly
        per_ns[h.namespace_id] = per_ns.get(h.namespace_id, 0) + h.value
    for ns_id, total in per_ns.items():
        assert total == usage.usage[ns_id].requests
        assert sum(usage.statuses[ns_id].values()) == usage.usage[ns_id].requests
    cpu: dict[str, int] = {}
    for h in usage.hot_cpu:
        cpu[h.namespace_id] = cpu.get(h.namespace_id, 0) + h.value
    assert all(cpu[n] == usage.usage[n].cpu_time_us for n in cpu)
    slow = usage.latency[NS2]
    q = [slow.quantiles[k] for k in ("0.5", "0.9", "0.99", "0.999")]
    assert q == sorted(q) and q[-1] <= slow.max_us
    mean = usage.usage[NS2].wall_time_us / usage.usage[NS2].requests
    assert q[0] <= mean <= slow.max_us
    top3 = a.fetch_usage(lambda b: _post(sim, b), ACCOUNT_A, window, top_objects=3)
    assert isinstance(top3, AccountUsage) and top3.hot_requests is not None
    assert [h.value for h in top3.hot_requests] == values[:3]


def test_a_lone_surrogate_never_reaches_rendering_when_the_list_failed() -> None:
    """Issue 16 item 3: the namespace list failed in the same poll (no names), and the
    GraphQL answer carries "\\ud800" as a namespaceId: the exposition renders, the row is
    counted as dropped."""
    from types import MappingProxyType

    from do_exporter.metrics.snapshot import render
    from do_exporter.model import AccountSnapshot, Snapshot

    doc = json.loads(json.dumps(answer()).replace(NS1, "\\ud800"))
    state = counted(doc)
    snap = Snapshot(
        accounts=(AccountSnapshot(ACCOUNT_A, (), namespaces_listed=False),),
        analytics=MappingProxyType({ACCOUNT_A: state}),
    )
    text = render(snap).decode("utf-8")
    assert "analytics_dropped_rows_total" in text and "\ud800" not in text
