"""structlog set-up: JSON lines or console output on stderr, with secrets redacted.

Nothing should ever hand the token to a logger; :class:`RedactSecrets` is the second line
of defence and replaces it wherever it appears in an event's values, tracebacks included
(they are rendered to text before it runs, without local variables). It replaces the whole
token only, which is exact and safe because tokens are at least 32 characters (the config
refuses shorter ones; so does this module): a short "token" such as ``t`` would otherwise
turn ``connection`` into ``connec[REDACTED]ion`` and reveal itself. Token sources that are
re-read (rotation) are asked for every value they have held, at each event. Libraries that log
through the standard ``logging`` module (APScheduler, urllib3) go through the same chain,
so every line on stderr has one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Protocol, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"
# Shorter secrets cannot be redacted without mangling ordinary words (and revealing them).
MIN_SECRET_LENGTH = 32


class SecretSource(Protocol):
    """A token source (``config.Secret``, ``config.TokenFile``): every value it has held."""

    def known_values(self) -> tuple[str, ...]: ...


class RedactSecrets:
    """A structlog processor that replaces every occurrence of the given secrets.

    ``secrets``: fixed strings, or token sources asked at each event (a rotated token is
    redacted from the moment it is read). A secret shorter than 32 characters is refused
    with ``ValueError``.
    """

    def __init__(self, secrets: Iterable[str | SecretSource]) -> None:
        self._fixed: list[str] = []
        self._sources: list[SecretSource] = []
        for secret in secrets:
            if isinstance(secret, str):
                self._fixed.append(secret)
            else:
                self._sources.append(secret)
        for value in self._values():
            _check(value)

    def _values(self) -> list[str]:
        values = [s for s in self._fixed if s]
        for source in self._sources:
            values.extend(v for v in source.known_values() if v)
        # Longest first: a secret that contains another is replaced whole.
        return sorted(set(values), key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        secrets = self._values()  # token sources only hold values the config checked
        if secrets:
            for key, value in event_dict.items():
                event_dict[key] = self._scrub(value, secrets)
        return event_dict

    def _scrub(self, value: Any, secrets: list[str]) -> Any:
        if isinstance(value, str):
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v, secrets) for v in value)
        if isinstance(value, MutableMapping):
            return {k: self._scrub(v, secrets) for k, v in value.items()}
        return value


def _check(secret: str) -> None:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"a secret shorter than {MIN_SECRET_LENGTH} characters cannot be redacted exactly"
        )


def configure(
    *,
    level: str = "info",
    fmt: str = "json",
    secrets: Iterable[str | SecretSource] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process (called once, from the CLI)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become plain text here, before redaction (never with local variables).
        structlog.processors.format_exc_info,
        RedactSecrets(secrets),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    out = stream or sys.stderr
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Standard-library loggers (APScheduler, urllib3): same processors, same output.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Their info lines (every job run) are noise next to ours: warnings and up only.
    root.setLevel(max(numeric_level, logging.WARNING))
