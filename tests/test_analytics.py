"""Usage analytics: the query against Cloudflare's schema, parsing, windows, state, families,
the simulator's /graphql over real HTTP, and the never-overlap-never-gap property."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import graphql
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from do_exporter import analytics as a
from do_exporter.analytics import (
    AccountUsage,
    AnalyticsError,
    AnalyticsState,
    NamespaceUsage,
    NodeLimits,
    Window,
)
from do_exporter.model import Namespace
from do_exporter.simulator import Simulator
from do_exporter.simulator.graphql import schema_sdl
from tests.conftest import ACCOUNT_A, TOKEN, ns, scenario

ROOT = Path(__file__).resolve().parent.parent
SHARED_SCHEMA = ROOT.parent / "shared" / "reference" / "cloudflare-graphql-durable-objects.graphql"
PACKAGED_SCHEMA = ROOT / "do_exporter" / "simulator" / "schema.graphql"
NS1, NS2, NS3 = f"{1:032x}", f"{2:032x}", f"{3:032x}"
T0 = 1_717_200_000  # a whole minute (2024-06-01T00:00:00Z)
FIELDS = {**a._INVOCATION_SUMS, **a._PERIODIC_SUMS}  # API name -> NamespaceUsage field


def _schema(path: Path) -> graphql.GraphQLSchema:
    return graphql.build_schema(path.read_text("utf-8"))


# ---- the query against Cloudflare's schema --------------------------------------------


@pytest.mark.parametrize("query", [a.QUERY, a.SETTINGS_QUERY], ids=["usage", "settings"])
def test_queries_validate_against_cloudflare_schema(query: str) -> None:
    """Both queries parse and validate against the published Durable Objects schema (the
    repository's copy, which the simulator serves)."""
    assert graphql.validate(_schema(PACKAGED_SCHEMA), graphql.parse(query)) == []


def test_simulator_serves_the_repository_schema_copy() -> None:
    """The simulator serves the repository's copy of the schema; where the shared reference
    sits beside the repository, the copy is that reference byte for byte (no drift)."""
    assert schema_sdl() == PACKAGED_SCHEMA.read_text("utf-8")
    if SHARED_SCHEMA.exists():
        assert PACKAGED_SCHEMA.read_bytes() == SHARED_SCHEMA.read_bytes()


def test_usage_query_is_one_request_with_variables_only() -> None:
    """Every dataset is an alias of one query; ids and times travel as variables."""
    body = a.build_request(ACCOUNT_A, Window(T0, T0 + 300))
    doc = graphql.parse(body["query"])
    assert len(doc.definitions) == 1
    assert ACCOUNT_A not in body["query"] and "2024" not in body["query"]
    assert body["variables"] == {
        "accountTag": ACCOUNT_A,
        "start": "2024-06-01T00:00:00Z",
        "end": "2024-06-01T00:05:00Z",
        "storageStart": "2024-05-31T23:00:00Z",
        "after": "",
        "limit": a.PAGE_SIZE,
        "statusLimit": a.PAGE_SIZE * 10,
        "top": 10,
    }
    for alias, dataset in a.DATASETS.items():
        assert f"{alias}: {dataset}(" in body["query"]
    errors = graphql.validate(_schema(PACKAGED_SCHEMA), doc)
    assert errors == []


# ---- parsing canned answers -----------------------------------------------------------


def _row(ns_id: str, **parts: dict[str, Any]) -> dict[str, Any]:
    return {"dimensions": {"namespaceId": ns_id}, **parts}


INV = {"requests": 100, "errors": 3, "wallTime": 2_500_000, "responseBodySize": 4096}
PER = {
    "cpuTime": 1_500_000, "activeTime": 9_000_000, "duration": 1.125, "rowsRead": 40,
    "rowsWritten": 7, "storageReadUnits": 0, "storageWriteUnits": 0, "storageDeletes": 0,
    "inboundWebsocketMsgCount": 11, "outboundWebsocketMsgCount": 22, "subrequests": 5,
    "exceededCpuErrors": 1, "exceededMemoryErrors": 2, "fatalInternalErrors": 0,
}  # fmt: skip


def answer(
    invocations: list[dict[str, Any]] | None = None,
    periodic: list[dict[str, Any]] | None = None,
    sql: list[dict[str, Any]] | None = None,
    storage: list[dict[str, Any]] | None = None,
    **top: Any,
) -> dict[str, Any]:
    account = {
        "invocations": [_row(NS1, sum=INV)] if invocations is None else invocations,
        "periodic": (
            [_row(NS1, sum=PER, max={"activeWebsocketConnections": 4})]
            if periodic is None
            else periodic
        ),
        "sqlStorage": [_row(NS1, max={"storedBytes": 123456})] if sql is None else sql,
        "storage": (
            [{"dimensions": {"datetimeHour": "x"}, "max": {"storedBytes": 999}}]
            if storage is None
            else storage
        ),
    }
    return {"data": {"viewer": {"accounts": [account]}}, "errors": None, **top}


def test_parse_complete_answer_sums_per_namespace_in_api_units() -> None:
    """A complete answer gives per-namespace sums; µs convert to seconds at the edge."""
    usage = a.parse_analytics(json.dumps(answer()).encode())
    assert isinstance(usage, AccountUsage)
    got = usage.usage[NS1]
    assert got.requests == 100 and got.errors == 3
    assert got.wall_time_us == 2_500_000 and got.wall_time_seconds == 2.5
    assert got.cpu_time_seconds == 1.5 and got.active_time_seconds == 9.0
    assert got.duration_gb_s == 1.125 and got.response_body_bytes == 4096
    assert (got.websocket_inbound, got.websocket_outbound) == (11, 22)
    assert (got.exceeded_cpu, got.exceeded_memory, got.fatal_internal) == (1, 2, 0)
    assert usage.websockets == {NS1: 4}
    assert usage.stored_bytes == {NS1: 123456}
    assert usage.account_stored_bytes == 999
    assert usage.next_after is None


@pytest.mark.parametrize(
    "doc",
    [
        {"data": None, "errors": [{"message": "boom", "extensions": {"code": "internal"}}]},
        answer(errors=[{"message": "partial", "path": ["viewer"], "extensions": {"code": "x1"}}]),
        {**answer(), "errors": [{"message": "no code"}]},
    ],
    ids=["data-null", "partial-data", "no-extensions"],
)
def test_errors_in_a_200_are_failures_never_zeros(doc: dict[str, Any]) -> None:
    """errors[] in an HTTP 200 fails the answer, whatever data came with it."""
    result = a.parse_analytics(json.dumps(doc))
    assert isinstance(result, AnalyticsError)
    assert result.kind == "graphql" and result.status == 200
    assert result.codes and result.error_codes == result.codes


def test_error_codes_and_permission() -> None:
    """extensions.code becomes the error's codes; authz means Analytics Read is missing."""
    denied = {
        "data": None,
        "errors": [{"message": "not authorized for that account", "extensions": {"code": "authz"}}],
    }
    result = a.parse_analytics(json.dumps(denied))
    assert isinstance(result, AnalyticsError)
    assert result.codes == ("authz",) and result.permission_denied
    other = a.parse_analytics(json.dumps({"errors": [{"message": "x"}]}))
    assert isinstance(other, AnalyticsError)
    assert other.codes == ("unknown",) and not other.permission_denied


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"<html>502</html>", 502, "invalid_response"),
        (b'{"data": null}', 500, "http"),
        (b"[1,2]", 200, "invalid_response"),
        (json.dumps({"data": {"viewer": {"accounts": []}}}).encode(), 200, "invalid_response"),
        (json.dumps(answer(periodic=[])).replace('"periodic": [], ', "").encode(), 200,
         "invalid_response"),
    ],
    ids=["html", "5xx-no-errors", "not-object", "no-account", "dataset-missing"],
)  # fmt: skip
def test_unusable_answers(body: bytes, status: int, kind: str) -> None:
    """Anything but a complete answer is an error of a kind, never an empty usage."""
    result = a.parse_analytics(body, status=status)
    assert isinstance(result, AnalyticsError), result
    assert result.kind == kind


