"""Which JSON decoder should count an objects page? Decode + count one 10,000-object page.

The page body is the simulator's own answer (about 956 kB: 64-hex ids and ``hasStoredData``),
built in-process once. Every candidate does the whole job the client needs: decode, count
the objects, count ``hasStoredData`` true, read ``result_info.cursor``. The figure is the
median of many runs, in milliseconds and in CPU seconds per 1 million objects. The garbage
collector stays on, as it is in the exporter (generic decoders build 10,000 dicts a page,
which is exactly what triggers it).

    /work/venv/bin/python benchmarks/json_decoders.py [--runs 60] [--json]

orjson is measured when it is installed (``pip install orjson``); it is not a dependency of
do-exporter, so without it its row is skipped and the table says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

try:  # orjson is only a candidate, not a dependency: its row is left out when it is absent
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from do_exporter.cloudflare import parse_objects_page
from do_exporter.simulator import Scenario, Simulator

ACCOUNT = "0123456789abcdef0123456789abcdef"
NAMESPACE = "11111111111111111111111111111111"
TOKEN = "benchmark-token"
PAGE = 10_000

Counted = tuple[int, int, str | None]


def page_body(objects: int = 1_000_000, ratio: float = 0.37) -> bytes:
    """The first 10,000-object page of a large namespace, exactly as the simulator sends it."""
    scenario = Scenario.from_dict(
        {
            "seed": 1,
            "tokens": [{"value": TOKEN}],
            "rate_limit": {"requests": 10**9, "window_seconds": 300},
            "accounts": [
                {
                    "id": ACCOUNT,
                    "namespaces": [
                        {"id": NAMESPACE, "objects": objects, "stored_data_ratio": ratio}
                    ],
                }
            ],
        }
    )
    sim = Simulator(scenario)  # never started: handle() needs no socket
    target = (
        f"{scenario.base_path}/accounts/{ACCOUNT}/workers/durable_objects/namespaces/"
        f"{NAMESPACE}/objects?limit={PAGE}"
    )
    response = sim.handle("GET", target, {"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200, response.status
    return bytes(response.body)


def _count_generic(doc: Any) -> Counted:
    result = doc["result"]
    with_data = sum(1 for item in result if item.get("hasStoredData") is True)
    return len(result), with_data, doc["result_info"].get("cursor") or None


def stdlib_json(body: bytes) -> Counted:
    return _count_generic(json.loads(body))


def orjson_loads(body: bytes) -> Counted:
    assert orjson is not None
    return _count_generic(orjson.loads(body))


def msgspec_generic(body: bytes) -> Counted:
    return _count_generic(msgspec.json.decode(body))


class _Obj(msgspec.Struct, gc=False):
    hasStoredData: bool | None = None


class _Info(msgspec.Struct, gc=False):
    cursor: str | None = None


class _Env(msgspec.Struct, gc=False):
    success: bool | None = None
    result: list[_Obj] | None = None
    result_info: _Info | None = None


_TYPED = msgspec.json.Decoder(_Env)


def msgspec_typed(body: bytes) -> Counted:
    env = _TYPED.decode(body)
    assert env.result is not None and env.result_info is not None
    with_data = sum(1 for item in env.result if item.hasStoredData is True)
    return len(env.result), with_data, env.result_info.cursor or None


def client_parse(body: bytes) -> Counted:
    page = parse_objects_page(200, body)
    return page.count, page.with_stored_data, page.cursor


CANDIDATES: dict[str, Callable[[bytes], Counted]] = {"json.loads (stdlib)": stdlib_json}
if orjson is not None:
    CANDIDATES["orjson.loads"] = orjson_loads
CANDIDATES |= {
    "msgspec.json.decode (generic)": msgspec_generic,
    "msgspec typed Struct (hasStoredData, cursor)": msgspec_typed,
    "do_exporter parse_objects_page": client_parse,
}
SKIPPED = [] if orjson is not None else ["orjson.loads (orjson not installed)"]


def measure(runs: int) -> list[dict[str, Any]]:
    body = page_body()
    expected = stdlib_json(body)
    rows: list[dict[str, Any]] = []
    for name, fn in CANDIDATES.items():
        assert fn(body) == expected, (name, fn(body), expected)
        for _ in range(3):  # warm-up
            fn(body)
        wall: list[float] = []
        cpu: list[float] = []
        for _ in range(runs):
            c0, w0 = time.process_time(), time.perf_counter()
            fn(body)
            w1, c1 = time.perf_counter(), time.process_time()
            wall.append(w1 - w0)
            cpu.append(c1 - c0)
        wall_ms = statistics.median(wall) * 1000
        rows.append(
            {
                "decoder": name,
                "ms_per_page_median": round(wall_ms, 2),
                "ms_per_page_p90": round(sorted(wall)[int(0.9 * len(wall))] * 1000, 2),
                "cpu_s_per_1M_objects": round(statistics.mean(cpu) * 1_000_000 / PAGE, 3),
                "page_bytes": len(body),
            }
        )
    base = rows[0]["ms_per_page_median"]
    for row in rows:
        row["speedup_vs_stdlib"] = round(base / row["ms_per_page_median"], 1)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'decoder':<46} {'ms/page p50':>11} {'p90':>7} {'CPU s/1M':>9} {'vs json':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['decoder']:<46} {r['ms_per_page_median']:>11.2f} {r['ms_per_page_p90']:>7.2f}"
            f" {r['cpu_s_per_1M_objects']:>9.3f} {r['speedup_vs_stdlib']:>7.1f}x"
        )
    lines.extend(f"skipped: {name}" for name in SKIPPED)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="timed runs per decoder")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead")
    args = parser.parse_args()
    rows = measure(args.runs)
    print(json.dumps(rows) if args.json else table(rows))


if __name__ == "__main__":
    main()
