"""CPU per 1 million objects (part 3) and peak RSS against namespace size (part 4).

Every count runs in a fresh ``count_worker.py`` process (so CPU time and peak RSS, ``VmHWM``
belong to that count alone) against the simulator in another process, without latency.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from _sim import PYTHON, SimProcess, account_id, ns_id, scenario

WORKER = str(Path(__file__).resolve().parent / "count_worker.py")
CLIENTS = ("do-exporter", "requests+json", "sdk")


def count(sim: SimProcess, client: str, namespace: int) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, WORKER, client, sim.api_url, sim.token, account_id(0), ns_id(0, namespace)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run_cpu(smoke: bool = False, runs: int = 3, sdk_runs: int = 1) -> list[dict[str, Any]]:
    """The three clients on the same namespace, interleaved, ``runs`` times (SDK: fewer)."""
    objects = 20_000 if smoke else 1_000_000
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
    with SimProcess(scenario([[objects]])) as sim:
        for i in range(1 if smoke else runs):
            for client in CLIENTS:
                if client == "sdk" and i >= sdk_runs:
                    continue
                result = count(sim, client, 0)
                if result["objects"] != objects:
                    raise RuntimeError(f"{client} counted {result['objects']} of {objects}")
                samples[client].append(result)
    rows = []
    for client, results in samples.items():
        cpu = statistics.median(r["cpu_s"] for r in results)
        rows.append(
            {
                "part": "cpu",
                "client": client,
                "objects": objects,
                "runs": len(results),
                "cpu_s": cpu,
                "cpu_s_per_1M": cpu * 1_000_000 / objects,
                "wall_s": statistics.median(r["wall_s"] for r in results),
                "cpu_s_runs": [round(r["cpu_s"], 3) for r in results],
            }
        )
    ours = rows[0]["cpu_s_per_1M"]
    for row in rows:
        row["times_ours"] = row["cpu_s_per_1M"] / ours
    return rows


def run_memory(smoke: bool = False) -> list[dict[str, Any]]:
    """Peak RSS of counting a small and a huge namespace, each in a fresh process."""
    sizes = [10_000, 200_000] if smoke else [10_000, 10_000_000]
    rows = []
    with SimProcess(scenario([sizes])) as sim:
        for index, objects in enumerate(sizes):
            result = count(sim, "do-exporter", index)
            if result["objects"] != objects:
                raise RuntimeError(f"counted {result['objects']} of {objects}")
            rows.append(
                {
                    "part": "memory",
                    "objects": objects,
                    "pages": -(-objects // 10_000),
                    "rss_before_mb": result["rss_before_kb"] / 1024,
                    "peak_rss_mb": result["maxrss_kb"] / 1024,
                    "wall_s": result["wall_s"],
                    "cpu_s": result["cpu_s"],
                }
            )
    for row in rows:
        row["peak_minus_small_mb"] = row["peak_rss_mb"] - rows[0]["peak_rss_mb"]
    return rows