@pytest.mark.parametrize(
    "bad",
    [-1, 2**64, "12x", None, True, float("inf"), 1.5],
    ids=["negative", "huge", "text", "null", "bool", "inf", "fraction"],
)
def test_absurd_numbers_refused(bad: Any) -> None:
    """A count that is negative, too large, fractional or not a number fails the answer."""
    doc = answer(invocations=[_row(NS1, sum={**INV, "requests": bad})])
    result = a.parse_analytics(json.dumps(doc))
    assert isinstance(result, AnalyticsError) and result.kind == "invalid_response"


def test_sizes_are_bounded() -> None:
    """More rows than the page asked for, or a body past the cap, are refused."""
    rows = [_row(f"{i:032x}", sum=INV) for i in range(3)]
    assert isinstance(a.parse_analytics(answer(invocations=rows), page_size=2), AnalyticsError)
    huge = b" " * (a.MAX_BODY_BYTES + 1)
    assert isinstance(a.parse_analytics(huge), AnalyticsError)
    long_id = answer(invocations=[_row("x" * (a.MAX_ID_LENGTH + 1), sum=INV)])
    dropped = a.parse_analytics(long_id)  # a bad row is dropped and counted, not a failure
    assert isinstance(dropped, AccountUsage) and dropped.dropped == 1


