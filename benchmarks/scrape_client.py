"""Scrape a URL N times over one keep-alive connection; print the latencies (ms) as JSON.

Run as a separate process by ``benchmarks/scrape.py`` so the client never competes with
the exporter for its GIL. A latency is from sending the request to having read the whole
body (not decompressed: Prometheus pays that on its side).

    python benchmarks/scrape_client.py URL N [gzip]
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main() -> None:
    url, count = urlsplit(sys.argv[1]), int(sys.argv[2])
    gzipped = len(sys.argv) > 3 and sys.argv[3] == "gzip"
    headers = {"Accept-Encoding": "gzip"} if gzipped else {}
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    latencies = []
    size = 0
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", url.path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}")
        size = len(body)
    connection.close()
    print(json.dumps({"latencies_ms": latencies, "bytes": size}), flush=True)


if __name__ == "__main__":
    main()
