"""Shared fixtures: a simulator factory, a client wired to it, structlog reset per test.

Also how pytest-xdist spreads the suite over its workers (``-n`` in pyproject's addopts):
one test at a time, the longest-waiting modules first, and a module whose module-scoped
fixture is costly (the Prometheus stack) kept on one worker so it starts once.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

# Compiled files are written even where the environment says PYTHONDONTWRITEBYTECODE=1 (as
# container images often do): else every xdist worker compiles the package and re-writes
# the asserts of every test module, and every `python -m do_exporter` a test starts compiles
# the package again, on every run (about 25 s of CPU a run here). They go to __pycache__/,
# which git ignores. First thing, so that the imports below are written too.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the processes the tests start

import pytest  # noqa: E402
import requests  # noqa: E402
import structlog  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from do_exporter.cloudflare import CloudflareClient, RetryPolicy  # noqa: E402
from do_exporter.config import Secret  # noqa: E402
from do_exporter.metrics.selfmetrics import ExporterMetrics  # noqa: E402
from do_exporter.ratelimit import RateLimiter  # noqa: E402
from do_exporter.simulator import Scenario, Simulator  # noqa: E402

ACCOUNT_A = "a" * 32
ACCOUNT_B = "b" * 32
# 40 characters, like a Cloudflare API token (shorter ones are refused at start-up).
TOKEN = "test-token-4f9a1c2e7b-0d3e5f6a7b8c9d0e1f"

# Hypothesis on a loaded machine: no per-example deadline (the default 200 ms fails a right
# property when six workers share two cores) and no "too slow" health check, for the same
# reason. The example counts stay hypothesis' default (100) unless a test sets its own.
# HYPOTHESIS_PROFILE=thorough: 1,000 examples for the properties that set no count of their
# own (a nightly run, or a hunt for a bug).
settings.register_profile(
    "suite", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", settings.get_profile("suite"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

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


# Modules of tests that mostly wait (real daemons, subprocesses, Prometheus), longest first:
# an xdist worker starts them before the short tests, so none of them ends the run alone.
SLOW_FIRST = (
    "tests/test_e2e_prometheus.py",
    "tests/test_benchmarks_smoke.py",
    "tests/test_secrets.py",
    "tests/test_deploy.py",
    "tests/test_chaos.py",
)
# Modules whose tests share a module-scoped fixture worth starting once per run (the
# simulator + exporter + Prometheus stack): all their tests go to the same worker.
ONE_WORKER = frozenset({"tests/test_e2e_prometheus.py"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the slow modules first (every worker sorts alike, as it must)."""
    if not hasattr(config, "workerinput"):
        return  # a plain run keeps the file order

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return SLOW_FIRST.index(module) if module in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within a module is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist load`` (what ``-n`` implies), except that ONE_WORKER modules are one unit.

    pytest-xdist's own ``loadgroup`` would do this with ``xdist_group`` marks, but with
    pytest 9 it no longer renames the node ids it groups by, so the marks have no effect.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneTestAtATime(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER else nodeid

    return OneTestAtATime(config, log)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """A test that runs the daemon's signal inbox in-process (``cli.main`` with ``--demo``,
    the ``Inbox`` tests) leaves SIGINT, SIGTERM and SIGHUP ignored, as the daemon does when
    it shuts down; a child process started later by the same xdist worker would inherit
    SIG_IGN, and Python then installs no KeyboardInterrupt for it (the Ctrl-C test of
    ``--once`` hung that way). Each test gets the handlers the worker had before it."""
    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {signum: signal.getsignal(signum) for signum in names}
    yield
    for signum, handler in saved.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)


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