def test_pagination_next_after_and_merge() -> None:
    """A full dataset page asks for more after its smallest last id; merge de-duplicates."""
    page1 = answer(
        invocations=[_row(NS1, sum=INV), _row(NS2, sum=INV)],
        periodic=[_row(NS1, sum=PER, max={"activeWebsocketConnections": 1})],
        sql=[_row(NS1, max={"storedBytes": 5}), _row(NS3, max={"storedBytes": 6})],
    )
    first = a.parse_analytics(page1, page_size=2)
    assert isinstance(first, AccountUsage) and first.next_after == NS2
    page2 = answer(
        invocations=[_row(NS3, sum=INV)],
        periodic=[],
        sql=[_row(NS3, max={"storedBytes": 60})],
        storage=[],
    )
    second = a.parse_analytics(page2, page_size=2)
    assert isinstance(second, AccountUsage) and second.next_after is None
    merged = first.merge(second)
    assert merged.next_after is None
    assert set(merged.usage) == {NS1, NS2, NS3}
    assert merged.stored_bytes == {NS1: 5, NS3: 6}  # NS3 seen twice: the first answer wins
    assert merged.account_stored_bytes == 999


def test_parse_settings_takes_the_most_restrictive() -> None:
    """The limits are the minimum over the four datasets; enabled only if all are."""
    node = {"enabled": True, "maxDuration": 259200, "notOlderThan": 2678400, "maxPageSize": 10000}
    settings_ = {name: dict(node) for name in a.DATASETS.values()}
    settings_["durableObjectsPeriodicGroups"]["maxDuration"] = 86400
    doc = {"data": {"viewer": {"accounts": [{"settings": settings_}]}}}
    assert a.parse_settings(doc) == NodeLimits(86400, 2678400, 10000, True)


# ---- windows --------------------------------------------------------------------------


def test_first_window_is_last_interval_of_closed_minutes() -> None:
    """Start-up: [floor(now - delay) - interval, floor(now - delay)), whole minutes."""
    now = T0 + 3600 + 42.5
    assert a.next_window(None, now, delay=300, interval=300) == Window(
        T0 + 3600 - 300 - 300, T0 + 3600 - 300
    )
    assert a.next_window(None, now, delay=0, interval=90).seconds == 120  # rounded up


