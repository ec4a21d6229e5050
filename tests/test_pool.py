"""The poll's pools: tasks in priority order, sorted feeds made one task at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from do_exporter import pool as pool_module
from do_exporter.pool import Pool, Run
from tests.support import SAFETY_TIMEOUT, FakeClock, wait_until


def held_pool() -> tuple[Pool, Run, threading.Event]:
    """A one-thread pool kept busy by a first task until the returned event is set, so what
    is queued meanwhile runs in the pool's order."""
    pool, run, release = Pool(threading.Event(), "test-pool", limit=1), Run(), threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        assert release.wait(SAFETY_TIMEOUT)

    pool.submit(run, hold, priority=float("-inf"))
    assert started.wait(SAFETY_TIMEOUT)
    return pool, run, release


def feed(
    name: str, priorities: list[float], ran: list[str], made: list[str] | None = None
) -> Iterator[tuple[float, Callable[[], None]]]:
    for i, priority in enumerate(priorities):
        if made is not None:
            made.append(f"{name}{i}")
        yield priority, lambda i=i: ran.append(f"{name}{i}")


def finish(run: Run) -> bool:
    return run.wait(None, FakeClock(), threading.Event())


def test_sorted_feeds_and_single_tasks_run_in_one_priority_order() -> None:
    pool, run, release = held_pool()
    ran: list[str] = []
    pool.submit_sorted(run, feed("a", [1, 4, 6], ran))
    pool.submit_sorted(run, feed("b", [2, 3, 7], ran))
    pool.submit(run, lambda: ran.append("single"), priority=5)
    release.set()
    assert finish(run)
    assert ran == ["a0", "b0", "b1", "a1", "single", "a2", "b2"]


def test_a_feed_makes_its_tasks_only_as_the_pool_reaches_them() -> None:
    pool, run, release = held_pool()
    ran: list[str] = []
    made: list[str] = []
    pool.submit_sorted(run, feed("a", list(range(10_000)), ran, made))
    assert made == ["a0"]  # queued: one task made, not 10,000
    release.set()
    assert finish(run)
    assert len(ran) == len(made) == 10_000


def test_a_feed_that_raises_ends_and_the_pool_works_on() -> None:
    pool, run, release = held_pool()
    ran: list[str] = []

    def broken() -> Iterator[tuple[float, Callable[[], None]]]:
        yield from feed("a", [1, 2], ran)
        raise RuntimeError("a bug")

    pool.submit_sorted(run, broken())
    release.set()
    assert finish(run)
    assert ran == ["a0", "a1"]
    later = Run()
    pool.submit(later, lambda: ran.append("later"))
    assert finish(later) and ran[-1] == "later"


def test_a_closed_run_skips_what_its_feed_still_holds() -> None:
    pool, run, release = held_pool()
    ran: list[str] = []
    made: list[str] = []
    pool.submit_sorted(run, feed("a", [1, 2, 3], ran, made))
    clock = FakeClock(100.0)
    assert not run.wait(50.0, clock, threading.Event())  # the deadline has passed: closed
    release.set()
    wait_until(lambda: run.pending == 0, "the held task and the feed's entry ended")
    assert ran == [] and made == ["a0", "a1"]  # the feed was dropped, not walked to its end


def test_an_empty_feed_queues_nothing() -> None:
    pool, run = Pool(threading.Event(), "test-pool"), Run()
    pool.submit_sorted(run, iter(()))
    assert run.pending == 0 and finish(run)


def test_feeds_keep_their_place_among_equal_priorities() -> None:
    pool, run, release = held_pool()
    ran: list[str] = []
    pool.submit_sorted(run, feed("a", [1, 1, 1], ran))
    pool.submit_sorted(run, feed("b", [1, 1, 1], ran))
    release.set()
    assert finish(run)
    assert ran == ["a0", "a1", "a2", "b0", "b1", "b2"]  # as if each task had been queued alone


class _NoThreads:
    """Stands in for the threading module once the pool is built: no thread starts."""

    class Thread:
        def __init__(self, **_: object) -> None:
            pass

        def start(self) -> None:
            raise RuntimeError("can't start new thread")


def test_a_thread_that_cannot_start_leaves_the_work_to_the_running_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool, run, release = held_pool()
    monkeypatch.setattr(pool_module, "threading", _NoThreads)
    pool.limit = 3  # the feed's first task would start more threads: none can
    ran: list[str] = []
    pool.submit_sorted(run, feed("a", [1, 2, 3], ran))
    release.set()
    wait_until(lambda: run.pending == 0, "every task ran on the one thread")
    assert ran == ["a0", "a1", "a2"]
