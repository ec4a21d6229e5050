"""Wiring: client, poller, snapshot store, HTTP server and the APScheduler loop.

One interval job polls (``max_instances=1``, ``coalesce=True``, first run at start-up);
scrapes read the store. :meth:`Exporter.run` returns when the stop event is set (SIGTERM or
SIGINT), after cancelling any poll in flight.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from requests.adapters import HTTPAdapter

from . import __version__
from .cloudflare import CloudflareClient
from .config import RATE_LIMIT_WINDOW, Config, Secret
from .model import Snapshot
from .poller import Poller
from .ratelimit import Cancelled, RateLimiter
from .selfmetrics import ExporterMetrics
from .server import MetricsServer
from .store import SnapshotStore
from .webconfig import WebConfig

log = structlog.get_logger("do_exporter.app")

# Cloudflare also limits each client IP to 200 requests a second; stay well below it.
PER_SECOND_LIMIT = 100
# A scheduled poll publishes what it has this long before the next one is due.
DEADLINE_MARGIN = 0.1


class StartupError(Exception):
    """The exporter cannot start (e.g. the listen address is taken); one line for the user."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the API is and how to talk to it (from the config, or from the demo simulator)."""

    api_url: str
    token: Secret
    account_ids: tuple[str, ...]


class Exporter:
    """The daemon: everything the process runs, built from a :class:`Config`."""

    def __init__(self, config: Config, target: Target, *, web: WebConfig | None = None) -> None:
        self.config = config
        self.web = web
        self.cancel = threading.Event()
        self.metrics = ExporterMetrics()
        self.limiter = RateLimiter(
            config.api_rate_limit,
            RATE_LIMIT_WINDOW,
            per_second=PER_SECOND_LIMIT,
            cancel=self.cancel,
        )
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=config.max_concurrency)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.client = CloudflareClient(
            self.session,
            target.api_url,
            target.token,
            limiter=self.limiter,
            timeout=config.api_timeout,
            observer=self.metrics,
            cancel=self.cancel,
        )
        self.poller = Poller(
            self.client,
            account_ids=target.account_ids,
            max_workers=config.max_concurrency,
            budget_per_poll=config.api_rate_limit * config.interval / RATE_LIMIT_WINDOW,
            burst_rate=PER_SECOND_LIMIT,
            cancel=self.cancel,
        )
        self.store = SnapshotStore()
        self.started = threading.Event()  # set once the HTTP server listens
        self.port: int | None = None

    # -- polling --------------------------------------------------------------------------

    def poll_once(self, deadline: float | None = None) -> Snapshot:
        """Poll now and publish the result; returns the new snapshot.

        ``deadline`` (Unix time): publish what is known by then; walks still running carry
        on into the next poll (see :mod:`do_exporter.poller`).
        """
        snapshot = self.poller.poll(self.store.snapshot, deadline)
        self.store.publish(snapshot)
        return snapshot

    def _poll_job(self) -> None:
        started = time.monotonic()
        interval = self.config.interval
        try:
            self.poll_once(deadline=time.time() + interval * (1 - DEADLINE_MARGIN))
        except Cancelled:
            log.info("poll cancelled by shutdown")
            return
        except Exception:  # never let a bug stop the schedule: log it and poll again later
            log.exception("poll crashed; keeping the last snapshot")
            return
        took = time.monotonic() - started
        if took > interval:
            log.warning(
                "poll took longer than the interval; the next poll starts late",
                duration_seconds=round(took, 3),
                interval_seconds=interval,
            )

    # -- serving --------------------------------------------------------------------------

    def exposition(self, compressed: bool = False) -> bytes:
        """What ``/metrics`` serves, as one byte string (``--once`` prints it)."""
        return b"".join(self.exposition_parts(compressed))

    def exposition_parts(self, compressed: bool = False) -> tuple[bytes, bytes]:
        """What ``/metrics`` serves: the snapshot's pre-rendered part, then own metrics.

        With ``compressed`` both are gzip members: the snapshot's part was compressed once
        when it was published; the small own-metrics part is rendered and compressed at most
        once a second and once per snapshot (:meth:`ExporterMetrics.exposition`). The
        server sends the parts back to back, so the large one is never copied.
        """
        served = self.store.exposition_gzip if compressed else self.store.exposition
        # Read after the exposition: the same snapshot or a newer one, so the own metrics
        # rendered for it are at least as new as the part served.
        snapshot = self.store.snapshot
        return served, self.metrics.exposition(compressed, epoch=snapshot)

    def ready(self) -> bool:
        return self.store.snapshot.ready

    def run(self, stop: threading.Event) -> None:
        """Serve and poll until ``stop`` is set, then shut down cleanly."""
        try:
            server = MetricsServer(
                self.config.listen_host,
                self.config.listen_port,
                metrics=self.exposition_parts,
                ready=self.ready,
                web=self.web,
            )
        except OSError as exc:
            raise StartupError(
                f"--listen-address/DO_EXPORTER_LISTEN_ADDRESS: cannot listen on "
                f"{self.config.listen_address}: {exc.strerror or exc}"
            ) from None
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            timezone=UTC,
        )
        scheduler.add_listener(self._on_job_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        scheduler.add_job(
            self._poll_job,
            trigger="interval",
            seconds=self.config.interval,
            id="poll",
            name="poll Cloudflare",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        server.start()
        self.port = server.port
        self.started.set()
        log.info(
            "do-exporter started",
            version=__version__,
            listen_address=f"{self.config.listen_host or '0.0.0.0'}:{server.port}",
            scheme=server.scheme,
            basic_auth=bool(self.web and self.web.auth),
            interval_seconds=self.config.interval,
            api_rate_limit=self.config.api_rate_limit,
            accounts=list(self.poller.account_ids) or "discover",
        )
        scheduler.start()
        try:
            stop.wait()
        finally:
            log.info("shutting down")
            self.cancel.set()
            scheduler.shutdown(wait=False)
            server.stop()
            self.session.close()
            log.info("stopped")

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("poll skipped: the previous poll is still running")
        elif event.exception is not None:
            log.error("poll job failed", error=repr(event.exception))