def test_window_continues_from_watermark_and_waits_for_a_closed_minute() -> None:
    """The next window starts at the watermark; nothing is asked before a minute closes."""
    now = T0 + 1000
    end = a.floor_minute(now - 300)
    assert a.next_window(end - 120, now, delay=300, interval=300) == Window(end - 120, end)
    assert a.next_window(end, now, delay=300, interval=300) is None
    assert a.next_window(end, now + 59, delay=300, interval=300) is None or (
        a.floor_minute(now + 59 - 300) > end
    )


def test_gaps_beyond_limits_are_skipped_and_counted() -> None:
    """A watermark older than notOlderThan, or a gap wider than maxDuration, is skipped."""
    limits = NodeLimits(max_duration=3600, not_older_than=7200)
    now = float(T0 + 10 * 3600)
    end = a.floor_minute(now - 300)
    wide = a.next_window(end - 5000, now, delay=300, interval=300, limits=limits)
    assert wide == Window(end - 3600, end, skipped=5000 - 3600)
    old = a.next_window(T0, now, delay=300, interval=300, limits=NodeLimits(86400, 7200))
    assert old is not None and old.start == a.ceil_minute(now - 7200 + 60)
    assert old.skipped == old.start - T0 and old.end == end


# ---- state and families ---------------------------------------------------------------


def _usage(ns_id: str = NS1, n: int = 1, **kw: Any) -> AccountUsage:
    return AccountUsage(
        usage={ns_id: NamespaceUsage(requests=n, cpu_time_us=1000 * n)},
        websockets={ns_id: n},
        stored_bytes={ns_id: 100 * n},
        **kw,
    )


def test_advance_counts_and_moves_the_watermark_only_on_success() -> None:
    """Counters add up; a failure changes nothing but the query counts."""
    s0 = AnalyticsState(ACCOUNT_A)
    s1 = a.advance(s0, Window(T0, T0 + 300), _usage(n=5), now=T0 + 700)
    assert s1.watermark == T0 + 300 and s1.first_start == T0
    s2 = a.record_failure(s1, AnalyticsError("graphql", "x", ("internal",)))
    assert (s2.watermark, s2.counters) == (s1.watermark, s1.counters)
    assert dict(s2.queries) == {"success": 1, "failure": 1, "denied": 0}
    s3 = a.advance(s2, Window(T0 + 300, T0 + 600), _usage(n=2), now=T0 + 1000)
    assert s3.counters[NS1].requests == 7 and s3.websockets[NS1] == 2
    assert s3.last_success_at == T0 + 1000 and s3.last_error is None
    assert s0.watermark is None  # nothing was mutated


def test_advance_refuses_overlap_gap_and_incomplete_answers() -> None:
    """A window that does not continue the watermark, or an unfinished answer, raises."""
    s1 = a.advance(AnalyticsState(ACCOUNT_A), Window(T0, T0 + 300), _usage(), now=T0)
    for bad in (Window(T0 + 240, T0 + 600), Window(T0 + 360, T0 + 600)):
        with pytest.raises(ValueError):
            a.advance(s1, bad, _usage(), now=T0)
    with pytest.raises(ValueError):
        a.advance(s1, Window(T0 + 300, T0 + 600), _usage(next_after=NS1), now=T0)
    skipped = a.advance(s1, Window(T0 + 360, T0 + 600, skipped=60), _usage(), now=T0)
    assert skipped.skipped_seconds == 60


def _samples(state: AnalyticsState, names: dict[str, list[Namespace]]) -> CollectorRegistry:
    registry = CollectorRegistry()

    class _C:
        def collect(self) -> list[Any]:
            return a.families([state], names)

    registry.register(_C())  # type: ignore[arg-type]
    return registry


