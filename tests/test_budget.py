"""The process-wide byte budget: answers in flight are bounded together, never one alone."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from do_exporter.cloudflare import ByteBudget, CloudflareAPIError, CloudflareClient, RetryPolicy
from do_exporter.cloudflare.budget import BudgetExhausted, OverBudget
from do_exporter.config import Secret
from do_exporter.metrics.selfmetrics import ExporterMetrics
from do_exporter.ratelimit import RateLimiter
from tests.cf_helpers import (  # noqa: F401  (fixture)
    ACC,
    GZIP_BOMB,
    OK_BODY,
    TOKEN,
    http_answer,
    metrics,
    nid,
    raw_server,
)
from tests.support import wait_until

MIB = 1024 * 1024
FAR = 3600.0  # a deadline no test reaches: waits end on events, not on it


def test_answers_larger_than_the_budget_cannot_all_be_held_at_once() -> None:
    """Eight readers each wanting 4 MiB of a 10 MiB budget: two hold at once, the others
    wait (concurrency shrinks), and every one gets its bytes once others let go."""
    budget = ByteBudget(10 * MIB)
    go = threading.Event()
    holding: list[int] = []
    lock = threading.Lock()

    def reader() -> None:
        with budget.lease() as lease:
            lease.grow(4 * MIB, time.monotonic() + FAR)
            with lock:
                holding.append(1)
            go.wait()

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(holding) == 2, "two readers hold their bytes")
    assert budget.used == 8 * MIB and len(holding) == 2  # the six others wait
    go.set()
    for thread in threads:
        thread.join()
    assert len(holding) == 8
    assert budget.peak <= budget.total and budget.used == 0


def test_one_answer_never_exceeds_the_budget() -> None:
    budget = ByteBudget(MIB)
    lease = budget.lease()
    lease.grow(MIB // 2, time.monotonic() + FAR)
    with pytest.raises(OverBudget):
        lease.grow(MIB, time.monotonic() + FAR)
    assert lease.held == 0 and budget.used == 0


def test_a_full_budget_fails_the_wait_at_the_deadline() -> None:
    budget = ByteBudget(MIB)
    budget.lease().grow(MIB, time.monotonic() + FAR)
    with pytest.raises(BudgetExhausted):
        budget.lease().grow(1, time.monotonic() - 1)


def test_holders_waiting_on_each_other_do_not_deadlock() -> None:
    """Two readers each holding 4 of 10 MiB and each wanting 4 more: the second to wait
    gives up (its bytes freed), the first gets its bytes."""
    budget = ByteBudget(10 * MIB)
    first, second = budget.lease(), budget.lease()
    first.grow(4 * MIB, time.monotonic() + FAR)
    second.grow(4 * MIB, time.monotonic() + FAR)
    errors: list[Exception] = []

    def grow(lease: Any) -> None:
        try:
            lease.grow(4 * MIB, time.monotonic() + FAR)
        except BudgetExhausted as exc:
            errors.append(exc)

    threads = [threading.Thread(target=grow, args=(lease,)) for lease in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 1
    assert sorted((first.held, second.held)) == [0, 8 * MIB]


def test_a_gzip_bomb_is_cut_within_the_budget(
    raw_server: Any, metrics: ExporterMetrics
) -> None:
    """A 64 MiB gzip bomb against a 4 MiB budget: cut as invalid_response, never more than
    the budget held, nothing held afterwards, and the next page reads fine."""
    server = raw_server([http_answer(GZIP_BOMB, "Content-Encoding: gzip"), http_answer(OK_BODY)])
    budget = ByteBudget(4 * MIB)
    client = CloudflareClient(
        requests.Session(),
        server.url,
        Secret(TOKEN),
        limiter=RateLimiter(100_000),
        observer=metrics,
        retry=RetryPolicy(attempts=1),
        byte_budget=budget,
    )
    with pytest.raises(CloudflareAPIError) as info:
        client.list_namespaces(ACC)
    assert (info.value.kind, info.value.status) == ("invalid_response", 200)
    assert budget.peak <= budget.total and budget.used == 0
    assert [n.id for n in client.list_namespaces(ACC)] == [nid("a")]
    assert budget.used == 0
