"""A fake Cloudflare API for Durable Objects, served over real HTTP.

It speaks the v4 envelopes, page-number and cursor pagination, auth errors, the request
budget and a catalogue of faults, driven by a JSON :class:`Scenario`. Object ids are
derived, never stored, so huge namespaces cost no memory. See ``docs/simulator.md``.

>>> from do_exporter.simulator import Simulator, demo_scenario
>>> with Simulator(demo_scenario()) as sim:  # doctest: +SKIP
...     print(sim.api_url, sim.token, sim.account_ids)
"""

from do_exporter.simulator.core import Simulator
from do_exporter.simulator.faults import Fault
from do_exporter.simulator.responses import Response
from do_exporter.simulator.scenario import (
    Scenario,
    ScenarioError,
    demo_scenario,
    load_scenario,
)

__all__ = [
    "Fault",
    "Response",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "demo_scenario",
    "load_scenario",
]
