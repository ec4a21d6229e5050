"""The total deadline of one attempt: a watchdog thread that shuts the socket.

Per-read timeouts cannot bound a peer that sends one byte every few seconds, before the
response head or after it. So each attempt registers a :class:`Slot` with the
:class:`Watchdog`; the session's connection pools (:class:`WatchedAdapter`) hand the
connection they give out to the slot of the thread asking, and at the deadline the watchdog
shuts that connection's socket down, which wakes any read or write blocked on it. Connect,
request, head and body are thus bounded together.

Deadlines are on the real monotonic clock: a socket does not follow an injected one.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# How often a slot past its deadline whose connection was not yet open is looked at again.
RECHECK = 0.05

_current = threading.local()  # .slot: the Slot of the attempt this thread is making


class Slot:
    """One attempt's connection, as far as the watchdog knows it."""

    __slots__ = ("_conn", "_detached", "_lock", "cut")

    def __init__(self) -> None:
        self._conn: Any = None
        self._detached = False
        self._lock = threading.Lock()
        self.cut = threading.Event()

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
        if self.cut.is_set():
            self.shut()

    def detach(self) -> None:
        """Forget the connection (before it goes back to the pool, where a late cut would
        hit whichever request takes it next)."""
        with self._lock:
            self._conn = None
            self._detached = True  # nothing left to cut: a late watchdog just lets go

    def shut(self) -> bool:
        """Shut the connection's socket; False when there is no socket yet."""
        with self._lock:
            if self._detached:
                return True
            self.cut.set()
            sock = getattr(self._conn, "sock", None)
        if sock is None:
            return False
        base = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
        if isinstance(base, socket.socket):
            # The plain socket's shutdown, also under TLS: wakes a blocked read with EOF.
            with contextlib.suppress(OSError, ValueError):
                socket.socket.shutdown(base, socket.SHUT_RDWR)
        return True


class Watchdog:
    """One thread, started on demand, that cuts the connections of attempts past their
    deadline (a timer thread per request would cost more CPU than reading a page does).
    The thread ends after :attr:`IDLE` seconds with nothing to watch."""

    IDLE = 10.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, Slot]] = {}
        self._key = 0
        self._next = math.inf  # when the thread wakes next
        self._running = False

    def watch(self, deadline: float, slot: Slot) -> int:
        """Cut ``slot``'s connection at ``deadline`` (``time.monotonic``) unless released."""
        with self._cond:
            self._key += 1
            self._due[self._key] = (deadline, slot)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="api-deadline", daemon=True).start()
            elif deadline < self._next:
                self._cond.notify()
            return self._key

    def release(self, key: int) -> None:
        with self._cond:
            self._due.pop(key, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key in [k for k, (when, _) in self._due.items() if when <= now]:
                    _, slot = self._due[key]
                    if slot.shut():  # a shutdown(2): quick, never blocks
                        del self._due[key]
                    else:  # still connecting (bounded by the connect timeout): look again
                        self._due[key] = (now + RECHECK, slot)
                if not self._due:
                    self._next = now + self.IDLE
                    if not self._cond.wait(self.IDLE) and not self._due:
                        self._running = False
                        return
                    continue
                self._next = min(when for when, _ in self._due.values())
                self._cond.wait(self._next - now)


@contextlib.contextmanager
def attempt_slot(watchdog: Watchdog, deadline: float) -> Any:
    """The slot of one attempt made on this thread, watched until the block ends."""
    slot = Slot()
    key = watchdog.watch(deadline, slot)
    _current.slot = slot
    try:
        yield slot
    finally:
        _current.slot = None
        watchdog.release(key)


class _Watched:
    """Pool mixin: the connection handed out joins the asking thread's slot."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        slot = getattr(_current, "slot", None)
        if slot is not None:
            slot.attach(conn)
        return conn


class _WatchedHTTPPool(_Watched, HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_Watched, HTTPSConnectionPool):
    pass


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """An :class:`HTTPAdapter` whose pools (direct and through a proxy) report their
    connections to the watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def watch_session(session: Any) -> None:
    """Mount :class:`WatchedAdapter` for http and https on ``session`` (keeping the pool
    sizes of the adapters it replaces); a session already watched is left alone."""
    for prefix in ("https://", "http://"):
        old = session.get_adapter(prefix)
        if isinstance(old, WatchedAdapter) or not isinstance(old, HTTPAdapter):
            continue
        session.mount(
            prefix,
            WatchedAdapter(
                pool_connections=getattr(old, "_pool_connections", 10),
                pool_maxsize=getattr(old, "_pool_maxsize", 10),
                max_retries=old.max_retries,
                pool_block=getattr(old, "_pool_block", False),
            ),
        )
