"""The command as a user runs it: --once, --demo, exit codes, signals, secrets. Exit paths
and signals in real processes; what it prints for --help, bad flags and --once --demo in
this process (tests/support.run_cli)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from do_exporter.simulator import Simulator, demo_scenario
from tests.conftest import ACCOUNT_A, TOKEN, ns, scenario
from tests.ports import free_port
from tests.support import SAFETY_TIMEOUT, CliRun, run_cli, wait_until

MakeSim = Callable[..., Simulator]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "DO_EXPORTER_"))}
    env.update(extra)
    return env


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command in a real process: for the tests of an exit path of the process."""
    return subprocess.run(
        [sys.executable, "-m", "do_exporter", *args],
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT,
        env=clean_env(**env),
    )


def run_here(*args: str, **env: str) -> CliRun:
    """The command in this process (``cli.main``): for tests of what it prints and returns."""
    return run_cli(args, clean_env(**env))


def test_once_demo_prints_the_demo_scenario() -> None:
    """`--once --demo` polls the built-in simulator, prints its counts, exits 0."""
    result = run_here("--once", "--demo")
    assert result.returncode == 0, result.stderr
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    demo = demo_scenario()
    namespaces = families["cloudflare_durable_objects_namespaces"].samples
    assert {s.labels["account_id"]: s.value for s in namespaces} == {
        a.id: len(a.namespaces) for a in demo.accounts
    }
    objects = families["cloudflare_durable_objects_objects"].samples
    expected = {n.id: n.objects for a in demo.accounts for n in a.namespaces}
    for s in objects:  # growth may add a few objects between start and count
        assert (
            expected[s.labels["namespace_id"]]
            <= s.value
            <= expected[s.labels["namespace_id"]] + 1000
        )
    assert len(objects) == len(expected)


