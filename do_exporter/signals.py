"""Signals that always work: the handlers only let the kernel write a byte to a pipe.

A Python signal handler runs on the main thread *between two bytecodes of whatever the
main thread was doing*, and a second signal can interrupt it the same way. A handler that
takes a lock (``threading.Event.set`` does) deadlocks when a second signal arrives while
the first holds it, and a handler written in Python can be re-entered until the stack
overflows under a storm of signals. So here:

- ``signal.set_wakeup_fd`` makes the C-level handler write each signal's number to one end
  of a socket pair (without blocking: when the pipe is full, bytes are dropped, which only
  coalesces a storm);
- the Python-level handler is a C function that does nothing (``dict.get``): it runs no Python
  bytecode, so it cannot be interrupted, takes no lock and allocates nothing;
- the main thread blocks in :meth:`Inbox.wait` on the other end, reads what came and acts
  (stop, reload) outside any handler.

When the inbox closes, the signals it caught are set to *ignored* (``SIG_IGN``), not back to
their defaults: a process that is shutting down ignores further SIGTERM, SIGINT and SIGHUP
(shutdown is bounded anyway, see :meth:`do_exporter.app.Exporter.stop`), so a storm of them
cannot kill it with a signal status or a ``KeyboardInterrupt`` traceback halfway through.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
from collections.abc import Iterable
from types import TracebackType

# The Python-level handler: a C callable taking (signum, frame) that returns at once. A Python
# function would run bytecode, between which another signal's handler can be started.
_NOBODY: dict[int, object] = {}
_NOTHING = _NOBODY.get


class Inbox:
    """Catches some signals while open (a context manager); :meth:`wait` returns them."""

    def __init__(self, signums: Iterable[int]) -> None:
        self.signums = tuple(signums)
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd: int | None = None

    def __enter__(self) -> Inbox:
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in self.signums:
            signal.signal(signum, _NOTHING)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum in self.signums:
            signal.signal(signum, signal.SIG_IGN)
        signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        self._reader.close()
        self._writer.close()

    def wait(self, timeout: float | None = None) -> frozenset[int]:
        """The signals caught since the last call (empty after ``timeout`` seconds without
        any); blocks until one comes. Signals this inbox does not catch are left out."""
        select.select([self._reader], [], [], timeout)
        got: set[int] = set()
        with contextlib.suppress(BlockingIOError, InterruptedError):
            for _ in range(16):  # bounded: a storm cannot keep the main thread reading
                data = self._reader.recv(4096)
                if not data:
                    break
                got.update(data)
        return frozenset(got.intersection(self.signums))
