"""An APScheduler executor whose jobs run on one *daemon* thread, in the order submitted.

APScheduler's own ``ThreadPoolExecutor`` runs jobs on a ``concurrent.futures`` pool, whose
threads the interpreter joins at exit: a token verification or a poll blocked on a silent
API then held the process for as long as the request took (minutes, with a trickled answer)
after SIGTERM. A daemon thread is not joined: shutdown sets the exporter's cancel event
(waits on the rate limiter end, requests not yet sent are not sent) and the process exits
whatever is still in flight. One thread, one job at a time, as with ``max_workers=1``: the
start-up verification and the first poll never overlap.
"""

from __future__ import annotations

import queue
import sys
import threading
from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job


class DaemonExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs submitted jobs one after the other on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Any, list[datetime]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._thread.start()

    def shutdown(self, wait: bool = True) -> None:
        self._jobs.put(None)  # a job in flight is not waited for, whatever ``wait`` says

    def join(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the job in flight to end; whether it did.
        (A cancelled job usually ends at once; letting it finish its last log lines before
        the interpreter exits keeps a daemon thread from writing while streams close.)"""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        self._jobs.put((job, run_times))

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, run_times = item
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException:
                _, exc, tb = sys.exc_info()
                assert exc is not None
                self._run_job_error(job.id, exc, tb)
            else:
                self._run_job_success(job.id, events)
