"""Shared helpers: the simulator as a separate process, scenarios, and the machine line.

The simulator runs in its own process so it never competes with the code being measured for
the GIL; only the 2 CPU cores are shared (and that is said next to every figure).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKEN = "benchmark-token"
OBJECTS_PER_PAGE = 10_000  # do_exporter.apifacts; repeated: the benchmarks also drive older trees
NAMESPACES_PER_PAGE = 1_000
UNLIMITED = {"requests": 10**9, "window_seconds": 300}


def ns_id(account: int, index: int) -> str:
    return f"{account:08x}{index:024x}"


def account_id(index: int) -> str:
    return f"{index + 1:032x}"


def namespace(account: int, index: int, objects: int, ratio: float = 0.37) -> dict[str, Any]:
    return {
        "id": ns_id(account, index),
        "name": f"worker_Class{index}",
        "class": f"Class{index}",
        "script": "worker",
        "use_sqlite": index % 2 == 0,
        "objects": objects,
        "stored_data_ratio": ratio,
    }


def scenario(
    accounts: list[list[int]], *, latency_ms: float = 0.0, seed: int = 1
) -> dict[str, Any]:
    """A scenario dict: ``accounts[a]`` is the list of object counts of account a's namespaces.

    The simulator's own budget is unlimited: the exporter's limiter is what is measured.
    """
    doc: dict[str, Any] = {
        "seed": seed,
        "tokens": [{"value": TOKEN}],
        "rate_limit": UNLIMITED,
        "accounts": [
            {
                "id": account_id(a),
                "name": f"bench{a}",
                "namespaces": [namespace(a, i, n) for i, n in enumerate(counts)],
            }
            for a, counts in enumerate(accounts)
        ],
    }
    if latency_ms:
        doc["faults"] = {"latency_ms": latency_ms}
    return doc


def object_pages(objects: int) -> int:
    """Requests one cursor walk needs at 10,000 objects a page (an empty namespace: 1)."""
    return max(1, math.ceil(objects / OBJECTS_PER_PAGE))


def list_pages(namespaces: int) -> int:
    return max(1, math.ceil(namespaces / NAMESPACES_PER_PAGE))


def minimum_requests(accounts: list[list[int]]) -> int:
    """Requests a poll with configured account ids must make: lists plus cursor walks."""
    return sum(list_pages(len(c)) + sum(object_pages(n) for n in c) for c in accounts)


@dataclass
class SimProcess:
    """``python -m do_exporter.simulator`` in a child process, for ``with`` blocks."""

    doc: dict[str, Any]
    api_url: str = ""
    token: str = ""
    account_ids: tuple[str, ...] = ()
    _proc: subprocess.Popen[str] | None = None
    _file: str = ""

    def __enter__(self) -> SimProcess:
        fd, self._file = tempfile.mkstemp(prefix="do-bench-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.doc, handle)
        self._proc = subprocess.Popen(
            [PYTHON, "-m", "do_exporter.simulator", "--scenario", self._file,
             "--listen", "127.0.0.1:0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(10)
            raise RuntimeError(f"simulator did not start (exit {self._proc.returncode})")
        info = json.loads(line)
        self.api_url = info["api_url"]
        self.token = info["token"]
        self.account_ids = tuple(info["account_ids"])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._file:
            os.unlink(self._file)

    @property
    def root(self) -> str:
        scheme, rest = self.api_url.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}"

    def stats(self) -> dict[str, Any]:
        with urlopen(f"{self.root}/__simulator/stats", timeout=10) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def reset_stats(self) -> None:
        request = Request(f"{self.root}/__simulator/reset_stats", data=b"{}", method="POST")
        with urlopen(request, timeout=10) as response:
            response.read()


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}
