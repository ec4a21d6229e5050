"""Loopback ports for tests that must name a port before something listens on it.

``bind(("127.0.0.1", 0))`` then ``close()`` hands out an *ephemeral* port: until the
subprocess (or restarted simulator) binds it, any outgoing connection of this machine, or
another ``bind(0)``, may take it — likelier with several pytest-xdist workers, and other
suites, busy on the same host. So ports come from below the ephemeral range (32768-60999 on
Linux), in a block of their own for each xdist worker, are never handed out twice by one
process, and are checked free when handed out. Tests that need no fixed port use port 0.
"""

from __future__ import annotations

import os
import random
import socket
import threading

FIRST = 20_000
BLOCK = 1_500  # ports per worker: gw0 gets 20000-21499, gw1 21500-22999, ... (8 blocks)
WORKERS = 8

_lock = threading.Lock()
_handed: set[int] = set()


def _block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gwN"; absent without xdist
    index = int(worker[2:]) % WORKERS if worker[2:].isdigit() else 0
    start = FIRST + index * BLOCK
    return range(start, start + BLOCK)


def free_port() -> int:
    """A free loopback port no other worker of this run is handed (see the module doc)."""
    block = _block()
    with _lock:
        offset = random.randrange(len(block))
        for i in range(len(block)):
            port = block[(offset + i) % len(block)]
            if port in _handed:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed.add(port)
            return port
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1}")
