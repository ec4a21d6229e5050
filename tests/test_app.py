"""The daemon in-process: HTTP endpoints, scrapes during a slow poll, shutdown."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from do_exporter.app import Exporter
from do_exporter.config import Config, Credential, Secret
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, TOKEN, ns, scenario

MakeSim = Callable[..., Simulator]


class Running:
    def __init__(self, exporter: Exporter, stop: threading.Event, thread: threading.Thread):
        self.exporter, self.stop, self.thread = exporter, stop, thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.exporter.port}"

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url + path, timeout=2, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def run_exporter() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(sim: Simulator, **overrides: object) -> Running:
        config = Config(
            listen_host="127.0.0.1", listen_port=0, interval=10.0, api_timeout=10.0, **overrides
        )  # type: ignore[arg-type]
        credential = Credential("default", (ACCOUNT_A,), token=Secret(TOKEN), api_url=sim.api_url)
        exporter = Exporter(config, credential)
        stop = threading.Event()
        thread = threading.Thread(target=exporter.run, args=(stop,), daemon=True)
        thread.start()
        assert exporter.started.wait(5)
        r = Running(exporter, stop, thread)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop.set()
        r.thread.join(timeout=10)


def wait_for(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


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
    post = requests.post(r.url + "/metrics", timeout=2)
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"
    head = requests.head(r.url + "/metrics", timeout=2)
    assert head.status_code == 200 and head.content == b""


def test_metrics_gzip_when_asked(make_sim: MakeSim, run_exporter: Callable[..., Running]) -> None:
    """Accept-Encoding: gzip gets a gzip body that decodes to the same exposition."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 3)]}))
    r = run_exporter(sim)
    wait_for(lambda: r.get("/readyz").status_code == 200)
    raw = requests.get(
        r.url + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=2, stream=True
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(raw.raw.read()).decode()
    assert "cloudflare_durable_objects_objects{" in text
    assert "cloudflare_durable_objects_exporter_build_info{" in text  # the second member
    decoded = r.get("/metrics").text  # requests asks for gzip and decodes both members
    assert "cloudflare_durable_objects_objects{" in decoded
    assert "cloudflare_durable_objects_exporter_build_info{" in decoded
    plain = requests.get(r.url + "/metrics", headers={"Accept-Encoding": "identity"}, timeout=2)
    assert "Content-Encoding" not in plain.headers


def test_scrapes_answer_while_a_slow_poll_runs(
    make_sim: MakeSim, run_exporter: Callable[..., Running]
) -> None:
    """A scrape during a poll answers at once, from the last snapshot; never waits for it."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    sim.inject("delay", endpoint="objects", seconds=4, count=None)
    r = run_exporter(sim)
    # The first poll is stuck for 4 s on the objects request: scrapes still answer.
    wait_for(lambda: sum(sim.stats()["requests"].get("namespaces", {}).values()) >= 1)
    for _ in range(5):
        response = r.get("/metrics")  # 2 s client timeout: far less than the poll
        assert response.status_code == 200
        assert "cloudflare_durable_objects_exporter_build_info" in response.text
    assert r.get("/readyz").status_code == 503
    assert values(r.get("/metrics").text, "cloudflare_durable_objects_objects") == {}
    wait_for(lambda: r.get("/readyz").status_code == 200, timeout=20)
    assert values(r.get("/metrics").text, "cloudflare_durable_objects_objects") == {f"{1:032x}": 10}


def test_stop_during_a_poll_returns_quickly(
    make_sim: MakeSim, run_exporter: Callable[..., Running]
) -> None:
    """Setting the stop event cancels a poll in flight; run() returns within seconds."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    sim.inject("delay", endpoint="objects", seconds=30, count=None)
    r = run_exporter(sim)
    wait_for(lambda: sum(sim.stats()["requests"].get("namespaces", {}).values()) >= 1)
    r.stop.set()
    r.thread.join(timeout=5)
    assert not r.thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(r.url + "/healthz", timeout=1)
