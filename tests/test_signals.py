"""Signals that always work: storms of SIGHUP, SIGTERM and SIGINT against a real process.

The handlers only wake the main thread through a pipe (``do_exporter.signals``), so a storm
can neither deadlock it (a handler taking a lock the interrupted handler holds) nor nest
handlers until ``RecursionError``. Every wait here has only a safety timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from do_exporter.signals import Inbox
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, TOKEN, ns, scenario
from tests.ports import free_port
from tests.support import SAFETY_TIMEOUT, wait_until

MakeSim = Callable[..., Simulator]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "DO_"))}


def test_the_inbox_collects_a_storm_without_running_python_in_the_handler() -> None:
    """10,000 signals to this very process while the inbox is open: no handler recursion,
    :meth:`Inbox.wait` reports the signal once, and only the signals it catches."""
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        with Inbox((signal.SIGUSR1,)) as inbox:
            for _ in range(10_000):
                os.kill(os.getpid(), signal.SIGUSR1)
            assert inbox.wait(timeout=SAFETY_TIMEOUT) == {signal.SIGUSR1}
            assert inbox.wait(timeout=0) == frozenset()  # all read: nothing more
        # Closed: the signal is ignored from now on, not back to its default (which ends
        # the process): a storm that outlives the inbox is harmless.
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)


class Daemon:
    """A ``do-exporter`` subprocess whose log goes to a file (read while it runs)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "do_exporter", "--web.listen-address",
             f"127.0.0.1:{self.port}", "--log-format", "json", *args],
            stdout=subprocess.DEVNULL, stderr=self._err, env=env,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text()

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.text()
        with contextlib.suppress(requests.RequestException):
            return requests.get(self.url + "/readyz", timeout=5).status_code == 200
        return False

    def storm(self, sig: int, count: int) -> int:
        """Send ``count`` signals as fast as this process can; how many were sent."""
        for sent in range(count):
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                return sent
        return count

    def exit_code(self) -> int:
        """Wait for the process to end (safety timeout only) and return its status."""
        try:
            return self.proc.wait(SAFETY_TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._err.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_a_sighup_storm_is_survived_and_reloading_and_stopping_still_work(
    make_sim: MakeSim, tmp_path: Path, daemon: list[Daemon]
) -> None:
    """5,000 SIGHUPs, then 100 bursts of 3: the daemon still serves, a token file change
    plus one more SIGHUP is picked up, and SIGTERM ends it with status 0."""
    new = "new-" + TOKEN[4:]
    sim = make_sim(
        scenario(
            {ACCOUNT_A: [ns(1, 10)]},
            tokens=[{"value": TOKEN, "accounts": "*"}, {"value": new, "accounts": "*"}],
        )
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    d = Daemon(
        ["--api-url", sim.api_url, "--api-token-file", str(token_file)],
        tmp_path / "stderr",
        clean_env(),
    )
    daemon.append(d)
    wait_until(d.ready, "the daemon is ready")
    assert d.storm(signal.SIGHUP, 5_000) == 5_000
    for _ in range(100):
        assert d.storm(signal.SIGHUP, 3) == 3
    assert d.proc.poll() is None, d.text()
    assert requests.get(d.url + "/metrics", timeout=30).status_code == 200
    token_file.write_text(new + "\n")
    assert d.storm(signal.SIGHUP, 1) == 1
    wait_until(lambda: '"API token reloaded"' in d.text(), "the new token is read")
    assert d.storm(signal.SIGTERM, 1) == 1
    assert d.exit_code() == 0, d.text()
    assert '"event": "stopped"' in d.text()
    assert "Traceback" not in d.text() and "RecursionError" not in d.text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_storm_of_stop_signals_ends_the_daemon_cleanly(
    sig: int, tmp_path: Path, daemon: list[Daemon]
) -> None:
    """Thousands of SIGTERM (or SIGINT) in a row: the first stops the daemon, the others
    during and after its shutdown are ignored: status 0, no traceback, not killed by one."""
    d = Daemon(["--demo"], tmp_path / "stderr", clean_env())
    daemon.append(d)
    wait_until(d.ready, "the demo daemon is ready")
    d.storm(sig, 20_000)
    assert d.exit_code() == 0, d.text()
    assert '"event": "stopped"' in d.text()
    assert "Traceback" not in d.text() and "KeyboardInterrupt" not in d.text()
