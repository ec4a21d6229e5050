"""Shared fixtures: a simulator factory, a client wired to it, structlog reset per test."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import structlog

from do_exporter.cloudflare import CloudflareClient, RetryPolicy
from do_exporter.config import Secret
from do_exporter.ratelimit import RateLimiter
from do_exporter.selfmetrics import ExporterMetrics
from do_exporter.simulator import Scenario, Simulator

ACCOUNT_A = "a" * 32
ACCOUNT_B = "b" * 32
# 40 characters, like a Cloudflare API token (shorter ones are refused at start-up).
TOKEN = "test-token-4f9a1c2e7b-0d3e5f6a7b8c9d0e1f"

# Fast retries for tests: the policy's shape is the same, only the delays shrink.
FAST_RETRY = RetryPolicy(attempts=4, base=0.01, max_backoff=0.05, max_retry_after=5)


def ns(idx: int, objects: int, **extra: Any) -> dict[str, Any]:
    """A namespace entry for a scenario, with a stable 32-hex id."""
    entry: dict[str, Any] = {
        "id": f"{idx:032x}",
        "name": f"worker_Class{idx}",
        "class": f"Class{idx}",
        "script": "worker",
        "use_sqlite": idx % 2 == 0,
        "objects": objects,
        "stored_data_ratio": 0.25,
    }
    entry.update(extra)
    return entry


def scenario(accounts: dict[str, list[dict[str, Any]]], **top: Any) -> Scenario:
    data: dict[str, Any] = {
        "seed": 7,
        "tokens": [{"value": TOKEN, "accounts": "*"}],
        "accounts": [
            {"id": acc, "name": f"Account {i}", "namespaces": namespaces}
            for i, (acc, namespaces) in enumerate(accounts.items())
        ],
    }
    data.update(top)
    return Scenario.from_dict(data)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    """Start simulators on loopback port 0; all are stopped after the test."""
    started: list[Simulator] = []

    def make(scn: Scenario, **kwargs: Any) -> Simulator:
        sim = Simulator(scn, host="127.0.0.1", port=0, **kwargs)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., CloudflareClient]]:
    """A client with fast retries and a generous budget, closed after the test."""
    sessions: list[requests.Session] = []

    def make(
        api_url: str,
        token: str = TOKEN,
        *,
        limiter: RateLimiter | None = None,
        observer: ExporterMetrics | None = None,
        **kwargs: Any,
    ) -> CloudflareClient:
        session = requests.Session()
        sessions.append(session)
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("timeout", 5.0)
        return CloudflareClient(
            session,
            api_url,
            Secret(token),
            limiter=limiter or RateLimiter(100_000),
            observer=observer,
            rng=random.Random(1),
            **kwargs,
        )

    yield make
    for session in sessions:
        session.close()
