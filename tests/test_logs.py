"""Log set-up: both formats redact the token everywhere, stdlib loggers share the format."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from do_exporter.config import TokenFile
from do_exporter.logs import REDACTED, RedactSecrets, configure

SECRET = "tok-3a9f0c1b2d-5e6f7a8b9c0d1e2f3a4b5c6d7"  # 40 characters, like a real token


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


def test_redaction_is_exact_and_leaves_words_alone() -> None:
    """Only the whole token is replaced: ordinary words around it are untouched."""
    buf = io.StringIO()
    configure(level="info", fmt="json", secrets=[SECRET], stream=buf)
    structlog.get_logger("t").info("connection reset", detail=f"x{SECRET}y", half=SECRET[:20])
    [line] = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert line["event"] == "connection reset"
    assert line["detail"] == f"x{REDACTED}y"
    assert line["half"] == SECRET[:20]  # not the token: a prefix of it is left as it is


@pytest.mark.parametrize("short", ["t", "tok-3a9f0c1b2d", "x" * 31])
def test_short_secrets_are_refused(short: str) -> None:
    """A secret under 32 characters cannot be redacted without mangling other text."""
    with pytest.raises(ValueError, match="shorter than 32"):
        RedactSecrets([short])


def test_a_rotated_token_is_redacted_too(tmp_path: Path) -> None:
    """A token file's new value is redacted from the moment it is read, the old one still."""
    path = tmp_path / "token"
    path.write_text(SECRET)
    token = TokenFile(str(path), clock=lambda: 0.0)
    buf = io.StringIO()
    configure(level="info", fmt="json", secrets=[token], stream=buf)
    new = "new-" + SECRET[4:]
    path.write_text(new + "\n\n")
    token.reload()
    structlog.get_logger("t").info("both", old=SECRET, new=new)
    out = buf.getvalue()
    assert SECRET not in out and new not in out
    assert json.loads(out.splitlines()[-1])["new"] == REDACTED
