"""The API client's edge cases with canned responses (requests-mock): pagination, envelopes,
retries, rate-limit headers, errors."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from requests_mock import ANY
from requests_mock import Mocker as requests_mock_mocker
from structlog.testing import capture_logs

from do_exporter.cloudflare import (
    MAX_LABEL_VALUE,
    TRUNCATED_MARKER,
    CloudflareAPIError,
    CloudflareClient,
    RetryPolicy,
    parse_envelope,
    parse_objects_page,
    parse_ratelimit,
    parse_retry_after,
)
from do_exporter.config import Secret
from do_exporter.ratelimit import RateLimiter
from do_exporter.selfmetrics import ExporterMetrics
from tests.conftest import FAST_RETRY

BASE = "https://api.test/client/v4"
ACC = "0123456789abcdef0123456789abcdef"
NS_URL = f"{BASE}/accounts/{ACC}/workers/durable_objects/namespaces"
NSID = "b" * 32
OBJ_URL = f"{NS_URL}/{NSID}/objects"
TOKEN = "tok-very-secret-123"


def env(result: Any, info: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    body.update(extra)
    return body


def err(code: int, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


def nid(tag: str) -> str:
    """A 32-hex namespace or account id, stable per tag."""
    return hashlib.md5(tag.encode()).hexdigest()


def objects(n: int, stored_every: int = 2) -> list[dict[str, Any]]:
    return [{"id": f"{i:064x}", "hasStoredData": i % stored_every == 0} for i in range(n)]


@pytest.fixture
def metrics() -> ExporterMetrics:
    return ExporterMetrics()


@pytest.fixture
def client(metrics: ExporterMetrics) -> CloudflareClient:
    return CloudflareClient(
        requests.Session(),
        BASE,
        Secret(TOKEN),
        limiter=RateLimiter(100_000),
        retry=FAST_RETRY,
        observer=metrics,
        rng=random.Random(3),
    )


def sample(metrics: ExporterMetrics, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry.get_sample_value(name, labels)


def api_errors(metrics: ExporterMetrics, endpoint: str, error_code: str) -> float | None:
    return sample(
        metrics,
        "cloudflare_durable_objects_exporter_api_errors_total",
        endpoint=endpoint,
        error_code=error_code,
    )


def api_requests(metrics: ExporterMetrics, endpoint: str, code: str) -> float | None:
    return sample(
        metrics,
        "cloudflare_durable_objects_exporter_api_requests_total",
        endpoint=endpoint,
        code=code,
    )


# -- page-number pagination ------------------------------------------------------------


def test_namespaces_stop_at_total_pages(client: CloudflareClient, requests_mock: Any) -> None:
    """Pages are fetched until total_pages, with the largest page size, and no extra page."""
    pages = [
        env(
            [{"id": nid(f"n{p}{i}"), "name": f"x{p}{i}"} for i in range(3)],
            {"page": p, "per_page": 1000, "total_pages": 3, "count": 3, "total_count": 9},
        )
        for p in (1, 2, 3)
    ]
    requests_mock.get(NS_URL, [{"json": page} for page in pages])
    result = client.list_namespaces(ACC)
    assert [n.id for n in result] == [nid(f"n{p}{i}") for p in (1, 2, 3) for i in range(3)]
    assert requests_mock.call_count == 3
    assert [r.qs["page"] for r in requests_mock.request_history] == [["1"], ["2"], ["3"]]
    assert requests_mock.request_history[0].qs["per_page"] == ["1000"]
    assert requests_mock.request_history[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_namespaces_server_capped_page_size(client: CloudflareClient, requests_mock: Any) -> None:
    """Without total_pages, a page is short only against the size the server says it used."""
    pages = [
        env([{"id": nid(f"n{p}{i}")} for i in range(2)], {"page": p, "per_page": 2}) for p in (1, 2)
    ] + [env([{"id": nid("last")}], {"page": 3, "per_page": 2})]
    requests_mock.get(NS_URL, [{"json": page} for page in pages])
    assert len(client.list_namespaces(ACC)) == 5
    assert requests_mock.call_count == 3


def test_namespaces_server_ignoring_page(client: CloudflareClient, requests_mock: Any) -> None:
    """A server that repeats page 1 while announcing more pages gives an error, not a
    silently short list (whose missing namespaces would lose their series)."""
    same = env([{"id": nid("a")}, {"id": nid("b")}], {"per_page": 2, "total_pages": 5})
    requests_mock.get(NS_URL, json=same)
    with pytest.raises(CloudflareAPIError, match="repeated an earlier page"):
        client.list_namespaces(ACC)
    assert requests_mock.call_count == 2


def test_namespaces_total_count_continues_past_an_unannounced_cap(
    client: CloudflareClient, requests_mock: Any
) -> None:
    """A server that caps per_page silently is followed until total_count is reached."""
    requests_mock.get(
        NS_URL,
        [
            {"json": env([{"id": nid(f"p{p}i{i}")} for i in range(100)], {"total_count": 250})}
            for p in (1, 2)
        ]
        + [{"json": env([{"id": nid(f"p3i{i}")} for i in range(50)], {"total_count": 250})}],
    )
    assert len(client.list_namespaces(ACC)) == 250
    assert requests_mock.call_count == 3


def test_namespace_fields_missing_become_none(client: CloudflareClient, requests_mock: Any) -> None:
    """Fields the API leaves out (or sends with the wrong type) become None; no id: dropped."""
    requests_mock.get(
        NS_URL,
        json=env(
            [{"id": nid("a"), "class": "C", "use_sqlite": "yes"}, {"name": "no id"}],
            {"total_pages": 1},
        ),
    )
    [only] = client.list_namespaces(ACC)
    assert (only.id, only.class_name, only.name, only.script, only.use_sqlite) == (
        nid("a"),
        "C",
        None,
        None,
        None,
    )


def test_namespaces_duplicate_ids_counted_once(
    client: CloudflareClient, requests_mock: Any
) -> None:
    """An id repeated on the same page or on a later one is listed once."""
    a, b, c = nid("a"), nid("b"), nid("c")
    requests_mock.get(
        NS_URL,
        [
            {"json": env([{"id": a}, {"id": a}, {"id": b}], {"total_pages": 2})},
            {"json": env([{"id": b}, {"id": c}, {"id": c}], {"total_pages": 2})},
        ],
    )
    assert [n.id for n in client.list_namespaces(ACC)] == [a, b, c]
    assert requests_mock.call_count == 2


@pytest.mark.parametrize("info", [{"total_count": 3}, {"per_page": 3}])
def test_namespaces_item_without_id_still_counts_as_a_position(
    client: CloudflareClient, requests_mock: Any, info: dict[str, int]
) -> None:
    """A page's end is judged by how many items came, not how many ids: an item without an
    id neither asks for one page too many nor makes the next page look repeated."""
    page1 = env([{"id": nid("a")}, {"name": "no id"}, {"id": nid("b")}], info)
    requests_mock.get(
        NS_URL,
        [{"json": page1}, {"json": env([{"id": nid("c")}], {**info, "page": 2})}],
    )
    names = [n.id for n in client.list_namespaces(ACC)]
    if "total_count" in info:  # three items of three: one page
        assert (names, requests_mock.call_count) == ([nid("a"), nid("b")], 1)
    else:  # a full page of three, then a short one
        assert (names, requests_mock.call_count) == ([nid("a"), nid("b"), nid("c")], 2)


def test_ids_not_32_hex_are_skipped_with_one_warning(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """Namespace and account ids other than 32 lowercase hex never reach a request path:
    skipped, one warning and one invalid_response error per list."""
    bad = ["nsid", "../../../user/tokens", nid("x").upper(), nid("x")[:31], 7, None]
    requests_mock.get(
        NS_URL,
        json=env([{"id": v} for v in bad] + [{"id": nid("ok")}], {"total_pages": 1}),
    )
    requests_mock.get(
        f"{BASE}/accounts",
        json=env([{"id": v, "name": "n"} for v in bad] + [{"id": ACC, "name": "A"}], {}),
    )
    with capture_logs() as logs:
        assert [n.id for n in client.list_namespaces(ACC)] == [nid("ok")]
        assert [(a.id, a.name) for a in client.list_accounts()] == [(ACC, "A")]
    skipped = [e for e in logs if e["event"].startswith("invalid items skipped")]
    assert [(e["endpoint"], e["count"]) for e in skipped] == [
        ("namespaces", len(bad)),
        ("accounts", len(bad)),
    ]
    assert api_errors(metrics, "namespaces", "invalid_response") == 1
    assert api_errors(metrics, "accounts", "invalid_response") == 1


@pytest.mark.parametrize("namespace_id", ["nsid", "../" + "b" * 32, "B" * 32, ""])
def test_count_objects_refuses_an_id_unfit_for_a_path(
    client: CloudflareClient, requests_mock: Any, namespace_id: str
) -> None:
    """A namespace or account id that is not 32 hex fails without any request."""
    requests_mock.get(ANY, json=env([], {"cursor": ""}))
    with pytest.raises(CloudflareAPIError) as info:
        client.count_objects(ACC, namespace_id)
    assert info.value.kind == "invalid_response"
    with pytest.raises(CloudflareAPIError):
        client.list_namespaces(namespace_id or "x")
    assert requests_mock.call_count == 0


def test_long_label_values_are_truncated_and_counted(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """Names, classes, scripts and account names over MAX_LABEL_VALUE characters are cut,
    end in the marker, and each cut is counted; the counter reads 0 before any."""
    truncated = "cloudflare_durable_objects_exporter_label_values_truncated_total"
    assert sample(metrics, truncated) == 0
    long = "é" * 5000
    exact = "x" * MAX_LABEL_VALUE
    requests_mock.get(
        NS_URL,
        json=env(
            [{"id": nid("a"), "name": long, "class": exact, "script": long}], {"total_pages": 1}
        ),
    )
    requests_mock.get(f"{BASE}/accounts", json=env([{"id": ACC, "name": long}], {}))
    [ns] = client.list_namespaces(ACC)
    [account] = client.list_accounts()
    assert ns.class_name == exact  # at the limit: untouched
    for value in (ns.name, ns.script, account.name):
        assert value is not None and len(value) == MAX_LABEL_VALUE
        assert value == long[: MAX_LABEL_VALUE - len(TRUNCATED_MARKER)] + TRUNCATED_MARKER
    assert sample(metrics, truncated) == 3


def test_accounts_beyond_5000_are_listed(client: CloudflareClient, requests_mock: Any) -> None:
    """GET /accounts (50 a page) has its own page cap: 6,000 accounts are 120 pages."""
    pages = [
        env([{"id": f"{p * 50 + i:032x}", "name": "n"} for i in range(50)], {"total_pages": 120})
        for p in range(120)
    ]
    requests_mock.get(f"{BASE}/accounts", [{"json": page} for page in pages])
    assert len(client.list_accounts()) == 6000
    assert requests_mock.call_count == 120


# -- cursor pagination ----------------------------------------------------------------


@pytest.mark.parametrize("shape", ["cursor", "cursors", "both"])
def test_objects_walk_every_cursor_shape(
    client: CloudflareClient, requests_mock: Any, shape: str
) -> None:
    """The next cursor is read from result_info.cursor or result_info.cursors.after."""

    def info(next_cursor: str) -> dict[str, Any]:
        out: dict[str, Any] = {"count": 10}
        if shape in ("cursor", "both"):
            out["cursor"] = next_cursor
        if shape in ("cursors", "both"):
            out["cursors"] = {"after": next_cursor}
        return out

    requests_mock.get(
        OBJ_URL,
        [
            {"json": env(objects(10_000), info("c1"))},
            {"json": env(objects(10_000, 4), info("c2"))},
            {"json": env(objects(7), info(""))},
        ],
    )
    count = client.count_objects(ACC, NSID)
    assert (count.objects, count.with_stored_data, count.pages) == (20_007, 5000 + 2500 + 4, 3)
    history = requests_mock.request_history
    assert [r.qs.get("cursor") for r in history] == [None, ["c1"], ["c2"]]
    assert all(r.qs["limit"] == ["10000"] for r in history)


def test_objects_cursors_after_wins_over_a_different_cursor(
    client: CloudflareClient, requests_mock: Any
) -> None:
    """When result_info.cursor and cursors.after differ, cursors.after is followed (what the
    current SDKs read); an empty cursors.after falls back to cursor."""
    requests_mock.get(
        OBJ_URL,
        [
            {"json": env(objects(2), {"cursor": "old", "cursors": {"after": "new"}})},
            {"json": env(objects(2), {"cursor": "c2", "cursors": {"after": ""}})},
            {"json": env(objects(2), {"cursor": "", "cursors": {"after": ""}})},
        ],
    )
    assert client.count_objects(ACC, NSID).objects == 6
    assert [r.qs.get("cursor") for r in requests_mock.request_history] == [None, ["new"], ["c2"]]


def test_objects_empty_namespace_is_one_request(
    client: CloudflareClient, requests_mock: Any
) -> None:
    requests_mock.get(OBJ_URL, json=env([], {"cursor": ""}))
    assert client.count_objects(ACC, NSID).objects == 0
    assert requests_mock.call_count == 1


def test_objects_empty_page_ends_walk_despite_cursor(
    client: CloudflareClient, requests_mock: Any
) -> None:
    """An empty result ends the walk even if a cursor is present."""
    requests_mock.get(
        OBJ_URL,
        [
            {"json": env(objects(3), {"cursor": "c1"})},
            {"json": env([], {"cursor": "c2"})},
        ],
    )
    assert client.count_objects(ACC, NSID).objects == 3
    assert requests_mock.call_count == 2


def test_objects_repeated_cursor_is_an_error(client: CloudflareClient, requests_mock: Any) -> None:
    """A cursor seen before ends the walk with an error, not a loop or a partial count."""
    requests_mock.get(
        OBJ_URL,
        [
            {"json": env(objects(5), {"cursor": "c1"})},
            {"json": env(objects(5), {"cursor": "c2"})},
            {"json": env(objects(5), {"cursor": "c1"})},
        ],
    )
    with pytest.raises(CloudflareAPIError, match="repeated a cursor"):
        client.count_objects(ACC, NSID)
    assert requests_mock.call_count == 3


def test_objects_walk_is_bounded(metrics: ExporterMetrics, requests_mock: Any) -> None:
    """An endless walk stops at max_object_pages with an error."""
    counter = iter(range(10**6))
    client = CloudflareClient(
        requests.Session(),
        BASE,
        Secret(TOKEN),
        limiter=RateLimiter(100_000),
        max_object_pages=5,
        observer=metrics,
    )
    requests_mock.get(OBJ_URL, json=lambda r, c: env(objects(1), {"cursor": f"c{next(counter)}"}))
    with pytest.raises(CloudflareAPIError, match="more than 5 pages"):
        client.count_objects(ACC, NSID)
    assert requests_mock.call_count == 5
    assert api_errors(metrics, "objects", "invalid_response") == 1


def test_objects_walk_bound_per_call(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """count_objects(max_pages=...) bounds one walk below the client's max_object_pages."""
    counter = iter(range(10**6))
    requests_mock.get(OBJ_URL, json=lambda r, c: env(objects(1), {"cursor": f"c{next(counter)}"}))
    with pytest.raises(CloudflareAPIError, match="more than 3 pages") as info:
        client.count_objects(ACC, NSID, max_pages=3)
    assert info.value.kind == "invalid_response"
    assert requests_mock.call_count == 3
    assert api_errors(metrics, "objects", "invalid_response") == 1


