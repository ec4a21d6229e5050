"""The threads that answer complete requests, and who gives way when they are all busy.

Threads start on demand up to ``limit``, are reused, and end after ``idle`` seconds without
work. When all ``limit`` threads are busy, a fresh request does not get 503 while some of
them are only stuck writing to clients that do not read: the answer that has run longest is
cut (its socket shut down, so its blocked write fails at once) if it has run for at least
``shed_after`` seconds, and the fresh request takes the thread it frees. Only when every
busy answer is younger than that is the request refused (the caller answers 503). So a
stream of clients that never read their answers costs each of them its answer, not
Prometheus its scrape.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from .clock import SYSTEM, Clock


class AnswerPool:
    """Runs ``run(conn, request)`` on a bounded set of daemon threads (see the module doc).

    ``conn`` must have a ``sock`` attribute: the socket shut down when its answer is cut.
    """

    def __init__(
        self,
        limit: int,
        idle: float,
        run: Callable[[Any, Any], None],
        *,
        shed_after: float = 1.0,
        clock: Clock = SYSTEM,
    ) -> None:
        self._limit, self._idle_s, self._run = limit, idle, run
        self._shed_after, self._clock = shed_after, clock
        self._jobs: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._owed = 0  # jobs queued for threads that answers being cut will free
        self._busy: dict[int, tuple[float, Any]] = {}  # id(conn) -> (started, conn)
        self.shed = 0  # answers cut to make room (a seam for tests)

    def submit(self, conn: Any, request: Any) -> bool:
        """Hand a request to a thread; ``False`` when all are busy with young answers."""
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._work, name="http-answer", daemon=True).start()
            elif not self._cut_oldest():
                return False
            self._jobs.put((conn, request))
        return True

    def stop(self) -> None:
        with self._lock:
            for _ in range(self._threads):
                self._jobs.put(None)

    def _cut_oldest(self) -> bool:
        """Cut the longest-running answer if it is old enough (lock held)."""
        if not self._busy:
            return False
        key, (started, conn) = min(self._busy.items(), key=lambda item: item[1][0])
        if self._clock.monotonic() - started < self._shed_after:
            return False
        del self._busy[key]  # cut once; its thread is owed to the job queued now
        self._owed += 1
        self.shed += 1
        with contextlib.suppress(OSError, ValueError):
            # The plain socket's shutdown (a TLS socket's own would drop its SSL object
            # under the thread writing with it): the blocked write fails at once.
            socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        return True

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if job is None:
                with self._lock:
                    self._threads -= 1
                return
            with self._lock:
                self._busy[id(job[0])] = (self._clock.monotonic(), job[0])
            try:
                self._run(*job)
            finally:
                with self._lock:
                    self._busy.pop(id(job[0]), None)
                    if self._owed:
                        self._owed -= 1  # a queued job is this thread's next
                    else:
                        self._idle += 1
