"""structlog set-up: JSON lines or console output on stderr, with secrets redacted.

Nothing should ever hand the token to a logger; :class:`RedactSecrets` is the second line
of defence and replaces it wherever it appears in an event's values, tracebacks included
(they are rendered to text before it runs, without local variables). Libraries that log
through the standard ``logging`` module (APScheduler, urllib3) go through the same chain,
so every line on stderr has one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"


class RedactSecrets:
    """A structlog processor that replaces every occurrence of the given secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        if self._secrets:
            for key, value in event_dict.items():
                event_dict[key] = self._scrub(value)
        return event_dict

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        if isinstance(value, MutableMapping):
            return {k: self._scrub(v) for k, v in value.items()}
        return value


def configure(
    *,
    level: str = "info",
    fmt: str = "json",
    secrets: Iterable[str] = (),
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
