"""The shared request budget: at most N requests in any window, pauses, cancellation."""

from __future__ import annotations

import threading

import pytest

from do_exporter.ratelimit import Cancelled, RateLimiter


class FakeTime(threading.Event):
    """A clock whose waits advance it instantly (an Event, as the limiter expects)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            return True
        self.now += timeout or 0
        return False


def test_grants_up_to_the_budget_then_waits_for_the_window() -> None:
    """The (N+1)th request in a window waits until the first one leaves the window."""
    t = FakeTime()
    limiter = RateLimiter(3, 300, clock=t, cancel=t)
    assert [limiter.acquire() for _ in range(3)] == [0, 0, 0]
    assert limiter.used() == 3
    waited = limiter.acquire()
    assert waited == pytest.approx(300)
    assert t.now == pytest.approx(1300)


def test_never_more_than_budget_in_any_window() -> None:
    """Over a long run the sliding window never holds more grants than the budget."""
    t = FakeTime()
    limiter = RateLimiter(10, 60, clock=t, cancel=t)
    grants = []
    for i in range(100):
        limiter.acquire()
        grants.append(t.now)
        t.now += 0.5 if i % 7 else 3
    for start in grants:
        assert sum(1 for g in grants if start <= g < start + 60) <= 10


def test_pause_holds_every_caller() -> None:
    """After pause(s), the next grant comes s seconds later, even with budget left."""
    t = FakeTime()
    limiter = RateLimiter(100, 300, clock=t, cancel=t)
    limiter.pause(42)
    assert limiter.paused_for() == 42
    assert limiter.acquire() == pytest.approx(42)
    limiter.pause(5)
    limiter.pause(1)  # a shorter pause never shortens a longer one
    assert limiter.paused_for() == 5


def test_cancel_interrupts_a_wait() -> None:
    """Shutdown wakes a waiting caller with Cancelled instead of letting it sleep."""
    cancel = threading.Event()
    limiter = RateLimiter(1, 3600, cancel=cancel)
    limiter.acquire()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            limiter.acquire()
        except Cancelled as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    cancel.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and len(errors) == 1


def test_rejects_nonsense_budgets() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_per_second_window_spreads_a_burst() -> None:
    """With per_second, a burst within the long budget is still spread over seconds."""
    t = FakeTime()
    limiter = RateLimiter(1000, 300, per_second=5, clock=t, cancel=t)
    start = t.now
    for _ in range(12):
        limiter.acquire()
    # 5 in the first second, 5 in the next, 2 in the third.
    assert t.now - start == pytest.approx(2.0)
    assert limiter.used() == 12
