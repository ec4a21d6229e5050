"""The endpoint client over canned answers (requests-mock): page-number lists, cursor
walks, ids and label values checked at the edge."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from requests_mock import ANY
from structlog.testing import capture_logs

from do_exporter.cloudflare import (
    MAX_LABEL_VALUE,
    TRUNCATED_MARKER,
    CloudflareAPIError,
    CloudflareClient,
)
from do_exporter.config import Secret
from do_exporter.metrics.selfmetrics import ExporterMetrics
from do_exporter.ratelimit import RateLimiter
from tests.cf_helpers import (  # noqa: F401  (fixtures)
    ACC,
    BASE,
    NS_URL,
    NSID,
    OBJ_URL,
    TOKEN,
    api_errors,
    client,
    env,
    err,
    metrics,
    nid,
    objects,
    raw_server,
    sample,
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



def test_token_never_in_errors_or_repr(client: CloudflareClient, requests_mock: Any) -> None:
    """Neither the client's repr nor an error message carries the token."""
    requests_mock.get(NS_URL, status_code=403, json=err(10000, "Authentication error"))
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert TOKEN not in repr(client)




def test_items_with_lone_surrogates_are_dropped_and_counted(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """A name, class or script with a lone surrogate ("\\ud800", which no exposition can
    encode) drops its item, counted once per list; the other items are listed."""
    raw = (
        '{"success": true, "errors": [], "result_info": {"total_pages": 1}, "result": ['
        f'{{"id": "{nid("bad1")}", "name": "x\\ud800"}}, '
        f'{{"id": "{nid("bad2")}", "class": "\\udfff"}}, '
        f'{{"id": "{nid("ok")}", "name": "fine \\u00e9"}}]}}'
    )
    requests_mock.get(NS_URL, text=raw)
    requests_mock.get(
        f"{BASE}/accounts",
        text=f'{{"success": true, "result": [{{"id": "{ACC}", "name": "\\ud800"}}]}}',
    )
    with capture_logs() as logs:
        assert [(n.id, n.name) for n in client.list_namespaces(ACC)] == [(nid("ok"), "fine é")]
        assert client.list_accounts() == []
    assert [e["count"] for e in logs if e["event"].startswith("invalid items skipped")] == [2, 1]
    assert api_errors(metrics, "namespaces", "invalid_response") == 1
