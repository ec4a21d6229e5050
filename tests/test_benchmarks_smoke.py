"""The benchmark harness keeps running: ``benchmarks/run.py --smoke`` (no timing asserted).

One test per part (``--only PART``), so that xdist workers run the parts side by side
instead of one worker running them all in a row.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import SAFETY_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent


def _poll(lines: list[str]) -> None:
    # The poll matrix: 3 scenarios x 2 budgets, each with the minimum number of requests.
    poll_rows = [line for line in lines if line.startswith(("few-large", "many-small", "mixed"))]
    assert len(poll_rows) == 6
    assert all(" NO " not in line for line in poll_rows), poll_rows


def _cpu(lines: list[str]) -> None:
    for client in ("do-exporter", "requests+json", "sdk"):
        assert any(line.startswith(client + " ") for line in lines), client


def _scrape(lines: list[str]) -> None:
    assert sum(line.startswith(("pre-rendered", "render per scrape")) for line in lines) == 8


def _rows_only(lines: list[str]) -> None:
    """Parts checked for their table only (a header, a rule, at least one row)."""


# part: (its table's header, what its rows must show)
PARTS: dict[str, tuple[str, Callable[[list[str]], None]]] = {
    "decoders": ("== JSON decoder", _rows_only),
    "poll": ("== Poll time vs lower bound", _poll),
    "cpu": ("== CPU per 1M objects", _cpu),
    "memory": ("== Peak RSS", _rows_only),
    "scrape": ("== Scrape latency", _scrape),
    "schedule": ("== Budget arithmetic", _rows_only),
}


@pytest.mark.parametrize("part", PARTS)
def test_smoke_run_prints_the_part_table(part: str) -> None:
    """A smoke run of one part exits 0 and prints the part's table with its rows."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--runs", "1",
         "--only", part],
        capture_output=True, text=True, timeout=SAFETY_TIMEOUT * 3, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    header, check_rows = PARTS[part]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("== ") for line in lines) == 1, result.stdout
    at = next(i for i, line in enumerate(lines) if line.startswith(header))
    assert set(lines[at + 2]) == {"-"}, lines[at : at + 3]  # the rule under the column heads
    assert lines[at + 3].strip(), "no row under the table"
    check_rows(lines)


def test_every_part_is_smoke_tested() -> None:
    """A part added to run.py gets a smoke test here (read from its source: importing run.py
    would put benchmarks/ on this worker's sys.path)."""
    tree = ast.parse((ROOT / "benchmarks" / "run.py").read_text("utf-8"))
    parts = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "PARTS" for t in node.targets)
    )
    assert set(parts) == set(PARTS)
