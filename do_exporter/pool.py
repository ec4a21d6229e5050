"""The poll's thread pools: daemon workers over one priority queue, and a poll's run.

A :class:`Run` is one poll's set of tasks: open until the poll ends, after which its queued
tasks are skipped. A :class:`Pool` lives as long as the poller; its daemon threads (unlike
``concurrent.futures``) never hold up process exit, so a request stuck in a read timeout
cannot delay shutdown.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable

import structlog

from .clock import Clock
from .ratelimit import Cancelled

log = structlog.get_logger("do_exporter.poller")

WAKE_SECONDS = 0.2  # how often a waiting poll looks at its clock and the cancel flag


class Run:
    """One poll's tasks: open until the poll ends, then queued tasks are skipped."""

    def __init__(self) -> None:
        self.open = True
        self.pending = 0
        self.cond = threading.Condition()

    def done(self) -> None:
        with self.cond:
            self.pending -= 1
            self.cond.notify_all()

    def wait(self, deadline: float | None, clock: Clock, cancel: threading.Event) -> bool:
        """Block until no task is left or ``deadline`` (``clock.time()``) passes, then close;
        True if every task ended. Raises :class:`Cancelled` once ``cancel`` is set."""
        with self.cond:
            while self.pending and not cancel.is_set():
                left = WAKE_SECONDS if deadline is None else deadline - clock.time()
                if left <= 0:
                    break
                self.cond.wait(min(WAKE_SECONDS, left))
            self.open = False
            finished = self.pending == 0
        if cancel.is_set():
            raise Cancelled()
        return finished


class Pool:
    """Daemon worker threads and one priority queue, living as long as the poller.

    Threads start when queued work outnumbers idle threads, up to ``limit``; surplus threads
    leave when idle. Tasks of a closed run are skipped when they come up. A task that raises
    is logged ("poll task crashed") and counts as ended: a bug never kills the poll.
    """

    def __init__(self, cancel: threading.Event, name: str, limit: int = 1) -> None:
        self._cancel = cancel
        self._name = name
        self._heap: list[tuple[float, int, Run, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0
        self.limit = limit

    def submit(self, run: Run, task: Callable[[], None], priority: float = 0.0) -> None:
        """Queue a task of ``run`` (lower priority values first); ignored once it closed."""
        with run.cond:
            if not run.open:
                return
            run.pending += 1
        with self._cond:
            heapq.heappush(self._heap, (priority, next(self._seq), run, task))
            if len(self._heap) > self._idle and self._threads < self.limit:
                self._start()
            else:
                self._cond.notify()

    def resize(self, limit: int) -> None:
        """Change the thread limit; start threads at once for work already queued."""
        with self._cond:
            self.limit = limit
            while self._threads < self.limit and len(self._heap) > self._idle:
                self._start()

    def _start(self) -> None:  # under self._cond
        self._threads += 1
        threading.Thread(target=self._work, name=self._name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._heap and not self._cancel.is_set():
                    if not self._cond.wait(1.0) and self._threads > self.limit:
                        break
                self._idle -= 1
                if not self._heap or self._cancel.is_set():
                    self._threads -= 1
                    return
                _, _, run, task = heapq.heappop(self._heap)
            try:
                if run.open:
                    task()
            except Cancelled:
                pass
            except Exception:  # a bug must not kill the poll: log it; the task counts failed
                log.exception("poll task crashed")
            finally:
                run.done()
