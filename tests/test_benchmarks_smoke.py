"""The benchmark harness keeps running: ``benchmarks/run.py --smoke`` (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEADERS = (
    "== JSON decoder",
    "== Poll time vs lower bound",
    "== CPU per 1M objects",
    "== Peak RSS",
    "== Scrape latency",
    "== Budget arithmetic",
)


def test_smoke_run_prints_every_table() -> None:
    """A smoke run exits 0 and prints each part's table with its rows."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for header in HEADERS:
        assert header in out, header
    lines = out.splitlines()
    # The poll matrix: 3 scenarios x 2 budgets, each with the minimum number of requests.
    poll_rows = [line for line in lines if line.startswith(("few-large", "many-small", "mixed"))]
    assert len(poll_rows) == 6
    assert all(" NO " not in line for line in poll_rows), poll_rows
    for client in ("do-exporter", "requests+json", "sdk"):
        assert any(line.startswith(client + " ") for line in lines), client
    assert sum(line.startswith(("pre-rendered", "render per scrape")) for line in lines) == 8
