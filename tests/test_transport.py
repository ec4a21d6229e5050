"""One request with retries (requests-mock and loopback sockets): statuses, Retry-After,
rate-limit headers, bodies over the cap, compression, deadlines, redirects."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from requests_mock import ANY
from requests_mock import Mocker as requests_mock_mocker
from structlog.testing import capture_logs

from do_exporter.cloudflare import (
    CloudflareAPIError,
    CloudflareClient,
    RetryPolicy,
)
from do_exporter.config import Secret
from do_exporter.metrics.selfmetrics import ExporterMetrics
from do_exporter.ratelimit import RateLimiter
from tests.cf_helpers import (  # noqa: F401  (fixtures)
    ACC,
    BASE,
    DEFLATE_BOMB,
    GZIP_BOMB,
    NS_URL,
    NSID,
    OBJ_URL,
    OK_BODY,
    TOKEN,
    Answer,
    RawServer,
    api_errors,
    api_requests,
    client,
    endless_chunks,
    env,
    err,
    http_answer,
    metrics,
    nid,
    objects,
    raw_server,
    real_client,
    sample,
)
from tests.conftest import FAST_RETRY
from tests.support import FakeClock

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
    limiter = RateLimiter(100_000, clock=FakeClock(1000.0))
    client = CloudflareClient(
        requests.Session(), BASE, Secret(TOKEN), limiter=limiter, retry=FAST_RETRY, observer=metrics
    )
    requests_mock.get(
        NS_URL, status_code=429, json=err(971, "wait"), headers={"Retry-After": "300"}
    )
    with pytest.raises(CloudflareAPIError):
        client.list_namespaces(ACC)
    assert requests_mock.call_count == 1
    assert limiter.paused_for() == 300


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
    limiter = RateLimiter(100_000, clock=FakeClock(1000.0))
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
    assert limiter.paused_for() == 3


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
    with capture_logs() as logs, pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
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
    assert time.monotonic() - started >= 2.0  # two attempts, each held to its deadline
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




# -- deadlines and the request budget ---------------------------------------------------


def trickle_head(conn: socket.socket) -> bool:
    """The response head, one byte every 0.3 s, never finished."""
    with contextlib.suppress(OSError):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
            conn.sendall(bytes([byte]))
            time.sleep(0.3)
    return False


def test_a_trickled_response_head_ends_at_the_deadline(
    raw_server: Callable[[list[Answer]], RawServer], metrics: ExporterMetrics
) -> None:
    """The deadline covers the head too: a head trickled a byte at a time (no read ever
    times out) fails as a transport error at the attempt's deadline."""
    server = raw_server([trickle_head])
    client = real_client(server.url, metrics, timeout=5.0, request_deadline=1.0)
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert (info.value.kind, info.value.args[0]) == ("transport", "deadline exceeded")
    assert api_requests(metrics, "namespaces", "transport") == 1


def test_retries_stop_when_the_request_budget_is_spent(
    metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """Every attempt takes 10 s on the fake clock; with a 25 s request budget the third
    attempt is the last, though the policy allows ten."""
    clock = FakeClock(100.0)

    def slow_failure(request: Any, context: Any) -> str:
        clock.advance(10.0)
        context.status_code = 503
        return "<html>busy</html>"

    requests_mock.get(NS_URL, text=slow_failure)
    client = CloudflareClient(
        requests.Session(),
        BASE,
        Secret(TOKEN),
        limiter=RateLimiter(100_000),
        retry=RetryPolicy(attempts=10, base=0.001, max_backoff=0.001),
        observer=metrics,
        clock=clock,
        request_budget=25.0,
    )
    with capture_logs() as logs, pytest.raises(CloudflareAPIError):
        client.list_namespaces(ACC)
    assert requests_mock.call_count == 3
    assert [e["retry"] for e in logs if e["event"] == "API request failed"] == [True, True, False]


# -- bounded labels and log lines -------------------------------------------------------


def test_twenty_thousand_error_codes_stay_bounded(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    """Four failing requests carrying 20,000 distinct codes each: the error_code label takes
    a handful of values, the log line and the error's text stay short."""
    for round_ in range(4):
        codes = range(100_000 + round_ * 20_000, 120_000 + round_ * 20_000)
        errors = [{"code": c, "message": "x" * 50} for c in codes] + [{"code": 10000}]
        requests_mock.get(NS_URL, status_code=400, json={"success": False, "errors": errors})
        with capture_logs() as logs, pytest.raises(CloudflareAPIError) as info:
            client.list_namespaces(ACC)
        [event] = [e for e in logs if e["event"] == "API request failed"]
        assert len(json.dumps(event, default=str)) < 2_000
        assert len(str(info.value)) < 1_000
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    text = generate_latest(registry).decode()
    labels = {
        line.split('error_code="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("cloudflare_durable_objects_exporter_api_errors_total{")
    }
    assert labels == {"other", "transport", "invalid_response"}
    assert api_errors(metrics, "namespaces", "other") == 4


def test_known_codes_keep_their_own_label(
    client: CloudflareClient, metrics: ExporterMetrics, requests_mock: Any
) -> None:
    requests_mock.get(NS_URL, status_code=403, json=err(10000, "Authentication error"))
    with pytest.raises(CloudflareAPIError):
        client.list_namespaces(ACC)
    assert api_errors(metrics, "namespaces", "10000") == 1


# -- proxies, resolved once per client --------------------------------------------------


def test_https_proxy_from_the_environment_is_used_and_read_once(
    raw_server: Callable[[list[Answer]], RawServer],
    metrics: ExporterMetrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP(S)_PROXY is honoured; it is read when the client is built, not per request."""
    proxy = raw_server([http_answer(OK_BODY)])
    seen: list[bytes] = []
    answer = proxy.answers[0]

    def record(conn: socket.socket) -> bool:
        seen.append(b"request")
        return answer(conn)

    proxy.answers = [record]
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.rsplit("/client/v4", 1)[0])
    client = real_client("http://api.invalid/client/v4", metrics)
    monkeypatch.delenv("HTTP_PROXY")  # read once: later changes do not matter
    for _ in range(2):
        assert [n.id for n in client.list_namespaces(ACC)] == [nid("a")]
    assert len(seen) == 2


def test_no_proxy_is_honoured(
    raw_server: Callable[[list[Answer]], RawServer],
    metrics: ExporterMetrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host in NO_PROXY is asked directly, past a proxy that does not even listen."""
    server = raw_server([http_answer(OK_BODY)])
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = real_client(server.url, metrics)
    assert [n.id for n in client.list_namespaces(ACC)] == [nid("a")]
