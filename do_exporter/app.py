"""Wiring: client, poller, snapshot store, HTTP server and the APScheduler loop.

One interval job polls (``max_instances=1``, ``coalesce=True``, first run at start-up);
scrapes read the store. :meth:`Exporter.start` starts serving and polling and returns;
:meth:`Exporter.stop` ends it in seconds whatever is in flight: the jobs (token
verification, polls) run on daemon threads (:mod:`do_exporter.jobs`) that it cancels and
does not wait for. The CLI turns signals into calls of these (:mod:`do_exporter.signals`);
:meth:`Exporter.reload_tokens` re-reads the token files (SIGHUP; they are also re-read when
they change, see :class:`~.config.TokenFile`).

The client and limiter factories and the clock are arguments, so tests hand in fakes.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, cast

import requests
import structlog
from requests.adapters import HTTPAdapter

from . import __version__
from .apifacts import PER_SECOND_LIMIT, RATE_LIMIT_WINDOW
from .check import describe_error
from .clock import SYSTEM, Clock
from .cloudflare import CloudflareAPIError, CloudflareClient, RequestObserver
from .config import Config, Credential, Secret, TokenFile, format_address
from .httpwire import Streamed
from .metrics.contract import estimate_series
from .metrics.groups import INVENTORY
from .metrics.gzipstream import crc32_combine, stream
from .metrics.selfmetrics import ExporterMetrics
from .model import Snapshot
from .planner import AnalyticsPlan
from .poller import Poller, Source
from .ratelimit import Cancelled, RateLimiter
from .store import SnapshotStore
from .tokenhealth import VERIFY_EVERY_HOURS, TokenHealth, problem, verify_credential

if TYPE_CHECKING:  # imported by the daemon only: --once and --check never schedule or serve
    from apscheduler.events import JobExecutionEvent
    from apscheduler.schedulers.background import BackgroundScheduler

    from .jobs import DaemonExecutor
    from .server import MetricsServer
    from .webconfig import WebConfig

log = structlog.get_logger("do_exporter.app")

# Cloudflare also limits each client IP to 200 requests a second; stay well below it.
# A scheduled poll publishes what it has this long before the next one is due.
DEADLINE_MARGIN = 0.1
# Seconds shutdown waits, in all, for cancelled jobs to end (they are not waited for beyond).
JOB_GRACE = 1.0


class ClientFactory(Protocol):
    """Builds one credential's API client (``CloudflareClient`` takes these arguments)."""

    def __call__(
        self,
        session: requests.Session,
        base_url: str,
        token: Secret,
        *,
        limiter: RateLimiter,
        graphql_limiter: RateLimiter | None,
        timeout: float,
        observer: RequestObserver | None,
        cancel: threading.Event | None,
    ) -> CloudflareClient: ...


# Builds a rate limiter: (requests, window seconds, per_second=, reserve=, cancel=).
LimiterFactory = Callable[..., RateLimiter]


class StartupError(Exception):
    """The exporter cannot start (e.g. the listen address is taken); one line for the user."""


