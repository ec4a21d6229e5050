"""Count one namespace with one client, in this (fresh) process, and print one JSON line.

Run by ``benchmarks/run.py`` once per measurement, so each count starts from a clean
interpreter: CPU time (``time.process_time``, this process only; the simulator is another
process) and peak RSS (``VmHWM``) belong to that count alone. (Not ``ru_maxrss``: Linux
keeps it across ``execve``, so a child of a large parent inherits the parent's peak.)

    python benchmarks/count_worker.py CLIENT API_URL TOKEN ACCOUNT_ID NAMESPACE_ID

CLIENT is ``do-exporter`` (``CloudflareClient.count_objects``), ``sdk`` (the official
``cloudflare`` SDK's auto-pagination) or ``requests+json`` (a plain loop).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LIMIT = 10_000


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_kb() -> int:
    return status_kb("VmRSS")


def do_exporter_counter(api_url: str, token: str) -> Callable[[str, str], tuple[int, int]]:
    import requests

    from do_exporter.cloudflare import CloudflareClient
    from do_exporter.config import Secret
    from do_exporter.ratelimit import RateLimiter

    client = CloudflareClient(
        requests.Session(), api_url, Secret(token), limiter=RateLimiter(10**9, 300)
    )

    def count(account: str, namespace: str) -> tuple[int, int]:
        result = client.count_objects(account, namespace)
        return result.objects, result.with_stored_data

    return count


def sdk_counter(api_url: str, token: str) -> Callable[[str, str], tuple[int, int]]:
    import cloudflare

    cf = cloudflare.Cloudflare(api_token=token, base_url=api_url, max_retries=0)

    def count(account: str, namespace: str) -> tuple[int, int]:
        objects = with_data = 0
        pages = cf.durable_objects.namespaces.objects.list(
            id=namespace, account_id=account, limit=LIMIT
        )
        for item in pages:  # auto-pagination: follows result_info.cursors.after
            objects += 1
            if item.has_stored_data:
                with_data += 1
        return objects, with_data

    return count


def plain_counter(api_url: str, token: str) -> Callable[[str, str], tuple[int, int]]:
    import json as stdjson

    import requests

    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}

    def count(account: str, namespace: str) -> tuple[int, int]:
        url = f"{api_url}/accounts/{account}/workers/durable_objects/namespaces/{namespace}/objects"
        objects = with_data = 0
        cursor = ""
        while True:
            params: dict[str, str | int] = {"limit": LIMIT}
            if cursor:
                params["cursor"] = cursor
            response = session.get(url, params=params, headers=headers, timeout=30)
            response.raise_for_status()
            doc = stdjson.loads(response.content)
            result = doc["result"]
            objects += len(result)
            with_data += sum(1 for item in result if item.get("hasStoredData"))
            cursor = doc["result_info"].get("cursor") or ""
            if not cursor or not result:
                return objects, with_data

    return count


CLIENTS = {
    "do-exporter": do_exporter_counter,
    "sdk": sdk_counter,
    "requests+json": plain_counter,
}


def main() -> None:
    client, api_url, token, account, namespace = sys.argv[1:6]
    count = CLIENTS[client](api_url, token)
    rss_before = rss_kb()
    c0, w0 = time.process_time(), time.perf_counter()
    objects, with_data = count(account, namespace)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(
        json.dumps(
            {
                "client": client,
                "objects": objects,
                "with_stored_data": with_data,
                "cpu_s": cpu,
                "wall_s": wall,
                "rss_before_kb": rss_before,
                "maxrss_kb": status_kb("VmHWM"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