def test_families_contract_names_labels_and_units() -> None:
    """Every contract family, labelled, in seconds and bytes, with no _created series."""
    usage = AccountUsage(
        usage={NS1: a.parse_analytics(answer()).usage[NS1]},  # type: ignore[union-attr]
        websockets={NS1: 4},
        stored_bytes={NS1: 123456},
        account_stored_bytes=999,
    )
    state = a.advance(AnalyticsState(ACCOUNT_A), Window(T0, T0 + 300), usage, now=T0 + 1)
    registry = _samples(state, {ACCOUNT_A: [Namespace(NS1, name="app_Counter")]})
    labels = {"account_id": ACCOUNT_A, "namespace_id": NS1, "namespace_name": "app_Counter"}
    p = "cloudflare_durable_objects_"
    expected = {
        "requests_total": 100, "errors_total": 3, "wall_time_seconds_total": 2.5,
        "response_body_bytes_total": 4096, "cpu_time_seconds_total": 1.5,
        "active_time_seconds_total": 9.0, "duration_gigabyte_seconds_total": 1.125,
        "rows_read_total": 40, "rows_written_total": 7, "storage_read_units_total": 0,
        "storage_write_units_total": 0, "storage_deletes_total": 0, "subrequests_total": 5,
        "busiest_object_websocket_connections": 4, "stored_bytes": 123456,
    }  # fmt: skip
    for name, value in expected.items():
        assert registry.get_sample_value(p + name, labels) == value, name
    for direction, value in (("inbound", 11), ("outbound", 22)):
        got = registry.get_sample_value(
            p + "websocket_messages_total", {**labels, "direction": direction}
        )
        assert got == value
    for reason, value in (("exceeded_cpu", 1), ("exceeded_memory", 2), ("fatal_internal", 0)):
        got = registry.get_sample_value(p + "failures_total", {**labels, "reason": reason})
        assert got == value
    acc = {"account_id": ACCOUNT_A}
    assert registry.get_sample_value(p + "account_stored_bytes", acc) == 999
    s = p + "exporter_analytics_"
    assert registry.get_sample_value(s + "watermark_timestamp_seconds", acc) == T0 + 300
    assert registry.get_sample_value(s + "last_success_timestamp_seconds", acc) == T0 + 1
    assert registry.get_sample_value(s + "queries_total", {**acc, "result": "success"}) == 1
    assert registry.get_sample_value(s + "queries_total", {**acc, "result": "failure"}) == 0
    assert registry.get_sample_value(s + "skipped_seconds_total", acc) == 0
    text = generate_latest(registry).decode()
    assert "_created" not in text


def test_unknown_namespace_name_is_empty_missing_keeps_series_gone_loses_them() -> None:
    """Name "" when not listed; absent from an answer keeps its series; forget drops them."""
    s1 = a.advance(AnalyticsState(ACCOUNT_A), Window(T0, T0 + 60), _usage(NS1, 3), now=T0)
    s2 = a.advance(s1, Window(T0 + 60, T0 + 120), _usage(NS2, 1), now=T0)
    registry = _samples(s2, {})
    name = "cloudflare_durable_objects_requests_total"
    labels = {"account_id": ACCOUNT_A, "namespace_id": NS1, "namespace_name": ""}
    assert registry.get_sample_value(name, labels) == 3
    assert registry.get_sample_value("cloudflare_durable_objects_stored_bytes", labels) == 300
    s3 = a.forget(s2, [NS1])
    assert NS1 not in s3.counters and NS1 not in s3.stored_bytes and NS2 in s3.counters
    assert _samples(s3, {}).get_sample_value(name, labels) is None


def test_no_counters_before_a_counted_window() -> None:
    """Before any answer: query counts (all 0) and skipped seconds, no usage series."""
    fams = {m.name: m for m in a.families([AnalyticsState(ACCOUNT_A)])}
    assert not fams["cloudflare_durable_objects_requests"].samples
    queries = fams["cloudflare_durable_objects_exporter_analytics_queries"].samples
    assert sorted(s.labels["result"] for s in queries) == ["denied", "failure", "success"]
    assert {m.name for m in a.empty_families()} == set(fams)


# ---- the simulator's /graphql ---------------------------------------------------------


