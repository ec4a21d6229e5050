"""Token files: bounded, regular-file-only reads; plausible tokens; rotation on a fake clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from do_exporter.config import ConfigError, Secret, TokenFile

OLD = "old-" + "0123456789abcdefghijklmnopqrstuvwxyzAB"[:36]
NEW = "new-" + "0123456789abcdefghijklmnopqrstuvwxyzAB"[:36]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(path: str | Path) -> str:
    with pytest.raises(ConfigError) as info:
        TokenFile(str(path), clock=Clock())
    message = str(info.value)
    assert "\n" not in message and message.startswith("--api-token-file: ")
    return message


def write(path: Path, text: str, mtime: float | None = None) -> None:
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


# -- what a token file may be ---------------------------------------------------------------


def test_dev_zero_is_refused_without_reading() -> None:
    """/dev/zero (endless) is not a regular file: refused at once, nothing read."""
    assert "not a regular file" in refused("/dev/zero")


def test_fifo_without_writer_is_refused_without_hanging(tmp_path: Path) -> None:
    """A FIFO nobody writes to is refused instead of blocking start-up."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo)


def test_directory_is_refused(tmp_path: Path) -> None:
    assert "not a regular file" in refused(tmp_path)


def test_huge_file_is_refused_by_its_size(tmp_path: Path) -> None:
    """A 200 MB file (sparse: costs no disk) is refused from its stat, never read."""
    path = tmp_path / "huge"
    with path.open("wb") as fh:
        fh.truncate(200 * 1024 * 1024)
    assert "larger than 4 KiB" in refused(path)


def test_file_just_over_4_kib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(OLD + " " * (4097 - len(OLD)))
    assert "larger than 4 KiB" in refused(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    assert "No such file" in refused(tmp_path / "missing")


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xff" * 40)
    assert "not UTF-8" in refused(path)


@pytest.mark.parametrize("length", [1, 20, 31, 257])
def test_implausible_token_length_is_refused_without_echo(tmp_path: Path, length: int) -> None:
    """Cloudflare tokens are 40 characters; outside 32..256 is refused, never shown."""
    path = tmp_path / "token"
    value = "q" * length
    path.write_text(value + "\n")
    message = refused(path)
    assert "32..256 characters" in message and "q" * min(length, 8) not in message


@pytest.mark.parametrize("length", [32, 40, 256])
def test_plausible_token_lengths_are_accepted(tmp_path: Path, length: int) -> None:
    path = tmp_path / "token"
    value = ("Ab0_-" * 60)[:length]
    path.write_text(f"  {value}\n")
    assert TokenFile(str(path), clock=Clock()).reveal() == value


# -- rotation -------------------------------------------------------------------------------


def test_changed_file_is_re_read_after_30_seconds(tmp_path: Path) -> None:
    """A new token is picked up at the first reveal() 30 s after the last check, and logged."""
    path, clock = tmp_path / "token", Clock()
    write(path, OLD, mtime=1)
    token = TokenFile(str(path), clock=clock)
    write(path, NEW, mtime=2)
    clock.now += 29.9
    with capture_logs() as logs:
        assert token.reveal() == OLD
        clock.now += 0.1
        assert token.reveal() == NEW
        assert token.reveal() == NEW
    assert [e["event"] for e in logs] == ["API token reloaded"]
    assert logs[0]["log_level"] == "info" and logs[0]["path"] == str(path)
    assert OLD not in repr(logs) and NEW not in repr(logs)


def test_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    """With the same stat, the check costs one stat: content written behind it is unseen."""
    path, clock = tmp_path / "token", Clock()
    write(path, OLD, mtime=1)
    token = TokenFile(str(path), clock=clock)
    write(path, NEW, mtime=1)  # same size, same mtime, same inode
    clock.now += 31
    with capture_logs() as logs:
        assert token.reveal() == OLD
    assert logs == []


def test_kubernetes_symlink_swap_is_followed(tmp_path: Path) -> None:
    """A Secret volume swaps the `..data` symlink to a new folder: the new token is read."""
    clock = Clock()
    for name, value in (("..v1", OLD), ("..v2", NEW)):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "token", value, mtime=5)  # same mtime and size on purpose
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "token").symlink_to("..data/token")
    token = TokenFile(str(tmp_path / "token"), clock=clock)
    assert token.reveal() == OLD
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    clock.now += 30
    assert token.reveal() == NEW


def test_failed_re_read_keeps_the_token_and_logs_once(tmp_path: Path) -> None:
    """A missing or bad file keeps the old token; one warning per failing streak."""
    path, clock = tmp_path / "token", Clock()
    write(path, OLD, mtime=1)
    token = TokenFile(str(path), clock=clock)
    path.unlink()
    with capture_logs() as logs:
        for _ in range(3):
            clock.now += 30
            assert token.reveal() == OLD
        write(path, "short", mtime=3)  # implausible: still failing, still quiet
        clock.now += 30
        assert token.reveal() == OLD
        write(path, NEW, mtime=4)
        clock.now += 30
        assert token.reveal() == NEW
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("API token re-read failed; keeping the current token", "warning"),
        ("API token reloaded", "info"),
    ]
    assert "No such file" in logs[0]["reason"]
    assert OLD not in repr(logs) and NEW not in repr(logs)


def test_reload_reads_at_once(tmp_path: Path) -> None:
    """reload() (SIGHUP) re-reads now, changed stat or not, and says what happened."""
    path, clock = tmp_path / "token", Clock()
    write(path, OLD, mtime=1)
    token = TokenFile(str(path), clock=clock)
    with capture_logs() as logs:
        assert token.reload() is False
        write(path, NEW, mtime=1)
        assert token.reload() is True
    assert token.reveal() == NEW
    assert [e["event"] for e in logs] == ["API token file re-read: unchanged", "API token reloaded"]


def test_every_value_held_stays_known_for_redaction(tmp_path: Path) -> None:
    """After a rotation both tokens are redacted (the old one may still be in flight)."""
    path, clock = tmp_path / "token", Clock()
    write(path, OLD, mtime=1)
    token = TokenFile(str(path), clock=clock)
    write(path, NEW, mtime=2)
    token.reload()
    assert token.known_values() == (OLD, NEW)
    assert Secret(OLD).known_values() == (OLD,)
    assert Secret(OLD).reload() is False


def test_repr_and_str_hide_the_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write(path, OLD)
    token = TokenFile(str(path), clock=Clock())
    for text in (repr(token), str(token), f"{token}"):
        assert OLD not in text and str(path) in text
