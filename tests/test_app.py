"""The daemon in-process: HTTP endpoints, scrapes during a slow poll, shutdown.

The exporter is built with a client factory (the seam ``Exporter`` takes): tests that need a
poll held in flight wrap the real client so that its object counts wait on an event the test
sets, rather than on a delay the test hopes is long enough.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from do_exporter.app import Exporter
from do_exporter.cloudflare import CloudflareClient
from do_exporter.config import Config, Credential, Secret
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, TOKEN, ns, scenario
from tests.support import SAFETY_TIMEOUT, loaded_by, wait_until

MakeSim = Callable[..., Simulator]


class Running:
    def __init__(self, exporter: Exporter, stop: threading.Event, thread: threading.Thread):
        self.exporter, self.stop, self.thread = exporter, stop, thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.exporter.port}"

    def get(self, path: str, **kwargs: object) -> requests.Response:
        timeout = SAFETY_TIMEOUT
        return requests.get(self.url + path, timeout=timeout, **kwargs)  # type: ignore[arg-type]


class HeldCounts:
    """A client factory whose clients' object counts wait until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = threading.Event()  # set once a count is held

    def __call__(self, *args: Any, **kwargs: Any) -> CloudflareClient:
        client = CloudflareClient(*args, **kwargs)
        count = client.count_objects

        def held(*a: Any, **k: Any) -> Any:
            self.waiting.set()
            self.release.wait()
            return count(*a, **k)

        client.count_objects = held  # type: ignore[method-assign]
        return client


@pytest.fixture
def run_exporter() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(sim: Simulator, factory: Any = CloudflareClient, **overrides: Any) -> Running:
        config = Config(
            listen_host="127.0.0.1", listen_port=0, interval=10.0, api_timeout=10.0, **overrides
        )  # type: ignore[arg-type]
        credential = Credential("default", (ACCOUNT_A,), token=Secret(TOKEN), api_url=sim.api_url)
        exporter = Exporter(config, credential, client_factory=factory)
        stop = threading.Event()
        thread = threading.Thread(target=exporter.run, args=(stop,), daemon=True)
        thread.start()
        assert exporter.started.wait(SAFETY_TIMEOUT)
        r = Running(exporter, stop, thread)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop.set()
        r.thread.join(timeout=SAFETY_TIMEOUT)


def wait_for(predicate: Callable[[], bool]) -> None:
    wait_until(predicate, "the exporter reaches the expected state")


def values(text: str, name: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[s.labels.get("namespace_id", s.labels.get("account_id", ""))] = s.value
    return out


def test_endpoints_and_values(make_sim: MakeSim, run_exporter: Callable[..., Running]) -> None:
    """After the first poll: ready, correct values on /metrics, landing page, 404, 405."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 12_000), ns(2, 5)]}))
    r = run_exporter(sim)
    wait_for(lambda: r.get("/readyz").status_code == 200)
    body = r.get("/metrics").text
    objects = values(body, "cloudflare_durable_objects_objects")
    assert objects == {f"{1:032x}": 12_000, f"{2:032x}": 5}
    assert values(body, "cloudflare_durable_objects_exporter_api_requests_total")
    assert r.get("/healthz").text == "ok\n"
    landing = r.get("/")
    assert "/metrics" in landing.text and "do-exporter" in landing.text
    assert r.get("/nope").status_code == 404
    post = requests.post(r.url + "/metrics", timeout=SAFETY_TIMEOUT)
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"
    head = requests.head(r.url + "/metrics", timeout=SAFETY_TIMEOUT)
    assert head.status_code == 200 and head.content == b""


def test_metrics_gzip_when_asked(make_sim: MakeSim, run_exporter: Callable[..., Running]) -> None:
    """Accept-Encoding: gzip gets a gzip body that decodes to the same exposition."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 3)]}))
    r = run_exporter(sim)
    wait_for(lambda: r.get("/readyz").status_code == 200)
    raw = requests.get(
        r.url + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=SAFETY_TIMEOUT,
        stream=True,
    )  # fmt: skip
    assert raw.headers["Content-Encoding"] == "gzip"
    # One gzip member, as curl and browsers decode it: they stop at the first member's end.
    one_member = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = one_member.decompress(raw.raw.read()).decode()
    assert one_member.eof and one_member.unused_data == b""
    assert "cloudflare_durable_objects_objects{" in text
    assert "cloudflare_durable_objects_exporter_build_info{" in text  # the own metrics, last
    plain = r.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert values(plain.text, "cloudflare_durable_objects_objects") == values(
        text, "cloudflare_durable_objects_objects"
    )


def test_scrapes_answer_while_a_slow_poll_runs(
    make_sim: MakeSim, run_exporter: Callable[..., Running]
) -> None:
    """A scrape during a poll answers from the last snapshot; it never waits for the poll
    (here held in flight until the test releases it)."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    held = HeldCounts()
    r = run_exporter(sim, factory=held)
    try:
        assert held.waiting.wait(SAFETY_TIMEOUT)
        for _ in range(5):  # the poll cannot end: these answers did not wait for it
            response = r.get("/metrics")
            assert response.status_code == 200
            assert "cloudflare_durable_objects_exporter_build_info" in response.text
        assert r.get("/readyz").status_code == 503
        assert values(r.get("/metrics").text, "cloudflare_durable_objects_objects") == {}
    finally:
        held.release.set()
    wait_for(lambda: r.get("/readyz").status_code == 200)
    assert values(r.get("/metrics").text, "cloudflare_durable_objects_objects") == {f"{1:032x}": 10}


def test_stop_during_a_poll_returns(
    make_sim: MakeSim, run_exporter: Callable[..., Running]
) -> None:
    """Setting the stop event during a poll in flight (held for good): run() returns, the
    endpoint is closed, and the job threads are daemon threads (the process can exit)."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    held = HeldCounts()
    r = run_exporter(sim, factory=held)
    assert held.waiting.wait(SAFETY_TIMEOUT)
    r.stop.set()
    r.thread.join(timeout=SAFETY_TIMEOUT)
    assert not r.thread.is_alive()
    assert all(t.daemon for t in threading.enumerate() if t.name in ("poll", "verify"))
    with pytest.raises(requests.ConnectionError):
        requests.get(r.url + "/healthz", timeout=SAFETY_TIMEOUT)
    held.release.set()


def test_the_exporter_loads_the_server_and_scheduler_only_when_it_serves() -> None:
    """``--once`` and ``--check`` never load the server, its web config (bcrypt, PyYAML), the
    scheduler or prometheus-client: every module costs resident memory (docs/benchmarks.md,
    Scale), and the target for 10M objects is 50 MB."""
    heavy = {"yaml", "bcrypt", "apscheduler", "prometheus_client", "do_exporter.server",
             "do_exporter.webconfig", "do_exporter.simulator"}  # fmt: skip
    assert heavy & loaded_by("do_exporter.cli", "do_exporter.app") == set()
