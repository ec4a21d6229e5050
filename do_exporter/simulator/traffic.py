"""What a scenario says about a namespace's usage (scenario key ``analytics``): the model
:mod:`do_exporter.simulator.graphql` derives its answers from. Apart from both the scenario
and the endpoint, so neither imports the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Traffic:
    """A namespace's usage model; ``None`` fields get a default derived from the namespace.

    Per minute: ``requests_per_minute`` follows a daily sine of ``diurnal_amplitude`` with
    +-10% of deterministic noise; the other figures are per request (rates, milliseconds,
    bytes), or per connection for WebSocket messages. SQLite namespaces read and write rows;
    the others read, write and delete storage units.
    """

    requests_per_minute: float | None = None
    diurnal_amplitude: float = 0.3
    error_rate: float = 0.01
    cpu_ms_per_request: float = 2.0
    wall_ms_per_request: float = 12.0
    response_bytes_per_request: float = 1_500.0
    subrequests_per_request: float = 0.2
    rows_read_per_request: float = 8.0
    rows_written_per_request: float = 1.0
    websocket_connections: int | None = None
    messages_per_connection_per_minute: float = 6.0
    exceeded_cpu_rate: float = 0.001
    exceeded_memory_rate: float = 0.0002
    fatal_internal_rate: float = 0.0001
    stored_bytes: int | None = None
    storage_growth_bytes_per_minute: float | None = None
    client_disconnect_rate: float = 0.002
    hot_objects: int | None = None  # objects a minute's usage is split over (None: up to 6)


_RATES = frozenset(
    {"diurnal_amplitude", "error_rate", "exceeded_cpu_rate", "exceeded_memory_rate",
     "fatal_internal_rate", "client_disconnect_rate"}
)  # fmt: skip


_OPTIONAL = frozenset(
    {"requests_per_minute", "websocket_connections", "stored_bytes",
     "storage_growth_bytes_per_minute", "hot_objects"}
)  # fmt: skip


def traffic_from_dict(data: Any) -> Traffic:
    """Validate a scenario's ``analytics`` object; ``ValueError`` naming the key if bad."""
    if data is None:
        return Traffic()
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    known = {f.name for f in fields(Traffic)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    for key, value in data.items():
        if value is None and key in _OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: must be a number")
        if not math.isfinite(value) or value < 0 or value > 1e12:
            raise ValueError(f"{key}: must be between 0 and 1e12")
        if key in _RATES and value > 1:
            raise ValueError(f"{key}: must be between 0 and 1")
        if key == "hot_objects" and not 1 <= value <= 1000:
            raise ValueError(f"{key}: must be between 1 and 1000")
        if key in {"websocket_connections", "stored_bytes", "hot_objects"} and not isinstance(
            value, int
        ):
            raise ValueError(f"{key}: must be an integer")
    return Traffic(**data)
