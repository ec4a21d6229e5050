"""``python -m do_exporter.simulator`` as a separate process: start line, serving, exit codes
(the bad scenarios' messages are checked through ``main`` in this process)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import requests

from do_exporter.simulator.__main__ import main as simulator_main
from tests.support import SAFETY_TIMEOUT

SCENARIOS = Path(__file__).parent / "scenarios"
SMALL = SCENARIOS / "simulator_small.json"


def run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "do_exporter.simulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test; any still running at the end are killed."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=SAFETY_TIMEOUT)


def start(started: list[subprocess.Popen[str]], *args: str) -> tuple[Any, subprocess.Popen[str]]:
    process = run(*args)
    started.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else ""
    return json.loads(line), process


def test_cli_prints_one_json_line_and_serves_the_scenario(
    started: list[subprocess.Popen[str]],
) -> None:
    """The start line names api_url, token and account_ids, and the API answers with them."""
    info, process = start(started, "--scenario", str(SMALL), "--listen", "127.0.0.1:0")
    assert set(info) == {"api_url", "token", "account_ids"}
    assert info["token"] == "cli-token"
    assert info["account_ids"] == ["abcdefabcdefabcdefabcdefabcdef01"]
    assert info["api_url"].startswith("http://127.0.0.1:")
    assert info["api_url"].endswith("/client/v4")
    response = requests.get(
        f"{info['api_url']}/accounts/{info['account_ids'][0]}/workers/durable_objects/namespaces",
        headers={"Authorization": f"Bearer {info['token']}"},
        timeout=SAFETY_TIMEOUT,
    )
    assert [ns["name"] for ns in response.json()["result"]] == ["cli_Thing"]
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=SAFETY_TIMEOUT)
    assert process.returncode == 0
    assert out == "" and err == ""


def test_cli_without_scenario_serves_the_demo_and_stops_on_sigint(
    started: list[subprocess.Popen[str]],
) -> None:
    """No --scenario: the demo's accounts; SIGINT exits 0."""
    info, process = start(started)
    assert len(info["account_ids"]) >= 2
    root = info["api_url"].rsplit("/client/v4", 1)[0]
    stats = requests.get(root + "/__simulator/stats", timeout=SAFETY_TIMEOUT)
    assert stats.json()["requests_total"] == 0
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=SAFETY_TIMEOUT)
    assert process.returncode == 0


def test_cli_seed_changes_the_ids(started: list[subprocess.Popen[str]]) -> None:
    """--seed overrides the scenario's seed, so object ids change."""
    first_ids = []
    for seed in ("1", "2"):
        info, process = start(started, "--scenario", str(SMALL), "--seed", seed)
        url = (
            f"{info['api_url']}/accounts/{info['account_ids'][0]}/workers/durable_objects"
            "/namespaces/abcdefabcdefabcdefabcdefabcdef02/objects"
        )
        body = requests.get(
            url, headers={"Authorization": f"Bearer {info['token']}"}, timeout=SAFETY_TIMEOUT
        ).json()
        first_ids.append(body["result"][0]["id"])
        process.terminate()
        process.communicate(timeout=SAFETY_TIMEOUT)
    assert first_ids[0] != first_ids[1]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        ("{not json", "invalid JSON"),
        ('{"accounts": [{"id": "XYZ"}]}', "accounts[0].id"),
        ('{"accounts": [], "colour": 1}', "unknown key 'colour'"),
        ('{"accounts": [], "cursor_shape": "spiral"}', "cursor_shape"),
    ],
)
def test_cli_bad_scenario_exits_2_with_one_line(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    """A missing or bad scenario file: exit status 2, one line on stderr naming the problem.
    The missing file in a real process; the others through ``main`` in this one (what it
    prints is the point)."""
    path = tmp_path / "scenario.json"
    if content is not None:
        path.write_text(content)
    result: subprocess.CompletedProcess[str]
    if content is None:
        result = subprocess.run(
            [sys.executable, "-m", "do_exporter.simulator", "--scenario", str(path)],
            capture_output=True,
            text=True,
            timeout=SAFETY_TIMEOUT,
        )
    else:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = simulator_main(["--scenario", str(path)])
        result = subprocess.CompletedProcess([], status, out.getvalue(), err.getvalue())
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0]


def test_cli_bad_listen_address_exits_2() -> None:
    """--listen without a port is refused with status 2."""
    result = subprocess.run(
        [sys.executable, "-m", "do_exporter.simulator", "--listen", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "--listen" in result.stderr
