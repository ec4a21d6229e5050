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
from collections.abc import Callable, Iterator

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


Task = Callable[[], None]


class _Feed:
    """Tasks sorted by priority, taken one at a time: one queue entry for all of them."""

    __slots__ = ("_next", "_tasks", "priority")

    def __init__(self, tasks: Iterator[tuple[float, Task]]) -> None:
        self._tasks = tasks
        self._next: tuple[float, Task] | None = None
        self.priority = 0.0
        self._advance()

    def _advance(self) -> None:
        try:
            self._next = next(self._tasks, None)
        except Exception:  # a bug making tasks must not kill a pool thread: log, end the feed
            log.exception("poll task crashed")
            self._next = None
        if self._next is not None:
            self.priority = self._next[0]

    @property
    def ready(self) -> bool:
        """Whether a task is left to take."""
        return self._next is not None

    def take(self) -> tuple[Task, bool]:
        """The next task, and whether more follow."""
        assert self._next is not None
        task = self._next[1]
        self._advance()
        return task, self.ready


class Pool:
    """Daemon worker threads and one priority queue, living as long as the poller.

    Threads start when queue entries outnumber idle threads, up to ``limit`` (a sorted feed
    is one entry: each time a thread takes a task from it, another may start); surplus
    threads leave when idle. Tasks of a closed run are skipped when they come up. A task that
    raises is logged ("poll task crashed") and counts as ended: a bug never kills the poll.
    """

    def __init__(self, cancel: threading.Event, name: str, limit: int = 1) -> None:
        self._cancel = cancel
        self._name = name
        self._heap: list[tuple[float, int, Run, Task | _Feed]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0
        self.limit = limit

    def submit(self, run: Run, task: Task | _Feed, priority: float = 0.0) -> None:
        """Queue a task of ``run`` (lower priority values first); ignored once it closed."""
        with run.cond:
            if not run.open:
                return
            run.pending += 1
        with self._cond:
            self._push(priority, run, task)

    def _push(
        self, priority: float, run: Run, task: Task | _Feed, seq: int | None = None
    ) -> None:  # under self._cond
        heapq.heappush(self._heap, (priority, next(self._seq) if seq is None else seq, run, task))
        if len(self._heap) > self._idle and self._threads < self.limit:
            self._start()
        else:
            self._cond.notify()

    def submit_sorted(self, run: Run, tasks: Iterator[tuple[float, Task]]) -> None:
        """Queue ``(priority, task)`` pairs of ``run``, sorted by priority, as one entry: each
        task is made when the pool reaches it, in priority order with the other tasks. The
        feed keeps its place among equal priorities: a feed queued first runs its tied tasks
        before a later one's, as if each task had been queued on its own."""
        feed = _Feed(tasks)
        if feed.ready:
            self.submit(run, feed, feed.priority)

    def resize(self, limit: int) -> None:
        """Change the thread limit; start threads at once for work already queued."""
        with self._cond:
            self.limit = limit
            while self._threads < self.limit and len(self._heap) > self._idle:
                self._start()

    def _start(self) -> None:  # under self._cond
        self._threads += 1
        try:
            threading.Thread(target=self._work, name=self._name, daemon=True).start()
        except RuntimeError:  # out of threads: the running ones take the queued work
            self._threads -= 1
            log.error("could not start a poll thread", pool=self._name, threads=self._threads)

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
                _, seq, run, entry = heapq.heappop(self._heap)
                task = self._unfold(seq, run, entry) if isinstance(entry, _Feed) else entry
            try:
                if run.open:
                    task()
            except Cancelled:
                pass
            except Exception:  # a bug must not kill the poll: log it; the task counts failed
                log.exception("poll task crashed")
            finally:
                run.done()

    def _unfold(self, seq: int, run: Run, feed: _Feed) -> Task:  # under self._cond
        """A feed's next task; the feed goes back in the queue, in its place, while tasks
        remain."""
        task, more = feed.take()
        if more:
            with run.cond:
                more = run.open
                run.pending += more
            if more:
                self._push(feed.priority, run, feed, seq)
        return task