class Exporter:
    """The daemon: everything the process runs, built from a :class:`Config`.

    ``client_factory`` and ``limiter_factory`` build each credential's client and rate
    limiters (tests pass fakes or partials); ``clock`` is read for poll deadlines, poll
    durations and token expiry.
    """

    def __init__(
        self,
        config: Config,
        credentials: Credential | Sequence[Credential] = (),
        *,
        web: WebConfig | None = None,
        client_factory: ClientFactory = CloudflareClient,
        limiter_factory: LimiterFactory = RateLimiter,
        clock: Clock = SYSTEM,
    ) -> None:
        self.config, self.web, self.clock = config, web, clock
        if isinstance(credentials, Credential):
            credentials = (credentials,)
        given = credentials or config.credentials
        self.targets = tuple(c.for_interval(config.interval) for c in given)
        if not self.targets:
            raise ValueError("an exporter needs at least one credential")
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
        self._client_factory, self._limiter_factory = client_factory, limiter_factory
        self.limiters: dict[str, RateLimiter] = {}  # by credential name, filled by _source
        self.sources = tuple(self._source(t) for t in self.targets)
        self.limiter = self.sources[0].limiter
        self.client = self.sources[0].client
        self.poller = Poller(
            sources=self.sources,
            analytics=(
                AnalyticsPlan(
                    delay=config.analytics_delay,
                    interval=config.interval,
                    top_objects=config.top_objects,
                    groups=config.collectors,
                )
                if config.analytics and config.collectors - {INVENTORY}
                else None
            ),
            max_workers=config.max_concurrency,
            burst_rate=PER_SECOND_LIMIT,
            cancel=self.cancel,
            namespace_filter=config.namespace_filter,
        )
        self.store = SnapshotStore(enabled=config.collectors)
        self._estimated = False
        self._trailer: tuple[tuple[int, ...], int] = ((), 0)  # the gzip CRC of the last scrape
        self.started = threading.Event()  # set once the HTTP server listens
        self.port: int | None = None
        self._server: MetricsServer | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._executors: tuple[DaemonExecutor, ...] = ()

    def _source(self, credential: Credential) -> Source:
        """One credential's limiter, client and budget."""
        config = self.config
        limiter = self._limiter_factory(
            credential.api_rate_limit, RATE_LIMIT_WINDOW, per_second=PER_SECOND_LIMIT,
            reserve=credential.api_reserve, cancel=self.cancel,
        )  # fmt: skip
        client = self._client_factory(
            self.session,
            credential.api_url,
            credential.token,
            limiter=limiter,
            graphql_limiter=self._limiter_factory(
                config.graphql_rate_limit, RATE_LIMIT_WINDOW, cancel=self.cancel
            ),
            timeout=config.api_timeout,
            observer=self.metrics.for_credential(credential.name),
            cancel=self.cancel,
        )
        self.metrics.add_budget(credential.name, limiter)
        self.limiters[credential.name] = limiter
        return Source(credential, client, limiter)

    # -- polling --------------------------------------------------------------------------

    def poll_once(self, deadline: float | None = None) -> Snapshot:
        """Poll now and publish the result; returns the new snapshot.

        ``deadline`` (Unix time): publish what is known by then; walks still running carry
        on into the next poll (see :mod:`do_exporter.poller`).
        """
        snapshot = self.poller.poll(self.store.snapshot, deadline)
        self.store.publish(snapshot)
        if not self._estimated and snapshot.ready:
            self._estimated = True
            self._log_series_estimate(snapshot)
        return snapshot

    def _log_series_estimate(self, snapshot: Snapshot) -> None:
        """One line after the first poll that listed namespaces: the series each group
        costs (docs/metrics.md), so a user sees what --no-collector.<group> would save."""
        estimate = estimate_series(
            accounts=len(snapshot.accounts),
            namespaces=sum(len(a.namespaces) for a in snapshot.accounts),
            top_objects=self.config.top_objects,
            analytics=self.config.analytics,
            credentials=len(self.targets),
            enabled=self.store.enabled,
        )
        log.info("series estimate", series=sum(estimate.values()), **estimate)

    def _poll_job(self) -> None:
        started = self.clock.monotonic()
        interval = self.config.interval
        try:
            self.poll_once(deadline=self.clock.time() + interval * (1 - DEADLINE_MARGIN))
        except Cancelled:
            log.info("poll cancelled by shutdown")
            return
        except Exception:  # never let a bug stop the schedule: log it and poll again later
            log.exception("poll crashed; keeping the last snapshot")
            return
        took = self.clock.monotonic() - started
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
        states: list[TokenHealth] = []
        for source in self.sources:
            name = source.credential.name
            try:
                health = self._verify(source, capabilities=capabilities)
            except Cancelled:
                return states
            except Exception:  # a bug here must not stop the exporter or the schedule
                log.exception("verifying the API token failed", credential=name)
                continue
            states.append(health)
        return states

    def _verify(self, source: Source, *, capabilities: bool) -> TokenHealth:
        name, account_ids = source.credential.name, source.credential.account_ids
        client = cast(CloudflareClient, source.client)  # the poller sees only ApiClient
        previous = self.metrics.token_health.get(name)
        health = verify_credential(client, name, account_ids, previous)
        self.metrics.token_health.update(health)
        text = problem(health, self.clock.time())
        if text is not None:
            bad = health.status in ("invalid", "disabled", "expired")
            (log.error if bad else log.warning)(text, credential=name)
        if not capabilities or health.status != "active":
            return health
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
        return health

    # -- serving --------------------------------------------------------------------------

    def exposition(self, compressed: bool = False) -> bytes:
        """What ``/metrics`` serves, as one byte string (``--once`` prints it)."""
        return b"".join(self.exposition_parts(compressed))

    def exposition_parts(self, compressed: bool = False) -> Iterable[bytes]:
        """What ``/metrics`` serves: the snapshot's pre-rendered part, then own metrics.

        With ``compressed`` both are raw deflate segments sent as one gzip member (header,
        segments, trailer): the snapshot's were compressed once when it was published; the
        small own-metrics part is rendered and compressed at most once a second and once per
        snapshot (:meth:`ExporterMetrics.segment`). The server sends the parts back to back,
        so the large one is never copied. Without, the
        plain text is inflated a piece at a time while it is sent (:class:`Streamed`: its
        length is known from the render, so it is never held whole).
        """
        rendered = self.store.rendered
        # Read after the exposition: the same snapshot or a newer one, so the own metrics
        # rendered for it are at least as new as the part served.
        snapshot = self.store.snapshot
        if compressed:  # one gzip member: every client decodes it (docs/architecture.md)
            own = self.metrics.segment(epoch=snapshot)
            key = (rendered.crc, rendered.plain_length, own.crc, own.length)
            last_key, crc = self._trailer  # one read of a tuple: safe across scrape threads
            if key != last_key:  # the parts changed: combine their CRCs again (~70 us)
                crc = crc32_combine(rendered.crc, own.crc, own.length)
                self._trailer = (key, crc)
            return stream((*rendered.segments, own.data), crc, rendered.plain_length + own.length)
        text = self.metrics.exposition(epoch=snapshot)
        pieces = itertools.chain(rendered.plain(), (text,))
        return Streamed(rendered.plain_length + len(text), pieces)

    def ready(self) -> bool:
        return self.store.snapshot.ready

    def reload_tokens(self) -> int:
        """Re-read every token file now (SIGHUP); returns how many tokens changed."""
        files = [t for t in self.tokens if isinstance(t, TokenFile)]
        log.info("SIGHUP received: re-reading the API token files", token_files=len(files))
        return sum(token.reload() for token in files)

    def run(self, stop: threading.Event) -> None:
        """Serve and poll until ``stop`` is set, then shut down (:meth:`start`,
        :meth:`stop`)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    def start(self) -> None:
        """Listen, then start the jobs: the start-up token verification, the polls (the first
        at once) and the hourly verification. Returns at once; :class:`StartupError` when
        the listen address cannot be used."""
        from .server import MetricsServer  # with the web config, bcrypt and PyYAML

        try:
            server = MetricsServer(
                self.config.listen_host,
                self.config.listen_port,
                metrics=self.exposition_parts,
                ready=self.ready,
                web=self.web,
                clock=self.clock,
            )
        except OSError as exc:
            # socket.create_server appends "(while attempting to bind on address (...))" to
            # strerror, repeating the address: the errno's own text is enough.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(
                f"--web.listen-address/DO_EXPORTER_LISTEN_ADDRESS: cannot listen on "
                f"{self.config.listen_address}: {reason}"
            ) from None
        self._scheduler = self._schedule()
        server.start()
        self._server, self.port = server, server.port
        self.started.set()
        log.info(
            "do-exporter started",
            version=__version__,
            listen_address=format_address(self.config.listen_host, server.port),
            scheme=server.scheme,
            basic_auth=bool(self.web and self.web.auth),
            interval_seconds=self.config.interval,
            api_rate_limit=self.config.api_rate_limit,
            accounts=list(self.poller.account_ids) or "discover",
            credentials=[t.name for t in self.targets],
            api_reserve=self.config.api_reserve,
        )
        self._scheduler.start()

    def _schedule(self) -> BackgroundScheduler:
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES
        from apscheduler.schedulers.background import BackgroundScheduler

        from .jobs import DaemonExecutor

        self._executors = (DaemonExecutor("poll"), DaemonExecutor("verify"))
        scheduler = BackgroundScheduler(
            executors=dict(zip(("default", "verify"), self._executors, strict=True)),
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
        return scheduler

    def stop(self) -> None:
        """Shut down in seconds whatever is in flight: cancel the jobs, stop the server (at
        most 5 s for its thread), close the session, then give the jobs at most
        ``JOB_GRACE`` seconds in all to end; a job still blocked (a request to a silent or
        trickling API) is left on its daemon thread, which does not hold the process.
        Idempotent; a no-op before :meth:`start`."""
        if self._server is None or self._scheduler is None:
            return
        log.info("shutting down")
        self.cancel.set()
        self._scheduler.shutdown(wait=False)
        self._server.stop()
        self.session.close()
        self._server = None
        ends = self.clock.monotonic() + JOB_GRACE
        for executor in self._executors:
            executor.join(max(0.0, ends - self.clock.monotonic()))
        log.info("stopped")

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES

        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("poll skipped: the previous poll is still running")
        elif event.exception is not None:
            log.error("poll job failed", error=repr(event.exception))
