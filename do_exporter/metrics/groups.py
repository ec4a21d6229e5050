"""Groups of metric families the user can turn off (``--no-collector.<group>``), the way
node_exporter names its collectors. Every family of the contract belongs to one group, or to
none (the exporter's own health families are always on).
"""

from __future__ import annotations

INVENTORY = "inventory"  # per-namespace inventory: object counts, namespace info
USAGE = "usage"  # analytics counters: requests, errors, CPU, GB-s, rows, by status
STORAGE = "storage"  # stored bytes, storage units
WEBSOCKETS = "websockets"  # WebSocket connections and messages
HOT_OBJECTS = "hot_objects"  # the busiest objects per account (--top-objects)
LATENCY = "latency"  # wall-time percentiles and maximum per namespace

GROUPS: tuple[str, ...] = (INVENTORY, USAGE, STORAGE, WEBSOCKETS, HOT_OBJECTS, LATENCY)
