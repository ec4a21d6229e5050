"""What tests share: one hand-moved clock, one wait helper, one simulator factory.

- :class:`FakeClock` is the only fake clock of the suite. Call it (``clock()``) where a
  component takes a ``Callable[[], float]``, or hand it where a
  :class:`do_exporter.clock.Clock` is expected (``monotonic()`` and ``time()`` read the same
  hand-moved value). ``advance()`` moves it.
- :func:`wait_until` waits for something that happens on another thread or process. It has a
  generous *safety* timeout only so that a broken test ends; no test asserts how long the wait
  took (a loaded machine may be slow, and that is not a failure).
- :func:`simulators` is the body of a fixture that starts simulators on a clock.
- :func:`loaded_by` names the modules a fresh interpreter has loaded after some imports.
- :func:`run_cli` runs the command (``python -m do_exporter ARGS``) in this process, for
  tests of what it prints and returns; tests of the process itself (signals, exit of the
  interpreter, a port held) start a real one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any
from unittest import mock

import structlog

from do_exporter import cli
from do_exporter.simulator import Scenario, Simulator

# Long enough that no loaded machine hits it when the behaviour is right: it only ends a test
# whose awaited event never comes.
SAFETY_TIMEOUT = 60.0


class FakeClock:
    """A clock the test moves by hand; also a :class:`do_exporter.clock.Clock`."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def loaded_by(*modules: str) -> set[str]:
    """Every module a fresh interpreter has loaded once it imported ``modules``."""
    code = f"import sys, json, {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def wait_until(
    predicate: Callable[[], bool], what: str, timeout: float = SAFETY_TIMEOUT
) -> None:
    """Wait until ``predicate()`` is true (checked every 10 ms); fail naming ``what`` if it
    is still false after the safety timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)


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


@dataclass(frozen=True)
class CliRun:
    """What :func:`run_cli` gives: the fields of ``subprocess.CompletedProcess`` tests read."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(args: Sequence[str], env: Mapping[str, str]) -> CliRun:
    """``python -m do_exporter ARGS`` with exactly ``env`` as its environment, in this
    process: stdout, stderr (the logs included) and the exit status, as a subprocess would
    give them. The logging set-up the command makes is undone afterwards."""
    # Text streams over bytes, as a process has: the command writes the exposition to
    # sys.stdout.buffer.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with mock.patch.dict(os.environ, env, clear=True), redirect_stdout(out), \
                redirect_stderr(err):  # fmt: skip
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
    return CliRun(code, _text(out), _text(err))


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode("utf-8")
