"""Token sources: :class:`Secret` (a fixed value) and :class:`TokenFile` (re-read when its
file changes), and the bounded file reading they share with the config files.

Both offer ``reveal()`` and never show the value in ``repr``/``str``; messages about a token
describe it, never show it.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable

import structlog

from .options import ConfigError

# Cloudflare API tokens are 40 characters; other kinds are accepted within these bounds.
MIN_TOKEN_LENGTH = 32
MAX_TOKEN_LENGTH = 256
MAX_TOKEN_FILE_BYTES = 4096
# How often (seconds) a token file is checked for a new token, from the code that needs it.
TOKEN_CHECK_INTERVAL = 30.0
# Old tokens stay redacted from logs after a rotation; this many are remembered.
MAX_TOKEN_HISTORY = 16

log = structlog.get_logger("do_exporter.config")


class Secret:
    """An API token that never shows itself in ``repr``, ``str`` or f-strings.

    The client calls :meth:`reveal` for every request; :class:`TokenFile` (a subclass)
    re-reads its file when it changes, so both are "token sources".
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call this only where it is sent to the API."""
        return self._value

    def reload(self) -> bool:
        """Re-read the token now (SIGHUP); a fixed token has nothing to re-read: False."""
        return False

    def known_values(self) -> tuple[str, ...]:
        """Every value this source has held: what log redaction must hide."""
        return (self._value,) if self._value else ()

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return type(other) is Secret and type(self) is Secret and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class TokenFile(Secret):
    """A token read from a file, re-read when the file changes (secret rotation).

    Kubernetes rotates a mounted Secret by swapping a symlink, so the file is compared by
    the ``stat`` of the path it resolves to (device, inode, mtime, size), at most every
    ``check_every`` seconds of ``clock``, from :meth:`reveal` (the code that needs the
    token); :meth:`reload` (SIGHUP) re-reads at once. A re-read that fails keeps the
    current token and logs once, until a read succeeds again. The token is never logged.
    """

    __slots__ = (
        "_check_every",
        "_clock",
        "_failing",
        "_history",
        "_lock",
        "_name",
        "_next_check",
        "_signature",
        "path",
        "source",
    )

    def __init__(
        self,
        path: str,
        *,
        source: str = "--api-token-file",
        name: str = "default",
        clock: Callable[[], float] = time.monotonic,
        check_every: float = TOKEN_CHECK_INTERVAL,
    ) -> None:
        """Read the token now; raises :class:`ConfigError` (one line) if that fails."""
        self.path = path
        self.source = source
        self._name = name
        self._clock = clock
        self._check_every = check_every
        self._lock = threading.Lock()
        try:
            signature, value = self._read()
        except Unusable as exc:
            raise ConfigError(f"{source}: {exc.describe(path)}") from None
        super().__init__(value)
        self._signature = signature
        self._history: tuple[str, ...] = (value,)
        self._next_check = clock() + check_every
        self._failing = False

    def reveal(self) -> str:
        """The current token; re-reads the file first if a check is due and it changed."""
        now = self._clock()
        with self._lock:
            due = now >= self._next_check
            if due:  # this caller checks; the others go on with the current token
                self._next_check = now + self._check_every
        if due:
            self._refresh(forced=False)
        return self._value

    def reload(self) -> bool:
        """Re-read the file now (SIGHUP), changed or not; True if the token changed."""
        with self._lock:
            self._next_check = self._clock() + self._check_every
        return self._refresh(forced=True)

    def known_values(self) -> tuple[str, ...]:
        return self._history

    def __repr__(self) -> str:
        return f"TokenFile({self.path!r}, token='**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def _read(self) -> tuple[tuple[int, int, int, int], str]:
        # Stat first: a change made while reading shows up as a new signature next time.
        signature = _signature(self.path)
        data = read_limited(self.path, MAX_TOKEN_FILE_BYTES)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Unusable("not UTF-8 text", unreadable=True) from None
        return signature, check_token(text)

    def _refresh(self, *, forced: bool) -> bool:
        where = {"credential": self._name, "source": self.source, "path": self.path}
        try:
            if not forced and _signature(self.path) == self._signature:
                return False
            signature, value = self._read()
        except Unusable as exc:
            with self._lock:
                first, self._failing = not self._failing, True
            if first or forced:
                log.warning(
                    "API token re-read failed; keeping the current token",
                    reason=exc.describe(self.path),
                    **where,
                )
            return False
        with self._lock:
            self._failing = False
            self._signature = signature
            changed = value != self._value
            if changed:
                self._history = (*self._history[-(MAX_TOKEN_HISTORY - 1) :], value)
                self._value = value
        if changed:
            log.info("API token reloaded", **where)
        elif forced:
            log.info("API token file re-read: unchanged", **where)
        return changed


class Unusable(Exception):
    """A file or value cannot be used; ``str()`` says why, never showing the contents."""

    def __init__(self, reason: str, *, unreadable: bool = False) -> None:
        super().__init__(reason)
        self.unreadable = unreadable

    def describe(self, path: str, what: str = "token file") -> str:
        return f"cannot read {what} {path!r}: {self}" if self.unreadable else str(self)


def _signature(path: str) -> tuple[int, int, int, int]:
    try:
        st = os.stat(path)  # follows symlinks: the file the path resolves to now
    except OSError as exc:
        raise Unusable(exc.strerror or type(exc).__name__, unreadable=True) from None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def read_limited(path: str, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` of them; raises :class:`Unusable`.

    ``stat`` before ``open`` and a non-blocking open: a FIFO, a device such as
    ``/dev/zero`` or a directory is refused without being opened or read.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise Unusable("not a regular file", unreadable=True)
        if st.st_size > limit:
            raise Unusable(f"larger than {_size(limit)}", unreadable=True)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
                raise Unusable("not a regular file", unreadable=True)
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise Unusable(exc.strerror or type(exc).__name__, unreadable=True) from None
    if size > limit:  # it grew since the stat
        raise Unusable(f"larger than {_size(limit)}", unreadable=True)
    return b"".join(chunks)


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit < 1024 * 1024 else f"{limit // (1024 * 1024)} MiB"


def check_token(text: str) -> str:
    """The token in ``text`` (surrounding whitespace dropped), or :class:`Unusable`.

    Cloudflare API tokens are 40 characters of ``[A-Za-z0-9_-]``; 32..256 visible ASCII
    characters are accepted so other token kinds work. A shorter value is refused: log
    redaction replaces the token wherever it appears, which is only safe for long values.
    The message never shows the value.
    """
    token = text.strip()
    if not token:
        raise Unusable("the API token is empty")
    if not all("!" <= ch <= "~" for ch in token):
        raise Unusable(
            "the API token may hold only visible ASCII characters "
            "(no whitespace, control or non-ASCII characters)"
        )
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise Unusable(
            f"the API token is not {MIN_TOKEN_LENGTH}..{MAX_TOKEN_LENGTH} characters long "
            "(Cloudflare API tokens are 40)"
        )
    return token
