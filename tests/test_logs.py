"""Log set-up: both formats redact the token everywhere, stdlib loggers share the format."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from do_exporter.logs import REDACTED, configure

SECRET = "tok-3a9f0c1b2d"


@pytest.fixture(autouse=True)
def _restore_root_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_token_is_redacted_in_values_and_tracebacks(fmt: str) -> None:
    """Event values, nested values and exception text all lose the token, in both formats."""
    buf = io.StringIO()
    configure(level="debug", fmt=fmt, secrets=[SECRET], stream=buf)
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("crashed", header=f"Bearer {SECRET}", nested={"a": [SECRET]})
    out = buf.getvalue()
    assert SECRET not in out
    assert out.count(REDACTED) >= 3
    assert "RuntimeError" in out


def test_json_lines_and_stdlib_loggers_share_the_format() -> None:
    """A urllib3 warning comes out as one JSON line like ours; library info lines are dropped."""
    buf = io.StringIO()
    configure(level="info", fmt="json", secrets=[SECRET], stream=buf)
    structlog.get_logger("t").info("hello", n=1)
    logging.getLogger("urllib3.connectionpool").warning("pool full: %s", SECRET)
    logging.getLogger("apscheduler.scheduler").info("Added job")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["hello", f"pool full: {REDACTED}"]
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "urllib3.connectionpool"


def test_level_filters_debug() -> None:
    buf = io.StringIO()
    configure(level="warning", fmt="json", stream=buf)
    structlog.get_logger("t").info("quiet")
    structlog.get_logger("t").warning("loud")
    assert [json.loads(x)["event"] for x in buf.getvalue().splitlines()] == ["loud"]
