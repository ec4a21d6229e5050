"""``python -m do_exporter.simulator``: serve a scenario (or the demo) until SIGTERM/SIGINT.

On start, prints one line of JSON to stdout: ``{"api_url": ..., "token": ..., "account_ids":
[...]}``. A bad scenario or listen address prints one line to stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from do_exporter.simulator.core import Simulator
from do_exporter.simulator.scenario import ScenarioError, demo_scenario, load_scenario


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator in the foreground; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m do_exporter.simulator",
        description="Serve a fake Cloudflare Durable Objects API from a JSON scenario.",
    )
    parser.add_argument("--scenario", help="scenario JSON file (default: the built-in demo)")
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (default 127.0.0.1:0)"
    )
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    args = parser.parse_args(argv)
    try:
        host, port = _parse_listen(args.listen)
        scenario = load_scenario(args.scenario) if args.scenario else demo_scenario()
    except (ScenarioError, ValueError) as exc:
        print(f"do_exporter.simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    simulator = Simulator(scenario, host=host, port=port, seed=args.seed)
    try:
        simulator.start()
    except OSError as exc:
        print(f"do_exporter.simulator: --listen {args.listen}: {exc}", file=sys.stderr, flush=True)
        return 2
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps(simulator.info()), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
