"""How fast the simulator serves 10,000-object pages to one client on loopback.

Walks a 10-million-object namespace with a keep-alive ``http.client`` connection, reading
each page whole, and reports pages per second (median of several runs). Also reports the
server-side cost of building one page (``Simulator.handle``, no socket) and, with
``--parse``, the rate when the client also decodes the JSON the way an exporter must.

    /work/venv/bin/python benchmarks/simulator_pages.py [--pages 40] [--runs 5] [--parse]
        [--builds 50]
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import time
from urllib.parse import urlencode, urlsplit

from do_exporter.simulator import Scenario, Simulator

ACCOUNT = "0123456789abcdef0123456789abcdef"
NAMESPACE = "11111111111111111111111111111111"
TOKEN = "benchmark-token"
OBJECTS = 10_000_000


def scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "seed": 1,
            "tokens": [{"value": TOKEN}],
            "rate_limit": {"requests": 10**9, "window_seconds": 300},
            "accounts": [
                {
                    "id": ACCOUNT,
                    "namespaces": [
                        {"id": NAMESPACE, "objects": OBJECTS, "stored_data_ratio": 0.37}
                    ],
                }
            ],
        }
    )


def walk(sim: Simulator, pages: int, limit: int, *, parse: bool) -> float:
    """Fetch ``pages`` consecutive pages; returns pages per second."""
    url = urlsplit(sim.api_url)
    path = f"{url.path}/accounts/{ACCOUNT}/workers/durable_objects/namespaces/{NAMESPACE}/objects"
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    cursor = ""
    started = time.perf_counter()
    for _ in range(pages):
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        connection.request("GET", f"{path}?{urlencode(query)}", headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"unexpected status {response.status}: {body[:200]!r}")
        if parse:
            decoded = json.loads(body)
            assert len(decoded["result"]) == limit
            cursor = decoded["result_info"]["cursor"]
        else:
            tail = body[-300:].decode()
            cursor = tail.split('"cursor":"', 1)[1].split('"', 1)[0]
    elapsed = time.perf_counter() - started
    connection.close()
    return pages / elapsed


def build_ms(sim: Simulator, limit: int, repeats: int) -> float:
    """Median milliseconds for Simulator.handle to build one page (no network).

    Follows the cursors, so each of the ``repeats`` pages is a different one.
    """
    target = (
        f"{sim.scenario.base_path}/accounts/{ACCOUNT}/workers/durable_objects/namespaces/"
        f"{NAMESPACE}/objects?limit={limit}"
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times = []
    cursor = ""
    for _ in range(repeats):
        query = f"&{urlencode({'cursor': cursor})}" if cursor else ""
        started = time.perf_counter()
        response = sim.handle("GET", target + query, headers)
        times.append(time.perf_counter() - started)
        assert response.status == 200
        cursor = bytes(response.body[-300:]).decode().split('"cursor":"', 1)[1].split('"', 1)[0]
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40, help="pages per run (default 40)")
    parser.add_argument("--runs", type=int, default=5, help="runs; the median is reported")
    parser.add_argument("--limit", type=int, default=10_000, help="objects per page")
    parser.add_argument("--parse", action="store_true", help="also json-decode every page")
    parser.add_argument(
        "--builds", type=int, default=50, help="pages built without a socket (default 50)"
    )
    args = parser.parse_args()
    with Simulator(scenario()) as sim:
        walk(sim, 3, args.limit, parse=args.parse)  # warm-up
        rates = [walk(sim, args.pages, args.limit, parse=args.parse) for _ in range(args.runs)]
        server_ms = build_ms(sim, args.limit, args.builds)
        page_bytes = len(sim.handle(
            "GET",
            f"{sim.scenario.base_path}/accounts/{ACCOUNT}/workers/durable_objects/namespaces/"
            f"{NAMESPACE}/objects?limit={args.limit}",
            {"Authorization": f"Bearer {TOKEN}"},
        ).body)  # fmt: skip
    median = statistics.median(rates)
    print(
        json.dumps(
            {
                "benchmark": "simulator_pages",
                "python": platform.python_version(),
                "objects_per_page": args.limit,
                "page_bytes": page_bytes,
                "client_parses_json": args.parse,
                "runs": args.runs,
                "pages_per_run": args.pages,
                "pages_per_second_median": round(median, 1),
                "pages_per_second_runs": [round(r, 1) for r in rates],
                "objects_per_second_median": round(median * args.limit),
                "server_builds": args.builds,
                "server_build_ms_median": round(server_ms, 2),
            }
        )
    )
    print(
        f"{median:.1f} pages/s ({median * args.limit / 1e6:.2f} M objects/s) of "
        f"{args.limit:,} objects, one client on loopback, median of {args.runs} runs; "
        f"server builds a page in {server_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