def test_once_exits_1_and_says_why_when_incomplete(make_sim: MakeSim) -> None:
    """A rejected token: exit 1, a summary on stderr, never the token."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    bad = "wrong-token-c0ffee-0123456789abcdefghijkl"  # plausible, but unknown to the API
    result = run(
        "--once",
        "--api-url",
        sim.api_url,
        "--account-id",
        ACCOUNT_A,
        "--log-level",
        "debug",
        CLOUDFLARE_API_TOKEN=bad,
    )
    assert result.returncode == 1
    assert "incomplete poll" in result.stderr and ACCOUNT_A in result.stderr
    assert '"status": 4' in result.stderr  # the API error was logged with its status
    assert bad not in result.stdout + result.stderr
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    [success] = families["cloudflare_durable_objects_exporter_last_poll_success"].samples
    assert success.value == 0


def test_once_against_simulator_exits_0(make_sim: MakeSim, tmp_path: os.PathLike[str]) -> None:
    """Token from a file, account from the environment: a complete poll exits 0."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10_001)]}))
    token_file = os.path.join(tmp_path, "token")
    with open(token_file, "w") as fh:
        fh.write(TOKEN + "\n")
    result = run(
        "--once",
        "--api-token-file",
        token_file,
        CLOUDFLARE_API_URL=sim.api_url,
        CLOUDFLARE_ACCOUNT_ID=ACCOUNT_A,
    )
    assert result.returncode == 0, result.stderr
    assert f'namespace_id="{1:032x}",namespace_name="worker_Class1"}} 10001.0' in result.stdout
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        ((), {}, "--api-token/CLOUDFLARE_API_TOKEN"),
        (("--api-token", TOKEN, "--interval", "5"), {}, "--interval/DO_EXPORTER_INTERVAL"),
        (("--api-token", TOKEN), {"DO_EXPORTER_LISTEN_ADDRESS": "nope"}, "--web.listen-address"),
        (("--api-token", TOKEN, "--account-id", "xyz"), {}, "--account-id"),
        (("--api-token-file", "/nonexistent/token"), {}, "--api-token-file"),
        (("--api-token", TOKEN, "--log-level", "chatty"), {}, "--log-level"),
        (("--no-such-flag",), {}, "unrecognized arguments"),
        (("--no-collector.bogus",), {}, 'unknown collector group "bogus" (choose from inventory,'),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    args: tuple[str, ...], env: dict[str, str], needle: str
) -> None:
    """Bad configuration: exit 2, exactly one line on stderr, nothing on stdout (the first
    case in a real process, the others in this one)."""
    result = (run if not args and not env else run_here)(*args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("do-exporter: error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_here("--demo", "--listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("do-exporter: error: --web.listen-address")
    assert last.endswith(f"cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}")
    assert "Traceback" not in result.stderr


def test_help_names_every_flag_and_env_var() -> None:
    result = run_here("--help")
    assert result.returncode == 0
    for text in (
        "--api-token",
        "CLOUDFLARE_API_TOKEN",
        "--api-token-file",
        "CLOUDFLARE_API_TOKEN_FILE",
        "--account-id",
        "CLOUDFLARE_ACCOUNT_ID",
        "--api-url",
        "CLOUDFLARE_API_URL",
        "--interval",
        "DO_EXPORTER_INTERVAL",
        "--web.listen-address",
        "DO_EXPORTER_LISTEN_ADDRESS",
        "--api-reserve",
        "DO_EXPORTER_API_RESERVE",
        "--config.file",
        "DO_EXPORTER_CONFIG_FILE",
        "--api-rate-limit",
        "DO_EXPORTER_API_RATE_LIMIT",
        "--log-level",
        "DO_EXPORTER_LOG_LEVEL",
        "--log-format",
        "DO_EXPORTER_LOG_FORMAT",
        "--once",
        "--demo",
    ):
        assert text in result.stdout


def test_help_fits_80_columns_and_points_at_the_docs() -> None:
    """--help is short: every line within 80 columns, the long explanations in the docs."""
    result = run_here("--help", COLUMNS="200")
    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 80
    assert "docs/configuration.md" in result.stdout
    for flag in ("--top-objects", "--namespace-include", "--namespace-exclude"):
        assert flag in result.stdout
    assert "--[no-]collector.GROUP" in result.stdout


def _wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    def ready() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return requests.get(url + "/readyz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(ready, "the exporter is ready")


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    """Send ``sig`` and wait for the exit (a safety timeout only ends a hung test)."""
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=SAFETY_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err or ""


def _objects_requested(sim: Simulator) -> None:
    wait_until(lambda: bool(sim.stats()["requests"].get("objects")), "an objects request")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_demo_daemon_serves_and_stops_on_signal(sig: int) -> None:
    """`--demo` serves live metrics; SIGTERM/SIGINT end it with status 0."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "do_exporter", "--demo", "--listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, proc)
    assert "cloudflare_durable_objects_objects{" in requests.get(url + "/metrics", timeout=2).text
    code, err = _stop(proc, sig)
    assert code == 0, err
    assert '"event": "stopped"' in err


def test_sigterm_during_a_poll_exits_quickly(make_sim: MakeSim) -> None:
    """SIGTERM while a request hangs on the API: exit 0 (not waiting for the request)."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    sim.inject("delay", endpoint="objects", seconds=60, count=None)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "do_exporter",
            "--api-url",
            sim.api_url,
            "--account-id",
            ACCOUNT_A,
            "--listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(CLOUDFLARE_API_TOKEN=TOKEN),
    )
    _objects_requested(sim)  # the request is in flight now, held by the delay
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert TOKEN not in err


def test_once_interrupted_by_ctrl_c_exits_130_with_one_line(make_sim: MakeSim) -> None:
    """SIGINT (Ctrl-C) during a `--once` poll: exit 130, one line, no traceback."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    sim.inject("delay", endpoint="objects", seconds=60, count=None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "do_exporter", "--once", "--api-url", sim.api_url,
         "--account-id", ACCOUNT_A],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(CLOUDFLARE_API_TOKEN=TOKEN),
    )  # fmt: skip
    _objects_requested(sim)
    code, err = _stop(proc, signal.SIGINT)
    assert code == 130, err
    assert err.splitlines()[-1] == "do-exporter: interrupted"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert TOKEN not in err


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def test_sighup_reloads_the_token_file(make_sim: MakeSim, tmp_path: os.PathLike[str]) -> None:
    """SIGHUP re-reads the token file and logs it; the daemon keeps running (no exit 129)."""
    new = "new-" + TOKEN[4:]
    sim = make_sim(
        scenario(
            {ACCOUNT_A: [ns(1, 10)]},
            tokens=[{"value": TOKEN, "accounts": "*"}, {"value": new, "accounts": "*"}],
        )
    )
    token_file = os.path.join(tmp_path, "token")
    with open(token_file, "w") as fh:
        fh.write(TOKEN + "\n")
    err_path = os.path.join(tmp_path, "stderr")
    port = free_port()
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "do_exporter", "--api-url", sim.api_url,
             "--api-token-file", token_file, "--web.listen-address", f"127.0.0.1:{port}",
             "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            text=True,
            env=clean_env(),
        )  # fmt: skip
        try:
            _wait_ready(f"http://127.0.0.1:{port}", proc)
            with open(token_file, "w") as fh:
                fh.write(new + "\n")
            proc.send_signal(signal.SIGHUP)

            def reloaded() -> bool:
                assert proc.poll() is None, _read(err_path)
                return '"API token reloaded"' in _read(err_path)

            wait_until(reloaded, "the token reload is logged")
            assert proc.poll() is None
        finally:
            code, _ = _stop(proc, signal.SIGTERM)
    err = _read(err_path)
    assert code == 0, err
    assert '"event": "SIGHUP received: re-reading the API token files"' in err
    assert TOKEN not in err and new not in err