def test_objects_missing_result_info_is_invalid(
    client: CloudflareClient, requests_mock: Any
) -> None:
    """Without result_info nobody can tell whether more pages follow: an error, not a count."""
    requests_mock.get(OBJ_URL, json=env(objects(10)))
    with pytest.raises(CloudflareAPIError) as info:
        client.count_objects(ACC, NSID)
    assert info.value.kind == "invalid_response"
    assert requests_mock.call_count == 1


# -- errors and retries ---------------------------------------------------------------


def test_429_with_retry_after_pauses_then_succeeds(
    metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """A 429 pauses the shared limiter for Retry-After, then the request is retried."""
    limiter = RateLimiter(100_000)
    client = CloudflareClient(
        requests.Session(), BASE, Secret(TOKEN), limiter=limiter, retry=FAST_RETRY, observer=metrics
    )
    requests_mock.get(
        OBJ_URL,
        [
            {"status_code": 429, "json": err(971, "Please wait"), "headers": {"Retry-After": "1"}},
            {"json": env(objects(4), {"cursor": ""})},
        ],
    )
    assert client.count_objects(ACC, NSID).objects == 4
    assert limiter.paused_for() == 0  # the pause was waited out by the retry
    assert api_requests(metrics, "objects", "429") == 1
    assert api_errors(metrics, "objects", "971") == 1


def test_html_502_is_retried_then_succeeds(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """An edge HTML error page is an error without an envelope, retried like any 5xx."""
    requests_mock.get(
        NS_URL,
        [
            {
                "status_code": 502,
                "text": "<html><body>Bad gateway</body></html>",
                "headers": {"Content-Type": "text/html", "CF-Ray": "8a1b-LHR"},
            },
            {"json": env([{"id": nid("x")}], {"total_pages": 1})},
        ],
    )
    assert [n.id for n in client.list_namespaces(ACC)] == [nid("x")]
    assert api_errors(metrics, "namespaces", "invalid_response") == 1


def test_transport_error_retried_then_gives_up(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """Connection errors are retried up to the policy's attempts, then raised."""
    requests_mock.get(NS_URL, exc=requests.ConnectionError("refused"))
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert info.value.kind == "transport"
    assert requests_mock.call_count == FAST_RETRY.attempts
    assert api_requests(metrics, "namespaces", "transport") == FAST_RETRY.attempts


@pytest.mark.parametrize("status", [501, 505])
def test_not_implemented_is_not_retried(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any, status: int
) -> None:
    """501 and 505 never succeed on a retry: one attempt, one error."""
    requests_mock.get(NS_URL, status_code=status, text="<html>no</html>")
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert (info.value.kind, info.value.status) == ("http", status)
    assert requests_mock.call_count == 1


@pytest.mark.parametrize(("status", "code"), [(403, 10000), (401, 9106), (404, 10066), (400, 7003)])
def test_client_errors_are_not_retried(
    client: CloudflareClient, requests_mock: Any, status: int, code: int
) -> None:
    """4xx answers other than 408/409/429 fail at once, with status, codes and cf-ray."""
    requests_mock.get(
        NS_URL, status_code=status, json=err(code, "nope"), headers={"CF-Ray": "abc-SJC"}
    )
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    exc = info.value
    assert (exc.status, exc.codes, exc.messages, exc.cf_ray) == (
        status,
        (code,),
        ("nope",),
        "abc-SJC",
    )
    assert requests_mock.call_count == 1
    assert f"code {code}: nope" in str(exc) and "cf-ray abc-SJC" in str(exc)


def test_success_false_with_200_is_an_api_error(
    client: CloudflareClient, requests_mock: Any
) -> None:
    requests_mock.get(NS_URL, json={**err(10013, "oops")})
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert info.value.codes == (10013,)
    assert requests_mock.call_count == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"null",
        b'{"success": true, "result": {"id": 1}, "result_info": {}}',
        b'{"success": true, "result": [1, 2], "result_info": {}}',
        b'{"success": true, "result": [], "result_info": []}',
        b"[" * 100_000,  # RecursionError out of msgspec
        b'{"success": true, "result": [], "result_info": ' + b"[" * 100_000,
        b'{"success": true, "result": [], "result_info": {"cursor": "\xff\xfe"}}',
    ],
)
def test_unusable_bodies_are_invalid_responses(
    client: CloudflareClient, requests_mock: Any, body: bytes
) -> None:
    """Truncated JSON, wrong types, bad result_info, JSON nested deeper than the decoder
    recurses and invalid UTF-8 end as CloudflareAPIError, on both endpoints."""
    requests_mock.get(OBJ_URL, content=body)
    requests_mock.get(NS_URL, content=body)
    with pytest.raises(CloudflareAPIError) as info:
        client.count_objects(ACC, NSID)
    assert info.value.kind == "invalid_response"
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert info.value.kind == "invalid_response"


def test_retry_after_beyond_the_limit_is_not_waited_for(
    metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """A block longer than max_retry_after fails the request but pauses the limiter."""
    limiter = RateLimiter(100_000)
    client = CloudflareClient(
        requests.Session(), BASE, Secret(TOKEN), limiter=limiter, retry=FAST_RETRY, observer=metrics
    )
    requests_mock.get(
        NS_URL, status_code=429, json=err(971, "wait"), headers={"Retry-After": "300"}
    )
    with pytest.raises(CloudflareAPIError):
        client.list_namespaces(ACC)
    assert requests_mock.call_count == 1
    assert 290 < limiter.paused_for() <= 300


def test_retry_after_on_a_5xx_never_pauses_the_shared_limiter(
    metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """Only a 429 blocks the token: a 503 with a wild Retry-After fails just that request."""
    limiter = RateLimiter(100_000)
    client = CloudflareClient(
        requests.Session(), BASE, Secret(TOKEN), limiter=limiter, retry=FAST_RETRY, observer=metrics
    )
    requests_mock.get(
        NS_URL,
        status_code=503,
        text="<html>maintenance</html>",
        headers={"Retry-After": "10000000"},
    )
    with pytest.raises(CloudflareAPIError):
        client.list_namespaces(ACC)
    assert requests_mock.call_count == 1
    assert limiter.paused_for() == 0


def test_429_on_the_last_attempt_still_pauses(metrics: ExporterMetrics, requests_mock: Any) -> None:
    """The block holds for everyone even when this request has no retries left."""
    limiter = RateLimiter(100_000)
    client = CloudflareClient(
        requests.Session(),
        BASE,
        Secret(TOKEN),
        limiter=limiter,
        retry=RetryPolicy(attempts=1),
        observer=metrics,
    )
    requests_mock.get(NS_URL, status_code=429, json=err(971, "wait"), headers={"Retry-After": "3"})
    with pytest.raises(CloudflareAPIError):
        client.list_namespaces(ACC)
    assert 2 < limiter.paused_for() <= 3


def test_ratelimit_header_is_observed(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    requests_mock.get(
        NS_URL, json=env([], {"total_pages": 1}), headers={"Ratelimit": '"default";r=42;t=30'}
    )
    client.list_namespaces(ACC)
    name = "cloudflare_durable_objects_exporter_api_ratelimit_remaining"
    assert sample(metrics, name, credential="default") == 42


@pytest.mark.parametrize("digits", [400, 5000])
def test_absurd_ratelimit_numbers_are_ignored(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any, digits: int
) -> None:
    """400 digits overflow a float when /metrics renders; 5,000 are too many for int()."""
    requests_mock.get(
        NS_URL,
        json=env([], {"total_pages": 1}),
        headers={"X-RateLimit-Remaining": "9" * digits, "X-RateLimit-Reset": "9" * digits},
    )
    assert client.list_namespaces(ACC) == []
    name = "cloudflare_durable_objects_exporter_api_ratelimit_remaining"
    assert sample(metrics, name, credential="default") is None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    assert b"api_requests_total" in generate_latest(registry)  # /metrics still renders


def test_token_never_in_errors_or_repr(client: CloudflareClient, requests_mock: Any) -> None:
    """Neither the client's repr nor an error message carries the token."""
    requests_mock.get(NS_URL, status_code=403, json=err(10000, "Authentication error"))
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert TOKEN not in repr(client)


# -- pure parsers ---------------------------------------------------------------------


def test_parse_ratelimit_both_header_styles() -> None:
    assert parse_ratelimit({"Ratelimit": '"default";r=50;t=30'}) == (50, 30.0)
    assert parse_ratelimit({"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "12"}) == (7, 12.0)
    assert parse_ratelimit({}) == (None, None)
    # Only ASCII digits, at most 15 of them; anything else is unknown, not an error.
    assert parse_ratelimit({"X-RateLimit-Remaining": "\u00b2", "Ratelimit": "r=\u00b2"}) == (
        None,
        None,
    )
    assert parse_ratelimit({"Ratelimit": f"r={'9' * 16};t=5"}) == (None, 5.0)


def test_parse_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now=1795867200.0) == 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_parse_objects_page_counts_stored_flags() -> None:
    """hasStoredData true counts; false, null or absent does not."""
    body = json.dumps(
        env(
            [
                {"id": "1", "hasStoredData": True},
                {"id": "2", "hasStoredData": None},
                {"id": "3", "hasStoredData": False},
                {"id": "4"},
            ],
            {"cursor": "n"},
        )
    ).encode()
    page = parse_objects_page(200, body)
    assert (page.count, page.with_stored_data, page.cursor) == (4, 1, "n")


def test_parse_objects_page_wrong_flag_type_is_invalid() -> None:
    """A flag of the wrong type makes the page unusable rather than silently miscounted."""
    body = json.dumps(env([{"id": "1", "hasStoredData": "true"}], {"cursor": ""})).encode()
    with pytest.raises(CloudflareAPIError) as info:
        parse_objects_page(200, body)
    assert info.value.kind == "invalid_response"


def test_parse_envelope_html_error_page() -> None:
    with pytest.raises(CloudflareAPIError) as info:
        parse_envelope("objects", 503, b"<html>Service unavailable</html>", "ray")
    assert (info.value.kind, info.value.status, info.value.cf_ray) == ("http", 503, "ray")


# -- byte-level misbehaviour over real sockets ------------------------------------------

Answer = Callable[[socket.socket], bool]  # writes an answer; True keeps the connection


class RawServer:
    """A loopback HTTP/1.1 server answering request n with ``answers[n]`` (the last one
    repeats), byte for byte, counting connections and requests."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/client/v4"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.connections += 1
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while True:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        return
                    request += data
                answer = self.answers[min(self.requests, len(self.answers) - 1)]
                self.requests += 1
                if not answer(conn):
                    return

    def close(self) -> None:
        self.listener.close()


def http_answer(body: bytes, *head: str, status: str = "200 OK") -> Answer:
    def answer(conn: socket.socket) -> bool:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *head]
        conn.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        return True

    return answer


OK_BODY = json.dumps(env([{"id": nid("a")}], {"total_pages": 1})).encode()


@pytest.fixture
def raw_server() -> Iterator[Callable[[list[Answer]], RawServer]]:
    servers: list[RawServer] = []

    def make(answers: list[Answer]) -> RawServer:
        servers.append(RawServer(answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def real_client(url: str, metrics: ExporterMetrics, **kwargs: Any) -> CloudflareClient:
    kwargs.setdefault("retry", RetryPolicy(attempts=1))
    return CloudflareClient(
        requests.Session(),
        url,
        Secret(TOKEN),
        limiter=RateLimiter(100_000),
        observer=metrics,
        max_body_bytes=1024 * 1024,
        **kwargs,
    )


def endless_chunks(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the client hangs up
        conn.sendall(chunk)
    return False


GZIP_BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 kB
DEFLATE_BOMB = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)


# The bombs are 64 kB on the wire: read to their end in one read, their connection is clean
# and urllib3 has already put it back in the pool; the others are cut off mid-body.
@pytest.mark.parametrize(
    ("answer", "connections"),
    [
        (http_answer(b" " * (3 * 1024 * 1024) + OK_BODY), 2),  # over the cap, raw
        (endless_chunks, 2),
        (http_answer(GZIP_BOMB, "Content-Encoding: gzip"), 1),
        (http_answer(DEFLATE_BOMB, "Content-Encoding: deflate"), 1),
        (http_answer(GZIP_BOMB, "Content-Encoding: br"), 2),  # not asked for: undecodable
    ],
    ids=["large", "endless-chunked", "gzip-bomb", "deflate-bomb", "unasked-encoding"],
)
def test_bodies_over_the_cap_are_invalid_and_close_the_connection(
    raw_server: Callable[[list[Answer]], RawServer],
    metrics: ExporterMetrics,
    answer: Answer,
    connections: int,
) -> None:
    """A body over max_body_bytes, raw or inflated, fails as invalid_response (counted,
    logged) in bounded time and memory; a connection with unread bytes is closed."""
    server = raw_server([answer, http_answer(OK_BODY)])
    client = real_client(server.url, metrics)
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert time.monotonic() - started < 10
    assert (info.value.kind, info.value.status) == ("invalid_response", 200)
    assert api_errors(metrics, "namespaces", "invalid_response") == 1
    assert api_requests(metrics, "namespaces", "200") == 1
    assert [e["error_kind"] for e in logs if e["event"] == "API request failed"] == [
        "invalid_response"
    ]
    assert [n.id for n in client.list_namespaces(ACC)] == [nid("a")]
    assert (server.requests, server.connections) == (2, connections)


@pytest.mark.parametrize("encoding", ["gzip", "deflate-zlib", "deflate-raw", "identity"])
def test_compressed_pages_are_read_and_the_connection_reused(
    raw_server: Callable[[list[Answer]], RawServer], metrics: ExporterMetrics, encoding: str
) -> None:
    """gzip and both deflate flavours decode; a body read to its end keeps the connection."""
    if encoding == "gzip":
        body = gzip.compress(OK_BODY)
    elif encoding == "deflate-zlib":
        body = zlib.compress(OK_BODY)
    elif encoding == "deflate-raw":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = packer.compress(OK_BODY) + packer.flush()
    else:
        body = OK_BODY
    header = f"Content-Encoding: {encoding.split('-')[0]}"
    server = raw_server([http_answer(body, header)])
    client = real_client(server.url, metrics)
    for _ in range(2):
        assert [n.id for n in client.list_namespaces(ACC)] == [nid("a")]
    assert (server.requests, server.connections) == (2, 1)
    # Only what the client can cap, even where brotli or zstandard is installed.
    assert sent_accept_encoding(client) == "gzip, deflate"


def sent_accept_encoding(client: CloudflareClient) -> str:
    """The Accept-Encoding the client sends."""
    with requests_mock_mocker() as mocker:
        mocker.get(ANY, json=env([], {"total_pages": 1}))
        client.list_namespaces(ACC)
        return str(mocker.request_history[0].headers["Accept-Encoding"])


def drip(conn: socket.socket) -> bool:
    """Headers at once, then one body byte every 0.2 s: no single read ever times out."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        time.sleep(0.2)
        conn.sendall(b" ")
    return False


def test_a_dripping_server_ends_at_the_deadline_and_is_retried(
    raw_server: Callable[[list[Answer]], RawServer], metrics: ExporterMetrics
) -> None:
    """Each attempt ends at request_deadline as a transport error and is retried like one,
    though the per-read timeout (1 s) never trips."""
    server = raw_server([drip, drip, http_answer(OK_BODY)])
    client = real_client(
        server.url,
        metrics,
        timeout=1.0,
        request_deadline=1.0,
        retry=RetryPolicy(attempts=2, base=0.01, max_backoff=0.01),
    )
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 3.5, elapsed
    assert (info.value.kind, info.value.args[0]) == ("transport", "deadline exceeded")
    assert [e["retry"] for e in logs if e["event"] == "API request failed"] == [True, False]
    assert api_requests(metrics, "namespaces", "transport") == 2
    assert api_errors(metrics, "namespaces", "transport") == 2
    assert server.requests == 2


def test_redirects_are_not_followed(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """A 3xx is an http error, not retried, logged with its Location cut to 300 chars; the
    target (which would get the token) is never asked."""
    target = "https://elsewhere.test/" + "x" * 1000
    requests_mock.get(NS_URL, status_code=302, headers={"Location": target})
    requests_mock.get(target, json=env([{"id": nid("a")}], {"total_pages": 1}))
    with capture_logs() as logs, pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert (info.value.kind, info.value.status) == ("http", 302)
    assert requests_mock.call_count == 1
    [event] = [e for e in logs if e["event"] == "API request failed"]
    assert event["location"] == target[:300] and event["retry"] is False


def test_x_ratelimit_reset_as_an_http_date() -> None:
    """Cloudflare documented X-RateLimit-Reset as an RFC 1123 date: it is read as one."""
    import email.utils
    import time

    from do_exporter.cloudflare import parse_ratelimit

    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    remaining, reset = parse_ratelimit({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": when})
    assert remaining == 3 and reset is not None and 115 < reset <= 120
    assert parse_ratelimit({"X-RateLimit-Reset": "not a date"}) == (None, None)