def _analytics_scenario(**traffic: Any) -> Any:
    return scenario(
        {
            ACCOUNT_A: [
                ns(1, 500, analytics={"requests_per_minute": 5000, **traffic}),
                ns(2, 40, analytics={"websocket_connections": 10}),
                ns(3, 7),
            ]
        }
    )


def _post(sim: Simulator, body: dict[str, Any] | bytes, token: str = TOKEN) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        sim.api_url + "/graphql",
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )


def _fetch(sim: Simulator, window: Window, page_size: int = a.PAGE_SIZE) -> AccountUsage:
    usage: AccountUsage | None = None
    after = ""
    for _ in range(a.MAX_PAGES):
        response = _post(sim, a.build_request(ACCOUNT_A, window, after=after, page_size=page_size))
        page = a.parse_analytics(response.content, status=response.status_code, page_size=page_size)
        assert isinstance(page, AccountUsage), page
        usage = page if usage is None else usage.merge(page)
        if page.next_after is None:
            return usage
        after = page.next_after
    raise AssertionError("too many pages")


def _check_truth(sim: Simulator, usage: AccountUsage, window: Window) -> None:
    for ns_id in sim.namespace_ids(ACCOUNT_A):
        truth = sim.graphql.truth(ACCOUNT_A, ns_id, window.start, window.end)
        got = usage.usage.get(ns_id, NamespaceUsage())
        for api_name, ours in FIELDS.items():
            assert getattr(got, ours) == truth[api_name], (ns_id, api_name)


def test_http_answer_equals_truth_and_pages_add_up(make_sim: Callable[..., Simulator]) -> None:
    """Over real HTTP, closed minutes answer the truth; one page or four, the same sums."""
    sim = make_sim(_analytics_scenario())
    now = float(T0 + 7200)
    sim.graphql.clock = lambda: now
    window = a.next_window(None, now, delay=300, interval=600)
    assert window is not None
    whole = _fetch(sim, window)
    _check_truth(sim, whole, window)
    assert whole.websockets[NS2] > 0 and NS2 in whole.stored_bytes
    sim.reset_stats()
    paged = _fetch(sim, window, page_size=1)
    assert paged.usage == whole.usage and paged.stored_bytes == whole.stored_bytes
    # Three namespaces, one a page: the third page is full, so a fourth (empty) one ends it.
    assert sim.stats()["requests"]["graphql"]["200"] == 4


def test_sampled_dataset_and_incomplete_recent_minutes(make_sim: Callable[..., Simulator]) -> None:
    """Invocations above 1,000/min are sampled; minutes within the lag are incomplete."""
    sim = make_sim(_analytics_scenario())
    now = float(T0 + 7200)
    sim.graphql.clock = lambda: now
    window = Window(T0 + 7200 - 600, T0 + 7200 - 300)
    exact = sim.graphql.truth(ACCOUNT_A, NS1, window.start, window.end, sampled=False)
    served = sim.graphql.truth(ACCOUNT_A, NS1, window.start, window.end)
    assert served["requests"] % 10 == 0 and exact["requests"] != served["requests"]
    recent = Window(T0 + 7200 - 180, T0 + 7200 - 60)
    got = _fetch(sim, recent)
    truth = sim.graphql.truth(ACCOUNT_A, NS1, recent.start, recent.end)
    assert got.usage[NS1].cpu_time_us < truth["cpuTime"]


