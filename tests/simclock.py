"""A hand-moved clock and a simulator factory for tests that drive the simulator's time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from do_exporter.simulator import Scenario, Simulator


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def simulators(
    clock: FakeClock, build: Callable[..., dict[str, Any]], start_time: float
) -> Iterator[Callable[..., Simulator]]:
    """A fixture body: ``make(**overrides)`` starts a simulator of ``build(**overrides)`` on
    ``clock``; every simulator started is stopped afterwards."""
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        scenario = Scenario.from_dict(build(**overrides))
        sim = Simulator(scenario, clock=clock, start_time=start_time).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()
