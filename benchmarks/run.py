"""do-exporter benchmarks: the single entry point. Prints one table per part.

    /work/venv/bin/python benchmarks/run.py                 # everything (~6 minutes)
    /work/venv/bin/python benchmarks/run.py --smoke         # tiny sizes, ~30 s, no figures
    /work/venv/bin/python benchmarks/run.py --only poll --runs 3 --json out.json

Parts (``--only``, repeatable): ``decoders`` (JSON decoder per 10,000-object page),
``poll`` (poll time vs lower bound, requests vs minimum), ``cpu`` (CPU s per 1M objects:
do-exporter vs the official SDK vs requests+json), ``memory`` (peak RSS, 10k vs 10M
objects), ``scrape`` (/metrics p50/p99 for 10,000 namespaces while polling), ``schedule``
(budget-aware scheduling: the arithmetic; see docs/benchmarks.md).

Every part talks to the simulator running as a separate process on loopback. What each
figure means and what limits it: docs/benchmarks.md.
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

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _sim import machine  # noqa: E402

from do_exporter.logs import configure  # noqa: E402

PARTS = ("decoders", "poll", "cpu", "memory", "scrape", "schedule")
Row = dict[str, Any]


def fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def table(title: str, columns: list[tuple[str, str, str]], rows: list[Row]) -> str:
    """``columns``: (header, row key, format spec)."""
    cells = [[fmt(r.get(key), spec) for _, key, spec in columns] for r in rows]
    widths = [
        max(len(head), *(len(c[i]) for c in cells)) if cells else len(head)
        for i, (head, _, _) in enumerate(columns)
    ]
    line = "  ".join(h.ljust(w) for (h, _, _), w in zip(columns, widths, strict=True))
    out = [f"== {title}", line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


# -- parts ---------------------------------------------------------------------------------


def part_decoders(args: argparse.Namespace) -> tuple[list[Row], str]:
    import json_decoders

    rows = json_decoders.measure(10 if args.smoke else 100)
    return rows, table(
        "JSON decoder: decode + count one 10,000-object page (median)",
        [
            ("decoder", "decoder", ""),
            ("ms/page", "ms_per_page_median", ".2f"),
            ("CPU s/1M objects", "cpu_s_per_1M_objects", ".3f"),
            ("vs json.loads", "speedup_vs_stdlib", ".1f"),
        ],
        rows,
    )


def part_poll(args: argparse.Namespace) -> tuple[list[Row], str]:
    import poll_matrix

    runs = [poll_matrix.run(smoke=args.smoke) for _ in range(1 if args.smoke else args.runs)]
    rows = []
    for cells in zip(*runs, strict=True):
        row = dict(cells[len(cells) // 2])
        for key in ("wall_s", "cold_wall_s", "ratio_issue", "ratio_window"):
            row[key] = statistics.median(c[key] for c in cells)
        row["minimal"] = all(c["minimal"] for c in cells)
        row["counts_ok"] = all(c["counts_ok"] for c in cells)
        row["runs"] = len(cells)
        rows.append(row)
    return rows, table(
        f"Poll time vs lower bound (median of {len(runs)} run(s); warm poll, cold = first poll)",
        [
            ("scenario", "scenario", ""),
            ("L ms", "latency_ms", ".0f"),
            ("budget", "budget", ""),
            ("ns", "namespaces", "d"),
            ("requests", "requests", "d"),
            ("minimum", "minimum", "d"),
            ("minimal", "minimal", ""),
            ("counts ok", "counts_ok", ""),
            ("wall s", "wall_s", ".2f"),
            ("issue bound s", "issue_bound_s", ".2f"),
            ("ratio", "ratio_issue", ".2f"),
            ("window bound s", "window_bound_s", ".2f"),
            ("ratio", "ratio_window", ".2f"),
            ("cold wall s", "cold_wall_s", ".2f"),
        ],
        rows,
    )


def part_cpu(args: argparse.Namespace) -> tuple[list[Row], str]:
    import cpu_memory

    rows = cpu_memory.run_cpu(smoke=args.smoke, runs=args.runs)
    return rows, table(
        "CPU per 1M objects, client side, same namespace and simulator (median)",
        [
            ("client", "client", ""),
            ("objects", "objects", ","),
            ("runs", "runs", "d"),
            ("CPU s per 1M objects", "cpu_s_per_1M", ".3f"),
            ("x do-exporter", "times_ours", ".1f"),
            ("wall s", "wall_s", ".2f"),
        ],
        rows,
    )


def part_memory(args: argparse.Namespace) -> tuple[list[Row], str]:
    import cpu_memory

    rows = cpu_memory.run_memory(smoke=args.smoke)
    return rows, table(
        "Peak RSS counting one namespace (fresh process each)",
        [
            ("objects", "objects", ","),
            ("pages", "pages", ","),
            ("RSS before MB", "rss_before_mb", ".1f"),
            ("peak RSS MB", "peak_rss_mb", ".1f"),
            ("peak - small MB", "peak_minus_small_mb", ".1f"),
            ("wall s", "wall_s", ".1f"),
        ],
        rows,
    )


def part_scrape(args: argparse.Namespace) -> tuple[list[Row], str]:
    import scrape

    rows = scrape.run(smoke=args.smoke)
    return rows, table(
        "Scrape latency of /metrics (client in another process)",
        [
            ("mode", "mode", ""),
            ("load", "load", ""),
            ("encoding", "encoding", ""),
            ("series", "series", ","),
            ("bytes", "bytes", ","),
            ("scrapes", "scrapes", "d"),
            ("p50 ms", "p50_ms", ".2f"),
            ("p99 ms", "p99_ms", ".2f"),
            ("max ms", "max_ms", ".2f"),
            ("p50 x pre-rendered", "p50_ratio_vs_prerendered", ".1f"),
        ],
        rows,
    )


def part_schedule(args: argparse.Namespace) -> tuple[list[Row], str]:
    """Objects one token can count, from the budget alone (see docs/benchmarks.md).

    The scheduling itself (small namespaces every interval, huge walks across intervals,
    ``full_refresh_seconds``) is covered by tests/test_planner.py; this part is the
    arithmetic docs/benchmarks.md quotes.
    """
    interval, page = 300, 10_000
    rows = []
    for budget in (1000, 1200):
        for accounts, per_account in ((1, 50), (1, 500), (5, 500)):
            polls = 3600 // interval
            per_hour = budget * 3600 // 300
            lists = polls * accounts * max(1, -(-per_account // 1000))
            pages = per_hour - lists
            rows.append(
                {
                    "part": "schedule",
                    "budget": f"{budget}/300s",
                    "accounts": accounts,
                    "namespaces": accounts * per_account,
                    "requests_per_hour": per_hour,
                    "list_requests_per_hour": lists,
                    "object_pages_per_hour": pages,
                    "objects_per_hour_max": pages * page,
                    "objects_every_interval_max": (pages // polls) * page,
                }
            )
    return rows, table(
        "Budget arithmetic: objects one token can count (interval 300 s, 10,000 a page)",
        [
            ("budget", "budget", ""),
            ("accounts", "accounts", "d"),
            ("namespaces", "namespaces", ","),
            ("requests/h", "requests_per_hour", ","),
            ("list req/h", "list_requests_per_hour", ","),
            ("object pages/h", "object_pages_per_hour", ","),
            ("objects/h (max)", "objects_per_hour_max", ","),
            ("objects each 300 s (max)", "objects_every_interval_max", ","),
        ],
        rows,
    )


RUNNERS: dict[str, Callable[[argparse.Namespace], tuple[list[Row], str]]] = {
    "decoders": part_decoders,
    "poll": part_poll,
    "cpu": part_cpu,
    "memory": part_memory,
    "scrape": part_scrape,
    "schedule": part_schedule,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="do-exporter benchmarks (see docs/benchmarks.md)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part")
    parser.add_argument("--runs", type=int, default=3, help="repeats for medians (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    args = parser.parse_args(argv)
    # Error level: the budget warnings of the binding cells are expected, not news.
    configure(level="error", fmt="json", stream=sys.stderr)
    info = machine()
    print(f"machine: nproc={info['nproc']}  cpu={info['cpu']}  python={info['python']}")
    print(f"mode: {'smoke (sizes too small for figures)' if args.smoke else 'full'}\n")
    all_rows: list[Row] = []
    for part in args.only or PARTS:
        started = time.perf_counter()
        rows, text = RUNNERS[part](args)
        print(text)
        print(f"({part}: {time.perf_counter() - started:.1f} s)\n", flush=True)
        all_rows += rows
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": all_rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