def test_rejected_queries_are_cloudflare_shaped(make_sim: Callable[..., Simulator]) -> None:
    """Invalid queries, foreign accounts and wide ranges: errors[] with a code, in a 200."""
    sim = make_sim(_analytics_scenario())
    now = float(T0 + 7200)
    sim.graphql.clock = lambda: now
    bad = _post(sim, {"query": '{ viewer { accounts(filter: {accountTag: "a"}) { nope } } }'})
    assert bad.status_code == 200
    assert bad.json()["data"] is None
    assert bad.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    foreign = a.build_request("f" * 32, Window(T0, T0 + 300))
    denied = a.parse_analytics(_post(sim, foreign).content)
    assert isinstance(denied, AnalyticsError) and denied.permission_denied
    wide = a.build_request(ACCOUNT_A, Window(T0 - 4 * 86400, T0))
    result = a.parse_analytics(_post(sim, wide).content)
    assert isinstance(result, AnalyticsError) and "too large" in result.messages[0]
    sim.inject("success_false", endpoint="graphql", message="unable to execute query")
    failed = _post(sim, a.build_request(ACCOUNT_A, Window(T0, T0 + 300)))
    assert failed.status_code == 200
    assert isinstance(a.parse_analytics(failed.content), AnalyticsError)
    assert _post(sim, b"{}", token="wrong").status_code == 401


def test_graphql_budget_is_its_own(make_sim: Callable[..., Simulator]) -> None:
    """Past the GraphQL budget a 429 with Retry-After and errors[]; REST is unaffected."""
    sim = make_sim(_analytics_scenario())
    sim.graphql.budget = 3
    body = a.build_request(ACCOUNT_A, Window(T0, T0 + 60))
    sim.graphql.clock = lambda: float(T0 + 7200)
    assert [_post(sim, body).status_code for _ in range(3)] == [200] * 3
    limited = _post(sim, body)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert isinstance(a.parse_analytics(limited.content, status=429), AnalyticsError)
    rest = requests.get(
        sim.api_url + "/accounts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert rest.status_code == 200


# ---- the property: never overlap, never silently gap ----------------------------------

_SIM = Simulator(_analytics_scenario(), seed=3)
DELAY = 180  # >= the simulator's lag: every window asked for is complete


@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2400),
            st.sampled_from(["ok", "ok", "ok", "fail", "restart"]),
        ),
        min_size=1,
        max_size=15,
    ),
    interval=st.sampled_from([60, 90, 300]),
)
@settings(max_examples=30, deadline=None)
def test_counters_equal_truth_over_counted_windows(
    steps: list[tuple[int, str]], interval: int
) -> None:
    """For any poll times, failures and poller restarts, counters equal the truth summed
    over [first window start, watermark) minus what was reported skipped."""
    endpoint = _SIM.graphql
    limits = NodeLimits(max_duration=1800, not_older_than=3600)
    state = AnalyticsState(ACCOUNT_A)
    skipped: list[tuple[int, int]] = []
    now = float(T0 + 86_400)
    for gap, action in steps:
        now += gap
        endpoint.clock = lambda now=now: now  # type: ignore[misc]
        window = a.next_window(state.watermark, now, delay=DELAY, interval=interval, limits=limits)
        if window is None:
            continue
        if window.skipped:
            skipped.append((window.start - window.skipped, window.start))
        if window.seconds == 0:
            state = a.skip(state, window)
            continue
        req = a.build_request(ACCOUNT_A, window)
        body = endpoint.execute(req["query"], req["variables"])
        if action == "fail":
            state = a.record_failure(state)
            if window.skipped:
                skipped.pop()  # not applied: the next window reports the gap again
            continue
        if action == "restart":  # the answer came, the poller died before applying it
            if window.skipped:
                skipped.pop()
            continue
        usage = a.parse_analytics(body)
        assert isinstance(usage, AccountUsage), usage
        state = a.advance(state, window, usage, now=now)
    if state.watermark is None:
        assert not state.counters
        return
    assert state.first_start is not None
    assert state.skipped_seconds == sum(end - start for start, end in skipped)
    for ns_id in _SIM.namespace_ids(ACCOUNT_A):
        truth = endpoint.truth(ACCOUNT_A, ns_id, state.first_start, state.watermark)
        for start, end in skipped:
            lost = endpoint.truth(ACCOUNT_A, ns_id, start, end)
            truth = {k: v - lost[k] for k, v in truth.items()}
        got = state.counters.get(ns_id, NamespaceUsage())
        for api_name, ours in FIELDS.items():
            assert getattr(got, ours) == truth[api_name], (ns_id, api_name)
