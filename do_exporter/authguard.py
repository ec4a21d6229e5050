"""Basic auth with bounded work: bcrypt cannot be made to eat the CPU by wrong passwords.

bcrypt is slow on purpose (tens to hundreds of milliseconds of CPU a check). Without a
bound, 300 clients sending wrong passwords kept the exporter at 1.93 cores and Prometheus'
scrapes at 3 s. :class:`AuthGuard` wraps the password check (:class:`~.webconfig.BasicAuth`)
and promises:

- **A password once accepted costs nothing again**: a successful check is remembered (by a
  SHA-256 of the header, never the password itself), and a remembered header is never
  limited: Prometheus, once in, is not slowed down or refused by anyone else's failures.
- **At most one password check runs at a time** (bcrypt busies at most one core).
- **Failed checks are rate limited**: per client address (``per_client_burst`` failures,
  then one more each ``per_client_every`` seconds) and overall (``overall_burst``, then one
  each ``overall_every`` seconds). A request that would need a check while its address or
  the whole server is over its limit, or while another check runs, is *limited*: no bcrypt
  runs, and the server answers 429 with ``Retry-After`` after a short delay (without
  holding a thread), so a client in a loop cannot turn refusals into CPU either.
- A header that is not ``Basic`` (or is missing) is refused without a check and without
  counting against any limit.

The cost: while the overall limit is exhausted by a flood from many addresses, a client
whose password is not yet remembered (a new Prometheus, or one after a restart) may get 429
until the flood stops; its first successful check then lets it in for good.
"""

from __future__ import annotations

import enum
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from .clock import SYSTEM, Clock

MAX_REMEMBERED = 1024  # accepted headers remembered (forgotten all at once beyond)
MAX_CLIENTS = 4096  # client addresses whose failures are counted (the oldest forgotten)


class PasswordCheck(Protocol):
    """What is guarded: :class:`~.webconfig.BasicAuth` (bcrypt), or a fake in tests."""

    def check(self, header: str | None) -> bool: ...


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"  # 401
    LIMITED = "limited"  # 429: no check was run
    CHECK = "check"  # from precheck: a password check is needed (run it on a worker thread)


@dataclass(frozen=True, slots=True)
class AuthLimits:
    per_client_burst: float = 5.0
    per_client_every: float = 10.0  # seconds per failure allowed to one address
    overall_burst: float = 10.0
    overall_every: float = 0.5  # seconds per failure allowed overall (2 a second)


class _Bucket:
    """A token bucket: ``burst`` tokens, one more each ``every`` seconds."""

    __slots__ = ("level", "stamp")

    def __init__(self, burst: float, now: float) -> None:
        self.level, self.stamp = burst, now

    def refill(self, burst: float, every: float, now: float) -> float:
        self.level = min(burst, self.level + max(0.0, now - self.stamp) / every)
        self.stamp = now
        return self.level


class AuthGuard:
    """Decides requests' basic auth with the bounds in the module doc."""

    def __init__(
        self,
        auth: PasswordCheck,
        *,
        limits: AuthLimits = AuthLimits(),
        clock: Clock = SYSTEM,
    ) -> None:
        self._auth, self.limits, self._clock = auth, limits, clock
        self._lock = threading.Lock()
        self._checking = threading.Lock()  # held while bcrypt runs
        self._good: set[bytes] = set()
        self._clients: OrderedDict[str, _Bucket] = OrderedDict()
        self._overall = _Bucket(limits.overall_burst, clock.monotonic())
        self.checks = 0  # password checks run (a seam for tests and the benchmark)

    def precheck(self, header: str | None, address: str) -> Verdict:
        """What can be decided without bcrypt: ``ALLOWED`` (remembered), ``DENIED`` (not
        Basic), ``LIMITED``, or ``CHECK`` (run :meth:`check` on a worker thread)."""
        if not _is_basic(header):
            return Verdict.DENIED
        with self._lock:
            if _key(header) in self._good:
                return Verdict.ALLOWED
            return Verdict.CHECK if self._room(address) else Verdict.LIMITED

    def check(self, header: str | None, address: str) -> Verdict:
        """The full decision: ``ALLOWED``, ``DENIED`` or ``LIMITED`` (no check run)."""
        verdict = self.precheck(header, address)
        if verdict is not Verdict.CHECK:
            return verdict
        if not self._checking.acquire(blocking=False):
            return Verdict.LIMITED
        try:
            with self._lock:  # the limits again: time passed since the precheck
                if not self._room(address):
                    return Verdict.LIMITED
                self.checks += 1
            ok = self._auth.check(header)
        finally:
            self._checking.release()
        with self._lock:
            if ok:
                if len(self._good) >= MAX_REMEMBERED:
                    self._good.clear()
                self._good.add(_key(header))
                return Verdict.ALLOWED
            self._charge(address)
        return Verdict.DENIED

    def retry_after(self) -> int:
        """Seconds a limited client should wait (for the ``Retry-After`` header)."""
        return max(1, round(self.limits.overall_every))

    def _room(self, address: str) -> bool:
        """Whether a failed check may still be afforded for ``address`` (lock held)."""
        now, limits = self._clock.monotonic(), self.limits
        if self._overall.refill(limits.overall_burst, limits.overall_every, now) < 1:
            return False
        bucket = self._clients.get(address)
        if bucket is None:
            return True
        return bucket.refill(limits.per_client_burst, limits.per_client_every, now) >= 1

    def _charge(self, address: str) -> None:
        """Count one failed check against ``address`` and overall (lock held)."""
        now, limits = self._clock.monotonic(), self.limits
        bucket = self._clients.pop(address, None) or _Bucket(limits.per_client_burst, now)
        bucket.refill(limits.per_client_burst, limits.per_client_every, now)
        bucket.level -= 1
        self._clients[address] = bucket  # the most recent last
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        self._overall.refill(limits.overall_burst, limits.overall_every, now)
        self._overall.level -= 1


def _is_basic(header: str | None) -> bool:
    scheme, _, _ = (header or "").strip().partition(" ")
    return scheme.lower() == "basic"


def _key(header: str | None) -> bytes:
    return hashlib.sha256((header or "").encode("utf-8", "surrogateescape")).digest()
