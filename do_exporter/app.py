"""Wiring: client, poller, snapshot store, HTTP server and the APScheduler loop.

One interval job polls (``max_instances=1``, ``coalesce=True``, first run at start-up);
scrapes read the store. :meth:`Exporter.run` returns when the stop event is set (SIGTERM or
SIGINT), after cancelling any poll in flight; its ``reload`` event (SIGHUP) re-reads the token
files at once (they are also re-read when they change, see :class:`~.config.TokenFile`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import requests
import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from requests.adapters import HTTPAdapter

from . import __version__
from .check import describe_error
from .cloudflare import CloudflareAPIError, CloudflareClient
from .config import DEFAULT_CREDENTIAL, RATE_LIMIT_WINDOW, Config, Secret, TokenFile
from .model import Snapshot
from .planner import AnalyticsPlan, Credential
from .poller import Poller, Source
from .ratelimit import Cancelled, RateLimiter
from .selfmetrics import ExporterMetrics
from .server import MetricsServer
from .store import SnapshotStore
from .tokenhealth import VERIFY_EVERY_HOURS, TokenHealth, problem, verify_credential
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
    """One credential: where the API is, its token, its accounts and its budget.

    From the flags (one), ``--config.file`` (several) or the demo simulator. ``None`` budget
    fields take the flags' values.
    """

    api_url: str
    token: Secret
    account_ids: tuple[str, ...]
    name: str = DEFAULT_CREDENTIAL
    api_rate_limit: int | None = None
    api_reserve: int | None = None


def targets_from(config: Config) -> tuple[Target, ...]:
    """One target per configured credential (the flags make one named ``default``)."""
    return tuple(
        Target(
            config.api_url,
            c.token,
            c.account_ids,
            name=c.name,
            api_rate_limit=c.api_rate_limit,
            api_reserve=c.api_reserve,
        )
        for c in config.credentials
    )


class Exporter:
    """The daemon: everything the process runs, built from a :class:`Config`."""

    def __init__(
        self,
        config: Config,
        target: Target | Sequence[Target],
        *,
        web: WebConfig | None = None,
    ) -> None:
        self.config = config
        self.web = web
        self.targets = (target,) if isinstance(target, Target) else tuple(target)
        if not self.targets:
            raise ValueError("an exporter needs at least one target")
        # Every token source in use, once each (SIGHUP re-reads them).
        self.tokens: tuple[Secret, ...] = tuple(
            {
                id(t): t
                for t in (*(x.token for x in self.targets), *(c.token for c in config.credentials))
            }.values()
        )
        self.cancel = threading.Event()
        self.metrics = ExporterMetrics()
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=config.max_concurrency)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.limiters: dict[str, RateLimiter] = {}
        sources: list[Source] = []
        for t in self.targets:
            rate = t.api_rate_limit if t.api_rate_limit is not None else config.api_rate_limit
            reserve = t.api_reserve if t.api_reserve is not None else config.api_reserve
            limiter = RateLimiter(
                rate,
                RATE_LIMIT_WINDOW,
                per_second=PER_SECOND_LIMIT,
                reserve=reserve,
                cancel=self.cancel,
            )
            client = CloudflareClient(
                self.session,
                t.api_url,
                t.token,
                limiter=limiter,
                graphql_limiter=RateLimiter(
                    config.graphql_rate_limit, RATE_LIMIT_WINDOW, cancel=self.cancel
                ),
                timeout=config.api_timeout,
                observer=self.metrics.for_credential(t.name),
                cancel=self.cancel,
            )
            budget = rate * config.interval / RATE_LIMIT_WINDOW
            credential = Credential(
                t.name, t.account_ids, budget, window_polls=RATE_LIMIT_WINDOW / config.interval
            )
            self.metrics.add_budget(t.name, limiter)
            self.limiters[t.name] = limiter
            sources.append(Source(credential, client, limiter))
        self.sources = tuple(sources)
        self.limiter = sources[0].limiter
        self.client = sources[0].client
        self.poller = Poller(
            sources=sources,
            analytics=(
                AnalyticsPlan(delay=config.analytics_delay, interval=config.interval)
                if config.analytics
                else None
            ),
            max_workers=config.max_concurrency,
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

    # -- token health ---------------------------------------------------------------------

    def verify_tokens(self, *, capabilities: bool = False) -> list[TokenHealth]:
        """Verify every credential's token: update the token metrics, log one line per
        problem, never raise (the daemon keeps serving what works).

        With ``capabilities`` (at start-up) also read one namespace page of each configured
        account, so a missing Workers Scripts Read shows before the first poll ends.
        Objects are not read; analytics permissions are the poller's to report.
        """
        targets = [
            (s.credential.name, cast(CloudflareClient, s.client), s.credential.account_ids)
            for s in self.sources
        ]
        states: list[TokenHealth] = []
        for name, client, account_ids in targets:
            try:
                previous = self.metrics.token_health.get(name)
                health = verify_credential(client, name, account_ids, previous)
                self.metrics.token_health.update(health)
                states.append(health)
                text = problem(health, time.time())
                if text is not None:
                    bad = health.status in ("invalid", "disabled", "expired")
                    (log.error if bad else log.warning)(text, credential=name)
                if not capabilities or health.status != "active":
                    continue
                for account_id in account_ids:
                    try:
                        client.probe_namespaces(account_id)
                    except CloudflareAPIError as exc:
                        outcome, detail = describe_error(exc)
                        log.error(
                            f"the token cannot list this account's namespaces: {outcome} {detail}",
                            credential=name,
                            account_id=account_id,
                        )
            except Cancelled:
                return states
            except Exception:  # a bug here must not stop the exporter or the schedule
                log.exception("verifying the API token failed", credential=name)
        return states

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

    def reload_tokens(self) -> int:
        """Re-read every token file now (SIGHUP); returns how many tokens changed."""
        files = [t for t in self.tokens if isinstance(t, TokenFile)]
        log.info("SIGHUP received: re-reading the API token files", token_files=len(files))
        return sum(token.reload() for token in files)

    def _reloader(self, done: threading.Event, reload: threading.Event) -> None:
        while True:
            reload.wait()
            if done.is_set():
                return
            reload.clear()
            try:
                self.reload_tokens()
            except Exception:  # a bug here must not end SIGHUP handling
                log.exception("re-reading the API token files failed")

    def run(self, stop: threading.Event, reload: threading.Event | None = None) -> None:
        """Serve and poll until ``stop`` is set, then shut down cleanly.

        Each time ``reload`` is set (the CLI sets it on SIGHUP) the token files are re-read.
        """
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
                f"--web.listen-address/DO_EXPORTER_LISTEN_ADDRESS: cannot listen on "
                f"{self.config.listen_address}: {exc.strerror or exc}"
            ) from None
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            timezone=UTC,
        )
        scheduler.add_listener(self._on_job_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        # At start, the tokens (and one namespace page per account) are verified just before
        # the first poll, in the poll's own thread: the two never overlap.
        scheduler.add_job(
            self.verify_tokens, kwargs={"capabilities": True}, id="verify-start", max_instances=1
        )
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
        # Token health, hourly, in its own thread so that a long poll does not delay it.
        scheduler.add_executor(ThreadPoolExecutor(max_workers=1), "verify")
        scheduler.add_job(
            self.verify_tokens,
            trigger="interval",
            hours=VERIFY_EVERY_HOURS,
            id="verify",
            name="verify the API tokens",
            executor="verify",
            max_instances=1,
            coalesce=True,
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
            credentials=[t.name for t in self.targets],
            api_reserve=self.config.api_reserve,
        )
        scheduler.start()
        done = threading.Event()
        reloader = None
        if reload is not None:
            reloader = threading.Thread(
                target=self._reloader, args=(done, reload), name="token-reload", daemon=True
            )
            reloader.start()
        try:
            stop.wait()
        finally:
            log.info("shutting down")
            done.set()
            if reload is not None and reloader is not None:
                reload.set()  # wakes the reloader, which sees `done` and returns
                reloader.join(timeout=5)
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
